//! Which root key a command and a server use.
//!
//! Once the store records a device reference for its root key
//! (`pkcs11:<label>`, `aws-kms:<key ARN>`), every command and server uses
//! it, through the `[pkcs11]` / `[aws_kms]` settings: replicas follow a
//! rotation with nothing but the device configured. A local root key comes
//! from `KEYWARD_ROOT_KEY`, `KEYWARD_ROOT_KEY_FILE` or `<data-dir>/root.key`
//! as before. `root_key` in keyward.toml or `KEYWARD_ROOT_KEY_SOURCE`
//! (`file`, `pkcs11:<label>`, `aws-kms:<name>`) chooses the source of a new
//! store (`init`); on an initialized store a setting that names another
//! key than the store's is refused with what to do.

use anyhow::{anyhow, bail, Result};
use keyward_issuer::root_source::open_device_root;
use keyward_issuer::{RootKeyLoadError, RootKeySpec};
use keyward_jose::seal::RootKey;
use keyward_signers::KeyStores;
use keyward_store::{RootKeyRecord, RootKeySource, Store, StoreError};

use crate::context::{staged_path, Context};

/// The variable choosing the root key's source.
pub const SOURCE_VAR: &str = "KEYWARD_ROOT_KEY_SOURCE";

/// `text` as a source, with a message naming where it was given.
pub fn parse_spec(text: &str, given_in: &str) -> Result<RootKeySpec> {
    text.trim().parse().map_err(|e| anyhow!("{given_in}: {e}"))
}

/// The `root_key` of the file `KEYWARD_CONFIG` names (commands other than
/// `serve`), if any.
pub fn from_config_file(var: &impl Fn(&str) -> Option<String>) -> Result<Option<RootKeySpec>> {
    let Some(path) = var(crate::key_stores::CONFIG_VAR).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow!("{}: cannot read {path}: {e}", crate::key_stores::CONFIG_VAR))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow!("{path}: {}", e.message().trim_end()))?;
    match table.get("root_key") {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(parse_spec(s, &format!("{path}: root_key"))?)),
        Some(_) => {
            bail!("{path}: root_key must be a string (file, pkcs11:<label> or aws-kms:<name>)")
        }
    }
}

/// What the store's root key is, as a source, for messages.
fn recorded_source(record: &RootKeyRecord) -> String {
    match &record.reference {
        Some(r) => r.clone(),
        None => "a local root key (file)".into(),
    }
}

/// Refuses a configured source that names another key than the store's.
/// A device source naming the same device key by another name (a KMS
/// alias for the recorded ARN) is accepted when it opens the store's key.
fn check_configured(
    configured: Option<&RootKeySpec>,
    record: &RootKeyRecord,
    stores: &KeyStores,
) -> Result<()> {
    let Some(configured) = configured else {
        return Ok(());
    };
    let agrees = match (configured, &record.reference) {
        (RootKeySpec::File, None) => true,
        (RootKeySpec::File, Some(_)) => false,
        (RootKeySpec::Device { .. }, None) => false,
        (c, Some(r)) if c.to_string() == *r => true,
        (c, Some(_)) => open_device_root(stores, c, false)
            .map(|k| k.key_id() == record.id)
            .unwrap_or(false),
    };
    if agrees {
        return Ok(());
    }
    bail!(
        "the configured root key source ({configured}: root_key in keyward.toml or {SOURCE_VAR}) is not the store's root key, which is {} (id {}); remove the setting (the store records its root key) or set it to {}; to move to another root key run `keyward root-key rotate --to {configured}`",
        recorded_source(record),
        record.id,
        match &record.reference {
            Some(r) => r.as_str(),
            None => "file",
        }
    )
}

/// Opens the device root key the store records.
fn open_recorded(stores: &KeyStores, reference: &str, record: &RootKeyRecord) -> Result<RootKey> {
    let spec = parse_spec(reference, "the store's root key reference")?;
    let key = open_device_root(stores, &spec, false).map_err(|e| anyhow!("{e}"))?;
    if key.key_id() != record.id {
        bail!(
            "root key {reference}: the device gives root key {}, but the store's keys are sealed under root key {} (another key under that name?); nothing was changed",
            key.key_id(),
            record.id
        );
    }
    Ok(key)
}

