//! Verification cost of one realistic RFC 9068 access token, per algorithm:
//!
//! - `raw`: aws-lc-rs verifying the token's signing input with a pre-parsed
//!   key and pre-decoded signature (the floor: no parsing, no claims);
//! - `keyward`: `verify_jwt` (split, header, kid lookup, signature, claims
//!   parse and full RFC 9068 policy validation);
//! - `jsonwebtoken`: `jsonwebtoken::decode::<serde_json::Value>` with the
//!   same key, issuer and audience checks on.
//!
//! Keys are generated at start-up and never written anywhere.
//! `scripts/bench-jose.sh` runs this and prints the ratios.
//!
//! On Linux the measurement is the bench thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the work is single-threaded
//! and CPU-bound, and on a shared machine wall time also counts the slices
//! other processes run in, which swamps differences of a few percent. Set
//! `KEYWARD_BENCH_WALL=1` to measure wall time instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, VerificationAlgorithm};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyward_jose::{
    b64, sign_jwt, Algorithm, KeySet, LocalSigner, PrivateKey, PublicMaterial, TokenSigner,
    Validation,
};
use serde_json::json;
use std::hint::black_box;

const ISS: &str = "https://auth.example.com/envs/prod";
const AUD: &str = "https://api.example.com";
/// 2100-01-01: valid for keyward's `now` and for jsonwebtoken's wall clock.
const EXP: i64 = 4_102_444_800;

struct Case {
    name: &'static str,
    alg: Algorithm,
    rsa_bits: Option<u32>,
    raw_alg: &'static dyn VerificationAlgorithm,
    jwt_alg: jsonwebtoken::Algorithm,
}

fn cases() -> [Case; 4] {
    [
        Case {
            name: "RS256-2048",
            alg: Algorithm::RS256,
            rsa_bits: Some(2048),
            raw_alg: &sig::RSA_PKCS1_2048_8192_SHA256,
            jwt_alg: jsonwebtoken::Algorithm::RS256,
        },
        Case {
            name: "RS256-4096",
            alg: Algorithm::RS256,
            rsa_bits: Some(4096),
            raw_alg: &sig::RSA_PKCS1_2048_8192_SHA256,
            jwt_alg: jsonwebtoken::Algorithm::RS256,
        },
        Case {
            name: "ES256",
            alg: Algorithm::ES256,
            rsa_bits: None,
            raw_alg: &sig::ECDSA_P256_SHA256_FIXED,
            jwt_alg: jsonwebtoken::Algorithm::ES256,
        },
        Case {
            name: "EdDSA",
            alg: Algorithm::EdDSA,
            rsa_bits: None,
            raw_alg: &sig::ED25519,
            jwt_alg: jsonwebtoken::Algorithm::EdDSA,
        },
    ]
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn bench_verify(c: &mut Criterion<Clock>) {
    let now = now();
    for case in cases() {
        let key = PrivateKey::generate(case.alg, case.rsa_bits).expect("key generation");
        let signer = LocalSigner::new(key, Some(format!("{}-2026-01", case.name)));
        let claims = json!({
            "iss": ISS,
            "sub": "user_2f9c1e7a4b",
            "aud": AUD,
            "exp": EXP,
            "iat": now - 30,
            "nbf": now - 30,
            "jti": "0b6e0f3a-5c1d-4b8e-9a72-3f1d2c4e5a6b",
            "client_id": "billing-dashboard",
            "scope": "openid profile orders:read invoices:read",
            "permissions": ["orders.*.read", "invoices.42.read", "customers.self.write"],
        });
        let token = sign_jwt(&signer, Some("at+jwt"), &claims).expect("signing");

        // keyward: key set and policy built once.
        let jwk = signer.public_jwk();
        let public = jwk.key.clone();
        let mut keys = KeySet::new();
        keys.insert(jwk.kid.clone(), jwk.key.clone()).unwrap();
        let policy = Validation::access_token(ISS, &[AUD]);
        let ok = keyward_jose::verify_jwt(&token, &keys, &policy, now).expect("keyward verifies");
        assert_eq!(ok.claims.sub(), Some("user_2f9c1e7a4b"));

        // raw: pre-parsed key, pre-decoded signature, the exact signing input.
        let raw_key = ParsedPublicKey::new(case.raw_alg, public.to_spki_der()).expect("SPKI");
        let dot = token.rfind('.').unwrap();
        let signing_input = token.as_bytes()[..dot].to_vec();
        let signature = b64::decode(&token[dot + 1..]).unwrap();
        raw_key
            .verify_sig(&signing_input, &signature)
            .expect("raw verifies");

        // jsonwebtoken: the same key from our JWK's base64url members.
        let dk = match public.material() {
            PublicMaterial::Rsa { n, e } => {
                jsonwebtoken::DecodingKey::from_rsa_components(&b64::encode(n), &b64::encode(e))
            }
            PublicMaterial::Ec { x, y, .. } => {
                jsonwebtoken::DecodingKey::from_ec_components(&b64::encode(x), &b64::encode(y))
            }
            PublicMaterial::Ed25519 { x } => {
                jsonwebtoken::DecodingKey::from_ed_components(&b64::encode(x))
            }
        }
        .expect("jsonwebtoken key");
        let mut jv = jsonwebtoken::Validation::new(case.jwt_alg);
        jv.set_audience(&[AUD]);
        jv.set_issuer(&[ISS]);
        jv.validate_nbf = true;
        jv.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(&token, &dk, &jv);
        assert!(
            decoded.is_ok(),
            "jsonwebtoken must accept the token: {decoded:?}"
        );

        let mut g = c.benchmark_group(case.name);
        g.bench_function("raw", |b| {
            b.iter(|| {
                raw_key
                    .verify_sig(black_box(&signing_input), black_box(&signature))
                    .unwrap()
            })
        });
        g.bench_function("keyward", |b| {
            b.iter(|| {
                keyward_jose::verify_jwt(black_box(&token), &keys, &policy, black_box(now)).unwrap()
            })
        });
        g.bench_function("jsonwebtoken", |b| {
            b.iter(|| {
                jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &dk, &jv).unwrap()
            })
        });
        g.finish();
    }
}

fn config() -> Criterion<Clock> {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .with_measurement(Clock::default())
}

/// Thread CPU time on Linux (wall time with `KEYWARD_BENCH_WALL=1`), in ns.
#[derive(Default)]
struct Clock {
    wall: std::sync::OnceLock<bool>,
}

impl Clock {
    fn now_ns(&self) -> u64 {
        let wall = *self
            .wall
            .get_or_init(|| std::env::var_os("KEYWARD_BENCH_WALL").is_some());
        #[cfg(target_os = "linux")]
        if !wall {
            use rustix::time::{clock_gettime, ClockId};
            let t = clock_gettime(ClockId::ThreadCPUTime);
            return t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
        }
        let _ = wall;
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as u64
    }
}

impl Measurement for Clock {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        self.now_ns()
    }
    fn end(&self, start: u64) -> u64 {
        self.now_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if ns < 1e3 {
            (1.0, "ns")
        } else if ns < 1e6 {
            (1e-3, "µs")
        } else if ns < 1e9 {
            (1e-6, "ms")
        } else {
            (1e-9, "s")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(&self, _: f64, _: &Throughput, _: &mut [f64]) -> &'static str {
        "ns"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_verify
}
criterion_main!(benches);
