//! DPoP proofs made ahead of a benchmark run (RFC 9449 §4.2): each request
//! of a DPoP load test needs a proof of its own (a unique `jti`, a fresh
//! `iat`), so `scripts/bench-gateway.sh` makes them here, before the run, and
//! wrk cycles through them once each.
//!
//! ```text
//! dpop_proofs key KEYFILE
//!     makes an ES256 key, writes it (PKCS#8 DER) to KEYFILE and prints its
//!     RFC 7638 thumbprint: the `cnf.jkt` to bind a token to.
//! dpop_proofs proofs KEYFILE N METHOD HTU TOKEN
//!     prints N proofs signed by KEYFILE's key, one per line: `htm` METHOD,
//!     `htu` HTU, `ath` the hash of TOKEN, `iat` now, a random 96-bit `jti`.
//! ```
//!
//! The key is a throwaway for one benchmark run (the script keeps it in its
//! temporary directory and removes it at exit).

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use keyward_jose::{access_token_hash, Algorithm, PrivateKey};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["key", file] => {
            let key = PrivateKey::generate(Algorithm::ES256, None).expect("ES256 key");
            std::fs::write(file, key.to_pkcs8_der().as_slice()).expect("write the key file");
            println!("{}", key.public_key().thumbprint());
        }
        ["proofs", file, n, method, htu, token] => {
            let der = std::fs::read(file).expect("read the key file");
            let key = PrivateKey::from_der(Algorithm::ES256, &der).expect("an ES256 key");
            let n: usize = n.parse().expect("N");
            proofs(&key, n, method, htu, token);
        }
        _ => {
            eprintln!("usage: dpop_proofs key KEYFILE | proofs KEYFILE N METHOD HTU TOKEN");
            std::process::exit(2);
        }
    }
}

fn proofs(key: &PrivateKey, n: usize, method: &str, htu: &str, token: &str) {
    let header = serde_json::json!({
        "typ": "dpop+jwt",
        "alg": "ES256",
        "jwk": key.public_key().to_jwk(None).to_value(),
    });
    let header = B64.encode(header.to_string());
    let ath = access_token_hash(token);
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for _ in 0..n {
        let claims = serde_json::json!({
            "jti": keyward_jose::crypto::random_text::<12>(),
            "htm": method,
            "htu": htu,
            "iat": iat,
            "ath": ath,
        });
        let input = format!("{header}.{}", B64.encode(claims.to_string()));
        let sig = key.sign(input.as_bytes()).expect("sign");
        writeln!(out, "{input}.{}", B64.encode(sig)).expect("write");
    }
    out.flush().expect("write");
}
