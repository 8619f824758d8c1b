//! Parsed signing keys per backend, by kid: a row is decrypted and parsed once, and again only
//! when its version or sealed bytes change.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::keyring::{key_aad, open};
use crate::error::{TsError, TsResult};
use crate::storage::KeyRow;
use token_store_core::alg::Alg;
use token_store_core::keys::{self, KeyMaterial, LoadedKey};

/// A parsed key with the row version and sealed bytes it was parsed from.
type CachedKey = (i64, Vec<u8>, Rc<LoadedKey>);

thread_local! {
    // kid -> (version, sealed material, parsed key). The sealed bytes are part of the match: a key
    // dropped and made again under the same kid starts at version 1 again, but its nonce differs.
    static SIGNING: RefCell<HashMap<String, CachedKey>> = RefCell::new(HashMap::new());
}

/// The decrypted material of a stored key.
pub fn material(row: &KeyRow) -> TsResult<KeyMaterial> {
    let what = || format!("key material of key \"{}\"", row.kid);
    let bytes = open(what, &row.fingerprint, &key_aad(&row.kid), &row.material)?;
    Ok(KeyMaterial {
        bytes,
        can_sign: row.can_sign,
    })
}

/// The parsed key of a stored row, from cache when the row has not changed.
pub fn loaded(row: &KeyRow) -> TsResult<Rc<LoadedKey>> {
    if let Some(k) = SIGNING.with_borrow(|c| {
        c.get(&row.kid)
            .filter(|(v, sealed, _)| *v == row.version && *sealed == row.material)
            .map(|(_, _, k)| k.clone())
    }) {
        return Ok(k);
    }
    let alg = Alg::parse(&row.alg)
        .ok_or_else(|| TsError::Internal(format!("key \"{}\" has unknown alg", row.kid)))?;
    let material = material(row)?;
    let key = Rc::new(keys::load_key(alg, &material).map_err(|e| {
        TsError::Internal(format!("stored key \"{}\" cannot be loaded: {e}", row.kid))
    })?);
    SIGNING.with_borrow_mut(|c| {
        c.insert(
            row.kid.clone(),
            (row.version, row.material.clone(), key.clone()),
        )
    });
    Ok(key)
}
