//! The store's error type.
//!
//! Messages name what was wrong (an environment, a kid, a root key *id*, a
//! file path) and never carry secrets: no key material, no root key text, no
//! SQL with bound values.

use std::path::PathBuf;

use thiserror::Error;

/// Any error from this crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A named thing (`"environment"`, `"key"`) does not exist.
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },

    /// A named thing already exists.
    #[error("{what} {name:?} already exists")]
    Conflict { what: &'static str, name: String },

    /// Another environment already serves at this issuer URL (the same host
    /// and path; see [`crate::issuer_key`]).
    #[error("issuer URL {issuer} is already used by environment {env:?}: each environment needs its own issuer URL (another host or path)")]
    IssuerTaken { issuer: String, env: String },

    /// A value offered to the store cannot be stored as given (a scope with
    /// white space in it, an unknown client authentication method, ...).
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },

    /// The private half of this key is in a device: there is nothing to
    /// unseal (sign through the device's store instead).
    #[error(
        "key {kid:?} is held by the {store} key store: its private half never leaves the device"
    )]
    DeviceKey {
        kid: String,
        store: crate::records::KeyStoreName,
    },

    /// `initialize` was called on a store that already records a root key.
    #[error("the store is already initialized")]
    AlreadyInitialized,

    /// The store has no root key recorded yet (run `init` first).
    #[error("the store is not initialized (no root key is recorded)")]
    NotInitialized,

    /// The root key offered is not the one the store's keys are sealed under.
    #[error("wrong root key: the store's keys are sealed under root key {expected}, but root key {got} was supplied")]
    WrongRootKey { expected: String, got: String },

    /// The root key could not be loaded from its source. (`key_source` is
    /// [`crate::RootKeySource::describe`]; a field named `source` would be
    /// taken for the error's cause.)
    #[error("root key unavailable from {key_source}: {reason}")]
    RootKeyUnavailable { key_source: String, reason: String },

    /// The root key could not be written to its source.
    #[error("cannot write the root key to {key_source}: {reason}")]
    RootKeyWrite { key_source: String, reason: String },

    /// The root key has the store's id but does not open the store's
    /// sealed keys (a device object recreated under the same reference,
    /// another key behind the same name): nothing was changed.
    #[error("root key {id} does not open the sealed key {kid}: it has the store's root key id but is another key (was the device object replaced?)")]
    RootKeyDoesNotOpen { id: String, kid: String },

    /// Work on a blocking thread (a device call) did not complete.
    #[error("{0} did not complete")]
    Interrupted(&'static str),

    /// Sealing or opening private key material failed.
    #[error(transparent)]
    Seal(#[from] keyward_jose::error::SealError),

    /// A backup file that cannot be trusted or read: not a keyward backup,
    /// another format version, cut off, a checksum that does not match, a
    /// broken audit chain inside, a value of the wrong type.
    #[error("backup refused: {0}")]
    InvalidBackup(String),

    /// A restore target that already holds data (the first such table).
    #[error(
        "the target store is not empty (table {0} has rows): restore only into an empty store"
    )]
    NotEmpty(String),

    /// A stored row does not decode (the database was altered outside keyward).
    #[error("corrupt store data: {0}")]
    Corrupt(String),

    /// The database URL is not one this store understands.
    #[error("unsupported database URL: {0}")]
    InvalidUrl(&'static str),

    /// The database failed. The source is sqlx's error, which carries the
    /// server's message but not the statement's bound values.
    #[error("database error")]
    Database(#[source] sqlx::Error),

    /// Applying the schema migrations failed.
    #[error("database migration failed")]
    Migration(#[source] sqlx::migrate::MigrateError),

    /// A file system operation failed.
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e)
    }
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// True if `e` is a unique-constraint violation (a concurrent insert won).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_clear() {
        let e = StoreError::NotFound {
            what: "environment",
            name: "prod".into(),
        };
        assert_eq!(e.to_string(), "environment \"prod\" not found");
        let e = StoreError::Conflict {
            what: "key",
            name: "abc".into(),
        };
        assert_eq!(e.to_string(), "key \"abc\" already exists");
    }
}
