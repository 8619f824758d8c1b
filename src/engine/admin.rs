//! Administration: payloads, purge, re-encryption, stats.

use super::*;

/// `jwt_payload`: the decrypted claims of row `id`, or `None` when there is no such row.
pub fn payload(id: [u8; 16]) -> TsResult<Option<Value>> {
    let Some((sealed, fp)) = storage::payload(id)? else {
        return Ok(None);
    };
    let plain = keyring::open(
        || format!("payload of token {}", uuid::Uuid::from_bytes(id)),
        &fp,
        &id,
        &sealed,
    )?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|e| TsError::Internal(format!("stored payload is not JSON: {e}")))
}

/// `purge`: delete expired rows in batches; returns how many.
pub fn purge(max_rows: Option<i64>) -> TsResult<i64> {
    ensure_primary("purge")?;
    let started = std::time::Instant::now();
    let total = purge_rounds(max_rows, || false, purge_step)?;
    record_purge(total, started);
    Ok(total as i64)
}

/// What one purge step deletes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PurgeStep {
    /// Token rows past their `exp` (revoked ones past the largest leeway too).
    Tokens,
    /// Ended and expired sessions, with their refresh token hashes.
    Sessions,
    /// Subject revocations past `token_store.subject_revocation_ttl`.
    SubjectRevocations,
    /// DPoP proofs remembered past their lifetime (and `purge_grace`).
    DpopProofs,
}

impl PurgeStep {
    /// The name `purge_expired` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeStep::Tokens => "tokens",
            PurgeStep::Sessions => "sessions",
            PurgeStep::SubjectRevocations => "subject_revocations",
            PurgeStep::DpopProofs => "dpop_proofs",
        }
    }

    /// The step `purge_expired` was given.
    pub fn parse(s: &str) -> TsResult<Self> {
        match s {
            "tokens" => Ok(PurgeStep::Tokens),
            "sessions" => Ok(PurgeStep::Sessions),
            "subject_revocations" => Ok(PurgeStep::SubjectRevocations),
            "dpop_proofs" => Ok(PurgeStep::DpopProofs),
            _ => Err(TsError::param(
                format!("unknown purge step \"{s}\""),
                "The steps are tokens, sessions, dpop_proofs and subject_revocations.",
            )),
        }
    }
}

/// The largest leeway a verification may use: this session's, or one a role or database sets
/// (`ALTER ROLE ... SET token_store.leeway`). The purge keeps revoked rows, ended sessions and
/// subject revocations that long past their end, so none comes back inside anyone's leeway. A
/// value it cannot read counts as the largest leeway allowed.
pub fn largest_leeway() -> TsResult<f64> {
    let mut largest = gucs::LEEWAY.get();
    for text in storage::configured_leeways()? {
        largest = largest.max(gucs::parse_seconds(&text).unwrap_or(gucs::MAX_LEEWAY));
    }
    Ok(f64::from(largest.clamp(0, gucs::MAX_LEEWAY)))
}

/// One step of a purge, as `purge_expired` runs it: up to `limit` rows of what `step` names that
/// are past their end (their `exp`, `purge_grace`, and for what refuses tokens the largest leeway),
/// and nothing else. `from` (epoch seconds) skips token rows that expired before it. Returns the
/// rows deleted and, for tokens, where the next batch may start.
pub fn purge_step(step: PurgeStep, limit: i64, from: Option<f64>) -> TsResult<(u64, Option<f64>)> {
    ensure_primary("purge")?;
    let limit = limit.max(0);
    let leeway = largest_leeway()?;
    let (grace, revoked_grace) = gucs::purge_graces(leeway);
    match step {
        PurgeStep::Tokens => storage::purge_batch(limit, grace, revoked_grace, from),
        PurgeStep::Sessions if storage::sessions::installed()? => Ok((
            storage::sessions::purge_sessions(limit, grace, revoked_grace)?,
            None,
        )),
        PurgeStep::Sessions => Ok((0, None)),
        PurgeStep::SubjectRevocations => match gucs::subject_revocation_ttl(leeway) {
            Some(ttl) => Ok((storage::purge_subject_revocations(ttl)?, None)),
            None => Ok((0, None)),
        },
        PurgeStep::DpopProofs => Ok((super::dpop::purge_proofs(limit, revoked_grace)?, None)),
    }
}

/// The purge loop of both `purge()` and the purge worker: batches of
/// `token_store.purge_batch_size` expired rows until one comes back short, `max_rows` are gone
/// or `stop()` says so; the same for ended and expired sessions (with their refresh tokens) and for
/// the DPoP proofs remembered past their lifetime; then the subject revocations past their TTL.
/// `step` runs each step: [`purge_step`] in the caller's transaction for `purge()`; for the worker,
/// `purge_expired` in a transaction of its own as the purge role. Returns how many token, session
/// and proof rows were deleted.
pub fn purge_rounds(
    max_rows: Option<i64>,
    stop: impl Fn() -> bool,
    step: impl Fn(PurgeStep, i64, Option<f64>) -> TsResult<(u64, Option<f64>)>,
) -> TsResult<u64> {
    let batch = i64::from(gucs::PURGE_BATCH_SIZE.get().max(1));
    let mut total = 0u64;
    for kind in [
        PurgeStep::Tokens,
        PurgeStep::Sessions,
        PurgeStep::DpopProofs,
    ] {
        let mut from = None;
        loop {
            let want = max_rows.map_or(batch, |m| batch.min(m - total as i64));
            if want <= 0 {
                break;
            }
            let (n, last) = step(kind, want, from)?;
            from = last.map(storage::resume_point);
            total += n;
            if (n as i64) < want || stop() {
                break;
            }
        }
    }
    step(PurgeStep::SubjectRevocations, i64::MAX, None)?;
    Ok(total)
}

