//! Heap allocations per token check (parse, signature, claim policy, identity hash), counted by a
//! global allocator: the per-request path must not drift back to building trees and maps.
//! `cargo test -p token_store_core --test allocations -- --nocapture` prints the counts.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use token_store_core::alg::Alg;
use token_store_core::claims::{check_claims, Policy};
use token_store_core::jws;
use token_store_core::keys::{generate, load_key};

struct Counting;

thread_local! {
    // this thread's only: the test harness allocates on its own threads meanwhile
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|n| n.set(n.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations of one call of `f`, after one warm-up call.
fn allocations(mut f: impl FnMut()) -> usize {
    f();
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn allocations_per_token_check() {
    // what jwt_issue makes: sub, iat, exp, jti, plus an application claim; kid in the header
    let payload = serde_json::json!({
        "sub": "user-1234", "iat": 1_700_000_000, "exp": 4_102_444_800u64,
        "jti": "0f6c5a0e-6a57-4b9e-9d0e-1f4a2b3c4d5e", "scope": "read write",
        "roles": ["a", "b"], "org": {"id": 7, "name": "x"}
    });
    let payload = payload.as_object().unwrap();
    let policy = Policy {
        now: 1.8e9,
        leeway: 30.0,
        audience: None,
        issuer: None,
    };
    let mut counts = Vec::new();
    for alg in [
        Alg::HS256,
        Alg::RS256,
        Alg::PS256,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ] {
        let key = load_key(alg, &generate(alg)).expect("loads");
        let token = jws::sign(&key, "k1", payload).expect("signs");
        let parse = allocations(|| {
            std::hint::black_box(jws::parse(&token, 16384).expect("parses"));
        });
        let whole = allocations(|| {
            let p = jws::parse(&token, 16384).expect("parses");
            assert!(jws::verify_signature(&p, &key));
            check_claims(&p.claims, &policy).expect("valid");
            std::hint::black_box(jws::token_hash(&p));
        });
        println!(
            "{:<6} parse {parse:>3}  parse+verify+claims+hash {whole:>3}",
            alg.as_str()
        );
        counts.push((alg, parse, whole));
    }
    for (alg, parse, whole) in counts {
        // the decoded payload, alg, kid, sub, jti: one allocation each
        assert!(parse <= 5, "{alg:?}: {parse} allocations to parse");
        assert!(
            whole <= 5,
            "{alg:?}: {whole} allocations for the whole check"
        );
    }
}
