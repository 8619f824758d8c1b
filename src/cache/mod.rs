//! Per-backend caches: the encryption keyring and the parsed signing keys.

pub mod keyring;
pub mod signing_keys;
