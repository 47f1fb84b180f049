//! keyward-issuer: the authority.
//!
//! Environments and their keyring ([`keyring`]): bringing keys in, retiring
//! and revoking them, opening signers, the published JWK Set; and the
//! rotation policy ([`rotation`]): when a key is published, signs, retires
//! and is removed, computed from stored timestamps and the time passed in.
#![forbid(unsafe_code)]

pub mod error;
pub mod keyring;
pub mod rotation;

pub use error::IssuerError;
pub use keyring::{AddedKey, Change, KeyOptions, Origin};
pub use rotation::{RotationPlan, Schedule};

/// RFC 3339 text (UTC, seconds) of a unix time.
pub fn fmt_time(t: keyward_store::Timestamp) -> String {
    let st = if t >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t as u64)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_secs(t.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(st).to_string()
}
