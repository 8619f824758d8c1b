//! The floor: what the crate calls that token_store makes cost in a plain Rust loop, with no
//! PostgreSQL around them. Reads the benchmark's tokens and keys from a directory written by
//! `bench/run.py`, prints one JSON object of timings (seconds, median of `reps` runs).
//!
//! usage: token_store_floor DIR N_SIGN_HMAC N_SIGN_ASYM [REPS]   (everything, one JSON object)
//!        token_store_floor DIR verify ALG N                    (decode+verify of N tokens)
//!
//! DIR holds `tokens_<alg>.txt` (one token a line), `hs256.secret`, and for RS256, ES256 and
//! EdDSA `<alg>.pub.pem` (verification) and `<alg>.key.pem` (signing, PKCS#8).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

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

fn algorithm(name: &str) -> Algorithm {
    match name {
        "HS256" => Algorithm::HS256,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        _ => panic!("unknown alg {name}"),
    }
}

fn decoding_key(dir: &str, alg: Algorithm) -> DecodingKey {
    let lower = format!("{alg:?}").to_lowercase();
    match alg {
        Algorithm::HS256 => {
            DecodingKey::from_secret(&read(&format!("{dir}/hs256.secret"))).unwrap()
        }
        Algorithm::RS256 => {
            DecodingKey::from_rsa_pem(&read(&format!("{dir}/{lower}.pub.pem"))).unwrap()
        }
        Algorithm::ES256 => {
            DecodingKey::from_ec_pem(&read(&format!("{dir}/{lower}.pub.pem"))).unwrap()
        }
        _ => DecodingKey::from_ed_pem(&read(&format!("{dir}/{lower}.pub.pem"))).unwrap(),
    }
}

/// What token_store checks: alg, signature, exp (required) and nbf with a 30 s leeway.
fn validation(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = 30;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation
}

/// `DIR verify ALG N`: one timed pass of jsonwebtoken::decode over the first N tokens of ALG,
/// so the suite can interleave it with the SQL runs it is compared to.
fn verify_only(dir: &str, name: &str, n: usize) {
    let alg = algorithm(name);
    let tokens: Vec<String> =
        String::from_utf8(read(&format!("{dir}/tokens_{}.txt", name.to_lowercase())))
            .unwrap()
            .lines()
            .take(n)
            .map(str::to_owned)
            .collect();
    let key = decoding_key(dir, alg);
    let v = validation(alg);
    let s = time(1, || {
        for t in &tokens {
            black_box(jsonwebtoken::decode::<Map<String, Value>>(t, &key, &v).expect("verifies"));
        }
    });
    println!(
        "{}",
        json!({"alg": name, "n": tokens.len(), "decode_verify_s": s.wall, "decode_verify_cpu_s": s.cpu})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let mut out = BTreeMap::new();
    let mut hs_tokens = Vec::new();
    for (name, alg) in [
        ("HS256", Algorithm::HS256),
        ("RS256", Algorithm::RS256),
        ("ES256", Algorithm::ES256),
        ("EdDSA", Algorithm::EdDSA),
    ] {
        let file = format!("{dir}/tokens_{}.txt", name.to_lowercase());
        let tokens: Vec<String> = String::from_utf8(read(&file))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let lower = name.to_lowercase();
        let dec = decoding_key(dir, alg);
        let enc = match alg {
            Algorithm::HS256 => {
                EncodingKey::from_secret(&read(&format!("{dir}/hs256.secret"))).unwrap()
            }
            Algorithm::RS256 => {
                EncodingKey::from_rsa_pem(&read(&format!("{dir}/{lower}.key.pem"))).unwrap()
            }
            Algorithm::ES256 => {
                EncodingKey::from_ec_pem(&read(&format!("{dir}/{lower}.key.pem"))).unwrap()
            }
            _ => EncodingKey::from_ed_pem(&read(&format!("{dir}/{lower}.key.pem"))).unwrap(),
        };
        let validation = validation(alg);

        // jsonwebtoken::decode: split, header, signature, claims, exp/nbf validation
        let decode_s = time(reps, || {
            for t in &tokens {
                let d = jsonwebtoken::decode::<Map<String, Value>>(t, &dec, &validation)
                    .expect("every benchmark token verifies");
                black_box(d);
            }
        });
        // the signature check alone (jsonwebtoken::crypto::verify), as token_store calls it;
        // on at most 2000 tokens for the slow asymmetric algorithms
        let sig_n = if alg == Algorithm::HS256 {
            tokens.len()
        } else {
            tokens.len().min(2000)
        };
        let split: Vec<(&str, &str)> = tokens[..sig_n]
            .iter()
            .map(|t| {
                let i = t.rfind('.').unwrap();
                (&t[..i], &t[i + 1..])
            })
            .collect();
        let verify_s = time(reps, || {
            for (msg, sig) in &split {
                let ok = jsonwebtoken::crypto::verify(sig, msg.as_bytes(), &dec, alg).unwrap();
                assert!(ok);
            }
        });
        // signing (what jwt_issue does per token), over fresh claims of the same shape
        let n_sign = if alg == Algorithm::HS256 {
            n_sign_hmac
        } else {
            n_sign_asym
        };
        let mut header = Header::new(alg);
        header.kid = Some(format!("bench-{lower}"));
        let claims: Vec<Value> = (0..n_sign)
            .map(|i| {
                json!({"sub": format!("user-{i}"), "role": "reader", "scope": "read write",
                       "iss": "https://auth.example.com", "iat": now, "exp": now + 3600,
                       "jti": format!("00000000-0000-4000-8000-{i:012}")})
            })
            .collect();
        // one run for the asymmetric algorithms (RSA signing takes milliseconds)
        let sign_reps = if alg == Algorithm::HS256 { reps } else { 1 };
        let sign_s = time(sign_reps, || {
            for c in &claims {
                black_box(jsonwebtoken::encode(&header, c, &enc).unwrap());
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
        if alg == Algorithm::HS256 {
            hs_tokens = tokens;
        }
    }

    // SHA-256 of each token (the lookup key token_store computes)
    let sha_s = time(reps, || {
        for t in &hs_tokens {
            black_box(<[u8; 32]>::from(Sha256::digest(t.as_bytes())));
        }
    });
    // AES-256-GCM seal of each token's claims, a fresh random nonce and a 16-byte row id as
    // associated data, as jwt_store does; the cipher is set up once.
    let payloads: Vec<Vec<u8>> = hs_tokens
        .iter()
        .map(|t| {
            URL_SAFE_NO_PAD
                .decode(t.split('.').nth(1).unwrap())
                .unwrap()
        })
        .collect();
    let cipher = Aes256Gcm::new_from_slice(&[7u8; 32]).unwrap();
    let aad = [9u8; 16];
    let aes_s = time(reps, || {
        for p in &payloads {
            let mut nonce = [0u8; 12];
            getrandom::getrandom(&mut nonce).unwrap();
            let ct = cipher
                .encrypt(Nonce::from_slice(&nonce), Payload { msg: p, aad: &aad })
                .unwrap();
            black_box(ct);
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
