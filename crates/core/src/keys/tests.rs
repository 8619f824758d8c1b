//! Key material tests. The PEM fixtures are in `tests/fixtures/`.

use super::*;
use crate::jws;
use serde_json::json;

// Test keys made with OpenSSL 3.0: `openssl genpkey` (PKCS#8), `openssl rsa -traditional`
// (PKCS#1), `openssl rsa -RSAPublicKey_out`, `openssl ec` (SEC1), `openssl ecparam -genkey`
// and `openssl pkey -pubout` (SPKI). They are test fixtures and protect nothing.
const RSA_P8: &str = include_str!("../../tests/fixtures/rsa_p8.pem");
const RSA_P1: &str = include_str!("../../tests/fixtures/rsa_p1.pem");
const RSA_SPKI: &str = include_str!("../../tests/fixtures/rsa_spki.pem");
const RSA_P1PUB: &str = include_str!("../../tests/fixtures/rsa_p1pub.pem");
const RSA1024_P8: &str = include_str!("../../tests/fixtures/rsa1024_p8.pem");
const RSA1024_P1: &str = include_str!("../../tests/fixtures/rsa1024_p1.pem");
const RSA1024_SPKI: &str = include_str!("../../tests/fixtures/rsa1024_spki.pem");
const P256_P8: &str = include_str!("../../tests/fixtures/p256_p8.pem");
const P256_SEC1: &str = include_str!("../../tests/fixtures/p256_sec1.pem");
const P256_SPKI: &str = include_str!("../../tests/fixtures/p256_spki.pem");
const P256PARAM_PEM: &str = include_str!("../../tests/fixtures/p256param.pem");
const P384_P8: &str = include_str!("../../tests/fixtures/p384_p8.pem");
const P384_SEC1: &str = include_str!("../../tests/fixtures/p384_sec1.pem");
const P384_SPKI: &str = include_str!("../../tests/fixtures/p384_spki.pem");
const ED_P8: &str = include_str!("../../tests/fixtures/ed_p8.pem");
const ED_SPKI: &str = include_str!("../../tests/fixtures/ed_spki.pem");
const K1_P8: &str = include_str!("../../tests/fixtures/k1_p8.pem");
const ED448_P8: &str = include_str!("../../tests/fixtures/ed448_p8.pem");
const K1_SPKI: &str = include_str!("../../tests/fixtures/k1_spki.pem");
const ED448_SPKI: &str = include_str!("../../tests/fixtures/ed448_spki.pem");

fn payload() -> Map<String, Value> {
    json!({"sub": "alice", "exp": 2_000_000_000, "aud": ["a"]})
        .as_object()
        .unwrap()
        .clone()
}

/// Sign with `signer`, then parse and verify with `verifier`.
fn sign_and_verify(signer: &LoadedKey, verifier: &LoadedKey) -> bool {
    let token = jws::sign(signer, "kid-1", &payload()).unwrap();
    let parsed = jws::parse(&token, 1 << 16).unwrap();
    assert_eq!(parsed.header.alg, signer.alg.as_str());
    assert_eq!(parsed.header.kid.as_deref(), Some("kid-1"));
    jws::verify_signature(&parsed, verifier)
}

fn tamper(token: &str) -> String {
    let (rest, sig) = token.rsplit_once('.').unwrap();
    let mut sig = sig.to_owned();
    let c = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, c);
    format!("{rest}.{sig}")
}

fn err(alg: Alg, text: &str) -> String {
    parse_key_material(alg, text).expect_err("material must be refused")
}

#[test]
fn round_trip_every_alg_with_generated_keys() {
    for alg in Alg::ALL {
        let m = generate(alg);
        assert!(m.can_sign, "{alg:?}");
        if alg.is_hmac() {
            assert_eq!(m.bytes.len(), alg.min_secret_bytes(), "{alg:?}");
        }
        let key = load_key(alg, &m).unwrap();
        assert!(key.encoding.is_some());
        let token = jws::sign(&key, "k1", &payload()).unwrap();
        let parsed = jws::parse(&token, 1 << 16).unwrap();
        assert_eq!(parsed.header.alg, alg.as_str());
        assert_eq!(parsed.claims.sub.as_deref(), Some("alice"));
        assert!(jws::verify_signature(&parsed, &key), "{alg:?}");
        let forged = tamper(&token);
        assert!(
            !jws::verify_signature(&jws::parse(&forged, 1 << 16).unwrap(), &key),
            "{alg:?}"
        );
        // another key of the same alg does not verify it
        let other = load_key(alg, &generate(alg)).unwrap();
        assert!(!jws::verify_signature(&parsed, &other), "{alg:?}");
        if alg.is_hmac() {
            continue;
        }
        // the public half verifies but cannot sign
        let public = public_part(alg, &m).unwrap();
        assert!(!public.can_sign);
        let verifier = load_key(alg, &public).unwrap();
        assert!(verifier.encoding.is_none());
        assert!(jws::verify_signature(&parsed, &verifier), "{alg:?}");
        // the public JWK reads back as the same public material
        let jwk = public_jwk(alg, &m, "k1");
        assert_eq!(material_from_jwk(&jwk, alg).unwrap(), public);
        // the stored forms are the canonical DER ones
        assert!(PrivateKeyInfoRef::from_der(&m.bytes).is_ok(), "{alg:?}");
        assert!(
            SubjectPublicKeyInfoRef::from_der(&public.bytes).is_ok(),
            "{alg:?}"
        );
    }
}

