//! The shared vocabulary: the JWS algorithms the contract accepts and the reasons a token is
//! refused.

use jsonwebtoken::Algorithm;

/// The JWS algorithms the contract accepts. `none` is not one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    /// Every accepted algorithm, in the contract's order.
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// Exact, case-sensitive match of a header or argument `alg`.
    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The registered JWA name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// HMAC algorithms use one shared secret to sign and verify.
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }

    /// Smallest HMAC secret RFC 7518 section 3.2 allows: the hash output size.
    pub fn min_secret_bytes(self) -> usize {
        match self {
            Alg::HS384 => 48,
            Alg::HS512 => 64,
            _ => 32,
        }
    }

    pub(crate) fn to_jsonwebtoken(self) -> Algorithm {
        match self {
            Alg::HS256 => Algorithm::HS256,
            Alg::HS384 => Algorithm::HS384,
            Alg::HS512 => Algorithm::HS512,
            Alg::RS256 => Algorithm::RS256,
            Alg::RS384 => Algorithm::RS384,
            Alg::RS512 => Algorithm::RS512,
            Alg::PS256 => Algorithm::PS256,
            Alg::PS384 => Algorithm::PS384,
            Alg::PS512 => Algorithm::PS512,
            Alg::ES256 => Algorithm::ES256,
            Alg::ES384 => Algorithm::ES384,
            Alg::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// Why a token was refused. The strings are the contract's reason codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    BadSignature,
    UnknownKey,
    AlgorithmNotAllowed,
    MissingExp,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    Revoked,
    SubjectRevoked,
    NotStored,
    Malformed,
    SessionEnded,
    RefreshReused,
    SessionExpired,
    SessionIdle,
    IssuerUnavailable,
    DpopInvalid,
    DpopReplayed,
    DpopStale,
    DpopHtmMismatch,
    DpopHtuMismatch,
    DpopAthMismatch,
    DpopNonceMismatch,
    DpopRequired,
    DpopMismatch,
}

impl Reason {
    /// Every reason, in a fixed order (also the order of the outcome counters).
    pub const ALL: [Reason; 26] = [
        Reason::BadSignature,
        Reason::UnknownKey,
        Reason::AlgorithmNotAllowed,
        Reason::MissingExp,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongAudience,
        Reason::WrongIssuer,
        Reason::Revoked,
        Reason::SubjectRevoked,
        Reason::NotStored,
        Reason::Malformed,
        Reason::SessionEnded,
        Reason::RefreshReused,
        Reason::SessionExpired,
        Reason::SessionIdle,
        Reason::IssuerUnavailable,
        Reason::DpopInvalid,
        Reason::DpopReplayed,
        Reason::DpopStale,
        Reason::DpopHtmMismatch,
        Reason::DpopHtuMismatch,
        Reason::DpopAthMismatch,
        Reason::DpopNonceMismatch,
        Reason::DpopRequired,
        Reason::DpopMismatch,
    ];

    /// The contract's reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadSignature => "bad_signature",
            Reason::UnknownKey => "unknown_key",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::MissingExp => "missing_exp",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongAudience => "wrong_audience",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::Revoked => "revoked",
            Reason::SubjectRevoked => "subject_revoked",
            Reason::NotStored => "not_stored",
            Reason::Malformed => "malformed",
            Reason::SessionEnded => "session_ended",
            Reason::RefreshReused => "refresh_reused",
            Reason::SessionExpired => "session_expired",
            Reason::SessionIdle => "session_idle",
            Reason::IssuerUnavailable => "issuer_unavailable",
            Reason::DpopInvalid => "dpop_invalid",
            Reason::DpopReplayed => "dpop_replayed",
            Reason::DpopStale => "dpop_stale",
            Reason::DpopHtmMismatch => "dpop_htm_mismatch",
            Reason::DpopHtuMismatch => "dpop_htu_mismatch",
            Reason::DpopAthMismatch => "dpop_ath_mismatch",
            Reason::DpopNonceMismatch => "dpop_nonce_mismatch",
            Reason::DpopRequired => "dpop_required",
            Reason::DpopMismatch => "dpop_mismatch",
        }
    }

    /// Position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).expect("listed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_names_are_exact() {
        for a in Alg::ALL {
            assert_eq!(Alg::parse(a.as_str()), Some(a));
        }
        for bad in ["none", "None", "hs256", "HS256 ", "RS1", "ES512", ""] {
            assert_eq!(Alg::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn reasons_are_the_contract_codes() {
        let names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        // CONTRACT.md's list, in its order (the order of the stats' outcomes)
        assert_eq!(
            names,
            [
                "bad_signature",
                "unknown_key",
                "algorithm_not_allowed",
                "missing_exp",
                "expired",
                "not_yet_valid",
                "wrong_audience",
                "wrong_issuer",
                "revoked",
                "subject_revoked",
                "not_stored",
                "malformed",
                "session_ended",
                "refresh_reused",
                "session_expired",
                "session_idle",
                "issuer_unavailable",
                "dpop_invalid",
                "dpop_replayed",
                "dpop_stale",
                "dpop_htm_mismatch",
                "dpop_htu_mismatch",
                "dpop_ath_mismatch",
                "dpop_nonce_mismatch",
                "dpop_required",
                "dpop_mismatch",
            ]
        );
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{names:?} has a duplicate");
        }
    }
}
