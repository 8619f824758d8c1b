//! The one pass over a token's header or claims: the strict check of [`crate::claims::check_json`]
//! (no duplicate member at any depth, no NUL, bounded depth and numbers), which at the same time
//! finds the top-level members the caller asks for. Builds no tree: the caller gets the spans of
//! those members' values in the text, which it has just learnt is valid.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;

use crate::claims::{literal, number, skip_ws, string, JsonProblem, MAX_JSON_DEPTH};

/// Members of one object compared one by one; past this many, a hash set takes over, so that
/// an object of a hundred thousand members (a 64 MB token) costs no more than linear time.
const LINEAR_MEMBERS: usize = 24;

enum Frame {
    Array,
    /// Its member names are `names[base..]`; `set` holds them all once there are many.
    Object {
        base: usize,
        set: Option<HashSet<Box<[u8]>>>,
    },
}

/// A member name: a slice of the text when written without escapes, else of `Scratch::unescaped`.
#[derive(Clone, Copy)]
struct Name {
    start: usize,
    end: usize,
    unescaped: bool,
}

/// Reused from call to call, so that a scan allocates nothing once the buffers have grown.
#[derive(Default)]
struct Scratch {
    stack: Vec<Frame>,
    names: Vec<Name>,
    unescaped: Vec<u8>,
}

impl Scratch {
    fn clear(&mut self) {
        self.stack.clear();
        self.names.clear();
        self.unescaped.clear();
        // do not keep what one huge token made this backend allocate
        if self.names.capacity() > 4096 || self.unescaped.capacity() > 65536 {
            *self = Scratch::default();
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Check `text` as [`crate::claims::check_json`] does, with the same verdict and error, and
/// record in `found[k]` the span of the value of the top-level member named `wanted[k]` (names
/// compared unescaped). Returns whether the text is an object.
pub fn scan(
    text: &str,
    wanted: &[&str],
    found: &mut [Option<Range<usize>>],
) -> Result<bool, JsonProblem> {
    debug_assert_eq!(wanted.len(), found.len());
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.clear();
            scan_with(&mut scratch, text.as_bytes(), wanted, found)
        }
        Err(_) => scan_with(&mut Scratch::default(), text.as_bytes(), wanted, found),
    })
}

fn scan_with(
    s: &mut Scratch,
    b: &[u8],
    wanted: &[&str],
    found: &mut [Option<Range<usize>>],
) -> Result<bool, JsonProblem> {
    let mut i = 0usize;
    let is_object = b.get(skip_ws(b, 0)) == Some(&b'{');
    // the wanted top-level member whose value is being read, and where that value starts
    let mut pending: Option<(usize, usize)> = None;
    loop {
        // a value starts at i
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'{') | Some(b'[') => {
                let object = b[i] == b'{';
                i = skip_ws(b, i + 1);
                if s.stack.len() >= MAX_JSON_DEPTH {
                    return Err(JsonProblem::TooDeep);
                }
                let close = if object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    i += 1;
                } else if object {
                    let base = s.names.len();
                    s.stack.push(Frame::Object { base, set: None });
                    i = member(s, b, i, wanted, &mut pending)?;
                    continue;
                } else {
                    s.stack.push(Frame::Array);
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
            if s.stack.len() == 1 {
                if let Some((k, start)) = pending.take() {
                    found[k] = Some(start..i);
                }
            }
            i = skip_ws(b, i);
            match (s.stack.last(), b.get(i)) {
                (None, None) => return Ok(is_object),
                (None, Some(_)) => return Err(JsonProblem::Syntax(i)),
                (Some(Frame::Array), Some(b',')) => {
                    i += 1;
                    break;
                }
                (Some(Frame::Array), Some(b']')) => {
                    s.stack.pop();
                    i += 1;
                }
                (Some(Frame::Object { base, .. }), Some(b'}')) => {
                    s.names.truncate(*base);
                    s.stack.pop();
                    i += 1;
                }
                (Some(Frame::Object { .. }), Some(b',')) => {
                    i = member(s, b, skip_ws(b, i + 1), wanted, &mut pending)?;
                    break;
                }
                _ => return Err(JsonProblem::Syntax(i)),
            }
        }
    }
}

/// A member name at `i` of the innermost object (the top of the stack), then its colon; refuses
/// a name already seen in that object. Returns where the member's value starts.
fn member(
    s: &mut Scratch,
    b: &[u8],
    i: usize,
    wanted: &[&str],
    pending: &mut Option<(usize, usize)>,
) -> Result<usize, JsonProblem> {
    if b.get(i) != Some(&b'"') {
        return Err(JsonProblem::Syntax(i));
    }
    let end = string(b, i, None)?;
    let raw = &b[i + 1..end - 1];
    let name = if raw.contains(&b'\\') {
        let start = s.unescaped.len();
        string(b, i, Some(&mut s.unescaped))?;
        Name {
            start,
            end: s.unescaped.len(),
            unescaped: true,
        }
    } else {
        Name {
            start: i + 1,
            end: end - 1,
            unescaped: false,
        }
    };
    let after = skip_ws(b, end);
    if b.get(after) != Some(&b':') {
        return Err(JsonProblem::Syntax(after));
    }
    let Scratch {
        stack,
        names,
        unescaped,
    } = s;
    let bytes = |n: &Name| -> &[u8] {
        if n.unescaped {
            &unescaped[n.start..n.end]
        } else {
            &b[n.start..n.end]
        }
    };
    let this = bytes(&name);
    let depth = stack.len();
    let Some(Frame::Object { base, set }) = stack.last_mut() else {
        unreachable!("a member is read only inside an object")
    };
    match set {
        Some(set) => {
            if !set.insert(this.into()) {
                return Err(JsonProblem::DuplicateMember);
            }
        }
        None => {
            if names[*base..].iter().any(|n| bytes(n) == this) {
                return Err(JsonProblem::DuplicateMember);
            }
            if names.len() - *base >= LINEAR_MEMBERS {
                let mut all: HashSet<Box<[u8]>> =
                    names[*base..].iter().map(|n| bytes(n).into()).collect();
                all.insert(this.into());
                *set = Some(all);
            }
        }
    }
    if depth == 1 {
        if let Some(k) = wanted.iter().position(|w| w.as_bytes() == this) {
            *pending = Some((k, skip_ws(b, after + 1)));
        }
    }
    // names past the linear limit live in the set; only the first ones need keeping
    if set.is_none() {
        names.push(name);
    }
    Ok(after + 1)
}