#[test]
fn generated_key_types() {
    let rsa = generate(Alg::PS256);
    let jwk = public_jwk(Alg::PS256, &rsa, "r");
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    assert_eq!(n.len() * 8, 2048);
    assert_eq!(jwk["e"], "AQAB");
    assert_eq!(
        public_jwk(Alg::ES256, &generate(Alg::ES256), "e")["crv"],
        "P-256"
    );
    assert_eq!(
        public_jwk(Alg::ES384, &generate(Alg::ES384), "e")["crv"],
        "P-384"
    );
    assert_eq!(
        public_jwk(Alg::EdDSA, &generate(Alg::EdDSA), "e")["crv"],
        "Ed25519"
    );
    // RSA keys serve every RS* and PS* alg
    let rsa_algs: Vec<Alg> = Alg::ALL
        .into_iter()
        .filter(|a| a.as_str().starts_with(['R', 'P']))
        .collect();
    assert_eq!(rsa_algs.len(), 6);
    for alg in rsa_algs {
        let k = load_key(alg, &rsa).unwrap();
        assert!(sign_and_verify(&k, &k), "{alg:?}");
    }
    // but a key is loaded only for an alg its type serves
    assert!(load_key(Alg::ES256, &rsa)
        .unwrap_err()
        .contains("does not fit ES256"));
    assert!(load_key(Alg::ES384, &generate(Alg::ES256)).is_err());
    assert!(load_key(Alg::EdDSA, &generate(Alg::ES256)).is_err());
    assert!(load_key(Alg::RS256, &generate(Alg::EdDSA)).is_err());
    let two = generate(Alg::HS256);
    assert_ne!(two.bytes, generate(Alg::HS256).bytes);
}

#[test]
fn pem_forms_are_accepted_and_canonical() {
    let cases: [(Alg, &[&str], &[&str]); 4] = [
        (Alg::RS256, &[RSA_P8, RSA_P1], &[RSA_SPKI, RSA_P1PUB]),
        (Alg::ES256, &[P256_P8, P256_SEC1], &[P256_SPKI]),
        (Alg::ES384, &[P384_P8, P384_SEC1], &[P384_SPKI]),
        (Alg::EdDSA, &[ED_P8], &[ED_SPKI]),
    ];
    for (alg, privates, publics) in cases {
        let first = parse_key_material(alg, privates[0]).unwrap();
        assert!(first.can_sign);
        for text in privates {
            let m = parse_key_material(alg, text).unwrap();
            assert_eq!(m, first, "{alg:?}: every private form gives the same bytes");
        }
        let public = public_part(alg, &first).unwrap();
        for text in publics {
            let m = parse_key_material(alg, text).unwrap();
            assert!(!m.can_sign);
            assert_eq!(m, public, "{alg:?}: every public form gives the same bytes");
        }
        let signer = load_key(alg, &first).unwrap();
        let verifier = load_key(alg, &public).unwrap();
        assert!(sign_and_verify(&signer, &verifier), "{alg:?}");
        // openssl's PKCS#8 and SPKI are already in canonical form
        let der = ::pem::parse(privates[0]).unwrap().into_contents();
        assert_eq!(first.bytes, der, "{alg:?}");
        let spki = ::pem::parse(publics[0]).unwrap().into_contents();
        assert_eq!(public.bytes, spki, "{alg:?}");
    }
    // `openssl ecparam -genkey` output: EC PARAMETERS, then the SEC1 key
    let m = parse_key_material(Alg::ES256, P256PARAM_PEM).unwrap();
    let k = load_key(Alg::ES256, &m).unwrap();
    assert!(sign_and_verify(&k, &k));
    // PS* take RSA keys too; CRLF line ends and surrounding blanks are fine
    let crlf = format!("\n  {}\n", RSA_P1.replace('\n', "\r\n"));
    let m = parse_key_material(Alg::PS512, &crlf).unwrap();
    let k = load_key(Alg::PS512, &m).unwrap();
    assert!(sign_and_verify(&k, &k));
}

#[test]
fn a_public_key_cannot_sign() {
    for (alg, text) in [
        (Alg::RS256, RSA_SPKI),
        (Alg::PS384, RSA_P1PUB),
        (Alg::ES256, P256_SPKI),
        (Alg::ES384, P384_SPKI),
        (Alg::EdDSA, ED_SPKI),
    ] {
        let m = parse_key_material(alg, text).unwrap();
        assert!(!m.can_sign && !m.is_private());
        let key = load_key(alg, &m).unwrap();
        assert!(key.encoding.is_none());
        let e = jws::sign(&key, "k", &payload()).unwrap_err();
        assert!(e.contains("cannot sign"), "{e}");
    }
    // a public JWK imports as verify-only too
    let m = parse_key_material(
        Alg::ES256,
        &public_jwk(Alg::ES256, &generate(Alg::ES256), "k").to_string(),
    );
    assert!(!m.unwrap().can_sign);
}

#[test]
fn small_rsa_keys_are_refused() {
    for text in [RSA1024_P8, RSA1024_P1, RSA1024_SPKI] {
        let e = err(Alg::RS256, text);
        assert!(
            e.contains("1024 bits") && e.contains("at least 2048"),
            "{e}"
        );
    }
    // the same key as a JWK
    let spki = ::pem::parse(RSA1024_SPKI).unwrap().into_contents();
    let info = SubjectPublicKeyInfoRef::from_der(&spki).unwrap();
    let k = RsaPublicKeyRef::from_der(info.subject_public_key.as_bytes().unwrap()).unwrap();
    let jwk = json!({
        "kty": "RSA",
        "n": URL_SAFE_NO_PAD.encode(k.modulus.as_bytes()),
        "e": URL_SAFE_NO_PAD.encode(k.public_exponent.as_bytes()),
    });
    let e = err(Alg::PS256, &jwk.to_string());
    assert!(e.contains("1024 bits"), "{e}");
    let jwks = json!({"keys": [{"kid": "small", "alg": "RS256", "n": jwk["n"], "e": "AQAB", "kty": "RSA"}]});
    let e = jwks_entries(&jwks).unwrap_err();
    assert!(e.contains("\"small\"") && e.contains("1024 bits"), "{e}");
}

