//! What can go wrong with a device, each with a metric label.

use keyward_jose::{KeyError, SealError};

/// A key store's failure. [`SignerError::reason`] is the label of
/// `keyward_signer_errors_total{store,reason}`. No message holds key
/// material or a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The store cannot make or use keys of this algorithm (or size).
    #[error("the {store} key store cannot hold {alg} keys: {why}")]
    Unsupported {
        store: &'static str,
        alg: String,
        why: String,
    },
    /// The store's configuration is wrong or incomplete: fix it and restart.
    #[error("{store} key store configuration: {message}")]
    Config {
        store: &'static str,
        message: String,
    },
    /// The device cannot be used now; a retry may succeed. `reason`:
    /// `module` (the PKCS#11 library does not load), `token` (no such token,
    /// or it was removed), `pin` (login refused), `session` (a session was
    /// closed under us), `device` (any other device error), `throttled`
    /// (the KMS rate limit: ThrottlingException, LimitExceededException,
    /// HTTP 429), `server` (a KMS 5xx, KMSInternalException,
    /// DependencyTimeoutException), `timeout`, `unreachable` (KMS cannot be
    /// reached: connection refused, DNS, TLS), `disabled` (the KMS key is
    /// disabled or pending deletion), `bad_signature` (the device returned
    /// a signature that does not verify). While a store backs off after a
    /// failure, its calls fail at once with the reason of that last real
    /// failure, and a `detail` that says the call was not tried, how many
    /// times in a row the device failed and when it is tried next. KMS
    /// access denied and missing credentials are not here but
    /// [`SignerError::Config`]: retrying does not mend a policy (a
    /// credential provider that times out or fails, IMDS, ECS, SSO, is
    /// here: `timeout`, `unreachable`); nor is a key KMS refuses for this
    /// use (key usage, ValidationException): [`SignerError::Mismatch`].
    #[error("the {store} key store is unavailable ({reason}): {detail}")]
    Unavailable {
        store: &'static str,
        reason: &'static str,
        detail: String,
    },
    /// The device has no key at this reference.
    #[error("the {store} key store has no key {reference}")]
    NotFound {
        store: &'static str,
        reference: String,
    },
    /// The device's key at this reference is not the one recorded.
    #[error("the {store} key at {reference} is not the recorded key: {why}")]
    Mismatch {
        store: &'static str,
        reference: String,
        why: String,
    },
    /// Key material from the device that keyward-jose refuses.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl SignerError {
    /// A short metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            SignerError::Unsupported { .. } => "unsupported",
            SignerError::Config { .. } => "config",
            SignerError::Unavailable { reason, .. } => reason,
            SignerError::NotFound { .. } => "not_found",
            SignerError::Mismatch { .. } => "mismatch",
            SignerError::Key(KeyError::Unavailable { reason, .. }) => reason,
            SignerError::Key(_) => "key",
        }
    }

    /// The store that failed, where the error names one.
    pub fn store(&self) -> Option<&'static str> {
        match self {
            SignerError::Unsupported { store, .. }
            | SignerError::Config { store, .. }
            | SignerError::Unavailable { store, .. }
            | SignerError::NotFound { store, .. }
            | SignerError::Mismatch { store, .. } => Some(store),
            SignerError::Key(KeyError::Unavailable { store, .. }) => Some(store),
            SignerError::Key(_) => None,
        }
    }

    /// Whether a retry later may succeed (the device is down, slow or
    /// throttling), as opposed to a configuration or key problem.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SignerError::Unavailable { .. } | SignerError::Key(KeyError::Unavailable { .. })
        )
    }
}

/// How a signer reports a device failure through [`keyward_jose::TokenSigner::sign`].
impl From<SignerError> for KeyError {
    fn from(e: SignerError) -> KeyError {
        match e {
            SignerError::Key(k) => k,
            other => KeyError::Unavailable {
                store: other.store().unwrap_or("device"),
                reason: other.reason(),
                detail: other.to_string(),
            },
        }
    }
}

/// How a root key in a device reports a failure through [`keyward_jose::seal::KeyWrapper`].
impl From<SignerError> for SealError {
    fn from(e: SignerError) -> SealError {
        SealError::Unavailable {
            store: e.store().unwrap_or("device"),
            reason: e.reason(),
            detail: e.to_string(),
        }
    }
}
