//! Issuers' tables: the verify path's index probes (no SQL, under the statement's snapshot, as in
//! `probe`) and the fixed statements of the admin functions and the worker.
//!
//! The probes are `storage::probe`'s, on relations `cache::relations` resolved and validated with
//! the others. A database whose schema predates the issuers (before `ALTER EXTENSION token_store
//! UPDATE` to 0.4.0) has no issuers: every token keeps the rules of its own keys.

use pgrx::datum::Interval;
use pgrx::pg_sys::PgBuiltInOids as T;
use pgrx::IntoDatum;

use super::{probe, read, write};
use crate::error::TsResult;

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_S: f64 = 946_684_800.0;

/// What the verify path needs of a registered issuer.
#[derive(Debug, Default)]
pub struct IssuerPolicy {
    pub audiences: Option<Vec<String>>,
    pub algs: Option<Vec<String>>,
    /// When the keys of its latest good fetch were due again (epoch seconds); None: no good
    /// fetch yet.
    pub fresh_until: Option<f64>,
}

/// One stored key of an issuer.
#[derive(Debug)]
pub struct IssuerKeyRow {
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub material: Vec<u8>,
}

fn strings(v: Option<Vec<Option<String>>>) -> Option<Vec<String>> {
    v.map(|v| v.into_iter().flatten().collect())
}

/// The registered issuer `iss`, under the statement's snapshot; None when it is not registered
/// (or this database has no issuer tables yet).
pub fn issuer(iss: &str) -> TsResult<Option<IssuerPolicy>> {
    let arg = iss.into_datum().expect("text datum");
    let mut found = None;
    probe::scan(
        |r| r.issuers.map(|i| i.providers),
        Some(arg),
        |r, row| {
            let Some(i) = r.issuers else { return false };
            found = Some(IssuerPolicy {
                audiences: strings(row.get::<Vec<Option<String>>>(i.audiences)),
                algs: strings(row.get::<Vec<Option<String>>>(i.algs)),
                fresh_until: row
                    .get::<i64>(i.fresh_until)
                    .map(|us| us as f64 / 1e6 + PG_EPOCH_OFFSET_S),
            });
            false
        },
    )?;
    Ok(found)
}

/// The keys of issuer `iss` whose kid is `kid` (every key when `kid` is None), under the
/// statement's snapshot.
pub fn issuer_keys(iss: &str, kid: Option<&str>) -> TsResult<Vec<IssuerKeyRow>> {
    let arg = iss.into_datum().expect("text datum");
    let mut out = Vec::new();
    probe::scan(
        |r| r.issuers.map(|i| i.keys),
        Some(arg),
        |r, row| {
            let Some(i) = r.issuers else { return false };
            let row_kid = row.get::<String>(i.kid);
            if kid.is_none() || row_kid.as_deref() == kid {
                out.push(IssuerKeyRow {
                    kid: row_kid,
                    alg: row.get::<String>(i.alg),
                    material: row.get::<Vec<u8>>(i.material).unwrap_or_default(),
                });
            }
            true
        },
    )?;
    Ok(out)
}

// ---- statements (admin functions and the worker) --------------------------------------------
// Every name is schema-qualified: the worker runs them with search_path pinned to pg_catalog.

/// Register an issuer or change its settings; a changed issuer is fetched afresh (no ETag).
pub fn upsert(
    issuer: &str,
    jwks_uri: Option<&str>,
    audiences: Option<Vec<String>>,
    algs: Option<Vec<String>>,
    refresh: Interval,
) -> TsResult<()> {
    const SQL: &str = "INSERT INTO token_store.identity_providers AS p \
           (issuer, jwks_uri, audiences, algs, refresh) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (issuer) DO UPDATE SET jwks_uri = excluded.jwks_uri, \
           audiences = excluded.audiences, algs = excluded.algs, refresh = excluded.refresh, \
           etag = NULL, discovered_jwks_uri = NULL, next_fetch_at = pg_catalog.now()";
    write(
        SQL,
        &[
            T::TEXTOID,
            T::TEXTOID,
            T::TEXTARRAYOID,
            T::TEXTARRAYOID,
            T::INTERVALOID,
        ],
        &[
            issuer.into(),
            jwks_uri.into(),
            audiences.into(),
            algs.into(),
            refresh.into(),
        ],
        |_| Ok(()),
    )
}

