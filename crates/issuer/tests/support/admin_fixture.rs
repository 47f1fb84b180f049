//! The admin API test fixture, shared by the admin test files: a temporary
//! SQLite store with one environment, the application router, requests
//! sent through `tower::ServiceExt::oneshot`, and a snapshot of the store
//! to check that refused requests change nothing; and what the browser
//! flow tests share (a clock they move, URL and cookie helpers).
#![allow(dead_code)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::Engine;
use http_body_util::BodyExt;
use keyward_issuer::http::{app, AppState};
use keyward_issuer::signing::SigningPool;
use keyward_issuer::tokens::{new_id, new_secret};
use keyward_issuer::{
    keyring, Authority, Change, FixedClock, KeyOptions, Origin, Settings, SharedClock,
};
use keyward_jose::seal::RootKey;
use keyward_jose::{Algorithm, JwkSet, KeySet, PrivateKey};
use keyward_store::{AdminToken, Client, Environment, KeyRecord, RotationPolicy, Store};
use serde_json::Value;
use tower::ServiceExt;

pub const NOW: i64 = 1_700_000_000;
pub const ISSUER: &str = "https://issuer.test/dev";

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub app: Router,
    pub authority: Arc<Authority>,
    /// An admin token holding `*`, and its id.
    pub token: String,
    pub token_id: String,
    /// The store's root key (for a second authority on the same store).
    pub root: RootKey,
}

/// The `dev` environment with one ES256 key, an admin token holding `*`,
/// a fixed clock at [`NOW`].
pub async fn fixture() -> Fixture {
    fixture_with(Arc::new(FixedClock(NOW)), Settings::default()).await
}

/// [`fixture`] with a clock and settings of the test's.
pub async fn fixture_with(clock: SharedClock, settings: Settings) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("keyward.db"))
        .await
        .unwrap();
    let root = RootKey::generate();
    let env = Environment {
        name: "dev".into(),
        issuer: ISSUER.into(),
        policy: RotationPolicy {
            lead_secs: 600,
            token_ttl_secs: 300,
            ..RotationPolicy::for_algorithm(Algorithm::ES256)
        },
        created_at: NOW,
        key_store: keyward_store::KeyStoreName::Local,
        dpop_nonce_secret: None,
    };
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let opts = KeyOptions {
        kid: None,
        owner: None,
        description: None,
        origin: Origin::Generated,
    };
    let at = Change {
        now: NOW,
        actor: "test",
    };
    keyring::initialize(&store, &root, &env, &key, &opts, at)
        .await
        .unwrap();
    let (token, token_id) = add_admin_token(&store).await;
    let authority = Authority::load(store, root.clone(), clock, SigningPool::new(1), settings)
        .await
        .unwrap();
    let app = app(AppState {
        authority: authority.clone(),
        metrics: keyward_issuer::metrics::install(),
    });
    Fixture {
        _dir: dir,
        app,
        authority,
        token,
        token_id,
        root,
    }
}

/// What `keyward admin-token create` does by default (`*`, no expiry):
/// returns the token and its id.
pub async fn add_admin_token(store: &Store) -> (String, String) {
    add_admin_token_with(store, &["*"], None).await
}

