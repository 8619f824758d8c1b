//! What the SQL functions do, between the pure JWT/crypto code and the SPI in `storage.rs`.

use serde_json::{Map, Value};

use crate::error::{TsError, TsResult};
use crate::gucs;
use crate::jwt::{self, Alg, JsonProblem, Parsed, Policy, Reason};
use crate::keyring;
use crate::keys;
use crate::replication;
use crate::shmem;
use crate::storage::{self, KeyRow, NewToken};

/// Seconds since the epoch, from the real clock (not the transaction start).
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn max_token_bytes() -> usize {
    usize::try_from(gucs::MAX_TOKEN_BYTES.get()).unwrap_or(16_384)
}

fn parse(token: &str) -> TsResult<Parsed<'_>> {
    jwt::parse(token, max_token_bytes()).map_err(TsError::InvalidToken)
}

fn header_alg(parsed: &Parsed) -> TsResult<Alg> {
    Alg::parse(&parsed.header.alg).ok_or(TsError::Rejected(Reason::AlgorithmNotAllowed))
}

/// Check the signature against `candidates`: the row of the header's `kid` (if any), or the
/// non-retired keys of its `alg`, refused as `unknown_key` when there are more than
/// [`jwt::MAX_KIDLESS_CANDIDATES`]. Returns the key that verified it.
fn pick_key(parsed: &Parsed, alg: Alg, candidates: Vec<KeyRow>) -> TsResult<KeyRow> {
    let candidates = if parsed.header.kid.is_some() {
        let row = candidates
            .into_iter()
            .find(|r| r.state != "retired")
            .ok_or(TsError::Rejected(Reason::UnknownKey))?;
        if row.alg != alg.as_str() {
            return Err(TsError::Rejected(Reason::AlgorithmNotAllowed));
        }
        vec![row]
    } else if candidates.len() > jwt::MAX_KIDLESS_CANDIDATES {
        // Each candidate costs a signature check; a kid-less token may not demand unboundedly many.
        return Err(TsError::Rejected(Reason::UnknownKey));
    } else {
        candidates
    };
    if candidates.is_empty() {
        return Err(TsError::Rejected(Reason::UnknownKey));
    }
    for row in candidates {
        let key = keyring::loaded(&row)?;
        if jwt::verify_signature(parsed, &key) {
            return Ok(row);
        }
    }
    Err(TsError::Rejected(Reason::BadSignature))
}

/// Find the key the header names (or the candidates of its alg) and check the signature.
fn authenticate<'a>(token: &'a str) -> TsResult<(Parsed<'a>, KeyRow)> {
    let parsed = parse(token)?;
    let alg = header_alg(&parsed)?;
    let candidates = match &parsed.header.kid {
        Some(kid) => storage::key_by_kid(kid)?.into_iter().collect(),
        None => storage::keys_by_alg(alg.as_str())?,
    };
    let row = pick_key(&parsed, alg, candidates)?;
    Ok((parsed, row))
}

/// A token that passed every check.
pub struct Verified<'a> {
    /// The token, its claims among it.
    pub parsed: Parsed<'a>,
    /// The key that verified it.
    pub kid: String,
    /// Its identity (see `jwt::token_hash`).
    pub hash: [u8; 32],
    /// The stored row's id, when stored.
    pub token_id: Option<[u8; 16]>,
}

/// Whether the storage check demands that the token be stored.
#[derive(PartialEq, Clone, Copy)]
pub enum Mode {
    /// As `token_store.require_stored` says.
    Verify,
    /// For `jwt_store`: not being stored yet is the point.
    Store,
}

fn setting_or(
    arg: Option<&str>,
    setting: &pgrx::guc::GucSetting<Option<std::ffi::CString>>,
) -> Option<String> {
    arg.map(str::to_owned).or_else(|| gucs::nonempty(setting))
}

/// The whole verification: signature, claims, revocation, storage. Counted in `stats()`.
pub fn verify<'a>(
    token: &'a str,
    audience: Option<&str>,
    issuer: Option<&str>,
    mode: Mode,
) -> TsResult<Verified<'a>> {
    let result = verify_uncounted(token, audience, issuer, mode);
    match &result {
        Ok(_) => shmem::counters().count(Ok(())),
        Err(TsError::Rejected(r)) => shmem::counters().count(Err(*r)),
        Err(TsError::InvalidToken(_)) => shmem::counters().count(Err(Reason::Malformed)),
        Err(_) => {}
    }
    result
}

