//! Signing keys: reading PEM and JWK material, the canonical stored form, key generation,
//! public JWKs and JWKS import. Pure Rust; knows nothing of PostgreSQL.
//!
//! The canonical stored form ([`KeyMaterial::bytes`]) is the raw secret for HMAC, PKCS#8 DER
//! for a private key (`can_sign`) and SPKI DER for a public key (verify only). Every way of
//! giving the same key (PEM in any form, JWK) ends up as the same bytes.
//!
//! Error messages say what is wrong with the material without ever quoting it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{SigningKey as EdSecret, VerifyingKey as EdPublic};
use jsonwebtoken::EncodingKey;
use p256::elliptic_curve::sec1::ToSec1Point;
use rsa::pkcs1::{RsaPrivateKeyRef, RsaPublicKeyRef};
use rsa::pkcs8::der::asn1::{BitStringRef, OctetStringRef, UintRef};
use rsa::pkcs8::der::{Decode, Encode};
use rsa::pkcs8::spki::AlgorithmIdentifierRef;
use rsa::pkcs8::{
    DecodePrivateKey, EncodePrivateKey, EncodePublicKey, ObjectIdentifier, PrivateKeyInfoRef,
    SubjectPublicKeyInfoRef,
};
use rsa::{BoxedUint, PrivateKey as RsaSecret, PublicKey as RsaPublic};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::alg::Alg;

/// Smallest RSA modulus accepted, in bits.
pub const RSA_MIN_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (the verifier refuses larger ones).
pub const RSA_MAX_BITS: usize = 8192;
/// Modulus size of generated RSA keys, in bits.
pub const RSA_GENERATED_BITS: usize = 2048;
/// Largest RSA public exponent accepted, on every import path. Common libraries cap `e` at 32 or
/// 33 bits (Windows CNG, BoringSSL, Go); a larger one only makes verification slower.
pub const RSA_MAX_PUBLIC_EXPONENT: u64 = 1 << 32;

/// JWK members that carry private or secret material; a public JWK has none of them.
pub const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A key ready to use: parsed once, then cached by the caller. (`Debug` shows no material.)
#[derive(Debug)]
pub struct LoadedKey {
    /// The algorithm this key serves.
    pub alg: Alg,
    /// Checks signatures, with all per-key work done: the HMAC key's padded states, the public
    /// key parsed.
    verifier: Verifier,
    /// Makes signatures; `None` for a public (verify-only) key.
    pub encoding: Option<EncodingKey>,
}

/// A key's signature-checking state, made once when the key is loaded.
enum Verifier {
    // boxed: its padded hash states are large beside a parsed public key's pointer
    Hmac(Box<aws_lc_rs::hmac::Key>),
    Public(aws_lc_rs::signature::ParsedPublicKey),
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verifier::Hmac(_) => "Hmac(not shown)",
            Verifier::Public(_) => "Public",
        })
    }
}

/// Longest signature any accepted key makes: RSA with an 8192-bit modulus.
const MAX_SIGNATURE_BYTES: usize = RSA_MAX_BITS / 8;

impl LoadedKey {
    /// Whether `signature` (base64url, as in a compact JWS) signs `message` under this key.
    /// Allocates nothing and sets nothing up: the key's state was made by [`load_key`].
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        let mut buf = [0u8; MAX_SIGNATURE_BYTES];
        // the decoded length, rounded up to whole 3-byte groups, must fit
        if signature.len().div_ceil(4) * 3 > buf.len() {
            return false;
        }
        let Ok(n) = URL_SAFE_NO_PAD.decode_slice(signature, &mut buf) else {
            return false;
        };
        let sig = &buf[..n];
        match &self.verifier {
            Verifier::Hmac(key) => aws_lc_rs::hmac::verify(key, message, sig).is_ok(),
            Verifier::Public(key) => key.verify_sig(message, sig).is_ok(),
        }
    }
}

