//! Claim policy (exp, nbf, iat, aud, iss; RFC 7519 section 4.1) and the strict JSON check a
//! token's header and claims pass before serde_json reads them (no duplicate members, no NUL,
//! bounded depth and number length).

use serde_json::{Map, Value};

use crate::alg::Reason;

/// Smallest and largest NumericDate we accept: years 1 to 9999, which PostgreSQL's
/// timestamptz also holds, so every accepted time can be stored.
pub const MIN_NUMERIC_DATE: f64 = -62_135_596_800.0;
/// See [`MIN_NUMERIC_DATE`].
pub const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// The registered claims, pulled out of the payload once and type-checked.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    pub iat: Option<f64>,
    pub sub: Option<String>,
    pub iss: Option<String>,
    pub jti: Option<String>,
    pub aud: Vec<String>,
    /// `sid` when it is a string (a session's tokens carry it); not a registered claim.
    pub sid: Option<String>,
    /// Set when `cnf` is an object with a `jkt` member (RFC 9449 section 6.1: the token is bound
    /// to a DPoP key): that member when it is a string, else `Some(None)`.
    pub cnf_jkt: Option<Option<String>>,
}

/// Deepest nesting of objects and arrays accepted in a token's header or claims; the top-level
/// object is level 1. Checked by a scan without recursion before serde_json, whose own recursion
/// limit (128) is never reached.
pub const MAX_JSON_DEPTH: usize = 64;

/// Most decimal digits a number in a token's header or claims may have before, and after, the
/// decimal point when written out in full (`1e999` has 1000 before it, `1e-1000` 1000 after it).
/// Numbers are kept exactly as written (PostgreSQL's `numeric` holds these, and far more), and the
/// bound keeps a short token from turning into megabytes of digits.
pub const MAX_NUMBER_DIGITS: i64 = 1000;

/// Whether `text` nests arrays and objects no deeper than `limit` levels (the outermost counts as
/// level 1). A linear scan without recursion that skips the contents of strings; it does not check
/// that `text` is valid JSON, so it suits any JSON text, a `jsonb` value's output included.
pub fn json_depth_ok(text: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// What makes a JSON text unacceptable in a token (see [`check_json`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonProblem {
    /// Not JSON; the byte offset where the scan stopped.
    Syntax(usize),
    /// Objects and arrays nested more than [`MAX_JSON_DEPTH`] levels deep.
    TooDeep,
    /// Two members of one object with the same name (after unescaping), at any depth.
    DuplicateMember,
    /// A string or member name holding U+0000, which PostgreSQL text and jsonb cannot hold.
    Nul,
    /// A number with more than [`MAX_NUMBER_DIGITS`] digits before or after the decimal point.
    Number,
}

impl std::fmt::Display for JsonProblem {
    /// A predicate for "header ..." / "payload ...", lowercase, without quoting the input.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonProblem::Syntax(at) => {
                write!(f, "is not a valid JSON object: syntax error at byte {at}")
            }
            JsonProblem::TooDeep => write!(f, "is nested more than {MAX_JSON_DEPTH} levels deep"),
            JsonProblem::DuplicateMember => f.write_str("has a duplicate member name"),
            JsonProblem::Nul => f.write_str(
                "has a NUL character (\\u0000) in a string or member name, which PostgreSQL cannot store",
            ),
            JsonProblem::Number => write!(
                f,
                "has a number with more than {MAX_NUMBER_DIGITS} digits before or after the decimal point"
            ),
        }
    }
}

enum Frame {
    Array,
    Object(std::collections::HashSet<String>),
}

