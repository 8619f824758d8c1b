//! Issuers: tokens of other identity providers, verified with the keys of their JWKS.
//!
//! The verify path reads the issuer's row and its keys under the statement's snapshot (index
//! probes, `storage::issuers`) and keeps parsed keys per backend by content, so a key is never
//! stale: what the table says is what verifies. A verify never touches the network: a token with
//! an unknown `kid` only asks the worker for an early fetch (`worker_issuers::ask`). The fetch
//! itself (`issuer_fetch`) runs in the worker, or in the admin backend that calls `issuer_add` /
//! `issuer_refresh`; `apply` writes its result.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::datum::Interval;

use super::issuer_fetch::{self, Got, Limits};
use super::*;
use crate::storage::issuers::{self as store, FetchState, IssuerPolicy};
use token_store_core::jwks_fetch as rules;
use token_store_core::keys::{load_key, KeyMaterial, LoadedKey};

/// Most parsed issuer keys kept per backend; beyond it the cache starts afresh.
const MAX_CACHED_KEYS: usize = 256;

/// Parsed issuer keys by (alg, SPKI DER): keyed by content, so a key can never be stale.
type ParsedKeys = HashMap<(Alg, Vec<u8>), Rc<LoadedKey>>;

thread_local! {
    static PARSED: RefCell<ParsedKeys> = RefCell::new(HashMap::new());
}

fn parsed_key(alg: Alg, der: &[u8]) -> Option<Rc<LoadedKey>> {
    if let Some(k) = PARSED.with_borrow(|c| c.get(&(alg, der.to_vec())).cloned()) {
        return Some(k);
    }
    let material = KeyMaterial {
        bytes: der.to_vec(),
        can_sign: false,
    };
    let key = Rc::new(load_key(alg, &material).ok()?);
    PARSED.with_borrow_mut(|c| {
        if c.len() >= MAX_CACHED_KEYS {
            c.clear();
        }
        c.insert((alg, der.to_vec()), key.clone());
    });
    Some(key)
}

