//! DPoP proofs (RFC 9449) and JWK thumbprints (RFC 7638): the pure checks of a proof, section 4.3.
//! No replay state: whether a proof's `jti` was seen before is the database's question.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::aead::sha256;
use crate::alg::{Alg, Reason};
use crate::jws;
use crate::keys::verifying_key_from_jwk;

/// The `typ` header a DPoP proof must carry (RFC 9449 section 4.2).
pub const PROOF_TYP: &str = "dpop+jwt";
/// Longest `jti` accepted, in bytes; the replay cache keeps each one for the proof's lifetime.
pub const MAX_JTI_BYTES: usize = 256;
/// Longest `htm` accepted, in bytes (no HTTP method is anywhere near it).
pub const MAX_HTM_BYTES: usize = 64;

/// What a proof is checked against: the request as the application saw it, and the policy.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The request's HTTP method, as sent (`GET`, `POST`); compared exactly.
    pub htm: &'a str,
    /// The request's URI; compared after [`normalize_htu`] of both sides.
    pub htu: &'a str,
    /// The access token the request carries, when any: the proof must then hold its `ath`.
    pub access_token: Option<&'a str>,
    /// The nonce the server gave the client, when it uses nonces (section 8).
    pub nonce: Option<&'a str>,
    /// Seconds since the epoch.
    pub now: f64,
    /// How old a proof may be, in seconds (`token_store.dpop_max_age`).
    pub max_age: f64,
    /// Clock skew allowed, in seconds, both ways (`token_store.leeway`).
    pub leeway: f64,
    /// Longest proof accepted, in bytes (`token_store.max_token_bytes`).
    pub max_bytes: usize,
}

/// A proof that passed every check but the replay cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof's `jwk` (base64url SHA-256): what `cnf.jkt` names.
    pub jkt: String,
    /// The proof's `jti`.
    pub jti: String,
    /// The proof's `iat`, exactly as written.
    pub iat: Value,
    /// `iat` in seconds, for the replay cache's expiry.
    pub iat_secs: f64,
}

/// A refusal: the contract's reason, and a sentence for the DETAIL that quotes nothing of the proof.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
}

fn refuse(reason: Reason, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

fn invalid(detail: impl Into<String>) -> Refusal {
    refuse(Reason::DpopInvalid, detail)
}

/// base64url (no padding) of the SHA-256 of `access_token`: the `ath` a proof carries for it.
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(access_token.as_bytes()))
}

/// The RFC 7638 thumbprint of a public JWK: base64url of the SHA-256 of its required members
/// (`crv`,`kty`,`x`,`y` for EC; `e`,`kty`,`n` for RSA; `crv`,`kty`,`x` for OKP, RFC 8037), in
/// that order, as JSON without whitespace, values exactly as the JWK has them.
pub fn jwk_thumbprint(jwk: &Map<String, Value>) -> Result<String, String> {
    let kty = match jwk.get("kty") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("the JWK's \"kty\" member is not a string".into()),
        None => return Err("the JWK has no \"kty\" member".into()),
    };
    let members: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        "oct" => &["k", "kty"],
        _ => {
            return Err(
                "the JWK's key type has no thumbprint here (EC, RSA, OKP and oct do)".into(),
            )
        }
    };
    let mut canonical = String::from("{");
    for (i, name) in members.iter().enumerate() {
        let value = match jwk.get(*name) {
            Some(Value::String(s)) => s,
            Some(_) => return Err(format!("the JWK's \"{name}\" member is not a string")),
            None => return Err(format!("the JWK has no \"{name}\" member")),
        };
        if i > 0 {
            canonical.push(',');
        }
        canonical.push('"');
        canonical.push_str(name);
        canonical.push_str("\":");
        canonical.push_str(&serde_json::to_string(value).expect("a string serialises"));
    }
    canonical.push('}');
    Ok(URL_SAFE_NO_PAD.encode(sha256(canonical.as_bytes())))
}

fn default_port(scheme: &str) -> &'static str {
    match scheme {
        "https" => "443",
        _ => "80",
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-encoding normalisation (RFC 3986 section 6.2.2.1 and 6.2.2.2): hex digits upper case,
/// unreserved characters decoded. A `%` not followed by two hex digits is an error.
fn normalize_percent(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex_value),
                b.get(i + 2).copied().and_then(hex_value),
            ) else {
                return Err("the URI has a % not followed by two hex digits".into());
            };
            let c = hi * 16 + lo;
            if is_unreserved(c) {
                out.push(c as char);
            } else {
                out.push('%');
                out.push_str(&format!("{c:02X}"));
            }
            i += 3;
        } else {
            let ch = s[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    Ok(out)
}

/// Dot-segment removal (RFC 3986 section 5.2.4) of an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// The form in which two `htu` values are compared (RFC 9449 section 4.3, point 9): an absolute
/// `http` or `https` URI without its query and fragment, normalised as RFC 3986 sections 6.2.2
/// and 6.2.3 say: scheme and host in lower case, the scheme's default port dropped (an empty
/// port too), percent-encodings with upper-case hex and unreserved characters decoded, dot
/// segments removed, an empty path made `/`.
pub fn normalize_htu(uri: &str) -> Result<String, String> {
    if uri
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("the URI has whitespace or control characters".into());
    }
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or("the URI is not absolute (no scheme://)")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err("the URI's scheme is neither http nor https".into());
    }
    // no query and no fragment take part in the comparison
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    // an IPv6 literal holds colons of its own
    let (host, port) = if hostport.starts_with('[') {
        let end = hostport.find(']').ok_or("the URI's IPv6 host has no ]")?;
        let after = &hostport[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (&hostport[..=end], Some(p)),
            None if after.is_empty() => (&hostport[..=end], None),
            None => return Err("the URI's authority is malformed".into()),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("the URI has no host".into());
    }
    let port = match port {
        Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) => {
            return Err("the URI's port is not a number".into())
        }
        // leading zeros do not make another port
        Some(p) if !p.is_empty() => {
            let p = p.trim_start_matches('0');
            let p = if p.is_empty() { "0" } else { p };
            (p != default_port(&scheme)).then(|| p.to_owned())
        }
        _ => None,
    };
    let mut out = scheme;
    out.push_str("://");
    if let Some(u) = userinfo {
        out.push_str(&normalize_percent(u)?);
        out.push('@');
    }
    out.push_str(&normalize_percent(host)?.to_ascii_lowercase());
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p);
    }
    let path = normalize_percent(path)?;
    out.push_str(&if path.is_empty() {
        "/".to_owned()
    } else {
        remove_dot_segments(&path)
    });
    Ok(out)
}

