//! The machine's raw verification cost: nanoseconds of CPU per aws-lc-rs
//! signature verification with a pre-parsed key, on one thread.
//!
//! `cargo run --release -p keyward-jose --example verify_cost -- RS256 2048 3`
//! (algorithm RS256|ES256|EdDSA, RSA bits or 0, seconds) prints `<ns/verify>`.
//! `scripts/bench-gateway.sh` uses it as the baseline of the uncached gate.
//!
//! With `count:N` in place of the seconds it runs exactly N verifications,
//! each one call of `verify_once`, and prints nothing more: under
//! `valgrind --tool=callgrind --toggle-collect='*verify_once*'` the
//! collected total / N is the raw verify's instruction count.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self as sig, ParsedPublicKey};
use keyward_jose::{sign_payload, Algorithm, LocalSigner, PrivateKey, TokenSigner};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let alg: Algorithm = args
        .get(1)
        .map_or("RS256", String::as_str)
        .parse()
        .expect("algorithm");
    let bits: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2048);
    let count: Option<u64> = args
        .get(3)
        .and_then(|s| s.strip_prefix("count:"))
        .map(|n| n.parse().expect("count:N"));
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let raw_alg: &'static dyn sig::VerificationAlgorithm = match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        other => panic!("unsupported {other}"),
    };
    let rsa_bits = (alg == Algorithm::RS256).then_some(bits);
    let signer = LocalSigner::new(PrivateKey::generate(alg, rsa_bits).expect("key"), None);
    let token = sign_payload(&signer, Some("at+jwt"), &[b'x'; 400]).expect("sign");
    let dot = token.rfind('.').expect("compact JWS");
    let input = token.as_bytes()[..dot].to_vec();
    let signature = B64.decode(&token[dot + 1..]).expect("base64url");
    let key = ParsedPublicKey::new(raw_alg, signer.public_jwk().key.to_spki_der()).expect("SPKI");
    key.verify_sig(&input, &signature).expect("verifies");
    if let Some(n) = count {
        for _ in 0..n {
            verify_once(&key, &input, &signature);
        }
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while Instant::now() < deadline {
        for _ in 0..16 {
            key.verify_sig(&input, &signature).expect("verifies");
        }
        n += 16;
    }
    println!("{:.0}", start.elapsed().as_nanos() as f64 / n as f64);
}

/// One verification, as its own function for callgrind to count.
#[inline(never)]
fn verify_once(key: &ParsedPublicKey, input: &[u8], signature: &[u8]) {
    key.verify_sig(std::hint::black_box(input), signature)
        .expect("verifies");
}
