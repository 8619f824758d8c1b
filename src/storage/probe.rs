//! The read path's direct access to the extension's tables: no SQL, no planner, no search_path.
//!
//! A probe opens the table and one of its indexes with the locks the executor would take
//! (AccessShareLock on both, kept until the end of the transaction, as the executor does), scans
//! the index for one key under a snapshot, reads the columns it needs from the slot and closes
//! everything. Relations are found by OID (`cache::relations`), resolved in the extension's own
//! schema, never through the caller's search_path. Table privileges are not checked: the SQL
//! functions that reach this module are guarded by their EXECUTE grants (see the README).
//!
//! Every unsafe FFI call of the read path lives in this module. pgrx's `pg_sys` functions turn a
//! PostgreSQL ERROR into a Rust panic that unwinds to the `#[pg_extern]` boundary and is raised
//! again there; the transaction's abort then releases the locks, relations, slot and snapshot.

use std::ffi::CStr;

use pgrx::datum::Uuid;
use pgrx::pg_sys::{self, Datum, Oid, Relation, Snapshot, TupleTableSlot};
use pgrx::{FromDatum, IntoDatum};

use crate::cache::relations::{self, Relations};
use crate::error::{TsError, TsResult};
use crate::storage::KeyRow;

/// The extension's name in pg_extension.
const EXTENSION: &CStr = c"token_store";

/// How often a probe re-resolves the relations when they change under it before giving up.
const MAX_ATTEMPTS: usize = 4;

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_S: f64 = 946_684_800.0;

fn missing(what: &str) -> TsError {
    TsError::NotInPrerequisiteState {
        message: format!("token_store's {what} is missing"),
        hint: Some("Reinstall the extension with DROP EXTENSION and CREATE EXTENSION.".into()),
    }
}

/// The OIDs and column numbers of the extension's relations, looked up in the extension's schema.
pub fn resolve() -> TsResult<Relations> {
    // SAFETY: a syscache lookup by a NUL-terminated name; missing_ok gives InvalidOid, no ERROR.
    let ext = unsafe { pg_sys::get_extension_oid(EXTENSION.as_ptr(), true) };
    if ext == Oid::INVALID {
        return Err(TsError::NotInPrerequisiteState {
            message: "extension \"token_store\" is not installed in this database".into(),
            hint: None,
        });
    }
    let schema = extension_schema(ext);
    if schema == Oid::INVALID {
        return Err(missing("schema"));
    }
    let rel = |name: &CStr| -> TsResult<Oid> {
        // SAFETY: a syscache lookup by name and namespace OID; returns InvalidOid when absent.
        let oid = unsafe { pg_sys::get_relname_relid(name.as_ptr(), schema) };
        if oid == Oid::INVALID {
            return Err(missing(&format!("relation {}", name.to_string_lossy())));
        }
        Ok(oid)
    };
    let att = |table: Oid, name: &CStr| -> TsResult<i16> {
        // SAFETY: a syscache lookup; returns InvalidAttrNumber (0) when the column is absent.
        let n = unsafe { pg_sys::get_attnum(table, name.as_ptr()) };
        if n <= 0 {
            return Err(missing(&format!("column {}", name.to_string_lossy())));
        }
        Ok(n)
    };
    // the session tables come with 0.3.0: a database not yet updated has none
    // SAFETY: as in `rel`.
    let sessions = match unsafe { pg_sys::get_relname_relid(c"sessions".as_ptr(), schema) } {
        oid if oid == Oid::INVALID => None,
        table => Some(relations::SessionsRel {
            table,
            by_id: rel(c"sessions_pkey")?,
            ended_at: att(table, c"ended_at")?,
        }),
    };
    let tokens = rel(c"tokens")?;
    let subjects = rel(c"subject_revocations")?;
    let keys = rel(c"signing_keys")?;
    Ok(Relations {
        tokens: relations::TokensRel {
            table: tokens,
            by_hash: rel(c"tokens_token_hash_key")?,
            id: att(tokens, c"id")?,
            revoked_at: att(tokens, c"revoked_at")?,
        },
        subjects: relations::SubjectsRel {
            table: subjects,
            by_subject: rel(c"subject_revocations_pkey")?,
            revoked_before: att(subjects, c"revoked_before")?,
        },
        keys: relations::KeysRel {
            table: keys,
            by_kid: rel(c"signing_keys_pkey")?,
            kid: att(keys, c"kid")?,
            alg: att(keys, c"alg")?,
            state: att(keys, c"state")?,
            can_sign: att(keys, c"can_sign")?,
            version: att(keys, c"version")?,
            material: att(keys, c"material")?,
            key_fingerprint: att(keys, c"key_fingerprint")?,
            created_at: att(keys, c"created_at")?,
        },
        sessions,
    })
}

