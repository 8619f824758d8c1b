//! The worker's side of issuers: fetching each database's issuers when due, and early when a
//! verify met an unknown `kid`.
//!
//! A verify never fetches: it only marks its issuer's slot in shared memory (`ask`), at most once
//! per `issuer_min_refresh` per issuer, whatever the number of bad tokens. The purge worker of
//! the database looks at the slots every second (atomics only, no transaction) and fetches that
//! issuer once `issuer_min_refresh` has passed since its previous attempt. So a flood of random
//! `kid`s costs the provider at most one request per `issuer_min_refresh`, and the database one
//! atomic store per `issuer_min_refresh`.
//!
//! Each fetch runs outside any transaction (the network may take up to 10 s); its result is
//! written in a short transaction of its own, as the bootstrap superuser the worker connects as
//! (search_path pinned by the worker, every name schema-qualified), in a security-restricted
//! context. Not as `token_store_purge`: on PostgreSQL 15 a CREATEROLE holder can make that role
//! log in, and no role that can be made to log in may write an issuer's keys. Only a primary runs the
//! worker: a standby verifies with the keys that replicate through `token_store.issuer_keys`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory};

use crate::engine::issuers::{self, Outcome};
use crate::engine::now_secs;
use crate::storage::issuers::{self as store, FetchState};
use token_store_core::alg::Reason;
use token_store_core::jwks_fetch as rules;

/// Slots for early-fetch requests, shared by every database's issuers by hash.
const SLOTS: usize = 256;
/// The longest the worker sleeps while issuers exist, so that an early fetch starts within it.
pub const NAP: Duration = Duration::from_secs(1);
/// How often the worker reads its issuers again when nothing is due sooner.
const REREAD_S: f64 = 10.0;

/// Early-fetch requests: per slot, the hash of the issuer that asked and when (µs since epoch).
pub struct Signals {
    hash: [AtomicU64; SLOTS],
    asked_us: [AtomicI64; SLOTS],
    /// Bumped by every request, so that a worker that does not know the issuer yet (registered
    /// since its last read) reads its issuers again.
    generation: AtomicU64,
}

// SAFETY: only atomics, no pointers: valid at any address in any process.
unsafe impl PGRXSharedMemory for Signals {}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO_U64: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO_I64: AtomicI64 = AtomicI64::new(0);

impl Signals {
    const fn new() -> Self {
        Signals {
            hash: [ZERO_U64; SLOTS],
            asked_us: [ZERO_I64; SLOTS],
            generation: AtomicU64::new(0),
        }
    }
}

// SAFETY: the name is ours alone in the shared memory index.
static SHARED: pgrx::atomics::PgAtomic<Signals> =
    unsafe { pgrx::atomics::PgAtomic::new(c"token_store_issuer_signals") };

/// Verification outcomes per issuer (`ok`, then each reason), in slots found by the issuer's hash
/// (linear probing over [`PROBES`] slots; an issuer that finds none free is not counted).
pub struct IssuerCounters {
    hash: [AtomicU64; SLOTS],
    counts: [[AtomicU64; OUTCOMES]; SLOTS],
}

/// `ok` and each reason.
const OUTCOMES: usize = Reason::ALL.len() + 1;
/// Slots an issuer's counters may take, from its hash on.
const PROBES: usize = 8;

// SAFETY: only atomics, no pointers: valid at any address in any process.
unsafe impl PGRXSharedMemory for IssuerCounters {}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO_ROW: [AtomicU64; OUTCOMES] = [ZERO_U64; OUTCOMES];

impl IssuerCounters {
    const fn new() -> Self {
        IssuerCounters {
            hash: [ZERO_U64; SLOTS],
            counts: [ZERO_ROW; SLOTS],
        }
    }

    /// The slot of `h`, claimed when `claim` and none holds it yet.
    fn slot(&self, h: u64, claim: bool) -> Option<usize> {
        for k in 0..PROBES {
            let i = (h as usize).wrapping_add(k) % SLOTS;
            match self.hash[i].load(Relaxed) {
                x if x == h => return Some(i),
                0 if claim => match self.hash[i].compare_exchange(0, h, Relaxed, Relaxed) {
                    Ok(_) => return Some(i),
                    Err(x) if x == h => return Some(i),
                    Err(_) => {}
                },
                _ => {}
            }
        }
        None
    }
}

