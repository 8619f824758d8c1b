//! HMAC secrets, and the key material that must never be taken for one.

use super::*;

pub(super) fn hmac_material(alg: Alg, secret: Vec<u8>) -> Result<KeyMaterial, String> {
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

// ---------------------------------------------------------------------------------------------
// Key material offered as an HMAC secret

pub(super) const ARMOUR: &str =
    "The text has PEM armour (-----BEGIN or -----END), so it is a key or \
    certificate and not an HMAC secret: anyone holding the public key could sign tokens with it. \
    Register the key under an RS*, PS*, ES* or EdDSA algorithm instead.";
pub(super) const SSH_KEY: &str =
    "The text is an SSH key, not an HMAC secret: anyone holding the public key \
    could sign tokens with it.";
pub(super) const JSON_TEXT: &str =
    "The text is a JSON object or array (such as a JWK without \"kty\", a JWKS \
    or the output of token_store.jwks()), not an HMAC secret: give the secret itself, or an oct \
    JWK with \"kty\": \"oct\".";
pub(super) const DER_KEY: &str =
    "The text is base64 or hex of a DER key structure (SubjectPublicKeyInfo, \
    PKCS#1, PKCS#8 or similar), not an HMAC secret: anyone holding the public key could sign \
    tokens with it.";
pub(super) const EC_POINT: &str =
    "The text is base64 or hex of an elliptic-curve public key, not an HMAC \
    secret: anyone holding it could sign tokens with it.";

/// Names that start an OpenSSH public key line (RFC 4253, RFC 5656, OpenSSH's sk- and cert types).
pub(super) const SSH_KEY_TYPES: [&str; 7] = [
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
pub(super) fn not_a_secret(text: &str) -> Option<&'static str> {
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
pub(super) fn decoded_forms(text: &str) -> Vec<Zeroizing<Vec<u8>>> {
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
        if let Ok(bytes) = base16ct::mixed::decode_vec(&compact[..]) {
            out.push(Zeroizing::new(bytes));
        }
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
pub(super) fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
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
pub(super) fn key_bytes(bytes: &[u8]) -> Option<&'static str> {
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
