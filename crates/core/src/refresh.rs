//! Opaque refresh tokens: made from 256 random bits, recognised by a fixed prefix, stored only as
//! their SHA-256.
//!
//! A refresh token is `tsr_` followed by 43 base64url characters (32 bytes, no padding). It is
//! never a JWT: it carries nothing, and the database looks it up by hash.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The prefix every refresh token starts with (secret scanners can recognise it).
pub const PREFIX: &str = "tsr_";
/// Random bytes in a refresh token.
pub const RANDOM_BYTES: usize = 32;
/// Length of a refresh token in characters: the prefix and 43 base64url characters.
pub const TOKEN_LEN: usize = PREFIX.len() + 43;

/// A fresh refresh token and its SHA-256, the only part that is stored.
pub fn make() -> (String, [u8; 32]) {
    let mut random = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut random).expect("the OS random source failed");
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    );
    let hash = hash(&token);
    (token, hash)
}

/// SHA-256 of the token text.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The hash of `token` when it has the shape of a refresh token (prefix, length, alphabet, and the
/// canonical encoding of 32 bytes); `None` otherwise, before any database work.
pub fn parse(token: &str) -> Option<[u8; 32]> {
    let body = token.strip_prefix(PREFIX)?;
    if token.len() != TOKEN_LEN {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .ok()?;
    (bytes.len() == RANDOM_BYTES).then(|| hash(token))
}

/// Compare two hashes in constant time.
pub fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_tokens_parse_to_their_hash() {
        let (token, h) = make();
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(token.starts_with(PREFIX));
        assert!(token[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(parse(&token), Some(h));
        assert_eq!(h, hash(&token));
        assert!(same_hash(&h, &hash(&token)));
    }

    #[test]
    fn tokens_are_random() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(make().0));
        }
    }

    #[test]
    fn hash_is_sha256_of_the_text() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1
        let h = hash("abc");
        assert_eq!(h[..4], [0xba, 0x78, 0x16, 0xbf], "not SHA-256: {h:02x?}");
        assert_eq!(h[28..], [0xf2, 0x00, 0x15, 0xad]);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let (token, _) = make();
        for n in 0..token.len() {
            assert_eq!(parse(&token[..n]), None, "prefix of {n} chars");
        }
        assert_eq!(parse(&format!("{token}A")), None);
        assert_eq!(parse(&token.replacen(PREFIX, "tsx_", 1)), None);
        assert_eq!(parse(&token.replacen(PREFIX, "TSR_", 1)), None);
        let mut bad = token.clone().into_bytes();
        bad[10] = b'+';
        assert_eq!(parse(&String::from_utf8(bad).unwrap()), None);
        // padding and a non-canonical last character (its low bits must be zero)
        let body = &token[PREFIX.len()..TOKEN_LEN - 1];
        let last = token.as_bytes()[TOKEN_LEN - 1];
        let noncanonical = ['B', 'C', 'D', 'F']
            .into_iter()
            .find(|c| *c as u8 != last)
            .unwrap();
        let forged = format!("{PREFIX}{body}{noncanonical}");
        if forged != token {
            // only 'A','E','I',...: 43 chars of base64 carry 258 bits, the last two must be 0
            assert_eq!(parse(&forged), None);
        }
        assert_eq!(parse(""), None);
        assert_eq!(parse(&"a".repeat(100_000)), None);
        assert_eq!(parse("tsr_\0\0\0"), None);
    }

    #[test]
    fn a_flipped_bit_gives_another_hash() {
        let (token, h) = make();
        let mut bytes = token.into_bytes();
        bytes[20] ^= 0x01;
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(!same_hash(&h, &hash(&flipped)));
    }
}
