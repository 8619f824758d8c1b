//! Issuers' tables: the verify path's index probes (no SQL, under the statement's snapshot, as in
//! `probe`) and the fixed statements of the admin functions and the worker.
//!
//! The probes follow `storage::probe`'s pattern with relations of their own (resolved in the
//! extension's schema, forgotten on a relcache invalidation of any of them). A database whose
//! schema predates the issuers (before `ALTER EXTENSION token_store UPDATE` to 0.4.0) has no
//! issuers: every token keeps the rules of its own keys.

use std::cell::Cell;
use std::ffi::CStr;

use pgrx::datum::Interval;
use pgrx::pg_sys::{self, Datum, Oid, PgBuiltInOids as T, Relation, TupleTableSlot};
use pgrx::{FromDatum, IntoDatum};

use super::{read, write};
use crate::error::{TsError, TsResult};

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_S: f64 = 946_684_800.0;

#[derive(Clone, Copy, Debug)]
struct Rels {
    providers: Oid,
    providers_pkey: Oid,
    p_audiences: i16,
    p_algs: i16,
    p_fresh_until: i16,
    keys: Oid,
    keys_pkey: Oid,
    k_kid: i16,
    k_alg: i16,
    k_material: i16,
}

impl Rels {
    fn contains(&self, relid: Oid) -> bool {
        [
            self.providers,
            self.providers_pkey,
            self.keys,
            self.keys_pkey,
        ]
        .contains(&relid)
    }
}

/// What this backend knows: not looked up yet, no issuer tables (an older schema), or their OIDs.
#[derive(Clone, Copy, Debug)]
enum Known {
    Unknown,
    Absent,
    Present(Rels),
}

