//! Property tests over every algorithm: JWT sign/verify round trips with
//! arbitrary claims, single-bit tampering, key encodings (PKCS#8, SPKI DER,
//! PEM, JWK) and thumbprints, and sealing.
//!
//! RSA keys (2048 bits) are generated once per algorithm; EC and Ed25519 keys
//! are generated afresh for every case. Case counts are kept small so the
//! suite stays fast in debug builds.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use std::sync::OnceLock;

use keyward_jose::seal::{open, seal, RootKey, SealedKey};
use keyward_jose::{
    sign_jwt, verify_jwt, Algorithm, ClaimsError, Error, Jwk, JwkSet, KeyFamily, KeySet,
    LocalSigner, PrivateKey, PublicKey, SealError, TokenError, TokenSigner, Validation,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};

const ISS: &str = "https://auth.example";
const NOW: i64 = 1_700_000_000;
const REGISTERED: [&str; 9] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
];

fn is_rsa(alg: Algorithm) -> bool {
    alg.family() == KeyFamily::Rsa
}

/// Runs `f` with a signer for `alg`: a cached 2048-bit key for RSA (one per
/// algorithm), a fresh key otherwise.
fn with_signer<R>(alg: Algorithm, f: impl FnOnce(&LocalSigner) -> R) -> R {
    static RSA: [OnceLock<LocalSigner>; 6] = [const { OnceLock::new() }; 6];
    if is_rsa(alg) {
        let i = Algorithm::ALL.iter().position(|&a| a == alg).unwrap();
        let s = RSA[i]
            .get_or_init(|| LocalSigner::new(PrivateKey::generate(alg, Some(2048)).unwrap(), None));
        f(s)
    } else {
        f(&LocalSigner::new(
            PrivateKey::generate(alg, None).unwrap(),
            None,
        ))
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn extra_claims() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z_]{1,10}|.{0,12}", json_value(), 0..6).prop_map(|m| {
        m.into_iter()
            .filter(|(k, _)| !REGISTERED.contains(&k.as_str()))
            .collect()
    })
}

fn policy() -> Validation {
    Validation {
        // Arbitrary claims may be large; the length limit has its own tests.
        max_token_len: 1 << 20,
        // Every algorithm, ML-DSA included (it is opt-in by default).
        algorithms: Algorithm::ALL.to_vec(),
        ..Validation::access_token(ISS, &["api"])
    }
}

