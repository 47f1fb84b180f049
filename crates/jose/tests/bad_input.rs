//! One negative test per bad-input class of DESIGN.md rule 1, each asserting
//! the specific error. Tokens are built by hand and, unless the test is about
//! the signature, correctly signed over exactly the text sent, so each
//! failure comes from the check under test and not from a bad signature.
//! Keys are generated at test time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use std::sync::OnceLock;

use aws_lc_rs::hmac;
use keyward_jose::{
    sign_jwt, verify_compact, verify_jwt, Algorithm, ClaimsError, Error, Jwk, JwkSet, KeyError,
    KeySet, LocalSigner, PrivateKey, PublicKey, PublicMaterial, TokenError, TokenSigner,
    Validation, VerifiedToken, DEFAULT_MAX_TOKEN_LEN,
};
use serde_json::{json, Value};

const ISS: &str = "https://auth.example";
const AUD: &str = "api";
const NOW: i64 = 1_700_000_000;
const KID: &str = "k1";

fn es256() -> &'static LocalSigner {
    static S: OnceLock<LocalSigner> = OnceLock::new();
    S.get_or_init(|| {
        LocalSigner::new(
            PrivateKey::generate(Algorithm::ES256, None).unwrap(),
            Some(KID.into()),
        )
    })
}

/// An RS256 signer on a 2048-bit key, generated once.
fn rs256() -> &'static LocalSigner {
    static S: OnceLock<LocalSigner> = OnceLock::new();
    S.get_or_init(|| {
        LocalSigner::new(
            PrivateKey::generate(Algorithm::RS256, Some(2048)).unwrap(),
            Some("rsa".into()),
        )
    })
}

fn keys_of(signers: &[&LocalSigner]) -> KeySet {
    let mut ks = KeySet::new();
    for s in signers {
        let jwk = s.public_jwk();
        ks.insert(jwk.kid, jwk.key).unwrap();
    }
    ks
}

fn keys() -> KeySet {
    keys_of(&[es256()])
}

fn policy() -> Validation {
    Validation::access_token(ISS, &[AUD])
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "alice", "aud": AUD, "exp": NOW + 600, "iat": NOW,
        "jti": "j1", "client_id": "c1", "scope": "read"
    })
}

fn header() -> Value {
    json!({"alg": "ES256", "kid": KID, "typ": "at+jwt"})
}

/// `header.payload.signature` with the segment texts as given, signed by
/// `signer` over exactly `h.p`.
fn signed_text(signer: &dyn TokenSigner, h: &str, p: &str) -> String {
    let input = format!("{h}.{p}");
    let sig = signer.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(&sig))
}

/// A token from raw header and payload bytes, canonically encoded and signed.
fn signed_raw(signer: &dyn TokenSigner, header: &[u8], payload: &[u8]) -> String {
    signed_text(signer, &B64.encode(header), &B64.encode(payload))
}

fn signed(header: &Value, claims: &Value) -> String {
    signed_raw(
        es256(),
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
    )
}

fn verify(token: &str) -> Result<VerifiedToken, Error> {
    verify_jwt(token, &keys(), &policy(), NOW)
}

#[track_caller]
fn token_err(r: Result<VerifiedToken, Error>) -> TokenError {
    match r {
        Err(Error::Token(e)) => e,
        other => panic!("expected a token error, got {other:?}"),
    }
}

#[track_caller]
fn claims_err(r: Result<VerifiedToken, Error>) -> ClaimsError {
    match r {
        Err(Error::Claims(e)) => e,
        other => panic!("expected a claims error, got {other:?}"),
    }
}

#[test]
fn the_baseline_token_verifies() {
    // Every negative test below differs from this in one respect.
    let t = signed(&header(), &claims());
    let ok = verify(&t).unwrap();
    assert_eq!(ok.claims.sub(), Some("alice"));
    let t = sign_jwt(es256(), Some("at+jwt"), &claims()).unwrap();
    verify(&t).unwrap();
}

// ---- structure -------------------------------------------------------------

#[test]
fn more_or_fewer_than_three_segments() {
    let good = signed(&header(), &claims());
    let (hp, s) = good.rsplit_once('.').unwrap();
    for bad in [
        String::new(),
        "abc".into(),
        hp.to_string(),
        format!("{hp}.{s}."),
        format!("{good}.{s}"),
        format!("{hp}.{s}.x.y"), // JWE-shaped: five segments
        format!(".{good}"),
    ] {
        assert_eq!(token_err(verify(&bad)), TokenError::Segments, "{bad:?}");
        assert_eq!(
            verify_compact(&bad, es256().key().public_key(), DEFAULT_MAX_TOKEN_LEN).map(|_| ()),
            Err(TokenError::Segments)
        );
    }
}

