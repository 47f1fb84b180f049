//! Environments whose signing keys live in a device (an HSM, a KMS), with
//! the in-memory [`TestDevice`] standing in for the device: keys made
//! inside it, refused algorithms and imports, a failed transaction leaving
//! no device key behind, destruction when a key leaves the JWKS, and
//! serving while the device fails (503 for that environment only, JWKS
//! kept, `/readyz` naming it, garbage signatures never leaving, bounded
//! signing time). Run once per backend: SQLite always, PostgreSQL when
//! `KEYWARD_TEST_DATABASE_URL` is set (the store's harness, shared by path).

#[path = "../../store/tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::Ctx;
use keyward_issuer::clients::{self, NewClient};
use keyward_issuer::http::{app, AppState};
use keyward_issuer::keyring::{KeyChoice, KeyStores};
use keyward_issuer::signing::SigningPool;
use keyward_issuer::{
    keyring, Authority, Change, Clock, FirstKey, IssuerError, KeyOptions, Origin, Schedule,
    Settings,
};
use keyward_jose::seal::RootKey;
use keyward_jose::{Algorithm, PrivateKey};
use keyward_signers::test_device::TestDevice;
use keyward_signers::SignerError;
use keyward_store::{ClientAuth, Environment, KeyStoreName, RotationPolicy, Store, Timestamp};
use tower::ServiceExt;

backend_suite!(
    device_keys_are_made_inside_the_device_and_destroyed_when_they_leave,
    an_algorithm_the_device_cannot_do_is_refused_and_nothing_is_made,
    a_failed_transaction_destroys_the_device_key_again,
    imports_into_a_device_environment_are_refused,
    a_failing_device_stops_only_its_environment,
    serve_starts_while_the_device_is_down_and_recovers,
);

const NOW: Timestamp = 1_700_000_000;

struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        self.0.load(Ordering::SeqCst)
    }
}

fn at(now: Timestamp) -> Change<'static> {
    Change { now, actor: "test" }
}

fn opts() -> KeyOptions {
    KeyOptions {
        kid: None,
        owner: None,
        description: None,
        origin: Origin::Generated,
    }
}

fn environment(name: &str, store: KeyStoreName, alg: Algorithm) -> Environment {
    Environment {
        name: name.into(),
        issuer: format!("https://issuer.test/{name}"),
        policy: RotationPolicy {
            lead_secs: 600,
            token_ttl_secs: 300,
            ..RotationPolicy::for_algorithm(alg)
        },
        created_at: NOW,
        key_store: store,
    }
}

/// A store with root key `root` and a local environment `dev`.
async fn initialized(store: &Store) -> RootKey {
    let root = RootKey::generate();
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let env = environment("dev", KeyStoreName::Local, Algorithm::ES256);
    keyring::initialize(store, &root, &env, &key, &opts(), at(NOW))
        .await
        .unwrap();
    root
}

fn device(algs: &[Algorithm]) -> (TestDevice, KeyStores) {
    let d = TestDevice::new("pkcs11", algs);
    let stores = KeyStores::none().with(Arc::new(d.clone()));
    (d, stores)
}

async fn create_hsm(store: &Store, root: &RootKey, stores: &KeyStores, alg: Algorithm) {
    let o = opts();
    let first = FirstKey {
        root,
        stores,
        opts: &o,
    };
    keyring::create_environment(
        store,
        &environment("hsm", KeyStoreName::Pkcs11, alg),
        Some(first),
        at(NOW),
    )
    .await
    .unwrap();
}

/// Every audit record's action, subject and detail.
async fn audit(store: &Store) -> Vec<(String, Option<String>, serde_json::Value)> {
    store
        .audit(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.action, r.subject, r.detail))
        .collect()
}

