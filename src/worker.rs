//! The purge background worker: one per database in `token_store.databases`, primary only.

use std::ffi::CString;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;

use crate::{engine, gucs, shmem, storage};

/// Register one worker per configured database. Called from `_PG_init` while preloading.
pub fn register() {
    let dbs = gucs::nonempty(&gucs::DATABASES).unwrap_or_default();
    let names: Vec<&str> = dbs
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    for (slot, db) in names.iter().enumerate().take(shmem::MAX_WORKERS) {
        BackgroundWorkerBuilder::new(&format!("token_store purge {db}"))
            .set_type("token_store purge")
            .set_library("token_store")
            .set_function("token_store_purge_main")
            .set_argument(Some(pg_sys::Datum::from(slot)))
            .set_extra(db)
            .enable_spi_access()
            // RecoveryFinished: never on a standby, and started when one is promoted.
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(Some(Duration::from_secs(5)))
            .load();
    }
}

fn report_activity(what: &str) {
    let c = CString::new(what).expect("no NUL in our own text");
    // SAFETY: a worker connected to a database may report its activity; the string is copied.
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, c.as_ptr()) };
}

fn shutdown_requested() -> bool {
    // SAFETY: a sig_atomic_t flag written only by our signal handler.
    unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0 }
}

fn extension_installed() -> bool {
    BackgroundWorker::transaction(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'token_store'",
                None,
                &[],
            )
            .map(|t| !t.is_empty())
            .unwrap_or(false)
        })
    })
}

/// One round: batches in their own transactions until one comes back short. Returns rows deleted.
fn purge_round() -> u64 {
    let batch = i64::from(gucs::PURGE_BATCH_SIZE.get().max(1));
    let (grace, revoked_grace) = gucs::purge_graces();
    let mut total = 0u64;
    loop {
        let n = BackgroundWorker::transaction(|| storage::purge_batch(batch, grace, revoked_grace))
            .unwrap_or_else(|e| e.raise());
        total += n;
        if (n as i64) < batch || shutdown_requested() {
            return total;
        }
    }
}

/// Entry point of a purge worker.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn token_store_purge_main(arg: pg_sys::Datum) {
    let slot = arg.value();
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = BackgroundWorker::get_extra().to_owned();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    // SAFETY: MyProcPid is set for every backend before its main function runs.
    let pid = unsafe { pg_sys::MyProcPid };
    shmem::counters().set_worker_pid(slot, pid);
    log!("token_store purge worker started in database \"{db}\"");

    let mut said_missing = false;
    let mut last_round: Option<Instant> = None;
    while !shutdown_requested() {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a worker to apply a reload, outside any transaction.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
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
            report_activity("idle: waiting for the next purge round");
            if !BackgroundWorker::wait_latch(Some(wait)) {
                break;
            }
            continue;
        }
        last_round = Some(now);
        if !extension_installed() {
            if !said_missing {
                log!("token_store purge worker: extension token_store is not installed in database \"{db}\"; waiting");
                said_missing = true;
            }
            continue;
        }
        said_missing = false;
        report_activity("purging expired tokens");
        let rows = purge_round();
        let took = now.elapsed();
        shmem::counters().record_purge(
            rows,
            (engine::now_secs() * 1e6) as i64,
            took.as_micros() as u64,
        );
        if rows > 0 {
            log!(
                "token_store purge: deleted {rows} expired rows in database \"{db}\" in {:.1} ms",
                took.as_secs_f64() * 1000.0
            );
        }
    }
    shmem::counters().set_worker_pid(slot, 0);
    // Exit code 1, not 0: a worker that exits 0 is unregistered for good, and one stopped by
    // pg_terminate_backend should come back after bgw_restart_time. At shutdown nothing restarts.
    // SAFETY: proc_exit runs the backend's exit callbacks and never returns.
    unsafe { pg_sys::proc_exit(1) };
}
