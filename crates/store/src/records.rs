//! The rows the store keeps: environments with their rotation policy, and
//! signing keys with the timestamps their state is derived from.

use std::fmt;

use keyward_jose::seal::SealedKey;
use keyward_jose::Algorithm;
use serde::{Deserialize, Serialize};

/// Unix seconds, everywhere in the store.
pub type Timestamp = i64;

/// A signing key's life-cycle state, derived from its timestamps and a clock
/// (DESIGN rule 4); never stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published in JWKS, not signing yet.
    Pending,
    /// Signs new tokens.
    Active,
    /// Published, no longer signing, until its tokens have expired.
    Retired,
    /// Neither published nor signing.
    Removed,
    /// Withdrawn in an emergency: unpublished at once.
    Revoked,
}

impl KeyState {
    /// The lower-case name (`"pending"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Removed => "removed",
            KeyState::Revoked => "revoked",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// RSA modulus size used when a policy names an RSA algorithm but no size.
pub const DEFAULT_RSA_BITS: u32 = 4096;
/// Default rotation period: 90 days.
pub const DEFAULT_ROTATE_EVERY_SECS: i64 = 90 * 24 * 3600;
/// Default lead time a new key is published before it signs: 48 hours.
pub const DEFAULT_LEAD_SECS: i64 = 48 * 3600;
/// Default maximum access-token lifetime: one hour.
pub const DEFAULT_TOKEN_TTL_SECS: i64 = 3600;

fn is_rsa(alg: Algorithm) -> bool {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => true,
        Algorithm::ES256
        | Algorithm::ES384
        | Algorithm::ES512
        | Algorithm::EdDSA
        | Algorithm::MlDsa44
        | Algorithm::MlDsa65
        | Algorithm::MlDsa87 => false,
    }
}

/// How an environment's keys are made and rotated. Stored as JSON text in the
/// environment's row. Every field may be omitted and takes its default;
/// `rsa_bits` defaults to 4096 for RSA algorithms and must be absent (or
/// null) for the others. Unknown fields are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct RotationPolicy {
    /// The algorithm new keys are made for.
    pub alg: Algorithm,
    /// RSA modulus size; `None` for non-RSA algorithms.
    pub rsa_bits: Option<u32>,
    /// How often a new key takes over signing.
    pub rotate_every_secs: i64,
    /// How long before it signs a new key is published.
    pub lead_secs: i64,
    /// The longest access-token lifetime in this environment.
    pub token_ttl_secs: i64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            alg: Algorithm::RS256,
            rsa_bits: Some(DEFAULT_RSA_BITS),
            rotate_every_secs: DEFAULT_ROTATE_EVERY_SECS,
            lead_secs: DEFAULT_LEAD_SECS,
            token_ttl_secs: DEFAULT_TOKEN_TTL_SECS,
        }
    }
}

impl RotationPolicy {
    /// The default policy for `alg` (with `rsa_bits` set only for RSA).
    pub fn for_algorithm(alg: Algorithm) -> Self {
        RotationPolicy {
            alg,
            rsa_bits: is_rsa(alg).then_some(DEFAULT_RSA_BITS),
            ..RotationPolicy::default()
        }
    }
}

/// The wire form of [`RotationPolicy`] before defaults and checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default = "default_alg")]
    alg: Algorithm,
    #[serde(default)]
    rsa_bits: Option<u32>,
    #[serde(default = "default_rotate")]
    rotate_every_secs: i64,
    #[serde(default = "default_lead")]
    lead_secs: i64,
    #[serde(default = "default_ttl")]
    token_ttl_secs: i64,
}

fn default_alg() -> Algorithm {
    Algorithm::RS256
}
fn default_rotate() -> i64 {
    DEFAULT_ROTATE_EVERY_SECS
}
fn default_lead() -> i64 {
    DEFAULT_LEAD_SECS
}
fn default_ttl() -> i64 {
    DEFAULT_TOKEN_TTL_SECS
}

impl TryFrom<RawPolicy> for RotationPolicy {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Self, String> {
        let rsa_bits = match (is_rsa(raw.alg), raw.rsa_bits) {
            (true, None) => Some(DEFAULT_RSA_BITS),
            (true, Some(bits)) => Some(bits),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(format!(
                    "rsa_bits applies only to RSA algorithms, not {}",
                    raw.alg
                ))
            }
        };
        Ok(RotationPolicy {
            alg: raw.alg,
            rsa_bits,
            rotate_every_secs: raw.rotate_every_secs,
            lead_secs: raw.lead_secs,
            token_ttl_secs: raw.token_ttl_secs,
        })
    }
}

