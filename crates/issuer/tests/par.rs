//! Pushed authorization requests (RFC 9126) through the application router:
//! push (authenticated, checked like the authorization endpoint), then the
//! browser brings `client_id` + `request_uri` once; replay, expiry, another
//! client's `request_uri`, bad pushes (nothing stored) and
//! `require_pushed_authorization_requests`.

#[path = "support/admin_fixture.rs"]
mod admin_fixture;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use admin_fixture::*;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine;
use serde_json::json;

const LOGIN: &str = "https://login.test/login";
const CB: &str = "https://rp.test/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

struct Par {
    f: Fixture,
    clock: Arc<TestClock>,
    web: (String, String),
    other: (String, String),
}

/// The authorization request's parameters, as pushed.
fn request(extra: &str) -> String {
    format!(
        "response_type=code&redirect_uri={}&scope=openid%20email&state=st-1&nonce=n-1\
         &code_challenge={CHALLENGE}&code_challenge_method=S256{extra}",
        enc(CB)
    )
}

async fn setup() -> Par {
    let (f, clock) = login_fixture(LOGIN).await;
    let scopes = json!(["openid", "profile", "email"]);
    let web = f
        .client(json!({"name": "web", "scopes": scopes,
                       "grant_types": ["authorization_code"], "redirect_uris": [CB]}))
        .await;
    let other = f
        .client(json!({"name": "other", "scopes": scopes,
                       "grant_types": ["authorization_code"], "redirect_uris": [CB]}))
        .await;
    Par {
        f,
        clock,
        web,
        other,
    }
}

impl Par {
    async fn post(&self, path: &str, form: &str, basic: Option<&(String, String)>) -> Answer {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
            b = b.header(header::AUTHORIZATION, format!("Basic {v}"));
        }
        self.f
            .send(b.body(Body::from(form.to_string())).unwrap())
            .await
    }

    async fn push(&self, client: &(String, String), form: &str) -> Answer {
        self.post("/dev/oauth2/par", form, Some(client)).await
    }

    /// Pushes the standard request for `client`; its request_uri.
    async fn pushed(&self, client: &(String, String)) -> String {
        let r = self.push(client, &request("")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        r.body["request_uri"].as_str().unwrap().to_owned()
    }

    async fn browser(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut b = Request::builder().method(Method::GET).uri(path);
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, format!("keyward_session={c}"));
        }
        self.f.send(b.body(Body::empty()).unwrap()).await
    }

    async fn authorize(&self, client_id: &str, request_uri: &str, extra: &str) -> Answer {
        self.browser(
            &format!(
                "/dev/oauth2/authorize?client_id={client_id}&request_uri={}{extra}",
                enc(request_uri)
            ),
            None,
        )
        .await
    }

    async fn pushed_count(&self) -> i64 {
        self.f
            .authority
            .store
            .count_pushed_requests("dev")
            .await
            .unwrap()
    }
}

/// An error page: shown, never a redirect.
#[track_caller]
fn assert_page(r: &Answer) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.headers.get(header::LOCATION).is_none(), "{r:?}");
    assert!(set_cookie(r).is_none(), "{r:?}");
}

