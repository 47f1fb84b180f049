//! keyward-issuer: the authority.
//!
//! - [`keyring`] and [`rotation`]: an environment's keys, when each is
//!   published, signs, retires and is removed, computed from stored
//!   timestamps and the time passed in;
//! - [`clients`], [`grants`], [`tokens`]: OAuth clients and their
//!   authentication, the token service (client_credentials, refresh_token
//!   with rotation and reuse detection, minting for users), introspection and
//!   revocation;
//! - [`authority`]: the running state, following the store;
//! - [`http`]: the HTTP API (axum), thin over the above, and [`admin`]: the
//!   admin API under `/admin/v1/` (bearer admin tokens, OpenAPI document),
//!   and [`console`]: the web console under `/console`;
//! - [`login`]: browser logins (authorization code with PKCE, login and
//!   consent delegated to the operator's app, ID tokens, userinfo, logout);
//! - [`root_source`]: where the root key comes from (a file, or a key
//!   held by a PKCS#11 token or AWS KMS);
//! - [`views`]: the JSON form of stored records, shared with the CLI;
//! - [`signing`]: a dedicated pool so signers that block (RSA, ML-DSA, and
//!   HSM or KMS signers) never stall the runtime.
#![forbid(unsafe_code)]

pub mod admin;
pub mod authority;
pub mod clients;
pub mod clock;
pub mod console;
pub mod dev_login;
pub mod device;
pub mod error;
pub mod exchange;
pub mod grants;
pub mod http;
pub mod keyring;
pub mod login;
pub mod metrics;
pub mod oauth;
pub mod par;
pub mod root_source;
pub mod rotation;
pub mod scheduler;
pub mod signing;
pub mod tokens;
pub mod views;

pub use authority::{
    Authority, DeviceFault, ReloadFailure, ReloadHealth, RootKeyLoader, Settings,
    DEFAULT_REFRESH_GRACE_SECS, NO_ROOT_KEY,
};
pub use clock::{Clock, FixedClock, ScaledClock, SharedClock, SystemClock};
pub use error::{IssuerError, RootKeyLoadError};
pub use keyring::{
    AddedKey, Change, DeletedEnvironment, FirstKey, KeyOptions, Origin, RetireOptions,
};
pub use oauth::{ErrorCode, Fault, FaultReason, OAuthError};
pub use root_source::{RootKeySpec, RootSourceError};
pub use rotation::{RotationError, RotationPlan, Schedule};

/// RFC 3339 text (UTC, seconds) of a unix time.
pub fn fmt_time(t: keyward_store::Timestamp) -> String {
    let st = if t >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t as u64)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_secs(t.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(st).to_string()
}
