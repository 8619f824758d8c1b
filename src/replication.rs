//! `token_store.synchronous_revocation`: a revocation that synchronous standbys honour before
//! the revoking transaction's commit returns.
//!
//! A SECURITY DEFINER function's `SET search_path` clause makes PostgreSQL undo any setting the
//! function changes when it returns, so the revoking functions only note the wish; a pre-commit
//! callback then raises `synchronous_commit` to `remote_apply` for the rest of the transaction,
//! which is the commit itself.

use std::cell::Cell;

use pgrx::pg_sys;

use crate::gucs;

thread_local! {
    static WANTED: Cell<bool> = const { Cell::new(false) };
}

/// Register the transaction callback. From `_PG_init`, once.
pub fn init() {
    // SAFETY: registers a plain function for this process; PostgreSQL keeps the list.
    unsafe { pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut()) };
}

/// Called by every function that revokes: with the setting on, this transaction's commit waits
/// until every synchronous standby has applied it.
pub fn revoked() {
    if gucs::SYNCHRONOUS_REVOCATION.get() {
        WANTED.set(true);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT if WANTED.replace(false) => {
            // SAFETY: called inside the committing transaction, before its commit record is
            // written; GUC_ACTION_LOCAL ends with this transaction. elevel ERROR: a failure
            // aborts the commit rather than letting it return unconfirmed.
            unsafe {
                pg_sys::set_config_option(
                    c"synchronous_commit".as_ptr(),
                    c"remote_apply".as_ptr(),
                    pg_sys::GucContext::PGC_USERSET,
                    pg_sys::GucSource::PGC_S_SESSION,
                    pg_sys::GucAction::GUC_ACTION_LOCAL,
                    true,
                    pgrx::PgLogLevel::ERROR as i32,
                    false,
                );
            }
        }
        XACT_EVENT_ABORT
        | XACT_EVENT_PARALLEL_ABORT
        | XACT_EVENT_PRE_PREPARE
        | XACT_EVENT_COMMIT => WANTED.set(false),
        _ => {}
    }
}