#[tokio::test]
async fn a_pushed_request_is_used_once_and_only_what_was_pushed_counts() {
    let p = setup().await;
    let r = p.push(&p.web, &request("")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.body["expires_in"], 60);
    let uri = r.body["request_uri"].as_str().unwrap().to_owned();
    assert!(
        uri.starts_with(PREFIX) && uri.len() > PREFIX.len() + 30,
        "{uri}"
    );
    // The browser brings client_id and request_uri; other parameters (a
    // different redirect_uri, more scope) are ignored.
    let r = p
        .authorize(
            &p.web.0,
            &uri,
            &format!(
                "&redirect_uri={}&scope=profile",
                enc("https://evil.test/cb")
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    let loc = location(&r);
    assert!(
        loc.starts_with(&format!("{LOGIN}?login_challenge=")),
        "{loc}"
    );
    let mut cookie = set_cookie(&r).unwrap();
    let challenge = query_param(&loc, "login_challenge").unwrap();
    let lr =
        p.f.get(&format!("/admin/v1/envs/dev/login-requests/{challenge}"))
            .await;
    assert_eq!(
        lr.body["requested_scope"],
        json!(["openid", "email"]),
        "{lr:?}"
    );
    // Login and consent accepted: the code goes to the pushed redirect_uri.
    let r =
        p.f.post(
            &format!("/admin/v1/envs/dev/login-requests/{challenge}/accept"),
            json!({"subject": "alice"}),
        )
        .await;
    let to = r.body["redirect_to"].as_str().unwrap().to_owned();
    let r = p
        .browser(
            to.strip_prefix("https://issuer.test").unwrap(),
            Some(&cookie),
        )
        .await;
    // The login renewed the session cookie.
    cookie = set_cookie(&r).expect("a renewed session cookie");
    let consent = query_param(&location(&r), "consent_challenge").unwrap();
    let r =
        p.f.post(
            &format!("/admin/v1/envs/dev/consent-requests/{consent}/accept"),
            json!({"grant_scope": ["openid", "email"]}),
        )
        .await;
    let to = r.body["redirect_to"].as_str().unwrap().to_owned();
    let r = p
        .browser(
            to.strip_prefix("https://issuer.test").unwrap(),
            Some(&cookie),
        )
        .await;
    let loc = location(&r);
    assert!(loc.starts_with(&format!("{CB}?code=")), "{loc}");
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st-1"));
    let code = query_param(&loc, "code").unwrap();
    let r = p
        .post(
            "/dev/oauth2/token",
            &format!(
                "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
                enc(CB)
            ),
            Some(&p.web),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.body["id_token"].is_string(), "{r:?}");

    // Used once: a replay is an error page, no new session, nothing started.
    let r = p.authorize(&p.web.0, &uri, "").await;
    assert_page(&r);
    // Unknown, malformed, or missing client_id: the same.
    assert_page(&p.authorize(&p.web.0, &format!("{PREFIX}nope"), "").await);
    assert_page(&p.authorize(&p.web.0, "https://evil.test/req", "").await);
    let r = p
        .browser(
            &format!("/dev/oauth2/authorize?request_uri={}", enc(&uri)),
            None,
        )
        .await;
    assert_page(&r);
}

#[tokio::test]
async fn another_clients_or_an_expired_request_uri_is_refused() {
    let p = setup().await;
    let uri = p.pushed(&p.web).await;
    // Another client cannot use it, and its attempt does not use it up.
    assert_page(&p.authorize(&p.other.0, &uri, "").await);
    let r = p.authorize(&p.web.0, &uri, "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    // Valid for 60 s: at 59 s it works, at 60 s it does not.
    let a = p.pushed(&p.web).await;
    let b = p.pushed(&p.web).await;
    p.clock.0.store(NOW + 59, Ordering::SeqCst);
    let r = p.authorize(&p.web.0, &a, "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    p.clock.0.store(NOW + 60, Ordering::SeqCst);
    assert_page(&p.authorize(&p.web.0, &b, "").await);
}

#[tokio::test]
async fn a_bad_push_is_refused_and_stores_nothing() {
    let p = setup().await;
    let refused =
        |form: String, client: Option<(String, String)>, status: StatusCode, code: &'static str| {
            let p = &p;
            async move {
                let before = p.pushed_count().await;
                let r = p.post("/dev/oauth2/par", &form, client.as_ref()).await;
                assert_eq!(r.status, status, "{form}: {r:?}");
                assert_eq!(r.body["error"], code, "{form}: {r:?}");
                assert!(r.body.get("request_uri").is_none());
                assert_eq!(p.pushed_count().await, before, "{form}");
            }
        };
    let web = Some(p.web.clone());
    // Unauthenticated, or a wrong secret.
    refused(
        request(""),
        None,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    refused(
        request(""),
        Some((p.web.0.clone(), "kws_wrong".into())),
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    // client_id naming another client than the authenticated one.
    refused(
        request(&format!("&client_id={}", p.other.0)),
        web.clone(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    // What the authorization endpoint refuses, as JSON.
    refused(
        request("").replace(&enc(CB), &enc("https://evil.test/cb")),
        web.clone(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    refused(
        request("").replace("S256", "plain"),
        web.clone(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    refused(
        request("").replace("openid%20email", "openid%20admin"),
        web.clone(),
        StatusCode::BAD_REQUEST,
        "invalid_scope",
    )
    .await;
    refused(
        request("").replace("response_type=code", "response_type=token"),
        web.clone(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    // A request_uri cannot itself be pushed.
    refused(
        request(&format!("&request_uri={}", enc(&format!("{PREFIX}x")))),
        web.clone(),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    // A client without the code flow.
    let cc =
        p.f.client(json!({"name": "svc", "scopes": ["openid"]}))
            .await;
    refused(
        request("").replace("openid%20email", "openid"),
        Some(cc),
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
    )
    .await;
    // GET is not the endpoint's method.
    let r = p.browser("/dev/oauth2/par", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_client_that_must_push_is_refused_without_it() {
    let p = setup().await;
    let r =
        p.f.call(
            Method::PATCH,
            &format!("/admin/v1/envs/dev/clients/{}", p.web.0),
            Some(json!({"require_pushed_authorization_requests": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["require_pushed_authorization_requests"], true);
    let r = p
        .browser(
            &format!(
                "/dev/oauth2/authorize?client_id={}&{}",
                p.web.0,
                request("")
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    let loc = location(&r);
    assert!(
        loc.starts_with(&format!("{CB}?error=invalid_request")),
        "{loc}"
    );
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st-1"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some(ISSUER));
    // Pushed, it goes on to the login app.
    let uri = p.pushed(&p.web).await;
    let r = p.authorize(&p.web.0, &uri, "").await;
    assert!(location(&r).starts_with(LOGIN), "{r:?}");
    // The other client is not affected.
    let r = p
        .browser(
            &format!(
                "/dev/oauth2/authorize?client_id={}&{}",
                p.other.0,
                request("")
            ),
            None,
        )
        .await;
    assert!(location(&r).starts_with(LOGIN), "{r:?}");
    // Discovery names the endpoint.
    let d = p.f.get("/dev/.well-known/openid-configuration").await;
    assert_eq!(
        d.body["pushed_authorization_request_endpoint"],
        format!("{ISSUER}/oauth2/par")
    );
    assert_eq!(d.body["require_pushed_authorization_requests"], false);
}
