//! Project Wycheproof ML-DSA vectors (tests/vectors/wycheproof/mldsa_*,
//! Apache License 2.0, see the README there) run through keyward's own API.
//!
//! `*_verify_test.json`: each group's public key is loaded as an RFC 9964
//! `AKP` JWK (and cross-checked against its SPKI DER); every test's `sig`
//! over `msg` goes through `PublicKey::verify`, the path JWS verification
//! uses. `valid` must verify; `invalid` must be refused, at key loading
//! (wrong public key length) or at verification.
//!
//! `*_sign_seed_test.json`: each group's 32-byte `privateSeed` is loaded with
//! `PrivateKey::from_seed` (the RFC 9964 `priv` form) and through its PKCS#8,
//! and must derive the group's `publicKey`; a seed of the wrong length must
//! be refused. aws-lc-rs signs hedged (randomized, FIPS 204 Algorithm 2 with
//! fresh `rnd`), so a signature is not the deterministic one the vectors
//! carry: the expected signature must verify under the derived key, and ours
//! must verify too.
//!
//! JOSE signs with an empty context (RFC 9964 §5): tests with a non-empty
//! `ctx` and the "external mu" tests (no `msg`) are skipped, and counted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use keyward_jose::{Algorithm, Jwk, KeyError, PrivateKey, PublicKey, TokenError};
use serde_json::{json, Value};

