//! A root key held by a device (the in-memory `TestDevice` of
//! keyward-signers): the store records its reference beside its id, and
//! rotations between local and device roots re-wrap every local key in one
//! transaction, or change nothing when the device fails half-way, refuses
//! the PIN, or gives another key under the right name.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use keyward_jose::seal::{KeyWrapper, RootKey};
use keyward_jose::SealError;
use keyward_signers::test_device::TestDevice;
use keyward_signers::KeyStore;
use keyward_store::{open_private_key, RootKeyRecord, Store, StoreError};
use serde_json::json;
use zeroize::Zeroizing;

use super::{all_keys, key, seeded};
use crate::common::Ctx;

crate::backend_suite!(
    device_root_reference_is_recorded_beside_its_id,
    rewrap_all_moves_between_local_and_device_roots,
    rewrap_all_skips_device_keys,
    device_failing_midway_through_unwrapping_changes_nothing,
    device_failing_midway_through_wrapping_changes_nothing,
    wrong_pin_changes_nothing,
    another_key_under_the_same_name_is_found_out_and_changes_nothing,
);

fn device_root(device: &TestDevice, name: &str) -> RootKey {
    RootKey::device(device.root_key(name, true).unwrap())
}

/// What must not move when a rotation fails.
#[derive(Debug, PartialEq)]
struct Snapshot {
    keys: Vec<keyward_store::KeyRecord>,
    root: Option<RootKeyRecord>,
    audit: i64,
    generation: i64,
}

async fn snapshot(store: &Store) -> Snapshot {
    Snapshot {
        keys: all_keys(store).await,
        root: store.root_key_record().await.unwrap(),
        audit: store.audit_len().await.unwrap(),
        generation: store.generation().await.unwrap(),
    }
}

/// Passes calls to `inner`, and after `ok` calls of the kind counted tells
/// the device to fail every call from then on (as a token removed or a
/// session lost half-way through a rotation).
struct FailsAfter {
    inner: Arc<dyn KeyWrapper>,
    device: TestDevice,
    count_wraps: bool,
    left: AtomicUsize,
}

impl FailsAfter {
    fn root(device: &TestDevice, name: &str, count_wraps: bool, ok: usize) -> RootKey {
        RootKey::device(Arc::new(FailsAfter {
            inner: device.root_key(name, true).unwrap(),
            device: device.clone(),
            count_wraps,
            left: AtomicUsize::new(ok),
        }))
    }
    fn tick(&self, counted: bool) {
        if counted && self.left.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.left.store(0, Ordering::SeqCst);
            self.device.set_failure(Some("session"));
        }
    }
}

impl KeyWrapper for FailsAfter {
    fn key_id(&self) -> String {
        self.inner.key_id()
    }
    fn store(&self) -> &'static str {
        self.inner.store()
    }
    fn reference(&self) -> String {
        self.inner.reference()
    }
    fn wrap(&self, aad: &[u8], data_key: &[u8]) -> Result<Vec<u8>, SealError> {
        self.tick(self.count_wraps);
        self.inner.wrap(aad, data_key)
    }
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.tick(!self.count_wraps);
        self.inner.unwrap(aad, wrapped)
    }
}

/// The id and reference of one device key, the wrapping of another: a
/// device object replaced under the same name.
struct Impostor {
    named: Arc<dyn KeyWrapper>,
    actual: Arc<dyn KeyWrapper>,
}

impl KeyWrapper for Impostor {
    fn key_id(&self) -> String {
        self.named.key_id()
    }
    fn store(&self) -> &'static str {
        self.named.store()
    }
    fn reference(&self) -> String {
        self.named.reference()
    }
    fn wrap(&self, aad: &[u8], data_key: &[u8]) -> Result<Vec<u8>, SealError> {
        self.actual.wrap(aad, data_key)
    }
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.actual.unwrap(aad, wrapped)
    }
}

async fn device_root_reference_is_recorded_beside_its_id(store: Store, _ctx: Ctx) {
    let device = TestDevice::new("pkcs11", &[]);
    let root = device_root(&device, "root-a");
    assert_eq!(store.root_key_record().await.unwrap(), None);
    let mut tx = store.begin().await.unwrap();
    tx.initialize_root(&root).await.unwrap();
    assert!(matches!(
        tx.initialize_root(&RootKey::generate()).await,
        Err(StoreError::AlreadyInitialized)
    ));
    tx.commit().await.unwrap();
    assert_eq!(
        store.root_key_record().await.unwrap(),
        Some(RootKeyRecord {
            id: root.key_id(),
            reference: Some("pkcs11:root-a".into()),
        })
    );
    assert_eq!(
        store.root_key_ref().await.unwrap().as_deref(),
        Some("pkcs11:root-a")
    );
    store.check_root_key(&root).await.unwrap();
    // Nothing sealed yet: nothing to probe.
    store.check_root_key_opens(&root).await.unwrap();
}

