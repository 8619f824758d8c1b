//! What the extension reads and writes in its tables.
//!
//! This module and `sessions` hold all SQL the extension runs: fixed statements with bind
//! parameters, planned once per backend. The read path (verification) runs none: `direct` reads
//! the rows it needs by index probes, built on the scan primitives of `probe`.

pub mod direct;
pub mod probe;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::datum::{DatumWithOid, Uuid};
use pgrx::pg_sys::{PgBuiltInOids as T, PgOid};
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData, SpiTupleTable};
use pgrx::{JsonB, Spi};

use crate::error::{TsError, TsResult};

pub mod dpop;
pub mod issuers;
pub mod sessions;

/// `SELECT <key columns> FROM token_store.signing_keys <rest>`, built at compile time.
macro_rules! key_select {
    ($rest:literal) => {
        concat!(
            "SELECT kid, alg, state, can_sign, version, material, key_fingerprint \
             FROM token_store.signing_keys ",
            $rest
        )
    };
}

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

fn plan(
    client: &SpiClient<'_>,
    sql: &'static str,
    types: &[T],
    mutating: bool,
) -> TsResult<Rc<OwnedPreparedStatement>> {
    if let Some(p) = PLANS.with_borrow(|m| m.get(sql).cloned()) {
        return Ok(p);
    }
    let types: Vec<PgOid> = types.iter().map(|t| PgOid::BuiltIn(*t)).collect();
    let prepared = if mutating {
        client.prepare_mut(sql, &types)?
    } else {
        client.prepare(sql, &types)?
    };
    let p = Rc::new(prepared.keep());
    PLANS.with_borrow_mut(|m| m.insert(sql, p.clone()));
    Ok(p)
}

/// Run a read-only statement. Takes no transaction id, so it works on a hot standby.
fn read<R>(
    sql: &'static str,
    types: &[T],
    args: &[DatumWithOid],
    f: impl FnOnce(SpiTupleTable<'_>) -> TsResult<R>,
) -> TsResult<R> {
    Spi::connect(|client| {
        let p = plan(client, sql, types, false)?;
        f(client.select(&*p, None, args)?)
    })
}

/// Run a writing statement. The engine has refused it already on a hot standby (25006).
fn write<R>(
    sql: &'static str,
    types: &[T],
    args: &[DatumWithOid],
    f: impl FnOnce(SpiTupleTable<'_>) -> TsResult<R>,
) -> TsResult<R> {
    Spi::connect_mut(|client| {
        let p = plan(client, sql, types, true)?;
        f(client.update(&*p, None, args)?)
    })
}

fn uuid(bytes: [u8; 16]) -> Uuid {
    Uuid::from_bytes(bytes)
}

/// A `signing_keys` row, material still sealed.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub kid: String,
    pub alg: String,
    pub state: String,
    pub can_sign: bool,
    pub version: i64,
    pub material: Vec<u8>,
    pub fingerprint: String,
}

/// The key columns of `row` from ordinal `at` on (NULL kid: no key).
fn key_row_at(row: &SpiHeapTupleData<'_>, at: usize) -> TsResult<Option<KeyRow>> {
    let Some(kid) = row.get::<String>(at)? else {
        return Ok(None);
    };
    let get_s = |i| row.get::<String>(at + i).map(Option::unwrap_or_default);
    Ok(Some(KeyRow {
        kid,
        alg: get_s(1)?,
        state: get_s(2)?,
        can_sign: row.get::<bool>(at + 3)?.unwrap_or(false),
        version: row.get::<i64>(at + 4)?.unwrap_or(0),
        material: row.get::<Vec<u8>>(at + 5)?.unwrap_or_default(),
        fingerprint: get_s(6)?,
    }))
}

fn key_rows(table: SpiTupleTable<'_>) -> TsResult<Vec<KeyRow>> {
    let mut out = Vec::new();
    for row in table {
        out.extend(key_row_at(&row, 1)?);
    }
    Ok(out)
}

/// The key named `kid`, whatever its state.
pub fn key_by_kid(kid: &str) -> TsResult<Option<KeyRow>> {
    const SQL: &str = key_select!("WHERE kid = $1");
    read(SQL, &[T::TEXTOID], &[kid.into()], |t| {
        Ok(key_rows(t)?.into_iter().next())
    })
}

/// A key to insert.
pub struct NewKey<'a> {
    pub kid: &'a str,
    pub alg: &'a str,
    pub state: &'a str,
    pub can_sign: bool,
    pub material: &'a [u8],
    pub fingerprint: &'a str,
    /// The public JWK served by `jwks()`, for asymmetric keys.
    pub public_jwk: Option<&'a serde_json::Value>,
}

