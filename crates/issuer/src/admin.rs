//! The admin API under `/admin/v1/`: environments, keys (list, rotate,
//! retire, revoke), clients (create, list, show, update, delete, rotate
//! secret), minting tokens for users a login service authenticated, admin
//! tokens (list, create, revoke) and the audit chain.
//!
//! Every route but `/admin/v1/openapi.json` needs `Authorization: Bearer
//! <token>`: an admin token (made by `keyward admin-token create` or by
//! this API; only its SHA-256 is stored) or an access token of the trusted
//! SSO issuer. Each route requires one permission ([`ROUTES`], the
//! catalogue in [`permissions`]), checked by keyward-verify's permission
//! engine against the caller's grants before the handler runs ([`auth`]:
//! [`AdminAuth`], [`AdminPrincipal`], [`require`]). Handlers are thin:
//! parse the request strictly (JSON objects with no unknown fields, at most
//! [`MAX_BODY_BYTES`]), call the same domain functions as the CLI
//! ([`keyring`], [`clients`], [`Authority::mint_for_user`]), map the
//! error. Every change is audited with the caller's actor (`admin:<token
//! id>` or `sso:<subject>`), every refusal as `admin.denied`, and the
//! server's view is reloaded at once so the change is live here (other
//! replicas see it at their next generation poll).
//!
//! Errors are `{"error": code, "error_description": text}`: 400 for bad
//! input, 401 without a valid token, 403 `insufficient_scope` (with
//! `"permission"` naming what is missing) without the permission, 404 for
//! an unknown environment, key or client, 409 when the request conflicts
//! with the current state, 413/415 for an oversize or non-JSON body, 500
//! for a server-side failure, whose cause is logged and never sent.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{
    FromRequest, FromRequestParts, MatchedPath, Path, RawPathParams, RawQuery, Request, State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::{Extension, Router};
use keyward_store::{
    ClientAuth, Environment, KeyRecord, KeyStoreName, RotationPolicy, StoreError, Timestamp,
    TlsName,
};
use keyward_verify::BearerError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use crate::authority::Authority;
use crate::clients::{self, NewClient};
use crate::error::IssuerError;
use crate::grants::UserGrant;
use crate::http::{declares_too_large, read_body, BodyRefused};
use crate::keyring::{
    self, AddedKey, Change, FirstKey, KeyChoice, KeyOptions, Origin, RetireOptions,
};
use crate::oauth::{error_chain, ErrorCode, FaultReason, OAuthError};
use crate::rotation::{RotationError, Schedule};
use crate::views::{client_json, env_json, key_json};

pub mod auth;
mod logins;
mod openapi;
pub mod permissions;
pub mod tokens;

pub use auth::{require, AdminAuth, AdminPrincipal, Denied, PrincipalKind, Refusal};
pub use openapi::openapi;
pub use permissions::{EnvAction, Permission};
pub use tokens::{create_admin_token, NewAdminToken};

/// Largest accepted request body: the same everywhere.
pub use crate::http::MAX_BODY_BYTES;
/// The realm of the `WWW-Authenticate` challenge.
pub const REALM: &str = "keyward-admin";
/// Longest accepted bearer token: admin tokens are ~47 characters, the
/// trusted issuer's access tokens are JWTs of at most this size.
const MAX_TOKEN_LEN: usize = keyward_jose::DEFAULT_MAX_TOKEN_LEN;
/// Longest lead time a rotation may ask for (10 years).
const MAX_LEAD_SECS: i64 = 10 * 365 * 24 * 3600;
/// Longest reason for a key revocation.
const MAX_REASON_LEN: usize = 500;

// ---------------------------------------------------------------------------
// Errors

