//! Sessions: start, refresh (rotation with reuse detection), end, list.
//!
//! A refresh locks its session row first, so the refreshes of one session take turns; everything
//! it decides is then read from committed rows. Refusals are answers, not errors, so that what a
//! refusal changed (a session ended for reuse, idleness or age) commits with it.

use super::tokens::{self, interval_secs, new_row_id, signing_row};
use super::*;
use crate::storage::sessions::{self as store, NewSession, Rotation};
use token_store_core::refresh;

/// Claims the session sets itself on each access token; a caller may not give them.
const SET_BY_SESSION: [&str; 5] = ["exp", "iat", "nbf", "jti", "sid"];
/// Registered claims a session keeps from its start when `session_refresh` replaces the others.
const KEPT_ON_REFRESH: [&str; 3] = ["sub", "iss", "aud"];
/// The largest `metadata` a session keeps, in bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

fn claims_aad(id: &[u8; 16]) -> Vec<u8> {
    let mut aad = b"token_store session claims:".to_vec();
    aad.extend_from_slice(id);
    aad
}

fn metadata_aad(id: &[u8; 16]) -> Vec<u8> {
    let mut aad = b"token_store session metadata:".to_vec();
    aad.extend_from_slice(id);
    aad
}

fn session_uuid(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).to_string()
}

/// The `{"error": "invalid_grant", "reason": ...}` answer of RFC 6749 §5.2.
fn refusal(reason: Reason) -> Value {
    serde_json::json!({"error": "invalid_grant", "reason": reason.as_str()})
}

fn positive_ttl(what: &str, (months, days, micros): (i32, i32, i64)) -> TsResult<f64> {
    let secs = interval_secs(months, days, micros);
    if secs.is_nan() || secs < 1.0 {
        return Err(TsError::param(
            format!("{what} must be at least one second"),
            format!("The {what} given is {secs} seconds."),
        ));
    }
    if secs > 100.0 * 366.0 * 86_400.0 {
        return Err(TsError::param(
            format!("{what} is too long"),
            format!("The {what} given is {secs} seconds; at most 100 years are accepted."),
        ));
    }
    Ok(secs)
}

/// Claims given to `session_start` or `session_refresh`: a JSON object without the claims the
/// session sets itself.
fn claims_object(text: &str) -> TsResult<Map<String, Value>> {
    let v = parse_json_arg("claims", text)?;
    let Value::Object(map) = v else {
        return Err(TsError::param(
            "claims must be a JSON object",
            format!("The claims given are {}.", json_kind(&v)),
        ));
    };
    if let Some(k) = SET_BY_SESSION.iter().find(|k| map.contains_key(**k)) {
        return Err(TsError::param(
            format!("claims of a session cannot contain \"{k}\""),
            "A session sets exp, iat, nbf, jti and sid of each access token itself.",
        ));
    }
    if map.contains_key("cnf") {
        return Err(TsError::param(
            "claims of a session cannot contain \"cnf\"",
            "A session bound to a DPoP key puts cnf.jkt in its access tokens itself: pass the key's thumbprint as dpop_jkt.",
        ));
    }
    Ok(map)
}

/// A `dpop_jkt` argument: an RFC 7638 thumbprint, base64url of a SHA-256.
fn check_jkt(jkt: Option<&str>) -> TsResult<()> {
    match jkt {
        Some(j) if super::dpop::thumbprint_bytes(j).is_none() => Err(TsError::param(
            "dpop_jkt must be a JWK thumbprint",
            "A thumbprint (RFC 7638) is the base64url of a SHA-256, 43 characters without padding, as dpop_verify returns it in jkt.",
        )),
        _ => Ok(()),
    }
}

