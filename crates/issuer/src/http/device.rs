//! The device grant's endpoints (RFC 8628), thin over [`crate::device`]:
//! `POST /oauth2/device_authorization` (JSON, authenticated like the
//! token endpoint), the page users enter and confirm their code at
//! (`/device`), and the callback the logins of device requests end at
//! (`/device/callback`). Pages are uncached and locked down like the
//! authorization endpoint's.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use keyward_jose::crypto::{constant_time_eq, random_text};
use maud::html;

use super::authorize::{self, error_page, origin, page, PAGE_CSP};
use super::{no_store_json, oauth_error, read_form, refused};
use crate::authority::{Authority, EnvState};
use crate::device::{DeviceDone, DevicePage, USER_CODE_LEN, VERIFICATION_PATH};

/// The cookie the confirmation form's CSRF token must equal. It is
/// `SameSite=Strict`: a form on another site never carries it. Over https
/// it is a `__Host-` cookie (RFC 6265bis §4.1.3.2: `Secure`, `Path=/`, no
/// `Domain`), so a sibling subdomain cannot plant one.
const CSRF_COOKIE: &str = "keyward_device_csrf";
const HOST_CSRF_COOKIE: &str = "__Host-keyward_device_csrf";

fn csrf_cookie_name(env: &EnvState) -> &'static str {
    if env.env.issuer.starts_with("https://") {
        HOST_CSRF_COOKIE
    } else {
        CSRF_COOKIE
    }
}

/// The client's address: the connection's, as the server's listener
/// recorded it, or behind a trusted proxy the one it forwarded
/// ([`keyward_verify::forwarded::client_ip`]).
fn client_address(a: &Authority, req: &Request) -> Option<std::net::IpAddr> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| {
        keyward_verify::forwarded::client_ip(c.0.ip(), req.headers(), &a.settings.trusted_proxies)
    })
}

/// `POST {issuer}/oauth2/device_authorization` (RFC 8628 §3.1, §3.2).
pub(super) async fn authorization(a: &Authority, env: &EnvState, req: Request) -> Response {
    let who = client_address(a, &req);
    let form = match read_form(req).await {
        Ok(f) => f,
        Err((e, status)) => {
            crate::metrics::endpoint(&env.env.name, "device_authorization", e.code.as_str());
            return refused(&e, status);
        }
    };
    match a
        .device_authorization(env, &form.credentials, form.fields, who)
        .await
    {
        Ok(g) => {
            crate::metrics::endpoint(&env.env.name, "device_authorization", "ok");
            no_store_json(
                StatusCode::OK,
                serde_json::to_value(g).expect("the grant serializes"),
            )
        }
        Err(e) => {
            crate::metrics::endpoint(&env.env.name, "device_authorization", e.code.as_str());
            e.report(&env.env.name, "device_authorization");
            oauth_error(&e)
        }
    }
}

/// The CSRF cookie's value, if the request carries a well-formed one.
fn csrf_cookie(env: &EnvState, h: &HeaderMap) -> Option<String> {
    authorize::cookie_values(h, csrf_cookie_name(env))
        .into_iter()
        .find(|v| v.len() == 43)
}

fn set_csrf_cookie(env: &EnvState, value: &str) -> HeaderValue {
    let attributes = if env.env.issuer.starts_with("https://") {
        "Path=/; Secure".to_string()
    } else {
        format!("Path={}{VERIFICATION_PATH}", env.path)
    };
    HeaderValue::from_str(&format!(
        "{}={value}; {attributes}; Max-Age=3600; HttpOnly; SameSite=Strict",
        csrf_cookie_name(env)
    ))
    .expect("cookie is ASCII")
}