async fn rewrap_all_moves_between_local_and_device_roots(store: Store, _ctx: Ctx) {
    let device = TestDevice::new("pkcs11", &[]);
    let kms = TestDevice::new("aws-kms", &[]);
    let local = RootKey::generate();
    let secrets = seeded(&store, &local, 4).await;
    assert_eq!(store.root_key_ref().await.unwrap(), None);

    let steps = [
        ("local -> pkcs11", device_root(&device, "one")),
        ("pkcs11 -> pkcs11", device_root(&device, "two")),
        ("pkcs11 -> aws-kms", device_root(&kms, "alias/root")),
        ("aws-kms -> local", RootKey::generate()),
    ];
    let mut old = local;
    for (i, (step, new)) in steps.into_iter().enumerate() {
        let n = store
            .rewrap_all(&old, &new, "admin", 100 + i as i64)
            .await
            .unwrap();
        assert_eq!(n, 4, "{step}");
        assert_eq!(
            store.root_key_record().await.unwrap(),
            Some(RootKeyRecord {
                id: new.key_id(),
                reference: new.reference(),
            }),
            "{step}"
        );
        store.check_root_key_opens(&new).await.unwrap();
        for (kid, secret) in &secrets {
            let k = store.key(kid).await.unwrap();
            let form = &k.material.sealed().unwrap().to_bytes()[..4];
            assert_eq!(
                form,
                if new.is_device() { b"KWS2" } else { b"KWS1" },
                "{step}"
            );
            assert_eq!(
                open_private_key(&new, &k).unwrap().as_slice(),
                secret.as_slice(),
                "{step}"
            );
            assert!(
                matches!(
                    open_private_key(&old, &k),
                    Err(StoreError::Seal(SealError::OpenFailed))
                ),
                "{step}: the old root still opens {kid}"
            );
        }
        let last = store.audit(0, 100).await.unwrap().pop().unwrap();
        assert_eq!(last.action, "root_key.rotate");
        assert_eq!(last.detail["from"], json!(old.key_id()), "{step}");
        assert_eq!(last.detail["to"], json!(new.key_id()), "{step}");
        assert_eq!(last.detail["from_store"], json!(old.store()), "{step}");
        assert_eq!(last.detail["to_store"], json!(new.store()), "{step}");
        assert_eq!(last.detail["from_ref"], json!(old.reference()), "{step}");
        assert_eq!(last.detail["to_ref"], json!(new.reference()), "{step}");
        old = new;
    }
    assert_eq!(store.root_key_ref().await.unwrap(), None);
    assert!(store.verify_audit().await.unwrap().first_broken.is_none());
}

