//! The DPoP replay cache and the revocation events' catch-up query: fixed statements with bind
//! parameters.

use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys::PgBuiltInOids as T;

use super::{read, write};
use crate::error::{TsError, TsResult};

/// Remember a proof's `jti` for its key until `expires_at` (epoch seconds). False: the pair is
/// there already, a replay. Two sessions inserting the same pair at once: the second waits for
/// the first to commit and then finds it (or, if the first rolled back, inserts it itself).
pub fn remember_proof(jkt: &[u8; 32], jti: &str, expires_at: f64) -> TsResult<bool> {
    const SQL: &str = "INSERT INTO token_store.dpop_proofs (jkt, jti, expires_at) \
                       VALUES ($1, $2, to_timestamp($3)) ON CONFLICT DO NOTHING";
    write(
        SQL,
        &[T::BYTEAOID, T::TEXTOID, T::FLOAT8OID],
        &[jkt.as_slice().into(), jti.into(), expires_at.into()],
        |t| Ok(t.len() == 1),
    )
}

/// Whether this database's token_store has the replay cache: not before `ALTER EXTENSION
/// token_store UPDATE` to 0.4.0, while the new library already serves the old functions. Asked
/// each time (once per purge step), so an update or a reinstall of another version is seen.
pub fn installed() -> TsResult<bool> {
    const SQL: &str = "SELECT pg_catalog.to_regclass('token_store.dpop_proofs') IS NOT NULL";
    read(SQL, &[], &[], |t| {
        Ok(t.first().get::<bool>(1)?.unwrap_or(false))
    })
}

/// Delete up to `limit` remembered proofs past their expiry (and `grace_s`), skipping locked rows;
/// returns how many. Schema-qualified throughout, like the other purge statements.
pub fn purge_proofs(limit: i64, grace_s: f64) -> TsResult<u64> {
    const SQL: &str = "DELETE FROM token_store.dpop_proofs \
           WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY( \
                 SELECT ctid FROM token_store.dpop_proofs \
                  WHERE expires_at OPERATOR(pg_catalog.<) \
                          (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $2)) \
                  LIMIT $1 FOR UPDATE SKIP LOCKED))";
    write(
        SQL,
        &[T::INT8OID, T::FLOAT8OID],
        &[limit.into(), grace_s.into()],
        |t| Ok(t.len() as u64),
    )
}

/// A row of `revocations_since`.
pub struct EventRow {
    pub event: String,
    pub token_id: Option<Uuid>,
    pub jti: Option<String>,
    pub sub: Option<String>,
    pub sid: Option<Uuid>,
    pub kid: Option<String>,
    pub at: TimestampWithTimeZone,
}

/// Every change at or after `since` that the tables still hold, oldest first: revoked tokens,
/// ended sessions, subject revocations, key state changes. A read: works on a hot standby.
pub fn events_since(since: TimestampWithTimeZone) -> TsResult<Vec<EventRow>> {
    const SQL: &str = "SELECT 'token_revoked', id, jti, subject, NULL::uuid, kid, revoked_at \
           FROM token_store.tokens WHERE revoked_at >= $1 \
         UNION ALL \
         SELECT CASE WHEN end_reason = 'refresh_reused' THEN 'refresh_reused' ELSE 'session_ended' END, \
                NULL, NULL, subject, id, NULL, ended_at \
           FROM token_store.sessions WHERE ended_at >= $1 \
         UNION ALL \
         SELECT 'subject_revoked', NULL, NULL, subject, NULL, NULL, revoked_before \
           FROM token_store.subject_revocations WHERE revoked_before >= $1 \
         UNION ALL \
         SELECT 'key_' || state, NULL, NULL, NULL, NULL, kid, updated_at \
           FROM token_store.signing_keys WHERE updated_at >= $1 AND version > 1 \
         ORDER BY 7, 1, 2, 5, 4, 6";
    read(SQL, &[T::TIMESTAMPTZOID], &[since.into()], |t| {
        let mut out = Vec::new();
        for row in t {
            out.push(EventRow {
                event: row.get::<String>(1)?.unwrap_or_default(),
                token_id: row.get::<Uuid>(2)?,
                jti: row.get::<String>(3)?,
                sub: row.get::<String>(4)?,
                sid: row.get::<Uuid>(5)?,
                kid: row.get::<String>(6)?,
                at: row
                    .get::<TimestampWithTimeZone>(7)?
                    .ok_or_else(|| TsError::Internal("an event has no time".into()))?,
            });
        }
        Ok(out)
    })
}