/// Sign and store an access token of session `id` with `claims`; its `exp` (epoch seconds).
fn issue_access(
    id: &[u8; 16],
    claims: &Map<String, Value>,
    ttl: f64,
    kid: Option<&str>,
    dpop_jkt: Option<&str>,
) -> TsResult<(String, f64)> {
    let mut payload = claims.clone();
    payload.insert("sid".into(), Value::from(session_uuid(id)));
    if let Some(jkt) = dpop_jkt {
        payload.insert("cnf".into(), serde_json::json!({ "jkt": jkt }));
    }
    let text = serde_json::to_string(&payload).map_err(|e| TsError::Internal(e.to_string()))?;
    let (token, exp) = tokens::issue_with_exp(&text, (0, 0, (ttl * 1e6) as i64), kid)?;
    let exp = exp.unwrap_or(now_secs() + ttl);
    Ok((token, exp))
}

fn token_response(id: &[u8; 16], access: String, ttl: f64, refresh: String) -> Value {
    serde_json::json!({
        "token_type": "Bearer",
        "access_token": access,
        "expires_in": ttl.round() as i64,
        "refresh_token": refresh,
        "session_id": session_uuid(id),
    })
}

/// `session_start`: a new session for `claims->>'sub'`, its first access and refresh tokens.
pub fn start(
    claims: &str,
    access_ttl: (i32, i32, i64),
    refresh_ttl: (i32, i32, i64),
    metadata: Option<&str>,
    kid: Option<&str>,
    dpop_jkt: Option<&str>,
) -> TsResult<Value> {
    ensure_primary("session_start")?;
    let _snapshot = crate::storage::probe::WriterSnapshot::push();
    check_jkt(dpop_jkt)?;
    let claims = claims_object(claims)?;
    let subject =
        match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(TsError::param(
                "claims of a session must have a \"sub\"",
                "The subject (claims->>'sub') is a non-empty string naming whose session it is.",
            )),
        };
    let access_ttl = positive_ttl("access_ttl", access_ttl)?;
    let refresh_ttl = positive_ttl("refresh_ttl", refresh_ttl)?;
    let metadata = match metadata {
        Some(text) if text.len() > MAX_METADATA_BYTES => {
            return Err(TsError::param(
                "metadata is too large",
                format!(
                "A session keeps at most {MAX_METADATA_BYTES} bytes of metadata; this is {} bytes.",
                text.len()
            ),
            ))
        }
        Some(text) => Some(parse_json_arg("metadata", text)?),
        None => None,
    };
    // an unknown or inactive kid is refused before anything is written
    let kid = kid
        .map(|k| signing_row(Some(k)))
        .transpose()?
        .map(|r| r.kid.clone());
    let (_, key) = keyring::current_key()?;
    let id = new_row_id();
    let sealed_claims = seal_json(&key, &claims_aad(&id), &claims)?;
    let sealed_metadata = metadata
        .as_ref()
        .map(|m| seal_json(&key, &metadata_aad(&id), m))
        .transpose()?;
    let (access, exp) = issue_access(&id, &claims, access_ttl, kid.as_deref(), dpop_jkt)?;
    let (refresh_token, hash) = refresh::make();
    let now = now_secs();
    store::insert_session(&NewSession {
        id,
        subject: &subject,
        now,
        expires_at: now + refresh_ttl,
        access_expires_at: exp,
        access_ttl,
        refresh_ttl,
        kid: kid.as_deref(),
        claims: &sealed_claims,
        metadata: sealed_metadata.as_deref(),
        fingerprint: key.fingerprint(),
        refresh_hash: &hash,
        dpop_jkt,
    })?;
    Ok(token_response(&id, access, access_ttl, refresh_token))
}

fn seconds(setting: &pgrx::guc::GucSetting<i32>) -> f64 {
    f64::from(setting.get().max(0))
}

/// End a session for a refusal of `reason`, as part of the refusal (it commits with it).
fn end_for(id: [u8; 16], reason: Reason) -> TsResult<Value> {
    if store::end_session(id, Some(reason.as_str()))? {
        replication::revoked();
    }
    Ok(refusal(reason))
}

