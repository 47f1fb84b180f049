//! The device authorization grant (RFC 8628) through the application
//! router: the device endpoint, the code entry and confirmation page, the
//! login and consent it starts, the callback, and the polls (pending,
//! slow_down, tokens once, access_denied, expired_token); wrong codes
//! limited, CSRF refused, another client's device code refused, bad
//! requests storing nothing.

#[path = "support/admin_fixture.rs"]
mod admin_fixture;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use admin_fixture::*;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine;
use keyward_issuer::device::{
    CODE_TRIES_PER_MINUTE, DEVICE_CODE_GRANT, STARTS_PER_MINUTE, USER_CODE_ALPHABET,
};
use keyward_issuer::Settings;
use keyward_jose::crypto::sha256;
use keyward_store::DeviceStatus;
use serde_json::{json, Value};

const LOGIN: &str = "https://login.test/login";
/// The CSRF cookie of an https issuer's device page.
const CSRF: &str = "__Host-keyward_device_csrf";

struct Dev {
    f: Fixture,
    clock: Arc<TestClock>,
    /// A public client (a TV) with the device grant and refresh tokens.
    tv: String,
    /// A confidential client with the device grant.
    box_: (String, String),
    /// A client without it.
    web: (String, String),
}

fn text(a: &Answer) -> &str {
    a.body.as_str().unwrap_or("")
}

async fn setup() -> Dev {
    setup_with(Settings::default()).await
}

async fn setup_with(settings: Settings) -> Dev {
    let (f, clock) = login_fixture_with(LOGIN, settings).await;
    let scopes = json!(["openid", "profile", "offline_access"]);
    let (tv, _) = f
        .client(
            json!({"name": "Living-room TV", "auth": "none", "scopes": scopes,
                       "grant_types": [DEVICE_CODE_GRANT, "refresh_token"]}),
        )
        .await;
    let box_ = f
        .client(json!({"name": "set-top box", "scopes": scopes,
                       "grant_types": [DEVICE_CODE_GRANT]}))
        .await;
    let web = f
        .client(json!({"name": "web", "scopes": scopes,
                       "grant_types": ["client_credentials"]}))
        .await;
    Dev {
        f,
        clock,
        tv,
        box_,
        web,
    }
}

impl Dev {
    fn at(&self, secs: i64) {
        self.clock.0.store(NOW + secs, Ordering::SeqCst);
    }

