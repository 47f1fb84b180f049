//! DEVELOPMENT ONLY: a login and consent page served by keyward itself, so
//! that `keyward up` shows the whole browser flow without a login app.
//!
//! Any username is accepted, without a password. Only served when the
//! server is started with it (`keyward up`, or `serve` with the explicit
//! `dev_login = true` / `KEYWARD_DEV_LOGIN=true`); every page says so in a
//! banner. It decides challenges through the same domain functions as the
//! admin API's login routes ([`Authority::accept_login`] and friends), so
//! what it does is what a login app does; the difference is only who is
//! asked (nobody).
//!
//! `GET|POST /dev/login/{env}?login_challenge=C`,
//! `GET|POST /dev/consent/{env}?consent_challenge=K`, and
//! `GET /dev/callback`, the redirect URI of `up`'s demo public client: it
//! shows the code it received and the `curl` that redeems it.
//!
//! Cross-site forms: a POST whose `Origin` is another origin is refused.
//! The challenge in the form is unguessable, and the `redirect_to` an accept
//! returns works only in the browser session that started the flow (its
//! `keyward_session` cookie), so a forged accept signs nobody in elsewhere.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keyward_store::RequestKind;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::authority::{Authority, EnvState};
use crate::http::AppState;
use crate::login::{AcceptConsent, AcceptLogin, ChallengeError, Reject};

/// Who the audit log names for decisions taken here.
const ACTOR: &str = "dev-login (DEVELOPMENT ONLY)";
/// No `form-action`: browsers apply it to every redirect after a form is
/// posted, and an accept redirects to the authorize endpoint, then to the
/// client's redirect URI on another origin.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

/// The login and consent URLs of environment `env` on a server whose
/// public origin is `origin` (`http://127.0.0.1:8080`).
pub fn urls(origin: &str, env: &str) -> (String, String) {
    let origin = origin.trim_end_matches('/');
    (
        format!("{origin}/dev/login/{env}"),
        format!("{origin}/dev/consent/{env}"),
    )
}

/// The redirect URI of `up`'s demo client on a server whose public origin is `origin`.
pub fn callback_url(origin: &str) -> String {
    format!("{}/dev/callback", origin.trim_end_matches('/'))
}

/// `keyward up`'s demo public client, so that the callback page can show a
/// complete `curl` (its PKCE verifier is a demo value `up` printed too).
#[derive(Clone, Debug)]
pub struct Demo {
    pub issuer: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_verifier: String,
}

#[derive(Clone)]
struct Dev {
    authority: Arc<Authority>,
    demo: Option<Arc<Demo>>,
}

/// The pages' routes, to merge into the application router.
pub fn router(state: &AppState, demo: Option<Demo>) -> Router {
    Router::new()
        .route("/dev/login/{env}", get(login_page).post(login_submit))
        .route("/dev/consent/{env}", get(consent_page).post(consent_submit))
        .route("/dev/callback", get(callback_page))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(Dev {
            authority: state.authority.clone(),
            demo: demo.map(Arc::new),
        })
}

