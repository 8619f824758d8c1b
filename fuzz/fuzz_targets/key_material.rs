//! Any text as key material for every algorithm, and as a JWKS: refusals, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_store_core::alg::Alg;
use token_store_core::keys;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for alg in Alg::ALL {
        if let Ok(m) = keys::parse_key_material(alg, text) {
            let _ = keys::load_key(alg, &m);
            let _ = keys::try_public_jwk(alg, &m, "fuzz");
        }
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = keys::jwks_entries(&v);
    }
});
