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
use jsonwebtoken::{DecodingKey, EncodingKey};
use p256::elliptic_curve::sec1::ToSec1Point;
use rsa::pkcs1::{RsaPrivateKeyRef, RsaPublicKeyRef};
use rsa::pkcs8::der::asn1::{BitStringRef, OctetStringRef};
use rsa::pkcs8::der::{Decode, Encode};
use rsa::pkcs8::spki::AlgorithmIdentifierRef;
use rsa::pkcs8::{
    DecodePrivateKey, EncodePrivateKey, EncodePublicKey, ObjectIdentifier, PrivateKeyInfoRef,
    SubjectPublicKeyInfoRef,
};
use rsa::{BoxedUint, PrivateKey as RsaSecret, PublicKey as RsaPublic};
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::jwt::Alg;

/// Smallest RSA modulus accepted, in bits.
pub const RSA_MIN_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (the verifier refuses larger ones).
pub const RSA_MAX_BITS: usize = 8192;
/// Modulus size of generated RSA keys, in bits.
pub const RSA_GENERATED_BITS: usize = 2048;
/// Largest RSA public exponent accepted, on every import path. Common libraries cap `e` at 32 or
/// 33 bits (Windows CNG, BoringSSL, Go); a larger one only makes verification slower.
pub const RSA_MAX_PUBLIC_EXPONENT: u64 = 1 << 32;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");
const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
const OID_X448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.111");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");

/// JWK members that carry private or secret material; a public JWK has none of them.
pub const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A key ready to use: parsed once, then cached by the caller. (`Debug` shows no material.)
#[derive(Debug)]
pub struct LoadedKey {
    /// The algorithm this key serves.
    pub alg: Alg,
    /// Checks signatures.
    pub decoding: DecodingKey,
    /// Makes signatures; `None` for a public (verify-only) key.
    pub encoding: Option<EncodingKey>,
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
    a.can_sign == b.can_sign
        && a.bytes.len() == b.bytes.len()
        && a.bytes
            .iter()
            .zip(&b.bytes)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
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

fn secret_doc(doc: rsa::pkcs8::Result<rsa::pkcs8::SecretDocument>) -> Result<Vec<u8>, String> {
    Ok(doc.map_err(encode_failed)?.as_bytes().to_vec())
}

/// PKCS#8 v1 of an Ed25519 key (RFC 8410), as `openssl genpkey` writes it.
fn ed25519_pkcs8(k: &EdSecret) -> Result<Vec<u8>, String> {
    let seed = Zeroizing::new(k.to_bytes());
    let curve_private_key = Zeroizing::new(
        OctetStringRef::new(&seed[..])
            .and_then(|o| o.to_der())
            .map_err(encode_failed)?,
    );
    let info = PrivateKeyInfoRef::new(
        AlgorithmIdentifierRef {
            oid: OID_ED25519,
            parameters: None,
        },
        OctetStringRef::new(&curve_private_key).map_err(encode_failed)?,
    );
    info.to_der().map_err(encode_failed)
}

/// SPKI with no algorithm parameters (the Ed25519 form of RFC 8410).
fn spki_der(oid: ObjectIdentifier, public: &[u8]) -> Result<Vec<u8>, String> {
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid,
            parameters: None,
        },
        subject_public_key: BitStringRef::new(0, public).map_err(encode_failed)?,
    }
    .to_der()
    .map_err(encode_failed)
}

// ---------------------------------------------------------------------------------------------
// Reading material

/// Show a short, printable member value such as a `kty` or `crv`; anything else is not shown.
fn quote(s: &str) -> String {
    if s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        format!("\"{s}\"")
    } else {
        "(value not shown)".to_owned()
    }
}

fn describe_oid(oid: ObjectIdentifier) -> String {
    let known = [
        (OID_DSA, "DSA"),
        (OID_P521, "P-521"),
        (OID_SECP256K1, "secp256k1"),
        (OID_X25519, "X25519"),
        (OID_X448, "X448"),
        (OID_ED448, "Ed448"),
    ];
    match known.iter().find(|(o, _)| *o == oid) {
        Some((_, name)) => (*name).to_owned(),
        None => format!("OID {oid}"),
    }
}

/// The key type an AlgorithmIdentifier names, or why it is not supported.
fn kind_of(algorithm: &AlgorithmIdentifierRef<'_>) -> Result<Kind, String> {
    let oid = algorithm.oid;
    if oid == OID_RSA {
        Ok(Kind::Rsa)
    } else if oid == OID_RSA_PSS {
        Err(
            "restricted RSASSA-PSS keys are not supported; give a plain RSA (rsaEncryption) key, \
             which serves both RS* and PS*"
                .into(),
        )
    } else if oid == OID_EC {
        match algorithm.parameters_oid() {
            Ok(c) if c == OID_P256 => Ok(Kind::P256),
            Ok(c) if c == OID_P384 => Ok(Kind::P384),
            Ok(c) => Err(format!(
                "curve {} is not supported for EC keys (P-256 and P-384 are)",
                describe_oid(c)
            )),
            Err(_) => Err("the EC key does not name its curve".into()),
        }
    } else if oid == OID_ED25519 {
        Ok(Kind::Ed25519)
    } else {
        Err(format!(
            "keys of type {} are not supported",
            describe_oid(oid)
        ))
    }
}

fn strip_zeros(mut b: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = b {
        b = rest;
    }
    b
}

fn check_rsa_size(modulus: &[u8]) -> Result<(), String> {
    let n = strip_zeros(modulus);
    let bits = match n.first() {
        None => 0,
        Some(top) => n.len() * 8 - top.leading_zeros() as usize,
    };
    if bits < RSA_MIN_BITS {
        Err(format!(
            "the RSA key has {bits} bits; at least {RSA_MIN_BITS} are required"
        ))
    } else if bits > RSA_MAX_BITS {
        Err(format!(
            "the RSA key has {bits} bits; at most {RSA_MAX_BITS} are supported"
        ))
    } else {
        Ok(())
    }
}

fn check_rsa_exponent(e: &[u8]) -> Result<(), String> {
    let e = strip_zeros(e);
    let value = (e.len() <= 8).then(|| e.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)));
    match value {
        Some(v) if v <= RSA_MAX_PUBLIC_EXPONENT => Ok(()),
        _ => Err("the RSA public exponent is larger than 2^32, the most accepted".into()),
    }
}

fn rsa_private_from_pkcs1(der: &[u8]) -> Result<Key, String> {
    let parsed = RsaPrivateKeyRef::from_der(der)
        .map_err(|_| "the RSA private key is not a valid PKCS#1 structure".to_owned())?;
    check_rsa_size(parsed.modulus.as_bytes())?;
    check_rsa_exponent(parsed.public_exponent.as_bytes())?;
    let key = RsaSecret::try_from(parsed).map_err(|_| {
        "the RSA private key is invalid (inconsistent components, or more than two primes)"
            .to_owned()
    })?;
    Ok(Key::RsaPrivate(Box::new(key)))
}

fn rsa_public_from_pkcs1(der: &[u8]) -> Result<Key, String> {
    let parsed = RsaPublicKeyRef::from_der(der)
        .map_err(|_| "the RSA public key is not a valid PKCS#1 structure".to_owned())?;
    check_rsa_size(parsed.modulus.as_bytes())?;
    check_rsa_exponent(parsed.public_exponent.as_bytes())?;
    let key = RsaPublic::try_from(parsed)
        .map_err(|_| "the RSA public key is invalid (bad modulus or exponent)".to_owned())?;
    Ok(Key::RsaPublic(Box::new(key)))
}

fn key_from_pkcs8(alg: Alg, der: &[u8]) -> Result<Key, String> {
    let info = PrivateKeyInfoRef::from_der(der)
        .map_err(|_| "the PRIVATE KEY is not a valid PKCS#8 structure".to_owned())?;
    let kind = kind_of(&info.algorithm)?;
    fits(alg, kind)?;
    match kind {
        Kind::Rsa => rsa_private_from_pkcs1(info.private_key.as_bytes()),
        Kind::P256 | Kind::P384 => on_curve!(kind, c => c::SecretKey::from_pkcs8_der(der)
            .map(Key::from)
            .map_err(|_| format!("the PRIVATE KEY is not a valid {} key", kind.curve_name()))),
        Kind::Ed25519 => EdSecret::from_pkcs8_der(der)
            .map(|k| Key::EdPrivate(Box::new(k)))
            .map_err(|_| "the PRIVATE KEY is not a valid Ed25519 key".to_owned()),
    }
}

fn key_from_spki(alg: Alg, der: &[u8]) -> Result<Key, String> {
    let spki = SubjectPublicKeyInfoRef::from_der(der)
        .map_err(|_| "the PUBLIC KEY is not a valid SubjectPublicKeyInfo structure".to_owned())?;
    let kind = kind_of(&spki.algorithm)?;
    fits(alg, kind)?;
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or("the PUBLIC KEY's key bits are malformed")?;
    match kind {
        Kind::Rsa => rsa_public_from_pkcs1(bits),
        Kind::P256 | Kind::P384 => on_curve!(kind, c => c::PublicKey::from_sec1_bytes(bits)
            .map(Key::from)
            .map_err(|_| format!("the PUBLIC KEY is not a point on {}", kind.curve_name()))),
        Kind::Ed25519 => ed25519_public(bits),
    }
}

fn ed25519_public(bytes: &[u8]) -> Result<Key, String> {
    let arr: &[u8; 32] = bytes
        .try_into()
        .map_err(|_| "an Ed25519 public key is 32 bytes".to_owned())?;
    let k = EdPublic::from_bytes(arr).map_err(|_| "the Ed25519 public key is not a valid point")?;
    if k.is_weak() {
        return Err("the Ed25519 public key is a weak (small-order) point".into());
    }
    Ok(Key::EdPublic(k))
}

fn key_from_sec1(alg: Alg, der: &[u8]) -> Result<Key, String> {
    let key = if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
        Key::from(k)
    } else if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
        Key::from(k)
    } else {
        return Err(
            "the EC PRIVATE KEY is not a valid SEC1 key on P-256 or P-384 \
                    (other curves are not supported)"
                .into(),
        );
    };
    fits(alg, key.kind())?;
    Ok(key)
}

fn key_from_pem(alg: Alg, text: &str) -> Result<Key, String> {
    let blocks = pem::parse_many(text).map_err(|_| "the PEM text is malformed".to_owned())?;
    let mut key_block = None;
    for block in blocks {
        // `openssl ecparam -genkey` prints the curve parameters before the key.
        if block.tag() == "EC PARAMETERS" {
            continue;
        }
        if key_block.is_some() {
            return Err("the text holds more than one PEM block; give exactly one key".into());
        }
        key_block = Some(block);
    }
    let block = key_block.ok_or("the text holds no PEM key block")?;
    if block.headers().get("Proc-Type").is_some() || block.headers().get("DEK-Info").is_some() {
        return Err("encrypted PEM keys are not supported; decrypt it first \
                    (e.g. openssl pkey -in key.pem)"
            .into());
    }
    let tag = block.tag().to_owned();
    let der = Zeroizing::new(block.into_contents());
    match tag.as_str() {
        "PRIVATE KEY" => key_from_pkcs8(alg, &der),
        "PUBLIC KEY" => key_from_spki(alg, &der),
        "RSA PRIVATE KEY" => {
            fits(alg, Kind::Rsa)?;
            rsa_private_from_pkcs1(&der)
        }
        "RSA PUBLIC KEY" => {
            fits(alg, Kind::Rsa)?;
            rsa_public_from_pkcs1(&der)
        }
        "EC PRIVATE KEY" => key_from_sec1(alg, &der),
        "ENCRYPTED PRIVATE KEY" => Err("encrypted private keys are not supported; decrypt it \
                                        first (e.g. openssl pkey -in key.pem)"
            .into()),
        "CERTIFICATE" => Err("a certificate is not a key; give its public key instead \
                              (e.g. openssl x509 -pubkey -noout -in cert.pem)"
            .into()),
        _ => Err(format!(
            "the PEM block type {} is not supported (PRIVATE KEY, PUBLIC KEY, RSA PRIVATE KEY, \
             RSA PUBLIC KEY and EC PRIVATE KEY are)",
            quote(&tag)
        )),
    }
}