/// The verifier of `alg` for a public key: PKCS#1 `RSAPublicKey` DER, an uncompressed SEC1
/// point, or 32 Ed25519 bytes.
fn public_verifier(alg: Alg, public: &[u8]) -> Result<Verifier, String> {
    use aws_lc_rs::signature as s;
    let params: &'static dyn s::VerificationAlgorithm = match alg {
        Alg::RS256 => &s::RSA_PKCS1_2048_8192_SHA256,
        Alg::RS384 => &s::RSA_PKCS1_2048_8192_SHA384,
        Alg::RS512 => &s::RSA_PKCS1_2048_8192_SHA512,
        Alg::PS256 => &s::RSA_PSS_2048_8192_SHA256,
        Alg::PS384 => &s::RSA_PSS_2048_8192_SHA384,
        Alg::PS512 => &s::RSA_PSS_2048_8192_SHA512,
        Alg::ES256 => &s::ECDSA_P256_SHA256_FIXED,
        Alg::ES384 => &s::ECDSA_P384_SHA384_FIXED,
        Alg::EdDSA => &s::ED25519,
        Alg::HS256 | Alg::HS384 | Alg::HS512 => unreachable!("an HMAC key has no public part"),
    };
    s::ParsedPublicKey::new(params, public)
        .map(Verifier::Public)
        .map_err(|_| "the stored public key cannot be loaded".to_owned())
}

fn hmac_verifier(alg: Alg, secret: &[u8]) -> Verifier {
    use aws_lc_rs::hmac;
    let algorithm = match alg {
        Alg::HS384 => hmac::HMAC_SHA384,
        Alg::HS512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    };
    Verifier::Hmac(Box::new(hmac::Key::new(algorithm, secret)))
}

/// Key material as stored: the canonical bytes to encrypt and what they can do.
///
/// `bytes` is the raw secret for HMAC; for the other algorithms it is PKCS#8 DER when
/// `can_sign` (a private key) and SPKI DER otherwise (a public key). The bytes are wiped
/// when the value is dropped, and `Debug` does not show them.
pub struct KeyMaterial {
    /// Canonical form: raw HMAC secret, PKCS#8 DER private key or SPKI DER public key.
    pub bytes: Vec<u8>,
    /// Whether this key can sign (an HMAC secret or a private key); false means public.
    pub can_sign: bool,
}

impl KeyMaterial {
    /// Whether this is an asymmetric private key or an HMAC secret rather than a public key.
    pub fn is_private(&self) -> bool {
        self.can_sign
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field(
                "bytes",
                &format_args!("[{} bytes, not shown]", self.bytes.len()),
            )
            .field("can_sign", &self.can_sign)
            .finish()
    }
}

impl PartialEq for KeyMaterial {
    fn eq(&self, other: &Self) -> bool {
        same_material(self, other)
    }
}

impl Eq for KeyMaterial {}

/// Whether two materials hold the same key in the same role (canonical bytes and `can_sign`
/// equal), so re-importing a key is recognised. The bytes are compared in constant time.
pub fn same_material(a: &KeyMaterial, b: &KeyMaterial) -> bool {
    a.can_sign == b.can_sign && bool::from(a.bytes.ct_eq(&b.bytes))
}

// ---------------------------------------------------------------------------------------------
// Key types and the algorithms they serve

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Kind {
    /// The key type an algorithm needs; `None` for HMAC.
    fn of(alg: Alg) -> Option<Kind> {
        match alg {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => None,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                Some(Kind::Rsa)
            }
            Alg::ES256 => Some(Kind::P256),
            Alg::ES384 => Some(Kind::P384),
            Alg::EdDSA => Some(Kind::Ed25519),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Rsa => "an RSA key",
            Kind::P256 => "an EC key on curve P-256",
            Kind::P384 => "an EC key on curve P-384",
            Kind::Ed25519 => "an Ed25519 key",
        }
    }

    fn curve_name(self) -> &'static str {
        match self {
            Kind::P256 => "P-256",
            Kind::P384 => "P-384",
            Kind::Ed25519 => "Ed25519",
            Kind::Rsa => "none",
        }
    }

    /// Size of one coordinate (EC) or of the key (Ed25519), in bytes.
    fn field_bytes(self) -> usize {
        match self {
            Kind::P256 | Kind::Ed25519 => 32,
            Kind::P384 => 48,
            Kind::Rsa => 0,
        }
    }
}

