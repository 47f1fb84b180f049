//! Browser logins end to end through the application router (`oneshot`):
//! authorize → login app (admin API) → consent → code → token endpoint →
//! ID token, userinfo, refresh, logout; and every way of getting it wrong,
//! each checked to issue nothing.

#[path = "support/admin_fixture.rs"]
mod admin_fixture;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use admin_fixture::*;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine;
use keyward_jose::crypto::sha256;
use keyward_jose::{verify_jwt, Algorithm, Validation};
use serde_json::{json, Value};

const LOGIN: &str = "https://login.test/login";
const CB: &str = "https://rp.test/cb";
const BYE: &str = "https://rp.test/bye";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Flow {
    f: Fixture,
    clock: Arc<TestClock>,
    /// A public client (PKCE only).
    public: String,
    /// A confidential client (client_secret_basic).
    confidential: (String, String),
    /// A first-party public client (consent skipped).
    first_party: String,
}

async fn flow() -> Flow {
    let (f, clock) = login_fixture(LOGIN).await;
    let scopes = json!(["openid", "profile", "email", "offline_access"]);
    let (public, _) = f
        .client(json!({
            "name": "spa", "auth": "none", "scopes": scopes,
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": [CB], "post_logout_redirect_uris": [BYE]
        }))
        .await;
    let confidential = f
        .client(json!({
            "name": "web", "scopes": scopes,
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": [CB]
        }))
        .await;
    let (first_party, _) = f
        .client(json!({
            "name": "own", "auth": "none", "scopes": scopes, "first_party": true,
            "grant_types": ["authorization_code"], "redirect_uris": [CB]
        }))
        .await;
    Flow {
        f,
        clock,
        public,
        confidential,
        first_party,
    }
}

impl Flow {
    fn now(&self) -> i64 {
        self.clock.0.load(Ordering::SeqCst)
    }

    fn advance(&self, secs: i64) {
        self.clock.0.fetch_add(secs, Ordering::SeqCst);
    }

