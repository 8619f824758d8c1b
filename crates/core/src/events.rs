//! Revocation events: the JSON payload of the NOTIFY that announces a committed revocation,
//! session end or key state change. It names what changed and never carries a token, a refresh
//! token, another claim or key material.

use serde_json::{Map, Value};

/// Largest payload NOTIFY takes is 7999 bytes; ours stays well under it whatever the input.
pub const MAX_PAYLOAD_BYTES: usize = 7999;
/// Longest member value (as JSON text) a payload carries; a longer `jti`, `sub` or `kid` is left
/// out and named in the payload's `omitted` member. Three such members and the rest stay under
/// [`MAX_PAYLOAD_BYTES`].
pub const MAX_MEMBER_BYTES: usize = 2000;

/// One change, as announced and as `revocations_since` lists it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// `token_revoked`, `subject_revoked`, `session_ended`, `refresh_reused`, `key_<state>`.
    pub event: String,
    pub token_id: Option<String>,
    pub jti: Option<String>,
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub kid: Option<String>,
    /// When it happened: microseconds since the Unix epoch.
    pub at_unix_micros: i64,
}

/// The event name of a session's end, from the reason it was ended with: reuse detection is
/// told apart (a refresh token was stolen or leaked), every other end is `session_ended`.
pub fn session_event(end_reason: Option<&str>) -> &'static str {
    match end_reason {
        Some("refresh_reused") => "refresh_reused",
        _ => "session_ended",
    }
}

/// The event name of a key's new state.
pub fn key_event(state: &str) -> String {
    format!("key_{state}")
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (RFC 3339, UTC) of a Unix time in microseconds.
pub fn rfc3339_micros(unix_micros: i64) -> String {
    let secs = unix_micros.div_euclid(1_000_000);
    let micros = unix_micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The NOTIFY payload of `e`: a JSON object of `event`, `at` and the members that apply. A `jti`,
/// `sub` or `kid` longer than [`MAX_MEMBER_BYTES`] as JSON is left out, and `omitted` lists the
/// names left out (the listener finds the whole row with `revocations_since`).
pub fn payload(e: &Event) -> String {
    let mut o = Map::new();
    o.insert("event".into(), Value::from(e.event.as_str()));
    let mut omitted = Vec::new();
    let members = [
        ("token_id", &e.token_id),
        ("jti", &e.jti),
        ("sub", &e.sub),
        ("sid", &e.sid),
        ("kid", &e.kid),
    ];
    for (name, value) in members {
        let Some(v) = value else { continue };
        let v = Value::from(v.as_str());
        if v.to_string().len() > MAX_MEMBER_BYTES {
            omitted.push(Value::from(name));
        } else {
            o.insert(name.into(), v);
        }
    }
    o.insert("at".into(), Value::from(rfc3339_micros(e.at_unix_micros)));
    if !omitted.is_empty() {
        o.insert("omitted".into(), Value::Array(omitted));
    }
    let text = Value::Object(o).to_string();
    debug_assert!(text.len() <= MAX_PAYLOAD_BYTES);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(1_767_225_600_123_456),
            "2026-01-01T00:00:00.123456Z"
        );
        assert_eq!(
            rfc3339_micros(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            rfc3339_micros(253_402_300_799_999_999),
            "9999-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            rfc3339_micros(4_107_542_400_000_001),
            "2100-03-01T00:00:00.000001Z"
        );
    }

    #[test]
    fn payload_has_the_members_that_apply() {
        let e = Event {
            event: "token_revoked".into(),
            token_id: Some("7f8e3a52-4c3b-4a43-9d51-2f1f9d7e6a10".into()),
            jti: Some("j1".into()),
            sub: Some("alice".into()),
            kid: Some("k1".into()),
            at_unix_micros: 1_767_225_600_000_000,
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&payload(&e)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event": "token_revoked", "token_id": "7f8e3a52-4c3b-4a43-9d51-2f1f9d7e6a10",
                "jti": "j1", "sub": "alice", "kid": "k1", "at": "2026-01-01T00:00:00.000000Z"})
        );
    }

    #[test]
    fn long_members_are_omitted_and_named() {
        // the worst case: every free-text member as long as a token may make it, all of it escaped
        let huge = "\u{1}".repeat(16_384);
        let e = Event {
            event: "token_revoked".into(),
            token_id: Some("7f8e3a52-4c3b-4a43-9d51-2f1f9d7e6a10".into()),
            jti: Some(huge.clone()),
            sub: Some(huge.clone()),
            kid: Some(huge),
            sid: None,
            at_unix_micros: 0,
        };
        let text = payload(&e);
        assert!(text.len() <= MAX_PAYLOAD_BYTES, "{}", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["omitted"], serde_json::json!(["jti", "sub", "kid"]));
        assert!(v.get("jti").is_none() && v.get("sub").is_none());
        assert_eq!(v["token_id"], "7f8e3a52-4c3b-4a43-9d51-2f1f9d7e6a10");
        // just under the bound is kept, just over is not
        let fits = "a".repeat(MAX_MEMBER_BYTES - 2);
        let over = "a".repeat(MAX_MEMBER_BYTES - 1);
        let e = Event {
            event: "subject_revoked".into(),
            sub: Some(fits.clone()),
            jti: Some(over),
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&payload(&e)).unwrap();
        assert_eq!(v["sub"], fits.as_str());
        assert_eq!(v["omitted"], serde_json::json!(["jti"]));
        // three members at the bound, escaped: still under the NOTIFY limit
        let escaped = "\"".repeat((MAX_MEMBER_BYTES - 2) / 2);
        let e = Event {
            event: "token_revoked".into(),
            token_id: Some("x".repeat(36)),
            jti: Some(escaped.clone()),
            sub: Some(escaped.clone()),
            kid: Some(escaped),
            sid: Some("y".repeat(36)),
            at_unix_micros: 0,
        };
        assert!(payload(&e).len() <= MAX_PAYLOAD_BYTES);
    }

    #[test]
    fn event_names() {
        assert_eq!(session_event(Some("refresh_reused")), "refresh_reused");
        assert_eq!(session_event(Some("logout")), "session_ended");
        assert_eq!(session_event(None), "session_ended");
        assert_eq!(key_event("retired"), "key_retired");
    }
}
