//! Signing keys per backend: the rows of the keys table (the key set), by kid and by alg, and the
//! parsed keys, by kid: a row is decrypted and parsed once, and again only when its version or
//! sealed bytes change.
//!
//! The key set is read without SQL (`storage::probe::all_keys`) and kept until the next relcache
//! invalidation of the extension's relations (`cache::relations`). Every change to the keys table,
//! by the key functions or by plain SQL, fires the trigger `signing_keys_changed`, which sends one
//! (`storage::probe::keys_changed`): it takes effect in every session at its next statement after
//! the commit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::keyring::{key_aad, open};
use super::relations;
use crate::error::{TsError, TsResult};
use crate::storage::{probe, KeyRow};
use token_store_core::alg::Alg;
use token_store_core::keys::{self, KeyMaterial, LoadedKey};

/// A parsed key with the row version and sealed bytes it was parsed from.
type CachedKey = (i64, Vec<u8>, Rc<LoadedKey>);

/// The keys table as of one relations generation.
pub struct KeySet {
    generation: u64,
    by_kid: HashMap<String, Rc<KeyRow>>,
    /// Non-retired keys per alg, newest first (ties by kid).
    by_alg: HashMap<String, Vec<Rc<KeyRow>>>,
    /// The newest active key that can sign (ties: the greatest kid).
    default_signer: Option<Rc<KeyRow>>,
}

impl KeySet {
    /// The key named `kid`, whatever its state.
    pub fn by_kid(&self, kid: &str) -> Option<Rc<KeyRow>> {
        self.by_kid.get(kid).cloned()
    }

    /// The non-retired keys of `alg`, newest first.
    pub fn by_alg(&self, alg: &str) -> Vec<Rc<KeyRow>> {
        self.by_alg.get(alg).cloned().unwrap_or_default()
    }

    /// The key `jwt_issue` signs with when given no kid: the newest active key that can sign.
    pub fn default_signer(&self) -> Option<Rc<KeyRow>> {
        self.default_signer.clone()
    }
}

thread_local! {
    static KEY_SET: RefCell<Option<Rc<KeySet>>> = const { RefCell::new(None) };

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

/// The key set, read again when the relations generation moved since it was read.
pub fn key_set() -> TsResult<Rc<KeySet>> {
    let generation = relations::generation();
    if let Some(set) =
        KEY_SET.with_borrow(|s| s.as_ref().filter(|s| s.generation == generation).cloned())
    {
        return Ok(set);
    }
    let (mut rows, read_in) = probe::all_keys()?;
    rows.sort_by(|(a, at), (b, bt)| bt.cmp(at).then_with(|| a.kid.cmp(&b.kid)));
    let mut by_kid = HashMap::with_capacity(rows.len());
    let mut by_alg: HashMap<String, Vec<Rc<KeyRow>>> = HashMap::new();
    let mut default_signer: Option<(i64, Rc<KeyRow>)> = None;
    for (row, created_at) in rows {
        let row = Rc::new(row);
        if row.state == "active" && row.can_sign {
            let newer = default_signer
                .as_ref()
                .is_none_or(|(at, best)| (created_at, row.kid.as_str()) > (*at, best.kid.as_str()));
            if newer {
                default_signer = Some((created_at, row.clone()));
            }
        }
        if row.state != "retired" {
            by_alg.entry(row.alg.clone()).or_default().push(row.clone());
        }
        by_kid.insert(row.kid.clone(), row);
    }
    let set = Rc::new(KeySet {
        generation: read_in,
        by_kid,
        by_alg,
        default_signer: default_signer.map(|(_, row)| row),
    });
    // Kept only when no invalidation arrived while it was read; used for this call either way.
    if relations::generation() == read_in {
        KEY_SET.set(Some(set.clone()));
    }
    Ok(set)
}
