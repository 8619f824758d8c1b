//! The extension's tables and indexes as this backend knows them: OIDs and column numbers, resolved
//! by schema once (see `storage::probe::resolve`) and forgotten on any relcache invalidation of one
//! of them, so that DROP/CREATE EXTENSION, REINDEX CONCURRENTLY and the like in another session
//! never leave a backend reading a relation that is no longer the extension's.
//!
//! The generation counts those invalidations. The key set in `signing_keys` is valid only for the
//! generation it was read in, so a change to the keys table (whose writers send a relcache
//! invalidation of it) empties it in every backend at its next statement.

use std::cell::Cell;

use pgrx::pg_sys::{Datum, Oid};

use crate::error::TsResult;
use crate::storage::probe;

/// `token_store.tokens`: the table, its unique `token_hash` index, and the columns read.
#[derive(Clone, Copy, Debug)]
pub struct TokensRel {
    pub table: Oid,
    pub by_hash: Oid,
    pub id: i16,
    pub revoked_at: i16,
}

/// `token_store.subject_revocations`: the table, its primary key on `subject`, the column read.
#[derive(Clone, Copy, Debug)]
pub struct SubjectsRel {
    pub table: Oid,
    pub by_subject: Oid,
    pub revoked_before: i16,
}

/// `token_store.signing_keys`: the table, its primary key on `kid`, and the columns read.
#[derive(Clone, Copy, Debug)]
pub struct KeysRel {
    pub table: Oid,
    pub by_kid: Oid,
    pub kid: i16,
    pub alg: i16,
    pub state: i16,
    pub can_sign: i16,
    pub version: i16,
    pub material: i16,
    pub key_fingerprint: i16,
    pub created_at: i16,
}

/// `token_store.sessions`: the table, its primary key on `id`, the column read.
#[derive(Clone, Copy, Debug)]
pub struct SessionsRel {
    pub table: Oid,
    pub by_id: Oid,
    pub ended_at: i16,
}

/// Everything the read path opens.
#[derive(Clone, Copy, Debug)]
pub struct Relations {
    pub tokens: TokensRel,
    pub subjects: SubjectsRel,
    pub keys: KeysRel,
    /// None in a database still on a schema before 0.3.0 (until `ALTER EXTENSION ... UPDATE`).
    pub sessions: Option<SessionsRel>,
}

impl Relations {
    fn contains(&self, relid: Oid) -> bool {
        [
            self.tokens.table,
            self.tokens.by_hash,
            self.subjects.table,
            self.subjects.by_subject,
            self.keys.table,
            self.keys.by_kid,
        ]
        .contains(&relid)
            || self
                .sessions
                .is_some_and(|s| s.table == relid || s.by_id == relid)
    }
}

thread_local! {
    static RELATIONS: Cell<Option<Relations>> = const { Cell::new(None) };
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// How many relcache invalidations of the extension's relations this backend has seen.
pub fn generation() -> u64 {
    GENERATION.get()
}

/// Drop what is known (the next `get` resolves again).
pub fn forget() {
    RELATIONS.set(None);
    GENERATION.set(GENERATION.get().wrapping_add(1));
}

/// The relations and the generation they belong to, resolving them when not known. The caller
/// opens them and compares the generation afterwards: a mismatch means they changed meanwhile.
pub fn get() -> TsResult<(Relations, u64)> {
    if !REGISTERED.get() {
        probe::register_relcache_callback(on_relcache);
        REGISTERED.set(true);
    }
    let generation = GENERATION.get();
    if let Some(r) = RELATIONS.get() {
        return Ok((r, generation));
    }
    let r = probe::resolve()?;
    // A catalog lookup may have processed invalidations; keep only what no one invalidated.
    if GENERATION.get() == generation {
        RELATIONS.set(Some(r));
    }
    Ok((r, generation))
}

/// The relcache callback: runs inside invalidation processing, so it only flips per-backend state
/// (it must neither raise nor touch the catalogs). `relid` 0 means every relation.
unsafe extern "C-unwind" fn on_relcache(_arg: Datum, relid: Oid) {
    let ours = relid == Oid::INVALID || RELATIONS.get().is_none_or(|r| r.contains(relid));
    if ours {
        forget();
    }
}