async fn rewrap_all_skips_device_keys(store: Store, ctx: Ctx) {
    let local = RootKey::generate();
    seeded(&store, &local, 2).await;
    // A device key's row, with a blob no root key here opens: a rotation
    // that tried to re-wrap it would fail.
    let stranger = RootKey::generate();
    let mut tx = store.begin().await.unwrap();
    tx.insert_key(&key(&stranger, "prod", "hw-1", 5, b"not here"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    ctx.exec("UPDATE keys SET key_store = 'pkcs11', hw_ref = 'token/01' WHERE kid = 'hw-1'")
        .await;
    let hw_before = store.key("hw-1").await.unwrap();
    let device = TestDevice::new("pkcs11", &[]);
    let new = device_root(&device, "root");
    assert_eq!(store.rewrap_all(&local, &new, "admin", 9).await.unwrap(), 2);
    assert_eq!(store.key("hw-1").await.unwrap(), hw_before);
    let last = store.audit(0, 100).await.unwrap().pop().unwrap();
    assert_eq!(last.detail["keys"], json!(2));
}

async fn device_failing_midway_through_unwrapping_changes_nothing(store: Store, _ctx: Ctx) {
    let device = TestDevice::new("pkcs11", &[]);
    let secrets = seeded(&store, &device_root(&device, "root"), 5).await;
    let before = snapshot(&store).await;
    // The 3rd unwrap finds the device gone.
    let old = FailsAfter::root(&device, "root", false, 2);
    let err = store
        .rewrap_all(&old, &RootKey::generate(), "admin", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Seal(SealError::Unavailable {
                store: "pkcs11",
                reason: "session",
                ..
            })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("pkcs11"), "{err}");
    assert_eq!(snapshot(&store).await, before);
    device.set_failure(None);
    let root = device_root(&device, "root");
    for (kid, secret) in &secrets {
        let k = store.key(kid).await.unwrap();
        assert_eq!(
            open_private_key(&root, &k).unwrap().as_slice(),
            secret.as_slice()
        );
    }
}

async fn device_failing_midway_through_wrapping_changes_nothing(store: Store, _ctx: Ctx) {
    let local = RootKey::generate();
    let secrets = seeded(&store, &local, 5).await;
    let before = snapshot(&store).await;
    let device = TestDevice::new("aws-kms", &[]);
    // The 3rd wrap finds the device gone.
    let new = FailsAfter::root(&device, "alias/root", true, 2);
    let err = store
        .rewrap_all(&local, &new, "admin", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Seal(SealError::Unavailable {
                store: "aws-kms",
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(snapshot(&store).await, before);
    for (kid, secret) in &secrets {
        let k = store.key(kid).await.unwrap();
        assert_eq!(&k.material.sealed().unwrap().to_bytes()[..4], b"KWS1");
        assert_eq!(
            open_private_key(&local, &k).unwrap().as_slice(),
            secret.as_slice()
        );
    }
}

async fn wrong_pin_changes_nothing(store: Store, _ctx: Ctx) {
    let device = TestDevice::new("pkcs11", &[]);
    let root = device_root(&device, "root");
    seeded(&store, &root, 3).await;
    let before = snapshot(&store).await;
    device.set_failure(Some("pin"));
    for (what, result) in [
        (
            "away from the device",
            store
                .rewrap_all(&root, &RootKey::generate(), "admin", 1)
                .await,
        ),
        (
            "within the device",
            store
                .rewrap_all(
                    &root,
                    &RootKey::device(Arc::new(Impostor {
                        named: TestDevice::new("pkcs11", &[]).root_key("x", true).unwrap(),
                        actual: TestDevice::new("pkcs11", &[]).root_key("x", true).unwrap(),
                    })),
                    "admin",
                    1,
                )
                .await,
        ),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Seal(SealError::Unavailable { reason: "pin", .. })
            ),
            "{what}: {err:?}"
        );
        assert_eq!(snapshot(&store).await, before, "{what}");
    }
    let err = store.check_root_key_opens(&root).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Seal(SealError::Unavailable { reason: "pin", .. })
        ),
        "{err:?}"
    );
    device.set_failure(None);
    store.check_root_key_opens(&root).await.unwrap();
}

async fn another_key_under_the_same_name_is_found_out_and_changes_nothing(store: Store, _ctx: Ctx) {
    let device = TestDevice::new("pkcs11", &[]);
    let root = device_root(&device, "root");
    seeded(&store, &root, 3).await;
    let before = snapshot(&store).await;
    // The store's id and reference, another key inside.
    let impostor = RootKey::device(Arc::new(Impostor {
        named: device.root_key("root", false).unwrap(),
        actual: TestDevice::new("pkcs11", &[])
            .root_key("root", true)
            .unwrap(),
    }));
    assert_eq!(impostor.key_id(), root.key_id());
    store.check_root_key(&impostor).await.unwrap();
    let err = store.check_root_key_opens(&impostor).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::RootKeyDoesNotOpen { id, kid } if *id == root.key_id() && kid.starts_with("kid-")),
        "{err:?}"
    );
    assert!(err.to_string().contains("another key"), "{err}");
    let err = store
        .rewrap_all(&impostor, &RootKey::generate(), "admin", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Seal(SealError::OpenFailed)),
        "{err:?}"
    );
    assert_eq!(snapshot(&store).await, before);
    // A key of another device (another id) is refused by its id.
    let other = device_root(&TestDevice::new("pkcs11", &[]), "root");
    let err = store
        .rewrap_all(&other, &RootKey::generate(), "admin", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongRootKey { .. }), "{err:?}");
    assert_eq!(snapshot(&store).await, before);
}
