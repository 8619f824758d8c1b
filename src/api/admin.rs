//! Administration: payloads, purge, reencrypt, stats.

use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::engine;
use crate::error::OrRaise;
use crate::logging::guarded;

/// The decrypted claims of the stored token with this row id (NULL when there is none).
// Reads only: parallel workers may run it.
#[pg_extern(security_definer, stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn jwt_payload(id: Uuid) -> Option<JsonB> {
    guarded(|| engine::admin::payload(super::uuid_bytes(id)).or_raise()).map(JsonB)
}

/// Delete expired rows now (at most `max_rows` when given); returns how many.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn purge(max_rows: default!(Option<i64>, "NULL")) -> i64 {
    guarded(|| engine::admin::purge(max_rows).or_raise())
}

/// One step of the purge, for the purge worker's role: delete up to `max_rows` rows of `step`
/// (`tokens`, `sessions`, `subject_revocations`) that are past their end by the server's settings,
/// and nothing else; `resume_from` (epoch seconds) skips token rows that expired before it.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn purge_expired(
    step: Option<&str>,
    max_rows: Option<i64>,
    resume_from: default!(Option<f64>, "NULL"),
) -> TableIterator<'static, (name!(deleted, i64), name!(next_from, Option<f64>))> {
    // NULL in, no row out, as a STRICT function would
    let (Some(step), Some(max_rows)) = (step, max_rows) else {
        return TableIterator::empty();
    };
    let (deleted, resume) = guarded(|| {
        let step = engine::admin::PurgeStep::parse(step).or_raise();
        engine::admin::purge_step(step, max_rows, resume_from).or_raise()
    });
    TableIterator::once((deleted as i64, resume))
}

/// Token counts, rows per encryption key, purge figures, worker pids and verification outcomes.
// Restricted to the leader: without preloading, the verification counts are the backend's own.
#[allow(clippy::type_complexity)]
#[pg_extern(security_definer, stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
fn stats() -> TableIterator<
    'static,
    (
        name!(active, i64),
        name!(revoked, i64),
        name!(expired, i64),
        name!(rows_per_key, JsonB),
        name!(purged_total, i64),
        name!(last_purge_at, Option<TimestampWithTimeZone>),
        name!(last_purge_rows, i64),
        name!(last_purge_ms, f64),
        name!(worker_pids, Vec<i32>),
        name!(verifications, JsonB),
        name!(counters_shared, bool),
        name!(reencrypt_undecryptable, i64),
    ),
> {
    let s = engine::admin::stats().or_raise();
    TableIterator::once((
        s.active,
        s.revoked,
        s.expired,
        s.rows_per_key,
        s.purged_total,
        s.last_purge_at,
        s.last_purge_rows,
        s.last_purge_ms,
        s.worker_pids,
        s.verifications,
        s.counters_shared,
        s.reencrypt_undecryptable,
    ))
}

/// Re-seal key material and up to `batch_size` token rows still under a previous encryption key
/// with the current one; returns how many rows moved. Repeat until it returns 0.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn reencrypt(batch_size: default!(i32, 10000)) -> i64 {
    guarded(|| engine::admin::reencrypt(batch_size).or_raise())
}