/// The string value at `span` of `text` (which [`scan`] passed), unescaped; `None` when the value
/// is not a string.
pub(crate) fn string_at(text: &str, span: &Range<usize>) -> Option<String> {
    let v = &text[span.clone()];
    if !v.starts_with('"') {
        return None;
    }
    let inner = &v[1..v.len() - 1];
    if !inner.contains('\\') {
        return Some(inner.to_owned());
    }
    let mut out = Vec::with_capacity(inner.len());
    string(text.as_bytes(), span.start, Some(&mut out)).ok()?;
    // a checked string unescapes to whole characters
    String::from_utf8(out).ok()
}

/// The elements of the array at `span` of `text` (which [`scan`] passed) if every one is a string;
/// `None` when any is not.
pub(crate) fn strings_at(text: &str, span: &Range<usize>) -> Option<Vec<String>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = skip_ws(b, span.start + 1);
    if b.get(i) == Some(&b']') {
        return Some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = string(b, i, None).ok()?;
        out.push(string_at(text, &(i..end))?);
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            _ => return Some(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::check_json;
    use serde_json::Value;

    const WANTED: [&str; 4] = ["alg", "aud", "a", "role"];

    /// scan's verdict is check_json's, and its spans are serde_json's top-level members.
    fn agrees(text: &str) -> Result<bool, JsonProblem> {
        let mut found: [Option<Range<usize>>; 4] = Default::default();
        let got = scan(text, &WANTED, &mut found);
        assert_eq!(got.map(|_| ()), check_json(text), "{text}");
        if got == Ok(true) {
            let Value::Object(map) = serde_json::from_str::<Value>(text).unwrap() else {
                panic!("{text}")
            };
            for (name, span) in WANTED.iter().zip(&found) {
                let at = span
                    .as_ref()
                    .map(|s| serde_json::from_str::<Value>(&text[s.clone()]).unwrap());
                assert_eq!(at.as_ref(), map.get(*name), "{name} in {text}");
            }
        }
        got
    }

    #[test]
    fn agrees_with_the_reference_checker() {
        for text in [
            "{}",
            "[]",
            "1",
            r#"{"alg":"HS256","kid":"k"}"#,
            r#" { "alg" : "x" , "aud" : [ "a" , "b" ] , "role" : { "alg" : 1 } } "#,
            r#"{"\u0061lg":"escaped name","a":[{"a":1}],"aud":{}}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"x":{"a":1},"a":{"x":1,"a":[]}}"#,
            r#"{"a":[],"role":[[]],"aud":""}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":"\u0000"}"#,
            r#"{"a":1e1001}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":1}}"#,
        ] {
            let _ = agrees(text);
        }
    }

    #[test]
    fn large_objects_find_duplicates_in_linear_time() {
        for n in [LINEAR_MEMBERS - 1, LINEAR_MEMBERS, LINEAR_MEMBERS + 1, 5000] {
            let members: Vec<String> = (0..n).map(|i| format!("\"m{i}\":{i}")).collect();
            let text = format!("{{{},\"a\":{{\"x\":1}},\"role\":\"r\"}}", members.join(","));
            assert_eq!(agrees(&text), Ok(true), "{n}");
            // the duplicate comes last, after the object has switched to a hash set; and an
            // escaped spelling of an early name
            for dup in ["\"m0\":0", "\"\\u006d0\":0", "\"a\":2"] {
                let text = format!("{{{},\"a\":1,{dup}}}", members.join(","));
                assert_eq!(
                    agrees(&text),
                    Err(JsonProblem::DuplicateMember),
                    "{n} {dup}"
                );
            }
            // the same names in sibling and nested objects are no duplicates
            let inner = format!("{{{}}}", members.join(","));
            let text = format!(
                "{{\"a\":{inner},\"b\":[{inner},{inner}],{}}}",
                members.join(",")
            );
            assert_eq!(agrees(&text), Ok(true), "{n}");
        }
        // a hundred thousand members: well under a second, not quadratic
        let members: Vec<String> = (0..100_000).map(|i| format!("\"{i}\":0")).collect();
        let text = format!("{{{}}}", members.join(","));
        let start = std::time::Instant::now();
        assert_eq!(scan(&text, &[], &mut []), Ok(true));
        assert!(start.elapsed().as_secs_f64() < 5.0);
    }
}
