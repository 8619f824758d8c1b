//! Issuers: issuer_add, issuer_remove, issuer_refresh.

use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::engine::issuers;
use crate::error::OrRaise;
use crate::logging::guarded;

/// Register (or update) an identity provider whose tokens are verified with the keys of its JWKS,
/// and fetch them now; its row of the `issuers` view. `jwks_uri` null: OpenID Connect discovery.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn issuer_add(
    issuer: Option<&str>,
    jwks_uri: default!(Option<&str>, "NULL"),
    audiences: default!(Option<Vec<Option<String>>>, "NULL"),
    algs: default!(Option<Vec<Option<String>>>, "NULL"),
    refresh: default!(Option<Interval>, "'1 hour'"),
) -> Option<JsonB> {
    let (issuer, refresh) = (issuer?, refresh?);
    Some(JsonB(guarded(|| {
        issuers::add(issuer, jwks_uri, audiences, algs, refresh).or_raise()
    })))
}

/// Forget an issuer and its keys; true if it was registered.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn issuer_remove(issuer: Option<&str>) -> Option<bool> {
    let issuer = issuer?;
    Some(guarded(|| issuers::remove(issuer).or_raise()))
}

/// The verification outcomes of an issuer's tokens since the server started (`ok` and each reason),
/// as `stats()` counts them for all tokens; zeros without a preloaded library.
#[pg_extern(security_definer, stable)]
#[search_path(pg_catalog, pg_temp)]
fn issuer_verifications(issuer: &str) -> JsonB {
    JsonB(guarded(|| issuers::verifications(issuer)))
}

/// Fetch one issuer's keys (or every issuer's) now; the rows of the `issuers` view after it.
#[pg_extern(security_definer, volatile)]
#[search_path(pg_catalog, pg_temp)]
fn issuer_refresh(issuer: default!(Option<&str>, "NULL")) -> JsonB {
    JsonB(guarded(|| issuers::refresh(issuer).or_raise()))
}