/// A strict, non-recursive check of a JSON text (RFC 8259) as a token may carry it: nesting at most
/// [`MAX_JSON_DEPTH`] levels, no duplicate member names at any depth, no NUL character in any
/// string or member name, every number within [`MAX_NUMBER_DIGITS`]. Member names are compared
/// unescaped, so `"a"` and `"\u0061"` are duplicates (RFC 7515 section 5.2 lets a JWS reader
/// refuse duplicates; refusing them means no two readers see different claims). Any JSON value
/// passes, not only objects.
pub fn check_json(text: &str) -> Result<(), JsonProblem> {
    let b = text.as_bytes();
    let mut i = 0usize;
    let mut stack: Vec<Frame> = Vec::new();
    loop {
        // a value starts at i
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'{') | Some(b'[') => {
                let object = b[i] == b'{';
                i = skip_ws(b, i + 1);
                if stack.len() >= MAX_JSON_DEPTH {
                    return Err(JsonProblem::TooDeep);
                }
                let close = if object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    i += 1;
                } else if object {
                    let mut names = std::collections::HashSet::new();
                    i = member_name(b, i, &mut names)?;
                    stack.push(Frame::Object(names));
                    continue;
                } else {
                    stack.push(Frame::Array);
                    continue;
                }
            }
            Some(b'"') => i = string(b, i, None)?,
            Some(b'-' | b'0'..=b'9') => i = number(b, i)?,
            Some(b't') => i = literal(b, i, b"true")?,
            Some(b'f') => i = literal(b, i, b"false")?,
            Some(b'n') => i = literal(b, i, b"null")?,
            _ => return Err(JsonProblem::Syntax(i)),
        }
        // a value ended before i: close what it completes, up to the next value
        loop {
            i = skip_ws(b, i);
            match (stack.last_mut(), b.get(i)) {
                (None, None) => return Ok(()),
                (None, Some(_)) => return Err(JsonProblem::Syntax(i)),
                (Some(Frame::Array), Some(b',')) => {
                    i += 1;
                    break;
                }
                (Some(Frame::Array), Some(b']')) | (Some(Frame::Object(_)), Some(b'}')) => {
                    stack.pop();
                    i += 1;
                }
                (Some(Frame::Object(names)), Some(b',')) => {
                    i = member_name(b, skip_ws(b, i + 1), names)?;
                    break;
                }
                _ => return Err(JsonProblem::Syntax(i)),
            }
        }
    }
}

pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

pub(crate) fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, JsonProblem> {
    if b[i..].starts_with(word) {
        Ok(i + word.len())
    } else {
        Err(JsonProblem::Syntax(i))
    }
}

/// A member name at `i`, then its colon; refuses a name already in `names`. Returns where the
/// member's value starts.
fn member_name(
    b: &[u8],
    i: usize,
    names: &mut std::collections::HashSet<String>,
) -> Result<usize, JsonProblem> {
    if b.get(i) != Some(&b'"') {
        return Err(JsonProblem::Syntax(i));
    }
    let mut name = Vec::new();
    let i = skip_ws(b, string(b, i, Some(&mut name))?);
    if b.get(i) != Some(&b':') {
        return Err(JsonProblem::Syntax(i));
    }
    // The input is UTF-8 and escapes decode to whole characters, so this cannot fail.
    let name = String::from_utf8(name).map_err(|_| JsonProblem::Syntax(i))?;
    if !names.insert(name) {
        return Err(JsonProblem::DuplicateMember);
    }
    Ok(i + 1)
}

fn hex4(b: &[u8], i: usize) -> Result<u32, JsonProblem> {
    let digits = b.get(i..i + 4).ok_or(JsonProblem::Syntax(i))?;
    digits.iter().try_fold(0u32, |acc, d| {
        let v = (*d as char).to_digit(16).ok_or(JsonProblem::Syntax(i))?;
        Ok(acc * 16 + v)
    })
}

