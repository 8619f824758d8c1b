//! The encryption keyring, read from the settings (and key file) and kept per backend until
//! one of them changes; sealing and opening under it.

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::{TsError, TsResult};
use crate::gucs;
use token_store_core::aead::{EncryptionKey, Keyring};

// What the keyring was built from; compared by fingerprint, so no key text is kept here.
#[derive(PartialEq)]
struct Source {
    key: Option<String>,
    file: Option<(String, Option<std::time::SystemTime>)>,
    previous: Vec<String>,
}

thread_local! {
    static RING: RefCell<Option<(Source, Rc<Keyring>)>> = const { RefCell::new(None) };
}

fn read_key_file(path: &str) -> TsResult<EncryptionKey> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        TsError::NoEncryptionKey(format!(
            "the file \"{path}\" named by token_store.encryption_key_file cannot be read: {e}"
        ))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TsError::NoEncryptionKey(format!(
            "the file \"{path}\" named by token_store.encryption_key_file has mode {mode:04o}, readable by \
             group or others; it must be 0600 (or 0400) and owned by the server's user"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        TsError::NoEncryptionKey(format!(
            "the file \"{path}\" named by token_store.encryption_key_file cannot be read: {e}"
        ))
    })?;
    EncryptionKey::parse(&text).map_err(|why| {
        TsError::NoEncryptionKey(format!(
            "the file \"{path}\" named by token_store.encryption_key_file holds no valid key: {why}"
        ))
    })
}

/// The keyring as the settings define it now; re-read only when a setting or the key file changes.
pub fn encryption_keyring() -> TsResult<Rc<Keyring>> {
    let key = gucs::encryption_key();
    let previous = gucs::previous_encryption_keys();
    let file = gucs::nonempty(&gucs::ENCRYPTION_KEY_FILE).map(|p| {
        let mtime = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
        (p, mtime)
    });
    let source = Source {
        key: key.as_ref().map(|k| k.fingerprint().to_owned()),
        file: if key.is_some() { None } else { file },
        previous: previous
            .iter()
            .map(|k| k.fingerprint().to_owned())
            .collect(),
    };
    if let Some(ring) = RING.with_borrow(|r| {
        r.as_ref()
            .filter(|(s, _)| *s == source)
            .map(|(_, k)| k.clone())
    }) {
        return Ok(ring);
    }
    // Without preloading, PostgreSQL keeps the configured text as a placeholder that every role
    // can read with SHOW until a session loads the library: such a key is never used.
    if (key.is_some() || !previous.is_empty()) && !gucs::preloaded() {
        return Err(exposed_key());
    }
    let current = match (key, &source.file) {
        (Some(k), _) => Some(k),
        (None, Some((path, _))) => Some(read_key_file(path)?),
        (None, None) => None,
    };
    let ring = Rc::new(Keyring { current, previous });
    RING.set(Some((source, ring.clone())));
    Ok(ring)
}

fn exposed_key() -> TsError {
    TsError::NotInPrerequisiteState {
        message: "token_store.encryption_key is not used because token_store is not in \
                  shared_preload_libraries"
            .into(),
        hint: Some(
            "Without preloading, every role can read the key settings (token_store.encryption_key, \
             token_store.previous_encryption_keys) with SHOW. Add token_store to \
             shared_preload_libraries and restart, or keep the key in the file named by \
             token_store.encryption_key_file (mode 0600) and remove token_store.encryption_key."
                .into(),
        ),
    }
}

/// The key that encrypts new data, or 55000 with a hint.
pub fn current_key() -> TsResult<(Rc<Keyring>, EncryptionKey)> {
    let ring = encryption_keyring()?;
    let key = ring.current.clone().ok_or_else(|| {
        TsError::NoEncryptionKey(
            "neither token_store.encryption_key nor token_store.encryption_key_file is set".into(),
        )
    })?;
    Ok((ring, key))
}

/// Open a sealed blob under whichever key its fingerprint names.
pub fn open(
    what: impl FnOnce() -> String,
    fingerprint: &str,
    aad: &[u8],
    blob: &[u8],
) -> TsResult<Vec<u8>> {
    let ring = encryption_keyring()?;
    if ring.current.is_none() && ring.previous.is_empty() {
        return Err(TsError::NoEncryptionKey(
            "no key is configured to decrypt stored data".into(),
        ));
    }
    ring.by_fingerprint(fingerprint)
        .and_then(|k| k.open(aad, blob))
        .ok_or_else(|| TsError::Undecryptable {
            what: what(),
            fingerprint: fingerprint.to_owned(),
        })
}

/// Associated data binding a key's material to its kid.
pub fn key_aad(kid: &str) -> Vec<u8> {
    let mut aad = b"token_store key:".to_vec();
    aad.extend_from_slice(kid.as_bytes());
    aad
}