// JWK members -----------------------------------------------------------------------------------

fn str_member<'a>(o: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match o.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("the JWK's \"{name}\" member is not a string")),
        None => Err(format!("the JWK has no \"{name}\" member")),
    }
}

/// A base64url member, decoded; `None` when absent.
fn b64_member(o: &Map<String, Value>, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    match o.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map(|v| Some(Zeroizing::new(v)))
            .map_err(|_| format!("the JWK's \"{name}\" member is not base64url")),
        Some(_) => Err(format!("the JWK's \"{name}\" member is not a string")),
    }
}

fn b64_required(o: &Map<String, Value>, name: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    b64_member(o, name)?.ok_or_else(|| format!("the JWK has no \"{name}\" member"))
}

/// A JWK's own `alg`, when present, must be the one the key is registered for.
fn check_jwk_alg(o: &Map<String, Value>, alg: Alg) -> Result<(), String> {
    match o.get("alg") {
        None => Ok(()),
        Some(Value::String(s)) if s == alg.as_str() => Ok(()),
        Some(Value::String(s)) => Err(format!(
            "the JWK's alg is {} but the key is being registered for {}",
            quote(s),
            alg.as_str()
        )),
        Some(_) => Err("the JWK's \"alg\" member is not a string".into()),
    }
}

/// A JWK meant for encryption (`"use":"enc"`) is not a signing key.
fn check_jwk_use(o: &Map<String, Value>) -> Result<(), String> {
    match o.get("use") {
        None => Ok(()),
        Some(Value::String(s)) if s == "sig" => Ok(()),
        Some(Value::String(s)) => Err(format!(
            "the JWK's use is {}, not \"sig\"; only signature keys are accepted",
            quote(s)
        )),
        Some(_) => Err("the JWK's \"use\" member is not a string".into()),
    }
}

fn oct_secret(o: &Map<String, Value>) -> Result<Vec<u8>, String> {
    if o.get("kty").and_then(Value::as_str) != Some("oct") {
        return Err("an HMAC key given as a JWK must have kty \"oct\"".into());
    }
    let k = o
        .get("k")
        .and_then(Value::as_str)
        .ok_or("the oct JWK has no \"k\" member")?;
    URL_SAFE_NO_PAD
        .decode(k.trim_end_matches('='))
        .map_err(|_| "the oct JWK's \"k\" is not base64url".into())
}

fn hmac_material(alg: Alg, secret: Vec<u8>) -> Result<KeyMaterial, String> {
    let material = KeyMaterial {
        bytes: secret,
        can_sign: true,
    };
    if material.bytes.len() < alg.min_secret_bytes() {
        return Err(format!(
            "{} needs a secret of at least {} bytes (RFC 7518 section 3.2), this one has {}",
            alg.as_str(),
            alg.min_secret_bytes(),
            material.bytes.len()
        ));
    }
    Ok(material)
}

fn rsa_from_jwk(o: &Map<String, Value>, private: bool) -> Result<Key, String> {
    let n = b64_required(o, "n")?;
    let e = b64_required(o, "e")?;
    let (n, e) = (strip_zeros(&n), strip_zeros(&e));
    check_rsa_size(n)?;
    if e.is_empty() {
        return Err("the RSA JWK's \"e\" is out of range".into());
    }
    check_rsa_exponent(e)?;
    let e = BoxedUint::from_be_slice_vartime(e);
    if !private {
        let key = RsaPublic::new(BoxedUint::from_be_slice_vartime(n), e)
            .map_err(|_| "the RSA JWK's \"n\" and \"e\" are not a valid public key".to_owned())?;
        return Ok(Key::RsaPublic(Box::new(key)));
    }
    if o.contains_key("oth") {
        return Err("multi-prime RSA keys (\"oth\") are not supported".into());
    }
    // Widths as in PKCS#1 decoding: every private component fits the modulus.
    let bits = u32::try_from(n.len() * 8).map_err(|_| "the RSA JWK's \"n\" is too long")?;
    let sized = |name: &str, v: &[u8]| {
        BoxedUint::from_be_slice(strip_zeros(v), bits)
            .map_err(|_| format!("the RSA JWK's \"{name}\" is larger than its modulus"))
    };
    let d = b64_required(o, "d")?;
    let primes = match (b64_member(o, "p")?, b64_member(o, "q")?) {
        (Some(p), Some(q)) => vec![sized("p", &p)?, sized("q", &q)?],
        // Without p and q the primes are recovered from n, e and d.
        (None, None) => vec![],
        _ => return Err("the RSA JWK has only one of \"p\" and \"q\"".into()),
    };
    // dp, dq and qi are recomputed from d, p and q rather than trusted.
    let key =
        RsaSecret::from_components(sized("n", n)?, e, sized("d", &d)?, primes).map_err(|_| {
            "the RSA JWK's private members do not form a valid key with its \"n\" and \"e\""
                .to_owned()
        })?;
    Ok(Key::RsaPrivate(Box::new(key)))
}

fn ec_from_jwk(o: &Map<String, Value>, kind: Kind, private: bool) -> Result<Key, String> {
    let size = kind.field_bytes();
    let curve = kind.curve_name();
    let x = b64_required(o, "x")?;
    let y = b64_required(o, "y")?;
    if x.len() != size || y.len() != size {
        return Err(format!(
            "the EC JWK's \"x\" and \"y\" must be {size} bytes each on {curve}"
        ));
    }
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let d = if private {
        let d = b64_required(o, "d")?;
        if d.len() != size {
            return Err(format!(
                "the EC JWK's \"d\" must be {size} bytes on {curve}"
            ));
        }
        Some(d)
    } else {
        None
    };
    on_curve!(kind, c => {
        let public = c::PublicKey::from_sec1_bytes(&point)
            .map_err(|_| format!("the EC JWK's \"x\" and \"y\" are not a point on {curve}"))?;
        match d {
            None => Ok(Key::from(public)),
            Some(d) => {
                let secret = c::SecretKey::from_slice(&d)
                    .map_err(|_| format!("the EC JWK's \"d\" is not a valid {curve} private key"))?;
                if secret.public_key() != public {
                    return Err("the EC JWK's \"d\" does not match its \"x\" and \"y\"".into());
                }
                Ok(Key::from(secret))
            }
        }
    })
}

fn ed25519_from_jwk(o: &Map<String, Value>, private: bool) -> Result<Key, String> {
    let x = b64_required(o, "x")?;
    let public = ed25519_public(&x)?;
    if !private {
        return Ok(public);
    }
    let d = b64_required(o, "d")?;
    let seed: &[u8; 32] = d[..]
        .try_into()
        .map_err(|_| "the OKP JWK's \"d\" must be 32 bytes for Ed25519".to_owned())?;
    let secret = EdSecret::from_bytes(seed);
    if secret.verifying_key().as_bytes()[..] != x[..] {
        return Err("the OKP JWK's \"d\" does not match its \"x\"".into());
    }
    Ok(Key::EdPrivate(Box::new(secret)))
}

/// An asymmetric key from a JWK object; private members are read only when `keep_private`.
fn key_from_jwk(o: &Map<String, Value>, alg: Alg, keep_private: bool) -> Result<Key, String> {
    let kty = str_member(o, "kty")?;
    let private = keep_private && o.contains_key("d");
    match kty {
        "RSA" => {
            fits(alg, Kind::Rsa)?;
            rsa_from_jwk(o, private)
        }
        "EC" => {
            let kind = match str_member(o, "crv")? {
                "P-256" => Kind::P256,
                "P-384" => Kind::P384,
                other => {
                    return Err(format!(
                        "curve {} is not supported for EC keys (P-256 and P-384 are)",
                        quote(other)
                    ))
                }
            };
            fits(alg, kind)?;
            ec_from_jwk(o, kind, private)
        }
        "OKP" => {
            let crv = str_member(o, "crv")?;
            if crv != "Ed25519" {
                return Err(format!(
                    "curve {} is not supported for OKP keys (Ed25519 is)",
                    quote(crv)
                ));
            }
            fits(alg, Kind::Ed25519)?;
            ed25519_from_jwk(o, private)
        }
        "oct" => Err(match Kind::of(alg) {
            Some(want) => format!(
                "an oct JWK is a shared secret; {} needs {}",
                alg.as_str(),
                want.describe()
            ),
            None => "an oct JWK is a shared secret and only serves HS256, HS384 and HS512".into(),
        }),
        other => Err(format!(
            "key type (kty) {} is not supported (RSA, EC, OKP and oct are)",
            quote(other)
        )),
    }
}

/// Read a JWK object as material for `alg`: an `oct` secret for HS*, otherwise an RSA, EC or
/// OKP key, private when it has `d` (and can then sign), public otherwise. The JWK's own `alg`
/// member, when present, must equal `alg`, and a `use` other than `"sig"` is refused.
pub fn material_from_jwk(jwk: &Value, alg: Alg) -> Result<KeyMaterial, String> {
    let o = jwk.as_object().ok_or("a JWK must be a JSON object")?;
    check_jwk_alg(o, alg)?;
    check_jwk_use(o)?;
    if alg.is_hmac() {
        return hmac_material(alg, oct_secret(o)?);
    }
    key_from_jwk(o, alg, true)?.to_material()
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
// Key material offered as an HMAC secret

const ARMOUR: &str = "The text has PEM armour (-----BEGIN or -----END), so it is a key or \
    certificate and not an HMAC secret: anyone holding the public key could sign tokens with it. \
    Register the key under an RS*, PS*, ES* or EdDSA algorithm instead.";
const SSH_KEY: &str = "The text is an SSH key, not an HMAC secret: anyone holding the public key \
    could sign tokens with it.";
const JSON_TEXT: &str =
    "The text is a JSON object or array (such as a JWK without \"kty\", a JWKS \
    or the output of token_store.jwks()), not an HMAC secret: give the secret itself, or an oct \
    JWK with \"kty\": \"oct\".";
const DER_KEY: &str = "The text is base64 or hex of a DER key structure (SubjectPublicKeyInfo, \
    PKCS#1, PKCS#8 or similar), not an HMAC secret: anyone holding the public key could sign \
    tokens with it.";
const EC_POINT: &str = "The text is base64 or hex of an elliptic-curve public key, not an HMAC \
    secret: anyone holding it could sign tokens with it.";

/// Names that start an OpenSSH public key line (RFC 4253, RFC 5656, OpenSSH's sk- and cert types).
const SSH_KEY_TYPES: [&str; 7] = [
    "ssh-rsa",
    "ssh-dss",
    "ssh-ed25519",
    "ssh-ed448",
    "ecdsa-sha2-",
    "sk-ssh-",
    "sk-ecdsa-",
];

/// Why `text`, offered as an HMAC secret, is key material instead (a DETAIL sentence), or `None`.
/// Refused: PEM armour in any case with or without its END line, SSH keys (OpenSSH lines, SSH2
/// armour, bare wire-format blobs), JSON objects and arrays (and text that starts like one), and
/// base64, base64url or hex that
/// decodes to a DER structure (SPKI, PKCS#1, PKCS#8, SEC1, a certificate) or to an uncompressed
/// P-256/P-384 point. Random secrets in any of those encodings pass.
fn not_a_secret(text: &str) -> Option<&'static str> {
    let lower = Zeroizing::new(text.to_ascii_lowercase());
    if lower.contains("---- begin ssh2") || lower.contains("---- end ssh2") {
        return Some(SSH_KEY);
    }
    if lower.contains("-----begin") || lower.contains("-----end") {
        return Some(ARMOUR);
    }
    if lower
        .split_ascii_whitespace()
        .any(|word| SSH_KEY_TYPES.iter().any(|t| word.starts_with(t)))
    {
        return Some(SSH_KEY);
    }
    // JSON, or the start of it: `{"` or `[{` is how a JWK or JWKS begins, even cut short
    let trimmed = text.trim();
    let starts = |open: char, next: &[char]| {
        trimmed
            .strip_prefix(open)
            .is_some_and(|rest| rest.trim_start().starts_with(next))
    };
    let bracketed = (trimmed.starts_with('{') && trimmed.ends_with('}'))
        || (trimmed.starts_with('[') && trimmed.ends_with(']'))
        || starts('{', &['"'])
        || starts('[', &['{', '[', '"']);
    if bracketed
        || matches!(
            serde_json::from_str::<Value>(trimmed),
            Ok(Value::Object(_) | Value::Array(_))
        )
    {
        return Some(JSON_TEXT);
    }
    decoded_forms(text).iter().find_map(|b| key_bytes(b))
}

