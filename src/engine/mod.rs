//! What the SQL functions do, between the pure JWT/crypto code and the storage layer in `storage/`.

use pgrx::pg_sys;
use serde_json::{Map, Value};

use crate::cache::{keyring, signing_keys};
use crate::error::{TsError, TsResult};
use crate::gucs;
use crate::replication;
use crate::shmem;
use crate::storage::{self, KeyRow, NewToken};
use token_store_core::alg::{Alg, Reason};
use token_store_core::claims::{self, JsonProblem, Policy};
use token_store_core::jws::{self, Parsed};

pub mod admin;
pub mod dpop;
pub mod events;
pub mod issuer_fetch;
pub mod issuers;
pub mod keys;
pub mod sessions;
pub mod tokens;

/// Seconds since the epoch, from the real clock (not the transaction start).
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Parse a `jsonb` argument's text (`what`: "claims", "JWKS documents") once it is known to nest
/// no deeper than `claims::MAX_JSON_DEPTH` and to hold no number too long to sign or store.
pub(super) fn parse_json_arg(what: &str, text: &str) -> TsResult<Value> {
    match claims::check_json(text) {
        Ok(()) => {}
        Err(JsonProblem::TooDeep) => {
            return Err(TsError::TooComplex {
                message: format!("{what} are nested too deeply"),
                detail: format!(
                    "token_store accepts at most {} levels of objects and arrays.",
                    claims::MAX_JSON_DEPTH
                ),
            })
        }
        Err(problem) => {
            return Err(TsError::param(
                format!("{what} cannot be used"),
                format!("The value {problem}."),
            ))
        }
    }
    serde_json::from_str(text)
        .map_err(|e| TsError::param(format!("{what} cannot be read"), format!("{e}.")))
}

/// Seal a JSON value under `key`, bound to `aad` (a row's id, with a prefix for what it is).
pub(super) fn seal_json(
    key: &token_store_core::aead::EncryptionKey,
    aad: &[u8],
    v: &impl serde::Serialize,
) -> TsResult<Vec<u8>> {
    let plain = serde_json::to_vec(v).map_err(|e| TsError::Internal(e.to_string()))?;
    Ok(key.seal(aad, &plain))
}

pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// 25006 when this server is a hot standby: the one check, first thing in every function that
/// writes, named as the SQL function the user called.
pub fn ensure_primary(what: &'static str) -> TsResult<()> {
    // SAFETY: RecoveryInProgress only reads shared state and is callable from any backend.
    if unsafe { pg_sys::RecoveryInProgress() } {
        return Err(TsError::ReadOnly(what));
    }
    Ok(())
}
