//! JWS compact tokens: parsing, claim policy, signing and signature checks.
//! Pure Rust; knows nothing of PostgreSQL.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::keys::LoadedKey;

/// Smallest and largest NumericDate we accept: years 1 to 9999, which PostgreSQL's
/// timestamptz also holds, so every accepted time can be stored.
pub const MIN_NUMERIC_DATE: f64 = -62_135_596_800.0;
/// See [`MIN_NUMERIC_DATE`].
pub const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// The JWS algorithms the contract accepts. `none` is not one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    /// Every accepted algorithm, in the contract's order.
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// Exact, case-sensitive match of a header or argument `alg`.
    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The registered JWA name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// HMAC algorithms use one shared secret to sign and verify.
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }

    /// Smallest HMAC secret RFC 7518 section 3.2 allows: the hash output size.
    pub fn min_secret_bytes(self) -> usize {
        match self {
            Alg::HS384 => 48,
            Alg::HS512 => 64,
            _ => 32,
        }
    }

    fn to_jsonwebtoken(self) -> Algorithm {
        match self {
            Alg::HS256 => Algorithm::HS256,
            Alg::HS384 => Algorithm::HS384,
            Alg::HS512 => Algorithm::HS512,
            Alg::RS256 => Algorithm::RS256,
            Alg::RS384 => Algorithm::RS384,
            Alg::RS512 => Algorithm::RS512,
            Alg::PS256 => Algorithm::PS256,
            Alg::PS384 => Algorithm::PS384,
            Alg::PS512 => Algorithm::PS512,
            Alg::ES256 => Algorithm::ES256,
            Alg::ES384 => Algorithm::ES384,
            Alg::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// Why a token was refused. The strings are the contract's reason codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    BadSignature,
    UnknownKey,
    AlgorithmNotAllowed,
    MissingExp,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    Revoked,
    SubjectRevoked,
    NotStored,
    Malformed,
}

impl Reason {
    /// Every reason, in a fixed order (also the order of the outcome counters).
    pub const ALL: [Reason; 12] = [
        Reason::BadSignature,
        Reason::UnknownKey,
        Reason::AlgorithmNotAllowed,
        Reason::MissingExp,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongAudience,
        Reason::WrongIssuer,
        Reason::Revoked,
        Reason::SubjectRevoked,
        Reason::NotStored,
        Reason::Malformed,
    ];

    /// The contract's reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadSignature => "bad_signature",
            Reason::UnknownKey => "unknown_key",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::MissingExp => "missing_exp",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongAudience => "wrong_audience",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::Revoked => "revoked",
            Reason::SubjectRevoked => "subject_revoked",
            Reason::NotStored => "not_stored",
            Reason::Malformed => "malformed",
        }
    }

    /// Position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).expect("listed")
    }
}

/// The protected header members we act on.
#[derive(Debug, Clone)]
pub struct Header {
    /// `alg` exactly as written; may be one we refuse.
    pub alg: String,
    /// `kid`, when present.
    pub kid: Option<String>,
}

/// The registered claims, pulled out of the payload once and type-checked.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    pub iat: Option<f64>,
    pub sub: Option<String>,
    pub iss: Option<String>,
    pub jti: Option<String>,
    pub aud: Vec<String>,
}

/// A token split, decoded and type-checked, but not yet verified.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub header: Header,
    pub claims: Claims,
    /// The payload as a JSON object.
    pub payload: Map<String, Value>,
    /// `base64url(header) "." base64url(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    /// The third part, still base64url.
    pub signature: &'a str,
}

/// A JSON object that refuses duplicate member names, so no two readers can see different
/// claims in the same token (RFC 7515 section 5.2 lets us reject them).
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<StrictObject, A::Error> {
                let mut out = Map::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom("duplicate member name"));
                    }
                    out.insert(k, v);
                }
                Ok(StrictObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn decode_part(part: &str, what: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| format!("{what} is not base64url"))
}

fn decode_object(part: &str, what: &str) -> Result<Map<String, Value>, String> {
    let bytes = decode_part(part, what)?;
    let s = std::str::from_utf8(&bytes).map_err(|_| format!("{what} is not UTF-8"))?;
    serde_json::from_str::<StrictObject>(s)
        .map(|o| o.0)
        .map_err(|e| {
            format!(
                "{what} is not a valid JSON object: {}",
                sanitize_serde_error(&e)
            )
        })
}

// serde's messages can quote input text; keep only the category and position.
fn sanitize_serde_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "read error",
        Category::Syntax if e.to_string().starts_with("number out of range") => {
            "number out of range"
        }
        Category::Syntax => "syntax error",
        Category::Data => {
            if e.to_string().contains("duplicate member") {
                "duplicate member name"
            } else {
                "not an object"
            }
        }
        Category::Eof => "unexpected end",
    };
    format!("{what} at column {}", e.column())
}

