//! The HTTP API (axum). Handlers are thin: parse the request, call the
//! authority, map the answer. Every environment is served at its issuer URL's
//! path: discovery, JWKS, token, introspection, revocation, the revocation
//! feed, and the browser login endpoints ([`authorize`]: authorize,
//! userinfo, logout); `/healthz`, `/readyz`, `/metrics` and the admin API
//! (`/admin/v1/`, see [`crate::admin`]) are global.

pub(crate) mod authorize;
pub(crate) mod device;

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};

use crate::authority::{Authority, EnvState};
use crate::clients::Credentials;
use crate::grants::{grant_label, TokenRequest, TokenResponse};
use crate::oauth::{ErrorCode, OAuthError};

/// Largest accepted request body, on every endpoint that takes one (the
/// OAuth forms and the admin API's JSON): larger ones get 413 with
/// `invalid_request`, whether `Content-Length` says so up front or the body
/// turns out longer.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a request body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyRefused {
    /// Over [`MAX_BODY_BYTES`]: 413.
    TooLarge,
    /// Not sent in time (the server's body read timeout, reported as an
    /// `io::Error` of kind `TimedOut`): 408.
    TimedOut,
    /// The client failed to send it (closed, malformed chunks): 400.
    Unreadable,
}

impl BodyRefused {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            BodyRefused::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyRefused::TimedOut => StatusCode::REQUEST_TIMEOUT,
            BodyRefused::Unreadable => StatusCode::BAD_REQUEST,
        }
    }

    pub(crate) fn description(self) -> String {
        match self {
            BodyRefused::TooLarge => format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            BodyRefused::TimedOut => "the request body did not arrive in time".to_string(),
            BodyRefused::Unreadable => "the request body could not be read".to_string(),
        }
    }
}

/// True when `Content-Length` announces a body over [`MAX_BODY_BYTES`]
/// (answered 413 before anything else is looked at).
pub(crate) fn declares_too_large(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
}

/// Reads a whole request body of at most [`MAX_BODY_BYTES`].
pub(crate) async fn read_body(body: Body) -> Result<Bytes, BodyRefused> {
    use http_body_util::BodyExt as _;
    match http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyRefused::TooLarge),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read a request body");
            let first: &(dyn std::error::Error + 'static) = &*e;
            let timed_out = std::iter::successors(Some(first), |e| e.source()).any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
            });
            Err(if timed_out {
                BodyRefused::TimedOut
            } else {
                BodyRefused::Unreadable
            })
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub authority: Arc<Authority>,
    pub metrics: PrometheusHandle,
}

/// The application router.
pub fn app(state: AppState) -> Router {
    // One authenticator for every surface acting for administrators.
    let admin = crate::admin::AdminAuth::new(state.authority.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::admin::router(admin))
        .fallback(dispatch)
        .with_state(state)
}

/// 200 when this replica can do its job: the store answers, the last reload
/// succeeded, and every environment that has keys can sign now. An
/// environment with no key at all (just created) is reported, not fatal; so
/// is a stale root key that has not yet stopped anything from opening.
/// The body's first line is `ready` or the first problem; more lines follow.
async fn readyz(State(s): State<AppState>) -> Response {
    let r = readiness(&s.authority).await;
    let status = match r.ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, r.lines.join("\n")).into_response()
}

/// What `/readyz` says (and the console's health page shows).
pub(crate) struct Readiness {
    pub(crate) ready: bool,
    /// `ready` or the problems first, then notes.
    pub(crate) lines: Vec<String>,
}

