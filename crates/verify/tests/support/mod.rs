//! A scriptable JWKS / discovery server on 127.0.0.1 for the cache tests,
//! and test keys generated at test time.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keyward_jose::{sign_jwt, Algorithm, JwkSet, LocalSigner, PrivateKey, TokenSigner};

/// What the server answers, changeable while it runs.
#[derive(Clone)]
pub struct Script {
    /// The JWKS body.
    pub body: String,
    /// `Cache-Control` header, if any.
    pub cache_control: Option<String>,
    /// `ETag` header, if any (a matching `If-None-Match` gets 304).
    pub etag: Option<String>,
    /// Status to answer instead of serving (e.g. 500).
    pub fail: Option<u16>,
    /// Delay before answering.
    pub delay: Duration,
    /// `issuer` of the discovery document (None: the server's own URL).
    pub discovery_issuer: Option<String>,
    /// `jwks_uri` of the discovery document (None: the server's own).
    pub discovery_jwks_uri: Option<String>,
}

pub struct JwksServer {
    pub addr: SocketAddr,
    pub script: Arc<Mutex<Script>>,
    /// JWKS requests received (whatever the answer).
    pub attempts: Arc<AtomicUsize>,
    /// JWKS requests answered with a body.
    pub fetches: Arc<AtomicUsize>,
    /// JWKS requests answered 304.
    pub not_modified: Arc<AtomicUsize>,
    /// Discovery requests.
    pub discoveries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct St {
    script: Arc<Mutex<Script>>,
    attempts: Arc<AtomicUsize>,
    fetches: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
    discoveries: Arc<AtomicUsize>,
    base: String,
}

async fn serve_jwks(State(st): State<St>, headers: HeaderMap) -> Response {
    st.attempts.fetch_add(1, Ordering::SeqCst);
    let s = st.script.lock().unwrap().clone();
    tokio::time::sleep(s.delay).await;
    if let Some(code) = s.fail {
        return StatusCode::from_u16(code).unwrap().into_response();
    }
    let inm = headers.get("if-none-match").and_then(|v| v.to_str().ok());
    let mut resp = if s.etag.is_some() && inm == s.etag.as_deref() {
        st.not_modified.fetch_add(1, Ordering::SeqCst);
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        st.fetches.fetch_add(1, Ordering::SeqCst);
        ([("content-type", "application/json")], s.body).into_response()
    };
    if let Some(cc) = s.cache_control {
        resp.headers_mut()
            .insert("cache-control", cc.parse().unwrap());
    }
    if let Some(etag) = s.etag {
        resp.headers_mut().insert("etag", etag.parse().unwrap());
    }
    resp
}

async fn discovery(State(st): State<St>) -> Response {
    st.discoveries.fetch_add(1, Ordering::SeqCst);
    let s = st.script.lock().unwrap().clone();
    let issuer = s.discovery_issuer.unwrap_or_else(|| st.base.clone());
    axum::Json(serde_json::json!({
        "issuer": issuer,
        "jwks_uri": s.discovery_jwks_uri.unwrap_or_else(|| format!("{}/jwks.json", st.base)),
    }))
    .into_response()
}

impl JwksServer {
    pub async fn start(body: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script {
            body,
            cache_control: None,
            etag: None,
            fail: None,
            delay: Duration::ZERO,
            discovery_issuer: None,
            discovery_jwks_uri: None,
        }));
        let st = St {
            script: script.clone(),
            attempts: Arc::default(),
            fetches: Arc::default(),
            not_modified: Arc::default(),
            discoveries: Arc::default(),
            base: format!("http://{addr}"),
        };
        let attempts = st.attempts.clone();
        let (fetches, not_modified, discoveries) = (
            st.fetches.clone(),
            st.not_modified.clone(),
            st.discoveries.clone(),
        );
        let app = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .with_state(st);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        JwksServer {
            addr,
            script,
            attempts,
            fetches,
            not_modified,
            discoveries,
            task,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks.json", self.base())
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().unwrap());
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

/// A signer with a fresh key and `kid`.
pub fn signer(alg: Algorithm, kid: &str) -> LocalSigner {
    let bits = matches!(alg.family(), keyward_jose::KeyFamily::Rsa).then_some(2048);
    LocalSigner::new(
        PrivateKey::generate(alg, bits).unwrap(),
        Some(kid.to_string()),
    )
}

/// The public JWK Set of `signers`.
pub fn jwks(signers: &[&LocalSigner]) -> String {
    JwkSet {
        keys: signers.iter().map(|s| s.public_jwk()).collect(),
    }
    .to_json()
}

/// An access token (`typ: at+jwt`) from `issuer` for `aud`, valid from `now`.
pub fn token(
    signer: &LocalSigner,
    issuer: &str,
    aud: &str,
    now: i64,
    extra: serde_json::Value,
) -> String {
    let mut claims = serde_json::json!({
        "iss": issuer, "sub": "alice", "aud": aud, "client_id": "svc",
        "iat": now, "exp": now + 600, "jti": format!("j-{}", rand_id()),
        "scope": "orders:read",
    });
    if let serde_json::Value::Object(m) = extra {
        for (k, v) in m {
            claims[k] = v;
        }
    }
    sign_jwt(signer, Some("at+jwt"), &claims).unwrap()
}

pub fn rand_id() -> String {
    keyward_jose::crypto::hex(&keyward_jose::crypto::random_bytes::<8>())
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
