//! ML-DSA (FIPS 204) as RFC 9964 puts it in JOSE: `AKP` JWKs read strictly,
//! sign -> verify per parameter set, and each refusal with its own error.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use keyward_jose::{
    sign_jwt, verify_jwt, Algorithm, Error, Jwk, KeyError, KeySet, LocalSigner, PrivateKey,
    PublicKey, TokenError, TokenSigner, Validation,
};
use serde_json::{json, Value};

const ML_DSA: [Algorithm; 3] = [Algorithm::MlDsa44, Algorithm::MlDsa65, Algorithm::MlDsa87];
const NOW: i64 = 1_700_000_000;

fn claims() -> Value {
    json!({"iss": "https://auth.example", "sub": "alice", "aud": "api",
           "exp": NOW + 600, "iat": NOW, "jti": "1"})
}

fn policy(algorithms: &[Algorithm]) -> Validation {
    Validation {
        algorithms: algorithms.to_vec(),
        ..Validation::access_token("https://auth.example", &["api"])
    }
}

fn keys_of(signer: &LocalSigner) -> KeySet {
    let mut keys = KeySet::new();
    let jwk = signer.public_jwk();
    keys.insert(jwk.kid, jwk.key).unwrap();
    keys
}

fn parse(v: &Value) -> Result<Jwk, KeyError> {
    Jwk::parse(v.to_string().as_bytes(), Algorithm::RS256)
}

fn private_jwk(key: &PrivateKey, seed: &[u8]) -> Value {
    let mut v = key.public_key().to_jwk(None).to_value();
    v["priv"] = json!(B64.encode(seed));
    v
}

#[test]
fn sign_verify_round_trip_per_parameter_set() {
    for alg in ML_DSA {
        let signer = LocalSigner::new(PrivateKey::generate(alg, None).unwrap(), None);
        let token = sign_jwt(&signer, Some("at+jwt"), &claims()).unwrap();
        assert!(token.len() <= keyward_jose::DEFAULT_MAX_TOKEN_LEN, "{alg}");
        let keys = keys_of(&signer);
        let ok = verify_jwt(&token, &keys, &policy(&[alg]), NOW).unwrap();
        assert_eq!(ok.header.alg, alg);
        assert_eq!(ok.claims.sub(), Some("alice"));

        // The JWK a JWKS would publish reads back to the same key.
        let jwk = signer.public_jwk().to_value();
        assert_eq!(jwk["kty"], "AKP");
        assert_eq!(jwk["alg"], alg.name());
        assert!(jwk.get("crv").is_none() && jwk.get("priv").is_none());
        assert_eq!(parse(&jwk).unwrap(), signer.public_jwk());

        // Opt-in: the default policy does not accept ML-DSA.
        assert!(matches!(
            verify_jwt(&token, &keys, &Validation::access_token("https://auth.example", &["api"]), NOW),
            Err(Error::Token(TokenError::AlgorithmNotAllowed(name))) if name == alg.name()
        ));
    }
}

#[test]
fn tampered_tokens_are_refused_with_the_specific_error() {
    let signer = LocalSigner::new(
        PrivateKey::generate(Algorithm::MlDsa65, None).unwrap(),
        None,
    );
    let token = sign_jwt(&signer, Some("at+jwt"), &claims()).unwrap();
    let keys = keys_of(&signer);
    let policy = policy(&[Algorithm::MlDsa65]);
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig = B64.decode(sig).unwrap();

    // One bit of the signature.
    sig[100] ^= 1;
    let bad = format!("{input}.{}", B64.encode(&sig));
    assert!(matches!(
        verify_jwt(&bad, &keys, &policy, NOW),
        Err(Error::Token(TokenError::BadSignature))
    ));
    sig[100] ^= 1;

    // Another payload under the same signature.
    let (header, _) = input.split_once('.').unwrap();
    let mut other = claims();
    other["sub"] = json!("mallory");
    let forged = format!(
        "{header}.{}.{}",
        B64.encode(other.to_string().as_bytes()),
        B64.encode(&sig)
    );
    assert!(matches!(
        verify_jwt(&forged, &keys, &policy, NOW),
        Err(Error::Token(TokenError::BadSignature))
    ));

    // A signature one byte short or long.
    for len in [sig.len() - 1, sig.len() + 1] {
        let mut s = sig.clone();
        s.resize(len, 0);
        let bad = format!("{input}.{}", B64.encode(&s));
        assert!(matches!(
            verify_jwt(&bad, &keys, &policy, NOW),
            Err(Error::Token(TokenError::SignatureLength("ML-DSA-65")))
        ));
    }
}

