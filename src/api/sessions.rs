//! Sessions and refresh tokens: session_start, session_refresh, session_end,
//! session_end_subject, sessions.

use pgrx::datum::{Interval, TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;
use pgrx::JsonB;

use super::JsonbText;
use crate::engine::sessions;
use crate::error::OrRaise;
use crate::logging::guarded;

fn interval_parts(i: Interval) -> (i32, i32, i64) {
    (i.months(), i.days(), i.micros())
}

/// Start a session for `claims->>'sub'`: `{"token_type", "access_token", "expires_in",
/// "refresh_token", "session_id"}`. The access token carries the session's id as `sid`; with
/// `dpop_jkt`, the session is bound to that DPoP key and its access tokens carry `cnf.jkt`.
#[pg_extern(name = "session_start", security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn session_start_dpop(
    claims: Option<JsonbText>,
    access_ttl: default!(Option<Interval>, "'15 minutes'"),
    refresh_ttl: default!(Option<Interval>, "'30 days'"),
    metadata: default!(Option<JsonbText>, "NULL"),
    kid: default!(Option<&str>, "NULL"),
    dpop_jkt: default!(Option<&str>, "NULL"),
) -> Option<JsonB> {
    let (claims, access_ttl, refresh_ttl) = (claims?, access_ttl?, refresh_ttl?);
    Some(JsonB(guarded(|| {
        sessions::start(
            &claims.0,
            interval_parts(access_ttl),
            interval_parts(refresh_ttl),
            metadata.as_ref().map(|m| m.0.as_str()),
            kid,
            dpop_jkt,
        )
        .or_raise()
    })))
}

/// The `session_start` of the 0.3.0 schema (five arguments), which the library serves until
/// `ALTER EXTENSION token_store UPDATE` replaces it; no SQL of its own.
#[pg_extern(sql = false, security_definer, volatile)]
fn session_start(
    claims: Option<JsonbText>,
    access_ttl: Option<Interval>,
    refresh_ttl: Option<Interval>,
    metadata: Option<JsonbText>,
    kid: Option<&str>,
) -> Option<JsonB> {
    session_start_dpop(claims, access_ttl, refresh_ttl, metadata, kid, None)
}

/// Trade a refresh token for a new pair of its session, or answer `{"error": "invalid_grant",
/// "reason": ...}`. `claims` replace the non-registered claims of the next access tokens; a session
/// bound to a DPoP key needs its thumbprint in `dpop_jkt`.
#[pg_extern(name = "session_refresh", security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn session_refresh_dpop(
    refresh_token: Option<&str>,
    claims: default!(Option<JsonbText>, "NULL"),
    dpop_jkt: default!(Option<&str>, "NULL"),
) -> Option<JsonB> {
    let token = refresh_token?;
    Some(JsonB(guarded(|| {
        sessions::refresh(token, claims.as_ref().map(|c| c.0.as_str()), dpop_jkt).or_raise()
    })))
}

/// The `session_refresh` of the 0.3.0 schema (two arguments), served until the update; no SQL of
/// its own.
#[pg_extern(sql = false, security_definer, volatile)]
fn session_refresh(refresh_token: Option<&str>, claims: Option<JsonbText>) -> Option<JsonB> {
    session_refresh_dpop(refresh_token, claims, None)
}

/// End one session (logout): its refresh and access tokens are refused from now on. True if this
/// call ended it.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn session_end(session_id: Option<Uuid>, reason: default!(Option<&str>, "NULL")) -> Option<bool> {
    let id = super::uuid_bytes(session_id?);
    Some(guarded(|| sessions::end(id, reason).or_raise()))
}

/// End every session of `subject` (logout everywhere), or every one but `keep_session`; returns
/// how many ended.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn session_end_subject(
    subject: Option<&str>,
    keep_session: default!(Option<Uuid>, "NULL"),
    reason: default!(Option<&str>, "NULL"),
) -> Option<i64> {
    let subject = subject?;
    let keep = keep_session.map(super::uuid_bytes);
    Some(guarded(|| {
        sessions::end_subject(subject, keep, reason).or_raise()
    }))
}

/// The live sessions of `subject`, newest first, with their decrypted metadata.
// Reads only: parallel workers may run it.
#[allow(clippy::type_complexity)]
#[pg_extern(security_definer, stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn sessions(
    subject: &str,
) -> TableIterator<
    'static,
    (
        name!(session_id, Uuid),
        name!(created_at, TimestampWithTimeZone),
        name!(refreshed_at, TimestampWithTimeZone),
        name!(expires_at, TimestampWithTimeZone),
        name!(generation, i64),
        name!(metadata, Option<JsonB>),
    ),
> {
    let rows = guarded(|| sessions::list(subject).or_raise());
    TableIterator::new(rows.into_iter().map(|r| {
        (
            Uuid::from_bytes(r.id),
            r.created_at,
            r.refreshed_at,
            r.expires_at,
            r.generation,
            r.metadata.map(JsonB),
        )
    }))
}