#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
fn extension_schema(_ext: Oid) -> Oid {
    // Before PostgreSQL 16 get_extension_schema is not exported. The control file fixes the
    // schema (schema = token_store, relocatable = false), so its name is the extension's schema.
    // SAFETY: a syscache lookup by name; missing_ok gives InvalidOid, no ERROR.
    unsafe { pg_sys::get_namespace_oid(EXTENSION.as_ptr(), true) }
}

#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
fn extension_schema(ext: Oid) -> Oid {
    // SAFETY: reads pg_extension by the OID just looked up; InvalidOid when it is gone.
    unsafe { pg_sys::get_extension_schema(ext) }
}

/// Register the relcache callback of `cache::relations`. Once per backend.
pub fn register_relcache_callback(f: unsafe extern "C-unwind" fn(Datum, Oid)) {
    // SAFETY: adds a function pointer to the backend's fixed callback table; `f` lives as long as
    // the library, which PostgreSQL never unloads.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(f), Datum::from(0usize)) }
}

/// Tell every backend (and this one, at its next command) that the keys table changed. Sent
/// with the transaction's commit, dropped with its abort; replayed on hot standbys.
pub fn keys_changed() -> TsResult<()> {
    let (rels, _) = relations::get()?;
    // SAFETY: queues a relcache invalidation message for a relation OID; raises only on OOM.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(rels.keys.table) };
    Ok(())
}

/// For the functions that write (jwt_issue, jwt_store, jwt_revoke), before they read the keys:
/// make this transaction's earlier writes of the same statement visible, as the SPI statements
/// they ran before did (a key made by `create_key` earlier in the same SELECT, say), and process
/// the invalidations those writes queued, which empties this backend's key set if the keys changed.
pub fn see_own_writes() {
    // SAFETY: CommandCounterIncrement is what SPI runs before each writing statement; the callers
    // have refused to run on a hot standby (they write), and it is a no-op when nothing was written.
    unsafe { pg_sys::CommandCounterIncrement() }
}

/// Which snapshot a probe reads under.
#[derive(Clone, Copy)]
enum Snap {
    /// The statement's (GetActiveSnapshot): what the executor would see, own writes included.
    Statement,
    /// A fresh one, taken after the locks: for caches kept past this statement (see `all_keys`).
    Latest,
}

/// Open `table` and `index` with AccessShareLock; None when either is gone or the relations
/// changed (the generation moved) while the locks were taken.
fn open_pair(table: Oid, index: Oid, generation: u64) -> Option<(Relation, Relation)> {
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    // SAFETY: try_relation_open locks the OID (processing pending invalidations) and returns NULL,
    // lock released, when no such relation exists any more.
    let heap = unsafe { pg_sys::try_relation_open(table, lock) };
    if heap.is_null() {
        return None;
    }
    // SAFETY: as above, for the index.
    let idx = unsafe { pg_sys::try_relation_open(index, lock) };
    if idx.is_null() || relations::generation() != generation {
        // SAFETY: closes what was opened just above, releasing its lock.
        unsafe {
            if !idx.is_null() {
                pg_sys::relation_close(idx, lock);
            }
            pg_sys::relation_close(heap, lock);
        }
        return None;
    }
    Some((heap, idx))
}

