//! The purge background workers, primary only.
//!
//! A static *launcher* ("token_store launcher") starts once recovery has finished, so never on a
//! hot standby, and at once when a standby is promoted. It connects to no database: it looks each
//! name of `token_store.databases` up in the shared catalog `pg_database` and starts one dynamic
//! *purge worker* ("token_store purge") in each database that exists and accepts connections. A
//! database that does not exist (yet) is said once in the log and looked up again at every wake
//! of the launcher (every `purge_interval`, at least every second, at most every 10 s), so creating
//! it later is enough. A purge worker that stops (pg_terminate_backend, an error, its database
//! dropped) is started again 5 s later, backing off up to a minute while it keeps stopping soon
//! after its start.
//!
//! A purge worker connects as the bootstrap superuser (a background worker of PostgreSQL 15 cannot
//! log in as a NOLOGIN role), pins `search_path` to `pg_catalog, pg_temp` before any SQL, at a
//! level no database or role setting overrides, and does every transaction of a round as the
//! NOLOGIN role `token_store_purge` in a restricted security context. The owner of a purged
//! database can set its `search_path` and create functions and operators: none of them may ever
//! run with the worker's privileges. A database where that role is missing or lacks its grants is
//! said once in the log and waited on, like one without the extension.
//!
//! Each purge worker holds its database's slot (its position in the list) in shared memory: its
//! pid there feeds `stats()`, and lets a restarted launcher adopt the workers still running
//! instead of starting second ones. Purge workers are registered without a postmaster restart
//! time: after a crash restart the postmaster forgets them, and the launcher starts them anew.

use std::ffi::CString;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

use crate::{engine, gucs, shmem, storage};

const LAUNCHER_TYPE: &str = "token_store launcher";
const PURGE_TYPE: &str = "token_store purge";
/// Postmaster restart time of the launcher, and first delay before a purge worker is restarted.
const RESTART_DELAY: Duration = Duration::from_secs(5);
/// Longest delay before a purge worker that keeps failing at once is restarted.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
/// A purge worker that stops sooner than this after its start counts as failing at once.
const QUICK_FAILURE: Duration = Duration::from_secs(10);
/// Longest sleep of the launcher between two looks at its databases.
const MAX_NAP: Duration = Duration::from_secs(10);
/// NAMEDATALEN - 1: longer names cannot be database names.
const MAX_DB_NAME: usize = 63;
/// The role a purge worker acts as while purging; created (NOLOGIN) by the extension.
const PURGE_ROLE: &std::ffi::CStr = c"token_store_purge";

/// Register the launcher. Called from `_PG_init` while preloading.
pub fn register() {
    if configured().0.is_empty() {
        return;
    }
    BackgroundWorkerBuilder::new(LAUNCHER_TYPE)
        .set_type(LAUNCHER_TYPE)
        .set_library("token_store")
        .set_function("token_store_launcher_main")
        .enable_spi_access()
        // RecoveryFinished: never on a standby, and started when one is promoted.
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART_DELAY))
        .load();
}

/// The databases of `token_store.databases` in order, without duplicates, at most one per shared
/// memory slot; and a warning for each name left out.
fn configured() -> (Vec<String>, Vec<String>) {
    let setting = gucs::nonempty(&gucs::DATABASES).unwrap_or_default();
    let mut names: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    for name in setting.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if names.iter().any(|n| n == name) {
            continue;
        }
        if name.len() > MAX_DB_NAME {
            warnings.push(format!(
                "token_store.databases: \"{name}\" is longer than {MAX_DB_NAME} bytes, so not a database name; ignored"
            ));
        } else if names.len() == shmem::MAX_WORKERS {
            warnings.push(format!(
                "token_store.databases: more than {} databases; \"{name}\" gets no purge worker",
                shmem::MAX_WORKERS
            ));
        } else {
            names.push(name.to_owned());
        }
    }
    (names, warnings)
}

fn report_activity(state: pg_sys::BackendState::Type, what: &str) {
    let c = CString::new(what).expect("no NUL in our own text");
    // SAFETY: a worker with a backend entry may report its activity; the string is copied.
    unsafe { pg_sys::pgstat_report_activity(state, c.as_ptr()) };
}

/// Set `application_name`, shown in pg_stat_activity and by `%a` in log_line_prefix.
fn set_application_name(name: &str) {
    let value = CString::new(name).expect("no NUL in a database name");
    // SAFETY: outside any transaction, so the value stays for the life of the process; both
    // strings are copied by the GUC machinery.
    unsafe {
        pg_sys::SetConfigOption(
            c"application_name".as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        )
    };
}

