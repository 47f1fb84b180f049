//! An in-memory stand-in for a device, for tests of what sits above a
//! [`KeyStore`]: it makes keys, signs, destroys and wraps like a device,
//! and can be told to fail (`set_failure`), to stall (`set_delay`) or to
//! answer garbage (`set_garbage`). Its keys live in this process: it is a
//! test double, built only with the `test-device` feature.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward_jose::seal::{self, KeyWrapper, RootKey, SealedKey};
use keyward_jose::{
    Algorithm, Jwk, KeyError, PrivateKey, PublicKey, SealError, SigningCost, TokenSigner,
};
use zeroize::Zeroizing;

use crate::{HardwareKey, KeyStore, SignerError};

/// What the device is told to do wrong.
#[derive(Default)]
struct Faults {
    /// Every call fails with this reason.
    failure: Option<&'static str>,
    /// Every call waits this long first.
    delay: Option<Duration>,
}

/// The shared state of one stand-in device.
struct Inner {
    name: &'static str,
    algorithms: Vec<Algorithm>,
    keys: Mutex<HashMap<String, Arc<PrivateKey>>>,
    roots: Mutex<HashMap<String, Arc<RootKey>>>,
    destroyed: Mutex<Vec<String>>,
    faults: Mutex<Faults>,
    garbage: AtomicBool,
    signatures: AtomicU64,
    serial: u64,
}

/// A stand-in device. Clones share the device.
#[derive(Clone)]
pub struct TestDevice(Arc<Inner>);

impl TestDevice {
    /// A device named `name` (`pkcs11`, `aws-kms`) that makes keys of
    /// `algorithms`.
    pub fn new(name: &'static str, algorithms: &[Algorithm]) -> Self {
        static SERIAL: AtomicU64 = AtomicU64::new(1);
        TestDevice(Arc::new(Inner {
            name,
            algorithms: algorithms.to_vec(),
            keys: Mutex::default(),
            roots: Mutex::default(),
            destroyed: Mutex::default(),
            faults: Mutex::default(),
            garbage: AtomicBool::new(false),
            signatures: AtomicU64::new(0),
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
        }))
    }

    /// Every call fails with `reason` (a [`SignerError::Unavailable`]) from
    /// now on; `None` mends the device.
    pub fn set_failure(&self, reason: Option<&'static str>) {
        self.0.faults.lock().unwrap().failure = reason;
    }

    /// Every call waits `delay` first; `None` for no wait.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.0.faults.lock().unwrap().delay = delay;
    }

    /// Signatures come back with a flipped bit from now on.
    pub fn set_garbage(&self, on: bool) {
        self.0.garbage.store(on, Ordering::SeqCst);
    }

    /// References of the keys destroyed so far.
    pub fn destroyed(&self) -> Vec<String> {
        self.0.destroyed.lock().unwrap().clone()
    }

    /// References of the keys the device holds.
    pub fn references(&self) -> Vec<String> {
        let mut v: Vec<_> = self.0.keys.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    /// Signatures made so far.
    pub fn signatures(&self) -> u64 {
        self.0.signatures.load(Ordering::SeqCst)
    }

    fn enter(&self) -> Result<(), SignerError> {
        let (failure, delay) = {
            let f = self.0.faults.lock().unwrap();
            (f.failure, f.delay)
        };
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        match failure {
            Some(reason) => Err(SignerError::Unavailable {
                store: self.0.name,
                reason,
                detail: "the test device was told to fail".into(),
            }),
            None => Ok(()),
        }
    }
}

impl KeyStore for TestDevice {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn check_algorithm(&self, alg: Algorithm, _rsa_bits: Option<u32>) -> Result<(), SignerError> {
        if self.0.algorithms.contains(&alg) {
            Ok(())
        } else {
            Err(SignerError::Unsupported {
                store: self.0.name,
                alg: alg.name().into(),
                why: "the test device was not given it".into(),
            })
        }
    }

