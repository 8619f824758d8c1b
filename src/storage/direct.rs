//! The read path's reads: each one index probe (`storage::probe`) under the active snapshot, the
//! one rule for tokens, subjects, sessions and keys alike, so a verify sees exactly what a plain
//! SELECT of those tables in the calling statement would see (see the README).

use pgrx::datum::Uuid;
use pgrx::IntoDatum;

use super::probe::{self, Row};
use super::KeyRow;
use crate::cache::relations::{KeysRel, Relations};
use crate::error::TsResult;

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_S: f64 = 946_684_800.0;

fn epoch_secs(pg_micros: i64) -> f64 {
    pg_micros as f64 / 1e6 + PG_EPOCH_OFFSET_S
}

/// The stored row of a token hash: its id and whether revoked.
pub fn token_row(hash: &[u8; 32]) -> TsResult<Option<([u8; 16], bool)>> {
    let arg = hash.as_slice().into_datum().expect("bytea datum");
    let mut found = None;
    probe::scan(
        |r| Some(r.tokens.by_hash),
        Some(arg),
        |r, row| {
            let id = row.get::<Uuid>(r.tokens.id).map(|u| *u.as_bytes());
            found = id.map(|id| (id, !row.is_null(r.tokens.revoked_at)));
            false
        },
    )?;
    Ok(found)
}

/// When `subject` was revoked (epoch seconds).
pub fn subject_revoked_before(subject: &str) -> TsResult<Option<f64>> {
    let arg = subject.into_datum().expect("text datum");
    let mut found = None;
    probe::scan(
        |r| Some(r.subjects.by_subject),
        Some(arg),
        |r, row| {
            found = row.get::<i64>(r.subjects.revoked_before).map(epoch_secs);
            false
        },
    )?;
    Ok(found)
}

/// Whether the session `id` has ended; false when no such session exists (a `sid` of another
/// issuer) or the database has no session tables yet.
pub fn session_ended(id: [u8; 16]) -> TsResult<bool> {
    let arg = Uuid::from_bytes(id).into_datum().expect("uuid datum");
    let mut ended = false;
    probe::scan(
        |r| r.sessions.map(|s| s.by_id),
        Some(arg),
        |r, row| {
            ended = r.sessions.is_some_and(|s| !row.is_null(s.ended_at));
            false
        },
    )?;
    Ok(ended)
}

/// Whether the database has the session tables (0.3.0 on), as the current resolution says.
pub fn sessions_installed() -> TsResult<bool> {
    Ok(crate::cache::relations::get()?.sessions.is_some())
}

fn key_row(k: &KeysRel, row: &Row) -> (KeyRow, i64) {
    let text = |n| row.get::<String>(n).unwrap_or_default();
    (
        KeyRow {
            kid: text(k.kid),
            alg: text(k.alg),
            state: text(k.state),
            can_sign: row.get::<bool>(k.can_sign).unwrap_or(false),
            version: row.get::<i64>(k.version).unwrap_or(0),
            material: row.get::<Vec<u8>>(k.material).unwrap_or_default(),
            fingerprint: text(k.key_fingerprint),
        },
        row.get::<i64>(k.created_at).unwrap_or(0),
    )
}

/// The key row named `kid`, whatever its state.
pub fn key_by_kid(kid: &str) -> TsResult<Option<KeyRow>> {
    let arg = kid.into_datum().expect("text datum");
    let mut found = None;
    probe::scan(
        |r| Some(r.keys.by_kid),
        Some(arg),
        |r, row| {
            // the kid itself must match, whatever the index's collation says is equal
            if row.get::<String>(r.keys.kid).as_deref() == Some(kid) {
                found = Some(key_row(&r.keys, row).0);
                return false;
            }
            true
        },
    )?;
    Ok(found)
}

/// The key rows whose `(alg, state, can_sign)` pass `keep`, with their creation time (microseconds
/// since 2000); the other rows' material is not read.
pub fn keys_where(keep: impl Fn(&str, &str, bool) -> bool) -> TsResult<Vec<(KeyRow, i64)>> {
    let mut out = Vec::new();
    probe::scan(
        |r: &Relations| Some(r.keys.by_kid),
        None,
        |r, row| {
            let k = &r.keys;
            let alg = row.get::<String>(k.alg).unwrap_or_default();
            let state = row.get::<String>(k.state).unwrap_or_default();
            let can_sign = row.get::<bool>(k.can_sign).unwrap_or(false);
            if keep(&alg, &state, can_sign) {
                out.push(key_row(k, row));
            }
            true
        },
    )?;
    Ok(out)
}