fn shutdown_requested() -> bool {
    // SAFETY: a sig_atomic_t flag written only by our signal handler.
    unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0 }
}

/// Apply a reload (SIGHUP) if one is pending. Outside any transaction.
fn reload_if_asked() {
    if BackgroundWorker::sighup_received() {
        // SAFETY: a sig_atomic_t flag also set by our SIGHUP handler; cleared before reading the
        // files so that a reload asked for meanwhile is not lost.
        unsafe { std::ptr::write_volatile(&raw mut pg_sys::ConfigReloadPending, 0) };
        // SAFETY: the documented way for a worker to apply a reload, outside any transaction.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}

fn my_pid() -> i32 {
    // SAFETY: MyProcPid is set for every backend before its main function runs.
    unsafe { pg_sys::MyProcPid }
}

// ---- the launcher ---------------------------------------------------------------------------

/// What a look-up in pg_database found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Found {
    Ready,
    Missing,
    NoConnections,
    Invalid,
}

/// What the launcher last told the log about a database that has no worker.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Said {
    Found(Found),
    NoRoom,
}

/// Whether each database of `names` can take a purge worker. Inside a transaction.
///
/// A sequential scan of pg_database, as the autovacuum launcher does: a process connected to no
/// database may read the shared catalogs, but not always their indexes (their relcache entries
/// are built from pg_class, a per-database catalog), so no get_database_oid or syscache look-up.
fn look_up(names: &[String]) -> Vec<Found> {
    let mut found = vec![Found::Missing; names.len()];
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    // SAFETY: inside a transaction (a catalog snapshot is taken by the scan); pg_database is a
    // shared catalog with a heap table; each tuple starts with FormData_pg_database (its
    // fixed-width columns, datname a NUL-terminated NameData), read before the next
    // heap_getnext; the scan and the relation are closed before returning.
    unsafe {
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, lock);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            let name = std::ffi::CStr::from_ptr((*form).datname.data.as_ptr());
            let Some(i) = names.iter().position(|n| n.as_bytes() == name.to_bytes()) else {
                continue;
            };
            found[i] = if (*form).datconnlimit == -2 {
                // DATCONNLIMIT_INVALID_DB: a DROP DATABASE was interrupted; no connection is allowed
                Found::Invalid
            } else if !(*form).datallowconn {
                Found::NoConnections
            } else {
                Found::Ready
            };
        }
        pg_sys::heap_endscan(scan);
        pg_sys::table_close(rel, lock);
    }
    found
}

/// A configured database as the launcher tends it.
struct Db {
    slot: usize,
    name: String,
    /// The purge worker this launcher started, until it stops.
    worker: Option<DynamicBackgroundWorker>,
    started_at: Option<Instant>,
    /// A worker started by an earlier launcher, seen by its pid in the shared slot.
    adopted: bool,
    /// No start before this.
    not_before: Instant,
    /// Stops in a row that came soon after the start.
    quick_failures: u32,
    said: Option<Said>,
}

enum Look {
    Running,
    Wait(Duration),
    Due,
}

impl Db {
    fn new(slot: usize, name: String, now: Instant) -> Self {
        Db {
            slot,
            name,
            worker: None,
            started_at: None,
            adopted: false,
            not_before: now,
            quick_failures: 0,
            said: None,
        }
    }

