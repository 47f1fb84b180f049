//! The machine's raw signing rate: aws-lc-rs signatures per second over a
//! fixed message, on N threads, with a key generated at start.
//!
//! `cargo run --release -p keyward-jose --example sign_rate -- RS256 4096 5 2`
//! (algorithm: RS256, ES256 or ML-DSA-65; RSA bits or 0, seconds, threads)
//! prints `<signatures/s>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, PqdsaKeyPair};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let alg = args.get(1).map(String::as_str).unwrap_or("RS256");
    let bits: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4096);
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let threads: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(2);
    let msg = [7u8; 300];
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let sign: Arc<dyn Fn() + Send + Sync> = match alg {
        "RS256" => {
            let size = match bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                _ => KeySize::Rsa4096,
            };
            let k = Arc::new(KeyPair::generate(size).expect("RSA key"));
            Arc::new(move || {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    &msg,
                    &mut sig,
                )
                .unwrap();
            })
        }
        "ES256" => {
            let k = Arc::new(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            );
            let _ = k.public_key();
            Arc::new(move || {
                k.sign(&SystemRandom::new(), &msg).unwrap();
            })
        }
        "ML-DSA-65" => {
            let k = Arc::new(PqdsaKeyPair::generate(&signature::ML_DSA_65_SIGNING).unwrap());
            Arc::new(move || {
                let mut sig = [0u8; 3309];
                k.sign(&msg, &mut sig).unwrap();
            })
        }
        other => panic!("unsupported {other}"),
    };
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let count = count.clone();
            let sign = sign.clone();
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    sign();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    println!("{:.0}", count.load(Ordering::Relaxed) as f64 / secs as f64);
}