    async fn form(
        &self,
        path: &str,
        form: &str,
        basic: Option<&(String, String)>,
        cookies: &[(&str, &str)],
    ) -> Answer {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
            b = b.header(header::AUTHORIZATION, format!("Basic {v}"));
        }
        if !cookies.is_empty() {
            let c: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            b = b.header(header::COOKIE, c.join("; "));
        }
        self.f
            .send(b.body(Body::from(form.to_string())).unwrap())
            .await
    }

    /// A public client's device request on a connection from `peer`,
    /// with `X-Forwarded-For: forwarded`.
    async fn start_from(&self, peer: &str, forwarded: &str) -> Answer {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/dev/oauth2/device_authorization")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("x-forwarded-for", forwarded)
            .body(Body::from(format!("client_id={}", self.tv)))
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        self.f.send(req).await
    }

    async fn browser(&self, path: &str, cookies: &[(&str, &str)]) -> Answer {
        let mut b = Request::builder().method(Method::GET).uri(path);
        if !cookies.is_empty() {
            let c: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            b = b.header(header::COOKIE, c.join("; "));
        }
        self.f.send(b.body(Body::empty()).unwrap()).await
    }

    /// The TV asks for a device code.
    async fn start(&self, scope: &str) -> Value {
        let r = self
            .form(
                "/dev/oauth2/device_authorization",
                &format!("client_id={}&scope={}", self.tv, enc(scope)),
                None,
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.body
    }

    /// A device request's `device_code` and `user_code` (see [`Dev::start`]).
    async fn codes(&self, scope: &str) -> (String, String) {
        let g = self.start(scope).await;
        let code = |n: &str| g[n].as_str().unwrap().to_owned();
        (code("device_code"), code("user_code"))
    }

    async fn poll(&self, device_code: &str) -> Answer {
        self.form(
            "/dev/oauth2/token",
            &format!(
                "grant_type={}&client_id={}&device_code={}",
                enc(DEVICE_CODE_GRANT),
                self.tv,
                enc(device_code)
            ),
            None,
            &[],
        )
        .await
    }

    async fn count(&self) -> i64 {
        self.f
            .authority
            .store
            .count_device_authorizations("dev")
            .await
            .unwrap()
    }

    async fn status(&self, device_code: &str) -> DeviceStatus {
        self.f
            .authority
            .store
            .device_authorization(&sha256(device_code.as_bytes()))
            .await
            .unwrap()
            .unwrap()
            .status
    }

    /// A browser opens the device page: the CSRF cookie it gets.
    async fn open_page(&self) -> String {
        let r = self.browser("/dev/device", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert!(text(&r).contains("Enter the code your device shows"));
        cookie(&r, CSRF).expect("a CSRF cookie")
    }

    /// The browser confirms `user_code`: the answer.
    async fn confirm(&self, user_code: &str, csrf: &str, session: Option<&str>) -> Answer {
        let mut cookies = vec![(CSRF, csrf)];
        if let Some(s) = session {
            cookies.push(("keyward_session", s));
        }
        self.form(
            "/dev/device",
            &format!("user_code={}&csrf={csrf}&confirm=yes", enc(user_code)),
            None,
            &cookies,
        )
        .await
    }

    /// From the confirmation to the callback: the login app accepts (or
    /// rejects) the login, consent is accepted; the callback's path.
    async fn log_in(&self, user_code: &str, accept: bool) -> String {
        let csrf = self.open_page().await;
        let r = self.confirm(user_code, &csrf, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
        let loc = location(&r);
        assert!(
            loc.starts_with(&format!("{LOGIN}?login_challenge=")),
            "{loc}"
        );
        let session = cookie(&r, "keyward_session").unwrap();
        let challenge = query_param(&loc, "login_challenge").unwrap();
        let lr = self
            .f
            .get(&format!("/admin/v1/envs/dev/login-requests/{challenge}"))
            .await;
        assert_eq!(lr.body["device"], true, "{lr:?}");
        assert_eq!(lr.body["client_id"], self.tv.as_str());
        let r = if accept {
            self.f
                .post(
                    &format!("/admin/v1/envs/dev/login-requests/{challenge}/accept"),
                    json!({"subject": "alice", "claims": {"name": "Alice"}}),
                )
                .await
        } else {
            self.f
                .post(
                    &format!("/admin/v1/envs/dev/login-requests/{challenge}/reject"),
                    json!({"error": "access_denied", "error_description": "not today"}),
                )
                .await
        };
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let to = r.body["redirect_to"].as_str().unwrap().to_owned();
        let r = self
            .browser(&local(&to), &[("keyward_session", &session)])
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
        let mut loc = location(&r);
        if accept {
            let session = cookie(&r, "keyward_session").unwrap();
            let consent = query_param(&loc, "consent_challenge").expect(&loc);
            let r = self
                .f
                .post(
                    &format!("/admin/v1/envs/dev/consent-requests/{consent}/accept"),
                    json!({"grant_scope": ["openid", "profile", "offline_access"]}),
                )
                .await;
            let to = r.body["redirect_to"].as_str().unwrap().to_owned();
            let r = self
                .browser(&local(&to), &[("keyward_session", &session)])
                .await;
            assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
            loc = location(&r);
        }
        let cb = format!("{ISSUER}/device/callback?");
        assert!(loc.starts_with(&cb), "{loc}");
        // The code never goes to the browser: only the state does.
        assert_eq!(query_param(&loc, "code"), None, "{loc}");
        assert!(query_param(&loc, "state").is_some(), "{loc}");
        local(&loc)
    }
}

#[tokio::test]
async fn a_device_gets_its_tokens_once_after_its_user_logs_in() {
    let d = setup().await;
    let g = d.start("openid profile offline_access").await;
    let device_code = g["device_code"].as_str().unwrap().to_owned();
    let user_code = g["user_code"].as_str().unwrap().to_owned();
    assert!(device_code.starts_with("kwd_"), "{g}");
    assert_eq!(user_code.len(), 9, "{g}");
    assert_eq!(&user_code[4..5], "-");
    assert!(user_code
        .bytes()
        .filter(|b| *b != b'-')
        .all(|b| USER_CODE_ALPHABET.contains(&b)));
    assert_eq!(g["verification_uri"], format!("{ISSUER}/device"));
    assert_eq!(
        g["verification_uri_complete"],
        format!("{ISSUER}/device?user_code={user_code}")
    );
    assert_eq!(g["expires_in"], 600);
    assert_eq!(g["interval"], 5);

    // Waiting for the user; polling too often slows the device down.
    let r = d.poll(&device_code).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "authorization_pending");
    d.at(2);
    assert_error(
        &d.poll(&device_code).await,
        StatusCode::BAD_REQUEST,
        "slow_down",
    );
    d.at(10);
    assert_error(
        &d.poll(&device_code).await,
        StatusCode::BAD_REQUEST,
        "authorization_pending",
    );

    // The link with the code shows what the device asks for; typed in
    // lower case without the dash it is the same code.
    let r = d
        .browser(
            &format!(
                "/dev/device?user_code={}",
                user_code.replace('-', "").to_lowercase()
            ),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let page = text(&r);
    assert!(page.contains("Living-room TV"), "{page}");
    assert!(page.contains(&user_code), "{page}");
    assert!(page.contains("offline_access"), "{page}");
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("form-action 'self' https://login.test"),
        "{csp}"
    );
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let line = set_cookie_line(&r, CSRF).unwrap();
    assert!(
        line.contains("HttpOnly")
            && line.contains("SameSite=Strict")
            && line.contains("Secure")
            && line.contains("Path=/;"),
        "{line}"
    );

    let cb = d.log_in(&user_code, true).await;
    assert_eq!(d.status(&device_code).await, DeviceStatus::Approved);
    let r = d.browser(&cb, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(text(&r).contains("Device connected"));
    assert_eq!(d.status(&device_code).await, DeviceStatus::Approved);

    d.at(20);
    let r = d.poll(&device_code).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["scope"], "openid profile offline_access");
    let refresh = r.body["refresh_token"].as_str().unwrap().to_owned();
    let id_token = r.body["id_token"].as_str().unwrap();
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["sub"], "alice");
    assert_eq!(payload["aud"], json!([d.tv]));
    assert_eq!(payload["iss"], ISSUER);
    // Userinfo has what the login app gave.
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    let r =
        d.f.send(
            Request::builder()
                .uri("/dev/oauth2/userinfo")
                .header(header::AUTHORIZATION, format!("Bearer {access}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["name"], "Alice");

    // Once: a second poll is refused, and revokes nothing.
    d.at(30);
    let r = d.poll(&device_code).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
    let r = d
        .form(
            "/dev/oauth2/token",
            &format!(
                "grant_type=refresh_token&client_id={}&refresh_token={refresh}",
                d.tv
            ),
            None,
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the refresh token still works: {r:?}"
    );
    // The callback cannot be replayed.
    let r = d.browser("/dev/device/callback?code=x&state=y", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
}

#[tokio::test]
async fn a_refused_login_denies_the_device_and_unused_codes_expire() {
    let d = setup().await;
    let (device_code, user_code) = d.codes("openid").await;
    let cb = d.log_in(&user_code, false).await;
    assert_eq!(query_param(&cb, "error").as_deref(), Some("access_denied"));
    // Whatever the error says, only an error code is kept.
    let cb = cb.replace("error=access_denied", "error=%3Cb%3Eno%3C%2Fb%3E");
    let r = d.browser(&cb, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(text(&r).contains("Device not connected"));
    let r = d.poll(&device_code).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "access_denied");
    let description = r.body["error_description"].as_str().unwrap();
    assert!(description.contains("(access_denied)"), "{description}");
    assert_eq!(d.status(&device_code).await, DeviceStatus::Denied);
    // The callback tells nothing twice.
    let r = d.browser(&cb, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");

    // Nobody enters this one: at 600 s it has expired, for the device and
    // for a user who types it late.
    let (device_code, user_code) = d.codes("openid").await;
    d.at(599);
    assert_error(
        &d.poll(&device_code).await,
        StatusCode::BAD_REQUEST,
        "authorization_pending",
    );
    d.at(600);
    assert_error(
        &d.poll(&device_code).await,
        StatusCode::BAD_REQUEST,
        "expired_token",
    );
    let csrf = d.open_page().await;
    let r = d.confirm(&user_code, &csrf, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.headers.get(header::LOCATION).is_none());
    assert!(cookie(&r, "keyward_session").is_none());
    assert_eq!(d.status(&device_code).await, DeviceStatus::Pending);
}

#[tokio::test]
async fn confirmations_need_the_pages_csrf_token_and_a_code_is_confirmed_once() {
    let d = setup().await;
    let (device_code, user_code) = d.codes("openid").await;
    let csrf = d.open_page().await;
    // Another site's form: no cookie (SameSite=Strict), or a token that is
    // not the cookie's. Refused; the code stays pending.
    for cookies in [vec![], vec![(CSRF, "A".repeat(43))]] {
        let cookies: Vec<(&str, &str)> = cookies.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = d
            .form(
                "/dev/device",
                &format!("user_code={}&csrf={csrf}&confirm=yes", enc(&user_code)),
                None,
                &cookies,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
        assert!(r.headers.get(header::LOCATION).is_none());
        assert_eq!(d.status(&device_code).await, DeviceStatus::Pending);
    }
    // The rightful page: the login starts; the code is then used.
    let r = d.confirm(&user_code, &csrf, None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{r:?}");
    assert_eq!(d.status(&device_code).await, DeviceStatus::Entered);
    let r = d.confirm(&user_code, &csrf, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.headers.get(header::LOCATION).is_none());
    let r = d
        .browser(&format!("/dev/device?user_code={}", enc(&user_code)), &[])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    // A callback with no state, or one that names no device: an error page.
    for q in ["code=abc", "code=abc&state=forged", "error=access_denied"] {
        let r = d.browser(&format!("/dev/device/callback?{q}"), &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {r:?}");
    }
    assert_eq!(d.status(&device_code).await, DeviceStatus::Entered);
}

#[tokio::test]
async fn wrong_user_codes_are_limited() {
    let d = setup().await;
    let (_, user_code) = d.codes("openid").await;
    for wrong in ["BCDF-GHJ", "AEIO-UAEI", "<script>", &"B".repeat(80)] {
        let r = d
            .browser(&format!("/dev/device?user_code={}", enc(wrong)), &[])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{wrong}: {r:?}");
        assert!(text(&r).contains("not valid"), "{wrong}");
        assert!(!text(&r).contains("<script>"), "escaped");
    }
    for _ in 4..CODE_TRIES_PER_MINUTE {
        let r = d.browser("/dev/device?user_code=BBBB-BBBB", &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    }
    // Over the limit: even the right code waits for the next minute.
    let right = format!("/dev/device?user_code={}", enc(&user_code));
    let r = d.browser(&right, &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{r:?}");
    d.at(60);
    let r = d.browser(&right, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}

#[tokio::test]
async fn bad_device_requests_store_nothing_and_other_clients_cannot_poll() {
    let d = setup().await;
    let refused = |form: String, basic: Option<(String, String)>, status, code: &'static str| {
        let d = &d;
        async move {
            let before = d.count().await;
            let r = d
                .form(
                    "/dev/oauth2/device_authorization",
                    &form,
                    basic.as_ref(),
                    &[],
                )
                .await;
            assert_eq!(r.status, status, "{form}: {r:?}");
            assert_eq!(r.body["error"], code, "{form}: {r:?}");
            assert!(r.body.get("device_code").is_none());
            assert_eq!(d.count().await, before, "{form}");
        }
    };
    // A confidential client without its secret, or a wrong one.
    refused(
        format!("client_id={}", d.box_.0),
        None,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    refused(
        String::new(),
        Some((d.box_.0.clone(), "kws_wrong".into())),
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    // An unknown client; a client without the grant; a scope not its own.
    refused(
        "client_id=nobody".into(),
        None,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    refused(
        String::new(),
        Some(d.web.clone()),
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
    )
    .await;
    refused(
        format!("client_id={}&scope=openid%20admin", d.tv),
        None,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
    )
    .await;
    // The confidential client with its secret: fine.
    let r = d
        .form(
            "/dev/oauth2/device_authorization",
            "scope=openid",
            Some(&d.box_),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let boxed = r.body["device_code"].as_str().unwrap().to_owned();

    // The box's device code polled by the TV: unknown to it, and the
    // box's polling interval is untouched.
    let r = d.poll(&boxed).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
    let form = format!(
        "grant_type={}&device_code={}",
        enc(DEVICE_CODE_GRANT),
        enc(&boxed)
    );
    let r = d.form("/dev/oauth2/token", &form, Some(&d.box_), &[]).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "authorization_pending");
    // Unknown or missing device codes; a client without the grant.
    assert_error(
        &d.poll("kwd_nope").await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
    let r = d
        .form(
            "/dev/oauth2/token",
            &format!("grant_type={}&client_id={}", enc(DEVICE_CODE_GRANT), d.tv),
            None,
            &[],
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = d.form("/dev/oauth2/token", &form, Some(&d.web), &[]).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "unauthorized_client");
}

#[tokio::test]
async fn discovery_and_registration_know_the_device_grant() {
    let d = setup().await;
    let r = d
        .browser("/dev/.well-known/openid-configuration", &[])
        .await;
    assert_eq!(
        r.body["device_authorization_endpoint"],
        format!("{ISSUER}/oauth2/device_authorization")
    );
    assert!(r.body["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!(DEVICE_CODE_GRANT)));
    // A public client is for the code or device grant only.
    let r =
        d.f.post(
            "/admin/v1/envs/dev/clients",
            json!({"name": "bad", "auth": "none", "grant_types": ["client_credentials"]}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_counted() {
    let d = setup_with(Settings {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..Settings::default()
    })
    .await;
    // One user behind the proxy uses up its minute...
    for _ in 0..STARTS_PER_MINUTE {
        let r = d.start_from("127.0.0.1:5000", "192.0.2.1").await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    let r = d.start_from("127.0.0.1:5000", "192.0.2.1").await;
    assert_error(
        &r,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    );
    // ...another user behind the same proxy still gets codes, and a
    // client's own entries left of the proxy's are not believed.
    let r = d.start_from("127.0.0.2:5001", "192.0.2.1, 192.0.2.2").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // A client reaching keyward directly cannot pick its address.
    for i in 0..STARTS_PER_MINUTE {
        let r = d
            .start_from("198.51.100.1:6000", &format!("192.0.2.{}", 10 + i))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    let r = d.start_from("198.51.100.1:6000", "192.0.2.99").await;
    assert_error(
        &r,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    );
    assert_eq!(d.count().await, 2 * i64::from(STARTS_PER_MINUTE) + 1);
}

#[tokio::test]
async fn the_device_endpoint_is_limited_per_address() {
    let d = setup().await;
    for _ in 0..STARTS_PER_MINUTE {
        d.start("openid").await;
    }
    let r = d
        .form(
            "/dev/oauth2/device_authorization",
            &format!("client_id={}", d.tv),
            None,
            &[],
        )
        .await;
    assert_error(
        &r,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    );
    assert!(r.headers.get(header::RETRY_AFTER).is_some(), "{r:?}");
    assert_eq!(d.count().await, i64::from(STARTS_PER_MINUTE));
    d.at(60);
    d.start("openid").await;
}