/// Flips one bit of the decoded segment `seg` (0 header, 1 payload, 2
/// signature) and re-encodes it canonically.
fn flip(token: &str, seg: usize, at: Index, bit: u8) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut bytes = B64.decode(&parts[seg]).unwrap();
    let i = at.index(bytes.len());
    bytes[i] ^= 1 << bit;
    parts[seg] = B64.encode(&bytes);
    parts.join(".")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn jwt_round_trip_and_single_bit_flips(
        sub in ".{0,40}",
        jti in ".{0,40}",
        extra in extra_claims(),
        at in any::<Index>(),
        bit in 0u8..8,
    ) {
        for alg in Algorithm::ALL {
            with_signer(alg, |signer| {
                let mut claims = extra.clone();
                for (k, v) in [
                    ("iss", json!(ISS)),
                    ("sub", json!(sub)),
                    ("aud", json!("api")),
                    ("exp", json!(NOW + 600)),
                    ("iat", json!(NOW)),
                    ("jti", json!(jti)),
                ] {
                    claims.insert(k.into(), v);
                }
                let token = sign_jwt(signer, Some("at+jwt"), &claims).unwrap();
                let mut keys = KeySet::new();
                let jwk = signer.public_jwk();
                keys.insert(jwk.kid, jwk.key).unwrap();

                let ok = verify_jwt(&token, &keys, &policy(), NOW)
                    .unwrap_or_else(|e| panic!("{alg}: {e}"));
                prop_assert_eq!(ok.header.alg, alg);
                prop_assert_eq!(ok.header.kid.as_deref(), Some(signer.kid()));
                prop_assert_eq!(ok.claims.sub(), Some(sub.as_str()));
                prop_assert_eq!(ok.claims.jti(), Some(jti.as_str()));
                prop_assert_eq!(ok.claims.to_value(), Value::Object(claims.clone()));
                for (k, v) in &extra {
                    prop_assert_eq!(ok.claims.get(k), Some(v.clone()));
                }

                // Any single-bit change to the signed bytes breaks the signature.
                for seg in [1, 2] {
                    let bad = flip(&token, seg, at, bit);
                    prop_assert_eq!(
                        verify_jwt(&bad, &keys, &policy(), NOW).map(|_| ()),
                        Err(Error::Token(TokenError::BadSignature)),
                        "{} segment {}", alg, seg
                    );
                }
                // A header flip fails too (often earlier: alg, kid or JSON).
                // Allowed: a header that no longer parses, names another or a
                // refused alg or kid, loses its typ, or keeps all that and
                // fails the signature. Never a claims or payload error.
                let bad = flip(&token, 0, at, bit);
                let err = verify_jwt(&bad, &keys, &policy(), NOW).map(|_| ()).unwrap_err();
                prop_assert!(
                    matches!(
                        err,
                        Error::Token(
                            TokenError::Header(_)
                                | TokenError::DuplicateMember(_, "header")
                                | TokenError::ForbiddenAlgorithm(_)
                                | TokenError::AlgorithmNotAllowed(_)
                                | TokenError::AlgorithmKeyMismatch { .. }
                                | TokenError::UnknownCritical(_)
                                | TokenError::MalformedCritical
                                | TokenError::UnknownKid(_)
                                | TokenError::MissingKid
                                | TokenError::BadSignature
                        ) | Error::Claims(ClaimsError::WrongType(_, _))
                    ),
                    "{} header flip: {:?}", alg, err
                );
                Ok(())
            })?;
        }
    }

    #[test]
    fn key_encodings_round_trip_with_a_stable_thumbprint(kid in proptest::option::of(".{0,24}")) {
        for alg in Algorithm::ALL {
            with_signer(alg, |signer| {
                let private = signer.key();
                let public = private.public_key();
                let thumbprint = public.thumbprint();
                prop_assert_eq!(thumbprint.len(), 43);
                prop_assert_eq!(B64.decode(&thumbprint).ok().map(|t| t.len()), Some(32));

                // PKCS#8 -> PrivateKey: same public key, and it signs for the original.
                let again = PrivateKey::from_der(alg, &private.to_pkcs8_der()).unwrap();
                prop_assert_eq!(again.public_key(), public);
                let sig = again.sign(b"round trip").unwrap();
                prop_assert!(public.verify(b"round trip", &sig).is_ok());

                // SPKI DER and PEM.
                let from_der = PublicKey::from_der(alg, &public.to_spki_der()).unwrap();
                prop_assert_eq!(&from_der, public);
                let from_pem = PublicKey::from_pem(alg, &public.to_pem()).unwrap();
                prop_assert_eq!(&from_pem, public);

                // JWK and JWK Set (the RSA default must not matter: `alg` is written).
                let jwk = public.to_jwk(kid.clone());
                let parsed = Jwk::parse(jwk.to_json().as_bytes(), Algorithm::PS512).unwrap();
                prop_assert_eq!(&parsed, &jwk);
                let set = JwkSet { keys: vec![jwk.clone()] };
                prop_assert_eq!(
                    JwkSet::parse(set.to_json().as_bytes(), Algorithm::RS256).unwrap(),
                    set
                );

                for k in [again.public_key(), &from_der, &from_pem, &parsed.key] {
                    prop_assert_eq!(k.thumbprint(), thumbprint.clone());
                }
                // The thumbprint depends on the key only, not on kid or alg.
                if is_rsa(alg) {
                    let other_alg = PublicKey::from_material(
                        Algorithm::RS512,
                        public.material().clone(),
                    )
                    .unwrap();
                    prop_assert_eq!(other_alg.thumbprint(), thumbprint);
                }
                Ok(())
            })?;
        }
    }

    #[test]
    fn sealing_round_trip(
        aad in prop::collection::vec(any::<u8>(), 0..64),
        other_aad in prop::collection::vec(any::<u8>(), 0..64),
        plaintext in prop::collection::vec(any::<u8>(), 0..2048),
        at in any::<Index>(),
        bit in 0u8..8,
    ) {
        let root = RootKey::generate();
        let sealed = seal(&root, &aad, &plaintext).unwrap();
        let opened = open(&root, &aad, &sealed).unwrap();
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());

        let stored = sealed.to_bytes();
        let parsed = SealedKey::from_bytes(&stored).unwrap();
        prop_assert_eq!(&parsed, &sealed);
        let opened = open(&root, &aad, &parsed).unwrap();
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());

        if other_aad != aad {
            prop_assert_eq!(open(&root, &other_aad, &sealed).map(|_| ()), Err(SealError::OpenFailed));
        }
        prop_assert_eq!(
            open(&RootKey::generate(), &aad, &sealed).map(|_| ()),
            Err(SealError::OpenFailed)
        );
        // Sealing twice gives different bytes (fresh data key and nonces).
        prop_assert_ne!(seal(&root, &aad, &plaintext).unwrap().to_bytes(), stored.clone());

        // Any single-bit change to the stored form fails to parse or to open.
        let mut tampered = stored;
        let i = at.index(tampered.len());
        tampered[i] ^= 1 << bit;
        let reopened = SealedKey::from_bytes(&tampered).and_then(|s| open(&root, &aad, &s));
        let err = reopened.map(|_| ()).unwrap_err();
        prop_assert!(
            matches!(err, SealError::Malformed | SealError::OpenFailed),
            "{:?}", err
        );
    }
}