async fn device_keys_are_made_inside_the_device_and_destroyed_when_they_leave(
    store: Store,
    _: Ctx,
) {
    let root = initialized(&store).await;
    let (dev, stores) = device(&[Algorithm::ES256]);
    create_hsm(&store, &root, &stores, Algorithm::ES256).await;
    let keys = store.keys("hsm").await.unwrap();
    assert_eq!(keys.len(), 1);
    let first = keys[0].clone();
    assert_eq!(first.key_store(), KeyStoreName::Pkcs11);
    let reference = first.reference().unwrap().to_string();
    assert_eq!(dev.references(), vec![reference.clone()]);
    // A random 128-bit kid, named so in the device.
    assert_eq!(first.kid.len(), 22, "{}", first.kid);
    assert!(reference.ends_with(&first.kid), "{reference}");
    // The public key is the device's, and nothing private is recorded.
    assert!(!first.public_jwk.contains("\"d\""));
    let e = keyward_store::open_private_key(&root, &first).unwrap_err();
    assert!(matches!(e, keyward_store::StoreError::DeviceKey { .. }));
    let log = audit(&store).await;
    let gen = log
        .iter()
        .find(|(a, s, _)| a == "key.generate" && s.as_deref() == Some(first.kid.as_str()))
        .unwrap();
    assert_eq!(gen.2["store"], "pkcs11");
    assert_eq!(gen.2["reference"], reference.as_str());

    // A rotation makes the next key in the device too; the old one retires.
    let added = keyring::generate_key(
        &store,
        &root,
        &stores,
        "hsm",
        KeyChoice::Policy,
        &opts(),
        Schedule::Immediate,
        || at(NOW + 10),
    )
    .await
    .unwrap();
    assert_eq!(dev.references().len(), 2);
    let log = audit(&store).await;
    let rot = log.iter().find(|(a, _, _)| a == "key.rotate").unwrap();
    assert_eq!(rot.2["store"], "pkcs11");
    assert_eq!(rot.2["reference"], added.key.reference().unwrap());

    // Revoked: destroyed at once, audited with store and reference.
    let (rec, _) = keyring::revoke_key(&store, &stores, &added.key.kid, at(NOW + 20), None)
        .await
        .unwrap();
    assert_eq!(rec.destroyed_at, Some(NOW + 20));
    assert_eq!(
        dev.destroyed(),
        vec![added.key.reference().unwrap().to_string()]
    );
    let stored = store.key(&added.key.kid).await.unwrap();
    assert_eq!(stored.destroyed_at, Some(NOW + 20));
    let log = audit(&store).await;
    let d = log.iter().find(|(a, _, _)| a == "key.destroy").unwrap();
    assert_eq!(
        (
            d.2["store"].as_str(),
            d.2["reference"].as_str(),
            d.2["why"].as_str()
        ),
        (Some("pkcs11"), added.key.reference(), Some("revoked"))
    );

    // The first key left the JWKS by time: the sweep destroys it, once; a
    // device that is down leaves it for the next sweep.
    let removes_at = store.key(&first.kid).await.unwrap().removes_at.unwrap();
    dev.set_failure(Some("token"));
    let sweep = keyring::destroy_unpublished(&store, &stores, at(removes_at))
        .await
        .unwrap();
    assert!(sweep.destroyed.is_empty());
    assert_eq!(sweep.failed.len(), 1);
    assert_eq!(store.key(&first.kid).await.unwrap().destroyed_at, None);
    dev.set_failure(None);
    let sweep = keyring::destroy_unpublished(&store, &stores, at(removes_at + 1))
        .await
        .unwrap();
    assert_eq!(sweep.destroyed, vec![first.kid.clone()]);
    assert!(dev.destroyed().contains(&reference));
    assert_eq!(
        store.key(&first.kid).await.unwrap().destroyed_at,
        Some(removes_at + 1)
    );
    let again = keyring::destroy_unpublished(&store, &stores, at(removes_at + 2))
        .await
        .unwrap();
    assert!(again.destroyed.is_empty() && again.failed.is_empty());
    let destroys = audit(&store)
        .await
        .into_iter()
        .filter(|(a, _, _)| a == "key.destroy")
        .count();
    assert_eq!(destroys, 2);
    assert!(store.verify_audit().await.unwrap().first_broken.is_none());
}

