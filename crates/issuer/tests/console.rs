//! The web console (`/console`), driven through the application router with
//! `tower::ServiceExt::oneshot` over a temporary SQLite store: each page and
//! action, the login and its session, CSRF refusals, escaping, headers.
//! Every refused request is checked to leave the store as it was.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use keyward_issuer::console::{COOKIE, IDLE_SECS, LOGIN_COOKIE};
use keyward_issuer::http::{app, AppState};
use keyward_issuer::signing::SigningPool;
use keyward_issuer::tokens::{new_id, new_secret};
use keyward_issuer::{keyring, Authority, Change, Clock, KeyOptions, Origin, Settings};
use keyward_jose::seal::RootKey;
use keyward_jose::{Algorithm, PrivateKey};
use keyward_store::{AdminToken, Client, Environment, KeyRecord, KeyState, RotationPolicy, Store};
use tower::ServiceExt;

const NOW: i64 = 1_700_000_000;

/// A clock the test moves.
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    app: Router,
    authority: Arc<Authority>,
    clock: Arc<TestClock>,
    token: String,
    token_id: String,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("keyward.db"))
        .await
        .unwrap();
    let root = RootKey::generate();
    let env = Environment {
        name: "dev".into(),
        issuer: "https://issuer.test/dev".into(),
        policy: RotationPolicy {
            lead_secs: 600,
            token_ttl_secs: 300,
            rotate_every_secs: 86400,
            ..RotationPolicy::for_algorithm(Algorithm::ES256)
        },
        created_at: NOW,
        key_store: keyward_store::KeyStoreName::Local,
        dpop_nonce_secret: None,
    };
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let opts = KeyOptions {
        kid: Some("dev-key-1".into()),
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
    let clock = Arc::new(TestClock(AtomicI64::new(NOW + 60)));
    let authority = Authority::load(
        store,
        root,
        clock.clone(),
        SigningPool::new(1),
        Settings::default(),
    )
    .await
    .unwrap();
    let state = AppState {
        authority: authority.clone(),
        metrics: keyward_issuer::metrics::install(),
    };
    let app = app(state.clone()).merge(keyward_issuer::console::router(&state));
    Fixture {
        _dir: dir,
        app,
        authority,
        clock,
        token,
        token_id,
    }
}

/// What `keyward admin-token create` does: returns the token and its id.
async fn add_admin_token(store: &Store) -> (String, String) {
    add_admin_token_with(store, &["*"], None).await
}

/// An admin token holding `permissions` until `expires_at`.
async fn add_admin_token_with(
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
        owner: Some("test".into()),
        expires_at,
        created_by: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (token, id)
}

#[derive(Debug)]
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field: {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }

    /// The value `name` is set to by a `Set-Cookie`, if any.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_string)
    }
}

/// A signed-in browser: its session cookie and the session's CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

#[derive(Debug, PartialEq)]
struct StoreState {
    audit: i64,
    generation: i64,
    keys: Vec<KeyRecord>,
    clients: Vec<Client>,
}

