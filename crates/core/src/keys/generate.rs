//! Fresh keys from the operating system's random source.

use getrandom::SysRng;
use rsa::Generate;

use super::*;

const RNG_FAILED: &str = "the OS random source failed";

/// A fresh key for `alg` from the OS random source: a 32, 48 or 64-byte secret for HS256,
/// HS384 or HS512; a 2048-bit RSA key for RS* and PS*; a P-256 key for ES256, a P-384 key for
/// ES384 and an Ed25519 key for EdDSA. The result can sign.
///
/// # Panics
/// If the OS random source fails.
pub fn generate(alg: Alg) -> KeyMaterial {
    let key = match Kind::of(alg) {
        None => {
            let mut bytes = vec![0u8; alg.min_secret_bytes()];
            getrandom::fill(&mut bytes).expect(RNG_FAILED);
            return KeyMaterial {
                bytes,
                can_sign: true,
            };
        }
        // not Generate: its default size is 3072 bits
        Some(Kind::Rsa) => Key::RsaPrivate(Box::new(
            RsaSecret::new(&mut SysRng, RSA_GENERATED_BITS).expect("RSA key generation failed"),
        )),
        Some(Kind::P256) => Key::from(p256::SecretKey::try_generate().expect(RNG_FAILED)),
        Some(Kind::P384) => Key::from(p384::SecretKey::try_generate().expect(RNG_FAILED)),
        Some(Kind::Ed25519) => {
            Key::EdPrivate(Box::new(EdSecret::try_generate().expect(RNG_FAILED)))
        }
    };
    key.to_material().expect("a generated key can be encoded")
}
