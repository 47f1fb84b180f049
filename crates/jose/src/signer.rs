//! Signing tokens. [`TokenSigner`] never assumes it can read key bytes, so a
//! PKCS#11 or cloud-KMS signer can implement it; [`LocalSigner`] holds a
//! [`PrivateKey`] in process.

use serde::Serialize;

use crate::alg::Algorithm;
use crate::error::{Error, KeyError};
use crate::jwk::Jwk;
use crate::jws::{header_json, sign_compact};
use crate::key::PrivateKey;

/// Something that signs with one key of one algorithm.
pub trait TokenSigner: Send + Sync {
    /// The `kid` put in every header.
    fn kid(&self) -> &str;
    /// The one algorithm.
    fn algorithm(&self) -> Algorithm;
    /// The public key, as published in JWKS.
    fn public_jwk(&self) -> Jwk;
    /// Signs a JWS signing input. ECDSA signatures are raw `r || s`.
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// A signer over an in-process private key.
#[derive(Debug)]
pub struct LocalSigner {
    kid: String,
    key: PrivateKey,
}

impl LocalSigner {
    /// A signer for `key`, with `kid` (default: the RFC 7638 thumbprint).
    pub fn new(key: PrivateKey, kid: Option<String>) -> Self {
        let kid = kid.unwrap_or_else(|| key.public_key().thumbprint());
        LocalSigner { kid, key }
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }
}

impl TokenSigner for LocalSigner {
    fn kid(&self) -> &str {
        &self.kid
    }
    fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }
    fn public_jwk(&self) -> Jwk {
        self.key.public_key().to_jwk(Some(self.kid.clone()))
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.key.sign(signing_input)
    }
}

/// Signs `claims` as a compact JWT with header `{alg, kid, typ}`.
pub fn sign_jwt<S: TokenSigner + ?Sized, C: Serialize + ?Sized>(
    signer: &S,
    typ: Option<&str>,
    claims: &C,
) -> Result<String, Error> {
    let payload = serde_json::to_vec(claims)
        .map_err(|e| KeyError::Malformed(format!("claims do not serialize: {e}")))?;
    sign_payload(signer, typ, &payload)
}

/// Signs raw payload bytes as a compact JWS with header `{alg, kid, typ}`.
pub fn sign_payload<S: TokenSigner + ?Sized>(
    signer: &S,
    typ: Option<&str>,
    payload: &[u8],
) -> Result<String, Error> {
    let header = header_json(signer.algorithm(), Some(signer.kid()), typ);
    Ok(sign_compact(&header, payload, |input| signer.sign(input))?)
}
