//! JWS compact tokens: splitting and decoding, signature checks, signing, and the token's
//! identity (its hash).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::ops::Range;

use serde_json::{Map, Value};

#[allow(unused_imports)] // named in the docs
use crate::claims::{check_id_claim_length, check_json, registered_claims, MAX_ID_CLAIM_BYTES};
use crate::claims::{Claims, MAX_NUMERIC_DATE, MIN_NUMERIC_DATE};
use crate::keys::LoadedKey;
use crate::scan;

/// The protected header members we act on.
#[derive(Debug, Clone)]
pub struct Header {
    /// `alg` exactly as written; may be one we refuse.
    pub alg: String,
    /// `kid`, when present.
    pub kid: Option<String>,
}

/// A token split, decoded and type-checked, but not yet verified.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub header: Header,
    pub claims: Claims,
    /// The decoded payload, a JSON object that passed [`check_json`]'s rules.
    payload: String,
    /// `base64url(header) "." base64url(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    /// The third part, still base64url.
    pub signature: &'a str,
}

impl Parsed<'_> {
    /// The payload's JSON text as the token carries it: an object, valid and strict (no duplicate
    /// member, no NUL, bounded depth and numbers), so `jsonb_in` or serde_json can read it as is.
    pub fn payload_json(&self) -> &str {
        &self.payload
    }

    /// [`Parsed::payload_json`], taken out.
    pub fn into_payload_json(self) -> String {
        self.payload
    }

    /// The payload as a JSON object (numbers kept exactly as written).
    pub fn payload_map(&self) -> Map<String, Value> {
        match serde_json::from_str::<Value>(&self.payload) {
            Ok(Value::Object(o)) => o,
            // parse checked it is a strict JSON object, which serde_json always reads
            _ => unreachable!("a checked payload is a JSON object"),
        }
    }
}

/// Most non-retired keys of one `alg` a token without `kid` is tried against. With more, such a
/// token is refused as `unknown_key` without any signature check: one call must not cost hundreds.
pub const MAX_KIDLESS_CANDIDATES: usize = 16;

/// Decode one part into `buf` (emptied first) and check it as a JSON object in the same pass that
/// finds the members named `wanted`.
fn decode_object(
    part: &str,
    what: &str,
    buf: &mut Vec<u8>,
    wanted: &[&str],
    found: &mut [Option<Range<usize>>],
) -> Result<(), String> {
    buf.clear();
    URL_SAFE_NO_PAD
        .decode_vec(part, buf)
        .map_err(|_| format!("{what} is not base64url"))?;
    let s = std::str::from_utf8(buf).map_err(|_| format!("{what} is not UTF-8"))?;
    // What serde would accept but must not pass: a NUL cannot be stored, a duplicate member lets
    // two readers see different claims, and deep nesting would reach serde's recursion limit.
    match scan::scan(s, wanted, found) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{what} is not a valid JSON object: not an object")),
        Err(problem) => Err(format!("{what} {problem}")),
    }
}

/// Split and decode a compact JWS. The error says what is wrong without quoting the token.
pub fn parse(token: &str, max_bytes: usize) -> Result<Parsed<'_>, String> {
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
    // one buffer: the header, then (emptied) the payload it becomes
    // (base64's decode_vec asks for room for whole 3-byte groups)
    let mut buf = Vec::with_capacity(h.len().max(p.len()).div_ceil(4) * 3);
    let mut hf: [Option<Range<usize>>; 3] = Default::default();
    decode_object(h, "header", &mut buf, &["alg", "kid", "crit"], &mut hf)?;
    let header_text = std::str::from_utf8(&buf).expect("checked");
    let alg = match &hf[0] {
        Some(span) => scan::string_at(header_text, span)
            .ok_or_else(|| "header alg is not a string".to_owned())?,
        None => return Err("header has no alg".into()),
    };
    let kid = match &hf[1] {
        Some(span) => Some(
            scan::string_at(header_text, span)
                .ok_or_else(|| "header kid is not a string".to_owned())?,
        ),
        None => None,
    };
    // We implement no extension headers, so any critical one is one we do not understand.
    if hf[2].is_some() {
        return Err("header has a crit member this server does not understand".into());
    }
    let mut pf: [Option<Range<usize>>; CLAIM_NAMES.len()] = Default::default();
    decode_object(p, "payload", &mut buf, &CLAIM_NAMES, &mut pf)?;
    let payload = String::from_utf8(buf).expect("checked");
    let claims = claims_at(&payload, &pf)?;
    Ok(Parsed {
        header: Header { alg, kid },
        claims,
        payload,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature: s,
    })
}