/// The string starting at `i` (its opening quote); returns the index after its closing quote.
/// With `out`, its unescaped UTF-8 is appended there.
pub(crate) fn string(
    b: &[u8],
    mut i: usize,
    mut out: Option<&mut Vec<u8>>,
) -> Result<usize, JsonProblem> {
    i += 1;
    loop {
        let c = *b.get(i).ok_or(JsonProblem::Syntax(i))?;
        match c {
            b'"' => return Ok(i + 1),
            0x00..=0x1f => return Err(JsonProblem::Syntax(i)),
            b'\\' => {
                let e = *b.get(i + 1).ok_or(JsonProblem::Syntax(i))?;
                let ch = match e {
                    b'"' | b'\\' | b'/' => e as char,
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let hi = hex4(b, i + 2)?;
                        i += 4;
                        let code = match hi {
                            0xd800..=0xdbff => {
                                // a high surrogate must be followed by an escaped low one
                                if b.get(i + 2..i + 4) != Some(b"\\u") {
                                    return Err(JsonProblem::Syntax(i + 2));
                                }
                                let lo = hex4(b, i + 4)?;
                                if !(0xdc00..=0xdfff).contains(&lo) {
                                    return Err(JsonProblem::Syntax(i + 2));
                                }
                                i += 6;
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            }
                            0xdc00..=0xdfff => return Err(JsonProblem::Syntax(i)),
                            _ => hi,
                        };
                        if code == 0 {
                            return Err(JsonProblem::Nul);
                        }
                        char::from_u32(code).ok_or(JsonProblem::Syntax(i))?
                    }
                    _ => return Err(JsonProblem::Syntax(i + 1)),
                };
                if let Some(out) = out.as_deref_mut() {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                i += 2;
            }
            _ => {
                if let Some(out) = out.as_deref_mut() {
                    out.push(c);
                }
                i += 1;
            }
        }
    }
}

/// The number starting at `i`; returns the index after it. Refuses one with more than
/// [`MAX_NUMBER_DIGITS`] digits before or after the point when written out in full, and any
/// exponent beyond one million (PostgreSQL's `numeric` refuses even a zero past about 2^30).
pub(crate) fn number(b: &[u8], mut i: usize) -> Result<usize, JsonProblem> {
    let digits = |b: &[u8], from: usize| {
        let mut j = from;
        while matches!(b.get(j), Some(b'0'..=b'9')) {
            j += 1;
        }
        j
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    let int_end = digits(b, i);
    if int_end == int_start || (b[int_start] == b'0' && int_end > int_start + 1) {
        return Err(JsonProblem::Syntax(int_start));
    }
    i = int_end;
    let (mut frac_start, mut frac_end) = (i, i);
    if b.get(i) == Some(&b'.') {
        frac_start = i + 1;
        frac_end = digits(b, frac_start);
        if frac_end == frac_start {
            return Err(JsonProblem::Syntax(frac_start));
        }
        i = frac_end;
    }
    let mut exponent: i64 = 0;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let negative = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let exp_end = digits(b, i);
        if exp_end == i {
            return Err(JsonProblem::Syntax(i));
        }
        for d in &b[i..exp_end] {
            // saturate: anything this large is refused below
            exponent = (exponent * 10 + i64::from(d - b'0')).min(1 << 40);
        }
        if negative {
            exponent = -exponent;
        }
        i = exp_end;
    }
    if exponent.abs() > 1_000_000 {
        return Err(JsonProblem::Number);
    }
    let int = &b[int_start..int_end];
    let frac = &b[frac_start..frac_end];
    let scale = frac.len() as i64 - exponent;
    if scale > MAX_NUMBER_DIGITS {
        return Err(JsonProblem::Number);
    }
    // the power of ten of the first significant digit, if the number is not zero
    let lead = if int != b"0" {
        Some(int.len() as i64 - 1 + exponent)
    } else {
        frac.iter()
            .position(|d| *d != b'0')
            .map(|k| exponent - k as i64 - 1)
    };
    if lead.is_some_and(|p| p >= MAX_NUMBER_DIGITS) {
        return Err(JsonProblem::Number);
    }
    Ok(i)
}

fn numeric_date(v: Option<&Value>, name: &str) -> Result<Option<f64>, String> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => {
            // numbers are kept exact (arbitrary precision); as_f64 is None beyond f64's range
            let f = n
                .as_f64()
                .ok_or_else(|| format!("{name} is out of range"))?;
            if !f.is_finite() || !(MIN_NUMERIC_DATE..=MAX_NUMERIC_DATE).contains(&f) {
                return Err(format!("{name} is out of range"));
            }
            Ok(Some(f))
        }
        Some(_) => Err(format!("{name} is not a number")),
    }
}