/// An admin token holding `permissions`, expiring at `expires_at`.
pub async fn add_admin_token_with(
    store: &Store,
    permissions: &[&str],
    expires_at: Option<i64>,
) -> (String, String) {
    let (token, hash) = new_secret("kwa_");
    let id = new_id();
    let mut tx = store.begin().await.unwrap();
    tx.create_admin_token(&AdminToken {
        id: id.clone(),
        name: "test".into(),
        token_hash: hash,
        created_at: NOW,
        revoked_at: None,
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        owner: Some("tester".into()),
        expires_at,
        created_by: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (token, id)
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl Fixture {
    pub async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// An admin request with the fixture's token and a JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call_as(&self.token, method, path, body).await
    }

    /// An admin request with `token` and a JSON body.
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(b.body(body).unwrap()).await
    }

    /// An admin request with a raw body and content type.
    pub async fn raw(&self, method: Method, path: &str, ctype: &str, body: Vec<u8>) -> Answer {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, ctype)
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    /// A token-endpoint request with HTTP Basic client authentication.
    pub async fn token_endpoint(&self, id: &str, secret: &str, form: &str) -> Answer {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        let req = Request::builder()
            .method(Method::POST)
            .uri("/dev/oauth2/token")
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_string()))
            .unwrap();
        self.send(req).await
    }

    pub async fn state(&self) -> StoreState {
        let s = &self.authority.store;
        StoreState {
            audit: s.audit_len().await.unwrap(),
            generation: s.generation().await.unwrap(),
            envs: s.environments().await.unwrap(),
            keys: s.keys_all().await.unwrap(),
            clients: s.all_clients().await.unwrap(),
        }
    }

    /// The newest audit record.
    pub async fn last_audit(&self) -> keyward_store::AuditRecord {
        let s = &self.authority.store;
        let n = s.audit_len().await.unwrap();
        s.audit(0, n + 1).await.unwrap().pop().unwrap()
    }

    pub fn actor(&self) -> String {
        format!("admin:{}", self.token_id)
    }

    /// Creates a secret client through the API; returns (id, secret).
    pub async fn client(&self, body: Value) -> (String, String) {
        let r = self.post("/admin/v1/envs/dev/clients", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        (
            r.body["client_id"].as_str().unwrap().to_string(),
            r.body["client_secret"].as_str().unwrap_or("").to_string(),
        )
    }

    /// The JWKS the environment serves, as a verification key set.
    pub async fn served_keys(&self) -> KeySet {
        let r = self
            .send(
                Request::builder()
                    .uri("/dev/.well-known/jwks.json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let set = JwkSet::parse(r.body.to_string().as_bytes(), Algorithm::RS256).unwrap();
        KeySet::from_jwks(&set).unwrap()
    }
}

#[derive(Debug, PartialEq)]
pub struct StoreState {
    pub audit: i64,
    pub generation: i64,
    pub envs: Vec<Environment>,
    pub keys: Vec<KeyRecord>,
    pub clients: Vec<Client>,
}

/// Asserts that `r` is an admin API error with `status` and `code`.
#[track_caller]
pub fn assert_error(r: &Answer, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body["error"], code, "{r:?}");
    assert!(
        r.body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{r:?}"
    );
}

/// A clock the test moves.
pub struct TestClock(pub AtomicI64);

impl keyward_issuer::Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `s` form-urlencoded.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The path of one of the issuer's URLs (`https://issuer.test/...`).
pub fn local(url: &str) -> String {
    url.strip_prefix("https://issuer.test")
        .unwrap_or_else(|| panic!("not the issuer's: {url}"))
        .to_string()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub fn location(a: &Answer) -> String {
    a.headers[header::LOCATION].to_str().unwrap().to_string()
}

/// The whole `Set-Cookie` line of cookie `name` a response sets.
pub fn set_cookie_line(a: &Answer, name: &str) -> Option<String> {
    a.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.strip_prefix(name).is_some_and(|r| r.starts_with('=')))
        .map(str::to_owned)
}

/// The value of cookie `name` a response sets.
pub fn cookie(a: &Answer, name: &str) -> Option<String> {
    let line = set_cookie_line(a, name)?;
    let value = line[name.len() + 1..].split(';').next().unwrap_or("");
    Some(value.to_string())
}

/// The `keyward_session` value a response sets.
pub fn set_cookie(a: &Answer) -> Option<String> {
    cookie(a, "keyward_session")
}

/// A fixture whose clock the test moves (from [`NOW`]) and whose
/// environment `dev` sends browsers to `login_url`.
pub async fn login_fixture(login_url: &str) -> (Fixture, Arc<TestClock>) {
    login_fixture_with(login_url, Settings::default()).await
}

/// [`login_fixture`] with `settings`.
pub async fn login_fixture_with(login_url: &str, settings: Settings) -> (Fixture, Arc<TestClock>) {
    let clock = Arc::new(TestClock(AtomicI64::new(NOW)));
    let f = fixture_with(clock.clone(), settings).await;
    let r = f
        .call(
            Method::PATCH,
            "/admin/v1/envs/dev",
            Some(serde_json::json!({"login_url": login_url})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["login_url"], login_url);
    (f, clock)
}
