//! Any bytes as a token: parsing, claim checks and signature checks must never panic; and the
//! one-pass parser (`jws::parse`) gives what the two-pass reference below (the 0.3.0 parser:
//! `check_json`, then a serde_json tree, then `registered_claims`) gives: the same error text, or
//! the same header, claims and payload.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use token_store_core::alg::Alg;
use token_store_core::claims::{self, Claims, Policy};
use token_store_core::jws;
use token_store_core::keys::{load_key, KeyMaterial};

fn reference_object(part: &str, what: &str) -> Result<Map<String, Value>, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| format!("{what} is not base64url"))?;
    let s = std::str::from_utf8(&bytes).map_err(|_| format!("{what} is not UTF-8"))?;
    claims::check_json(s).map_err(|problem| format!("{what} {problem}"))?;
    match serde_json::from_str::<Value>(s).expect("serde_json reads what check_json passes") {
        Value::Object(o) => Ok(o),
        _ => Err(format!("{what} is not a valid JSON object: not an object")),
    }
}

type Reference = (String, Option<String>, Claims, Map<String, Value>);

fn reference_parse(token: &str, max_bytes: usize) -> Result<Reference, String> {
    if token.len() > max_bytes {
        return Err(format!(
            "token is {} bytes, longer than token_store.max_token_bytes ({max_bytes})",
            token.len()
        ));
    }
    if token.is_empty() {
        return Err("token is empty".into());
    }
    let mut parts = token.splitn(4, '.');
    let (h, p, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => (h, p, s),
        _ => return Err("expected three base64url parts separated by dots".into()),
    };
    if s.is_empty() {
        return Err("signature part is empty (unsigned tokens are never accepted)".into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("signature is not base64url".into());
    }
    let header = reference_object(h, "header")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        Some(_) => return Err("header alg is not a string".into()),
        None => return Err("header has no alg".into()),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("header kid is not a string".into()),
    };
    if header.contains_key("crit") {
        return Err("header has a crit member this server does not understand".into());
    }
    let payload = reference_object(p, "payload")?;
    let claims = claims::registered_claims(&payload)?;
    Ok((alg, kid, claims, payload))
}

fn same_claims(a: &Claims, b: &Claims) -> bool {
    let bits = |x: Option<f64>| x.map(f64::to_bits);
    bits(a.exp) == bits(b.exp)
        && bits(a.nbf) == bits(b.nbf)
        && bits(a.iat) == bits(b.iat)
        && a.sub == b.sub
        && a.iss == b.iss
        && a.jti == b.jti
        && a.aud == b.aud
        && a.sid == b.sid
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = jws::parse(text, 1 << 20);
    let reference = reference_parse(text, 1 << 20);
    let parsed = match (parsed, reference) {
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "different errors for {text:?}");
            return;
        }
        (Ok(p), Ok((alg, kid, c, payload))) => {
            assert_eq!(p.header.alg, alg);
            assert_eq!(p.header.kid, kid);
            assert!(same_claims(&p.claims, &c), "{:?} != {c:?}", p.claims);
            assert_eq!(p.payload_map(), payload);
            p
        }
        (a, b) => panic!("one parser accepts {text:?}: {:?} / {:?}", a.err(), b.err()),
    };
    let policy = Policy {
        now: 1.7e9,
        leeway: 30.0,
        audience: Some("api"),
        issuer: Some("me"),
    };
    let _ = claims::check_claims(&parsed.claims, &policy);
    let _ = jws::token_hash(&parsed);
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