#[test]
fn longer_than_the_length_limit() {
    assert_eq!(DEFAULT_MAX_TOKEN_LEN, 8 * 1024);
    assert_eq!(policy().max_token_len, DEFAULT_MAX_TOKEN_LEN);
    // Grow a correctly signed token byte by byte across the limit: the last one
    // within the limit verifies, the first one over it is refused for length.
    let (mut last_ok, mut first_over) = (0, 0);
    for pad in 5600..6400 {
        let mut c = claims();
        c["pad"] = json!("x".repeat(pad));
        let t = signed(&header(), &c);
        if t.len() <= DEFAULT_MAX_TOKEN_LEN {
            verify(&t).unwrap();
            last_ok = t.len();
        } else {
            assert_eq!(
                token_err(verify(&t)),
                TokenError::TooLong(DEFAULT_MAX_TOKEN_LEN)
            );
            first_over = t.len();
            break;
        }
    }
    assert!(last_ok > DEFAULT_MAX_TOKEN_LEN - 4, "{last_ok}");
    assert!(first_over > DEFAULT_MAX_TOKEN_LEN, "{first_over}");
    // A huge token is refused before anything is decoded.
    let huge = format!("{}.{}.{}", "a".repeat(10_000), "b", "c");
    assert_eq!(
        token_err(verify(&huge)),
        TokenError::TooLong(DEFAULT_MAX_TOKEN_LEN)
    );
}

/// JSON text padded with spaces so its length is not a multiple of 3 and its
/// base64url form therefore has unused trailing bits and would need padding.
fn not_multiple_of_3(v: &Value) -> String {
    let mut s = v.to_string();
    while s.len().rem_euclid(3) == 0 {
        s.push(' ');
    }
    s
}

fn padded(seg: &str) -> String {
    format!("{seg}{}", "=".repeat((4 - seg.len() % 4) % 4))
}

/// Sets the unused low bits of the last character of a base64url segment.
fn dirty_trailing_bits(seg: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let unused_mask = match seg.len() % 4 {
        2 => 0b1111,
        3 => 0b11,
        _ => panic!("segment has no unused bits"),
    };
    let last = *seg.as_bytes().last().unwrap();
    let idx = ALPHABET.iter().position(|&c| c == last).unwrap();
    assert_eq!(idx & unused_mask, 0, "canonical input");
    let mut out = seg[..seg.len() - 1].to_string();
    out.push(ALPHABET[idx | 1] as char);
    assert!(B64.decode(&out).is_err());
    out
}

/// The standard-alphabet form of a base64url segment (which must contain `-` or `_`).
fn standard_alphabet(seg: &str) -> String {
    assert!(seg.contains(['-', '_']), "{seg}");
    seg.replace('-', "+").replace('_', "/")
}

/// A header (or claims) whose encoding contains `-` or `_`, found by varying a nonce.
fn with_url_chars(base: &Value, member: &str) -> String {
    (0..10_000)
        .map(|i| {
            let mut v = base.clone();
            v[member] = json!(format!("{i}>>>???~~~"));
            B64.encode(v.to_string().as_bytes())
        })
        .find(|s| s.contains(['-', '_']))
        .unwrap()
}

#[test]
fn non_canonical_base64url_in_the_header() {
    let p = B64.encode(claims().to_string().as_bytes());
    let h = B64.encode(not_multiple_of_3(&header()).as_bytes());
    assert_ne!(h.len() % 4, 0);
    for bad_h in [
        padded(&h),
        dirty_trailing_bits(&h),
        standard_alphabet(&with_url_chars(&header(), "nonce")),
        format!(" {h}"),
    ] {
        let t = signed_text(es256(), &bad_h, &p);
        assert_eq!(
            token_err(verify(&t)),
            TokenError::Base64("header"),
            "{bad_h}"
        );
    }
}

#[test]
fn non_canonical_base64url_in_the_payload() {
    let h = B64.encode(header().to_string().as_bytes());
    let p = B64.encode(not_multiple_of_3(&claims()).as_bytes());
    assert_ne!(p.len() % 4, 0);
    for bad_p in [
        padded(&p),
        dirty_trailing_bits(&p),
        standard_alphabet(&with_url_chars(&claims(), "nonce")),
        format!("{p} "),
    ] {
        // Signed over the bad text: the signature is fine, the encoding is not.
        let t = signed_text(es256(), &h, &bad_p);
        assert_eq!(
            token_err(verify(&t)),
            TokenError::Base64("payload"),
            "{bad_p}"
        );
        let r = verify_compact(&t, es256().key().public_key(), DEFAULT_MAX_TOKEN_LEN);
        assert_eq!(r.map(|_| ()), Err(TokenError::Base64("payload")));
    }
}

#[test]
fn non_canonical_base64url_in_the_signature() {
    // An ES256 signature is 64 bytes: 86 characters, 4 unused bits, "==" if padded.
    let mut t = signed(&header(), &claims());
    while !t.rsplit_once('.').unwrap().1.contains(['-', '_']) {
        t = signed(&header(), &claims()); // ECDSA signatures are randomized
    }
    let (hp, s) = t.rsplit_once('.').unwrap();
    assert_eq!(s.len(), 86);
    for bad_s in [
        padded(s),
        dirty_trailing_bits(s),
        standard_alphabet(s),
        format!("{s}\n"),
    ] {
        let bad = format!("{hp}.{bad_s}");
        assert_eq!(
            token_err(verify(&bad)),
            TokenError::Base64("signature"),
            "{bad_s}"
        );
    }
}

