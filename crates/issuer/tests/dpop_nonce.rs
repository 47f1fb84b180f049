//! DPoP server nonces at the token endpoint (RFC 9449 §8), per environment:
//! turned on and off through the admin API, asked for with
//! `use_dpop_nonce` and a `DPoP-Nonce` header, accepted on the retry, and
//! refused (with nothing issued and nothing written) when missing, garbled,
//! forged, another environment's or expired. Two authorities on one store,
//! and an authority after a root-key rotation, accept each other's nonces.
//! The HTTP surface is driven through the application router; time is the
//! authority's clock, moved by the test.

#[path = "support/admin_fixture.rs"]
mod admin_fixture;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use admin_fixture::*;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine as _;
use keyward_issuer::http::{app, AppState};
use keyward_issuer::signing::SigningPool;
use keyward_issuer::{Authority, Clock, Settings};
use keyward_jose::seal::RootKey;
use keyward_jose::{Algorithm, NonceKey, PrivateKey};
use keyward_store::{Store, Timestamp};
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN_URI: &str = "https://issuer.test/dev/oauth2/token";

/// A clock the test moves.
#[derive(Debug)]
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        self.0.load(Ordering::SeqCst)
    }
}

struct Fx {
    f: Fixture,
    clock: Arc<TestClock>,
    id: String,
    secret: String,
    key: PrivateKey,
}

/// The `dev` environment with a secret client; nonces off until a test
/// turns them on.
async fn fx() -> Fx {
    let clock = Arc::new(TestClock(AtomicI64::new(NOW)));
    let f = fixture_with(clock.clone(), Settings::default()).await;
    let (id, secret) = f
        .client(json!({"name": "app", "scopes": ["orders.read"]}))
        .await;
    Fx {
        f,
        clock,
        id,
        secret,
        key: PrivateKey::generate(Algorithm::ES256, None).unwrap(),
    }
}

/// A DPoP proof by `key` for `POST htu` at `iat`, with `nonce` if given.
fn proof(key: &PrivateKey, htu: &str, iat: i64, nonce: Option<&str>) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = json!({
        "typ": "dpop+jwt", "alg": "ES256",
        "jwk": key.public_key().to_jwk(None).to_value(),
    });
    let mut claims = json!({
        "jti": keyward_jose::crypto::random_text::<12>(),
        "htm": "POST", "htu": htu, "iat": iat,
    });
    if let Some(n) = nonce {
        claims["nonce"] = json!(n);
    }
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&sig))
}

/// A token request to `path` with Basic credentials, `form` and a `DPoP`
/// header if given.
fn token_request(
    path: &str,
    id: &str,
    secret: &str,
    form: &str,
    dpop: Option<&str>,
) -> Request<Body> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(p) = dpop {
        b = b.header("DPoP", p);
    }
    b.body(Body::from(form.to_string())).unwrap()
}

fn nonce_of(a: &Answer) -> Option<String> {
    a.headers
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_string())
}

/// The `cnf.jkt` of an access token (read unverified: the issuer's own).
fn cnf_jkt(access_token: &str) -> Option<String> {
    let (_, claims) = keyward_jose::dangerous::decode_unverified(access_token).unwrap();
    claims["cnf"]["jkt"].as_str().map(String::from)
}

/// What a refused request must leave as it was: the environments, keys,
/// clients and audit chain (an issuance would be audited), and the refresh
/// token a test holds.
#[derive(Debug, PartialEq)]
struct Everything {
    state: StoreState,
    refresh: Option<keyward_store::RefreshToken>,
}

impl Fx {
    fn set_time(&self, t: Timestamp) {
        self.clock.0.store(t, Ordering::SeqCst);
    }

    fn now(&self) -> Timestamp {
        self.clock.0.load(Ordering::SeqCst)
    }

    async fn require_nonces(&self, env: &str, on: bool) -> Answer {
        let setting = if on { "required" } else { "off" };
        self.f
            .call(
                Method::PATCH,
                &format!("/admin/v1/envs/{env}"),
                Some(json!({"dpop_nonce": setting})),
            )
            .await
    }

