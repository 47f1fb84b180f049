//! Errors of the authority.
//!
//! A refusal says by its variant what it means to a caller, so the admin
//! API and the OAuth endpoints map it without reading its text:
//!
//! | variant | meaning | admin API |
//! |---|---|---|
//! | [`IssuerError::Invalid`] | the input is not acceptable | 400 |
//! | [`IssuerError::Conflict`] | the request does not fit the current state | 409 |
//! | [`IssuerError::NeedsForce`] | unsafe; allowed only when forced | 409 |
//! | [`IssuerError::Rotation`] | a key cannot be scheduled now | 409 (400 for a negative lead) |
//! | [`IssuerError::Unavailable`], [`IssuerError::RootKeyStale`], [`IssuerError::RootKeyUnavailable`] | not possible now; a retry may succeed | 503 |
//! | [`IssuerError::Store`] | as [`keyward_store::StoreError`] says (404 not found, 409 taken, ...) | |
//! | anything else | a server-side failure | 500 |

use thiserror::Error;

use crate::rotation::RotationError;

/// Any error from keyward-issuer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IssuerError {
    #[error(transparent)]
    Store(#[from] keyward_store::StoreError),
    #[error(transparent)]
    Jose(#[from] keyward_jose::Error),
    /// The input is not acceptable (a name, an issuer URL, a policy, a
    /// client registration): the message says what is accepted, the source
    /// (if any) what was wrong with the value.
    #[error("{message}")]
    Invalid {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The request does not fit the current state: a key already retired
    /// or revoked, a client without a secret, an issuer URL under another
    /// environment's endpoints.
    #[error("{0}")]
    Conflict(String),
    /// Refused because it would break something (stop signing, unpublish
    /// keys, remove clients); the message says what, what to do instead, and
    /// which force option accepts it.
    #[error("{0}")]
    NeedsForce(String),
    /// A new key cannot be scheduled (see [`crate::rotation::plan`]).
    #[error(transparent)]
    Rotation(#[from] RotationError),
    /// Something needed is not available now (the signing pool, a client's
    /// JWK Set URL); a later retry may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// Key generation, on its blocking thread, did not complete.
    #[error("key generation was interrupted")]
    KeyGeneration(#[source] tokio::task::JoinError),
    /// A document (a client's JWK Set) could not be fetched.
    #[error(transparent)]
    Fetch(#[from] keyward_verify::FetchError),
    /// This server's root key is not the one the store's keys are sealed
    /// under (a root-key rotation happened), and its root-key source does not
    /// give the store's key (`reason`). Names key ids only, never key text.
    #[error("this server holds root key {held} but the store's keys are sealed under root key {expected}")]
    RootKeyStale {
        held: String,
        expected: String,
        #[source]
        reason: RootKeyLoadError,
    },
    /// A key store outside the process (an HSM, a KMS) refused or failed:
    /// an algorithm it cannot hold, a store that is not configured, a
    /// device that is down (a retry may succeed: see
    /// [`keyward_signers::SignerError::is_transient`]).
    #[error(transparent)]
    KeyStore(#[from] keyward_signers::SignerError),
    /// This server holds no root key yet (it started while the root key's
    /// device was down, see [`crate::Authority::load_waiting_for_root`]),
    /// and its loader cannot give the store's key now (`reason`).
    #[error("this server cannot load the store's root key {expected}{}", reference.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    RootKeyUnavailable {
        expected: String,
        reference: Option<String>,
        #[source]
        reason: RootKeyLoadError,
    },
    /// A reload read the store, but keys that sign now or will (active or
    /// pending) cannot be opened on this server.
    #[error("cannot open key(s) {}", kids.join(", "))]
    KeysUnopened {
        kids: Vec<String>,
        source: Box<IssuerError>,
    },
}

impl IssuerError {
    /// [`IssuerError::Invalid`] with a message only.
    pub fn invalid(message: impl Into<String>) -> Self {
        IssuerError::Invalid {
            message: message.into(),
            source: None,
        }
    }

    /// [`IssuerError::Invalid`]: `message` says what is accepted, `source`
    /// what was wrong.
    pub fn invalid_because(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        IssuerError::Invalid {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A short label for metrics: `store`, `root_key`, `key_open` or `other`.
    pub fn reason(&self) -> &'static str {
        match self {
            IssuerError::Store(_) => "store",
            IssuerError::RootKeyStale { .. } | IssuerError::RootKeyUnavailable { .. } => "root_key",
            IssuerError::KeysUnopened { source, .. } => match **source {
                IssuerError::RootKeyStale { .. } | IssuerError::RootKeyUnavailable { .. } => {
                    "root_key"
                }
                _ => "key_open",
            },
            IssuerError::KeyStore(_) => "key_store",
            IssuerError::Jose(_)
            | IssuerError::Invalid { .. }
            | IssuerError::Conflict(_)
            | IssuerError::NeedsForce(_)
            | IssuerError::Rotation(_)
            | IssuerError::Unavailable(_)
            | IssuerError::KeyGeneration(_)
            | IssuerError::Fetch(_) => "other",
        }
    }
}

impl From<keyward_jose::KeyError> for IssuerError {
    fn from(e: keyward_jose::KeyError) -> Self {
        IssuerError::Jose(e.into())
    }
}

/// An error's message followed by its sources, `: `-separated; a source
/// whose message the chain already shows (an error that prints its source,
/// `#[error("...: {0}")]`) is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        next = c.source();
    }
    s
}

/// Why a server could not get the store's root key from its source (see
/// [`crate::RootKeyLoader`]). Names sources and key ids, never key text.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RootKeyLoadError {
    /// This server was given no way to re-read its root key.
    #[error("this server cannot re-read its root key; restart it with the new key")]
    NotReloadable,
    /// The source gives another root key than the one asked for.
    #[error("{origin} holds root key {held}")]
    OtherKey { origin: String, held: String },
    /// The source gives another root key and cannot change while the
    /// process runs (an environment variable).
    #[error("{origin} holds root key {held} and cannot change in a running process; restart this server with the new key")]
    Fixed { origin: String, held: String },
    /// The source cannot be read, or what it holds is not a root key.
    #[error(transparent)]
    Unreadable(Box<dyn std::error::Error + Send + Sync>),
}

impl RootKeyLoadError {
    /// [`RootKeyLoadError::Unreadable`].
    pub fn unreadable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        RootKeyLoadError::Unreadable(e.into())
    }
}
