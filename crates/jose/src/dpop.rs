//! DPoP proofs (RFC 9449): a JWS a client signs with its own key, carrying
//! that public key in the header, to show it holds the key a token is bound
//! to.
//!
//! A proof's life mirrors a token's: [`UnverifiedProof::parse`] splits it
//! and reads its header strictly; [`UnverifiedProof::verify`] checks the
//! algorithm and the signature with the header's own `jwk`, reads the claims
//! and gives a [`DpopProof`], whose fields are only reachable after that.
//! The checks against the request (`htm`, `htu`, `iat` window, `jti` replay,
//! `ath`, `nonce`) are the caller's (keyward-verify's `dpop` module), since
//! they need the request, a clock and a replay cache.
//!
//! Rules (RFC 9449 §4.2-4.3, and DESIGN.md rule 1 where it is stricter):
//! - at most `max_len` bytes, three segments, canonical base64url, no `crit`;
//!   header and payload JSON objects (the payload UTF-8) with unique member
//!   names at every depth, every value read (numbers in range, strings that
//!   decode, nesting within serde_json's depth limit);
//! - `typ` exactly `dpop+jwt`;
//! - `alg` asymmetric (`none` and `HS*` cannot be named) and in the caller's
//!   allowlist;
//! - `jwk` present, a public key (any private member refused), held to every
//!   rule of [`Jwk::from_map`], its algorithm equal to `alg`;
//! - the signature verifies with that key;
//! - `jti`, `htm`, `htu` non-empty strings, `iat` a number; `ath` and
//!   `nonce` strings when present. A claim of the wrong type is invalid,
//!   never "absent".
//!
//! This is the one place keyward reads a key from a JWS header: the proof's
//! key is what the proof is about, and it is trusted only as far as the
//! thumbprint ([`DpopProof::jkt`]) the caller compares with a token's
//! `cnf.jkt`, or binds a new token to.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::alg::{Algorithm, KeyFamily};
use crate::b64;
use crate::crypto::sha256;
use crate::error::{DpopError, TokenError};
use crate::json::{parse_object, short, DeepDuplicate, Key, Names, ObjectError, Scalar};
use crate::jwk::Jwk;
use crate::jws::{check_signature, parse_header, split, Header, Parts};
use crate::key::PublicKey;

/// The `typ` of a DPoP proof.
pub const DPOP_TYP: &str = "dpop+jwt";

/// The default bound on a proof's length: an ML-DSA-87 proof (a 2,592-byte
/// key in the header and a 4,627-byte signature) fits with room to spare.
pub const DEFAULT_MAX_PROOF_LEN: usize = 16 * 1024;

/// The algorithms a DPoP proof is accepted with when nothing else is
/// configured: those RFC 9449 deployments use (ES256 first), and ML-DSA.
pub const DEFAULT_DPOP_ALGORITHMS: [Algorithm; 7] = [
    Algorithm::ES256,
    Algorithm::EdDSA,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::MlDsa44,
    Algorithm::MlDsa65,
    Algorithm::MlDsa87,
];

/// The `ath` of an access token (RFC 9449 §4.2): base64url SHA-256 of its
/// ASCII text.
pub fn access_token_hash(token: &str) -> String {
    b64::encode(&sha256(token.as_bytes()))
}

/// Whether `ath` is the `ath` of the token whose SHA-256 is
/// `token_sha256`, compared in constant time: for a caller that keeps a
/// token's hash rather than hashing its text for every proof.
pub fn ath_matches(ath: &str, token_sha256: &[u8; 32]) -> bool {
    crate::crypto::constant_time_eq(ath.as_bytes(), b64::encode(token_sha256).as_bytes())
}

/// A proof split and its header read (`jwk` included), not verified.
pub struct UnverifiedProof<'t> {
    parts: Parts<'t>,
    header: Arc<ProofHeader>,
}

impl fmt::Debug for UnverifiedProof<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnverifiedProof")
            .field("alg", &self.header.header.alg)
            .finish_non_exhaustive()
    }
}

/// What every proof a client makes with one key shares: the header, read by
/// every rule of [`UnverifiedProof::parse`], the key it carries (parsed for
/// verification) and that key's thumbprint. It is a function of the
/// header's base64url text alone, so a verifier may keep the ones it has
/// seen by that text and hand them back to [`UnverifiedProof::parse_with`]
/// for the next proof with the same header: the JSON, the JWK and the key
/// are then not read again. The signature of every proof is still checked.
pub struct ProofHeader {
    header: Header,
    key: PublicKey,
    jkt: String,
}

