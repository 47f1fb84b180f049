//! Signing cost of one realistic RFC 9068 access token, per algorithm, with
//! criterion: `signature` (the signer alone, over the token's signing
//! input), `prepared` ([`PreparedSigner::sign`], the header encoded once:
//! what the issuer runs per token) and `sign_payload` (the header encoded
//! per call). The gap between `signature` and `prepared` is what assembling
//! a token costs; `signature` is what decides [`SigningCost`].
//!
//! `cargo bench -p keyward-jose --bench sign [-- FILTER]`. Keys are
//! generated at start-up and never written anywhere.
//!
//! `-- count:N [NAME...]` instead runs, per named case (all by default),
//! exactly N calls of `instr_signature` and N of `instr_prepared`, and
//! prints nothing: under `valgrind --tool=callgrind
//! --toggle-collect='*instr_signature*'` (or `*instr_prepared*`) the
//! collected total / N is that case's instructions per call, the same
//! whatever else the machine is doing. ML-DSA signing loops a variable
//! number of times (FIPS 204 rejection sampling): take N of 200 or more.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use keyward_jose::{
    sign_payload, Algorithm, LocalSigner, PreparedSigner, PrivateKey, SigningCost, TokenSigner,
};

const CASES: [(&str, Algorithm, Option<u32>); 7] = [
    ("ES256", Algorithm::ES256, None),
    ("EdDSA", Algorithm::EdDSA, None),
    ("ML-DSA-44", Algorithm::MlDsa44, None),
    ("ML-DSA-65", Algorithm::MlDsa65, None),
    ("ML-DSA-87", Algorithm::MlDsa87, None),
    ("RS256-2048", Algorithm::RS256, Some(2048)),
    ("RS256-4096", Algorithm::RS256, Some(4096)),
];

/// The payload the issuer signs for a client_credentials grant (its size).
const PAYLOAD: &[u8] = br#"{"aud":["https://api.example.com"],"client_id":"Xk3c9Qm2Tq8Zr1Lp4Vb7Nw","exp":1767229200,"iat":1767225600,"iss":"https://auth.example.com/envs/prod","jti":"b3BxvJ2kQ7mZ1tW9rY5cLg","nbf":1767225600,"scope":"orders.read orders.write","sub":"Xk3c9Qm2Tq8Zr1Lp4Vb7Nw"}"#;

/// A case's signer, prepared signer and signing input.
fn setup(
    name: &str,
    alg: Algorithm,
    bits: Option<u32>,
) -> (Arc<dyn TokenSigner>, PreparedSigner, String) {
    let signer: Arc<dyn TokenSigner> = Arc::new(LocalSigner::new(
        PrivateKey::generate(alg, bits).expect("key"),
        Some(format!("{name}-2026-01")),
    ));
    let prepared = PreparedSigner::new(signer.clone(), Some("at+jwt"));
    let token = prepared.sign(PAYLOAD).expect("sign");
    let input = token
        .rsplit_once('.')
        .expect("three segments")
        .0
        .to_string();
    (signer, prepared, input)
}

#[inline(never)]
fn instr_signature(signer: &dyn TokenSigner, input: &[u8], n: u64) {
    for _ in 0..n {
        signer.sign(black_box(input)).unwrap();
    }
}

#[inline(never)]
fn instr_prepared(prepared: &PreparedSigner, n: u64) {
    for _ in 0..n {
        prepared.sign(black_box(PAYLOAD)).unwrap();
    }
}

fn bench_sign(c: &mut Criterion) {
    for (name, alg, bits) in CASES {
        let (signer, prepared, input) = setup(name, alg, bits);
        let cost = match signer.cost() {
            SigningCost::Quick => "quick",
            SigningCost::Blocking => "blocking",
            SigningCost::Waits => "waits",
        };
        let mut g = c.benchmark_group(format!("{name} ({cost})"));
        g.bench_function("signature", |b| {
            b.iter(|| signer.sign(black_box(input.as_bytes())).unwrap())
        });
        g.bench_function("prepared", |b| {
            b.iter(|| prepared.sign(black_box(PAYLOAD)).unwrap())
        });
        g.bench_function("sign_payload", |b| {
            b.iter(|| sign_payload(&*signer, Some("at+jwt"), black_box(PAYLOAD)).unwrap())
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_sign
}
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(n) = args.iter().find_map(|a| a.strip_prefix("count:")) {
        let n: u64 = n.parse().expect("count:N");
        let names: Vec<&String> = args.iter().filter(|a| !a.starts_with("count:")).collect();
        for (name, alg, bits) in CASES {
            if names.is_empty() || names.iter().any(|x| *x == name) {
                let (signer, prepared, input) = setup(name, alg, bits);
                instr_signature(&*signer, input.as_bytes(), n);
                instr_prepared(&prepared, n);
            }
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