/// An admin API error: a status, a stable code and a description that says
/// what was wrong without internals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// For a 403: the permission missing (sent as `"permission"` and in
    /// the challenge's `scope`).
    pub permission: Option<String>,
    /// For a 401 from the trusted issuer's policy: the RFC 6750 `error`.
    challenge_error: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            description: description.into(),
            permission: None,
            challenge_error: None,
        }
    }

    /// 403 `insufficient_scope` naming the permission missing.
    pub fn forbidden(d: Denied) -> Self {
        ApiError {
            permission: Some(d.permission),
            ..ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", d.description)
        }
    }

    /// 401 (or 500) for a request without an authenticated caller.
    pub fn from_refusal(r: &Refusal) -> Self {
        match r {
            Refusal::ServerError => ApiError::server_error(),
            Refusal::Sso(e) => ApiError {
                challenge_error: e.bearer_error(),
                ..ApiError::unauthorized(r.description())
            },
            _ => ApiError::unauthorized(r.description()),
        }
    }

    pub(crate) fn bad_request(d: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }

    pub(crate) fn not_found(d: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", d)
    }

    fn conflict(d: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "conflict", d)
    }

    fn unavailable(d: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            d,
        )
    }

    fn unauthorized(d: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", d)
    }

    /// A server-side failure: the cause (with its sources) is logged once
    /// and counted in `keyward_server_errors_total{reason}`, the caller gets
    /// a generic description.
    fn internal(reason: FaultReason, cause: &(dyn std::error::Error + 'static)) -> Self {
        crate::oauth::report(reason, "-", "admin", &error_chain(cause));
        ApiError::server_error()
    }

    /// The answer to a server-side failure already reported.
    fn server_error() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the server could not complete the request",
        )
    }

    /// Maps a domain error by its variant (see [`crate::error`]): 400 for
    /// input the domain does not accept, 409 for a request that does not
    /// fit the current state or needs `force`, 503 for what a retry may
    /// get, the store's own mapping for store errors, and 500 (cause
    /// logged, never sent) for the rest.
    pub(crate) fn from_issuer(e: IssuerError) -> Self {
        match e {
            IssuerError::Invalid { .. } | IssuerError::Rotation(RotationError::NegativeLead(_)) => {
                ApiError::bad_request(error_chain(&e))
            }
            IssuerError::Conflict(m) | IssuerError::NeedsForce(m) => ApiError::conflict(m),
            IssuerError::Rotation(r) => ApiError::conflict(r.to_string()),
            IssuerError::Unavailable(m) => ApiError::unavailable(m),
            // The device is down, slow or throttling: a retry may succeed.
            IssuerError::KeyStore(k) if k.is_transient() => {
                tracing::warn!(error = %error_chain(&k), "a key store is unavailable");
                ApiError::unavailable(format!(
                    "the {} key store is unavailable ({}); nothing was changed, retry later",
                    k.store().unwrap_or("device"),
                    k.reason()
                ))
            }
            // An algorithm the store cannot hold: store, algorithm and why.
            IssuerError::KeyStore(k @ keyward_signers::SignerError::Unsupported { .. }) => {
                ApiError::bad_request(k.to_string())
            }
            // A store not configured here, or refused by its own policy (a
            // KMS access denied names principals and accounts): the caller
            // learns which store, the log has the whole message.
            IssuerError::KeyStore(k @ keyward_signers::SignerError::Config { .. }) => {
                tracing::warn!(error = %error_chain(&k), "a key store refused: its configuration or permissions");
                ApiError::bad_request(format!(
                    "the {} key store is not configured on this server, or refused the operation (its configuration or permissions); nothing was changed. The server's log says which",
                    k.store().unwrap_or("device")
                ))
            }
            IssuerError::KeyStore(_) => ApiError::internal(FaultReason::Keys, &e),
            IssuerError::Store(s) => ApiError::from_store(s),
            // This replica cannot seal under the store's root key yet.
            IssuerError::RootKeyStale {
                held,
                expected,
                reason,
            } => {
                tracing::warn!(%held, %expected, reason = %error_chain(&reason), "cannot seal a new key: this server does not hold the store's root key");
                ApiError::unavailable(format!("this server holds root key {held} but the store's keys are sealed under root key {expected}; it cannot seal a new key until its root key source gives the new key (or it is restarted with it): retry on another replica or later"))
            }
            IssuerError::RootKeyUnavailable { ref expected, .. } => {
                tracing::warn!(error = %error_chain(&e), "cannot seal a new key: this server cannot load the store's root key");
                ApiError::unavailable(format!("this server cannot load the store's root key {expected} now (is its device up?); nothing was changed: retry later"))
            }
            IssuerError::Jose(_) | IssuerError::KeyGeneration(_) => {
                ApiError::internal(FaultReason::Keys, &e)
            }
            other => ApiError::internal(FaultReason::Internal, &other),
        }
    }

    pub(crate) fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
            StoreError::Conflict { .. } | StoreError::IssuerTaken { .. } => {
                ApiError::conflict(e.to_string())
            }
            StoreError::Invalid { .. } => ApiError::bad_request(e.to_string()),
            // The root key changed under a write (a root-key rotation
            // committed meanwhile): nothing was written; a retry seals
            // under the new key.
            StoreError::WrongRootKey { .. } => ApiError::unavailable(
                "the store's root key changed during the request; nothing was changed, retry",
            ),
            // The root key's device (HSM, KMS) cannot seal or open now:
            // nothing was written; a retry may succeed.
            StoreError::Seal(keyward_jose::SealError::Unavailable { store, reason, .. }) => {
                tracing::warn!(error = %error_chain(&e), "the root key's device cannot be used");
                ApiError::unavailable(format!(
                    "the root key's {store} key store cannot be used now ({reason}); nothing was changed, retry later"
                ))
            }
            other => ApiError::internal(FaultReason::Store, &other),
        }
    }

    /// Maps an error of [`Authority::mint_for_user`] in `env`, reporting
    /// a `server_error`'s cause.
    fn from_oauth(e: OAuthError, env: &str) -> Self {
        match e.code {
            ErrorCode::ServerError => {
                e.report(env, "admin");
                ApiError::server_error()
            }
            ErrorCode::TemporarilyUnavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.code.as_str(),
                e.description,
            ),
            code => ApiError::new(StatusCode::BAD_REQUEST, code.as_str(), e.description),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "error_description": self.description});
        if let Some(p) = &self.permission {
            body["permission"] = json!(p);
        }
        let mut r = reply(self.status, body);
        // RFC 6750 §3: the challenge, with the error and (for 403) the
        // scope that would do; quotes and backslashes never reach it.
        let quoted = |v: &str| -> String {
            v.chars()
                .map(|c| {
                    if c == '"' || c == '\\' || !(' '..='~').contains(&c) {
                        '\''
                    } else {
                        c
                    }
                })
                .take(300)
                .collect()
        };
        let challenge = match (self.status, self.challenge_error, &self.permission) {
            (StatusCode::UNAUTHORIZED, None, _) => Some(format!("Bearer realm=\"{REALM}\"")),
            (StatusCode::UNAUTHORIZED, Some(e), _) => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"{e}\", error_description=\"{}\"",
                quoted(&self.description)
            )),
            (StatusCode::FORBIDDEN, _, Some(p)) => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", error_description=\"{}\", scope=\"{}\"",
                quoted(&self.description),
                quoted(p)
            )),
            _ => None,
        };
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

/// A JSON response that no cache keeps (some carry secrets).
fn reply(status: StatusCode, v: Value) -> Response {
    let mut r = (status, axum::Json(v)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

type ApiResult = Result<Response, ApiError>;

// ---------------------------------------------------------------------------
// Extractors

/// A JSON request body: `application/json`, at most [`MAX_BODY_BYTES`],
/// deserialized strictly. An empty body reads as `{}` (so actions whose
/// fields are all optional need none).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let is_json = json_content_type(req.headers());
        if declares_too_large(req.headers()) {
            return Err(refused(BodyRefused::TooLarge));
        }
        let body = read_body(req.into_body()).await.map_err(refused)?;
        let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "the body must be application/json",
            ));
        } else {
            &body
        };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// 413 (or 408 / 400 for a body the client failed to send in time / at
/// all), answered like the OAuth endpoints do.
fn refused(r: BodyRefused) -> ApiError {
    ApiError::new(r.status(), "invalid_request", r.description())
}

fn json_content_type(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Path parameters, with a JSON error when they do not decode.
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| PathParams(v))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// `Some(Some(v))` for a value, `Some(None)` for an explicit `null`, `None`
/// (with `#[serde(default)]`) for an absent field.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

// ---------------------------------------------------------------------------
// Authentication and authorization

/// The caller of a request, as the guard found it.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub principal: Arc<AdminPrincipal>,
    /// `METHOD /path` as requested, for audit records.
    pub route: Arc<str>,
}

impl Caller {
    fn actor(&self) -> String {
        self.principal.actor()
    }
}

#[derive(Clone)]
pub(crate) struct AdminState {
    authority: Arc<Authority>,
    auth: AdminAuth,
}

impl AdminState {
    /// [`AdminAuth::authorize`] as an API error.
    async fn authorize(&self, caller: &Caller, p: &Permission) -> Result<(), ApiError> {
        self.auth
            .authorize(&caller.principal, p, &caller.route)
            .await
            .map_err(ApiError::forbidden)
    }
}