pub(crate) async fn readiness(a: &Authority) -> Readiness {
    if let Err(e) = a.store.generation().await {
        tracing::warn!(error = %e, "readiness: store unreachable");
        return Readiness {
            ready: false,
            lines: vec!["store unreachable".into()],
        };
    }
    let now = a.now();
    let snapshot = a.snapshot();
    let health = a.reload_health();
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    if let Some(f) = &health.failure {
        problems.push(format!("reload failing ({}): {}", f.reason, f.summary));
    }
    let (without_key, with_keys): (Vec<_>, Vec<_>) =
        snapshot.envs.iter().partition(|e| e.keys.is_empty());
    let device_faults = a.device_faults();
    let missing: Vec<&str> = with_keys
        .iter()
        .filter(|e| e.signer(now).is_none())
        .map(|e| e.env.name.as_str())
        .filter(|name| !device_faults.iter().any(|(env, _)| env == name))
        .collect();
    if !missing.is_empty() {
        problems.push(format!("no signing key: {}", missing.join(", ")));
    }
    // Which environment cannot sign and why: store and reason, never details.
    for (env, f) in &device_faults {
        problems.push(format!(
            "environment {env} cannot sign: its signing key {} is in the {} key store, which fails ({}) since {}",
            f.kid,
            f.store,
            f.reason,
            crate::fmt_time(f.since)
        ));
    }
    for e in &snapshot.envs {
        for f in e
            .unopened
            .iter()
            .filter(|f| e.signing_key_unopened(now).is_none_or(|s| s.kid != f.kid))
        {
            notes.push(format!(
                "environment {}: key {} (not signing yet) cannot be opened in the {} key store ({})",
                e.env.name, f.kid, f.store, f.reason
            ));
        }
    }
    for e in &snapshot.envs {
        if matches!(e.dpop_nonces, crate::authority::DpopNonces::Unopened) {
            problems.push(format!(
                "environment {}: its DPoP nonce secret cannot be opened (DPoP token requests are refused)",
                e.env.name
            ));
        }
    }
    if !without_key.is_empty() {
        let names: Vec<&str> = without_key.iter().map(|e| e.env.name.as_str()).collect();
        notes.push(format!(
            "no key yet (reported, not serving tokens): {}",
            names.join(", ")
        ));
    }
    if let (Some((held, expected)), None) = (&health.root_key_stale, &health.failure) {
        notes.push(format!(
            "root key stale: this server holds root key {held}, the store's keys are sealed under root key {expected}"
        ));
    }
    let ready = problems.is_empty();
    let mut lines = match ready {
        true => vec!["ready".to_string()],
        false => problems,
    };
    lines.extend(notes);
    Readiness { ready, lines }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let body = crate::metrics::render(&s.authority.gauges().await, &s.metrics);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The endpoints served at an environment's issuer path.
#[derive(Clone, Copy)]
enum Endpoint {
    Discovery,
    Jwks,
    Token,
    Introspect,
    Revoke,
    Revocations,
    Authorize,
    Userinfo,
    Logout,
    Par,
    DeviceAuthorization,
    Device,
    DeviceCallback,
}

async fn dispatch(State(s): State<AppState>, req: Request) -> Response {
    let snapshot = s.authority.snapshot();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let Some((env, rest)) = snapshot.route(host, req.uri().path()) else {
        return not_found();
    };
    let endpoint = match rest {
        "/.well-known/openid-configuration" => Endpoint::Discovery,
        "/.well-known/jwks.json" => Endpoint::Jwks,
        "/oauth2/token" => Endpoint::Token,
        "/oauth2/introspect" => Endpoint::Introspect,
        "/oauth2/revoke" => Endpoint::Revoke,
        "/revocations" => Endpoint::Revocations,
        "/oauth2/authorize" => Endpoint::Authorize,
        "/oauth2/userinfo" => Endpoint::Userinfo,
        "/oauth2/logout" => Endpoint::Logout,
        "/oauth2/par" => Endpoint::Par,
        "/oauth2/device_authorization" => Endpoint::DeviceAuthorization,
        crate::device::VERIFICATION_PATH => Endpoint::Device,
        crate::device::CALLBACK_PATH => Endpoint::DeviceCallback,
        _ => return not_found(),
    };
    let env = env.clone();
    // HEAD is answered like GET (the body is dropped on the way out).
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = *req.method() == Method::POST;
    let plain_get = *req.method() == Method::GET;
    let a = &s.authority;
    // Endpoints without a body refuse a large one like those with one do.
    if get && declares_too_large(req.headers()) {
        return too_large();
    }
    match endpoint {
        Endpoint::Discovery if get => discovery(
            &env,
            snapshot.scopes(&env.env.name),
            a.now(),
            a.settings.mtls,
        )
        .into_response(),
        Endpoint::Jwks if get => jwks(a, &env, req.headers()),
        Endpoint::Revocations if get => revocations(a, &env, req.uri().query()).await,
        Endpoint::Token if post => token(a, &env, req).await,
        Endpoint::Introspect if post => introspect(a, &env, req).await,
        Endpoint::Revoke if post => revoke(a, &env, req).await,
        Endpoint::Par if post => par(a, &env, req).await,
        Endpoint::DeviceAuthorization if post => device::authorization(a, &env, req).await,
        Endpoint::Device if plain_get || post => device::entry(a, &env, req).await,
        Endpoint::DeviceCallback if plain_get => device::callback(a, &env, req).await,
        Endpoint::DeviceCallback => method_not_allowed("GET"),
        // Not HEAD: these start or end a browser's flow.
        Endpoint::Authorize if plain_get || post => authorize::authorize(a, &env, req).await,
        Endpoint::Userinfo if plain_get || post => authorize::userinfo(a, &env, req).await,
        Endpoint::Logout if plain_get || post => authorize::logout(a, &env, req).await,
        Endpoint::Authorize | Endpoint::Userinfo | Endpoint::Logout | Endpoint::Device => {
            method_not_allowed("GET, POST")
        }
        Endpoint::Discovery | Endpoint::Jwks | Endpoint::Revocations => {
            method_not_allowed("GET, HEAD")
        }
        Endpoint::Token
        | Endpoint::Introspect
        | Endpoint::Revoke
        | Endpoint::Par
        | Endpoint::DeviceAuthorization => method_not_allowed("POST"),
    }
}

/// 413 for a body over [`MAX_BODY_BYTES`], as every endpoint answers it.
fn too_large() -> Response {
    let r = BodyRefused::TooLarge;
    refused(&OAuthError::invalid_request(r.description()), r.status())
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "not_found"})),
    )
        .into_response()
}

