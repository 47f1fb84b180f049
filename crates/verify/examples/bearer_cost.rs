//! The cost of reading a request's bearer token, for counting instructions
//! under callgrind: `MODE N` runs N operations of one kind, so the cost of
//! one is the inclusive count of the function measured divided by N
//! (`callgrind_annotate --inclusive=yes`). Subtracting a run at N = 0 works
//! too but is noisier: the key generation at start-up draws jitter entropy,
//! whose instruction count varies from run to run by some 10^5.
//!
//! - `parse`: [`keyward_verify::bearer_token`] on an `Authorization` header
//!   holding an EdDSA access token;
//! - `cached`: [`keyward_verify::Gate::verify_headers`] on the same headers,
//!   answered by the verified-token cache (the gateway's hot path).
//!
//! ```text
//! cargo build --release -p keyward-verify --example bearer_cost
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!   target/release/examples/bearer_cost cached 100000
//! callgrind_annotate --inclusive=yes cg.out | grep verify_headers
//! ```
//!
//! The key is generated at start-up and written only to a temporary directory.

use std::hint::black_box;

use http::{HeaderMap, HeaderValue};
use keyward_jose::{sign_jwt, Algorithm, JwkSet, LocalSigner, PrivateKey, TokenSigner};
use keyward_verify::{bearer_token, Gate, IssuerPolicy, KeySource};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "cached".into());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let signer = LocalSigner::new(PrivateKey::generate(Algorithm::EdDSA, None).unwrap(), None);
    let path = dir.path().join("jwks.json");
    let set = JwkSet {
        keys: vec![signer.public_jwk()],
    };
    std::fs::write(&path, set.to_json()).unwrap();
    let mut policy = IssuerPolicy::new("https://issuer.bench");
    policy.source = KeySource::File(path);
    policy.audiences = vec!["api://bench".into()];
    let gate = Gate::builder().issuer(policy).build().unwrap();
    let now = gate.now();
    let claims = serde_json::json!({
        "iss": "https://issuer.bench", "sub": "bench-user", "aud": "api://bench",
        "exp": now + 3600, "iat": now, "jti": "0b6e0f3a-5c1d-4b8e-9a72-3f1d2c4e5a6b",
        "client_id": "bench", "scope": "orders:read", "permissions": ["orders.*"],
    });
    let token = sign_jwt(&signer, Some("at+jwt"), &claims).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    rt.block_on(async {
        gate.warm_up().await;
        gate.verify_headers(&headers).await.unwrap();
    });
    match mode.as_str() {
        "parse" => {
            for _ in 0..n {
                black_box(bearer_token(black_box(&headers)).unwrap());
            }
        }
        "cached" => rt.block_on(async {
            for _ in 0..n {
                black_box(gate.verify_headers(black_box(&headers)).await.unwrap());
            }
        }),
        other => panic!("unknown mode {other:?}: parse or cached"),
    }
}