    /// client_credentials with a proof carrying `nonce`.
    async fn client_credentials(&self, nonce: Option<&str>) -> Answer {
        let p = proof(&self.key, TOKEN_URI, self.now(), nonce);
        self.f
            .send(token_request(
                "/dev/oauth2/token",
                &self.id,
                &self.secret,
                "grant_type=client_credentials",
                Some(&p),
            ))
            .await
    }

    async fn everything(&self, refresh: Option<&str>) -> Everything {
        let refresh = match refresh {
            Some(t) => self
                .f
                .authority
                .store
                .refresh_token(&keyward_issuer::tokens::hash_secret(t))
                .await
                .unwrap(),
            None => None,
        };
        Everything {
            state: self.f.state().await,
            refresh,
        }
    }
}

#[track_caller]
fn assert_use_nonce(a: &Answer) -> String {
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    assert_eq!(a.body["error"], "use_dpop_nonce", "{a:?}");
    assert!(a.body.get("access_token").is_none(), "{a:?}");
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    nonce_of(a).expect("a use_dpop_nonce answer carries a DPoP-Nonce")
}

#[tokio::test]
async fn the_setting_is_shown_and_validated() {
    let x = fx().await;
    let r = x.f.get("/admin/v1/envs/dev").await;
    assert_eq!(r.body["dpop_nonce"], "off", "{r:?}");
    let r = x.require_nonces("dev", true).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["dpop_nonce"], "required");
    let audit = x.f.last_audit().await;
    assert_eq!(audit.action, "env.update");
    assert_eq!(audit.detail["dpop_nonce"], "required");
    let listed = x.f.get("/admin/v1/envs").await;
    assert_eq!(listed.body[0]["dpop_nonce"], "required", "{listed:?}");
    // Setting it again keeps the secret: nonces handed out stay valid.
    let before = x.f.state().await;
    let r = x.require_nonces("dev", true).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        x.f.state().await.envs[0].dpop_nonce_secret,
        before.envs[0].dpop_nonce_secret
    );
    // A value that is not a setting changes nothing.
    let before = x.f.state().await;
    for bad in [json!("maybe"), json!(true), json!(1), json!("Required")] {
        let r =
            x.f.call(
                Method::PATCH,
                "/admin/v1/envs/dev",
                Some(json!({"dpop_nonce": bad})),
            )
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(x.f.state().await, before);
    }
    // Created with it.
    let r = x
        .f
        .post(
            "/admin/v1/envs",
            json!({"name": "other", "issuer": "https://issuer.test/other", "dpop_nonce": "required"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.body["dpop_nonce"], "required");
    // The secret is sealed: its bytes are not the key the nonces use.
    let env = x.f.authority.store.environment("other").await.unwrap();
    assert!(env.requires_dpop_nonce());
}

#[tokio::test]
async fn a_missing_nonce_gets_use_dpop_nonce_and_the_retry_succeeds() {
    let x = fx().await;
    x.require_nonces("dev", true).await;
    let before = x.everything(None).await;
    let r = x.client_credentials(None).await;
    let nonce = assert_use_nonce(&r);
    assert_eq!(x.everything(None).await, before, "nothing issued");
    let ok = x.client_credentials(Some(&nonce)).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    assert_eq!(ok.body["token_type"], "DPoP");
    assert_eq!(
        cnf_jkt(ok.body["access_token"].as_str().unwrap()),
        Some(x.key.public_key().thumbprint())
    );
    // Every answer of the environment carries a fresh nonce, success included.
    assert!(nonce_of(&ok).is_some(), "{:?}", ok.headers);
    // The nonce stays usable for its window (each proof has its own jti).
    x.set_time(NOW + 100);
    let again = x.client_credentials(Some(&nonce)).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    // A bearer request (no proof) is not held to nonces, but told one.
    let bearer =
        x.f.send(token_request(
            "/dev/oauth2/token",
            &x.id,
            &x.secret,
            "grant_type=client_credentials",
            None,
        ))
        .await;
    assert_eq!(bearer.status, StatusCode::OK, "{bearer:?}");
    assert_eq!(bearer.body["token_type"], "Bearer");
    assert!(nonce_of(&bearer).is_some());
}

#[tokio::test]
async fn bad_nonces_are_refused_and_issue_nothing() {
    let x = fx().await;
    x.require_nonces("dev", true).await;
    let r = x
        .f
        .post(
            "/admin/v1/envs",
            json!({"name": "other", "issuer": "https://issuer.test/other", "dpop_nonce": "required"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    // Another environment's nonce: any answer of its token endpoint has one.
    let other =
        x.f.send(token_request(
            "/other/oauth2/token",
            "nobody",
            "nothing",
            "grant_type=client_credentials",
            None,
        ))
        .await;
    let other_nonce = nonce_of(&other).expect("other's answers carry nonces");
    // A good nonce of dev, then made stale by time.
    let good = assert_use_nonce(&x.client_credentials(None).await);
    // A nonce of the right shape under another secret, same label.
    let forged =
        NonceKey::derive(&keyward_jose::crypto::random_bytes::<32>(), "dev", 300).issue(NOW);
    // The right window with its tag altered.
    let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&good)
        .unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    let altered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    // A refresh token (the operator mints one for alice), refused refreshes
    // must leave it usable.
    let minted =
        x.f.post(
            "/admin/v1/envs/dev/tokens",
            json!({"sub": "alice", "client_id": x.id, "scopes": ["orders.read"]}),
        )
        .await;
    assert_eq!(minted.status, StatusCode::OK, "{minted:?}");
    let refresh = minted.body["refresh_token"].as_str().unwrap().to_string();

    let before = x.everything(Some(&refresh)).await;
    assert!(before.refresh.is_some());
    // An empty nonce is a malformed proof.
    let r = x.client_credentials(Some("")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.body["error"], "invalid_dpop_proof", "{r:?}");
    assert!(r.body.get("access_token").is_none());
    assert_eq!(x.everything(Some(&refresh)).await, before);
    for bad in [
        "garbled!",
        "bm9wZQ",
        forged.as_str(),
        altered.as_str(),
        other_nonce.as_str(),
    ] {
        let r = x.client_credentials(Some(bad)).await;
        let fresh = assert_use_nonce(&r);
        assert_ne!(fresh, bad);
        let p = proof(&x.key, TOKEN_URI, x.now(), Some(bad));
        let r =
            x.f.send(token_request(
                "/dev/oauth2/token",
                &x.id,
                &x.secret,
                &format!("grant_type=refresh_token&refresh_token={refresh}"),
                Some(&p),
            ))
            .await;
        assert_use_nonce(&r);
        assert_eq!(
            x.everything(Some(&refresh)).await,
            before,
            "nonce {bad:?} changed something"
        );
    }
    // Expired: two windows later the nonce of NOW is refused...
    x.set_time(NOW + 600);
    let fresh = assert_use_nonce(&x.client_credentials(Some(&good)).await);
    assert_eq!(x.everything(Some(&refresh)).await, before);
    // ...and the fresh one works, for the refresh too: the refresh token
    // was never touched.
    let ok = x.client_credentials(Some(&fresh)).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let p = proof(&x.key, TOKEN_URI, x.now(), Some(&fresh));
    let r =
        x.f.send(token_request(
            "/dev/oauth2/token",
            &x.id,
            &x.secret,
            &format!("grant_type=refresh_token&refresh_token={refresh}"),
            Some(&p),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["token_type"], "DPoP");
}

#[tokio::test]
async fn a_nonce_lives_one_to_two_windows() {
    let x = fx().await;
    x.require_nonces("dev", true).await;
    // Issued at the start of a window: valid to the end of the next.
    let start = (NOW / 300 + 1) * 300;
    x.set_time(start);
    let n = assert_use_nonce(&x.client_credentials(None).await);
    x.set_time(start + 599);
    assert_eq!(x.client_credentials(Some(&n)).await.status, StatusCode::OK);
    x.set_time(start + 600);
    assert_use_nonce(&x.client_credentials(Some(&n)).await);
}

#[tokio::test]
async fn an_environment_without_nonces_is_unaffected() {
    let x = fx().await;
    let r = x.client_credentials(None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["token_type"], "DPoP");
    assert!(nonce_of(&r).is_none(), "{:?}", r.headers);
    // A nonce it never asked for is ignored.
    let r = x.client_credentials(Some("whatever")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // Turned on, then off again: back to no nonces; the secret is gone.
    x.require_nonces("dev", true).await;
    assert_use_nonce(&x.client_credentials(None).await);
    let r = x.require_nonces("dev", false).await;
    assert_eq!(r.body["dpop_nonce"], "off");
    assert!(x.f.state().await.envs[0].dpop_nonce_secret.is_none());
    let r = x.client_credentials(None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(nonce_of(&r).is_none());
}

/// A second authority (another replica) on the same database with `root`.
async fn replica(x: &Fx, root: RootKey) -> axum::Router {
    let store = Store::open_sqlite(&x.f._dir.path().join("keyward.db"))
        .await
        .unwrap();
    let authority = Authority::load(
        store,
        root,
        x.clock.clone(),
        SigningPool::new(1),
        Settings::default(),
    )
    .await
    .unwrap();
    app(AppState {
        authority,
        metrics: keyward_issuer::metrics::install(),
    })
}

async fn send_to(app: &axum::Router, req: Request<Body>) -> (StatusCode, Option<String>, Value) {
    use http_body_util::BodyExt;
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let nonce = resp
        .headers()
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        nonce,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn replicas_on_one_store_accept_each_others_nonces() {
    let x = fx().await;
    x.require_nonces("dev", true).await;
    let b = replica(&x, x.f.root.clone()).await;
    let from_a = assert_use_nonce(&x.client_credentials(None).await);
    let p = proof(&x.key, TOKEN_URI, NOW, Some(&from_a));
    let (status, from_b, body) = send_to(
        &b,
        token_request(
            "/dev/oauth2/token",
            &x.id,
            &x.secret,
            "grant_type=client_credentials",
            Some(&p),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ok = x.client_credentials(from_b.as_deref()).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
}

#[tokio::test]
async fn nonces_survive_a_root_key_rotation() {
    let x = fx().await;
    x.require_nonces("dev", true).await;
    let nonce = assert_use_nonce(&x.client_credentials(None).await);
    let new_root = RootKey::generate();
    x.f.authority
        .store
        .rewrap_all(&x.f.root, &new_root, "test", NOW)
        .await
        .unwrap();
    // The old root no longer opens the secret; the new one does, and the
    // nonce (same secret) is still good.
    let env = x.f.authority.store.environment("dev").await.unwrap();
    assert!(keyward_issuer::keyring::dpop_nonce_key(&x.f.root, &env).is_err());
    let b = replica(&x, new_root).await;
    let p = proof(&x.key, TOKEN_URI, NOW, Some(&nonce));
    let (status, _, body) = send_to(
        &b,
        token_request(
            "/dev/oauth2/token",
            &x.id,
            &x.secret,
            "grant_type=client_credentials",
            Some(&p),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn one_patch_sets_login_urls_and_nonces_together() {
    // Both settings in one PATCH: neither is dropped for the other (the
    // login settings live in their own row, the nonce secret in the
    // environment's).
    let x = fx().await;
    let r =
        x.f.call(
            Method::PATCH,
            "/admin/v1/envs/dev",
            Some(json!({"dpop_nonce": "required", "login_url": "https://login.test/login"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["dpop_nonce"], "required", "{r:?}");
    assert_eq!(r.body["login_url"], "https://login.test/login", "{r:?}");
    let env = x.f.authority.store.environment("dev").await.unwrap();
    assert!(
        env.requires_dpop_nonce(),
        "the nonce setting was not stored"
    );
    let shown = x.f.get("/admin/v1/envs/dev").await;
    assert_eq!(shown.body["dpop_nonce"], "required", "{shown:?}");
    assert_eq!(shown.body["login_url"], "https://login.test/login");
}
