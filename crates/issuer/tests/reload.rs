//! Reloads across a root-key rotation, and readiness: driven through the
//! application router (`oneshot`) over a temporary SQLite store.
//!
//! - a reload keeps the signers of keys whose sealed blobs were re-wrapped;
//! - a server that cannot get the store's new root key keeps signing with
//!   what it holds open, but `/readyz` answers 503 once a key it must open
//!   cannot be opened, and the admin API answers 503 (not 500) to a rotation;
//! - a [`RootKeyLoader`] that gives the new key lets it switch without a restart;
//! - an environment without any key is reported, not fatal; one whose keys
//!   are all revoked or retired is not ready.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use keyward_issuer::http::{app, AppState};
use keyward_issuer::signing::SigningPool;
use keyward_issuer::tokens::{new_id, new_secret};
use keyward_issuer::{
    keyring, Authority, Change, FirstKey, FixedClock, IssuerError, KeyOptions, Origin,
    RootKeyLoadError, RootKeyLoader, Schedule, Settings,
};
use keyward_jose::seal::RootKey;
use keyward_jose::{Algorithm, PrivateKey, TokenSigner};
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

fn opts() -> KeyOptions {
    KeyOptions {
        kid: None,
        owner: None,
        description: None,
        origin: Origin::Generated,
    }
}

fn environment(name: &str) -> Environment {
    Environment {
        name: name.into(),
        issuer: format!("https://issuer.test/{name}"),
        policy: RotationPolicy {
            lead_secs: 600,
            token_ttl_secs: 300,
            ..RotationPolicy::for_algorithm(Algorithm::ES256)
        },
        created_at: NOW,
        key_store: keyward_store::KeyStoreName::Local,
        dpop_nonce_secret: None,
    }
}

fn es256() -> PrivateKey {
    PrivateKey::generate(Algorithm::ES256, None).unwrap()
}

/// A loader that gives the key in its slot (base64), if any.
struct Slot(Arc<Mutex<Option<String>>>);

impl RootKeyLoader for Slot {
    fn load(&self, expected: &RootKeyRecord) -> Result<RootKey, RootKeyLoadError> {
        match self.0.lock().unwrap().as_deref() {
            Some(text) => RootKey::from_base64(text).map_err(RootKeyLoadError::unreadable),
            None => Err(RootKeyLoadError::unreadable(format!(
                "no file gives root key {} yet",
                expected.id
            ))),
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    root: RootKey,
    authority: Arc<Authority>,
    app: Router,
    admin_token: String,
}

/// A store with environment `dev` (one active ES256 key) and an admin
/// token; an authority on it holding `root`, with `loader` if given.
async fn fixture(loader: Option<Box<dyn RootKeyLoader>>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("keyward.db"))
        .await
        .unwrap();
    let root = RootKey::generate();
    keyring::initialize(&store, &root, &environment("dev"), &es256(), &opts(), at())
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
    let authority = Authority::load_with_root_loader(
        store.clone(),
        RootKey::from_base64(&root.to_base64().unwrap()).unwrap(),
        loader,
        Arc::new(FixedClock(NOW)),
        SigningPool::new(1),
        Settings::default(),
    )
    .await
    .unwrap();
    let app = app(AppState {
        authority: authority.clone(),
        metrics: keyward_issuer::metrics::install(),
    });
    Fixture {
        _dir: dir,
        store,
        root,
        authority,
        app,
        admin_token,
    }
}

impl Fixture {
    async fn get(&self, path: &str) -> (StatusCode, String) {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn readyz(&self) -> (StatusCode, String) {
        self.get("/readyz").await
    }

    async fn admin_rotate(&self, env: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/admin/v1/envs/{env}/keys/rotate"))
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.admin_token),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"immediate": true}).to_string()))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// The signer `dev` signs with now, on this server.
    fn signer(&self) -> Option<Arc<dyn TokenSigner>> {
        self.authority.snapshot().env("dev").unwrap().signer(NOW)
    }

    /// The kid `dev` signs with now, on this server.
    fn signing_kid(&self) -> Option<String> {
        self.signer().map(|s| s.kid().to_string())
    }

    async fn kids(&self) -> Vec<String> {
        self.store
            .keys("dev")
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.kid)
            .collect()
    }

    /// A pending key for `dev`, sealed under `root` (what another replica
    /// holding the new root key does).
    async fn add_pending_key(&self, root: &RootKey) -> String {
        keyring::add_key(
            &self.store,
            root,
            "dev",
            &es256(),
            &opts(),
            Schedule::Lead(600),
            at(),
        )
        .await
        .unwrap()
        .key
        .kid
    }
}

