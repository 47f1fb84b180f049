//! The browser-facing endpoints of an environment, thin over
//! [`crate::login`]: `/oauth2/authorize`, `/oauth2/userinfo` and
//! `/oauth2/logout`. Pages (errors, the form-post response, "logged out")
//! are server-rendered, uncached, and locked down by a Content Security
//! Policy; the session cookie is `HttpOnly`, `SameSite=Lax`, `Secure` when
//! the issuer is https, and scoped to the issuer's path.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use maud::{html, Markup, DOCTYPE};
use serde_json::json;

use crate::authority::{Authority, EnvState};
use crate::http::{read_body, BodyRefused};
use crate::login::{
    AuthorizeAnswer, Authorized, LogoutAnswer, Reply, ResponseMode, SESSION_COOKIE,
    SESSION_TTL_SECS,
};

/// The one inline script of the form-post page.
const SUBMIT_SCRIPT: &str = "document.forms[0].submit();";

/// The `keyward_session` cookie values the request carries.
pub(crate) fn session_cookies(h: &HeaderMap) -> Vec<String> {
    cookie_values(h, SESSION_COOKIE)
}

/// The values (at most 8) of the cookies named `name` the request carries.
pub(super) fn cookie_values(h: &HeaderMap, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for v in h.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=') {
                if k == name && out.len() < 8 {
                    out.push(val.trim_matches('"').to_string());
                }
            }
        }
    }
    out
}

/// `Set-Cookie` for the session cookie of `env` (`value` empty: delete it).
pub(super) fn session_cookie(env: &EnvState, value: &str) -> HeaderValue {
    let path = if env.path.is_empty() {
        "/"
    } else {
        env.path.as_str()
    };
    let secure = if env.env.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let age = if value.is_empty() {
        0
    } else {
        SESSION_TTL_SECS
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path={path}; Max-Age={age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie is ASCII")
}

/// Headers every page and redirect of the flow carries.
pub(super) fn lock_down(r: &mut Response, csp: &str) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
}

pub(super) const PAGE_CSP: &str =
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(super) fn page(status: StatusCode, title: &str, body: Markup, csp: &str) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
            }
            body { (body) }
        }
    };
    let mut r = (status, doc.into_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    lock_down(&mut r, csp);
    r
}

pub(super) fn error_page(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    page(
        status,
        "Sign-in error",
        html! {
            h1 { "Sign-in error" }
            p { (message) }
            p { "Nothing was sent to the application. Go back to it and start again." }
        },
        PAGE_CSP,
    )
}

pub(super) fn see_other(url: &str) -> Response {
    let Ok(loc) = HeaderValue::from_str(url) else {
        return error_page(500, "the redirect target is not a valid header value");
    };
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(header::LOCATION, loc);
    lock_down(&mut r, PAGE_CSP);
    r
}

/// The origin of `uri` for a CSP `form-action` (never the whole URI: a
/// character like `;` in it must not end the directive).
pub(super) fn origin(uri: &str) -> Option<String> {
    let o = reqwest::Url::parse(uri).ok()?.origin();
    o.is_tuple().then(|| o.ascii_serialization())
}

/// The authorization response as an auto-submitting form (OAuth 2.0 Form
/// Post Response Mode): the one inline script allowed by its hash.
fn form_post(reply: &Reply) -> Response {
    let hash = base64::engine::general_purpose::STANDARD
        .encode(keyward_jose::crypto::sha256(SUBMIT_SCRIPT.as_bytes()));
    let Some(origin) = origin(&reply.redirect_uri) else {
        return error_page(500, "the redirect URI cannot be posted to");
    };
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{hash}'; form-action {origin}; base-uri 'none'; frame-ancestors 'none'"
    );
    page(
        StatusCode::OK,
        "Signing in",
        html! {
            form method="post" action=(reply.redirect_uri) {
                @for (k, v) in &reply.params {
                    input type="hidden" name=(k) value=(v);
                }
                noscript { button type="submit" { "Continue" } }
            }
            script { (maud::PreEscaped(SUBMIT_SCRIPT)) }
        },
        &csp,
    )
}

