//! Every `token_store.*` setting, registered in `_PG_init`.

use std::ffi::{CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;

use crate::crypto::EncryptionKey;

/// 32-byte AES-256-GCM key (base64 or hex) that encrypts payloads and key material.
pub static ENCRYPTION_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Path of a file (mode 0600) holding the encryption key, instead of `encryption_key`.
pub static ENCRYPTION_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Comma-separated older keys that still decrypt during a rotation.
pub static PREVIOUS_ENCRYPTION_KEYS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// Comma-separated databases in which the purge worker runs.
pub static DATABASES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// Seconds between purge rounds; 0 turns purging off.
pub static PURGE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Rows deleted per purge transaction.
pub static PURGE_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// Seconds a row outlives its `exp` before it is purged.
pub static PURGE_GRACE: GucSetting<i32> = GucSetting::<i32>::new(0);
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

const SECRET: GucFlags = GucFlags::SUPERUSER_ONLY.union(GucFlags::NO_SHOW_ALL);

/// Register every setting. Called once from `_PG_init`.
pub fn init() {
    // SAFETY: the check hooks are `#[pg_guard]`ed and only read their argument.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"token_store.encryption_key",
            c"AES-256-GCM key for stored payloads and key material (base64 or hex of 32 bytes).",
            c"Superuser-only and hidden; never printed.",
            &ENCRYPTION_KEY,
            GucContext::Sighup,
            SECRET,
            Some(check_encryption_key),
            None,
            Some(show_encryption_key),
        );
        GucRegistry::define_string_guc_with_hooks(
            c"token_store.previous_encryption_keys",
            c"Comma-separated older encryption keys, still accepted for decryption.",
            c"Superuser-only and hidden; never printed.",
            &PREVIOUS_ENCRYPTION_KEYS,
            GucContext::Sighup,
            SECRET,
            Some(check_previous_keys),
            None,
            Some(show_previous_keys),
        );
    }
    GucRegistry::define_string_guc(
        c"token_store.encryption_key_file",
        c"Path of a file (mode 0600) holding the encryption key.",
        c"Used when token_store.encryption_key is not set.",
        &ENCRYPTION_KEY_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"token_store.databases",
        c"Comma-separated databases in which the purge worker runs.",
        c"One worker per database; needs shared_preload_libraries = 'token_store'.",
        &DATABASES,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"token_store.purge_interval",
        c"Time between purge rounds; 0 turns purging off.",
        c"",
        &PURGE_INTERVAL,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"token_store.purge_batch_size",
        c"Rows deleted per purge transaction.",
        c"",
        &PURGE_BATCH_SIZE,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"token_store.purge_grace",
        c"How long a row outlives its exp before it is purged.",
        c"",
        &PURGE_GRACE,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"token_store.leeway",
        c"Clock skew allowed for exp, nbf and iat.",
        c"",
        &LEEWAY,
        0,
        86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"token_store.require_stored",
        c"on: a token verifies only if it is stored; off: any correctly signed token verifies unless revoked.",
        c"",
        &REQUIRE_STORED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"token_store.audience",
        c"Default aud that every verification demands when set.",
        c"",
        &AUDIENCE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"token_store.issuer",
        c"Default iss that every verification demands when set.",
        c"",
        &ISSUER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"token_store.max_token_bytes",
        c"Longer token input is rejected before any parsing.",
        c"",
        &MAX_TOKEN_BYTES,
        16,
        64 * 1024 * 1024,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
}

/// `(grace, revoked_grace)` in seconds for a purge: revoked rows also outlive the leeway.
pub fn purge_graces() -> (f64, f64) {
    let grace = PURGE_GRACE.get().max(0);
    (f64::from(grace), f64::from(grace.max(LEEWAY.get())))
}

/// A string setting's value, with the empty string read as unset.
pub fn nonempty(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .and_then(|c| c.into_string().ok())
        .filter(|s| !s.trim().is_empty())
}

fn set_check_detail(msg: &str) {
    let c = CString::new(msg).expect("no NUL in our own messages");
    // SAFETY: GUC_check_errdetail_string is read by the GUC machinery right after the hook
    // returns false; pstrdup copies into the current memory context as it expects.
    unsafe {
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(c.as_ptr());
    }
}

// SAFETY (for both check hooks): `newval` points at a valid, NUL-terminated string or NULL,
// as DefineCustomStringVariable guarantees.
unsafe fn newval_str<'a>(newval: *mut *mut std::ffi::c_char) -> Option<&'a str> {
    let p = unsafe { *newval };
    if p.is_null() {
        return None;
    }
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_encryption_key(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: see newval_str.
    match unsafe { newval_str(newval) } {
        None => true,
        Some(s) if s.trim().is_empty() => true,
        Some(s) => match EncryptionKey::parse(s) {
            Ok(_) => true,
            Err(why) => {
                set_check_detail(why);
                false
            }
        },
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_previous_keys(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: see newval_str.
    let Some(s) = (unsafe { newval_str(newval) }) else { return true };
    for (i, part) in s.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
        if let Err(why) = EncryptionKey::parse(part) {
            set_check_detail(&format!("entry {} of the list: {why}", i + 1));
            return false;
        }
    }
    true
}

// Whoever asks (a superuser included) sees whether a key is set, never the key itself.
fn hidden(setting: &GucSetting<Option<CString>>) -> *const std::ffi::c_char {
    match nonempty(setting) {
        Some(_) => c"(hidden)".as_ptr(),
        None => c"".as_ptr(),
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn show_encryption_key() -> *const std::ffi::c_char {
    hidden(&ENCRYPTION_KEY)
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn show_previous_keys() -> *const std::ffi::c_char {
    hidden(&PREVIOUS_ENCRYPTION_KEYS)
}
