//! Signing keys: create, generate, import, publish, change state.

use super::*;
use token_store_core::keys;

pub(super) fn parse_alg(alg: &str) -> TsResult<Alg> {
    Alg::parse(alg).ok_or_else(|| {
        TsError::param(
            format!("unknown algorithm \"{alg}\""),
            format!(
                "the alg must be one of {}",
                Alg::ALL
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        )
    })
}

pub(super) fn check_kid(kid: &str) -> TsResult<()> {
    if kid.is_empty() || kid.len() > 256 {
        return Err(TsError::param("invalid kid", "a kid is 1 to 256 bytes"));
    }
    Ok(())
}

/// Seal and insert checked material; false when the kid is taken.
pub(super) fn insert_material(
    kid: &str,
    alg: Alg,
    material: &keys::KeyMaterial,
    state: &str,
) -> TsResult<bool> {
    keys::load_key(alg, material).map_err(|why| TsError::param("invalid key material", why))?;
    let public_jwk = if alg.is_hmac() {
        None
    } else {
        Some(
            keys::try_public_jwk(alg, material, kid)
                .map_err(|why| TsError::param("invalid key material", why))?,
        )
    };
    let (_, enc) = keyring::current_key()?;
    let sealed = enc.seal(&keyring::key_aad(kid), &material.bytes);
    storage::insert_key(&storage::NewKey {
        kid,
        alg: alg.as_str(),
        state,
        can_sign: material.can_sign,
        material: &sealed,
        fingerprint: enc.fingerprint(),
        public_jwk: public_jwk.as_ref(),
    })
}

/// `create_key`: parse, seal and store a key; returns its kid.
pub fn create_key(kid: &str, alg: &str, key: &str) -> TsResult<String> {
    ensure_primary("create_key")?;
    let alg = parse_alg(alg)?;
    check_kid(kid)?;
    let material = keys::parse_key_material(alg, key)
        .map_err(|why| TsError::param("invalid key material", why))?;
    if !insert_material(kid, alg, &material, "active")? {
        return Err(TsError::Duplicate(format!("key \"{kid}\" already exists")));
    }
    Ok(kid.to_owned())
}

/// `generate_key`: a fresh secret or key pair from the OS random source; returns the public JWK.
pub fn generate_key(kid: &str, alg: &str) -> TsResult<Value> {
    ensure_primary("generate_key")?;
    let alg = parse_alg(alg)?;
    check_kid(kid)?;
    let material = keys::generate(alg);
    if !insert_material(kid, alg, &material, "active")? {
        return Err(TsError::Duplicate(format!("key \"{kid}\" already exists")));
    }
    keys::try_public_jwk(alg, &material, kid).map_err(TsError::Internal)
}

/// `import_jwks`: add a JWKS's public keys as verify-only keys; returns how many were added.
/// Re-importing the same keys adds nothing; a kid already used by another key is an error.
pub fn import_jwks(jwks: &str) -> TsResult<i32> {
    ensure_primary("import_jwks")?;
    let jwks = parse_json_arg("JWKS documents", jwks)?;
    let entries = keys::jwks_entries(&jwks).map_err(|why| TsError::param("invalid JWKS", why))?;
    let mut added = 0;
    for (kid, alg, material) in entries {
        check_kid(&kid)?;
        if let Some(row) = storage::key_by_kid(&kid)? {
            let existing = signing_keys::material(&row)?;
            let same_key = row.alg == alg.as_str()
                && keys::public_part(alg, &existing)
                    .is_ok_and(|p| keys::same_material(&p, &material));
            if same_key {
                continue;
            }
            return Err(TsError::param(
                "invalid JWKS",
                format!("key \"{kid}\" already exists with different material or algorithm"),
            ));
        }
        if insert_material(&kid, alg, &material, "verify_only")? {
            added += 1;
        }
    }
    Ok(added)
}

/// `jwks`: the public JWKS of every non-retired asymmetric key.
pub fn jwks() -> TsResult<Value> {
    Ok(serde_json::json!({ "keys": storage::public_jwks()? }))
}

/// `set_key_state`.
pub fn set_key_state(kid: &str, state: &str) -> TsResult<()> {
    if !matches!(state, "active" | "verify_only" | "retired") {
        return Err(TsError::param(
            format!("invalid key state \"{state}\""),
            "the state must be active, verify_only or retired",
        ));
    }
    ensure_primary("set_key_state")?;
    if !storage::set_key_state(kid, state)? {
        return Err(TsError::UndefinedObject(format!(
            "key \"{kid}\" does not exist"
        )));
    }
    Ok(())
}