/// Insert a key; false when the kid is taken.
pub fn insert_key(k: &NewKey) -> TsResult<bool> {
    const SQL: &str = "INSERT INTO token_store.signing_keys \
                         (kid, alg, state, can_sign, material, key_fingerprint, public_jwk) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (kid) DO NOTHING";
    write(
        SQL,
        &[
            T::TEXTOID,
            T::TEXTOID,
            T::TEXTOID,
            T::BOOLOID,
            T::BYTEAOID,
            T::TEXTOID,
            T::JSONBOID,
        ],
        &[
            k.kid.into(),
            k.alg.into(),
            k.state.into(),
            k.can_sign.into(),
            k.material.into(),
            k.fingerprint.into(),
            k.public_jwk.map(|j| JsonB(j.clone())).into(),
        ],
        |t| Ok(t.len() == 1),
    )
}

/// Public JWKs of every non-retired asymmetric key, oldest first.
pub fn public_jwks() -> TsResult<Vec<serde_json::Value>> {
    const SQL: &str = "SELECT public_jwk FROM token_store.signing_keys \
                       WHERE state <> 'retired' AND public_jwk IS NOT NULL ORDER BY created_at, kid";
    read(SQL, &[], &[], |t| {
        let mut out = Vec::new();
        for row in t {
            if let Some(j) = row.get::<JsonB>(1)? {
                out.push(j.0);
            }
        }
        Ok(out)
    })
}

/// Change a key's state; false when no such key.
pub fn set_key_state(kid: &str, state: &str) -> TsResult<bool> {
    const SQL: &str = "UPDATE token_store.signing_keys \
                       SET state = $2, version = version + 1, updated_at = now() WHERE kid = $1";
    write(
        SQL,
        &[T::TEXTOID, T::TEXTOID],
        &[kid.into(), state.into()],
        |t| Ok(t.len() == 1),
    )
}

/// What the table says about a token and its subject.
#[derive(Debug, Default)]
pub struct TokenStatus {
    /// The row's id and whether it is revoked, when stored.
    pub stored: Option<([u8; 16], bool)>,
    /// Subject revocation time (epoch seconds), when the subject was revoked.
    pub subject_revoked_before: Option<f64>,
}

/// The one row a status query always returns (it selects FROM a one-row relation).
fn only_row(table: SpiTupleTable<'_>) -> TsResult<SpiHeapTupleData<'_>> {
    table
        .into_iter()
        .next()
        .ok_or_else(|| TsError::Internal("a status query returned no row".into()))
}

/// Columns 1-3 of a status query: token id, revoked, subject revocation time.
fn status_at(row: &SpiHeapTupleData<'_>) -> TsResult<TokenStatus> {
    let stored = match row.get::<Uuid>(1)? {
        Some(id) => Some((*id.as_bytes(), row.get::<bool>(2)?.unwrap_or(false))),
        None => None,
    };
    Ok(TokenStatus {
        stored,
        subject_revoked_before: row.get::<f64>(3)?,
    })
}

/// Look a token up by hash, and its subject in the subject revocations, in one statement.
pub fn token_status(hash: &[u8; 32], subject: Option<&str>) -> TsResult<TokenStatus> {
    const SQL: &str = "SELECT t.id, t.revoked_at IS NOT NULL, \
           (SELECT extract(epoch FROM s.revoked_before)::float8 \
              FROM token_store.subject_revocations s WHERE s.subject = $2) \
         FROM (SELECT 1) AS one LEFT JOIN token_store.tokens t ON t.token_hash = $1";
    read(
        SQL,
        &[T::BYTEAOID, T::TEXTOID],
        &[hash.as_slice().into(), subject.into()],
        |t| status_at(&only_row(t)?),
    )
}

/// A row to insert into `tokens`.
pub struct NewToken<'a> {
    pub id: [u8; 16],
    pub hash: &'a [u8; 32],
    pub jti: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub kid: Option<&'a str>,
    pub issued_at: Option<f64>,
    pub not_before: Option<f64>,
    pub expires_at: f64,
    pub revoked: bool,
    pub revoke_reason: Option<&'a str>,
    pub payload: &'a [u8],
    pub fingerprint: &'a str,
}

