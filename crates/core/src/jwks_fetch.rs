//! The rules for keeping an identity provider's JWKS: when to fetch again (`Cache-Control:
//! max-age`, bounds, back-off with jitter), which addresses a fetch may reach, and what of a
//! fetched JWKS or discovery document is kept. Pure: the HTTP client and the tables live in the
//! extension.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use crate::alg::Alg;
use crate::keys::{self, KeyMaterial, PRIVATE_JWK_MEMBERS};

/// Largest response body read, in bytes.
pub const MAX_BODY_BYTES: u64 = 1 << 20;
/// Longest a whole request may take (connect, TLS, headers, body), in seconds.
pub const TIMEOUT_SECS: u64 = 10;
/// Most redirects followed (each within the same scheme and host).
pub const MAX_REDIRECTS: usize = 3;
/// Most keys kept from one JWKS: a provider publishes a handful.
pub const MAX_KEYS: usize = 100;
/// Longest issuer or URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest back-off after failures, in seconds, whatever the issuer's `refresh`.
pub const MAX_BACKOFF_SECS: f64 = 3600.0;

/// The `max-age` of a `Cache-Control` header in seconds; `Some(0)` for `no-cache` and
/// `no-store` (fetch again as soon as allowed), `None` when it says nothing about freshness.
pub fn max_age(cache_control: &str) -> Option<u64> {
    let mut found = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Some(0);
        }
        if name.eq_ignore_ascii_case("max-age") {
            // RFC 9111 §1.2.2: a delta-seconds too large to represent means "very long"
            let v = value?;
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            found = Some(v.parse::<u64>().unwrap_or(u64::MAX));
        }
    }
    found
}

/// Seconds until an issuer fetched successfully now is due again: its `refresh`, shortened by the
/// response's `max-age`, never under `min_refresh`.
pub fn fresh_for(refresh_s: f64, max_age_s: Option<u64>, min_refresh_s: f64) -> f64 {
    let refresh = refresh_s.max(0.0);
    let wanted = match max_age_s {
        Some(a) => refresh.min(a as f64),
        None => refresh,
    };
    wanted.max(min_refresh_s.max(0.0))
}

/// Seconds to wait after the `failures`-th failure in a row (1 for the first): `min_refresh`
/// doubled per failure, at most `refresh` and [`MAX_BACKOFF_SECS`] (and never under
/// `min_refresh`), spread by ±20 % with `jitter` in [0, 1) so that the databases and replicas
/// of a fleet do not fetch in step.
pub fn backoff(failures: u32, min_refresh_s: f64, refresh_s: f64, jitter: f64) -> f64 {
    let min = min_refresh_s.max(1.0);
    let cap = refresh_s.min(MAX_BACKOFF_SECS).max(min);
    let exp = failures.saturating_sub(1).min(30);
    let base = (min * f64::from(1u32 << exp.min(20))).min(cap);
    let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    (base * spread).max(min)
}

/// Whether an early fetch (asked for by a token with an unknown `kid`) may start now: at most
/// one fetch per `min_refresh` of an issuer, counting every attempt, failed or not.
pub fn early_fetch_allowed(now: f64, last_attempt: Option<f64>, min_refresh_s: f64) -> bool {
    last_attempt.is_none_or(|at| now >= at + min_refresh_s.max(0.0))
}

/// Whether an issuer's last good keys are still usable: until `max_stale` past the time they were
/// due again (`fresh_until`). No good fetch yet: nothing to use.
pub fn keys_usable(now: f64, fresh_until: Option<f64>, max_stale_s: f64) -> bool {
    fresh_until.is_some_and(|due| now <= due + max_stale_s.max(0.0))
}

/// Why an address may not be reached without `issuer_allowed_hosts`, or `None` for a public
/// unicast address.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let why = if ip.is_unspecified() || o[0] == 0 {
        "unspecified (\"this network\")"
    } else if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local (cloud metadata services live here)"
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        "shared address space (carrier-grade NAT)"
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        "reserved for protocol assignments"
    } else if ip.is_documentation() {
        "reserved for documentation"
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        "reserved for benchmarking"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_broadcast() || o[0] >= 240 {
        "reserved"
    } else {
        return None;
    };
    Some(why)
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let s = ip.segments();
    let why = if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "private (unique local)"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "site-local"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "reserved for documentation"
    } else if s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1 {
        "local-use NAT64"
    } else if s[0] == 0x0064 && s[1] == 0xff9b {
        // NAT64 embeds an IPv4 address in the last 32 bits: judge that one
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return non_public_v4(v4);
    } else if s[0] == 0x2002 {
        // 6to4 embeds an IPv4 address in bits 16..48
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return non_public_v4(v4);
    } else if s[0] == 0x2001 && s[1] == 0 {
        "Teredo tunnel"
    } else if s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0 {
        "discard-only"
    } else if s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0 {
        "IPv4-compatible (deprecated)"
    } else {
        return None;
    };
    Some(why)
}

/// Whether `host` is listed in `issuer_allowed_hosts` (comma-separated host names or addresses,
/// compared without case; an IPv6 address may be written with or without brackets).
pub fn host_allowed(allowed_hosts: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    allowed_hosts
        .split(',')
        .map(|h| h.trim().trim_start_matches('[').trim_end_matches(']'))
        .any(|h| !h.is_empty() && h.eq_ignore_ascii_case(host))
}