#[test]
fn keys_must_fit_their_alg() {
    let cases = [
        (Alg::ES256, P384_P8, "P-384"),
        (Alg::ES256, P384_SEC1, "P-384"),
        (Alg::ES256, P384_SPKI, "P-384"),
        (Alg::ES384, P256_SEC1, "P-256"),
        (Alg::RS256, P256_P8, "P-256"),
        (Alg::RS256, P256_SEC1, "P-256"),
        (Alg::PS256, ED_SPKI, "Ed25519"),
        (Alg::ES256, ED_P8, "Ed25519"),
        (Alg::EdDSA, RSA_P8, "RSA"),
        (Alg::ES256, RSA_P1, "RSA"),
        (Alg::EdDSA, RSA_P1PUB, "RSA"),
    ];
    for (alg, text, found) in cases {
        let e = err(alg, text);
        assert!(
            e.contains("does not fit") && e.contains(alg.as_str()) && e.contains(found),
            "{alg:?}: {e}"
        );
    }
    // kind is checked before size: a small RSA key for ES256 is the wrong type first
    assert!(err(Alg::ES256, RSA1024_P8).contains("does not fit"));
    // unsupported curves and algorithms
    assert!(err(Alg::ES256, K1_P8).contains("secp256k1"));
    assert!(err(Alg::ES256, K1_SPKI).contains("secp256k1"));
    assert!(err(Alg::EdDSA, ED448_P8).contains("Ed448"));
    assert!(err(Alg::EdDSA, ED448_SPKI).contains("Ed448"));
    // JWKs of the wrong type or curve
    let p256 = public_jwk(Alg::ES256, &generate(Alg::ES256), "k");
    let mut p256_no_alg = p256.clone();
    p256_no_alg.as_object_mut().unwrap().remove("alg");
    assert!(err(Alg::ES384, &p256_no_alg.to_string()).contains("does not fit ES384"));
    assert!(err(Alg::RS256, &p256_no_alg.to_string()).contains("does not fit RS256"));
    let ed = public_jwk(Alg::EdDSA, &generate(Alg::EdDSA), "k");
    let mut ed_no_alg = ed.clone();
    ed_no_alg.as_object_mut().unwrap().remove("alg");
    assert!(err(Alg::ES256, &ed_no_alg.to_string()).contains("does not fit ES256"));
    let e = err(
        Alg::RS256,
        r#"{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}"#,
    );
    assert!(e.contains("shared secret"), "{e}");
    assert!(err(
        Alg::ES256,
        r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}"#
    )
    .contains("P-521"));
    assert!(err(Alg::EdDSA, r#"{"kty":"OKP","crv":"X25519","x":"AA"}"#).contains("X25519"));
    // a JWK whose own alg disagrees is refused, one that agrees is fine
    let e = err(Alg::ES384, &p256.to_string());
    assert!(e.contains("ES256") && e.contains("ES384"), "{e}");
    assert!(parse_key_material(Alg::ES256, &p256.to_string()).is_ok());
    let mut enc = p256.clone();
    enc["use"] = "enc".into();
    assert!(err(Alg::ES256, &enc.to_string()).contains("\"sig\""));
    // PEM keys are not HMAC secrets
    let e = err(Alg::HS256, RSA_SPKI);
    assert!(e.contains("PEM"), "{e}");
    // neither PEM nor JWK
    assert!(err(Alg::RS256, "just some text").contains("PEM"));
    assert!(err(Alg::ES256, "").contains("neither"));
    assert!(err(Alg::RS256, r#"{"n":"abc"}"#).contains("kty"));
}

#[test]
fn bad_pem_is_refused() {
    let body_line = RSA_P8.lines().nth(3).unwrap();
    let cases = [
        (RSA_P8.replace(body_line, "!!!!"), "malformed"),
        (RSA_P8.replace("-----END PRIVATE KEY-----", ""), ""),
        (format!("{RSA_P8}{RSA_SPKI}"), "more than one"),
        (RSA_P8.replace("PRIVATE KEY", "RSA PRIVATE KEY"), "PKCS#1"),
        (RSA_P1.replace("RSA PRIVATE KEY", "PRIVATE KEY"), "PKCS#8"),
        (RSA_SPKI.replace("PUBLIC KEY", "RSA PUBLIC KEY"), "PKCS#1"),
        (
            RSA_P8.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
            "encrypted",
        ),
        (RSA_SPKI.replace("PUBLIC KEY", "CERTIFICATE"), "certificate"),
        (
            RSA_SPKI.replace("PUBLIC KEY", "SOMETHING ELSE"),
            "not supported",
        ),
        (
            RSA_P1.replacen(
                "-----\n",
                "-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n",
                1,
            ),
            "encrypted",
        ),
    ];
    for (text, want) in cases {
        let e = err(Alg::RS256, &text);
        assert!(e.contains(want), "{want}: {e}");
    }
    // a corrupted modulus (still valid DER) is an inconsistent key
    let mut bad = ::pem::parse(RSA_P1).unwrap().into_contents();
    bad[20] ^= 1;
    let text = ::pem::encode(&::pem::Pem::new("RSA PRIVATE KEY", bad));
    assert!(err(Alg::RS256, &text).contains("invalid"));
    let mut bad = ::pem::parse(P256_SEC1).unwrap().into_contents();
    bad[10] ^= 1; // inside the private scalar: no longer matches the embedded public key
    let text = ::pem::encode(&::pem::Pem::new("EC PRIVATE KEY", bad));
    assert!(err(Alg::ES256, &text).contains("not a valid"));
}

// RFC 7515 appendix A.2: the RSA key (JWK members verbatim) and the RS256 token.
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_E: &str = "AQAB";
const A2_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const A2_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const A2_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
const A2_DP: &str = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0";
const A2_DQ: &str = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU";
const A2_QI: &str = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U";
const A2_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

// RFC 7515 appendix A.3: the P-256 key (JWK members verbatim) and the ES256 token.
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
const A3_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

// RFC 8037 appendix A.1 and A.4: the Ed25519 key and the EdDSA signature.
const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
const RFC8037_SIG: &str =
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

fn a2_private() -> Value {
    json!({"kty": "RSA", "n": A2_N, "e": A2_E, "d": A2_D, "p": A2_P, "q": A2_Q, "dp": A2_DP, "dq": A2_DQ, "qi": A2_QI})
}

#[test]
fn rfc7515_a2_rs256_example() {
    let token = jws::parse(A2_TOKEN, 1 << 16).unwrap();
    assert_eq!(token.header.alg, "RS256");
    assert_eq!(token.claims.iss.as_deref(), Some("joe")); // its exp (2011) is past: signature only
    let public = parse_key_material(
        Alg::RS256,
        &json!({"kty": "RSA", "n": A2_N, "e": A2_E}).to_string(),
    )
    .unwrap();
    assert!(!public.can_sign);
    assert!(jws::verify_signature(
        &token,
        &load_key(Alg::RS256, &public).unwrap()
    ));
    // the private JWK loads, is consistent, and RS256 being deterministic, re-signing the
    // signing input gives the RFC's signature exactly
    let private = parse_key_material(Alg::RS256, &a2_private().to_string()).unwrap();
    assert!(private.can_sign);
    assert_eq!(public_part(Alg::RS256, &private).unwrap(), public);
    let key = load_key(Alg::RS256, &private).unwrap();
    assert!(jws::verify_signature(&token, &key));
    let sig = jsonwebtoken::crypto::sign(
        token.signing_input.as_bytes(),
        key.encoding.as_ref().unwrap(),
        jsonwebtoken::Algorithm::RS256,
    )
    .unwrap();
    assert_eq!(sig, token.signature);
    // n, e and d alone: the primes are recovered, and the canonical form is the same
    let minimal = json!({"kty": "RSA", "n": A2_N, "e": A2_E, "d": A2_D});
    assert_eq!(
        parse_key_material(Alg::RS256, &minimal.to_string()).unwrap(),
        private
    );
    // the public JWK we publish is the RFC's
    let jwk = public_jwk(Alg::RS256, &private, "2010-12-29");
    assert_eq!(
        jwk,
        json!({"kid": "2010-12-29", "alg": "RS256", "use": "sig", "kty": "RSA", "n": A2_N, "e": A2_E})
    );
    // the same key under PS256 does not verify an RS256 signature
    assert!(!jws::verify_signature(
        &token,
        &load_key(Alg::PS256, &public).unwrap()
    ));
    // with a wrong d it is refused
    let mut wrong = a2_private();
    wrong["d"] = A2_DP.into();
    let e = err(Alg::RS256, &wrong.to_string());
    assert!(e.contains("do not form a valid key"), "{e}");
    let mut one_prime = a2_private();
    one_prime.as_object_mut().unwrap().remove("q");
    assert!(err(Alg::RS256, &one_prime.to_string()).contains("only one of"));
}

#[test]
fn rfc7515_a3_es256_example() {
    let token = jws::parse(A3_TOKEN, 1 << 16).unwrap();
    assert_eq!(token.header.alg, "ES256");
    let public = json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y});
    let public = parse_key_material(Alg::ES256, &public.to_string()).unwrap();
    assert!(!public.can_sign);
    assert!(jws::verify_signature(
        &token,
        &load_key(Alg::ES256, &public).unwrap()
    ));
    let private = json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": A3_D});
    let private = parse_key_material(Alg::ES256, &private.to_string()).unwrap();
    assert!(private.can_sign);
    assert_eq!(public_part(Alg::ES256, &private).unwrap(), public);
    let key = load_key(Alg::ES256, &private).unwrap();
    assert!(jws::verify_signature(&token, &key));
    assert!(sign_and_verify(
        &key,
        &load_key(Alg::ES256, &public).unwrap()
    ));
    let jwk = public_jwk(Alg::ES256, &private, "e9bc097a");
    assert_eq!(
        jwk,
        json!({"kid": "e9bc097a", "alg": "ES256", "use": "sig", "kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y})
    );
    // the wrong curve for the alg, a d that does not match, a point off the curve
    let e = err(
        Alg::ES384,
        &json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y}).to_string(),
    );
    assert!(e.contains("does not fit ES384"), "{e}");
    let other_d = URL_SAFE_NO_PAD.encode([7u8; 32]);
    let e = err(
        Alg::ES256,
        &json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": other_d}).to_string(),
    );
    assert!(e.contains("does not match"), "{e}");
    let e = err(
        Alg::ES256,
        &json!({"kty": "EC", "crv": "P-256", "x": A3_Y, "y": A3_X}).to_string(),
    );
    assert!(e.contains("not a point"), "{e}");
    let e = err(
        Alg::ES256,
        &json!({"kty": "EC", "crv": "P-256", "x": "AAEC", "y": A3_Y}).to_string(),
    );
    assert!(e.contains("32 bytes"), "{e}");
}

#[test]
fn rfc8037_ed25519_example() {
    let public = parse_key_material(
        Alg::EdDSA,
        &json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}).to_string(),
    )
    .unwrap();
    let verifier = load_key(Alg::EdDSA, &public).unwrap();
    assert!(verifier.verify(RFC8037_INPUT.as_bytes(), RFC8037_SIG));
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D, "x": RFC8037_X});
    let private = parse_key_material(Alg::EdDSA, &jwk.to_string()).unwrap();
    let signer = load_key(Alg::EdDSA, &private).unwrap();
    let sig = jsonwebtoken::crypto::sign(
        RFC8037_INPUT.as_bytes(),
        signer.encoding.as_ref().unwrap(),
        jsonwebtoken::Algorithm::EdDSA,
    )
    .unwrap();
    assert_eq!(sig, RFC8037_SIG);
    assert_eq!(public_part(Alg::EdDSA, &private).unwrap(), public);
    assert_eq!(public_jwk(Alg::EdDSA, &private, "ed")["x"], RFC8037_X);
    let wrong = json!({"kty": "OKP", "crv": "Ed25519", "d": A3_D, "x": RFC8037_X});
    assert!(err(Alg::EdDSA, &wrong.to_string()).contains("does not match"));
}

