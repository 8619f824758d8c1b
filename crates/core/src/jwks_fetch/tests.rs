use super::*;
use serde_json::json;

#[test]
fn max_age_reads_the_directive_and_ignores_the_rest() {
    assert_eq!(max_age("public, max-age=300, must-revalidate"), Some(300));
    assert_eq!(max_age("MAX-AGE=\"60\""), Some(60));
    assert_eq!(max_age("no-cache"), Some(0));
    assert_eq!(max_age("max-age=600, no-store"), Some(0));
    assert_eq!(max_age("public"), None);
    assert_eq!(max_age("max-age=-5"), None);
    assert_eq!(max_age("max-age=1e3"), None);
    assert_eq!(max_age("max-age="), None);
    assert_eq!(max_age("max-age=99999999999999999999999"), Some(u64::MAX));
}

#[test]
fn fresh_for_is_bounded_by_refresh_and_min_refresh() {
    // max-age shortens refresh
    assert_eq!(fresh_for(3600.0, Some(300), 60.0), 300.0);
    // never longer than refresh
    assert_eq!(fresh_for(3600.0, Some(86_400), 60.0), 3600.0);
    // never under min_refresh, even for no-cache or a tiny max-age
    assert_eq!(fresh_for(3600.0, Some(0), 60.0), 60.0);
    assert_eq!(fresh_for(3600.0, Some(5), 60.0), 60.0);
    assert_eq!(fresh_for(10.0, None, 60.0), 60.0);
    assert_eq!(fresh_for(3600.0, None, 60.0), 3600.0);
}

#[test]
fn backoff_doubles_with_jitter_within_bounds() {
    let lo = |n| backoff(n, 60.0, 3600.0, 0.0);
    let hi = |n| backoff(n, 60.0, 3600.0, 0.999_999);
    assert_eq!(lo(1), 60.0); // 48 s raised to min_refresh
    assert!((hi(1) - 72.0).abs() < 0.01);
    assert!((lo(2) - 96.0).abs() < 0.01);
    assert!((lo(3) - 192.0).abs() < 0.01);
    // capped at refresh (3600), spread ±20 %
    assert!((lo(20) - 2880.0).abs() < 0.01);
    assert!(hi(20) <= 4320.0 + 0.01);
    // a large refresh is capped at an hour
    assert!(backoff(40, 60.0, 86_400.0, 1.0) <= MAX_BACKOFF_SECS * 1.2 + 0.01);
    // never under min_refresh whatever the jitter
    for j in [0.0, 0.5, 1.0] {
        for n in 0..50 {
            assert!(backoff(n, 60.0, 30.0, j) >= 60.0);
        }
    }
}

#[test]
fn early_fetches_are_one_per_min_refresh() {
    assert!(early_fetch_allowed(1000.0, None, 60.0));
    assert!(!early_fetch_allowed(1000.0, Some(950.0), 60.0));
    assert!(early_fetch_allowed(1010.0, Some(950.0), 60.0));
    // a flood of requests within one minute allows exactly one fetch
    let mut last = None;
    let mut fetches = 0;
    for i in 0..10_000 {
        let now = 1000.0 + f64::from(i) * 0.005;
        if early_fetch_allowed(now, last, 60.0) {
            fetches += 1;
            last = Some(now);
        }
    }
    assert_eq!(fetches, 1);
}

#[test]
fn stale_keys_are_usable_for_max_stale_past_their_due_time() {
    assert!(!keys_usable(100.0, None, 86_400.0));
    assert!(keys_usable(100.0, Some(200.0), 0.0));
    assert!(keys_usable(250.0, Some(200.0), 60.0));
    assert!(!keys_usable(261.0, Some(200.0), 60.0));
}

#[test]
fn addresses_are_classified() {
    let np = |s: &str| non_public(s.parse().unwrap());
    for private in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "0.1.2.3",
        "192.0.0.8",
        "192.0.2.1",
        "198.18.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fd00::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "2002:7f00:1::",
        "2001::1",
        "100::1",
        "::127.0.0.1",
    ] {
        assert!(np(private).is_some(), "{private} must be refused");
    }
    for public in [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "100.128.0.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::",
    ] {
        assert_eq!(np(public), None, "{public} is public");
    }
    assert_eq!(
        np("169.254.169.254"),
        Some("link-local (cloud metadata services live here)")
    );
}

#[test]
fn allowed_hosts_match_names_and_addresses() {
    assert!(host_allowed("idp.internal, 127.0.0.1", "127.0.0.1"));
    assert!(host_allowed("IDP.internal", "idp.INTERNAL"));
    assert!(host_allowed("[::1]", "::1"));
    assert!(host_allowed("::1", "[::1]"));
    assert!(!host_allowed("", "127.0.0.1"));
    assert!(!host_allowed("idp.internal", "idp.internal.evil.com"));
    assert!(!host_allowed(" , ", ""));
}

