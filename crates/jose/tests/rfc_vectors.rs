//! Published JOSE test vectors: RFC 7515 Appendix A.3, RFC 7520 §4.1-4.3,
//! RFC 8037 Appendix A.3/A.4 and RFC 7638 §3.1. Each vector lives in
//! `tests/vectors/*.json` with a `source` naming its RFC section; only public
//! keys are stored.

use keyward_jose::{
    verify_compact, verify_jwt, Algorithm, ClaimsError, Error, Jwk, KeySet, TokenError, Validation,
    DEFAULT_MAX_TOKEN_LEN,
};
use serde_json::Value;

fn vector(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["source"].as_str().is_some_and(|s| s.starts_with("RFC ")),
        "{name} names its source"
    );
    v
}

fn key_of(v: &Value) -> Jwk {
    // RSA JWKs in these RFCs carry no `alg`: the vector's `alg` says which one.
    let rsa_default = v["alg"]
        .as_str()
        .map(|a| Algorithm::from_name(a).unwrap())
        .unwrap_or(Algorithm::RS256);
    Jwk::parse(v["key"].to_string().as_bytes(), rsa_default).unwrap()
}

fn str_of<'a>(v: &'a Value, member: &str) -> &'a str {
    v[member]
        .as_str()
        .unwrap_or_else(|| panic!("vector member {member:?}"))
}

/// Verifies the vector's compact JWS with its key and checks the payload
/// bytes and the header's algorithm; also checks that a flipped signature bit
/// fails, so a verifier accepting everything cannot pass.
fn check_compact(name: &str) {
    let v = vector(name);
    let jwk = key_of(&v);
    let alg = Algorithm::from_name(str_of(&v, "alg")).unwrap();
    assert_eq!(jwk.algorithm(), alg, "{name}");
    let token = str_of(&v, "compact");
    let (header, payload) = verify_compact(token, &jwk.key, DEFAULT_MAX_TOKEN_LEN)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(header.alg, alg, "{name}");
    assert_eq!(payload, str_of(&v, "payload").as_bytes(), "{name}");

    let mut bad = token.to_string().into_bytes();
    let last = bad.len() - 2; // not the final char: its low bits may be padding
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    assert_eq!(
        verify_compact(&bad, &jwk.key, DEFAULT_MAX_TOKEN_LEN).map(|_| ()),
        Err(TokenError::BadSignature),
        "{name}: altered signature"
    );
}

#[test]
fn rfc7515_a3_es256_jwt_verifies_with_a_fixed_clock() {
    let v = vector("rfc7515_a3_es256.json");
    let jwk = key_of(&v);
    assert_eq!(jwk.algorithm(), Algorithm::ES256);
    assert_eq!(jwk.kid, None, "the A.3 header has no kid");
    let mut keys = KeySet::new();
    keys.insert(None, jwk.key.clone()).unwrap();
    let policy = Validation {
        issuer: Some("joe".into()),
        required_claims: vec!["iss".into(), "exp".into()],
        required_typ: None,
        leeway_secs: 0,
        ..Validation::default()
    };
    let token = str_of(&v, "compact");
    // exp is 1300819380 (2011-03-22T18:43:00Z).
    let ok = verify_jwt(token, &keys, &policy, 1_300_819_000).unwrap();
    assert_eq!(ok.header.alg, Algorithm::ES256);
    assert_eq!(ok.claims.iss(), Some("joe"));
    assert_eq!(ok.claims.exp(), Some(1_300_819_380.0));
    assert_eq!(ok.claims.payload(), str_of(&v, "payload").as_bytes());
    assert_eq!(
        ok.claims.get("http://example.com/is_root"),
        Some(Value::Bool(true))
    );
    // The same token is expired at its exp.
    assert_eq!(
        verify_jwt(token, &keys, &policy, 1_300_819_380).unwrap_err(),
        Error::Claims(ClaimsError::Expired)
    );
    // And verify_compact agrees.
    let (_, payload) = verify_compact(token, &jwk.key, DEFAULT_MAX_TOKEN_LEN).unwrap();
    assert_eq!(payload, str_of(&v, "payload").as_bytes());
}

#[test]
fn rfc8037_a4_ed25519_signature_verifies() {
    check_compact("rfc8037_a4_ed25519.json");
}

#[test]
fn rfc8037_a3_okp_thumbprint() {
    let v = vector("rfc8037_a4_ed25519.json");
    let jwk = key_of(&v);
    assert_eq!(jwk.algorithm(), Algorithm::EdDSA);
    assert_eq!(jwk.key.thumbprint(), str_of(&v, "thumbprint"));
    assert_eq!(
        jwk.key.thumbprint(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn rfc7638_3_1_rsa_thumbprint() {
    let v = vector("rfc7638_3_1_thumbprint.json");
    let jwk = key_of(&v);
    assert_eq!(jwk.kid.as_deref(), Some("2011-04-29"));
    assert_eq!(jwk.key.thumbprint(), str_of(&v, "thumbprint"));
}

#[test]
fn rfc7520_4_1_rs256_signature_verifies() {
    check_compact("rfc7520_4_1_rs256.json");
}

#[test]
fn rfc7520_4_2_ps384_signature_verifies() {
    check_compact("rfc7520_4_2_ps384.json");
}

#[test]
fn rfc7520_4_3_es512_signature_verifies() {
    check_compact("rfc7520_4_3_es512.json");
}

#[test]
fn rfc7520_keys_are_bound_to_one_algorithm() {
    // The §3.3 RSA key loaded for RS256 does not verify the PS384 example,
    // even though the signature is genuine: the key has one algorithm.
    let rs = vector("rfc7520_4_1_rs256.json");
    let ps = vector("rfc7520_4_2_ps384.json");
    let rs_key = key_of(&rs);
    assert_eq!(
        verify_compact(str_of(&ps, "compact"), &rs_key.key, DEFAULT_MAX_TOKEN_LEN).map(|_| ()),
        Err(TokenError::AlgorithmKeyMismatch {
            token: "PS384",
            key: "RS256"
        })
    );
}