/// Insert a token row. `None` when a row with the same hash already exists.
pub fn insert_token(t: &NewToken) -> TsResult<Option<[u8; 16]>> {
    const SQL: &str = "INSERT INTO token_store.tokens (id, token_hash, jti, subject, issuer, kid, \
             issued_at, not_before, expires_at, revoked_at, revoke_reason, payload, key_fingerprint) \
         VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7), to_timestamp($8), to_timestamp($9), \
             CASE WHEN $10 THEN now() END, $11, $12, $13) \
         ON CONFLICT (token_hash) DO NOTHING RETURNING id";
    write(
        SQL,
        &[
            T::UUIDOID,
            T::BYTEAOID,
            T::TEXTOID,
            T::TEXTOID,
            T::TEXTOID,
            T::TEXTOID,
            T::FLOAT8OID,
            T::FLOAT8OID,
            T::FLOAT8OID,
            T::BOOLOID,
            T::TEXTOID,
            T::BYTEAOID,
            T::TEXTOID,
        ],
        &[
            uuid(t.id).into(),
            t.hash.as_slice().into(),
            t.jti.into(),
            t.subject.into(),
            t.issuer.into(),
            t.kid.into(),
            t.issued_at.into(),
            t.not_before.into(),
            t.expires_at.into(),
            t.revoked.into(),
            t.revoke_reason.into(),
            t.payload.into(),
            t.fingerprint.into(),
        ],
        |r| {
            Ok(if r.is_empty() {
                None
            } else {
                r.first().get::<Uuid>(1)?.map(|u| *u.as_bytes())
            })
        },
    )
}

/// Mark the token with this hash revoked. `None`: not stored; `Some(changed)` otherwise.
pub fn revoke_by_hash(hash: &[u8; 32], reason: Option<&str>) -> TsResult<Option<bool>> {
    const SQL: &str = "WITH t AS (SELECT id, revoked_at FROM token_store.tokens WHERE token_hash = $1 FOR UPDATE), \
              u AS (UPDATE token_store.tokens SET revoked_at = now(), revoke_reason = $2 \
                    WHERE id = (SELECT id FROM t WHERE revoked_at IS NULL) RETURNING 1) \
         SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM u)";
    write(
        SQL,
        &[T::BYTEAOID, T::TEXTOID],
        &[hash.as_slice().into(), reason.into()],
        |r| {
            let row = r.first();
            let (found, changed) = (
                row.get::<i64>(1)?.unwrap_or(0),
                row.get::<i64>(2)?.unwrap_or(0),
            );
            Ok((found > 0).then_some(changed > 0))
        },
    )
}

/// Revoke by row id; true if this call revoked it.
pub fn revoke_by_id(id: [u8; 16], reason: Option<&str>) -> TsResult<bool> {
    const SQL: &str = "UPDATE token_store.tokens SET revoked_at = now(), revoke_reason = $2 \
                       WHERE id = $1 AND revoked_at IS NULL";
    write(
        SQL,
        &[T::UUIDOID, T::TEXTOID],
        &[uuid(id).into(), reason.into()],
        |t| Ok(t.len() == 1),
    )
}