/// Forget an issuer (its keys go by the foreign key's cascade); false when not registered.
pub fn remove(issuer: &str) -> TsResult<bool> {
    const SQL: &str = "DELETE FROM token_store.identity_providers WHERE issuer = $1";
    write(SQL, &[T::TEXTOID], &[issuer.into()], |t| Ok(t.len() == 1))
}

/// An issuer as the fetcher needs it.
#[derive(Debug, Clone)]
pub struct FetchState {
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub discovered_jwks_uri: Option<String>,
    pub etag: Option<String>,
    pub refresh_s: f64,
    pub failures: i32,
    pub attempted_at: Option<f64>,
    pub next_fetch_at: f64,
    pub has_keys: bool,
}

/// `SELECT <fetch state columns> FROM token_store.identity_providers p <rest>`.
macro_rules! state_select {
    ($rest:literal) => {
        concat!(
            "SELECT p.issuer, p.jwks_uri, p.discovered_jwks_uri, p.etag, \
               pg_catalog.date_part('epoch', p.refresh), p.failures, \
               pg_catalog.date_part('epoch', p.attempted_at), \
               pg_catalog.date_part('epoch', p.next_fetch_at), \
               EXISTS (SELECT FROM token_store.issuer_keys k WHERE k.issuer = p.issuer) \
             FROM token_store.identity_providers p ",
            $rest
        )
    };
}

fn states(t: pgrx::spi::SpiTupleTable<'_>) -> TsResult<Vec<FetchState>> {
    let mut out = Vec::new();
    for row in t {
        out.push(FetchState {
            issuer: row.get::<String>(1)?.unwrap_or_default(),
            jwks_uri: row.get::<String>(2)?,
            discovered_jwks_uri: row.get::<String>(3)?,
            etag: row.get::<String>(4)?,
            refresh_s: row.get::<f64>(5)?.unwrap_or(3600.0),
            failures: row.get::<i32>(6)?.unwrap_or(0),
            attempted_at: row.get::<f64>(7)?,
            next_fetch_at: row.get::<f64>(8)?.unwrap_or(0.0),
            has_keys: row.get::<bool>(9)?.unwrap_or(false),
        });
    }
    Ok(out)
}

/// Every registered issuer's fetch state, by issuer.
pub fn all_states() -> TsResult<Vec<FetchState>> {
    const SQL: &str = state_select!("ORDER BY p.issuer");
    read(SQL, &[], &[], states)
}

/// One issuer's fetch state.
pub fn state(issuer: &str) -> TsResult<Option<FetchState>> {
    const SQL: &str = state_select!("WHERE p.issuer = $1");
    read(SQL, &[T::TEXTOID], &[issuer.into()], |t| {
        Ok(states(t)?.into_iter().next())
    })
}

// Every result is written only while the issuer is still registered with the same `jwks_uri`
// as when its fetch started (an `issuer_add` meanwhile wins): `WHERE issuer = $1 AND jwks_uri IS
// NOT DISTINCT FROM $2`.

