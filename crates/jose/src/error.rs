//! Errors, one enum per concern, wrapped by the top-level [`enum@Error`].
//!
//! Messages say what was wrong with the input without echoing secrets; any
//! untrusted text included is truncated.

use thiserror::Error;

/// Any error from this crate.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Dpop(#[from] DpopError),
}

/// Problems with key material, key encodings and algorithms.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error("unsupported algorithm {0:?} (supported: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA (or Ed25519) ML-DSA-44 ML-DSA-65 ML-DSA-87)")]
    UnsupportedAlgorithm(String),
    #[error("unsupported curve {0:?} (supported: P-256 P-384 P-521)")]
    UnsupportedCurve(String),
    /// An `OKP` key on a curve other than Ed25519 (X25519 and X448 are for
    /// key agreement, not signatures).
    #[error("unsupported OKP curve {0:?}: only Ed25519 keys sign (X25519 and X448 are key-agreement curves)")]
    UnsupportedOkpCurve(String),
    /// A JWK Set where one JWK was expected.
    #[error("this is a JWK Set of {0} key(s), not a single JWK: pick one of its \"keys\"")]
    IsKeySet(usize),
    #[error("RSA key of {0} bits refused: at least 2048 bits are required")]
    RsaTooSmall(usize),
    #[error("RSA key refused: it is smaller than the required 2048 bits")]
    RsaBelowMinimum,
    #[error("RSA key size {0} is not offered (choose 2048, 3072 or 4096)")]
    RsaSizeNotOffered(u32),
    #[error("RSA key of {0} bits refused: at most 8192 bits are supported")]
    RsaTooLarge(usize),
    #[error("weak RSA key refused: {0}")]
    WeakRsa(&'static str),
    #[error("a {key} key cannot be used with {alg}")]
    AlgorithmMismatch { key: String, alg: &'static str },
    #[error("malformed key: {0}")]
    Malformed(String),
    #[error("the key contains private members; only public keys are accepted here")]
    PrivateMembers,
    #[error("the key is not for signatures (use {0:?})")]
    WrongUse(String),
    #[error(
        "key type {0:?} is not accepted (asymmetric RSA, EC, OKP/Ed25519 and AKP/ML-DSA keys only)"
    )]
    UnsupportedKeyType(String),
    /// An `AKP` JWK without `alg`, which RFC 9964 §3 requires.
    #[error("an AKP key must name its algorithm: \"alg\" is required (RFC 9964)")]
    AkpMissingAlgorithm,
    /// An ML-DSA public key of the wrong length for its parameter set.
    #[error("an {alg} public key is exactly {expected} bytes, not {got}")]
    PublicKeyLength {
        alg: &'static str,
        expected: usize,
        got: usize,
    },
    /// An ML-DSA private seed (`priv`) that is not 32 bytes (RFC 9964 §4).
    #[error("an {alg} private key (priv) is a 32-byte seed, not {got} bytes")]
    SeedLength { alg: &'static str, got: usize },
    /// A private seed that does not derive the public key given beside it.
    #[error("the private seed (priv) does not derive the public key (pub)")]
    SeedMismatch,
    /// The key lives in a device (an HSM, a KMS) that cannot sign now; a
    /// retry may succeed. `store` (`pkcs11`, `aws-kms`) and `reason` (a
    /// metric label: `module`, `token`, `pin`, `session`, `device`,
    /// `throttled`, `timeout`, `not_found`, `bad_signature`, ...) name what
    /// failed; `detail` is for the log and never holds key material.
    #[error("the {store} key store cannot sign now ({reason}): {detail}")]
    Unavailable {
        store: &'static str,
        reason: &'static str,
        detail: String,
    },
    #[error("the key set has more than one key with kid {0:?}")]
    DuplicateKid(String),
    #[error("the key has no kid")]
    MissingKid,
    #[error("no PEM block found, or a PEM block of an unexpected type {0:?}")]
    Pem(String),
    #[error("key generation failed")]
    Generation,
    #[error("signing failed")]
    Signing,
}

/// Problems with the shape or signature of a compact JWS / JWT.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token is longer than the {0}-byte limit")]
    TooLong(usize),
    #[error("token must have exactly three dot-separated segments")]
    Segments,
    #[error("token {0} is not canonical unpadded base64url")]
    Base64(&'static str),
    #[error("token header is not a JSON object: {0}")]
    Header(String),
    #[error("token payload is not a JSON object: {0}")]
    Payload(String),
    #[error("duplicate member {0:?} in the token {1}")]
    DuplicateMember(String, &'static str),
    #[error("token algorithm {0:?} is never accepted")]
    ForbiddenAlgorithm(String),
    #[error("token algorithm {0} is not allowed by the policy")]
    AlgorithmNotAllowed(&'static str),
    #[error("token algorithm {token} does not match the key's algorithm {key}")]
    AlgorithmKeyMismatch {
        token: &'static str,
        key: &'static str,
    },
    #[error("token header has an unknown critical extension {0:?}")]
    UnknownCritical(String),
    #[error("token header has a malformed crit member")]
    MalformedCritical,
    #[error("token header has no kid and the key set has more than one key")]
    MissingKid,
    #[error("no key with kid {0:?}")]
    UnknownKid(String),
    #[error("signature has the wrong length for {0}")]
    SignatureLength(&'static str),
    #[error("signature does not verify")]
    BadSignature,
}

/// Claims that fail the validation policy.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimsError {
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("token issuer does not match")]
    WrongIssuer,
    #[error("token audience does not match")]
    WrongAudience,
    #[error("token type (typ) {0:?} is not the required {1:?}")]
    WrongType(Option<String>, String),
    #[error("required claim {0:?} is missing")]
    Missing(String),
    #[error("claim {0:?} is invalid: {1}")]
    Invalid(String, &'static str),
    #[error("token lifetime exceeds the policy maximum")]
    LifetimeTooLong,
}

/// A DPoP proof (RFC 9449) that is not well formed or does not verify
/// ([`crate::dpop`]). The request checks are keyward-verify's.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DpopError {
    /// The JWS itself: segments, base64url, header, algorithm, signature.
    #[error("DPoP proof: {0}")]
    Token(#[from] TokenError),
    /// A `typ` other than `dpop+jwt` (the one found, truncated).
    #[error("DPoP proof typ {0:?} is not \"dpop+jwt\"")]
    Type(Option<String>),
    /// No `jwk` in the header.
    #[error("DPoP proof has no jwk in its header")]
    MissingJwk,
    /// A `jwk` that is not an acceptable public key (a private member is
    /// [`KeyError::PrivateMembers`]).
    #[error("DPoP proof jwk: {0}")]
    Jwk(#[source] KeyError),
    /// A claim missing, empty or of the wrong type.
    #[error("DPoP proof claim {0:?} {1}")]
    Claim(&'static str, &'static str),
}

/// Problems sealing or opening private key material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    #[error("invalid root key: {0}")]
    BadRootKey(String),
    #[error("sealed key data is malformed")]
    Malformed,
    #[error("sealed key does not open (wrong root key, or the data was altered)")]
    OpenFailed,
    /// The root key lives in a device (an HSM, a KMS) that cannot wrap or
    /// unwrap now; a retry may succeed. Names the store and a reason label,
    /// never key material.
    #[error("the root key's {store} cannot be used now ({reason}): {detail}")]
    Unavailable {
        store: &'static str,
        reason: &'static str,
        detail: String,
    },
}