// SAFETY: the name is ours alone in the shared memory index.
static COUNTERS: pgrx::atomics::PgAtomic<IssuerCounters> =
    unsafe { pgrx::atomics::PgAtomic::new(c"token_store_issuer_counters") };

/// Reserve the slots. From `shmem::init` (preloading only).
pub fn init() {
    pg_shmem_init!(SHARED = Signals::new());
    pg_shmem_init!(COUNTERS = IssuerCounters::new());
}

/// Count one verification of a token of `issuer`. Nothing without a preloaded library.
pub fn count(issuer: &str, outcome: Result<(), Reason>) {
    if !crate::shmem::shared() {
        return;
    }
    let c = COUNTERS.get();
    if let Some(i) = c.slot(rules::issuer_hash(database(), issuer), true) {
        let j = match outcome {
            Ok(()) => 0,
            Err(r) => r.index() + 1,
        };
        c.counts[i][j].fetch_add(1, Relaxed);
    }
}

/// The verification outcomes of `issuer` in this database since the server started, as
/// `{"ok": n, "<reason>": n, ...}` (zeros without a preloaded library).
pub fn counts(issuer: &str) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let slot = crate::shmem::shared()
        .then(|| {
            COUNTERS
                .get()
                .slot(rules::issuer_hash(database(), issuer), false)
        })
        .flatten();
    let get = |j: usize| slot.map_or(0, |i| COUNTERS.get().counts[i][j].load(Relaxed));
    out.insert("ok".into(), get(0).into());
    for r in Reason::ALL {
        out.insert(r.as_str().into(), get(r.index() + 1).into());
    }
    serde_json::Value::Object(out)
}

fn database() -> u32 {
    // SAFETY: MyDatabaseId is set once a backend is connected to a database.
    u32::from(unsafe { pg_sys::MyDatabaseId })
}

fn now_us() -> i64 {
    (now_secs() * 1e6) as i64
}

/// A verify met a `kid` its issuer does not have: ask the worker to fetch that issuer early.
/// At most one store per `min_refresh_s` per issuer; nothing without a preloaded library.
pub fn ask(issuer: &str, min_refresh_s: f64) {
    if !crate::shmem::shared() {
        return;
    }
    let h = rules::issuer_hash(database(), issuer);
    let i = (h % SLOTS as u64) as usize;
    let s = SHARED.get();
    let now = now_us();
    if s.hash[i].load(Relaxed) == h
        && now - s.asked_us[i].load(Relaxed) < (min_refresh_s * 1e6) as i64
    {
        return;
    }
    s.asked_us[i].store(now, Relaxed);
    s.hash[i].store(h, Relaxed);
    s.generation.fetch_add(1, Relaxed);
}

/// When the issuer last asked for an early fetch (µs), if its slot still holds its request.
fn asked(database: u32, issuer: &str) -> Option<i64> {
    let h = rules::issuer_hash(database, issuer);
    let i = (h % SLOTS as u64) as usize;
    let s = SHARED.get();
    (s.hash[i].load(Relaxed) == h).then(|| s.asked_us[i].load(Relaxed))
}

/// The fetching state of one purge worker.
pub struct Fetcher {
    database: u32,
    states: Vec<FetchState>,
    next_read: f64,
    /// Per issuer: the latest request already taken into account, and when its early fetch may go.
    seen: HashMap<String, i64>,
    early: HashMap<String, f64>,
    /// Whether this database has issuer tables (a schema of 0.4.0 or later).
    present: bool,
    /// The requests' generation at the latest read.
    generation: u64,
    /// The role the reads and writes run as (the worker's own, a superuser), once looked up.
    role: pg_sys::Oid,
}

impl Fetcher {
    pub fn new() -> Self {
        Fetcher {
            database: database(),
            states: Vec::new(),
            next_read: 0.0,
            seen: HashMap::new(),
            early: HashMap::new(),
            present: false,
            generation: 0,
            role: pg_sys::InvalidOid,
        }
    }

