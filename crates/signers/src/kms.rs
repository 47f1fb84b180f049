//! The AWS KMS key store: asymmetric `SIGN_VERIFY` keys made in KMS, signing
//! through the KMS API; symmetric KMS keys as root keys.

use std::sync::Arc;
use std::time::Duration;

use crate::{KeyStore, SignerError, AWS_KMS};

/// How to reach KMS. Credentials come from the standard AWS chain
/// (environment, shared files, SSO, container and instance roles).
#[derive(Clone, Debug)]
pub struct KmsConfig {
    /// The region (default: the AWS chain's, e.g. `AWS_REGION`).
    pub region: Option<String>,
    /// An endpoint URL override (a VPC endpoint; a local test server).
    pub endpoint_url: Option<String>,
    /// The longest one call may take, retries included (default 5 s).
    pub call_timeout: Duration,
}

/// Opens the KMS store. Fails only for a configuration that can never work;
/// an unreachable or throttling KMS is reported by each call
/// ([`SignerError::Unavailable`]) and retried with backoff.
pub fn open_store(config: KmsConfig) -> Result<Arc<dyn KeyStore>, SignerError> {
    let _ = config;
    Err(SignerError::Config {
        store: AWS_KMS,
        message: "not built yet".into(),
    })
}
