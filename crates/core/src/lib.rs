//! token_store's pure core: everything that knows nothing of PostgreSQL. JWS tokens, claim
//! policy, signing-key material and sealing at rest. Runs under a plain `cargo test`.

pub mod aead;
pub mod alg;
pub mod claims;
pub mod dpop;
pub mod events;
pub mod jwks_fetch;
pub mod jws;
pub mod keys;
pub mod refresh;
pub mod scan;