fn method_not_allowed(allow: &'static str) -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, allow)]).into_response()
}

/// OIDC Discovery 1.0 and RFC 8414 metadata at `now`.
/// The DPoP proof algorithms the token endpoint accepts (RFC 9449 §5.1).
fn dpop_algs() -> Vec<&'static str> {
    keyward_jose::dpop::DEFAULT_DPOP_ALGORITHMS
        .iter()
        .map(|a| a.name())
        .collect()
}

pub fn discovery(
    env: &EnvState,
    scopes: Vec<String>,
    now: keyward_store::Timestamp,
    mtls: bool,
) -> axum::Json<Value> {
    let base = env.env.issuer.trim_end_matches('/');
    // Client assertions are verified with the client's registered keys,
    // each bound to its one algorithm: any of them (ML-DSA included).
    let algs: Vec<&str> = keyward_jose::Algorithm::ALL
        .iter()
        .map(|a| a.name())
        .collect();
    // What this environment's tokens may be signed with: the algorithms of
    // its published keys (two while a rotation moves it to another one,
    // say RS256 and ML-DSA-65), else the policy's.
    let mut signing: Vec<&str> = Vec::new();
    for k in crate::rotation::published(&env.keys, now) {
        if !signing.contains(&k.alg.name()) {
            signing.push(k.alg.name());
        }
    }
    if signing.is_empty() {
        signing.push(env.env.policy.alg.name());
    }
    // RFC 8705 methods only where a listener asks for client certificates.
    let mut auth_methods = vec![
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    // Public clients (PKCE) at the token endpoint only: they cannot
    // introspect, and revocation needs no secret of theirs either way.
    let token_auth_methods: Vec<&str> = auth_methods
        .iter()
        .copied()
        .chain(["none"])
        .chain(
            mtls.then_some(["tls_client_auth", "self_signed_tls_client_auth"])
                .into_iter()
                .flatten(),
        )
        .collect();
    if mtls {
        auth_methods.extend(["tls_client_auth", "self_signed_tls_client_auth"]);
    }
    let mut doc = json!({
        "issuer": env.env.issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/oauth2/token"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "authorization_endpoint": format!("{base}/oauth2/authorize"),
        "userinfo_endpoint": format!("{base}/oauth2/userinfo"),
        "end_session_endpoint": format!("{base}/oauth2/logout"),
        "grant_types_supported": [
            "authorization_code",
            "client_credentials",
            "refresh_token",
            crate::exchange::TOKEN_EXCHANGE_GRANT,
            crate::device::DEVICE_CODE_GRANT,
        ],
        "token_endpoint_auth_methods_supported": token_auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "id_token_signing_alg_values_supported": signing,
        "dpop_signing_alg_values_supported": dpop_algs(),
        "scopes_supported": scopes,
        // The code flow only (`token`, the implicit flow, is forbidden by
        // RFC 9700 §2.1.2).
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        // RFC 9126: pushed requests; required per client only.
        "pushed_authorization_request_endpoint": format!("{base}/oauth2/par"),
        // RFC 8628 §4.
        "device_authorization_endpoint": format!("{base}/oauth2/device_authorization"),
        "require_pushed_authorization_requests": false,
        "claims_supported": claims_supported(),
        "subject_types_supported": ["public"],
        "revocation_feed_endpoint": format!("{base}/revocations"),
    });
    if mtls {
        // The same listener serves mTLS (it asks every client for a
        // certificate, optionally): the aliases are the same URLs, listed so
        // that clients that look only there find them (RFC 8705 §5).
        doc["tls_client_certificate_bound_access_tokens"] = json!(true);
        doc["mtls_endpoint_aliases"] = json!({
            "token_endpoint": format!("{base}/oauth2/token"),
            "introspection_endpoint": format!("{base}/oauth2/introspect"),
            "revocation_endpoint": format!("{base}/oauth2/revoke"),
        });
    }
    axum::Json(doc)
}

/// The claims ID tokens and userinfo may carry (OIDC Discovery §3).
fn claims_supported() -> Vec<&'static str> {
    let mut v = vec![
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "nonce",
        "acr",
        "amr",
        "azp",
        "at_hash",
        "sid",
    ];
    for (_, names) in crate::login::SCOPE_CLAIMS {
        v.extend_from_slice(names);
    }
    v
}