/// `GET|POST {issuer}/device`: the code entry page; with a `user_code`
/// (typed, or in `verification_uri_complete`), the confirmation of what
/// the device asks for; with `confirm=yes` and the page's CSRF token, the
/// start of the login.
pub(super) async fn entry(a: &Authority, env: &EnvState, req: Request) -> Response {
    let who = client_address(a, &req);
    let post = req.method() == Method::POST;
    let had_csrf = csrf_cookie(env, req.headers());
    let (params, cookies) = match authorize::params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let csrf = had_csrf.clone().unwrap_or_else(random_text::<32>);
    let next = if post && get("confirm") == Some("yes") {
        let same_page = match (&had_csrf, get("csrf")) {
            (Some(c), Some(f)) => constant_time_eq(c.as_bytes(), f.as_bytes()),
            _ => false,
        };
        if !same_page {
            crate::metrics::endpoint(&env.env.name, "device", "csrf");
            return error_page(
                403,
                "This confirmation did not come from keyward's device page: open the page again and enter the code your device shows.",
            );
        }
        a.device_confirm(env, get("user_code").unwrap_or(""), &cookies, who)
            .await
    } else if let Some(code) = get("user_code") {
        a.device_lookup(env, code, who).await
    } else {
        DevicePage::Enter {
            status: 200,
            message: None,
        }
    };
    let label = match &next {
        DevicePage::Enter { status: 200, .. } => "form",
        DevicePage::Enter { status: 429, .. } => "rate_limited",
        DevicePage::Enter { .. } => "wrong_code",
        DevicePage::Confirm { .. } => "confirm",
        DevicePage::Go(_) => "login",
    };
    crate::metrics::endpoint(&env.env.name, "device", label);
    let mut resp = match next {
        DevicePage::Go(out) => return authorize::answer(env, out),
        DevicePage::Enter { status, message } => enter_page(env, status, message, &csrf),
        DevicePage::Confirm {
            user_code,
            client_id,
            client_name,
            scope,
        } => {
            // The confirmation's redirects go to the login app (and its
            // consent page), then back here: CSP `form-action` covers
            // every hop of a form's navigation.
            let mut allowed = vec!["'self'".to_string()];
            if let Ok(s) = a.store.login_settings(&env.env.name).await {
                for url in [s.login_url.as_deref(), s.effective_consent_url()]
                    .into_iter()
                    .flatten()
                {
                    if let Some(o) = origin(url) {
                        if !allowed.contains(&o) {
                            allowed.push(o);
                        }
                    }
                }
            }
            let csp = format!(
                "default-src 'none'; base-uri 'none'; form-action {}; frame-ancestors 'none'",
                allowed.join(" ")
            );
            page(
                StatusCode::OK,
                "Connect a device",
                html! {
                    h1 { "Connect a device" }
                    p {
                        "The device asks to sign in to " strong { (client_name) }
                        " (" code { (client_id) } ")"
                        @if scope.is_empty() { "." } @else { " with:" }
                    }
                    @if !scope.is_empty() {
                        ul { @for s in &scope { li { code { (s) } } } }
                    }
                    p {
                        "Continue only if you started this on your device and it shows the code "
                        strong { (user_code) } "."
                    }
                    form method="post" action=(crate::device::verification_uri(env)) {
                        input type="hidden" name="user_code" value=(user_code);
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="confirm" value="yes";
                        button id="continue" type="submit" { "Continue" }
                    }
                },
                &csp,
            )
        }
    };
    if had_csrf.is_none() {
        resp.headers_mut()
            .append(header::SET_COOKIE, set_csrf_cookie(env, &csrf));
    }
    resp
}

fn enter_page(env: &EnvState, status: u16, message: Option<String>, csrf: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    page(
        status,
        "Connect a device",
        html! {
            h1 { "Connect a device" }
            @if let Some(m) = &message { p role="alert" { (m) } }
            form method="post" action=(crate::device::verification_uri(env)) {
                label for="user_code" { "Enter the code your device shows" }
                " "
                input id="user_code" name="user_code" type="text" autocomplete="off"
                    autocapitalize="characters" spellcheck="false" required
                    maxlength=(USER_CODE_LEN + 2) placeholder="BCDF-GHJK";
                input type="hidden" name="csrf" value=(csrf);
                " "
                button id="continue" type="submit" { "Continue" }
            }
        },
        "default-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    )
}

/// `GET {issuer}/device/callback`: the login of a device request ended.
pub(super) async fn callback(a: &Authority, env: &EnvState, req: Request) -> Response {
    let (params, _) = match authorize::params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let done = match a.device_callback(env, params).await {
        Ok(d) => d,
        Err(e) => {
            crate::oauth::OAuthError::internal(crate::oauth::FaultReason::Store, &e)
                .report(&env.env.name, "device");
            return error_page(500, "the server could not complete the request; try again");
        }
    };
    let label = match done {
        DeviceDone::Approved => "approved",
        DeviceDone::Denied => "denied",
        DeviceDone::Unknown => "unknown",
    };
    crate::metrics::endpoint(&env.env.name, "device_callback", label);
    match done {
        DeviceDone::Approved => page(
            StatusCode::OK,
            "Device connected",
            html! {
                h1 { "Device connected" }
                p { "You can close this window and go back to your device." }
            },
            PAGE_CSP,
        ),
        DeviceDone::Denied => page(
            StatusCode::OK,
            "Device not connected",
            html! {
                h1 { "Device not connected" }
                p { "The sign-in was cancelled or refused; your device is told so." }
            },
            PAGE_CSP,
        ),
        DeviceDone::Unknown => error_page(
            400,
            "No device is waiting for this sign-in: it finished already, expired, or the link was changed.",
        ),
    }
}
