//! Key stores that keep private keys outside keyward's process: a PKCS#11
//! token (an HSM: YubiHSM, Luna, CloudHSM; SoftHSM in tests) or AWS KMS.
//!
//! A [`KeyStore`] makes keys inside its device ([`KeyStore::generate`]),
//! opens a [`TokenSigner`] over one ([`open`]: every signature it returns
//! is verified against the recorded public key first, so a device that
//! answers garbage never puts its answer in a token), destroys a key
//! ([`KeyStore::destroy`]) and holds root keys ([`KeyStore::root_key`]: a
//! [`KeyWrapper`] that seals the data keys of `local` keys without the root
//! key ever entering this process).
//!
//! Every call blocks on the device for a bounded time and fails with a
//! [`SignerError`] whose [`SignerError::reason`] is a metric label. After
//! a failure a store backs off ([`Backoff`]) before it tries the device
//! again, so an outage is not hammered.
#![forbid(unsafe_code)]

use std::sync::Arc;

pub use keyward_jose::seal::KeyWrapper;
use keyward_jose::{Algorithm, PublicKey, TokenSigner};

mod backoff;
mod checked;
mod error;
pub mod kms;
pub mod pkcs11;
#[cfg(feature = "test-device")]
pub mod test_device;

pub use backoff::{Backoff, Permit};
pub use checked::Checked;
pub use error::SignerError;

/// The name of the store that keeps keys sealed in the database.
pub const LOCAL: &str = "local";
/// The name of the PKCS#11 store.
pub const PKCS11: &str = "pkcs11";
/// The name of the AWS KMS store.
pub const AWS_KMS: &str = "aws-kms";

/// A key made inside a device: how to find it again, and its public half.
#[derive(Clone, Debug)]
pub struct HardwareKey {
    /// Recorded in the database in place of sealed key material: for
    /// PKCS#11 `<token serial>/<CKA_ID as hex>`, for KMS the key ARN. Holds
    /// no secret.
    pub reference: String,
    /// The public key as the device reports it.
    pub public: PublicKey,
}

/// A device that holds private keys. Every method blocks (call it from a
/// thread that may block) for a bounded time.
pub trait KeyStore: Send + Sync {
    /// `pkcs11` or `aws-kms`: the store's name in configuration, records,
    /// metrics and messages.
    fn name(&self) -> &'static str;

    /// Whether the store can make keys of `alg` (and RSA size `rsa_bits`):
    /// [`SignerError::Unsupported`], naming the store and the algorithm,
    /// when it cannot. Asks the device only where its abilities vary (a
    /// PKCS#11 token's mechanisms).
    fn check_algorithm(&self, alg: Algorithm, rsa_bits: Option<u32>) -> Result<(), SignerError>;

    /// Makes a key of `alg` inside the device, named `kid` where the device
    /// names keys (PKCS#11 `CKA_LABEL` and `CKA_ID`; a KMS description and
    /// tag), never extractable.
    fn generate(
        &self,
        kid: &str,
        alg: Algorithm,
        rsa_bits: Option<u32>,
    ) -> Result<HardwareKey, SignerError>;

    /// A signer over the key at `reference`, after checking that the device
    /// holds it and that its public key is `public`
    /// ([`SignerError::Mismatch`] otherwise). Callers use [`open`], which
    /// adds the check of every signature.
    fn open(
        &self,
        kid: &str,
        reference: &str,
        public: &PublicKey,
    ) -> Result<Arc<dyn TokenSigner>, SignerError>;

    /// Destroys the key at `reference` (a KMS schedules its deletion).
    /// A key already gone is not an error.
    fn destroy(&self, reference: &str) -> Result<(), SignerError>;

    /// Whether the device answers now (a cheap call: a session, a
    /// `DescribeKey`), for readiness.
    fn check(&self) -> Result<(), SignerError>;

    /// The root key named `name` in this device (PKCS#11: the AES-256 key
    /// object with that label; KMS: a key id, ARN or `alias/...` of a
    /// symmetric key). With `create` a missing one is made (PKCS#11: a
    /// non-extractable, sensitive token object; KMS: a symmetric
    /// `ENCRYPT_DECRYPT` key, aliased when `name` is an alias).
    fn root_key(&self, name: &str, create: bool) -> Result<Arc<dyn KeyWrapper>, SignerError>;
}

/// Opens the signer of a device key through `store`, wrapped so that every
/// signature is verified against `public` before it is returned
/// ([`Checked`]).
pub fn open(
    store: &dyn KeyStore,
    kid: &str,
    reference: &str,
    public: &PublicKey,
) -> Result<Arc<dyn TokenSigner>, SignerError> {
    let inner = store.open(kid, reference, public)?;
    Ok(Arc::new(Checked::new(inner, public.clone())?))
}

/// The key stores this process is configured for, by name.
#[derive(Clone, Default)]
pub struct KeyStores {
    stores: Vec<Arc<dyn KeyStore>>,
}

impl std::fmt::Debug for KeyStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.stores.iter().map(|s| s.name()))
            .finish()
    }
}

impl KeyStores {
    /// No device store: only `local` keys.
    pub fn none() -> Self {
        KeyStores::default()
    }

    /// Adds `store`, replacing one of the same name.
    pub fn with(mut self, store: Arc<dyn KeyStore>) -> Self {
        self.stores.retain(|s| s.name() != store.name());
        self.stores.push(store);
        self
    }

    /// The store named `name` (`pkcs11`, `aws-kms`), or a
    /// [`SignerError::Config`] saying how to configure it.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn KeyStore>, SignerError> {
        self.stores
            .iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| SignerError::Config {
                store: match name {
                    PKCS11 => PKCS11,
                    AWS_KMS => AWS_KMS,
                    _ => "key",
                },
                message: match name {
                    PKCS11 => "no PKCS#11 module is configured (set [pkcs11] module and token_label in keyward.toml, or KEYWARD_PKCS11_MODULE and KEYWARD_PKCS11_TOKEN_LABEL, and the PIN in KEYWARD_PKCS11_PIN or KEYWARD_PKCS11_PIN_FILE)".into(),
                    AWS_KMS => "AWS KMS is not configured (set [aws_kms] in keyward.toml, or KEYWARD_AWS_KMS=1 with the standard AWS region and credentials)".into(),
                    other => format!("unknown key store {other:?} (local, pkcs11, aws-kms)"),
                },
            })
    }

    /// The configured stores.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn KeyStore>> {
        self.stores.iter()
    }
}