// ---- header ----------------------------------------------------------------

#[test]
fn header_not_a_json_object() {
    let p = claims().to_string();
    for h in [
        "[\"ES256\"]",
        "\"ES256\"",
        "null",
        "42",
        "{\"alg\":\"ES256\"",
        "{\"alg\":\"ES256\",\"kid\":\"k1\"} {}",
        "",
        "\u{feff}{\"alg\":\"ES256\",\"kid\":\"k1\"}",
    ] {
        let t = signed_raw(es256(), h.as_bytes(), p.as_bytes());
        assert!(
            matches!(token_err(verify(&t)), TokenError::Header(_)),
            "{h:?}"
        );
    }
    // Invalid UTF-8 in the header is not JSON either.
    let t = signed_raw(
        es256(),
        b"{\"alg\":\"ES256\",\"kid\":\"\xff\"}",
        p.as_bytes(),
    );
    assert!(matches!(token_err(verify(&t)), TokenError::Header(_)));
    // Members keyward reads must be strings.
    let t = signed(&json!({"alg": "ES256", "kid": KID, "typ": 1}), &claims());
    assert!(matches!(token_err(verify(&t)), TokenError::Header(_)));
    let t = signed(&json!({"kid": KID, "typ": "at+jwt"}), &claims());
    assert!(
        matches!(token_err(verify(&t)), TokenError::Header(_)),
        "no alg"
    );
}

#[test]
fn duplicate_header_member() {
    let p = claims().to_string();
    for h in [
        r#"{"alg":"ES256","kid":"k1","typ":"at+jwt","kid":"k1"}"#,
        r#"{"alg":"ES256","alg":"ES256","kid":"k1","typ":"at+jwt"}"#,
        r#"{"alg":"ES256","kid":"k1","typ":"at+jwt","\u0061lg":"ES256"}"#,
        r#"{"alg":"ES256","kid":"k1","typ":"at+jwt","x":1,"x":2}"#,
    ] {
        let t = signed_raw(es256(), h.as_bytes(), p.as_bytes());
        assert!(
            matches!(
                token_err(verify(&t)),
                TokenError::DuplicateMember(_, "header")
            ),
            "{h}"
        );
    }
}

// ---- payload ---------------------------------------------------------------

#[test]
fn payload_not_a_json_object() {
    let h = header().to_string();
    for p in [
        "[]",
        "\"claims\"",
        "123",
        "null",
        "",
        "{\"exp\":1",
        "{\"sub\":\"a\"} {}",
        "{\"exp\":1e999}",
    ] {
        let t = signed_raw(es256(), h.as_bytes(), p.as_bytes());
        assert!(
            matches!(token_err(verify(&t)), TokenError::Payload(_)),
            "{p:?}"
        );
    }
    let t = signed_raw(es256(), h.as_bytes(), b"{\"sub\":\"\xff\"}");
    assert!(matches!(token_err(verify(&t)), TokenError::Payload(_)));
    // Invalid UTF-8 in a claim keyward does not read (which a JSON parser
    // may skip without decoding) is refused as well: the payload is UTF-8.
    let mut c = claims().to_string().into_bytes();
    c.pop();
    c.extend_from_slice(b",\"note\":\"\xc3\x28\"}");
    let t = signed_raw(es256(), h.as_bytes(), &c);
    assert!(matches!(token_err(verify(&t)), TokenError::Payload(_)));
    let mut hb = h.clone().into_bytes();
    hb.pop();
    hb.extend_from_slice(b",\"x-note\":\"\xed\xa0\x80\"}");
    let t = signed_raw(es256(), &hb, claims().to_string().as_bytes());
    assert!(matches!(token_err(verify(&t)), TokenError::Header(_)));
}

#[test]
fn duplicate_payload_member() {
    let h = header().to_string();
    let base = claims().to_string();
    let body = &base[1..base.len() - 1];
    for extra in [
        r#""sub":"mallory""#,
        r#""exp":9999999999"#,
        r#""\u0073ub":"mallory""#,
        r#""roles":["a"],"roles":["admin"]"#,
    ] {
        let p = format!("{{{body},{extra}}}");
        let t = signed_raw(es256(), h.as_bytes(), p.as_bytes());
        assert!(
            matches!(
                token_err(verify(&t)),
                TokenError::DuplicateMember(_, "payload")
            ),
            "{p}"
        );
    }
}

// ---- algorithms ------------------------------------------------------------

#[test]
fn alg_none_is_never_accepted() {
    for name in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": name, "kid": KID, "typ": "at+jwt"});
        let hp = format!(
            "{}.{}",
            B64.encode(h.to_string().as_bytes()),
            B64.encode(claims().to_string().as_bytes())
        );
        for t in [format!("{hp}."), signed(&h, &claims())] {
            assert_eq!(
                token_err(verify(&t)),
                TokenError::ForbiddenAlgorithm(name.into())
            );
            assert_eq!(
                verify_compact(&t, es256().key().public_key(), DEFAULT_MAX_TOKEN_LEN).map(|_| ()),
                Err(TokenError::ForbiddenAlgorithm(name.into()))
            );
        }
    }
}