    fn look(&mut self, now: Instant) -> Look {
        if let Some(w) = &self.worker {
            match w.pid() {
                Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted) => return Look::Running,
                Err(BackgroundWorkerStatus::PostmasterDied) => {
                    // SAFETY: proc_exit runs the exit callbacks and never returns.
                    unsafe { pg_sys::proc_exit(1) }
                }
                Err(_) => {
                    self.worker = None;
                    self.stopped(now);
                }
            }
        }
        if shmem::counters().worker_pid(self.slot) != 0 {
            self.adopted = true;
            return Look::Running;
        }
        if self.adopted {
            self.adopted = false;
            self.stopped(now);
        }
        if now < self.not_before {
            Look::Wait(self.not_before - now)
        } else {
            Look::Due
        }
    }

    fn stopped(&mut self, now: Instant) {
        let quick = self
            .started_at
            .take()
            .is_some_and(|t| now.duration_since(t) < QUICK_FAILURE);
        self.quick_failures = if quick { self.quick_failures + 1 } else { 0 };
        // 5 s, and while it keeps stopping soon after its start: 10 s, 20 s, 40 s, then 1 min
        let delay = RESTART_DELAY
            .saturating_mul(1 << self.quick_failures.saturating_sub(1).min(4))
            .min(MAX_RESTART_DELAY);
        self.not_before = now + delay;
        if !shutdown_requested() {
            log!(
                "token_store launcher: the purge worker of database \"{}\" stopped; starting it again in {} s",
                self.name,
                delay.as_secs()
            );
        }
    }

    fn say(&mut self, said: Said) {
        if self.said == Some(said) {
            return;
        }
        self.said = Some(said);
        let db = &self.name;
        match said {
            Said::Found(Found::Missing) => log!(
                "token_store launcher: database \"{db}\" of token_store.databases does not exist; its purge worker starts once it is created"
            ),
            Said::Found(Found::NoConnections) => log!(
                "token_store launcher: database \"{db}\" does not allow connections; its purge worker starts once it does"
            ),
            Said::Found(Found::Invalid) => log!(
                "token_store launcher: database \"{db}\" is invalid (an interrupted DROP DATABASE); no purge worker"
            ),
            Said::Found(Found::Ready) => {}
            Said::NoRoom => ErrorReport::new(
                PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                format!("token_store launcher: no background worker slot free for the purge worker of database \"{db}\""),
                "token_store",
            )
            .set_hint("Raise max_worker_processes: token_store needs one for its launcher and one per database of token_store.databases.")
            .report(PgLogLevel::WARNING),
        }
    }

    /// Start this database's purge worker, or say why not. Outside any transaction.
    fn start(&mut self, found: Found, now: Instant) {
        if found != Found::Ready {
            self.quick_failures = 0;
            self.say(Said::Found(found));
            return;
        }
        let builder = BackgroundWorkerBuilder::new(&format!("{PURGE_TYPE} {}", self.name))
            .set_type(PURGE_TYPE)
            .set_library("token_store")
            .set_function("token_store_purge_main")
            .set_argument(Some(pg_sys::Datum::from(self.slot)))
            .set_extra(&self.name)
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            // never restarted by the postmaster: this launcher does it (and a crash forgets it)
            .set_restart_time(None)
            .set_notify_pid(my_pid());
        // SAFETY: the handle is allocated in the current memory context; TopMemoryContext keeps
        // it for the life of the launcher (a handle is 16 bytes; one is left per restart).
        let loaded =
            unsafe { PgMemoryContexts::TopMemoryContext.switch_to(|_| builder.load_dynamic()) };
        match loaded {
            Ok(w) => {
                self.worker = Some(w);
                self.started_at = Some(now);
                self.said = None;
            }
            Err(_) => {
                self.say(Said::NoRoom);
                self.not_before = now + RESTART_DELAY;
            }
        }
    }
}

/// How long the launcher sleeps between two looks at its databases.
fn launcher_nap() -> Duration {
    match gucs::PURGE_INTERVAL.get() {
        i if i <= 0 => MAX_NAP,
        i => Duration::from_secs(i as u64).clamp(Duration::from_secs(1), MAX_NAP),
    }
}

/// Entry point of the launcher.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn token_store_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: pg_database is a shared catalog, and the launcher reads nothing else.
    BackgroundWorker::connect_worker_to_spi(None, None);
    set_application_name(LAUNCHER_TYPE);
    let (names, warnings) = configured();
    for w in &warnings {
        warning!("{w}");
    }
    log!(
        "token_store launcher started: purge workers for {}",
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let start = Instant::now();
    let mut dbs: Vec<Db> = names
        .iter()
        .enumerate()
        .map(|(slot, name)| Db::new(slot, name.clone(), start))
        .collect();

    while !shutdown_requested() {
        reload_if_asked();
        let now = Instant::now();
        let mut nap = launcher_nap();
        let mut due = Vec::new();
        for (i, db) in dbs.iter_mut().enumerate() {
            match db.look(now) {
                Look::Running => {}
                Look::Wait(w) => nap = nap.min(w),
                Look::Due => due.push(i),
            }
        }
        if !due.is_empty() {
            let wanted: Vec<String> = due.iter().map(|&i| dbs[i].name.clone()).collect();
            report_activity(
                pg_sys::BackendState::STATE_RUNNING,
                "looking up databases in pg_database",
            );
            let found: Vec<Found> = BackgroundWorker::transaction(move || look_up(&wanted));
            for (i, f) in due.into_iter().zip(found) {
                if !shutdown_requested() {
                    dbs[i].start(f, now);
                }
            }
        }
        report_activity(
            pg_sys::BackendState::STATE_IDLE,
            "idle: watching the purge workers",
        );
        if !BackgroundWorker::wait_latch(Some(nap)) {
            break;
        }
    }
    // Exit code 1: the postmaster starts the launcher again after RESTART_DELAY (after
    // pg_terminate_backend, say); at shutdown nothing restarts. The purge workers keep running,
    // and the next launcher adopts them.
    // SAFETY: proc_exit runs the backend's exit callbacks and never returns.
    unsafe { pg_sys::proc_exit(1) };
}

