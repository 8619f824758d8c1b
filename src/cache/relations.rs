//! The extension's tables and indexes as this backend knows them: OIDs, column numbers and the
//! equality procedure and collation of each probed index, resolved in the extension's own schema
//! (the OID `pg_extension.extnamespace` records, never a name looked up through a search_path) and
//! validated once per resolution: relkind, the index belongs to that table, is a valid, ready and
//! live unique btree on the expected column of the expected type, and every column read has the
//! type the extension made it with. A mismatch is the "reinstall" error (55000).
//!
//! A resolution is kept until an invalidation touches one of these relations, the extension's
//! schema, or a name the resolution looked up (so a table added by `ALTER EXTENSION UPDATE` is seen
//! at the next call); then the next call resolves and validates again. The generation counts those
//! invalidations: a probe that saw it move while it locked its relations checks what it opened
//! against a fresh resolution, and retries only when they differ (see `storage::probe`).

use std::cell::{Cell, RefCell};
use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum, Oid, Relation};

use crate::error::{TsError, TsResult};

/// The extension's name in pg_extension, and its schema's name (the control file fixes it).
const EXTENSION: &CStr = c"token_store";

/// How often a resolution starts again when the relations change while it opens them.
const MAX_ATTEMPTS: usize = 100;

/// A unique btree index probed by equality on its first column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probed {
    pub table: Oid,
    pub index: Oid,
    /// The equality function of the index's operator family for the key type.
    pub eq_proc: Oid,
    /// The index column's collation.
    pub collation: Oid,
}

/// `token_store.tokens`: its unique `token_hash` index, and the columns read.
#[derive(Clone, Copy, Debug)]
pub struct TokensRel {
    pub by_hash: Probed,
    pub id: i16,
    pub revoked_at: i16,
}

/// `token_store.subject_revocations`: its primary key on `subject`, the column read.
#[derive(Clone, Copy, Debug)]
pub struct SubjectsRel {
    pub by_subject: Probed,
    pub revoked_before: i16,
}

/// `token_store.signing_keys`: its primary key on `kid`, and the columns read.
#[derive(Clone, Copy, Debug)]
pub struct KeysRel {
    pub by_kid: Probed,
    pub kid: i16,
    pub alg: i16,
    pub state: i16,
    pub can_sign: i16,
    pub version: i16,
    pub material: i16,
    pub key_fingerprint: i16,
    pub created_at: i16,
}

/// `token_store.sessions`: its primary key on `id`, the column read.
#[derive(Clone, Copy, Debug)]
pub struct SessionsRel {
    pub by_id: Probed,
    pub ended_at: i16,
}

/// `token_store.identity_providers` and `token_store.issuer_keys`: both probed by issuer (the
/// first column of their primary keys), and the columns read.
#[derive(Clone, Copy, Debug)]
pub struct IssuersRel {
    pub providers: Probed,
    pub audiences: i16,
    pub algs: i16,
    pub fresh_until: i16,
    pub keys: Probed,
    pub kid: i16,
    pub alg: i16,
    pub material: i16,
}

/// Everything the read path opens.
#[derive(Clone, Copy, Debug)]
pub struct Relations {
    pub tokens: TokensRel,
    pub subjects: SubjectsRel,
    pub keys: KeysRel,
    /// None in a database still on a schema before 0.3.0 (until `ALTER EXTENSION ... UPDATE`).
    pub sessions: Option<SessionsRel>,
    /// None in a database still on a schema before 0.4.0.
    pub issuers: Option<IssuersRel>,
}

impl Relations {
    fn contains(&self, relid: Oid) -> bool {
        let mut all = vec![
            self.tokens.by_hash,
            self.subjects.by_subject,
            self.keys.by_kid,
        ];
        all.extend(self.sessions.map(|s| s.by_id));
        all.extend(self.issuers.iter().flat_map(|i| [i.providers, i.keys]));
        all.iter().any(|p| p.table == relid || p.index == relid)
    }
}