fn verify_uncounted<'a>(
    token: &'a str,
    audience: Option<&str>,
    issuer: Option<&str>,
    mode: Mode,
) -> TsResult<Verified<'a>> {
    let parsed = parse(token)?;
    let alg = header_alg(&parsed)?;
    let hash = jwt::token_hash(&parsed);
    let subject = parsed.claims.sub.as_deref();
    // With a kid (the usual case), one statement reads the key row and the token's status.
    let (key, status) = match parsed.header.kid.as_deref() {
        Some(kid) => {
            let (status, row) = storage::status_and_key(&hash, subject, kid)?;
            (
                pick_key(&parsed, alg, row.into_iter().collect())?,
                Some(status),
            )
        }
        None => (
            pick_key(&parsed, alg, storage::keys_by_alg(alg.as_str())?)?,
            None,
        ),
    };
    let audience = setting_or(audience, &gucs::AUDIENCE);
    let issuer = setting_or(issuer, &gucs::ISSUER);
    let policy = Policy {
        now: now_secs(),
        leeway: f64::from(gucs::LEEWAY.get()),
        audience: audience.as_deref(),
        issuer: issuer.as_deref(),
    };
    jwt::check_claims(&parsed.claims, &policy).map_err(TsError::Rejected)?;
    let status = match status {
        Some(s) => s,
        None => storage::token_status(&hash, subject)?,
    };
    if let Some((_, true)) = status.stored {
        return Err(TsError::Rejected(Reason::Revoked));
    }
    if let Some(before) = status.subject_revoked_before {
        // A token without iat cannot show it came after the revocation.
        if parsed.claims.iat.is_none_or(|iat| iat <= before) {
            return Err(TsError::Rejected(Reason::SubjectRevoked));
        }
    }
    if status.stored.is_none() && mode == Mode::Verify && gucs::REQUIRE_STORED.get() {
        return Err(TsError::Rejected(Reason::NotStored));
    }
    Ok(Verified {
        parsed,
        kid: key.kid,
        hash,
        token_id: status.stored.map(|(id, _)| id),
    })
}

fn seal_payload(id: &[u8; 16], payload: &Map<String, Value>) -> TsResult<(Vec<u8>, String)> {
    let (_, key) = keyring::current_key()?;
    let plain = serde_json::to_vec(payload).map_err(|e| TsError::Internal(e.to_string()))?;
    Ok((key.seal(id, &plain), key.fingerprint().to_owned()))
}

fn new_row_id() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

/// Insert a row for a parsed, authenticated token; the id of the row now holding it.
fn store_row(
    what: &'static str,
    parsed: &Parsed,
    hash: &[u8; 32],
    kid: &str,
    revoked: bool,
    reason: Option<&str>,
) -> TsResult<Option<[u8; 16]>> {
    let c = &parsed.claims;
    let exp = c.exp.ok_or(TsError::Rejected(Reason::MissingExp))?;
    let id = new_row_id();
    let (sealed, fingerprint) = seal_payload(&id, &parsed.payload)?;
    storage::insert_token(
        what,
        &NewToken {
            id,
            hash,
            jti: c.jti.as_deref(),
            subject: c.sub.as_deref(),
            issuer: c.iss.as_deref(),
            kid: Some(kid),
            issued_at: c.iat,
            not_before: c.nbf,
            expires_at: exp,
            revoked,
            revoke_reason: reason,
            payload: &sealed,
            fingerprint: &fingerprint,
        },
    )
}

/// `jwt_store`: verify, then store; the same token twice gives the same id.
pub fn store(token: &str) -> TsResult<[u8; 16]> {
    storage::ensure_primary("jwt_store")?;
    let v = verify(token, None, None, Mode::Store)?;
    if let Some(id) = v.token_id {
        return Ok(id);
    }
    match store_row("jwt_store", &v.parsed, &v.hash, &v.kid, false, None)? {
        Some(id) => Ok(id),
        // stored concurrently by another session between our check and our insert
        None => storage::token_status(&v.hash, None)?
            .stored
            .map(|(id, _)| id)
            .ok_or_else(|| TsError::Internal("token vanished while being stored".into())),
    }
}