#[test]
fn public_jwks_have_no_private_members() {
    let mut materials: Vec<(Alg, KeyMaterial)> =
        Alg::ALL.iter().map(|a| (*a, generate(*a))).collect();
    materials.push((
        Alg::RS256,
        parse_key_material(Alg::RS256, &a2_private().to_string()).unwrap(),
    ));
    materials.push((
        Alg::ES256,
        parse_key_material(Alg::ES256, P256_SEC1).unwrap(),
    ));
    for (alg, m) in &materials {
        let jwk = public_jwk(*alg, m, "the-kid");
        let o = jwk.as_object().unwrap();
        for member in PRIVATE_JWK_MEMBERS {
            assert!(!o.contains_key(member), "{alg:?} has {member}");
        }
        assert_eq!(o["kid"], "the-kid");
        assert_eq!(o["alg"], alg.as_str());
        let expected: &[&str] = match Kind::of(*alg) {
            None => &["alg", "kid", "kty"],
            Some(Kind::Rsa) => &["alg", "e", "kid", "kty", "n", "use"],
            Some(Kind::P256 | Kind::P384) => &["alg", "crv", "kid", "kty", "use", "x", "y"],
            Some(Kind::Ed25519) => &["alg", "crv", "kid", "kty", "use", "x"],
        };
        let mut names: Vec<&str> = o.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, expected, "{alg:?}");
        if alg.is_hmac() {
            assert_eq!(o["kty"], "oct");
        } else {
            assert_eq!(o["use"], "sig");
        }
    }
}

