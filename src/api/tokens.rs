//! Tokens: issue, store, verify, introspect, revoke.

use pgrx::datum::{Interval, Uuid};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use super::{JsonbFromText, JsonbText};
use crate::engine::tokens::{self, Mode};
use crate::error::{OrRaise, TsError};
use crate::logging::guarded;

/// Sign `claims` (adding `iat`, `exp` and `jti` where missing), store the token and return it.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn jwt_issue(
    claims: Option<JsonbText>,
    ttl: default!(Option<Interval>, "'15 minutes'"),
    kid: default!(Option<&str>, "NULL"),
) -> Option<String> {
    let (claims, ttl) = (claims?, ttl?);
    let ttl = (ttl.months(), ttl.days(), ttl.micros());
    Some(guarded(|| tokens::issue(&claims.0, ttl, kid).or_raise()))
}

/// Verify the signature and claims of a token made elsewhere, then store it; returns its row id.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn jwt_store(token: &str) -> Uuid {
    Uuid::from_bytes(guarded(|| tokens::store(token).or_raise()))
}

/// The verified claims of `token`, or an ERROR saying why it is refused.
// Runs no SQL (storage::direct reads the tables): SECURITY INVOKER, guarded by EXECUTE alone;
// nothing in it writes or needs a new snapshot, so parallel workers may run it.
#[pg_extern(stable, parallel_safe)]
fn jwt_verify(
    token: Option<&str>,
    audience: default!(Option<&str>, "NULL"),
    issuer: default!(Option<&str>, "NULL"),
) -> Option<JsonbFromText> {
    let token = token?;
    guarded(|| {
        let v = tokens::verify(token, audience, issuer, Mode::Verify).or_raise();
        // the payload's own text, already checked strict: jsonb_in reads it, no tree in between
        Some(JsonbFromText(v.parsed.into_payload_json()))
    })
}

/// True when `jwt_verify` would succeed; never raises for anything in the token (NULL gives false).
// Runs no SQL (storage::direct reads the tables): SECURITY INVOKER, guarded by EXECUTE alone;
// nothing in it writes or needs a new snapshot, so parallel workers may run it.
#[pg_extern(stable, parallel_safe)]
fn jwt_valid(token: Option<&str>) -> bool {
    let Some(token) = token else { return false };
    guarded(|| match tokens::verify(token, None, None, Mode::Verify) {
        Ok(_) => true,
        Err(TsError::InvalidToken(_) | TsError::Rejected(_)) => false,
        Err(e) => e.raise(),
    })
}

/// RFC 7662 shape: `{"active": true, ...claims, "token_id": ...}` or `{"active": false, "reason": ...}`.
// Runs no SQL (storage::direct reads the tables): SECURITY INVOKER, guarded by EXECUTE alone;
// nothing in it writes or needs a new snapshot, so parallel workers may run it.
#[pg_extern(stable, parallel_safe)]
fn jwt_introspect(token: &str) -> JsonB {
    guarded(|| {
        JsonB(match tokens::verify(token, None, None, Mode::Verify) {
            Ok(v) => {
                let mut out = serde_json::Map::new();
                out.insert("active".into(), Value::Bool(true));
                out.extend(v.parsed.payload_map());
                let id = v.token_id.map(|id| uuid::Uuid::from_bytes(id).to_string());
                out.insert("token_id".into(), json!(id));
                Value::Object(out)
            }
            Err(TsError::InvalidToken(_)) => json!({"active": false, "reason": "malformed"}),
            Err(TsError::Rejected(r)) => json!({"active": false, "reason": r.as_str()}),
            Err(e) => e.raise(),
        })
    })
}

/// Revoke a correctly signed token; true if this call revoked it. An unstored token gets a revoked row.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn jwt_revoke(token: Option<&str>, reason: default!(Option<&str>, "NULL")) -> Option<bool> {
    let token = token?;
    Some(guarded(|| tokens::revoke(token, reason).or_raise()))
}

/// Revoke the stored token with this row id; true if this call revoked it.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn jwt_revoke_id(id: Option<Uuid>, reason: default!(Option<&str>, "NULL")) -> Option<bool> {
    let id = super::uuid_bytes(id?);
    Some(guarded(|| tokens::revoke_id(id, reason).or_raise()))
}

/// Revoke every stored token of `subject`, and refuse any of its tokens issued up to now.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn jwt_revoke_subject(
    subject: Option<&str>,
    reason: default!(Option<&str>, "NULL"),
) -> Option<i64> {
    let subject = subject?;
    Some(guarded(|| {
        tokens::revoke_subject(subject, reason).or_raise()
    }))
}
