//! Signing keys per backend.
//!
//! Key rows are read by the read path's one rule: an index probe of `signing_keys` under the
//! active snapshot (`storage::direct`), exactly what a SELECT of `token_store.keys` in the calling
//! statement sees, in every context (open transactions, replica mode, disabled triggers, the
//! logical apply worker, parallel workers). What was read is kept for the current snapshot only
//! (`probe::View`: a batch statement reads each kid once); nothing about a key's state outlives it.
//!
//! What is kept across statements is content-addressed and so cannot go stale: the parsed key of a
//! row, by kid, matched against the row's version and sealed bytes every time it is used. Parsed
//! keys whose row has left the key set (deleted, retired, changed) are dropped: at once when a
//! lookup finds so, and by a sweep of the whole table when the keys table was invalidated (the
//! trigger `signing_keys_changed` sends one, also in replica mode) or, failing that, at most a
//! minute after the last sweep, at the first key lookup of a new snapshot.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::keyring::{key_aad, open};
use super::relations;
use crate::error::{TsError, TsResult};
use crate::storage::probe::View;
use crate::storage::{direct, KeyRow};
use token_store_core::alg::Alg;
use token_store_core::keys::{self, KeyMaterial, LoadedKey};

/// A parsed key with the row version and sealed bytes it was parsed from.
type CachedKey = (i64, Vec<u8>, Rc<LoadedKey>);

/// Distinct kids remembered per snapshot (a batch of tokens naming unknown kids stops adding).
const MAX_KIDS_PER_VIEW: usize = 1024;

/// How long parsed keys may wait for a sweep when no invalidation prompts one.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What one snapshot saw of the keys table.
#[derive(Default)]
struct Seen {
    /// None: not an MVCC snapshot, nothing is remembered.
    view: Option<View>,
    by_kid: HashMap<String, Option<Rc<KeyRow>>>,
    /// Non-retired keys per alg, newest first (ties by kid).
    by_alg: HashMap<String, Rc<Vec<Rc<KeyRow>>>>,
    /// The newest active key that can sign, once looked for.
    default_signer: Option<Option<Rc<KeyRow>>>,
}

