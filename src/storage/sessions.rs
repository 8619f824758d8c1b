//! The SQL of sessions and refresh tokens: fixed statements with bind parameters. Times go in and
//! out as epoch seconds (float8) read from the real clock by the engine, so a refresh that waited
//! for a lock is not dated at its transaction's start.

use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys::PgBuiltInOids as T;
use pgrx::spi::SpiHeapTupleData;

use super::{read, uuid as to_uuid, write};
use crate::error::{TsError, TsResult};

/// Whether this database's token_store has the session tables: not before `ALTER EXTENSION
/// token_store UPDATE` to 0.3.0, while the new library already serves the old functions. Asked of
/// the relations as currently resolved (validated again after any change to them or their names),
/// so an update or a reinstall of another version is seen at the next call.
pub fn installed() -> TsResult<bool> {
    super::direct::sessions_installed()
}

/// Whether the session named by an access token's `sid` has ended. A `sid` that is not a uuid, or
/// names no session of ours (a token from another issuer), is no reason to refuse. The one read
/// of the verification path, a direct index probe like the rest of it (no SQL, no transaction id).
pub fn session_ended(sid: &str) -> TsResult<bool> {
    match uuid::Uuid::parse_str(sid) {
        Ok(id) => super::direct::session_ended(*id.as_bytes()),
        Err(_) => Ok(false),
    }
}

/// A session to insert, with its first refresh token.
pub struct NewSession<'a> {
    pub id: [u8; 16],
    pub subject: &'a str,
    pub now: f64,
    pub expires_at: f64,
    pub access_expires_at: f64,
    pub access_ttl: f64,
    pub refresh_ttl: f64,
    pub kid: Option<&'a str>,
    pub claims: &'a [u8],
    pub metadata: Option<&'a [u8]>,
    pub fingerprint: &'a str,
    pub refresh_hash: &'a [u8; 32],
    /// The DPoP key thumbprint the session is bound to (RFC 9449 section 5), when bound.
    pub dpop_jkt: Option<&'a str>,
}

/// Insert a session (generation 0) and its first refresh token.
pub fn insert_session(s: &NewSession) -> TsResult<()> {
    const SQL: &str = "WITH r AS (INSERT INTO token_store.refresh_tokens \
                 (token_hash, session_id, generation, created_at, expires_at) \
             VALUES ($12, $1, 0, to_timestamp($3), to_timestamp($4))) \
         INSERT INTO token_store.sessions (id, subject, generation, created_at, refreshed_at, \
             expires_at, access_expires_at, access_ttl, refresh_ttl, kid, claims, metadata, \
             key_fingerprint, dpop_jkt) \
         VALUES ($1, $2, 0, to_timestamp($3), to_timestamp($3), to_timestamp($4), to_timestamp($5), \
             make_interval(secs => $6), make_interval(secs => $7), $8, $9, $10, $11, $13)";
    // the 0.3.0 schema (the new library before ALTER EXTENSION UPDATE) has no dpop_jkt column
    const SQL_0_3: &str = "WITH r AS (INSERT INTO token_store.refresh_tokens \
                 (token_hash, session_id, generation, created_at, expires_at) \
             VALUES ($12, $1, 0, to_timestamp($3), to_timestamp($4))) \
         INSERT INTO token_store.sessions (id, subject, generation, created_at, refreshed_at, \
             expires_at, access_expires_at, access_ttl, refresh_ttl, kid, claims, metadata, \
             key_fingerprint) \
         VALUES ($1, $2, 0, to_timestamp($3), to_timestamp($3), to_timestamp($4), to_timestamp($5), \
             make_interval(secs => $6), make_interval(secs => $7), $8, $9, $10, $11)";
    write(
        if super::dpop::installed()? {
            SQL
        } else {
            SQL_0_3
        },
        &[
            T::UUIDOID,
            T::TEXTOID,
            T::FLOAT8OID,
            T::FLOAT8OID,
            T::FLOAT8OID,
            T::FLOAT8OID,
            T::FLOAT8OID,
            T::TEXTOID,
            T::BYTEAOID,
            T::BYTEAOID,
            T::TEXTOID,
            T::BYTEAOID,
            T::TEXTOID,
        ],
        &[
            to_uuid(s.id).into(),
            s.subject.into(),
            s.now.into(),
            s.expires_at.into(),
            s.access_expires_at.into(),
            s.access_ttl.into(),
            s.refresh_ttl.into(),
            s.kid.into(),
            s.claims.into(),
            s.metadata.into(),
            s.fingerprint.into(),
            s.refresh_hash.as_slice().into(),
            s.dpop_jkt.into(),
        ],
        |_| Ok(()),
    )
}

