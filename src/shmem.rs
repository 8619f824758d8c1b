//! Counters for `stats()`: in shared memory when preloaded, per backend otherwise.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering::Relaxed};

use pgrx::atomics::PgAtomic;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory};

use token_store_core::alg::Reason;

/// Room for this many purge workers' pids.
pub const MAX_WORKERS: usize = 32;

/// Verification outcomes (`ok` then each reason), purge figures and worker pids.
pub struct Counters {
    ok: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
    purged_total: AtomicU64,
    last_purge_at_us: AtomicI64,
    last_purge_rows: AtomicU64,
    last_purge_us: AtomicU64,
    worker_pids: [AtomicI32; MAX_WORKERS],
    reencrypt_undecryptable: AtomicU64,
}

// SAFETY: only atomics, no pointers: valid at any address in any process.
unsafe impl PGRXSharedMemory for Counters {}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO_U64: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO_I32: AtomicI32 = AtomicI32::new(0);

impl Counters {
    const fn new() -> Self {
        Counters {
            ok: AtomicU64::new(0),
            rejected: [ZERO_U64; Reason::ALL.len()],
            purged_total: AtomicU64::new(0),
            last_purge_at_us: AtomicI64::new(0),
            last_purge_rows: AtomicU64::new(0),
            last_purge_us: AtomicU64::new(0),
            worker_pids: [ZERO_I32; MAX_WORKERS],
            reencrypt_undecryptable: AtomicU64::new(0),
        }
    }

    /// Count one verification.
    pub fn count(&self, outcome: Result<(), Reason>) {
        match outcome {
            Ok(()) => self.ok.fetch_add(1, Relaxed),
            Err(r) => self.rejected[r.index()].fetch_add(1, Relaxed),
        };
    }

    /// `(outcome, count)` for `ok` and every reason.
    pub fn outcomes(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![("ok", self.ok.load(Relaxed))];
        v.extend(
            Reason::ALL
                .iter()
                .map(|r| (r.as_str(), self.rejected[r.index()].load(Relaxed))),
        );
        v
    }

    /// Record a finished purge round.
    pub fn record_purge(&self, rows: u64, at_unix_us: i64, took_us: u64) {
        self.purged_total.fetch_add(rows, Relaxed);
        self.last_purge_at_us.store(at_unix_us, Relaxed);
        self.last_purge_rows.store(rows, Relaxed);
        self.last_purge_us.store(took_us, Relaxed);
    }

    /// Record how many rows the latest `reencrypt()` call could not decrypt.
    pub fn record_reencrypt(&self, undecryptable: u64) {
        self.reencrypt_undecryptable.store(undecryptable, Relaxed);
    }

    /// Rows the latest `reencrypt()` call could not decrypt (and so left where they were).
    pub fn reencrypt_undecryptable(&self) -> u64 {
        self.reencrypt_undecryptable.load(Relaxed)
    }

    /// `(purged_total, last_purge_at_unix_us or None, last_purge_rows, last_purge_us)`.
    pub fn purge_figures(&self) -> (u64, Option<i64>, u64, u64) {
        let at = self.last_purge_at_us.load(Relaxed);
        (
            self.purged_total.load(Relaxed),
            (at != 0).then_some(at),
            self.last_purge_rows.load(Relaxed),
            self.last_purge_us.load(Relaxed),
        )
    }

    /// Claim `slot` (a position in `token_store.databases`) for the worker `pid`; `Err(holder)`
    /// when another live worker holds it. Slots are released by `release_worker_slot`, run from the
    /// worker's exit callback; after a crash restart the whole struct is reinitialised.
    pub fn claim_worker_slot(&self, slot: usize, pid: i32) -> Result<(), i32> {
        match self.worker_pids.get(slot) {
            Some(s) => s.compare_exchange(0, pid, Relaxed, Relaxed).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Release `slot` if `pid` holds it.
    pub fn release_worker_slot(&self, slot: usize, pid: i32) {
        if let Some(s) = self.worker_pids.get(slot) {
            let _ = s.compare_exchange(pid, 0, Relaxed, Relaxed);
        }
    }

    /// Pid of the worker holding `slot`, 0 when none.
    pub fn worker_pid(&self, slot: usize) -> i32 {
        self.worker_pids.get(slot).map_or(0, |s| s.load(Relaxed))
    }

    /// Pids of running purge workers.
    pub fn worker_pids(&self) -> Vec<i32> {
        self.worker_pids
            .iter()
            .map(|p| p.load(Relaxed))
            .filter(|p| *p != 0)
            .collect()
    }
}

// SAFETY: the name is ours alone in the shared memory index.
static SHARED: PgAtomic<Counters> = unsafe { PgAtomic::new(c"token_store_counters") };
static LOCAL: Counters = Counters::new();
static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Reserve the shared counters. Only from `_PG_init` while preloading.
pub fn init() {
    pg_shmem_init!(SHARED = Counters::new());
    crate::worker_issuers::init();
    PRELOADED.store(true, Relaxed);
}

/// Whether the counters are cluster-wide (preloaded) or this backend's own.
pub fn shared() -> bool {
    PRELOADED.load(Relaxed)
}

/// The counters in force.
pub fn counters() -> &'static Counters {
    if shared() {
        SHARED.get()
    } else {
        &LOCAL
    }
}