impl fmt::Debug for ProofHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofHeader")
            .field("alg", &self.header.alg)
            .field("jkt", &self.jkt)
            .finish_non_exhaustive()
    }
}

impl ProofHeader {
    /// Reads a proof's header from its base64url text: `typ`, duplicates at
    /// any depth, `jwk` held to every rule of [`Jwk::from_map`].
    fn read(header_b64: &str) -> Result<Self, DpopError> {
        let bytes = b64::decode(header_b64).ok_or(TokenError::Base64("header"))?;
        let header = parse_header(&bytes)?;
        if header.typ.as_deref() != Some(DPOP_TYP) {
            return Err(DpopError::Type(
                header.typ.as_deref().map(|t| t.chars().take(32).collect()),
            ));
        }
        // The header holds an object (`jwk`): duplicates at any depth are
        // refused, so no two readers can see two different keys.
        if let Some(d) = serde_json::from_slice::<DeepDuplicate>(&bytes)
            .map_err(|e| TokenError::Header(crate::json::short(&e)))?
            .0
        {
            return Err(TokenError::DuplicateMember(d, "header").into());
        }
        let map = parse_object(&bytes).map_err(header_error)?;
        let jwk = match map.get("jwk") {
            Some(Value::Object(jwk)) => jwk,
            Some(_) => {
                return Err(DpopError::Jwk(crate::KeyError::Malformed(
                    "the proof's jwk is not a JSON object".into(),
                )))
            }
            None => return Err(DpopError::MissingJwk),
        };
        // An RSA key without `alg` is read as the proof's RSA algorithm;
        // any other mismatch is refused at verification.
        let rsa_default = match header.alg.family() {
            KeyFamily::Rsa => header.alg,
            _ => Algorithm::RS256,
        };
        let key = Jwk::from_map(jwk, rsa_default).map_err(DpopError::Jwk)?.key;
        let jkt = key.thumbprint();
        Ok(ProofHeader { header, key, jkt })
    }

    /// The RFC 7638 thumbprint of the header's key.
    pub fn jkt(&self) -> &str {
        &self.jkt
    }
}

/// A proof whose header, key, signature and claims passed. The request
/// checks are still to be made (keyward-verify's `dpop` module).
#[derive(Clone, Debug, PartialEq)]
pub struct DpopProof {
    /// The proof's algorithm.
    pub alg: Algorithm,
    /// The RFC 7638 thumbprint of the proof's key (SHA-256, base64url): what
    /// `cnf.jkt` holds.
    pub jkt: String,
    /// `jti`: the proof's unique identifier.
    pub jti: String,
    /// `htm`: the HTTP method it was made for.
    pub htm: String,
    /// `htu`: the HTTP URI it was made for, as sent.
    pub htu: String,
    /// `iat`, in unix seconds (a fraction is cut off).
    pub iat: i64,
    /// `ath`, the hash of the access token it accompanies, if any.
    pub ath: Option<String>,
    /// `nonce`, a value the server gave, if any.
    pub nonce: Option<String>,
}

fn header_error(e: ObjectError) -> DpopError {
    DpopError::Token(match e {
        ObjectError::Json(m) => TokenError::Header(m),
        ObjectError::Duplicate(d) => TokenError::DuplicateMember(d, "header"),
    })
}

impl<'t> UnverifiedProof<'t> {
    /// Reads `proof` (at most `max_len` bytes): its segments, its header by
    /// every rule of a token's header, then `typ` and `jwk`.
    pub fn parse(proof: &'t str, max_len: usize) -> Result<Self, DpopError> {
        Self::parse_with(proof, max_len, |_| None)
    }

    /// [`UnverifiedProof::parse`], taking the header from `known` when it
    /// returns one: `known` is given the header's base64url text and must
    /// only return a [`ProofHeader`] read from exactly that text (one
    /// [`UnverifiedProof::header`] gave for it).
    pub fn parse_with(
        proof: &'t str,
        max_len: usize,
        known: impl FnOnce(&str) -> Option<Arc<ProofHeader>>,
    ) -> Result<Self, DpopError> {
        let parts = split(proof, max_len)?;
        let header = match known(parts.header_b64) {
            Some(h) => h,
            None => Arc::new(ProofHeader::read(parts.header_b64)?),
        };
        Ok(UnverifiedProof { parts, header })
    }

