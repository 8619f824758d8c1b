//! Any bytes as a token: parsing, claim checks and signature checks must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_store_core::alg::Alg;
use token_store_core::claims::{self, Policy};
use token_store_core::jws;
use token_store_core::keys::{load_key, KeyMaterial};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = jws::parse(text, 1 << 20) else {
        return;
    };
    let policy = Policy {
        now: 1.7e9,
        leeway: 30.0,
        audience: Some("api"),
        issuer: Some("me"),
    };
    let _ = claims::check_claims(&parsed.claims, &policy);
    if let Some(alg) = Alg::parse(&parsed.header.alg) {
        if alg.is_hmac() {
            let material = KeyMaterial {
                bytes: vec![7u8; 64],
                can_sign: true,
            };
            let key = load_key(alg, &material).expect("a 64-byte secret loads");
            // nothing in the corpus was signed with this key, and HMAC cannot be forged by search
            assert!(
                !jws::verify_signature(&parsed, &key),
                "a token verified under a key nobody signed with"
            );
        }
    }
});
