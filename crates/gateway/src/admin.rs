//! The admin listener: `/metrics` (Prometheus text), `/healthz` (200 while
//! the process serves) and `/readyz` (200 only when every issuer has a
//! usable key set, else 503 naming the issuers without one). With
//! `redis_url`, `/readyz` adds a line saying whether Redis is up; a Redis
//! that is down does not make the gateway unready (it serves with local
//! limits), since every replica would lose it at once.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use keyward_verify::Gate;
use metrics_exporter_prometheus::PrometheusHandle;

/// The admin endpoints' state.
pub(crate) struct Admin {
    pub gate: Option<Gate>,
    pub prometheus: PrometheusHandle,
    pub redis: Option<std::sync::Arc<crate::redis::Redis>>,
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl Admin {
    /// Issuers without a usable key set.
    pub fn not_ready(&self) -> Vec<String> {
        self.gate
            .iter()
            .flat_map(|g| g.issuers())
            .filter(|t| t.keys.current().is_none())
            .map(|t| t.policy.issuer.clone())
            .collect()
    }

    /// Handles one admin request.
    pub fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match req.uri().path() {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                crate::metrics::render(&self.prometheus, self.gate.as_ref()),
            ),
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => {
                let missing = self.not_ready();
                let redis = self
                    .redis
                    .as_ref()
                    .map_or(String::new(), |r| format!("{}\n", r.status()));
                if missing.is_empty() {
                    text(StatusCode::OK, "text/plain", format!("ready\n{redis}"))
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("no usable key set for: {}\n{redis}", missing.join(", ")),
                    )
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found (try /metrics, /healthz, /readyz)\n".into(),
            ),
        }
    }
}