fn load(file: &str) -> Value {
    let path = format!(
        "{}/tests/vectors/wycheproof/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn text<'a>(v: &'a Value, member: &str) -> &'a str {
    v[member]
        .as_str()
        .unwrap_or_else(|| panic!("missing string member {member:?}"))
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Whether a test applies to JOSE: it has a `msg` and no (or an empty) `ctx`.
fn applicable(test: &Value) -> bool {
    test.get("msg").is_some()
        && test
            .get("ctx")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
}

#[derive(Debug, Default)]
struct Counts {
    valid: usize,
    invalid: usize,
    skipped: usize,
}

fn run_verify(file: &str, alg: Algorithm) -> Counts {
    let doc = load(file);
    assert_eq!(text(&doc, "algorithm"), alg.name());
    let mut c = Counts::default();
    for group in doc["testGroups"].as_array().unwrap() {
        let public = hex(text(group, "publicKey"));
        let jwk = json!({"kty": "AKP", "alg": alg.name(), "pub": b64(&public)});
        let key = Jwk::parse(jwk.to_string().as_bytes(), Algorithm::RS256).map(|j| j.key);
        if let (Ok(key), Some(der)) = (&key, group["publicKeyDer"].as_str()) {
            let from_der = PublicKey::from_der(alg, &hex(der)).unwrap();
            assert_eq!(&from_der, key, "the group's raw key and SPKI disagree");
        }
        for test in group["tests"].as_array().unwrap() {
            let id = &test["tcId"];
            if !applicable(test) {
                c.skipped += 1;
                continue;
            }
            let msg = hex(text(test, "msg"));
            let sig = hex(text(test, "sig"));
            match text(test, "result") {
                "valid" => {
                    let key = key
                        .as_ref()
                        .unwrap_or_else(|e| panic!("{file} #{id}: key refused: {e}"));
                    key.verify(&msg, &sig)
                        .unwrap_or_else(|e| panic!("{file} #{id}: {e}"));
                    c.valid += 1;
                }
                "invalid" => {
                    match &key {
                        Err(e) => assert!(
                            matches!(e, KeyError::PublicKeyLength { .. }),
                            "{file} #{id}: {e}"
                        ),
                        Ok(key) => {
                            let e = key.verify(&msg, &sig).unwrap_err();
                            assert!(
                                matches!(
                                    e,
                                    TokenError::BadSignature | TokenError::SignatureLength(_)
                                ),
                                "{file} #{id}: {e}"
                            );
                        }
                    }
                    c.invalid += 1;
                }
                other => panic!("{file} #{id}: unexpected result {other:?}"),
            }
        }
    }
    println!("{file}: {c:?}");
    c
}

fn run_sign(file: &str, alg: Algorithm) -> Counts {
    let doc = load(file);
    assert_eq!(text(&doc, "algorithm"), alg.name());
    let mut c = Counts::default();
    for group in doc["testGroups"].as_array().unwrap() {
        let seed = hex(text(group, "privateSeed"));
        let key = PrivateKey::from_seed(alg, &seed);
        if seed.len() != 32 {
            assert!(
                matches!(key, Err(KeyError::SeedLength { got, .. }) if got == seed.len()),
                "{file}: a {}-byte seed must be refused",
                seed.len()
            );
            for test in group["tests"].as_array().unwrap() {
                assert_eq!(text(test, "result"), "invalid");
                c.invalid += 1;
            }
            continue;
        }
        let key = key.unwrap();
        let public = key.public_key();
        let expected_public = PublicKey::from_material(
            alg,
            keyward_jose::PublicMaterial::MlDsa {
                params: match alg.family() {
                    keyward_jose::KeyFamily::MlDsa(p) => p,
                    _ => unreachable!(),
                },
                public: hex(text(group, "publicKey")),
            },
        )
        .unwrap();
        assert_eq!(
            public, &expected_public,
            "{file}: the seed derives publicKey"
        );
        if let Some(pkcs8) = group["privateKeyPkcs8"].as_str() {
            let from_pkcs8 = PrivateKey::from_der(alg, &hex(pkcs8)).unwrap();
            assert_eq!(
                from_pkcs8.public_key(),
                public,
                "{file}: PKCS#8 and seed agree"
            );
        }
        for test in group["tests"].as_array().unwrap() {
            let id = &test["tcId"];
            if !applicable(test) {
                c.skipped += 1;
                continue;
            }
            assert_eq!(text(test, "result"), "valid", "{file} #{id}");
            let msg = hex(text(test, "msg"));
            let expected = hex(text(test, "sig"));
            public
                .verify(&msg, &expected)
                .unwrap_or_else(|e| panic!("{file} #{id}: expected signature: {e}"));
            let ours = key.sign(&msg).unwrap();
            assert_eq!(ours.len(), expected.len(), "{file} #{id}");
            public
                .verify(&msg, &ours)
                .unwrap_or_else(|e| panic!("{file} #{id}: our signature: {e}"));
            c.valid += 1;
        }
    }
    println!("{file}: {c:?}");
    c
}

/// Exactly the cases the files hold ran (valid, invalid, skipped), so the
/// test cannot pass on an empty file or by skipping more than it should.
fn assert_ran(c: &Counts, valid: usize, invalid: usize, skipped: usize) {
    assert_eq!((c.valid, c.invalid, c.skipped), (valid, invalid, skipped));
}

#[test]
fn mldsa_44_verify() {
    let c = run_verify("mldsa_44_verify_test.json", Algorithm::MlDsa44);
    assert_ran(&c, 75, 98, 7);
}

#[test]
fn mldsa_65_verify() {
    let c = run_verify("mldsa_65_verify_test.json", Algorithm::MlDsa65);
    assert_ran(&c, 77, 126, 7);
}

#[test]
fn mldsa_87_verify() {
    let c = run_verify("mldsa_87_verify_test.json", Algorithm::MlDsa87);
    assert_ran(&c, 69, 165, 7);
}

#[test]
fn mldsa_44_sign_seed() {
    let c = run_sign("mldsa_44_sign_seed_test.json", Algorithm::MlDsa44);
    assert_ran(&c, 71, 3, 12);
}

#[test]
fn mldsa_65_sign_seed() {
    let c = run_sign("mldsa_65_sign_seed_test.json", Algorithm::MlDsa65);
    assert_ran(&c, 81, 3, 21);
}

#[test]
fn mldsa_87_sign_seed() {
    let c = run_sign("mldsa_87_sign_seed_test.json", Algorithm::MlDsa87);
    assert_ran(&c, 72, 3, 21);
}

#[test]
fn signing_is_hedged() {
    // Why the sign tests compare by verification: two signatures of the same
    // message differ (aws-lc-rs signs with fresh randomness). If this ever
    // fails, signing became deterministic and the sign tests can compare the
    // expected signatures byte for byte.
    let key = PrivateKey::from_seed(Algorithm::MlDsa44, &[42; 32]).unwrap();
    assert_ne!(key.sign(b"m").unwrap(), key.sign(b"m").unwrap());
}
