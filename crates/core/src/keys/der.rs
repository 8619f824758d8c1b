//! DER structures: PKCS#8, SPKI, PKCS#1 and SEC1, and the algorithm identifiers in them.

use super::*;

pub(super) const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(super) const OID_RSA_PSS: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
pub(super) const OID_DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");
pub(super) const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(super) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(super) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(super) const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
pub(super) const OID_SECP256K1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");
pub(super) const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
pub(super) const OID_X448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.111");
pub(super) const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
pub(super) const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");

pub(super) fn secret_doc(
    doc: rsa::pkcs8::Result<rsa::pkcs8::SecretDocument>,
) -> Result<Vec<u8>, String> {
    Ok(doc.map_err(encode_failed)?.as_bytes().to_vec())
}

/// PKCS#8 v1 of an Ed25519 key (RFC 8410), as `openssl genpkey` writes it.
pub(super) fn ed25519_pkcs8(k: &EdSecret) -> Result<Vec<u8>, String> {
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
pub(super) fn spki_der(oid: ObjectIdentifier, public: &[u8]) -> Result<Vec<u8>, String> {
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
pub(super) fn quote(s: &str) -> String {
    if s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        format!("\"{s}\"")
    } else {
        "(value not shown)".to_owned()
    }
}

pub(super) fn describe_oid(oid: ObjectIdentifier) -> String {
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
pub(super) fn kind_of(algorithm: &AlgorithmIdentifierRef<'_>) -> Result<Kind, String> {
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

pub(super) fn strip_zeros(mut b: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = b {
        b = rest;
    }
    b
}

pub(super) fn check_rsa_size(modulus: &[u8]) -> Result<(), String> {
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

pub(super) fn check_rsa_exponent(e: &[u8]) -> Result<(), String> {
    let e = strip_zeros(e);
    let value = (e.len() <= 8).then(|| e.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)));
    match value {
        Some(v) if v <= RSA_MAX_PUBLIC_EXPONENT => Ok(()),
        _ => Err("the RSA public exponent is larger than 2^32, the most accepted".into()),
    }
}

pub(super) fn rsa_private_from_pkcs1(der: &[u8]) -> Result<Key, String> {
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

pub(super) fn rsa_public_from_pkcs1(der: &[u8]) -> Result<Key, String> {
    let parsed = RsaPublicKeyRef::from_der(der)
        .map_err(|_| "the RSA public key is not a valid PKCS#1 structure".to_owned())?;
    check_rsa_size(parsed.modulus.as_bytes())?;
    check_rsa_exponent(parsed.public_exponent.as_bytes())?;
    let key = RsaPublic::try_from(parsed)
        .map_err(|_| "the RSA public key is invalid (bad modulus or exponent)".to_owned())?;
    Ok(Key::RsaPublic(Box::new(key)))
}

pub(super) fn key_from_pkcs8(alg: Alg, der: &[u8]) -> Result<Key, String> {
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

pub(super) fn key_from_spki(alg: Alg, der: &[u8]) -> Result<Key, String> {
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

pub(super) fn ed25519_public(bytes: &[u8]) -> Result<Key, String> {
    let arr: &[u8; 32] = bytes
        .try_into()
        .map_err(|_| "an Ed25519 public key is 32 bytes".to_owned())?;
    let k = EdPublic::from_bytes(arr).map_err(|_| "the Ed25519 public key is not a valid point")?;
    if k.is_weak() {
        return Err("the Ed25519 public key is a weak (small-order) point".into());
    }
    Ok(Key::EdPublic(k))
}

pub(super) fn key_from_sec1(alg: Alg, der: &[u8]) -> Result<Key, String> {
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