/// Every chunk of at least 8 characters of the secret parts of `text`.
fn fragments(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut add = |s: &str| {
        let chars: Vec<char> = s.chars().collect();
        for w in chars.windows(8) {
            out.push(w.iter().collect());
        }
    };
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(text) {
        for (k, v) in o {
            if let (false, Some(s)) = (
                ["kty", "crv", "alg", "use", "kid"].contains(&k.as_str()),
                v.as_str(),
            ) {
                add(s);
            }
        }
    } else {
        for line in text.lines().filter(|l| !l.starts_with("-----")) {
            add(line);
        }
    }
    out
}

#[test]
fn errors_never_quote_the_key() {
    let mut wrong_d = a2_private();
    wrong_d["d"] = A2_DP.into();
    let body_line = RSA_P8.lines().nth(5).unwrap();
    let broken_line = format!("{}*{}", &body_line[..9], &body_line[10..]);
    let mut sec1 = ::pem::parse(P256_SEC1).unwrap().into_contents();
    sec1[12] ^= 0x55;
    let cases: Vec<(Alg, String)> = vec![
        (Alg::RS256, RSA1024_P8.to_owned()),
        (Alg::ES256, RSA_P8.to_owned()),
        (Alg::ES384, P256_SEC1.to_owned()),
        (Alg::EdDSA, P256_SPKI.to_owned()),
        (Alg::RS256, RSA_P8.replace(body_line, &broken_line)),
        (Alg::RS256, RSA_P8.replace("PRIVATE KEY", "RSA PRIVATE KEY")),
        (Alg::ES256, ::pem::encode(&::pem::Pem::new("EC PRIVATE KEY", sec1))),
        (Alg::RS256, wrong_d.to_string()),
        (Alg::ES256, json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": URL_SAFE_NO_PAD.encode([9u8; 32])}).to_string()),
        (Alg::ES256, json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": "%%secret%%value%%"}).to_string()),
        (Alg::ES384, json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": A3_D}).to_string()),
        (Alg::EdDSA, json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "d": A3_X}).to_string()),
        (Alg::HS512, json!({"kty": "oct", "k": "c2hvcnRzZWNyZXRzaG9ydHNlY3JldA"}).to_string()),
        (Alg::HS256, "a short secret".to_owned()),
        (Alg::ES256, K1_P8.to_owned()),
        (Alg::EdDSA, ED448_SPKI.to_owned()),
        (Alg::HS256, RSA_SPKI.to_owned()),
        (Alg::RS256, RSA_P8.lines().filter(|l| !l.starts_with("-----")).collect()),
        (Alg::RS256, RSA_P8.replace("PRIVATE KEY", "X509 CRL")),
        (Alg::ES256, json!({"kty": "oct", "k": A3_D}).to_string()),
        (Alg::ES256, json!({"kty": "EC", "crv": "P-256", "x": A3_X}).to_string()),
    ];
    for (alg, text) in cases {
        let e = err(alg, &text);
        assert!(!e.is_empty());
        // lowercase, except the HMAC length message that starts with the alg name and the
        // refusals of key material as a secret, which are whole sentences
        let lowercase = e.starts_with(|c: char| c.is_ascii_lowercase());
        let sentence = e.starts_with("The text ") && e.ends_with('.');
        assert!(
            lowercase || sentence || e.contains("needs a secret of at least"),
            "lowercase: {e}"
        );
        for f in fragments(&text) {
            assert!(!e.contains(&f), "{alg:?}: error {e:?} quotes {f:?}");
        }
    }
    // Debug never shows the bytes
    let m = parse_key_material(Alg::HS256, "correct horse battery staple, long enough").unwrap();
    let shown = format!("{m:?}");
    assert!(
        !shown.contains("99") && shown.contains("not shown"),
        "{shown}"
    );
}

#[test]
fn jwks_import() {
    let ed = generate(Alg::EdDSA);
    let ed_public = public_jwk(Alg::EdDSA, &ed, "ed-1");
    let mut a2 = a2_private();
    a2["kid"] = "2010-12-29".into();
    a2["alg"] = "RS256".into();
    let a3 = json!({"kid": "e9bc", "alg": "ES256", "use": "sig", "kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": A3_D});
    let jwks = json!({"keys": [a2, a3, ed_public]});
    let entries = jwks_entries(&jwks).unwrap();
    let kids: Vec<(&str, Alg)> = entries.iter().map(|(k, a, _)| (k.as_str(), *a)).collect();
    assert_eq!(
        kids,
        [
            ("2010-12-29", Alg::RS256),
            ("e9bc", Alg::ES256),
            ("ed-1", Alg::EdDSA)
        ]
    );
    // only the public parts are kept, even where private members were given
    for (_, alg, m) in &entries {
        assert!(!m.can_sign);
        assert!(load_key(*alg, m).unwrap().encoding.is_none());
    }
    let a2_private_material = parse_key_material(Alg::RS256, &a2_private().to_string()).unwrap();
    assert_eq!(
        entries[0].2,
        public_part(Alg::RS256, &a2_private_material).unwrap()
    );
    assert_eq!(entries[2].2, public_part(Alg::EdDSA, &ed).unwrap());
    assert!(jws::verify_signature(
        &jws::parse(A2_TOKEN, 1 << 16).unwrap(),
        &load_key(Alg::RS256, &entries[0].2).unwrap()
    ));
    assert!(jws::verify_signature(
        &jws::parse(A3_TOKEN, 1 << 16).unwrap(),
        &load_key(Alg::ES256, &entries[1].2).unwrap()
    ));
    // importing again gives equal materials
    let again = jwks_entries(&jwks).unwrap();
    for (a, b) in entries.iter().zip(&again) {
        assert!(same_material(&a.2, &b.2));
    }
    assert!(!same_material(&entries[0].2, &entries[1].2));
    // a repeated identical entry is kept once, a different key under the same kid is refused
    let dup = json!({"keys": [jwks["keys"][1], jwks["keys"][1]]});
    assert_eq!(jwks_entries(&dup).unwrap().len(), 1);
    let mut clash = jwks["keys"][2].clone();
    clash["kid"] = "e9bc".into();
    let e = jwks_entries(&json!({"keys": [jwks["keys"][1], clash]})).unwrap_err();
    assert!(
        e.contains("two different keys") && e.contains("e9bc"),
        "{e}"
    );
    // refusals name the entry
    let mut no_kid = jwks["keys"][1].clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    let e = jwks_entries(&json!({"keys": [jwks["keys"][0], no_kid]})).unwrap_err();
    assert!(e.contains("index 1") && e.contains("no kid"), "{e}");
    let mut no_alg = jwks["keys"][1].clone();
    no_alg.as_object_mut().unwrap().remove("alg");
    let e = jwks_entries(&json!({"keys": [no_alg]})).unwrap_err();
    assert!(e.contains("\"e9bc\"") && e.contains("no alg"), "{e}");
    let mut oaep = jwks["keys"][0].clone();
    oaep["alg"] = "RSA-OAEP".into();
    let e = jwks_entries(&json!({"keys": [jwks["keys"][1], oaep]})).unwrap_err();
    assert!(
        e.contains("\"2010-12-29\"") && e.contains("RSA-OAEP") && e.contains("not accepted"),
        "{e}"
    );
    let mut none = jwks["keys"][0].clone();
    none["alg"] = "none".into();
    assert!(jwks_entries(&json!({"keys": [none]}))
        .unwrap_err()
        .contains("not accepted"));
    let mut misfit = jwks["keys"][1].clone();
    misfit["alg"] = "ES384".into();
    let e = jwks_entries(&json!({"keys": [misfit]})).unwrap_err();
    assert!(
        e.contains("\"e9bc\"") && e.contains("does not fit ES384"),
        "{e}"
    );
    let mut misfit = jwks["keys"][2].clone();
    misfit["alg"] = "RS256".into();
    assert!(jwks_entries(&json!({"keys": [misfit]}))
        .unwrap_err()
        .contains("does not fit RS256"));
    let oct = json!({"kid": "s", "alg": "HS256", "kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"});
    let e = jwks_entries(&json!({"keys": [oct]})).unwrap_err();
    assert!(e.contains("\"s\"") && e.contains("public keys only"), "{e}");
    let mut enc = jwks["keys"][1].clone();
    enc["use"] = "enc".into();
    assert!(jwks_entries(&json!({"keys": [enc]}))
        .unwrap_err()
        .contains("\"e9bc\""));
    for bad in [json!([]), json!({"keys": {}}), json!({"kids": []})] {
        assert!(jwks_entries(&bad).unwrap_err().contains("\"keys\" array"));
    }
    assert!(jwks_entries(&json!({"keys": ["x"]}))
        .unwrap_err()
        .contains("index 0"));
    assert!(jwks_entries(&json!({"keys": []})).unwrap().is_empty());
}

#[test]
fn hmac_material() {
    assert!(parse_key_material(Alg::HS256, "short")
        .unwrap_err()
        .contains("at least 32 bytes"));
    assert!(parse_key_material(Alg::HS512, &"x".repeat(63)).is_err());
    assert_eq!(
        parse_key_material(Alg::HS512, &"x".repeat(64))
            .unwrap()
            .bytes
            .len(),
        64
    );
    let err = parse_key_material(Alg::HS256, r#"{"kty":"RSA","n":"abc"}"#).unwrap_err();
    assert!(err.contains("oct"), "{err}");
    assert!(parse_key_material(Alg::HS256, r#"{"kty":"oct"}"#).is_err());
    assert!(parse_key_material(Alg::HS256, r#"{"kty":"oct","k":"!!"}"#).is_err());
    // a JSON object or array that is not a JWK is not a secret either (see
    // public_key_material_is_never_an_hmac_secret); other JSON values are
    let e = parse_key_material(Alg::HS256, r#"{"not":"a jwk but long enough....."}"#);
    assert!(e
        .unwrap_err()
        .starts_with("The text is a JSON object or array"));
    let m = parse_key_material(Alg::HS256, r#""a JSON string, long enough to be one""#);
    assert!(m.unwrap().can_sign);
    // errors never echo the secret
    let e = parse_key_material(Alg::HS256, "hunter2").unwrap_err();
    assert!(!e.contains("hunter2"));
    // an oct JWK's own alg must match
    let k = URL_SAFE_NO_PAD.encode([1u8; 48]);
    let jwk = json!({"kty": "oct", "k": k, "alg": "HS384"});
    assert_eq!(
        parse_key_material(Alg::HS384, &jwk.to_string())
            .unwrap()
            .bytes,
        [1u8; 48]
    );
    assert!(parse_key_material(Alg::HS256, &jwk.to_string())
        .unwrap_err()
        .contains("HS384"));
    // the public JWK of a secret has no secret
    let m = generate(Alg::HS384);
    assert_eq!(
        public_jwk(Alg::HS384, &m, "h"),
        json!({"kid": "h", "alg": "HS384", "kty": "oct"})
    );
    assert!(public_part(Alg::HS384, &m).is_err());
}

/// The DER inside a PEM text.
fn der_of(pem_text: &str) -> Vec<u8> {
    ::pem::parse(pem_text).unwrap().into_contents()
}

fn ssh_blob(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![];
    for f in fields {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

#[test]
fn public_key_material_is_never_an_hmac_secret() {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let wrap = |t: &str| {
        t.as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let ed_blob = ssh_blob(&[b"ssh-ed25519", &[7u8; 32]]);
    let rsa_blob = ssh_blob(&[b"ssh-rsa", &[1, 0, 1], &der_of(RSA_SPKI)[33..290]]);
    let sk_blob = ssh_blob(&[b"sk-ssh-ed25519@openssh.com", &[7u8; 32], b"ssh:"]);
    let p256_point = {
        let m = parse_key_material(Alg::ES256, P256_SPKI).unwrap();
        match public_form(&decode_stored(Alg::ES256, &m).unwrap()).unwrap() {
            PublicForm::Ec { point, .. } => point,
            _ => unreachable!(),
        }
    };
    let jwks = json!({"keys": [public_jwk(Alg::RS256, &parse_key_material(Alg::RS256, RSA_SPKI).unwrap(), "k")]});
    let mut no_kty = jwks["keys"][0].clone();
    no_kty.as_object_mut().unwrap().remove("kty");
    let cases: Vec<(&str, String, &str)> = vec![
        ("jwks", jwks.to_string(), "JSON object or array"),
        (
            "jwk without kty",
            no_kty.to_string(),
            "JSON object or array",
        ),
        (
            "json array",
            json!([no_kty]).to_string(),
            "JSON object or array",
        ),
        (
            "cut json",
            format!("{{ \"n\": \"{A2_N}\""),
            "JSON object or array",
        ),
        (
            "cut json array",
            format!("[{{\"n\": \"{A2_N}\""),
            "JSON object or array",
        ),
        ("bracketed", format!("{{{A2_N}}}"), "JSON object or array"),
        (
            "spki base64",
            STANDARD.encode(der_of(RSA_SPKI)),
            "DER key structure",
        ),
        (
            "spki base64 wrapped",
            wrap(&STANDARD.encode(der_of(RSA_SPKI))),
            "DER key structure",
        ),
        (
            "spki base64url",
            URL_SAFE_NO_PAD.encode(der_of(P256_SPKI)),
            "DER key structure",
        ),
        (
            "spki base64url padded",
            URL_SAFE.encode(der_of(P384_SPKI)),
            "DER key structure",
        ),
        (
            "ed25519 spki",
            STANDARD.encode(der_of(ED_SPKI)),
            "DER key structure",
        ),
        ("spki hex", hex(&der_of(RSA_SPKI)), "DER key structure"),
        (
            "spki HEX",
            hex(&der_of(ED_SPKI)).to_uppercase(),
            "DER key structure",
        ),
        (
            "pkcs1 public",
            STANDARD.encode(der_of(RSA_P1PUB)),
            "DER key structure",
        ),
        (
            "pkcs8 private",
            STANDARD.encode(der_of(P256_P8)),
            "DER key structure",
        ),
        (
            "sec1 private",
            STANDARD.encode(der_of(P256_SEC1)),
            "DER key structure",
        ),
        (
            "ec point",
            URL_SAFE_NO_PAD.encode(&p256_point),
            "elliptic-curve",
        ),
        (
            "ssh-ed25519",
            format!("ssh-ed25519 {} me@host", STANDARD.encode(&ed_blob)),
            "SSH key",
        ),
        (
            "ssh-rsa",
            format!("ssh-rsa {}", STANDARD.encode(&rsa_blob)),
            "SSH key",
        ),
        (
            "ssh options",
            format!(
                "no-pty,from=\"x\" ssh-ed25519 {}",
                STANDARD.encode(&ed_blob)
            ),
            "SSH key",
        ),
        (
            "ecdsa",
            format!("ecdsa-sha2-nistp256 {}", STANDARD.encode(&ed_blob)),
            "SSH key",
        ),
        (
            "sk-ssh",
            format!("sk-ssh-ed25519@openssh.com {}", STANDARD.encode(&sk_blob)),
            "SSH key",
        ),
        (
            "sk-ecdsa",
            format!(
                "sk-ecdsa-sha2-nistp256@openssh.com {}",
                STANDARD.encode(&sk_blob)
            ),
            "SSH key",
        ),
        (
            "SSH-RSA upper case",
            format!("SSH-RSA {}", STANDARD.encode(&rsa_blob)),
            "SSH key",
        ),
        ("bare ssh blob", STANDARD.encode(&rsa_blob), "SSH key"),
        ("bare sk blob", STANDARD.encode(&sk_blob), "SSH key"),
        (
            "ssh2 armour",
            format!(
                "---- BEGIN SSH2 PUBLIC KEY ----\n{}\n---- END SSH2 PUBLIC KEY ----",
                wrap(&STANDARD.encode(&ed_blob))
            ),
            "SSH key",
        ),
        (
            "openssh private armour",
            format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
                STANDARD.encode([9u8; 80])
            ),
            "PEM armour",
        ),
        ("pem", RSA_SPKI.to_owned(), "PEM armour"),
        (
            "pem without end",
            RSA_SPKI.replace("-----END PUBLIC KEY-----\n", ""),
            "PEM armour",
        ),
        (
            "pem end only",
            RSA_SPKI.replace("-----BEGIN PUBLIC KEY-----\n", ""),
            "PEM armour",
        ),
        ("lowercase pem", RSA_SPKI.to_lowercase(), "PEM armour"),
        (
            "mixed case pem",
            ED_SPKI.replace("BEGIN", "bEgIn").replace("END", "eNd"),
            "PEM armour",
        ),
        ("private pem", RSA_P8.to_owned(), "PEM armour"),
        (
            "certificate armour",
            format!(
                "-----BEGIN CERTIFICATE-----\n{}",
                STANDARD.encode([1u8; 60])
            ),
            "PEM armour",
        ),
    ];
    for alg in [Alg::HS256, Alg::HS384, Alg::HS512] {
        for (name, text, says) in &cases {
            let e = err(alg, text);
            assert!(e.contains(says), "{name} for {alg:?}: {e}");
            assert!(
                e.starts_with("The text ") && e.ends_with('.'),
                "{name}: {e}"
            );
        }
    }
    // the contract's JWK form still works, and so do secrets that merely look encoded
    let k = URL_SAFE_NO_PAD.encode([5u8; 32]);
    assert!(parse_key_material(Alg::HS256, &json!({"kty": "oct", "k": k}).to_string()).is_ok());
    let random = noise(64);
    let secrets = [
        hex(&random),
        STANDARD.encode(&random),
        URL_SAFE_NO_PAD.encode(&random),
        wrap(&STANDARD.encode(noise(200))),
        "correct horse battery staple, and more words to be long enough for HS512".to_owned(),
        format!("my-ssh-rsa-password-{}", hex(&random)),
        format!("----- dashes, not armour ----- {}", hex(&random)),
        format!("\"{}\"", hex(&random)),
        // a DER SEQUENCE whose contents are not elements, and a point that is not on the curve
        STANDARD.encode([[0x30, 0x3e].as_slice(), &[0xff; 62]].concat()),
        URL_SAFE_NO_PAD.encode([[4u8].as_slice(), &[1u8; 64]].concat()),
    ];
    for text in &secrets {
        assert!(parse_key_material(Alg::HS512, text).is_ok(), "{text}");
    }
    // asymmetric algorithms read the same texts as before
    assert!(parse_key_material(Alg::RS256, RSA_SPKI).is_ok());
    assert!(parse_key_material(Alg::EdDSA, ED_SPKI).is_ok());
}

#[test]
fn rsa_public_exponent_limit() {
    use rsa::pkcs1::UintRef;
    assert_eq!(RSA_MAX_PUBLIC_EXPONENT, 1 << 32);
    let n = URL_SAFE_NO_PAD.decode(A2_N).unwrap();
    let pkcs1_public = |e: u64| {
        let e = e.to_be_bytes();
        let der = RsaPublicKeyRef {
            modulus: UintRef::new(&n).unwrap(),
            public_exponent: UintRef::new(strip_zeros(&e)).unwrap(),
        }
        .to_der()
        .unwrap();
        ::pem::encode(&::pem::Pem::new("RSA PUBLIC KEY", der))
    };
    let spki = |e: u64| {
        let key = RsaPublic::new(BoxedUint::from_be_slice_vartime(&n), BoxedUint::from(e)).unwrap();
        key.to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap()
    };
    let jwk = |e: u64| {
        let e = e.to_be_bytes();
        json!({"kty": "RSA", "n": A2_N, "e": URL_SAFE_NO_PAD.encode(strip_zeros(&e))}).to_string()
    };
    // within the limit: every path accepts; 2^32 - 1 is the largest odd exponent allowed
    for e in [3u64, 65537, (1 << 32) - 1] {
        for text in [pkcs1_public(e), spki(e), jwk(e)] {
            let m = parse_key_material(Alg::RS256, &text).unwrap();
            assert!(load_key(Alg::RS256, &m).is_ok());
        }
        let set = json!({"keys": [{"kid": "k", "alg": "RS256", "kty": "RSA", "n": A2_N,
            "e": URL_SAFE_NO_PAD.encode(strip_zeros(&e.to_be_bytes()))}]});
        assert_eq!(jwks_entries(&set).unwrap().len(), 1);
    }
    // beyond it (the rsa crate alone would allow up to 2^33 - 1)
    for e in [(1u64 << 32) + 1, (1 << 33) - 1] {
        for text in [pkcs1_public(e), spki(e), jwk(e)] {
            let msg = err(Alg::RS256, &text);
            assert!(msg.contains("exponent is larger than 2^32"), "{e}: {msg}");
        }
        let set = json!({"keys": [{"kid": "k", "alg": "RS256", "kty": "RSA", "n": A2_N,
            "e": URL_SAFE_NO_PAD.encode(strip_zeros(&e.to_be_bytes()))}]});
        let msg = jwks_entries(&set).unwrap_err();
        assert!(
            msg.contains("\"k\"") && msg.contains("exponent is larger"),
            "{msg}"
        );
    }
    // far beyond, and in a private JWK (checked before its private members)
    let mut private = a2_private();
    private["e"] = URL_SAFE_NO_PAD.encode([1u8; 9]).into();
    assert!(err(Alg::RS256, &private.to_string()).contains("exponent is larger"));
    private["e"] = URL_SAFE_NO_PAD.encode([0, 0, 1, 0, 0, 0, 1]).into();
    assert!(err(Alg::RS256, &private.to_string()).contains("exponent is larger"));
}

/// `n` random bytes.
fn noise(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).unwrap();
    v
}