/// Revoke every stored token of `subject` and refuse older ones from now on; returns rows revoked.
pub fn revoke_subject(subject: &str, reason: Option<&str>) -> TsResult<i64> {
    const SQL: &str = "WITH r AS (UPDATE token_store.tokens SET revoked_at = now(), revoke_reason = $2 \
                    WHERE subject = $1 AND revoked_at IS NULL RETURNING 1), \
              s AS (INSERT INTO token_store.subject_revocations AS sr (subject, revoked_before, reason) \
                    VALUES ($1, now(), $2) ON CONFLICT (subject) DO UPDATE \
                    SET revoked_before = greatest(sr.revoked_before, excluded.revoked_before), \
                        reason = excluded.reason RETURNING 1) \
         SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM s)";
    write(
        SQL,
        &[T::TEXTOID, T::TEXTOID],
        &[subject.into(), reason.into()],
        |t| Ok(t.first().get::<i64>(1)?.unwrap_or(0)),
    )
}

/// The sealed payload and its key fingerprint of row `id`.
pub fn payload(id: [u8; 16]) -> TsResult<Option<(Vec<u8>, String)>> {
    const SQL: &str = "SELECT payload, key_fingerprint FROM token_store.tokens WHERE id = $1";
    read(SQL, &[T::UUIDOID], &[uuid(id).into()], |t| {
        if t.is_empty() {
            return Ok(None);
        }
        let row = t.first();
        Ok(Some((
            row.get::<Vec<u8>>(1)?.unwrap_or_default(),
            row.get::<String>(2)?.unwrap_or_default(),
        )))
    })
}

// The purge statements run in purge() and in purge_expired() (which the purge worker calls as
// token_store_purge), both SECURITY DEFINER: they
// name every function, operator and type by schema, so that a search_path set by a database owner
// can never put its own objects in their place; and they lock rows with SKIP LOCKED, so that no
// application transaction ever makes them wait.

/// Delete up to `limit` rows expired more than `grace_s` seconds ago, oldest first, skipping locked
/// rows. Revoked rows stay until `revoked_grace_s` has passed too, so a token still inside the
/// leeway after its `exp` cannot come back to life in deny-list mode. `from` (epoch seconds) skips
/// what earlier batches of the same round already passed, so a batch does not re-walk the index
/// entries of rows deleted before it. Returns the count and the last `expires_at` reached.
pub fn purge_batch(
    limit: i64,
    grace_s: f64,
    revoked_grace_s: f64,
    from: Option<f64>,
) -> TsResult<(u64, Option<f64>)> {
    // Rows are addressed by ctid (they stay locked, so it is stable): no join back by id.
    const SQL: &str = "WITH gone AS (DELETE FROM token_store.tokens \
           WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY( \
                 SELECT ctid FROM token_store.tokens \
                  WHERE expires_at OPERATOR(pg_catalog.<) \
                          (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $2)) \
                    AND expires_at OPERATOR(pg_catalog.>=) \
                          COALESCE(pg_catalog.to_timestamp($4), '-infinity'::pg_catalog.timestamptz) \
                    AND (revoked_at IS NULL OR expires_at OPERATOR(pg_catalog.<) \
                          (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $3))) \
                  ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)) \
           RETURNING expires_at) \
         SELECT pg_catalog.count(*), \
                pg_catalog.date_part('epoch', pg_catalog.max(expires_at))::pg_catalog.float8 FROM gone";
    write(
        SQL,
        &[T::INT8OID, T::FLOAT8OID, T::FLOAT8OID, T::FLOAT8OID],
        &[
            limit.into(),
            grace_s.into(),
            revoked_grace_s.into(),
            from.into(),
        ],
        |t| {
            let row = t.first();
            Ok((row.get::<i64>(1)?.unwrap_or(0) as u64, row.get::<f64>(2)?))
        },
    )
}