/// The device root key the store records, checked: its id, and that it
/// opens the newest sealed key. A device that cannot be used now (down,
/// wrong PIN, no such key) is [`StoreRoot::DeviceDown`]; a store that is
/// not configured, or a key that is not the store's, an error.
pub async fn device_root(
    store: &Store,
    stores: &KeyStores,
    record: &RootKeyRecord,
    reference: &str,
) -> Result<StoreRoot> {
    let spec = parse_spec(reference, "the store's root key reference")?;
    let key = match open_device_root(stores, &spec, false) {
        Ok(k) => k,
        Err(e) => {
            let transient = e
                .signer_error()
                .is_some_and(|s| !matches!(s, keyward_signers::SignerError::Config { .. }));
            let e = anyhow!("{e}");
            if transient {
                return Ok(StoreRoot::DeviceDown(e));
            }
            return Err(e);
        }
    };
    if key.key_id() != record.id {
        bail!(
            "root key {reference}: the device gives root key {}, but the store's keys are sealed under root key {} (another key under that name?); nothing was changed",
            key.key_id(),
            record.id
        );
    }
    match store.check_root_key_opens(&key).await {
        Ok(()) => Ok(StoreRoot::Ready(key)),
        Err(StoreError::Seal(e @ keyward_jose::SealError::Unavailable { .. })) => {
            Ok(StoreRoot::DeviceDown(anyhow!("root key {reference}: {e}")))
        }
        Err(e) => Err(anyhow!("root key {reference}: {e}; nothing was changed")),
    }
}

/// Why a device root could not be had at start.
pub enum StoreRoot {
    Ready(RootKey),
    /// The store's root key is in a device that cannot be used now.
    DeviceDown(anyhow::Error),
}