/// The admin token of `Authorization: Bearer <token>`, read by keyward's
/// one bearer parser ([`keyward_verify::bearer`], RFC 6750 §2.1) and at most
/// [`MAX_TOKEN_LEN`] bytes; otherwise the refusal, saying which rule failed.
fn bearer(h: &HeaderMap) -> Result<&str, Refusal> {
    let malformed = |why: &dyn std::fmt::Display| {
        Refusal::Malformed(format!(
            "malformed Authorization header ({why}): use Bearer <token>"
        ))
    };
    match keyward_verify::bearer_token(h) {
        Ok(token) if token.len() <= MAX_TOKEN_LEN => Ok(token),
        Ok(_) => Err(malformed(&format_args!(
            "the token is longer than {MAX_TOKEN_LEN} bytes"
        ))),
        Err(BearerError::Missing) => Err(Refusal::Missing),
        Err(e) => Err(malformed(&e)),
    }
}

/// What a route requires of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: the OpenAPI document.
    Public,
    /// A permission of its own (`keyward.audit.read`, ...).
    Global(&'static str),
    /// An action on the environment of the path's `{env}`.
    Env(EnvAction),
    /// An action on the environment of the path's key `{kid}` (an unknown
    /// key is 404 to any authenticated caller).
    KeyEnv(EnvAction),
    /// An action on the environment the request body names (checked once
    /// the body is read).
    BodyEnv(EnvAction),
    /// Answers only with the environments the caller holds the action on.
    EachEnv(EnvAction),
}

impl Need {
    /// The permission as the OpenAPI document states it.
    pub fn permission_text(self) -> Option<&'static str> {
        match self {
            Need::Public => None,
            Need::Global(p) => Some(p),
            Need::Env(a) | Need::KeyEnv(a) | Need::BodyEnv(a) | Need::EachEnv(a) => {
                Some(a.template())
            }
        }
    }

    /// Where `{env}` comes from, for the OpenAPI document.
    pub fn env_from(self) -> Option<&'static str> {
        match self {
            Need::Env(_) => Some("`{env}` is the environment of the path"),
            Need::KeyEnv(_) => Some("`{env}` is the environment of the key `{kid}`"),
            Need::BodyEnv(_) => Some("`{env}` is the `name` in the body"),
            Need::EachEnv(_) => Some("only environments the caller holds it for are listed"),
            _ => None,
        }
    }
}

/// One admin route: method, path, what it requires, its handler.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub need: Need,
    handler: fn() -> MethodRouter<AdminState>,
}

/// Every admin route. The router is built from this table, and the
/// OpenAPI document states each route's permission from it.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/admin/v1/openapi.json",
        need: Need::Public,
        handler: || get(openapi::openapi_json),
    },
    Route {
        method: "GET",
        path: "/admin/v1/envs",
        need: Need::EachEnv(EnvAction::Read),
        handler: || get(list_envs),
    },
    Route {
        method: "POST",
        path: "/admin/v1/envs",
        need: Need::BodyEnv(EnvAction::Write),
        handler: || post(create_env),
    },
    Route {
        method: "GET",
        path: "/admin/v1/envs/{env}",
        need: Need::Env(EnvAction::Read),
        handler: || get(show_env),
    },
    Route {
        method: "PATCH",
        path: "/admin/v1/envs/{env}",
        need: Need::Env(EnvAction::Write),
        handler: || patch(update_env),
    },
    Route {
        method: "DELETE",
        path: "/admin/v1/envs/{env}",
        need: Need::Env(EnvAction::Delete),
        handler: || delete(delete_env),
    },
    Route {
        method: "GET",
        path: "/admin/v1/envs/{env}/keys",
        need: Need::Env(EnvAction::KeysRead),
        handler: || get(list_keys),
    },
    Route {
        method: "POST",
        path: "/admin/v1/envs/{env}/keys/rotate",
        need: Need::Env(EnvAction::KeysRotate),
        handler: || post(rotate_key),
    },
    Route {
        method: "POST",
        path: "/admin/v1/keys/{kid}/retire",
        need: Need::KeyEnv(EnvAction::KeysRetire),
        handler: || post(retire_key),
    },
    Route {
        method: "POST",
        path: "/admin/v1/keys/{kid}/revoke",
        need: Need::KeyEnv(EnvAction::KeysRevoke),
        handler: || post(revoke_key),
    },
    Route {
        method: "GET",
        path: "/admin/v1/envs/{env}/clients",
        need: Need::Env(EnvAction::ClientsRead),
        handler: || get(list_clients),
    },
    Route {
        method: "POST",
        path: "/admin/v1/envs/{env}/clients",
        need: Need::Env(EnvAction::ClientsWrite),
        handler: || post(create_client),
    },
    Route {
        method: "GET",
        path: "/admin/v1/envs/{env}/clients/{client_id}",
        need: Need::Env(EnvAction::ClientsRead),
        handler: || get(show_client),
    },
    Route {
        method: "PATCH",
        path: "/admin/v1/envs/{env}/clients/{client_id}",
        need: Need::Env(EnvAction::ClientsWrite),
        handler: || patch(update_client),
    },
    Route {
        method: "DELETE",
        path: "/admin/v1/envs/{env}/clients/{client_id}",
        need: Need::Env(EnvAction::ClientsWrite),
        handler: || delete(delete_client),
    },
    Route {
        method: "POST",
        path: "/admin/v1/envs/{env}/clients/{client_id}/rotate-secret",
        need: Need::Env(EnvAction::ClientsWrite),
        handler: || post(rotate_secret),
    },
    Route {
        method: "POST",
        path: "/admin/v1/envs/{env}/tokens",
        need: Need::Env(EnvAction::TokensMint),
        handler: || post(mint_token),
    },
    Route {
        method: "GET",
        path: "/admin/v1/envs/{env}/login-requests/{challenge}",
        need: Need::Env(EnvAction::LoginsAccept),
        handler: || get(logins::get_login),
    },
    Route {
        method: "POST",
        path: "/admin/v1/envs/{env}/login-requests/{challenge}/accept",
        need: Need::Env(EnvAction::LoginsAccept),
        handler: || post(logins::accept_login),
    },
    Route {
        method: "POST",
        path: "/admin/v1/envs/{env}/login-requests/{challenge}/reject",
        need: Need::Env(EnvAction::LoginsAccept),
        handler: || post(logins::reject_login),
    },
    Route {
        method: "GET",
        path: "/admin/v1/envs/{env}/consent-requests/{challenge}",
        need: Need::Env(EnvAction::LoginsAccept),
        handler: || get(logins::get_consent),
    },
    Route {
        method: "POST",
        path: "/admin/v1/envs/{env}/consent-requests/{challenge}/accept",
        need: Need::Env(EnvAction::LoginsAccept),
        handler: || post(logins::accept_consent),
    },
    Route {
        method: "POST",
        path: "/admin/v1/envs/{env}/consent-requests/{challenge}/reject",
        need: Need::Env(EnvAction::LoginsAccept),
        handler: || post(logins::reject_consent),
    },
    Route {
        method: "GET",
        path: "/admin/v1/admin-tokens",
        need: Need::Global(permissions::ADMIN_TOKENS_READ),
        handler: || get(tokens::list),
    },
    Route {
        method: "POST",
        path: "/admin/v1/admin-tokens",
        need: Need::Global(permissions::ADMIN_TOKENS_CREATE),
        handler: || post(tokens::create),
    },
    Route {
        method: "POST",
        path: "/admin/v1/admin-tokens/{id}/revoke",
        need: Need::Global(permissions::ADMIN_TOKENS_REVOKE),
        handler: || post(tokens::revoke),
    },
    Route {
        method: "GET",
        path: "/admin/v1/audit",
        need: Need::Global(permissions::AUDIT_READ),
        handler: || get(list_audit),
    },
];