thread_local! {
    static RELATIONS: Cell<Option<Relations>> = const { Cell::new(None) };
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    static KEYS_CHANGED: Cell<u64> = const { Cell::new(0) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// Syscache hash values of the (name, schema) pairs the last resolution looked up.
    static NAME_HASHES: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// How many invalidations of the extension's relations (or its schema, or the names it looks up)
/// this backend has taken in.
pub fn generation() -> u64 {
    GENERATION.get()
}

/// How many invalidations of the keys table this backend has taken in (any invalidation of every
/// relation counts too): the key cache's hint to look for keys that left the key set.
pub fn keys_invalidations() -> u64 {
    KEYS_CHANGED.get()
}

/// Drop what is known (the next `get` resolves again).
pub fn forget() {
    RELATIONS.set(None);
    GENERATION.set(GENERATION.get().wrapping_add(1));
}

/// The relations, resolved and validated when not known (or invalidated since).
pub fn get() -> TsResult<Relations> {
    register_callbacks();
    if let Some(r) = RELATIONS.get() {
        return Ok(r);
    }
    // What resolve() returns was checked with every relation locked (so nothing can alter them
    // until the transaction ends) and its names looked up again after the locks.
    let r = resolve()?;
    RELATIONS.set(Some(r));
    Ok(r)
}

/// Whether the names still give the OIDs of `r` (after invalidations arrived during a resolution
/// or a probe's open): false means the relations were replaced and must be opened again.
pub fn resolves_to_same(r: &Relations) -> bool {
    let Ok(schema) = schema() else { return false };
    let same = |p: &Probed, table: &CStr, index: &CStr| {
        relid(table, schema) == p.table && relid(index, schema) == p.index
    };
    same(&r.tokens.by_hash, c"tokens", c"tokens_token_hash_key")
        && same(
            &r.subjects.by_subject,
            c"subject_revocations",
            c"subject_revocations_pkey",
        )
        && same(&r.keys.by_kid, c"signing_keys", c"signing_keys_pkey")
        && match r.sessions {
            Some(s) => same(&s.by_id, c"sessions", c"sessions_pkey"),
            None => relid(c"sessions", schema) == Oid::INVALID,
        }
        && match r.issuers {
            Some(i) => {
                same(&i.providers, PROVIDERS.table, PROVIDERS.index)
                    && same(&i.keys, ISSUER_KEYS.table, ISSUER_KEYS.index)
            }
            None => {
                relid(PROVIDERS.table, schema) == Oid::INVALID
                    && relid(ISSUER_KEYS.table, schema) == Oid::INVALID
            }
        }
}

fn register_callbacks() {
    if REGISTERED.get() {
        return;
    }
    // SAFETY: each adds a function pointer to the backend's fixed callback tables; the functions
    // live as long as the library, which PostgreSQL never unloads.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache), Datum::from(0usize));
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::RELNAMENSP as i32,
            Some(on_relname),
            Datum::from(0usize),
        );
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
            Some(on_namespace),
            Datum::from(0usize),
        );
    }
    REGISTERED.set(true);
}

/// The relcache callback: runs inside invalidation processing, so it only flips per-backend state
/// (it must neither raise nor touch the catalogs). `relid` 0 means every relation.
unsafe extern "C-unwind" fn on_relcache(_arg: Datum, relid: Oid) {
    let known = RELATIONS.get();
    if relid == Oid::INVALID || known.is_none_or(|r| r.keys.by_kid.table == relid) {
        KEYS_CHANGED.set(KEYS_CHANGED.get().wrapping_add(1));
    }
    if relid == Oid::INVALID || known.is_none_or(|r| r.contains(relid)) {
        forget();
    }
}

/// A pg_class row changed whose (name, schema) hashes like one the resolution looked up (a
/// table added by an update, a relation renamed into place): resolve again.
unsafe extern "C-unwind" fn on_relname(_arg: Datum, _cacheid: i32, hashvalue: u32) {
    let ours = hashvalue == 0 || NAME_HASHES.with_borrow(|h| h.contains(&hashvalue));
    if ours {
        forget();
    }
}

