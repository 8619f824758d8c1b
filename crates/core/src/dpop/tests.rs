use super::*;
use serde_json::json;

/// Proofs made by jwcrypto (tests/fixtures/dpop/make_fixtures.py).
const FIXTURES: &str = include_str!("../../tests/fixtures/dpop/proofs.json");

fn fixtures() -> Value {
    serde_json::from_str(FIXTURES).unwrap()
}

fn request<'a>(f: &'a Value) -> Request<'a> {
    Request {
        htm: f["htm"].as_str().unwrap(),
        htu: f["htu"].as_str().unwrap(),
        access_token: Some(f["access_token"].as_str().unwrap()),
        nonce: Some(f["nonce"].as_str().unwrap()),
        now: f["now"].as_f64().unwrap(),
        max_age: 60.0,
        leeway: 30.0,
        max_bytes: 16384,
    }
}

fn object(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn rfc7638_example_thumbprint() {
    // RFC 7638 section 3.1: the RSA key of RFC 7517 appendix A.1 and its thumbprint
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    assert_eq!(
        jwk_thumbprint(&object(jwk)).unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

const RFC9449_JWK_X: &str = "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs";
const RFC9449_JWK_Y: &str = "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA";
const RFC9449_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

#[test]
fn rfc9449_example_key_thumbprint() {
    // RFC 9449 figures 2 and 9: the example key and the jkt of its bound tokens; members in
    // another order and extra members change nothing
    let jwk =
        json!({"y": RFC9449_JWK_Y, "x": RFC9449_JWK_X, "kid": "k", "crv": "P-256", "kty": "EC"});
    assert_eq!(jwk_thumbprint(&object(jwk)).unwrap(), RFC9449_JKT);
}

#[test]
fn rfc9449_token_request_proof() {
    // RFC 9449 figure 3 (section 4.1): the proof of a token request, verbatim
    let proof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
    let mut req = Request {
        htm: "POST",
        htu: "https://server.example.com/token",
        access_token: None,
        nonce: None,
        now: 1_562_262_620.0,
        max_age: 60.0,
        leeway: 30.0,
        max_bytes: 16384,
    };
    let p = check_proof(proof, &req).unwrap();
    assert_eq!(p.jkt, RFC9449_JKT);
    assert_eq!(p.jti, "-BwC3ESc6acc2lTc");
    assert_eq!(p.iat, json!(1562262616));
    // the same proof a day later, for another method or URI, or with an access token
    req.now += 86_400.0;
    assert_eq!(
        check_proof(proof, &req).unwrap_err().reason,
        Reason::DpopStale
    );
    req.now -= 86_400.0;
    req.htm = "GET";
    assert_eq!(
        check_proof(proof, &req).unwrap_err().reason,
        Reason::DpopHtmMismatch
    );
    req.htm = "POST";
    req.htu = "https://server.example.com/token2";
    assert_eq!(
        check_proof(proof, &req).unwrap_err().reason,
        Reason::DpopHtuMismatch
    );
    req.htu = "https://SERVER.example.com:443/token?x=1";
    assert!(check_proof(proof, &req).is_ok());
    req.access_token = Some("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU");
    assert_eq!(
        check_proof(proof, &req).unwrap_err().reason,
        Reason::DpopAthMismatch
    );
    // one changed character of the signature
    let forged = format!("{}A", &proof[..proof.len() - 1]);
    req.access_token = None;
    let e = check_proof(&forged, &req).unwrap_err();
    assert_eq!(e.reason, Reason::DpopInvalid);
    assert!(e.detail.contains("signature"), "{}", e.detail);
}

#[test]
fn rfc9449_ath_example() {
    // RFC 9449 figure 13 (section 7.1): the access token and the ath of its proofs
    assert_eq!(
        ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

#[test]
fn jwcrypto_proofs_of_every_algorithm_verify() {
    let f = fixtures();
    let req = request(&f);
    let valid = f["valid"].as_array().unwrap();
    let algs: Vec<&str> = valid.iter().map(|v| v["alg"].as_str().unwrap()).collect();
    assert_eq!(algs, ["ES256", "ES384", "RS256", "PS256", "EdDSA"]);
    for v in valid {
        let p = check_proof(v["proof"].as_str().unwrap(), &req)
            .unwrap_or_else(|e| panic!("{}: {e:?}", v["alg"]));
        // jwcrypto's thumbprint of the same key
        assert_eq!(p.jkt, v["jkt"].as_str().unwrap(), "{}", v["alg"]);
        assert_eq!(
            jwk_thumbprint(v["jwk"].as_object().unwrap()).unwrap(),
            p.jkt
        );
        assert_eq!(p.jti, v["jti"].as_str().unwrap());
        assert_eq!(p.iat_secs, req.now - 5.0);
    }
}

#[test]
fn jwcrypto_proofs_that_must_fail_fail_with_their_reason() {
    let f = fixtures();
    let req = request(&f);
    let cases = f["invalid"].as_array().unwrap();
    assert!(cases.len() >= 23);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let e = check_proof(c["proof"].as_str().unwrap(), &req).expect_err(name);
        assert_eq!(
            e.reason.as_str(),
            c["reason"].as_str().unwrap(),
            "{name}: {}",
            e.detail
        );
        assert!(!e.detail.is_empty());
    }
}

#[test]
fn a_private_or_missing_jwk_says_so() {
    let f = fixtures();
    let req = request(&f);
    let find = |name: &str| {
        let c = f["invalid"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        check_proof(c["proof"].as_str().unwrap(), &req)
            .unwrap_err()
            .detail
    };
    assert!(find("jwk with the private key").contains("private member \"d\""));
    assert!(find("jwk missing").contains("no jwk"));
    assert!(find("typ JWT").contains("typ"));
    assert!(find("alg none").contains("not a JWS"));
    assert!(find("HS256 with an oct jwk").contains("asymmetric"));
    assert!(find("signed by another key than its jwk").contains("signature"));
}

#[test]
fn htu_forms_equal_once_normalised() {
    let f = fixtures();
    let req = request(&f);
    for c in f["htu_equivalent"].as_array().unwrap() {
        let htu = c["htu"].as_str().unwrap();
        check_proof(c["proof"].as_str().unwrap(), &req).unwrap_or_else(|e| panic!("{htu}: {e:?}"));
        assert_eq!(
            normalize_htu(htu).unwrap(),
            "https://api.example.com/v1/resource"
        );
    }
}

#[test]
fn ath_and_nonce_are_checked_only_when_given() {
    let f = fixtures();
    let mut req = request(&f);
    let proof = |name: &str| {
        f["invalid"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["proof"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    req.access_token = None;
    assert!(check_proof(&proof("ath missing"), &req).is_ok());
    assert!(check_proof(&proof("ath of another token"), &req).is_ok());
    req.nonce = None;
    assert!(check_proof(&proof("nonce missing"), &req).is_ok());
}

#[test]
fn iat_window_edges() {
    let f = fixtures();
    let mut req = request(&f);
    let proof = f["valid"][0]["proof"].as_str().unwrap();
    let iat = req.now - 5.0;
    // oldest accepted: iat = now - max_age - leeway
    req.now = iat + 90.0;
    assert!(check_proof(proof, &req).is_ok());
    req.now = iat + 90.5;
    assert_eq!(
        check_proof(proof, &req).unwrap_err().reason,
        Reason::DpopStale
    );
    // newest accepted: iat = now + leeway
    req.now = iat - 30.0;
    assert!(check_proof(proof, &req).is_ok());
    req.now = iat - 30.5;
    assert_eq!(
        check_proof(proof, &req).unwrap_err().reason,
        Reason::DpopStale
    );
    req.max_age = 0.0;
    req.leeway = 0.0;
    req.now = iat;
    assert!(check_proof(proof, &req).is_ok());
}

#[test]
fn proof_length_is_bounded() {
    let f = fixtures();
    let mut req = request(&f);
    req.max_bytes = 100;
    let e = check_proof(f["valid"][0]["proof"].as_str().unwrap(), &req).unwrap_err();
    assert_eq!(e.reason, Reason::DpopInvalid);
    assert!(e.detail.contains("max_token_bytes"), "{}", e.detail);
}

#[test]
fn htu_normalisation() {
    let same = [
        ("https://a.example/x", "https://a.example/x"),
        ("HTTPS://A.EXAMPLE/x", "https://a.example/x"),
        ("https://a.example:443/x", "https://a.example/x"),
        ("https://a.example:0443/x", "https://a.example/x"),
        ("http://a.example:80/x", "http://a.example/x"),
        ("http://a.example:443/x", "http://a.example:443/x"),
        ("https://a.example:80/x", "https://a.example:80/x"),
        ("https://a.example", "https://a.example/"),
        ("https://a.example?q", "https://a.example/"),
        ("https://a.example/x?q=1#f", "https://a.example/x"),
        ("https://a.example/x#f?q", "https://a.example/x"),
        (
            "https://a.example/%7euser/%2f%2F",
            "https://a.example/~user/%2F%2F",
        ),
        ("https://a.example/a/b/../c/./d", "https://a.example/a/c/d"),
        ("https://a.example/a/..", "https://a.example/"),
        ("https://a.example/a/.", "https://a.example/a/"),
        ("https://[::1]:443/x", "https://[::1]/x"),
        ("https://[FE80::1]:8443/x", "https://[fe80::1]:8443/x"),
        ("https://User@A.example/x", "https://User@a.example/x"),
        // case matters in the path
        ("https://a.example/X", "https://a.example/X"),
    ];
    for (input, want) in same {
        assert_eq!(normalize_htu(input).unwrap(), want, "{input}");
    }
    for bad in [
        "",
        "/x",
        "a.example/x",
        "ftp://a.example/x",
        "https:///x",
        "https://a.example:8x/x",
        "https://a.example/%zz",
        "https://a.example/%4",
        "https://a.example/ x",
        "https://[::1/x",
        "https://[::1]x/y",
    ] {
        assert!(normalize_htu(bad).is_err(), "{bad}");
    }
}

#[test]
fn thumbprint_needs_its_members() {
    assert!(jwk_thumbprint(&object(json!({"kty": "EC", "crv": "P-256", "x": "a"}))).is_err());
    assert!(jwk_thumbprint(&object(json!({"kty": "RSA", "n": 5, "e": "AQAB"}))).is_err());
    assert!(jwk_thumbprint(&object(json!({"kty": "XYZ"}))).is_err());
    assert!(jwk_thumbprint(&object(json!({}))).is_err());
    // RFC 8037 appendix A.3: the Ed25519 key of A.2 and its thumbprint
    let okp =
        json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    assert_eq!(
        jwk_thumbprint(&object(okp)).unwrap(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn binding_claims() {
    // the one-pass parser (what a verification reads) and the tree reading agree
    let jkt_of = |payload: Value| {
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let token = format!("{}.{}.c2ln", b64(&json!({"alg": "ES256"})), b64(&payload));
        let parsed = crate::jws::parse(&token, 16384).unwrap();
        let tree = crate::claims::cnf_jkt(object(payload).get("cnf"));
        assert_eq!(parsed.claims.cnf_jkt, tree);
        tree
    };
    assert_eq!(
        jkt_of(json!({"sub": "a", "cnf": {"jkt": RFC9449_JKT}})),
        Some(Some(RFC9449_JKT.to_owned()))
    );
    assert_eq!(jkt_of(json!({"cnf": {"jkt": 5}})), Some(None));
    for unbound in [
        json!({"sub": "a"}),
        json!({"cnf": {"x5t#S256": "abc"}}),
        json!({"cnf": "jkt"}),
        json!({"cnf": ["jkt"]}),
    ] {
        assert_eq!(jkt_of(unbound), None);
    }
}

#[test]
fn rfc9449_resource_request_proof() {
    // RFC 9449 figure 14 (section 7.1): the proof of a protected resource request, with its ath
    let proof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";
    let mut req = Request {
        htm: "GET",
        htu: "https://resource.example.org/protectedresource",
        access_token: Some("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        nonce: None,
        now: 1_562_262_620.0,
        max_age: 60.0,
        leeway: 30.0,
        max_bytes: 16384,
    };
    let p = check_proof(proof, &req).unwrap();
    assert_eq!(p.jkt, RFC9449_JKT);
    assert_eq!(p.jti, "e1j3V_bKic8-LAEB");
    req.access_token = Some("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxV");
    assert_eq!(
        check_proof(proof, &req).unwrap_err().reason,
        Reason::DpopAthMismatch
    );
}