fn claim_str<'a>(payload: &'a Map<String, Value>, name: &str) -> Result<&'a str, Refusal> {
    match payload.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(format!("the proof's {name} is not a string"))),
        None => Err(invalid(format!("the proof has no {name} claim"))),
    }
}

/// Check a DPoP proof as RFC 9449 section 4.3 says, all but the replay of its `jti`: the header
/// (`typ` `dpop+jwt`, an accepted asymmetric `alg`, a public `jwk` of that algorithm's key type),
/// the signature by that key, `htm`, `htu`, `iat` within `max_age` and `leeway`, `ath` when an
/// access token comes with it, `nonce` when one is expected. The checks run cheapest first, the
/// signature after the claims that need no key.
pub fn check_proof(proof: &str, req: &Request) -> Result<Proof, Refusal> {
    let (parsed, header) = jws::parse_with_header(proof, req.max_bytes)
        .map_err(|why| invalid(format!("the proof is not a JWS: {why}")))?;
    match header.get("typ") {
        Some(Value::String(t)) if t == PROOF_TYP => {}
        Some(_) => return Err(invalid("the proof's typ is not dpop+jwt")),
        None => return Err(invalid("the proof has no typ header")),
    }
    let alg = Alg::parse(&parsed.header.alg)
        .filter(|a| !a.is_hmac())
        .ok_or_else(|| {
            invalid("the proof's alg is not an accepted asymmetric algorithm (RS*, PS*, ES256, ES384, EdDSA)")
        })?;
    let jwk = match header.get("jwk") {
        Some(Value::Object(o)) => o,
        Some(_) => return Err(invalid("the proof's jwk header is not a JSON object")),
        None => return Err(invalid("the proof has no jwk header")),
    };
    let payload = parsed.payload_map();
    let payload = &payload;
    let jti = claim_str(payload, "jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(invalid(format!(
            "the proof's jti must be 1 to {MAX_JTI_BYTES} bytes long"
        )));
    }
    let htm = claim_str(payload, "htm")?;
    let htu = claim_str(payload, "htu")?;
    let iat = parsed
        .claims
        .iat
        .ok_or_else(|| invalid("the proof has no iat claim"))?;
    if htm.len() > MAX_HTM_BYTES || htm != req.htm {
        return Err(refuse(
            Reason::DpopHtmMismatch,
            "the proof's htm is not the request's method",
        ));
    }
    let htu = normalize_htu(htu)
        .map_err(|why| invalid(format!("the proof's htu cannot be used: {why}")))?;
    // the caller checked its own htu before (a bad one is its error, not the client's)
    if normalize_htu(req.htu).ok().as_deref() != Some(htu.as_str()) {
        return Err(refuse(
            Reason::DpopHtuMismatch,
            "the proof's htu is not the request's URI",
        ));
    }
    if iat < req.now - req.max_age - req.leeway {
        return Err(refuse(
            Reason::DpopStale,
            "the proof's iat is older than token_store.dpop_max_age allows",
        ));
    }
    if iat > req.now + req.leeway {
        return Err(refuse(
            Reason::DpopStale,
            "the proof's iat is in the future beyond token_store.leeway",
        ));
    }
    if let Some(token) = req.access_token {
        match payload.get("ath") {
            Some(Value::String(a)) if *a == ath(token) => {}
            Some(_) => {
                return Err(refuse(
                    Reason::DpopAthMismatch,
                    "the proof's ath is not the hash of the access token",
                ))
            }
            None => {
                return Err(refuse(
                    Reason::DpopAthMismatch,
                    "the proof has no ath claim, and an access token comes with it",
                ))
            }
        }
    }
    if let Some(nonce) = req.nonce {
        match payload.get("nonce") {
            Some(Value::String(n)) if n == nonce => {}
            _ => {
                return Err(refuse(
                    Reason::DpopNonceMismatch,
                    "the proof's nonce is not the one expected",
                ))
            }
        }
    }
    for member in ["alg", "use"] {
        let want = if member == "alg" { alg.as_str() } else { "sig" };
        match jwk.get(member) {
            None => {}
            Some(Value::String(s)) if s == want => {}
            Some(_) => {
                return Err(invalid(format!(
                    "the proof's jwk has a {member} member other than {want}"
                )))
            }
        }
    }
    let key = verifying_key_from_jwk(jwk, alg)
        .map_err(|why| invalid(format!("the proof's jwk cannot be used: {why}")))?;
    if !jws::verify_signature(&parsed, &key) {
        return Err(invalid(
            "the proof's signature does not verify with its jwk",
        ));
    }
    let jkt = jwk_thumbprint(jwk).map_err(invalid)?;
    Ok(Proof {
        jkt,
        jti: jti.to_owned(),
        iat: payload.get("iat").cloned().unwrap_or(Value::Null),
        iat_secs: iat,
    })
}

#[cfg(test)]
mod tests;
