//! Microseconds per signature check and per whole token check (parse, signature, claims, hash)
//! for each key type, in a plain loop: `cargo run --release -p token_store_core --example
//! verify_speed [SECONDS]`. Compare with `openssl speed -seconds 3 rsa2048 ecdsap256 ecdsap384
//! ed25519` (its verify column) in the same run; `bench/run.py` does both.
use std::hint::black_box;
use std::time::{Duration, Instant};

use token_store_core::alg::Alg;
use token_store_core::claims::{check_claims, Policy};
use token_store_core::jws;
use token_store_core::keys::{generate, load_key};

/// This process's CPU time in seconds (what `openssl speed` divides by, unless `-elapsed`).
fn cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Calls of `f` per second of CPU time, over about `secs` seconds of wall time.
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    let deadline = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let cpu = cpu_secs();
    let mut n = 0u64;
    while start.elapsed() < deadline {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    n as f64 / (cpu_secs() - cpu)
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .map_or(1.0, |s| s.parse().expect("SECONDS"));
    let payload = serde_json::json!({
        "sub": "user-1234", "iat": 1_700_000_000, "exp": 4_102_444_800u64,
        "jti": "0f6c5a0e-6a57-4b9e-9d0e-1f4a2b3c4d5e", "scope": "read write", "aud": "api"
    });
    let payload = payload.as_object().unwrap();
    let policy = Policy {
        now: 1.8e9,
        leeway: 30.0,
        audience: None,
        issuer: None,
    };
    println!("alg    verify_us  token_us  (verify_per_s)");
    for alg in [
        Alg::HS256,
        Alg::RS256,
        Alg::PS256,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ] {
        let key = load_key(alg, &generate(alg)).expect("loads");
        let token = jws::sign(&key, "k1", payload).expect("signs");
        let parsed = jws::parse(&token, usize::MAX).expect("parses");
        assert!(jws::verify_signature(&parsed, &key));
        let verify = rate(secs, || {
            black_box(jws::verify_signature(black_box(&parsed), &key));
        });
        let whole = rate(secs, || {
            let p = jws::parse(black_box(&token), 16384).expect("parses");
            assert!(jws::verify_signature(&p, &key));
            check_claims(&p.claims, &policy).expect("valid");
            black_box(jws::token_hash(&p));
        });
        println!(
            "{:<6} {:>9.2} {:>9.2}  ({verify:.0})",
            alg.as_str(),
            1e6 / verify,
            1e6 / whole
        );
    }
}
