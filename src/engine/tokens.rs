//! Tokens: verify, store, issue, revoke.

use std::rc::Rc;

use super::issuers;
use super::*;
use crate::storage::probe::WriterSnapshot;
use crate::storage::{direct, TokenStatus};

pub(super) fn max_token_bytes() -> usize {
    usize::try_from(gucs::MAX_TOKEN_BYTES.get()).unwrap_or(16_384)
}

pub(super) fn parse(token: &str) -> TsResult<Parsed<'_>> {
    jws::parse(token, max_token_bytes()).map_err(TsError::InvalidToken)
}

pub(super) fn header_alg(parsed: &Parsed) -> TsResult<Alg> {
    Alg::parse(&parsed.header.alg).ok_or(TsError::Rejected(Reason::AlgorithmNotAllowed))
}

/// Check the signature against `candidates`: the row of the header's `kid` (if any), or the
/// non-retired keys of its `alg`, refused as `unknown_key` when there are more than
/// [`jws::MAX_KIDLESS_CANDIDATES`]. Returns the key that verified it.
pub(super) fn pick_key(
    parsed: &Parsed,
    alg: Alg,
    candidates: Rc<Vec<Rc<KeyRow>>>,
) -> TsResult<Rc<KeyRow>> {
    let candidates = Rc::unwrap_or_clone(candidates);
    let candidates = if parsed.header.kid.is_some() {
        let row = candidates
            .into_iter()
            .find(|r| r.state != "retired")
            .ok_or(TsError::Rejected(Reason::UnknownKey))?;
        if row.alg != alg.as_str() {
            return Err(TsError::Rejected(Reason::AlgorithmNotAllowed));
        }
        vec![row]
    } else if candidates.len() > jws::MAX_KIDLESS_CANDIDATES {
        // Each candidate costs a signature check; a kid-less token may not demand unboundedly many.
        return Err(TsError::Rejected(Reason::UnknownKey));
    } else {
        candidates
    };
    if candidates.is_empty() {
        return Err(TsError::Rejected(Reason::UnknownKey));
    }
    for row in candidates {
        let key = signing_keys::loaded(&row)?;
        if jws::verify_signature(parsed, &key) {
            return Ok(row);
        }
    }
    Err(TsError::Rejected(Reason::BadSignature))
}

/// The keys a token may be checked against: the row its header's `kid` names, or the non-retired
/// keys of its `alg`; read without SQL under the active snapshot, like the token's own row.
fn candidates(parsed: &Parsed, alg: Alg) -> TsResult<Rc<Vec<Rc<KeyRow>>>> {
    Ok(match parsed.header.kid.as_deref() {
        Some(kid) => Rc::new(signing_keys::by_kid(kid)?.into_iter().collect()),
        None => signing_keys::by_alg(alg.as_str())?,
    })
}

/// The kid of the key that verifies a parsed token's signature: the key its header names (or the
/// candidates of its alg), or, for a token of a registered issuer, that issuer's keys only.
fn authenticated_kid(parsed: &Parsed) -> TsResult<String> {
    let alg = header_alg(parsed)?;
    Ok(match issuers::rules_for(parsed)? {
        Some((iss, rules)) => issuers::authenticate(parsed, alg, &iss, &rules)?,
        None => pick_key(parsed, alg, candidates(parsed, alg)?)?.kid.clone(),
    })
}

/// What the tables say about a token and its subject, read by index probes under the active
/// snapshot: what a SELECT in the calling statement would see (for a STABLE reader, not the rows
/// its own statement writes; the writers read under a snapshot of their own, see WriterSnapshot).
fn token_status(hash: &[u8; 32], subject: Option<&str>) -> TsResult<TokenStatus> {
    Ok(TokenStatus {
        stored: direct::token_row(hash)?,
        subject_revoked_before: match subject {
            Some(s) => direct::subject_revoked_before(s)?,
            None => None,
        },
    })
}