/// `session_refresh`: trade a refresh token for a new pair, or say why not. A session bound to a
/// DPoP key needs that key's thumbprint in `dpop_jkt` (the app has checked the request's proof).
pub fn refresh(token: &str, claims: Option<&str>, dpop_jkt: Option<&str>) -> TsResult<Value> {
    ensure_primary("session_refresh")?;
    check_jkt(dpop_jkt)?;
    let new_claims = claims.map(claims_object).transpose()?;
    if let Some(c) = &new_claims {
        if let Some(k) = KEPT_ON_REFRESH.iter().find(|k| c.contains_key(**k)) {
            return Err(TsError::param(
                format!("claims of a refresh cannot contain \"{k}\""),
                "A refresh replaces the claims other than sub, iss and aud, which stay as the session began.",
            ));
        }
    }
    let Some(hash) = refresh::parse(token) else {
        return Ok(refusal(Reason::Malformed));
    };
    let Some((s, used)) = store::lock_by_refresh(&hash)? else {
        return Ok(refusal(Reason::NotStored));
    };
    let now = now_secs();
    if let Some(first_use) = used.used_at {
        // Within the interval, a second use is a concurrent refresh (two tabs), not a theft.
        let grace = seconds(&gucs::REFRESH_REUSE_INTERVAL);
        if s.ended || now - first_use > grace {
            return if s.ended {
                Ok(refusal(Reason::RefreshReused))
            } else {
                end_for(s.id, Reason::RefreshReused)
            };
        }
    }
    if s.ended {
        return Ok(refusal(Reason::SessionEnded));
    }
    // without the key's proof a stolen refresh token is refused, and not spent (RFC 9449 section 5);
    // a bearer session is not bound by a refresh that names a key
    if s.dpop_jkt.as_deref() != dpop_jkt {
        return Ok(refusal(Reason::DpopMismatch));
    }
    let max = seconds(&gucs::SESSION_MAX_LIFETIME);
    if max > 0.0 && now >= s.created_at + max {
        return end_for(s.id, Reason::SessionExpired);
    }
    let idle = seconds(&gucs::SESSION_IDLE_TIMEOUT);
    if idle > 0.0 && now >= s.refreshed_at + idle {
        return end_for(s.id, Reason::SessionIdle);
    }
    if now >= used.expires_at {
        return Ok(refusal(Reason::Expired));
    }
    let stored = keyring::open(
        || format!("claims of session {}", session_uuid(&s.id)),
        &s.fingerprint,
        &claims_aad(&s.id),
        &s.claims,
    )?;
    let stored: Map<String, Value> = serde_json::from_slice(&stored)
        .map_err(|e| TsError::Internal(format!("stored session claims are not JSON: {e}")))?;
    // new claims are sealed under the current key; the metadata moves with them (one fingerprint)
    let (claims, resealed) = match new_claims {
        None => (stored, None),
        Some(given) => {
            let mut next: Map<String, Value> = stored
                .into_iter()
                .filter(|(k, _)| KEPT_ON_REFRESH.contains(&k.as_str()))
                .collect();
            next.extend(given);
            let (_, key) = keyring::current_key()?;
            let metadata = match &s.metadata {
                Some(m) => Some(keyring::open(
                    || format!("metadata of session {}", session_uuid(&s.id)),
                    &s.fingerprint,
                    &metadata_aad(&s.id),
                    m,
                )?),
                None => None,
            };
            let sealed_claims = seal_json(&key, &claims_aad(&s.id), &next)?;
            let sealed_metadata = metadata.map(|m| key.seal(&metadata_aad(&s.id), &m));
            (
                next,
                Some((sealed_claims, sealed_metadata, key.fingerprint().to_owned())),
            )
        }
    };
    // the session's key while it can sign, else the default one (a key rotated out meanwhile)
    // (an error reading the key is raised, never taken for "use the default key")
    let kid = match &s.kid {
        Some(k) => storage::key_by_kid(k)?
            .filter(|r| r.state == "active" && r.can_sign)
            .map(|r| r.kid),
        None => None,
    };
    let (access, exp) = issue_access(
        &s.id,
        &claims,
        s.access_ttl,
        kid.as_deref(),
        s.dpop_jkt.as_deref(),
    )?;
    let (refresh_token, new_hash) = refresh::make();
    store::rotate(&Rotation {
        session: s.id,
        used_hash: &hash,
        now,
        new_hash: &new_hash,
        generation: s.generation + 1,
        expires_at: now + s.refresh_ttl,
        access_expires_at: exp,
        resealed: resealed
            .as_ref()
            .map(|(c, m, fp)| (c.as_slice(), m.as_deref(), fp.as_str())),
    })?;
    Ok(token_response(&s.id, access, s.access_ttl, refresh_token))
}

