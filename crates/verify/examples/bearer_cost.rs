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
//!   answered by the verified-token cache (the gateway's hot path);
//! - `request`: [`keyward_verify::Gate::verify_request`] on the same headers
//!   (a `Bearer` token from the cache, what a DPoP request is compared with);
//! - `dpop`: [`keyward_verify::Gate::verify_request`] with the token bound to
//!   an ES256 client key (`cnf.jkt`) as `Authorization: DPoP`, each request
//!   with a proof of its own (made before the measured loop: a fresh `jti`,
//!   `ath`, `htm`, `htu`), the token from the cache: what the proof check
//!   adds is `dpop` minus `request`.
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

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use keyward_jose::{
    access_token_hash, sign_jwt, Algorithm, JwkSet, LocalSigner, PrivateKey, TokenSigner,
};
use keyward_verify::{bearer_token, Gate, IssuerPolicy, KeySource, RequestTarget};

const URI: &str = "https://api.bench/orders/42";

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
    let client = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let mut claims = serde_json::json!({
        "iss": "https://issuer.bench", "sub": "bench-user", "aud": "api://bench",
        "exp": now + 3600, "iat": now, "jti": "0b6e0f3a-5c1d-4b8e-9a72-3f1d2c4e5a6b",
        "client_id": "bench", "scope": "orders:read", "permissions": ["orders.*"],
    });
    if mode == "dpop" {
        claims["cnf"] = serde_json::json!({ "jkt": client.public_key().thumbprint() });
    }
    let token = sign_jwt(&signer, Some("at+jwt"), &claims).unwrap();
    let scheme = if mode == "dpop" { "DPoP" } else { "Bearer" };
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("{scheme} {token}")).unwrap(),
    );
    let target = RequestTarget {
        method: "GET",
        uri: URI,
        require: None,
    };
    // One proof per request and one for the warm-up, made before anything
    // is measured.
    let proofs: Vec<HeaderValue> = if mode == "dpop" {
        (0..=n)
            .map(|i| HeaderValue::from_str(&proof(&client, &token, now, i)).unwrap())
            .collect()
    } else {
        Vec::new()
    };
    let mut proofs = proofs.into_iter();
    rt.block_on(async {
        gate.warm_up().await;
        if let Some(p) = proofs.next() {
            headers.insert("dpop", p);
        }
        gate.verify_request(&headers, &target).await.unwrap();
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
        "request" => rt.block_on(async {
            for _ in 0..n {
                black_box(request(&gate, &headers, &target).await);
            }
        }),
        "dpop" => rt.block_on(async {
            for p in proofs {
                headers.insert("dpop", p);
                black_box(request(&gate, &headers, &target).await);
            }
        }),
        other => panic!("unknown mode {other:?}: parse, cached, request or dpop"),
    }
}

/// One request's verification, as its own function for callgrind to count.
#[inline(never)]
async fn request(
    gate: &Gate,
    headers: &HeaderMap,
    target: &RequestTarget<'_>,
) -> std::sync::Arc<keyward_verify::Identity> {
    gate.verify_request(black_box(headers), target)
        .await
        .unwrap()
}

/// The `i`th proof for a GET of [`URI`] with `token`, as a client library
/// makes one (RFC 9449 §4.2).
fn proof(key: &PrivateKey, token: &str, now: i64, i: u64) -> String {
    let header = serde_json::json!({
        "typ": "dpop+jwt",
        "alg": "ES256",
        "jwk": key.public_key().to_jwk(None).to_value(),
    });
    let claims = serde_json::json!({
        "jti": format!("bench-{i:016x}"),
        "htm": "GET",
        "htu": URI,
        "iat": now,
        "ath": access_token_hash(token),
    });
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig))
}