/// The guard of one route: authenticates the caller, checks what `need`
/// asks before the handler runs (or leaves it to the handler, for a body
/// or a listing), and hands the handler the [`Caller`].
async fn guard(
    State((s, need)): State<(AdminState, Need)>,
    matched: Option<MatchedPath>,
    params: RawPathParams,
    mut req: Request,
    next: Next,
) -> Response {
    // The body limit comes first, as on every endpoint.
    if declares_too_large(req.headers()) {
        return refused(BodyRefused::TooLarge).into_response();
    }
    let route: Arc<str> = format!(
        "{} {}",
        req.method(),
        matched.as_ref().map_or(req.uri().path(), |m| m.as_str())
    )
    .into();
    let presented = match bearer(req.headers()) {
        Ok(t) => Ok(t.to_owned()),
        Err(r) => Err(r),
    };
    let principal = match presented {
        Ok(t) => s.auth.authenticate(&t, &route).await,
        Err(r) => {
            s.auth.refuse(&route, &r).await;
            Err(r)
        }
    };
    let principal = match principal {
        Ok(p) => Arc::new(p),
        Err(r) => return ApiError::from_refusal(&r).into_response(),
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    let permission = match need {
        Need::Global(p) => Some(Permission::Global(p)),
        Need::Env(a) => param("env").map(|env| Permission::env(a, &env)),
        Need::KeyEnv(a) => {
            let Some(kid) = param("kid") else {
                return ApiError::bad_request("no key id in the path").into_response();
            };
            match s.authority.store.key(&kid).await {
                Ok(k) => Some(Permission::env(a, &k.env)),
                Err(e) => return ApiError::from_store(e).into_response(),
            }
        }
        Need::Public | Need::BodyEnv(_) | Need::EachEnv(_) => None,
    };
    let caller = Caller { principal, route };
    if let Some(p) = permission {
        if let Err(e) = s.authorize(&caller, &p).await {
            return e.into_response();
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The admin API's routes, to merge into the application router.
pub fn router<S>(auth: AdminAuth) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let state = AdminState {
        authority: auth.authority().clone(),
        auth,
    };
    let mut r = Router::new();
    for route in ROUTES {
        let handler = (route.handler)();
        let handler = match route.need {
            Need::Public => handler,
            need => {
                handler.route_layer(middleware::from_fn_with_state((state.clone(), need), guard))
            }
        };
        r = r.route(route.path, handler);
    }
    r.with_state(state)
}

/// After a committed change: make it live on this replica now. A failure
/// here does not undo the change; the next generation poll retries.
pub(crate) async fn reload(a: &Authority) {
    if let Err(e) = a.reload().await {
        tracing::warn!(error = %error_chain(&e), "admin change saved, but reloading the server's view failed; the next poll retries");
    }
}

// ---------------------------------------------------------------------------
// Environments

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEnv {
    name: String,
    issuer: String,
    #[serde(default)]
    policy: Option<RotationPolicy>,
    /// Make the environment's first key (per the policy) with it; default true.
    #[serde(default = "default_true")]
    first_key: bool,
    /// Where its keys are made: local (default), pkcs11 or aws-kms.
    #[serde(default)]
    key_store: KeyStoreName,
}

/// `PATCH /admin/v1/envs/{env}`: what changes (absent: unchanged).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateEnv {
    /// Where new keys are made from now on; existing keys keep their store.
    #[serde(default)]
    key_store: Option<KeyStoreName>,
    /// Where browsers log in; `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    login_url: Option<Option<String>>,
    /// Where browsers consent; `null`: the login URL.
    #[serde(default, deserialize_with = "nullable")]
    consent_url: Option<Option<String>>,
}

/// The environments the caller may read (others are left out).
async fn list_envs(State(s): State<AdminState>, Extension(caller): Extension<Caller>) -> ApiResult {
    let envs = s
        .authority
        .store
        .environments()
        .await
        .map_err(ApiError::from_store)?;
    Ok(reply(
        StatusCode::OK,
        envs.iter()
            .filter(|e| {
                caller
                    .principal
                    .may(&Permission::env(EnvAction::Read, &e.name))
            })
            .map(env_json)
            .collect(),
    ))
}

async fn create_env(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    JsonBody(b): JsonBody<CreateEnv>,
) -> ApiResult {
    s.authorize(&caller, &Permission::env(EnvAction::Write, &b.name))
        .await?;
    let a = &s.authority;
    let env = Environment {
        name: b.name,
        issuer: b.issuer,
        policy: b.policy.unwrap_or_default(),
        created_at: a.now(),
        key_store: b.key_store,
    };
    let opts = KeyOptions {
        kid: None,
        owner: None,
        description: Some("first key, made with the environment".into()),
        origin: Origin::Generated,
    };
    let actor = caller.actor();
    let at = Change {
        now: env.created_at,
        actor: &actor,
    };
    let root = match b.first_key {
        true => Some(a.sealing_root().await.map_err(ApiError::from_issuer)?),
        false => None,
    };
    let first = root.as_deref().map(|root| FirstKey {
        root,
        stores: a.key_stores(),
        opts: &opts,
    });
    // A taken name or issuer URL is refused before the slow generation.
    let rec = keyring::create_environment(&a.store, &env, first, at)
        .await
        .map_err(ApiError::from_issuer)?;
    reload(a).await;
    let mut v = env_json(&env);
    v["first_key"] = rec.map_or(Value::Null, |k| key_json(&k, at.now));
    Ok(reply(StatusCode::CREATED, v))
}

/// `DELETE /admin/v1/envs/{env}[?force=true]`.
async fn delete_env(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams(env): PathParams<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let mut force = None;
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        let value = match (k.as_ref(), v.as_ref()) {
            ("force", "true") => true,
            ("force", "false") => false,
            ("force", _) => return Err(ApiError::bad_request("force is true or false")),
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?} (only force)"
                )))
            }
        };
        if force.replace(value).is_some() {
            return Err(ApiError::bad_request("force is given twice"));
        }
    }
    let a = &s.authority;
    let actor = caller.actor();
    let at = Change {
        now: a.now(),
        actor: &actor,
    };
    let d = keyring::delete_environment(&a.store, &env, force.unwrap_or(false), at)
        .await
        .map_err(ApiError::from_issuer)?;
    reload(a).await;
    Ok(reply(
        StatusCode::OK,
        json!({"deleted": env, "keys": d.keys, "published_keys": d.published_keys, "clients": d.clients}),
    ))
}

