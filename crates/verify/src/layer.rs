//! Protecting a tower / axum service in-process.
//!
//! [`GateLayer`] verifies the request's bearer token with a [`Gate`], checks
//! the configured [`Requirement`]s, stores the caller's `Arc<Identity>` in
//! the request extensions and only then calls the inner service. A refused
//! request never reaches the inner service: it is answered with
//! [`rejection`] (RFC 6750 status, `WWW-Authenticate`, `Cache-Control:
//! no-store`, a small JSON body).
//!
//! Permission templates such as `orders.{id}.read` are filled from the
//! route's path parameters, which axum only knows after routing: add the
//! layer to the routes with [`axum::Router::route_layer`] (or
//! `Router::layer`, which also guards the 404 fallback, or on a
//! `MethodRouter`). Wrapped around a whole router from the outside, it runs
//! before routing, sees no path parameters, and a template that needs one
//! fails closed (403).
//!
//! Handlers read the caller with the [`Authenticated`] extractor; [`Verified`]
//! verifies by itself when a route has no layer.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use keyward_verify::{Authenticated, Gate, GateLayer, IssuerPolicy, Requirement};
//!
//! # fn app() -> Result<Router, keyward_verify::Error> {
//! let gate = Gate::builder().issuer(IssuerPolicy::new("https://auth.example/prod")).build()?;
//! let app = Router::new()
//!     .route("/orders/{id}", get(|Authenticated(who): Authenticated| async move {
//!         format!("hello {}", who.subject.as_deref().unwrap_or("?"))
//!     }))
//!     .route_layer(GateLayer::new(gate).require_permissions(Requirement::all_of(["orders.{id}.read"])?));
//! # Ok(app) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts, RawPathParams};
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::dpop::SenderConstraint;
use crate::error::VerifyError;
use crate::gate::{Gate, RequestTarget};
use crate::identity::Identity;
use crate::permissions::{Grants, Requirement};

/// The realm named in `WWW-Authenticate` unless [`GateLayer::realm`] says
/// otherwise.
pub const DEFAULT_REALM: &str = "keyward";

/// Which of a token's grants a [`Requirement`] is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The `permissions` claim.
    Permissions,
    /// The `scope` / `scp` claim.
    Scopes,
}

impl Kind {
    /// The identity's grants of this kind.
    pub fn grants(self, id: &Identity) -> &Grants {
        match self {
            Kind::Permissions => id.permission_grants(),
            Kind::Scopes => id.scope_grants(),
        }
    }
}

/// A tower [`Layer`] that lets through only requests with a valid bearer
/// token meeting every configured requirement.
#[derive(Clone, Debug)]
pub struct GateLayer {
    gate: Gate,
    /// Every one must be met (each call to a `require_*` method adds one).
    requirements: Vec<(Requirement, Kind)>,
    realm: String,
    /// The scheme and authority clients address (for DPoP's `htu`).
    origin: Option<String>,
    /// A sender constraint every token must carry.
    sender_constraint: Option<SenderConstraint>,
}

impl GateLayer {
    /// A layer that requires a valid token and nothing more, with realm
    /// [`DEFAULT_REALM`].
    pub fn new(gate: Gate) -> Self {
        GateLayer {
            gate,
            requirements: Vec::new(),
            realm: DEFAULT_REALM.to_string(),
            origin: None,
            sender_constraint: None,
        }
    }

    /// The scheme and authority clients use to reach this service
    /// (`https://api.example`), against which DPoP proofs' `htu` is checked.
    /// Default: `http://` and the request's `Host` header.
    pub fn public_origin(mut self, origin: &str) -> Self {
        self.origin = Some(origin.trim_end_matches('/').to_string());
        self
    }

    /// Requires every token to be sender-constrained: DPoP (RFC 9449).
    /// The layer does not see the TLS connection, so it cannot match a
    /// client certificate: with [`SenderConstraint::Mtls`] every request is
    /// refused, and a certificate-bound token (`cnf.x5t#S256`) is always
    /// refused here (fail closed; terminate mTLS at keyward's gateway).
    pub fn require_sender_constraint(mut self, constraint: SenderConstraint) -> Self {
        self.sender_constraint = Some(constraint);
        self
    }

    /// Also requires `requirement` of the token's `permissions`. Requirements
    /// accumulate: every one added must be met.
    pub fn require_permissions(mut self, requirement: Requirement) -> Self {
        self.requirements.push((requirement, Kind::Permissions));
        self
    }

    /// Also requires `requirement` of the token's scopes. Requirements
    /// accumulate: every one added must be met.
    pub fn require_scopes(mut self, requirement: Requirement) -> Self {
        self.requirements.push((requirement, Kind::Scopes));
        self
    }

    /// The realm named in `WWW-Authenticate` (characters that cannot appear
    /// in a quoted header value are dropped).
    pub fn realm(mut self, realm: &str) -> Self {
        self.realm = realm
            .chars()
            .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
            .collect();
        self
    }

