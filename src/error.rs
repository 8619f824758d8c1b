//! One error type for the whole extension, mapped in one place to SQLSTATE, message, detail and hint.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

use token_store_core::alg::Reason;

/// Everything a SQL function can refuse with.
#[derive(Debug)]
pub enum TsError {
    /// Not a JWT at all (22P02).
    InvalidToken(String),
    /// A well-formed token that fails verification (28000).
    Rejected(Reason),
    /// The same, with a DETAIL naming the problem (a DPoP proof's, which quotes nothing of it).
    RejectedBecause { reason: Reason, detail: String },
    /// A bad argument: unknown alg, bad key material, bad JWKS (22023).
    InvalidParameter {
        message: String,
        detail: Option<String>,
    },
    /// No encryption key configured (55000).
    NoEncryptionKey(String),
    /// The object is in the wrong state for this call, e.g. no key can sign (55000).
    NotInPrerequisiteState {
        message: String,
        hint: Option<String>,
    },
    /// A ciphertext that does not open: tampered row or unknown key (XX001).
    Undecryptable { what: String, fingerprint: String },
    /// A write attempted on a hot standby (25006).
    ReadOnly(&'static str),
    /// The object already exists, e.g. a kid (42710).
    Duplicate(String),
    /// No such object, e.g. an unknown kid (42704).
    UndefinedObject(String),
    /// A text argument longer than its documented limit (22001).
    TooLong { message: String, detail: String },
    /// Input nested too deeply to be processed (54001).
    TooComplex { message: String, detail: String },
    /// An SPI failure we did not expect (XX000).
    Internal(String),
}

/// Shorthand for results of the extension's functions.
pub type TsResult<T> = Result<T, TsError>;

impl TsError {
    /// Bad argument with a detail line.
    pub fn param(message: impl Into<String>, detail: impl Into<String>) -> Self {
        TsError::InvalidParameter {
            message: message.into(),
            detail: Some(detail.into()),
        }
    }

    /// Raise as a PostgreSQL ERROR. Never returns. LOCATION names the caller.
    #[track_caller]
    pub fn raise(self) -> ! {
        use PgSqlErrorCode::*;
        let (code, message, detail, hint) = match self {
            TsError::InvalidToken(why) => {
                (ERRCODE_INVALID_TEXT_REPRESENTATION, format!("invalid token: {why}"), None, None)
            }
            TsError::Rejected(r) => (
                ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                format!("token rejected: {}", r.as_str()),
                None,
                None,
            ),
            TsError::RejectedBecause { reason, detail } => (
                ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                format!("token rejected: {}", reason.as_str()),
                Some(detail),
                None,
            ),
            TsError::InvalidParameter { message, detail } => {
                (ERRCODE_INVALID_PARAMETER_VALUE, message, detail, None)
            }
            TsError::NoEncryptionKey(why) => (
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "no encryption key is configured".to_owned(),
                Some(why),
                Some(
                    "Set token_store.encryption_key (32 bytes as base64 or hex) or \
                     token_store.encryption_key_file in postgresql.conf, then reload."
                        .to_owned(),
                ),
            ),
            TsError::NotInPrerequisiteState { message, hint } => {
                (ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, message, None, hint)
            }
            TsError::Undecryptable { what, fingerprint } => (
                ERRCODE_DATA_CORRUPTED,
                format!("cannot decrypt {what}"),
                Some(format!(
                    "The ciphertext was altered, moved from another row, or made under encryption key \
                     {fingerprint}, which is neither the current nor a previous key."
                )),
                Some("Check token_store.encryption_key and token_store.previous_encryption_keys.".to_owned()),
            ),
            TsError::ReadOnly(what) => (
                ERRCODE_READ_ONLY_SQL_TRANSACTION,
                format!("cannot execute {what} on a hot standby"),
                None,
                Some("Write tokens on the primary; revocations reach replicas through replication.".to_owned()),
            ),
            TsError::Duplicate(message) => (ERRCODE_DUPLICATE_OBJECT, message, None, None),
            TsError::UndefinedObject(message) => (ERRCODE_UNDEFINED_OBJECT, message, None, None),
            TsError::TooLong { message, detail } => {
                (ERRCODE_STRING_DATA_RIGHT_TRUNCATION, message, Some(detail), None)
            }
            TsError::TooComplex { message, detail } => {
                (ERRCODE_STATEMENT_TOO_COMPLEX, message, Some(detail), None)
            }
            TsError::Internal(message) => (ERRCODE_INTERNAL_ERROR, message, None, None),
        };
        // The domain marks the report as ours for the log hook (logging.rs), which keeps the
        // statement, and so any key, token or claims in it, out of the server log.
        let mut report =
            ErrorReport::new(code, message, "token_store").set_domain(crate::logging::DOMAIN);
        if let Some(d) = detail {
            report = report.set_detail(sentence(d));
        }
        if let Some(h) = hint {
            report = report.set_hint(sentence(h));
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

/// Report a WARNING with its detail and hint (sentences), and go on.
#[track_caller]
pub fn warning(message: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_WARNING,
        message.into(),
        "token_store",
    )
    .set_detail(sentence(detail.into()))
    .set_hint(sentence(hint.into()))
    .report(PgLogLevel::WARNING);
}

/// A DETAIL or HINT as PostgreSQL writes them: a capitalised sentence ending with a period. The
/// core crate's reasons are lowercase clauses so that they compose ("the JWKS key \"a\": ..."); they
/// become sentences here, at the one place they leave for a client.
pub fn sentence(mut text: String) -> String {
    if let Some(first) = text.chars().next() {
        if first.is_ascii_lowercase() {
            text.replace_range(..1, &first.to_ascii_uppercase().to_string());
        }
    }
    if !text.is_empty() && !text.ends_with(['.', '?', '!']) {
        text.push('.');
    }
    text
}

impl From<pgrx::spi::SpiError> for TsError {
    fn from(e: pgrx::spi::SpiError) -> Self {
        TsError::Internal(format!("SPI failed: {e}"))
    }
}

/// Unwrap a result or raise its error: the one way API wrappers leave Rust.
pub trait OrRaise<T> {
    /// The value, or an ERROR.
    #[track_caller]
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for TsResult<T> {
    #[track_caller]
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.raise(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sentence;

    #[test]
    fn clauses_become_sentences() {
        assert_eq!(
            sentence("the JWK has no \"k\" member".into()),
            "The JWK has no \"k\" member."
        );
        assert_eq!(
            sentence("HS256 needs 32 bytes".into()),
            "HS256 needs 32 bytes."
        );
        assert_eq!(sentence("Already one.".into()), "Already one.");
        assert_eq!(sentence(String::new()), "");
        assert_eq!(sentence("é is kept".into()), "é is kept.");
    }
}