fn jwks(a: &Authority, env: &EnvState, headers: &HeaderMap) -> Response {
    let doc = match env.jwks(a.now()) {
        Ok(d) => d,
        Err(e) => {
            crate::oauth::report(
                crate::oauth::FaultReason::Keys,
                &env.env.name,
                "jwks",
                &crate::oauth::error_chain(&e),
            );
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let cache = format!("public, max-age={}", doc.max_age);
    let etag_matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // Weak comparison (RFC 9110 §13.1.2): a `W/` prefix still matches.
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == doc.etag)
        });
    let mut resp = if etag_matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(Bytes::copy_from_slice(&doc.body)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&cache).expect("ascii"),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&doc.etag).expect("ascii"),
    );
    resp
}

/// An OAuth error response: RFC 6749 §5.2 JSON, no caching, and for
/// `invalid_client` a `WWW-Authenticate` challenge (a 401 needs one).
fn oauth_error(e: &OAuthError) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (status, axum::Json(e.to_json())).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if e.code == ErrorCode::InvalidClient {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"keyward\""),
        );
    }
    if e.code == ErrorCode::TemporarilyUnavailable {
        h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    if let Some(v) = e
        .dpop_nonce
        .as_deref()
        .and_then(|n| HeaderValue::from_str(n).ok())
    {
        h.insert(keyward_verify::dpop::DPOP_NONCE_HEADER, v);
    }
    resp
}

/// `Retry-After` (seconds) of a `temporarily_unavailable` answer: about
/// the time a reload takes to retry a device, and a device store's backoff
/// to try it again.
pub const RETRY_AFTER_SECS: u32 = 5;

