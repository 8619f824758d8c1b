//! JWKs: keys in, public JWKs out, and JWKS import.

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::*;

/// base64url with or without its `=` padding: RFC 7517 says without, and some tools add it.
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// JWK members -----------------------------------------------------------------------------------

pub(super) fn str_member<'a>(o: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match o.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("the JWK's \"{name}\" member is not a string")),
        None => Err(format!("the JWK has no \"{name}\" member")),
    }
}

/// A base64url member, decoded; `None` when absent.
pub(super) fn b64_member(
    o: &Map<String, Value>,
    name: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    match o.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => URL_SAFE_ANY_PAD
            .decode(s)
            .map(|v| Some(Zeroizing::new(v)))
            .map_err(|_| format!("the JWK's \"{name}\" member is not base64url")),
        Some(_) => Err(format!("the JWK's \"{name}\" member is not a string")),
    }
}

pub(super) fn b64_required(
    o: &Map<String, Value>,
    name: &str,
) -> Result<Zeroizing<Vec<u8>>, String> {
    b64_member(o, name)?.ok_or_else(|| format!("the JWK has no \"{name}\" member"))
}

/// A JWK's own `alg`, when present, must be the one the key is registered for.
pub(super) fn check_jwk_alg(o: &Map<String, Value>, alg: Alg) -> Result<(), String> {
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
pub(super) fn check_jwk_use(o: &Map<String, Value>) -> Result<(), String> {
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

pub(super) fn oct_secret(o: &Map<String, Value>) -> Result<Vec<u8>, String> {
    if o.get("kty").and_then(Value::as_str) != Some("oct") {
        return Err("an HMAC key given as a JWK must have kty \"oct\"".into());
    }
    let k = o
        .get("k")
        .and_then(Value::as_str)
        .ok_or("the oct JWK has no \"k\" member")?;
    URL_SAFE_ANY_PAD
        .decode(k)
        .map_err(|_| "the oct JWK's \"k\" is not base64url".into())
}

pub(super) fn rsa_from_jwk(o: &Map<String, Value>, private: bool) -> Result<Key, String> {
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

pub(super) fn ec_from_jwk(
    o: &Map<String, Value>,
    kind: Kind,
    private: bool,
) -> Result<Key, String> {
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

pub(super) fn ed25519_from_jwk(o: &Map<String, Value>, private: bool) -> Result<Key, String> {
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
pub(super) fn key_from_jwk(
    o: &Map<String, Value>,
    alg: Alg,
    keep_private: bool,
) -> Result<Key, String> {
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

/// A key to check signatures of `alg` with, from a JWK that must be public: one holding a private
/// or secret member (`d`, `p`, `k`, ...) is refused, not stripped. For a DPoP proof's `jwk` header.
pub fn verifying_key_from_jwk(o: &Map<String, Value>, alg: Alg) -> Result<LoadedKey, String> {
    if let Some(m) = PRIVATE_JWK_MEMBERS.iter().find(|m| o.contains_key(**m)) {
        return Err(format!(
            "the JWK holds the private member \"{m}\"; only a public key may be sent"
        ));
    }
    if alg.is_hmac() {
        return Err(format!("{} has no public key", alg.as_str()));
    }
    let material = key_from_jwk(o, alg, false)?.to_material()?;
    load_key(alg, &material)
}
