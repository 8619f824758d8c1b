//! The floor: what token_store's pure core (crates/core: parse, signature check, claim policy,
//! signing, hashing, sealing) costs in a plain Rust loop, with no PostgreSQL around it. Reads the benchmark's tokens and keys from a directory written by
//! `bench/run.py`, prints one JSON object of timings (seconds, median of `reps` runs).
//!
//! usage: token_store_floor DIR N_SIGN_HMAC N_SIGN_ASYM [REPS]   (everything, one JSON object)
//!        token_store_floor DIR verify ALG N                    (decode+verify of N tokens)
//!        token_store_floor - signatures SECONDS                (signature checks per alg, as
//!                                                                openssl speed times its verify)
//!
//! DIR holds `tokens_<alg>.txt` (one token a line), `hs256.secret`, and for RS256, ES256 and
//! EdDSA `<alg>.pub.pem` (verification) and `<alg>.key.pem` (signing, PKCS#8).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use serde_json::{json, Map, Value};
use token_store_core::aead::{sha256, EncryptionKey};
use token_store_core::alg::Alg;
use token_store_core::claims::{check_claims, Policy};
use token_store_core::jws::{self, Parsed};
use token_store_core::keys::{load_key, parse_key_material, KeyMaterial, LoadedKey};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// CPU time of this process, in seconds.
fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Median wall time and median CPU time (seconds) of `reps` runs of `f`. The suite compares
/// CPU time, which other load on a shared machine inflates far less than wall time.
struct Timing {
    wall: f64,
    cpu: f64,
}

