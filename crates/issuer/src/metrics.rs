//! Prometheus metrics. Counters and histograms are recorded where things
//! happen; gauges that derive from state (key age, time to next rotation,
//! audit chain length) are computed when `/metrics` is scraped.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::authority::Authority;
use crate::rotation;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 1.0,
                    ],
                )
                .expect("valid buckets");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests): keep ours for rendering only.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// A token request finished.
pub fn token_request(env: &str, grant: &'static str, outcome: &'static str, seconds: f64) {
    counter!("keyward_tokens_issued_total", "env" => env.to_string(), "grant" => grant, "outcome" => outcome).increment(1);
    histogram!("keyward_token_endpoint_seconds", "env" => env.to_string()).record(seconds);
}

/// A signature was made.
pub fn signing(alg: &'static str, seconds: f64) {
    histogram!("keyward_signing_seconds", "alg" => alg).record(seconds);
}

/// A rotated refresh token was replayed.
pub fn refresh_reuse(env: &str) {
    counter!("keyward_refresh_reuse_detected_total", "env" => env.to_string()).increment(1);
}

/// A request to another OAuth endpoint finished.
pub fn endpoint(env: &str, endpoint: &'static str, outcome: &'static str) {
    counter!("keyward_requests_total", "env" => env.to_string(), "endpoint" => endpoint, "outcome" => outcome).increment(1);
}

/// Sets the state-derived gauges, then renders everything.
pub async fn render(a: &Authority, handle: &PrometheusHandle) -> String {
    let now = a.now();
    for e in a.snapshot().envs.iter() {
        let name = e.env.name.clone();
        if let Some(k) = rotation::signing_key(&e.keys, now) {
            gauge!("keyward_signing_key_age_seconds", "env" => name.clone())
                .set((now - k.activates_at) as f64);
            let next = k.activates_at + e.env.policy.rotate_every_secs - e.env.policy.lead_secs;
            gauge!("keyward_seconds_to_next_rotation", "env" => name.clone())
                .set((next - now) as f64);
        }
        gauge!("keyward_published_keys", "env" => name)
            .set(rotation::published(&e.keys, now).count() as f64);
    }
    if let Ok(n) = a.store.audit_len().await {
        gauge!("keyward_audit_chain_length").set(n as f64);
    }
    handle.render()
}
