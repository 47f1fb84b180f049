//! A root key held by a device (the in-memory `TestDevice`): a running
//! server follows a rotation to it through the store's recorded reference,
//! keeps signing and seals new keys under it; a device that fails makes a
//! key rotation answer 503 with nothing changed; a server started while
//! the device is down runs, is not ready, and recovers when it comes back.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use keyward_issuer::http::{app, AppState};
use keyward_issuer::root_source::open_device_root;
use keyward_issuer::signing::SigningPool;
use keyward_issuer::tokens::{new_id, new_secret};
use keyward_issuer::{
    keyring, Authority, Change, FixedClock, KeyOptions, Origin, RootKeyLoadError, RootKeyLoader,
    RootKeySpec, Settings,
};
use keyward_jose::seal::RootKey;
use keyward_jose::{Algorithm, PrivateKey};
use keyward_signers::test_device::TestDevice;
use keyward_signers::{KeyStore, KeyStores};
use keyward_store::{AdminToken, Environment, RootKeyRecord, RotationPolicy, Store};
use serde_json::json;
use tower::ServiceExt;

const NOW: i64 = 1_700_000_000;

fn at() -> Change<'static> {
    Change {
        now: NOW,
        actor: "test",
    }
}

fn environment() -> Environment {
    Environment {
        name: "dev".into(),
        issuer: "https://issuer.test/dev".into(),
        policy: RotationPolicy {
            lead_secs: 600,
            token_ttl_secs: 300,
            ..RotationPolicy::for_algorithm(Algorithm::ES256)
        },
        key_store: keyward_store::KeyStoreName::Local,
        created_at: NOW,
        dpop_nonce_secret: None,
    }
}

/// What the CLI's loader does for a recorded reference: opens it through
/// the configured stores, never creating it.
struct FollowsStore(KeyStores);

impl RootKeyLoader for FollowsStore {
    fn load(&self, expected: &RootKeyRecord) -> Result<RootKey, RootKeyLoadError> {
        let reference = expected
            .reference
            .as_deref()
            .ok_or_else(|| RootKeyLoadError::unreadable("no file in this test"))?;
        let spec: RootKeySpec = reference.parse().map_err(RootKeyLoadError::unreadable)?;
        open_device_root(&self.0, &spec, false).map_err(RootKeyLoadError::unreadable)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    device: TestDevice,
    app: Router,
    authority: Arc<Authority>,
    admin_token: String,
}

/// A store initialized under `root` (environment `dev`, one ES256 key) and
/// an admin token; `device` is the configured pkcs11 store.
async fn store_with(root: &RootKey) -> (tempfile::TempDir, Store, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("keyward.db"))
        .await
        .unwrap();
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let opts = KeyOptions {
        kid: None,
        owner: None,
        description: None,
        origin: Origin::Generated,
    };
    keyring::initialize(&store, root, &environment(), &key, &opts, at())
        .await
        .unwrap();
    let (admin_token, hash) = new_secret("kwa_");
    let mut tx = store.begin().await.unwrap();
    tx.create_admin_token(&AdminToken {
        id: new_id(),
        name: "test".into(),
        token_hash: hash,
        created_at: NOW,
        revoked_at: None,
        permissions: vec!["*".into()],
        owner: None,
        expires_at: None,
        created_by: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (dir, store, admin_token)
}

fn fixture(
    dir: tempfile::TempDir,
    store: Store,
    device: TestDevice,
    authority: Arc<Authority>,
    admin_token: String,
) -> Fixture {
    let app = app(AppState {
        authority: authority.clone(),
        metrics: keyward_issuer::metrics::install(),
    });
    Fixture {
        _dir: dir,
        store,
        device,
        app,
        authority,
        admin_token,
    }
}

fn loader(device: &TestDevice) -> Box<dyn RootKeyLoader> {
    Box::new(FollowsStore(
        KeyStores::none().with(Arc::new(device.clone())),
    ))
}

impl Fixture {
    async fn send(&self, req: Request<Body>) -> (StatusCode, String) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        self.send(Request::builder().uri(path).body(Body::empty()).unwrap())
            .await
    }

    async fn admin_rotate(&self) -> (StatusCode, String) {
        self.send(
            Request::builder()
                .method(Method::POST)
                .uri("/admin/v1/envs/dev/keys/rotate")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", self.admin_token),
                )
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({"immediate": true}).to_string()))
                .unwrap(),
        )
        .await
    }

    fn signing_kid(&self) -> Option<String> {
        let s = self.authority.snapshot().env("dev")?.signer(NOW)?;
        Some(s.kid().to_string())
    }

    async fn kids(&self) -> Vec<String> {
        let mut v: Vec<_> = self
            .store
            .keys("dev")
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.kid)
            .collect();
        v.sort();
        v
    }
}