#[test]
fn hmac_algorithms_are_never_accepted_even_keyed_with_the_public_key() {
    // The key-confusion attack: HMAC "signed" with the verifier's public key
    // bytes as the secret (in each form a verifier might hold it).
    let public = es256().key().public_key();
    let secrets: [Vec<u8>; 3] = [
        public.to_pem().into_bytes(),
        public.to_spki_der(),
        es256().public_jwk().to_json().into_bytes(),
    ];
    for (name, algorithm) in [
        ("HS256", hmac::HMAC_SHA256),
        ("HS384", hmac::HMAC_SHA384),
        ("HS512", hmac::HMAC_SHA512),
    ] {
        for secret in &secrets {
            let h = json!({"alg": name, "kid": KID, "typ": "at+jwt"});
            let input = format!(
                "{}.{}",
                B64.encode(h.to_string().as_bytes()),
                B64.encode(claims().to_string().as_bytes())
            );
            let tag = hmac::sign(&hmac::Key::new(algorithm, secret), input.as_bytes());
            let t = format!("{input}.{}", B64.encode(tag.as_ref()));
            assert_eq!(
                token_err(verify(&t)),
                TokenError::ForbiddenAlgorithm(name.into())
            );
            assert_eq!(
                verify_compact(&t, public, DEFAULT_MAX_TOKEN_LEN).map(|_| ()),
                Err(TokenError::ForbiddenAlgorithm(name.into()))
            );
        }
    }
    // Nor can a policy, a key or a JWK name them.
    for name in ["HS256", "HS384", "HS512", "none"] {
        assert!(matches!(
            Algorithm::from_name(name),
            Err(KeyError::UnsupportedAlgorithm(_))
        ));
    }
}

#[test]
fn alg_not_in_the_policy_allowlist() {
    let t = signed(&header(), &claims());
    let p = Validation {
        algorithms: vec![Algorithm::ES384, Algorithm::EdDSA, Algorithm::RS256],
        ..policy()
    };
    assert_eq!(
        token_err(verify_jwt(&t, &keys(), &p, NOW)),
        TokenError::AlgorithmNotAllowed("ES256")
    );
    let p = Validation {
        algorithms: vec![],
        ..policy()
    };
    assert_eq!(
        token_err(verify_jwt(&t, &keys(), &p, NOW)),
        TokenError::AlgorithmNotAllowed("ES256")
    );
}

#[test]
fn rfc_9864_ed25519_names_eddsa_and_nothing_else() {
    // A token whose header says `Ed25519` (RFC 9864's fully-specified name)
    // verifies with an EdDSA key, from a JWK that also says `Ed25519`.
    let ed = LocalSigner::new(
        PrivateKey::generate(Algorithm::EdDSA, None).unwrap(),
        Some("ed".into()),
    );
    let mut jwk = ed.public_jwk().to_value();
    jwk["alg"] = "Ed25519".into();
    let jwk = Jwk::parse(jwk.to_string().as_bytes(), Algorithm::RS256).unwrap();
    assert_eq!(jwk.algorithm(), Algorithm::EdDSA);
    let mut ks = KeySet::new();
    ks.insert(jwk.kid, jwk.key).unwrap();
    let h = json!({"alg": "Ed25519", "kid": "ed", "typ": "at+jwt"});
    let t = signed_raw(
        &ed,
        h.to_string().as_bytes(),
        claims().to_string().as_bytes(),
    );
    let v = verify_jwt(&t, &ks, &policy(), NOW).unwrap();
    assert_eq!(v.header.alg, Algorithm::EdDSA);
    // Not with a key of another algorithm, nor where EdDSA is not allowed.
    let h = json!({"alg": "Ed25519", "kid": KID, "typ": "at+jwt"});
    let t = signed_raw(
        &ed,
        h.to_string().as_bytes(),
        claims().to_string().as_bytes(),
    );
    assert!(matches!(
        token_err(verify(&t)),
        TokenError::AlgorithmKeyMismatch {
            token: "EdDSA",
            key: "ES256"
        }
    ));
    let t = signed_raw(
        &ed,
        json!({"alg": "Ed25519", "kid": "ed", "typ": "at+jwt"})
            .to_string()
            .as_bytes(),
        claims().to_string().as_bytes(),
    );
    let mut only_es = policy();
    only_es.algorithms = vec![Algorithm::ES256];
    assert_eq!(
        token_err(verify_jwt(&t, &ks, &only_es, NOW)),
        TokenError::AlgorithmNotAllowed("EdDSA")
    );
    // Ed448, which keyward does not do, is refused as any unknown alg.
    let h = json!({"alg": "Ed448", "kid": "ed", "typ": "at+jwt"});
    let t = signed_raw(
        &ed,
        h.to_string().as_bytes(),
        claims().to_string().as_bytes(),
    );
    assert_eq!(
        token_err(verify_jwt(&t, &ks, &policy(), NOW)),
        TokenError::ForbiddenAlgorithm("Ed448".into())
    );
}