thread_local! {
    static SEEN: RefCell<Option<Seen>> = const { RefCell::new(None) };

    // kid -> (version, sealed material, parsed key). The sealed bytes are part of the match: a key
    // dropped and made again under the same kid starts at version 1 again, but its nonce differs.
    static SIGNING: RefCell<HashMap<String, CachedKey>> = RefCell::new(HashMap::new());

    static LAST_SWEEP: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// Run `f` on what the active snapshot has seen so far (emptied when the snapshot's View changed).
fn with_seen<R>(f: impl FnOnce(&mut Seen) -> TsResult<R>) -> TsResult<R> {
    let current = SEEN.with_borrow(|s| {
        s.as_ref()
            .and_then(|s| s.view.as_ref())
            .is_some_and(View::is_current)
    });
    let mut seen = if current {
        SEEN.take().unwrap_or_default()
    } else {
        SEEN.set(None);
        maybe_sweep()?;
        Seen {
            view: View::current()?,
            ..Seen::default()
        }
    };
    // The reads below do not come back into this module while `seen` is out of SEEN.
    let out = f(&mut seen);
    if seen.view.is_some() {
        SEEN.set(Some(seen));
    }
    out
}

/// Tell every backend (this one included, at its next snapshot) that the keys table `relid`
/// changed, so their parsed keys are swept at once instead of within a minute: a hint for memory
/// hygiene only, as every lookup reads the key's row anyway. Sent with the transaction's commit,
/// dropped with its abort; replayed on hot standbys.
pub fn keys_changed(relid: pgrx::pg_sys::Oid) {
    // SAFETY: queues a relcache invalidation message for a relation OID; raises only on OOM.
    unsafe { pgrx::pg_sys::CacheInvalidateRelcacheByRelid(relid) };
}

/// The key named `kid`, whatever its state, as the active snapshot sees it.
pub fn by_kid(kid: &str) -> TsResult<Option<Rc<KeyRow>>> {
    with_seen(|seen| {
        if let Some(row) = seen.by_kid.get(kid) {
            return Ok(row.clone());
        }
        let row = direct::key_by_kid(kid)?.map(Rc::new);
        if row.as_ref().is_none_or(|r| r.state == "retired") {
            forget_parsed(kid);
        }
        if seen.by_kid.len() < MAX_KIDS_PER_VIEW {
            seen.by_kid.insert(kid.to_owned(), row.clone());
        }
        Ok(row)
    })
}

fn newest_first(rows: &mut [(KeyRow, i64)]) {
    rows.sort_by(|(a, at), (b, bt)| bt.cmp(at).then_with(|| a.kid.cmp(&b.kid)));
}

/// The non-retired keys of `alg`, newest first, as the active snapshot sees them.
pub fn by_alg(alg: &str) -> TsResult<Rc<Vec<Rc<KeyRow>>>> {
    with_seen(|seen| {
        if let Some(rows) = seen.by_alg.get(alg) {
            return Ok(rows.clone());
        }
        let mut rows = direct::keys_where(|a, state, _| a == alg && state != "retired")?;
        newest_first(&mut rows);
        let rows = Rc::new(
            rows.into_iter()
                .map(|(r, _)| Rc::new(r))
                .collect::<Vec<_>>(),
        );
        seen.by_alg.insert(alg.to_owned(), rows.clone());
        Ok(rows)
    })
}

/// The key `jwt_issue` signs with when given no kid: the newest active key that can sign (ties:
/// the greatest kid), as the active snapshot sees it.
pub fn default_signer() -> TsResult<Option<Rc<KeyRow>>> {
    with_seen(|seen| {
        if let Some(row) = &seen.default_signer {
            return Ok(row.clone());
        }
        let rows = direct::keys_where(|_, state, can_sign| state == "active" && can_sign)?;
        let best = rows
            .into_iter()
            .max_by(|(a, at), (b, bt)| at.cmp(bt).then_with(|| a.kid.cmp(&b.kid)))
            .map(|(r, _)| Rc::new(r));
        seen.default_signer = Some(best.clone());
        Ok(best)
    })
}

fn forget_parsed(kid: &str) {
    SIGNING.with_borrow_mut(|c| c.remove(kid));
}

/// Drop the parsed keys whose row is no longer in the key set as it was parsed (deleted,
/// retired, or changed): when the keys table was invalidated since the last sweep, or a minute
/// has passed. Runs at the first key lookup under a new snapshot.
fn maybe_sweep() -> TsResult<()> {
    if SIGNING.with_borrow(HashMap::is_empty) {
        return Ok(());
    }
    let invalidations = relations::keys_invalidations();
    let due = LAST_SWEEP
        .get()
        .is_none_or(|(at, seen)| seen != invalidations || at.elapsed() >= SWEEP_EVERY);
    if !due {
        return Ok(());
    }
    let rows = direct::keys_where(|_, state, _| state != "retired")?;
    SIGNING.with_borrow_mut(|c| {
        c.retain(|kid, (version, sealed, _)| {
            rows.iter()
                .any(|(r, _)| r.kid == *kid && r.version == *version && r.material == *sealed)
        })
    });
    LAST_SWEEP.set(Some((Instant::now(), relations::keys_invalidations())));
    Ok(())
}

/// The decrypted material of a stored key.
pub fn material(row: &KeyRow) -> TsResult<KeyMaterial> {
    let what = || format!("key material of key \"{}\"", row.kid);
    let bytes = open(what, &row.fingerprint, &key_aad(&row.kid), &row.material)?;
    Ok(KeyMaterial {
        bytes,
        can_sign: row.can_sign,
    })
}

/// The parsed key of a stored row, from cache when the row has not changed.
pub fn loaded(row: &KeyRow) -> TsResult<Rc<LoadedKey>> {
    if let Some(k) = SIGNING.with_borrow(|c| {
        c.get(&row.kid)
            .filter(|(v, sealed, _)| *v == row.version && *sealed == row.material)
            .map(|(_, _, k)| k.clone())
    }) {
        return Ok(k);
    }
    let alg = Alg::parse(&row.alg)
        .ok_or_else(|| TsError::Internal(format!("key \"{}\" has unknown alg", row.kid)))?;
    let material = material(row)?;
    let key = Rc::new(keys::load_key(alg, &material).map_err(|e| {
        TsError::Internal(format!("stored key \"{}\" cannot be loaded: {e}", row.kid))
    })?);
    SIGNING.with_borrow_mut(|c| {
        c.insert(
            row.kid.clone(),
            (row.version, row.material.clone(), key.clone()),
        )
    });
    Ok(key)
}

/// How many parsed keys this backend holds (for the tests of eviction).
#[cfg(any(test, feature = "pg_test"))]
pub fn parsed_count() -> usize {
    SIGNING.with_borrow(HashMap::len)
}
