//! The request path: route, authenticate, authorize, rate-limit, then
//! forward with the caller's identity, streaming bodies both ways.
//!
//! What is forwarded: the method, the path unchanged (less `strip_prefix`),
//! the query, the body (streamed, never buffered) and the end-to-end
//! headers. Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every
//! header it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`, and `Proxy-Authorization`) are dropped
//! both ways. Spoofed identity headers are always dropped, `Authorization`
//! unless the route forwards it. `Host` becomes the upstream's `host:port`
//! unless the route sets `preserve_host`; `X-Forwarded-For` gets the peer
//! address appended, `X-Forwarded-Proto` is set to `http` and
//! `X-Forwarded-Host` to the caller's `Host`.
//!
//! What the gateway answers itself (JSON bodies, `Cache-Control: no-store`):
//! 400 for an ambiguous path, 401 with `WWW-Authenticate` (RFC 6750) for a
//! missing or bad token, 403 (`insufficient_scope`) for a valid token
//! lacking a permission or scope, 404 when no route matches, 405 with
//! `Allow`, 429 with `Retry-After`, 502 when the upstream cannot be reached,
//! 504 when it does not answer within the route's timeout. A refused request
//! never reaches the upstream.
//!
//! WebSocket (RFC 6455) on routes with `websocket = true`: an HTTP/1.1
//! `GET` with `Connection: upgrade` and `Upgrade: websocket` is judged like
//! any request (token or API key, permissions, limits), then sent with its
//! identity headers and the two upgrade headers on a new upstream
//! connection of its own. When the upstream answers `101`, both
//! connections are upgraded and spliced (bytes copied both ways until each
//! side has closed). Anything else the upstream answers is passed back as
//! usual, and a refused handshake is answered here without an upgrade.
//! HTTP/2 extended CONNECT (RFC 8441) is not supported: such a request is
//! forwarded as an ordinary one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use keyward_verify::{
    check_binding, ForwardedCertificate, Gate, Identity, PeerCertificate, RequestTarget,
    SenderConstraint, VerifyError,
};

use crate::api_keys::{ApiKeyStore, Key, Refusal};
use crate::config::{Auth, RouteConfig};
use crate::decision::{Decision, Outcome};
use crate::identity_headers::IdentityHeaders;
use crate::metrics::{self, RouteMetrics};
use crate::ratelimit::RouteLimiter;
use crate::routes::{check_path, RouteMatch, RouteTable};
use crate::upstream::{PooledBody, Upstream, UpstreamError};
use crate::websocket::{is_websocket_upgrade, set_upgrade_headers, upgrade};

/// Response bodies: the upstream's, streamed, or the gateway's own.
pub type ProxyBody = Either<PooledBody, Full<Bytes>>;

/// The client end of one connection, computed once per connection.
#[derive(Debug)]
pub struct Peer {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The peer's IP as text (rate-limit key).
    pub ip: Box<str>,
    /// The peer's IP as a header value (`X-Forwarded-For`).
    pub ip_header: HeaderValue,
    /// Whether the connection is TLS (terminated here).
    pub tls: bool,
    /// The client certificate the connection presented.
    pub certificate: Option<Arc<PeerCertificate>>,
}

impl Peer {
    /// The peer at `addr`, in clear text.
    pub fn new(addr: SocketAddr) -> Peer {
        let ip = addr.ip().to_string();
        Peer {
            addr,
            ip_header: HeaderValue::from_str(&ip)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            ip: ip.into_boxed_str(),
            tls: false,
            certificate: None,
        }
    }

    /// The peer at `addr` over TLS, with the certificate it presented.
    pub fn tls(addr: SocketAddr, certificate: Option<Arc<PeerCertificate>>) -> Peer {
        Peer {
            tls: true,
            certificate,
            ..Peer::new(addr)
        }
    }
}

/// One route's running parts.
pub(crate) struct RouteState {
    pub config: RouteConfig,
    /// Index of the route's upstream in a worker's pools.
    pub upstream: usize,
    pub per_subject: Option<RouteLimiter>,
    pub per_client: Option<RouteLimiter>,
    pub per_ip: Option<RouteLimiter>,
    pub metrics: RouteMetrics,
}

