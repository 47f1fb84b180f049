//! Signatures per second through keyward's PKCS#11 signer against a bare
//! `C_SignInit` + `C_Sign` loop on the same SoftHSM2 token, same threads.
//! Run by `scripts/bench-pkcs11.sh`.
//!
//! `cargo bench -p keyward-signers --bench pkcs11 -- [rounds:R] [ms:M]`
//! measures, for ES256 and RS256-2048 with 1 and 2 threads, in R
//! interleaved rounds of M ms per variant (the order of the variants turns
//! each round):
//! - `bare`: each thread its own logged-in session and the key's handle,
//!   `Session::sign` (C_SignInit + C_Sign); ES256 over a digest computed
//!   once beforehand, RS256 (CKM_SHA256_RSA_PKCS) over the message;
//! - `keyward`: the signer of `keyward_signers::open` (pool checkout,
//!   SHA-256 of the message for ES256, C_Sign, and the check of the
//!   signature against the public key that every device signature gets);
//! - `unchecked`: the store's signer without that check
//!   (`KeyStore::open`), which splits keyward's cost into the pool's and
//!   the verification's.
//!
//! It prints each variant's median signatures/s and the median of the
//! per-round ratios keyward/bare.
//!
//! `-- count:N ALG` signs N times with each variant on one thread inside
//! `instr_bare`, `instr_keyward`, `instr_unchecked` (never inlined), for
//! callgrind's `--toggle-collect`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyward_jose::{Algorithm, PublicKey, TokenSigner};
use keyward_signers::pkcs11::{open_store, Pkcs11Config};

/// A realistic JWS signing input (header and claims of an access token).
const INPUT: &[u8] = b"eyJhbGciOiJFUzI1NiIsImtpZCI6ImstMjAyNi0wMS0wMSIsInR5cCI6ImF0K2p3dCJ9.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20vcHJvZCIsInN1YiI6InVzZXItMTIzNDUiLCJhdWQiOiJodHRwczovL2FwaS5leGFtcGxlLmNvbSIsImV4cCI6MTc2NzIyNTYwMCwiaWF0IjoxNzY3MjI1MzAwLCJuYmYiOjE3NjcyMjUzMDAsImp0aSI6IjFhMmIzYzRkNWU2ZiIsImNsaWVudF9pZCI6ImFwcC0xIiwic2NvcGUiOiJyZWFkIHdyaXRlIn0";

struct Case {
    alg: Algorithm,
    name: &'static str,
    kid: String,
    public: PublicKey,
    checked: Arc<dyn TokenSigner>,
    unchecked: Arc<dyn TokenSigner>,
}

struct Bench {
    hsm: &'static common::Hsm,
    token: common::Token,
    cases: Vec<Case>,
}

impl Bench {
    fn new(sessions: usize) -> Bench {
        let hsm = common::hsm().expect("SoftHSM2 is needed for this benchmark");
        let token = hsm.token("bench");
        let store = open_store(Pkcs11Config {
            sessions,
            ..hsm.config(&token)
        })
        .expect("store");
        let mut cases = Vec::new();
        for (alg, bits, name) in [
            (Algorithm::ES256, None, "ES256"),
            (Algorithm::RS256, Some(2048), "RS256-2048"),
        ] {
            let kid = format!("bench-{name}");
            let key = store.generate(&kid, alg, bits).expect("generate");
            let checked =
                keyward_signers::open(&*store, &kid, &key.reference, &key.public).expect("open");
            let unchecked = store.open(&kid, &key.reference, &key.public).expect("open");
            cases.push(Case {
                alg,
                name,
                kid,
                public: key.public,
                checked,
                unchecked,
            });
        }
        // The store lives on in its signers.
        drop(store);
        Bench { hsm, token, cases }
    }

    /// A thread's own logged-in session and the key's handle.
    fn bare(&self, case: &Case) -> (Session, ObjectHandle) {
        let s = self.hsm.session(&self.token);
        let h = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(case.kid.as_bytes().to_vec()),
            ])
            .expect("find")[0];
        (s, h)
    }
}

fn mechanism(alg: Algorithm) -> Mechanism<'static> {
    match alg {
        Algorithm::ES256 => Mechanism::Ecdsa,
        Algorithm::RS256 => Mechanism::Sha256RsaPkcs,
        _ => unreachable!(),
    }
}