async fn an_algorithm_the_device_cannot_do_is_refused_and_nothing_is_made(store: Store, _: Ctx) {
    let root = initialized(&store).await;
    let (dev, stores) = device(&[Algorithm::ES256]);
    let before = (store.environments().await.unwrap(), audit(&store).await);
    let o = opts();
    let first = FirstKey {
        root: &root,
        stores: &stores,
        opts: &o,
    };
    let e = keyring::create_environment(
        &store,
        &environment("hsm", KeyStoreName::Pkcs11, Algorithm::PS256),
        Some(first),
        at(NOW),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, IssuerError::KeyStore(SignerError::Unsupported { .. })),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains("pkcs11") && text.contains("PS256"), "{text}");
    assert!(dev.references().is_empty());
    assert_eq!(
        (store.environments().await.unwrap(), audit(&store).await),
        before
    );
    // A store that is not configured is refused, saying how.
    let first = FirstKey {
        root: &root,
        stores: &KeyStores::none(),
        opts: &o,
    };
    let e = keyring::create_environment(
        &store,
        &environment("kms", KeyStoreName::AwsKms, Algorithm::ES256),
        Some(first),
        at(NOW),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("AWS KMS is not configured"), "{e}");
    assert_eq!(store.environments().await.unwrap(), before.0);

    // Moving an environment to a store that cannot make its keys is
    // refused before anything changes (its next rotation would fail).
    let ps256 = RotationPolicy::for_algorithm(Algorithm::PS256);
    let e = keyring::check_store_for(&stores, KeyStoreName::Pkcs11, &ps256)
        .await
        .unwrap_err();
    assert!(
        matches!(e, IssuerError::KeyStore(SignerError::Unsupported { .. })),
        "{e:?}"
    );
    let es256 = RotationPolicy::for_algorithm(Algorithm::ES256);
    keyring::check_store_for(&stores, KeyStoreName::Pkcs11, &es256)
        .await
        .unwrap();
    keyring::check_store_for(&KeyStores::none(), KeyStoreName::Local, &ps256)
        .await
        .unwrap();
    assert!(
        keyring::check_store_for(&KeyStores::none(), KeyStoreName::AwsKms, &es256)
            .await
            .is_err()
    );
    assert!(dev.references().is_empty());
}

async fn a_failed_transaction_destroys_the_device_key_again(store: Store, _: Ctx) {
    let root = initialized(&store).await;
    let (dev, stores) = device(&[Algorithm::ES256]);
    create_hsm(&store, &root, &stores, Algorithm::ES256).await;
    let taken = store.keys("dev").await.unwrap()[0].kid.clone();
    let before = (store.keys_all().await.unwrap(), audit(&store).await);
    // The kid is taken (by dev's key): the device makes the key, the
    // transaction refuses it, and the device key goes again.
    let o = KeyOptions {
        kid: Some(taken.clone()),
        ..opts()
    };
    let e = keyring::generate_key(
        &store,
        &root,
        &stores,
        "hsm",
        KeyChoice::Policy,
        &o,
        Schedule::Immediate,
        || at(NOW + 5),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(dev.destroyed().len(), 1);
    assert!(dev.destroyed()[0].ends_with(&taken));
    assert_eq!(dev.references().len(), 1, "only the first key is left");
    assert_eq!(
        (store.keys_all().await.unwrap(), audit(&store).await),
        before
    );
    // A device that is down: nothing made, nothing recorded.
    dev.set_failure(Some("session"));
    let e = keyring::generate_key(
        &store,
        &root,
        &stores,
        "hsm",
        KeyChoice::Policy,
        &opts(),
        Schedule::Immediate,
        || at(NOW + 6),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, IssuerError::KeyStore(s) if s.reason() == "session"),
        "{e:?}"
    );
    assert_eq!(
        (store.keys_all().await.unwrap(), audit(&store).await),
        before
    );
}