/// `session_end`: log one session out; true if this call ended it.
pub fn end(id: [u8; 16], reason: Option<&str>) -> TsResult<bool> {
    tokens::begin_revocation("session_end", reason)?;
    store::end_session(id, reason)
}

/// `session_end_subject`: log `subject` out everywhere, or everywhere but `keep`.
pub fn end_subject(subject: &str, keep: Option<[u8; 16]>, reason: Option<&str>) -> TsResult<i64> {
    tokens::begin_revocation("session_end_subject", reason)?;
    store::end_subject(subject, keep, reason)
}

/// A row of `sessions()`.
pub struct Listed {
    pub id: [u8; 16],
    pub created_at: pgrx::datum::TimestampWithTimeZone,
    pub refreshed_at: pgrx::datum::TimestampWithTimeZone,
    pub expires_at: pgrx::datum::TimestampWithTimeZone,
    pub generation: i64,
    pub metadata: Option<Value>,
}

/// `sessions`: the live sessions of `subject`, newest first, metadata decrypted. Reads only.
pub fn list(subject: &str) -> TsResult<Vec<Listed>> {
    let rows = store::live_sessions(
        subject,
        seconds(&gucs::SESSION_IDLE_TIMEOUT),
        seconds(&gucs::SESSION_MAX_LIFETIME),
    )?;
    rows.into_iter()
        .map(|r| {
            let metadata = match &r.metadata {
                Some(m) => {
                    let plain = keyring::open(
                        || format!("metadata of session {}", session_uuid(&r.id)),
                        &r.fingerprint,
                        &metadata_aad(&r.id),
                        m,
                    )?;
                    Some(serde_json::from_slice(&plain).map_err(|e| {
                        TsError::Internal(format!("stored session metadata is not JSON: {e}"))
                    })?)
                }
                None => None,
            };
            Ok(Listed {
                id: r.id,
                created_at: r.created_at,
                refreshed_at: r.refreshed_at,
                expires_at: r.expires_at,
                generation: r.generation,
                metadata,
            })
        })
        .collect()
}

/// Move up to `limit` sessions sealed under a previous key onto `current`; returns (moved,
/// undecryptable). Rows that do not open are warned about and left as they are.
pub fn reencrypt(
    current: &token_store_core::aead::EncryptionKey,
    limit: i64,
) -> TsResult<(i64, u64)> {
    let fp = current.fingerprint();
    let (mut moved, mut bad) = (0i64, 0u64);
    let mut after = None;
    while moved < limit {
        let rows = store::stale_sessions(fp, after, limit - moved)?;
        if rows.is_empty() {
            break;
        }
        for (id, claims, metadata, old_fp) in rows {
            after = Some(id);
            let what = || format!("claims of session {}", session_uuid(&id));
            let opened = keyring::open(what, &old_fp, &claims_aad(&id), &claims).and_then(|c| {
                let m = match &metadata {
                    Some(m) => Some(keyring::open(
                        || format!("metadata of session {}", session_uuid(&id)),
                        &old_fp,
                        &metadata_aad(&id),
                        m,
                    )?),
                    None => None,
                };
                Ok((c, m))
            });
            match opened {
                Ok((c, m)) => {
                    let m = m.map(|m| current.seal(&metadata_aad(&id), &m));
                    store::reseal_session(
                        id,
                        &current.seal(&claims_aad(&id), &c),
                        m.as_deref(),
                        fp,
                    )?;
                    moved += 1;
                }
                Err(TsError::Undecryptable { what, fingerprint }) => {
                    bad += 1;
                    admin::warn_undecryptable(&what, &fingerprint);
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok((moved, bad))
}