impl Context {
    /// The root key source configured for this command (`--root-key` is
    /// passed by `init` itself): `KEYWARD_ROOT_KEY_SOURCE`, else `root_key`
    /// of the configuration; `None` when neither is set.
    pub fn root_key_spec(&self) -> Result<Option<RootKeySpec>> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(v) = var(SOURCE_VAR) {
            return Ok(Some(parse_spec(&v, SOURCE_VAR)?));
        }
        match &self.root_key_config {
            Some(spec) => Ok(spec.clone()),
            None => from_config_file(&var),
        }
    }

    /// The store's root key: the device key the store records, or the
    /// local key from its file or variable; checked against the store's id
    /// and, for a device key, against the newest sealed key (a replaced
    /// device object has the right id but another key). A rotation to a
    /// key file interrupted after the database committed is completed.
    pub async fn root_key(&self, store: &Store) -> Result<RootKey> {
        match self.store_root(store).await? {
            StoreRoot::Ready(k) => Ok(k),
            StoreRoot::DeviceDown(e) => Err(e),
        }
    }

    /// [`Context::root_key`], telling a device that cannot be used now
    /// apart from a configuration that can never work (for `serve`, which
    /// starts anyway in the first case).
    pub async fn store_root(&self, store: &Store) -> Result<StoreRoot> {
        let record = store.root_key_record().await?.ok_or_else(|| {
            anyhow!("the store is not initialized (run `keyward init --issuer URL` first)")
        })?;
        // The device settings are read only when a device is involved: a
        // store with a local root key does not depend on them.
        let configured = self.root_key_spec()?;
        let Some(reference) = &record.reference else {
            check_configured(configured.as_ref(), &record, &KeyStores::none())?;
            return self.local_root(store, &record).await.map(StoreRoot::Ready);
        };
        let stores = self.key_stores()?;
        check_configured(configured.as_ref(), &record, &stores)?;
        device_root(store, &stores, &record, reference).await
    }

    async fn local_root(&self, store: &Store, record: &RootKeyRecord) -> Result<RootKey> {
        let source = self.root_key_source();
        let staged = source.path().map(staged_path);
        // A rotation that committed before its new file was renamed into place.
        let complete = |new: RootKey| -> Result<RootKey> {
            source.commit_replace().map_err(|e| anyhow!("{e}"))?;
            eprintln!(
                "note: completed an interrupted root-key rotation: {} replaced {}",
                staged
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                source.describe()
            );
            Ok(new)
        };
        let staged_key = || {
            staged
                .as_ref()
                .and_then(|p| RootKeySource::File(p.clone()).load().ok())
                .filter(|k| k.key_id() == record.id)
        };
        let key = match source.load() {
            Ok(k) => k,
            Err(e) => {
                if let Some(new) = staged_key() {
                    return complete(new);
                }
                bail!("{e}");
            }
        };
        match store.check_root_key(&key).await {
            Ok(()) => Ok(key),
            Err(StoreError::WrongRootKey { expected, got }) => {
                if let Some(new) = staged_key() {
                    return complete(new);
                }
                bail!(
                    "the root key from {} does not open this store (the store's keys are sealed under root key id {expected}; this key's id is {got})",
                    source.describe()
                )
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The root key `record` names (a backup's), from this command's
    /// sources and with no store involved: the device key it references,
    /// else the local key from `KEYWARD_ROOT_KEY`, `KEYWARD_ROOT_KEY_FILE`
    /// or `<data-dir>/root.key`; refused unless its id is the record's.
    pub fn root_key_for(&self, record: &RootKeyRecord) -> Result<RootKey> {
        let configured = self.root_key_spec()?;
        if let Some(reference) = &record.reference {
            let stores = self.key_stores()?;
            check_configured(configured.as_ref(), record, &stores)?;
            return open_recorded(&stores, reference, record);
        }
        check_configured(configured.as_ref(), record, &KeyStores::none())?;
        let source = self.root_key_source();
        let key = source.load().map_err(|e| {
            anyhow!(
                "{e}; the backup's keys are sealed under root key {} (a local key): put that key in {} or name it with KEYWARD_ROOT_KEY_FILE",
                record.id,
                source.describe()
            )
        })?;
        if key.key_id() != record.id {
            bail!(
                "wrong root key: the root key from {} is root key {}, but the backup's keys are sealed under root key {}",
                source.describe(),
                key.key_id(),
                record.id
            );
        }
        Ok(key)
    }

    /// What a running server uses to follow the store's root key.
    pub fn source_loader(&self) -> Result<SourceLoader> {
        Ok(SourceLoader {
            file: self.root_key_source(),
            stores: self.key_stores()?,
            configured: self.root_key_spec()?,
        })
    }
}

/// What a running server uses to pick up the store's root key after a
/// rotation: the device key the store records (through the configured
/// stores, never creating it), else the configured file, then (for a key
/// file) a staged `<file>.new` left by a rotation in progress or
/// interrupted, read-only. `KEYWARD_ROOT_KEY` cannot change inside a
/// running process: such a server needs a restart.
pub struct SourceLoader {
    pub file: RootKeySource,
    pub stores: KeyStores,
    /// The configured source: a server follows the store anyway, and
    /// warns when the setting names another key (a restart refuses it).
    pub configured: Option<RootKeySpec>,
}

impl keyward_issuer::RootKeyLoader for SourceLoader {
    fn load(&self, expected: &RootKeyRecord) -> Result<RootKey, RootKeyLoadError> {
        if let Some(c) = &self.configured {
            let recorded = expected.reference.as_deref().unwrap_or("file");
            if c.to_string() != recorded {
                tracing::warn!(
                    configured = %c,
                    store = recorded,
                    "the configured root key source (root_key / KEYWARD_ROOT_KEY_SOURCE) is not the store's root key: following the store; update or remove the setting, a restart refuses it"
                );
            }
        }
        if let Some(reference) = &expected.reference {
            return open_recorded(&self.stores, reference, expected)
                .map_err(|e| RootKeyLoadError::unreadable(e.to_string()));
        }
        let source = &self.file;
        let live = source.load();
        if let Ok(k) = &live {
            if k.key_id() == expected.id {
                return live.map_err(RootKeyLoadError::unreadable);
            }
        }
        if let Some(staged) = source.path().map(staged_path) {
            if let Ok(k) = RootKeySource::File(staged).load() {
                if k.key_id() == expected.id {
                    return Ok(k);
                }
            }
        }
        Err(match (live, source) {
            (Ok(k), RootKeySource::Env) => RootKeyLoadError::Fixed {
                origin: source.describe(),
                held: k.key_id(),
            },
            (Ok(k), _) => RootKeyLoadError::OtherKey {
                origin: source.describe(),
                held: k.key_id(),
            },
            (Err(e), _) => RootKeyLoadError::unreadable(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keyward_issuer::{keyring, Change, KeyOptions, Origin, RootKeyLoader};
    use keyward_jose::{Algorithm, PrivateKey};
    use keyward_signers::test_device::TestDevice;
    use keyward_signers::KeyStore;
    use keyward_store::{Environment, RotationPolicy};

    use super::*;

    /// A store initialized under the root key `root` of `device`.
    async fn store_under(device: &TestDevice) -> (tempfile::TempDir, Store, RootKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("keyward.db"))
            .await
            .unwrap();
        let root = RootKey::device(device.root_key("root", true).unwrap());
        let env = Environment {
            name: "dev".into(),
            issuer: "https://issuer.test/dev".into(),
            policy: RotationPolicy::for_algorithm(Algorithm::ES256),
            key_store: keyward_store::KeyStoreName::Local,
            created_at: 1,
            dpop_nonce_secret: None,
        };
        let opts = KeyOptions {
            kid: None,
            owner: None,
            description: None,
            origin: Origin::Generated,
        };
        let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
        let at = Change {
            now: 1,
            actor: "test",
        };
        keyring::initialize(&store, &root, &env, &key, &opts, at)
            .await
            .unwrap();
        (dir, store, root)
    }

    fn stores(device: &TestDevice) -> KeyStores {
        KeyStores::none().with(Arc::new(device.clone()))
    }

    async fn state(store: &Store) -> (Option<RootKeyRecord>, Vec<keyward_store::KeyRecord>, i64) {
        (
            store.root_key_record().await.unwrap(),
            store.keys("dev").await.unwrap(),
            store.audit_len().await.unwrap(),
        )
    }

    #[tokio::test]
    async fn the_recorded_device_root_is_opened_and_each_failure_names_the_source() {
        let device = TestDevice::new("pkcs11", &[]);
        let (_dir, store, root) = store_under(&device).await;
        let record = store.root_key_record().await.unwrap().unwrap();
        assert_eq!(record.reference.as_deref(), Some("pkcs11:root"));
        let before = state(&store).await;
        let ok = device_root(&store, &stores(&device), &record, "pkcs11:root")
            .await
            .unwrap();
        assert!(matches!(ok, StoreRoot::Ready(k) if k.key_id() == root.key_id()));

        // Wrong PIN: the device is down for now (serve starts, not ready).
        device.set_failure(Some("pin"));
        let StoreRoot::DeviceDown(e) =
            device_root(&store, &stores(&device), &record, "pkcs11:root")
                .await
                .unwrap()
        else {
            panic!("a refused PIN is not a working root key");
        };
        let e = e.to_string();
        assert!(
            e.starts_with("root key pkcs11:root: the pkcs11 key store is unavailable (pin)"),
            "{e}"
        );
        device.set_failure(None);

        // Missing object: never created when following the store.
        let StoreRoot::DeviceDown(e) =
            device_root(&store, &stores(&device), &record, "pkcs11:gone")
                .await
                .unwrap()
        else {
            panic!("a missing key is not a working root key");
        };
        assert_eq!(
            e.to_string(),
            "root key pkcs11:gone: the pkcs11 key store has no key gone"
        );
        assert!(device.root_key("gone", false).is_err(), "it was created");

        // Wrong key: another device's key under the same name.
        let other = TestDevice::new("pkcs11", &[]);
        other.root_key("root", true).unwrap();
        let e = device_root(&store, &stores(&other), &record, "pkcs11:root")
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&format!(
                "but the store's keys are sealed under root key {}",
                root.key_id()
            )),
            "{e}"
        );

        // The store not configured: a configuration error, not an outage.
        let e = device_root(&store, &KeyStores::none(), &record, "pkcs11:root")
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("root key pkcs11:root: pkcs11 key store configuration: no PKCS#11 module is configured"), "{e}");

        // A configured source naming another key is refused.
        let e = check_configured(
            Some(&"pkcs11:other".parse().unwrap()),
            &record,
            &stores(&device),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("which is pkcs11:root"), "{e}");
        check_configured(
            Some(&"pkcs11:root".parse().unwrap()),
            &record,
            &stores(&device),
        )
        .unwrap();
        assert!(check_configured(Some(&RootKeySpec::File), &record, &stores(&device)).is_err());
        assert_eq!(state(&store).await, before);
    }

    #[tokio::test]
    async fn the_server_loader_follows_the_store_reference() {
        let device = TestDevice::new("pkcs11", &[]);
        let (dir, store, root) = store_under(&device).await;
        let record = store.root_key_record().await.unwrap().unwrap();
        let loader = SourceLoader {
            file: RootKeySource::DataDir(dir.path().join("root.key")),
            stores: stores(&device),
            configured: Some(RootKeySpec::File),
        };
        assert_eq!(loader.load(&record).unwrap().key_id(), root.key_id());
        device.set_failure(Some("token"));
        let e = loader.load(&record).unwrap_err().to_string();
        assert!(
            e.contains("root key pkcs11:root") && e.contains("(token)"),
            "{e}"
        );
    }
}