#[test]
fn alg_different_from_the_keys_algorithm() {
    // The same RSA key material loaded as PS256 signs a genuine PS256 token;
    // the verifier holds that key as RS256 and must not switch algorithms.
    let rs = rs256();
    let ps = PrivateKey::from_der(Algorithm::PS256, &rs.key().to_pkcs8_der()).unwrap();
    let ps = LocalSigner::new(ps, Some("rsa".into()));
    assert!(ps.public_jwk().key.material() == rs.public_jwk().key.material());
    let t = sign_jwt(&ps, Some("at+jwt"), &claims()).unwrap();
    let rsa_keys = keys_of(&[rs]);
    assert_eq!(
        token_err(verify_jwt(&t, &rsa_keys, &policy(), NOW)),
        TokenError::AlgorithmKeyMismatch {
            token: "PS256",
            key: "RS256"
        }
    );
    // ...while the same key registered as PS256 accepts it (the token is genuine).
    verify_jwt(&t, &keys_of(&[&ps]), &policy(), NOW).unwrap();

    // ES384 header and signature against our ES256 key.
    let es384 = LocalSigner::new(
        PrivateKey::generate(Algorithm::ES384, None).unwrap(),
        Some(KID.into()),
    );
    let t = sign_jwt(&es384, Some("at+jwt"), &claims()).unwrap();
    assert_eq!(
        token_err(verify(&t)),
        TokenError::AlgorithmKeyMismatch {
            token: "ES384",
            key: "ES256"
        }
    );
    // An ES256 signature under an ES512 / EdDSA / RS256 header.
    for alg in ["ES512", "EdDSA", "RS256"] {
        let t = signed(&json!({"alg": alg, "kid": KID, "typ": "at+jwt"}), &claims());
        assert!(matches!(
            token_err(verify(&t)),
            TokenError::AlgorithmKeyMismatch { key: "ES256", .. }
        ));
    }
}

#[test]
fn unknown_crit_rejects_the_token() {
    for (h, want) in [
        (
            json!({"alg": "ES256", "kid": KID, "typ": "at+jwt", "crit": ["exp"], "exp": NOW + 600}),
            TokenError::UnknownCritical("exp".into()),
        ),
        (
            json!({"alg": "ES256", "kid": KID, "typ": "at+jwt", "crit": ["b64"], "b64": false}),
            TokenError::UnknownCritical("b64".into()),
        ),
        (
            json!({"alg": "ES256", "kid": KID, "typ": "at+jwt", "crit": ["urn:x:unknown"]}),
            TokenError::UnknownCritical("urn:x:unknown".into()),
        ),
        (
            json!({"alg": "ES256", "kid": KID, "typ": "at+jwt", "crit": []}),
            TokenError::MalformedCritical,
        ),
        (
            json!({"alg": "ES256", "kid": KID, "typ": "at+jwt", "crit": "exp"}),
            TokenError::MalformedCritical,
        ),
        (
            json!({"alg": "ES256", "kid": KID, "typ": "at+jwt", "crit": [1]}),
            TokenError::MalformedCritical,
        ),
    ] {
        assert_eq!(token_err(verify(&signed(&h, &claims()))), want, "{h}");
    }
}

#[test]
fn embedded_keys_and_key_urls_are_never_used_to_find_a_key() {
    let attacker = LocalSigner::new(PrivateKey::generate(Algorithm::ES256, None).unwrap(), None);
    let attacker_jwk = attacker.public_jwk().to_value();
    let attacker_kid = attacker.kid().to_string();
    let embed = |kid: Option<&str>| {
        let mut h = json!({
            "alg": "ES256", "typ": "at+jwt",
            "jwk": attacker_jwk,
            "jku": "https://attacker.example/jwks.json",
            "x5u": "https://attacker.example/cert.pem",
            "x5c": [B64.encode(attacker.key().public_key().to_spki_der())],
        });
        if let Some(kid) = kid {
            h["kid"] = json!(kid);
        }
        signed_raw(
            &attacker,
            h.to_string().as_bytes(),
            claims().to_string().as_bytes(),
        )
    };
    // The attacker's own kid: not in our set.
    assert_eq!(
        token_err(verify(&embed(Some(&attacker_kid)))),
        TokenError::UnknownKid(attacker_kid.clone())
    );
    // Our kid, attacker's signature and embedded key: our key is used, and fails.
    assert_eq!(
        token_err(verify(&embed(Some(KID)))),
        TokenError::BadSignature
    );
    // No kid, single-key set: still only our key.
    assert_eq!(token_err(verify(&embed(None))), TokenError::BadSignature);
    // No kid, multi-key set: no key is chosen at all.
    let other = LocalSigner::new(
        PrivateKey::generate(Algorithm::EdDSA, None).unwrap(),
        Some("k2".into()),
    );
    assert_eq!(
        token_err(verify_jwt(
            &embed(None),
            &keys_of(&[es256(), &other]),
            &policy(),
            NOW
        )),
        TokenError::MissingKid
    );
    // And these members do not disturb a genuine token.
    let mut h = header();
    h["jwk"] = attacker_jwk;
    h["jku"] = json!("https://attacker.example/jwks.json");
    verify(&signed(&h, &claims())).unwrap();
}

