//! Sender-constrained tokens (DPoP, RFC 9449) and revocation events: dpop_verify,
//! jwt_verify_dpop, revocations_since and the trigger that announces revocations.

use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use crate::engine::{dpop, events};
use crate::error::OrRaise;
use crate::logging::guarded;

/// Check a DPoP proof (RFC 9449 section 4.3) for a request and remember its `jti`:
/// `{"jkt", "jti", "iat"}`, or an ERROR saying why it is refused.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn dpop_verify(
    proof: Option<&str>,
    htm: Option<&str>,
    htu: Option<&str>,
    access_token: default!(Option<&str>, "NULL"),
    nonce: default!(Option<&str>, "NULL"),
) -> Option<JsonB> {
    let (proof, htm, htu) = (proof?, htm?, htu?);
    Some(JsonB(guarded(|| {
        dpop::verify_proof(proof, htm, htu, access_token, nonce).or_raise()
    })))
}

/// `jwt_verify` of a DPoP-bound access token, with the proof of its key for this request: the
/// verified claims, or an ERROR saying why it is refused.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn jwt_verify_dpop(
    access_token: Option<&str>,
    proof: Option<&str>,
    htm: Option<&str>,
    htu: Option<&str>,
    audience: default!(Option<&str>, "NULL"),
    issuer: default!(Option<&str>, "NULL"),
) -> Option<JsonB> {
    let (token, proof, htm, htu) = (access_token?, proof?, htm?, htu?);
    Some(JsonB(Value::Object(guarded(|| {
        dpop::verify_bound(token, proof, htm, htu, audience, issuer).or_raise()
    }))))
}

/// The revocations, subject revocations, session ends and key state changes at or after `since`
/// that the tables still hold (until the purge removes their rows), oldest first.
#[allow(clippy::type_complexity)]
#[pg_extern(security_definer, stable)]
#[search_path(pg_catalog, pg_temp)]
fn revocations_since(
    since: TimestampWithTimeZone,
) -> TableIterator<
    'static,
    (
        name!(event, String),
        name!(token_id, Option<Uuid>),
        name!(jti, Option<String>),
        name!(sub, Option<String>),
        name!(sid, Option<Uuid>),
        name!(kid, Option<String>),
        name!(at, TimestampWithTimeZone),
    ),
> {
    let rows = guarded(|| events::since(since).or_raise());
    TableIterator::new(
        rows.into_iter()
            .map(|r| (r.event, r.token_id, r.jti, r.sub, r.sid, r.kid, r.at)),
    )
}

/// Row trigger on the tables that hold revocations: announces the change on
/// `token_store.notify_channel`, at commit.
#[pg_trigger]
fn revocation_event<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, PgHeapTupleError> {
    guarded(|| events::on_change(trigger).or_raise());
    Ok(None)
}
