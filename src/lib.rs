//! token_store: JSON Web Tokens kept inside PostgreSQL.
//!
//! This file only wires the modules together and registers what `_PG_init` must.

use pgrx::prelude::*;

mod api;
mod cache;
mod engine;
mod error;
mod gucs;
mod logging;
mod planning;
mod replication;
mod shmem;
mod storage;
mod worker;
mod worker_issuers;

::pgrx::pg_module_magic!();

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

/// Register the settings and the log hook; when preloaded, also the shared counters and the purge
/// workers. Without preloading every SQL function still works, and a misconfiguration is reported.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // No Rust backtrace reaches a client or the log, whatever RUST_BACKTRACE says: pgrx's panic
    // hook takes one with Backtrace::capture, which reads RUST_LIB_BACKTRACE first, once per
    // process. Set before any panic, here; the backends the postmaster forks inherit it.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    // SAFETY: a plain read of a flag the postmaster sets before loading preloaded libraries.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    let configured = (!preloading).then(gucs::placeholders);
    gucs::init(preloading);
    logging::init();
    planning::init();
    replication::init();
    if preloading {
        shmem::init();
        worker::register();
    } else if let Some(configured) = configured {
        gucs::warn_not_preloaded(&configured);
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Settings the `#[pg_test]` cluster starts with.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'token_store'",
            "token_store.encryption_key = '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'",
            "token_store.databases = 'pgrx_tests'",
            "token_store.purge_interval = 0",
        ]
    }
}