    async fn browser(&self, method: Method, path: &str, cookie: Option<&str>) -> Answer {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, format!("keyward_session={c}"));
        }
        self.f.send(b.body(Body::empty()).unwrap()).await
    }

    fn authorize_url(&self, client: &str, extra: &str) -> String {
        format!(
            "/dev/oauth2/authorize?response_type=code&client_id={client}&redirect_uri={}\
             &scope=openid%20email%20offline_access&state=st-1&nonce=n-1\
             &code_challenge={CHALLENGE}&code_challenge_method=S256{extra}",
            enc(CB)
        )
    }

    /// authorize → login challenge; the session cookie set (or kept).
    async fn start(&self, client: &str, extra: &str, cookie: Option<&str>) -> (String, String) {
        let r = self
            .browser(Method::GET, &self.authorize_url(client, extra), cookie)
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
        let loc = location(&r);
        assert!(
            loc.starts_with(&format!("{LOGIN}?login_challenge=")),
            "{loc}"
        );
        let cookie = set_cookie(&r)
            .or(cookie.map(str::to_owned))
            .expect("a session cookie");
        (query_param(&loc, "login_challenge").unwrap(), cookie)
    }

    async fn accept_login(&self, challenge: &str, body: Value) -> String {
        let r = self
            .f
            .post(
                &format!("/admin/v1/envs/dev/login-requests/{challenge}/accept"),
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body["redirect_to"].as_str().unwrap().to_string()
    }

    async fn accept_consent(&self, challenge: &str, body: Value) -> String {
        let r = self
            .f
            .post(
                &format!("/admin/v1/envs/dev/consent-requests/{challenge}/accept"),
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body["redirect_to"].as_str().unwrap().to_string()
    }

    /// The browser follows `redirect_to`; the next Location. A session
    /// cookie the answer sets (renewed at login) replaces `cookie`.
    async fn follow(&self, redirect_to: &str, cookie: &mut String) -> Answer {
        let r = self
            .browser(Method::GET, &local(redirect_to), Some(cookie))
            .await;
        if let Some(c) = set_cookie(&r) {
            *cookie = c;
        }
        r
    }

    /// The whole flow for `client` up to the code (consent granted with
    /// `grant`); the code and the session cookie.
    async fn code(&self, client: &str, grant: &[&str]) -> (String, String) {
        let (challenge, mut cookie) = self.start(client, "", None).await;
        let to = self
            .accept_login(
                &challenge,
                json!({"subject": "alice", "acr": "urn:keyward:pwd", "amr": ["pwd"],
                       "claims": {"email": "alice@example.com", "email_verified": true, "name": "Alice"}}),
            )
            .await;
        let r = self.follow(&to, &mut cookie).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
        let mut loc = location(&r);
        if loc.starts_with(LOGIN) {
            let consent = query_param(&loc, "consent_challenge").expect("consent challenge");
            let to = self
                .accept_consent(&consent, json!({"grant_scope": grant}))
                .await;
            let r = self.follow(&to, &mut cookie).await;
            assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
            loc = location(&r);
        }
        assert!(loc.starts_with(&format!("{CB}?code=")), "{loc}");
        assert_eq!(query_param(&loc, "state").as_deref(), Some("st-1"));
        assert_eq!(query_param(&loc, "iss").as_deref(), Some(ISSUER));
        (query_param(&loc, "code").unwrap(), cookie)
    }

    async fn token(&self, form: &str, basic: Option<(&str, &str)>) -> Answer {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/dev/oauth2/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
            b = b.header(header::AUTHORIZATION, format!("Basic {v}"));
        }
        self.f
            .send(b.body(Body::from(form.to_string())).unwrap())
            .await
    }

    async fn exchange(&self, client: &str, code: &str, verifier: &str) -> Answer {
        self.token(
            &format!(
                "grant_type=authorization_code&client_id={client}&code={code}&redirect_uri={}&code_verifier={verifier}",
                enc(CB)
            ),
            None,
        )
        .await
    }

    async fn userinfo(&self, token: &str) -> Answer {
        self.f
            .send(
                Request::builder()
                    .uri("/dev/oauth2/userinfo")
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
    }

    async fn codes(&self, client: &str) -> i64 {
        self.f
            .authority
            .store
            .count_authorization_codes("dev", client)
            .await
            .unwrap()
    }

    /// Audit actions since `from` (exclusive).
    async fn actions_since(&self, from: i64) -> Vec<String> {
        let s = &self.f.authority.store;
        s.audit(from, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect()
    }
}

fn id_policy(aud: &str) -> Validation {
    Validation {
        algorithms: vec![Algorithm::ES256],
        issuer: Some(ISSUER.into()),
        audiences: vec![aud.into()],
        required_typ: Some("JWT".into()),
        ..Validation::default()
    }
}

#[tokio::test]
async fn the_code_flow_gives_id_token_access_refresh_userinfo_and_logout() {
    let fl = flow().await;
    let audit_before = fl.f.authority.store.audit_len().await.unwrap();
    let (code, cookie) = fl
        .code(&fl.public, &["openid", "email", "offline_access"])
        .await;
    let r = fl.exchange(&fl.public, &code, VERIFIER).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let access = r.body["access_token"].as_str().unwrap().to_string();
    let id_token = r.body["id_token"].as_str().unwrap().to_string();
    let refresh = r.body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(r.body["scope"], "openid email offline_access");
    assert_eq!(r.body["token_type"], "Bearer");

    // The ID token: typ JWT, signed by the environment's key.
    let keys = fl.f.served_keys().await;
    let id = verify_jwt(&id_token, &keys, &id_policy(&fl.public), fl.now()).unwrap();
    assert_eq!(id.header.typ.as_deref(), Some("JWT"));
    let c = id.claims.to_value();
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], json!([fl.public]));
    assert_eq!(c["azp"], fl.public);
    assert_eq!(c["nonce"], "n-1");
    assert_eq!(c["acr"], "urn:keyward:pwd");
    assert_eq!(c["amr"], json!(["pwd"]));
    assert_eq!(c["auth_time"], NOW);
    assert!(c["sid"].as_str().is_some_and(|s| !s.is_empty()));
    // at_hash: the left half of SHA-256 of the access token.
    let h = sha256(access.as_bytes());
    let want = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h[..16]);
    assert_eq!(c["at_hash"], want);
    // No userinfo claim in the ID token (they come from userinfo).
    assert!(c.get("email").is_none());

    // The access token: at+jwt, sub = the user, scope = granted.
    let at = verify_jwt(
        &access,
        &keys,
        &Validation {
            algorithms: vec![Algorithm::ES256],
            issuer: Some(ISSUER.into()),
            required_typ: Some("at+jwt".into()),
            ..Validation::default()
        },
        fl.now(),
    )
    .unwrap();
    let ac = at.claims.to_value();
    assert_eq!(ac["sub"], "alice");
    assert_eq!(ac["client_id"], fl.public);
    assert_eq!(ac["scope"], "openid email offline_access");

    // userinfo: sub and the email claims (not name: profile was not granted).
    let u = fl.userinfo(&access).await;
    assert_eq!(u.status, StatusCode::OK, "{u:?}");
    assert_eq!(
        u.body,
        json!({"sub": "alice", "email": "alice@example.com", "email_verified": true})
    );

    // Refresh rotates, and the new access token still reaches userinfo.
    let r = fl
        .token(
            &format!(
                "grant_type=refresh_token&client_id={}&refresh_token={refresh}",
                fl.public
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let access2 = r.body["access_token"].as_str().unwrap();
    assert_ne!(r.body["refresh_token"].as_str().unwrap(), refresh);
    let u = fl.userinfo(access2).await;
    assert_eq!(u.body["email"], "alice@example.com", "{u:?}");
    // Reuse of the rotated refresh token (past the grace window) revokes
    // the family.
    fl.advance(61);
    let r = fl
        .token(
            &format!(
                "grant_type=refresh_token&client_id={}&refresh_token={refresh}",
                fl.public
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "invalid_grant");
    assert_eq!(fl.userinfo(access2).await.status, StatusCode::UNAUTHORIZED);

    // The audit chain has the login, the consent and the code.
    let actions = fl.actions_since(audit_before).await;
    for a in ["login.accept", "consent.grant", "code.issue"] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }

    // Logout: the registered post_logout_redirect_uri, with state; the
    // session ends and the cookie is cleared.
    let r = fl
        .browser(
            Method::GET,
            &format!(
                "/dev/oauth2/logout?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye-1",
                enc(BYE)
            ),
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(location(&r), format!("{BYE}?state=bye-1"));
    assert_eq!(set_cookie(&r).as_deref(), Some(""));
    let sid = c["sid"].as_str().unwrap();
    let s =
        fl.f.authority
            .store
            .browser_session_by_sid("dev", sid)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(s.ended_at, Some(fl.now()));
}

#[tokio::test]
async fn a_confidential_client_authenticates_and_first_party_skips_consent() {
    let fl = flow().await;
    let (id, secret) = fl.confidential.clone();
    let (code, _) = fl.code(&id, &["openid"]).await;
    // Without its secret, the confidential client is refused; the code stays.
    let r = fl.exchange(&id, &code, VERIFIER).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    let form = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
        enc(CB)
    );
    let r = fl.token(&form, Some((&id, &secret))).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.body["id_token"].is_string());
    // No offline_access granted: no refresh token.
    assert!(r.body.get("refresh_token").is_none(), "{r:?}");

    // First party: straight from the login to the code.
    let (code, _) = fl.code(&fl.first_party, &[]).await;
    let r = fl.exchange(&fl.first_party, &code, VERIFIER).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // The client may not refresh: no refresh token despite offline_access.
    assert!(r.body.get("refresh_token").is_none(), "{r:?}");
}