// ---- a purge worker -------------------------------------------------------------------------

/// Pin `search_path` for the life of the worker, as autovacuum does: PGC_S_OVERRIDE outranks the
/// database's and the role's settings (already applied at connection), the configuration file and
/// SET, so no name in the worker's SQL can resolve to an object a database owner created.
fn pin_search_path() {
    // SAFETY: outside any transaction, before any SQL; the check hook of search_path only parses
    // the list; both strings are NUL-terminated constants, copied by the GUC machinery.
    unsafe {
        pg_sys::SetConfigOption(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        )
    };
}

/// Run `body` as `role` in a restricted security context (no SET ROLE, no temporary objects, no
/// cursors or settings that outlive it), then switch back. Inside a transaction: its abort, should
/// `body` fail, restores the user and context it started with.
fn as_role<R>(role: pg_sys::Oid, body: impl FnOnce() -> R) -> R {
    let mut user = pg_sys::InvalidOid;
    let mut context: std::ffi::c_int = 0;
    // SAFETY: both pointers are to locals that outlive the call.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
    let restricted = (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION)
        as std::ffi::c_int;
    // SAFETY: inside a transaction (StartTransaction saved the user and context to restore on
    // abort); `role` is the oid of an existing role, looked up in this transaction.
    unsafe { pg_sys::SetUserIdAndSecContext(role, context | restricted) };
    let result = body();
    // SAFETY: puts back the user and context read above, still inside the same transaction.
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    result
}

/// Why a purge worker cannot purge its database now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NotReady {
    NoExtension,
    NoRole,
    SuperuserRole,
    NoPrivileges,
}

/// The role to purge as, or why not. Catalog look-ups only, except the privilege check, which runs
/// as that role.
fn ready_to_purge() -> Result<pg_sys::Oid, NotReady> {
    BackgroundWorker::transaction(|| {
        // SAFETY: inside a transaction (syscache and catalog look-ups); the names are
        // NUL-terminated constants; missing_ok, so an absent object is InvalidOid, not an error.
        let (extension, role) = unsafe {
            (
                pg_sys::get_extension_oid(c"token_store".as_ptr(), true),
                pg_sys::get_role_oid(PURGE_ROLE.as_ptr(), true),
            )
        };
        if extension == pg_sys::InvalidOid {
            return Err(NotReady::NoExtension);
        }
        if role == pg_sys::InvalidOid {
            return Err(NotReady::NoRole);
        }
        // SAFETY: inside a transaction; a syscache look-up of an existing role.
        if unsafe { pg_sys::superuser_arg(role) } {
            return Err(NotReady::SuperuserRole);
        }
        match as_role(role, storage::purge_privileges_held) {
            Ok(true) => Ok(role),
            Ok(false) => Err(NotReady::NoPrivileges),
            Err(e) => e.raise(),
        }
    })
}

/// Say in the log why the worker waits; once per change.
fn say_not_ready(why: NotReady, db: &str) {
    let role = PURGE_ROLE.to_string_lossy();
    let (code, message, hint) = match why {
        NotReady::NoExtension => {
            log!("token_store purge worker: extension token_store is not installed in database \"{db}\"; waiting");
            return;
        }
        NotReady::NoRole => (
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("token_store purge worker: role \"{role}\" does not exist; waiting"),
            "The purge worker acts as this NOLOGIN role, which installing the extension creates. By hand: CREATE ROLE token_store_purge NOLOGIN, then grant it USAGE on schema token_store, and SELECT, DELETE and UPDATE (created_at) on token_store.tokens, token_store.subject_revocations and token_store.sessions, and SELECT, DELETE on token_store.refresh_tokens, and SELECT, DELETE and UPDATE (expires_at) on token_store.dpop_proofs.",
        ),
        NotReady::SuperuserRole => (
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("token_store purge worker: role \"{role}\" is a superuser; waiting"),
            "The purge worker acts only as a role without superuser rights: ALTER ROLE token_store_purge NOSUPERUSER.",
        ),
        NotReady::NoPrivileges => (
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("token_store purge worker: role \"{role}\" lacks privileges on the tables of token_store in database \"{db}\"; waiting"),
            "It needs USAGE on schema token_store, SELECT, DELETE and UPDATE (created_at) on token_store.tokens, token_store.subject_revocations and token_store.sessions, SELECT, DELETE on token_store.refresh_tokens, and SELECT, DELETE and UPDATE (expires_at) on token_store.dpop_proofs, as the extension grants them.",
        ),
    };
    ErrorReport::new(code, message, "token_store")
        .set_hint(hint)
        .report(PgLogLevel::LOG);
}