/// A token that passed every check.
pub struct Verified<'a> {
    /// The token, its claims among it.
    pub parsed: Parsed<'a>,
    /// The key that verified it.
    pub kid: String,
    /// Its identity (see `jws::token_hash`).
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
    /// For `jwt_verify_dpop`: as `Verify`, and a DPoP-bound token is expected (its caller checks
    /// the binding).
    Dpop,
}

pub(super) fn setting_or(
    arg: Option<&str>,
    setting: &pgrx::guc::GucSetting<Option<std::ffi::CString>>,
) -> Option<String> {
    arg.map(str::to_owned).or_else(|| gucs::nonempty(setting))
}

/// The whole verification: signature, claims, revocation, storage. Counted in `stats()`, unless
/// the planner makes it (see `planning`).
pub fn verify<'a>(
    token: &'a str,
    audience: Option<&str>,
    issuer: Option<&str>,
    mode: Mode,
) -> TsResult<Verified<'a>> {
    if crate::planning::planning() {
        // the planner estimating a plan; the executor's evaluation is the one counted
        return verify_uncounted(token, audience, issuer, mode);
    }
    let result = issuers::counted(|| verify_uncounted(token, audience, issuer, mode));
    count_outcome(&result);
    result
}

/// Count a verification's outcome in `stats()`: accepted, or the reason of a refusal (a token
/// that is not a JWT is `malformed`); any other error counts nothing.
pub(super) fn count_outcome<T>(result: &TsResult<T>) {
    match result {
        Ok(_) => shmem::counters().count(Ok(())),
        Err(TsError::Rejected(r) | TsError::RejectedBecause { reason: r, .. }) => {
            shmem::counters().count(Err(*r))
        }
        Err(TsError::InvalidToken(_)) => shmem::counters().count(Err(Reason::Malformed)),
        Err(_) => {}
    }
}

pub(super) fn verify_uncounted<'a>(
    token: &'a str,
    audience: Option<&str>,
    issuer: Option<&str>,
    mode: Mode,
) -> TsResult<Verified<'a>> {
    let parsed = parse(token)?;
    let alg = header_alg(&parsed)?;
    let hash = jws::token_hash(&parsed);
    let subject = parsed.claims.sub.as_deref();
    // a token of a registered issuer: its keys, algorithms and audiences only, never stored
    let issuer_rules = issuers::rules_for(&parsed)?;
    let kid = match &issuer_rules {
        Some((iss, rules)) => {
            let kid = issuers::authenticate(&parsed, alg, iss, rules)?;
            issuers::check_audiences(&parsed, rules)?;
            kid
        }
        None => pick_key(&parsed, alg, candidates(&parsed, alg)?)?
            .kid
            .clone(),
    };
    let audience = match &issuer_rules {
        Some((_, rules)) if rules.audiences.is_some() => audience.map(str::to_owned),
        _ => setting_or(audience, &gucs::AUDIENCE),
    };
    let issuer = setting_or(issuer, &gucs::ISSUER);
    let policy = Policy {
        now: now_secs(),
        leeway: f64::from(gucs::LEEWAY.get()),
        audience: audience.as_deref(),
        issuer: issuer.as_deref(),
    };
    claims::check_claims(&parsed.claims, &policy).map_err(TsError::Rejected)?;
    // a DPoP-bound token is worth nothing without a proof of its key (RFC 9449 section 7.1),
    // whoever signed it: ours and a registered issuer's alike
    if mode == Mode::Verify && parsed.claims.cnf_jkt.is_some() && gucs::DPOP_ENFORCE.get() {
        return Err(TsError::Rejected(Reason::DpopRequired));
    }
    let status = token_status(&hash, subject)?;
    if let Some((_, true)) = status.stored {
        return Err(TsError::Rejected(Reason::Revoked));
    }
    if let Some(before) = status.subject_revoked_before {
        // A token without iat cannot show it came after the revocation. One whose iat is within
        // the leeway after it may come from a signer whose clock runs ahead, minted before it.
        if parsed
            .claims
            .iat
            .is_none_or(|iat| iat <= before + policy.leeway)
        {
            return Err(TsError::Rejected(Reason::SubjectRevoked));
        }
    }
    // an issuer's `sid` names a session of that provider, not one of ours
    let sid = issuer_rules
        .is_none()
        .then_some(parsed.claims.sid.as_deref())
        .flatten();
    if let Some(sid) = sid {
        if storage::sessions::session_ended(sid)? {
            return Err(TsError::Rejected(Reason::SessionEnded));
        }
    }
    if status.stored.is_none()
        && mode != Mode::Store
        && gucs::REQUIRE_STORED.get()
        && issuer_rules.is_none()
    {
        return Err(TsError::Rejected(Reason::NotStored));
    }
    Ok(Verified {
        parsed,
        kid,
        hash,
        token_id: status.stored.map(|(id, _)| id),
    })
}

