//! Whether the planner is running in this backend. The planner may evaluate a STABLE function with
//! constant arguments while it estimates a plan (`WHERE owner = jwt_verify('...')->>'sub'`: the
//! selectivity estimate evaluates the call); the executor then evaluates it again. Verifications
//! made while planning are not counted in `stats()`, so each verification the statement runs
//! counts once.

use std::cell::Cell;

use pgrx::pg_sys;

static mut PREVIOUS: pg_sys::planner_hook_type = None;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Install the planner hook. From `_PG_init`, once.
pub fn init() {
    // SAFETY: _PG_init runs once per process, before any query; the previous hook is kept and
    // chained, as PostgreSQL expects of every planner_hook.
    unsafe {
        PREVIOUS = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(plan);
    }
}

/// True while this backend is planning a query.
pub fn planning() -> bool {
    DEPTH.get() > 0
}

struct Planning;

impl Drop for Planning {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get().saturating_sub(1));
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn plan(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: std::ffi::c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    DEPTH.set(DEPTH.get() + 1);
    // restores the depth when planning ends, by an ERROR too (it unwinds through here)
    let _planning = Planning;
    // SAFETY: the arguments are the planner's, passed on unchanged to the previous hook or the
    // standard planner; an ERROR in a previous hook (C code) is caught at the FFI boundary and
    // unwinds as a Rust panic through this frame.
    unsafe {
        match PREVIOUS {
            Some(previous) => pg_sys::ffi::pg_guard_ffi_boundary(|| {
                previous(parse, query_string, cursor_options, bound_params)
            }),
            None => pg_sys::standard_planner(parse, query_string, cursor_options, bound_params),
        }
    }
}