/// One round, as `role`: the purge loop of `purge()`, each step in its own transaction. Returns
/// rows deleted.
fn purge_round(role: pg_sys::Oid) -> u64 {
    engine::admin::purge_rounds(None, shutdown_requested, |step| {
        // an error aborts the transaction and is raised below; nothing outlives it
        BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| as_role(role, step)))
    })
    .unwrap_or_else(|e| e.raise())
}

/// Exit callback of a purge worker: give its slot back.
#[pg_guard]
unsafe extern "C-unwind" fn release_slot(_code: std::ffi::c_int, slot: pg_sys::Datum) {
    shmem::counters().release_worker_slot(slot.value(), my_pid());
}

/// Entry point of a purge worker; its argument is its slot, its extra the database name.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn token_store_purge_main(arg: pg_sys::Datum) {
    let slot = arg.value();
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = BackgroundWorker::get_extra().to_owned();
    // As the bootstrap superuser: in PostgreSQL 15 a worker cannot log in as a NOLOGIN role.
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    pin_search_path();
    set_application_name(&format!("{PURGE_TYPE} {db}"));
    // SAFETY: registers a plain function, run at exit whether the worker ends or fails.
    unsafe { pg_sys::before_shmem_exit(Some(release_slot), arg) };
    if let Err(holder) = shmem::counters().claim_worker_slot(slot, my_pid()) {
        log!("token_store purge worker: database \"{db}\" already has one (pid {holder}); exiting");
        // SAFETY: proc_exit runs the backend's exit callbacks and never returns.
        unsafe { pg_sys::proc_exit(0) };
    }
    log!("token_store purge worker started in database \"{db}\"");

    let mut said: Option<NotReady> = None;
    let mut last_round: Option<Instant> = None;
    while !shutdown_requested() {
        reload_if_asked();
        let interval = Duration::from_secs(gucs::PURGE_INTERVAL.get().max(0) as u64);
        let now = Instant::now();
        // interval 0: purging is off; sleep until a reload or shutdown wakes us
        let wait = if interval.is_zero() {
            Some(Duration::from_secs(3600))
        } else {
            last_round
                .map(|l| (l + interval).saturating_duration_since(now))
                .filter(|w| !w.is_zero())
        };
        if let Some(wait) = wait {
            report_activity(
                pg_sys::BackendState::STATE_IDLE,
                if interval.is_zero() {
                    "idle: purging is off (token_store.purge_interval = 0)"
                } else {
                    "idle: waiting for the next purge round"
                },
            );
            if !BackgroundWorker::wait_latch(Some(wait)) {
                break;
            }
            continue;
        }
        last_round = Some(now);
        let role = match ready_to_purge() {
            Ok(role) => role,
            Err(why) => {
                if said != Some(why) {
                    say_not_ready(why, &db);
                    said = Some(why);
                }
                continue;
            }
        };
        said = None;
        report_activity(
            pg_sys::BackendState::STATE_RUNNING,
            "purging expired tokens",
        );
        let rows = purge_round(role);
        let took = now.elapsed();
        engine::admin::record_purge(rows, now);
        if rows > 0 {
            log!(
                "token_store purge: deleted {rows} expired rows in database \"{db}\" in {:.1} ms",
                took.as_secs_f64() * 1000.0
            );
        }
    }
    // Exit code 0: the postmaster forgets this worker (it has no restart time anyway); the
    // launcher starts it again unless the server is shutting down.
    // SAFETY: proc_exit runs the backend's exit callbacks (release_slot) and never returns.
    unsafe { pg_sys::proc_exit(0) };
}