/// A session row as a refresh sees it, locked.
#[derive(Debug)]
pub struct LockedSession {
    pub id: [u8; 16],
    pub generation: i64,
    pub created_at: f64,
    pub refreshed_at: f64,
    pub access_ttl: f64,
    pub refresh_ttl: f64,
    pub kid: Option<String>,
    pub ended: bool,
    pub claims: Vec<u8>,
    pub metadata: Option<Vec<u8>>,
    pub fingerprint: String,
    /// The DPoP key thumbprint the session is bound to, when bound.
    pub dpop_jkt: Option<String>,
}

/// The refresh token presented, as it stands once its session is locked.
#[derive(Debug)]
pub struct RefreshRow {
    pub expires_at: f64,
    /// When it was first traded in.
    pub used_at: Option<f64>,
}

fn epoch(row: &SpiHeapTupleData<'_>, i: usize) -> TsResult<f64> {
    row.get::<f64>(i)?
        .ok_or_else(|| TsError::Internal(format!("column {i} of a session is NULL")))
}

/// Lock the session of the refresh token with this hash (`SELECT ... FOR UPDATE`: concurrent
/// refreshes of one session queue here), then read the token itself in a statement of its own,
/// whose fresh snapshot sees what the refresh that held the lock committed. `None`: no such token.
pub fn lock_by_refresh(hash: &[u8; 32]) -> TsResult<Option<(LockedSession, RefreshRow)>> {
    const LOCK: &str = "SELECT id, generation, \
             extract(epoch FROM created_at)::float8, extract(epoch FROM refreshed_at)::float8, \
             extract(epoch FROM access_ttl)::float8, extract(epoch FROM refresh_ttl)::float8, \
             kid, ended_at IS NOT NULL, claims, metadata, key_fingerprint, dpop_jkt \
         FROM token_store.sessions \
         WHERE id = (SELECT session_id FROM token_store.refresh_tokens WHERE token_hash = $1) \
         FOR UPDATE";
    // the 0.3.0 schema (the new library before ALTER EXTENSION UPDATE) has no dpop_jkt column
    const LOCK_0_3: &str = "SELECT id, generation, \
             extract(epoch FROM created_at)::float8, extract(epoch FROM refreshed_at)::float8, \
             extract(epoch FROM access_ttl)::float8, extract(epoch FROM refresh_ttl)::float8, \
             kid, ended_at IS NOT NULL, claims, metadata, key_fingerprint, NULL::text \
         FROM token_store.sessions \
         WHERE id = (SELECT session_id FROM token_store.refresh_tokens WHERE token_hash = $1) \
         FOR UPDATE";
    let lock = if super::dpop::installed()? {
        LOCK
    } else {
        LOCK_0_3
    };
    let session = write(lock, &[T::BYTEAOID], &[hash.as_slice().into()], |t| {
        let Some(row) = t.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(LockedSession {
            id: row
                .get::<Uuid>(1)?
                .map(|u| *u.as_bytes())
                .unwrap_or_default(),
            generation: row.get::<i64>(2)?.unwrap_or(0),
            created_at: epoch(&row, 3)?,
            refreshed_at: epoch(&row, 4)?,
            access_ttl: epoch(&row, 5)?,
            refresh_ttl: epoch(&row, 6)?,
            kid: row.get::<String>(7)?,
            ended: row.get::<bool>(8)?.unwrap_or(false),
            claims: row.get::<Vec<u8>>(9)?.unwrap_or_default(),
            metadata: row.get::<Vec<u8>>(10)?,
            fingerprint: row.get::<String>(11)?.unwrap_or_default(),
            dpop_jkt: row.get::<String>(12)?,
        }))
    })?;
    let Some(session) = session else {
        return Ok(None);
    };
    const TOKEN: &str = "SELECT extract(epoch FROM expires_at)::float8, \
             extract(epoch FROM used_at)::float8 \
         FROM token_store.refresh_tokens WHERE token_hash = $1";
    let token = write(TOKEN, &[T::BYTEAOID], &[hash.as_slice().into()], |t| {
        let Some(row) = t.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(RefreshRow {
            expires_at: epoch(&row, 1)?,
            used_at: row.get::<f64>(2)?,
        }))
    })?;
    Ok(token.map(|t| (session, t)))
}

/// A session's claims and metadata sealed anew, with the fingerprint of the key that sealed them.
pub type Resealed<'a> = (&'a [u8], Option<&'a [u8]>, &'a str);

/// One rotation of a locked session.
pub struct Rotation<'a> {
    pub session: [u8; 16],
    pub used_hash: &'a [u8; 32],
    pub now: f64,
    pub new_hash: &'a [u8; 32],
    pub generation: i64,
    pub expires_at: f64,
    pub access_expires_at: f64,
    /// New sealed claims, metadata and their key's fingerprint, when the claims changed.
    pub resealed: Option<Resealed<'a>>,
}