async fn update_env(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams(env): PathParams<String>,
    JsonBody(b): JsonBody<UpdateEnv>,
) -> ApiResult {
    let a = &s.authority;
    let mut e = a
        .store
        .environment(&env)
        .await
        .map_err(ApiError::from_store)?;
    let login_change = b.login_url.is_some() || b.consent_url.is_some();
    if let Some(k) = b.key_store {
        // A store this server cannot reach, or that cannot make the
        // environment's keys, is refused: its next rotation would fail.
        keyring::check_store_for(a.key_stores(), k, &e.policy)
            .await
            .map_err(ApiError::from_issuer)?;
        e.key_store = k;
    }
    let actor = caller.actor();
    let at = Change {
        now: a.now(),
        actor: &actor,
    };
    let mut settings = a
        .store
        .login_settings(&env)
        .await
        .map_err(ApiError::from_store)?;
    if login_change {
        if let Some(v) = b.login_url {
            settings.login_url = v;
        }
        if let Some(v) = b.consent_url {
            settings.consent_url = v;
        }
        crate::login::set_login_settings(&a.store, &env, &settings, at)
            .await
            .map_err(ApiError::from_issuer)?;
    }
    if b.key_store.is_some() || !login_change {
        keyring::update_environment(&a.store, &e, at)
            .await
            .map_err(ApiError::from_issuer)?;
    }
    reload(a).await;
    let mut v = env_json(&e);
    crate::login::settings_json(&mut v, &settings);
    Ok(reply(StatusCode::OK, v))
}

async fn show_env(State(s): State<AdminState>, PathParams(env): PathParams<String>) -> ApiResult {
    let e = s
        .authority
        .store
        .environment(&env)
        .await
        .map_err(ApiError::from_store)?;
    let settings = s
        .authority
        .store
        .login_settings(&env)
        .await
        .map_err(ApiError::from_store)?;
    let mut v = env_json(&e);
    crate::login::settings_json(&mut v, &settings);
    Ok(reply(StatusCode::OK, v))
}