/// The demo client's redirect URI: the code, and how to redeem it.
async fn callback_page(
    State(d): State<Dev>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Some(err) = q.get("error") {
        return page(
            StatusCode::OK,
            "The application got an error",
            html! {
                p.error #error { code { (err) } " " (q.get("error_description").map(String::as_str).unwrap_or("")) }
            },
        );
    }
    let Some(code) = q.get("code") else {
        return page(
            StatusCode::BAD_REQUEST,
            "No code",
            html! { p.error { "This page is where keyward sends the browser back with a code." } },
        );
    };
    let curl = match &d.demo {
        Some(demo) => format!(
            "curl -s -d grant_type=authorization_code -d client_id={} --data-urlencode redirect_uri={} -d code_verifier={} -d code={} {}/oauth2/token",
            demo.client_id, demo.redirect_uri, demo.code_verifier, code, demo.issuer
        ),
        None => format!(
            "curl -s -d grant_type=authorization_code -d client_id=CLIENT_ID --data-urlencode redirect_uri=REDIRECT_URI -d code_verifier=CODE_VERIFIER -d code={code} ISSUER/oauth2/token"
        ),
    };
    page(
        StatusCode::OK,
        "Signed in: here is the code",
        html! {
            p { "keyward sent the browser back to the application's redirect URI with:" }
            p { "code: " code #code { (code) } }
            @if let Some(s) = q.get("state") { p { "state: " code #state { (s) } } }
            @if let Some(i) = q.get("iss") { p { "iss: " code #iss { (i) } } }
            p { "Redeem it within 60 seconds (once) for an ID token, an access token and a refresh token:" }
            pre #curl { (curl) }
        },
    )
}

#[derive(Deserialize)]
struct LoginQuery {
    login_challenge: Option<String>,
}

#[derive(Deserialize)]
struct ConsentQuery {
    consent_challenge: Option<String>,
}

/// Environment `env`, when it sends its browsers to this server's
/// development `page` ("login" or "consent"; consent falls back to the
/// login URL as the authorize endpoint does). Only then may the page decide
/// its challenges: an environment with a real login app is never decided
/// here, even by a user who brings its challenge along.
async fn dev_env(a: &Authority, env: &str, page_kind: &str) -> Result<Arc<EnvState>, Response> {
    let Some(e) = a.snapshot().env(env).cloned() else {
        return Err(no_env(env));
    };
    let settings = a.store.login_settings(env).await.unwrap_or_default();
    let url = match page_kind {
        "login" => settings.login_url,
        _ => settings.consent_url.or(settings.login_url),
    };
    let path = url.as_deref().and_then(url_path).unwrap_or_default();
    if path != format!("/dev/{page_kind}/{env}") {
        return Err(page(
            StatusCode::NOT_FOUND,
            "Not a development environment",
            html! { p.error { "Environment " code { (env) } " does not use the development login page." } },
        ));
    }
    Ok(e)
}

/// The path of an absolute URL (`https://host:port/path?query` -> `/path`).
fn url_path(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let path = &rest[rest.find('/')?..];
    Some(path.split(['?', '#']).next().unwrap_or(path))
}

fn no_env(env: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        html! { p.error { "No environment " code { (env) } "." } },
    )
}

fn challenge_failed(e: ChallengeError) -> Response {
    let status = match &e {
        ChallengeError::NotFound(_) => StatusCode::NOT_FOUND,
        ChallengeError::AlreadyDecided(_) => StatusCode::CONFLICT,
        ChallengeError::Expired(_) => StatusCode::GONE,
        ChallengeError::Invalid(_) => StatusCode::BAD_REQUEST,
        ChallengeError::Store(err) => {
            tracing::error!(error = %err, "dev login page: store error");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Error",
                html! { p.error { "The store is not available; try again." } },
            );
        }
    };
    page(
        status,
        "Sign-in request not valid",
        html! {
            p.error #error { (e.to_string()) }
            p { "Go back to the application and start again." }
        },
    )
}

/// 303 to where the domain said the browser goes next.
fn see_other(url: String) -> Response {
    match HeaderValue::from_str(&url) {
        Ok(v) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut().insert(header::LOCATION, v);
            harden(r)
        }
        Err(_) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            html! { p.error { "unusable redirect" } },
        ),
    }
}

fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r
}

fn page(status: StatusCode, title: &str, body: Markup) -> Response {
    let m = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) " - keyward (DEVELOPMENT ONLY)" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                p.dev #dev-only {
                    strong { "DEVELOPMENT ONLY" }
                    " - keyward's built-in login page (keyward up): any username is accepted, without a password. "
                    "Production uses your own login app (docs/login-flows.md)."
                }
                h1 { (title) }
                (body)
            }
        }
    };
    harden((status, m).into_response())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:30rem;margin:2rem auto;padding:0 1rem}\