/// Where the next purge batch starts, given the last `expires_at` the previous one deleted: a
/// millisecond earlier, so float rounding of the epoch can never step over a row.
pub fn resume_point(last_expires_at: f64) -> f64 {
    last_expires_at - 0.001
}

/// Delete subject revocations older than `ttl_s` seconds (plus the leeway), skipping the rows an
/// open transaction holds (a `jwt_revoke_subject` of the same subject, say); returns how many.
pub fn purge_subject_revocations(ttl_s: f64) -> TsResult<u64> {
    const SQL: &str = "DELETE FROM token_store.subject_revocations \
           WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY( \
                 SELECT ctid FROM token_store.subject_revocations \
                  WHERE revoked_before OPERATOR(pg_catalog.<) \
                          (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $1)) \
                  FOR UPDATE SKIP LOCKED))";
    write(
        SQL,
        &[T::FLOAT8OID],
        &[ttl_s.into()],
        |t| Ok(t.len() as u64),
    )
}

/// The values of `token_store.leeway` that roles and databases set (`ALTER ROLE`/`ALTER
/// DATABASE ... SET`), as written there.
pub fn configured_leeways() -> TsResult<Vec<String>> {
    const SQL: &str = "SELECT pg_catalog.substr(c, pg_catalog.strpos(c, '=') OPERATOR(pg_catalog.+) 1) \
         FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS c \
         WHERE pg_catalog.lower(pg_catalog.split_part(c, '=', 1)) OPERATOR(pg_catalog.=) 'token_store.leeway'";
    read(SQL, &[], &[], |t| {
        let mut out = Vec::new();
        for row in t {
            out.extend(row.get::<String>(1)?);
        }
        Ok(out)
    })
}

/// The only SQL of the purge worker's rounds: one step of `token_store.purge_expired`, the
/// SECURITY DEFINER function that deletes only what has expired (the purge role holds EXECUTE
/// on it and no privilege on the tables). Schema-qualified like the purge statements.
pub fn purge_expired(step: &str, limit: i64, from: Option<f64>) -> TsResult<(u64, Option<f64>)> {
    const SQL: &str = "SELECT deleted, next_from FROM token_store.purge_expired($1, $2, $3)";
    write(
        SQL,
        &[T::TEXTOID, T::INT8OID, T::FLOAT8OID],
        &[step.into(), limit.into(), from.into()],
        |t| {
            let row = t.first();
            Ok((row.get::<i64>(1)?.unwrap_or(0) as u64, row.get::<f64>(2)?))
        },
    )
}

/// Whether the current role may purge: USAGE on the schema and EXECUTE on `purge_expired` (which
/// a database not yet updated to 0.4.0 lacks). The schema comes first: naming a function in a
/// schema without USAGE would be an error rather than a false.
pub fn purge_privileges_held() -> TsResult<bool> {
    const SQL: &str =
        "SELECT CASE WHEN pg_catalog.has_schema_privilege('token_store', 'USAGE') \
              AND pg_catalog.to_regprocedure('token_store.purge_expired(text,bigint,double precision)') IS NOT NULL \
         THEN pg_catalog.has_function_privilege('token_store.purge_expired(text,bigint,double precision)', 'EXECUTE') \
         ELSE false END";
    read(SQL, &[], &[], |t| {
        Ok(t.first().get::<bool>(1)?.unwrap_or(false))
    })
}

/// Of role `role`: whether it can log in, and whether any role is a member of it or holds its
/// ADMIN OPTION (`pg_auth_members` rows naming it).
pub fn role_exposure(role: pgrx::pg_sys::Oid) -> TsResult<(bool, bool)> {
    const SQL: &str = "SELECT r.rolcanlogin, EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m \
                  WHERE m.roleid OPERATOR(pg_catalog.=) r.oid) \
         FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) $1";
    read(SQL, &[T::OIDOID], &[role.into()], |t| {
        let row = t.first();
        Ok((
            row.get::<bool>(1)?.unwrap_or(true),
            row.get::<bool>(2)?.unwrap_or(true),
        ))
    })
}

