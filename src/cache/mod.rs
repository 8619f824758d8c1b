//! Per-backend caches: the encryption keyring, the extension's relations and the signing keys.

pub mod keyring;
pub mod relations;
pub mod signing_keys;