    /// The header's base64url text and what was read from it.
    pub fn header(&self) -> (&'t str, &Arc<ProofHeader>) {
        (self.parts.header_b64, &self.header)
    }

    /// Verifies the proof: `alg` in `allowed` and equal to the key's, the
    /// signature with the header's `jwk`, then the claims.
    pub fn verify(&self, allowed: &[Algorithm]) -> Result<DpopProof, DpopError> {
        let h = &self.header;
        check_signature(&self.parts, &h.header, &h.key, allowed)?;
        let payload = b64::decode(self.parts.payload_b64).ok_or(TokenError::Base64("payload"))?;
        let c = ProofClaims::parse(&payload)?;
        Ok(DpopProof {
            alg: h.header.alg,
            jkt: h.jkt.clone(),
            jti: required(c.jti, "jti")?,
            htm: required(c.htm, "htm")?,
            htu: required(c.htu, "htu")?,
            iat: iat(c.iat)?,
            ath: optional(c.ath, "ath")?,
            nonce: optional(c.nonce, "nonce")?,
        })
    }
}

/// Reads and verifies `proof` ([`UnverifiedProof::parse`] then
/// [`UnverifiedProof::verify`]).
pub fn verify_proof(
    proof: &str,
    allowed: &[Algorithm],
    max_len: usize,
) -> Result<DpopProof, DpopError> {
    UnverifiedProof::parse(proof, max_len)?.verify(allowed)
}

/// A proof's claims as found in its payload, in one pass: the six it has
/// (strings borrowed from the payload unless escaped); every other member
/// read only to find a repeated name, at any depth, or a value that is not
/// JSON (a number out of range, a lone surrogate escape, nesting too deep).
#[derive(Default)]
struct ProofClaims<'a> {
    jti: Option<Scalar<'a>>,
    htm: Option<Scalar<'a>>,
    htu: Option<Scalar<'a>>,
    iat: Option<Scalar<'a>>,
    ath: Option<Scalar<'a>>,
    nonce: Option<Scalar<'a>>,
}

impl<'a> ProofClaims<'a> {
    fn parse(payload: &'a [u8]) -> Result<Self, DpopError> {
        let bad = |m: String| DpopError::Token(TokenError::Payload(m));
        // RFC 7519 §7.2: UTF-8, checked once for the whole payload.
        let text = std::str::from_utf8(payload).map_err(|_| bad("not UTF-8".into()))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let mut duplicate = None;
        let claims = de
            .deserialize_map(ProofClaimsVisitor(&mut duplicate))
            .map_err(|e| bad(short(&e)))?;
        de.end().map_err(|e| bad(short(&e)))?;
        match duplicate {
            Some(d) => Err(TokenError::DuplicateMember(d, "payload").into()),
            None => Ok(claims),
        }
    }
}

struct ProofClaimsVisitor<'d>(&'d mut Option<String>);

impl<'de> Visitor<'de> for ProofClaimsVisitor<'_> {
    type Value = ProofClaims<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<ProofClaims<'de>, A::Error> {
        let mut c = ProofClaims::default();
        let mut others = Names::new();
        while let Some(Key(k)) = m.next_key::<Key<'de>>()? {
            let slot = match &*k {
                "jti" => &mut c.jti,
                "htm" => &mut c.htm,
                "htu" => &mut c.htu,
                "iat" => &mut c.iat,
                "ath" => &mut c.ath,
                "nonce" => &mut c.nonce,
                _ => {
                    if !others.insert(k.clone()) {
                        self.0.get_or_insert_with(|| k.chars().take(32).collect());
                    }
                    // Read, not skipped: numbers in range, strings that
                    // decode, serde_json's depth limit, unique names inside.
                    let DeepDuplicate(inner) = m.next_value()?;
                    if let Some(d) = inner {
                        self.0.get_or_insert(d);
                    }
                    continue;
                }
            };
            if slot.is_some() {
                self.0.get_or_insert_with(|| k.chars().take(32).collect());
            }
            *slot = Some(m.next_value::<Scalar<'de>>()?);
        }
        Ok(c)
    }
}