fn interval_secs(months: i32, days: i32, micros: i64) -> f64 {
    f64::from(months) * 30.0 * 86_400.0 + f64::from(days) * 86_400.0 + micros as f64 / 1e6
}

fn signing_row(kid: Option<&str>) -> TsResult<KeyRow> {
    match kid {
        Some(kid) => {
            let row = storage::key_by_kid(kid)?
                .ok_or_else(|| TsError::UndefinedObject(format!("key \"{kid}\" does not exist")))?;
            if row.state != "active" {
                return Err(TsError::NotInPrerequisiteState {
                    message: format!("key \"{kid}\" is {}, not active", row.state),
                    hint: Some("Only active keys sign; see token_store.set_key_state.".into()),
                });
            }
            if !row.can_sign {
                return Err(TsError::NotInPrerequisiteState {
                    message: format!("key \"{kid}\" is a public key and cannot sign"),
                    hint: None,
                });
            }
            Ok(row)
        }
        None => storage::default_signing_key()?.ok_or_else(|| TsError::NotInPrerequisiteState {
            message: "no active key can sign".into(),
            hint: Some("Create one with token_store.create_key(kid, alg, key) or token_store.generate_key(kid, alg).".into()),
        }),
    }
}

/// Parse a `jsonb` argument's text (`what`: "claims", "JWKS documents") once it is known to nest
/// no deeper than `jwt::MAX_JSON_DEPTH` and to hold no number too long to sign or store.
fn parse_json_arg(what: &str, text: &str) -> TsResult<Value> {
    match jwt::check_json(text) {
        Ok(()) => {}
        Err(JsonProblem::TooDeep) => {
            return Err(TsError::TooComplex {
                message: format!("{what} are nested too deeply"),
                detail: format!(
                    "token_store accepts at most {} levels of objects and arrays.",
                    jwt::MAX_JSON_DEPTH
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

/// `jwt_issue`: complete the claims, sign, store, return the token. `claims` is jsonb's text.
pub fn issue(claims: &str, ttl: (i32, i32, i64), kid: Option<&str>) -> TsResult<String> {
    storage::ensure_primary("jwt_issue")?;
    // base64url makes the payload 4/3 as long: refuse what cannot fit before any work on it
    let limit = max_token_bytes();
    if claims.len().saturating_mul(4) / 3 > limit {
        return Err(TsError::param(
            "claims are too large",
            format!(
                "A token carrying {} bytes of claims would exceed token_store.max_token_bytes ({limit} bytes).",
                claims.len()
            ),
        ));
    }
    let claims = parse_json_arg("claims", claims)?;
    let mut payload = claims.as_object().cloned().ok_or_else(|| {
        TsError::param(
            "claims must be a JSON object",
            format!("The claims given are {}.", json_kind(&claims)),
        )
    })?;
    let ttl = interval_secs(ttl.0, ttl.1, ttl.2);
    if ttl.is_nan() || ttl <= 0.0 {
        return Err(TsError::param(
            "ttl must be positive",
            format!("The ttl given is {ttl} seconds."),
        ));
    }
    let row = signing_row(kid)?;
    let key = keyring::loaded(&row)?;
    let now = now_secs().floor();
    payload
        .entry("iat")
        .or_insert_with(|| Value::from(now as i64));
    if !payload.contains_key("exp") {
        let exp = (now + ttl).floor();
        if exp > jwt::MAX_NUMERIC_DATE {
            return Err(TsError::param(
                "ttl is too long",
                "The exp claim would fall after the year 9999.",
            ));
        }
        payload.insert("exp".into(), Value::from(exp as i64));
    }
    payload
        .entry("jti")
        .or_insert_with(|| Value::from(uuid::Uuid::new_v4().to_string()));
    jwt::registered_claims(&payload)
        .map_err(|why| TsError::param("invalid registered claim", why))?;
    let token = jwt::sign(&key, &row.kid, &payload).map_err(TsError::Internal)?;
    let parsed = parse(&token)?;
    store_row(
        "jwt_issue",
        &parsed,
        &jwt::token_hash(&parsed),
        &row.kid,
        false,
        None,
    )?
    .ok_or_else(|| TsError::Internal("a freshly issued token collided with a stored one".into()))?;
    Ok(token)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The longest `reason` a revocation keeps, in bytes; it is stored in clear.
pub const MAX_REASON_BYTES: usize = 1024;

fn check_reason(reason: Option<&str>) -> TsResult<()> {
    match reason {
        Some(r) if r.len() > MAX_REASON_BYTES => Err(TsError::TooLong {
            message: "revoke reason is too long".into(),
            detail: format!(
                "A reason is at most {MAX_REASON_BYTES} bytes; this one is {} bytes.",
                r.len()
            ),
        }),
        _ => Ok(()),
    }
}

/// `jwt_revoke`: true if this call revoked it. An unstored, correctly signed token gets a revoked row.
pub fn revoke(token: &str, reason: Option<&str>) -> TsResult<bool> {
    storage::ensure_primary("jwt_revoke")?;
    check_reason(reason)?;
    let (parsed, key) = authenticate(token)?;
    let hash = jwt::token_hash(&parsed);
    replication::revoked();
    if let Some(changed) = storage::revoke_by_hash(&hash, reason)? {
        return Ok(changed);
    }
    // Without exp the token can never verify, so there is nothing to deny.
    if parsed.claims.exp.is_none() {
        return Ok(false);
    }
    match store_row("jwt_revoke", &parsed, &hash, &key.kid, true, reason)? {
        Some(_) => Ok(true),
        None => Ok(storage::revoke_by_hash(&hash, reason)?.unwrap_or(false)),
    }
}

/// `jwt_revoke_id`: true if this call revoked the stored token with this row id.
pub fn revoke_id(id: [u8; 16], reason: Option<&str>) -> TsResult<bool> {
    storage::ensure_primary("jwt_revoke_id")?;
    check_reason(reason)?;
    replication::revoked();
    storage::revoke_by_id(id, reason)
}

/// `jwt_revoke_subject`: revoke the subject's stored tokens and refuse its older ones.
pub fn revoke_subject(subject: &str, reason: Option<&str>) -> TsResult<i64> {
    storage::ensure_primary("jwt_revoke_subject")?;
    check_reason(reason)?;
    replication::revoked();
    storage::revoke_subject(subject, reason)
}

/// `jwt_payload`: the decrypted claims of row `id`, or `None` when there is no such row.
pub fn payload(id: [u8; 16]) -> TsResult<Option<Value>> {
    let Some((sealed, fp)) = storage::payload(id)? else {
        return Ok(None);
    };
    let plain = keyring::open(
        || format!("payload of token {}", uuid::Uuid::from_bytes(id)),
        &fp,
        &id,
        &sealed,
    )?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|e| TsError::Internal(format!("stored payload is not JSON: {e}")))
}

/// `purge`: delete expired rows in batches; returns how many.
pub fn purge(max_rows: Option<i64>) -> TsResult<i64> {
    storage::ensure_primary("purge")?;
    let started = std::time::Instant::now();
    let batch = i64::from(gucs::PURGE_BATCH_SIZE.get().max(1));
    let (grace, revoked_grace) = gucs::purge_graces();
    let mut total: i64 = 0;
    let mut from = None;
    loop {
        let want = match max_rows {
            Some(m) => batch.min(m - total),
            None => batch,
        };
        if want <= 0 {
            break;
        }
        let (n, last) = storage::purge_batch(want, grace, revoked_grace, from)?;
        total += n as i64;
        if (n as i64) < want {
            break;
        }
        from = last.map(storage::resume_point);
    }
    if let Some(ttl) = gucs::subject_revocation_ttl() {
        storage::purge_subject_revocations(ttl)?;
    }
    shmem::counters().record_purge(
        total as u64,
        (now_secs() * 1e6) as i64,
        started.elapsed().as_micros() as u64,
    );
    Ok(total)
}

fn parse_alg(alg: &str) -> TsResult<Alg> {
    Alg::parse(alg).ok_or_else(|| {
        TsError::param(
            format!("unknown algorithm \"{alg}\""),
            format!(
                "alg must be one of {}",
                Alg::ALL
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        )
    })
}

fn check_kid(kid: &str) -> TsResult<()> {
    if kid.is_empty() || kid.len() > 256 {
        return Err(TsError::param("invalid kid", "a kid is 1 to 256 bytes"));
    }
    Ok(())
}

/// Seal and insert checked material; false when the kid is taken.
fn insert_material(
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

/// `reencrypt`: move key material and up to `batch_size` token rows still sealed under a previous
/// key onto the current one; returns how many rows moved. Call again until it returns 0.
///
/// A row that does not decrypt (tampered, or sealed under a key no longer configured) is left as
/// it is, reported in a WARNING with its id and counted in `stats()`, so one bad row never blocks
/// the rotation of the others.
pub fn reencrypt(batch_size: i32) -> TsResult<i64> {
    storage::ensure_primary("reencrypt")?;
    if batch_size < 1 {
        return Err(TsError::param(
            "batch_size must be positive",
            format!("The batch_size given is {batch_size}."),
        ));
    }
    let (_, current) = keyring::current_key()?;
    let fp = current.fingerprint();
    let mut moved = 0i64;
    let mut undecryptable = 0u64;
    for row in storage::stale_keys(fp)? {
        match keyring::material(&row) {
            Ok(material) => {
                storage::reseal_key(
                    &row.kid,
                    &current.seal(&keyring::key_aad(&row.kid), &material.bytes),
                    fp,
                )?;
                moved += 1;
            }
            Err(TsError::Undecryptable { fingerprint, .. }) => {
                undecryptable += 1;
                warn_undecryptable(
                    &format!("the material of key \"{}\"", row.kid),
                    &fingerprint,
                );
            }
            Err(e) => return Err(e),
        }
    }
    // Walk the stale rows in id order, past the ones that do not decrypt, until a batch moved.
    let mut after = None;
    let mut moved_tokens = 0i64;
    while moved_tokens < i64::from(batch_size) {
        let rows = storage::stale_tokens(fp, after, i64::from(batch_size) - moved_tokens)?;
        if rows.is_empty() {
            break;
        }
        for (id, sealed, old_fp) in rows {
            after = Some(id);
            let what = || format!("payload of token {}", uuid::Uuid::from_bytes(id));
            match keyring::open(what, &old_fp, &id, &sealed) {
                Ok(plain) => {
                    storage::reseal_token(id, &current.seal(&id, &plain), fp)?;
                    moved_tokens += 1;
                }
                Err(TsError::Undecryptable { fingerprint, .. }) => {
                    undecryptable += 1;
                    warn_undecryptable(&what(), &fingerprint);
                }
                Err(e) => return Err(e),
            }
        }
    }
    shmem::counters().record_reencrypt(undecryptable);
    Ok(moved + moved_tokens)
}

fn warn_undecryptable(what: &str, fingerprint: &str) {
    crate::error::warning(
        format!("cannot decrypt {what}; it stays under encryption key {fingerprint}"),
        "The ciphertext was altered, or made under a key that is neither the current nor a previous one.",
        "See \"Rows that do not decrypt\" in the README: the row still verifies and revokes, only its payload is lost.",
    );
}

/// `create_key`: parse, seal and store a key; returns its kid.
pub fn create_key(kid: &str, alg: &str, key: &str) -> TsResult<String> {
    storage::ensure_primary("create_key")?;
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
    storage::ensure_primary("generate_key")?;
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
    storage::ensure_primary("import_jwks")?;
    let jwks = parse_json_arg("JWKS documents", jwks)?;
    let entries = keys::jwks_entries(&jwks).map_err(|why| TsError::param("invalid JWKS", why))?;
    let mut added = 0;
    for (kid, alg, material) in entries {
        check_kid(&kid)?;
        if let Some(row) = storage::key_by_kid(&kid)? {
            let existing = keyring::material(&row)?;
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
            "state must be active, verify_only or retired",
        ));
    }
    storage::ensure_primary("set_key_state")?;
    if !storage::set_key_state(kid, state)? {
        return Err(TsError::UndefinedObject(format!(
            "key \"{kid}\" does not exist"
        )));
    }
    Ok(())
}