    /// The route parameter names the requirements use (to check against the
    /// route's pattern when configuring).
    pub fn params(&self) -> impl Iterator<Item = &str> {
        let mut seen: Vec<&str> = Vec::new();
        for p in self.requirements.iter().flat_map(|(r, _)| r.params()) {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        seen.into_iter()
    }

    /// Verifies and authorizes a request: on success, the request with the
    /// caller's identity in its extensions; otherwise the answer to send.
    async fn authorize<B>(&self, req: Request<B>) -> Result<Request<B>, Response<Body>> {
        let uri = request_uri(self.origin.as_deref(), req.uri(), req.headers());
        let target = RequestTarget {
            method: req.method().as_str(),
            uri: &uri,
            require: self.sender_constraint,
        };
        let identity = self
            .gate
            .verify_request(req.headers(), &target)
            .await
            .and_then(|id| {
                // No client certificate is visible here (see
                // `require_sender_constraint`): certificate binding fails closed.
                if id.cnf_x5t_s256.is_some() {
                    Err(crate::VerifyError::CertificateMissing)
                } else if self.sender_constraint == Some(SenderConstraint::Mtls) {
                    Err(crate::VerifyError::NotCertificateBound)
                } else {
                    Ok(id)
                }
            })
            .map_err(|e| self.refuse(&e, req.headers()))?;
        let (mut parts, body) = req.into_parts();
        if !self.requirements.is_empty() {
            let params = if self.params().next().is_some() {
                let found = RawPathParams::from_request_parts(&mut parts, &())
                    .await
                    .ok();
                if found.is_none() {
                    tracing::warn!(
                        path = parts.uri.path(),
                        "route parameters unavailable to GateLayer (add it to the routes with route_layer, not around the router); refusing"
                    );
                }
                found
            } else {
                None
            };
            let value_of = |name: &str| params.as_ref().and_then(|p| unique_param(p, name));
            for (requirement, kind) in &self.requirements {
                requirement
                    .check(kind.grants(&identity), value_of)
                    .map_err(|e| self.refuse(&e, &parts.headers))?;
            }
        }
        parts.extensions.insert(identity);
        Ok(Request::from_parts(parts, body))
    }

    fn refuse(&self, err: &VerifyError, headers: &http::HeaderMap) -> Response<Body> {
        tracing::debug!(reason = err.reason(), "request refused by the gate");
        let challenge = self
            .gate
            .challenge(err, &self.realm, headers, self.sender_constraint);
        answer(err, &challenge)
    }
}

/// The value of route parameter `name`, if it was captured exactly once (a
/// name captured twice by nested routers with different values is ambiguous
/// and fills nothing).
fn unique_param<'p>(params: &'p RawPathParams, name: &str) -> Option<&'p str> {
    let mut found = None;
    for (k, v) in params {
        if k == name {
            match found {
                Some(prev) if prev != v => return None,
                _ => found = Some(v),
            }
        }
    }
    found
}

impl<S> Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            config: Arc::new(self.clone()),
        }
    }
}

/// The service [`GateLayer`] wraps around an inner service.
#[derive(Clone, Debug)]
pub struct GateService<S> {
    inner: S,
    config: Arc<GateLayer>,
}

impl<S, B> Service<Request<B>> for GateService<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Use the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        Box::pin(async move {
            match config.authorize(req).await {
                Ok(req) => inner.call(req).await,
                Err(refused) => Ok(refused),
            }
        })
    }
}

/// The RFC 6750 answer to a refused request: [`VerifyError::status`],
/// `WWW-Authenticate` from [`VerifyError::www_authenticate`],
/// `Cache-Control: no-store`, and a JSON body `{"error", "error_description"}`
/// (empty when no token was sent: the challenge alone says what to do).
pub fn rejection(err: &VerifyError, realm: &str) -> Response<Body> {
    answer(err, &err.www_authenticate(realm))
}

/// The absolute URI a client addressed: `origin` (else `http://` and the
/// `Host` header) and the request's path. A request line that is already
/// absolute is taken as it is.
pub fn request_uri(origin: Option<&str>, uri: &http::Uri, headers: &http::HeaderMap) -> String {
    if uri.scheme().is_some() {
        return uri.to_string();
    }
    let path = uri.path();
    match origin {
        Some(o) => format!("{o}{path}"),
        None => {
            let host = headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            format!("http://{host}{path}")
        }
    }
}

