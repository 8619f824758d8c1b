//! Fresh keys from the operating system's random source.

use super::*;

// ---------------------------------------------------------------------------------------------
// Generation

/// The operating system's random source, in the shape the RustCrypto crates take.
pub(super) struct OsRng;

#[derive(Debug)]
pub(super) struct RngFailed;

impl std::fmt::Display for RngFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the OS random source failed")
    }
}

impl std::error::Error for RngFailed {}

impl rsa::rand_core::TryRng for OsRng {
    type Error = RngFailed;

    fn try_next_u32(&mut self) -> Result<u32, RngFailed> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, RngFailed> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngFailed> {
        getrandom::getrandom(dst).map_err(|_| RngFailed)
    }
}

impl rsa::rand_core::TryCryptoRng for OsRng {}

pub(super) fn random<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut b = Zeroizing::new([0u8; N]);
    getrandom::getrandom(&mut b[..]).expect("the OS random source failed");
    b
}

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
            getrandom::getrandom(&mut bytes).expect("the OS random source failed");
            return KeyMaterial {
                bytes,
                can_sign: true,
            };
        }
        Some(Kind::Rsa) => Key::RsaPrivate(Box::new(
            RsaSecret::new(&mut OsRng, RSA_GENERATED_BITS).expect("RSA key generation failed"),
        )),
        // A random scalar is out of range with probability below 2^-32; draw again then.
        Some(Kind::P256) => loop {
            if let Ok(k) = p256::SecretKey::from_slice(&random::<32>()[..]) {
                break Key::from(k);
            }
        },
        Some(Kind::P384) => loop {
            if let Ok(k) = p384::SecretKey::from_slice(&random::<48>()[..]) {
                break Key::from(k);
            }
        },
        Some(Kind::Ed25519) => Key::EdPrivate(Box::new(EdSecret::from_bytes(&random::<32>()))),
    };
    key.to_material().expect("a generated key can be encoded")
}