fn time(reps: usize, mut f: impl FnMut()) -> Timing {
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (t, c) = (Instant::now(), cpu_now());
        f();
        cpu.push(cpu_now() - c);
        wall.push(t.elapsed().as_secs_f64());
    }
    Timing {
        wall: median(wall),
        cpu: median(cpu),
    }
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn text(path: &str) -> String {
    String::from_utf8(read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn algorithm(name: &str) -> Alg {
    Alg::parse(name).unwrap_or_else(|| panic!("unknown alg {name}"))
}

/// The key as jwt_valid and jwt_issue use it: `<alg>.pub.pem` to verify, `<alg>.key.pem` to
/// sign; the HMAC secret's raw bytes for both.
fn key(dir: &str, alg: Alg, signing: bool) -> LoadedKey {
    let lower = alg.as_str().to_lowercase();
    let material = if alg.is_hmac() {
        KeyMaterial {
            bytes: read(&format!("{dir}/{lower}.secret")),
            can_sign: true,
        }
    } else {
        let file = format!("{dir}/{lower}.{}.pem", if signing { "key" } else { "pub" });
        parse_key_material(alg, &text(&file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    load_key(alg, &material).unwrap()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What jwt_valid does without SQL: parse, alg, signature, then exp (required), nbf and iat with a
/// 30 s leeway.
fn decode_verify(t: &str, alg: Alg, key: &LoadedKey, policy: &Policy) {
    let parsed = jws::parse(t, usize::MAX).expect("parses");
    assert_eq!(Alg::parse(&parsed.header.alg), Some(alg));
    assert!(
        jws::verify_signature(&parsed, key),
        "every benchmark token verifies"
    );
    check_claims(&parsed.claims, policy).expect("every benchmark token is valid");
    black_box(jws::token_hash(&parsed));
}

fn policy() -> Policy<'static> {
    Policy {
        now: now(),
        leeway: 30.0,
        audience: None,
        issuer: None,
    }
}

fn tokens(dir: &str, name: &str) -> Vec<String> {
    text(&format!("{dir}/tokens_{}.txt", name.to_lowercase()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `DIR verify ALG N`: one timed pass of decode+verify over the first N tokens of ALG, so the
/// suite can interleave it with the SQL runs it is compared to.
fn verify_only(dir: &str, name: &str, n: usize) {
    let alg = algorithm(name);
    let tokens: Vec<String> = tokens(dir, name).into_iter().take(n).collect();
    let key = key(dir, alg, false);
    let p = policy();
    let s = time(1, || {
        for t in &tokens {
            decode_verify(t, alg, &key, &p);
        }
    });
    println!(
        "{}",
        json!({"alg": name, "n": tokens.len(), "decode_verify_s": s.wall, "decode_verify_cpu_s": s.cpu})
    );
}

/// CPU microseconds per signature check, for a fresh key of each algorithm the OpenSSL comparison
/// covers (RSA-2048, P-256, P-384, Ed25519; key set-up excluded, as in `openssl speed`), over
/// about `secs` seconds each.
fn signatures(secs: f64) {
    let payload = json!({"sub": "user-1234", "iat": 1_700_000_000, "exp": 4_102_444_800u64,
                         "jti": "0f6c5a0e-6a57-4b9e-9d0e-1f4a2b3c4d5e", "scope": "read write"});
    let mut out = BTreeMap::new();
    for name in ["HS256", "RS256", "PS256", "ES256", "ES384", "EdDSA"] {
        let alg = algorithm(name);
        let key = load_key(alg, &token_store_core::keys::generate(alg)).expect("loads");
        let token = jws::sign(&key, "k", payload.as_object().unwrap()).expect("signs");
        let parsed = jws::parse(&token, usize::MAX).expect("parses");
        assert!(jws::verify_signature(&parsed, &key));
        let (start, cpu) = (Instant::now(), cpu_now());
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            for _ in 0..16 {
                assert!(jws::verify_signature(black_box(&parsed), &key));
            }
            n += 16;
        }
        out.insert(name, json!({"n": n, "cpu_us": (cpu_now() - cpu) * 1e6 / n as f64}));
    }
    println!("{}", json!(out));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 3 && args[2] == "signatures" {
        signatures(args.get(3).map_or(1.0, |s| s.parse().expect("SECONDS")));
        return;
    }
    if args.len() >= 5 && args[2] == "verify" {
        verify_only(&args[1], &args[3], args[4].parse().expect("N"));
        return;
    }
    if args.len() < 4 {
        eprintln!(
            "usage: {0} DIR N_SIGN_HMAC N_SIGN_ASYM [REPS]\n       {0} DIR verify ALG N",
            args[0]
        );
        std::process::exit(2);
    }
    let dir = &args[1];
    let n_sign_hmac: usize = args[2].parse().expect("N_SIGN_HMAC");
    let n_sign_asym: usize = args[3].parse().expect("N_SIGN_ASYM");
    let reps: usize = args.get(4).map_or(3, |r| r.parse().expect("REPS"));
    let now = now() as u64;
    let policy = policy();

    let mut out = BTreeMap::new();
    let mut hs_tokens = Vec::new();
    for name in ["HS256", "RS256", "ES256", "EdDSA"] {
        let alg = algorithm(name);
        let tokens = tokens(dir, name);
        let lower = name.to_lowercase();
        let dec = key(dir, alg, false);
        let enc = key(dir, alg, true);

        // parse, signature, claim policy and token hash: jwt_valid's work outside SQL
        let decode_s = time(reps, || {
            for t in &tokens {
                decode_verify(t, alg, &dec, &policy);
            }
        });
        // the signature check alone, on tokens parsed beforehand; on at most 2000 tokens for the
        // slow asymmetric algorithms
        let sig_n = if alg.is_hmac() {
            tokens.len()
        } else {
            tokens.len().min(2000)
        };
        let parsed: Vec<Parsed> = tokens[..sig_n]
            .iter()
            .map(|t| jws::parse(t, usize::MAX).unwrap())
            .collect();
        let verify_s = time(reps, || {
            for p in &parsed {
                assert!(jws::verify_signature(p, &dec));
            }
        });
        // signing (what jwt_issue does per token), over fresh claims of the same shape
        let n_sign = if alg.is_hmac() {
            n_sign_hmac
        } else {
            n_sign_asym
        };
        let kid = format!("bench-{lower}");
        let claims: Vec<Map<String, Value>> = (0..n_sign)
            .map(|i| {
                let c = json!({"sub": format!("user-{i}"), "role": "reader", "scope": "read write",
                       "iss": "https://auth.example.com", "iat": now, "exp": now + 3600,
                       "jti": format!("00000000-0000-4000-8000-{i:012}")});
                c.as_object().unwrap().clone()
            })
            .collect();
        // one run for the asymmetric algorithms (RSA signing takes milliseconds)
        let sign_reps = if alg.is_hmac() { reps } else { 1 };
        let sign_s = time(sign_reps, || {
            for c in &claims {
                black_box(jws::sign(&enc, &kid, c).unwrap());
            }
        });
        out.insert(
            name.to_owned(),
            json!({"n": tokens.len(),
                   "decode_verify_s": decode_s.wall, "decode_verify_cpu_s": decode_s.cpu,
                   "n_verify_signature": sig_n,
                   "verify_signature_s": verify_s.wall, "verify_signature_cpu_s": verify_s.cpu,
                   "n_sign": n_sign, "sign_s": sign_s.wall, "sign_cpu_s": sign_s.cpu,
                   "sign_reps": sign_reps}),
        );
        if alg.is_hmac() {
            hs_tokens = tokens;
        }
    }

    // SHA-256 of each token (the lookup key token_store computes)
    let sha_s = time(reps, || {
        for t in &hs_tokens {
            black_box(sha256(t.as_bytes()));
        }
    });
    // AES-256-GCM seal of each token's claims, a fresh random nonce and a 16-byte row id as
    // associated data, as jwt_store does; the key is set up once.
    let payloads: Vec<Vec<u8>> = hs_tokens
        .iter()
        .map(|t| serde_json::to_vec(&jws::parse(t, usize::MAX).unwrap().payload_map()).unwrap())
        .collect();
    let key = EncryptionKey::from_bytes([7u8; 32]);
    let aad = [9u8; 16];
    let aes_s = time(reps, || {
        for p in &payloads {
            black_box(key.seal(&aad, p));
        }
    });
    let avg_payload =
        payloads.iter().map(Vec::len).sum::<usize>() as f64 / payloads.len().max(1) as f64;
    out.insert(
        "sha256".to_owned(),
        json!({"n": hs_tokens.len(), "s": sha_s.wall, "cpu_s": sha_s.cpu}),
    );
    out.insert(
        "aes_gcm_seal".to_owned(),
        json!({"n": payloads.len(), "s": aes_s.wall, "cpu_s": aes_s.cpu,
               "avg_plaintext_bytes": avg_payload}),
    );
    out.insert("reps".to_owned(), json!(reps));
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
