//! Signing tokens without stalling the async runtime. Each signer says what
//! a signature costs its thread ([`TokenSigner::cost`]): one that holds it
//! for hundreds of microseconds or more (RSA, ML-DSA; an HSM or a KMS
//! waiting on I/O) runs on a dedicated pool of threads, a quick one (ECDSA,
//! EdDSA: tens of microseconds) runs inline. The token itself is assembled
//! by keyward-jose ([`PreparedSigner`]), whatever holds the key.
//!
//! A signer that waits on a device ([`SigningCost::Waits`]: an HSM, a KMS)
//! runs on a thread that may block, under a deadline
//! ([`SigningPool::sign_within`]): past it the request fails with
//! [`KeyError::Unavailable`] (reason `timeout`) while the device's call
//! finishes on its own thread. Every device failure is counted in
//! `keyward_signer_errors_total{store,reason}`.
//!
//! [`TokenSigner::cost`]: keyward_jose::TokenSigner::cost

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward_jose::{KeyError, PreparedSigner, SigningCost};

use crate::error::IssuerError;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long a device may take to sign before the request fails (503):
/// 5 s, the `signing_timeout` setting's default.
pub const DEFAULT_SIGNING_TIMEOUT: Duration = Duration::from_secs(5);

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
        // The pool's threads are gone (each ends only when the pool is dropped
        // or a job panicked): say which way the job found out.
        let closed = |why: String| IssuerError::Unavailable(format!("signing pool closed: {why}"));
        let gone = || closed("its threads have ended".into());
        // A full queue means overload: hand the wait to a blocking thread rather than the runtime.
        match tx.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || tx.send(job))
                    .await
                    .map_err(|e| closed(format!("the queueing task failed: {e}")))?
                    .map_err(|_| gone())?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(gone()),
        }
        wait.await
            .map_err(|_| closed("the job ended without an answer (did a signer panic?)".into()))
    }

    /// [`SigningPool::sign_within`] with the default deadline
    /// ([`DEFAULT_SIGNING_TIMEOUT`]).
    pub async fn sign(
        &self,
        signer: Arc<PreparedSigner>,
        payload: Vec<u8>,
    ) -> Result<String, IssuerError> {
        self.sign_within(signer, payload, DEFAULT_SIGNING_TIMEOUT)
            .await
    }

    /// Signs `payload` as a compact JWS under the prepared header of
    /// `signer`, timed: inline when the signer is quick (less than a hop to
    /// another thread would cost), on the pool when it blocks, and on a
    /// thread that may block, for at most `deadline`, when it waits on a
    /// device. A device's failure (and a missed deadline: reason
    /// `timeout`) is a [`KeyError::Unavailable`] naming the store and the
    /// reason, counted in `keyward_signer_errors_total{store,reason}`.
    pub async fn sign_within(
        &self,
        signer: Arc<PreparedSigner>,
        payload: Vec<u8>,
        deadline: Duration,
    ) -> Result<String, IssuerError> {
        let cost = signer.signer().cost();
        let alg = signer.signer().algorithm().name();
        let store = signer.signer().store();
        let timed = move || {
            let started = std::time::Instant::now();
            let token = signer.sign(&payload);
            crate::metrics::signing(alg, store, started.elapsed().as_secs_f64());
            if let Err(KeyError::Unavailable { store, reason, .. }) = &token {
                crate::metrics::signer_error(store, reason);
            }
            token.map_err(IssuerError::from)
        };
        match cost {
            SigningCost::Quick => timed(),
            SigningCost::Blocking => self.run(timed).await?,
            // A device's wait is not the CPU pool's: a stalled HSM or KMS
            // must not hold the threads other keys sign on.
            SigningCost::Waits => {
                match tokio::time::timeout(deadline, tokio::task::spawn_blocking(timed)).await {
                    Ok(joined) => joined.map_err(|e| {
                        IssuerError::Unavailable(format!("the signing task failed: {e}"))
                    })?,
                    Err(_) => {
                        crate::metrics::signer_error(store, "timeout");
                        Err(KeyError::Unavailable {
                            store,
                            reason: "timeout",
                            detail: format!(
                                "the {store} key store did not sign within {} ms",
                                deadline.as_millis()
                            ),
                        }
                        .into())
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_jose::{
        verify_compact, Algorithm, Jwk, KeyError, KeyFamily, LocalSigner, PrivateKey, TokenSigner,
    };

    /// A local key that reports the thread it signed on, with a cost of
    /// its own (as an HSM's signer would declare `Blocking`).
    struct Spy {
        key: LocalSigner,
        cost: SigningCost,
        thread: Mutex<Option<String>>,
    }

    impl TokenSigner for Spy {
        fn kid(&self) -> &str {
            self.key.kid()
        }
        fn algorithm(&self) -> Algorithm {
            self.key.algorithm()
        }
        fn public_jwk(&self) -> Jwk {
            self.key.public_jwk()
        }
        fn sign(&self, input: &[u8]) -> Result<Vec<u8>, KeyError> {
            let name = std::thread::current().name().map(str::to_string);
            *self.thread.lock().unwrap() = name;
            self.key.sign(input)
        }
        fn cost(&self) -> SigningCost {
            self.cost
        }
    }

    /// Where the pool signed a token with a key of `alg` and `cost`.
    async fn signed_on(pool: &SigningPool, alg: Algorithm, cost: SigningCost) -> Option<String> {
        let bits = matches!(alg.family(), KeyFamily::Rsa).then_some(2048);
        let key = LocalSigner::new(PrivateKey::generate(alg, bits).unwrap(), Some("k".into()));
        let spy = Arc::new(Spy {
            key,
            cost,
            thread: Mutex::new(None),
        });
        let prepared = Arc::new(PreparedSigner::new(
            spy.clone() as Arc<dyn TokenSigner>,
            Some("at+jwt"),
        ));
        let t = pool.sign(prepared, br#"{"a":1}"#.to_vec()).await.unwrap();
        let (h, p) = verify_compact(&t, spy.key.key().public_key(), 8192).unwrap();
        assert_eq!(
            (h.kid.as_deref(), h.typ.as_deref()),
            (Some("k"), Some("at+jwt"))
        );
        assert_eq!(p, br#"{"a":1}"#);
        let thread = spy.thread.lock().unwrap().clone();
        thread
    }

    #[tokio::test]
    async fn the_signer_chooses_inline_or_the_pool() {
        let pool = SigningPool::new(2);
        let on_pool =
            |t: &Option<String>| t.as_deref().is_some_and(|n| n.starts_with("keyward-sign-"));
        for alg in Algorithm::ALL {
            // Each algorithm's own cost, as a local key declares it.
            let cost = SigningCost::of(alg);
            let t = signed_on(&pool, alg, cost).await;
            assert_eq!(on_pool(&t), cost == SigningCost::Blocking, "{alg}: {t:?}");
        }
        // A quick algorithm behind a signer that blocks (an HSM) goes to the pool.
        let t = signed_on(&pool, Algorithm::ES256, SigningCost::Blocking).await;
        assert!(on_pool(&t), "{t:?}");
        assert!(on_pool(
            &signed_on(&pool, Algorithm::RS256, SigningCost::Blocking).await
        ));
        assert!(!on_pool(
            &signed_on(&pool, Algorithm::RS256, SigningCost::Quick).await
        ));
    }

    #[tokio::test]
    async fn the_pool_runs_every_job() {
        let pool = SigningPool::new(2);
        let many: Vec<_> = (0..64).map(|i| pool.run(move || i * 2)).collect();
        let mut out = Vec::new();
        for f in many {
            out.push(f.await.unwrap());
        }
        assert_eq!(out.iter().sum::<i32>(), (0..64).map(|i| i * 2).sum::<i32>());
    }
}