#[tokio::test]
async fn remembered_login_and_consent_are_skipped_and_prompt_none_works() {
    let fl = flow().await;
    let (challenge, mut cookie) = fl.start(&fl.public, "", None).await;
    // A cookie value someone could have planted before the login.
    let planted = cookie.clone();
    let to = fl
        .accept_login(
            &challenge,
            json!({"subject": "bob", "remember": true, "acr": "urn:pwd", "amr": ["pwd"],
                   "claims": {"email": "bob@example.com"}}),
        )
        .await;
    let r = fl.follow(&to, &mut cookie).await;
    assert_ne!(cookie, planted, "the login renews the session cookie");
    let consent = query_param(&location(&r), "consent_challenge").unwrap();
    let to = fl
        .accept_consent(
            &consent,
            json!({"grant_scope": ["openid", "email", "offline_access"], "remember": true}),
        )
        .await;
    let r = fl.follow(&to, &mut cookie).await;
    assert!(location(&r).starts_with(CB));

    // Second request in the same browser: the login request says skip.
    fl.advance(30);
    let (challenge, _) = fl.start(&fl.public, "", Some(&cookie)).await;
    let r =
        fl.f.get(&format!("/admin/v1/envs/dev/login-requests/{challenge}"))
            .await;
    assert_eq!(r.body["skip"], true, "{r:?}");
    assert_eq!(r.body["subject"], "bob");
    // Skipped: accept must name the session's subject.
    let r =
        fl.f.post(
            &format!("/admin/v1/envs/dev/login-requests/{challenge}/accept"),
            json!({"subject": "mallory"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    let to = fl.accept_login(&challenge, json!({"subject": "bob"})).await;
    // Consent remembered: straight to the code.
    let r = fl.follow(&to, &mut cookie).await;
    let loc = location(&r);
    assert!(loc.starts_with(&format!("{CB}?code=")), "{loc}");
    let r = fl
        .exchange(&fl.public, &query_param(&loc, "code").unwrap(), VERIFIER)
        .await;
    let keys = fl.f.served_keys().await;
    let id = verify_jwt(
        r.body["id_token"].as_str().unwrap(),
        &keys,
        &id_policy(&fl.public),
        fl.now(),
    )
    .unwrap();
    // auth_time is the first login's, and so are acr, amr and the claims
    // the skipped accept did not restate.
    assert_eq!(id.claims.to_value()["auth_time"], NOW);
    assert_eq!(id.claims.to_value()["acr"], "urn:pwd");
    assert_eq!(id.claims.to_value()["amr"], json!(["pwd"]));
    let info = fl.userinfo(r.body["access_token"].as_str().unwrap()).await;
    assert_eq!(info.body["email"], "bob@example.com", "{info:?}");

    // prompt=none: no login app at all.
    let r = fl
        .browser(
            Method::GET,
            &fl.authorize_url(&fl.public, "&prompt=none"),
            Some(&cookie),
        )
        .await;
    assert!(location(&r).starts_with(&format!("{CB}?code=")), "{r:?}");
    // prompt=none without a session, or with the cookie value from before
    // the login (session fixation): login_required, to the client.
    for old in [None, Some(planted.as_str())] {
        let r = fl
            .browser(
                Method::GET,
                &fl.authorize_url(&fl.public, "&prompt=none"),
                old,
            )
            .await;
        let loc = location(&r);
        assert_eq!(
            query_param(&loc, "error").as_deref(),
            Some("login_required"),
            "{old:?}"
        );
    }
    let r = fl
        .browser(
            Method::GET,
            &fl.authorize_url(&fl.public, "&prompt=none"),
            None,
        )
        .await;
    let loc = location(&r);
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st-1"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some(ISSUER));

    // max_age exceeded: the login is not skipped (skip=false forced).
    fl.advance(100);
    let (challenge, _) = fl.start(&fl.public, "&max_age=60", Some(&cookie)).await;
    let r =
        fl.f.get(&format!("/admin/v1/envs/dev/login-requests/{challenge}"))
            .await;
    assert_eq!(r.body["skip"], false, "{r:?}");
    assert_eq!(r.body["subject"], Value::Null);
    assert_eq!(r.body["max_age"], 60);
    // ... and prompt=none with it is login_required, with no code.
    let before = fl.codes(&fl.public).await;
    let r = fl
        .browser(
            Method::GET,
            &fl.authorize_url(&fl.public, "&prompt=none&max_age=60"),
            Some(&cookie),
        )
        .await;
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("login_required")
    );
    assert_eq!(fl.codes(&fl.public).await, before);
    // prompt=login forces it too.
    let (challenge, _) = fl.start(&fl.public, "&prompt=login", Some(&cookie)).await;
    let r =
        fl.f.get(&format!("/admin/v1/envs/dev/login-requests/{challenge}"))
            .await;
    assert_eq!(r.body["skip"], false);
}

#[tokio::test]
async fn form_post_answers_with_an_auto_submitting_form() {
    let fl = flow().await;
    let (challenge, mut cookie) = fl
        .start(&fl.first_party, "&response_mode=form_post", None)
        .await;
    let to = fl
        .accept_login(&challenge, json!({"subject": "alice"}))
        .await;
    let r = fl.follow(&to, &mut cookie).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("form-action https://rp.test"), "{csp}");
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    let html = r.body.as_str().unwrap();
    assert!(html.contains(&format!("action=\"{CB}\"")), "{html}");
    assert!(html.contains("name=\"code\""), "{html}");
    assert!(html.contains("name=\"iss\""), "{html}");
    assert!(html.contains("value=\"st-1\""), "{html}");
}

#[tokio::test]
async fn rejections_go_back_to_the_client_with_the_error() {
    let fl = flow().await;
    let (challenge, mut cookie) = fl.start(&fl.public, "", None).await;
    let r =
        fl.f.post(
            &format!("/admin/v1/envs/dev/login-requests/{challenge}/reject"),
            json!({"error": "access_denied", "error_description": "no such user"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let to = r.body["redirect_to"].as_str().unwrap().to_string();
    let r = fl.follow(&to, &mut cookie).await;
    let loc = location(&r);
    assert!(loc.starts_with(CB), "{loc}");
    assert_eq!(query_param(&loc, "error").as_deref(), Some("access_denied"));
    assert_eq!(
        query_param(&loc, "error_description").as_deref(),
        Some("no such user")
    );
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st-1"));
    assert_eq!(fl.codes(&fl.public).await, 0);
    assert_eq!(fl.f.last_audit().await.action, "login.reject");
}

// ---------------------------------------------------------------------------
// Negative cases: the error, and nothing issued.

#[tokio::test]
async fn unknown_client_or_unregistered_redirect_uri_never_redirects() {
    let fl = flow().await;
    let good = fl.authorize_url(&fl.public, "");
    let attempts = [
        good.replace(&fl.public, "no-such-client"),
        good.replace(&enc(CB), &enc("https://evil.test/cb")),
        // Open-redirect attempts: extra path, query, user info, port,
        // scheme, fragment, case, trailing slash.
        good.replace(&enc(CB), &enc("https://rp.test/cb/../../evil")),
        good.replace(&enc(CB), &enc("https://rp.test/cbx")),
        good.replace(&enc(CB), &enc("https://rp.test/cb?next=https://evil.test")),
        good.replace(&enc(CB), &enc("https://evil.test@rp.test/cb")),
        good.replace(&enc(CB), &enc("https://rp.test@evil.test/cb")),
        good.replace(&enc(CB), &enc("https://rp.test:8443/cb")),
        good.replace(&enc(CB), &enc("http://rp.test/cb")),
        good.replace(&enc(CB), &enc("https://rp.test/cb#x")),
        good.replace(&enc(CB), &enc("https://RP.test/cb")),
        good.replace(&enc(CB), &enc("https://rp.test/cb/")),
        good.replace(&format!("&redirect_uri={}", enc(CB)), ""),
        // A repeated parameter: nothing can be trusted.
        format!("{good}&redirect_uri={}", enc("https://evil.test/cb")),
    ];
    for url in attempts {
        let before = fl.f.state().await;
        let r = fl.browser(Method::GET, &url, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {r:?}");
        assert!(r.headers.get(header::LOCATION).is_none(), "{url}");
        assert!(set_cookie(&r).is_none(), "{url}: no session started");
        assert!(r.body.as_str().unwrap().contains("Sign-in error"));
        assert_eq!(fl.f.state().await, before, "{url}");
    }
    assert_eq!(fl.codes(&fl.public).await, 0);
}

#[tokio::test]
async fn bad_requests_redirect_with_error_state_and_iss() {
    let fl = flow().await;
    let base = format!(
        "/dev/oauth2/authorize?client_id={}&redirect_uri={}&state=st-9",
        fl.public,
        enc(CB)
    );
    let pkce = format!("&code_challenge={CHALLENGE}&code_challenge_method=S256");
    let cases = [
        // No PKCE, plain PKCE, a method missing (plain by default), a
        // malformed challenge.
        ("&response_type=code&scope=openid&nonce=n".to_string(), "invalid_request"),
        (
            format!("&response_type=code&scope=openid&nonce=n&code_challenge={VERIFIER}&code_challenge_method=plain"),
            "invalid_request",
        ),
        (
            format!("&response_type=code&scope=openid&nonce=n&code_challenge={CHALLENGE}"),
            "invalid_request",
        ),
        (
            "&response_type=code&scope=openid&nonce=n&code_challenge=abc&code_challenge_method=S256"
                .to_string(),
            "invalid_request",
        ),
        (format!("&response_type=token&scope=openid&nonce=n{pkce}"), "unsupported_response_type"),
        (format!("&response_type=code%20id_token&scope=openid&nonce=n{pkce}"), "unsupported_response_type"),
        (format!("&scope=openid&nonce=n{pkce}"), "invalid_request"),
        (format!("&response_type=code&scope=openid%20admin&nonce=n{pkce}"), "invalid_scope"),
        // nonce is required for a public client asking for an ID token.
        (format!("&response_type=code&scope=openid{pkce}"), "invalid_request"),
        (format!("&response_type=code&scope=openid&nonce=n&prompt=none%20login{pkce}"), "invalid_request"),
        (format!("&response_type=code&scope=openid&nonce=n&max_age=-1{pkce}"), "invalid_request"),
        (format!("&response_type=code&scope=openid&nonce=n&request=x{pkce}"), "request_not_supported"),
        (format!("&response_type=code&scope=openid&nonce=n&response_mode=fragment{pkce}"), "invalid_request"),
    ];
    for (q, error) in cases {
        let before = fl.f.state().await;
        let r = fl.browser(Method::GET, &format!("{base}{q}"), None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{q}: {r:?}");
        let loc = location(&r);
        assert!(loc.starts_with(&format!("{CB}?error=")), "{q}: {loc}");
        assert_eq!(query_param(&loc, "error").as_deref(), Some(error), "{q}");
        assert_eq!(query_param(&loc, "state").as_deref(), Some("st-9"), "{q}");
        assert_eq!(query_param(&loc, "iss").as_deref(), Some(ISSUER), "{q}");
        assert!(set_cookie(&r).is_none(), "{q}");
        assert_eq!(fl.f.state().await, before, "{q}");
    }
    // A confidential client may leave nonce out.
    let (id, _) = fl.confidential.clone();
    let r = fl
        .browser(
            Method::GET,
            &format!(
                "/dev/oauth2/authorize?client_id={id}&redirect_uri={}&response_type=code&scope=openid{pkce}",
                enc(CB)
            ),
            None,
        )
        .await;
    assert!(location(&r).starts_with(LOGIN), "{r:?}");
}

#[tokio::test]
async fn wrong_or_missing_pkce_verifier_issues_nothing_and_keeps_the_code() {
    let fl = flow().await;
    let (code, _) = fl.code(&fl.public, &["openid", "offline_access"]).await;
    for verifier in [
        // Another verifier, the challenge itself (plain), too short.
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
        CHALLENGE,
        "short",
    ] {
        let r = fl.exchange(&fl.public, &code, verifier).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{verifier}: {r:?}");
        assert!(r.body.get("access_token").is_none());
    }
    let r = fl
        .token(
            &format!(
                "grant_type=authorization_code&client_id={}&code={code}&redirect_uri={}",
                fl.public,
                enc(CB)
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["error_description"]
        .as_str()
        .unwrap()
        .contains("code_verifier"));
    let c =
        fl.f.authority
            .store
            .authorization_code(&keyward_issuer::tokens::hash_secret(&code))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(c.used_at, None, "nothing was issued");
    assert_eq!(c.access_jti, None);
    // The right verifier still works.
    let r = fl.exchange(&fl.public, &code, VERIFIER).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_what_it_issued() {
    let fl = flow().await;
    let (code, _) = fl
        .code(&fl.public, &["openid", "email", "offline_access"])
        .await;
    let r = fl.exchange(&fl.public, &code, VERIFIER).await;
    assert_eq!(r.status, StatusCode::OK);
    let access = r.body["access_token"].as_str().unwrap().to_string();
    let refresh = r.body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(fl.userinfo(&access).await.status, StatusCode::OK);
    let r = fl.exchange(&fl.public, &code, VERIFIER).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.body["error"], "invalid_grant");
    assert!(r.body.get("access_token").is_none());
    assert_eq!(fl.f.last_audit().await.action, "code.replay_detected");
    // The access token is on the revocation feed; the refresh family is revoked.
    assert_eq!(fl.userinfo(&access).await.status, StatusCode::UNAUTHORIZED);
    let r = fl
        .token(
            &format!(
                "grant_type=refresh_token&client_id={}&refresh_token={refresh}",
                fl.public
            ),
            None,
        )
        .await;
    assert_eq!(r.body["error"], "invalid_grant", "{r:?}");
}

#[tokio::test]
async fn a_code_for_another_client_or_redirect_uri_or_after_60s_is_refused() {
    let fl = flow().await;
    let (code, _) = fl.code(&fl.public, &["openid"]).await;
    // Another public client presents it.
    let r = fl.exchange(&fl.first_party, &code, VERIFIER).await;
    assert_eq!(r.body["error"], "invalid_grant", "{r:?}");
    // Another redirect_uri.
    let r = fl
        .token(
            &format!(
                "grant_type=authorization_code&client_id={}&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
                fl.public,
                enc("https://rp.test/other")
            ),
            None,
        )
        .await;
    assert_eq!(r.body["error"], "invalid_grant", "{r:?}");
    let hash = keyward_issuer::tokens::hash_secret(&code);
    let unused =
        fl.f.authority
            .store
            .authorization_code(&hash)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(unused.used_at, None);
    // 60 s later, it is expired.
    fl.advance(60);
    let r = fl.exchange(&fl.public, &code, VERIFIER).await;
    assert_eq!(r.body["error"], "invalid_grant", "{r:?}");
    let c =
        fl.f.authority
            .store
            .authorization_code(&hash)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(c.used_at, None, "nothing was issued");
}

#[tokio::test]
async fn challenges_are_single_use_and_expire() {
    let fl = flow().await;
    let (challenge, mut cookie) = fl.start(&fl.public, "", None).await;
    let to = fl
        .accept_login(&challenge, json!({"subject": "alice"}))
        .await;
    // A second accept, a reject after it, a read: 409.
    let path = format!("/admin/v1/envs/dev/login-requests/{challenge}");
    let before = fl.f.state().await;
    for (m, p, b) in [
        (
            Method::POST,
            format!("{path}/accept"),
            Some(json!({"subject": "mallory"})),
        ),
        (
            Method::POST,
            format!("{path}/reject"),
            Some(json!({"error": "access_denied"})),
        ),
        (Method::GET, path.clone(), None),
    ] {
        let r = fl.f.call(m, &p, b).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{p}: {r:?}");
        assert_eq!(r.body["error"], "already_decided");
    }
    assert_eq!(fl.f.state().await, before);
    // The verifier works once.
    let r = fl.follow(&to, &mut cookie).await;
    assert!(location(&r).starts_with(LOGIN), "{r:?}");
    let r = fl.follow(&to, &mut cookie).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.headers.get(header::LOCATION).is_none());

    // A challenge read after 10 minutes: 410, and it cannot be accepted.
    let (challenge, _) = fl.start(&fl.public, "", None).await;
    fl.advance(600);
    let before = fl.f.state().await;
    let r =
        fl.f.get(&format!("/admin/v1/envs/dev/login-requests/{challenge}"))
            .await;
    assert_eq!(r.status, StatusCode::GONE, "{r:?}");
    let r =
        fl.f.post(
            &format!("/admin/v1/envs/dev/login-requests/{challenge}/accept"),
            json!({"subject": "alice"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::GONE, "{r:?}");
    assert_eq!(fl.f.state().await, before);
    // An unknown challenge: 404.
    let r = fl.f.get("/admin/v1/envs/dev/login-requests/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A verifier brought back after its 5 minutes: refused.
    let (challenge, mut cookie) = fl.start(&fl.public, "", None).await;
    let to = fl
        .accept_login(&challenge, json!({"subject": "alice"}))
        .await;
    fl.advance(300);
    let r = fl.follow(&to, &mut cookie).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(fl.codes(&fl.public).await, 0);
}

#[tokio::test]
async fn a_verifier_from_another_browser_session_is_refused() {
    let fl = flow().await;
    let (challenge, mut victim) = fl.start(&fl.public, "", None).await;
    let (_, attacker) = fl.start(&fl.public, "", None).await;
    assert_ne!(victim, attacker);
    let to = fl
        .accept_login(&challenge, json!({"subject": "alice"}))
        .await;
    // CSRF: the attacker's browser (or none) brings the verifier.
    for cookie in [Some(attacker.as_str()), None, Some("forged")] {
        let r = fl.browser(Method::GET, &local(&to), cookie).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
        assert!(r.headers.get(header::LOCATION).is_none());
    }
    assert_eq!(fl.codes(&fl.public).await, 0);
    // The victim's browser still can: the refusals changed nothing.
    let r = fl.follow(&to, &mut victim).await;
    assert!(location(&r).starts_with(LOGIN), "{r:?}");
    // The same for a consent verifier.
    let consent = query_param(&location(&r), "consent_challenge").unwrap();
    let to = fl
        .accept_consent(&consent, json!({"grant_scope": ["openid"]}))
        .await;
    let r = fl.browser(Method::GET, &local(&to), Some(&attacker)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(fl.codes(&fl.public).await, 0);
    let r = fl.follow(&to, &mut victim).await;
    assert!(location(&r).starts_with(&format!("{CB}?code=")));
}

#[tokio::test]
async fn an_id_token_is_not_an_access_token() {
    let fl = flow().await;
    let (code, _) = fl.code(&fl.public, &["openid", "email"]).await;
    let r = fl.exchange(&fl.public, &code, VERIFIER).await;
    let id_token = r.body["id_token"].as_str().unwrap().to_string();
    // At userinfo: 401 invalid_token.
    let r = fl.userinfo(&id_token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert!(r.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    // At keyward's gate, with this issuer's keys: refused for its typ.
    let keys = fl.f.served_keys().await;
    let gate_policy = Validation {
        algorithms: vec![Algorithm::ES256],
        issuer: Some(ISSUER.into()),
        required_typ: Some("at+jwt".into()),
        ..Validation::default()
    };
    assert!(verify_jwt(&id_token, &keys, &gate_policy, fl.now()).is_err());

    // keyward's gate (keyward-verify), trusting this environment's JWKS
    // and both audiences: the access token passes, the ID token is 401.
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let served = fl
        .browser(Method::GET, "/dev/.well-known/jwks.json", None)
        .await;
    std::fs::write(&jwks, served.body.to_string()).unwrap();
    let mut policy = keyward_verify::IssuerPolicy::new(ISSUER);
    policy.source = keyward_verify::KeySource::File(jwks);
    policy.audiences = vec![ISSUER.into(), fl.public.clone()];
    let gate = keyward_verify::Gate::builder()
        .issuer(policy)
        .clock(fl.clock.clone())
        .build()
        .unwrap();
    let access = r_access(&fl).await;
    let id = gate.verify(&access).await.unwrap();
    assert_eq!(id.subject.as_deref(), Some("alice"));
    let e = gate.verify(&id_token).await.unwrap_err();
    assert_eq!((e.status(), e.reason()), (401, "typ"));
}

/// A fresh access token of the public client (through the whole flow).
async fn r_access(fl: &Flow) -> String {
    let (code, _) = fl.code(&fl.public, &["openid"]).await;
    let r = fl.exchange(&fl.public, &code, VERIFIER).await;
    r.body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn logout_refuses_unregistered_targets_and_foreign_hints() {
    let fl = flow().await;
    let (code, cookie) = fl.code(&fl.public, &["openid"]).await;
    let r = fl.exchange(&fl.public, &code, VERIFIER).await;
    let id_token = r.body["id_token"].as_str().unwrap().to_string();
    for q in [
        format!("post_logout_redirect_uri={}", enc("https://evil.test/bye")),
        // Without a hint or client_id the target cannot be checked.
        format!("post_logout_redirect_uri={}", enc(BYE)),
        format!(
            "id_token_hint={id_token}&post_logout_redirect_uri={}",
            enc("https://rp.test/bye/x")
        ),
        format!(
            "id_token_hint=not-a-token&post_logout_redirect_uri={}",
            enc(BYE)
        ),
        format!(
            "id_token_hint={id_token}&client_id={}&post_logout_redirect_uri={}",
            fl.first_party,
            enc(BYE)
        ),
    ] {
        let r = fl
            .browser(
                Method::GET,
                &format!("/dev/oauth2/logout?{q}"),
                Some(&cookie),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {r:?}");
        assert!(r.headers.get(header::LOCATION).is_none(), "{q}");
    }
    // Nothing ended: prompt=none still finds the session... (it was not
    // remembered, so login_required) — check the session row instead.
    let hash = keyward_issuer::tokens::hash_secret(&cookie);
    let s =
        fl.f.authority
            .store
            .browser_session(&hash)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(s.ended_at, None);
    let ended = || async {
        fl.f.authority
            .store
            .browser_session(&hash)
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_some()
    };
    // A link with no hint, or with someone else's ID token (another
    // browser's session): nothing ends, the user is asked, the cookie stays.
    let (other_code, _) = fl.code(&fl.public, &["openid"]).await;
    let r = fl.exchange(&fl.public, &other_code, VERIFIER).await;
    let foreign = r.body["id_token"].as_str().unwrap().to_string();
    let mut confirm = None;
    for q in [
        String::new(),
        format!(
            "id_token_hint={foreign}&post_logout_redirect_uri={}&state=s1",
            enc(BYE)
        ),
    ] {
        let r = fl
            .browser(
                Method::GET,
                &format!("/dev/oauth2/logout?{q}"),
                Some(&cookie),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {r:?}");
        let page = r.body.as_str().unwrap().to_string();
        assert!(page.contains("Sign out?"), "{page}");
        assert!(set_cookie(&r).is_none(), "{q}: the cookie stays");
        assert!(!ended().await, "{q}");
        let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        if q.is_empty() {
            assert!(csp.contains("form-action 'self';"), "{csp}");
        } else {
            assert!(csp.contains("form-action 'self' https://rp.test;"), "{csp}");
        }
        confirm = Some(page);
    }
    // The form posts back what it was given and a token only this
    // browser's cookie gives; a forged or absent token asks again.
    let page = confirm.unwrap();
    let token = page
        .split("name=\"logout_confirm\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 43, "{page}");
    let post = |form: String, cookie: Option<String>| {
        let fl = &fl;
        async move {
            let mut b = Request::builder()
                .method(Method::POST)
                .uri("/dev/oauth2/logout")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            if let Some(c) = cookie {
                b = b.header(header::COOKIE, format!("keyward_session={c}"));
            }
            fl.f.send(b.body(Body::from(form)).unwrap()).await
        }
    };
    let target = format!(
        "id_token_hint={foreign}&post_logout_redirect_uri={}&state=s1",
        enc(BYE)
    );
    for bad in [String::new(), "A".repeat(43)] {
        let r = post(
            format!("{target}&logout_confirm={bad}"),
            Some(cookie.clone()),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert!(!ended().await);
    }
    // Another browser (no cookie, or its own) cannot use this token.
    let r = post(format!("{target}&logout_confirm={token}"), None).await;
    assert!(!ended().await, "{r:?}");
    // The user confirms: the session ends, the cookie goes, and the browser
    // goes to the registered target with its state.
    let r = post(
        format!("{target}&logout_confirm={token}"),
        Some(cookie.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(location(&r), format!("{BYE}?state=s1"));
    assert_eq!(set_cookie(&r).as_deref(), Some(""));
    assert!(ended().await);
}

#[tokio::test]
async fn discovery_lists_what_is_served() {
    let fl = flow().await;
    let r = fl
        .browser(Method::GET, "/dev/.well-known/openid-configuration", None)
        .await;
    let d = &r.body;
    assert_eq!(
        d["authorization_endpoint"],
        format!("{ISSUER}/oauth2/authorize")
    );
    assert_eq!(d["userinfo_endpoint"], format!("{ISSUER}/oauth2/userinfo"));
    assert_eq!(d["end_session_endpoint"], format!("{ISSUER}/oauth2/logout"));
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["response_modes_supported"], json!(["query", "form_post"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert!(d["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("authorization_code")));
    assert!(d["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("none")));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["ES256"]));
    assert!(d["scopes_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("openid")));
    // Every advertised endpoint is served (not 404).
    for ep in [
        "authorization_endpoint",
        "userinfo_endpoint",
        "end_session_endpoint",
        "token_endpoint",
    ] {
        let path = local(d[ep].as_str().unwrap());
        let r = fl.browser(Method::GET, &path, None).await;
        assert_ne!(r.status, StatusCode::NOT_FOUND, "{ep}");
    }
}

#[tokio::test]
async fn clients_and_login_urls_are_validated() {
    let fl = flow().await;
    let before = fl.f.state().await;
    for uri in [
        "http://rp.test/cb",
        "https://rp.test/cb#frag",
        "https://*.rp.test/cb",
        "https://user@rp.test/cb",
        "rp.test/cb",
        "javascript:alert(1)",
        "https://rp.test/c b",
    ] {
        let r = fl
            .f
            .post(
                "/admin/v1/envs/dev/clients",
                json!({"name": "x", "auth": "none", "grant_types": ["authorization_code"], "redirect_uris": [uri]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {r:?}");
        let r =
            fl.f.call(
                Method::PATCH,
                "/admin/v1/envs/dev",
                Some(json!({"login_url": uri})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {r:?}");
    }
    // Loopback http is fine for development; a public client may not use
    // client_credentials; the code grant needs a redirect URI.
    for (body, ok) in [
        (
            json!({"name": "x", "auth": "none", "grant_types": ["authorization_code"], "redirect_uris": ["http://127.0.0.1:9000/cb"]}),
            true,
        ),
        (
            json!({"name": "x", "auth": "none", "grant_types": ["client_credentials"]}),
            false,
        ),
        (
            json!({"name": "x", "auth": "none", "grant_types": ["authorization_code", "client_credentials"], "redirect_uris": [CB]}),
            false,
        ),
        (
            json!({"name": "x", "grant_types": ["authorization_code"]}),
            false,
        ),
    ] {
        let r = fl.f.post("/admin/v1/envs/dev/clients", body.clone()).await;
        let want = if ok {
            StatusCode::CREATED
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(r.status, want, "{body}: {r:?}");
        if !ok {
            continue;
        }
        assert_eq!(r.body["auth"], "none");
        assert!(r.body["client_secret"].is_null());
    }
    // The refusals changed nothing (one client was created on purpose).
    let after = fl.f.state().await;
    assert_eq!(after.envs, before.envs);
    assert_eq!(after.clients.len(), before.clients.len() + 1);
}

/// A DPoP proof (RFC 9449) by `key` for `htm htu` at `iat`, with `ath`
/// for an access token.
fn dpop_proof(
    key: &keyward_jose::PrivateKey,
    htm: &str,
    htu: &str,
    iat: i64,
    access: Option<&str>,
) -> String {
    dpop_proof_with_nonce(key, htm, htu, iat, access, None)
}

fn dpop_proof_with_nonce(
    key: &keyward_jose::PrivateKey,
    htm: &str,
    htu: &str,
    iat: i64,
    access: Option<&str>,
    nonce: Option<&str>,
) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = json!({
        "typ": "dpop+jwt", "alg": "ES256",
        "jwk": key.public_key().to_jwk(None).to_value(),
    });
    let mut claims = json!({
        "jti": keyward_jose::crypto::random_text::<12>(), "htm": htm, "htu": htu, "iat": iat
    });
    if let Some(t) = access {
        claims["ath"] = json!(b64(&sha256(t.as_bytes())));
    }
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

#[tokio::test]
async fn dpop_binds_the_code_exchange_its_refresh_family_and_userinfo() {
    let fl = flow().await;
    let key = keyward_jose::PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let (code, _) = fl
        .code(&fl.public, &["openid", "email", "offline_access"])
        .await;
    let form = format!(
        "grant_type=authorization_code&client_id={}&code={code}&redirect_uri={}&code_verifier={VERIFIER}",
        fl.public,
        enc(CB)
    );
    let token_url = format!("{ISSUER}/oauth2/token");
    let req = Request::builder()
        .method(Method::POST)
        .uri("/dev/oauth2/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("DPoP", dpop_proof(&key, "POST", &token_url, fl.now(), None))
        .body(Body::from(form))
        .unwrap();
    let r = fl.f.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["token_type"], "DPoP");
    let access = r.body["access_token"].as_str().unwrap().to_string();
    let refresh = r.body["refresh_token"].as_str().unwrap().to_string();
    // userinfo: not as a bearer token; with a proof of the key, yes.
    assert_eq!(fl.userinfo(&access).await.status, StatusCode::UNAUTHORIZED);
    let userinfo_url = format!("{ISSUER}/oauth2/userinfo");
    let call = |proof: String| {
        Request::builder()
            .uri("/dev/oauth2/userinfo")
            .header(header::AUTHORIZATION, format!("DPoP {access}"))
            .header("DPoP", proof)
            .body(Body::empty())
            .unwrap()
    };
    let other = keyward_jose::PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let r =
        fl.f.send(call(dpop_proof(
            &other,
            "GET",
            &userinfo_url,
            fl.now(),
            Some(&access),
        )))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    let r =
        fl.f.send(call(dpop_proof(
            &key,
            "GET",
            &userinfo_url,
            fl.now(),
            Some(&access),
        )))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["email"], "alice@example.com");
    // An environment requiring DPoP nonces holds userinfo to them too.
    let r =
        fl.f.call(
            Method::PATCH,
            "/admin/v1/envs/dev",
            Some(json!({"dpop_nonce": "required"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r =
        fl.f.send(call(dpop_proof(
            &key,
            "GET",
            &userinfo_url,
            fl.now(),
            Some(&access),
        )))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r:?}");
    assert_eq!(r.body["error"], "use_dpop_nonce", "{r:?}");
    let nonce = r.headers["dpop-nonce"].to_str().unwrap().to_owned();
    let r =
        fl.f.send(call(dpop_proof_with_nonce(
            &key,
            "GET",
            &userinfo_url,
            fl.now(),
            Some(&access),
            Some(&nonce),
        )))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // The public client's refresh family is bound to the key.
    let r = fl
        .token(
            &format!(
                "grant_type=refresh_token&client_id={}&refresh_token={refresh}",
                fl.public
            ),
            None,
        )
        .await;
    assert_eq!(r.body["error"], "invalid_dpop_proof", "{r:?}");
}