pub(super) fn seal_payload(
    id: &[u8; 16],
    payload: &Map<String, Value>,
) -> TsResult<(Vec<u8>, String)> {
    let (_, key) = keyring::current_key()?;
    Ok((seal_json(&key, id, payload)?, key.fingerprint().to_owned()))
}

pub(super) fn new_row_id() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

/// Insert a row for a parsed, authenticated token; the id of the row now holding it.
pub(super) fn store_row(
    parsed: &Parsed,
    hash: &[u8; 32],
    kid: &str,
    revoked: bool,
    reason: Option<&str>,
) -> TsResult<Option<[u8; 16]>> {
    let c = &parsed.claims;
    let exp = c.exp.ok_or(TsError::Rejected(Reason::MissingExp))?;
    let id = new_row_id();
    let (sealed, fingerprint) = seal_payload(&id, &parsed.payload_map())?;
    storage::insert_token(&NewToken {
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
    })
}

/// `jwt_store`: verify, then store; the same token twice gives the same id.
pub fn store(token: &str) -> TsResult<[u8; 16]> {
    ensure_primary("jwt_store")?;
    let _snapshot = WriterSnapshot::push();
    let v = verify(token, None, None, Mode::Store)?;
    if let Some(id) = v.token_id {
        return Ok(id);
    }
    match store_row(&v.parsed, &v.hash, &v.kid, false, None)? {
        Some(id) => Ok(id),
        // stored concurrently by another session between our check and our insert
        None => storage::token_status(&v.hash, None)?
            .stored
            .map(|(id, _)| id)
            .ok_or_else(|| TsError::Internal("token vanished while being stored".into())),
    }
}

pub(super) fn interval_secs(months: i32, days: i32, micros: i64) -> f64 {
    f64::from(months) * 30.0 * 86_400.0 + f64::from(days) * 86_400.0 + micros as f64 / 1e6
}