/// A token row's id, sealed payload and the fingerprint of the key that sealed it.
pub type SealedRow = ([u8; 16], Vec<u8>, String);

/// Up to `limit` token rows sealed under a key other than `current_fp`, in id order after `after`,
/// locked for update (rows another session holds are skipped).
pub fn stale_tokens(
    current_fp: &str,
    after: Option<[u8; 16]>,
    limit: i64,
) -> TsResult<Vec<SealedRow>> {
    const SQL: &str = "SELECT id, payload, key_fingerprint FROM token_store.tokens \
                       WHERE key_fingerprint <> $1 AND ($2::uuid IS NULL OR id > $2) \
                       ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED";
    write(
        SQL,
        &[T::TEXTOID, T::UUIDOID, T::INT8OID],
        &[current_fp.into(), after.map(uuid).into(), limit.into()],
        |t| {
            let mut out = Vec::new();
            for row in t {
                let id = row
                    .get::<Uuid>(1)?
                    .map(|u| *u.as_bytes())
                    .unwrap_or_default();
                out.push((
                    id,
                    row.get::<Vec<u8>>(2)?.unwrap_or_default(),
                    row.get::<String>(3)?.unwrap_or_default(),
                ));
            }
            Ok(out)
        },
    )
}

/// Replace a token row's sealed payload.
pub fn reseal_token(id: [u8; 16], payload: &[u8], fp: &str) -> TsResult<()> {
    const SQL: &str =
        "UPDATE token_store.tokens SET payload = $2, key_fingerprint = $3 WHERE id = $1";
    write(
        SQL,
        &[T::UUIDOID, T::BYTEAOID, T::TEXTOID],
        &[uuid(id).into(), payload.into(), fp.into()],
        |_| Ok(()),
    )
}

/// Keys sealed under a key other than `current_fp`, locked for update.
pub fn stale_keys(current_fp: &str) -> TsResult<Vec<KeyRow>> {
    const SQL: &str = key_select!("WHERE key_fingerprint <> $1 FOR UPDATE");
    write(SQL, &[T::TEXTOID], &[current_fp.into()], key_rows)
}

/// Replace a key's sealed material (the key itself is unchanged, so its version stays).
pub fn reseal_key(kid: &str, material: &[u8], fp: &str) -> TsResult<()> {
    const SQL: &str =
        "UPDATE token_store.signing_keys SET material = $2, key_fingerprint = $3 WHERE kid = $1";
    write(
        SQL,
        &[T::TEXTOID, T::BYTEAOID, T::TEXTOID],
        &[kid.into(), material.into(), fp.into()],
        |_| Ok(()),
    )
}

/// Counts for `stats()`: (active, revoked, expired, rows per encryption key fingerprint).
pub fn table_counts() -> TsResult<(i64, i64, i64, JsonB)> {
    const SQL: &str = "SELECT count(*) FILTER (WHERE revoked_at IS NULL AND expires_at > now()), \
                count(*) FILTER (WHERE revoked_at IS NOT NULL), \
                count(*) FILTER (WHERE revoked_at IS NULL AND expires_at <= now()), \
                (SELECT coalesce(jsonb_object_agg(fp, n), '{}'::jsonb) FROM \
                   (SELECT fp, count(*) AS n FROM \
                      (SELECT key_fingerprint AS fp FROM token_store.tokens \
                       UNION ALL SELECT key_fingerprint FROM token_store.signing_keys) a GROUP BY fp) b) \
         FROM token_store.tokens";
    read(SQL, &[], &[], |t| {
        let row = t.first();
        Ok((
            row.get::<i64>(1)?.unwrap_or(0),
            row.get::<i64>(2)?.unwrap_or(0),
            row.get::<i64>(3)?.unwrap_or(0),
            row.get::<JsonB>(4)?.unwrap_or(JsonB(serde_json::json!({}))),
        ))
    })
}