/// Where private keys live: sealed in this database (`local`), or inside
/// a device (`pkcs11`: an HSM; `aws-kms`). Stored as its name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum KeyStoreName {
    /// Sealed under the root key in the store.
    #[default]
    Local,
    /// A PKCS#11 token (an HSM).
    Pkcs11,
    /// AWS KMS.
    AwsKms,
}

impl KeyStoreName {
    /// Every store, in the order messages list them.
    pub const ALL: [KeyStoreName; 3] = [
        KeyStoreName::Local,
        KeyStoreName::Pkcs11,
        KeyStoreName::AwsKms,
    ];

    /// `local`, `pkcs11` or `aws-kms`: the name in configuration, records,
    /// metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStoreName::Local => "local",
            KeyStoreName::Pkcs11 => "pkcs11",
            KeyStoreName::AwsKms => "aws-kms",
        }
    }

    /// Whether keys of this store live in a device (not sealed here).
    pub fn is_device(self) -> bool {
        self != KeyStoreName::Local
    }

    /// The store named `name`; [`StoreError::Invalid`] otherwise.
    pub fn parse(name: &str) -> Result<Self, crate::StoreError> {
        KeyStoreName::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| crate::StoreError::Invalid {
                what: "key store",
                reason: format!(
                    "unknown key store {:?} (local, pkcs11, aws-kms)",
                    name.chars().take(40).collect::<String>()
                ),
            })
    }
}

impl fmt::Display for KeyStoreName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<KeyStoreName> for &'static str {
    fn from(s: KeyStoreName) -> &'static str {
        s.as_str()
    }
}

impl TryFrom<String> for KeyStoreName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        KeyStoreName::parse(&s).map_err(|e| e.to_string())
    }
}

impl std::str::FromStr for KeyStoreName {
    type Err = crate::StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyStoreName::parse(s)
    }
}

/// An isolated tenant with its own issuer URL, keys and policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    pub name: String,
    pub issuer: String,
    pub policy: RotationPolicy,
    pub created_at: Timestamp,
    /// Where the environment's new keys are made. Existing keys keep the
    /// store they were made in ([`KeyRecord::material`]).
    #[serde(default)]
    pub key_store: KeyStoreName,
    /// When its token endpoint requires DPoP server nonces (RFC 9449 §8):
    /// the secret they are keyed by, sealed under the root key
    /// ([`crate::sealing::dpop_nonce_aad`]); `None`: nonces are not required.
    #[serde(skip)]
    pub dpop_nonce_secret: Option<keyward_jose::seal::SealedKey>,
}

impl Environment {
    /// Whether DPoP proofs at its token endpoint must carry a server nonce.
    pub fn requires_dpop_nonce(&self) -> bool {
        self.dpop_nonce_secret.is_some()
    }
}

/// Where a key's private half is.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// Sealed under the root key, in the store (a `local` key).
    Sealed(SealedKey),
    /// Inside a device; the store keeps only how to find it (the `sealed`
    /// column holds the empty blob).
    Device {
        /// Never [`KeyStoreName::Local`].
        store: KeyStoreName,
        /// PKCS#11 `<token serial>/<CKA_ID hex>`, or a KMS key ARN. No secret.
        reference: String,
    },
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMaterial::Sealed(s) => f.debug_tuple("Sealed").field(s).finish(),
            KeyMaterial::Device { store, reference } => f
                .debug_struct("Device")
                .field("store", store)
                .field("reference", reference)
                .finish(),
        }
    }
}

impl KeyMaterial {
    /// The store holding the private half.
    pub fn store(&self) -> KeyStoreName {
        match self {
            KeyMaterial::Sealed(_) => KeyStoreName::Local,
            KeyMaterial::Device { store, .. } => *store,
        }
    }

    /// The device reference, for a device key.
    pub fn reference(&self) -> Option<&str> {
        match self {
            KeyMaterial::Sealed(_) => None,
            KeyMaterial::Device { reference, .. } => Some(reference),
        }
    }

    /// The sealed private key, for a local key.
    pub fn sealed(&self) -> Option<&SealedKey> {
        match self {
            KeyMaterial::Sealed(s) => Some(s),
            KeyMaterial::Device { .. } => None,
        }
    }
}

/// Splits an issuer URL into what a server routes by: the host (lower case,
/// with its port) and the path (without a trailing slash). The scheme plays
/// no part: `http://a` and `https://a/` are served at the same place.
pub fn issuer_route(issuer: &str) -> (String, String) {
    let rest = issuer.split_once("://").map(|x| x.1).unwrap_or(issuer);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    (
        host.to_ascii_lowercase(),
        path.trim_end_matches('/').to_string(),
    )
}

