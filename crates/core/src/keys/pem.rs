//! PEM armour: the labels accepted and the DER inside each.

use super::*;

pub(super) fn key_from_pem(alg: Alg, text: &str) -> Result<Key, String> {
    let blocks = ::pem::parse_many(text).map_err(|_| "the PEM text is malformed".to_owned())?;
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