thread_local! {
    // The registered issuer of the token being verified, for the per-issuer counts.
    static VERIFYING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The rules of the token's issuer when its `iss` is registered; None: the token is one of ours.
pub fn rules_for(parsed: &Parsed) -> TsResult<Option<(String, IssuerPolicy)>> {
    match parsed.claims.iss.as_deref() {
        Some(iss) if !iss.is_empty() && iss.len() <= rules::MAX_URL_BYTES => {
            let found = store::issuer(iss)?.map(|p| (iss.to_owned(), p));
            if found.is_some() {
                VERIFYING.set(Some(iss.to_owned()));
            }
            Ok(found)
        }
        _ => Ok(None),
    }
}

/// Around one counted verification: forget the issuer of the previous one, then count this one
/// for its issuer when it had a registered one.
pub fn counted<T>(verify: impl FnOnce() -> TsResult<T>) -> TsResult<T> {
    VERIFYING.set(None);
    let result = verify();
    if let Some(iss) = VERIFYING.take() {
        match &result {
            Ok(_) => crate::worker_issuers::count(&iss, Ok(())),
            Err(TsError::Rejected(r)) => crate::worker_issuers::count(&iss, Err(*r)),
            Err(_) => {}
        }
    }
    result
}

/// `issuer_verifications`: the outcome counts of an issuer's tokens.
pub fn verifications(issuer: &str) -> Value {
    crate::worker_issuers::counts(issuer)
}

fn max_stale_s() -> f64 {
    f64::from(gucs::ISSUER_MAX_STALE.get().max(0))
}

fn min_refresh_s() -> f64 {
    f64::from(gucs::ISSUER_MIN_REFRESH.get().max(1))
}

/// Check an issuer token's signature with that issuer's keys only; returns the kid that verified
/// it ("" for a key without one).
pub fn authenticate(
    parsed: &Parsed,
    alg: Alg,
    iss: &str,
    policy: &IssuerPolicy,
) -> TsResult<String> {
    let allowed = match &policy.algs {
        Some(list) => list.iter().any(|a| a == alg.as_str()),
        None => true,
    };
    if alg.is_hmac() || !allowed {
        return Err(TsError::Rejected(Reason::AlgorithmNotAllowed));
    }
    if !rules::keys_usable(now_secs(), policy.fresh_until, max_stale_s()) {
        return Err(TsError::Rejected(Reason::IssuerUnavailable));
    }
    let kid = parsed.header.kid.as_deref();
    let rows = store::issuer_keys(iss, kid)?;
    if rows.is_empty() {
        crate::worker_issuers::ask(iss, min_refresh_s());
        return Err(TsError::Rejected(Reason::UnknownKey));
    }
    let mut candidates = Vec::new();
    let mut wrong_alg = false;
    for row in &rows {
        if row.alg.as_deref().is_some_and(|a| a != alg.as_str()) {
            wrong_alg = true;
            continue;
        }
        match parsed_key(alg, &row.material) {
            Some(k) => candidates.push((row, k)),
            // a key of another type (an EC key for an RS256 token)
            None => wrong_alg = true,
        }
    }
    if candidates.is_empty() {
        return Err(TsError::Rejected(if wrong_alg && kid.is_some() {
            Reason::AlgorithmNotAllowed
        } else {
            Reason::UnknownKey
        }));
    }
    if kid.is_none() && candidates.len() > jws::MAX_KIDLESS_CANDIDATES {
        return Err(TsError::Rejected(Reason::UnknownKey));
    }
    for (row, key) in candidates {
        if jws::verify_signature(parsed, &key) {
            return Ok(row.kid.clone().unwrap_or_default());
        }
    }
    Err(TsError::Rejected(Reason::BadSignature))
}

/// The issuer's audiences: the token's `aud` must hold one of them.
pub fn check_audiences(parsed: &Parsed, policy: &IssuerPolicy) -> TsResult<()> {
    match &policy.audiences {
        Some(list) if !list.is_empty() => {
            if parsed.claims.aud.iter().any(|a| list.contains(a)) {
                Ok(())
            } else {
                Err(TsError::Rejected(Reason::WrongAudience))
            }
        }
        _ => Ok(()),
    }
}

// ---- fetching ---------------------------------------------------------------------------------

/// What a fetch brought.
pub enum Outcome {
    Keys {
        discovered: Option<String>,
        etag: Option<String>,
        max_age: Option<u64>,
        keys: Vec<rules::IssuerKey>,
    },
    NotModified {
        max_age: Option<u64>,
    },
    Failed(String),
}

/// The settings a fetch obeys. Inside PostgreSQL (reads settings).
pub fn limits() -> Limits {
    Limits {
        allow_http: gucs::ISSUER_ALLOW_HTTP.get(),
        allowed_hosts: gucs::nonempty(&gucs::ISSUER_ALLOWED_HOSTS).unwrap_or_default(),
        ca_file: gucs::nonempty(&gucs::ISSUER_CA_FILE),
    }
}

/// Fetch an issuer's JWKS (after its discovery document when it has no `jwks_uri`). Network
/// only: runs outside any transaction in the worker.
pub fn fetch(st: &FetchState, limits: &Limits) -> Outcome {
    match fetch_inner(st, limits) {
        Ok(o) => o,
        Err(e) => Outcome::Failed(e),
    }
}

fn fetch_inner(st: &FetchState, limits: &Limits) -> Result<Outcome, String> {
    let (url, discovered) = match &st.jwks_uri {
        Some(u) => (u.clone(), None),
        None => {
            let got = issuer_fetch::get(&rules::discovery_url(&st.issuer), None, limits)
                .map_err(|e| format!("discovery: {e}"))?;
            let Got::Body { body, .. } = got else {
                return Err("discovery: unexpected 304".into());
            };
            let doc = issuer_fetch::json(&body, "discovery document")
                .map_err(|e| format!("discovery: {e}"))?;
            let uri = rules::discovery_jwks_uri(&doc, &st.issuer)
                .map_err(|e| format!("discovery: {e}"))?;
            (uri.clone(), Some(uri))
        }
    };
    // revalidate only what we hold: the same URL, and keys from it
    let same_url = discovered.is_none() || discovered == st.discovered_jwks_uri;
    let etag = st.etag.as_deref().filter(|_| same_url && st.has_keys);
    match issuer_fetch::get(&url, etag, limits).map_err(|e| format!("JWKS: {e}"))? {
        Got::NotModified { max_age } => Ok(Outcome::NotModified { max_age }),
        Got::Body {
            body,
            etag,
            max_age,
        } => {
            let doc = issuer_fetch::json(&body, "JWKS").map_err(|e| format!("JWKS: {e}"))?;
            let keys = rules::issuer_jwks(&doc).map_err(|e| format!("JWK: {e}"))?;
            Ok(Outcome::Keys {
                discovered,
                etag,
                max_age,
                keys,
            })
        }
    }
}

fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 64) as f64 / (u64::MAX as f64 + 1.0)
}

/// Write a fetch's result. Inside a transaction. Returns the error of a failed fetch, and whether
/// anything was written (false: the issuer changed or went meanwhile).
pub fn apply(st: &FetchState, outcome: Outcome) -> TsResult<(Option<String>, bool)> {
    let now = now_secs();
    let min_refresh = min_refresh_s();
    Ok(match outcome {
        Outcome::Keys {
            discovered,
            etag,
            max_age,
            keys,
        } => {
            let until = now + rules::fresh_for(st.refresh_s, max_age, min_refresh);
            let rows: Vec<_> = keys
                .iter()
                .map(|k| {
                    (
                        k.kid.clone(),
                        k.alg.map(Alg::as_str),
                        k.material.bytes.clone(),
                    )
                })
                .collect();
            let written = store::store_keys(
                st,
                discovered.as_deref(),
                etag.as_deref(),
                now,
                until,
                &rows,
            )?;
            (None, written)
        }
        Outcome::NotModified { max_age } => {
            let until = now + rules::fresh_for(st.refresh_s, max_age, min_refresh);
            (None, store::not_modified(st, now, until)?)
        }
        Outcome::Failed(e) => {
            let failures = u32::try_from(st.failures.max(0)).unwrap_or(0) + 1;
            let next = now + rules::backoff(failures, min_refresh, st.refresh_s, jitter());
            let written = store::failed(st, now, next, &e)?;
            (Some(e), written)
        }
    })
}