    fn generate(
        &self,
        kid: &str,
        alg: Algorithm,
        rsa_bits: Option<u32>,
    ) -> Result<HardwareKey, SignerError> {
        self.check_algorithm(alg, rsa_bits)?;
        self.enter()?;
        let key = PrivateKey::generate(alg, rsa_bits)?;
        let reference = format!("test-{}/{kid}", self.0.serial);
        let public = key.public_key().clone();
        self.0
            .keys
            .lock()
            .unwrap()
            .insert(reference.clone(), Arc::new(key));
        Ok(HardwareKey { reference, public })
    }

    fn open(
        &self,
        kid: &str,
        reference: &str,
        public: &PublicKey,
    ) -> Result<Arc<dyn TokenSigner>, SignerError> {
        self.enter()?;
        let key = self
            .0
            .keys
            .lock()
            .unwrap()
            .get(reference)
            .cloned()
            .ok_or_else(|| SignerError::NotFound {
                store: self.0.name,
                reference: reference.into(),
            })?;
        if key.public_key().to_spki_der() != public.to_spki_der() {
            return Err(SignerError::Mismatch {
                store: self.0.name,
                reference: reference.into(),
                why: "another public key".into(),
            });
        }
        Ok(Arc::new(TestSigner {
            device: self.clone(),
            kid: kid.into(),
            key,
        }))
    }

    fn destroy(&self, reference: &str) -> Result<(), SignerError> {
        self.enter()?;
        self.0.keys.lock().unwrap().remove(reference);
        self.0.destroyed.lock().unwrap().push(reference.into());
        Ok(())
    }

    fn check(&self) -> Result<(), SignerError> {
        self.enter()
    }

    fn root_key(&self, name: &str, create: bool) -> Result<Arc<dyn KeyWrapper>, SignerError> {
        self.enter()?;
        let mut roots = self.0.roots.lock().unwrap();
        let key = match roots.get(name) {
            Some(k) => k.clone(),
            None if create => roots
                .entry(name.into())
                .or_insert_with(|| Arc::new(RootKey::generate()))
                .clone(),
            None => {
                return Err(SignerError::NotFound {
                    store: self.0.name,
                    reference: name.into(),
                })
            }
        };
        Ok(Arc::new(TestWrapper {
            device: self.clone(),
            name: name.into(),
            key,
        }))
    }
}

struct TestSigner {
    device: TestDevice,
    kid: String,
    key: Arc<PrivateKey>,
}

impl TokenSigner for TestSigner {
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
        self.device.enter()?;
        let mut sig = self.key.sign(signing_input)?;
        self.device.0.signatures.fetch_add(1, Ordering::SeqCst);
        if self.device.0.garbage.load(Ordering::SeqCst) {
            if let Some(b) = sig.last_mut() {
                *b ^= 1;
            }
        }
        Ok(sig)
    }
    fn cost(&self) -> SigningCost {
        SigningCost::Waits
    }
    fn store(&self) -> &'static str {
        self.device.0.name
    }
}

struct TestWrapper {
    device: TestDevice,
    name: String,
    key: Arc<RootKey>,
}

impl KeyWrapper for TestWrapper {
    fn key_id(&self) -> String {
        let h = keyward_jose::crypto::sha256_parts(&[
            b"keyward-root-key-id-v1\0test\0",
            self.device.0.serial.to_string().as_bytes(),
            b"\0",
            self.name.as_bytes(),
        ]);
        keyward_jose::crypto::hex(&h[..8])
    }
    fn store(&self) -> &'static str {
        self.device.0.name
    }
    fn reference(&self) -> String {
        format!("{}:{}", self.device.0.name, self.name)
    }
    fn wrap(&self, aad: &[u8], data_key: &[u8]) -> Result<Vec<u8>, SealError> {
        self.device.enter()?;
        Ok(seal::seal(&self.key, aad, data_key)?.to_bytes())
    }
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.device.enter()?;
        seal::open(&self.key, aad, &SealedKey::from_bytes(wrapped)?)
    }
}