/// [`parse`], also giving the whole protected header as a JSON object (for a caller that needs
/// members beyond `alg` and `kid`, such as a DPoP proof's `typ` and `jwk`). The header is read a
/// second time, into a tree, for this caller only.
pub fn parse_with_header(
    token: &str,
    max_bytes: usize,
) -> Result<(Parsed<'_>, Map<String, Value>), String> {
    let parsed = parse(token, max_bytes)?;
    let h = &token[..token.find('.').expect("parse found three parts")];
    let bytes = URL_SAFE_NO_PAD.decode(h).expect("parse decoded it");
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(header)) => Ok((parsed, header)),
        _ => unreachable!("parse checked the header is a strict JSON object"),
    }
}

/// The payload members [`claims_at`] reads, in the order it checks them.
const CLAIM_NAMES: [&str; 9] = [
    "aud", "exp", "nbf", "iat", "sub", "iss", "jti", "sid", "cnf",
];

/// The registered claims from the spans of [`CLAIM_NAMES`] in a checked payload, with the same
/// checks and messages as [`registered_claims`] on its serde_json object.
fn claims_at(text: &str, f: &[Option<Range<usize>>; CLAIM_NAMES.len()]) -> Result<Claims, String> {
    let aud = match &f[0] {
        None => vec![],
        Some(span) => match text.as_bytes()[span.start] {
            b'"' => vec![scan::string_at(text, span).expect("a string")],
            b'[' => {
                scan::strings_at(text, span).ok_or("aud is not a string or an array of strings")?
            }
            _ => return Err("aud is not a string or an array of strings".into()),
        },
    };
    let date = |k: usize, name: &str| -> Result<Option<f64>, String> {
        let Some(span) = &f[k] else { return Ok(None) };
        let v = &text[span.clone()];
        if !v.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return Err(format!("{name} is not a number"));
        }
        // what serde_json's arbitrary-precision Number::as_f64 does with the number's text
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() && (MIN_NUMERIC_DATE..=MAX_NUMERIC_DATE).contains(&x) => {
                Ok(Some(x))
            }
            _ => Err(format!("{name} is out of range")),
        }
    };
    let string = |k: usize, name: &str| -> Result<Option<String>, String> {
        match &f[k] {
            None => Ok(None),
            Some(span) => scan::string_at(text, span)
                .map(Some)
                .ok_or_else(|| format!("{name} is not a string")),
        }
    };
    // first, as `registered_claims` does: a string of an identifying claim over the bound. Its
    // text is at least as long as its value (quotes, escapes), so only a long one is unescaped.
    for (k, name) in [(4, "sub"), (5, "iss"), (6, "jti"), (7, "sid")] {
        let Some(span) = f[k].as_ref().filter(|s| s.len() > MAX_ID_CLAIM_BYTES + 2) else {
            continue;
        };
        if let Some(s) = scan::string_at(text, span) {
            check_id_claim_length(name, &s)?;
        }
    }
    Ok(Claims {
        exp: date(1, "exp")?,
        nbf: date(2, "nbf")?,
        iat: date(3, "iat")?,
        sub: string(4, "sub")?,
        iss: string(5, "iss")?,
        jti: string(6, "jti")?,
        // not a registered claim: a session's tokens carry it; any other type is no session's
        sid: f[7].as_ref().and_then(|span| scan::string_at(text, span)),
        // only a bound token pays for reading its small `cnf` object into a tree
        cnf_jkt: match &f[8] {
            Some(span) if text.as_bytes()[span.start] == b'{' => {
                let cnf = serde_json::from_str::<Value>(&text[span.clone()]).ok();
                crate::claims::cnf_jkt(cnf.as_ref())
            }
            _ => None,
        },
        aud,
    })
}