// PostgreSQL text cannot hold NUL, and these strings are looked up and stored as text.
pub(crate) fn string_claim(v: Option<&Value>, name: &str) -> Result<Option<String>, String> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if s.contains('\0') => {
            Err(format!("{name} contains a NUL character"))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

/// Longest `sub`, `iss`, `jti` and `sid` accepted, in bytes of UTF-8. These claims are stored
/// and looked up as text: `sub` in the btree indexes `tokens_subject_idx`,
/// `subject_revocations_pkey` and `sessions_subject_idx`, whose entries cannot exceed about 2.7 kB
/// (a third of an 8 kB page). A token whose claims fit the bound can always be stored, revoked and
/// revoked by subject; one that does not is `malformed` everywhere, so none verifies unrevocably.
pub const MAX_ID_CLAIM_BYTES: usize = 1024;

/// Refuse a payload whose `sub`, `iss`, `jti` or `sid` is a string longer than
/// [`MAX_ID_CLAIM_BYTES`] (their types are checked elsewhere).
pub fn check_id_claim_lengths(payload: &Map<String, Value>) -> Result<(), String> {
    for name in ID_CLAIMS {
        if let Some(Value::String(s)) = payload.get(name) {
            check_id_claim_length(name, s)?;
        }
    }
    Ok(())
}

/// The claims [`check_id_claim_lengths`] bounds, in the order it checks them.
pub const ID_CLAIMS: [&str; 4] = ["sub", "iss", "jti", "sid"];

/// One claim of [`ID_CLAIMS`], given as its string value (the one-pass parser's form).
pub fn check_id_claim_length(name: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_ID_CLAIM_BYTES {
        return Err(format!(
            "{name} is {} bytes, longer than {MAX_ID_CLAIM_BYTES}",
            value.len()
        ));
    }
    Ok(())
}

/// Pull the registered claims out of a payload object, checking their types.
pub fn registered_claims(payload: &Map<String, Value>) -> Result<Claims, String> {
    check_id_claim_lengths(payload)?;
    let aud = match payload.get("aud") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "aud is not a string or an array of strings".to_owned())
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("aud is not a string or an array of strings".into()),
    };
    Ok(Claims {
        exp: numeric_date(payload.get("exp"), "exp")?,
        nbf: numeric_date(payload.get("nbf"), "nbf")?,
        iat: numeric_date(payload.get("iat"), "iat")?,
        sub: string_claim(payload.get("sub"), "sub")?,
        iss: string_claim(payload.get("iss"), "iss")?,
        jti: string_claim(payload.get("jti"), "jti")?,
        aud,
        sid: payload
            .get("sid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        cnf_jkt: cnf_jkt(payload.get("cnf")),
    })
}

/// What [`Claims::cnf_jkt`] holds for a payload's `cnf` member.
pub fn cnf_jkt(cnf: Option<&Value>) -> Option<Option<String>> {
    match cnf {
        Some(Value::Object(o)) => o.get("jkt").map(|j| j.as_str().map(str::to_owned)),
        _ => None,
    }
}

/// What a verification demands of the claims.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// Seconds since the epoch.
    pub now: f64,
    /// Allowed clock skew in seconds.
    pub leeway: f64,
    /// `aud` the token must list, when set.
    pub audience: Option<&'a str>,
    /// `iss` the token must carry, when set.
    pub issuer: Option<&'a str>,
}