/// Mark the presented token used (keeping the time of its first use), add its successor and move
/// the session on, in one statement.
pub fn rotate(r: &Rotation) -> TsResult<()> {
    const SQL: &str = "WITH u AS (UPDATE token_store.refresh_tokens \
                 SET used_at = coalesce(used_at, to_timestamp($3)) WHERE token_hash = $2), \
              i AS (INSERT INTO token_store.refresh_tokens \
                 (token_hash, session_id, generation, created_at, expires_at) \
                 VALUES ($4, $1, $5, to_timestamp($3), to_timestamp($6))) \
         UPDATE token_store.sessions SET generation = $5, refreshed_at = to_timestamp($3), \
             expires_at = to_timestamp($6), \
             access_expires_at = greatest(access_expires_at, to_timestamp($7)), \
             claims = CASE WHEN $8 THEN $9 ELSE claims END, \
             metadata = CASE WHEN $8 THEN $10 ELSE metadata END, \
             key_fingerprint = CASE WHEN $8 THEN $11 ELSE key_fingerprint END \
         WHERE id = $1";
    let (changed, claims, metadata, fp) = match r.resealed {
        Some((c, m, fp)) => (true, Some(c), m, Some(fp)),
        None => (false, None, None, None),
    };
    write(
        SQL,
        &[
            T::UUIDOID,
            T::BYTEAOID,
            T::FLOAT8OID,
            T::BYTEAOID,
            T::INT8OID,
            T::FLOAT8OID,
            T::FLOAT8OID,
            T::BOOLOID,
            T::BYTEAOID,
            T::BYTEAOID,
            T::TEXTOID,
        ],
        &[
            to_uuid(r.session).into(),
            r.used_hash.as_slice().into(),
            r.now.into(),
            r.new_hash.as_slice().into(),
            r.generation.into(),
            r.expires_at.into(),
            r.access_expires_at.into(),
            changed.into(),
            claims.into(),
            metadata.into(),
            fp.into(),
        ],
        |_| Ok(()),
    )
}

/// End a session; true if this call ended it.
pub fn end_session(id: [u8; 16], reason: Option<&str>) -> TsResult<bool> {
    const SQL: &str =
        "UPDATE token_store.sessions SET ended_at = clock_timestamp(), end_reason = $2 \
                       WHERE id = $1 AND ended_at IS NULL";
    write(
        SQL,
        &[T::UUIDOID, T::TEXTOID],
        &[to_uuid(id).into(), reason.into()],
        |t| Ok(t.len() == 1),
    )
}

/// End every live session of `subject` but `keep`; returns how many.
pub fn end_subject(subject: &str, keep: Option<[u8; 16]>, reason: Option<&str>) -> TsResult<i64> {
    const SQL: &str =
        "UPDATE token_store.sessions SET ended_at = clock_timestamp(), end_reason = $3 \
                       WHERE subject = $1 AND ended_at IS NULL AND ($2::uuid IS NULL OR id <> $2)";
    write(
        SQL,
        &[T::TEXTOID, T::UUIDOID, T::TEXTOID],
        &[subject.into(), keep.map(to_uuid).into(), reason.into()],
        |t| Ok(t.len() as i64),
    )
}

/// A live session as `sessions()` lists it, metadata still sealed.
pub struct ListedSession {
    pub id: [u8; 16],
    pub created_at: TimestampWithTimeZone,
    pub refreshed_at: TimestampWithTimeZone,
    pub expires_at: TimestampWithTimeZone,
    pub generation: i64,
    pub metadata: Option<Vec<u8>>,
    pub fingerprint: String,
}

/// The live sessions of `subject`, newest first: not ended, not expired, not past `idle_s` since
/// their last refresh nor `max_s` since their start (0: no such limit). A read: works on a standby.
pub fn live_sessions(subject: &str, idle_s: f64, max_s: f64) -> TsResult<Vec<ListedSession>> {
    const SQL: &str = "SELECT id, created_at, refreshed_at, expires_at, generation, metadata, \
             key_fingerprint FROM token_store.sessions \
         WHERE subject = $1 AND ended_at IS NULL AND expires_at > now() \
           AND ($2 <= 0 OR refreshed_at + make_interval(secs => $2) > now()) \
           AND ($3 <= 0 OR created_at + make_interval(secs => $3) > now()) \
         ORDER BY created_at DESC, generation DESC, id";
    read(
        SQL,
        &[T::TEXTOID, T::FLOAT8OID, T::FLOAT8OID],
        &[subject.into(), idle_s.into(), max_s.into()],
        |t| {
            let mut out = Vec::new();
            for row in t {
                let ts = |i| {
                    row.get::<TimestampWithTimeZone>(i)?
                        .ok_or_else(|| TsError::Internal("a session time is NULL".into()))
                };
                out.push(ListedSession {
                    id: row
                        .get::<Uuid>(1)?
                        .map(|u| *u.as_bytes())
                        .unwrap_or_default(),
                    created_at: ts(2)?,
                    refreshed_at: ts(3)?,
                    expires_at: ts(4)?,
                    generation: row.get::<i64>(5)?.unwrap_or(0),
                    metadata: row.get::<Vec<u8>>(6)?,
                    fingerprint: row.get::<String>(7)?.unwrap_or_default(),
                });
            }
            Ok(out)
        },
    )
}

