//! Encryption at rest (AES-256-GCM sealing), key fingerprints and hashing.
//!
//! A sealed blob is `nonce (12) ‖ ciphertext ‖ tag (16)`, AES-256-GCM, with the caller's
//! associated data (a row id or a kid) bound in so a blob copied to another row fails to open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of the random nonce in front of every sealed blob.
pub const NONCE_LEN: usize = 12;
/// Length of the GCM tag at the end of every sealed blob.
pub const TAG_LEN: usize = 16;

/// A 32-byte AES-256-GCM key with its public fingerprint. The bytes are wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EncryptionKey {
    bytes: [u8; 32],
    #[zeroize(skip)]
    fingerprint: String,
}

impl EncryptionKey {
    /// Wrap raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let fingerprint = fingerprint_of(&bytes);
        EncryptionKey { bytes, fingerprint }
    }

    /// Parse the textual form of a key: 64 hex digits or base64 of exactly 32 bytes.
    /// The error never contains the input.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        let mut raw = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex_decode(text).ok_or("not valid hex")?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| "expected 64 hex digits or base64 of 32 bytes")?
        };
        if raw.len() != 32 {
            raw.zeroize();
            return Err("the key must be exactly 32 bytes (64 hex digits or 44 base64 characters)");
        }
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&raw);
        raw.zeroize();
        Ok(Self::from_bytes(bytes))
    }

    /// The raw key bytes (for handing between GUC hooks; never printed).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Short public identifier of this key: 16 hex digits of a domain-separated SHA-256.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Encrypt `plaintext` with a fresh random nonce, binding `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new_from_slice(&self.bytes).expect("32-byte key");
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source failed");
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt a blob made by [`EncryptionKey::seal`] with the same `aad`; `None` if it was
    /// altered, made under another key, or bound to other associated data.
    pub fn open(&self, aad: &[u8], blob: &[u8]) -> Option<Vec<u8>> {
        if blob.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let cipher = Aes256Gcm::new_from_slice(&self.bytes).ok()?;
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .ok()
    }
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionKey({})", self.fingerprint)
    }
}

/// The current key and the older ones that still decrypt during a rotation.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    /// Key that encrypts new data.
    pub current: Option<EncryptionKey>,
    /// Keys that only decrypt.
    pub previous: Vec<EncryptionKey>,
}

impl Keyring {
    /// The key whose fingerprint is `fp`, current or previous.
    pub fn by_fingerprint(&self, fp: &str) -> Option<&EncryptionKey> {
        self.current
            .iter()
            .chain(self.previous.iter())
            .find(|k| k.fingerprint() == fp)
    }
}

fn fingerprint_of(key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"token_store key fingerprint v1\0");
    h.update(key);
    hex_encode(&h.finalize()[..8])
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lowercase hex of `data`.
pub fn hex_encode(data: &[u8]) -> String {
    base16ct::lower::encode_string(data)
}

/// Bytes of an even-length hex string, either case.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    base16ct::mixed::decode_vec(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn parses_hex_and_base64_to_the_same_key() {
        let a = EncryptionKey::parse(HEX_KEY).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode((0u8..32).collect::<Vec<_>>());
        assert_eq!(b64.len(), 44);
        let b = EncryptionKey::parse(&b64).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
    }

    #[test]
    fn rejects_wrong_lengths() {
        for bad in [
            "",
            "abcd",
            &HEX_KEY[..62],
            "c2hvcnQ=",
            "not base64 at all!!",
        ] {
            assert!(EncryptionKey::parse(bad).is_err(), "{bad:?}");
        }
        // 33 bytes of base64
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 33]);
        assert!(EncryptionKey::parse(&b64).is_err());
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let k = EncryptionKey::parse(HEX_KEY).unwrap();
        let blob = k.seal(b"row-1", b"{\"sub\":\"alice\"}");
        assert_eq!(blob.len(), NONCE_LEN + 15 + TAG_LEN);
        assert_eq!(k.open(b"row-1", &blob).unwrap(), b"{\"sub\":\"alice\"}");
        // bound to its associated data
        assert!(k.open(b"row-2", &blob).is_none());
        // every single flipped bit is detected
        for i in 0..blob.len() * 8 {
            let mut t = blob.clone();
            t[i / 8] ^= 1 << (i % 8);
            assert!(k.open(b"row-1", &t).is_none(), "bit {i}");
        }
        // truncated blobs are refused, never panic
        for n in 0..blob.len() {
            assert!(k.open(b"row-1", &blob[..n]).is_none());
        }
        // another key cannot open it
        let other = EncryptionKey::from_bytes([9u8; 32]);
        assert!(other.open(b"row-1", &blob).is_none());
    }

    #[test]
    fn nonces_are_fresh() {
        let k = EncryptionKey::from_bytes([1u8; 32]);
        let a = k.seal(b"", b"same");
        let b = k.seal(b"", b"same");
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn keyring_finds_by_fingerprint() {
        let cur = EncryptionKey::from_bytes([1u8; 32]);
        let old = EncryptionKey::from_bytes([2u8; 32]);
        let ring = Keyring {
            current: Some(cur.clone()),
            previous: vec![old.clone()],
        };
        assert_eq!(
            ring.by_fingerprint(old.fingerprint())
                .unwrap()
                .fingerprint(),
            old.fingerprint()
        );
        assert_eq!(
            ring.by_fingerprint(cur.fingerprint())
                .unwrap()
                .fingerprint(),
            cur.fingerprint()
        );
        assert!(ring.by_fingerprint("0000000000000000").is_none());
        assert_ne!(cur.fingerprint(), old.fingerprint());
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let k = EncryptionKey::parse(HEX_KEY).unwrap();
        let s = format!("{k:?}");
        assert!(!s.contains("0001020304"));
        assert!(s.contains(k.fingerprint()));
    }

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            hex_encode(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