/// Count a purge that deleted `rows` and began at `started` in `stats()`.
pub fn record_purge(rows: u64, started: std::time::Instant) {
    shmem::counters().record_purge(
        rows,
        (now_secs() * 1e6) as i64,
        started.elapsed().as_micros() as u64,
    );
}

/// `reencrypt`: move key material and up to `batch_size` token rows still sealed under a previous
/// key onto the current one; returns how many rows moved. Call again until it returns 0.
///
/// A row that does not decrypt (tampered, or sealed under a key no longer configured) is left as
/// it is, reported in a WARNING with its id and counted in `stats()`, so one bad row never blocks
/// the rotation of the others.
pub fn reencrypt(batch_size: i32) -> TsResult<i64> {
    ensure_primary("reencrypt")?;
    if batch_size < 1 {
        return Err(TsError::param(
            "batch_size must be positive",
            format!("The batch_size given is {batch_size}."),
        ));
    }
    let (_, current) = keyring::current_key()?;
    let fp = current.fingerprint();
    let mut moved = 0i64;
    let mut undecryptable = 0u64;
    for row in storage::stale_keys(fp)? {
        match signing_keys::material(&row) {
            Ok(material) => {
                storage::reseal_key(
                    &row.kid,
                    &current.seal(&keyring::key_aad(&row.kid), &material.bytes),
                    fp,
                )?;
                moved += 1;
            }
            Err(TsError::Undecryptable { fingerprint, .. }) => {
                undecryptable += 1;
                warn_undecryptable(
                    &format!("the material of key \"{}\"", row.kid),
                    &fingerprint,
                );
            }
            Err(e) => return Err(e),
        }
    }
    // Walk the stale rows in id order, past the ones that do not decrypt, until a batch moved.
    let mut after = None;
    let mut moved_tokens = 0i64;
    while moved_tokens < i64::from(batch_size) {
        let rows = storage::stale_tokens(fp, after, i64::from(batch_size) - moved_tokens)?;
        if rows.is_empty() {
            break;
        }
        for (id, sealed, old_fp) in rows {
            after = Some(id);
            let what = || format!("payload of token {}", uuid::Uuid::from_bytes(id));
            match keyring::open(what, &old_fp, &id, &sealed) {
                Ok(plain) => {
                    storage::reseal_token(id, &current.seal(&id, &plain), fp)?;
                    moved_tokens += 1;
                }
                Err(TsError::Undecryptable { fingerprint, .. }) => {
                    undecryptable += 1;
                    warn_undecryptable(&what(), &fingerprint);
                }
                Err(e) => return Err(e),
            }
        }
    }
    let (moved_sessions, bad) = if storage::sessions::installed()? {
        super::sessions::reencrypt(&current, i64::from(batch_size) - moved_tokens)?
    } else {
        (0, 0)
    };
    undecryptable += bad;
    moved += moved_sessions;
    shmem::counters().record_reencrypt(undecryptable);
    Ok(moved + moved_tokens)
}

pub(super) fn warn_undecryptable(what: &str, fingerprint: &str) {
    crate::error::warning(
        format!("cannot decrypt {what}; it stays under encryption key {fingerprint}"),
        "The ciphertext was altered, or made under a key that is neither the current nor a previous one.",
        "See \"Rows that do not decrypt\" in the README: the row still verifies and revokes, only its payload is lost.",
    );
}

/// What `stats()` reports: row counts from the tables, the rest from the shared counters.
pub struct Stats {
    pub active: i64,
    pub revoked: i64,
    pub expired: i64,
    /// `{fingerprint: rows}`.
    pub rows_per_key: pgrx::JsonB,
    pub purged_total: i64,
    pub last_purge_at: Option<pgrx::datum::TimestampWithTimeZone>,
    pub last_purge_rows: i64,
    pub last_purge_ms: f64,
    pub worker_pids: Vec<i32>,
    /// `{reason: count}` of verifications.
    pub verifications: pgrx::JsonB,
    /// Whether the counters are shared by all backends (the library was preloaded).
    pub counters_shared: bool,
    pub reencrypt_undecryptable: i64,
}

/// `stats`: token counts, rows per encryption key, purge figures, worker pids and verification
/// outcomes.
pub fn stats() -> TsResult<Stats> {
    let (active, revoked, expired, mut rows_per_key) = storage::table_counts()?;
    if let Value::Object(per_key) = &mut rows_per_key.0 {
        for (fp, n) in storage::sessions::rows_per_key()? {
            let sum = per_key.get(&fp).and_then(Value::as_i64).unwrap_or(0) + n;
            per_key.insert(fp, Value::from(sum));
        }
    }
    let c = shmem::counters();
    let (purged_total, last_at, last_rows, last_us) = c.purge_figures();
    let outcomes: Map<_, _> = c
        .outcomes()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    Ok(Stats {
        active,
        revoked,
        expired,
        rows_per_key,
        purged_total: purged_total as i64,
        last_purge_at: last_at.map(|us| pgrx::datum::to_timestamp(us as f64 / 1e6)),
        last_purge_rows: last_rows as i64,
        last_purge_ms: last_us as f64 / 1000.0,
        worker_pids: c.worker_pids(),
        verifications: pgrx::JsonB(Value::Object(outcomes)),
        counters_shared: shmem::shared(),
        reencrypt_undecryptable: c.reencrypt_undecryptable() as i64,
    })
}