/// Delete up to `limit` sessions that ended (or whose last refresh token expired) more than
/// `grace_s` ago and whose access tokens expired more than `revoked_grace_s` ago (until then the
/// row is what refuses them), with their refresh token hashes; skips locked rows. Schema-qualified
/// throughout, like the other purge statements.
pub fn purge_sessions(limit: i64, grace_s: f64, revoked_grace_s: f64) -> TsResult<u64> {
    const SQL: &str = "WITH s AS (DELETE FROM token_store.sessions \
           WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY( \
                 SELECT ctid FROM token_store.sessions \
                  WHERE COALESCE(ended_at, expires_at) OPERATOR(pg_catalog.<) \
                          (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $2)) \
                    AND access_expires_at OPERATOR(pg_catalog.<) \
                          (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $3)) \
                  LIMIT $1 FOR UPDATE SKIP LOCKED)) \
           RETURNING id), \
         r AS (DELETE FROM token_store.refresh_tokens \
           WHERE session_id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT id FROM s))) \
         SELECT pg_catalog.count(*) FROM s";
    write(
        SQL,
        &[T::INT8OID, T::FLOAT8OID, T::FLOAT8OID],
        &[limit.into(), grace_s.into(), revoked_grace_s.into()],
        |t| Ok(t.first().get::<i64>(1)?.unwrap_or(0) as u64),
    )
}

/// `{fingerprint: sessions}`, for the `rows_per_key` of `stats()`.
pub fn rows_per_key() -> TsResult<Vec<(String, i64)>> {
    if !installed()? {
        return Ok(Vec::new());
    }
    const SQL: &str =
        "SELECT key_fingerprint, count(*) FROM token_store.sessions GROUP BY key_fingerprint";
    read(SQL, &[], &[], |t| {
        let mut out = Vec::new();
        for row in t {
            out.push((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<i64>(2)?.unwrap_or(0),
            ));
        }
        Ok(out)
    })
}

/// A session's id, sealed claims, sealed metadata and their key's fingerprint.
pub type SealedSession = ([u8; 16], Vec<u8>, Option<Vec<u8>>, String);

/// Up to `limit` sessions sealed under a key other than `current_fp`, in id order after `after`,
/// locked (rows another transaction holds are skipped).
pub fn stale_sessions(
    current_fp: &str,
    after: Option<[u8; 16]>,
    limit: i64,
) -> TsResult<Vec<SealedSession>> {
    const SQL: &str = "SELECT id, claims, metadata, key_fingerprint FROM token_store.sessions \
                       WHERE key_fingerprint <> $1 AND ($2::uuid IS NULL OR id > $2) \
                       ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED";
    write(
        SQL,
        &[T::TEXTOID, T::UUIDOID, T::INT8OID],
        &[current_fp.into(), after.map(to_uuid).into(), limit.into()],
        |t| {
            let mut out = Vec::new();
            for row in t {
                out.push((
                    row.get::<Uuid>(1)?
                        .map(|u| *u.as_bytes())
                        .unwrap_or_default(),
                    row.get::<Vec<u8>>(2)?.unwrap_or_default(),
                    row.get::<Vec<u8>>(3)?,
                    row.get::<String>(4)?.unwrap_or_default(),
                ));
            }
            Ok(out)
        },
    )
}

/// Replace a session's sealed claims and metadata.
pub fn reseal_session(
    id: [u8; 16],
    claims: &[u8],
    metadata: Option<&[u8]>,
    fp: &str,
) -> TsResult<()> {
    const SQL: &str = "UPDATE token_store.sessions \
                       SET claims = $2, metadata = $3, key_fingerprint = $4 WHERE id = $1";
    write(
        SQL,
        &[T::UUIDOID, T::BYTEAOID, T::BYTEAOID, T::TEXTOID],
        &[
            to_uuid(id).into(),
            claims.into(),
            metadata.into(),
            fp.into(),
        ],
        |_| Ok(()),
    )
}