// ---- signatures ------------------------------------------------------------

fn der_int(x: &[u8]) -> Vec<u8> {
    let i = x.iter().position(|&b| b != 0).unwrap_or(x.len() - 1);
    let mut v = x[i..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    let mut out = vec![0x02, v.len() as u8];
    out.extend(v);
    out
}

#[test]
fn ecdsa_der_signature_is_rejected() {
    let t = signed(&header(), &claims());
    let (hp, s) = t.rsplit_once('.').unwrap();
    let raw = B64.decode(s).unwrap();
    assert_eq!(raw.len(), 64);
    let mut body = der_int(&raw[..32]);
    body.extend(der_int(&raw[32..]));
    let mut der = vec![0x30, body.len() as u8];
    der.extend(body);
    let bad = format!("{hp}.{}", B64.encode(&der));
    assert_eq!(
        token_err(verify(&bad)),
        TokenError::SignatureLength("ES256")
    );
    assert_eq!(
        es256().key().public_key().verify(hp.as_bytes(), &der),
        Err(TokenError::SignatureLength("ES256"))
    );
    // The raw form of the very same signature is fine.
    verify(&t).unwrap();
}

#[test]
fn ecdsa_signature_of_the_wrong_length() {
    let t = signed(&header(), &claims());
    let (hp, s) = t.rsplit_once('.').unwrap();
    let raw = B64.decode(s).unwrap();
    let mut longer = raw.clone();
    longer.push(0);
    let mut zero_prefixed = vec![0];
    zero_prefixed.extend(&raw);
    for sig in [
        raw[..63].to_vec(),
        longer,
        zero_prefixed,
        vec![],
        raw[..32].to_vec(),
        [raw.clone(), raw.clone()].concat(),
    ] {
        let bad = format!("{hp}.{}", B64.encode(&sig));
        assert_eq!(
            token_err(verify(&bad)),
            TokenError::SignatureLength("ES256"),
            "{} bytes",
            sig.len()
        );
    }
    // ES384 and ES512 sizes are exact too (96 and 132 bytes).
    for (alg, len) in [(Algorithm::ES384, 96), (Algorithm::ES512, 132)] {
        let k = PrivateKey::generate(alg, None).unwrap();
        let sig = k.sign(b"m").unwrap();
        assert_eq!(sig.len(), len);
        k.public_key().verify(b"m", &sig).unwrap();
        for bad in [&sig[..len - 1], &[sig.as_slice(), &[0]].concat()[..]] {
            assert_eq!(
                k.public_key().verify(b"m", bad),
                Err(TokenError::SignatureLength(alg.name()))
            );
        }
    }
}

// ---- RSA key size ----------------------------------------------------------

/// The 1024-bit RSA public key of Wycheproof's json_web_key_test.json
/// (group `keysize_too_small`).
fn wycheproof_1024_bit_jwk() -> Value {
    let path = format!(
        "{}/tests/vectors/wycheproof/json_web_key_test.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["comment"] == "keysize_too_small")
        .expect("group keysize_too_small")["public"]["keys"][0]
        .clone()
}

#[test]
fn rsa_under_2048_bits_refused_at_generation() {
    for bits in [512, 1024, 2047] {
        for alg in [Algorithm::RS256, Algorithm::PS256] {
            assert_eq!(
                PrivateKey::generate(alg, Some(bits)).unwrap_err(),
                KeyError::RsaTooSmall(bits as usize)
            );
        }
    }
}

#[test]
fn rsa_under_2048_bits_refused_at_import() {
    let jwk = wycheproof_1024_bit_jwk();
    assert_eq!(
        Jwk::parse(jwk.to_string().as_bytes(), Algorithm::RS256),
        Err(KeyError::RsaTooSmall(1024))
    );
    let n = B64.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = B64.decode(jwk["e"].as_str().unwrap()).unwrap();
    for alg in [Algorithm::RS256, Algorithm::PS512] {
        assert_eq!(
            PublicKey::from_material(
                alg,
                PublicMaterial::Rsa {
                    n: n.clone(),
                    e: e.clone()
                }
            ),
            Err(KeyError::RsaTooSmall(1024))
        );
    }
    // Leading zero octets do not count towards the size.
    let mut padded_n = vec![0u8; 128];
    padded_n.extend(&n);
    assert_eq!(
        PublicKey::from_material(Algorithm::RS256, PublicMaterial::Rsa { n: padded_n, e }),
        Err(KeyError::RsaTooSmall(1024))
    );
}

#[test]
fn rsa_under_2048_bits_dropped_at_fetch() {
    let weak = wycheproof_1024_bit_jwk();
    let good = es256().public_jwk().to_value();
    let doc = json!({"keys": [weak, good]}).to_string();
    let (set, rejected) = JwkSet::parse_lenient(doc.as_bytes(), Algorithm::RS256).unwrap();
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.keys[0].kid.as_deref(), Some(KID));
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].index, 0);
    assert_eq!(rejected[0].kid.as_deref(), Some("RS256_1024"));
    assert_eq!(rejected[0].error, KeyError::RsaTooSmall(1024));
    assert_eq!(
        JwkSet::parse(doc.as_bytes(), Algorithm::RS256),
        Err(KeyError::RsaTooSmall(1024))
    );
}

