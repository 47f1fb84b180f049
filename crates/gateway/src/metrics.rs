//! Prometheus metrics.
//!
//! | metric | kind | labels | meaning |
//! |---|---|---|---|
//! | `keyward_gate_decisions_total` | counter | `route`, `outcome` (`allow`/`deny`), `reason` | one per request |
//! | `keyward_gate_verify_seconds` | histogram | | token verification time (cache hits included) |
//! | `keyward_gate_upstream_seconds` | histogram | `route` | time to the upstream's response headers |
//! | `keyward_gate_upstream_errors_total` | counter | `route`, `kind` (`connect`/`timeout`/`other`) | upstream failures (502/504) |
//! | `keyward_gate_jwks_age_seconds` | gauge | `issuer` | seconds since the issuer's key set was confirmed (set at scrape) |
//! | `keyward_gate_token_cache_hit_ratio` | gauge | | lifetime hits / (hits + misses) of the verified-token cache (set at scrape) |
//! | `keyward_gate_tls_handshake_failures_total` | counter | | TLS handshakes that failed or timed out |
//! | `keyward_tls_reload_total` | counter | `result` (`ok`/`error`) | certificate files reloaded after a change (from `keyward-verify`) |
//!
//! `keyward-verify` adds `keyward_gate_token_cache_total{result}`,
//! `keyward_gate_verify_failures_total{issuer,kid,reason}` (`kid` only when
//! the issuer publishes it, else `unknown`),
//! `keyward_gate_jwks_fetches_total{issuer,outcome,cause}` and the other
//! key-cache metrics. The hit ratio is computed at scrape time from the
//! rendered `keyward_gate_token_cache_total` counters, so it is the ratio
//! since the process started; use `rate()` on the counters for a window.
//!
//! Only one recorder can exist per process. [`install`] installs ours once;
//! a process that already installed one (the issuer's, in a combined binary)
//! hands its handle over with [`adopt`] before starting the gateway.

use std::sync::{Arc, OnceLock};

use keyward_verify::Gate;
use metrics::{gauge, histogram, Counter, Histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder, once, and returns its
/// handle. Later calls (and calls after [`adopt`]) return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                        0.1, 0.25, 1.0, 5.0, 30.0,
                    ],
                )
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests): then metrics
            // go there, and ours renders what it has.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Uses a recorder installed elsewhere in this process (for example by the
/// issuer) instead of installing one. Returns false if the gateway already
/// has a handle.
pub fn adopt(handle: PrometheusHandle) -> bool {
    HANDLE.set(handle).is_ok()
}

/// The label value used for requests that matched no route.
pub const NO_ROUTE: &str = "-";

/// Per-route metric handles, registered once at start.
#[derive(Clone)]
pub struct RouteMetrics {
    /// The route label.
    pub label: SharedString,
    /// `decisions_total{outcome="allow"}` for this route.
    pub allowed: Counter,
    /// `upstream_seconds` for this route.
    pub upstream_seconds: Histogram,
}

impl RouteMetrics {
    /// Registers a route's handles; `allow_reason` is `token` or `anonymous`.
    pub fn new(route: &str, allow_reason: &'static str) -> RouteMetrics {
        let label = SharedString::from(Arc::<str>::from(route));
        RouteMetrics {
            allowed: metrics::counter!("keyward_gate_decisions_total", "route" => label.clone(), "outcome" => "allow", "reason" => allow_reason),
            upstream_seconds: histogram!("keyward_gate_upstream_seconds", "route" => label.clone()),
            label,
        }
    }

    /// Counts an upstream failure.
    pub fn upstream_error(&self, kind: &'static str) {
        metrics::counter!("keyward_gate_upstream_errors_total", "route" => self.label.clone(), "kind" => kind).increment(1);
    }
}

/// Counts a refused request.
pub fn denied(route: Option<&SharedString>, reason: &'static str) {
    let route = route.cloned().unwrap_or(SharedString::const_str(NO_ROUTE));
    metrics::counter!("keyward_gate_decisions_total", "route" => route, "outcome" => "deny", "reason" => reason).increment(1);
}

/// Counts a failed TLS handshake.
pub fn tls_handshake_failed() {
    metrics::counter!("keyward_gate_tls_handshake_failures_total").increment(1);
}

/// The verification-time histogram.
pub fn verify_seconds() -> Histogram {
    histogram!("keyward_gate_verify_seconds")
}

/// Sets the scrape-time gauges, then renders everything.
pub fn render(handle: &PrometheusHandle, gate: Option<&Gate>) -> String {
    if let Some(gate) = gate {
        for t in gate.issuers() {
            if let Some(age) = t.keys.status().age_secs {
                gauge!("keyward_gate_jwks_age_seconds", "issuer" => t.policy.issuer.clone())
                    .set(age as f64);
            }
        }
    }
    let text = handle.render();
    let (hits, misses) = token_cache_counts(&text);
    if hits + misses > 0.0 {
        gauge!("keyward_gate_token_cache_hit_ratio").set(hits / (hits + misses));
        return handle.render();
    }
    text
}

/// `keyward_gate_token_cache_total{result="hit"|"miss"}` from rendered text.
fn token_cache_counts(text: &str) -> (f64, f64) {
    let (mut hits, mut misses) = (0.0, 0.0);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("keyward_gate_token_cache_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        if labels.contains("result=\"hit\"") {
            hits += v;
        } else if labels.contains("result=\"miss\"") {
            misses += v;
        }
    }
    (hits, misses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_rendered_text() {
        let text = "# TYPE keyward_gate_token_cache_total counter\n\
                    keyward_gate_token_cache_total{result=\"hit\"} 30\n\
                    keyward_gate_token_cache_total{result=\"miss\"} 10\n\
                    keyward_gate_token_cache_totalx{result=\"hit\"} 99\n";
        assert_eq!(token_cache_counts(text), (30.0, 10.0));
    }
}
