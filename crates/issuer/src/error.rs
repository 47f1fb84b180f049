//! Errors of the authority.

use thiserror::Error;

/// Any error from keyward-issuer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IssuerError {
    #[error(transparent)]
    Store(#[from] keyward_store::StoreError),
    #[error(transparent)]
    Jose(#[from] keyward_jose::Error),
    #[error("{0}")]
    Refused(String),
    /// A document (a client's JWK Set) could not be fetched.
    #[error(transparent)]
    Fetch(#[from] keyward_verify::FetchError),
    /// This server's root key is not the one the store's keys are sealed
    /// under (a root-key rotation happened), and its root-key source does not
    /// give the store's key. Names key ids only, never key text.
    #[error("this server holds root key {held} but the store's keys are sealed under root key {expected}: {reason}")]
    RootKeyStale {
        held: String,
        expected: String,
        reason: String,
    },
    /// A reload read the store, but keys that sign now or will (active or
    /// pending) cannot be opened on this server.
    #[error("cannot open key(s) {}: {source}", kids.join(", "))]
    KeysUnopened {
        kids: Vec<String>,
        source: Box<IssuerError>,
    },
}

impl IssuerError {
    /// A short label for metrics: `store`, `root_key`, `key_open` or `other`.
    pub fn reason(&self) -> &'static str {
        match self {
            IssuerError::Store(_) => "store",
            IssuerError::RootKeyStale { .. } => "root_key",
            IssuerError::KeysUnopened { source, .. } => match **source {
                IssuerError::RootKeyStale { .. } => "root_key",
                _ => "key_open",
            },
            IssuerError::Jose(_) | IssuerError::Refused(_) | IssuerError::Fetch(_) => "other",
        }
    }
}

impl From<keyward_jose::KeyError> for IssuerError {
    fn from(e: keyward_jose::KeyError) -> Self {
        IssuerError::Jose(e.into())
    }
}
