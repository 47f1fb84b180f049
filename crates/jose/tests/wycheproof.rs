//! Project Wycheproof signature vectors (tests/vectors/wycheproof/, Apache
//! License 2.0, see the README there) run through keyward's own verifier:
//! every group's public key is loaded through the public API (`Jwk::parse`
//! where the group has a JWK, else `PublicKey::from_der`) and every test's
//! `sig` over `msg` is checked with `PublicKey::verify`, the code path JWS
//! verification uses.
//!
//! `valid` must verify, `invalid` must not; what we do with `acceptable` is
//! counted and printed (run with `--nocapture` to see the per-file counts).

use keyward_jose::{Algorithm, Jwk, PublicKey, TokenError};
use serde_json::Value;

fn load(file: &str) -> Value {
    let path = format!(
        "{}/tests/vectors/wycheproof/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len().rem_euclid(2), 0, "odd hex length");
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

/// The hash a Wycheproof group names for `alg`.
fn sha_of(alg: Algorithm) -> Option<&'static str> {
    match alg {
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => Some("SHA-256"),
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => Some("SHA-384"),
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::ES512 => Some("SHA-512"),
        Algorithm::EdDSA | Algorithm::MlDsa44 | Algorithm::MlDsa65 | Algorithm::MlDsa87 => None,
    }
}

/// Loads a group's public key for `alg`: from its JWK if it has one (and then
/// cross-checked against its DER), else from its DER.
fn group_key(group: &Value, alg: Algorithm) -> Result<(PublicKey, &'static str), String> {
    let der = group["publicKeyDer"].as_str().map(hex);
    let jwk = group
        .get("publicKeyJwk")
        .or_else(|| group.get("keyJwk"))
        .cloned();
    match jwk {
        Some(jwk) => {
            let jwk = Jwk::parse(jwk.to_string().as_bytes(), alg).map_err(|e| e.to_string())?;
            if jwk.algorithm() != alg {
                return Err(format!("JWK loaded as {}", jwk.algorithm()));
            }
            if let Some(der) = der {
                let from_der = PublicKey::from_der(alg, &der).map_err(|e| e.to_string())?;
                assert_eq!(from_der, jwk.key, "the group's JWK and DER disagree");
            }
            Ok((jwk.key, "jwk"))
        }
        None => {
            let der = der.ok_or("group has neither JWK nor DER")?;
            PublicKey::from_der(alg, &der)
                .map(|k| (k, "der"))
                .map_err(|e| e.to_string())
        }
    }
}

/// Why a group cannot be run as `alg` at all (parameters JOSE does not use).
fn unusable_params(group: &Value, alg: Algorithm) -> Option<String> {
    if let Some(want) = sha_of(alg) {
        if group["sha"].as_str() != Some(want) {
            return Some(format!("sha {} is not {want}", group["sha"]));
        }
    }
    if matches!(alg, Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512) {
        // JOSE PS*: MGF1 with the same hash, salt length = hash length (RFC 7518 §3.5).
        let hash_len = match alg {
            Algorithm::PS256 => 32,
            Algorithm::PS384 => 48,
            _ => 64,
        };
        if group["mgf"].as_str() != Some("MGF1") {
            return Some(format!("mgf {} is not MGF1", group["mgf"]));
        }
        if group["mgfSha"] != group["sha"] {
            return Some(format!(
                "MGF1 hash {} differs from {}",
                group["mgfSha"], group["sha"]
            ));
        }
        if group["sLen"].as_u64() != Some(hash_len) {
            return Some(format!("sLen {} is not {hash_len}", group["sLen"]));
        }
    }
    None
}

#[derive(Default, Debug)]
struct Counts {
    groups: usize,
    groups_jwk: usize,
    groups_der: usize,
    groups_refused: usize,
    groups_skipped: usize,
    valid: usize,
    invalid: usize,
    acceptable: usize,
    acceptable_accepted: usize,
    acceptable_rejected: usize,
    skipped_tests: usize,
    passed: usize,
}

/// Runs every test of a Wycheproof signature file as `alg`.
fn run(file: &str, alg: Algorithm) -> Counts {
    let doc = load(file);
    let mut c = Counts::default();
    let mut failures = Vec::new();
    for group in doc["testGroups"].as_array().expect("testGroups") {
        c.groups += 1;
        let tests = group["tests"].as_array().expect("tests");
        if let Some(keysize) = group["keySize"].as_u64() {
            if group["type"].as_str().is_some_and(|t| t.starts_with("Rsa")) {
                assert!(keysize >= 2048, "{file}: RSA group of {keysize} bits");
            }
        }
        if let Some(reason) = unusable_params(group, alg) {
            eprintln!(
                "{file}: skipping a group of {} tests: {reason}",
                tests.len()
            );
            c.groups_skipped += 1;
            c.skipped_tests += tests.len();
            continue;
        }
        let key = match group_key(group, alg) {
            Ok((key, how)) => {
                if how == "jwk" {
                    c.groups_jwk += 1;
                } else {
                    c.groups_der += 1;
                }
                Some(key)
            }
            Err(e) => {
                // A refused key is fine only if none of its tests is valid.
                c.groups_refused += 1;
                eprintln!("{file}: group key refused at load: {e}");
                None
            }
        };
        for t in tests {
            let id = &t["tcId"];
            let result = text(t, "result");
            let outcome = key
                .as_ref()
                .map(|k| k.verify(&hex(text(t, "msg")), &hex(text(t, "sig"))));
            let accepted = matches!(outcome, Some(Ok(())));
            match result {
                "valid" => {
                    c.valid += 1;
                    if accepted {
                        c.passed += 1;
                    } else {
                        failures.push(format!(
                            "tc {id} valid but rejected: {outcome:?} ({})",
                            t["comment"]
                        ));
                    }
                }
                "invalid" => {
                    c.invalid += 1;
                    // Refused at key load (no key), at the length check, or
                    // by the signature check: nothing else is a rejection.
                    match &outcome {
                        Some(Ok(())) => failures
                            .push(format!("tc {id} invalid but accepted ({})", t["comment"])),
                        None
                        | Some(Err(TokenError::SignatureLength(_) | TokenError::BadSignature)) => {
                            c.passed += 1
                        }
                        Some(Err(e)) => failures.push(format!(
                            "tc {id} invalid, refused with an unexpected error {e:?} ({})",
                            t["comment"]
                        )),
                    }
                }
                "acceptable" => {
                    c.acceptable += 1;
                    c.passed += 1;
                    if accepted {
                        c.acceptable_accepted += 1;
                    } else {
                        c.acceptable_rejected += 1;
                    }
                    eprintln!(
                        "{file}: acceptable tc {id} ({}; flags {}): {}",
                        t["comment"],
                        t["flags"],
                        if accepted { "accepted" } else { "rejected" }
                    );
                }
                other => failures.push(format!("tc {id}: unknown result {other:?}")),
            }
        }
    }
    eprintln!(
        "{file} as {alg}: {} groups ({} keys via JWK, {} via DER, {} refused at load, {} skipped); \
         {} tests: valid {}, invalid {}, acceptable {} (accepted {}, rejected {}), skipped {}; passed {}",
        c.groups,
        c.groups_jwk,
        c.groups_der,
        c.groups_refused,
        c.groups_skipped,
        c.valid + c.invalid + c.acceptable,
        c.valid,
        c.invalid,
        c.acceptable,
        c.acceptable_accepted,
        c.acceptable_rejected,
        c.skipped_tests,
        c.passed
    );
    assert!(
        failures.is_empty(),
        "{file}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(c.valid > 0 && c.invalid > 0, "{file}: vacuous run");
    assert_eq!(c.passed, c.valid + c.invalid + c.acceptable);
    c
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    let c = run("ecdsa_secp256r1_sha256_p1363_test.json", Algorithm::ES256);
    assert_eq!(c.groups_skipped, 0);
}

#[test]
fn ecdsa_p384_sha384_p1363() {
    let c = run("ecdsa_secp384r1_sha384_p1363_test.json", Algorithm::ES384);
    assert_eq!(c.groups_skipped, 0);
}

#[test]
fn ecdsa_p521_sha512_p1363() {
    let c = run("ecdsa_secp521r1_sha512_p1363_test.json", Algorithm::ES512);
    assert_eq!(c.groups_skipped, 0);
}

#[test]
fn rsa_pkcs1_2048_sha256() {
    run("rsa_signature_2048_sha256_test.json", Algorithm::RS256);
}

#[test]
fn rsa_pkcs1_2048_sha384() {
    run("rsa_signature_2048_sha384_test.json", Algorithm::RS384);
}

#[test]
fn rsa_pkcs1_2048_sha512() {
    run("rsa_signature_2048_sha512_test.json", Algorithm::RS512);
}

#[test]
fn rsa_pkcs1_3072_sha256() {
    run("rsa_signature_3072_sha256_test.json", Algorithm::RS256);
}

#[test]
fn rsa_pkcs1_4096_sha256() {
    run("rsa_signature_4096_sha256_test.json", Algorithm::RS256);
}

#[test]
fn rsa_pkcs1_4096_sha512() {
    run("rsa_signature_4096_sha512_test.json", Algorithm::RS512);
}

#[test]
fn rsa_pss_2048_sha256_mgf1_32() {
    let c = run("rsa_pss_2048_sha256_mgf1_32_test.json", Algorithm::PS256);
    assert_eq!(c.groups_skipped, 0, "parameters are JOSE PS256");
}

#[test]
fn rsa_pss_2048_sha384_mgf1_48() {
    let c = run("rsa_pss_2048_sha384_mgf1_48_test.json", Algorithm::PS384);
    assert_eq!(c.groups_skipped, 0, "parameters are JOSE PS384");
}

#[test]
fn rsa_pss_4096_sha512_mgf1_64() {
    let c = run("rsa_pss_4096_sha512_mgf1_64_test.json", Algorithm::PS512);
    assert_eq!(c.groups_skipped, 0, "parameters are JOSE PS512");
}

#[test]
fn ed25519() {
    let c = run("ed25519_test.json", Algorithm::EdDSA);
    assert_eq!(c.groups_skipped, 0);
}

/// Splits a well-formed DER ECDSA-Sig-Value into fixed-width `r || s`.
fn der_to_raw(der: &[u8], width: usize) -> Option<Vec<u8>> {
    fn int(b: &[u8], width: usize) -> Option<(Vec<u8>, &[u8])> {
        let (&tag, rest) = b.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let len = len as usize;
        if tag != 0x02 || len >= 0x80 || rest.len() < len {
            return None;
        }
        let (v, rest) = rest.split_at(len);
        let i = v.iter().position(|&x| x != 0).unwrap_or(v.len());
        let v = &v[i..];
        if v.len() > width {
            return None;
        }
        let mut out = vec![0; width - v.len()];
        out.extend_from_slice(v);
        Some((out, rest))
    }
    let (&tag, rest) = der.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if tag != 0x30 || len as usize != rest.len() {
        return None;
    }
    let (mut r, rest) = int(rest, width)?;
    let (s, rest) = int(rest, width)?;
    if !rest.is_empty() {
        return None;
    }
    r.extend_from_slice(&s);
    Some(r)
}

/// JWS requires raw `r || s` (RFC 7518 §3.4): every DER-encoded signature,
/// including the ones Wycheproof calls valid for DER verifiers, is refused.
#[test]
fn ecdsa_p256_der_signatures_are_all_rejected() {
    let file = "ecdsa_secp256r1_sha256_test.json";
    let doc = load(file);
    let (mut total, mut valid, mut invalid, mut by_length, mut by_signature) = (0, 0, 0, 0, 0);
    let mut valid_as_raw = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let key = PublicKey::from_der(Algorithm::ES256, &hex(text(group, "publicKeyDer")))
            .expect("every group key of this file is a valid P-256 key");
        for t in group["tests"].as_array().unwrap() {
            total += 1;
            let msg = hex(text(t, "msg"));
            let sig = hex(text(t, "sig"));
            match key.verify(&msg, &sig) {
                Ok(()) => panic!(
                    "{file}: tc {} ({}) accepted a DER signature",
                    t["tcId"], t["result"]
                ),
                Err(TokenError::SignatureLength(_)) => by_length += 1,
                Err(TokenError::BadSignature) => by_signature += 1,
                Err(e) => panic!("{file}: tc {}: unexpected error {e:?}", t["tcId"]),
            }
            match text(t, "result") {
                "valid" => {
                    valid += 1;
                    // The same signature re-encoded as r || s verifies, so the
                    // refusal above is about the encoding, not the key.
                    let raw = der_to_raw(&sig, 32).expect("a valid signature is well-formed DER");
                    key.verify(&msg, &raw)
                        .unwrap_or_else(|e| panic!("{file}: tc {} as raw r||s: {e}", t["tcId"]));
                    valid_as_raw += 1;
                }
                _ => invalid += 1,
            }
        }
    }
    eprintln!(
        "{file} as ES256: {total} DER signatures (Wycheproof valid {valid}, invalid {invalid}) \
         all rejected: {by_length} by length, {by_signature} by signature check; \
         {valid_as_raw} valid ones re-encoded as r||s verify"
    );
    assert!(total > 0 && valid > 0 && invalid > 0);
    assert_eq!(by_length + by_signature, total);
    assert_eq!(valid_as_raw, valid);
}
