//! Signing tokens without stalling the async runtime: RSA signatures (about a
//! millisecond at 4096 bits) run on a dedicated pool of threads; ECDSA and
//! Ed25519 signatures (tens of microseconds) run inline.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keyward_jose::{sign_payload, KeyError, KeyFamily, LocalSigner, TokenSigner};

use crate::error::IssuerError;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed pool of signing threads.
#[derive(Clone)]
pub struct SigningPool {
    tx: SyncSender<Job>,
    threads: usize,
}

impl std::fmt::Debug for SigningPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningPool({} threads)", self.threads)
    }
}

impl SigningPool {
    /// A pool of `threads` threads (at least one) with a bounded queue.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads * 256);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
            std::thread::Builder::new()
                .name(format!("keyward-sign-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("spawn a signing thread");
        }
        SigningPool { tx, threads }
    }

    /// Runs `f` on the pool and waits for its result without blocking the runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, IssuerError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        let tx = self.tx.clone();
        // A full queue means overload: hand the wait to a blocking thread rather than the runtime.
        match tx.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || tx.send(job))
                    .await
                    .map_err(|_| IssuerError::Unavailable("signing pool closed".into()))?
                    .map_err(|_| IssuerError::Unavailable("signing pool closed".into()))?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(IssuerError::Unavailable("signing pool closed".into()))
            }
        }
        wait.await
            .map_err(|_| IssuerError::Unavailable("signing pool closed".into()))
    }

    /// Signs `payload` as a compact JWS with header typ `typ`.
    pub async fn sign(
        &self,
        signer: Arc<LocalSigner>,
        typ: &'static str,
        payload: Vec<u8>,
    ) -> Result<String, IssuerError> {
        let family = signer.algorithm().family();
        let alg = signer.algorithm().name();
        self.sign_with(family, alg, move || {
            sign_payload(&*signer, Some(typ), &payload).map_err(IssuerError::from)
        })
        .await
    }

    /// Signs `payload` as a compact JWS under the prepared header of `signer`.
    pub async fn sign_prepared(
        &self,
        signer: Arc<PreparedSigner>,
        payload: Vec<u8>,
    ) -> Result<String, IssuerError> {
        let family = signer.signer.algorithm().family();
        let alg = signer.signer.algorithm().name();
        self.sign_with(family, alg, move || {
            signer.sign(&payload).map_err(IssuerError::from)
        })
        .await
    }

    /// Runs `sign`, timed: inline for ECDSA and EdDSA (tens of microseconds,
    /// less than a hop to another thread costs), on the pool for RSA
    /// (milliseconds).
    async fn sign_with(
        &self,
        family: KeyFamily,
        alg: &'static str,
        sign: impl FnOnce() -> Result<String, IssuerError> + Send + 'static,
    ) -> Result<String, IssuerError> {
        let timed = move || {
            let started = std::time::Instant::now();
            let token = sign();
            crate::metrics::signing(alg, started.elapsed().as_secs_f64());
            token
        };
        if matches!(family, KeyFamily::Rsa) {
            self.run(timed).await?
        } else {
            timed()
        }
    }
}

/// A signer with the protected header of the tokens of one `typ` it signs,
/// JSON- and base64url-encoded once instead of for every token. The header
/// is the one [`sign_payload`] writes: `{"alg","kid","typ"}`.
#[derive(Debug)]
pub struct PreparedSigner {
    pub signer: Arc<LocalSigner>,
    /// `BASE64URL(UTF8(header))`, the first segment of every token.
    encoded_header: String,
}

impl PreparedSigner {
    pub fn new(signer: Arc<LocalSigner>, typ: &'static str) -> Self {
        let header = serde_json::json!({
            "alg": signer.algorithm().name(),
            "kid": signer.kid(),
            "typ": typ,
        });
        let encoded_header = URL_SAFE_NO_PAD.encode(header.to_string());
        PreparedSigner {
            signer,
            encoded_header,
        }
    }

    /// The compact JWS of `payload` (RFC 7515 §7.1); the signature itself
    /// is the signer's ([`TokenSigner::sign`]).
    pub fn sign(&self, payload: &[u8]) -> Result<String, KeyError> {
        let b64_len = |n: usize| n.div_ceil(3) * 4;
        let mut out = String::with_capacity(
            self.encoded_header.len() + b64_len(payload.len()) + b64_len(512) + 2,
        );
        out.push_str(&self.encoded_header);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut out);
        let sig = self.signer.sign(out.as_bytes())?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&sig, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_jose::{Algorithm, PrivateKey};

    #[tokio::test]
    async fn signs_rsa_on_the_pool_and_ec_inline() {
        let pool = SigningPool::new(2);
        for alg in [Algorithm::RS256, Algorithm::ES256] {
            let bits = (alg == Algorithm::RS256).then_some(2048);
            let s = Arc::new(LocalSigner::new(
                PrivateKey::generate(alg, bits).unwrap(),
                Some("k".into()),
            ));
            let t = pool
                .sign(s.clone(), "at+jwt", br#"{"a":1}"#.to_vec())
                .await
                .unwrap();
            let (h, p) = keyward_jose::verify_compact(&t, s.key().public_key(), 8192).unwrap();
            assert_eq!(h.kid.as_deref(), Some("k"));
            assert_eq!(p, br#"{"a":1}"#);
        }
        let many: Vec<_> = (0..64).map(|i| pool.run(move || i * 2)).collect();
        let out: Vec<i32> = futures_join(many).await;
        assert_eq!(out.iter().sum::<i32>(), (0..64).map(|i| i * 2).sum::<i32>());
    }

    #[tokio::test]
    async fn prepared_headers_are_the_ones_sign_payload_writes() {
        let pool = SigningPool::new(1);
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let bits = (alg == Algorithm::RS256).then_some(2048);
            let s = Arc::new(LocalSigner::new(
                PrivateKey::generate(alg, bits).unwrap(),
                Some("k\"1".into()),
            ));
            let prepared = Arc::new(PreparedSigner::new(s.clone(), "at+jwt"));
            let payload = br#"{"sub":"a"}"#.to_vec();
            let t = pool.sign_prepared(prepared, payload.clone()).await.unwrap();
            let reference = sign_payload(&*s, Some("at+jwt"), &payload).unwrap();
            // Same header and payload segments; ECDSA signatures differ per call.
            let head = |t: &str| t.rsplit_once('.').unwrap().0.to_string();
            assert_eq!(head(&t), head(&reference));
            let (h, p) = keyward_jose::verify_compact(&t, s.key().public_key(), 8192).unwrap();
            assert_eq!(h.kid.as_deref(), Some("k\"1"));
            assert_eq!(h.typ.as_deref(), Some("at+jwt"));
            assert_eq!(p, payload);
        }
    }

    async fn futures_join<F: std::future::Future<Output = Result<i32, IssuerError>>>(
        fs: Vec<F>,
    ) -> Vec<i32> {
        let mut out = Vec::new();
        for f in fs {
            out.push(f.await.unwrap());
        }
        out
    }
}
