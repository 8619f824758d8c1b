//! Keeps statements that carry keys, tokens or claims out of the server log.
//!
//! At the default `log_min_error_statement = error`, PostgreSQL writes the failing statement
//! beside every ERROR, and a `create_key`, `jwt_verify` or `jwt_issue` called with literal
//! arguments holds a secret. An `emit_log_hook` marks every error raised by token_store (its
//! reports carry `DOMAIN`) and every error raised while one of its functions runs (an SPI failure,
//! a cancel, a lock timeout) with `hide_stmt` and `hide_ctx`. The client still gets the error in
//! full; only the server log loses the statement and the context lines.
//!
//! `log_statement` and `log_min_duration_statement` log statements before anything fails: no hook
//! can take those back, so the README recommends bind parameters.

use std::cell::Cell;
use std::ffi::CStr;

use pgrx::pg_sys;

/// The message domain of token_store's error reports.
pub const DOMAIN: &str = "token_store";

thread_local! {
    // Set while a token_store function runs. Not reset by unwinding on purpose: the hook runs
    // after the function's frames are gone, when the top level emits the error; an abort resets it.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
}

static mut PREVIOUS_HOOK: pg_sys::emit_log_hook_type = None;

/// Run `f` as a token_store function whose errors must not bring their statement into the log.
pub fn guarded<T>(f: impl FnOnce() -> T) -> T {
    let outer = ACTIVE.replace(true);
    let out = f();
    ACTIVE.set(outer);
    out
}

/// Install the hook and the abort callbacks that reset the flag. From `_PG_init`, once.
pub fn init() {
    // SAFETY: _PG_init runs once per process, before any query; the previous hook is kept and
    // chained, as PostgreSQL expects of every emit_log_hook.
    unsafe {
        PREVIOUS_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(hide_statement);
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

fn ours(domain: *const std::ffi::c_char) -> bool {
    // SAFETY: a non-null domain is a NUL-terminated string that lives until the report is done.
    !domain.is_null() && unsafe { CStr::from_ptr(domain) }.to_bytes() == DOMAIN.as_bytes()
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn hide_statement(edata: *mut pg_sys::ErrorData) {
    // SAFETY: PostgreSQL passes the report being emitted; it is ours to adjust until we return.
    unsafe {
        let e = &mut *edata;
        if e.elevel >= pgrx::PgLogLevel::ERROR as i32 && (ACTIVE.get() || ours(e.domain)) {
            e.hide_stmt = true;
            e.hide_ctx = true;
        }
        if let Some(previous) = PREVIOUS_HOOK {
            previous(edata);
        }
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
    ) {
        ACTIVE.set(false);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    // an error caught by a PL/pgSQL EXCEPTION block is never emitted: forget it here
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        ACTIVE.set(false);
    }
}