/// Refuse a key whose type does not serve `alg`.
fn fits(alg: Alg, found: Kind) -> Result<(), String> {
    match Kind::of(alg) {
        Some(want) if want == found => Ok(()),
        Some(want) => Err(format!(
            "the key does not fit {alg}: it is {}, and {alg} needs {}",
            found.describe(),
            want.describe(),
            alg = alg.as_str()
        )),
        None => Err(format!(
            "an HMAC algorithm ({}) needs a shared secret, not {}",
            alg.as_str(),
            found.describe()
        )),
    }
}

/// Run `$body` with `$c` naming the curve crate (`p256` or `p384`) of an EC kind.
macro_rules! on_curve {
    ($kind:expr, $c:ident => $body:expr) => {
        match $kind {
            Kind::P256 => {
                use p256 as $c;
                $body
            }
            Kind::P384 => {
                use p384 as $c;
                $body
            }
            Kind::Rsa | Kind::Ed25519 => unreachable!("not an EC key type"),
        }
    };
}

mod der;
mod generate;
mod jwk;
mod pem;
mod secret;
#[cfg(test)]
mod tests;

use der::*;
pub use generate::*;
pub use jwk::*;
use pem::*;
use secret::*;

/// A parsed asymmetric key, private or public.
enum Key {
    RsaPrivate(Box<RsaSecret>),
    RsaPublic(Box<RsaPublic>),
    P256Private(p256::SecretKey),
    P256Public(p256::PublicKey),
    P384Private(p384::SecretKey),
    P384Public(p384::PublicKey),
    EdPrivate(Box<EdSecret>),
    EdPublic(EdPublic),
}

impl From<p256::SecretKey> for Key {
    fn from(k: p256::SecretKey) -> Key {
        Key::P256Private(k)
    }
}
impl From<p256::PublicKey> for Key {
    fn from(k: p256::PublicKey) -> Key {
        Key::P256Public(k)
    }
}
impl From<p384::SecretKey> for Key {
    fn from(k: p384::SecretKey) -> Key {
        Key::P384Private(k)
    }
}
impl From<p384::PublicKey> for Key {
    fn from(k: p384::PublicKey) -> Key {
        Key::P384Public(k)
    }
}

fn encode_failed<E>(_: E) -> String {
    "the key cannot be encoded".to_owned()
}

impl Key {
    fn kind(&self) -> Kind {
        match self {
            Key::RsaPrivate(_) | Key::RsaPublic(_) => Kind::Rsa,
            Key::P256Private(_) | Key::P256Public(_) => Kind::P256,
            Key::P384Private(_) | Key::P384Public(_) => Kind::P384,
            Key::EdPrivate(_) | Key::EdPublic(_) => Kind::Ed25519,
        }
    }

    /// The canonical stored form: PKCS#8 DER for a private key, SPKI DER for a public one.
    fn to_material(&self) -> Result<KeyMaterial, String> {
        let (bytes, can_sign) = match self {
            Key::RsaPrivate(k) => (secret_doc(k.to_pkcs8_der())?, true),
            Key::RsaPublic(k) => (
                k.to_public_key_der().map_err(encode_failed)?.into_vec(),
                false,
            ),
            Key::P256Private(k) => (secret_doc(k.to_pkcs8_der())?, true),
            Key::P256Public(k) => (
                k.to_public_key_der().map_err(encode_failed)?.into_vec(),
                false,
            ),
            Key::P384Private(k) => (secret_doc(k.to_pkcs8_der())?, true),
            Key::P384Public(k) => (
                k.to_public_key_der().map_err(encode_failed)?.into_vec(),
                false,
            ),
            Key::EdPrivate(k) => (ed25519_pkcs8(k)?, true),
            Key::EdPublic(k) => (spki_der(OID_ED25519, k.as_bytes())?, false),
        };
        Ok(KeyMaterial { bytes, can_sign })
    }
}

