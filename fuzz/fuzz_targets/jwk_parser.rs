//! Arbitrary bytes as a JWK or a JWK Set: parsing must never panic, and any
//! key that loads must survive a round trip through its own JSON.
#![no_main]

use keyward_jose::{Algorithm, Jwk, JwkSet};
use libfuzzer_sys::fuzz_target;

fn round_trip(jwk: &Jwk) {
    let json = jwk.to_json();
    let again = Jwk::parse(json.as_bytes(), Algorithm::RS256)
        .unwrap_or_else(|e| panic!("to_json() does not re-parse: {e}: {json}"));
    assert_eq!(&again, jwk, "JWK changed in a round trip: {json}");
    assert_eq!(again.kid, jwk.kid);
    let _ = jwk.key.thumbprint();
    let _ = jwk.key.bits();
    let _ = format!("{:?}", jwk.key);
}

fuzz_target!(|data: &[u8]| {
    for rsa_default in [Algorithm::RS256, Algorithm::PS512] {
        if let Ok(jwk) = Jwk::parse(data, rsa_default) {
            round_trip(&jwk);
        }
    }
    if let Ok(set) = JwkSet::parse(data, Algorithm::RS256) {
        for k in &set.keys {
            round_trip(k);
        }
        let again = JwkSet::parse(set.to_json().as_bytes(), Algorithm::RS256)
            .expect("a strict set re-parses");
        assert_eq!(again, set);
    }
    if let Ok((set, rejected)) = JwkSet::parse_lenient(data, Algorithm::RS256) {
        for k in &set.keys {
            round_trip(k);
        }
        for r in &rejected {
            let _ = r.error.to_string();
        }
    }
});
