//! Every `token_store.*` setting, registered in `_PG_init`.

use std::ffi::{CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;

use token_store_core::aead::EncryptionKey;

/// 32-byte AES-256-GCM key (base64 or hex) that encrypts payloads and key material.
pub static ENCRYPTION_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Path of a file (mode 0600) holding the encryption key, instead of `encryption_key`.
pub static ENCRYPTION_KEY_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
/// Comma-separated older keys that still decrypt during a rotation.
pub static PREVIOUS_ENCRYPTION_KEYS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// Comma-separated databases in which the purge worker runs.
pub static DATABASES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// Seconds between purge rounds; 0 turns purging off.
pub static PURGE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Rows deleted per purge transaction.
pub static PURGE_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// Seconds a row outlives its `exp` before it is purged.
pub static PURGE_GRACE: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Seconds a subject revocation is kept; 0 keeps it forever. It must outlast the longest-lived
/// token of that subject that could still be presented (deny-list mode, or a late `jwt_store`).
pub static SUBJECT_REVOCATION_TTL: GucSetting<i32> = GucSetting::<i32>::new(30 * 86_400);
/// Clock skew in seconds allowed for `exp`, `nbf` and `iat`.
pub static LEEWAY: GucSetting<i32> = GucSetting::<i32>::new(30);
/// on: only stored tokens verify (allow-list); off: any signed token unless revoked (deny-list).
pub static REQUIRE_STORED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Default `aud` every verification demands when set.
pub static AUDIENCE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Default `iss` every verification demands when set.
pub static ISSUER: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Longer input is rejected before any parsing.
pub static MAX_TOKEN_BYTES: GucSetting<i32> = GucSetting::<i32>::new(16_384);
/// on: every revoking function makes its transaction wait, at commit, until the synchronous
/// standbys have applied it (`synchronous_commit = remote_apply` for that transaction).
pub static SYNCHRONOUS_REVOCATION: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Seconds after its first use during which a refresh token used again gets another pair of the
/// same session (two tabs refreshing at once) instead of ending the session as reused.
pub static REFRESH_REUSE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(10);
/// Seconds a session may go without a refresh before a refresh is refused (`session_idle`) and the
/// session ends; 0: no limit.
pub static SESSION_IDLE_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Seconds after its start past which a session is refused a refresh (`session_expired`) and
/// ends; 0: no limit.
pub static SESSION_MAX_LIFETIME: GucSetting<i32> = GucSetting::<i32>::new(0);

// Issuers (issue 21): fetching identity providers' keys.
/// Seconds: the shortest time between two fetches of one issuer (max-age, early fetches).
pub static ISSUER_MIN_REFRESH: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Seconds an issuer's last good keys stay usable past their due time while fetches fail.
pub static ISSUER_MAX_STALE: GucSetting<i32> = GucSetting::<i32>::new(86_400);
/// PEM file of CA certificates trusted for fetches, beside the system's store.
pub static ISSUER_CA_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// on: issuers' URLs may use plain http.
pub static ISSUER_ALLOW_HTTP: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Comma-separated hosts whose non-public addresses (loopback, private, ...) fetches may reach.
pub static ISSUER_ALLOWED_HOSTS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

// DPoP and revocation events (issue 23).
/// on: `jwt_verify`, `jwt_valid` and `jwt_introspect` refuse a token bound to a DPoP key
/// (`cnf.jkt`) with `dpop_required`; only `jwt_verify_dpop` accepts it.
pub static DPOP_ENFORCE: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Seconds a DPoP proof is accepted after its `iat` (plus the leeway); its `jti` is kept as long.
pub static DPOP_MAX_AGE: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Channel on which every committed revocation, session end and key state change is announced
/// with NOTIFY; empty: none.
pub static NOTIFY_CHANNEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

const SECRET: GucFlags = GucFlags::SUPERUSER_ONLY.union(GucFlags::NO_SHOW_ALL);

/// What kind of setting a row of [`SETTINGS`] defines, with its kind's own fields.
enum Kind {
    Bool(&'static GucSetting<bool>),
    Int {
        setting: &'static GucSetting<i32>,
        min: i32,
        max: i32,
    },
    Str(&'static GucSetting<Option<CString>>),
    /// A string with hooks: the key settings' keep their value out of sight, the channel's
    /// refuses a name NOTIFY would refuse.
    HookedStr {
        setting: &'static GucSetting<Option<CString>>,
        check: pg_sys::GucStringCheckHook,
        assign: pg_sys::GucStringAssignHook,
        show: pg_sys::GucShowHook,
    },
}

/// One setting: a row of [`SETTINGS`].
struct Setting {
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    context: Ctx,
    flags: GucFlags,
    kind: Kind,
}

/// The contexts our settings use (pgrx's `GucContext` is not `Copy`).
#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Postmaster,
    Sighup,
    Suset,
}

impl Ctx {
    fn pg(self) -> GucContext {
        match self {
            Ctx::Postmaster => GucContext::Postmaster,
            Ctx::Sighup => GucContext::Sighup,
            Ctx::Suset => GucContext::Suset,
        }
    }
}

const NONE: GucFlags = GucFlags::empty();

/// Every `token_store.*` setting, in the order they are registered. Adding one is adding a row
/// (and its `static` above).
static SETTINGS: &[Setting] = &[
    Setting {
        name: c"token_store.encryption_key",
        short: c"AES-256-GCM key for stored payloads and key material (base64 or hex of 32 bytes).",
        long: c"Superuser-only and hidden; never printed.",
        context: Ctx::Sighup,
        flags: SECRET,
        kind: Kind::HookedStr {
            setting: &ENCRYPTION_KEY,
            check: Some(check_encryption_key),
            assign: Some(assign_encryption_key),
            show: Some(show_encryption_key),
        },
    },
    Setting {
        name: c"token_store.previous_encryption_keys",
        short: c"Comma-separated older encryption keys, still accepted for decryption.",
        long: c"Superuser-only and hidden; never printed.",
        context: Ctx::Sighup,
        flags: SECRET,
        kind: Kind::HookedStr {
            setting: &PREVIOUS_ENCRYPTION_KEYS,
            check: Some(check_previous_keys),
            assign: Some(assign_previous_keys),
            show: Some(show_previous_keys),
        },
    },
    Setting {
        name: c"token_store.encryption_key_file",
        short: c"Path of a file (mode 0600) holding the encryption key.",
        long: c"Used when token_store.encryption_key is not set.",
        context: Ctx::Sighup,
        flags: GucFlags::SUPERUSER_ONLY,
        kind: Kind::Str(&ENCRYPTION_KEY_FILE),
    },
    // A postmaster setting defined after startup ends the session (FATAL): registered only while
    // preloading (see `init`).
    Setting {
        name: c"token_store.databases",
        short: c"Comma-separated databases in which the purge worker runs.",
        long: c"One worker per database; needs shared_preload_libraries = 'token_store'.",
        context: Ctx::Postmaster,
        flags: NONE,
        kind: Kind::Str(&DATABASES),
    },
    Setting {
        name: c"token_store.purge_interval",
        short: c"Time between purge rounds; 0 turns purging off.",
        long: c"",
        context: Ctx::Sighup,
        flags: GucFlags::UNIT_S,
        kind: Kind::Int {
            setting: &PURGE_INTERVAL,
            min: 0,
            max: i32::MAX,
        },
    },
    Setting {
        name: c"token_store.purge_batch_size",
        short: c"Rows deleted per purge transaction.",
        long: c"",
        context: Ctx::Sighup,
        flags: NONE,
        kind: Kind::Int {
            setting: &PURGE_BATCH_SIZE,
            min: 1,
            max: i32::MAX,
        },
    },
    Setting {
        name: c"token_store.purge_grace",
        short: c"How long a row outlives its exp before it is purged.",
        long: c"",
        context: Ctx::Sighup,
        flags: GucFlags::UNIT_S,
        kind: Kind::Int {
            setting: &PURGE_GRACE,
            min: 0,
            max: i32::MAX,
        },
    },
    Setting {
        name: c"token_store.subject_revocation_ttl",
        short: c"How long a subject revocation is kept by the purge; 0 keeps it forever.",
        long: c"Set it to at least the lifetime of the longest-lived tokens you accept.",
        context: Ctx::Sighup,
        flags: GucFlags::UNIT_S,
        kind: Kind::Int {
            setting: &SUBJECT_REVOCATION_TTL,
            min: 0,
            max: i32::MAX,
        },
    },
    Setting {
        name: c"token_store.leeway",
        short: c"Clock skew allowed for exp, nbf and iat.",
        long: c"",
        context: Ctx::Suset,
        flags: GucFlags::UNIT_S,
        kind: Kind::Int {
            setting: &LEEWAY,
            min: 0,
            max: MAX_LEEWAY,
        },
    },
    Setting {
        name: c"token_store.require_stored",
        short: c"on: a token verifies only if it is stored; off: any correctly signed token verifies unless revoked.",
        long: c"",
        context: Ctx::Suset,
        flags: NONE,
        kind: Kind::Bool(&REQUIRE_STORED),
    },
    Setting {
        name: c"token_store.audience",
        short: c"Default aud that every verification demands when set.",
        long: c"",
        context: Ctx::Suset,
        flags: NONE,
        kind: Kind::Str(&AUDIENCE),
    },
    Setting {
        name: c"token_store.issuer",
        short: c"Default iss that every verification demands when set.",
        long: c"",
        context: Ctx::Suset,
        flags: NONE,
        kind: Kind::Str(&ISSUER),
    },
    Setting {
        name: c"token_store.synchronous_revocation",
        short: c"Revocations wait at commit until every synchronous standby has applied them.",
        long: c"Raises synchronous_commit to remote_apply for each transaction that revokes.",
        context: Ctx::Suset,
        flags: NONE,
        kind: Kind::Bool(&SYNCHRONOUS_REVOCATION),
    },
    Setting {
        name: c"token_store.refresh_reuse_interval",
        short: c"How long after its first use a refresh token used again still gets a new pair of its session.",
        long: c"Beyond it, a second use ends the session (refresh_reused).",
        context: Ctx::Suset,
        flags: GucFlags::UNIT_S,
        kind: Kind::Int {
            setting: &REFRESH_REUSE_INTERVAL,
            min: 0,
            max: i32::MAX,
        },
    },
    Setting {
        name: c"token_store.session_idle_timeout",
        short: c"A session not refreshed within this time ends at its next refresh (session_idle); 0: none.",
        long: c"",
        context: Ctx::Suset,
        flags: GucFlags::UNIT_S,
        kind: Kind::Int {
            setting: &SESSION_IDLE_TIMEOUT,
            min: 0,
            max: i32::MAX,
        },
    },
    Setting {
        name: c"token_store.session_max_lifetime",
        short: c"A session older than this ends at its next refresh (session_expired); 0: none.",
        long: c"",
        context: Ctx::Suset,
        flags: GucFlags::UNIT_S,
        kind: Kind::Int {
            setting: &SESSION_MAX_LIFETIME,
            min: 0,
            max: i32::MAX,
        },
    },
    Setting {
        name: c"token_store.max_token_bytes",
        short: c"Longer token input is rejected before any parsing.",
        long: c"",
        context: Ctx::Suset,
        flags: GucFlags::UNIT_BYTE,
        kind: Kind::Int {
            setting: &MAX_TOKEN_BYTES,
            min: 16,
            max: 64 * 1024 * 1024,
        },
    },
    Setting {
        name: c"token_store.issuer_min_refresh",
        short: c"Shortest time between two fetches of one issuer's keys.",
        long: c"Bounds Cache-Control max-age and the early fetches that unknown kids ask for.",
        context: Ctx::Sighup,
        flags: GucFlags::UNIT_S,
        kind: Kind::Int {
            setting: &ISSUER_MIN_REFRESH,
            min: 1,
            max: 86_400,
        },
    },
    Setting {
        name: c"token_store.issuer_max_stale",
        short: c"How long an issuer's last good keys stay in use past their due time while fetches fail.",
        long: c"Beyond it the issuer's tokens are refused (issuer_unavailable).",
        context: Ctx::Sighup,
        flags: GucFlags::UNIT_S,
        kind: Kind::Int {
            setting: &ISSUER_MAX_STALE,
            min: 0,
            max: i32::MAX,
        },
    },
    Setting {
        name: c"token_store.issuer_ca_file",
        short: c"PEM file of CA certificates trusted for fetching issuers' keys, beside the system's store.",
        long: c"",
        context: Ctx::Sighup,
        flags: GucFlags::SUPERUSER_ONLY,
        kind: Kind::Str(&ISSUER_CA_FILE),
    },
    Setting {
        name: c"token_store.issuer_allow_http",
        short: c"Allow issuers' URLs with plain http.",
        long: c"",
        context: Ctx::Sighup,
        flags: GucFlags::SUPERUSER_ONLY,
        kind: Kind::Bool(&ISSUER_ALLOW_HTTP),
    },
    Setting {
        name: c"token_store.issuer_allowed_hosts",
        short: c"Hosts whose loopback, private or other non-public addresses fetches of issuers' keys may reach.",
        long: c"Comma-separated host names or addresses.",
        context: Ctx::Sighup,
        flags: GucFlags::SUPERUSER_ONLY,
        kind: Kind::Str(&ISSUER_ALLOWED_HOSTS),
    },
    Setting {
        name: c"token_store.dpop_enforce",
        short: c"on: jwt_verify, jwt_valid and jwt_introspect refuse a DPoP-bound token (dpop_required).",
        long: c"A token with cnf.jkt is then accepted only by jwt_verify_dpop, with a proof of its key.",
        context: Ctx::Suset,
        flags: NONE,
        kind: Kind::Bool(&DPOP_ENFORCE),
    },
    Setting {
        name: c"token_store.dpop_max_age",
        short: c"How long after its iat a DPoP proof is accepted (plus token_store.leeway).",
        long: c"The replay cache keeps each proof's jti as long.",
        context: Ctx::Suset,
        flags: GucFlags::UNIT_S,
        kind: Kind::Int {
            setting: &DPOP_MAX_AGE,
            min: 1,
            max: 86_400,
        },
    },
    Setting {
        name: c"token_store.notify_channel",
        short: c"Channel on which revocations, session ends and key state changes are announced (NOTIFY); empty: none.",
        long: c"Sent at commit, one notification per change, a JSON payload without token or claims.",
        context: Ctx::Suset,
        flags: NONE,
        kind: Kind::HookedStr {
            setting: &NOTIFY_CHANNEL,
            check: Some(check_notify_channel),
            assign: None,
            show: None,
        },
    },
];

/// Register every setting. Called once from `_PG_init`; `preloading` is true when the library is
/// loaded through `shared_preload_libraries`, the only time a postmaster setting may be defined.
pub fn init(preloading: bool) {
    PRELOADED.store(preloading, std::sync::atomic::Ordering::Relaxed);
    for s in SETTINGS {
        // without preloading there is no worker to configure: the value stays a placeholder
        if s.context == Ctx::Postmaster && !preloading {
            continue;
        }
        s.define();
    }
}

impl Setting {
    fn define(&'static self) {
        let (name, short, long, context, flags) = (
            self.name,
            self.short,
            self.long,
            self.context.pg(),
            self.flags,
        );
        match self.kind {
            Kind::Bool(setting) => {
                GucRegistry::define_bool_guc(name, short, long, setting, context, flags)
            }
            Kind::Int { setting, min, max } => {
                GucRegistry::define_int_guc(name, short, long, setting, min, max, context, flags)
            }
            Kind::Str(setting) => {
                GucRegistry::define_string_guc(name, short, long, setting, context, flags)
            }
            // SAFETY: the hooks are `#[pg_guard]`ed and follow the GUC hook contracts (see
            // check_keys).
            Kind::HookedStr {
                setting,
                check,
                assign,
                show,
            } => unsafe {
                GucRegistry::define_string_guc_with_hooks(
                    name, short, long, setting, context, flags, check, assign, show,
                )
            },
        }
    }
}

/// Largest `token_store.leeway` accepted, in seconds.
pub const MAX_LEEWAY: i32 = 86_400;

/// Whether the library was loaded through `shared_preload_libraries` (set by `init`; a backend
/// forked by the postmaster inherits it).
static PRELOADED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the library was preloaded.
pub fn preloaded() -> bool {
    PRELOADED.load(std::sync::atomic::Ordering::Relaxed)
}

/// `(grace, revoked_grace)` in seconds for a purge: revoked rows (and ended sessions) also outlive
/// `leeway`, the largest leeway a verification may use (see `engine::admin::largest_leeway`).
pub fn purge_graces(leeway: f64) -> (f64, f64) {
    let grace = f64::from(PURGE_GRACE.get().max(0));
    (grace, grace.max(leeway))
}

/// Age in seconds past which a subject revocation is purged (its TTL plus `leeway`), or `None` to
/// keep them.
pub fn subject_revocation_ttl(leeway: f64) -> Option<f64> {
    let ttl = SUBJECT_REVOCATION_TTL.get();
    (ttl > 0).then(|| f64::from(ttl) + leeway)
}

/// A setting's text in seconds, as PostgreSQL reads an integer setting with unit `s` (`120`,
/// `2min`, `1h`); `None` when it is not one.
pub fn parse_seconds(text: &str) -> Option<i32> {
    let c = CString::new(text).ok()?;
    let mut out: std::ffi::c_int = 0;
    // SAFETY: a NUL-terminated string and a local to write to; no hint is asked for.
    let ok = unsafe {
        pg_sys::parse_int(
            c.as_ptr(),
            &mut out,
            pg_sys::GUC_UNIT_S as std::ffi::c_int,
            std::ptr::null_mut(),
        )
    };
    ok.then_some(out)
}

/// A string setting's value, with the empty string read as unset.
pub fn nonempty(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .and_then(|c| c.into_string().ok())
        .filter(|s| !s.trim().is_empty())
}

// The key settings never hold a key in their visible value: the check hook parses the text,
// hands the parsed keys to the assign hook through `extra`, and replaces the value with "".
// So the key is not in SHOW, pg_settings, or the postmaster's "parameter changed to" log line
// (which PostgreSQL writes only when the visible value changes).
thread_local! {
    static KEY: std::cell::RefCell<Option<EncryptionKey>> = const { std::cell::RefCell::new(None) };
    static PREVIOUS: std::cell::RefCell<Vec<EncryptionKey>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The key set by `token_store.encryption_key`, if any.
pub fn encryption_key() -> Option<EncryptionKey> {
    KEY.with_borrow(|k| k.clone())
}

/// The keys listed in `token_store.previous_encryption_keys`.
pub fn previous_encryption_keys() -> Vec<EncryptionKey> {
    PREVIOUS.with_borrow(|k| k.clone())
}

/// Parsed keys as they travel from the check hook to the assign hook: a count, then the bytes.
#[repr(C)]
struct KeyList {
    count: usize,
    keys: [[u8; 32]; 0],
}

// A channel name NOTIFY would refuse is refused here, so a revocation never fails for it.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_notify_channel(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: `newval` points at a valid NUL-terminated string or NULL (DefineCustomStringVariable).
    let len = unsafe {
        let p = *newval;
        if p.is_null() {
            0
        } else {
            CStr::from_ptr(p).to_bytes().len()
        }
    };
    if len >= pg_sys::NAMEDATALEN as usize {
        set_check_error(
            "token_store.notify_channel",
            &format!(
                "a channel name is at most {} bytes",
                pg_sys::NAMEDATALEN - 1
            ),
        );
        return false;
    }
    true
}

fn set_check_error(setting: &str, detail: &str) {
    let msg = CString::new(format!("invalid value for parameter \"{setting}\"")).expect("no NUL");
    let detail = CString::new(crate::error::sentence(detail.to_owned()))
        .expect("no NUL in our own messages");
    // SAFETY: the GUC machinery reads these right after the hook returns false; pstrdup copies
    // into the current memory context as it expects.
    unsafe {
        pg_sys::GUC_check_errcode(pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE as i32);
        pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(msg.as_ptr());
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
    }
}

// GUC values and extras are malloc'd by the GUC machinery before PostgreSQL 16, and by
// guc_malloc from 16 on; each pair below matches the version's own allocator.
#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
unsafe fn guc_alloc(size: usize) -> *mut std::ffi::c_void {
    // SAFETY: plain allocation; the GUC machinery frees it with free().
    unsafe { libc::malloc(size) }
}
#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
unsafe fn guc_release(p: *mut std::ffi::c_void) {
    // SAFETY: `p` came from the GUC machinery's malloc (or guc_alloc above).
    unsafe { libc::free(p) }
}
#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
unsafe fn guc_alloc(size: usize) -> *mut std::ffi::c_void {
    // SAFETY: the allocator the GUC machinery frees its values and extras with.
    unsafe { pg_sys::guc_malloc(pg_sys::LOG as i32, size) }
}
#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
unsafe fn guc_release(p: *mut std::ffi::c_void) {
    // SAFETY: `p` came from guc_malloc/guc_strdup.
    unsafe { pg_sys::guc_free(p) }
}

/// Parse `text` (one key, or a comma-separated list when `list`), and on success move the keys
/// into `*extra` and blank `*newval`. On failure set the error without quoting the value.
unsafe fn check_keys(
    newval: *mut *mut std::ffi::c_char,
    extra: *mut *mut std::ffi::c_void,
    setting: &str,
    list: bool,
) -> bool {
    // SAFETY: `newval` points at a valid NUL-terminated string or NULL (DefineCustomStringVariable).
    let text = unsafe {
        let p = *newval;
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    let parts: Vec<&str> = if list {
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect()
    } else {
        Some(text.trim())
            .filter(|t| !t.is_empty())
            .into_iter()
            .collect()
    };
    let mut keys = Vec::with_capacity(parts.len());
    // A parallel worker restoring its leader's settings gets the blanked value (a key never
    // travels as text): it keeps the keys it read from the configuration itself.
    // SAFETY: a plain read of a flag PostgreSQL sets while a parallel worker starts.
    if parts.is_empty() && unsafe { pg_sys::InitializingParallelWorker } {
        if list {
            keys.extend(
                PREVIOUS.with_borrow(|k| k.iter().map(|k| *k.as_bytes()).collect::<Vec<_>>()),
            );
        } else {
            keys.extend(KEY.with_borrow(|k| k.as_ref().map(|k| *k.as_bytes())));
        }
    }
    for (i, part) in parts.iter().enumerate() {
        match EncryptionKey::parse(part) {
            Ok(k) => keys.push(*k.as_bytes()),
            Err(why) if list => {
                set_check_error(setting, &format!("entry {} of the list: {why}", i + 1));
                return false;
            }
            Err(why) => {
                set_check_error(setting, why);
                return false;
            }
        }
    }
    let size = std::mem::size_of::<KeyList>() + keys.len() * 32;
    // SAFETY: fresh allocations of the sizes written; the GUC machinery owns and frees them.
    unsafe {
        let block = guc_alloc(size).cast::<KeyList>();
        let blank = guc_alloc(1).cast::<std::ffi::c_char>();
        if block.is_null() || blank.is_null() {
            return false;
        }
        (*block).count = keys.len();
        let dst = block.cast::<u8>().add(std::mem::size_of::<KeyList>());
        std::ptr::copy_nonoverlapping(keys.as_ptr().cast::<u8>(), dst, keys.len() * 32);
        *blank = 0;
        if !(*newval).is_null() {
            // zeroize's volatile writes, not explicit_bzero: Apple's libc has none
            zeroize::Zeroize::zeroize(std::slice::from_raw_parts_mut(
                (*newval).cast::<u8>(),
                libc::strlen(*newval),
            ));
            guc_release((*newval).cast());
        }
        *newval = blank;
        *extra = block.cast();
    }
    for k in keys.iter_mut() {
        zeroize::Zeroize::zeroize(k);
    }
    true
}

// SAFETY (for the readers below): `extra` is NULL or a block made by `check_keys`.
unsafe fn read_keys(extra: *mut std::ffi::c_void) -> Vec<EncryptionKey> {
    if extra.is_null() {
        return Vec::new();
    }
    // SAFETY: a KeyList header followed by `count` 32-byte keys, as check_keys wrote it.
    unsafe {
        let block = extra.cast::<KeyList>();
        let src = block.cast::<u8>().add(std::mem::size_of::<KeyList>());
        (0..(*block).count)
            .map(|i| {
                let mut b = [0u8; 32];
                std::ptr::copy_nonoverlapping(src.add(i * 32), b.as_mut_ptr(), 32);
                EncryptionKey::from_bytes(b)
            })
            .collect()
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_encryption_key(
    newval: *mut *mut std::ffi::c_char,
    extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: arguments as the GUC machinery passes them to a string check hook.
    unsafe { check_keys(newval, extra, "token_store.encryption_key", false) }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_previous_keys(
    newval: *mut *mut std::ffi::c_char,
    extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: arguments as the GUC machinery passes them to a string check hook.
    unsafe { check_keys(newval, extra, "token_store.previous_encryption_keys", true) }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn assign_encryption_key(
    _newval: *const std::ffi::c_char,
    extra: *mut std::ffi::c_void,
) {
    // SAFETY: `extra` is what check_encryption_key produced for this value.
    let key = unsafe { read_keys(extra) }.into_iter().next();
    KEY.set(key);
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn assign_previous_keys(
    _newval: *const std::ffi::c_char,
    extra: *mut std::ffi::c_void,
) {
    // SAFETY: `extra` is what check_previous_keys produced for this value.
    PREVIOUS.set(unsafe { read_keys(extra) });
}

// Whoever asks (a superuser included) sees whether a key is set, never the key itself.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn show_encryption_key() -> *const std::ffi::c_char {
    if KEY.with_borrow(|k| k.is_some()) {
        c"(hidden)".as_ptr()
    } else {
        c"".as_ptr()
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn show_previous_keys() -> *const std::ffi::c_char {
    if PREVIOUS.with_borrow(|k| k.is_empty()) {
        c"".as_ptr()
    } else {
        c"(hidden)".as_ptr()
    }
}

/// What the configuration set for token_store before the library was loaded, read from
/// PostgreSQL's placeholders. Only meaningful when not preloading, before `init`.
pub struct Placeholders {
    /// A key (or list of previous keys) sits in a placeholder any role can read with SHOW.
    pub exposed_key: bool,
    /// `token_store.databases` is set: a purge worker is wanted.
    pub worker_wanted: bool,
}

/// Read the placeholders PostgreSQL keeps for `token_store.*` settings met before the library.
pub fn placeholders() -> Placeholders {
    let set = |name: &CStr| {
        // SAFETY: GetConfigOption returns NULL (missing_ok) or a string owned by the GUC machinery,
        // read here at once; restrict_privileged is false because we only test for presence.
        unsafe {
            let v = pg_sys::GetConfigOption(name.as_ptr(), true, false);
            !v.is_null() && !CStr::from_ptr(v).to_bytes().trim_ascii().is_empty()
        }
    };
    Placeholders {
        exposed_key: set(c"token_store.encryption_key")
            || set(c"token_store.previous_encryption_keys"),
        worker_wanted: set(c"token_store.databases"),
    }
}

/// WARNINGs for a library loaded by a session rather than preloaded, where that matters.
pub fn warn_not_preloaded(p: &Placeholders) {
    if p.exposed_key {
        crate::error::warning(
            "token_store.encryption_key is configured but token_store is not in shared_preload_libraries",
            "Until a session loads token_store, PostgreSQL keeps the setting as a placeholder that any role can read with SHOW, so token_store does not use that key: its functions that need the key raise an error.",
            "Add token_store to shared_preload_libraries and restart, or keep the key in the file named by token_store.encryption_key_file.",
        );
    }
    if p.worker_wanted {
        crate::error::warning(
            "token_store.databases is set but token_store is not in shared_preload_libraries, so no purge worker runs",
            "The purge worker and the cluster-wide counters of stats() start only with a preloaded library.",
            "Add token_store to shared_preload_libraries and restart the server, or call token_store.purge() on a schedule.",
        );
    }
}