/// What the bare loop signs: ES256 a digest computed once, RS256 the message.
fn bare_data(alg: Algorithm) -> Vec<u8> {
    match alg {
        Algorithm::ES256 => keyward_jose::crypto::signing_digest(alg, INPUT).unwrap(),
        _ => INPUT.to_vec(),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Bare,
    Keyward,
    Unchecked,
}
const VARIANTS: [Variant; 3] = [Variant::Bare, Variant::Keyward, Variant::Unchecked];

/// Signatures per second of `variant` with `threads` threads for `ms`.
fn rate(bench: &Bench, case: &Case, variant: Variant, threads: usize, ms: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(threads + 1));
    let elapsed = std::thread::scope(|scope| {
        for _ in 0..threads {
            let (stop, count, start) = (stop.clone(), count.clone(), start.clone());
            scope.spawn(move || {
                let mut n = 0u64;
                match variant {
                    Variant::Bare => {
                        let (s, h) = bench.bare(case);
                        let m = mechanism(case.alg);
                        let data = bare_data(case.alg);
                        start.wait();
                        while !stop.load(Ordering::Relaxed) {
                            black_box(s.sign(&m, h, &data).expect("C_Sign"));
                            n += 1;
                        }
                    }
                    Variant::Keyward | Variant::Unchecked => {
                        let signer = if variant == Variant::Keyward {
                            &case.checked
                        } else {
                            &case.unchecked
                        };
                        start.wait();
                        while !stop.load(Ordering::Relaxed) {
                            black_box(signer.sign(INPUT).expect("sign"));
                            n += 1;
                        }
                    }
                }
                count.fetch_add(n, Ordering::Relaxed);
            });
        }
        start.wait();
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(ms));
        stop.store(true, Ordering::Relaxed);
        t
    });
    // Threads stop after their signature in flight; counting the time to
    // their end keeps every counted signature inside the interval.
    count.load(Ordering::Relaxed) as f64 / elapsed.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[inline(never)]
fn instr_bare(s: &Session, h: ObjectHandle, m: &Mechanism, data: &[u8], n: u64) {
    for _ in 0..n {
        black_box(s.sign(m, h, data).expect("C_Sign"));
    }
}

#[inline(never)]
fn instr_keyward(signer: &dyn TokenSigner, n: u64) {
    for _ in 0..n {
        black_box(signer.sign(INPUT).expect("sign"));
    }
}

#[inline(never)]
fn instr_unchecked(signer: &dyn TokenSigner, n: u64) {
    for _ in 0..n {
        black_box(signer.sign(INPUT).expect("sign"));
    }
}

#[inline(never)]
fn instr_verify(public: &PublicKey, sig: &[u8], n: u64) {
    for _ in 0..n {
        public
            .verify(black_box(INPUT), black_box(sig))
            .expect("verify");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if common::hsm().is_none() {
        return;
    }
    if let Some(n) = args.iter().find_map(|a| a.strip_prefix("count:")) {
        let n: u64 = n.parse().expect("count:N");
        let want = args
            .iter()
            .find(|a| !a.starts_with("count:") && !a.starts_with("--"));
        let bench = Bench::new(1);
        for case in &bench.cases {
            if want.is_some_and(|w| w != case.name) {
                continue;
            }
            let (s, h) = bench.bare(case);
            let m = mechanism(case.alg);
            let data = bare_data(case.alg);
            // Warm: sessions open, handles cached.
            case.checked.sign(INPUT).unwrap();
            case.unchecked.sign(INPUT).unwrap();
            s.sign(&m, h, &data).unwrap();
            let sig = case.unchecked.sign(INPUT).unwrap();
            instr_bare(&s, h, &m, &data, n);
            instr_keyward(&*case.checked, n);
            instr_unchecked(&*case.unchecked, n);
            instr_verify(&case.public, &sig, n);
        }
        return;
    }
    let rounds: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("rounds:"))
        .map_or(7, |r| r.parse().expect("rounds:R"));
    let ms: u64 = args
        .iter()
        .find_map(|a| a.strip_prefix("ms:"))
        .map_or(300, |r| r.parse().expect("ms:M"));
    let threads_list = [1usize, 2];
    // One pool for every thread count: sized to the largest.
    let bench = Bench::new(2);
    println!(
        "PKCS#11 signatures/s on SoftHSM2 ({rounds} interleaved rounds of {ms} ms per variant; median)"
    );
    println!(
        "{:<11} {:>7} {:>10} {:>10} {:>10} {:>14} {:>16}",
        "algorithm", "threads", "bare", "keyward", "unchecked", "keyward/bare", "unchecked/bare"
    );
    for case in &bench.cases {
        for &threads in &threads_list {
            // Warm up each variant once.
            for v in VARIANTS {
                rate(&bench, case, v, threads, ms / 3);
            }
            let mut rates: [Vec<f64>; 3] = Default::default();
            let mut ratio = Vec::new();
            let mut ratio_unchecked = Vec::new();
            for r in 0..rounds {
                let mut this = [0.0; 3];
                for k in 0..3 {
                    let i = (k + r) % 3;
                    this[i] = rate(&bench, case, VARIANTS[i], threads, ms);
                }
                for i in 0..3 {
                    rates[i].push(this[i]);
                }
                ratio.push(this[1] / this[0]);
                ratio_unchecked.push(this[2] / this[0]);
            }
            println!(
                "{:<11} {:>7} {:>10.0} {:>10.0} {:>10.0} {:>13.3}x {:>15.3}x",
                case.name,
                threads,
                median(&mut rates[0]),
                median(&mut rates[1]),
                median(&mut rates[2]),
                median(&mut ratio),
                median(&mut ratio_unchecked),
            );
        }
    }
}