/// The key under which an issuer URL is unique across environments:
/// [`issuer_route`]'s host and path joined. Two issuer URLs with the same
/// key would be served at the same place, so the store refuses the second.
pub fn issuer_key(issuer: &str) -> String {
    let (host, path) = issuer_route(issuer);
    host + &path
}

/// A signing key as stored: public half in clear, private half sealed or
/// in a device ([`KeyMaterial`]). `Debug` shows only the sealed blob's
/// length, or the device reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub env: String,
    /// Globally unique.
    pub kid: String,
    pub alg: Algorithm,
    /// RSA modulus bits, or curve bits (256/384/521), 256 for Ed25519.
    pub size_bits: u32,
    /// JSON text of the public JWK.
    pub public_jwk: String,
    /// The sealed PKCS#8 private key (see [`crate::sealing`]), or where
    /// the device holds it.
    pub material: KeyMaterial,
    /// `"generated"` or `"imported"`.
    pub origin: String,
    pub owner: Option<String>,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub activates_at: Timestamp,
    pub retires_at: Option<Timestamp>,
    pub removes_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// For a device key: when its device object was destroyed (or its
    /// deletion scheduled), after it left the JWKS.
    pub destroyed_at: Option<Timestamp>,
}

fn reached(t: Option<Timestamp>, now: Timestamp) -> bool {
    t.is_some_and(|t| t <= now)
}

impl KeyRecord {
    /// The key's state at `now` (DESIGN rule 4), by precedence:
    /// `revoked_at <= now` → Revoked; `removes_at <= now` → Removed;
    /// `retires_at <= now` → Retired; `activates_at <= now` → Active;
    /// otherwise Pending.
    pub fn state(&self, now: Timestamp) -> KeyState {
        if reached(self.revoked_at, now) {
            KeyState::Revoked
        } else if reached(self.removes_at, now) {
            KeyState::Removed
        } else if reached(self.retires_at, now) {
            KeyState::Retired
        } else if self.activates_at <= now {
            KeyState::Active
        } else {
            KeyState::Pending
        }
    }

    /// Where the private half lives.
    pub fn key_store(&self) -> KeyStoreName {
        self.material.store()
    }

    /// The device reference of a device key.
    pub fn reference(&self) -> Option<&str> {
        self.material.reference()
    }

    /// Whether this is a device key whose device object should be destroyed
    /// at `now`: it left the JWKS (removed or revoked) and is not destroyed yet.
    pub fn awaits_destruction(&self, now: Timestamp) -> bool {
        self.key_store().is_device()
            && self.destroyed_at.is_none()
            && matches!(self.state(now), KeyState::Removed | KeyState::Revoked)
    }

