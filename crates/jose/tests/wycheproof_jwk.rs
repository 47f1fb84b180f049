//! Project Wycheproof `json_web_key_test.json` (tests/vectors/wycheproof/):
//! key sets a verifier must refuse to load (mixed symmetric sets, duplicate
//! kid, ROCA, 1024-bit RSA, e = 1, HS*/oct and AES keys, alg/curve mismatch,
//! ES224, `use: enc`, invalid point, wrong curve, wrong kty) and tokens that
//! must or must not verify.
//!
//! keyward never accepts `oct` keys, so the HS* groups (which only have a
//! `private` set) are refused whatever their Wycheproof result; the only
//! asymmetric `valid` test is loaded and its `jws` verified.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use keyward_jose::{
    verify_compact, Algorithm, JwkSet, KeyError, KeySet, TokenError, DEFAULT_MAX_TOKEN_LEN,
};
use serde_json::Value;

fn load() -> Value {
    let path = format!(
        "{}/tests/vectors/wycheproof/json_web_key_test.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `kid` in a compact token's header (read only to pick a key; the token
/// is verified afterwards).
fn header_kid(token: &str) -> Option<String> {
    let h = token.split('.').next()?;
    let v: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
    v["kid"].as_str().map(str::to_owned)
}

/// Whether any key (kty) in a set is symmetric.
fn has_oct(set: &Value) -> bool {
    set["keys"]
        .as_array()
        .is_some_and(|ks| ks.iter().any(|k| k["kty"] == "oct"))
}

/// Verifies `token` against the keys of `set`, choosing by `kid` (or the only
/// key). `Err` if no key fits or the signature fails.
fn verify_with(set: &JwkSet, token: &str) -> Result<Vec<u8>, TokenError> {
    let keys = KeySet::from_jwks(set).map_err(|_| TokenError::BadSignature)?;
    let key = match header_kid(token) {
        Some(kid) => keys.get(&kid).cloned().ok_or(TokenError::UnknownKid(kid))?,
        None if set.keys.len() == 1 => std::sync::Arc::new(set.keys[0].key.clone()),
        None => return Err(TokenError::MissingKid),
    };
    verify_compact(token, &key, DEFAULT_MAX_TOKEN_LEN).map(|(_, p)| p)
}

#[derive(Default)]
struct Counts {
    total: usize,
    valid_verified: usize,
    valid_symmetric_refused: usize,
    invalid_public_refused: usize,
    invalid_private_only_refused: usize,
}

/// The errors a Wycheproof `invalid` public key set may be refused with:
/// the key's shape, type, size, curve, algorithm or use, never an I/O or
/// signing error.
fn invalid_key_refusal(e: &KeyError) -> bool {
    matches!(
        e,
        KeyError::Malformed(_)
            | KeyError::UnsupportedAlgorithm(_)
            | KeyError::UnsupportedCurve(_)
            | KeyError::UnsupportedOkpCurve(_)
            | KeyError::UnsupportedKeyType(_)
            | KeyError::AlgorithmMismatch { .. }
            | KeyError::RsaTooSmall(_)
            | KeyError::RsaBelowMinimum
            | KeyError::WeakRsa(_)
            | KeyError::WrongUse(_)
            | KeyError::PrivateMembers
    )
}

#[test]
fn json_web_key_vectors() {
    let doc = load();
    let mut c = Counts::default();
    let mut failures = Vec::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let name = group["comment"].as_str().unwrap_or("?");
        let public = group.get("public");
        let private = group.get("private");

        // A private set is never a verification key set: private members and
        // oct keys are both refused, strictly and leniently.
        let mut private_refusal = String::new();
        let mut private_lenient = JwkSet::default();
        if let Some(private) = private {
            let raw = private.to_string();
            let strict = JwkSet::parse(raw.as_bytes(), Algorithm::RS256);
            match &strict {
                Err(e @ (KeyError::PrivateMembers | KeyError::UnsupportedKeyType(_))) => {
                    private_refusal = e.to_string();
                }
                other => failures.push(format!("{name}: private set loaded: {other:?}")),
            }
            // The fetch path drops exactly the oct and private entries (the
            // "private" set of jws_mixedSymmetryKeyset holds a public EC key,
            // which is kept).
            let (lenient, rejected) =
                JwkSet::parse_lenient(raw.as_bytes(), Algorithm::RS256).unwrap();
            let entries = private["keys"].as_array().unwrap();
            let secret = |k: &Value| k["kty"] == "oct" || k.get("d").is_some();
            for r in &rejected {
                assert!(secret(&entries[r.index]), "{name}: dropped a public key");
            }
            let public_entries = entries.iter().filter(|k| !secret(k)).count();
            if lenient.keys.len() != public_entries
                || rejected.len() + public_entries != entries.len()
            {
                failures.push(format!(
                    "{name}: lenient load kept {lenient:?}, rejected {rejected:?}"
                ));
            }
            private_lenient = lenient;
        }

        for t in group["tests"].as_array().unwrap() {
            c.total += 1;
            let id = &t["tcId"];
            let comment = t["comment"].as_str().unwrap_or("");
            let result = t["result"].as_str().unwrap();
            let jws = t["jws"].as_str().expect("compact jws");
            let outcome: String;
            match (result, public) {
                ("valid", Some(public)) => {
                    // An asymmetric key set: it loads strictly and the token verifies.
                    match JwkSet::parse(public.to_string().as_bytes(), Algorithm::RS256) {
                        Ok(set) => match verify_with(&set, jws) {
                            Ok(_) => {
                                c.valid_verified += 1;
                                outcome = "loaded, jws verifies".into();
                            }
                            Err(e) => {
                                failures.push(format!("tc {id} {name}: valid jws fails: {e}"));
                                outcome = format!("jws fails: {e}");
                            }
                        },
                        Err(e) => {
                            failures.push(format!("tc {id} {name}: valid key refused: {e}"));
                            outcome = format!("key refused: {e}");
                        }
                    }
                }
                ("valid", None) => {
                    // HS* with a symmetric key: refused by design (DESIGN.md rule 1).
                    let private = private.expect("a group has keys");
                    assert!(
                        has_oct(private),
                        "tc {id}: only oct groups lack a public set"
                    );
                    c.valid_symmetric_refused += 1;
                    let e = verify_with(&private_lenient, jws).unwrap_err();
                    assert!(matches!(e, TokenError::UnknownKid(_)), "tc {id}: {e:?}");
                    outcome = format!(
                        "refused by design (HS*/oct never accepted): strict load: {private_refusal}; jws: {e}"
                    );
                }
                ("invalid", Some(public)) => {
                    let raw = public.to_string();
                    match JwkSet::parse(raw.as_bytes(), Algorithm::RS256) {
                        Err(e) if invalid_key_refusal(&e) => {
                            c.invalid_public_refused += 1;
                            outcome = format!("strict load refused: {e}");
                        }
                        Err(e) => {
                            failures.push(format!(
                                "tc {id} {name} ({comment}): refused with an unexpected error {e:?}"
                            ));
                            outcome = format!("strict load refused (unexpected): {e}");
                        }
                        Ok(_) => {
                            failures.push(format!(
                                "tc {id} {name} ({comment}): must-refuse key set loaded"
                            ));
                            outcome = "LOADED".into();
                        }
                    }
                    // The fetch path (lenient) drops the bad key, so nothing verifies the token.
                    let (set, _) = JwkSet::parse_lenient(raw.as_bytes(), Algorithm::RS256).unwrap();
                    if !set.keys.is_empty() {
                        failures.push(format!("tc {id} {name}: lenient load kept a bad key"));
                    }
                    // With no key left, the token finds none.
                    match verify_with(&set, jws) {
                        Err(TokenError::UnknownKid(_) | TokenError::MissingKid) => {}
                        other => failures.push(format!("tc {id} {name}: invalid jws: {other:?}")),
                    }
                }
                ("invalid", None) => {
                    // Only a private (oct/HS or AES) set: already asserted refused above.
                    let private = private.expect("a group has keys");
                    assert!(has_oct(private), "tc {id}");
                    c.invalid_private_only_refused += 1;
                    let e = verify_with(&private_lenient, jws).unwrap_err();
                    assert!(matches!(e, TokenError::UnknownKid(_)), "tc {id}: {e:?}");
                    outcome = format!("strict load refused: {private_refusal}; jws: {e}");
                }
                (other, _) => panic!("tc {id}: unexpected result {other:?}"),
            }
            eprintln!("json_web_key tc {id} [{result}] {name} / {comment}: {outcome}");
        }
    }
    eprintln!(
        "json_web_key_test.json: {} tests: valid asymmetric verified {}, valid HS*/oct refused by design {}, \
         invalid with public set refused {}, invalid private/oct-only set refused {}; failures {}",
        c.total,
        c.valid_verified,
        c.valid_symmetric_refused,
        c.invalid_public_refused,
        c.invalid_private_only_refused,
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(c.total > 0 && c.valid_verified > 0 && c.invalid_public_refused > 0);
    assert_eq!(
        c.total,
        c.valid_verified
            + c.valid_symmetric_refused
            + c.invalid_public_refused
            + c.invalid_private_only_refused
    );
}

/// Each must-refuse public key, one by one, with the reason keyward gives.
#[test]
fn each_bad_public_key_is_refused_for_its_reason() {
    let doc = load();
    let mut checked = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let Some(public) = group.get("public") else {
            continue;
        };
        let name = group["comment"].as_str().unwrap();
        let invalid = group["tests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["result"] == "invalid");
        if !invalid {
            continue;
        }
        let err = JwkSet::parse(public.to_string().as_bytes(), Algorithm::RS256).unwrap_err();
        let expected = match name {
            "rs256" => matches!(err, KeyError::WrongUse(_)), // use: enc, alg RSA1_5
            "jws_rsa_roca_key" => matches!(err, KeyError::WeakRsa(m) if m.contains("ROCA")),
            "keysize_too_small" => matches!(err, KeyError::RsaTooSmall(1024)),
            "exponentOne" => matches!(err, KeyError::WeakRsa(_)),
            "wrong_algorithm" | "invalid_algorithm" => {
                matches!(err, KeyError::UnsupportedAlgorithm(_)) // ES521, ES224
            }
            "invalid_use" => matches!(err, KeyError::WrongUse(_)),
            "invalid_point" => matches!(err, KeyError::Malformed(_)),
            "wrong_curve" => matches!(err, KeyError::AlgorithmMismatch { .. }),
            "wrong_kty" => matches!(err, KeyError::Malformed(_)),
            other => panic!("unclassified group {other}: {err:?}"),
        };
        assert!(expected, "{name}: unexpected refusal {err:?}");
        checked += 1;
    }
    assert_eq!(checked, 10);
}
