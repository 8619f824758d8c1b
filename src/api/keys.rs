//! Keys: create_key, generate_key, import_jwks, set_key_state, jwks.

use pgrx::prelude::*;
use pgrx::JsonB;

use super::JsonbText;
use crate::engine;
use crate::error::OrRaise;
use crate::logging::guarded;

/// Register a signing/verification key and return its kid. The material is stored encrypted.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn create_key(kid: &str, alg: &str, key: &str) -> String {
    guarded(|| engine::keys::create_key(kid, alg, key).or_raise())
}

/// Set a key's state: `active` (signs and verifies), `verify_only`, or `retired` (neither).
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn set_key_state(kid: &str, state: &str) {
    guarded(|| engine::keys::set_key_state(kid, state).or_raise())
}

/// Make a fresh secret or key pair inside the database; returns the public JWK only.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn generate_key(kid: &str, alg: &str) -> JsonB {
    JsonB(guarded(|| engine::keys::generate_key(kid, alg).or_raise()))
}

/// Add the public keys of a JWKS as verify-only keys; returns how many were added.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn import_jwks(jwks: JsonbText) -> i32 {
    guarded(|| engine::keys::import_jwks(&jwks.0).or_raise())
}

/// The public JWKS (RFC 7517) of every non-retired asymmetric key, for `/.well-known/jwks.json`.
#[pg_extern(security_definer, stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn jwks() -> JsonB {
    JsonB(guarded(|| engine::keys::jwks().or_raise()))
}

/// Trigger on `token_store.signing_keys` (after each INSERT, UPDATE, DELETE or TRUNCATE statement,
/// enabled ALWAYS, so also in replica mode): sends a relcache invalidation of the table it fires on,
/// which makes every session sweep the parsed keys it no longer needs out of its memory at once.
/// Correctness does not depend on it: every verification reads its key's row (see
/// `cache::signing_keys`).
#[pg_trigger]
fn signing_keys_changed<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, PgHeapTupleError> {
    if let Ok(relid) = trigger.relid() {
        crate::cache::signing_keys::keys_changed(relid);
    }
    Ok(None)
}