/// `err` is the reload failure for a pending key `kid` sealed under root
/// key `expected` while this server holds only `held`.
fn unopened_under_stale_root(err: &IssuerError, kid: &str, held: &str, expected: &str) {
    let IssuerError::KeysUnopened { kids, source } = err else {
        panic!("not KeysUnopened: {err:?}");
    };
    assert_eq!(kids, &[kid.to_string()], "{err}");
    assert!(
        matches!(&**source, IssuerError::RootKeyStale { held: h, expected: e, .. } if h == held && e == expected),
        "{err:?}"
    );
    assert_eq!(err.reason(), "root_key");
}

#[tokio::test]
async fn reload_keeps_the_signers_of_rewrapped_keys() {
    let f = fixture(None).await;
    let kid = f.signing_kid().expect("dev signs");
    let before = f.signer().unwrap();
    let new_root = RootKey::generate();
    f.store
        .rewrap_all(&f.root, &new_root, "test", NOW)
        .await
        .unwrap();
    // Every sealed blob changed; the private keys did not.
    f.authority.reload().await.unwrap();
    assert_eq!(f.signing_kid().as_deref(), Some(kid.as_str()));
    // The very signer that was open, not one opened again.
    assert!(Arc::ptr_eq(&before, &f.signer().unwrap()));
    let health = f.authority.reload_health();
    assert!(health.failure.is_none(), "{health:?}");
    // Read from the authority's clock (time is an input), not the wall clock.
    assert_eq!(health.last_success, Some(NOW));
    assert_eq!(
        health.root_key_stale,
        Some((f.root.key_id(), new_root.key_id()))
    );
    // Nothing fails yet: ready, with the stale root key reported.
    let (status, body) = f.readyz().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(body.contains(&new_root.key_id()), "{body}");
    assert!(!body.contains(&new_root.to_base64().unwrap().to_string()));
}

#[tokio::test]
async fn a_key_that_cannot_be_opened_fails_the_reload_but_the_open_key_still_signs() {
    let f = fixture(None).await;
    let old_kid = f.signing_kid().unwrap();
    let new_root = RootKey::generate();
    f.store
        .rewrap_all(&f.root, &new_root, "test", NOW)
        .await
        .unwrap();
    // Another replica, holding the new root key, adds the next key.
    let new_kid = f.add_pending_key(&new_root).await;
    let err = f.authority.reload().await.unwrap_err();
    assert!(
        matches!(&err, IssuerError::KeysUnopened { kids, .. } if *kids == vec![new_kid.clone()]),
        "{err}"
    );
    assert_eq!(err.reason(), "root_key");
    // The store's state was still taken: the new key is published.
    let (status, jwks) = f.get("/dev/.well-known/jwks.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(jwks.contains(&new_kid), "{jwks}");
    // This server keeps signing with the key it holds open...
    assert_eq!(f.signing_kid().as_deref(), Some(old_kid.as_str()));
    // ...but is not ready, and says why without key text or paths.
    let (status, body) = f.readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.starts_with("reload failing (root_key)"), "{body}");
    assert!(body.contains(&new_kid), "{body}");
    assert!(body.contains(&new_root.key_id()), "{body}");
    assert!(!body.contains("no file gives"), "{body}");
    let (_, metrics) = f.get("/metrics").await;
    assert!(
        metrics.contains("keyward_reload_failures_total{reason=\"root_key\"}"),
        "{metrics}"
    );
    // The poller keeps retrying (the failure stays until a reload succeeds).
    let err = f.authority.reload_if_changed().await.unwrap_err();
    unopened_under_stale_root(&err, &new_kid, &f.root.key_id(), &new_root.key_id());
    assert_eq!(f.readyz().await.0, StatusCode::SERVICE_UNAVAILABLE);
    // An admin rotation cannot seal under the store's root key here: 503, not 500,
    // and nothing is written.
    let before = f.kids().await;
    let (status, body) = f.admin_rotate("dev").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(f.kids().await, before);
}

