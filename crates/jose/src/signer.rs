//! Signing tokens. [`TokenSigner`] never assumes it can read key bytes, so a
//! PKCS#11 or cloud-KMS signer can implement it; [`LocalSigner`] holds a
//! [`PrivateKey`] in process. Every token keyward signs is assembled here:
//! [`sign_payload`] (and [`sign_jwt`]) for one-off tokens, and
//! [`PreparedSigner`], which encodes a signer's protected header once, for
//! the tokens a server signs again and again. Both write the same bytes.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::alg::{Algorithm, KeyFamily};
use crate::b64;
use crate::error::{Error, KeyError};
use crate::jwk::Jwk;
use crate::jws::{encoded_header, sign_compact, signature_len_hint};
use crate::key::PrivateKey;

/// What one signature costs the thread that asks for it: whether a caller
/// on an async runtime should run [`TokenSigner::sign`] where it is or hand
/// it to a thread that may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SigningCost {
    /// Tens of microseconds of CPU (ECDSA, EdDSA): less than the rest of a
    /// token request, and cheaper to run in place than to hand over.
    Quick,
    /// Hundreds of microseconds or more of CPU: ML-DSA (0.2 to 0.3 ms),
    /// RSA (1 ms at 2048 bits, several at 4096). Runs on a pool sized to
    /// the machine's cores.
    Blocking,
    /// Waits on a device or the network (an HSM, a cloud KMS): little CPU,
    /// but an unbounded share of a thread when the device is slow or gone.
    /// Runs on threads that may block, never on the pool of CPU-bound
    /// signatures, so a stalled device does not delay other keys.
    Waits,
}

impl SigningCost {
    /// The cost of an in-process signature with `alg`. Measured per
    /// signature (`cargo bench -p keyward-jose --bench sign`, instructions
    /// with its `count:N` mode): ES256 0.2 M instructions, EdDSA 0.13 M,
    /// ML-DSA-44/65/87 1.3/1.9/2.4 M, RS256-2048 6.3 M. ML-DSA signed
    /// inline kept the server's other requests waiting behind it (`/healthz`
    /// p50 4 ms under an ML-DSA-65 token load, 0.08 ms with the pool),
    /// for 7% less CPU per token; so it goes to the pool with RSA.
    pub fn of(alg: Algorithm) -> SigningCost {
        match alg.family() {
            KeyFamily::Ec(_) | KeyFamily::Ed25519 => SigningCost::Quick,
            KeyFamily::Rsa | KeyFamily::MlDsa(_) => SigningCost::Blocking,
        }
    }
}

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
    /// What a call to [`TokenSigner::sign`] costs its thread. The default is
    /// that of an in-process key of the signer's algorithm
    /// ([`SigningCost::of`]); a signer that waits on I/O answers
    /// [`SigningCost::Blocking`].
    fn cost(&self) -> SigningCost {
        SigningCost::of(self.algorithm())
    }
    /// Where the private key lives, as a metric label and in messages:
    /// `local` (in this process) unless a device holds it (`pkcs11`,
    /// `aws-kms`).
    fn store(&self) -> &'static str {
        "local"
    }
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
    let header = encoded_header(signer.algorithm(), Some(signer.kid()), typ);
    Ok(sign_compact(
        &header,
        signer.algorithm(),
        payload,
        |input| signer.sign(input),
    )?)
}

/// A signer with the protected header of the tokens it signs (one `typ`)
/// JSON- and base64url-encoded once instead of for every token: the
/// header, and so every token, is the one [`sign_payload`] writes.
///
/// Generic over the signer; `PreparedSigner` alone is one over a
/// `dyn TokenSigner`, whatever holds the key (in process, an HSM, a KMS).
pub struct PreparedSigner<S: TokenSigner + ?Sized = dyn TokenSigner> {
    signer: Arc<S>,
    /// `BASE64URL(UTF8(header))`, the first segment of every token.
    header_b64: Box<str>,
}

impl<S: TokenSigner + ?Sized> PreparedSigner<S> {
    /// `signer` with the header `{alg, kid, typ}` encoded.
    pub fn new(signer: Arc<S>, typ: Option<&str>) -> Self {
        let header_b64 = encoded_header(signer.algorithm(), Some(signer.kid()), typ).into();
        PreparedSigner { signer, header_b64 }
    }

    /// The signer.
    pub fn signer(&self) -> &Arc<S> {
        &self.signer
    }

    /// The length of the compact JWS [`PreparedSigner::sign`] makes of a
    /// `payload_len`-byte payload, known before signing: every algorithm's
    /// signature has a fixed length (RSA's is the modulus's). A server checks
    /// it before it commits what a token describes.
    pub fn token_len(&self, payload_len: usize) -> usize {
        let alg = self.signer.algorithm();
        let signature_len = match alg.family() {
            KeyFamily::Rsa => (self.signer.public_jwk().key.bits() as usize).div_ceil(8),
            _ => signature_len_hint(alg),
        };
        self.header_b64.len() + 2 + b64::encoded_len(payload_len) + b64::encoded_len(signature_len)
    }