/// Everything a request needs, shared by all connections.
pub(crate) struct Shared {
    pub gate: Option<Gate>,
    /// The API keys, when some route accepts them.
    pub api_keys: Option<ApiKeyStore>,
    pub table: RouteTable,
    pub routes: Box<[RouteState]>,
    pub identity_headers: IdentityHeaders,
    pub realm: String,
    pub verify_seconds: ::metrics::Histogram,
    /// `[dpop] public_origin`: the origin DPoP proofs' `htu` name.
    pub public_origin: Option<String>,
    /// Where a trusted front proxy passes the client certificate.
    pub forwarded_certificate: Option<ForwardedCertificate>,
    /// The issuers (by `iss`) whose tokens must all be certificate-bound.
    pub mtls_issuers: Box<[String]>,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The hop-by-hop headers of RFC 9110 §7.6.1, and two old ones.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The index of `name` in [`HOP_BY_HOP`], if it is there: one match on the
/// name's text (lengths first), where comparing with each entry in turn
/// costs eight comparisons for every header of every request.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "te" => 1,
        "trailer" => 2,
        "transfer-encoding" => 3,
        "upgrade" => 4,
        "proxy-authorization" => 5,
        "keep-alive" => 6,
        "proxy-connection" => 7,
        _ => return None,
    })
}

