//! Signing tokens without stalling the async runtime: RSA signatures (about a
//! millisecond at 4096 bits) run on a dedicated pool of threads; ECDSA and
//! Ed25519 signatures (tens of microseconds) run inline.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use keyward_jose::{sign_payload, KeyFamily, LocalSigner, TokenSigner};

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
                    .map_err(|_| IssuerError::Refused("signing pool closed".into()))?
                    .map_err(|_| IssuerError::Refused("signing pool closed".into()))?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(IssuerError::Refused("signing pool closed".into()))
            }
        }
        wait.await
            .map_err(|_| IssuerError::Refused("signing pool closed".into()))
    }

    /// Signs `payload` as a compact JWS with header typ `typ`.
    pub async fn sign(
        &self,
        signer: Arc<LocalSigner>,
        typ: &'static str,
        payload: Vec<u8>,
    ) -> Result<String, IssuerError> {
        let alg = signer.algorithm().name();
        let rsa = matches!(signer.algorithm().family(), KeyFamily::Rsa);
        let timed = move || {
            let started = std::time::Instant::now();
            let token = sign_payload(&*signer, Some(typ), &payload);
            crate::metrics::signing(alg, started.elapsed().as_secs_f64());
            token
        };
        if rsa {
            self.run(timed).await?.map_err(IssuerError::from)
        } else {
            Ok(timed()?)
        }
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