fn optional(claim: Option<Scalar<'_>>, name: &'static str) -> Result<Option<String>, DpopError> {
    match claim {
        None => Ok(None),
        Some(Scalar::Str(s)) if !s.is_empty() => Ok(Some(s.into_owned())),
        Some(Scalar::Str(_)) => Err(DpopError::Claim(name, "is empty")),
        Some(_) => Err(DpopError::Claim(name, "is not a string")),
    }
}

fn required(claim: Option<Scalar<'_>>, name: &'static str) -> Result<String, DpopError> {
    optional(claim, name)?.ok_or(DpopError::Claim(name, "is missing"))
}

fn iat(claim: Option<Scalar<'_>>) -> Result<i64, DpopError> {
    match claim {
        None => Err(DpopError::Claim("iat", "is missing")),
        // Whole seconds; anything beyond ±2^53 is not a time.
        Some(Scalar::Num(t)) if t.is_finite() && t.abs() < 9_007_199_254_740_992.0 => {
            Ok(t.floor() as i64)
        }
        Some(Scalar::Num(_)) => Err(DpopError::Claim("iat", "is not a time")),
        Some(_) => Err(DpopError::Claim("iat", "is not a number")),
    }
}

/// Server nonces (RFC 9449 §8-9) that any replica holding the same secret
/// can check without shared state: a nonce is the number of its time window
/// and an HMAC-SHA-256 tag over it (truncated to 128 bits), and is accepted
/// in its own window and the next one, so a nonce lives between one and two
/// windows. The key is derived from a secret and a label (an environment, a
/// gateway), so one secret never yields another's nonces.
pub struct NonceKey {
    key: [u8; 32],
    window_secs: i64,
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceKey")
            .field("window_secs", &self.window_secs)
            .finish_non_exhaustive()
    }
}

const NONCE_TAG_LEN: usize = 16;

impl NonceKey {
    /// The nonce key of `label` under `secret`, for windows of `window_secs`
    /// (at least one second).
    pub fn derive(secret: &[u8], label: &str, window_secs: i64) -> Self {
        NonceKey {
            key: crate::crypto::hmac_sha256(
                secret,
                &[b"keyward dpop nonce v1\0", label.as_bytes()],
            ),
            window_secs: window_secs.max(1),
        }
    }

    /// How long one window lasts, in seconds.
    pub fn window_secs(&self) -> i64 {
        self.window_secs
    }

    fn tag(&self, window: i64) -> [u8; 32] {
        crate::crypto::hmac_sha256(&self.key, &[&window.to_be_bytes()])
    }

    /// The nonce to hand out at `now` (unix seconds).
    pub fn issue(&self, now: i64) -> String {
        let window = now.div_euclid(self.window_secs);
        let mut bytes = [0u8; 8 + NONCE_TAG_LEN];
        bytes[..8].copy_from_slice(&window.to_be_bytes());
        bytes[8..].copy_from_slice(&self.tag(window)[..NONCE_TAG_LEN]);
        b64::encode(&bytes)
    }

    /// Whether `nonce` is one this key issued in the window of `now` or the
    /// one before.
    pub fn check(&self, nonce: &str, now: i64) -> bool {
        let Some(bytes) = b64::decode(nonce).filter(|b| b.len() == 8 + NONCE_TAG_LEN) else {
            return false;
        };
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[..8]);
        let window = i64::from_be_bytes(w);
        let current = now.div_euclid(self.window_secs);
        (window == current || window == current - 1)
            && crate::crypto::constant_time_eq(&bytes[8..], &self.tag(window)[..NONCE_TAG_LEN])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{KeyError, PrivateKey};
    use serde_json::json;