impl Fixture {
    async fn send(&self, req: Request<Body>) -> Page {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get_with(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut b = Request::builder().uri(path);
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    async fn post_with(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        self.send(b.body(Body::from(body)).unwrap()).await
    }

    /// Logs in with `token` as a browser would; the login answer and the
    /// session (when one was made).
    async fn login_with(&self, token: &str) -> (Page, Option<Browser>) {
        let form = self.get_with("/console/login", None).await;
        assert_eq!(form.status, StatusCode::OK, "{form:?}");
        let pre = form.set_cookie(LOGIN_COOKIE).expect("pre-login cookie");
        let pre = pre.split(';').next().unwrap().to_string();
        let r = self
            .post_with(
                "/console/login",
                Some(&pre),
                &[("csrf", &form.csrf()), ("token", token)],
            )
            .await;
        let Some(c) = r.set_cookie(COOKIE) else {
            return (r, None);
        };
        let cookie = c.split(';').next().unwrap().to_string();
        let page = self.get_with("/console/envs", Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        let csrf = page.csrf();
        (r, Some(Browser { cookie, csrf }))
    }

    async fn login(&self) -> Browser {
        let (r, b) = self.login_with(&self.token.clone()).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
        b.expect("signed in")
    }

    async fn get(&self, b: &Browser, path: &str) -> Page {
        self.get_with(path, Some(&b.cookie)).await
    }

    /// A form POSTed with the session's CSRF token.
    async fn post(&self, b: &Browser, path: &str, form: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", b.csrf.as_str())];
        all.extend_from_slice(form);
        self.post_with(path, Some(&b.cookie), &all).await
    }

    async fn state(&self) -> StoreState {
        let s = &self.authority.store;
        StoreState {
            audit: s.audit_len().await.unwrap(),
            generation: s.generation().await.unwrap(),
            keys: s.keys_all().await.unwrap(),
            clients: s.all_clients().await.unwrap(),
        }
    }

    async fn last_audit(&self) -> keyward_store::AuditRecord {
        let s = &self.authority.store;
        let n = s.audit_len().await.unwrap();
        s.audit(n - 1, 1).await.unwrap().pop().unwrap()
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }
}

/// Every console answer carries the security headers.
#[track_caller]
fn assert_headers(p: &Page) {
    let h = |n: &str| p.headers.get(n).map(|v| v.to_str().unwrap()).unwrap_or("");
    let csp = h("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(!csp.contains("script-src"), "no script at all: {csp}");
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("cache-control"), "no-store");
    assert_eq!(h("x-content-type-options"), "nosniff");
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn pages_need_a_session_and_send_the_browser_to_login() {
    let f = fixture().await;
    let before = f.state().await;
    for path in [
        "/console",
        "/console/envs",
        "/console/envs/dev",
        "/console/envs/dev/clients",
        "/console/audit",
        "/console/health",
    ] {
        for cookie in [None, Some("keyward_console=forged"), Some("other=1")] {
            let r = f.get_with(path, cookie).await;
            assert_eq!(r.status, StatusCode::SEE_OTHER, "{path} {cookie:?}");
            assert_eq!(r.location(), "/console/login", "{path}");
            assert_headers(&r);
        }
    }
    // Actions too: nothing is read or changed.
    for path in [
        "/console/envs/dev/rotate",
        "/console/envs/dev/keys/dev-key-1/revoke",
        "/console/envs/dev/keys/dev-key-1/retire",
        "/console/envs/dev/clients",
        "/console/logout",
    ] {
        let r = f
            .post_with(path, None, &[("csrf", "x"), ("confirm", "dev-key-1")])
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.location(), "/console/login");
    }
    assert_eq!(f.state().await, before);
    // The login page and the stylesheet are public.
    let r = f.get_with("/console/login", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("type=\"password\" name=\"token\""),
        "{}",
        r.body
    );
    assert_headers(&r);
    let css = f.get_with("/console/static/console.css", None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_logout_ends_the_session() {
    let f = fixture().await;
    let (r, b) = f.login_with(&f.token.clone()).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/console/envs");
    let set = r.set_cookie(COOKIE).unwrap();
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=3600",
    ] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    assert!(!set.contains(&f.token), "the token is never in a cookie");
    let b = b.unwrap();
    // The session cookie is a random id, not the token or its hash.
    let id = b.cookie.strip_prefix("keyward_console=").unwrap();
    assert_eq!(id.len(), 43);
    assert!(!f.token.contains(id));
    // The pre-login cookie is cleared.
    assert!(r.set_cookie(LOGIN_COOKIE).unwrap().contains("Max-Age=0"));
    // Signed in, the login page sends the browser on.
    let r = f.get(&b, "/console/login").await;
    assert_eq!(r.location(), "/console/envs");
    let r = f.get(&b, "/console").await;
    assert_eq!(r.location(), "/console/envs");

    // Logout needs the CSRF token too.
    let r = f.post_with("/console/logout", Some(&b.cookie), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(f.get(&b, "/console/envs").await.status, StatusCode::OK);
    let r = f.post(&b, "/console/logout", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/console/login");
    assert!(r.set_cookie(COOKIE).unwrap().contains("Max-Age=0"));
    // The old cookie no longer opens anything.
    let r = f.get(&b, "/console/envs").await;
    assert_eq!(r.location(), "/console/login");
}

#[tokio::test]
async fn the_cookie_is_secure_behind_https() {
    let f = fixture().await;
    let form = f.get_with("/console/login", None).await;
    let pre = form.set_cookie(LOGIN_COOKIE).unwrap();
    let pre = pre.split(';').next().unwrap();
    let body = format!(
        "csrf={}&token={}",
        form.csrf(),
        form_urlencoded::byte_serialize(f.token.as_bytes()).collect::<String>()
    );
    let r = f
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/console/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, pre)
                .header("x-forwarded-proto", "https")
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert!(r.set_cookie(COOKIE).unwrap().contains("; Secure"));
}

#[tokio::test]
async fn bad_logins_are_refused_and_make_no_session() {
    let f = fixture().await;
    let wrong = new_secret("kwa_").0;
    for token in [wrong.as_str(), "", &"a".repeat(600)] {
        let (r, b) = f.login_with(token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token}");
        assert!(b.is_none());
        assert!(r.body.contains("invalid, expired or revoked"), "{}", r.body);
    }
    // The login form's CSRF: without the pre-login cookie, or another value.
    let form = f.get_with("/console/login", None).await;
    let pre = form.set_cookie(LOGIN_COOKIE).unwrap();
    let pre = pre.split(';').next().unwrap().to_string();
    for (cookie, csrf) in [
        (None, form.csrf()),
        (Some(pre.as_str()), "other".to_string()),
        (Some(pre.as_str()), String::new()),
    ] {
        let r = f
            .post_with(
                "/console/login",
                cookie,
                &[("csrf", &csrf), ("token", &f.token)],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{cookie:?} {csrf}");
        assert!(r.set_cookie(COOKIE).is_none());
    }
    // A revoked admin token cannot log in, and its sessions end.
    let b = f.login().await;
    let mut tx = f.authority.store.begin().await.unwrap();
    assert!(tx.revoke_admin_token(&f.token_id, NOW).await.unwrap());
    tx.commit().await.unwrap();
    f.authority.reload().await.unwrap();
    let r = f.get(&b, "/console/envs").await;
    assert_eq!(r.location(), "/console/login");
    let (r, b) = f.login_with(&f.token.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(b.is_none());
}

#[tokio::test]
async fn sessions_end_when_idle_by_the_servers_clock() {
    let f = fixture().await;
    let b = f.login().await;
    f.clock.0.fetch_add(IDLE_SECS - 1, Ordering::SeqCst);
    assert_eq!(f.get(&b, "/console/envs").await.status, StatusCode::OK);
    f.clock.0.fetch_add(IDLE_SECS, Ordering::SeqCst);
    let r = f.get(&b, "/console/envs").await;
    assert_eq!(r.location(), "/console/login");
}

#[tokio::test]
async fn environments_page_lists_them_with_signing_key_and_next_rotation() {
    let f = fixture().await;
    let b = f.login().await;
    let r = f.get(&b, "/console/envs").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_headers(&r);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.body.contains("href=\"/console/envs/dev\""), "{}", r.body);
    assert!(r.body.contains("<code>dev-key-1</code>"), "{}", r.body);
    // rotate_every - lead after the first key activated.
    let next = keyward_issuer::fmt_time(NOW + 86400 - 600);
    assert!(r.body.contains(&next), "{next}: {}", r.body);
    assert!(!r.body.contains("<script"), "{}", r.body);
}

#[tokio::test]
async fn rotate_from_the_environment_page_changes_the_timeline() {
    let f = fixture().await;
    let b = f.login().await;
    let page = f.get(&b, "/console/envs/dev").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_headers(&page);
    assert!(page.body.contains("<svg class=\"timeline\""));
    assert_eq!(page.body.matches("<g class=\"key\"").count(), 1);
    let r = f
        .post(&b, "/console/envs/dev/rotate", &[("schedule", "lead")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(r.location(), "/console/envs/dev");
    // The admin API's rotation: audited with the admin token as actor.
    let rec = f.last_audit().await;
    assert_eq!(rec.action, "key.rotate");
    assert_eq!(rec.actor, format!("admin:{}", f.token_id));
    let keys = f.authority.store.keys("dev").await.unwrap();
    assert_eq!(keys.len(), 2);
    let new = keys.iter().find(|k| k.kid != "dev-key-1").unwrap();
    assert_eq!(new.state(f.now()), KeyState::Pending);
    assert_eq!(new.activates_at, f.now() + 600);
    let page = f.get(&b, "/console/envs/dev").await;
    assert_eq!(page.body.matches("<g class=\"key\"").count(), 2);
    assert!(page.body.contains(&format!("data-kid=\"{}\"", new.kid)));
    assert!(page.body.contains("class=\"seg pending\""), "{}", page.body);
    assert!(page.body.contains("class=\"seg retired\""), "{}", page.body);
    // The message, once.
    assert!(page.body.contains("Rotated: key"), "{}", page.body);
    let again = f.get(&b, "/console/envs/dev").await;
    assert!(!again.body.contains("Rotated: key"));
    // A second lead rotation while one is pending: refused, nothing changed.
    let before = f.state().await;
    let r = f
        .post(&b, "/console/envs/dev/rotate", &[("schedule", "lead")])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert!(r.body.contains("already in progress"), "{}", r.body);
    // A schedule that is not offered.
    let r = f
        .post(&b, "/console/envs/dev/rotate", &[("schedule", "soon")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // An unknown environment.
    let r = f.post(&b, "/console/envs/nope/rotate", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(f.state().await, before);
    // Immediate: the new key signs now.
    let r = f
        .post(&b, "/console/envs/dev/rotate", &[("schedule", "immediate")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(f.authority.store.keys("dev").await.unwrap().len(), 3);
}

#[tokio::test]
async fn revoke_needs_the_kid_typed_exactly() {
    let f = fixture().await;
    let b = f.login().await;
    f.post(&b, "/console/envs/dev/rotate", &[("schedule", "immediate")])
        .await;
    let before = f.state().await;
    let path = "/console/envs/dev/keys/dev-key-1/revoke";
    for confirm in ["", "dev-key", "DEV-KEY-1", "dev-key-1 "] {
        let r = f.post(&b, path, &[("confirm", confirm)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{confirm:?}");
        assert!(r.body.contains("type its kid exactly"), "{}", r.body);
    }
    // Without the field at all.
    let r = f.post(&b, path, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A key of another environment is not reachable through this one.
    let r = f
        .post(
            &b,
            "/console/envs/other/keys/dev-key-1/revoke",
            &[("confirm", "dev-key-1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    // An unknown field.
    let r = f
        .post(&b, path, &[("confirm", "dev-key-1"), ("force", "1")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(f.state().await, before);
    let r = f
        .post(&b, path, &[("confirm", "dev-key-1"), ("reason", "leaked")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    let k = f.authority.store.key("dev-key-1").await.unwrap();
    assert_eq!(k.state(f.now()), KeyState::Revoked);
    let rec = f.last_audit().await;
    assert_eq!(rec.action, "key.revoke");
    assert_eq!(rec.actor, format!("admin:{}", f.token_id));
    let page = f.get(&b, "/console/envs/dev").await;
    assert!(
        page.body.contains("Key dev-key-1 is revoked"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("<line class=\"revoked\""),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn retire_goes_through_the_domains_checks() {
    let f = fixture().await;
    let b = f.login().await;
    let before = f.state().await;
    // The only key: retiring it would stop signing, refused.
    let r = f
        .post(&b, "/console/envs/dev/keys/dev-key-1/retire", &[])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert_eq!(f.state().await, before);
    f.post(&b, "/console/envs/dev/rotate", &[("schedule", "immediate")])
        .await;
    let new = f
        .authority
        .store
        .keys("dev")
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.kid != "dev-key-1")
        .unwrap();
    // dev-key-1 is already retired by the immediate rotation; retire the
    // new one is refused (last signer); retiring the retired one conflicts.
    let r = f
        .post(&b, "/console/envs/dev/keys/dev-key-1/retire", &[])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    let r = f
        .post(
            &b,
            &format!("/console/envs/dev/keys/{}/retire", new.kid),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    // A lead rotation, then retiring the pending key works.
    f.clock.0.fetch_add(1, Ordering::SeqCst);
    f.post(&b, "/console/envs/dev/rotate", &[("schedule", "lead")])
        .await;
    let pending = f
        .authority
        .store
        .keys("dev")
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.state(f.now()) == KeyState::Pending)
        .unwrap();
    let r = f
        .post(
            &b,
            &format!("/console/envs/dev/keys/{}/retire", pending.kid),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(f.last_audit().await.action, "key.retire");
}

#[tokio::test]
async fn clients_create_shows_the_secret_once_rotate_and_delete() {
    let f = fixture().await;
    let b = f.login().await;
    let page = f.get(&b, "/console/envs/dev/clients").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("No client yet"));
    let r = f
        .post(
            &b,
            "/console/envs/dev/clients",
            &[
                ("name", "billing <script>alert(1)</script>"),
                ("auth", "client_secret_post"),
                ("scopes", "orders.read  orders.write"),
                ("audiences", "api://orders"),
                ("client_credentials", "on"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_headers(&r);
    let secret = between(&r.body, "<code id=\"client-secret\">", "</code>");
    let id = between(&r.body, "<code id=\"client-id\">", "</code>");
    assert!(secret.len() > 30, "{secret}");
    // Escaped by the engine, never markup.
    assert!(!r.body.contains("<script>"), "{}", r.body);
    assert!(r
        .body
        .contains("billing &lt;script&gt;alert(1)&lt;/script&gt;"));
    let c = f.authority.store.client("dev", &id).await.unwrap();
    assert_eq!(c.scopes, ["orders.read", "orders.write"]);
    assert_eq!(c.grant_types, ["client_credentials"]);
    assert_eq!(c.auth.as_str(), "client_secret_post");
    let rec = f.last_audit().await;
    assert_eq!(rec.action, "client.create");
    assert_eq!(rec.actor, format!("admin:{}", f.token_id));
    assert!(!rec.detail.to_string().contains(&secret));
    // The list shows the client, escaped, and never the secret.
    let page = f.get(&b, "/console/envs/dev/clients").await;
    assert!(page.body.contains(&format!("data-client=\"{id}\"")));
    assert!(!page.body.contains(&secret));
    assert!(!page.body.contains("<script>"));
    assert!(page.body.contains("&lt;script&gt;"));
    // The environment list and audit page escape it too.
    let audit = f.get(&b, "/console/audit").await;
    assert!(!audit.body.contains("<script>"), "{}", audit.body);

    // A new secret, shown once.
    let r = f
        .post(
            &b,
            &format!("/console/envs/dev/clients/{id}/rotate-secret"),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let second = between(&r.body, "<code id=\"client-secret\">", "</code>");
    assert_ne!(second, secret);
    assert_eq!(f.last_audit().await.action, "client.rotate_secret");

    // Refused input changes nothing.
    let before = f.state().await;
    for form in [
        vec![("name", "")],
        vec![("name", "x"), ("auth", "private_key_jwt")],
        vec![("name", "x"), ("scopes", "bad\"scope")],
        vec![("name", "x"), ("client_credentials", "yes")],
        vec![("name", "x"), ("secret", "mine")],
    ] {
        let r = f.post(&b, "/console/envs/dev/clients", &form).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{form:?}: {r:?}");
    }
    let r = f
        .post(&b, "/console/envs/dev/clients/nope/rotate-secret", &[])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(f.state().await, before);

    // Delete.
    let r = f
        .post(&b, &format!("/console/envs/dev/clients/{id}/delete"), &[])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(r.location(), "/console/envs/dev/clients");
    assert!(f.authority.store.client("dev", &id).await.is_err());
    assert_eq!(f.last_audit().await.action, "client.delete");
}

fn between(s: &str, a: &str, b: &str) -> String {
    let i = s.find(a).unwrap_or_else(|| panic!("no {a}: {s}")) + a.len();
    s[i..i + s[i..].find(b).unwrap()].to_string()
}

#[tokio::test]
async fn every_action_refuses_a_missing_or_wrong_csrf_token() {
    let f = fixture().await;
    let b = f.login().await;
    let other = f.login().await;
    assert_ne!(b.csrf, other.csrf);
    let before = f.state().await;
    let actions: [(&str, Vec<(&str, &str)>); 5] = [
        ("/console/envs/dev/rotate", vec![("schedule", "immediate")]),
        (
            "/console/envs/dev/keys/dev-key-1/revoke",
            vec![("confirm", "dev-key-1")],
        ),
        ("/console/envs/dev/keys/dev-key-1/retire", vec![]),
        ("/console/envs/dev/clients", vec![("name", "x")]),
        ("/console/logout", vec![]),
    ];
    for (path, form) in &actions {
        // Missing, empty, another session's, and a prefix of the right one.
        let prefix = &b.csrf[..10];
        for csrf in [None, Some(""), Some(other.csrf.as_str()), Some(prefix)] {
            let mut all = form.clone();
            if let Some(c) = csrf {
                all.push(("csrf", c));
            }
            let r = f.post_with(path, Some(&b.cookie), &all).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{path} {csrf:?}: {r:?}");
            assert!(r.body.contains("CSRF"), "{}", r.body);
        }
        // Twice the field (the right one among them) is not a form we take.
        let mut twice = form.clone();
        twice.push(("csrf", &b.csrf));
        twice.push(("csrf", &b.csrf));
        let r = f.post_with(path, Some(&b.cookie), &twice).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(f.state().await, before);
    // A body that is not a form.
    let r = f
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/console/envs/dev/rotate")
                .header(header::COOKIE, &b.cookie)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(format!("{{\"csrf\":\"{}\"}}", b.csrf)))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A body over the limit.
    let big = format!("csrf={}&name={}", b.csrf, "a".repeat(70 * 1024));
    let r = f
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/console/envs/dev/clients")
                .header(header::COOKIE, &b.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(big))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // GET does not act.
    let r = f.get(&b, "/console/envs/dev/rotate").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(f.state().await, before);
}

#[tokio::test]
async fn audit_page_shows_chain_status_and_filters() {
    let f = fixture().await;
    let b = f.login().await;
    f.post(&b, "/console/envs/dev/rotate", &[("schedule", "lead")])
        .await;
    f.post(&b, "/console/envs/dev/clients", &[("name", "c1")])
        .await;
    let all = f.get(&b, "/console/audit").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_headers(&all);
    let n = f.authority.store.audit_len().await.unwrap();
    assert!(
        all.body.contains(&format!("Chain intact: {n} records")),
        "{}",
        all.body
    );
    assert!(all.body.contains("key.rotate") && all.body.contains("client.create"));
    // Newest first.
    let at = |a: &str| all.body.find(&format!("<code>{a}</code>")).unwrap();
    assert!(at("client.create") < at("key.rotate"));
    let r = f.get(&b, "/console/audit?action=key.").await;
    assert!(r.body.contains("key.rotate") && !r.body.contains("<code>client.create</code>"));
    let r = f.get(&b, "/console/audit?env=nope").await;
    assert!(r.body.contains("No record matches"), "{}", r.body);
    let future = keyward_issuer::fmt_time(f.now() + 10);
    let r = f.get(&b, &format!("/console/audit?since={future}")).await;
    assert!(r.body.contains("No record matches"), "{}", r.body);
    let r = f.get(&b, "/console/audit?until=2000-01-01").await;
    assert!(r.body.contains("No record matches"), "{}", r.body);
    for bad in [
        "/console/audit?since=yesterday",
        "/console/audit?before=-1",
        "/console/audit?env=a&env=b",
        "/console/audit?sort=asc",
    ] {
        assert_eq!(
            f.get(&b, bad).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    // A broken chain is reported.
    let db = f._dir.path().join("keyward.db");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c=sqlite3.connect({:?}); c.execute(\"update audit set actor='mallory' where seq=1\"); c.commit()",
            db.to_str().unwrap()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r = f.get(&b, "/console/audit").await;
    assert!(r.body.contains("Chain broken at record 1"), "{}", r.body);
}

#[tokio::test]
async fn health_page_shows_readiness_signers_and_token_rates() {
    let f = fixture().await;
    let b = f.login().await;
    let r = f.get(&b, "/console/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_headers(&r);
    assert!(r.body.contains("Ready"), "{}", r.body);
    assert!(r.body.contains("<code>dev-key-1</code>"), "{}", r.body);
    assert!(r.body.contains("ES256") && r.body.contains("signing"));
    // A second view a second later measures a rate from the counters.
    keyward_issuer::metrics::token_request("dev", "client_credentials", "ok", 0.001);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    keyward_issuer::metrics::token_request("dev", "client_credentials", "ok", 0.001);
    let r = f.get(&b, "/console/health").await;
    assert!(r.body.contains("Per minute over the last"), "{}", r.body);
    assert!(
        r.body.contains("<td>dev</td><td><code>ok</code></td>"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn unknown_environment_and_bad_paths_are_refused_pages() {
    let f = fixture().await;
    let b = f.login().await;
    for path in ["/console/envs/nope", "/console/envs/nope/clients"] {
        let r = f.get(&b, path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_headers(&r);
        assert!(r.body.contains("not found"), "{}", r.body);
    }
    // Markup in a path is escaped in the refusal.
    let r = f.get(&b, "/console/envs/%3Cscript%3E").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.body.contains("<script>"), "{}", r.body);
}

#[tokio::test]
async fn actions_need_the_admin_permission_and_refusals_are_audited() {
    let f = fixture().await;
    let (token, id) =
        add_admin_token_with(&f.authority.store, &["keyward.env.dev.keys.read"], None).await;
    let (r, b) = f.login_with(&token).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    let b = b.expect("signed in");
    // What it holds: the environment page with its keys.
    let page = f.get(&b, "/console/envs/dev").await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    // What it does not: refused, naming the permission, audited, nothing else changed.
    for (path, form, permission) in [
        (
            "/console/envs/dev/rotate",
            vec![("schedule", "immediate")],
            "keyward.env.dev.keys.rotate",
        ),
        (
            "/console/envs/dev/keys/dev-key-1/revoke",
            vec![("confirm", "dev-key-1")],
            "keyward.env.dev.keys.revoke",
        ),
        (
            "/console/envs/dev/clients",
            vec![("name", "x")],
            "keyward.env.dev.clients.write",
        ),
    ] {
        let before = f.state().await;
        let r = f.post(&b, path, &form).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {r:?}");
        assert!(r.body.contains(permission), "{path}: {}", r.body);
        let after = f.state().await;
        assert_eq!(after.keys, before.keys, "{path}");
        assert_eq!(after.clients, before.clients, "{path}");
        assert_eq!(
            after.audit,
            before.audit + 1,
            "{path}: one admin.denied record"
        );
        let rec = f.last_audit().await;
        assert_eq!(rec.action, "admin.denied", "{path}");
        assert_eq!(rec.actor, format!("admin:{id}"), "{path}");
    }
    for (path, permission) in [
        ("/console/audit", "keyward.audit.read"),
        ("/console/health", "keyward.health.read"),
        ("/console/envs/dev/clients", "keyward.env.dev.clients.read"),
    ] {
        let r = f.get(&b, path).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {r:?}");
        assert!(r.body.contains(permission), "{path}: {}", r.body);
    }
    // An expired admin token does not sign in.
    let (expired, _) = add_admin_token_with(&f.authority.store, &["*"], Some(f.now() - 1)).await;
    let (r, b) = f.login_with(&expired).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert!(b.is_none());
}
