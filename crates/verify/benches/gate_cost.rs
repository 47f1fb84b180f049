//! What the gate adds to a signature check, per token, in one process:
//! `raw` aws-lc-rs verification of the token's signing input (pre-parsed
//! key, pre-decoded signature) against `Gate::verify` of the same token with
//! the verified-token cache off (`uncached`: issuer choice among three
//! trusted issuers, JWKS-cache lookup, `verify_jwt`, revocation check,
//! identity) and on (`cached`). Interleaved ~0.25 ms batches, median of the
//! per-round ratios, as in keyward-jose's `paired` bench.
//!
//! `cargo bench -p keyward-verify --bench gate_cost [-- SECONDS_PER_CASE]`
//! Keys are generated at start-up and written only to a temporary directory.
//!
//! `-- count:N` instead verifies each case's token N times with the
//! uncached gate in `instr_warm`, and N times a token whose header bytes the
//! gate cannot have remembered (its issuer's memo slots are taken by four
//! other headers of the same key) in `instr_cold`, and prints nothing: under
//! `valgrind --tool=callgrind --toggle-collect='*::instr_*'` each function's
//! inclusive total / (3 N) is the gate's instructions per verification of a
//! warm token (issuer chosen by its remembered header) and of a cold one
//! (issuer chosen by `iss`), the same from run to run; `instr_raw` counts
//! the signature checks alone (`scripts/bench-gate-instr.sh`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, VerificationAlgorithm};
use keyward_jose::{sign_jwt, Algorithm, JwkSet, LocalSigner, PrivateKey, TokenSigner};
use keyward_verify::{Gate, IssuerPolicy, KeySource};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn batch(n: u32, f: &dyn Fn()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Verifies each token `n` times with the uncached gate.
fn verify_n(rt: &tokio::runtime::Runtime, gate: &Gate, tokens: &[String], n: u64) {
    for t in tokens {
        for _ in 0..n {
            black_box(rt.block_on(gate.verify(black_box(t))).unwrap());
        }
    }
}

// The two differ by a marker the optimizer must keep, so that they are not
// folded into one function.
#[inline(never)]
fn instr_warm(rt: &tokio::runtime::Runtime, gate: &Gate, tokens: &[String], n: u64) {
    black_box(1u8);
    verify_n(rt, gate, tokens, n)
}

/// A pre-parsed key, a signing input and its decoded signature.
type Raw = (ParsedPublicKey, Vec<u8>, Vec<u8>);

/// The signature check alone (aws-lc-rs), the floor under both.
#[inline(never)]
fn instr_raw(raws: &[Raw], n: u64) {
    for (key, input, signature) in raws {
        for _ in 0..n {
            key.verify_sig(black_box(input), black_box(signature))
                .unwrap();
        }
    }
}

#[inline(never)]
fn instr_cold(rt: &tokio::runtime::Runtime, gate: &Gate, tokens: &[String], n: u64) {
    black_box(2u8);
    verify_n(rt, gate, tokens, n)
}

/// What the raw check of `token` needs, prepared outside the measurement.
fn raw_parts(alg: &'static dyn VerificationAlgorithm, s: &LocalSigner, token: &str) -> Raw {
    let key = ParsedPublicKey::new(alg, s.public_jwk().key.to_spki_der()).unwrap();
    let dot = token.rfind('.').unwrap();
    let signature = B64.decode(&token[dot + 1..]).unwrap();
    (key, token.as_bytes()[..dot].to_vec(), signature)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: Option<u64> = args
        .iter()
        .find_map(|a| a.strip_prefix("count:"))
        .map(|n| n.parse().expect("count:N"));
    let secs: f64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(4.0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let cases: [(
        &str,
        Algorithm,
        Option<u32>,
        &'static dyn VerificationAlgorithm,
    ); 3] = [
        (
            "RS256-2048",
            Algorithm::RS256,
            Some(2048),
            &sig::RSA_PKCS1_2048_8192_SHA256,
        ),
        (
            "ES256",
            Algorithm::ES256,
            None,
            &sig::ECDSA_P256_SHA256_FIXED,
        ),
        ("EdDSA", Algorithm::EdDSA, None, &sig::ED25519),
    ];
    // Three trusted issuers, one per algorithm, keys from JWKS files.
    let mut signers = Vec::new();
    let mut uncached = Gate::builder().token_cache(0);
    let mut cached = Gate::builder().token_cache(10_000);
    for (name, alg, bits, _) in &cases {
        let s = LocalSigner::new(PrivateKey::generate(*alg, *bits).unwrap(), None);
        let path = dir.path().join(format!("{name}.json"));
        let set = JwkSet {
            keys: vec![s.public_jwk()],
        };
        std::fs::write(&path, set.to_json()).unwrap();
        let mut p = IssuerPolicy::new(format!("https://{name}.bench"));
        p.source = KeySource::File(path);
        p.audiences = vec!["api://bench".into()];
        uncached = uncached.issuer(p.clone());
        cached = cached.issuer(p);
        signers.push(s);
    }
    let (uncached, cached) = (uncached.build().unwrap(), cached.build().unwrap());
    rt.block_on(async {
        uncached.warm_up().await;
        cached.warm_up().await;
    });
    let claims = |name: &str| {
        serde_json::json!({
            "iss": format!("https://{name}.bench"), "sub": "bench-user", "aud": "api://bench",
            "exp": now + 3600, "iat": now, "jti": "0b6e0f3a-5c1d-4b8e-9a72-3f1d2c4e5a6b",
            "client_id": "bench", "scope": "orders:read", "permissions": ["orders.*"],
        })
    };
    if let Some(n) = count {
        // Four spellings of `at+jwt` take an issuer's four remembered
        // headers; a token with a fifth is read from scratch every time.
        let typs = ["at+jwt", "AT+JWT", "At+Jwt", "application/at+jwt"];
        let (mut warm, mut cold, mut raws) = (Vec::new(), Vec::new(), Vec::new());
        for ((name, _, _, raw_alg), s) in cases.iter().zip(&signers) {
            for typ in typs {
                let t = sign_jwt(s, Some(typ), &claims(name)).unwrap();
                rt.block_on(uncached.verify(&t)).unwrap();
            }
            let t = sign_jwt(s, Some("at+jwt"), &claims(name)).unwrap();
            raws.push(raw_parts(*raw_alg, s, &t));
            warm.push(t);
            cold.push(sign_jwt(s, Some("application/AT+JWT"), &claims(name)).unwrap());
        }
        verify_n(&rt, &uncached, &cold, 1);
        instr_raw(&raws, n);
        instr_warm(&rt, &uncached, &warm, n);
        instr_cold(&rt, &uncached, &cold, n);
        return;
    }
    println!(
        "{:<12} {:>9} {:>12} {:>10}   {:>14} {:>12}",
        "algorithm", "raw ns", "uncached ns", "cached ns", "uncached/raw", "cached/raw"
    );
    for ((name, _, _, raw_alg), s) in cases.iter().zip(&signers) {
        let token = sign_jwt(s, Some("at+jwt"), &claims(name)).unwrap();
        let (key, input, signature) = raw_parts(*raw_alg, s, &token);
        let raw = || {
            key.verify_sig(black_box(&input), black_box(&signature))
                .unwrap()
        };
        let via = |g: &Gate| {
            let id = rt.block_on(g.verify(black_box(&token))).unwrap();
            black_box(id);
        };
        let un = || via(&uncached);
        let ca = || via(&cached);
        let fns: [&dyn Fn(); 3] = [&raw, &un, &ca];
        for f in fns {
            batch(100, f);
        }
        let n = (2.5e5 / batch(20, &un)).clamp(1.0, 10_000.0) as u32;
        let (mut t, mut ru, mut rc) = ([vec![], vec![], vec![]], vec![], vec![]);
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut round = 0;
        while Instant::now() < deadline {
            let mut x = [0.0; 3];
            for k in 0..3 {
                let i = (round + k) % 3;
                x[i] = batch(n, fns[i]);
            }
            for i in 0..3 {
                t[i].push(x[i]);
            }
            ru.push(x[1] / x[0]);
            rc.push(x[2] / x[0]);
            round += 1;
        }
        let [a, b, c] = t.map(median);
        println!(
            "{name:<12} {a:>9.0} {b:>12.0} {c:>10.0}   {:>14.3} {:>12.3}",
            median(ru),
            median(rc)
        );
    }
}
