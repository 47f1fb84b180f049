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
}

impl From<keyward_jose::KeyError> for IssuerError {
    fn from(e: keyward_jose::KeyError) -> Self {
        IssuerError::Jose(e.into())
    }
}