// ---------------------------------------------------------------------------
// Keys

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateKey {
    #[serde(default)]
    pub(crate) immediate: bool,
    #[serde(default)]
    pub(crate) lead_secs: Option<i64>,
    /// Rotate to this algorithm; the environment's policy takes it.
    #[serde(default)]
    pub(crate) alg: Option<keyward_jose::Algorithm>,
    /// RSA size of the new key; the environment's policy takes it.
    #[serde(default)]
    pub(crate) rsa_bits: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetireKey {
    #[serde(default)]
    pub(crate) force: bool,
    #[serde(default)]
    pub(crate) accept_outage: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeKey {
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

async fn list_keys(State(s): State<AdminState>, PathParams(env): PathParams<String>) -> ApiResult {
    let a = &s.authority;
    let keys = a.store.keys(&env).await.map_err(ApiError::from_store)?;
    let now = a.now();
    Ok(reply(
        StatusCode::OK,
        Value::Array(keys.iter().map(|k| key_json(k, now)).collect()),
    ))
}

async fn rotate_key(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams(env): PathParams<String>,
    JsonBody(b): JsonBody<RotateKey>,
) -> ApiResult {
    let added = rotate(&s.authority, &caller.actor(), &env, b).await?;
    let now = added.key.created_at;
    let mut v = key_json(&added.key, now);
    v["retiring"] = added
        .plan
        .retiring
        .iter()
        .map(|k| key_json(k, now))
        .collect();
    Ok(reply(StatusCode::CREATED, v))
}

/// Rotates `env`'s key as `b` asks, for `actor` (the admin API's and the
/// console's one rotation).
pub(crate) async fn rotate(
    a: &Authority,
    actor: &str,
    env: &str,
    b: RotateKey,
) -> Result<AddedKey, ApiError> {
    if b.immediate && b.lead_secs.is_some() {
        return Err(ApiError::bad_request(
            "immediate and lead_secs exclude each other",
        ));
    }
    if b.lead_secs
        .is_some_and(|l| !(0..=MAX_LEAD_SECS).contains(&l))
    {
        return Err(ApiError::bad_request(format!(
            "lead_secs must be between 0 and {MAX_LEAD_SECS}"
        )));
    }
    let schedule = Schedule::requested(b.immediate, b.lead_secs);
    // A rotation that names an algorithm or a size moves the policy to it.
    let choice = if b.alg.is_some() || b.rsa_bits.is_some() {
        let e = a
            .store
            .environment(env)
            .await
            .map_err(ApiError::from_store)?;
        KeyChoice::for_rotation(&e.policy, b.alg, b.rsa_bits).map_err(ApiError::from_issuer)?
    } else {
        KeyChoice::Policy
    };
    let opts = KeyOptions {
        kid: None,
        owner: None,
        description: Some("rotation".into()),
        origin: Origin::Generated,
    };
    let at = || Change {
        now: a.now(),
        actor,
    };
    let root = a.sealing_root().await.map_err(ApiError::from_issuer)?;
    // An unknown environment or a rotation in progress is refused before the slow generation.
    let added = keyring::generate_key(
        &a.store,
        &root,
        a.key_stores(),
        env,
        choice,
        &opts,
        schedule,
        at,
    )
    .await
    .map_err(ApiError::from_issuer)?;
    reload(a).await;
    Ok(added)
}

async fn retire_key(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams(kid): PathParams<String>,
    JsonBody(b): JsonBody<RetireKey>,
) -> ApiResult {
    let (rec, now) = retire(&s.authority, &caller.actor(), &kid, b).await?;
    Ok(reply(StatusCode::OK, key_json(&rec, now)))
}

/// Retires key `kid` for `actor`; the key as retired and the time used.
pub(crate) async fn retire(
    a: &Authority,
    actor: &str,
    kid: &str,
    b: RetireKey,
) -> Result<(KeyRecord, Timestamp), ApiError> {
    let at = Change {
        now: a.now(),
        actor,
    };
    let opts = RetireOptions {
        force: b.force,
        accept_outage: b.accept_outage,
    };
    let rec = keyring::retire_key(&a.store, kid, at, opts)
        .await
        .map_err(ApiError::from_issuer)?;
    reload(a).await;
    Ok((rec, at.now))
}

async fn revoke_key(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams(kid): PathParams<String>,
    JsonBody(b): JsonBody<RevokeKey>,
) -> ApiResult {
    let (rec, was_signing, now) = revoke(&s.authority, &caller.actor(), &kid, b).await?;
    let mut v = key_json(&rec, now);
    v["was_signing"] = json!(was_signing);
    Ok(reply(StatusCode::OK, v))
}

/// Revokes key `kid` for `actor`: the key as revoked, whether it was
/// signing, and the time used.
pub(crate) async fn revoke(
    a: &Authority,
    actor: &str,
    kid: &str,
    b: RevokeKey,
) -> Result<(KeyRecord, bool, Timestamp), ApiError> {
    if b.reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_LEN) {
        return Err(ApiError::bad_request(format!(
            "reason is at most {MAX_REASON_LEN} bytes"
        )));
    }
    let at = Change {
        now: a.now(),
        actor,
    };
    let (rec, was_signing) =
        keyring::revoke_key(&a.store, a.key_stores(), kid, at, b.reason.as_deref())
            .await
            .map_err(ApiError::from_issuer)?;
    reload(a).await;
    Ok((rec, was_signing, at.now))
}

// ---------------------------------------------------------------------------
// Clients

fn default_grant_types() -> Vec<String> {
    vec!["client_credentials".into(), "refresh_token".into()]
}

fn default_auth() -> ClientAuth {
    ClientAuth::ClientSecretBasic
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateClient {
    name: String,
    #[serde(default = "default_auth")]
    auth: ClientAuth,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default = "default_grant_types")]
    grant_types: Vec<String>,
    #[serde(default)]
    jwks: Option<Map<String, Value>>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    access_token_ttl_secs: Option<i64>,
    #[serde(default)]
    refresh_token_ttl_secs: Option<i64>,
    #[serde(default)]
    dpop_bound_access_tokens: bool,
    /// Token exchange (RFC 8693): trusted issuers whose tokens it may exchange.
    #[serde(default)]
    exchange_issuers: Vec<String>,
    // RFC 8705 §2.1.2 and §3.4 client metadata.
    #[serde(default)]
    tls_client_auth_subject_dn: Option<String>,
    #[serde(default)]
    tls_client_auth_san_dns: Option<String>,
    #[serde(default)]
    tls_client_auth_san_uri: Option<String>,
    #[serde(default)]
    tls_client_auth_san_ip: Option<String>,
    #[serde(default)]
    tls_client_auth_san_email: Option<String>,
    #[serde(default)]
    tls_client_certificate_bound_access_tokens: Option<bool>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    first_party: bool,
}

/// A partial update: absent fields stay; `null` clears what may be cleared.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchClient {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    auth: Option<ClientAuth>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    audiences: Option<Vec<String>>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    jwks: Option<Option<Map<String, Value>>>,
    #[serde(default, deserialize_with = "nullable")]
    jwks_uri: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    access_token_ttl_secs: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    refresh_token_ttl_secs: Option<Option<i64>>,
    #[serde(default)]
    dpop_bound_access_tokens: Option<bool>,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
    #[serde(default)]
    post_logout_redirect_uris: Option<Vec<String>>,
    #[serde(default)]
    first_party: Option<bool>,
    #[serde(default)]
    exchange_issuers: Option<Vec<String>>,
}

/// An empty body (or `{}`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

fn jwks_text(m: Map<String, Value>) -> String {
    Value::Object(m).to_string()
}

async fn list_clients(
    State(s): State<AdminState>,
    PathParams(env): PathParams<String>,
) -> ApiResult {
    let list = s
        .authority
        .store
        .clients(&env)
        .await
        .map_err(ApiError::from_store)?;
    Ok(reply(
        StatusCode::OK,
        Value::Array(list.iter().map(client_json).collect()),
    ))
}

async fn create_client(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams(env): PathParams<String>,
    JsonBody(b): JsonBody<CreateClient>,
) -> ApiResult {
    let new = NewClient {
        env,
        name: b.name,
        auth: b.auth,
        scopes: b.scopes,
        audiences: b.audiences,
        grant_types: b.grant_types,
        jwks: b.jwks.map(jwks_text),
        jwks_uri: b.jwks_uri,
        access_token_ttl_secs: b.access_token_ttl_secs,
        refresh_token_ttl_secs: b.refresh_token_ttl_secs,
        dpop_bound_access_tokens: b.dpop_bound_access_tokens,
        exchange_issuers: b.exchange_issuers,
        mtls: keyward_store::ClientMtls {
            subject: clients::tls_subject([
                (TlsName::SubjectDn, b.tls_client_auth_subject_dn),
                (TlsName::SanDns, b.tls_client_auth_san_dns),
                (TlsName::SanUri, b.tls_client_auth_san_uri),
                (TlsName::SanIp, b.tls_client_auth_san_ip),
                (TlsName::SanEmail, b.tls_client_auth_san_email),
            ])
            .map_err(ApiError::from_issuer)?,
            bound_tokens: b.tls_client_certificate_bound_access_tokens,
        },
        login: keyward_store::ClientLogin {
            redirect_uris: b.redirect_uris,
            post_logout_redirect_uris: b.post_logout_redirect_uris,
            first_party: b.first_party,
        },
    };
    let reg = register_client(&s.authority, &caller.actor(), new).await?;
    let mut v = client_json(&reg.client);
    v["client_secret"] = json!(reg.secret);
    Ok(reply(StatusCode::CREATED, v))
}

/// Registers a client for `actor`; its secret (if it has one) is in the
/// answer and nowhere else.
pub(crate) async fn register_client(
    a: &Authority,
    actor: &str,
    new: NewClient,
) -> Result<clients::Registered, ApiError> {
    let at = Change {
        now: a.now(),
        actor,
    };
    let reg = clients::create_client(&a.store, new, at)
        .await
        .map_err(ApiError::from_issuer)?;
    reload(a).await;
    Ok(reg)
}

async fn show_client(
    State(s): State<AdminState>,
    PathParams((env, client_id)): PathParams<(String, String)>,
) -> ApiResult {
    let c = s
        .authority
        .store
        .client(&env, &client_id)
        .await
        .map_err(ApiError::from_store)?;
    Ok(reply(StatusCode::OK, client_json(&c)))
}