/// A schema was renamed or dropped (rare): resolve again.
unsafe extern "C-unwind" fn on_namespace(_arg: Datum, _cacheid: i32, _hashvalue: u32) {
    forget();
}

fn reinstall(message: String) -> TsError {
    TsError::NotInPrerequisiteState {
        message,
        hint: Some("Reinstall the extension with DROP EXTENSION and CREATE EXTENSION.".into()),
    }
}

fn missing(what: &str) -> TsError {
    reinstall(format!("token_store's {what} is missing"))
}

fn changed(what: &CStr, why: &str) -> TsError {
    reinstall(format!(
        "token_store's relation \"{}\" has been changed: {why}",
        what.to_string_lossy()
    ))
}

/// The extension's schema: the OID its pg_extension row records, which must still be named
/// `token_store` (the extension is not relocatable; a renamed schema is a broken install).
fn schema() -> TsResult<Oid> {
    // SAFETY: a catalog lookup by a NUL-terminated name; missing_ok gives InvalidOid, no ERROR.
    let ext = unsafe { pg_sys::get_extension_oid(EXTENSION.as_ptr(), true) };
    if ext == Oid::INVALID {
        return Err(TsError::NotInPrerequisiteState {
            message: "extension \"token_store\" is not installed in this database".into(),
            hint: None,
        });
    }
    let schema = extension_schema(ext);
    if schema == Oid::INVALID {
        return Err(missing("schema"));
    }
    // SAFETY: a syscache lookup by OID; NULL when no such schema, else a palloc'd C string.
    let name = unsafe { pg_sys::get_namespace_name(schema) };
    if name.is_null() {
        return Err(missing("schema"));
    }
    // SAFETY: a NUL-terminated string just returned, freed once below.
    let same = unsafe { CStr::from_ptr(name) } == EXTENSION;
    // SAFETY: palloc'd by get_namespace_name above and no longer used.
    unsafe { pg_sys::pfree(name.cast()) };
    if !same {
        return Err(reinstall("token_store's schema has been renamed".into()));
    }
    Ok(schema)
}

/// `pg_extension.extnamespace` of the extension `ext`, read by OID through pg_extension's OID
/// index (as PostgreSQL 16's get_extension_schema does; on every version, so a schema renamed
/// and replaced by a look-alike is never used). InvalidOid when the row is gone.
fn extension_schema(ext: Oid) -> Oid {
    // SAFETY: pg_extension is opened with AccessShareLock (kept) and closed below; the scan key is an
    // OID equality on the index's only column; the tuple returned points into a pinned buffer that
    // stays valid until systable_endscan, and is read as pg_extension's fixed-size struct (its
    // first columns, extnamespace among them, are fixed-width and never NULL).
    unsafe {
        let rel = pg_sys::table_open(
            pg_sys::ExtensionRelationId,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        );
        let mut key = pg_sys::ScanKeyData::default();
        pg_sys::ScanKeyInit(
            &mut key,
            pg_sys::Anum_pg_extension_oid as pg_sys::AttrNumber,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::F_OIDEQ.into(),
            Datum::from(ext),
        );
        let scan = pg_sys::systable_beginscan(
            rel,
            Oid::from(pg_sys::ExtensionOidIndexId),
            true,
            std::ptr::null_mut(),
            1,
            &mut key,
        );
        let tuple = pg_sys::systable_getnext(scan);
        let schema = if tuple.is_null() {
            Oid::INVALID
        } else {
            let data = (*tuple).t_data;
            let form = data
                .cast::<u8>()
                .add(usize::from((*data).t_hoff))
                .cast::<pg_sys::FormData_pg_extension>();
            (*form).extnamespace
        };
        pg_sys::systable_endscan(scan);
        // the lock stays until the transaction ends, so later reads take in no invalidations here
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        schema
    }
}

fn relid(name: &CStr, schema: Oid) -> Oid {
    // SAFETY: a syscache lookup by name and namespace OID; returns InvalidOid when absent.
    unsafe { pg_sys::get_relname_relid(name.as_ptr(), schema) }
}