fn numeric_date(v: Option<&Value>, name: &str) -> Result<Option<f64>, String> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let f = n
                .as_f64()
                .ok_or_else(|| format!("{name} is not a number"))?;
            if !f.is_finite() || !(MIN_NUMERIC_DATE..=MAX_NUMERIC_DATE).contains(&f) {
                return Err(format!("{name} is out of range"));
            }
            Ok(Some(f))
        }
        Some(_) => Err(format!("{name} is not a number")),
    }
}

// PostgreSQL text cannot hold NUL, and these strings are looked up and stored as text.
fn string_claim(v: Option<&Value>, name: &str) -> Result<Option<String>, String> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if s.contains('\0') => {
            Err(format!("{name} contains a NUL character"))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

/// Pull the registered claims out of a payload object, checking their types.
pub fn registered_claims(payload: &Map<String, Value>) -> Result<Claims, String> {
    let aud = match payload.get("aud") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "aud is not a string or an array of strings".to_owned())
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("aud is not a string or an array of strings".into()),
    };
    Ok(Claims {
        exp: numeric_date(payload.get("exp"), "exp")?,
        nbf: numeric_date(payload.get("nbf"), "nbf")?,
        iat: numeric_date(payload.get("iat"), "iat")?,
        sub: string_claim(payload.get("sub"), "sub")?,
        iss: string_claim(payload.get("iss"), "iss")?,
        jti: string_claim(payload.get("jti"), "jti")?,
        aud,
    })
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
    let header_obj = decode_object(h, "header")?;
    let alg = match header_obj.get("alg") {
        Some(Value::String(a)) => a.clone(),
        Some(_) => return Err("header alg is not a string".into()),
        None => return Err("header has no alg".into()),
    };
    let kid = string_claim(header_obj.get("kid"), "header kid")?;
    // We implement no extension headers, so any critical one is one we do not understand.
    if header_obj.contains_key("crit") {
        return Err("header has a crit member this server does not understand".into());
    }
    let payload = decode_object(p, "payload")?;
    let claims = registered_claims(&payload)?;
    Ok(Parsed {
        header: Header { alg, kid },
        claims,
        payload,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature: s,
    })
}

/// Orders of the P-256 and P-384 groups (FIPS 186-4 D.1.2), big-endian hex.
const P256_ORDER: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
const P384_ORDER: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";

/// `a - b` for big-endian numbers of equal length with `a >= b`.
fn sub_be(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; a.len()];
    let mut borrow = 0i16;
    for i in (0..a.len()).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

/// The identity of a token: SHA-256 of its text, except that an ECDSA signature's `s` is first put
/// in its low form. `(r, s)` and `(r, n - s)` both verify, so without this anyone holding a revoked
/// ES256/ES384 token could present its twin as a token never seen before.
pub fn token_hash(token: &Parsed) -> [u8; 32] {
    let order = match token.header.alg.as_str() {
        "ES256" => P256_ORDER,
        "ES384" => P384_ORDER,
        _ => return raw_hash(token.signing_input, token.signature),
    };
    let n = crate::crypto::hex_decode(order).expect("constant hex");
    let Ok(sig) = URL_SAFE_NO_PAD.decode(token.signature) else {
        return raw_hash(token.signing_input, token.signature);
    };
    if sig.len() != 2 * n.len() {
        return raw_hash(token.signing_input, token.signature);
    }
    let (r, s) = sig.split_at(n.len());
    if s > n.as_slice() {
        return raw_hash(token.signing_input, token.signature);
    }
    let neg = sub_be(&n, s);
    if s <= neg.as_slice() {
        return raw_hash(token.signing_input, token.signature);
    }
    let low = [r, neg.as_slice()].concat();
    raw_hash(token.signing_input, &URL_SAFE_NO_PAD.encode(low))
}

fn raw_hash(signing_input: &str, signature: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(signing_input.as_bytes());
    h.update(b".");
    h.update(signature.as_bytes());
    h.finalize().into()
}

/// What a verification demands of the claims.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// Seconds since the epoch.
    pub now: f64,
    /// Allowed clock skew in seconds.
    pub leeway: f64,
    /// `aud` the token must list, when set.
    pub audience: Option<&'a str>,
    /// `iss` the token must carry, when set.
    pub issuer: Option<&'a str>,
}

/// Time and audience/issuer checks (RFC 7519 section 4.1).
pub fn check_claims(c: &Claims, p: &Policy) -> Result<(), Reason> {
    let exp = c.exp.ok_or(Reason::MissingExp)?;
    if p.now >= exp + p.leeway {
        return Err(Reason::Expired);
    }
    if let Some(nbf) = c.nbf {
        if p.now + p.leeway < nbf {
            return Err(Reason::NotYetValid);
        }
    }
    if let Some(iat) = c.iat {
        if iat > p.now + p.leeway {
            return Err(Reason::NotYetValid);
        }
    }
    if let Some(aud) = p.audience {
        if !c.aud.iter().any(|a| a == aud) {
            return Err(Reason::WrongAudience);
        }
    }
    if let Some(iss) = p.issuer {
        if c.iss.as_deref() != Some(iss) {
            return Err(Reason::WrongIssuer);
        }
    }
    Ok(())
}

