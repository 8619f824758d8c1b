//! DPoP (RFC 9449): proofs checked by the core crate, their `jti` remembered in the replay cache,
//! and the binding of an access token to the proof's key. Also the revocation events' catch-up.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::tokens::{self, max_token_bytes, Mode};
use super::*;
use crate::storage::dpop as store;
use token_store_core::dpop::{self, Proof, Refusal, Request};

/// What a DPoP check refuses with: the reason, and a sentence that names the problem.
fn rejected(r: Refusal) -> TsError {
    TsError::RejectedBecause {
        reason: r.reason,
        detail: r.detail,
    }
}

/// The request's method and URI as the caller gives them: a bad one is the caller's error (22023),
/// not the client's.
fn check_request(htm: &str, htu: &str) -> TsResult<()> {
    if htm.is_empty() || htm.len() > dpop::MAX_HTM_BYTES {
        return Err(TsError::param(
            "htm must be the request's HTTP method",
            format!("The method given is {} bytes long.", htm.len()),
        ));
    }
    dpop::normalize_htu(htu).map_err(|why| {
        TsError::param("htu must be the request's absolute http or https URI", why)
    })?;
    Ok(())
}

/// A thumbprint as `cnf.jkt` and `dpop_jkt` carry it: base64url of 32 bytes, no padding.
pub fn thumbprint_bytes(jkt: &str) -> Option<[u8; 32]> {
    if jkt.len() != 43 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(jkt).ok()?.try_into().ok()
}

/// Check `proof` against the request and the settings, without the replay cache.
fn check(
    proof: &str,
    htm: &str,
    htu: &str,
    access_token: Option<&str>,
    nonce: Option<&str>,
) -> TsResult<Proof> {
    let req = Request {
        htm,
        htu,
        access_token,
        nonce,
        now: now_secs(),
        max_age: f64::from(gucs::DPOP_MAX_AGE.get().max(0)),
        leeway: f64::from(gucs::LEEWAY.get().max(0)),
        max_bytes: max_token_bytes(),
    };
    dpop::check_proof(proof, &req).map_err(rejected)
}

/// Remember the proof's `jti` for its key as long as the proof could pass its `iat` check; a
/// `jti` already there is a replay.
fn remember(p: &Proof) -> TsResult<()> {
    let jkt = thumbprint_bytes(&p.jkt)
        .ok_or_else(|| TsError::Internal("a thumbprint is not 32 bytes".into()))?;
    let max_age = f64::from(gucs::DPOP_MAX_AGE.get().max(0));
    let leeway = f64::from(gucs::LEEWAY.get().max(0));
    // a proof dated in the future (within the leeway) stays acceptable that much longer
    let expires_at = p.iat_secs.max(now_secs()) + max_age + leeway;
    if store::remember_proof(&jkt, &p.jti, expires_at)? {
        Ok(())
    } else {
        Err(TsError::Rejected(Reason::DpopReplayed))
    }
}

fn answer(p: &Proof) -> Value {
    serde_json::json!({"jkt": p.jkt, "jti": p.jti, "iat": p.iat})
}

/// `dpop_verify`: check a proof (RFC 9449 section 4.3) and remember its `jti`; `{"jkt", "jti", "iat"}`.
pub fn verify_proof(
    proof: &str,
    htm: &str,
    htu: &str,
    access_token: Option<&str>,
    nonce: Option<&str>,
) -> TsResult<Value> {
    ensure_primary("dpop_verify")?;
    check_request(htm, htu)?;
    let p = check(proof, htm, htu, access_token, nonce)?;
    remember(&p)?;
    Ok(answer(&p))
}

/// `jwt_verify_dpop`: the access token as `jwt_verify` checks it, its proof (with `ath`), the
/// binding (`cnf.jkt` is the proof key's thumbprint), then the replay cache, last, so that only a
/// request that passes everything else costs a write. Counted in `stats()` like a verification.
pub fn verify_bound(
    token: &str,
    proof: &str,
    htm: &str,
    htu: &str,
    audience: Option<&str>,
    issuer: Option<&str>,
) -> TsResult<Map<String, Value>> {
    ensure_primary("jwt_verify_dpop")?;
    check_request(htm, htu)?;
    let result = (|| {
        let v = tokens::verify_uncounted(token, audience, issuer, Mode::Dpop)?;
        let p = check(proof, htm, htu, Some(token), None)?;
        let bound = &v.parsed.claims.cnf_jkt;
        if bound.as_ref().and_then(Option::as_deref) != Some(p.jkt.as_str()) {
            return Err(TsError::RejectedBecause {
                reason: Reason::DpopMismatch,
                detail: if bound.is_some() {
                    "The access token is bound to another key than the proof's.".into()
                } else {
                    "The access token is not bound to a DPoP key (it has no cnf.jkt).".into()
                },
            });
        }
        remember(&p)?;
        Ok(v.parsed.payload_map())
    })();
    tokens::count_outcome(&result);
    result
}

/// Delete remembered proofs past their expiry; for the purge round. None before the update to
/// 0.4.0 made the table.
pub fn purge_proofs(limit: i64, grace_s: f64) -> TsResult<u64> {
    if !store::installed()? {
        return Ok(0);
    }
    store::purge_proofs(limit, grace_s)
}