/// One scan of `index` over `table` (with `key` as the equality key on its first column, or every
/// entry without), calling `each` on each visible row until it returns false. Returns the
/// generation the relations were opened in.
fn scan(
    pick: impl Fn(&Relations) -> (Oid, Oid),
    key: Option<(Datum, u32)>,
    snap: Snap,
    mut each: impl FnMut(&Relations, &Row) -> bool,
) -> TsResult<u64> {
    for _ in 0..MAX_ATTEMPTS {
        let (rels, generation) = relations::get()?;
        let (table, index) = pick(&rels);
        let Some((heap, idx)) = open_pair(table, index, generation) else {
            relations::forget();
            continue;
        };
        let mut pushed = false;
        let snapshot = match snap {
            Snap::Statement => {
                // SAFETY: ActiveSnapshotSet only reads the snapshot stack.
                if !unsafe { pg_sys::ActiveSnapshotSet() } {
                    return Err(TsError::Internal("no active snapshot to read under".into()));
                }
                statement_snapshot(&mut pushed)
            }
            // SAFETY: taken after the locks; registered so it outlives any catalog access below.
            Snap::Latest => unsafe { pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot()) },
        };
        // SAFETY: heap and idx are open and locked; the slot, scan and scan key live until the
        // end of this block, which frees them in the reverse order of creation. The relations stay
        // locked (NoLock on close) until the transaction ends, as the executor keeps them.
        unsafe {
            scan_open(heap, idx, snapshot, key, |slot| each(&rels, &Row(slot)));
            pg_sys::relation_close(idx, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::relation_close(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
            if let Snap::Latest = snap {
                pg_sys::UnregisterSnapshot(snapshot);
            }
            if pushed {
                pg_sys::PopActiveSnapshot();
            }
        }
        return Ok(generation);
    }
    Err(TsError::Internal(
        "token_store's tables kept changing while being opened".into(),
    ))
}

/// The statement's snapshot, as a query in a volatile function would read under it: when this
/// statement has written (`jwt_verify(jwt_issue(...))`, a `session_refresh` in the same SELECT),
/// SPI made those rows under later command ids, so the command counter is advanced and a copy of
/// the snapshot at the current command id is pushed (`*pushed`; the caller pops it), as SPI does
/// before each statement. Otherwise, the common case, the active snapshot itself.
fn statement_snapshot(pushed: &mut bool) -> Snapshot {
    // SAFETY: CommandCounterIncrement is a no-op unless this transaction wrote under the current
    // command id (never on a hot standby); the active snapshot stack is not empty (checked by the
    // caller) and a pushed copy is popped by the caller after its scan.
    unsafe {
        pg_sys::CommandCounterIncrement();
        let active = pg_sys::GetActiveSnapshot();
        if (*active).curcid == pg_sys::GetCurrentCommandId(false) {
            return active;
        }
        pg_sys::PushCopiedSnapshot(active);
        pg_sys::UpdateActiveSnapshotCommandId();
        *pushed = true;
        pg_sys::GetActiveSnapshot()
    }
}

/// The index scan proper, on open relations.
///
/// # Safety
/// `heap` and `idx` are open, `idx` is a btree index of `heap`, and `snapshot` is valid for the
/// call. `key`'s procedure is the equality function of the index's first column type.
unsafe fn scan_open(
    heap: Relation,
    idx: Relation,
    snapshot: Snapshot,
    key: Option<(Datum, u32)>,
    mut each: impl FnMut(*mut TupleTableSlot) -> bool,
) {
    let nkeys = i32::from(key.is_some());
    // SAFETY: the caller's contract; a slot of the table's own type, freed below.
    let slot = unsafe { pg_sys::table_slot_create(heap, std::ptr::null_mut()) };
    #[cfg(not(feature = "pg18"))]
    // SAFETY: the caller's contract.
    let desc = unsafe { pg_sys::index_beginscan(heap, idx, snapshot, nkeys, 0) };
    #[cfg(feature = "pg18")]
    // SAFETY: the caller's contract; no instrumentation.
    let desc =
        unsafe { pg_sys::index_beginscan(heap, idx, snapshot, std::ptr::null_mut(), nkeys, 0) };
    let mut skey = pg_sys::ScanKeyData::default();
    if let Some((arg, procedure)) = key {
        // SAFETY: an equality key on the index's first column, compared under the index's own
        // collation (a text index may use a non-C one; the btree positions with it).
        unsafe {
            let collation = *(*idx).rd_indcollation;
            pg_sys::ScanKeyEntryInitialize(
                &mut skey,
                0,
                1,
                pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                Oid::INVALID,
                collation,
                pg_sys::Oid::from(procedure),
                arg,
            );
        }
    }
    let keys: *mut pg_sys::ScanKeyData = if nkeys == 1 {
        &mut skey
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: desc was begun above for nkeys keys; keys points at that many.
    unsafe { pg_sys::index_rescan(desc, keys, nkeys, std::ptr::null_mut(), 0) };
    // SAFETY: desc and slot are live; a visible row is stored in the slot.
    while unsafe {
        pg_sys::index_getnext_slot(desc, pg_sys::ScanDirection::ForwardScanDirection, slot)
    } {
        if !each(slot) {
            break;
        }
    }
    // SAFETY: ends the scan and frees the slot made above, once each.
    unsafe {
        pg_sys::index_endscan(desc);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
    }
}

/// A row in a scan's slot, read column by column (values are copied out, detoasted as needed).
struct Row(*mut TupleTableSlot);

impl Row {
    fn get<T: FromDatum>(&self, attnum: i16) -> Option<T> {
        let mut isnull = false;
        // SAFETY: the slot holds a row of the scanned table for as long as this Row is lent to
        // `each`; attnum comes from get_attnum on that table; FromDatum copies the value.
        unsafe {
            let datum = pg_sys::slot_getattr(self.0, i32::from(attnum), &mut isnull);
            T::from_datum(datum, isnull)
        }
    }

    fn is_null(&self, attnum: i16) -> bool {
        let mut isnull = false;
        // SAFETY: as in `get`; only the null flag is used.
        unsafe { pg_sys::slot_getattr(self.0, i32::from(attnum), &mut isnull) };
        isnull
    }
}

fn epoch_secs(pg_micros: i64) -> f64 {
    pg_micros as f64 / 1e6 + PG_EPOCH_OFFSET_S
}

/// The stored row of a token hash, under the statement's snapshot: its id and whether revoked.
pub fn token_row(hash: &[u8; 32]) -> TsResult<Option<([u8; 16], bool)>> {
    let arg = hash.as_slice().into_datum().expect("bytea datum");
    let mut found = None;
    scan(
        |r| (r.tokens.table, r.tokens.by_hash),
        Some((arg, pg_sys::F_BYTEAEQ)),
        Snap::Statement,
        |r, row| {
            let id = row.get::<Uuid>(r.tokens.id).map(|u| *u.as_bytes());
            found = id.map(|id| (id, !row.is_null(r.tokens.revoked_at)));
            false
        },
    )?;
    Ok(found)
}

/// When `subject` was revoked (epoch seconds), under the statement's snapshot.
pub fn subject_revoked_before(subject: &str) -> TsResult<Option<f64>> {
    let arg = subject.into_datum().expect("text datum");
    let mut found = None;
    scan(
        |r| (r.subjects.table, r.subjects.by_subject),
        Some((arg, pg_sys::F_TEXTEQ)),
        Snap::Statement,
        |r, row| {
            found = row.get::<i64>(r.subjects.revoked_before).map(epoch_secs);
            false
        },
    )?;
    Ok(found)
}

/// Whether the session `id` has ended, under the statement's snapshot; false when no such session
/// exists (a `sid` of another issuer) or the database has no session tables yet.
pub fn session_ended(id: [u8; 16]) -> TsResult<bool> {
    let (rels, _) = relations::get()?;
    let Some(sessions) = rels.sessions else {
        return Ok(false);
    };
    let arg = Uuid::from_bytes(id).into_datum().expect("uuid datum");
    let mut ended = false;
    scan(
        |r| {
            // the generation check in `scan` re-resolves if the sessions table went away meanwhile
            let s = r.sessions.unwrap_or(sessions);
            (s.table, s.by_id)
        },
        Some((arg, pg_sys::F_UUID_EQ)),
        Snap::Statement,
        |r, row| {
            ended = r.sessions.is_some_and(|s| !row.is_null(s.ended_at));
            false
        },
    )?;
    Ok(ended)
}

/// Every key row with its creation time (microseconds since 2000), under a snapshot taken after
/// the table is locked, and the relations generation it was read in: a cache of these rows is
/// current until that generation moves (a commit after the snapshot sends an invalidation this
/// backend has not processed yet; one before it is visible in the snapshot).
pub fn all_keys() -> TsResult<(Vec<(KeyRow, i64)>, u64)> {
    let mut out = Vec::new();
    let generation = scan(
        |r| (r.keys.table, r.keys.by_kid),
        None,
        Snap::Latest,
        |r, row| {
            let k = &r.keys;
            let text = |n| row.get::<String>(n).unwrap_or_default();
            out.push((
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
            ));
            true
        },
    )?;
    Ok((out, generation))
}