/// The identity of a token: SHA-256 of its text, except that an ECDSA signature's `s` is first put
/// in its low form. `(r, s)` and `(r, n - s)` both verify, so without this anyone holding a revoked
/// ES256/ES384 token could present its twin as a token never seen before.
pub fn token_hash(token: &Parsed) -> [u8; 32] {
    let mut sig = [0u8; 96];
    let mut low = [0u8; 128];
    match low_s(&token.header.alg, token.signature, &mut sig) {
        Some(s) => {
            let n = URL_SAFE_NO_PAD
                .encode_slice(s.as_slice(), &mut low)
                .expect("room for 96 bytes");
            let text = std::str::from_utf8(&low[..n]).expect("base64url is ASCII");
            raw_hash(token.signing_input, text)
        }
        None => raw_hash(token.signing_input, token.signature),
    }
}

/// The low-S form of an ES256/ES384 signature (`r || s`) when its `s` is high; `None` when it is
/// already low or is no ECDSA signature at all. `buf` takes the decoded signature.
fn low_s(alg: &str, signature: &str, buf: &mut [u8; 96]) -> Option<LowS> {
    let len: usize = match alg {
        "ES256" => 64,
        "ES384" => 96,
        _ => return None,
    };
    if signature.len() != (len * 4).div_ceil(3) {
        return None;
    }
    let n = URL_SAFE_NO_PAD.decode_slice(signature, buf).ok()?;
    let sig = &buf[..n];
    match alg {
        "ES256" => {
            let low = p256::ecdsa::Signature::from_slice(sig).ok()?.normalize_s();
            (low.to_bytes().as_slice() != sig).then(|| LowS::P256(low.to_bytes().into()))
        }
        _ => {
            let low = p384::ecdsa::Signature::from_slice(sig).ok()?.normalize_s();
            (low.to_bytes().as_slice() != sig).then(|| LowS::P384(low.to_bytes().into()))
        }
    }
}

/// A signature in its low-S form, on the stack.
enum LowS {
    P256([u8; 64]),
    P384([u8; 96]),
}

impl LowS {
    fn as_slice(&self) -> &[u8] {
        match self {
            LowS::P256(b) => b,
            LowS::P384(b) => b,
        }
    }
}

fn raw_hash(signing_input: &str, signature: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(signing_input.as_bytes());
    h.update(b".");
    h.update(signature.as_bytes());
    h.finalize().into()
}

/// Check the signature of `token` with `key`. Only the signature: claims are separate.
pub fn verify_signature(token: &Parsed, key: &LoadedKey) -> bool {
    key.verify(token.signing_input.as_bytes(), token.signature)
}