fn no_store_json(status: StatusCode, v: Value) -> Response {
    let mut resp = (status, axum::Json(v)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// A successful token response (RFC 6749 §5.1), serialized once straight
/// into the body.
fn token_response(t: &TokenResponse) -> Response {
    let mut body = Vec::with_capacity(t.access_token.len() + 128);
    serde_json::to_writer(&mut body, t).expect("token response");
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// A parsed form: each parameter at most once (RFC 6749 §3.2).
struct Form {
    fields: Vec<(String, String)>,
    credentials: Credentials,
}

impl Form {
    fn get(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Moves parameter `name` out (each appears at most once).
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.fields.iter().position(|(k, _)| k == name)?;
        Some(self.fields.swap_remove(i).1)
    }
}

/// An OAuth error for a request [`read_form`] refused, with its status
/// (413 for a body over the limit, 408 for one too slow, 401 for a
/// malformed `Authorization`).
fn refused(e: &OAuthError, status: StatusCode) -> Response {
    let mut r = oauth_error(e);
    *r.status_mut() = status;
    r
}

/// Reads an `application/x-www-form-urlencoded` body of bounded size, with
/// the client credentials from it and from `Authorization: Basic`.
async fn read_form(req: Request) -> Result<Form, (OAuthError, StatusCode)> {
    let bad = |d: &str| (OAuthError::invalid_request(d), StatusCode::BAD_REQUEST);
    if declares_too_large(req.headers()) {
        let r = BodyRefused::TooLarge;
        return Err((OAuthError::invalid_request(r.description()), r.status()));
    }
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(bad("the body must be application/x-www-form-urlencoded"));
    }
    let basic = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| {
                (
                    OAuthError::invalid_client("malformed Authorization header"),
                    StatusCode::UNAUTHORIZED,
                )
            })?;
            Some(Credentials::parse_basic(v).map_err(|e| (e, StatusCode::UNAUTHORIZED))?)
        }
    };
    // The connection's client certificate, as the TLS listener put it.
    let certificate = req
        .extensions()
        .get::<std::sync::Arc<keyward_verify::PeerCertificate>>()
        .cloned();
    let body = read_body(req.into_body())
        .await
        .map_err(|r| (OAuthError::invalid_request(r.description()), r.status()))?;
    let fields = crate::oauth::parse_form(&body).map_err(|e| (e, StatusCode::BAD_REQUEST))?;
    let mut form = Form {
        fields,
        credentials: Credentials {
            basic,
            certificate,
            ..Credentials::default()
        },
    };
    form.credentials.client_id = form.take("client_id");
    form.credentials.client_secret = form.take("client_secret");
    form.credentials.assertion_type = form.take("client_assertion_type");
    form.credentials.assertion = form.take("client_assertion");
    Ok(form)
}

async fn token(a: &Authority, env: &EnvState, req: Request) -> Response {
    let mut resp = token_answer(a, env, req).await;
    // In an environment that requires DPoP nonces, every answer carries a
    // fresh one (RFC 9449 §8.2), the `use_dpop_nonce` refusal its own.
    if let Some(k) = env.dpop_nonces.key() {
        if !resp
            .headers()
            .contains_key(keyward_verify::dpop::DPOP_NONCE_HEADER)
        {
            if let Ok(v) = HeaderValue::from_str(&k.issue(a.now())) {
                resp.headers_mut()
                    .insert(keyward_verify::dpop::DPOP_NONCE_HEADER, v);
            }
        }
    }
    resp
}

async fn token_answer(a: &Authority, env: &EnvState, req: Request) -> Response {
    let started = Instant::now();
    let dpop_proof = match keyward_verify::dpop::proof_header(req.headers()) {
        Ok(p) => p.map(str::to_owned),
        Err(e) => {
            let e = OAuthError::new(ErrorCode::InvalidDpopProof, e.to_string());
            crate::metrics::token_request(
                &env.env.name,
                "other",
                e.code.as_str(),
                started.elapsed().as_secs_f64(),
            );
            return oauth_error(&e);
        }
    };
    let mut form = match read_form(req).await {
        Ok(f) => f,
        Err((e, status)) => {
            crate::metrics::token_request(
                &env.env.name,
                "other",
                e.code.as_str(),
                started.elapsed().as_secs_f64(),
            );
            return refused(&e, status);
        }
    };
    let audience = form.take("audience");
    let treq = TokenRequest {
        grant_type: form.take("grant_type"),
        scope: form.take("scope"),
        audience: audience.or_else(|| form.take("resource")),
        refresh_token: form.take("refresh_token"),
        code: form.take("code"),
        redirect_uri: form.take("redirect_uri"),
        code_verifier: form.take("code_verifier"),
        subject_token: form.take("subject_token"),
        subject_token_type: form.take("subject_token_type"),
        actor_token: form.take("actor_token"),
        actor_token_type: form.take("actor_token_type"),
        requested_token_type: form.take("requested_token_type"),
        device_code: form.take("device_code"),
        credentials: form.credentials,
        dpop_proof,
    };
    let grant = grant_label(&treq);
    match a.token(env, treq).await {
        Ok(t) => {
            crate::metrics::token_request(
                &env.env.name,
                grant,
                "ok",
                started.elapsed().as_secs_f64(),
            );
            token_response(&t)
        }
        Err(e) => {
            crate::metrics::token_request(
                &env.env.name,
                grant,
                e.code.as_str(),
                started.elapsed().as_secs_f64(),
            );
            e.report(&env.env.name, "token");
            oauth_error(&e)
        }
    }
}