.dev{background:#ffe1e1;border:2px solid #c00;padding:.6rem;font-size:.9rem}\
label{display:block;margin:.5rem 0}.error{color:#b00020}button{margin:.8rem .5rem 0 0;padding:.4rem 1rem}\
input[type=text]{width:100%;padding:.4rem;box-sizing:border-box}code{background:#f2f2f2;padding:0 .2rem}";

/// A POST from a page of another origin is refused (browsers send `Origin`
/// on every cross-site POST).
fn cross_site(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let bare = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    bare != Some(host)
}

fn forbidden() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Refused",
        html! { p.error { "This form was posted from another site." } },
    )
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The claims a development user gets: a name and an example address.
fn dev_claims(username: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(username));
    let local: String = username
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if !local.is_empty() {
        m.insert("email".into(), json!(format!("{local}@example.invalid")));
        m.insert("email_verified".into(), json!(false));
    }
    m
}

async fn login_page(
    State(Dev { authority: a, .. }): State<Dev>,
    Path(env): Path<String>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let e = match dev_env(&a, &env, "login").await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let Some(c) = q.login_challenge.filter(|c| !c.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "No sign-in request",
            html! { p.error { "Start at the application (it sends you here with a login_challenge)." } },
        );
    };
    let req = match a.login_request(&e, &c).await {
        Ok(r) => r,
        Err(err) => return challenge_failed(err),
    };
    if req["skip"] == json!(true) {
        if let Some(sub) = req["subject"].as_str() {
            let accept = AcceptLogin {
                subject: sub.to_string(),
                ..Default::default()
            };
            return match a.accept_login(&e, &c, accept, ACTOR).await {
                Ok(url) => see_other(url),
                Err(err) => challenge_failed(err),
            };
        }
    }
    let client = req["client_name"]
        .as_str()
        .or(req["client_id"].as_str())
        .unwrap_or("an application")
        .to_string();
    let hint = req["login_hint"].as_str().unwrap_or("").to_string();
    let scopes = strs(&req["requested_scope"]).join(" ");
    page(
        StatusCode::OK,
        "Sign in",
        html! {
            p { "To " b #client { (client) } ", which asks for " code #scopes { (scopes) } "." }
            form method="post" {
                input type="hidden" name="login_challenge" value=(c);
                label for="username" { "Username (any)" }
                input type="text" #username name="username" value=(hint) autofocus required maxlength="255";
                label { input type="checkbox" #remember name="remember" value="1"; " Remember me" }
                button #accept type="submit" name="action" value="accept" { "Sign in" }
                button #deny type="submit" name="action" value="deny" { "Cancel" }
            }
        },
    )
}

async fn login_submit(
    State(Dev { authority: a, .. }): State<Dev>,
    Path(env): Path<String>,
    headers: HeaderMap,
    Form(f): Form<Vec<(String, String)>>,
) -> Response {
    if cross_site(&headers) {
        return forbidden();
    }
    let e = match dev_env(&a, &env, "login").await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let get = |k: &str| {
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let c = get("login_challenge");
    let r = if get("action") == "deny" {
        let reject = Reject {
            error: "access_denied".into(),
            error_description: Some("The user cancelled the sign-in.".into()),
        };
        a.reject_request(&e, RequestKind::Login, c, reject, ACTOR)
            .await
    } else {
        let username = get("username").trim();
        let accept = AcceptLogin {
            subject: username.to_string(),
            amr: vec!["dev".into()],
            remember: get("remember") == "1",
            claims: Some(dev_claims(username)),
            ..Default::default()
        };
        a.accept_login(&e, c, accept, ACTOR).await
    };
    match r {
        Ok(url) => see_other(url),
        Err(err) => challenge_failed(err),
    }
}

async fn consent_page(
    State(Dev { authority: a, .. }): State<Dev>,
    Path(env): Path<String>,
    Query(q): Query<ConsentQuery>,
) -> Response {
    let e = match dev_env(&a, &env, "consent").await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let Some(c) = q.consent_challenge.filter(|c| !c.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "No consent request",
            html! { p.error { "Start at the application." } },
        );
    };
    let req = match a.consent_request(&e, &c).await {
        Ok(r) => r,
        Err(err) => return challenge_failed(err),
    };
    let requested = strs(&req["requested_scope"]);
    if req["skip"] == json!(true) {
        let accept = AcceptConsent {
            grant_scope: requested,
            ..Default::default()
        };
        return match a.accept_consent(&e, &c, accept, ACTOR).await {
            Ok(url) => see_other(url),
            Err(err) => challenge_failed(err),
        };
    }
    let client = req["client_name"]
        .as_str()
        .or(req["client_id"].as_str())
        .unwrap_or("an application")
        .to_string();
    let subject = req["subject"].as_str().unwrap_or("").to_string();
    page(
        StatusCode::OK,
        "Allow access",
        html! {
            p { b #client { (client) } " asks " b #subject { (subject) } " for:" }
            form method="post" {
                input type="hidden" name="consent_challenge" value=(c);
                @for s in &requested {
                    label { input type="checkbox" name="grant_scope" value=(s) id={ "scope-" (s) } checked; " " code { (s) } }
                }
                label { input type="checkbox" #remember name="remember" value="1"; " Remember this decision" }
                button #accept type="submit" name="action" value="accept" { "Allow" }
                button #deny type="submit" name="action" value="deny" { "Deny" }
            }
        },
    )
}

async fn consent_submit(
    State(Dev { authority: a, .. }): State<Dev>,
    Path(env): Path<String>,
    headers: HeaderMap,
    Form(f): Form<Vec<(String, String)>>,
) -> Response {
    if cross_site(&headers) {
        return forbidden();
    }
    let e = match dev_env(&a, &env, "consent").await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let get = |k: &str| {
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let c = get("consent_challenge");
    let r = if get("action") == "deny" {
        let reject = Reject {
            error: "access_denied".into(),
            error_description: Some("The user denied access.".into()),
        };
        a.reject_request(&e, RequestKind::Consent, c, reject, ACTOR)
            .await
    } else {
        let accept = AcceptConsent {
            grant_scope: f
                .iter()
                .filter(|(n, _)| n == "grant_scope")
                .map(|(_, v)| v.clone())
                .collect(),
            remember: get("remember") == "1",
            ..Default::default()
        };
        // The domain refuses a scope that was not requested.
        a.accept_consent(&e, c, accept, ACTOR).await
    };
    match r {
        Ok(url) => see_other(url),
        Err(err) => challenge_failed(err),
    }
}