#[tokio::test]
async fn a_loader_that_gives_the_new_root_key_lets_the_server_switch() {
    let slot = Arc::new(Mutex::new(None));
    let f = fixture(Some(Box::new(Slot(slot.clone())))).await;
    let old_kid = f.signing_kid().unwrap();
    let new_root = RootKey::generate();
    f.store
        .rewrap_all(&f.root, &new_root, "test", NOW)
        .await
        .unwrap();
    let new_kid = f.add_pending_key(&new_root).await;
    // The source does not give the new key yet: the reload fails.
    let err = f.authority.reload_if_changed().await.unwrap_err();
    unopened_under_stale_root(&err, &new_kid, &f.root.key_id(), &new_root.key_id());
    assert_eq!(f.readyz().await.0, StatusCode::SERVICE_UNAVAILABLE);
    // A source that gives some other key does not help.
    *slot.lock().unwrap() = Some(RootKey::generate().to_base64().unwrap().to_string());
    let err = f.authority.reload_if_changed().await.unwrap_err();
    unopened_under_stale_root(&err, &new_kid, &f.root.key_id(), &new_root.key_id());
    assert_eq!(f.authority.root_key_id(), Some(f.root.key_id()));
    // Now the source gives it: the next poll switches, opens the new key, and is ready.
    *slot.lock().unwrap() = Some(new_root.to_base64().unwrap().to_string());
    assert!(f.authority.reload_if_changed().await.unwrap());
    assert_eq!(f.authority.root_key_id(), Some(new_root.key_id()));
    let health = f.authority.reload_health();
    assert_eq!((health.failure, health.root_key_stale), (None, None));
    let (status, body) = f.readyz().await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready"));
    assert_eq!(f.signing_kid().as_deref(), Some(old_kid.as_str()));
    // New keys are sealed under the new root key: the admin API can rotate.
    let (status, body) = f.admin_rotate("dev").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let added = body["kid"].as_str().unwrap();
    let rec = f.store.key(added).await.unwrap();
    assert!(
        keyring::load_signer(&new_root, &keyward_issuer::keyring::KeyStores::none(), &rec).is_ok()
    );
    assert!(f.kids().await.contains(&new_kid));
}

#[tokio::test]
async fn the_server_picks_up_the_new_root_key_before_any_new_key_needs_it() {
    // Rotated root key, no new signing key yet: the poller switches on its own
    // (the generation moved), so later keys open without a failed reload.
    let slot = Arc::new(Mutex::new(None));
    let f = fixture(Some(Box::new(Slot(slot.clone())))).await;
    let new_root = RootKey::generate();
    *slot.lock().unwrap() = Some(new_root.to_base64().unwrap().to_string());
    f.store
        .rewrap_all(&f.root, &new_root, "test", NOW)
        .await
        .unwrap();
    assert!(f.authority.reload_if_changed().await.unwrap());
    assert_eq!(f.authority.root_key_id(), Some(new_root.key_id()));
    f.add_pending_key(&new_root).await;
    f.authority.reload_if_changed().await.unwrap();
    assert_eq!(f.readyz().await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_environment_without_any_key_is_reported_not_fatal() {
    let f = fixture(None).await;
    keyring::create_environment(&f.store, &environment("fresh"), None, at())
        .await
        .unwrap();
    f.authority.reload().await.unwrap();
    let (status, body) = f.readyz().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        "ready\nno key yet (reported, not serving tokens): fresh"
    );
    let (_, metrics) = f.get("/metrics").await;
    assert!(
        metrics.contains("keyward_env_without_key{env=\"fresh\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyward_env_can_sign{env=\"fresh\"} 0"),
        "{metrics}"
    );
    // A server starting on such a store starts too.
    let again = Authority::load(
        f.store.clone(),
        RootKey::from_base64(&f.root.to_base64().unwrap()).unwrap(),
        Arc::new(FixedClock(NOW)),
        SigningPool::new(1),
        Settings::default(),
    )
    .await;
    assert!(again.is_ok());
    // With a key that signs it is ready with nothing to report.
    keyring::add_key(
        &f.store,
        &f.root,
        "fresh",
        &es256(),
        &opts(),
        Schedule::Immediate,
        at(),
    )
    .await
    .unwrap();
    f.authority.reload().await.unwrap();
    assert_eq!(f.readyz().await, (StatusCode::OK, "ready".to_string()));
}

#[tokio::test]
async fn an_environment_whose_keys_are_all_revoked_or_retired_is_not_ready() {
    let f = fixture(None).await;
    let kid = f.signing_kid().unwrap();
    keyring::revoke_key(
        &f.store,
        &keyward_issuer::keyring::KeyStores::none(),
        &kid,
        at(),
        Some("test"),
    )
    .await
    .unwrap();
    f.authority.reload().await.unwrap();
    let (status, body) = f.readyz().await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no signing key: dev")
    );

    let f = fixture(None).await;
    let kid = f.signing_kid().unwrap();
    let outage = keyward_issuer::RetireOptions {
        force: true,
        accept_outage: true,
    };
    keyring::retire_key(&f.store, &kid, at(), outage)
        .await
        .unwrap();
    f.authority.reload().await.unwrap();
    let (status, body) = f.readyz().await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no signing key: dev")
    );
}