async fn update_client(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams((env, client_id)): PathParams<(String, String)>,
    JsonBody(p): JsonBody<PatchClient>,
) -> ApiResult {
    let a = &s.authority;
    let mut c = a
        .store
        .client(&env, &client_id)
        .await
        .map_err(ApiError::from_store)?;
    if let Some(v) = p.name {
        c.name = v;
    }
    if let Some(v) = p.auth {
        c.auth = v;
    }
    if let Some(v) = p.scopes {
        c.scopes = v;
    }
    if let Some(v) = p.audiences {
        c.audiences = v;
    }
    if let Some(v) = p.grant_types {
        c.grant_types = v;
    }
    if let Some(v) = p.exchange_issuers {
        c.exchange_issuers = v;
    }
    // The client's keys come from one place: naming one source replaces both.
    if p.jwks.is_some() || p.jwks_uri.is_some() {
        c.jwks = p.jwks.flatten().map(jwks_text);
        c.jwks_uri = p.jwks_uri.flatten();
    }
    if let Some(v) = p.access_token_ttl_secs {
        c.access_token_ttl_secs = v;
    }
    if let Some(v) = p.refresh_token_ttl_secs {
        c.refresh_token_ttl_secs = v;
    }
    if let Some(v) = p.dpop_bound_access_tokens {
        c.dpop_bound_access_tokens = v;
    }
    if let Some(v) = p.redirect_uris {
        c.login.redirect_uris = v;
    }
    if let Some(v) = p.post_logout_redirect_uris {
        c.login.post_logout_redirect_uris = v;
    }
    if let Some(v) = p.first_party {
        c.login.first_party = v;
    }
    let actor = caller.actor();
    let at = Change {
        now: a.now(),
        actor: &actor,
    };
    let c = clients::update_client(&a.store, c, at)
        .await
        .map_err(ApiError::from_issuer)?;
    reload(a).await;
    Ok(reply(StatusCode::OK, client_json(&c)))
}

async fn delete_client(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams((env, client_id)): PathParams<(String, String)>,
) -> ApiResult {
    remove_client(&s.authority, &caller.actor(), &env, &client_id).await?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Deletes client `env/client_id` for `actor`.
pub(crate) async fn remove_client(
    a: &Authority,
    actor: &str,
    env: &str,
    client_id: &str,
) -> Result<(), ApiError> {
    let at = Change {
        now: a.now(),
        actor,
    };
    clients::delete_client(&a.store, env, client_id, at)
        .await
        .map_err(ApiError::from_issuer)?;
    reload(a).await;
    Ok(())
}

async fn rotate_secret(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams((env, client_id)): PathParams<(String, String)>,
    JsonBody(NoFields {}): JsonBody<NoFields>,
) -> ApiResult {
    let secret = new_client_secret(&s.authority, &caller.actor(), &env, &client_id).await?;
    Ok(reply(
        StatusCode::OK,
        json!({"client_id": client_id, "client_secret": secret}),
    ))
}

/// Gives client `env/client_id` a new secret for `actor`; the secret is
/// in the answer and nowhere else.
pub(crate) async fn new_client_secret(
    a: &Authority,
    actor: &str,
    env: &str,
    client_id: &str,
) -> Result<String, ApiError> {
    let at = Change {
        now: a.now(),
        actor,
    };
    let secret = clients::rotate_secret(&a.store, env, client_id, at)
        .await
        .map_err(ApiError::from_issuer)?;
    reload(a).await;
    Ok(secret)
}

// ---------------------------------------------------------------------------
// Tokens

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintToken {
    sub: String,
    client_id: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default = "default_true")]
    refresh: bool,
}

/// Each entry is one non-empty word (scopes, roles and permissions travel
/// space-separated or as words).
fn check_words(field: &str, v: &[String]) -> Result<(), ApiError> {
    match v
        .iter()
        .find(|w| w.len() > 200 || keyward_jose::claim_text::check_word(w).is_err())
    {
        Some(w) => Err(ApiError::bad_request(format!(
            "invalid entry {:?} in {field}: entries are 1 to 200 characters without white space",
            w.chars().take(40).collect::<String>()
        ))),
        None => Ok(()),
    }
}