/// A refusal with `challenge` as its `WWW-Authenticate`, and `DPoP-Nonce`
/// when the refusal asks for a nonce.
fn answer(err: &VerifyError, challenge: &str) -> Response<Body> {
    let challenge =
        HeaderValue::from_str(challenge).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut builder = Response::builder()
        .status(status)
        .header(WWW_AUTHENTICATE, challenge)
        .header(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let VerifyError::Dpop(d) = err {
        if let Some(nonce) = d.nonce().and_then(|n| HeaderValue::from_str(n).ok()) {
            builder = builder.header(crate::dpop::DPOP_NONCE_HEADER, nonce);
        }
    }
    let response = match err.bearer_error() {
        None => builder.body(Body::empty()),
        Some(code) => builder
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Body::from(
                serde_json::json!({ "error": code, "error_description": err.description() })
                    .to_string(),
            )),
    };
    // Every part above is valid, so building cannot fail; stay total anyway.
    response.unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r
    })
}

/// The caller [`GateLayer`] verified, for handlers.
///
/// The layer must run before the handler (add it with `route_layer` or
/// `layer` over the routes that use this extractor, or around the router). Without it there is no
/// identity and the request is refused with 401, so a forgotten layer fails
/// closed.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Arc<Identity>);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Response<Body>;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Arc<Identity>>() {
            Some(id) => Ok(Authenticated(id.clone())),
            None => {
                tracing::warn!(
                    path = parts.uri.path(),
                    "Authenticated used on a route without GateLayer; refusing"
                );
                Err(rejection(&VerifyError::MissingToken, DEFAULT_REALM))
            }
        }
    }
}

/// A caller verified by the extractor itself, with the [`Gate`] taken from
/// the router's state (`Gate: FromRef<S>`), for routes without a
/// [`GateLayer`]. Reuses the identity a layer already stored, if any. It
/// checks the token only, not permissions; refusals name realm
/// [`DEFAULT_REALM`].
#[derive(Clone, Debug)]
pub struct Verified(pub Arc<Identity>);

impl<S> FromRequestParts<S> for Verified
where
    Gate: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response<Body>;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(id) = parts.extensions.get::<Arc<Identity>>() {
            return Ok(Verified(id.clone()));
        }
        let gate = Gate::from_ref(state);
        let uri = request_uri(None, &parts.uri, &parts.headers);
        let target = RequestTarget {
            method: parts.method.as_str(),
            uri: &uri,
            require: None,
        };
        match gate.verify_request(&parts.headers, &target).await {
            Ok(id) => {
                parts.extensions.insert(id.clone());
                Ok(Verified(id))
            }
            Err(e) => {
                tracing::debug!(reason = e.reason(), "request refused by the gate");
                Err(answer(
                    &e,
                    &gate.challenge(&e, DEFAULT_REALM, &parts.headers, None),
                ))
            }
        }
    }
}

// `GateService` must stay usable with axum's `route_layer`, whose inner
// services never fail.
const _: fn() = || {
    fn assert_route_layer<L>()
    where
        L: Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
        L::Service: Service<axum::extract::Request, Error = Infallible> + Clone + Send + Sync,
    {
    }
    assert_route_layer::<GateLayer>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(r: Response<Body>) -> Vec<u8> {
        r.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn missing_token_is_a_bare_challenge() {
        let r = rejection(&VerifyError::MissingToken, "api");
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"api\"");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        assert!(r.headers().get(CONTENT_TYPE).is_none());
        assert!(body(r).await.is_empty());
    }

    #[tokio::test]
    async fn other_failures_carry_a_code_and_json() {
        let r = rejection(
            &VerifyError::InsufficientScope("orders.7.read".into()),
            "api",
        );
        assert_eq!(r.status(), 403);
        let challenge = r.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_string();
        assert!(challenge.starts_with("Bearer realm=\"api\", error=\"insufficient_scope\""));
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(v["error"], "insufficient_scope");
        assert!(v["error_description"]
            .as_str()
            .unwrap()
            .contains("orders.7.read"));

        let r = rejection(&VerifyError::Revoked, "api");
        assert_eq!(r.status(), 401);
        let v: serde_json::Value = serde_json::from_slice(&body(r).await).unwrap();
        assert_eq!(v["error"], "invalid_token");
    }

    #[test]
    fn realm_is_sanitized() {
        let gate = Gate::builder()
            .issuer(crate::IssuerPolicy::new("https://issuer.test"))
            .build()
            .unwrap();
        let l = GateLayer::new(gate).realm("a\"b\\c\né");
        assert_eq!(l.realm, "abc");
        let r = rejection(&VerifyError::MissingToken, &l.realm);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"abc\"");
    }

    #[test]
    fn params_are_listed_once() {
        let gate = Gate::builder()
            .issuer(crate::IssuerPolicy::new("https://issuer.test"))
            .build()
            .unwrap();
        let l = GateLayer::new(gate)
            .require_permissions(Requirement::all_of(["a.{id}", "b.{x}"]).unwrap())
            .require_scopes(Requirement::any_of(["s.{id}"]).unwrap());
        assert_eq!(l.params().collect::<Vec<_>>(), ["id", "x"]);
    }
}