    /// A proof of `claims` signed by `key` under `header` (`jwk` added as
    /// given: the key's public JWK unless the test replaces it).
    pub(crate) fn sign(key: &PrivateKey, header: Value, claims: &Value) -> String {
        let h = b64::encode(header.to_string().as_bytes());
        let p = b64::encode(claims.to_string().as_bytes());
        let input = format!("{h}.{p}");
        let sig = key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64::encode(&sig))
    }

    pub(crate) fn header_for(key: &PrivateKey) -> Value {
        json!({
            "typ": "dpop+jwt",
            "alg": key.algorithm().name(),
            "jwk": key.public_key().to_jwk(None).to_value(),
        })
    }

    fn claims() -> Value {
        json!({"jti": "j1", "htm": "POST", "htu": "https://a.example/token", "iat": 1_700_000_000})
    }

    fn check(proof: &str) -> Result<DpopProof, DpopError> {
        verify_proof(proof, &DEFAULT_DPOP_ALGORITHMS, DEFAULT_MAX_PROOF_LEN)
    }

    #[test]
    fn a_good_proof_of_each_default_algorithm_verifies() {
        for alg in DEFAULT_DPOP_ALGORITHMS {
            let bits = matches!(alg.family(), KeyFamily::Rsa).then_some(2048);
            let key = PrivateKey::generate(alg, bits).unwrap();
            let mut c = claims();
            c["ath"] = access_token_hash("tok").into();
            c["nonce"] = "n1".into();
            let p = check(&sign(&key, header_for(&key), &c)).unwrap();
            assert_eq!(p.alg, alg);
            assert_eq!(p.jkt, key.public_key().thumbprint());
            assert_eq!(
                (p.jti.as_str(), p.htm.as_str(), p.htu.as_str(), p.iat),
                ("j1", "POST", "https://a.example/token", 1_700_000_000)
            );
            assert_eq!(p.ath, Some(access_token_hash("tok")));
            assert_eq!(p.nonce.as_deref(), Some("n1"));
        }
    }

    #[test]
    fn a_proof_naming_ed25519_is_an_eddsa_proof() {
        // RFC 9864's fully-specified name, as newer client libraries write it.
        let key = PrivateKey::generate(Algorithm::EdDSA, None).unwrap();
        let mut h = header_for(&key);
        h["alg"] = "Ed25519".into();
        let p = check(&sign(&key, h, &claims())).unwrap();
        assert_eq!(
            (p.alg, p.jkt),
            (Algorithm::EdDSA, key.public_key().thumbprint())
        );
    }

    #[test]
    fn ath_is_the_rfc_example() {
        // RFC 9449 §7.1: the access token "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
        // has ath "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo".
        let token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
        let ath = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo";
        assert_eq!(access_token_hash(token), ath);
        let hash = sha256(token.as_bytes());
        assert!(ath_matches(ath, &hash));
        for other in [&ath[1..], "", "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEp"] {
            assert!(!ath_matches(other, &hash), "{other}");
        }
        assert!(!ath_matches(ath, &sha256(b"another token")));
    }

    #[test]
    fn typ_must_be_dpop_jwt() {
        let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
        for typ in [
            json!("JWT"),
            json!("at+jwt"),
            json!("DPoP+JWT"),
            Value::Null,
        ] {
            let mut h = header_for(&key);
            if typ.is_null() {
                h.as_object_mut().unwrap().remove("typ");
            } else {
                h["typ"] = typ;
            }
            assert!(matches!(
                check(&sign(&key, h, &claims())),
                Err(DpopError::Type(_))
            ));
        }
    }

    #[test]
    fn the_jwk_must_be_public_present_and_the_signers() {
        let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
        let other = PrivateKey::generate(Algorithm::ES256, None).unwrap();
        // A private member (here `d`, made up: never a real key's).
        let mut h = header_for(&key);
        h["jwk"]["d"] = b64::encode(&[1; 32]).into();
        assert_eq!(
            check(&sign(&key, h, &claims())).unwrap_err(),
            DpopError::Jwk(KeyError::PrivateMembers)
        );
        // Missing, or not an object.
        let mut h = header_for(&key);
        h.as_object_mut().unwrap().remove("jwk");
        assert_eq!(
            check(&sign(&key, h, &claims())).unwrap_err(),
            DpopError::MissingJwk
        );
        let mut h = header_for(&key);
        h["jwk"] = "k".into();
        assert!(matches!(
            check(&sign(&key, h, &claims())),
            Err(DpopError::Jwk(_))
        ));
        // Another key's jwk: the signature does not verify.
        let h = header_for(&other);
        assert_eq!(
            check(&sign(&key, h, &claims())).unwrap_err(),
            DpopError::Token(TokenError::BadSignature)
        );
        // A jwk of another algorithm than alg.
        let ed = PrivateKey::generate(Algorithm::EdDSA, None).unwrap();
        let mut h = header_for(&ed);
        h["alg"] = "ES256".into();
        assert!(matches!(
            check(&sign(&key, h, &claims())).unwrap_err(),
            DpopError::Token(TokenError::AlgorithmKeyMismatch { .. })
        ));
        // A duplicate member inside the jwk.
        let mut text = header_for(&key).to_string();
        text = text.replacen("\"kty\":\"EC\"", "\"kty\":\"EC\",\"kty\":\"EC\"", 1);
        assert!(text.contains("\"kty\":\"EC\",\"kty\""));
        let h = b64::encode(text.as_bytes());
        let p = b64::encode(claims().to_string().as_bytes());
        let sig = key.sign(format!("{h}.{p}").as_bytes()).unwrap();
        let forged = format!("{h}.{p}.{}", b64::encode(&sig));
        assert!(matches!(
            check(&forged).unwrap_err(),
            DpopError::Token(TokenError::DuplicateMember(..))
        ));
    }

    #[test]
    fn none_hs256_and_unlisted_algorithms_are_refused() {
        let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
        for alg in ["none", "HS256"] {
            let mut h = header_for(&key);
            h["alg"] = alg.into();
            assert!(matches!(
                check(&sign(&key, h, &claims())).unwrap_err(),
                DpopError::Token(TokenError::ForbiddenAlgorithm(_))
            ));
        }
        let p = sign(&key, header_for(&key), &claims());
        assert_eq!(
            verify_proof(&p, &[Algorithm::EdDSA], DEFAULT_MAX_PROOF_LEN).unwrap_err(),
            DpopError::Token(TokenError::AlgorithmNotAllowed("ES256"))
        );
        assert_eq!(
            verify_proof(&p, &DEFAULT_DPOP_ALGORITHMS, 100).unwrap_err(),
            DpopError::Token(TokenError::TooLong(100))
        );
    }

    #[test]
    fn claims_have_their_types() {
        let key = PrivateKey::generate(Algorithm::EdDSA, None).unwrap();
        let cases: [(&str, Value, DpopError); 9] = [
            ("jti", Value::Null, DpopError::Claim("jti", "is missing")),
            ("jti", json!(""), DpopError::Claim("jti", "is empty")),
            ("htm", json!(1), DpopError::Claim("htm", "is not a string")),
            ("htu", Value::Null, DpopError::Claim("htu", "is missing")),
            (
                "iat",
                json!("1700000000"),
                DpopError::Claim("iat", "is not a number"),
            ),
            ("iat", Value::Null, DpopError::Claim("iat", "is missing")),
            (
                "iat",
                json!(1e300),
                DpopError::Claim("iat", "is not a time"),
            ),
            (
                "ath",
                json!(["x"]),
                DpopError::Claim("ath", "is not a string"),
            ),
            (
                "nonce",
                json!(null),
                DpopError::Claim("nonce", "is not a string"),
            ),
        ];
        for (name, value, want) in cases {
            let mut c = claims();
            if value.is_null() && name != "nonce" {
                c.as_object_mut().unwrap().remove(name);
            } else {
                c[name] = value;
            }
            assert_eq!(
                check(&sign(&key, header_for(&key), &c)).unwrap_err(),
                want,
                "{name}"
            );
        }
    }

    /// A proof over `payload` as raw bytes (the test writes the JSON text).
    fn proof_over(key: &PrivateKey, payload: &[u8]) -> String {
        let h = b64::encode(header_for(key).to_string().as_bytes());
        let input = format!("{h}.{}", b64::encode(payload));
        let sig = key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64::encode(&sig))
    }

    #[test]
    fn the_payload_is_one_json_object_with_unique_names() {
        let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
        let good = r#"{"jti":"j1","htm":"POST","htu":"https://a.example/token","iat":1700000000"#;
        // Escapes are read as JSON says: `\/` is `/`, `\u0050` is `P`.
        let escaped = br#"{"jti":"j\u0031","htm":"\u0050OST","htu":"https:\/\/a.example\/token","iat":1700000000}"#;
        let p = check(&proof_over(&key, escaped)).unwrap();
        assert_eq!(
            (p.jti.as_str(), p.htm.as_str(), p.htu.as_str()),
            ("j1", "POST", "https://a.example/token")
        );
        // Another member's value may be anything, nested or not.
        let extra = format!(r#"{good},"x":{{"a":[1,{{"b":null}}]}},"y":true}}"#);
        assert!(check(&proof_over(&key, extra.as_bytes())).is_ok());
        // A name given twice, a claim's or another's.
        for dup in [
            format!(r#"{good},"jti":"j2"}}"#),
            format!(r#"{good},"iat":1700000001}}"#),
            format!(r#"{good},"x":1,"x":2}}"#),
        ] {
            assert!(
                matches!(
                    check(&proof_over(&key, dup.as_bytes())).unwrap_err(),
                    DpopError::Token(TokenError::DuplicateMember(_, "payload"))
                ),
                "{dup}"
            );
        }
        // Another member's value is read, not skipped: a number out of
        // range, a lone surrogate, nesting past serde_json's limit, a name
        // repeated inside it.
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        for (bad, dup) in [
            (format!(r#"{good},"x":1e400}}"#), false),
            (format!(r#"{good},"x":"\ud800"}}"#), false),
            (format!(r#"{good},"x":{deep}}}"#), false),
            (format!(r#"{good},"x":{{"a":1,"a":2}}}}"#), true),
            (format!(r#"{good},"x":[{{"b":[{{"c":1,"c":1}}]}}]}}"#), true),
        ] {
            let e = check(&proof_over(&key, bad.as_bytes())).unwrap_err();
            if dup {
                assert!(
                    matches!(
                        e,
                        DpopError::Token(TokenError::DuplicateMember(_, "payload"))
                    ),
                    "{bad}: {e:?}"
                );
            } else {
                assert!(
                    matches!(e, DpopError::Token(TokenError::Payload(_))),
                    "{bad}: {e:?}"
                );
            }
        }
        // Many names: each checked once against the others (a set past the
        // first few), and a repeat among them is found.
        let many: String = (0..1000).map(|i| format!(r#","n{i}":0"#)).collect();
        assert!(check(&proof_over(&key, format!("{good}{many}}}").as_bytes())).is_ok());
        let repeated = format!(r#"{good}{many},"n500":1}}"#);
        assert!(matches!(
            check(&proof_over(&key, repeated.as_bytes())).unwrap_err(),
            DpopError::Token(TokenError::DuplicateMember(_, "payload"))
        ));
        // Not an object, not JSON, trailing text, not UTF-8.
        let mut latin1 = format!(r#"{good},"n":"caf"#).into_bytes();
        latin1.extend_from_slice(b"\xe9\"}");
        for bad in [
            b"[1,2]".to_vec(),
            b"\"jti\"".to_vec(),
            format!("{good}}} x").into_bytes(),
            good.as_bytes().to_vec(),
            latin1,
        ] {
            assert!(
                matches!(
                    check(&proof_over(&key, &bad)).unwrap_err(),
                    DpopError::Token(TokenError::Payload(_))
                ),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }

    #[test]
    fn nonces_live_one_to_two_windows_under_their_own_key() {
        let k = NonceKey::derive(b"secret", "prod", 300);
        let n = k.issue(1_000_000);
        assert!(k.check(&n, 1_000_000));
        // 1_000_000 is in window 3333 (999_900..1_000_200); valid through 3334.
        assert!(k.check(&n, 1_000_499));
        assert!(!k.check(&n, 1_000_500));
        assert!(!k.check(&n, 999_899));
        // Another replica with the same secret and label agrees.
        assert!(NonceKey::derive(b"secret", "prod", 300).check(&n, 1_000_100));
        // Another label or secret does not.
        assert!(!NonceKey::derive(b"secret", "dev", 300).check(&n, 1_000_000));
        assert!(!NonceKey::derive(b"other", "prod", 300).check(&n, 1_000_000));
        // Altered, truncated, garbage.
        let mut bytes = b64::decode(&n).unwrap();
        bytes[20] ^= 1;
        assert!(!k.check(&b64::encode(&bytes), 1_000_000));
        // A later window number with the old tag.
        let mut bytes = b64::decode(&n).unwrap();
        bytes[7] = bytes[7].wrapping_add(1);
        assert!(!k.check(&b64::encode(&bytes), 1_000_300));
        for bad in ["", "x", &n[..n.len() - 1], "not base64!"] {
            assert!(!k.check(bad, 1_000_000), "{bad}");
        }
    }
}