/// `text` decoded as hex and as base64 or base64url (whitespace and padding ignored), where it is.
fn decoded_forms(text: &str) -> Vec<Zeroizing<Vec<u8>>> {
    let compact = Zeroizing::new(
        text.bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect::<Vec<u8>>(),
    );
    let mut out = Vec::new();
    if compact.len() < 16 {
        return out;
    }
    if compact.len() % 2 == 0 && compact.iter().all(u8::is_ascii_hexdigit) {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8).unwrap_or(0);
        out.push(Zeroizing::new(
            compact
                .chunks(2)
                .map(|p| hex(p[0]) << 4 | hex(p[1]))
                .collect(),
        ));
    }
    let end = compact
        .iter()
        .rposition(|b| *b != b'=')
        .map_or(0, |p| p + 1);
    let unpadded = Zeroizing::new(
        compact[..end]
            .iter()
            .map(|b| match b {
                b'-' => b'+',
                b'_' => b'/',
                b => *b,
            })
            .collect::<Vec<u8>>(),
    );
    if let Ok(bytes) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(&unpadded[..]) {
        out.push(Zeroizing::new(bytes));
    }
    out
}

/// One DER TLV with a low tag number and a definite length: (tag, contents, what follows).
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |v, b| (v << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// What `bytes` are, when they are key material: a DER SEQUENCE filling them exactly whose
/// contents are two or more well-formed elements (every key and certificate structure is), an
/// SSH wire-format key blob, or an uncompressed point on P-256 or P-384.
fn key_bytes(bytes: &[u8]) -> Option<&'static str> {
    if let Some((0x30, mut contents, [])) = der_tlv(bytes) {
        let mut elements = 0;
        while let Some((_, _, rest)) = der_tlv(contents) {
            contents = rest;
            elements += 1;
        }
        if contents.is_empty() && elements >= 2 {
            return Some(DER_KEY);
        }
    }
    if let Some((len, rest)) = bytes.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        if (7..=64).contains(&len) && rest.len() > len {
            let name = rest[..len].to_ascii_lowercase();
            let ssh_name = name.starts_with(b"ssh-")
                || SSH_KEY_TYPES.iter().any(|t| name.starts_with(t.as_bytes()));
            if ssh_name {
                return Some(SSH_KEY);
            }
        }
    }
    let on_curve = match bytes.len() {
        65 => p256::PublicKey::from_sec1_bytes(bytes).is_ok(),
        97 => p384::PublicKey::from_sec1_bytes(bytes).is_ok(),
        _ => false,
    };
    on_curve.then_some(EC_POINT)
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
            decoding: DecodingKey::from_secret(&material.bytes).map_err(|e| e.to_string())?,
            encoding: Some(EncodingKey::from_secret(&material.bytes).map_err(|e| e.to_string())?),
        });
    }
    let stored = decode_stored(alg, material)?;
    let decoding = match public_form(&stored)? {
        PublicForm::Rsa { n, e } => DecodingKey::from_rsa_raw_components(&n, &e),
        PublicForm::Ec { point, .. } => DecodingKey::from_ec_der(&point),
        PublicForm::Ed25519(x) => DecodingKey::from_ed_der(&x),
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
        decoding,
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

/// The RFC 7517 public JWK of a stored key: `kid`, `alg`, `use: "sig"`, `kty` and the public
/// members only (`n`, `e` / `crv`, `x`, `y` / `crv`, `x`). For HMAC it is
/// `{"kid","alg","kty":"oct"}` without the secret.
///
/// # Panics
/// If the material is not in this module's canonical form for `alg` (it always is when it
/// came from [`parse_key_material`], [`generate`] or [`jwks_entries`]); see [`try_public_jwk`].
pub fn public_jwk(alg: Alg, material: &KeyMaterial, kid: &str) -> Value {
    try_public_jwk(alg, material, kid)
        .unwrap_or_else(|e| panic!("stored key {} cannot be read: {e}", quote(kid)))
}

/// [`public_jwk`], returning an error instead of panicking on unreadable material.
pub fn try_public_jwk(alg: Alg, material: &KeyMaterial, kid: &str) -> Result<Value, String> {
    let mut o = Map::new();
    o.insert("kid".into(), kid.into());
    o.insert("alg".into(), alg.as_str().into());
    if alg.is_hmac() {
        o.insert("kty".into(), "oct".into());
        return Ok(Value::Object(o));
    }
    o.insert("use".into(), "sig".into());
    let b64 = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
    match public_form(&decode_stored(alg, material)?)? {
        PublicForm::Rsa { n, e } => {
            o.insert("kty".into(), "RSA".into());
            o.insert("n".into(), b64(&n));
            o.insert("e".into(), b64(&e));
        }
        PublicForm::Ec { kind, point } => {
            let size = kind.field_bytes();
            o.insert("kty".into(), "EC".into());
            o.insert("crv".into(), kind.curve_name().into());
            o.insert("x".into(), b64(&point[1..1 + size]));
            o.insert("y".into(), b64(&point[1 + size..]));
        }
        PublicForm::Ed25519(x) => {
            o.insert("kty".into(), "OKP".into());
            o.insert("crv".into(), "Ed25519".into());
            o.insert("x".into(), b64(&x));
        }
    }
    Ok(Value::Object(o))
}

/// The keys of a JWKS (`{"keys":[...]}`) for `import_jwks`, as `(kid, alg, material)`. Only
/// the public parts are kept: every material is verify-only, even when an entry has private
/// members. Each entry needs a `kid` and an accepted asymmetric `alg` that fits its key;
/// otherwise the whole call fails with a message naming the entry (by kid, or by index when it
/// has no kid). An entry repeated with the same kid and key is kept once; the same kid with a
/// different key is refused.
pub fn jwks_entries(jwks: &Value) -> Result<Vec<(String, Alg, KeyMaterial)>, String> {
    let keys = jwks
        .as_object()
        .and_then(|o| o.get("keys"))
        .and_then(Value::as_array)
        .ok_or("a JWKS must be a JSON object with a \"keys\" array")?;
    let mut out: Vec<(String, Alg, KeyMaterial)> = Vec::with_capacity(keys.len());
    for (i, entry) in keys.iter().enumerate() {
        let o = entry
            .as_object()
            .ok_or_else(|| format!("the JWKS key at index {i} is not a JSON object"))?;
        let kid = match o.get("kid") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => {
                return Err(format!("the JWKS key at index {i} has an empty kid"))
            }
            Some(_) => {
                return Err(format!(
                    "the JWKS key at index {i} has a kid that is not a string"
                ))
            }
            None => return Err(format!("the JWKS key at index {i} has no kid")),
        };
        let name = format!("the JWKS key \"{kid}\"");
        let alg = match o.get("alg") {
            None => return Err(format!("{name} has no alg; every imported key needs one")),
            Some(Value::String(s)) => Alg::parse(s)
                .ok_or_else(|| format!("{name} has alg {}, which is not accepted", quote(s)))?,
            Some(_) => return Err(format!("{name} has an alg that is not a string")),
        };
        if alg.is_hmac() {
            return Err(format!(
                "{name} has alg {}: a JWKS import adds public keys only, not shared secrets",
                alg.as_str()
            ));
        }
        check_jwk_use(o).map_err(|e| format!("{name}: {e}"))?;
        let material = key_from_jwk(o, alg, false)
            .and_then(|k| k.to_material())
            .map_err(|e| format!("{name}: {e}"))?;
        if let Some((_, prev_alg, prev)) = out.iter().find(|(k, _, _)| *k == kid) {
            if *prev_alg == alg && *prev == material {
                continue;
            }
            return Err(format!(
                "the JWKS has two different keys with kid \"{kid}\""
            ));
        }
        out.push((kid, alg, material));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Generation

/// The operating system's random source, in the shape the RustCrypto crates take.
struct OsRng;

#[derive(Debug)]
struct RngFailed;

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

fn random<const N: usize>() -> Zeroizing<[u8; N]> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt;
    use serde_json::json;

    // Test keys made with OpenSSL 3.0: `openssl genpkey` (PKCS#8), `openssl rsa -traditional`
    // (PKCS#1), `openssl rsa -RSAPublicKey_out`, `openssl ec` (SEC1), `openssl ecparam -genkey`
    // and `openssl pkey -pubout` (SPKI). They are test fixtures and protect nothing.
    const RSA_P8: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQCsDE3GFFXYMJ4/
nUIbwyPEwDjRMijaxwivCEz0IWj6UlWebnsRHwCSfpljB0ll15GnPkOWw1ljpDJo
vzdI2T6rNxU0wzgn+W2j6KQpzxmOQwOtYljAF0Qpdl3HhmwyRK49uxnS8HJ9hCzk
XjH7FLdpWPKTEVlC0j3HdCymyJuSAAor1Ofni61Hc1n5RaJi158mIIlKh63vPEdk
ayx8Dp1R3xnpQr/KKf7bfKnXL01EHqzTmi9Yv1e2FWRh5OQHg5nHGwhwDLIcO+/W
mIOI5vku02wT7u7vmkFYbz3VI9WBGGGi7o0FmjL6HT+/Lak6I7VGDM7/vCT9ctLx
ukILGfV1AgMBAAECggEAETP1vt2fq8tIt4Go74+2juDNjZVfYmjOZHoG/84ragQ7
jWjso0yfSQahnbZHz4gbh0aBiZyk3oK3i6O7Cmy2iHYsh6cRgWW+YcpMR+XuXzwy
LO8Ngr+Q0DiGrgGx5eDaL0/7CA2E1SoXNwp4IuvyXvVG5A+zBixxgvUJ1e9vJszx
5BTQzyskgp0PtOkX4L65Alh+DULqIDmZfWBq2jBcojIGgCLr2sUCXRKBv6HbKk8a
zRiO5jP+kn6tU7F3enWJYYi/7oYFV46f713/4kC/uLJ/yawPYyDSOgEAbwLjsGr8
uU2Jb4YNvrwJATzvB26O9HVDvyC0ZFXV6BflmSh8TQKBgQDvCR/7mJ1HVgseO18G
k/WvYPeeAUndpPXv74CeLzH3/vPUHHr42hI6UwYn992uaAJD41QZ5TeequuHhKIm
mLzl2lciv9hdOGrikqSabRDk7izfzRV0Ez4lQeuqvEHLKSD6oW9WeV1AoBoJSBTx
7uGbwfif9PwnSIWZivpqBgr4zwKBgQC4QiCX7RyWPPpJ9oPvnHa/t1mUc6sk+t05
2HXRRl5aI5WS1PfAJwZqy4tgJyNBzEdW19fq6uuVoXDkT7t8i/882UQiCOLiU1n/
jbZLJ5wHJeG20CI3+Oix1cXGRfPdwdke4OfXnWh0ry9oG4cvNmm8k7xa79rZI6uL
cWIO58t2ewKBgQCN+82TlMNXbDSOcJWxQpHc6qwqnnlRvnqXWpv7We1EcZxDkec5
ic7p9gbiFskGn6E40f9SomS3Sq88f/wREQijP14itfG+7ZQPoStEzyQJ16+wABGO
MR/o4Y8qi0hJdNSyCtIne09446CTgs1uJ4a7DiywVsSwUNOKsJKuB4jc4QKBgQCB
PhkAl9eyZgklch1vJ69/oErcPxnvsWsVVQinBxXNYiJbQLia9oSgyi7z/d/UGkZ7
2qBf7fHbHcdCzc5zePtKIheRS+xg1hhNkYgpRRpDRUYCZhFqc1Q80PaNsalxhbQW
3aiha47GMc8t1glHi4I1POckXhOCtWtxPtGKJPppGwKBgQDH3GbereVWD7FrJutU
s4iErRew0fq0XpkCVb45t8SKMpGDix9O5mqSHolEvB+48rEAWu0E+muBffG1JEM4
WdwaSHxbFCMkOnS/5qTK4BBJieNatRdAjycqEqzBMy99sBcFb1UnKPU1Y0EtDwdz
Nev4tbwrdkeGJskv6ccmxZqZUw==
-----END PRIVATE KEY-----
";
    const RSA_P1: &str = "\
-----BEGIN RSA PRIVATE KEY-----
MIIEpQIBAAKCAQEArAxNxhRV2DCeP51CG8MjxMA40TIo2scIrwhM9CFo+lJVnm57
ER8Akn6ZYwdJZdeRpz5DlsNZY6QyaL83SNk+qzcVNMM4J/lto+ikKc8ZjkMDrWJY
wBdEKXZdx4ZsMkSuPbsZ0vByfYQs5F4x+xS3aVjykxFZQtI9x3QspsibkgAKK9Tn
54utR3NZ+UWiYtefJiCJSoet7zxHZGssfA6dUd8Z6UK/yin+23yp1y9NRB6s05ov
WL9XthVkYeTkB4OZxxsIcAyyHDvv1piDiOb5LtNsE+7u75pBWG891SPVgRhhou6N
BZoy+h0/vy2pOiO1RgzO/7wk/XLS8bpCCxn1dQIDAQABAoIBABEz9b7dn6vLSLeB
qO+Pto7gzY2VX2JozmR6Bv/OK2oEO41o7KNMn0kGoZ22R8+IG4dGgYmcpN6Ct4uj
uwpstoh2LIenEYFlvmHKTEfl7l88MizvDYK/kNA4hq4BseXg2i9P+wgNhNUqFzcK
eCLr8l71RuQPswYscYL1CdXvbybM8eQU0M8rJIKdD7TpF+C+uQJYfg1C6iA5mX1g
atowXKIyBoAi69rFAl0Sgb+h2ypPGs0YjuYz/pJ+rVOxd3p1iWGIv+6GBVeOn+9d
/+JAv7iyf8msD2Mg0joBAG8C47Bq/LlNiW+GDb68CQE87wdujvR1Q78gtGRV1egX
5ZkofE0CgYEA7wkf+5idR1YLHjtfBpP1r2D3ngFJ3aT17++Ani8x9/7z1Bx6+NoS
OlMGJ/fdrmgCQ+NUGeU3nqrrh4SiJpi85dpXIr/YXThq4pKkmm0Q5O4s380VdBM+
JUHrqrxByykg+qFvVnldQKAaCUgU8e7hm8H4n/T8J0iFmYr6agYK+M8CgYEAuEIg
l+0cljz6SfaD75x2v7dZlHOrJPrdOdh10UZeWiOVktT3wCcGasuLYCcjQcxHVtfX
6urrlaFw5E+7fIv/PNlEIgji4lNZ/422SyecByXhttAiN/josdXFxkXz3cHZHuDn
151odK8vaBuHLzZpvJO8Wu/a2SOri3FiDufLdnsCgYEAjfvNk5TDV2w0jnCVsUKR
3OqsKp55Ub56l1qb+1ntRHGcQ5HnOYnO6fYG4hbJBp+hONH/UqJkt0qvPH/8EREI
oz9eIrXxvu2UD6ErRM8kCdevsAARjjEf6OGPKotISXTUsgrSJ3tPeOOgk4LNbieG
uw4ssFbEsFDTirCSrgeI3OECgYEAgT4ZAJfXsmYJJXIdbyevf6BK3D8Z77FrFVUI
pwcVzWIiW0C4mvaEoMou8/3f1BpGe9qgX+3x2x3HQs3Oc3j7SiIXkUvsYNYYTZGI
KUUaQ0VGAmYRanNUPND2jbGpcYW0Ft2ooWuOxjHPLdYJR4uCNTznJF4TgrVrcT7R
iiT6aRsCgYEAx9xm3q3lVg+xaybrVLOIhK0XsNH6tF6ZAlW+ObfEijKRg4sfTuZq
kh6JRLwfuPKxAFrtBPprgX3xtSRDOFncGkh8WxQjJDp0v+akyuAQSYnjWrUXQI8n
KhKswTMvfbAXBW9VJyj1NWNBLQ8HczXr+LW8K3ZHhibJL+nHJsWamVM=
-----END RSA PRIVATE KEY-----
";
    const RSA_SPKI: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArAxNxhRV2DCeP51CG8Mj
xMA40TIo2scIrwhM9CFo+lJVnm57ER8Akn6ZYwdJZdeRpz5DlsNZY6QyaL83SNk+
qzcVNMM4J/lto+ikKc8ZjkMDrWJYwBdEKXZdx4ZsMkSuPbsZ0vByfYQs5F4x+xS3
aVjykxFZQtI9x3QspsibkgAKK9Tn54utR3NZ+UWiYtefJiCJSoet7zxHZGssfA6d
Ud8Z6UK/yin+23yp1y9NRB6s05ovWL9XthVkYeTkB4OZxxsIcAyyHDvv1piDiOb5
LtNsE+7u75pBWG891SPVgRhhou6NBZoy+h0/vy2pOiO1RgzO/7wk/XLS8bpCCxn1
dQIDAQAB
-----END PUBLIC KEY-----
";
    const RSA_P1PUB: &str = "\
-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEArAxNxhRV2DCeP51CG8MjxMA40TIo2scIrwhM9CFo+lJVnm57ER8A
kn6ZYwdJZdeRpz5DlsNZY6QyaL83SNk+qzcVNMM4J/lto+ikKc8ZjkMDrWJYwBdE
KXZdx4ZsMkSuPbsZ0vByfYQs5F4x+xS3aVjykxFZQtI9x3QspsibkgAKK9Tn54ut
R3NZ+UWiYtefJiCJSoet7zxHZGssfA6dUd8Z6UK/yin+23yp1y9NRB6s05ovWL9X
thVkYeTkB4OZxxsIcAyyHDvv1piDiOb5LtNsE+7u75pBWG891SPVgRhhou6NBZoy
+h0/vy2pOiO1RgzO/7wk/XLS8bpCCxn1dQIDAQAB
-----END RSA PUBLIC KEY-----
";
    const RSA1024_P8: &str = "\
-----BEGIN PRIVATE KEY-----
MIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBALlIOyQbJh/9NA18
cHffmu6O2iPvQZu6O717vXDtU0lsPbTsoJZKiCIzz56v26tVpPBomoPlOGbhufRj
pxqcDYLfwAjXVAGsz9qDRkPkNB6VTYNeh5GD7P0ZR7xIGr5JEEzfq1DCuQzpsZwD
LznDRYF6sd+Rkx40uPqNx0NMrkw1AgMBAAECgYEAj2u0K+zABD8RjebngEMcQNFf
VjWbyZnNKI2iRMnQkKMy2NvaKrwiyKbmbeWe2u9+r4GpKbPDhw/vy5dgAJ8PbQ8s
1P9SJ6I0SFzzYWr4BTbVhzWltym55pmmAyj0J72BeUuyCZ7KDvVHhvnKvJOSJMgM
zJyfkfXn6aAjYmZywvkCQQDo3BEkLrMjknR59p2TCLyPsQZh7aALRQthmlwNle6K
2silcw1DuG1JIc3xoOg4gflQDuwzazBVBYA1VrdHLyOTAkEAy7HL0PGJai9oRU2Z
WKQPTFtj83Z70vrX9Ac3cHeq2JMz1/s3eLn3WIIEYWul/uqb3c2mOPaxvpZ2wyd5
Nam+FwJATbh1+C+mFu9g9Pw9J8A4v3UEflcDnf9ThyYwJ1Ctp6bSZXZ7LOk3gLtJ
s6ZTG9k1z2TLrXXPUfFeE294CMhRBQJAKlz55KS3TYw6hV9UKylDvT+sk+/qZMCi
tS/jCdL5hz1mJN8sdEFI/fFcc95tkYy9ie3BSkuUP+0PGhtVjCGXVQJBAJ2IEkVF
/5jxquURbirqv5ZoH4CcBtIElj3SE+ZQ57K0ZZoDmG6N2xCce5OCIyb2fvoL0meY
z0/VsRLtlPn/pCA=
-----END PRIVATE KEY-----
";
    const RSA1024_P1: &str = "\
-----BEGIN RSA PRIVATE KEY-----
MIICXQIBAAKBgQC5SDskGyYf/TQNfHB335rujtoj70Gbuju9e71w7VNJbD207KCW
SogiM8+er9urVaTwaJqD5Thm4bn0Y6canA2C38AI11QBrM/ag0ZD5DQelU2DXoeR
g+z9GUe8SBq+SRBM36tQwrkM6bGcAy85w0WBerHfkZMeNLj6jcdDTK5MNQIDAQAB
AoGBAI9rtCvswAQ/EY3m54BDHEDRX1Y1m8mZzSiNokTJ0JCjMtjb2iq8Isim5m3l
ntrvfq+BqSmzw4cP78uXYACfD20PLNT/UieiNEhc82Fq+AU21Yc1pbcpueaZpgMo
9Ce9gXlLsgmeyg71R4b5yryTkiTIDMycn5H15+mgI2JmcsL5AkEA6NwRJC6zI5J0
efadkwi8j7EGYe2gC0ULYZpcDZXuitrIpXMNQ7htSSHN8aDoOIH5UA7sM2swVQWA
NVa3Ry8jkwJBAMuxy9DxiWovaEVNmVikD0xbY/N2e9L61/QHN3B3qtiTM9f7N3i5
91iCBGFrpf7qm93Npjj2sb6WdsMneTWpvhcCQE24dfgvphbvYPT8PSfAOL91BH5X
A53/U4cmMCdQraem0mV2eyzpN4C7SbOmUxvZNc9ky611z1HxXhNveAjIUQUCQCpc
+eSkt02MOoVfVCspQ70/rJPv6mTAorUv4wnS+Yc9ZiTfLHRBSP3xXHPebZGMvYnt
wUpLlD/tDxobVYwhl1UCQQCdiBJFRf+Y8arlEW4q6r+WaB+AnAbSBJY90hPmUOey
tGWaA5hujdsQnHuTgiMm9n76C9JnmM9P1bES7ZT5/6Qg
-----END RSA PRIVATE KEY-----
";
    const RSA1024_SPKI: &str = "\
-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC5SDskGyYf/TQNfHB335rujtoj
70Gbuju9e71w7VNJbD207KCWSogiM8+er9urVaTwaJqD5Thm4bn0Y6canA2C38AI
11QBrM/ag0ZD5DQelU2DXoeRg+z9GUe8SBq+SRBM36tQwrkM6bGcAy85w0WBerHf
kZMeNLj6jcdDTK5MNQIDAQAB
-----END PUBLIC KEY-----
";
    const P256_P8: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCiOi9/wf1X8M+UhU
0BEV+XyySdD6xpzb70mVGmxO6hqhRANCAASl6pWvv/T2zqk4bMUhSt/e/mg9QiOl
kebeb9c12n30OqKVliDGkGa6yI7Vnyapa1Hr3yj4VHN3S9AZyVgo6dGG
-----END PRIVATE KEY-----
";
    const P256_SEC1: &str = "\
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIAojovf8H9V/DPlIVNARFfl8sknQ+sac2+9JlRpsTuoaoAoGCCqGSM49
AwEHoUQDQgAEpeqVr7/09s6pOGzFIUrf3v5oPUIjpZHm3m/XNdp99DqilZYgxpBm
usiO1Z8mqWtR698o+FRzd0vQGclYKOnRhg==
-----END EC PRIVATE KEY-----
";
    const P256_SPKI: &str = "\
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpeqVr7/09s6pOGzFIUrf3v5oPUIj
pZHm3m/XNdp99DqilZYgxpBmusiO1Z8mqWtR698o+FRzd0vQGclYKOnRhg==
-----END PUBLIC KEY-----
";
    const P256PARAM_PEM: &str = "\
-----BEGIN EC PARAMETERS-----
BggqhkjOPQMBBw==
-----END EC PARAMETERS-----
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIAUsbfMnymdhZ70uEIZY2MNB1/hS938NQuteSoQ3kBYnoAoGCCqGSM49
AwEHoUQDQgAE4udgcb9L6tNF1EJnNCV9FswvZqRjf2Vrf2zi5nMSuXP8PKxZjvPq
dsDgiCqJtLa80qBzkpX29Uu0U5g4+oeOeA==
-----END EC PRIVATE KEY-----
";
    const P384_P8: &str = "\
-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDAL3RBbwbAYyHs5Hjhw
dISqiwkfPejp+1XZXtasiy1AqfgsV2AsLBNXlIQ7bvAMuWuhZANiAARf/z0iV2kq
nZJ42rYARh8hiwFb2RAfTbUFqBKPVY8IJBmBRVYwzNLdDKcY8Mg6Ar7km3urCTrA
H6/SqJURv8uxQNvJ/DM4xflZ4Okz3G1ir8U9fLkpl/u2N0mnK8Y4vpw=
-----END PRIVATE KEY-----
";
    const P384_SEC1: &str = "\
-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDAL3RBbwbAYyHs5HjhwdISqiwkfPejp+1XZXtasiy1AqfgsV2AsLBNX
lIQ7bvAMuWugBwYFK4EEACKhZANiAARf/z0iV2kqnZJ42rYARh8hiwFb2RAfTbUF
qBKPVY8IJBmBRVYwzNLdDKcY8Mg6Ar7km3urCTrAH6/SqJURv8uxQNvJ/DM4xflZ
4Okz3G1ir8U9fLkpl/u2N0mnK8Y4vpw=
-----END EC PRIVATE KEY-----
";
    const P384_SPKI: &str = "\
-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEX/89IldpKp2SeNq2AEYfIYsBW9kQH021
BagSj1WPCCQZgUVWMMzS3QynGPDIOgK+5Jt7qwk6wB+v0qiVEb/LsUDbyfwzOMX5
WeDpM9xtYq/FPXy5KZf7tjdJpyvGOL6c
-----END PUBLIC KEY-----
";
    const ED_P8: &str = "\
-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINrnXrKaufadVPg3ji8i2f+3JMnfSwEKxB8fcjYJdITD
-----END PRIVATE KEY-----
";
    const ED_SPKI: &str = "\
-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAlUUu8x61Tvjyb8Ow5zllcYBDxC3ql0wFBUIWnrq2o0c=
-----END PUBLIC KEY-----
";
    const K1_P8: &str = "\
-----BEGIN PRIVATE KEY-----
MIGEAgEAMBAGByqGSM49AgEGBSuBBAAKBG0wawIBAQQg8v2IythRC4g4LOHQU6CN
4g3oghNf/ggCJbXTlvD92e6hRANCAASBf1Bu56ctosrvLn8Vtw9/yKQpkmSM50Ev
GO1/rKsSdddg9ND1ZkPw479r0RXqgjLgC1WctXSF/im9SlSl7usa
-----END PRIVATE KEY-----
";
    const ED448_P8: &str = "\
-----BEGIN PRIVATE KEY-----
MEcCAQAwBQYDK2VxBDsEOWEmQAbUZPvLWGnx1qlKJ3MMDmj4kh4qRlcjE5NYuwcQ
v42okkTYrP0id1ae2032DXdlEAQjozRmZw==
-----END PRIVATE KEY-----
";
    const K1_SPKI: &str = "\
-----BEGIN PUBLIC KEY-----
MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEgX9QbuenLaLK7y5/FbcPf8ikKZJkjOdB
Lxjtf6yrEnXXYPTQ9WZD8OO/a9EV6oIy4AtVnLV0hf4pvUpUpe7rGg==
-----END PUBLIC KEY-----
";
    const ED448_SPKI: &str = "\
-----BEGIN PUBLIC KEY-----
MEMwBQYDK2VxAzoAKEhfRiV7Nl2B6Vu+ypfRxcZUn3h8araR+sAw9/ksbNgW8F0p
a79m1Oj/0JqezXlXoBqrjKRWOXUA
-----END PUBLIC KEY-----
";

    fn payload() -> Map<String, Value> {
        json!({"sub": "alice", "exp": 2_000_000_000, "aud": ["a"]})
            .as_object()
            .unwrap()
            .clone()
    }

    /// Sign with `signer`, then parse and verify with `verifier`.
    fn sign_and_verify(signer: &LoadedKey, verifier: &LoadedKey) -> bool {
        let token = jwt::sign(signer, "kid-1", &payload()).unwrap();
        let parsed = jwt::parse(&token, 1 << 16).unwrap();
        assert_eq!(parsed.header.alg, signer.alg.as_str());
        assert_eq!(parsed.header.kid.as_deref(), Some("kid-1"));
        jwt::verify_signature(&parsed, verifier)
    }

    fn tamper(token: &str) -> String {
        let (rest, sig) = token.rsplit_once('.').unwrap();
        let mut sig = sig.to_owned();
        let c = if sig.starts_with('A') { "B" } else { "A" };
        sig.replace_range(0..1, c);
        format!("{rest}.{sig}")
    }

    fn err(alg: Alg, text: &str) -> String {
        parse_key_material(alg, text).expect_err("material must be refused")
    }

    #[test]
    fn round_trip_every_alg_with_generated_keys() {
        for alg in Alg::ALL {
            let m = generate(alg);
            assert!(m.can_sign, "{alg:?}");
            if alg.is_hmac() {
                assert_eq!(m.bytes.len(), alg.min_secret_bytes(), "{alg:?}");
            }
            let key = load_key(alg, &m).unwrap();
            assert!(key.encoding.is_some());
            let token = jwt::sign(&key, "k1", &payload()).unwrap();
            let parsed = jwt::parse(&token, 1 << 16).unwrap();
            assert_eq!(parsed.header.alg, alg.as_str());
            assert_eq!(parsed.claims.sub.as_deref(), Some("alice"));
            assert!(jwt::verify_signature(&parsed, &key), "{alg:?}");
            let forged = tamper(&token);
            assert!(
                !jwt::verify_signature(&jwt::parse(&forged, 1 << 16).unwrap(), &key),
                "{alg:?}"
            );
            // another key of the same alg does not verify it
            let other = load_key(alg, &generate(alg)).unwrap();
            assert!(!jwt::verify_signature(&parsed, &other), "{alg:?}");
            if alg.is_hmac() {
                continue;
            }
            // the public half verifies but cannot sign
            let public = public_part(alg, &m).unwrap();
            assert!(!public.can_sign);
            let verifier = load_key(alg, &public).unwrap();
            assert!(verifier.encoding.is_none());
            assert!(jwt::verify_signature(&parsed, &verifier), "{alg:?}");
            // the public JWK reads back as the same public material
            let jwk = public_jwk(alg, &m, "k1");
            assert_eq!(material_from_jwk(&jwk, alg).unwrap(), public);
            // the stored forms are the canonical DER ones
            assert!(PrivateKeyInfoRef::from_der(&m.bytes).is_ok(), "{alg:?}");
            assert!(
                SubjectPublicKeyInfoRef::from_der(&public.bytes).is_ok(),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn generated_key_types() {
        let rsa = generate(Alg::PS256);
        let jwk = public_jwk(Alg::PS256, &rsa, "r");
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len() * 8, 2048);
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(
            public_jwk(Alg::ES256, &generate(Alg::ES256), "e")["crv"],
            "P-256"
        );
        assert_eq!(
            public_jwk(Alg::ES384, &generate(Alg::ES384), "e")["crv"],
            "P-384"
        );
        assert_eq!(
            public_jwk(Alg::EdDSA, &generate(Alg::EdDSA), "e")["crv"],
            "Ed25519"
        );
        // RSA keys serve every RS* and PS* alg
        for alg in [
            Alg::RS256,
            Alg::RS384,
            Alg::RS512,
            Alg::PS256,
            Alg::PS384,
            Alg::PS512,
        ] {
            let k = load_key(alg, &rsa).unwrap();
            assert!(sign_and_verify(&k, &k), "{alg:?}");
        }
        // but a key is loaded only for an alg its type serves
        assert!(load_key(Alg::ES256, &rsa)
            .unwrap_err()
            .contains("does not fit ES256"));
        assert!(load_key(Alg::ES384, &generate(Alg::ES256)).is_err());
        assert!(load_key(Alg::EdDSA, &generate(Alg::ES256)).is_err());
        assert!(load_key(Alg::RS256, &generate(Alg::EdDSA)).is_err());
        let two = generate(Alg::HS256);
        assert_ne!(two.bytes, generate(Alg::HS256).bytes);
    }

    #[test]
    fn pem_forms_are_accepted_and_canonical() {
        let cases: [(Alg, &[&str], &[&str]); 4] = [
            (Alg::RS256, &[RSA_P8, RSA_P1], &[RSA_SPKI, RSA_P1PUB]),
            (Alg::ES256, &[P256_P8, P256_SEC1], &[P256_SPKI]),
            (Alg::ES384, &[P384_P8, P384_SEC1], &[P384_SPKI]),
            (Alg::EdDSA, &[ED_P8], &[ED_SPKI]),
        ];
        for (alg, privates, publics) in cases {
            let first = parse_key_material(alg, privates[0]).unwrap();
            assert!(first.can_sign);
            for text in privates {
                let m = parse_key_material(alg, text).unwrap();
                assert_eq!(m, first, "{alg:?}: every private form gives the same bytes");
            }
            let public = public_part(alg, &first).unwrap();
            for text in publics {
                let m = parse_key_material(alg, text).unwrap();
                assert!(!m.can_sign);
                assert_eq!(m, public, "{alg:?}: every public form gives the same bytes");
            }
            let signer = load_key(alg, &first).unwrap();
            let verifier = load_key(alg, &public).unwrap();
            assert!(sign_and_verify(&signer, &verifier), "{alg:?}");
            // openssl's PKCS#8 and SPKI are already in canonical form
            let der = pem::parse(privates[0]).unwrap().into_contents();
            assert_eq!(first.bytes, der, "{alg:?}");
            let spki = pem::parse(publics[0]).unwrap().into_contents();
            assert_eq!(public.bytes, spki, "{alg:?}");
        }
        // `openssl ecparam -genkey` output: EC PARAMETERS, then the SEC1 key
        let m = parse_key_material(Alg::ES256, P256PARAM_PEM).unwrap();
        let k = load_key(Alg::ES256, &m).unwrap();
        assert!(sign_and_verify(&k, &k));
        // PS* take RSA keys too; CRLF line ends and surrounding blanks are fine
        let crlf = format!("\n  {}\n", RSA_P1.replace('\n', "\r\n"));
        let m = parse_key_material(Alg::PS512, &crlf).unwrap();
        let k = load_key(Alg::PS512, &m).unwrap();
        assert!(sign_and_verify(&k, &k));
    }

    #[test]
    fn a_public_key_cannot_sign() {
        for (alg, text) in [
            (Alg::RS256, RSA_SPKI),
            (Alg::PS384, RSA_P1PUB),
            (Alg::ES256, P256_SPKI),
            (Alg::ES384, P384_SPKI),
            (Alg::EdDSA, ED_SPKI),
        ] {
            let m = parse_key_material(alg, text).unwrap();
            assert!(!m.can_sign && !m.is_private());
            let key = load_key(alg, &m).unwrap();
            assert!(key.encoding.is_none());
            let e = jwt::sign(&key, "k", &payload()).unwrap_err();
            assert!(e.contains("cannot sign"), "{e}");
        }
        // a public JWK imports as verify-only too
        let m = parse_key_material(
            Alg::ES256,
            &public_jwk(Alg::ES256, &generate(Alg::ES256), "k").to_string(),
        );
        assert!(!m.unwrap().can_sign);
    }

    #[test]
    fn small_rsa_keys_are_refused() {
        for text in [RSA1024_P8, RSA1024_P1, RSA1024_SPKI] {
            let e = err(Alg::RS256, text);
            assert!(
                e.contains("1024 bits") && e.contains("at least 2048"),
                "{e}"
            );
        }
        // the same key as a JWK
        let spki = pem::parse(RSA1024_SPKI).unwrap().into_contents();
        let info = SubjectPublicKeyInfoRef::from_der(&spki).unwrap();
        let k = RsaPublicKeyRef::from_der(info.subject_public_key.as_bytes().unwrap()).unwrap();
        let jwk = json!({
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(k.modulus.as_bytes()),
            "e": URL_SAFE_NO_PAD.encode(k.public_exponent.as_bytes()),
        });
        let e = err(Alg::PS256, &jwk.to_string());
        assert!(e.contains("1024 bits"), "{e}");
        let jwks = json!({"keys": [{"kid": "small", "alg": "RS256", "n": jwk["n"], "e": "AQAB", "kty": "RSA"}]});
        let e = jwks_entries(&jwks).unwrap_err();
        assert!(e.contains("\"small\"") && e.contains("1024 bits"), "{e}");
    }

    #[test]
    fn keys_must_fit_their_alg() {
        let cases = [
            (Alg::ES256, P384_P8, "P-384"),
            (Alg::ES256, P384_SEC1, "P-384"),
            (Alg::ES256, P384_SPKI, "P-384"),
            (Alg::ES384, P256_SEC1, "P-256"),
            (Alg::RS256, P256_P8, "P-256"),
            (Alg::RS256, P256_SEC1, "P-256"),
            (Alg::PS256, ED_SPKI, "Ed25519"),
            (Alg::ES256, ED_P8, "Ed25519"),
            (Alg::EdDSA, RSA_P8, "RSA"),
            (Alg::ES256, RSA_P1, "RSA"),
            (Alg::EdDSA, RSA_P1PUB, "RSA"),
        ];
        for (alg, text, found) in cases {
            let e = err(alg, text);
            assert!(
                e.contains("does not fit") && e.contains(alg.as_str()) && e.contains(found),
                "{alg:?}: {e}"
            );
        }
        // kind is checked before size: a small RSA key for ES256 is the wrong type first
        assert!(err(Alg::ES256, RSA1024_P8).contains("does not fit"));
        // unsupported curves and algorithms
        assert!(err(Alg::ES256, K1_P8).contains("secp256k1"));
        assert!(err(Alg::ES256, K1_SPKI).contains("secp256k1"));
        assert!(err(Alg::EdDSA, ED448_P8).contains("Ed448"));
        assert!(err(Alg::EdDSA, ED448_SPKI).contains("Ed448"));
        // JWKs of the wrong type or curve
        let p256 = public_jwk(Alg::ES256, &generate(Alg::ES256), "k");
        let mut p256_no_alg = p256.clone();
        p256_no_alg.as_object_mut().unwrap().remove("alg");
        assert!(err(Alg::ES384, &p256_no_alg.to_string()).contains("does not fit ES384"));
        assert!(err(Alg::RS256, &p256_no_alg.to_string()).contains("does not fit RS256"));
        let ed = public_jwk(Alg::EdDSA, &generate(Alg::EdDSA), "k");
        let mut ed_no_alg = ed.clone();
        ed_no_alg.as_object_mut().unwrap().remove("alg");
        assert!(err(Alg::ES256, &ed_no_alg.to_string()).contains("does not fit ES256"));
        let e = err(
            Alg::RS256,
            r#"{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}"#,
        );
        assert!(e.contains("shared secret"), "{e}");
        assert!(err(
            Alg::ES256,
            r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}"#
        )
        .contains("P-521"));
        assert!(err(Alg::EdDSA, r#"{"kty":"OKP","crv":"X25519","x":"AA"}"#).contains("X25519"));
        // a JWK whose own alg disagrees is refused, one that agrees is fine
        let e = err(Alg::ES384, &p256.to_string());
        assert!(e.contains("ES256") && e.contains("ES384"), "{e}");
        assert!(parse_key_material(Alg::ES256, &p256.to_string()).is_ok());
        let mut enc = p256.clone();
        enc["use"] = "enc".into();
        assert!(err(Alg::ES256, &enc.to_string()).contains("\"sig\""));
        // PEM keys are not HMAC secrets
        let e = err(Alg::HS256, RSA_SPKI);
        assert!(e.contains("PEM"), "{e}");
        // neither PEM nor JWK
        assert!(err(Alg::RS256, "just some text").contains("PEM"));
        assert!(err(Alg::ES256, "").contains("neither"));
        assert!(err(Alg::RS256, r#"{"n":"abc"}"#).contains("kty"));
    }

    #[test]
    fn bad_pem_is_refused() {
        let body_line = RSA_P8.lines().nth(3).unwrap();
        let cases = [
            (RSA_P8.replace(body_line, "!!!!"), "malformed"),
            (RSA_P8.replace("-----END PRIVATE KEY-----", ""), ""),
            (format!("{RSA_P8}{RSA_SPKI}"), "more than one"),
            (RSA_P8.replace("PRIVATE KEY", "RSA PRIVATE KEY"), "PKCS#1"),
            (RSA_P1.replace("RSA PRIVATE KEY", "PRIVATE KEY"), "PKCS#8"),
            (RSA_SPKI.replace("PUBLIC KEY", "RSA PUBLIC KEY"), "PKCS#1"),
            (
                RSA_P8.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
                "encrypted",
            ),
            (RSA_SPKI.replace("PUBLIC KEY", "CERTIFICATE"), "certificate"),
            (
                RSA_SPKI.replace("PUBLIC KEY", "SOMETHING ELSE"),
                "not supported",
            ),
            (
                RSA_P1.replacen(
                    "-----\n",
                    "-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n",
                    1,
                ),
                "encrypted",
            ),
        ];
        for (text, want) in cases {
            let e = err(Alg::RS256, &text);
            assert!(e.contains(want), "{want}: {e}");
        }
        // a corrupted modulus (still valid DER) is an inconsistent key
        let mut bad = pem::parse(RSA_P1).unwrap().into_contents();
        bad[20] ^= 1;
        let text = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", bad));
        assert!(err(Alg::RS256, &text).contains("invalid"));
        let mut bad = pem::parse(P256_SEC1).unwrap().into_contents();
        bad[10] ^= 1; // inside the private scalar: no longer matches the embedded public key
        let text = pem::encode(&pem::Pem::new("EC PRIVATE KEY", bad));
        assert!(err(Alg::ES256, &text).contains("not a valid"));
    }

    // RFC 7515 appendix A.2: the RSA key (JWK members verbatim) and the RS256 token.
    const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    const A2_E: &str = "AQAB";
    const A2_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
    const A2_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
    const A2_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
    const A2_DP: &str = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0";
    const A2_DQ: &str = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU";
    const A2_QI: &str = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U";
    const A2_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

    // RFC 7515 appendix A.3: the P-256 key (JWK members verbatim) and the ES256 token.
    const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const A3_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
    const A3_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

    // RFC 8037 appendix A.1 and A.4: the Ed25519 key and the EdDSA signature.
    const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    const RFC8037_SIG: &str =
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    fn a2_private() -> Value {
        json!({"kty": "RSA", "n": A2_N, "e": A2_E, "d": A2_D, "p": A2_P, "q": A2_Q, "dp": A2_DP, "dq": A2_DQ, "qi": A2_QI})
    }

    #[test]
    fn rfc7515_a2_rs256_example() {
        let token = jwt::parse(A2_TOKEN, 1 << 16).unwrap();
        assert_eq!(token.header.alg, "RS256");
        assert_eq!(token.claims.iss.as_deref(), Some("joe")); // its exp (2011) is past: signature only
        let public = parse_key_material(
            Alg::RS256,
            &json!({"kty": "RSA", "n": A2_N, "e": A2_E}).to_string(),
        )
        .unwrap();
        assert!(!public.can_sign);
        assert!(jwt::verify_signature(
            &token,
            &load_key(Alg::RS256, &public).unwrap()
        ));
        // the private JWK loads, is consistent, and RS256 being deterministic, re-signing the
        // signing input gives the RFC's signature exactly
        let private = parse_key_material(Alg::RS256, &a2_private().to_string()).unwrap();
        assert!(private.can_sign);
        assert_eq!(public_part(Alg::RS256, &private).unwrap(), public);
        let key = load_key(Alg::RS256, &private).unwrap();
        assert!(jwt::verify_signature(&token, &key));
        let sig = jsonwebtoken::crypto::sign(
            token.signing_input.as_bytes(),
            key.encoding.as_ref().unwrap(),
            jsonwebtoken::Algorithm::RS256,
        )
        .unwrap();
        assert_eq!(sig, token.signature);
        // n, e and d alone: the primes are recovered, and the canonical form is the same
        let minimal = json!({"kty": "RSA", "n": A2_N, "e": A2_E, "d": A2_D});
        assert_eq!(
            parse_key_material(Alg::RS256, &minimal.to_string()).unwrap(),
            private
        );
        // the public JWK we publish is the RFC's
        let jwk = public_jwk(Alg::RS256, &private, "2010-12-29");
        assert_eq!(
            jwk,
            json!({"kid": "2010-12-29", "alg": "RS256", "use": "sig", "kty": "RSA", "n": A2_N, "e": A2_E})
        );
        // the same key under PS256 does not verify an RS256 signature
        assert!(!jwt::verify_signature(
            &token,
            &load_key(Alg::PS256, &public).unwrap()
        ));
        // with a wrong d it is refused
        let mut wrong = a2_private();
        wrong["d"] = A2_DP.into();
        let e = err(Alg::RS256, &wrong.to_string());
        assert!(e.contains("do not form a valid key"), "{e}");
        let mut one_prime = a2_private();
        one_prime.as_object_mut().unwrap().remove("q");
        assert!(err(Alg::RS256, &one_prime.to_string()).contains("only one of"));
    }

    #[test]
    fn rfc7515_a3_es256_example() {
        let token = jwt::parse(A3_TOKEN, 1 << 16).unwrap();
        assert_eq!(token.header.alg, "ES256");
        let public = json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y});
        let public = parse_key_material(Alg::ES256, &public.to_string()).unwrap();
        assert!(!public.can_sign);
        assert!(jwt::verify_signature(
            &token,
            &load_key(Alg::ES256, &public).unwrap()
        ));
        let private = json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": A3_D});
        let private = parse_key_material(Alg::ES256, &private.to_string()).unwrap();
        assert!(private.can_sign);
        assert_eq!(public_part(Alg::ES256, &private).unwrap(), public);
        let key = load_key(Alg::ES256, &private).unwrap();
        assert!(jwt::verify_signature(&token, &key));
        assert!(sign_and_verify(
            &key,
            &load_key(Alg::ES256, &public).unwrap()
        ));
        let jwk = public_jwk(Alg::ES256, &private, "e9bc097a");
        assert_eq!(
            jwk,
            json!({"kid": "e9bc097a", "alg": "ES256", "use": "sig", "kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y})
        );
        // the wrong curve for the alg, a d that does not match, a point off the curve
        let e = err(
            Alg::ES384,
            &json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y}).to_string(),
        );
        assert!(e.contains("does not fit ES384"), "{e}");
        let other_d = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let e = err(
            Alg::ES256,
            &json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": other_d}).to_string(),
        );
        assert!(e.contains("does not match"), "{e}");
        let e = err(
            Alg::ES256,
            &json!({"kty": "EC", "crv": "P-256", "x": A3_Y, "y": A3_X}).to_string(),
        );
        assert!(e.contains("not a point"), "{e}");
        let e = err(
            Alg::ES256,
            &json!({"kty": "EC", "crv": "P-256", "x": "AAEC", "y": A3_Y}).to_string(),
        );
        assert!(e.contains("32 bytes"), "{e}");
    }

    #[test]
    fn rfc8037_ed25519_example() {
        let public = parse_key_material(
            Alg::EdDSA,
            &json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}).to_string(),
        )
        .unwrap();
        let verifier = load_key(Alg::EdDSA, &public).unwrap();
        let ok = jsonwebtoken::crypto::verify(
            RFC8037_SIG,
            RFC8037_INPUT.as_bytes(),
            &verifier.decoding,
            jsonwebtoken::Algorithm::EdDSA,
        );
        assert!(ok.unwrap());
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D, "x": RFC8037_X});
        let private = parse_key_material(Alg::EdDSA, &jwk.to_string()).unwrap();
        let signer = load_key(Alg::EdDSA, &private).unwrap();
        let sig = jsonwebtoken::crypto::sign(
            RFC8037_INPUT.as_bytes(),
            signer.encoding.as_ref().unwrap(),
            jsonwebtoken::Algorithm::EdDSA,
        )
        .unwrap();
        assert_eq!(sig, RFC8037_SIG);
        assert_eq!(public_part(Alg::EdDSA, &private).unwrap(), public);
        assert_eq!(public_jwk(Alg::EdDSA, &private, "ed")["x"], RFC8037_X);
        let wrong = json!({"kty": "OKP", "crv": "Ed25519", "d": A3_D, "x": RFC8037_X});
        assert!(err(Alg::EdDSA, &wrong.to_string()).contains("does not match"));
    }

    #[test]
    fn public_jwks_have_no_private_members() {
        let mut materials: Vec<(Alg, KeyMaterial)> =
            Alg::ALL.iter().map(|a| (*a, generate(*a))).collect();
        materials.push((
            Alg::RS256,
            parse_key_material(Alg::RS256, &a2_private().to_string()).unwrap(),
        ));
        materials.push((
            Alg::ES256,
            parse_key_material(Alg::ES256, P256_SEC1).unwrap(),
        ));
        for (alg, m) in &materials {
            let jwk = public_jwk(*alg, m, "the-kid");
            let o = jwk.as_object().unwrap();
            for member in PRIVATE_JWK_MEMBERS {
                assert!(!o.contains_key(member), "{alg:?} has {member}");
            }
            assert_eq!(o["kid"], "the-kid");
            assert_eq!(o["alg"], alg.as_str());
            let expected: &[&str] = match Kind::of(*alg) {
                None => &["alg", "kid", "kty"],
                Some(Kind::Rsa) => &["alg", "e", "kid", "kty", "n", "use"],
                Some(Kind::P256 | Kind::P384) => &["alg", "crv", "kid", "kty", "use", "x", "y"],
                Some(Kind::Ed25519) => &["alg", "crv", "kid", "kty", "use", "x"],
            };
            let mut names: Vec<&str> = o.keys().map(String::as_str).collect();
            names.sort_unstable();
            assert_eq!(names, expected, "{alg:?}");
            if alg.is_hmac() {
                assert_eq!(o["kty"], "oct");
            } else {
                assert_eq!(o["use"], "sig");
            }
        }
    }

    /// Every chunk of at least 8 characters of the secret parts of `text`.
    fn fragments(text: &str) -> Vec<String> {
        let mut out = vec![];
        let mut add = |s: &str| {
            let chars: Vec<char> = s.chars().collect();
            for w in chars.windows(8) {
                out.push(w.iter().collect());
            }
        };
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(text) {
            for (k, v) in o {
                if let (false, Some(s)) = (
                    ["kty", "crv", "alg", "use", "kid"].contains(&k.as_str()),
                    v.as_str(),
                ) {
                    add(s);
                }
            }
        } else {
            for line in text.lines().filter(|l| !l.starts_with("-----")) {
                add(line);
            }
        }
        out
    }

    #[test]
    fn errors_never_quote_the_key() {
        let mut wrong_d = a2_private();
        wrong_d["d"] = A2_DP.into();
        let body_line = RSA_P8.lines().nth(5).unwrap();
        let broken_line = format!("{}*{}", &body_line[..9], &body_line[10..]);
        let mut sec1 = pem::parse(P256_SEC1).unwrap().into_contents();
        sec1[12] ^= 0x55;
        let cases: Vec<(Alg, String)> = vec![
            (Alg::RS256, RSA1024_P8.to_owned()),
            (Alg::ES256, RSA_P8.to_owned()),
            (Alg::ES384, P256_SEC1.to_owned()),
            (Alg::EdDSA, P256_SPKI.to_owned()),
            (Alg::RS256, RSA_P8.replace(body_line, &broken_line)),
            (Alg::RS256, RSA_P8.replace("PRIVATE KEY", "RSA PRIVATE KEY")),
            (Alg::ES256, pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1))),
            (Alg::RS256, wrong_d.to_string()),
            (Alg::ES256, json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": URL_SAFE_NO_PAD.encode([9u8; 32])}).to_string()),
            (Alg::ES256, json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": "%%secret%%value%%"}).to_string()),
            (Alg::ES384, json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": A3_D}).to_string()),
            (Alg::EdDSA, json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "d": A3_X}).to_string()),
            (Alg::HS512, json!({"kty": "oct", "k": "c2hvcnRzZWNyZXRzaG9ydHNlY3JldA"}).to_string()),
            (Alg::HS256, "a short secret".to_owned()),
            (Alg::ES256, K1_P8.to_owned()),
            (Alg::EdDSA, ED448_SPKI.to_owned()),
            (Alg::HS256, RSA_SPKI.to_owned()),
            (Alg::RS256, RSA_P8.lines().filter(|l| !l.starts_with("-----")).collect()),
            (Alg::RS256, RSA_P8.replace("PRIVATE KEY", "X509 CRL")),
            (Alg::ES256, json!({"kty": "oct", "k": A3_D}).to_string()),
            (Alg::ES256, json!({"kty": "EC", "crv": "P-256", "x": A3_X}).to_string()),
        ];
        for (alg, text) in cases {
            let e = err(alg, &text);
            assert!(!e.is_empty());
            // lowercase, except the HMAC length message that starts with the alg name and the
            // refusals of key material as a secret, which are whole sentences
            let lowercase = e.starts_with(|c: char| c.is_ascii_lowercase());
            let sentence = e.starts_with("The text ") && e.ends_with('.');
            assert!(
                lowercase || sentence || e.contains("needs a secret of at least"),
                "lowercase: {e}"
            );
            for f in fragments(&text) {
                assert!(!e.contains(&f), "{alg:?}: error {e:?} quotes {f:?}");
            }
        }
        // Debug never shows the bytes
        let m =
            parse_key_material(Alg::HS256, "correct horse battery staple, long enough").unwrap();
        let shown = format!("{m:?}");
        assert!(
            !shown.contains("99") && shown.contains("not shown"),
            "{shown}"
        );
    }

    #[test]
    fn jwks_import() {
        let ed = generate(Alg::EdDSA);
        let ed_public = public_jwk(Alg::EdDSA, &ed, "ed-1");
        let mut a2 = a2_private();
        a2["kid"] = "2010-12-29".into();
        a2["alg"] = "RS256".into();
        let a3 = json!({"kid": "e9bc", "alg": "ES256", "use": "sig", "kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": A3_D});
        let jwks = json!({"keys": [a2, a3, ed_public]});
        let entries = jwks_entries(&jwks).unwrap();
        let kids: Vec<(&str, Alg)> = entries.iter().map(|(k, a, _)| (k.as_str(), *a)).collect();
        assert_eq!(
            kids,
            [
                ("2010-12-29", Alg::RS256),
                ("e9bc", Alg::ES256),
                ("ed-1", Alg::EdDSA)
            ]
        );
        // only the public parts are kept, even where private members were given
        for (_, alg, m) in &entries {
            assert!(!m.can_sign);
            assert!(load_key(*alg, m).unwrap().encoding.is_none());
        }
        let a2_private_material =
            parse_key_material(Alg::RS256, &a2_private().to_string()).unwrap();
        assert_eq!(
            entries[0].2,
            public_part(Alg::RS256, &a2_private_material).unwrap()
        );
        assert_eq!(entries[2].2, public_part(Alg::EdDSA, &ed).unwrap());
        assert!(jwt::verify_signature(
            &jwt::parse(A2_TOKEN, 1 << 16).unwrap(),
            &load_key(Alg::RS256, &entries[0].2).unwrap()
        ));
        assert!(jwt::verify_signature(
            &jwt::parse(A3_TOKEN, 1 << 16).unwrap(),
            &load_key(Alg::ES256, &entries[1].2).unwrap()
        ));
        // importing again gives equal materials
        let again = jwks_entries(&jwks).unwrap();
        for (a, b) in entries.iter().zip(&again) {
            assert!(same_material(&a.2, &b.2));
        }
        assert!(!same_material(&entries[0].2, &entries[1].2));
        // a repeated identical entry is kept once, a different key under the same kid is refused
        let dup = json!({"keys": [jwks["keys"][1], jwks["keys"][1]]});
        assert_eq!(jwks_entries(&dup).unwrap().len(), 1);
        let mut clash = jwks["keys"][2].clone();
        clash["kid"] = "e9bc".into();
        let e = jwks_entries(&json!({"keys": [jwks["keys"][1], clash]})).unwrap_err();
        assert!(
            e.contains("two different keys") && e.contains("e9bc"),
            "{e}"
        );
        // refusals name the entry
        let mut no_kid = jwks["keys"][1].clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        let e = jwks_entries(&json!({"keys": [jwks["keys"][0], no_kid]})).unwrap_err();
        assert!(e.contains("index 1") && e.contains("no kid"), "{e}");
        let mut no_alg = jwks["keys"][1].clone();
        no_alg.as_object_mut().unwrap().remove("alg");
        let e = jwks_entries(&json!({"keys": [no_alg]})).unwrap_err();
        assert!(e.contains("\"e9bc\"") && e.contains("no alg"), "{e}");
        let mut oaep = jwks["keys"][0].clone();
        oaep["alg"] = "RSA-OAEP".into();
        let e = jwks_entries(&json!({"keys": [jwks["keys"][1], oaep]})).unwrap_err();
        assert!(
            e.contains("\"2010-12-29\"") && e.contains("RSA-OAEP") && e.contains("not accepted"),
            "{e}"
        );
        let mut none = jwks["keys"][0].clone();
        none["alg"] = "none".into();
        assert!(jwks_entries(&json!({"keys": [none]}))
            .unwrap_err()
            .contains("not accepted"));
        let mut misfit = jwks["keys"][1].clone();
        misfit["alg"] = "ES384".into();
        let e = jwks_entries(&json!({"keys": [misfit]})).unwrap_err();
        assert!(
            e.contains("\"e9bc\"") && e.contains("does not fit ES384"),
            "{e}"
        );
        let mut misfit = jwks["keys"][2].clone();
        misfit["alg"] = "RS256".into();
        assert!(jwks_entries(&json!({"keys": [misfit]}))
            .unwrap_err()
            .contains("does not fit RS256"));
        let oct = json!({"kid": "s", "alg": "HS256", "kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"});
        let e = jwks_entries(&json!({"keys": [oct]})).unwrap_err();
        assert!(e.contains("\"s\"") && e.contains("public keys only"), "{e}");
        let mut enc = jwks["keys"][1].clone();
        enc["use"] = "enc".into();
        assert!(jwks_entries(&json!({"keys": [enc]}))
            .unwrap_err()
            .contains("\"e9bc\""));
        for bad in [json!([]), json!({"keys": {}}), json!({"kids": []})] {
            assert!(jwks_entries(&bad).unwrap_err().contains("\"keys\" array"));
        }
        assert!(jwks_entries(&json!({"keys": ["x"]}))
            .unwrap_err()
            .contains("index 0"));
        assert!(jwks_entries(&json!({"keys": []})).unwrap().is_empty());
    }

    #[test]
    fn hmac_material() {
        assert!(parse_key_material(Alg::HS256, "short")
            .unwrap_err()
            .contains("at least 32 bytes"));
        assert!(parse_key_material(Alg::HS512, &"x".repeat(63)).is_err());
        assert_eq!(
            parse_key_material(Alg::HS512, &"x".repeat(64))
                .unwrap()
                .bytes
                .len(),
            64
        );
        let err = parse_key_material(Alg::HS256, r#"{"kty":"RSA","n":"abc"}"#).unwrap_err();
        assert!(err.contains("oct"), "{err}");
        assert!(parse_key_material(Alg::HS256, r#"{"kty":"oct"}"#).is_err());
        assert!(parse_key_material(Alg::HS256, r#"{"kty":"oct","k":"!!"}"#).is_err());
        // a JSON object or array that is not a JWK is not a secret either (see
        // public_key_material_is_never_an_hmac_secret); other JSON values are
        let e = parse_key_material(Alg::HS256, r#"{"not":"a jwk but long enough....."}"#);
        assert!(e
            .unwrap_err()
            .starts_with("The text is a JSON object or array"));
        let m = parse_key_material(Alg::HS256, r#""a JSON string, long enough to be one""#);
        assert!(m.unwrap().can_sign);
        // errors never echo the secret
        let e = parse_key_material(Alg::HS256, "hunter2").unwrap_err();
        assert!(!e.contains("hunter2"));
        // an oct JWK's own alg must match
        let k = URL_SAFE_NO_PAD.encode([1u8; 48]);
        let jwk = json!({"kty": "oct", "k": k, "alg": "HS384"});
        assert_eq!(
            parse_key_material(Alg::HS384, &jwk.to_string())
                .unwrap()
                .bytes,
            [1u8; 48]
        );
        assert!(parse_key_material(Alg::HS256, &jwk.to_string())
            .unwrap_err()
            .contains("HS384"));
        // the public JWK of a secret has no secret
        let m = generate(Alg::HS384);
        assert_eq!(
            public_jwk(Alg::HS384, &m, "h"),
            json!({"kid": "h", "alg": "HS384", "kty": "oct"})
        );
        assert!(public_part(Alg::HS384, &m).is_err());
    }

    /// The DER inside a PEM text.
    fn der_of(pem_text: &str) -> Vec<u8> {
        pem::parse(pem_text).unwrap().into_contents()
    }

    fn ssh_blob(fields: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![];
        for f in fields {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn public_key_material_is_never_an_hmac_secret() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let wrap = |t: &str| {
            t.as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let ed_blob = ssh_blob(&[b"ssh-ed25519", &[7u8; 32]]);
        let rsa_blob = ssh_blob(&[b"ssh-rsa", &[1, 0, 1], &der_of(RSA_SPKI)[33..290]]);
        let sk_blob = ssh_blob(&[b"sk-ssh-ed25519@openssh.com", &[7u8; 32], b"ssh:"]);
        let p256_point = {
            let m = parse_key_material(Alg::ES256, P256_SPKI).unwrap();
            match public_form(&decode_stored(Alg::ES256, &m).unwrap()).unwrap() {
                PublicForm::Ec { point, .. } => point,
                _ => unreachable!(),
            }
        };
        let jwks = json!({"keys": [public_jwk(Alg::RS256, &parse_key_material(Alg::RS256, RSA_SPKI).unwrap(), "k")]});
        let mut no_kty = jwks["keys"][0].clone();
        no_kty.as_object_mut().unwrap().remove("kty");
        let cases: Vec<(&str, String, &str)> = vec![
            ("jwks", jwks.to_string(), "JSON object or array"),
            (
                "jwk without kty",
                no_kty.to_string(),
                "JSON object or array",
            ),
            (
                "json array",
                json!([no_kty]).to_string(),
                "JSON object or array",
            ),
            (
                "cut json",
                format!("{{ \"n\": \"{A2_N}\""),
                "JSON object or array",
            ),
            (
                "cut json array",
                format!("[{{\"n\": \"{A2_N}\""),
                "JSON object or array",
            ),
            ("bracketed", format!("{{{A2_N}}}"), "JSON object or array"),
            (
                "spki base64",
                STANDARD.encode(der_of(RSA_SPKI)),
                "DER key structure",
            ),
            (
                "spki base64 wrapped",
                wrap(&STANDARD.encode(der_of(RSA_SPKI))),
                "DER key structure",
            ),
            (
                "spki base64url",
                URL_SAFE_NO_PAD.encode(der_of(P256_SPKI)),
                "DER key structure",
            ),
            (
                "spki base64url padded",
                URL_SAFE.encode(der_of(P384_SPKI)),
                "DER key structure",
            ),
            (
                "ed25519 spki",
                STANDARD.encode(der_of(ED_SPKI)),
                "DER key structure",
            ),
            ("spki hex", hex(&der_of(RSA_SPKI)), "DER key structure"),
            (
                "spki HEX",
                hex(&der_of(ED_SPKI)).to_uppercase(),
                "DER key structure",
            ),
            (
                "pkcs1 public",
                STANDARD.encode(der_of(RSA_P1PUB)),
                "DER key structure",
            ),
            (
                "pkcs8 private",
                STANDARD.encode(der_of(P256_P8)),
                "DER key structure",
            ),
            (
                "sec1 private",
                STANDARD.encode(der_of(P256_SEC1)),
                "DER key structure",
            ),
            (
                "ec point",
                URL_SAFE_NO_PAD.encode(&p256_point),
                "elliptic-curve",
            ),
            (
                "ssh-ed25519",
                format!("ssh-ed25519 {} me@host", STANDARD.encode(&ed_blob)),
                "SSH key",
            ),
            (
                "ssh-rsa",
                format!("ssh-rsa {}", STANDARD.encode(&rsa_blob)),
                "SSH key",
            ),
            (
                "ssh options",
                format!(
                    "no-pty,from=\"x\" ssh-ed25519 {}",
                    STANDARD.encode(&ed_blob)
                ),
                "SSH key",
            ),
            (
                "ecdsa",
                format!("ecdsa-sha2-nistp256 {}", STANDARD.encode(&ed_blob)),
                "SSH key",
            ),
            (
                "sk-ssh",
                format!("sk-ssh-ed25519@openssh.com {}", STANDARD.encode(&sk_blob)),
                "SSH key",
            ),
            (
                "sk-ecdsa",
                format!(
                    "sk-ecdsa-sha2-nistp256@openssh.com {}",
                    STANDARD.encode(&sk_blob)
                ),
                "SSH key",
            ),
            (
                "SSH-RSA upper case",
                format!("SSH-RSA {}", STANDARD.encode(&rsa_blob)),
                "SSH key",
            ),
            ("bare ssh blob", STANDARD.encode(&rsa_blob), "SSH key"),
            ("bare sk blob", STANDARD.encode(&sk_blob), "SSH key"),
            (
                "ssh2 armour",
                format!(
                    "---- BEGIN SSH2 PUBLIC KEY ----\n{}\n---- END SSH2 PUBLIC KEY ----",
                    wrap(&STANDARD.encode(&ed_blob))
                ),
                "SSH key",
            ),
            (
                "openssh private armour",
                format!(
                    "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
                    STANDARD.encode([9u8; 80])
                ),
                "PEM armour",
            ),
            ("pem", RSA_SPKI.to_owned(), "PEM armour"),
            (
                "pem without end",
                RSA_SPKI.replace("-----END PUBLIC KEY-----\n", ""),
                "PEM armour",
            ),
            (
                "pem end only",
                RSA_SPKI.replace("-----BEGIN PUBLIC KEY-----\n", ""),
                "PEM armour",
            ),
            ("lowercase pem", RSA_SPKI.to_lowercase(), "PEM armour"),
            (
                "mixed case pem",
                ED_SPKI.replace("BEGIN", "bEgIn").replace("END", "eNd"),
                "PEM armour",
            ),
            ("private pem", RSA_P8.to_owned(), "PEM armour"),
            (
                "certificate armour",
                format!(
                    "-----BEGIN CERTIFICATE-----\n{}",
                    STANDARD.encode([1u8; 60])
                ),
                "PEM armour",
            ),
        ];
        for alg in [Alg::HS256, Alg::HS384, Alg::HS512] {
            for (name, text, says) in &cases {
                let e = err(alg, text);
                assert!(e.contains(says), "{name} for {alg:?}: {e}");
                assert!(
                    e.starts_with("The text ") && e.ends_with('.'),
                    "{name}: {e}"
                );
            }
        }
        // the contract's JWK form still works, and so do secrets that merely look encoded
        let k = URL_SAFE_NO_PAD.encode([5u8; 32]);
        assert!(parse_key_material(Alg::HS256, &json!({"kty": "oct", "k": k}).to_string()).is_ok());
        let random = crate::crypto::random_bytes(64);
        let secrets = [
            hex(&random),
            STANDARD.encode(&random),
            URL_SAFE_NO_PAD.encode(&random),
            wrap(&STANDARD.encode(crate::crypto::random_bytes(200))),
            "correct horse battery staple, and more words to be long enough for HS512".to_owned(),
            format!("my-ssh-rsa-password-{}", hex(&random)),
            format!("----- dashes, not armour ----- {}", hex(&random)),
            format!("\"{}\"", hex(&random)),
            // a DER SEQUENCE whose contents are not elements, and a point that is not on the curve
            STANDARD.encode([[0x30, 0x3e].as_slice(), &[0xff; 62]].concat()),
            URL_SAFE_NO_PAD.encode([[4u8].as_slice(), &[1u8; 64]].concat()),
        ];
        for text in &secrets {
            assert!(parse_key_material(Alg::HS512, text).is_ok(), "{text}");
        }
        // asymmetric algorithms read the same texts as before
        assert!(parse_key_material(Alg::RS256, RSA_SPKI).is_ok());
        assert!(parse_key_material(Alg::EdDSA, ED_SPKI).is_ok());
    }

    #[test]
    fn rsa_public_exponent_limit() {
        use rsa::pkcs1::UintRef;
        assert_eq!(RSA_MAX_PUBLIC_EXPONENT, 1 << 32);
        let n = URL_SAFE_NO_PAD.decode(A2_N).unwrap();
        let pkcs1_public = |e: u64| {
            let e = e.to_be_bytes();
            let der = RsaPublicKeyRef {
                modulus: UintRef::new(&n).unwrap(),
                public_exponent: UintRef::new(strip_zeros(&e)).unwrap(),
            }
            .to_der()
            .unwrap();
            pem::encode(&pem::Pem::new("RSA PUBLIC KEY", der))
        };
        let spki = |e: u64| {
            let key =
                RsaPublic::new(BoxedUint::from_be_slice_vartime(&n), BoxedUint::from(e)).unwrap();
            key.to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap()
        };
        let jwk = |e: u64| {
            let e = e.to_be_bytes();
            json!({"kty": "RSA", "n": A2_N, "e": URL_SAFE_NO_PAD.encode(strip_zeros(&e))})
                .to_string()
        };
        // within the limit: every path accepts; 2^32 - 1 is the largest odd exponent allowed
        for e in [3u64, 65537, (1 << 32) - 1] {
            for text in [pkcs1_public(e), spki(e), jwk(e)] {
                let m = parse_key_material(Alg::RS256, &text).unwrap();
                assert!(load_key(Alg::RS256, &m).is_ok());
            }
            let set = json!({"keys": [{"kid": "k", "alg": "RS256", "kty": "RSA", "n": A2_N,
                "e": URL_SAFE_NO_PAD.encode(strip_zeros(&e.to_be_bytes()))}]});
            assert_eq!(jwks_entries(&set).unwrap().len(), 1);
        }
        // beyond it (the rsa crate alone would allow up to 2^33 - 1)
        for e in [(1u64 << 32) + 1, (1 << 33) - 1] {
            for text in [pkcs1_public(e), spki(e), jwk(e)] {
                let msg = err(Alg::RS256, &text);
                assert!(msg.contains("exponent is larger than 2^32"), "{e}: {msg}");
            }
            let set = json!({"keys": [{"kid": "k", "alg": "RS256", "kty": "RSA", "n": A2_N,
                "e": URL_SAFE_NO_PAD.encode(strip_zeros(&e.to_be_bytes()))}]});
            let msg = jwks_entries(&set).unwrap_err();
            assert!(
                msg.contains("\"k\"") && msg.contains("exponent is larger"),
                "{msg}"
            );
        }
        // far beyond, and in a private JWK (checked before its private members)
        let mut private = a2_private();
        private["e"] = URL_SAFE_NO_PAD.encode([1u8; 9]).into();
        assert!(err(Alg::RS256, &private.to_string()).contains("exponent is larger"));
        private["e"] = URL_SAFE_NO_PAD.encode([0, 0, 1, 0, 0, 0, 1]).into();
        assert!(err(Alg::RS256, &private.to_string()).contains("exponent is larger"));
    }
}