// ---- claims ----------------------------------------------------------------

#[test]
fn time_claims_of_the_wrong_type_are_invalid_not_absent() {
    for name in ["exp", "nbf", "iat"] {
        for v in [
            json!("1700000600"),
            Value::Null,
            json!(true),
            json!(false),
            json!([NOW + 600]),
            json!({"t": NOW + 600}),
        ] {
            let mut c = claims();
            c[name] = v.clone();
            match claims_err(verify(&signed(&header(), &c))) {
                ClaimsError::Invalid(n, _) => assert_eq!(n, name, "{v}"),
                other => panic!("{name} = {v}: {other:?}"),
            }
        }
    }
    // Even with a policy that requires nothing.
    let lax = Validation {
        required_claims: vec![],
        required_typ: None,
        issuer: None,
        audiences: vec![],
        ..Validation::default()
    };
    let t = signed(&header(), &json!({"exp": null}));
    assert!(matches!(
        claims_err(verify_jwt(&t, &keys(), &lax, NOW)),
        ClaimsError::Invalid(..)
    ));
}

#[test]
fn iss_is_compared_byte_for_byte() {
    for iss in [
        "https://auth.example/",
        "https://Auth.example",
        "HTTPS://auth.example",
        "https://auth.example ",
        "https://auth.example.",
        "https://auth.example:443",
        "https://auth.exampl\u{0065}\u{0301}",
        "",
    ] {
        let mut c = claims();
        c["iss"] = json!(iss);
        assert_eq!(
            claims_err(verify(&signed(&header(), &c))),
            ClaimsError::WrongIssuer,
            "{iss:?}"
        );
    }
    let mut c = claims();
    c["iss"] = json!(["https://auth.example"]);
    assert!(matches!(
        claims_err(verify(&signed(&header(), &c))),
        ClaimsError::Invalid(..)
    ));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        claims_err(verify(&signed(&header(), &c))),
        ClaimsError::Missing("iss".into())
    );
}

#[test]
fn aud_is_a_string_or_an_array_of_strings() {
    for aud in [json!(AUD), json!([AUD]), json!(["other", AUD])] {
        let mut c = claims();
        c["aud"] = aud.clone();
        verify(&signed(&header(), &c)).unwrap_or_else(|e| panic!("{aud}: {e}"));
    }
    for aud in [
        json!(5),
        json!([AUD, 5]),
        json!([AUD, null]),
        json!([[AUD]]),
        json!(null),
        json!({"aud": AUD}),
        json!(true),
    ] {
        let mut c = claims();
        c["aud"] = aud.clone();
        match claims_err(verify(&signed(&header(), &c))) {
            ClaimsError::Invalid(n, _) => assert_eq!(n, "aud"),
            other => panic!("{aud}: {other:?}"),
        }
    }
    for aud in [json!("API"), json!([]), json!(["other"]), json!("api ")] {
        let mut c = claims();
        c["aud"] = aud.clone();
        assert_eq!(
            claims_err(verify(&signed(&header(), &c))),
            ClaimsError::WrongAudience,
            "{aud}"
        );
    }
}

#[test]
fn typ_at_jwt_is_required() {
    let want = "at+jwt".to_string();
    let mut h = header();
    h.as_object_mut().unwrap().remove("typ");
    assert_eq!(
        claims_err(verify(&signed(&h, &claims()))),
        ClaimsError::WrongType(None, want.clone())
    );
    for typ in [
        "JWT",
        "jwt",
        "rt+jwt",
        "id+jwt",
        "at+jwt ",
        "at",
        "application/jwt",
    ] {
        let mut h = header();
        h["typ"] = json!(typ);
        assert_eq!(
            claims_err(verify(&signed(&h, &claims()))),
            ClaimsError::WrongType(Some(typ.into()), want.clone()),
            "{typ}"
        );
    }
    // RFC 7515 §4.1.9: the media type may carry its "application/" prefix, any case.
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        let mut h = header();
        h["typ"] = json!(typ);
        verify(&signed(&h, &claims())).unwrap();
    }
    // A refresh- or ID-token-shaped signer cannot pass as an access token.
    let t = sign_jwt(es256(), Some("JWT"), &claims()).unwrap();
    assert!(matches!(claims_err(verify(&t)), ClaimsError::WrongType(..)));
}

