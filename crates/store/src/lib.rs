//! keyward's persistence layer.
//!
//! One [`Store`] API over SQLite (the embedded default) and PostgreSQL
//! (scale-out), through sqlx with embedded migrations. It keeps:
//!
//! - **environments** with their [`RotationPolicy`];
//! - **signing keys** ([`KeyRecord`]): the public JWK in clear, the private
//!   key sealed under the root key with its environment and kid bound as
//!   associated data ([`sealing`]), or, for an environment whose
//!   [`KeyStoreName`] is a device (`pkcs11`, `aws-kms`), only the device's
//!   reference to it ([`KeyMaterial::Device`]); key states are derived from stored
//!   timestamps and a clock passed in ([`KeyRecord::state`]);
//! - the **audit chain** ([`audit`]): an append-only, hash-linked log that
//!   [`Store::verify_audit`] checks end to end;
//! - the id of the **root key** the keys are sealed under and, for a root
//!   key held by a device, its reference ([`RootKeyRecord`]); where a local
//!   root key comes from ([`RootKeySource`]);
//! - the issuer's records: OAuth **clients** ([`clients`]), **refresh
//!   tokens**, the **revocation feed** and client-assertion jtis
//!   ([`tokens`]), **admin tokens** ([`admin`]), and what browser logins
//!   keep: sessions, login and consent challenges, remembered consents and
//!   authorization codes ([`login`]), pushed requests ([`pushed`]) and
//!   device requests ([`device`]);
//! - **backups** ([`backup`]): the whole store as one checksummed,
//!   backend-neutral file taken from one snapshot while serving, checked
//!   without restoring, and restored into an empty store of either backend;
//! - a **change counter** ([`Store::generation`]) that every change to
//!   environments, keys, clients, admin tokens or the root key moves, so
//!   running servers notice changes made elsewhere and reload.
//!
//! Every write goes through a [`Tx`]; a transaction that is not committed
//! changes nothing.

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod backup;
pub mod clients;
pub mod device;
pub mod error;
pub mod login;
pub mod pushed;
pub mod records;
pub mod root_key;
pub mod sealing;
pub mod store;
pub mod tokens;

pub use admin::AdminToken;
pub use audit::{AuditEntry, AuditRecord, AuditReport, BrokenLink, ExpectedHead, GENESIS_HASH};
pub use backup::{
    prepare_restore, verify_backup, BackupHeader, BackupSummary, DeviceKeyRef, RestorePlan,
    RestoreSummary, TABLES,
};
pub use clients::{Client, ClientAuth, ClientLogin, ClientMtls, TlsName};
pub use device::{DeviceAuthorization, DeviceStatus, Poll};
pub use error::StoreError;
pub use login::{
    AuthorizationCode, BrowserSession, Consent, Decision, LoginRequest, LoginSettings, RequestKind,
    SessionLogin,
};
pub use pushed::PushedRequest;
pub use records::{
    issuer_key, issuer_route, Environment, KeyMaterial, KeyRecord, KeyState, KeyStoreName,
    RotationPolicy, Timestamp,
};
pub use root_key::RootKeySource;
pub use sealing::{key_aad, open_private_key, seal_private_key};
pub use store::{Backend, RootKeyRecord, Store, Tx};
pub use tokens::{
    AccessRef, FamilyRevocation, RefreshToken, Revocation, REVOCATION_EXPIRY_MARGIN_SECS,
};
