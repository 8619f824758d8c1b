//! Differential: the one-pass scanner (`scan::scan`, what `jws::parse` uses) against the reference
//! checker (`claims::check_json`) and serde_json, on any text. Same verdict and the same error;
//! when the text passes, serde_json reads it, and every member the scanner reports is the
//! top-level member serde_json sees, with the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use token_store_core::{claims, scan};

const WANTED: [&str; 9] = ["alg", "kid", "crit", "aud", "exp", "sub", "a", "", "\u{e9}"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut found: [Option<std::ops::Range<usize>>; WANTED.len()] = Default::default();
    let got = scan::scan(text, &WANTED, &mut found);
    let want = claims::check_json(text);
    assert_eq!(got.map(|_| ()), want, "scan and check_json disagree on {text:?}");
    let Ok(is_object) = got else {
        return;
    };
    let value: Value = serde_json::from_str(text).expect("serde_json reads what check_json passes");
    assert_eq!(is_object, value.is_object());
    let Value::Object(map) = value else {
        assert!(found.iter().all(Option::is_none), "members reported outside an object");
        return;
    };
    for (name, span) in WANTED.iter().zip(&found) {
        match (map.get(*name), span) {
            (None, None) => {}
            (Some(v), Some(span)) => {
                let at: Value = serde_json::from_str(&text[span.clone()])
                    .expect("a reported span is one JSON value");
                assert_eq!(&at, v, "member {name:?} of {text:?}");
            }
            (v, s) => panic!("member {name:?} of {text:?}: serde {v:?}, scan {s:?}"),
        }
    }
});