async fn imports_into_a_device_environment_are_refused(store: Store, _: Ctx) {
    let root = initialized(&store).await;
    let (dev, stores) = device(&[Algorithm::ES256]);
    create_hsm(&store, &root, &stores, Algorithm::ES256).await;
    let before = (store.keys_all().await.unwrap(), audit(&store).await);
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let o = KeyOptions {
        origin: Origin::Imported,
        ..opts()
    };
    let e = keyring::add_key(
        &store,
        &root,
        "hsm",
        &key,
        &o,
        Schedule::Immediate,
        at(NOW + 1),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, IssuerError::Conflict(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("cannot be imported") && text.contains("keyward keys generate --env hsm"),
        "{text}"
    );
    assert_eq!(
        (store.keys_all().await.unwrap(), audit(&store).await),
        before
    );
    assert_eq!(dev.references().len(), 1);
    // A local environment still takes imports; and can move to the device
    // for its next keys (existing keys keep their store).
    keyring::add_key(
        &store,
        &root,
        "dev",
        &key,
        &o,
        Schedule::Immediate,
        at(NOW + 2),
    )
    .await
    .unwrap();
    let mut env = store.environment("dev").await.unwrap();
    env.key_store = KeyStoreName::Pkcs11;
    keyring::update_environment(&store, &env, at(NOW + 3))
        .await
        .unwrap();
    let added = keyring::generate_key(
        &store,
        &root,
        &stores,
        "dev",
        KeyChoice::Policy,
        &opts(),
        Schedule::Immediate,
        || at(NOW + 4),
    )
    .await
    .unwrap();
    assert_eq!(added.key.key_store(), KeyStoreName::Pkcs11);
    let keys = store.keys("dev").await.unwrap();
    assert_eq!(
        keys.iter()
            .filter(|k| k.key_store() == KeyStoreName::Local)
            .count(),
        2
    );
    let upd = audit(&store).await;
    assert!(upd
        .iter()
        .any(|(a, _, d)| a == "env.update" && d["key_store"] == "pkcs11"));
}

/// An authority over `store` with `stores` and a short signing deadline,
/// and its HTTP app.
async fn serving(
    store: &Store,
    root: RootKey,
    stores: KeyStores,
) -> (Arc<Authority>, axum::Router) {
    let metrics = keyward_issuer::metrics::install();
    let settings = Settings {
        key_stores: stores,
        signing_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let a = Authority::load(
        store.clone(),
        root,
        Arc::new(TestClock(AtomicI64::new(NOW + 1))),
        SigningPool::new(1),
        settings,
    )
    .await
    .unwrap();
    let router = app(AppState {
        authority: a.clone(),
        metrics,
    });
    (a, router)
}

/// A client of `env` with the client_credentials grant; (id, secret).
async fn client(store: &Store, env: &str) -> (String, String) {
    let reg = clients::create_client(
        store,
        NewClient {
            env: env.into(),
            name: "app".into(),
            auth: ClientAuth::ClientSecretPost,
            scopes: vec!["read".into()],
            audiences: vec![],
            grant_types: vec!["client_credentials".into()],
            jwks: None,
            jwks_uri: None,
            access_token_ttl_secs: None,
            refresh_token_ttl_secs: None,
            dpop_bound_access_tokens: false,
            mtls: Default::default(),
            login: Default::default(),
            exchange_issuers: Vec::new(),
        },
        at(NOW),
    )
    .await
    .unwrap();
    (reg.client.client_id, reg.secret.unwrap())
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

async fn call(app: &axum::Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        retry_after,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn token(app: &axum::Router, env: &str, c: &(String, String)) -> Answer {
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        c.0, c.1
    );
    let req = Request::post(format!("/{env}/oauth2/token"))
        .header(header::HOST, "issuer.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    call(app, req).await
}

async fn get(app: &axum::Router, path: &str) -> Answer {
    let req = Request::get(path)
        .header(header::HOST, "issuer.test")
        .body(Body::empty())
        .unwrap();
    call(app, req).await
}

fn assert_unavailable(a: &Answer) {
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["error"], "temporarily_unavailable", "{}", a.body);
    assert!(!a.body.contains("eyJ"), "no token: {}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("5"));
}

/// `keyward_signer_errors_total{store="pkcs11",reason=...}` now.
fn signer_errors(reason: &str) -> f64 {
    let text = keyward_issuer::metrics::install().render();
    let needle = format!("keyward_signer_errors_total{{store=\"pkcs11\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn a_failing_device_stops_only_its_environment(store: Store, _: Ctx) {
    let root = initialized(&store).await;
    let (dev, stores) = device(&[Algorithm::ES256]);
    create_hsm(&store, &root, &stores, Algorithm::ES256).await;
    let c_dev = client(&store, "dev").await;
    let c_hsm = client(&store, "hsm").await;
    let (_a, app) = serving(&store, root, stores).await;
    assert_eq!(token(&app, "hsm", &c_hsm).await.status, StatusCode::OK);
    let signed = dev.signatures();
    assert!(signed >= 1);

    // The device fails: 503 for hsm only, both under requests at once.
    dev.set_failure(Some("token"));
    let (h, d) = tokio::join!(token(&app, "hsm", &c_hsm), token(&app, "dev", &c_dev));
    assert_unavailable(&h);
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert!(signer_errors("token") >= 1.0);
    // JWKS and discovery are served all along.
    assert_eq!(
        get(&app, "/hsm/.well-known/jwks.json").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&app, "/hsm/.well-known/openid-configuration")
            .await
            .status,
        StatusCode::OK
    );
    let ready = get(&app, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.body.contains("environment hsm cannot sign")
            && ready.body.contains("pkcs11")
            && ready.body.contains("(token)"),
        "{}",
        ready.body
    );
    assert!(!ready.body.contains("environment dev"), "{}", ready.body);

    // Garbage from the device: no token leaves, counted as bad_signature.
    dev.set_failure(None);
    let bad_before = signer_errors("bad_signature");
    dev.set_garbage(true);
    let g = token(&app, "hsm", &c_hsm).await;
    assert_unavailable(&g);
    assert!(signer_errors("bad_signature") > bad_before);
    assert!(get(&app, "/readyz").await.body.contains("(bad_signature)"));
    dev.set_garbage(false);
    let ok = token(&app, "hsm", &c_hsm).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(get(&app, "/readyz").await.status, StatusCode::OK);

    // A device slower than the deadline (300 ms): 503 in bounded time.
    let timeouts = signer_errors("timeout");
    dev.set_delay(Some(Duration::from_secs(2)));
    let started = Instant::now();
    let slow = token(&app, "hsm", &c_hsm).await;
    let took = started.elapsed();
    assert_unavailable(&slow);
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(signer_errors("timeout") > timeouts);
    dev.set_delay(None);
}

async fn serve_starts_while_the_device_is_down_and_recovers(store: Store, _: Ctx) {
    let root = initialized(&store).await;
    let (dev, stores) = device(&[Algorithm::ES256]);
    create_hsm(&store, &root, &stores, Algorithm::ES256).await;
    let c_hsm = client(&store, "hsm").await;
    let c_dev = client(&store, "dev").await;
    dev.set_failure(Some("module"));
    // The authority loads; hsm cannot sign, dev can.
    let (a, app) = serving(&store, root, stores).await;
    let ready = get(&app, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.body.contains("environment hsm cannot sign") && ready.body.contains("(module)"),
        "{}",
        ready.body
    );
    assert_unavailable(&token(&app, "hsm", &c_hsm).await);
    assert_eq!(token(&app, "dev", &c_dev).await.status, StatusCode::OK);
    assert_eq!(
        get(&app, "/hsm/.well-known/jwks.json").await.status,
        StatusCode::OK
    );
    // Each reload retries the unopened key, even with no store change.
    a.reload_if_changed().await.unwrap();
    assert_eq!(
        get(&app, "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    dev.set_failure(None);
    assert!(a.reload_if_changed().await.unwrap());
    assert_eq!(get(&app, "/readyz").await.status, StatusCode::OK);
    assert_eq!(token(&app, "hsm", &c_hsm).await.status, StatusCode::OK);
}