pub(super) fn signing_row(kid: Option<&str>) -> TsResult<Rc<KeyRow>> {
    // read as verification reads keys: no SQL
    match kid {
        Some(kid) => {
            let row = signing_keys::by_kid(kid)?
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
        None => signing_keys::default_signer()?.ok_or_else(|| TsError::NotInPrerequisiteState {
            message: "no active key can sign".into(),
            hint: Some("Create one with token_store.create_key(kid, alg, key) or token_store.generate_key(kid, alg).".into()),
        }),
    }
}

/// `jwt_issue`: complete the claims, sign, store, return the token. `claims` is jsonb's text.
pub fn issue(claims: &str, ttl: (i32, i32, i64), kid: Option<&str>) -> TsResult<String> {
    issue_with_exp(claims, ttl, kid).map(|(token, _)| token)
}

/// [`issue`], also giving the token's `exp` as it was parsed for storing (so a caller that needs
/// it does not parse the token again).
pub(super) fn issue_with_exp(
    claims: &str,
    ttl: (i32, i32, i64),
    kid: Option<&str>,
) -> TsResult<(String, Option<f64>)> {
    ensure_primary("jwt_issue")?;
    let _snapshot = WriterSnapshot::push();
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
    let key = signing_keys::loaded(&row)?;
    let now = now_secs().floor();
    payload
        .entry("iat")
        .or_insert_with(|| Value::from(now as i64));
    if !payload.contains_key("exp") {
        let exp = (now + ttl).floor();
        if exp > claims::MAX_NUMERIC_DATE {
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
    claims::registered_claims(&payload)
        .map_err(|why| TsError::param("invalid registered claim", format!("the claim {why}")))?;
    let token = jws::sign(&key, &row.kid, &payload).map_err(TsError::Internal)?;
    let parsed = parse(&token)?;
    store_row(&parsed, &jws::token_hash(&parsed), &row.kid, false, None)?.ok_or_else(|| {
        TsError::Internal("a freshly issued token collided with a stored one".into())
    })?;
    let exp = parsed.claims.exp;
    Ok((token, exp))
}

/// The longest `reason` a revocation keeps, in bytes; it is stored in clear.
pub const MAX_REASON_BYTES: usize = 1024;

/// What every revoking function does first: refuse on a standby and an over-long reason, and mark
/// the transaction for `token_store.synchronous_revocation`.
pub(super) fn begin_revocation(what: &'static str, reason: Option<&str>) -> TsResult<()> {
    ensure_primary(what)?;
    match reason {
        Some(r) if r.len() > MAX_REASON_BYTES => Err(TsError::TooLong {
            message: "revoke reason is too long".into(),
            detail: format!(
                "A reason is at most {MAX_REASON_BYTES} bytes; this one is {} bytes.",
                r.len()
            ),
        }),
        _ => {
            replication::revoked();
            Ok(())
        }
    }
}

/// `jwt_revoke`: true if this call revoked it. An unstored, correctly signed token gets a revoked row.
pub fn revoke(token: &str, reason: Option<&str>) -> TsResult<bool> {
    begin_revocation("jwt_revoke", reason)?;
    let _snapshot = WriterSnapshot::push();
    // A stored token is revoked by its hash whatever became of its key (retired, deleted): its
    // exact text is what was stored, so presenting it is proof enough, and a key set back to
    // active later must not bring it back.
    let parsed = parse(token)?;
    let hash = jws::token_hash(&parsed);
    if let Some(changed) = storage::revoke_by_hash(&hash, reason)? {
        return Ok(changed);
    }
    let kid = authenticated_kid(&parsed)?;
    // Without exp the token can never verify, so there is nothing to deny.
    if parsed.claims.exp.is_none() {
        return Ok(false);
    }
    match store_row(&parsed, &hash, &kid, true, reason)? {
        Some(_) => Ok(true),
        None => Ok(storage::revoke_by_hash(&hash, reason)?.unwrap_or(false)),
    }
}

/// `jwt_revoke_id`: true if this call revoked the stored token with this row id.
pub fn revoke_id(id: [u8; 16], reason: Option<&str>) -> TsResult<bool> {
    begin_revocation("jwt_revoke_id", reason)?;
    storage::revoke_by_id(id, reason)
}

/// `jwt_revoke_subject`: revoke the subject's stored tokens and refuse its older ones; end its
/// sessions.
pub fn revoke_subject(subject: &str, reason: Option<&str>) -> TsResult<i64> {
    begin_revocation("jwt_revoke_subject", reason)?;
    if subject.len() > claims::MAX_ID_CLAIM_BYTES {
        // no token carrying it verifies (it is malformed), and the index could not hold it
        return Err(TsError::TooLong {
            message: "subject is too long".into(),
            detail: format!(
                "A sub claim is at most {} bytes; this subject is {} bytes.",
                claims::MAX_ID_CLAIM_BYTES,
                subject.len()
            ),
        });
    }
    // its sessions end too, or their refresh tokens would go on minting access tokens
    if storage::sessions::installed()? {
        storage::sessions::end_subject(subject, None, reason)?;
    }
    storage::revoke_subject(subject, reason)
}