/// Read `create_key`'s `key` argument for `alg`. Text that parses as a JSON object with a `kty`
/// member is a JWK; otherwise HS* take the text itself as the secret and the other algorithms
/// take a PEM: `PRIVATE KEY` (PKCS#8), `PUBLIC KEY` (SPKI), `RSA PRIVATE KEY` / `RSA PUBLIC KEY`
/// (PKCS#1) or `EC PRIVATE KEY` (SEC1). Errors never quote the material.
pub fn parse_key_material(alg: Alg, text: &str) -> Result<KeyMaterial, String> {
    let jwk = serde_json::from_str::<Value>(text)
        .ok()
        .filter(|v| v.as_object().is_some_and(|o| o.contains_key("kty")));
    if let Some(v) = jwk {
        return material_from_jwk(&v, alg);
    }
    let looks_pem = text.contains("-----BEGIN ") && text.contains("-----END ");
    if alg.is_hmac() {
        // An HMAC "secret" that is key material is almost certainly a public key used by
        // mistake, and anyone holding that public key could then forge tokens.
        if let Some(why) = not_a_secret(text) {
            return Err(why.to_owned());
        }
        return hmac_material(alg, text.as_bytes().to_vec());
    }
    if looks_pem {
        return key_from_pem(alg, text)?.to_material();
    }
    if text.trim_start().starts_with('{') {
        return Err("the JSON text is not a JWK: it has no \"kty\" member".into());
    }
    Err(format!(
        "a key for {} must be a PEM (-----BEGIN ...-----) or a JWK; this text is neither",
        alg.as_str()
    ))
}

// ---------------------------------------------------------------------------------------------
// Stored material

/// Canonical material, decoded just enough to use.
enum Stored<'a> {
    /// PKCS#8 DER, and the inner private key (PKCS#1 DER for RSA).
    Private {
        der: &'a [u8],
        inner: &'a [u8],
        kind: Kind,
    },
    /// The SPKI's key bits (PKCS#1 DER for RSA, a SEC1 point for EC, 32 bytes for Ed25519).
    Public { bits: &'a [u8], kind: Kind },
}

fn decode_stored(alg: Alg, material: &KeyMaterial) -> Result<Stored<'_>, String> {
    let stored = if material.can_sign {
        let info = PrivateKeyInfoRef::from_der(&material.bytes)
            .map_err(|_| "the stored private key is not PKCS#8".to_owned())?;
        let kind = kind_of(&info.algorithm)?;
        Stored::Private {
            der: &material.bytes,
            inner: info.private_key.as_bytes(),
            kind,
        }
    } else {
        let spki = SubjectPublicKeyInfoRef::from_der(&material.bytes)
            .map_err(|_| "the stored public key is not SPKI".to_owned())?;
        let kind = kind_of(&spki.algorithm)?;
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or("the stored public key's bits are malformed")?;
        Stored::Public { bits, kind }
    };
    let kind = match stored {
        Stored::Private { kind, .. } | Stored::Public { kind, .. } => kind,
    };
    fits(alg, kind)?;
    Ok(stored)
}

/// The public half of a stored key, in the shapes JWKs and the verifier want.
enum PublicForm {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point `04 || x || y`.
    Ec {
        kind: Kind,
        point: Vec<u8>,
    },
    Ed25519([u8; 32]),
}

fn public_form(stored: &Stored<'_>) -> Result<PublicForm, String> {
    let bad = |what: &str| format!("the stored key is not a valid {what}");
    Ok(match *stored {
        Stored::Private {
            inner,
            kind: Kind::Rsa,
            ..
        } => {
            let k = RsaPrivateKeyRef::from_der(inner).map_err(|_| bad("RSA private key"))?;
            PublicForm::Rsa {
                n: strip_zeros(k.modulus.as_bytes()).to_vec(),
                e: strip_zeros(k.public_exponent.as_bytes()).to_vec(),
            }
        }
        Stored::Public {
            bits,
            kind: Kind::Rsa,
        } => {
            let k = RsaPublicKeyRef::from_der(bits).map_err(|_| bad("RSA public key"))?;
            PublicForm::Rsa {
                n: strip_zeros(k.modulus.as_bytes()).to_vec(),
                e: strip_zeros(k.public_exponent.as_bytes()).to_vec(),
            }
        }
        Stored::Private {
            der,
            kind: kind @ (Kind::P256 | Kind::P384),
            ..
        } => {
            let point = on_curve!(kind, c => c::SecretKey::from_pkcs8_der(der)
                .map_err(|_| bad("EC private key"))?
                .public_key()
                .to_sec1_point(false)
                .as_bytes()
                .to_vec());
            PublicForm::Ec { kind, point }
        }
        Stored::Public {
            bits,
            kind: kind @ (Kind::P256 | Kind::P384),
        } => {
            // Canonical SPKI holds the uncompressed point; anything else is not ours.
            if bits.len() != 1 + 2 * kind.field_bytes() || bits[0] != 4 {
                return Err(bad("EC public key"));
            }
            PublicForm::Ec {
                kind,
                point: bits.to_vec(),
            }
        }
        Stored::Private {
            der,
            kind: Kind::Ed25519,
            ..
        } => {
            let k = EdSecret::from_pkcs8_der(der).map_err(|_| bad("Ed25519 private key"))?;
            PublicForm::Ed25519(k.verifying_key().to_bytes())
        }
        Stored::Public {
            bits,
            kind: Kind::Ed25519,
        } => PublicForm::Ed25519(bits.try_into().map_err(|_| bad("Ed25519 public key"))?),
    })
}