    /// Pending, Active and Retired keys are published in JWKS.
    pub fn is_published(&self, now: Timestamp) -> bool {
        matches!(
            self.state(now),
            KeyState::Pending | KeyState::Active | KeyState::Retired
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_urls_split_for_routing() {
        assert_eq!(
            issuer_route("http://127.0.0.1:8080"),
            ("127.0.0.1:8080".into(), "".into())
        );
        assert_eq!(
            issuer_route("https://Auth.Example.com/prod/"),
            ("auth.example.com".into(), "/prod".into())
        );
    }
    use keyward_jose::seal::{seal, RootKey};

    fn key() -> KeyRecord {
        KeyRecord {
            env: "prod".into(),
            kid: "k1".into(),
            alg: Algorithm::ES256,
            size_bits: 256,
            public_jwk: "{}".into(),
            material: KeyMaterial::Sealed(seal(&RootKey::generate(), b"x", b"y").unwrap()),
            origin: "generated".into(),
            owner: None,
            description: None,
            created_at: 0,
            activates_at: 100,
            retires_at: Some(200),
            removes_at: Some(300),
            revoked_at: None,
            destroyed_at: None,
        }
    }

    #[test]
    fn key_store_names() {
        for s in KeyStoreName::ALL {
            assert_eq!(KeyStoreName::parse(s.as_str()).unwrap(), s);
            let text = serde_json::to_string(&s).unwrap();
            assert_eq!(text, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<KeyStoreName>(&text).unwrap(), s);
        }
        for bad in ["", "LOCAL", "kms", "pkcs11 ", "aws_kms"] {
            let e = KeyStoreName::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("local, pkcs11, aws-kms"),
                "{bad}: {e}"
            );
            assert!(serde_json::from_str::<KeyStoreName>(&format!("{bad:?}")).is_err());
        }
        assert!(!KeyStoreName::Local.is_device());
        assert!(KeyStoreName::AwsKms.is_device());
    }

    #[test]
    fn device_keys_await_destruction_once_unpublished() {
        let mut k = key();
        assert!(
            !k.awaits_destruction(1000),
            "a local key has nothing to destroy"
        );
        k.material = KeyMaterial::Device {
            store: KeyStoreName::Pkcs11,
            reference: "1/ab".into(),
        };
        assert_eq!(k.key_store(), KeyStoreName::Pkcs11);
        assert_eq!(k.reference(), Some("1/ab"));
        assert!(!k.awaits_destruction(299), "still published");
        assert!(k.awaits_destruction(300), "removed");
        k.revoked_at = Some(150);
        assert!(k.awaits_destruction(150), "revoked");
        k.destroyed_at = Some(151);
        assert!(!k.awaits_destruction(400), "already destroyed");
        assert!(format!("{k:?}").contains("1/ab"));
    }

    #[test]
    fn state_follows_the_clock() {
        let k = key();
        let cases = [
            (-5, KeyState::Pending),
            (99, KeyState::Pending),
            (100, KeyState::Active),
            (199, KeyState::Active),
            (200, KeyState::Retired),
            (299, KeyState::Retired),
            (300, KeyState::Removed),
            (i64::MAX, KeyState::Removed),
        ];
        for (now, want) in cases {
            assert_eq!(k.state(now), want, "at {now}");
        }
        assert!(k.is_published(0));
        assert!(k.is_published(150));
        assert!(k.is_published(250));
        assert!(!k.is_published(300));
    }

    #[test]
    fn open_ended_key_stays_active() {
        let mut k = key();
        k.retires_at = None;
        k.removes_at = None;
        assert_eq!(k.state(i64::MAX), KeyState::Active);
        assert_eq!(k.state(i64::MIN), KeyState::Pending);
    }

    #[test]
    fn revocation_takes_precedence() {
        let mut k = key();
        k.revoked_at = Some(150);
        assert_eq!(k.state(149), KeyState::Active);
        assert_eq!(k.state(150), KeyState::Revoked);
        assert_eq!(k.state(250), KeyState::Revoked);
        assert_eq!(k.state(1000), KeyState::Revoked);
        assert!(!k.is_published(150));
        // Revoked before it ever activated.
        k.revoked_at = Some(10);
        assert_eq!(k.state(9), KeyState::Pending);
        assert_eq!(k.state(10), KeyState::Revoked);
    }

    #[test]
    fn removal_without_retirement() {
        let mut k = key();
        k.retires_at = None;
        assert_eq!(k.state(250), KeyState::Active);
        assert_eq!(k.state(300), KeyState::Removed);
    }

    #[test]
    fn state_names() {
        assert_eq!(KeyState::Retired.to_string(), "retired");
        assert_eq!(
            serde_json::to_string(&KeyState::Revoked).unwrap(),
            "\"revoked\""
        );
        let s: KeyState = serde_json::from_str("\"pending\"").unwrap();
        assert_eq!(s, KeyState::Pending);
    }

    #[test]
    fn policy_defaults() {
        let p: RotationPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, RotationPolicy::default());
        assert_eq!(p.alg, Algorithm::RS256);
        assert_eq!(p.rsa_bits, Some(4096));
        assert_eq!(p.rotate_every_secs, 90 * 86400);
        assert_eq!(p.lead_secs, 48 * 3600);
        assert_eq!(p.token_ttl_secs, 3600);

        let p: RotationPolicy = serde_json::from_str(r#"{"alg":"ES256"}"#).unwrap();
        assert_eq!(p.rsa_bits, None);
        assert_eq!(p, RotationPolicy::for_algorithm(Algorithm::ES256));
        let p: RotationPolicy =
            serde_json::from_str(r#"{"alg":"PS384","rsa_bits":2048,"lead_secs":60}"#).unwrap();
        assert_eq!(p.rsa_bits, Some(2048));
        assert_eq!(p.lead_secs, 60);

        // Round trip.
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<RotationPolicy>(&text).unwrap(), p);
        let ed = RotationPolicy::for_algorithm(Algorithm::EdDSA);
        let text = serde_json::to_string(&ed).unwrap();
        assert_eq!(serde_json::from_str::<RotationPolicy>(&text).unwrap(), ed);
    }

    #[test]
    fn policy_is_strict() {
        for (text, why) in [
            (r#"{"alg":"HS256"}"#, r#"unsupported algorithm "HS256""#),
            (r#"{"algo":"RS256"}"#, "unknown field `algo`"),
            (
                r#"{"alg":"ES256","rsa_bits":2048}"#,
                "rsa_bits applies only to RSA algorithms, not ES256",
            ),
            (r#"{"lead_secs":"1"}"#, r#"invalid type: string "1""#),
        ] {
            let e = serde_json::from_str::<RotationPolicy>(text).unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
    }
}