    /// The compact JWS of `payload` (RFC 7515 §7.1); the signature is the
    /// signer's ([`TokenSigner::sign`]), so this blocks as long as it does
    /// ([`TokenSigner::cost`]).
    pub fn sign(&self, payload: &[u8]) -> Result<String, KeyError> {
        sign_compact(
            &self.header_b64,
            self.signer.algorithm(),
            payload,
            |input| self.signer.sign(input),
        )
    }
}

impl<S: TokenSigner + ?Sized> fmt::Debug for PreparedSigner<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedSigner")
            .field("kid", &self.signer.kid())
            .field("alg", &self.signer.algorithm())
            .field("header", &self.header_b64)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::error::TokenError;
    use crate::jws::verify_compact;

    /// A real key whose signatures are remembered per signing input, so that
    /// randomized algorithms (ECDSA, PSS, hedged ML-DSA) sign one input the
    /// same way twice and two assemblies can be compared byte for byte.
    struct Memo {
        inner: LocalSigner,
        seen: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    }

    impl TokenSigner for Memo {
        fn kid(&self) -> &str {
            self.inner.kid()
        }
        fn algorithm(&self) -> Algorithm {
            self.inner.algorithm()
        }
        fn public_jwk(&self) -> Jwk {
            self.inner.public_jwk()
        }
        fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, KeyError> {
            let mut seen = self.seen.lock().unwrap();
            if let Some(sig) = seen.get(signing_input) {
                return Ok(sig.clone());
            }
            let sig = self.inner.sign(signing_input)?;
            seen.insert(signing_input.to_vec(), sig.clone());
            Ok(sig)
        }
    }

    fn memo(alg: Algorithm, kid: &str) -> Arc<Memo> {
        let bits = matches!(alg.family(), KeyFamily::Rsa).then_some(2048);
        Arc::new(Memo {
            inner: LocalSigner::new(PrivateKey::generate(alg, bits).unwrap(), Some(kid.into())),
            seen: Mutex::default(),
        })
    }

    #[test]
    fn prepared_tokens_are_byte_identical_to_sign_payload_for_every_algorithm() {
        // A kid and typ that JSON must escape, and a payload that is not JSON.
        let kid = "k\"1\\é/\u{1}";
        let payloads: [&[u8]; 3] = [br#"{"sub":"a"}"#, b"", &[0xff, 0, 0xfe, 7]];
        for alg in Algorithm::ALL {
            let signer = memo(alg, kid);
            for typ in [Some("at+jwt"), Some("JWT"), None] {
                // Through `dyn TokenSigner`, as a server holds it.
                let dynamic: Arc<dyn TokenSigner> = signer.clone();
                let prepared = PreparedSigner::new(dynamic, typ);
                for payload in payloads {
                    let token = prepared.sign(payload).unwrap();
                    assert_eq!(token.len(), prepared.token_len(payload.len()), "{alg}");
                    let reference = sign_payload(&*signer, typ, payload).unwrap();
                    assert_eq!(token, reference, "{alg} {typ:?}");
                    let public = signer.inner.key().public_key();
                    let (header, read) = verify_compact(&token, public, 1 << 16).unwrap();
                    assert_eq!((header.alg, header.kid.as_deref()), (alg, Some(kid)));
                    assert_eq!(header.typ.as_deref(), typ);
                    assert_eq!(read, payload);
                }
            }
        }
    }

    #[test]
    fn prepared_tokens_verify_with_a_fresh_signature_each_time() {
        for alg in Algorithm::ALL {
            let bits = matches!(alg.family(), KeyFamily::Rsa).then_some(2048);
            let local = LocalSigner::new(PrivateKey::generate(alg, bits).unwrap(), None);
            let prepared = PreparedSigner::new(Arc::new(local), Some("at+jwt"));
            let token = prepared.sign(br#"{"a":1}"#).unwrap();
            let public = prepared.signer().key().public_key();
            verify_compact(&token, public, 1 << 16).unwrap();
            // A signature is over the header and the payload: another payload
            // under this signature is refused.
            let (input, sig) = token.rsplit_once('.').unwrap();
            let (header, _) = input.split_once('.').unwrap();
            let forged = format!("{header}.{}.{sig}", crate::b64::encode(br#"{"a":2}"#));
            assert_eq!(
                verify_compact(&forged, public, 1 << 16).unwrap_err(),
                TokenError::BadSignature,
                "{alg}"
            );
        }
    }

    #[test]
    fn a_failing_signer_fails_the_token() {
        struct Broken;
        impl TokenSigner for Broken {
            fn kid(&self) -> &str {
                "hsm-1"
            }
            fn algorithm(&self) -> Algorithm {
                Algorithm::ES256
            }
            fn public_jwk(&self) -> Jwk {
                unreachable!("not published in this test")
            }
            fn sign(&self, _: &[u8]) -> Result<Vec<u8>, KeyError> {
                Err(KeyError::Signing)
            }
            fn cost(&self) -> SigningCost {
                SigningCost::Blocking
            }
        }
        let prepared: PreparedSigner = PreparedSigner::new(Arc::new(Broken), Some("at+jwt"));
        assert_eq!(prepared.sign(b"{}").unwrap_err(), KeyError::Signing);
        assert_eq!(prepared.signer().cost(), SigningCost::Blocking);
        assert!(format!("{prepared:?}").contains("hsm-1"));
    }
}
