//! Scan primitives of the read path: open a table and one of its indexes by OID, scan the index
//! under the active snapshot, read columns from the slot, close. No SQL, no planner, no
//! search_path, no command-counter bump, no new snapshot: all of it works in a parallel worker and
//! on a hot standby. What to open (and its validation) comes from `cache::relations`; the typed
//! reads built on these primitives are in `storage::direct`.
//!
//! A probe locks the table and index with AccessShareLock, as the executor would, and keeps the
//! locks until the transaction ends. Its scan allocates in a memory context of its own, reset after
//! each probe, so nothing of a scan (scan descriptors, detoasted copies) outlives it. Table
//! privileges and row-level security are not checked: the SQL functions that reach this module are
//! guarded by their EXECUTE grants (see the README).
//!
//! pgrx's `pg_sys` functions turn a PostgreSQL ERROR into a Rust panic that unwinds to the
//! `#[pg_extern]` boundary and is raised again there; the (sub)transaction's abort then releases
//! the locks, relations, buffer pins and slot.

use std::cell::Cell;

use pgrx::pg_sys::{self, Datum, MemoryContext, Relation, Snapshot, TransactionId, TupleTableSlot};
use pgrx::FromDatum;

use crate::cache::relations::{self, Probed, Relations};
use crate::error::{TsError, TsResult};

/// How often a probe opens its relations again when they were replaced while it locked them.
const MAX_ATTEMPTS: usize = 100;

thread_local! {
    static PROBE_CONTEXT: Cell<MemoryContext> = const { Cell::new(std::ptr::null_mut()) };
}

/// The active snapshot: what a plain SELECT in the calling statement reads under. Err when there is
/// none (checked before anything is opened).
fn active_snapshot() -> TsResult<Snapshot> {
    // SAFETY: both only read the backend's snapshot stack.
    unsafe {
        if !pg_sys::ActiveSnapshotSet() {
            return Err(TsError::Internal("no active snapshot to read under".into()));
        }
        Ok(pg_sys::GetActiveSnapshot())
    }
}

/// The identity of what the active snapshot sees of the tables: the same View, the same rows.
///
/// Two MVCC snapshots with equal xmin, xmax, in-progress lists and command id see the same rows of
/// other transactions (that is PostgreSQL's own condition for reusing a snapshot). This backend's
/// own rows add to that only once its transaction has an xid: then the View also names the
/// transaction (its local id) and subtransaction, so a rolled-back subtransaction, or a commit of
/// rows written after the snapshot's command id, gives another View. Caches of what the key rows
/// were (`cache::signing_keys`) are kept per View.
#[derive(Clone, PartialEq, Debug)]
pub struct View {
    /// (local transaction id, subtransaction id) when this transaction has an xid.
    own: Option<(u32, u32)>,
    relations: u64,
    xmin: TransactionId,
    xmax: TransactionId,
    curcid: u32,
    xip: Vec<TransactionId>,
    subxip: Vec<TransactionId>,
    suboverflowed: bool,
    recovery: bool,
}

/// The `own` part of a View.
fn own_writes() -> Option<(u32, u32)> {
    // SAFETY: reads this backend's transaction state.
    let xid = unsafe { pg_sys::GetTopTransactionIdIfAny() };
    if xid == TransactionId::INVALID {
        return None;
    }
    // SAFETY: as above.
    Some((local_xid(), unsafe { pg_sys::GetCurrentSubTransactionId() }))
}

fn local_xid() -> u32 {
    // SAFETY: MyProc is this backend's PGPROC, set before any SQL function can run.
    #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
    let lxid = unsafe { (*pg_sys::MyProc).lxid };
    // SAFETY: as above.
    #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
    let lxid = unsafe { (*pg_sys::MyProc).vxid.lxid };
    lxid
}

/// # Safety
/// `s` is a valid snapshot.
unsafe fn slices<'a>(s: Snapshot) -> (&'a [TransactionId], &'a [TransactionId]) {
    // SAFETY: the caller's contract; xip holds xcnt entries, subxip subxcnt (either may be NULL
    // when empty).
    unsafe {
        let part = |p: *mut TransactionId, n: usize| {
            if p.is_null() || n == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(p, n)
            }
        };
        (
            part((*s).xip, (*s).xcnt as usize),
            part((*s).subxip, usize::try_from((*s).subxcnt).unwrap_or(0)),
        )
    }
}