#[tokio::test]
async fn the_gauges_are_computed_from_the_snapshot_and_rendered() {
    let f = fixture(None).await;
    // An environment of this test alone: the recorder is shared by the tests.
    let first = FirstKey {
        root: &f.root,
        stores: &keyward_issuer::keyring::KeyStores::none(),
        opts: &opts(),
    };
    keyring::create_environment(&f.store, &environment("gauges"), Some(first), at())
        .await
        .unwrap();
    f.authority.reload().await.unwrap();
    let g = f.authority.gauges().await;
    assert!(g.reload_ok && !g.root_key_stale && g.reload_last_success.is_some());
    // store.init, env.create and key.generate twice.
    assert_eq!(g.audit_chain_length, Some(5));
    let policy = environment("gauges").policy;
    let next = policy.rotate_every_secs - policy.lead_secs;
    let mine: Vec<_> = g.envs.iter().filter(|e| e.env == "gauges").collect();
    assert_eq!(
        mine,
        [&keyward_issuer::metrics::EnvGauges {
            env: "gauges".into(),
            without_key: false,
            can_sign: true,
            signing_key_age_secs: Some(0),
            secs_to_next_rotation: Some(next),
            published_keys: 1,
            keys_by_state: [("pending", 0), ("active", 1), ("retired", 0)],
            rotation_overdue_secs: Some(0),
            rotation_in_progress: false,
        }]
    );
    let (_, metrics) = f.get("/metrics").await;
    for line in [
        "keyward_env_without_key{env=\"gauges\"} 0".to_string(),
        "keyward_env_can_sign{env=\"gauges\"} 1".to_string(),
        "keyward_published_keys{env=\"gauges\"} 1".to_string(),
        "keyward_signing_key_age_seconds{env=\"gauges\"} 0".to_string(),
        format!("keyward_seconds_to_next_rotation{{env=\"gauges\"}} {next}"),
        "keyward_keys{env=\"gauges\",state=\"active\"} 1".to_string(),
        "keyward_keys{env=\"gauges\",state=\"pending\"} 0".to_string(),
        "keyward_rotation_overdue_seconds{env=\"gauges\"} 0".to_string(),
        "keyward_rotation_in_progress{env=\"gauges\"} 0".to_string(),
        "keyward_refresh_reuse_detected_total{env=\"gauges\"} 0".to_string(),
        "keyward_refresh_grace_reissues_total{env=\"gauges\"} 0".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }

    // An environment whose key was made longer ago than its rotation
    // period, on a server that never rotated it: overdue by the difference.
    let made = NOW - policy.rotate_every_secs - 7200;
    let first = FirstKey {
        root: &f.root,
        stores: &keyward_issuer::keyring::KeyStores::none(),
        opts: &opts(),
    };
    let long_ago = Change {
        now: made,
        actor: "test",
    };
    keyring::create_environment(&f.store, &environment("overdue"), Some(first), long_ago)
        .await
        .unwrap();
    f.authority.reload().await.unwrap();
    let g = f.authority.gauges().await;
    let e = g.envs.iter().find(|e| e.env == "overdue").unwrap();
    assert_eq!(e.rotation_overdue_secs, Some(7200 + policy.lead_secs));
    assert!(!e.rotation_in_progress);
    // Its rotation (as the scheduler makes it) is in progress, and no longer overdue.
    keyring::generate_key(
        &f.store,
        &f.root,
        &keyward_issuer::keyring::KeyStores::none(),
        "overdue",
        keyring::KeyChoice::Policy,
        &opts(),
        keyward_issuer::Schedule::PolicyLead,
        at,
    )
    .await
    .unwrap();
    f.authority.reload().await.unwrap();
    let g = f.authority.gauges().await;
    let e = g.envs.iter().find(|e| e.env == "overdue").unwrap();
    assert_eq!(e.rotation_overdue_secs, Some(0));
    assert!(e.rotation_in_progress);
    assert_eq!(
        e.keys_by_state,
        [("pending", 1), ("active", 1), ("retired", 0)]
    );
    let (_, metrics) = f.get("/metrics").await;
    for line in [
        "keyward_rotation_in_progress{env=\"overdue\"} 1",
        "keyward_keys{env=\"overdue\",state=\"pending\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
}