async fn mint_token(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams(env): PathParams<String>,
    JsonBody(b): JsonBody<MintToken>,
) -> ApiResult {
    if b.sub.is_empty() || b.sub.len() > 500 {
        return Err(ApiError::bad_request("sub is 1 to 500 characters"));
    }
    check_words("scopes", &b.scopes)?;
    check_words("roles", &b.roles)?;
    check_words("permissions", &b.permissions)?;
    let a = &s.authority;
    // Mint from what the store holds now, not from a view up to a poll old.
    a.reload_if_changed().await.map_err(|e| {
        let reason = match e {
            IssuerError::Store(_) => FaultReason::Store,
            _ => FaultReason::Internal,
        };
        ApiError::internal(reason, &e)
    })?;
    let snapshot = a.snapshot();
    let state = snapshot
        .env(&env)
        .ok_or_else(|| ApiError::not_found(format!("environment {env:?} not found")))?;
    // Minting in the environment the admin API trusts mints admin grants:
    // only those the caller holds.
    let trusted = a.settings.admin_issuer.as_ref().is_some_and(|g| {
        g.issuers()
            .iter()
            .any(|t| t.policy.issuer == state.env.issuer)
    });
    if trusted {
        if let Some(g) = permissions::first_not_held(&caller.principal.grants, &b.permissions) {
            let d = Denied {
                permission: g.to_owned(),
                description: format!("environment {env:?} is the admin API's trusted issuer: its tokens are admin credentials, and your grants do not cover {g}"),
            };
            s.auth
                .denied(&caller.principal, &caller.route, Some(&env), &d)
                .await;
            return Err(ApiError::forbidden(d));
        }
    }
    if snapshot.client(&env, &b.client_id).is_none() {
        return Err(ApiError::not_found(format!(
            "client \"{env}/{}\" not found",
            b.client_id
        )));
    }
    let started = Instant::now();
    let grant = UserGrant {
        subject: b.sub.clone(),
        client_id: b.client_id.clone(),
        scopes: b.scopes,
        audience: b.audience,
        roles: b.roles,
        permissions: b.permissions,
        refresh: b.refresh,
        actor: caller.actor(),
    };
    let minted = a.mint_for_user(state, grant).await;
    let outcome = match &minted {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    crate::metrics::token_request(&env, "admin", outcome, started.elapsed().as_secs_f64());
    // The `token.issue` audit record is written with the refresh token.
    let t = minted.map_err(|e| ApiError::from_oauth(e, &env))?;
    let v = serde_json::to_value(&t).map_err(|e| ApiError::internal(FaultReason::Internal, &e))?;
    let mut r = reply(StatusCode::OK, v);
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(r)
}

// ---------------------------------------------------------------------------
// Audit

/// `GET /admin/v1/audit?after=SEQ&limit=N`: records after `after` (default
/// 0), at most `limit` (default 100, at most 1000), oldest first.
async fn list_audit(State(s): State<AdminState>, RawQuery(query): RawQuery) -> ApiResult {
    let (mut after, mut limit) = (None, None);
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        let slot = match k.as_ref() {
            "after" => &mut after,
            "limit" => &mut limit,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?} (after, limit)"
                )))
            }
        };
        let n: i64 = v
            .parse()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request(format!("{k} is a number from 0")))?;
        if slot.replace(n).is_some() {
            return Err(ApiError::bad_request(format!("{k} is given twice")));
        }
    }
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit is from 1 to 1000"));
    }
    let records = s
        .authority
        .store
        .audit(after.unwrap_or(0), limit)
        .await
        .map_err(ApiError::from_store)?;
    let v = serde_json::to_value(&records)
        .map_err(|e| ApiError::internal(FaultReason::Internal, &e))?;
    Ok(reply(StatusCode::OK, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        let h = |v: &[&str]| {
            let mut m = HeaderMap::new();
            for v in v {
                m.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            m
        };
        assert_eq!(bearer(&h(&["Bearer kwa_abc"])), Ok("kwa_abc"));
        assert_eq!(bearer(&h(&["bearer kwa_abc"])), Ok("kwa_abc"));
        let refusal = |v: &[&str]| ApiError::from_refusal(&bearer(&h(v)).unwrap_err());
        let required =
            ApiError::unauthorized("an admin token is required: Authorization: Bearer <token>");
        assert_eq!(refusal(&[]), required);
        // Each rule of the shared parser, named in the description.
        for (v, why) in [
            (&["Basic kwa_abc"][..], BearerError::OtherScheme),
            (&["Bearer"], BearerError::Empty),
            (&["Bearer "], BearerError::Empty),
            (&["Bearer a b"], BearerError::Space),
            (&["Bearer  kwa_abc"], BearerError::Space),
            (&["Bearer kwa_abc "], BearerError::Space),
            (&["Bearer kwa\"abc"], BearerError::Charset),
            (&["kwa_abc"], BearerError::NoSpace),
            (&["Bearer kwa_a", "Bearer kwa_b"], BearerError::Repeated),
        ] {
            let e = refusal(v);
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{v:?}");
            assert_eq!(
                e.description,
                format!("malformed Authorization header ({why}): use Bearer <token>"),
                "{v:?}"
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(
            refusal(&[&long]).description,
            format!("malformed Authorization header (the token is longer than {MAX_TOKEN_LEN} bytes): use Bearer <token>")
        );
        let longest = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN));
        assert!(bearer(&h(&[&longest])).is_ok());
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = ApiError::from_store(StoreError::Corrupt("secret table detail".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.code, "server_error");
        assert!(!e.description.contains("secret"));
        let e = ApiError::from_issuer(IssuerError::KeyGeneration(join_error()));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
        );
        assert!(!e.description.contains("interrupted"), "{e:?}");
        let e = ApiError::from_store(StoreError::NotFound {
            what: "key",
            name: "k".into(),
        });
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    /// A join error, as a key generation that did not complete gives.
    fn join_error() -> tokio::task::JoinError {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let task = tokio::spawn(std::future::pending::<()>());
                task.abort();
                task.await.unwrap_err()
            })
    }

    #[test]
    fn domain_errors_map_by_variant() {
        let cases = [
            (
                IssuerError::invalid("bad name"),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "bad name",
            ),
            (
                IssuerError::invalid_because(
                    "the client's JWK Set is not usable",
                    keyward_jose::KeyError::UnsupportedCurve("x".into()),
                ),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the client's JWK Set is not usable: unsupported curve \"x\"",
            ),
            (
                IssuerError::Conflict("key k is already retired".into()),
                StatusCode::CONFLICT,
                "conflict",
                "key k is already retired",
            ),
            (
                IssuerError::NeedsForce("pass --force".into()),
                StatusCode::CONFLICT,
                "conflict",
                "pass --force",
            ),
            (
                RotationError::InProgress {
                    kid: "k".into(),
                    activates_at: 0,
                }
                .into(),
                StatusCode::CONFLICT,
                "conflict",
                "a rotation is already in progress: key k activates at 1970-01-01T00:00:00Z",
            ),
            (
                RotationError::NegativeLead(-1).into(),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the lead time cannot be negative",
            ),
            (
                IssuerError::Unavailable("signing pool closed".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "signing pool closed",
            ),
            (
                IssuerError::RootKeyStale {
                    held: "a".into(),
                    expected: "b".into(),
                    reason: crate::error::RootKeyLoadError::NotReloadable,
                },
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "this server holds root key a but the store's keys are sealed under root key b;",
            ),
            (
                StoreError::Conflict {
                    what: "environment",
                    name: "dev".into(),
                }
                .into(),
                StatusCode::CONFLICT,
                "conflict",
                "",
            ),
        ];
        for (err, status, code, text) in cases {
            let shown = format!("{err:?}");
            let e = ApiError::from_issuer(err);
            assert_eq!((e.status, e.code), (status, code), "{shown}");
            assert!(e.description.starts_with(text), "{shown}: {e:?}");
        }
    }

    #[test]
    fn patch_tells_null_from_absent() {
        let p: PatchClient =
            serde_json::from_str(r#"{"access_token_ttl_secs": null, "jwks_uri": "https://x"}"#)
                .unwrap();
        assert_eq!(p.access_token_ttl_secs, Some(None));
        assert_eq!(p.refresh_token_ttl_secs, None);
        assert_eq!(p.jwks_uri, Some(Some("https://x".into())));
        let e = serde_json::from_str::<PatchClient>(r#"{"secret": "x"}"#).unwrap_err();
        assert!(e.to_string().starts_with("unknown field `secret`"), "{e}");
    }

    #[test]
    fn openapi_is_3_1_with_bearer_auth() {
        let d = openapi();
        assert_eq!(d["openapi"], "3.1.0");
        assert_eq!(
            d["components"]["securitySchemes"]["adminToken"]["scheme"],
            "bearer"
        );
        assert_eq!(
            d["paths"]["/admin/v1/openapi.json"]["get"]["security"],
            json!([])
        );
    }
}