fn jwk(alg: Alg, kid: &str) -> Value {
    keys::public_jwk(alg, &keys::generate(alg), kid)
}

#[test]
fn issuer_jwks_keeps_signing_keys_and_skips_the_rest() {
    let mut no_alg = jwk(Alg::RS256, "rsa-no-alg");
    no_alg.as_object_mut().unwrap().remove("alg");
    let mut ec_no_alg = jwk(Alg::ES384, "ec-no-alg");
    ec_no_alg.as_object_mut().unwrap().remove("alg");
    let mut enc = jwk(Alg::RS256, "enc");
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP");
    let mut no_kid = jwk(Alg::EdDSA, "x");
    no_kid.as_object_mut().unwrap().remove("kid");
    let doc = json!({"keys": [
        jwk(Alg::RS256, "a"), jwk(Alg::PS256, "b"), jwk(Alg::ES256, "c"), no_alg, ec_no_alg,
        enc, no_kid,
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
        {"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQAB", "e": "AQAB", "kid": "oaep"},
    ]});
    let keys = issuer_jwks(&doc).unwrap();
    let got: Vec<_> = keys
        .iter()
        .map(|k| (k.kid.clone(), k.alg.map(Alg::as_str)))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("a".into()), Some("RS256")),
            (Some("b".into()), Some("PS256")),
            (Some("c".into()), Some("ES256")),
            (Some("rsa-no-alg".into()), None),
            (Some("ec-no-alg".into()), None),
            (None, Some("EdDSA")),
        ]
    );
    assert!(keys.iter().all(|k| !k.material.can_sign));
    // an RSA key without alg serves PS256 as well as RS256
    let rsa = &keys[3].material;
    assert!(keys::load_key(Alg::PS256, rsa).is_ok());
    assert!(keys::load_key(Alg::RS256, rsa).is_ok());
}

#[test]
fn issuer_jwks_refuses_private_members_and_junk_whole() {
    for m in PRIVATE_JWK_MEMBERS {
        let mut k = jwk(Alg::ES256, "k");
        k[m] = json!("AAAA");
        let err = issuer_jwks(&json!({"keys": [jwk(Alg::RS256, "ok"), k]})).unwrap_err();
        assert!(err.contains("private member"), "{m}: {err}");
    }
    assert!(issuer_jwks(&json!([])).is_err());
    assert!(issuer_jwks(&json!({"keys": {}})).is_err());
    assert!(issuer_jwks(&json!({"keys": []}))
        .unwrap_err()
        .contains("no signing key"));
    // HMAC keys are never an issuer's: skipped, so a JWKS of only HMAC keys has nothing usable
    assert!(issuer_jwks(&json!({"keys": [{"kty": "oct", "alg": "HS256", "kid": "h"}]})).is_err());
    let many: Vec<Value> = (0..=MAX_KEYS)
        .map(|i| json!({"kty": "EC", "crv": "P-521", "kid": i.to_string()}))
        .collect();
    assert!(issuer_jwks(&json!({ "keys": many }))
        .unwrap_err()
        .contains("at most"));
    // an RSA key whose modulus is junk is an error naming the key, not a panic
    let err = issuer_jwks(
        &json!({"keys": [{"kty": "RSA", "alg": "RS256", "kid": "bad", "n": "AA", "e": "AQAB"}]}),
    )
    .unwrap_err();
    assert!(err.contains("\"bad\""), "{err}");
}

#[test]
fn discovery_demands_the_same_issuer() {
    let doc =
        json!({"issuer": "https://idp.example/realms/a", "jwks_uri": "https://idp.example/certs"});
    assert_eq!(
        discovery_jwks_uri(&doc, "https://idp.example/realms/a").unwrap(),
        "https://idp.example/certs"
    );
    assert!(discovery_jwks_uri(&doc, "https://idp.example/realms/a/").is_err());
    assert!(discovery_jwks_uri(&json!({"issuer": "x"}), "x").is_err());
    assert!(discovery_jwks_uri(&json!("x"), "x").is_err());
    assert_eq!(
        discovery_url("https://idp.example/realms/a/"),
        "https://idp.example/realms/a/.well-known/openid-configuration"
    );
}

#[test]
fn issuer_hashes_differ_by_database_and_issuer() {
    assert_ne!(issuer_hash(1, "a"), issuer_hash(2, "a"));
    assert_ne!(issuer_hash(1, "a"), issuer_hash(1, "b"));
    assert_eq!(issuer_hash(1, "a"), issuer_hash(1, "a"));
    assert_ne!(issuer_hash(0, ""), 0);
}