async fn introspect(a: &Authority, env: &EnvState, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err((e, status)) => {
            crate::metrics::endpoint(&env.env.name, "introspect", e.code.as_str());
            return refused(&e, status);
        }
    };
    let Some(token) = form.get("token") else {
        crate::metrics::endpoint(&env.env.name, "introspect", "invalid_request");
        return oauth_error(&OAuthError::invalid_request("token is missing"));
    };
    match a.introspect(env, &form.credentials, &token).await {
        Ok(v) => {
            crate::metrics::endpoint(&env.env.name, "introspect", "ok");
            no_store_json(StatusCode::OK, v)
        }
        Err(e) => {
            crate::metrics::endpoint(&env.env.name, "introspect", e.code.as_str());
            e.report(&env.env.name, "introspect");
            oauth_error(&e)
        }
    }
}

/// `POST {issuer}/oauth2/par` (RFC 9126): 201 with the `request_uri`.
async fn par(a: &Authority, env: &EnvState, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err((e, status)) => {
            crate::metrics::endpoint(&env.env.name, "par", e.code.as_str());
            return refused(&e, status);
        }
    };
    match a
        .push_authorization_request(env, &form.credentials, form.fields)
        .await
    {
        Ok(p) => {
            crate::metrics::endpoint(&env.env.name, "par", "ok");
            no_store_json(
                StatusCode::CREATED,
                json!({"request_uri": p.request_uri, "expires_in": p.expires_in}),
            )
        }
        Err(e) => {
            crate::metrics::endpoint(&env.env.name, "par", e.code.as_str());
            e.report(&env.env.name, "par");
            oauth_error(&e)
        }
    }
}

async fn revoke(a: &Authority, env: &EnvState, req: Request) -> Response {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err((e, status)) => {
            crate::metrics::endpoint(&env.env.name, "revoke", e.code.as_str());
            return refused(&e, status);
        }
    };
    let Some(token) = form.get("token") else {
        crate::metrics::endpoint(&env.env.name, "revoke", "invalid_request");
        return oauth_error(&OAuthError::invalid_request("token is missing"));
    };
    match a.revoke(env, &form.credentials, &token).await {
        Ok(()) => {
            crate::metrics::endpoint(&env.env.name, "revoke", "ok");
            StatusCode::OK.into_response()
        }
        Err(e) => {
            crate::metrics::endpoint(&env.env.name, "revoke", e.code.as_str());
            e.report(&env.env.name, "revoke");
            oauth_error(&e)
        }
    }
}

async fn revocations(a: &Authority, env: &EnvState, query: Option<&str>) -> Response {
    let mut since = None;
    let mut limit = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        // Other parameters (cache busters) are ignored.
        let seen = match k.as_ref() {
            "since" => since.is_some(),
            "limit" => limit.is_some(),
            _ => continue,
        };
        if seen {
            return oauth_error(&OAuthError::invalid_request(format!(
                "{k} is given more than once"
            )));
        }
        let n = match v.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return oauth_error(&OAuthError::invalid_request(format!(
                    "{k} must be a non-negative integer"
                )))
            }
        };
        match k.as_ref() {
            "since" => since = Some(n),
            _ => limit = Some(n.clamp(1, 10_000)),
        }
    }
    match a
        .revocations(env, since.unwrap_or(0), limit.unwrap_or(1000))
        .await
    {
        Ok(v) => {
            let mut r = axum::Json(v).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => {
            e.report(&env.env.name, "revocations");
            oauth_error(&e)
        }
    }
}
