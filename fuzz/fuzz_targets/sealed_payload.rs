//! Any bytes as a sealed payload: opening refuses what the key did not seal, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_store_core::aead::EncryptionKey;

fuzz_target!(|data: &[u8]| {
    let key = EncryptionKey::from_bytes([42u8; 32]);
    let (aad, blob) = data.split_at(data.len().min(16));
    assert!(key.open(aad, blob).is_none(), "forged ciphertext opened");
    // and what it seals, it opens
    let sealed = key.seal(aad, blob);
    assert_eq!(key.open(aad, &sealed).as_deref(), Some(blob));
});