#[test]
fn header_alg_must_equal_the_keys() {
    // An ML-DSA-44 key; a token whose header says ML-DSA-65, signed by it.
    let key = PrivateKey::generate(Algorithm::MlDsa44, None).unwrap();
    let mut keys = KeySet::new();
    keys.insert(Some("k".into()), key.public_key().clone())
        .unwrap();
    let input = format!(
        "{}.{}",
        B64.encode(br#"{"alg":"ML-DSA-65","kid":"k","typ":"at+jwt"}"#),
        B64.encode(claims().to_string().as_bytes())
    );
    let token = format!(
        "{input}.{}",
        B64.encode(key.sign(input.as_bytes()).unwrap())
    );
    assert!(matches!(
        verify_jwt(&token, &keys, &policy(&Algorithm::ALL), NOW),
        Err(Error::Token(TokenError::AlgorithmKeyMismatch {
            token: "ML-DSA-65",
            key: "ML-DSA-44"
        }))
    ));
}

#[test]
fn public_jwk_refusals() {
    let key = PrivateKey::generate(Algorithm::MlDsa44, None).unwrap();
    let good = key.public_key().to_jwk(Some("a".into())).to_value();
    assert!(parse(&good).is_ok());

    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("alg");
    assert_eq!(parse(&v), Err(KeyError::AkpMissingAlgorithm));

    let public = B64.decode(good["pub"].as_str().unwrap()).unwrap();
    for len in [0, 1311, 1313, 1952] {
        let mut p = public.clone();
        p.resize(len, 7);
        let mut v = good.clone();
        v["pub"] = json!(B64.encode(&p));
        assert_eq!(
            parse(&v),
            Err(KeyError::PublicKeyLength {
                alg: "ML-DSA-44",
                expected: 1312,
                got: len
            })
        );
    }
    // An ML-DSA-44 key named as ML-DSA-65 has the wrong length for it.
    let mut v = good.clone();
    v["alg"] = json!("ML-DSA-65");
    assert!(matches!(
        parse(&v),
        Err(KeyError::PublicKeyLength {
            alg: "ML-DSA-65",
            expected: 1952,
            got: 1312
        })
    ));

    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("pub");
    assert!(matches!(parse(&v), Err(KeyError::Malformed(m)) if m.contains("\"pub\"")));

    let mut v = good.clone();
    v["alg"] = json!("ES256");
    assert!(matches!(
        parse(&v),
        Err(KeyError::AlgorithmMismatch { alg: "ES256", .. })
    ));
    let mut v = good.clone();
    v["alg"] = json!("SLH-DSA-SHA2-128s");
    assert!(matches!(parse(&v), Err(KeyError::UnsupportedAlgorithm(_))));

    // An ML-DSA algorithm on another key type.
    let ed = PrivateKey::generate(Algorithm::EdDSA, None).unwrap();
    let mut v = ed.public_key().to_jwk(None).to_value();
    v["alg"] = json!("ML-DSA-44");
    assert!(matches!(
        parse(&v),
        Err(KeyError::AlgorithmMismatch {
            alg: "ML-DSA-44",
            ..
        })
    ));

    let mut v = good.clone();
    v["priv"] = json!(B64.encode([0; 32]));
    assert_eq!(parse(&v), Err(KeyError::PrivateMembers));

    let mut v = good.clone();
    v["pub"] = json!(format!("{}=", good["pub"].as_str().unwrap()));
    assert!(matches!(parse(&v), Err(KeyError::Malformed(_))));
}

#[test]
fn private_jwk_refusals() {
    let seed = [9u8; 32];
    let key = PrivateKey::from_seed(Algorithm::MlDsa65, &seed).unwrap();
    let good = private_jwk(&key, &seed);
    let read = |v: &Value| PrivateKey::from_jwk(v.to_string().as_bytes());
    assert_eq!(read(&good).unwrap().public_key(), key.public_key());

    for len in [0, 31, 33, 64] {
        let mut v = good.clone();
        v["priv"] = json!(B64.encode(vec![9u8; len]));
        assert_eq!(
            read(&v).unwrap_err(),
            KeyError::SeedLength {
                alg: "ML-DSA-65",
                got: len
            }
        );
    }
    // A valid seed of another key.
    let mut v = good.clone();
    v["priv"] = json!(B64.encode([8u8; 32]));
    assert_eq!(read(&v).unwrap_err(), KeyError::SeedMismatch);

    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("alg");
    assert_eq!(read(&v).unwrap_err(), KeyError::AkpMissingAlgorithm);

    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("priv");
    assert!(matches!(read(&v), Err(KeyError::Malformed(m)) if m.contains("\"priv\"")));

    let mut v = good.clone();
    v["key_ops"] = json!(["verify"]);
    assert!(matches!(read(&v), Err(KeyError::WrongUse(_))));
    v["key_ops"] = json!(["sign"]);
    assert!(read(&v).is_ok());

    let ec = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let mut v = ec.public_key().to_jwk(None).to_value();
    v["d"] = json!(B64.encode([1; 32]));
    assert!(matches!(read(&v), Err(KeyError::UnsupportedKeyType(_))));

    // Seeds are for ML-DSA only.
    assert!(matches!(
        PrivateKey::from_seed(Algorithm::EdDSA, &seed),
        Err(KeyError::Malformed(_))
    ));
}

#[test]
fn rfc9964_all_zero_seed_thumbprint() {
    // RFC 9964 Figure 1 / Appendix A.1: the ML-DSA-44 key of the all-zero
    // seed, whose kid is its AKP thumbprint over {"alg","kty","pub"}.
    let key = PrivateKey::from_seed(Algorithm::MlDsa44, &[0; 32]).unwrap();
    let jwk = key.public_key().to_jwk(None).to_value();
    assert!(jwk["pub"].as_str().unwrap().starts_with("unH59k4Ru"));
    assert!(jwk["pub"]
        .as_str()
        .unwrap()
        .ends_with("DZgbTP07e7gEWzw4MFRrndjbDQ"));
    assert_eq!(
        key.public_key().thumbprint(),
        "T4xl70S7MT6Zeq6r9V9fPJGVn76wfnXJ21-gyo0Gu6o"
    );
}

#[test]
fn encodings_and_generation() {
    for alg in ML_DSA {
        let key = PrivateKey::generate(alg, None).unwrap();
        assert!(matches!(
            PrivateKey::generate(alg, Some(2048)),
            Err(KeyError::Malformed(_))
        ));
        // PKCS#8 (seed form) and SPKI PEM round trips.
        let again = PrivateKey::from_der(alg, &key.to_pkcs8_der()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let pem = key.public_key().to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(&PublicKey::from_pem(alg, &pem).unwrap(), key.public_key());
        // The raw key is not SPKI; another parameter set's key is refused.
        let jwk = key.public_key().to_jwk(None).to_value();
        let raw = B64.decode(jwk["pub"].as_str().unwrap()).unwrap();
        assert!(matches!(
            PublicKey::from_der(alg, &raw),
            Err(KeyError::Malformed(_))
        ));
        for other in ML_DSA.into_iter().filter(|&o| o != alg) {
            assert!(matches!(
                PrivateKey::from_der(other, &key.to_pkcs8_der()),
                Err(KeyError::Malformed(_))
            ));
            assert!(matches!(
                PublicKey::from_der(other, &key.public_key().to_spki_der()),
                Err(KeyError::Malformed(_))
            ));
        }
        assert!(matches!(
            PrivateKey::from_der(Algorithm::EdDSA, &key.to_pkcs8_der()),
            Err(KeyError::Malformed(_))
        ));
        assert!(!format!("{key:?}").contains(&B64.encode(key.to_pkcs8_der())));
    }
}
