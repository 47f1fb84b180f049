//! The gateway's errors, one type per concern, each convertible into the
//! crate-wide [`enum@Error`]: a configuration that cannot be used
//! ([`ConfigError`], one [`Diagnostic`] per problem, each with its place in
//! the file and a fix), a gateway that cannot start ([`StartError`]), a rate
//! that does not parse ([`RateError`]), and a revocation-feed poll that
//! failed ([`FeedError`], [`PageError`]).

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Any error of keyward-gateway, for callers that handle them alike.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration that cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A gateway that cannot start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A rate that does not parse.
    #[error(transparent)]
    Rate(#[from] RateError),
    /// A revocation-feed poll that failed.
    #[error(transparent)]
    Feed(#[from] FeedError),
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column (in characters) of the offending text.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub fix: String,
}

/// A configuration that cannot be used: every problem found, in file order.
///
/// `Display` prints each as `FILE:LINE:COL: what is wrong` followed by a
/// `fix: ...` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the configuration came from.
    pub file: PathBuf,
    /// The problems, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    /// An error with one diagnostic.
    pub(crate) fn one(file: &Path, d: Diagnostic) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            diagnostics: vec![d],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}\nfix: {}",
                self.file.display(),
                d.line,
                d.column,
                d.message,
                d.fix
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Why [`crate::Gateway::start`] failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The DPoP nonce secret file could not be read.
    #[error("cannot read the DPoP nonce secret {}: {source}", path.display())]
    NonceSecret {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The verification gate could not be built from the configuration.
    #[error("cannot build the token gate: {0}")]
    Gate(#[from] keyward_verify::BuildError),
    /// The Redis client could not be made from `redis_url`.
    #[error("cannot use redis_url: {0}")]
    Redis(#[from] RedisError),
    /// An issuer's discovery document points its keys at a host neither
    /// the issuer's nor in its `jwks_hosts`: the issuer is not loaded.
    #[error("issuer {issuer} is not loaded: {source} (add that host to the issuer's jwks_hosts if you trust it)")]
    UntrustedJwksHost {
        /// The issuer.
        issuer: String,
        /// The discovery error.
        #[source]
        source: keyward_verify::JwksError,
    },
    /// An API key's identity could not be built.
    #[error("API key {id}: {reason}")]
    ApiKey {
        /// The key id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The TLS certificate, key or client CA does not load.
    #[error("cannot start TLS: {0}")]
    Tls(#[from] keyward_verify::TlsError),
}

/// Why a Redis call did not answer ([`crate::redis`]); the caller falls
/// back to local state or refuses, and nothing was changed locally.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The connection is down; the supervisor is reconnecting.
    #[error("redis is unreachable (reconnecting)")]
    Down,
    /// No answer within `redis_timeout` (milliseconds).
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
    /// The connection failed (refused, reset, closed).
    #[error("redis connection failed: {0}")]
    Connection(#[source] ::redis::RedisError),
    /// Redis answered with an error (out of memory, a script error...).
    #[error("redis answered an error: {0}")]
    Server(#[source] ::redis::RedisError),
}

impl RedisError {
    /// Classifies a client error; `timeout_ms` is the limit a timeout hit.
    pub(crate) fn from_redis(e: ::redis::RedisError, timeout_ms: u64) -> RedisError {
        if e.is_timeout() {
            RedisError::Timeout(timeout_ms)
        } else if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            RedisError::Connection(e)
        } else {
            RedisError::Server(e)
        }
    }

    /// The `kind` label of `keyward_gate_redis_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisError::Down => "down",
            RedisError::Timeout(_) => "timeout",
            RedisError::Connection(_) => "connection",
            RedisError::Server(_) => "server",
        }
    }
}

/// Why `keyward gateway api-key create` or `revoke` cannot edit a
/// configuration file ([`crate::api_keys`]); the file is left as it was.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// The file is not TOML.
    #[error("the configuration is not TOML: {0}")]
    Toml(String),
    /// `api_key` is there but is not `[[api_key]]` tables.
    #[error("api_key in the configuration is not a list of [[api_key]] tables")]
    NotATableArray,
    /// `--expires` is not a duration, an RFC 3339 time or `never`.
    #[error("--expires {0:?} is not a duration such as 90d, an RFC 3339 time such as 2027-01-31T00:00:00Z, or never")]
    Expires(String),
    /// No `[[api_key]]` has this id.
    #[error("no API key has id {0:?}")]
    NoSuchKey(String),
    /// The key is revoked already.
    #[error("API key {0} is already revoked")]
    AlreadyRevoked(String),
}

/// Text that is not a rate ([`crate::ratelimit::Rate::parse`]).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateError {
    /// Not `N/s`, `N/m` or `N/h` with N a plain positive number.
    #[error("invalid rate {text:?}: expected N/s, N/m or N/h (also N/sec, N/min, N/hour) with N a positive number, e.g. 100/s or 0.5/min")]
    Form {
        /// The text given.
        text: String,
    },
    /// N is zero (or so small the rate is zero).
    #[error("invalid rate {text:?}: N must be greater than zero")]
    NotPositive {
        /// The text given.
        text: String,
    },
}

/// A revocation-feed poll that failed ([`crate::revocation_feed`]); the
/// page that failed changed nothing.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The page could not be fetched (URL refused, timeout, status, size...).
    #[error(transparent)]
    Fetch(#[from] keyward_verify::FetchError),
    /// The page is not a feed page.
    #[error("{url}: {source}")]
    Page {
        /// The page's URL.
        url: String,
        /// What is wrong with it.
        source: PageError,
    },
    /// A page with entries whose `next` cursor is not past the one asked
    /// with (the feed would loop).
    #[error("{url}: cursor did not advance (since={since}, next={next})")]
    CursorStuck {
        /// The feed's URL.
        url: String,
        /// The cursor asked with.
        since: i64,
        /// The cursor the page gave.
        next: i64,
    },
}

/// What is wrong with a revocation-feed page.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PageError {
    /// Not the page's JSON shape (types, duplicates, missing members).
    #[error("malformed feed page: {0}")]
    Json(#[source] serde_json::Error),
    /// A negative `next` cursor.
    #[error("malformed feed page: negative next cursor")]
    NegativeCursor,
    /// A `jti` that is empty or longer than the limit.
    #[error("malformed feed page: jti of {len} bytes (1..={max} accepted)")]
    Jti {
        /// Its length in bytes.
        len: usize,
        /// The longest accepted.
        max: usize,
    },
}

/// Byte offset to 1-based (line, column), the column counted in characters.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_to_lines_and_columns() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 4), (1, 5));
        assert_eq!(line_col(t, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(t, 9), (2, 3));
        assert_eq!(line_col(t, 1000), (3, 1));
    }

    #[test]
    fn display_has_place_and_fix() {
        let e = ConfigError::one(
            Path::new("g.toml"),
            Diagnostic {
                line: 3,
                column: 7,
                message: "bad".into(),
                fix: "write good".into(),
            },
        );
        assert_eq!(e.to_string(), "g.toml:3:7: bad\nfix: write good");
    }
}