impl View {
    /// The View of the active snapshot; None when it is not an MVCC snapshot (nothing is cached).
    pub fn current() -> TsResult<Option<View>> {
        let s = active_snapshot()?;
        // SAFETY: s is the active snapshot, valid during this call.
        unsafe {
            if (*s).snapshot_type != pg_sys::SnapshotType::SNAPSHOT_MVCC {
                return Ok(None);
            }
            let (xip, subxip) = slices(s);
            Ok(Some(View {
                own: own_writes(),
                relations: relations::generation(),
                xmin: (*s).xmin,
                xmax: (*s).xmax,
                curcid: (*s).curcid,
                xip: xip.to_vec(),
                subxip: subxip.to_vec(),
                suboverflowed: (*s).suboverflowed,
                recovery: (*s).takenDuringRecovery,
            }))
        }
    }

    /// Whether the active snapshot still has this View (compared in place: no allocation).
    pub fn is_current(&self) -> bool {
        let Ok(s) = active_snapshot() else {
            return false;
        };
        // SAFETY: s is the active snapshot, valid during this call.
        unsafe {
            if (*s).snapshot_type != pg_sys::SnapshotType::SNAPSHOT_MVCC {
                return false;
            }
            let (xip, subxip) = slices(s);
            self.xmin == (*s).xmin
                && self.xmax == (*s).xmax
                && self.curcid == (*s).curcid
                && self.relations == relations::generation()
                && self.own == own_writes()
                && self.suboverflowed == (*s).suboverflowed
                && self.recovery == (*s).takenDuringRecovery
                && self.xip == xip
                && self.subxip == subxip
        }
    }
}

/// For the functions that write (jwt_issue, jwt_store, jwt_revoke, session_start), while they
/// read: a snapshot taken at the current command, as SPI takes one before each statement of a
/// volatile function, so they see what this transaction wrote earlier, in the same statement too
/// (a key made by `create_key` in the same SELECT). Popped when dropped; an ERROR leaves it to the
/// (sub)transaction's abort, which pops it.
pub struct WriterSnapshot(());

impl WriterSnapshot {
    /// Push it. Only in functions that write: they are PARALLEL UNSAFE and refused on a standby.
    pub fn push() -> WriterSnapshot {
        // SAFETY: CommandCounterIncrement and a pushed copy of the transaction snapshot at the new
        // command id are what SPI does before each statement of a volatile function; the copy is
        // this stack entry's own (PushActiveSnapshot copies the static transaction snapshot), as
        // UpdateActiveSnapshotCommandId requires.
        unsafe {
            pg_sys::CommandCounterIncrement();
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            pg_sys::UpdateActiveSnapshotCommandId();
        }
        WriterSnapshot(())
    }
}

impl Drop for WriterSnapshot {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: pops the entry pushed by `push`; everything pushed above it was popped by
            // its own pusher (SPI) before returning.
            unsafe { pg_sys::PopActiveSnapshot() }
        }
    }
}

/// The probe's memory context (a child of TopMemoryContext), made on first use.
fn probe_context() -> MemoryContext {
    let cxt = PROBE_CONTEXT.get();
    if !cxt.is_null() {
        return cxt;
    }
    // SAFETY: creates a context under TopMemoryContext, which lives as long as the backend; the
    // name is a static string, as AllocSetContextCreate requires.
    let cxt = unsafe {
        pg_sys::AllocSetContextCreateInternal(
            pg_sys::TopMemoryContext,
            c"token_store probe".as_ptr(),
            0,
            8 * 1024,
            8 * 1024 * 1024,
        )
    };
    PROBE_CONTEXT.set(cxt);
    cxt
}

/// Switches CurrentMemoryContext to the probe's context and back (also when an ERROR unwinds
/// through), and resets the probe's context when done.
struct InProbeContext(MemoryContext);

impl InProbeContext {
    fn enter() -> Self {
        let cxt = probe_context();
        // SAFETY: a plain swap of the current memory context; restored by Drop.
        unsafe {
            let old = pg_sys::CurrentMemoryContext;
            pg_sys::CurrentMemoryContext = cxt;
            InProbeContext(old)
        }
    }
}

impl Drop for InProbeContext {
    fn drop(&mut self) {
        // SAFETY: restores the context saved by `enter`; the probe's context holds nothing used
        // after the probe (values were copied out), so it is reset, unless an ERROR is unwinding
        // (then the next probe's reset frees what was left).
        unsafe {
            let cxt = pg_sys::CurrentMemoryContext;
            pg_sys::CurrentMemoryContext = self.0;
            if !std::thread::panicking() && cxt == PROBE_CONTEXT.get() {
                pg_sys::MemoryContextReset(cxt);
            }
        }
    }
}

/// An open table and index, closed (locks kept until the transaction ends, as the executor keeps
/// them) when dropped, unless an ERROR is unwinding: then the abort releases them.
struct Opened(Relation, Relation);