#[tokio::test]
async fn a_running_server_follows_a_rotation_to_a_device_root_and_seals_under_it() {
    let local = RootKey::generate();
    let (dir, store, admin_token) = store_with(&local).await;
    let device = TestDevice::new("pkcs11", &[]);
    let authority = Authority::load_with_root_loader(
        store.clone(),
        local.clone(),
        Some(loader(&device)),
        Arc::new(FixedClock(NOW)),
        SigningPool::new(1),
        Settings::default(),
    )
    .await
    .unwrap();
    let f = fixture(dir, store, device, authority, admin_token);
    let kid = f.signing_kid().unwrap();

    // `keyward root-key rotate --to pkcs11:root`, run elsewhere.
    let device_root = RootKey::device(f.device.root_key("root", true).unwrap());
    assert_eq!(
        f.store
            .rewrap_all(&local, &device_root, "test", NOW)
            .await
            .unwrap(),
        1
    );
    assert!(f.authority.reload_if_changed().await.unwrap());
    assert_eq!(f.authority.root_key_id(), Some(device_root.key_id()));
    assert_eq!(f.get("/readyz").await, (StatusCode::OK, "ready".into()));
    assert_eq!(f.signing_kid().as_deref(), Some(kid.as_str()));

    // New keys are sealed under the device root (KWS2) and open with it.
    let (status, body) = f.admin_rotate().await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let added: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rec = f.store.key(added["kid"].as_str().unwrap()).await.unwrap();
    assert_eq!(&rec.material.sealed().unwrap().to_bytes()[..4], b"KWS2");
    assert!(keyring::load_signer(&device_root, &KeyStores::none(), &rec).is_ok());
    assert!(keyring::load_signer(&local, &KeyStores::none(), &rec).is_err());

    // The device fails (wrong PIN): a rotation answers 503, nothing changed.
    let before = f.kids().await;
    let audit = f.store.audit_len().await.unwrap();
    f.device.set_failure(Some("pin"));
    let (status, body) = f.admin_rotate().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("pkcs11") && body.contains("nothing was changed"),
        "{body}"
    );
    assert_eq!(f.kids().await, before);
    assert_eq!(f.store.audit_len().await.unwrap(), audit);
    // Signers already open keep signing.
    assert!(f.signing_kid().is_some());
    f.device.set_failure(None);
    let (status, body) = f.admin_rotate().await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_server_started_while_its_root_device_is_down_is_not_ready_until_it_is_back() {
    let device = TestDevice::new("pkcs11", &[]);
    let root = RootKey::device(device.root_key("root", true).unwrap());
    let (dir, store, admin_token) = store_with(&root).await;
    assert_eq!(
        store.root_key_ref().await.unwrap().as_deref(),
        Some("pkcs11:root")
    );
    device.set_failure(Some("token"));
    let authority = Authority::load_waiting_for_root(
        store.clone(),
        loader(&device),
        Arc::new(FixedClock(NOW)),
        SigningPool::new(1),
        Settings::default(),
    )
    .await
    .unwrap();
    let f = fixture(dir, store, device, authority, admin_token);
    assert_eq!(f.authority.root_key_id(), None);
    assert_eq!(f.signing_kid(), None);
    let (status, body) = f.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains(&format!(
            "cannot reach the store's root key {} (pkcs11:root)",
            root.key_id()
        )),
        "{body}"
    );
    // Tokens already issued keep verifying: the JWKS is served.
    let (status, jwks) = f.get("/dev/.well-known/jwks.json").await;
    assert_eq!(status, StatusCode::OK, "{jwks}");
    assert!(jwks.contains("\"kid\""), "{jwks}");
    // A key rotation cannot seal: 503, nothing changed.
    let kids = f.kids().await;
    let (status, body) = f.admin_rotate().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(f.kids().await, kids);
    // Still down at the next poll: still not ready.
    assert!(f.authority.reload_if_changed().await.is_err());
    assert_eq!(f.get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);

    f.device.set_failure(None);
    assert!(f.authority.reload_if_changed().await.unwrap());
    assert_eq!(f.authority.root_key_id(), Some(root.key_id()));
    assert_eq!(f.get("/readyz").await, (StatusCode::OK, "ready".into()));
    assert!(f.signing_kid().is_some());
}