thread_local! {
    static KNOWN: Cell<Known> = const { Cell::new(Known::Unknown) };
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// The relcache callback: only flips per-backend state (it must neither raise nor read catalogs).
/// Any invalidation while the tables are absent may be their creation.
unsafe extern "C-unwind" fn on_relcache(_arg: Datum, relid: Oid) {
    let ours = match KNOWN.get() {
        Known::Present(r) => relid == Oid::INVALID || r.contains(relid),
        Known::Absent | Known::Unknown => true,
    };
    if ours {
        KNOWN.set(Known::Unknown);
        GENERATION.set(GENERATION.get().wrapping_add(1));
    }
}

fn resolve() -> TsResult<Known> {
    // SAFETY: a syscache lookup by a NUL-terminated name; missing_ok gives InvalidOid.
    let ext = unsafe { pg_sys::get_extension_oid(c"token_store".as_ptr(), true) };
    if ext == Oid::INVALID {
        return Ok(Known::Absent);
    }
    // The control file fixes the schema (token_store, not relocatable).
    // SAFETY: a syscache lookup by name; missing_ok gives InvalidOid, no ERROR.
    let schema = unsafe { pg_sys::get_namespace_oid(c"token_store".as_ptr(), true) };
    let rel = |name: &CStr| {
        // SAFETY: a syscache lookup by name and namespace; InvalidOid when absent.
        unsafe { pg_sys::get_relname_relid(name.as_ptr(), schema) }
    };
    let providers = rel(c"identity_providers");
    let keys = rel(c"issuer_keys");
    let (providers_pkey, keys_pkey) = (rel(c"identity_providers_pkey"), rel(c"issuer_keys_pkey"));
    if [providers, keys, providers_pkey, keys_pkey].contains(&Oid::INVALID) {
        return Ok(Known::Absent);
    }
    let att = |table: Oid, name: &CStr| -> TsResult<i16> {
        // SAFETY: a syscache lookup; InvalidAttrNumber (0) when the column is absent.
        let n = unsafe { pg_sys::get_attnum(table, name.as_ptr()) };
        if n <= 0 {
            return Err(TsError::NotInPrerequisiteState {
                message: format!("token_store's column {} is missing", name.to_string_lossy()),
                hint: Some(
                    "Reinstall the extension with DROP EXTENSION and CREATE EXTENSION.".into(),
                ),
            });
        }
        Ok(n)
    };
    Ok(Known::Present(Rels {
        providers,
        providers_pkey,
        p_audiences: att(providers, c"audiences")?,
        p_algs: att(providers, c"algs")?,
        p_fresh_until: att(providers, c"fresh_until")?,
        keys,
        keys_pkey,
        k_kid: att(keys, c"kid")?,
        k_alg: att(keys, c"alg")?,
        k_material: att(keys, c"material")?,
    }))
}

fn known() -> TsResult<(Option<Rels>, u64)> {
    if !REGISTERED.get() {
        // SAFETY: adds a function pointer to the backend's callback table; it lives as long as
        // the library, which PostgreSQL never unloads.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache), Datum::from(0usize)) };
        REGISTERED.set(true);
    }
    let generation = GENERATION.get();
    let k = match KNOWN.get() {
        Known::Unknown => {
            let k = resolve()?;
            if GENERATION.get() == generation {
                KNOWN.set(k);
            }
            k
        }
        k => k,
    };
    Ok(match k {
        Known::Present(r) => (Some(r), generation),
        _ => (None, generation),
    })
}

/// Scan `index` of `table` for rows whose first index column equals `key` (a text), under the
/// statement's snapshot, calling `each` until it returns false. False when the relations changed
/// while being opened (the caller resolves again).
fn scan_text(
    table: Oid,
    index: Oid,
    generation: u64,
    key: &str,
    mut each: impl FnMut(*mut TupleTableSlot) -> bool,
) -> TsResult<bool> {
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    // SAFETY: try_relation_open locks the OID (processing pending invalidations) and returns
    // NULL, lock released, when no such relation exists any more.
    let heap: Relation = unsafe { pg_sys::try_relation_open(table, lock) };
    if heap.is_null() {
        return Ok(false);
    }
    // SAFETY: as above, for the index.
    let idx: Relation = unsafe { pg_sys::try_relation_open(index, lock) };
    if idx.is_null() || GENERATION.get() != generation {
        // SAFETY: closes what was opened just above, releasing its lock.
        unsafe {
            if !idx.is_null() {
                pg_sys::relation_close(idx, lock);
            }
            pg_sys::relation_close(heap, lock);
        }
        return Ok(false);
    }
    // SAFETY: ActiveSnapshotSet only reads the snapshot stack.
    if !unsafe { pg_sys::ActiveSnapshotSet() } {
        // SAFETY: closes the relations opened above (locks kept to the transaction's end).
        unsafe {
            pg_sys::relation_close(idx, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::relation_close(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
        return Err(TsError::Internal("no active snapshot to read under".into()));
    }
    let arg = key.into_datum().expect("text datum");
    // SAFETY: heap and idx are open and locked; idx is a btree whose first column is text; the
    // active snapshot is valid for this call; the slot, scan and scan key are freed below in the
    // reverse order of creation; the relations stay locked (NoLock on close) to the transaction's
    // end, as the executor keeps them.
    unsafe {
        let snapshot = pg_sys::GetActiveSnapshot();
        let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
        #[cfg(not(feature = "pg18"))]
        let desc = pg_sys::index_beginscan(heap, idx, snapshot, 1, 0);
        #[cfg(feature = "pg18")]
        let desc = pg_sys::index_beginscan(heap, idx, snapshot, std::ptr::null_mut(), 1, 0);
        let mut skey = pg_sys::ScanKeyData::default();
        pg_sys::ScanKeyEntryInitialize(
            &mut skey,
            0,
            1,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            Oid::INVALID,
            *(*idx).rd_indcollation,
            Oid::from(pg_sys::F_TEXTEQ),
            arg,
        );
        pg_sys::index_rescan(desc, &mut skey, 1, std::ptr::null_mut(), 0);
        while pg_sys::index_getnext_slot(desc, pg_sys::ScanDirection::ForwardScanDirection, slot) {
            if !each(slot) {
                break;
            }
        }
        pg_sys::index_endscan(desc);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::relation_close(idx, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::relation_close(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
    Ok(true)
}

fn get<T: FromDatum>(slot: *mut TupleTableSlot, attnum: i16) -> Option<T> {
    let mut isnull = false;
    // SAFETY: the slot holds a row of the scanned table while `each` runs; attnum comes from
    // get_attnum on that table; FromDatum copies the value out.
    unsafe {
        let datum = pg_sys::slot_getattr(slot, i32::from(attnum), &mut isnull);
        T::from_datum(datum, isnull)
    }
}

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
    for _ in 0..4 {
        let (Some(r), generation) = known()? else {
            return Ok(None);
        };
        let mut found = None;
        let done = scan_text(r.providers, r.providers_pkey, generation, iss, |slot| {
            found = Some(IssuerPolicy {
                audiences: strings(get::<Vec<Option<String>>>(slot, r.p_audiences)),
                algs: strings(get::<Vec<Option<String>>>(slot, r.p_algs)),
                fresh_until: get::<i64>(slot, r.p_fresh_until)
                    .map(|us| us as f64 / 1e6 + PG_EPOCH_OFFSET_S),
            });
            false
        })?;
        if done {
            return Ok(found);
        }
        KNOWN.set(Known::Unknown);
    }
    Err(TsError::Internal(
        "token_store's tables kept changing while being opened".into(),
    ))
}

/// The keys of issuer `iss` whose kid is `kid` (every key when `kid` is None), under the
/// statement's snapshot.
pub fn issuer_keys(iss: &str, kid: Option<&str>) -> TsResult<Vec<IssuerKeyRow>> {
    for _ in 0..4 {
        let (Some(r), generation) = known()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let done = scan_text(r.keys, r.keys_pkey, generation, iss, |slot| {
            let row_kid = get::<String>(slot, r.k_kid);
            if kid.is_none() || row_kid.as_deref() == kid {
                out.push(IssuerKeyRow {
                    kid: row_kid,
                    alg: get::<String>(slot, r.k_alg),
                    material: get::<Vec<u8>>(slot, r.k_material).unwrap_or_default(),
                });
            }
            true
        })?;
        if done {
            return Ok(out);
        }
        KNOWN.set(Known::Unknown);
    }
    Err(TsError::Internal(
        "token_store's tables kept changing while being opened".into(),
    ))
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
