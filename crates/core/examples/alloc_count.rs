//! N whole token checks (parse, signature, claims, identity hash) of one algorithm, for counting
//! every heap allocation, C libraries' included, from outside: `valgrind ./alloc_count ES256 1000`
//! against `... ES256 0` ("total heap usage"), the difference over N.
use token_store_core::alg::Alg;
use token_store_core::claims::{check_claims, Policy};
use token_store_core::jws;
use token_store_core::keys::{generate, load_key};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let alg = Alg::parse(&args[1]).expect("ALG");
    let n: usize = args[2].parse().expect("N");
    let payload = serde_json::json!({
        "sub": "user-1234", "iat": 1_700_000_000, "exp": 4_102_444_800u64,
        "jti": "0f6c5a0e-6a57-4b9e-9d0e-1f4a2b3c4d5e", "scope": "read write"
    });
    let key = load_key(alg, &generate(alg)).expect("loads");
    let token = jws::sign(&key, "k1", payload.as_object().unwrap()).expect("signs");
    let policy = Policy {
        now: 1.8e9,
        leeway: 30.0,
        audience: None,
        issuer: None,
    };
    for _ in 0..=n {
        let p = jws::parse(&token, 16384).expect("parses");
        assert!(jws::verify_signature(&p, &key));
        check_claims(&p.claims, &policy).expect("valid");
        std::hint::black_box(jws::token_hash(&p));
    }
}