fn name_hash(name: &CStr, schema: Oid) -> u32 {
    // SAFETY: computes the RELNAMENSP syscache hash of a NUL-terminated name and a schema OID, as
    // get_relname_relid's lookup would; reads nothing else.
    unsafe {
        pg_sys::GetSysCacheHashValue(
            pg_sys::SysCacheIdentifier::RELNAMENSP as i32,
            Datum::from(name.as_ptr()),
            Datum::from(schema),
            Datum::from(0usize),
            Datum::from(0usize),
        )
    }
}

/// A column the read path reads: its name and type.
type Column = (&'static CStr, Oid);

/// What one probed table must look like.
struct Shape {
    table: &'static CStr,
    index: &'static CStr,
    /// The index's first key column, the one probed: name and type.
    key: Column,
    /// The index's other key columns, checked but never probed.
    rest_of_key: &'static [Column],
    /// The other columns read.
    columns: &'static [Column],
}

const TOKENS: Shape = Shape {
    table: c"tokens",
    index: c"tokens_token_hash_key",
    key: (c"token_hash", pg_sys::BYTEAOID),
    rest_of_key: &[],
    columns: &[
        (c"id", pg_sys::UUIDOID),
        (c"revoked_at", pg_sys::TIMESTAMPTZOID),
    ],
};

const SUBJECTS: Shape = Shape {
    table: c"subject_revocations",
    index: c"subject_revocations_pkey",
    key: (c"subject", pg_sys::TEXTOID),
    rest_of_key: &[],
    columns: &[(c"revoked_before", pg_sys::TIMESTAMPTZOID)],
};

const KEYS: Shape = Shape {
    table: c"signing_keys",
    index: c"signing_keys_pkey",
    key: (c"kid", pg_sys::TEXTOID),
    rest_of_key: &[],
    columns: &[
        (c"kid", pg_sys::TEXTOID),
        (c"alg", pg_sys::TEXTOID),
        (c"state", pg_sys::TEXTOID),
        (c"can_sign", pg_sys::BOOLOID),
        (c"version", pg_sys::INT8OID),
        (c"material", pg_sys::BYTEAOID),
        (c"key_fingerprint", pg_sys::TEXTOID),
        (c"created_at", pg_sys::TIMESTAMPTZOID),
    ],
};

const SESSIONS: Shape = Shape {
    table: c"sessions",
    index: c"sessions_pkey",
    key: (c"id", pg_sys::UUIDOID),
    rest_of_key: &[],
    columns: &[(c"ended_at", pg_sys::TIMESTAMPTZOID)],
};

const PROVIDERS: Shape = Shape {
    table: c"identity_providers",
    index: c"identity_providers_pkey",
    key: (c"issuer", pg_sys::TEXTOID),
    rest_of_key: &[],
    columns: &[
        (c"audiences", pg_sys::TEXTARRAYOID),
        (c"algs", pg_sys::TEXTARRAYOID),
        (c"fresh_until", pg_sys::TIMESTAMPTZOID),
    ],
};

const ISSUER_KEYS: Shape = Shape {
    table: c"issuer_keys",
    index: c"issuer_keys_pkey",
    key: (c"issuer", pg_sys::TEXTOID),
    rest_of_key: &[(c"position", pg_sys::INT4OID)],
    columns: &[
        (c"kid", pg_sys::TEXTOID),
        (c"alg", pg_sys::TEXTOID),
        (c"material", pg_sys::BYTEAOID),
    ],
};

/// Resolve and validate every relation; again from the start (up to MAX_ATTEMPTS) when one was
/// replaced while it was being opened (REINDEX CONCURRENTLY swaps an index under its name).
fn resolve() -> TsResult<Relations> {
    for _ in 0..MAX_ATTEMPTS {
        let schema = schema()?;
        NAME_HASHES.set(
            [TOKENS, SUBJECTS, KEYS, SESSIONS, PROVIDERS, ISSUER_KEYS]
                .iter()
                .flat_map(|s| [name_hash(s.table, schema), name_hash(s.index, schema)])
                .collect(),
        );
        let attempt = || -> TsResult<Option<Relations>> {
            let Some((tokens, t)) = shape(&TOKENS, schema, false)? else {
                return Ok(None);
            };
            let Some((subjects, s)) = shape(&SUBJECTS, schema, false)? else {
                return Ok(None);
            };
            let Some((keys, k)) = shape(&KEYS, schema, false)? else {
                return Ok(None);
            };
            // the session tables come with 0.3.0: a database not yet updated has none
            let sessions = match shape(&SESSIONS, schema, true)? {
                Some((by_id, c)) => Some(SessionsRel {
                    by_id,
                    ended_at: c[0],
                }),
                None if relid(SESSIONS.table, schema) != Oid::INVALID => return Ok(None),
                None => None,
            };
            // the issuer tables come with 0.4.0, both at once
            let providers = shape(&PROVIDERS, schema, true)?;
            let issuer_keys = shape(&ISSUER_KEYS, schema, true)?;
            let issuers = match (providers, issuer_keys) {
                (Some((providers, p)), Some((keys, k))) => Some(IssuersRel {
                    providers,
                    audiences: p[0],
                    algs: p[1],
                    fresh_until: p[2],
                    keys,
                    kid: k[0],
                    alg: k[1],
                    material: k[2],
                }),
                _ => match (
                    relid(PROVIDERS.table, schema) != Oid::INVALID,
                    relid(ISSUER_KEYS.table, schema) != Oid::INVALID,
                ) {
                    (false, false) => None,
                    (true, false) => return Err(missing("relation issuer_keys")),
                    (false, true) => return Err(missing("relation identity_providers")),
                    // replaced while being opened: again
                    (true, true) => return Ok(None),
                },
            };
            Ok(Some(Relations {
                tokens: TokensRel {
                    by_hash: tokens,
                    id: t[0],
                    revoked_at: t[1],
                },
                subjects: SubjectsRel {
                    by_subject: subjects,
                    revoked_before: s[0],
                },
                keys: KeysRel {
                    by_kid: keys,
                    kid: k[0],
                    alg: k[1],
                    state: k[2],
                    can_sign: k[3],
                    version: k[4],
                    material: k[5],
                    key_fingerprint: k[6],
                    created_at: k[7],
                },
                sessions,
                issuers,
            }))
        };
        if let Some(r) = attempt()? {
            if resolves_to_same(&r) {
                return Ok(r);
            }
        }
    }
    Err(TsError::Internal(
        "token_store's tables kept being replaced while being opened".into(),
    ))
}

/// Open a table and its index as `shape` names them, check them, and close them (keeping the
/// locks until the transaction ends, as the executor does). `Ok(None)`: gone or replaced while
/// being opened (try again), or, with `optional`, no such table.
fn shape(s: &Shape, schema: Oid, optional: bool) -> TsResult<Option<(Probed, Vec<i16>)>> {
    let table = relid(s.table, schema);
    if table == Oid::INVALID {
        return if optional {
            Ok(None)
        } else {
            Err(missing(&format!("relation {}", s.table.to_string_lossy())))
        };
    }
    let index = relid(s.index, schema);
    if index == Oid::INVALID {
        return Err(missing(&format!("relation {}", s.index.to_string_lossy())));
    }
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    // SAFETY: try_relation_open locks the OID (taking in pending invalidations) and returns NULL,
    // lock released, when no such relation exists any more.
    let heap = unsafe { pg_sys::try_relation_open(table, lock) };
    if heap.is_null() {
        return Ok(None);
    }
    // SAFETY: as above, for the index.
    let idx = unsafe { pg_sys::try_relation_open(index, lock) };
    // The names were looked up before the locks took in pending invalidations: a relation
    // replaced meanwhile (REINDEX CONCURRENTLY swaps an index under its name) is opened again.
    let replaced =
        idx.is_null() || relid(s.table, schema) != table || relid(s.index, schema) != index;
    let checked = if replaced {
        Ok(None)
    } else {
        // SAFETY: both are open and locked until closed below.
        unsafe { check(s, heap, idx) }.map(|(eq_proc, collation, columns)| {
            Some((
                Probed {
                    table,
                    index,
                    eq_proc,
                    collation,
                },
                columns,
            ))
        })
    };
    // SAFETY: closes what was opened above, once each; the locks stay until the transaction ends.
    unsafe {
        if !idx.is_null() {
            pg_sys::relation_close(idx, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
        pg_sys::relation_close(heap, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
    checked
}

/// The checks of one table and index pair: the index's equality procedure and collation, and the
/// column numbers of `s.columns`.
///
/// # Safety
/// `heap` and `idx` are open relations.
unsafe fn check(s: &Shape, heap: Relation, idx: Relation) -> TsResult<(Oid, Oid, Vec<i16>)> {
    // SAFETY: the caller's contract: both relcache entries are valid while open; an index's
    // entry has rd_index, rd_opfamily, rd_opcintype and rd_indcollation for each key column.
    unsafe {
        let table = (*heap).rd_id;
        if (*(*heap).rd_rel).relkind as u8 != pg_sys::RELKIND_RELATION {
            return Err(changed(s.table, "not an ordinary table"));
        }
        let form = (*idx).rd_index;
        if (*(*idx).rd_rel).relkind as u8 != pg_sys::RELKIND_INDEX || form.is_null() {
            return Err(changed(s.index, "not an index"));
        }
        if (*form).indrelid != table {
            return Err(changed(s.index, "not an index of its table"));
        }
        if (*(*idx).rd_rel).relam != pg_sys::BTREE_AM_OID {
            return Err(changed(s.index, "not a btree index"));
        }
        if !(*form).indisunique {
            return Err(changed(s.index, "not unique"));
        }
        if !((*form).indisvalid && (*form).indisready && (*form).indislive) {
            return Err(changed(s.index, "not valid"));
        }
        let nkeys = 1 + s.rest_of_key.len();
        if usize::try_from((*form).indnkeyatts).ok() != Some(nkeys)
            || !pg_sys::RelationGetIndexExpressions(idx).is_null()
            || !pg_sys::RelationGetIndexPredicate(idx).is_null()
        {
            return Err(changed(s.index, "not an index of its plain columns"));
        }
        let indkey = std::slice::from_raw_parts((*form).indkey.values.as_ptr(), nkeys);
        for (i, c) in std::iter::once(&s.key).chain(s.rest_of_key).enumerate() {
            if indkey[i] != column(s.table, table, *c)? {
                return Err(changed(s.index, "not on its columns"));
            }
        }
        let opfamily = *(*idx).rd_opfamily;
        let opcintype = *(*idx).rd_opcintype;
        let collation = *(*idx).rd_indcollation;
        if opcintype != s.key.1 {
            return Err(changed(s.index, "not of its operator class"));
        }
        let op = pg_sys::get_opfamily_member(
            opfamily,
            opcintype,
            opcintype,
            pg_sys::BTEqualStrategyNumber as i16,
        );
        let eq_proc = if op == Oid::INVALID {
            Oid::INVALID
        } else {
            pg_sys::get_opcode(op)
        };
        if eq_proc == Oid::INVALID {
            return Err(changed(s.index, "no equality operator"));
        }
        let mut columns = Vec::with_capacity(s.columns.len());
        for c in s.columns {
            columns.push(column(s.table, table, *c)?);
        }
        Ok((eq_proc, collation, columns))
    }
}

/// The number of column `c` of `table`, checking its type.
fn column(what: &CStr, table: Oid, (name, type_oid): Column) -> TsResult<i16> {
    // SAFETY: syscache lookups; get_attnum gives InvalidAttrNumber (0) for an absent or dropped
    // column, get_atttype InvalidOid for an absent one.
    let (n, t) = unsafe {
        let n = pg_sys::get_attnum(table, name.as_ptr());
        (
            n,
            if n > 0 {
                pg_sys::get_atttype(table, n)
            } else {
                Oid::INVALID
            },
        )
    };
    if n <= 0 {
        return Err(missing(&format!("column {}", name.to_string_lossy())));
    }
    if t != type_oid {
        return Err(changed(
            what,
            &format!("column {} has another type", name.to_string_lossy()),
        ));
    }
    Ok(n)
}