impl Drop for Opened {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: both were opened by `open` and are closed once, here.
            unsafe {
                pg_sys::relation_close(self.1, pg_sys::NoLock as pg_sys::LOCKMODE);
                pg_sys::relation_close(self.0, pg_sys::NoLock as pg_sys::LOCKMODE);
            }
        }
    }
}

/// Open `p`'s table and index with AccessShareLock; None when either is gone.
fn open(p: &Probed) -> Option<Opened> {
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    // SAFETY: try_relation_open locks the OID (taking in pending invalidations) and returns NULL,
    // lock released, when no such relation exists any more.
    let heap = unsafe { pg_sys::try_relation_open(p.table, lock) };
    if heap.is_null() {
        return None;
    }
    // SAFETY: as above, for the index.
    let idx = unsafe { pg_sys::try_relation_open(p.index, lock) };
    if idx.is_null() {
        // SAFETY: closes the table opened just above; its lock stays, as for any probe.
        unsafe { pg_sys::relation_close(heap, pg_sys::NoLock as pg_sys::LOCKMODE) };
        return None;
    }
    Some(Opened(heap, idx))
}

/// One scan of the index `pick` names (with `key` as the equality key on its first column, or every
/// entry without), under the active snapshot, calling `each` on each visible row until it returns
/// false.
///
/// The relations are those of the current resolution. When an invalidation of one of them was
/// taken in while they were being locked, they are resolved and validated again (with the locks
/// now held, nothing can alter them any more): the scan goes on when that resolution names what
/// was opened, and opens the new relations when they were replaced. Invalidations alone never
/// fail a probe.
pub fn scan(
    pick: impl Fn(&Relations) -> Option<Probed>,
    key: Option<Datum>,
    mut each: impl FnMut(&Relations, &Row) -> bool,
) -> TsResult<()> {
    let snapshot = active_snapshot()?;
    for _ in 0..MAX_ATTEMPTS {
        let mut rels = relations::get()?;
        let Some(p) = pick(&rels) else {
            return Ok(());
        };
        let generation = relations::generation();
        let Some(opened) = open(&p) else {
            relations::forget();
            continue;
        };
        if relations::generation() != generation {
            let fresh = relations::get()?;
            if pick(&fresh) != Some(p) {
                continue;
            }
            rels = fresh;
        }
        let _cxt = InProbeContext::enter();
        // SAFETY: the relations are open and locked and were validated as a btree index of that
        // table whose first column takes `key` with `p.eq_proc`; the snapshot is the active one.
        unsafe {
            scan_open(&opened, snapshot, key.map(|k| (k, &p)), |slot| {
                each(&rels, &Row(slot))
            })
        };
        return Ok(());
    }
    Err(TsError::Internal(
        "token_store's tables kept being replaced while being opened".into(),
    ))
}

/// The index scan proper, on open relations.
///
/// # Safety
/// The relations are open, the index is a btree index of the table, and `snapshot` is valid for
/// the call. `key`'s procedure and collation are the index's equality for its first column.
unsafe fn scan_open(
    opened: &Opened,
    snapshot: Snapshot,
    key: Option<(Datum, &Probed)>,
    mut each: impl FnMut(*mut TupleTableSlot) -> bool,
) {
    let (heap, idx) = (opened.0, opened.1);
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
    if let Some((arg, p)) = key {
        // SAFETY: an equality key on the index's first column, with the procedure and collation
        // taken from the index itself (see cache::relations).
        unsafe {
            pg_sys::ScanKeyEntryInitialize(
                &mut skey,
                0,
                1,
                pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                pg_sys::Oid::INVALID,
                p.collation,
                p.eq_proc,
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
pub struct Row(*mut TupleTableSlot);

impl Row {
    /// Column `attnum` (validated for its type by `cache::relations`), copied out; None when NULL.
    pub fn get<T: FromDatum>(&self, attnum: i16) -> Option<T> {
        let mut isnull = false;
        // SAFETY: the slot holds a row of the scanned table for as long as this Row is lent to
        // `each`; attnum and its type were validated on that table; FromDatum copies the value.
        unsafe {
            let datum = pg_sys::slot_getattr(self.0, i32::from(attnum), &mut isnull);
            T::from_datum(datum, isnull)
        }
    }

    /// Whether column `attnum` is NULL.
    pub fn is_null(&self, attnum: i16) -> bool {
        let mut isnull = false;
        // SAFETY: as in `get`; only the null flag is used.
        unsafe { pg_sys::slot_getattr(self.0, i32::from(attnum), &mut isnull) };
        isnull
    }
}