/// Build the usable key from stored material. Cheap: no key validation (that happened when
/// the material was made), only structural decoding, plus one point multiplication for an EC
/// private key.
pub fn load_key(alg: Alg, material: &KeyMaterial) -> Result<LoadedKey, String> {
    if alg.is_hmac() {
        return Ok(LoadedKey {
            alg,
            verifier: hmac_verifier(alg, &material.bytes),
            encoding: Some(EncodingKey::from_secret(&material.bytes).map_err(|e| e.to_string())?),
        });
    }
    let stored = decode_stored(alg, material)?;
    let verifier = match public_form(&stored)? {
        PublicForm::Rsa { n, e } => {
            let der = RsaPublicKeyRef {
                modulus: UintRef::new(&n).map_err(encode_failed)?,
                public_exponent: UintRef::new(&e).map_err(encode_failed)?,
            }
            .to_der()
            .map_err(encode_failed)?;
            public_verifier(alg, &der)?
        }
        PublicForm::Ec { point, .. } => public_verifier(alg, &point)?,
        PublicForm::Ed25519(x) => public_verifier(alg, &x)?,
    };
    // jsonwebtoken wants PKCS#1 DER for RSA and PKCS#8 DER for EC and Ed25519.
    let encoding = match stored {
        Stored::Private {
            inner,
            kind: Kind::Rsa,
            ..
        } => Some(EncodingKey::from_rsa_der(inner)),
        Stored::Private {
            der,
            kind: Kind::Ed25519,
            ..
        } => Some(EncodingKey::from_ed_der(der)),
        Stored::Private { der, .. } => Some(EncodingKey::from_ec_der(der)),
        Stored::Public { .. } => None,
    };
    Ok(LoadedKey {
        alg,
        verifier,
        encoding,
    })
}

/// The public (verify-only) material of a stored key, in canonical SPKI form; a public key is
/// returned as is. Lets a private key be compared with an imported public one. HMAC secrets
/// have no public part.
pub fn public_part(alg: Alg, material: &KeyMaterial) -> Result<KeyMaterial, String> {
    if alg.is_hmac() {
        return Err("an HMAC secret has no public part".into());
    }
    let stored = decode_stored(alg, material)?;
    if let Stored::Public { .. } = stored {
        return Ok(KeyMaterial {
            bytes: material.bytes.clone(),
            can_sign: false,
        });
    }
    let key = match public_form(&stored)? {
        PublicForm::Rsa { n, e } => RsaPublic::new(
            BoxedUint::from_be_slice_vartime(&n),
            BoxedUint::from_be_slice_vartime(&e),
        )
        .map(|k| Key::RsaPublic(Box::new(k)))
        .map_err(|_| "the stored RSA key is invalid".to_owned())?,
        PublicForm::Ec { kind, point } => {
            on_curve!(kind, c => c::PublicKey::from_sec1_bytes(&point)
            .map(Key::from)
            .map_err(|_| "the stored EC key is invalid".to_owned())?)
        }
        PublicForm::Ed25519(x) => ed25519_public(&x)?,
    };
    key.to_material()
}