#[test]
fn expired_not_yet_valid_and_issued_in_the_future() {
    let leeway = policy().leeway_secs as i64;
    let with = |name: &str, v: i64| {
        let mut c = claims();
        c[name] = json!(v);
        verify(&signed(&header(), &c))
    };
    assert_eq!(claims_err(with("exp", NOW - leeway)), ClaimsError::Expired);
    assert_eq!(claims_err(with("exp", NOW - 3600)), ClaimsError::Expired);
    with("exp", NOW - leeway + 1).unwrap();
    assert_eq!(
        claims_err(with("nbf", NOW + leeway + 1)),
        ClaimsError::NotYetValid
    );
    with("nbf", NOW + leeway).unwrap();
    assert_eq!(
        claims_err(with("iat", NOW + leeway + 1)),
        ClaimsError::IssuedInFuture
    );
    with("iat", NOW + leeway).unwrap();
    // Missing exp is not "never expires".
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        claims_err(verify(&signed(&header(), &c))),
        ClaimsError::Missing("exp".into())
    );
}

// ---- key lookup ------------------------------------------------------------

#[test]
fn unknown_kid() {
    let mut h = header();
    h["kid"] = json!("nope");
    assert_eq!(
        token_err(verify(&signed(&h, &claims()))),
        TokenError::UnknownKid("nope".into())
    );
    // A kid differing only in case is a different kid.
    h["kid"] = json!("K1");
    assert_eq!(
        token_err(verify(&signed(&h, &claims()))),
        TokenError::UnknownKid("K1".into())
    );
    // An empty key set knows no kid.
    assert_eq!(
        token_err(verify_jwt(
            &signed(&header(), &claims()),
            &KeySet::new(),
            &policy(),
            NOW
        )),
        TokenError::UnknownKid(KID.into())
    );
}

#[test]
fn missing_kid_with_a_multi_key_set() {
    let other = LocalSigner::new(
        PrivateKey::generate(Algorithm::ES256, None).unwrap(),
        Some("k2".into()),
    );
    let two = keys_of(&[es256(), &other]);
    let mut h = header();
    h.as_object_mut().unwrap().remove("kid");
    let t = signed(&h, &claims());
    assert_eq!(
        token_err(verify_jwt(&t, &two, &policy(), NOW)),
        TokenError::MissingKid
    );
    // With exactly one key the kid may be omitted.
    verify(&t).unwrap();
    // A non-string kid is a header error, not a missing kid.
    h["kid"] = json!(1);
    assert!(matches!(
        token_err(verify_jwt(&signed(&h, &claims()), &two, &policy(), NOW)),
        TokenError::Header(_)
    ));
}

// ---- found while writing this suite ----------------------------------------

/// A `typ` whose 12th byte falls inside a multi-byte character must be a
/// clean `WrongType`, not a panic (rule 5: bad input never panics).
#[test]
fn typ_with_multibyte_text_does_not_panic() {
    for typ in [
        "aaaaaaaaaaaé",
        "applicationé/at+jwt",
        "ééééééé",
        "at+jwt\u{1F600}",
    ] {
        let mut h = header();
        h["typ"] = json!(typ);
        assert_eq!(
            claims_err(verify(&signed(&h, &claims()))),
            ClaimsError::WrongType(Some(typ.chars().take(32).collect()), "at+jwt".into()),
            "{typ}"
        );
        assert_eq!(
            policy().check_typ(Some(typ)),
            Err(ClaimsError::WrongType(
                Some(typ.chars().take(32).collect()),
                "at+jwt".into()
            ))
        );
    }
}

/// A member repeated inside one JWK of a set is refused like a repeated
/// member of a lone JWK: the strict load fails, the lenient load drops that
/// key only.
#[test]
fn duplicate_member_inside_a_jwk_set_entry() {
    let good = es256().public_jwk().to_json();
    let other = LocalSigner::new(PrivateKey::generate(Algorithm::ES384, None).unwrap(), None)
        .public_jwk()
        .to_json();
    // Same key with `alg` given twice (ES384 then ES256): last-wins parsing
    // would accept it as ES256.
    let dup = format!("{{\"alg\":\"ES384\",{}", &good[1..]);
    assert!(matches!(
        Jwk::parse(dup.as_bytes(), Algorithm::RS256),
        Err(KeyError::Malformed(_))
    ));
    let doc = format!("{{\"keys\":[{dup},{other}]}}");
    assert!(matches!(
        JwkSet::parse(doc.as_bytes(), Algorithm::RS256),
        Err(KeyError::Malformed(_))
    ));
    let (set, rejected) = JwkSet::parse_lenient(doc.as_bytes(), Algorithm::RS256).unwrap();
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.keys[0].algorithm(), Algorithm::ES384);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].index, 0);
    assert!(matches!(rejected[0].error, KeyError::Malformed(_)));
    // A duplicated kid member inside one entry, too.
    let dup_kid = format!("{{\"kid\":\"other\",{}", &good[1..]);
    let doc = format!("{{\"keys\":[{dup_kid}]}}");
    assert_eq!(
        JwkSet::parse(doc.as_bytes(), Algorithm::RS256).unwrap_err(),
        KeyError::Malformed(r#"duplicate JWK member "kid""#.into())
    );
}