/// Removes hop-by-hop headers, including those named in `Connection`. One
/// pass over the names finds the usual cases without hashing or
/// allocating: none at all (most requests), or only `Connection:
/// keep-alive` / `close`, which name no other header (most responses; the
/// list of named headers stays empty and never allocates).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP.len()];
    for k in headers.keys() {
        if let Some(i) = hop_by_hop_index(k) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    if present[0] {
        // `keep-alive` and `close` are connection options, not header names.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close"))
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for (h, here) in HOP_BY_HOP.iter().zip(present) {
        if here {
            headers.remove(h);
        }
    }
}

/// A gateway-made JSON answer.
fn answer(status: StatusCode, error: &str, description: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": error, "error_description": description }).to_string();
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The 401/403 answer for a verification or authorization failure, with
/// `challenge` as its `WWW-Authenticate` (and a `DPoP-Nonce` when the
/// failure asks for one).
fn auth_answer(e: &VerifyError, challenge: &str) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let code = e.bearer_error().unwrap_or("unauthorized");
    let mut r = answer(status, code, &e.description());
    if let Ok(v) = HeaderValue::from_str(challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    if let VerifyError::Dpop(d) = e {
        if let Some(v) = d.nonce().and_then(|n| HeaderValue::from_str(n).ok()) {
            r.headers_mut()
                .insert(keyward_verify::dpop::DPOP_NONCE_HEADER, v);
        }
    }
    r
}

fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl Shared {
    /// Handles one request.
    pub(crate) async fn handle(
        &self,
        upstreams: &[Upstream],
        peer: &Peer,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let wall = SystemTime::now();
        let (mut parts, body) = req.into_parts();
        let method = parts.method.clone();

        if let Err(why) = check_path(parts.uri.path()) {
            let r = answer(StatusCode::BAD_REQUEST, "invalid_request", why);
            return self.deny(None, &method, parts.uri.path(), None, "bad_path", r, start);
        }
        let (index, caps) = match self.table.find(&method, parts.uri.path()) {
            RouteMatch::Found { index, caps } => (index, caps),
            RouteMatch::NotFound => {
                let r = answer(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no route matches this path",
                );
                return self.deny(None, &method, parts.uri.path(), None, "no_route", r, start);
            }
            RouteMatch::MethodNotAllowed(allow) => {
                let mut r = answer(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this path does not accept this method",
                );
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    r.headers_mut().insert(header::ALLOW, v);
                }
                return self.deny(
                    None,
                    &method,
                    parts.uri.path(),
                    None,
                    "method_not_allowed",
                    r,
                    start,
                );
            }
        };
        let route = &self.routes[index];
        let upstream = &upstreams[route.upstream];
        let path = parts.uri.path();

        // Per-IP limit first: it needs no verification, so it also slows
        // down floods of bad tokens.
        if let Some(l) = &route.per_ip {
            if let Err(wait) = l.check(&peer.ip, start, wall).await {
                return self.rate_limited(route, &method, path, None, wait, start);
            }
        }

        // The client certificate: a trusted front proxy's header, else the
        // connection's own. The header is read from trusted proxies only,
        // and never forwarded.
        let forwarded = match &self.forwarded_certificate {
            Some(f) => {
                let read = f.read(&parts.headers, peer.addr.ip());
                parts.headers.remove(&f.header);
                read
            }
            None => Ok(None),
        };

        // Authenticate and authorize.
        let mut api_key: Option<&Key> = None;
        let identity: Option<Arc<Identity>> = match &route.config.auth {
            Auth::Anonymous => None,
            Auth::Token {
                issuers,
                scopes,
                permissions,
                sender_constraint,
            } => {
                let t = Instant::now();
                let presented = match &self.api_keys {
                    Some(keys) if route.config.api_keys => {
                        keys.check(&parts.headers, &route.config.name)
                    }
                    _ => None,
                };
                let verified = match presented {
                    Some(Ok(key)) => {
                        api_key = Some(key);
                        Ok(key.identity.clone())
                    }
                    Some(Err((id, refusal))) => {
                        return self.refuse_api_key(route, &method, path, id, refusal, start)
                    }
                    None => match &self.gate {
                        Some(gate) => {
                            let uri = keyward_verify::layer::request_uri(
                                self.public_origin.as_deref(),
                                &parts.uri,
                                &parts.headers,
                            );
                            let target = RequestTarget {
                                method: method.as_str(),
                                uri: &uri,
                                require: route.config.sender_constraint,
                            };
                            gate.verify_request(&parts.headers, &target).await
                        }
                        // Routes that need a gate have one (config
                        // validation); key-only configurations fail closed.
                        None => Err(VerifyError::UntrustedIssuer),
                    },
                };
                self.verify_seconds.record(t.elapsed().as_secs_f64());
                let id = match verified {
                    Ok(id) => id,
                    Err(e) => {
                        return self.refuse(route, &method, path, &parts.headers, None, &e, start)
                    }
                };
                // RFC 8705 §3: checked on every request, cached token or not.
                let required = *sender_constraint == Some(SenderConstraint::Mtls)
                    || self.mtls_issuers.contains(&id.issuer);
                let bound = forwarded.and_then(|f| {
                    check_binding(&id, f.as_deref().or(peer.certificate.as_deref()), required)
                });
                if let Err(e) = bound {
                    return self.refuse(route, &method, path, &parts.headers, Some(&id), &e, start);
                }
                let param = |name: &str| route.config.pattern.param(&caps, name);
                // A route's `issuers` choose among token issuers; a key the
                // route accepts is not a token.
                let untrusted = api_key.is_none()
                    && issuers
                        .as_ref()
                        .is_some_and(|list| !list.iter().any(|i| *i == id.issuer));
                let refused = if untrusted {
                    Err(VerifyError::UntrustedIssuer)
                } else {
                    scopes
                        .as_ref()
                        .map_or(Ok(()), |req| req.check(id.scope_grants(), param))
                        .and_then(|()| {
                            permissions
                                .as_ref()
                                .map_or(Ok(()), |req| req.check(id.permission_grants(), param))
                        })
                };
                if let Err(e) = refused {
                    return self.refuse(route, &method, path, &parts.headers, Some(&id), &e, start);
                }
                Some(id)
            }
        };

        if let Some(l) = api_key.and_then(|k| k.limiter.as_ref()) {
            if let Err(wait) = l.check("", start) {
                return self.rate_limited(route, &method, path, identity.as_deref(), wait, start);
            }
        }
        if let Some(id) = &identity {
            for (limiter, key) in [
                (&route.per_subject, id.subject.as_deref()),
                (&route.per_client, id.client_id.as_deref()),
            ] {
                if let (Some(l), Some(key)) = (limiter, key) {
                    if let Err(wait) = l.check(key, start, wall).await {
                        return self.rate_limited(route, &method, path, Some(id), wait, start);
                    }
                }
            }
        }

        // A WebSocket handshake on a route that passes them: the caller's
        // side of the upgrade, taken before the request is forwarded.
        let websocket = if route.config.websocket && is_websocket_upgrade(&parts) {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };

        // Headers for the upstream. `Expect: 100-continue` was answered here.
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        if websocket.is_some() {
            set_upgrade_headers(headers);
        }
        headers.remove(header::EXPECT);
        self.identity_headers.strip(headers);
        if let Some(keys) = self.api_keys.as_ref().filter(|_| route.config.api_keys) {
            // A key is a credential: it never goes upstream.
            headers.remove(&keys.header);
        }
        if !route.config.forward_authorization {
            headers.remove(header::AUTHORIZATION);
        }
        if let Some(id) = &identity {
            if let Err(e) = self.identity_headers.insert(headers, id) {
                let path = parts.uri.path();
                return self.refuse(route, &method, path, &parts.headers, Some(id), &e, start);
            }
        }
        route.metrics.allowed.increment(1);
        forwarded_headers(&mut parts.headers, &parts.uri, peer);
        if !route.config.preserve_host || !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, upstream.host.clone());
        }

        // The upstream request target: origin-form, same path and query,
        // less strip_prefix.
        let original = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let absolute = parts.uri.scheme().is_some() || parts.uri.authority().is_some();
        match &route.config.strip_prefix {
            None if !absolute => {}
            None => parts.uri = Uri::from(original.clone()),
            Some(prefix) => parts.uri = Uri::from(strip_prefix(&original, prefix)),
        }
        parts.version = Version::HTTP_11;

        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent + route.config.timeout);
        let req = Request::from_parts(parts, body);
        let result = match websocket {
            None => {
                tokio::time::timeout_at(deadline, async {
                    let (mut p, b) = upstream.send(req).await?.into_parts();
                    strip_hop_by_hop(&mut p.headers);
                    Ok::<_, UpstreamError>(Response::from_parts(p, Either::Left(b)))
                })
                .await
            }
            Some(caller) => {
                let name = &route.config.name;
                tokio::time::timeout_at(deadline, upgrade(upstream, req, caller, name)).await
            }
        };
        let got = Instant::now();
        route
            .metrics
            .upstream_seconds
            .record((got - sent).as_secs_f64());
        let (response, reason) = match result {
            Ok(Ok(resp)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => (resp, "upgraded"),
            Ok(Ok(resp)) => (resp, "ok"),
            Ok(Err(e)) => {
                let connect = matches!(e, UpstreamError::Connect(_));
                route
                    .metrics
                    .upstream_error(if connect { "connect" } else { "other" });
                tracing::warn!(route = %route.config.name, upstream = %upstream.origin, error = %e, "upstream request failed");
                (
                    answer(
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        "the upstream could not be reached",
                    ),
                    if connect {
                        "upstream_unavailable"
                    } else {
                        "upstream_error"
                    },
                )
            }
            Err(_) => {
                route.metrics.upstream_error("timeout");
                (
                    answer(
                        StatusCode::GATEWAY_TIMEOUT,
                        "gateway_timeout",
                        "the upstream did not answer in time",
                    ),
                    "upstream_timeout",
                )
            }
        };
        Decision {
            route: &route.config.name,
            method: &method,
            path: original.path(),
            identity: identity.as_deref(),
            api_key: None,
            outcome: Outcome::Allow,
            reason,
            status: response.status().as_u16(),
            latency: got - start,
        }
        .log();
        response
    }

    /// [`Shared::deny`] for a verification or authorization failure on `route`.
    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &self,
        route: &RouteState,
        method: &Method,
        path: &str,
        headers: &http::HeaderMap,
        identity: Option<&Identity>,
        e: &VerifyError,
        start: Instant,
    ) -> Response<ProxyBody> {
        let challenge = match &self.gate {
            Some(g) => g.challenge(e, &self.realm, headers, route.config.sender_constraint),
            None => e.www_authenticate(&self.realm),
        };
        let answer = auth_answer(e, &challenge);
        self.deny(
            Some(route),
            method,
            path,
            identity,
            e.reason(),
            answer,
            start,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn deny(
        &self,
        route: Option<&RouteState>,
        method: &Method,
        path: &str,
        identity: Option<&Identity>,
        reason: &'static str,
        response: Response<ProxyBody>,
        start: Instant,
    ) -> Response<ProxyBody> {
        self.deny_as(route, method, path, identity, None, reason, response, start)
    }

    /// [`Shared::deny`], naming the API key the request claimed to use
    /// when it was refused before an identity was established.
    #[allow(clippy::too_many_arguments)]
    fn deny_as(
        &self,
        route: Option<&RouteState>,
        method: &Method,
        path: &str,
        identity: Option<&Identity>,
        api_key: Option<&str>,
        reason: &'static str,
        response: Response<ProxyBody>,
        start: Instant,
    ) -> Response<ProxyBody> {
        metrics::denied(route.map(|r| &r.metrics.label), reason);
        Decision {
            route: route.map_or(metrics::NO_ROUTE, |r| r.config.name.as_str()),
            method,
            path,
            identity,
            api_key,
            outcome: Outcome::Deny,
            reason,
            status: response.status().as_u16(),
            latency: start.elapsed(),
        }
        .log();
        response
    }

    /// The answer to a refused API key (never echoing the key).
    fn refuse_api_key(
        &self,
        route: &RouteState,
        method: &Method,
        path: &str,
        id: Option<&str>,
        refusal: Refusal,
        start: Instant,
    ) -> Response<ProxyBody> {
        let (error, description) = refusal.answer();
        let mut r = answer(refusal.status(), error, description);
        if refusal.status() == StatusCode::UNAUTHORIZED {
            if let Ok(v) = HeaderValue::from_str(&format!("ApiKey realm=\"{}\"", self.realm)) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        self.deny_as(
            Some(route),
            method,
            path,
            None,
            id,
            refusal.reason(),
            r,
            start,
        )
    }

    fn rate_limited(
        &self,
        route: &RouteState,
        method: &Method,
        path: &str,
        identity: Option<&Identity>,
        wait: Duration,
        start: Instant,
    ) -> Response<ProxyBody> {
        let mut r = answer(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests; retry later",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(wait)),
        );
        self.deny(
            Some(route),
            method,
            path,
            identity,
            "rate_limited",
            r,
            start,
        )
    }
}

/// Appends the peer to `X-Forwarded-For`; sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host`.
fn forwarded_headers(headers: &mut HeaderMap, uri: &Uri, peer: &Peer) {
    let ip = &peer.ip;
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if headers.get_all(&X_FORWARDED_FOR).iter().count() == 1 => {
            HeaderValue::from_str(&format!("{prev}, {ip}")).ok()
        }
        Some(_) => {
            let all: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            HeaderValue::from_str(&format!("{}, {ip}", all.join(", "))).ok()
        }
        None => None,
    };
    headers.insert(
        &X_FORWARDED_FOR,
        xff.unwrap_or_else(|| peer.ip_header.clone()),
    );
    headers.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if peer.tls { "https" } else { "http" }),
    );
    let host = headers.get(header::HOST).cloned().or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    match host {
        Some(h) => {
            headers.insert(&X_FORWARDED_HOST, h);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

/// `pq` with the literal `prefix` removed from its path (`/` if nothing is left).
fn strip_prefix(pq: &PathAndQuery, prefix: &str) -> PathAndQuery {
    let path = pq.path();
    let rest = match path.strip_prefix(prefix) {
        Some(r) if r.is_empty() || r.starts_with('/') => r,
        _ => path,
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    let text = match pq.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    PathAndQuery::try_from(text).unwrap_or_else(|_| pq.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header map with these (name, value) lines, in order.
    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in lines {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");

        // The usual response: only `Connection: keep-alive` (or `close`),
        // any case and spacing; a header merely called like a token stays
        // unless Connection names it.
        for v in ["keep-alive", "Keep-Alive", " close ", "close, keep-alive"] {
            let mut h = headers(&[("connection", v), ("content-length", "3"), ("x-hop", "1")]);
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 2, "{v:?}: {h:?}");
            assert!(!h.contains_key("connection"));
        }
        let mut h = headers(&[
            ("connection", "keep-alive"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x-sum"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["accept"], "{h:?}");
    }

    #[test]
    fn hop_by_hop_index_finds_exactly_the_list() {
        for (i, h) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(h), Some(i), "{h}");
        }
        for other in [
            "host",
            "accept",
            "user-agent",
            "content-length",
            "x-connection",
            "tee",
        ] {
            assert_eq!(
                hop_by_hop_index(&HeaderName::from_static(other)),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn forwarded_for_appends() {
        let peer = Peer::new("10.0.0.9:5000".parse().unwrap());
        let uri: Uri = "/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("api.example"));
        forwarded_headers(&mut h, &uri, &peer);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-host"], "api.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        forwarded_headers(&mut h, &uri, &peer);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9, 1.1.1.1, 10.0.0.9");
    }

    #[test]
    fn prefixes_are_stripped_at_segment_boundaries() {
        let pq = |s: &'static str| PathAndQuery::from_static(s);
        assert_eq!(strip_prefix(&pq("/api/orders?x=1"), "/api"), "/orders?x=1");
        assert_eq!(strip_prefix(&pq("/api"), "/api"), "/");
        assert_eq!(strip_prefix(&pq("/api?q"), "/api"), "/?q");
        assert_eq!(strip_prefix(&pq("/apix"), "/api"), "/apix");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