/// Check the signature of `token` with `key`. Only the signature: claims are separate.
pub fn verify_signature(token: &Parsed, key: &LoadedKey) -> bool {
    jsonwebtoken::crypto::verify(
        token.signature,
        token.signing_input.as_bytes(),
        &key.decoding,
        key.alg.to_jsonwebtoken(),
    )
    .unwrap_or(false)
}

/// Make a compact JWS of `payload` with header `{"alg","typ":"JWT","kid"}`.
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

    fn policy(now: f64) -> Policy<'static> {
        Policy {
            now,
            leeway: 30.0,
            audience: None,
            issuer: None,
        }
    }

    #[test]
    fn alg_names_are_exact() {
        for a in Alg::ALL {
            assert_eq!(Alg::parse(a.as_str()), Some(a));
        }
        for bad in ["none", "None", "hs256", "HS256 ", "RS1", "ES512", ""] {
            assert_eq!(Alg::parse(bad), None, "{bad}");
        }
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
                "number out of range",
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
                "sub contains a NUL",
            ),
            (
                format!(
                    "{}.{p}.abc",
                    URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"\u0000"}"#)
                ),
                "kid contains a NUL",
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
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let t = format!("{h}.{}.abc", URL_SAFE_NO_PAD.encode(deep));
        assert!(parse(&t, usize::MAX).is_err());
    }

    #[test]
    fn ecdsa_twin_signatures_share_one_identity() {
        use crate::keys::{generate, load_key};
        for (alg, order) in [(Alg::ES256, P256_ORDER), (Alg::ES384, P384_ORDER)] {
            let key = load_key(alg, &generate(alg)).unwrap();
            let t = sign(
                &key,
                "e",
                &claims(serde_json::json!({"sub": "x", "exp": 2000000000})),
            )
            .unwrap();
            let p = parse(&t, 16384).unwrap();
            let sig = URL_SAFE_NO_PAD.decode(p.signature).unwrap();
            let n = crate::crypto::hex_decode(order).unwrap();
            let (r, s) = sig.split_at(n.len());
            let twin_sig = [r, sub_be(&n, s).as_slice()].concat();
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
            crate::crypto::sha256(t.as_bytes())
        );
    }

    #[test]
    fn claim_policy() {
        let now = 1_000_000.0;
        let base = Claims {
            exp: Some(now + 100.0),
            ..Default::default()
        };
        assert_eq!(check_claims(&base, &policy(now)), Ok(()));
        assert_eq!(
            check_claims(&Claims::default(), &policy(now)),
            Err(Reason::MissingExp)
        );
        let expired = Claims {
            exp: Some(now - 31.0),
            ..Default::default()
        };
        assert_eq!(check_claims(&expired, &policy(now)), Err(Reason::Expired));
        let within_leeway = Claims {
            exp: Some(now - 29.0),
            ..Default::default()
        };
        assert_eq!(check_claims(&within_leeway, &policy(now)), Ok(()));
        let nbf = Claims {
            nbf: Some(now + 31.0),
            ..base.clone()
        };
        assert_eq!(check_claims(&nbf, &policy(now)), Err(Reason::NotYetValid));
        let iat = Claims {
            iat: Some(now + 31.0),
            ..base.clone()
        };
        assert_eq!(check_claims(&iat, &policy(now)), Err(Reason::NotYetValid));
        let aud = Claims {
            aud: vec!["x".into(), "y".into()],
            ..base.clone()
        };
        let want_y = Policy {
            audience: Some("y"),
            ..policy(now)
        };
        let want_z = Policy {
            audience: Some("z"),
            ..policy(now)
        };
        assert_eq!(check_claims(&aud, &want_y), Ok(()));
        assert_eq!(check_claims(&aud, &want_z), Err(Reason::WrongAudience));
        assert_eq!(check_claims(&base, &want_y), Err(Reason::WrongAudience));
        let iss = Claims {
            iss: Some("me".into()),
            ..base.clone()
        };
        assert_eq!(
            check_claims(
                &iss,
                &Policy {
                    issuer: Some("me"),
                    ..policy(now)
                }
            ),
            Ok(())
        );
        assert_eq!(
            check_claims(
                &iss,
                &Policy {
                    issuer: Some("you"),
                    ..policy(now)
                }
            ),
            Err(Reason::WrongIssuer)
        );
        assert_eq!(
            check_claims(
                &base,
                &Policy {
                    issuer: Some("me"),
                    ..policy(now)
                }
            ),
            Err(Reason::WrongIssuer)
        );
    }

    #[test]
    fn reasons_are_the_contract_codes() {
        let names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), 12);
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        assert!(names.contains(&"subject_revoked") && names.contains(&"not_stored"));
    }
}