/// Make a compact JWS of `payload` with header `{"alg","kid","typ":"JWT"}`, members in that
/// order. Not `jsonwebtoken::encode`: its header puts `typ` first, and the tokens `jwt_issue`
/// makes are pinned byte for byte (tests/pg_regress/expected/03_tokens.out).
pub fn sign(key: &LoadedKey, kid: &str, payload: &Map<String, Value>) -> Result<String, String> {
    let enc = key.encoding.as_ref().ok_or("this key cannot sign")?;
    let header = serde_json::json!({"alg": key.alg.as_str(), "typ": "JWT", "kid": kid});
    let mut out = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("serialisable"));
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).expect("serialisable")));
    let sig = jsonwebtoken::crypto::sign(out.as_bytes(), enc, key.alg.to_jsonwebtoken())
        .map_err(|e| format!("signing failed: {e}"))?;
    out.push('.');
    out.push_str(&sig);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::{Alg, Reason};
    use crate::claims::check_claims;
    use crate::claims::tests::policy;
    use crate::keys::{load_key, parse_key_material, KeyMaterial};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn hs256() -> LoadedKey {
        load_key(
            Alg::HS256,
            &KeyMaterial {
                bytes: SECRET.to_vec(),
                can_sign: true,
            },
        )
        .unwrap()
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn sign_then_parse_and_verify() {
        let k = hs256();
        let t = sign(
            &k,
            "k1",
            &claims(serde_json::json!({"sub":"alice","exp":2000000000,"aud":["a","b"]})),
        )
        .unwrap();
        let p = parse(&t, 16384).unwrap();
        let header = URL_SAFE_NO_PAD
            .decode(t.split('.').next().unwrap())
            .unwrap();
        assert_eq!(header, br#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#);
        assert_eq!(p.header.alg, "HS256");
        assert_eq!(p.header.kid.as_deref(), Some("k1"));
        assert_eq!(p.claims.sub.as_deref(), Some("alice"));
        assert_eq!(p.claims.aud, vec!["a", "b"]);
        assert!(verify_signature(&p, &k));
        let other = load_key(
            Alg::HS256,
            &KeyMaterial {
                bytes: vec![b'x'; 32],
                can_sign: true,
            },
        )
        .unwrap();
        assert!(!verify_signature(&p, &other));
    }

    #[test]
    fn rfc7515_a1_hs256_signature_verifies() {
        // RFC 7515 appendix A.1: the JWK's k and the token, verbatim.
        let k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let jwk = format!(r#"{{"kty":"oct","k":"{k}"}}"#);
        let m = parse_key_material(Alg::HS256, &jwk).unwrap();
        assert_eq!(m.bytes.len(), 64);
        let key = load_key(Alg::HS256, &m).unwrap();
        let p = parse(token, 16384).unwrap();
        assert!(verify_signature(&p, &key));
        assert_eq!(p.claims.iss.as_deref(), Some("joe"));
        assert_eq!(
            check_claims(&p.claims, &policy(1_700_000_000.0)),
            Err(Reason::Expired)
        );
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let k = hs256();
        let t = sign(
            &k,
            "k1",
            &claims(serde_json::json!({"sub":"alice","exp":2000000000})),
        )
        .unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin","exp":2000000000}"#);
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        let p = parse(&forged, 16384).unwrap();
        assert!(!verify_signature(&p, &k));
        // flip a character of the signature
        let mut sig = parts[2].to_owned();
        let c = if sig.starts_with('A') { "B" } else { "A" };
        sig.replace_range(0..1, c);
        let forged = format!("{}.{}.{}", parts[0], parts[1], sig);
        assert!(!verify_signature(&parse(&forged, 16384).unwrap(), &k));
    }

    #[test]
    fn malformed_inputs_are_refused_with_a_reason() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let p = URL_SAFE_NO_PAD.encode(br#"{"exp":1}"#);
        let cases = [
            ("".to_owned(), "empty"),
            ("a.b".to_owned(), "three"),
            ("a.b.c.d".to_owned(), "three"),
            (format!("{h}.{p}."), "signature part is empty"),
            (format!("{h}.{p}.a+b"), "signature"),
            (format!("!!.{p}.abc"), "base64url"),
            (
                format!("{}.{p}.abc", URL_SAFE_NO_PAD.encode(b"[1,2]")),
                "object",
            ),
            (
                format!("{}.{p}.abc", URL_SAFE_NO_PAD.encode([0xff, 0xfe])),
                "UTF-8",
            ),
            (
                format!(
                    "{}.{p}.abc",
                    URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","alg":"none"}"#)
                ),
                "duplicate",
            ),
            (
                format!("{}.{p}.abc", URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT"}"#)),
                "no alg",
            ),
            (
                format!(
                    "{}.{p}.abc",
                    URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","crit":["b64"]}"#)
                ),
                "crit",
            ),
            (
                format!(
                    "{h}.{}.abc",
                    URL_SAFE_NO_PAD.encode(br#"{"exp":"tomorrow"}"#)
                ),
                "exp is not a number",
            ),
            (
                format!("{h}.{}.abc", URL_SAFE_NO_PAD.encode(br#"{"exp":1e300}"#)),
                "out of range",
            ),
            (
                format!("{h}.{}.abc", URL_SAFE_NO_PAD.encode(br#"{"exp":1e400}"#)),
                "exp is out of range",
            ),
            (
                format!(
                    "{h}.{}.abc",
                    URL_SAFE_NO_PAD.encode(br#"{"exp":1,"aud":5}"#)
                ),
                "aud",
            ),
            (
                format!(
                    "{h}.{}.abc",
                    URL_SAFE_NO_PAD.encode(br#"{"exp":1,"sub":5}"#)
                ),
                "sub",
            ),
            (
                format!(
                    "{h}.{}.abc",
                    URL_SAFE_NO_PAD.encode(br#"{"exp":1,"sub":"a\u0000"}"#)
                ),
                "payload has a NUL character",
            ),
            (
                format!(
                    "{}.{p}.abc",
                    URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"\u0000"}"#)
                ),
                "header has a NUL character",
            ),
        ];
        for (tok, want) in cases {
            let err = parse(&tok, 16384).unwrap_err();
            assert!(err.contains(want), "{tok}: {err}");
        }
        let long = "a".repeat(20);
        assert!(parse(&long, 10).unwrap_err().contains("max_token_bytes"));
    }

    #[test]
    fn parse_with_header_gives_the_whole_header() {
        let k = hs256();
        let t = sign(&k, "k1", &claims(serde_json::json!({"exp": 1}))).unwrap();
        let (p, header) = parse_with_header(&t, 16384).unwrap();
        assert_eq!(p.header.kid.as_deref(), Some("k1"));
        assert_eq!(
            Value::Object(header),
            serde_json::json!({"alg": "HS256", "kid": "k1", "typ": "JWT"})
        );
        let bad = format!("{}.e30.abc", URL_SAFE_NO_PAD.encode(br#"{"alg":1}"#));
        assert_eq!(
            parse_with_header(&bad, 16384).unwrap_err(),
            "header alg is not a string"
        );
    }

    #[test]
    fn ecdsa_twin_signatures_share_one_identity() {
        use crate::keys::{generate, load_key};
        for alg in [Alg::ES256, Alg::ES384] {
            let key = load_key(alg, &generate(alg)).unwrap();
            let t = sign(
                &key,
                "e",
                &claims(serde_json::json!({"sub": "x", "exp": 2000000000})),
            )
            .unwrap();
            let p = parse(&t, 16384).unwrap();
            let sig = URL_SAFE_NO_PAD.decode(p.signature).unwrap();
            // (r, n - s): the other signature of the same message under the same key
            let twin_sig = match alg {
                Alg::ES256 => {
                    let (r, s) = p256::ecdsa::Signature::from_slice(&sig)
                        .unwrap()
                        .split_scalars();
                    p256::ecdsa::Signature::from_scalars(r, -s)
                        .unwrap()
                        .to_vec()
                }
                _ => {
                    let (r, s) = p384::ecdsa::Signature::from_slice(&sig)
                        .unwrap()
                        .split_scalars();
                    p384::ecdsa::Signature::from_scalars(r, -s)
                        .unwrap()
                        .to_vec()
                }
            };
            let twin = format!("{}.{}", p.signing_input, URL_SAFE_NO_PAD.encode(twin_sig));
            let q = parse(&twin, 16384).unwrap();
            assert!(
                verify_signature(&q, &key),
                "{alg:?}: the twin verifies, which is why it matters"
            );
            assert_ne!(t, twin);
            assert_eq!(token_hash(&p), token_hash(&q), "{alg:?}");
        }
        // every other algorithm: the hash of the text itself
        let k = hs256();
        let t = sign(&k, "k1", &claims(serde_json::json!({"exp": 1}))).unwrap();
        assert_eq!(
            token_hash(&parse(&t, 16384).unwrap()),
            crate::aead::sha256(t.as_bytes())
        );
    }
}