/// The parameters of a GET (query) or POST (form body) request; `Err` is
/// the page to show.
pub(super) async fn params(req: Request) -> Result<(Vec<(String, String)>, Vec<String>), Response> {
    let cookies = session_cookies(req.headers());
    let raw = if req.method() == Method::POST {
        let mime = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != "application/x-www-form-urlencoded" {
            return Err(error_page(
                415,
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        match read_body(req.into_body()).await {
            Ok(b) => b.to_vec(),
            Err(r @ BodyRefused::TooLarge) => {
                return Err(error_page(r.status().as_u16(), &r.description()))
            }
            Err(r) => return Err(error_page(r.status().as_u16(), &r.description())),
        }
    } else {
        req.uri().query().unwrap_or("").as_bytes().to_vec()
    };
    match crate::oauth::parse_form(&raw) {
        Ok(p) => Ok((p, cookies)),
        // A repeated or malformed parameter: nothing can be trusted,
        // nothing is redirected.
        Err(e) => Err(error_page(400, &e.description)),
    }
}

/// `GET|POST {issuer}/oauth2/authorize`.
pub(crate) async fn authorize(a: &Authority, env: &EnvState, req: Request) -> Response {
    let (params, cookies) = match params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let out = a.authorize(env, params, &cookies).await;
    let label = match &out.answer {
        AuthorizeAnswer::ErrorPage { .. } => "error_page",
        AuthorizeAnswer::Redirect(_) => "redirect",
        AuthorizeAnswer::Respond(r) if r.params.iter().any(|(k, _)| k == "error") => "error",
        AuthorizeAnswer::Respond(_) => "code",
    };
    crate::metrics::endpoint(&env.env.name, "authorize", label);
    answer(env, out)
}

/// The page, redirect or authorization response of a step of the flow,
/// with the session cookie it sets.
pub(super) fn answer(env: &EnvState, out: Authorized) -> Response {
    let mut resp = match out.answer {
        AuthorizeAnswer::ErrorPage { status, message } => error_page(status, &message),
        AuthorizeAnswer::Redirect(url) => see_other(&url),
        AuthorizeAnswer::Respond(reply) => match reply.mode {
            ResponseMode::Query => see_other(&reply.url()),
            ResponseMode::FormPost => form_post(&reply),
        },
    };
    if let Some(cookie) = out.new_session {
        resp.headers_mut()
            .append(header::SET_COOKIE, session_cookie(env, &cookie));
    }
    resp
}

/// A refusal at userinfo (RFC 6750 §3), with its challenge.
fn token_refused(status: StatusCode, error: &str, description: &str, dpop: bool) -> Response {
    let scheme = if dpop { "DPoP" } else { "Bearer" };
    let challenge = format!(
        "{scheme} realm=\"keyward\", error=\"{error}\", error_description=\"{}\"",
        description.replace(['"', '\\'], "'")
    );
    let mut r = (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The scheme (`true` for DPoP) and token of the one `Authorization` header.
fn access_token(h: &HeaderMap) -> Option<(bool, String)> {
    let mut all = h.get_all(header::AUTHORIZATION).iter();
    let v = all.next()?.to_str().ok()?;
    if all.next().is_some() {
        return None;
    }
    let (scheme, token) = v.split_once(' ')?;
    let dpop = if scheme.eq_ignore_ascii_case("bearer") {
        false
    } else if scheme.eq_ignore_ascii_case("dpop") {
        true
    } else {
        return None;
    };
    let ok = !token.is_empty()
        && token.len() <= keyward_jose::DEFAULT_MAX_TOKEN_LEN
        && token.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
        });
    ok.then(|| (dpop, token.to_string()))
}

/// `GET|POST {issuer}/oauth2/userinfo` (OIDC Core §5.3): an access token
/// of this environment in `Authorization` (Bearer, or DPoP with its proof).
pub(crate) async fn userinfo(a: &Authority, env: &EnvState, req: Request) -> Response {
    let Some((dpop, token)) = access_token(req.headers()) else {
        let mut r = token_refused(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "send the access token in one Authorization header (Bearer or DPoP)",
            false,
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keyward\""),
        );
        return r;
    };
    let claims = match a.verify_own_access_token(env, &token).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return token_refused(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the access token is invalid, expired or revoked",
                dpop,
            )
        }
        Err(e) => {
            e.report(&env.env.name, "userinfo");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    // A sender-constrained token is used only by its holder.
    if let Some(jkt) = claims["cnf"]["jkt"].as_str() {
        if !dpop {
            return token_refused(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "this access token is bound to a DPoP key: use the DPoP scheme with a proof",
                true,
            );
        }
        let proof = match keyward_verify::dpop::proof_header(req.headers()) {
            Ok(Some(p)) => p.to_string(),
            _ => {
                return token_refused(
                    StatusCode::UNAUTHORIZED,
                    "invalid_dpop_proof",
                    "send one DPoP proof",
                    true,
                )
            }
        };
        let uri = format!("{}/oauth2/userinfo", env.env.issuer.trim_end_matches('/'));
        let target = keyward_verify::ProofTarget {
            method: req.method().as_str(),
            uri: &uri,
            token: Some(keyward_verify::PresentedToken {
                sha256: &keyward_jose::crypto::sha256(token.as_bytes()),
                jkt,
            }),
        };
        // The environment's server nonces hold here as at its token
        // endpoint (RFC 9449 §9: use_dpop_nonce with a fresh DPoP-Nonce).
        let nonces = match &env.dpop_nonces {
            crate::authority::DpopNonces::Off => None,
            crate::authority::DpopNonces::Required(k) => Some(k.as_ref()),
            crate::authority::DpopNonces::Unopened => {
                return token_refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "DPoP nonces cannot be checked now; retry later",
                    true,
                )
            }
        };
        match a
            .settings
            .dpop
            .check_with_nonces(&proof, &target, a.now(), nonces)
            .await
        {
            Ok(_) => {}
            Err(keyward_verify::DpopRefusal::UseNonce(fresh)) => {
                let mut r = token_refused(
                    StatusCode::UNAUTHORIZED,
                    "use_dpop_nonce",
                    "send a DPoP proof with the server's nonce",
                    true,
                );
                if let Ok(v) = HeaderValue::from_str(&fresh) {
                    r.headers_mut().insert("dpop-nonce", v);
                }
                return r;
            }
            Err(e) => {
                return token_refused(
                    StatusCode::UNAUTHORIZED,
                    "invalid_dpop_proof",
                    &e.to_string(),
                    true,
                )
            }
        }
    } else if dpop {
        return token_refused(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "this access token is not bound to a DPoP key: use the Bearer scheme",
            false,
        );
    }
    if let Some(x5t) = claims["cnf"]["x5t#S256"].as_str() {
        let presented = req
            .extensions()
            .get::<std::sync::Arc<keyward_verify::PeerCertificate>>()
            .map(|c| c.thumbprint().to_string());
        if presented.as_deref() != Some(x5t) {
            return token_refused(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "this access token is bound to a client certificate: connect with it",
                false,
            );
        }
    }
    match a.userinfo(env, &claims).await {
        Ok(Some(v)) => {
            crate::metrics::endpoint(&env.env.name, "userinfo", "ok");
            let mut r = axum::Json(v).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Ok(None) => {
            crate::metrics::endpoint(&env.env.name, "userinfo", "insufficient_scope");
            token_refused(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "the access token was not issued through a login with the openid scope",
                dpop,
            )
        }
        Err(e) => {
            e.report(&env.env.name, "userinfo");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `GET|POST {issuer}/oauth2/logout` (OIDC RP-Initiated Logout 1.0).
pub(crate) async fn logout(a: &Authority, env: &EnvState, req: Request) -> Response {
    let (params, cookies) = match params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let answer = a.end_session(env, params, &cookies).await;
    let mut resp = match &answer {
        LogoutAnswer::Redirect(url) => see_other(url),
        LogoutAnswer::LoggedOut => page(
            StatusCode::OK,
            "Signed out",
            html! {
                h1 { "Signed out" }
                p { "Your session at this sign-in service has ended." }
            },
            PAGE_CSP,
        ),
        LogoutAnswer::ErrorPage(m) => return error_page(400, m),
        // Nothing ended: the session cookie stays.
        LogoutAnswer::Confirm { fields, target } => {
            let mut allowed = vec!["'self'".to_string()];
            if let Some(o) = target.as_deref().and_then(origin) {
                allowed.push(o);
            }
            let csp = format!(
                "default-src 'none'; base-uri 'none'; form-action {}; frame-ancestors 'none'",
                allowed.join(" ")
            );
            let action = format!("{}/oauth2/logout", crate::login::issuer_base(env));
            return page(
                StatusCode::OK,
                "Sign out?",
                html! {
                    h1 { "Sign out?" }
                    p { "Do you want to sign out of this sign-in service? Applications you signed in to with it will ask you to sign in again." }
                    form method="post" action=(action) {
                        @for (k, v) in fields {
                            input type="hidden" name=(k) value=(v);
                        }
                        button type="submit" { "Sign out" }
                    }
                    p { "If you did not ask to sign out, close this page: you stay signed in." }
                },
                &csp,
            );
        }
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, session_cookie(env, ""));
    resp
}