/// Fetch and write one issuer from an admin backend; a failure is a WARNING, not an error (the
/// issuer stays registered and the worker tries again).
fn fetch_now(issuer: &str) -> TsResult<()> {
    let Some(st) = store::state(issuer)? else {
        return Err(TsError::UndefinedObject(format!(
            "issuer \"{issuer}\" is not registered"
        )));
    };
    let outcome = fetch(&st, &limits());
    if let (Some(e), _) = apply(&st, outcome)? {
        crate::error::warning(
            format!("the keys of issuer \"{issuer}\" could not be fetched"),
            e,
            "The issuer stays registered; the worker tries again, and the issuers view shows the latest error.",
        );
    }
    Ok(())
}

fn check_arg(what: &str, v: &str) -> TsResult<()> {
    if v.is_empty() || v.len() > rules::MAX_URL_BYTES {
        return Err(TsError::param(
            format!("invalid {what}"),
            format!("An {what} is 1 to {} bytes.", rules::MAX_URL_BYTES),
        ));
    }
    Ok(())
}

/// `issuer_add`: register or update an issuer, fetch its keys now, return its view row.
pub fn add(
    issuer: &str,
    jwks_uri: Option<&str>,
    audiences: Option<Vec<Option<String>>>,
    algs: Option<Vec<Option<String>>>,
    refresh: Interval,
) -> TsResult<Value> {
    ensure_primary("issuer_add")?;
    check_arg("issuer", issuer)?;
    let limits = limits();
    let url = match jwks_uri {
        Some(u) => {
            check_arg("jwks_uri", u)?;
            u.to_owned()
        }
        None => rules::discovery_url(issuer),
    };
    issuer_fetch::check_url(&url, &limits).map_err(|why| {
        TsError::param(
            if jwks_uri.is_some() {
                "invalid jwks_uri"
            } else {
                "the issuer is not a URL that OpenID Connect discovery can use"
            },
            format!("{why}."),
        )
    })?;
    let audiences = match audiences {
        None => None,
        Some(list) => {
            let list: Vec<String> = list.into_iter().flatten().collect();
            if list.is_empty() || list.iter().any(String::is_empty) {
                return Err(TsError::param(
                    "invalid audiences",
                    "Give null (no audience of its own) or a non-empty array of non-empty strings.",
                ));
            }
            Some(list)
        }
    };
    let algs = match algs {
        None => None,
        Some(list) => {
            let mut out = Vec::new();
            for a in list.into_iter().flatten() {
                let alg = keys::parse_alg(&a)?;
                if alg.is_hmac() {
                    return Err(TsError::param(
                        format!("algorithm {a} is not allowed for an issuer"),
                        "An issuer's tokens are checked with its published public keys; HS256, HS384 and HS512 would make a public key a shared secret.",
                    ));
                }
                out.push(alg.as_str().to_owned());
            }
            if out.is_empty() {
                return Err(TsError::param(
                    "invalid algs",
                    "Give null (every asymmetric algorithm) or a non-empty array.",
                ));
            }
            Some(out)
        }
    };
    let secs = super::tokens::interval_secs(refresh.months(), refresh.days(), refresh.micros());
    if secs.is_nan() || secs <= 0.0 {
        return Err(TsError::param(
            "refresh must be positive",
            format!("The refresh given is {secs} seconds."),
        ));
    }
    store::upsert(issuer, jwks_uri, audiences, algs, refresh)?;
    fetch_now(issuer)?;
    store::view_rows(Some(issuer))?
        .into_iter()
        .next()
        .ok_or_else(|| TsError::Internal("an issuer vanished while being added".into()))
}

/// `issuer_remove`: true if it was registered.
pub fn remove(issuer: &str) -> TsResult<bool> {
    ensure_primary("issuer_remove")?;
    store::remove(issuer)
}

/// `issuer_refresh`: fetch one issuer (or all) now; their view rows.
pub fn refresh(issuer: Option<&str>) -> TsResult<Value> {
    ensure_primary("issuer_refresh")?;
    match issuer {
        Some(i) => fetch_now(i)?,
        None => {
            for st in store::all_states()? {
                fetch_now(&st.issuer)?;
            }
        }
    }
    Ok(Value::Array(store::view_rows(issuer)?))
}