/// One key of an issuer's JWKS as kept: its `kid` (absent in some JWKS), its `alg` (absent in
/// some, e.g. Entra ID's: then the key serves every allowed algorithm of its type) and its
/// public material (SPKI DER).
#[derive(Debug)]
pub struct IssuerKey {
    pub kid: Option<String>,
    pub alg: Option<Alg>,
    pub material: KeyMaterial,
}

/// The algorithm used to read a JWK's material when it names none: any of its key type serves.
fn reading_alg(o: &Map<String, Value>) -> Option<Alg> {
    match (
        o.get("kty").and_then(Value::as_str),
        o.get("crv").and_then(Value::as_str),
    ) {
        (Some("RSA"), _) => Some(Alg::RS256),
        (Some("EC"), Some("P-256")) => Some(Alg::ES256),
        (Some("EC"), Some("P-384")) => Some(Alg::ES384),
        (Some("OKP"), Some("Ed25519")) => Some(Alg::EdDSA),
        _ => None,
    }
}

/// The signing keys of an issuer's JWKS. The whole JWKS is refused when it is not a JWKS, when
/// any entry carries private or secret members (a provider that publishes them is compromised or
/// misconfigured), when it holds more than [`MAX_KEYS`] entries, or when no entry is usable.
/// Entries for encryption (`use` other than `sig`), of key types or algorithms token_store does
/// not verify (RSA-OAEP, P-521, X25519, ...) and HMAC entries are skipped, as providers publish
/// such keys beside their signing keys.
pub fn issuer_jwks(jwks: &Value) -> Result<Vec<IssuerKey>, String> {
    let entries = jwks
        .as_object()
        .and_then(|o| o.get("keys"))
        .and_then(Value::as_array)
        .ok_or("the JWKS is not a JSON object with a \"keys\" array")?;
    if entries.len() > MAX_KEYS {
        return Err(format!(
            "the JWKS has {} keys; at most {MAX_KEYS} are accepted",
            entries.len()
        ));
    }
    let mut out: Vec<IssuerKey> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let o = entry
            .as_object()
            .ok_or_else(|| format!("the JWKS key at index {i} is not a JSON object"))?;
        if let Some(m) = PRIVATE_JWK_MEMBERS.iter().find(|m| o.contains_key(**m)) {
            return Err(format!(
                "the JWKS key at index {i} has the private member \"{m}\"; a JWKS holding private key material is refused whole"
            ));
        }
        if o.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
            continue;
        }
        let kid = match o.get("kid") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Some(s.clone()),
            Some(_) => return Err(format!("the JWKS key at index {i} has an invalid kid")),
        };
        let alg = match o.get("alg") {
            None => None,
            Some(Value::String(s)) => match Alg::parse(s) {
                Some(a) if !a.is_hmac() => Some(a),
                _ => continue,
            },
            Some(_) => {
                return Err(format!(
                    "the JWKS key at index {i} has an alg that is not a string"
                ))
            }
        };
        let Some(read_as) = alg.or_else(|| reading_alg(o)) else {
            continue;
        };
        let material = keys::material_from_jwk(entry, read_as).map_err(|e| {
            format!(
                "the JWKS key {}: {e}",
                kid.as_deref()
                    .map_or_else(|| format!("at index {i}"), |k| format!("\"{k}\""))
            )
        })?;
        if material.can_sign {
            return Err(format!("the JWKS key at index {i} is a private key"));
        }
        if let Some(k) = kid.as_deref() {
            if out
                .iter()
                .any(|p| p.kid.as_deref() == Some(k) && p.alg == alg)
            {
                return Err(format!("the JWKS has two keys with kid \"{k}\""));
            }
        }
        out.push(IssuerKey { kid, alg, material });
    }
    if out.is_empty() {
        return Err("the JWKS has no signing key token_store can use".into());
    }
    Ok(out)
}

/// The `jwks_uri` of an OpenID Connect discovery document, whose `issuer` must equal `issuer`
/// exactly (OpenID Connect Discovery §4.3).
pub fn discovery_jwks_uri(doc: &Value, issuer: &str) -> Result<String, String> {
    let o = doc
        .as_object()
        .ok_or("the discovery document is not a JSON object")?;
    match o.get("issuer").and_then(Value::as_str) {
        Some(i) if i == issuer => {}
        Some(_) => {
            return Err(
                "the discovery document names another issuer than the one registered".into(),
            )
        }
        None => return Err("the discovery document has no issuer".into()),
    }
    match o.get("jwks_uri").and_then(Value::as_str) {
        Some(u) if !u.is_empty() && u.len() <= MAX_URL_BYTES => Ok(u.to_owned()),
        Some(_) => Err("the discovery document's jwks_uri is empty or too long".into()),
        None => Err("the discovery document has no jwks_uri".into()),
    }
}

/// The discovery URL of an issuer: `<issuer>/.well-known/openid-configuration`.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// A stable 64-bit hash (FNV-1a) of a database and an issuer, naming the issuer's slot in shared
/// memory.
pub fn issuer_hash(database: u32, issuer: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in database.to_le_bytes().iter().chain(issuer.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

#[cfg(test)]
mod tests;