/// Time and audience/issuer checks (RFC 7519 section 4.1).
pub fn check_claims(c: &Claims, p: &Policy) -> Result<(), Reason> {
    let exp = c.exp.ok_or(Reason::MissingExp)?;
    if p.now >= exp + p.leeway {
        return Err(Reason::Expired);
    }
    if let Some(nbf) = c.nbf {
        if p.now + p.leeway < nbf {
            return Err(Reason::NotYetValid);
        }
    }
    if let Some(iat) = c.iat {
        if iat > p.now + p.leeway {
            return Err(Reason::NotYetValid);
        }
    }
    if let Some(aud) = p.audience {
        if !c.aud.iter().any(|a| a == aud) {
            return Err(Reason::WrongAudience);
        }
    }
    if let Some(iss) = p.issuer {
        if c.iss.as_deref() != Some(iss) {
            return Err(Reason::WrongIssuer);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::jws::parse;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    /// The policy most tests start from: no audience or issuer, 30 s leeway.
    pub(crate) fn policy(now: f64) -> Policy<'static> {
        Policy {
            now,
            leeway: 30.0,
            audience: None,
            issuer: None,
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let t = format!("{h}.{}.abc", URL_SAFE_NO_PAD.encode(deep));
        let err = parse(&t, usize::MAX).unwrap_err();
        assert!(err.contains("nested more than 64 levels deep"), "{err}");
    }

    /// `{"x":` + arrays so that the whole text is `levels` deep.
    fn nested(levels: usize) -> String {
        format!(
            "{{\"x\":{}1{}}}",
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    }

    fn token_of(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.abc",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    const HS: &str = r#"{"alg":"HS256"}"#;

    #[test]
    fn depth_limit() {
        assert_eq!(MAX_JSON_DEPTH, 64);
        for levels in [1, 2, MAX_JSON_DEPTH] {
            let text = nested(levels);
            assert!(json_depth_ok(&text, MAX_JSON_DEPTH), "{levels}");
            assert_eq!(check_json(&text), Ok(()), "{levels}");
            assert!(parse(&token_of(HS, &text), usize::MAX).is_ok(), "{levels}");
        }
        // past the limit, and on both sides of serde_json's own recursion limit (128)
        for levels in [MAX_JSON_DEPTH + 1, 127, 128, 129, 1000] {
            let text = nested(levels);
            assert!(!json_depth_ok(&text, MAX_JSON_DEPTH), "{levels}");
            assert_eq!(check_json(&text), Err(JsonProblem::TooDeep), "{levels}");
            let err = parse(&token_of(HS, &text), usize::MAX).unwrap_err();
            assert_eq!(err, "payload is nested more than 64 levels deep");
            let header = format!(
                r#"{{"alg":"HS256","x":{}1{}}}"#,
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            );
            let err = parse(&token_of(&header, r#"{"exp":1}"#), usize::MAX).unwrap_err();
            assert_eq!(err, "header is nested more than 64 levels deep");
        }
        // objects count like arrays; empty containers count; brackets in strings do not
        let at_limit = format!("{}{{}}{}", r#"{"a":"#.repeat(63), "}".repeat(63));
        assert_eq!(check_json(&at_limit), Ok(()));
        let too_deep = format!("{}{{}}{}", r#"{"a":"#.repeat(64), "}".repeat(64));
        assert_eq!(check_json(&too_deep), Err(JsonProblem::TooDeep));
        assert!(!json_depth_ok(&too_deep, 64) && json_depth_ok(&too_deep, 65));
        let quoted = format!(r#"{{"s":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(json_depth_ok(&quoted, 1));
        assert_eq!(check_json(&quoted), Ok(()));
        // the scan is linear, not recursive: a million levels cost nothing
        assert!(!json_depth_ok(&"[".repeat(1_000_000), 64));
        assert!(json_depth_ok(&"[]".repeat(1_000_000), 1));
    }

    #[test]
    fn nul_is_refused_in_every_string() {
        for text in [
            r#"{"a":"\u0000"}"#,
            r#"{"a":"x\u0000y"}"#,
            r#"{"\u0000":1}"#,
            r#"{"a\u0000b":1}"#,
            r#"{"a":{"b":"\u0000"}}"#,
            r#"{"a":{"\u0000":"b"}}"#,
            r#"{"a":["ok","\u0000"]}"#,
            r#"{"a":[{"b":[{"c\u0000":1}]}]}"#,
            r#"{"a":[[[["\u0000"]]]]}"#,
        ] {
            assert_eq!(check_json(text), Err(JsonProblem::Nul), "{text}");
            let err = parse(&token_of(HS, text), 16384).unwrap_err();
            assert!(err.starts_with("payload has a NUL character"), "{err}");
            let header = format!(r#"{{"alg":"HS256","x":{text}}}"#);
            let err = parse(&token_of(&header, r#"{"exp":1}"#), 16384).unwrap_err();
            assert!(err.starts_with("header has a NUL character"), "{err}");
        }
        // an escaped backslash followed by u0000 is six characters of text, not NUL
        let t = token_of(HS, r#"{"a":"\\u0000","\\u0000":1}"#);
        let p = parse(&t, 16384).unwrap();
        assert_eq!(p.payload_map()["a"], "\\u0000");
        assert_eq!(p.payload_map()["\\u0000"], 1);
        // U+0001 and other escapes are fine
        assert_eq!(
            check_json(r#"{"a":"\u0001\n\t\"\/\\\ud83d\ude00"}"#),
            Ok(())
        );
    }

    #[test]
    fn duplicates_are_refused_at_every_depth() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"user":{"role":"reader","role":"admin"}}"#,
            r#"{"a":[{"b":1},{"c":1,"c":2}]}"#,
            r#"{"a":{"b":{"c":{"d":1,"e":2,"d":3}}}}"#,
            r#"{"user":{"role":"reader","r\u006fle":"admin"}}"#,
            r#"{"\ud83d\ude00":1,"😀":2}"#,
            r#"{"a":{"x":{},"x":[]}}"#,
        ] {
            assert_eq!(
                check_json(text),
                Err(JsonProblem::DuplicateMember),
                "{text}"
            );
            let err = parse(&token_of(HS, text), 16384).unwrap_err();
            assert_eq!(err, "payload has a duplicate member name");
        }
        // the same name in sibling or nested objects is not a duplicate
        for text in [
            r#"{"a":{"role":1},"b":{"role":2},"role":3}"#,
            r#"{"a":[{"role":1},{"role":2}]}"#,
            r#"{"a":{"a":{"a":1}}}"#,
        ] {
            assert_eq!(check_json(text), Ok(()), "{text}");
        }
        let t = token_of(HS, r#"{"user":{"role":"reader"},"x":{"role":"admin"}}"#);
        let p = parse(&t, 16384).unwrap();
        assert_eq!(p.payload_map()["user"]["role"], "reader");
    }

    #[test]
    fn numbers_are_kept_exactly() {
        // (as written, as kept): serde_json only spells exponents one way
        let cases = [
            ("-9223372036854775808", "-9223372036854775808"),
            ("9223372036854775807", "9223372036854775807"),
            ("18446744073709551615", "18446744073709551615"),
            ("18446744073709551616", "18446744073709551616"),
            ("-9223372036854775809", "-9223372036854775809"),
            ("1180591620717411303424", "1180591620717411303424"),
            ("-1180591620717411303424", "-1180591620717411303424"),
            (
                "190338944541716633019473744935045880808",
                "190338944541716633019473744935045880808",
            ),
            (
                "0.1000000000000000000000000000000001",
                "0.1000000000000000000000000000000001",
            ),
            (
                "3.14159265358979323846264338327950288419716939937510",
                "3.14159265358979323846264338327950288419716939937510",
            ),
            ("1e400", "1e+400"),
            ("1E-400", "1e-400"),
            ("-0", "-0"),
            ("12345678901234567890123e5", "12345678901234567890123e+5"),
        ];
        let members = |kept: bool| {
            cases
                .iter()
                .enumerate()
                .map(|(i, c)| format!("\"n{i:02}\":{}", if kept { c.1 } else { c.0 }))
                .collect::<Vec<_>>()
                .join(",")
        };
        let payload = format!("{{\"exp\":4102444800,{}}}", members(false));
        let t = token_of(HS, &payload);
        let p = parse(&t, 16384).unwrap();
        for (i, (_, kept)) in cases.iter().enumerate() {
            assert_eq!(p.payload_map()[&format!("n{i:02}")].to_string(), *kept);
        }
        // what is stored and returned has every digit
        assert_eq!(
            serde_json::to_string(&p.payload_map()).unwrap(),
            format!("{{\"exp\":4102444800,{}}}", members(true))
        );
        // registered times still read as numbers, and huge ones are out of range, not truncated
        assert_eq!(p.claims.exp, Some(4102444800.0));
        for name in ["exp", "nbf", "iat"] {
            for big in ["1180591620717411303424", "1e400", "-1e400"] {
                let err =
                    parse(&token_of(HS, &format!(r#"{{"{name}":{big}}}"#)), 16384).unwrap_err();
                assert_eq!(err, format!("{name} is out of range"));
            }
        }
        let t = token_of(HS, r#"{"exp":4102444800.5,"nbf":1e3,"iat":-0}"#);
        let p = parse(&t, 16384).unwrap();
        assert_eq!(
            (p.claims.exp, p.claims.nbf, p.claims.iat),
            (Some(4102444800.5), Some(1000.0), Some(0.0))
        );
    }

    #[test]
    fn number_limits() {
        assert_eq!(MAX_NUMBER_DIGITS, 1000);
        let ok = [
            "1e999".to_owned(),
            "-9.99e999".to_owned(),
            "1e-1000".to_owned(),
            format!("0.{}1", "0".repeat(999)),
            "9".repeat(1000),
            format!("{}e-1000", "9".repeat(1000)),
            "0e99999".to_owned(),
            "0e-0".to_owned(),
            "0.0".to_owned(),
            "0.0001e4".to_owned(),
            format!("0.{}1e1000", "0".repeat(1500)),
        ];
        for n in &ok {
            assert_eq!(check_json(n), Ok(()), "{n}");
        }
        let too_big = [
            "1e1000".to_owned(),
            "-1e1000".to_owned(),
            "1e-1001".to_owned(),
            format!("0.{}1", "0".repeat(1000)),
            "1".repeat(1001),
            "1.0e-1000".to_owned(),
            "0e1000001".to_owned(),
            "0e99999999999999999999999999".to_owned(),
            "1e-99999999999999999999999999".to_owned(),
        ];
        for n in &too_big {
            assert_eq!(check_json(n), Err(JsonProblem::Number), "{n}");
        }
        let err = parse(&token_of(HS, r#"{"exp":1,"n":1e1000}"#), 16384).unwrap_err();
        assert_eq!(
            err,
            "payload has a number with more than 1000 digits before or after the decimal point"
        );
    }

    #[test]
    fn strict_json_syntax() {
        // RFC 8259 as serde_json reads it: what one refuses the other refuses
        let good = [
            "{}",
            "[]",
            " { \"a\" : [ 1 , -2.5e+3 , true , false , null , \"s\" ] } ",
            "\"x\"",
            "0",
            "-0.0E-0",
            r#"{"a":"\u00e9\uD83D\uDE00é"}"#,
        ];
        for text in good {
            assert_eq!(check_json(text), Ok(()), "{text}");
            assert!(serde_json::from_str::<Value>(text).is_ok(), "{text}");
        }
        let bad = [
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "{'a':1}",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "-",
            "--1",
            "tru",
            "nul",
            "True",
            "NaN",
            "Infinity",
            "[1 2]",
            "{}{}",
            "{} x",
            "\"\t\"",
            "\"a",
            r#""\x""#,
            r#""\u12""#,
            r#""\u12G4""#,
            r#""\ud800""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            "[\"\u{1}\"]",
            "\u{feff}{}",
            "{\"a\":1}\u{0}",
        ];
        for text in bad {
            assert!(
                matches!(check_json(text), Err(JsonProblem::Syntax(_))),
                "{text:?}: {:?}",
                check_json(text)
            );
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn claim_policy() {
        let now = 1_000_000.0;
        let base = Claims {
            exp: Some(now + 100.0),
            ..Default::default()
        };
        assert_eq!(check_claims(&base, &policy(now)), Ok(()));
        assert_eq!(
            check_claims(&Claims::default(), &policy(now)),
            Err(Reason::MissingExp)
        );
        let expired = Claims {
            exp: Some(now - 31.0),
            ..Default::default()
        };
        assert_eq!(check_claims(&expired, &policy(now)), Err(Reason::Expired));
        let within_leeway = Claims {
            exp: Some(now - 29.0),
            ..Default::default()
        };
        assert_eq!(check_claims(&within_leeway, &policy(now)), Ok(()));
        let nbf = Claims {
            nbf: Some(now + 31.0),
            ..base.clone()
        };
        assert_eq!(check_claims(&nbf, &policy(now)), Err(Reason::NotYetValid));
        let iat = Claims {
            iat: Some(now + 31.0),
            ..base.clone()
        };
        assert_eq!(check_claims(&iat, &policy(now)), Err(Reason::NotYetValid));
        let aud = Claims {
            aud: vec!["x".into(), "y".into()],
            ..base.clone()
        };
        let want_y = Policy {
            audience: Some("y"),
            ..policy(now)
        };
        let want_z = Policy {
            audience: Some("z"),
            ..policy(now)
        };
        assert_eq!(check_claims(&aud, &want_y), Ok(()));
        assert_eq!(check_claims(&aud, &want_z), Err(Reason::WrongAudience));
        assert_eq!(check_claims(&base, &want_y), Err(Reason::WrongAudience));
        let iss = Claims {
            iss: Some("me".into()),
            ..base.clone()
        };
        assert_eq!(
            check_claims(
                &iss,
                &Policy {
                    issuer: Some("me"),
                    ..policy(now)
                }
            ),
            Ok(())
        );
        assert_eq!(
            check_claims(
                &iss,
                &Policy {
                    issuer: Some("you"),
                    ..policy(now)
                }
            ),
            Err(Reason::WrongIssuer)
        );
        assert_eq!(
            check_claims(
                &base,
                &Policy {
                    issuer: Some("me"),
                    ..policy(now)
                }
            ),
            Err(Reason::WrongIssuer)
        );
    }
}

#[cfg(test)]
mod id_claim_length_tests {
    use super::*;

    fn payload(name: &str, len: usize) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            name.into(),
            Value::from("é".repeat(len / 2) + &"x".repeat(len % 2)),
        );
        m
    }

    #[test]
    fn each_id_claim_is_bounded_in_bytes() {
        for name in ["sub", "iss", "jti", "sid"] {
            assert_eq!(
                check_id_claim_lengths(&payload(name, MAX_ID_CLAIM_BYTES)),
                Ok(())
            );
            let err = check_id_claim_lengths(&payload(name, MAX_ID_CLAIM_BYTES + 1)).unwrap_err();
            assert_eq!(err, format!("{name} is 1025 bytes, longer than 1024"));
        }
    }

    #[test]
    fn other_claims_and_other_types_are_not_its_business() {
        assert_eq!(check_id_claim_lengths(&payload("name", 100_000)), Ok(()));
        let mut m = Map::new();
        m.insert("sub".into(), Value::from(12));
        assert_eq!(check_id_claim_lengths(&m), Ok(()));
    }

    #[test]
    fn the_bound_leaves_room_in_a_btree_entry() {
        // btree's largest entry on an 8 kB page is 2704 bytes; a text key adds a 4-byte header
        // and sessions_subject_idx an 8-byte timestamptz
        assert!(MAX_ID_CLAIM_BYTES + 4 + 8 + 16 < 2704);
    }

    #[test]
    fn a_parsed_token_with_a_long_sub_is_malformed() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let p = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{}","exp":1}}"#, "a".repeat(3000)));
        let err = crate::jws::parse(&format!("{h}.{p}.abc"), usize::MAX).unwrap_err();
        assert!(err.contains("sub is 3000 bytes"), "{err}");
    }
}
