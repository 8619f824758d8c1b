//! Keys: create_key, set_key_state.

use pgrx::prelude::*;

use crate::engine;
use crate::error::OrRaise;

/// Register a signing/verification key and return its kid. The material is stored encrypted.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn create_key(kid: &str, alg: &str, key: &str) -> String {
    engine::create_key(kid, alg, key).or_raise()
}

/// Set a key's state: `active` (signs and verifies), `verify_only`, or `retired` (neither).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn set_key_state(kid: &str, state: &str) {
    engine::set_key_state(kid, state).or_raise()
}
