//! Whether the planner is running in this backend. The planner may evaluate a STABLE function with
//! constant arguments while it estimates a plan (`WHERE owner = jwt_verify('...')->>'sub'`: the
//! selectivity estimate evaluates the call); the executor then evaluates it again. Verifications
//! made while planning are not counted in `stats()`, so each verification the statement runs
//! counts once.
//!
//! The hook only counts how deep in planning the backend is. It calls the planner without turning
//! PostgreSQL's ERRORs into Rust panics (its frame holds nothing to drop, so an ERROR's longjmp may
//! pass through it, as through a C frame), and the depth is restored when the (sub)transaction the
//! ERROR aborts ends.

use std::cell::{Cell, RefCell};

use pgrx::pg_sys;

static mut PREVIOUS: pg_sys::planner_hook_type = None;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The depth as each open subtransaction started, innermost last.
    static AT_SUBXACT: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "C-unwind" {
    // PostgreSQL's planner, called directly (not through pgrx's guarded wrapper): see above.
    #[link_name = "standard_planner"]
    fn standard_planner_raw(
        parse: *mut pg_sys::Query,
        query_string: *const std::ffi::c_char,
        cursor_options: std::ffi::c_int,
        bound_params: pg_sys::ParamListInfo,
    ) -> *mut pg_sys::PlannedStmt;
}

/// Install the planner hook and the callbacks that restore the depth after an ERROR. From
/// `_PG_init`, once.
pub fn init() {
    // SAFETY: _PG_init runs once per process, before any query; the previous hook is kept and
    // chained, as PostgreSQL expects of every planner_hook; the callbacks live as long as the
    // library, which is never unloaded.
    unsafe {
        PREVIOUS = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(plan);
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

/// True while this backend is planning a query.
pub fn planning() -> bool {
    DEPTH.get() > 0
}

// No #[pg_guard] and nothing with a destructor: an ERROR raised by the planner longjmps through
// this frame to its handler, exactly as through the C caller's frame.
unsafe extern "C-unwind" fn plan(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: std::ffi::c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    DEPTH.set(DEPTH.get() + 1);
    // SAFETY: the arguments are the planner's own, passed on unchanged to the previous hook or to
    // the standard planner.
    let out = unsafe {
        match PREVIOUS {
            Some(previous) => previous(parse, query_string, cursor_options, bound_params),
            None => standard_planner_raw(parse, query_string, cursor_options, bound_params),
        }
    };
    DEPTH.set(DEPTH.get().saturating_sub(1));
    out
}

unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
    ) {
        DEPTH.set(0);
        AT_SUBXACT.with_borrow_mut(Vec::clear);
    }
}

unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_START_SUB => {
            AT_SUBXACT.with_borrow_mut(|s| s.push(DEPTH.get()));
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => {
            AT_SUBXACT.with_borrow_mut(|s| s.pop());
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            if let Some(d) = AT_SUBXACT.with_borrow_mut(|s| s.pop()) {
                DEPTH.set(d);
            }
        }
        _ => {}
    }
}