    /// How long the worker may sleep before the next `tick`: short wherever issuers may be
    /// registered, so that an early-fetch request (even for an issuer registered since the last
    /// read) is seen within it.
    pub fn nap(&self) -> Duration {
        if self.present {
            NAP
        } else {
            Duration::from_secs_f64(REREAD_S)
        }
    }

    /// Fetch whatever is due. Outside any transaction.
    pub fn tick(&mut self, stop: impl Fn() -> bool) {
        let now = now_secs();
        let generation = SHARED.get().generation.load(Relaxed);
        if now >= self.next_read || generation != self.generation {
            self.generation = generation;
            let (role, states) = BackgroundWorker::transaction(|| {
                let Some(role) = worker_role().filter(|_| issuer_tables_exist()) else {
                    return (pg_sys::InvalidOid, Vec::new());
                };
                let states = crate::worker::as_role(role, store::all_states);
                (role, states.unwrap_or_else(|e| e.raise()))
            });
            self.role = role;
            self.present = role != pg_sys::InvalidOid;
            self.states = states;
            self.next_read = now + REREAD_S;
            self.seen
                .retain(|k, _| self.states.iter().any(|s| &s.issuer == k));
            self.early
                .retain(|k, _| self.states.iter().any(|s| &s.issuer == k));
        }
        let min_refresh = f64::from(crate::gucs::ISSUER_MIN_REFRESH.get().max(1));
        let mut due = Vec::new();
        for st in &self.states {
            if let Some(at) = asked(self.database, &st.issuer) {
                if self.seen.get(&st.issuer).is_none_or(|seen| at > *seen) {
                    self.seen.insert(st.issuer.clone(), at);
                    let may = st.attempted_at.map_or(now, |a| (a + min_refresh).max(now));
                    let when = self.early.get(&st.issuer).map_or(may, |w| w.min(may));
                    self.early.insert(st.issuer.clone(), when);
                }
            }
            let early = self.early.get(&st.issuer).is_some_and(|w| *w <= now);
            if st.next_fetch_at <= now || early {
                due.push(st.clone());
            }
        }
        if due.is_empty() || !self.present {
            return;
        }
        let role = self.role;
        let limits = BackgroundWorker::transaction(issuers::limits);
        for st in due {
            if stop() {
                return;
            }
            self.early.remove(&st.issuer);
            let outcome = issuers::fetch(&st, &limits);
            let failed = match &outcome {
                Outcome::Failed(e) => Some(e.clone()),
                _ => None,
            };
            let keys = match &outcome {
                Outcome::Keys { keys, .. } => Some(keys.len()),
                _ => None,
            };
            let written = BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| {
                crate::worker::as_role(role, || {
                    issuers::apply(&st, outcome)
                        .map(|(_, w)| w)
                        .unwrap_or_else(|e| e.raise())
                })
            }));
            match (failed, keys) {
                (Some(e), _) if written => log!(
                    "token_store issuers: fetching the keys of issuer \"{}\" failed ({} in a row): {e}; its last good keys stay in use for at most token_store.issuer_max_stale past their due time",
                    st.issuer,
                    st.failures + 1
                ),
                (None, Some(n)) if written => log!(
                    "token_store issuers: issuer \"{}\" now has {n} keys",
                    st.issuer
                ),
                _ => {}
            }
        }
        // read again at once: next_fetch_at moved
        self.next_read = 0.0;
    }
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

/// The role the fetch results are written as: the worker's own (the bootstrap superuser), so that
/// no role a CREATEROLE holder could log in as can plant a key. Inside a transaction.
fn worker_role() -> Option<pg_sys::Oid> {
    // SAFETY: inside a transaction; reads this backend's current user id.
    let role = unsafe { pg_sys::GetUserId() };
    (role != pg_sys::InvalidOid).then_some(role)
}

/// Whether this database has the issuer tables, as the read path resolves them (false when absent
/// or when the install is broken: the verifications then say why).
fn issuer_tables_exist() -> bool {
    // resolved and validated like every table the read path opens; a broken install has none
    matches!(crate::cache::relations::get(), Ok(r) if r.issuers.is_some())
}
