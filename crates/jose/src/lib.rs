//! keyward-jose: pure JOSE for keyward.
//!
//! Algorithms ([`Algorithm`]), keys ([`PrivateKey`], [`PublicKey`]), JWK and
//! JWK Sets ([`Jwk`], [`JwkSet`]), JWS compact signing (through any
//! [`TokenSigner`]; [`PreparedSigner`] for a server's tokens) and verification, JWT
//! claims with a validation policy ([`Validation`]), and envelope sealing of
//! private keys ([`seal`]). No I/O, no async, no clock of its own: time is
//! passed in. This is the only keyward crate that touches aws-lc-rs.
//!
//! Reading is strict everywhere (DESIGN.md rule 1): `none` and `HS*` cannot
//! even be named, a key is bound to exactly one algorithm, RSA keys under 2048
//! bits are refused, ECDSA signatures are raw `r || s`. ML-DSA (FIPS 204, as
//! RFC 9964 puts it in JOSE: `ML-DSA-44/65/87`, `kty: AKP`) is supported and
//! opt-in: a [`Validation`] accepts it only when its `algorithms` name it.
//!
//! A token's life: [`UnverifiedToken::parse`] splits it and reads its header,
//! once; [`UnverifiedToken::verify`] finds the key by `kid`, checks the
//! algorithm, the signature and the claims, and gives a [`VerifiedToken`];
//! [`verify_jwt`] does both. [`Claims`] come only out of verification:
//! [`dangerous`] reads a token without verifying it, to display it or to
//! choose whose keys and policy verify it, and nothing else.
//!
//! ```
//! use keyward_jose::{Algorithm, ClaimsError, Error, KeySet, LocalSigner, PrivateKey, TokenSigner, Validation, sign_jwt, verify_jwt};
//! let signer = LocalSigner::new(PrivateKey::generate(Algorithm::ES256, None).unwrap(), None);
//! let token = sign_jwt(&signer, Some("at+jwt"), &serde_json::json!({
//!     "iss": "https://auth.example", "sub": "alice", "aud": "api", "exp": 2000, "iat": 1000, "jti": "1"
//! })).unwrap();
//! let mut keys = KeySet::new();
//! let jwk = signer.public_jwk();
//! keys.insert(jwk.kid, jwk.key).unwrap();
//! let policy = Validation::access_token("https://auth.example", &["api"]);
//! let ok = verify_jwt(&token, &keys, &policy, 1500).unwrap();
//! assert_eq!(ok.claims.sub(), Some("alice"));
//! assert_eq!(verify_jwt(&token, &keys, &policy, 2100).unwrap_err(), Error::Claims(ClaimsError::Expired));
//! ```
#![forbid(unsafe_code)]

pub mod alg;
mod b64;
pub mod claim_text;
pub mod claims;
pub mod crypto;
pub mod dangerous;
pub mod dpop;
pub mod error;
mod json;
pub mod jwk;
pub mod jws;
pub mod key;
pub mod seal;
pub mod signer;
pub mod token;
pub mod verifier;

pub use alg::{
    Algorithm, Curve, KeyFamily, MlDsaParams, DEFAULT_RSA_BITS, MIN_RSA_BITS, RSA_SIZES,
};
pub use claims::{Audiences, Claims, Validation, MAX_KEPT_CLAIMS};
pub use dpop::{
    access_token_hash, ath_matches, verify_proof, DpopProof, NonceKey, ProofHeader, UnverifiedProof,
};
pub use error::{ClaimsError, DpopError, Error, KeyError, SealError, TokenError};
pub use jwk::{Jwk, JwkSet, RejectedKey};
pub use jws::{verify_compact, Header, DEFAULT_MAX_TOKEN_LEN};
pub use key::{PrivateKey, PublicKey, PublicMaterial};
pub use signer::{sign_jwt, sign_payload, LocalSigner, PreparedSigner, SigningCost, TokenSigner};
pub use token::{UnverifiedToken, VerifiedToken};
pub use verifier::{verify_jwt, KeySet, Verifier};