/// A good fetch with a new JWKS: the keys replace the issuer's old ones. False when the issuer
/// changed or went meanwhile (nothing written).
pub fn store_keys(
    st: &FetchState,
    discovered: Option<&str>,
    etag: Option<&str>,
    now: f64,
    fresh_until: f64,
    keys: &[(Option<String>, Option<&'static str>, Vec<u8>)],
) -> TsResult<bool> {
    const UPDATE: &str = "UPDATE token_store.identity_providers SET discovered_jwks_uri = $3, \
           etag = $4, fetched_at = pg_catalog.to_timestamp($5), attempted_at = pg_catalog.to_timestamp($5), \
           fresh_until = pg_catalog.to_timestamp($6), next_fetch_at = pg_catalog.to_timestamp($6), \
           failures = 0 \
         WHERE issuer = $1 AND jwks_uri IS NOT DISTINCT FROM $2";
    const DELETE: &str = "DELETE FROM token_store.issuer_keys WHERE issuer = $1";
    const INSERT: &str =
        "INSERT INTO token_store.issuer_keys (issuer, position, kid, alg, material) \
         VALUES ($1, $2, $3, $4, $5)";
    let updated = write(
        UPDATE,
        &[
            T::TEXTOID,
            T::TEXTOID,
            T::TEXTOID,
            T::TEXTOID,
            T::FLOAT8OID,
            T::FLOAT8OID,
        ],
        &[
            st.issuer.as_str().into(),
            st.jwks_uri.as_deref().into(),
            discovered.into(),
            etag.into(),
            now.into(),
            fresh_until.into(),
        ],
        |t| Ok(t.len() == 1),
    )?;
    if !updated {
        return Ok(false);
    }
    write(DELETE, &[T::TEXTOID], &[st.issuer.as_str().into()], |_| {
        Ok(())
    })?;
    for (i, (kid, alg, material)) in keys.iter().enumerate() {
        write(
            INSERT,
            &[T::TEXTOID, T::INT4OID, T::TEXTOID, T::TEXTOID, T::BYTEAOID],
            &[
                st.issuer.as_str().into(),
                (i as i32).into(),
                kid.as_deref().into(),
                (*alg).into(),
                material.as_slice().into(),
            ],
            |_| Ok(()),
        )?;
    }
    Ok(true)
}

/// A good fetch that changed nothing (304 Not Modified): the keys stay, the clock moves.
pub fn not_modified(st: &FetchState, now: f64, fresh_until: f64) -> TsResult<bool> {
    const SQL: &str = "UPDATE token_store.identity_providers SET \
           fetched_at = pg_catalog.to_timestamp($3), attempted_at = pg_catalog.to_timestamp($3), \
           fresh_until = pg_catalog.to_timestamp($4), next_fetch_at = pg_catalog.to_timestamp($4), \
           failures = 0 \
         WHERE issuer = $1 AND jwks_uri IS NOT DISTINCT FROM $2";
    write(
        SQL,
        &[T::TEXTOID, T::TEXTOID, T::FLOAT8OID, T::FLOAT8OID],
        &[
            st.issuer.as_str().into(),
            st.jwks_uri.as_deref().into(),
            now.into(),
            fresh_until.into(),
        ],
        |t| Ok(t.len() == 1),
    )
}

/// A failed fetch: the keys stay (for `issuer_max_stale`), the error is recorded, the next try
/// waits `next_at`.
pub fn failed(st: &FetchState, now: f64, next_at: f64, error: &str) -> TsResult<bool> {
    const SQL: &str = "UPDATE token_store.identity_providers SET \
           attempted_at = pg_catalog.to_timestamp($3), next_fetch_at = pg_catalog.to_timestamp($4), \
           failures = failures + 1, last_error = $5, last_error_at = pg_catalog.to_timestamp($3) \
         WHERE issuer = $1 AND jwks_uri IS NOT DISTINCT FROM $2";
    write(
        SQL,
        &[
            T::TEXTOID,
            T::TEXTOID,
            T::FLOAT8OID,
            T::FLOAT8OID,
            T::TEXTOID,
        ],
        &[
            st.issuer.as_str().into(),
            st.jwks_uri.as_deref().into(),
            now.into(),
            next_at.into(),
            error.into(),
        ],
        |t| Ok(t.len() == 1),
    )
}

/// The rows of the `issuers` view (one issuer, or all), as JSON objects.
pub fn view_rows(issuer: Option<&str>) -> TsResult<Vec<serde_json::Value>> {
    const SQL: &str = "SELECT pg_catalog.to_jsonb(i) FROM token_store.issuers i \
         WHERE $1::text IS NULL OR i.issuer = $1 ORDER BY i.issuer";
    read(SQL, &[T::TEXTOID], &[issuer.into()], |t| {
        let mut out = Vec::new();
        for row in t {
            if let Some(j) = row.get::<pgrx::JsonB>(1)? {
                out.push(j.0);
            }
        }
        Ok(out)
    })
}
