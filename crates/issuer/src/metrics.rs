//! Prometheus metrics. Counters and histograms are recorded where things
//! happen; gauges that derive from state (key age, time to next rotation,
//! audit chain length) are computed when `/metrics` is scraped.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use metrics::{counter, gauge, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::authority::Authority;
use crate::oauth::FaultReason;
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
            // Every reason shows from the start, at 0, so a rate has a base.
            for r in FaultReason::ALL {
                counter!("keyward_server_errors_total", "reason" => r.as_str()).increment(0);
            }
            handle
        })
        .clone()
}

/// Handles of the metrics recorded on every request, registered once per
/// label set: the macros allocate the labels and look the key up in the
/// registry on every call, which shows in the token endpoint's profile.
#[derive(Default)]
struct Handles {
    envs: RwLock<HashMap<String, EnvHandles>>,
    signing: RwLock<HashMap<&'static str, Histogram>>,
    server_errors: RwLock<HashMap<&'static str, Counter>>,
}

/// An environment's token endpoint handles.
struct EnvHandles {
    seconds: Histogram,
    /// By (grant, outcome).
    issued: RwLock<HashMap<(&'static str, &'static str), Counter>>,
}

/// The handle cache, only once [`install`] has run: a handle registered
/// before a recorder is installed would stay a no-op for good, so until
/// then every call goes through the macros (and the current recorder).
fn handles() -> Option<&'static Handles> {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLE.get()?;
    Some(HANDLES.get_or_init(Handles::default))
}

/// Runs `f` on the handle of `key`, registering it with `make` on the
/// first use. The common case takes only a read lock.
fn with_handle<K, Q, V, R>(
    map: &RwLock<HashMap<K, V>>,
    key: &Q,
    make: impl FnOnce() -> (K, V),
    f: impl FnOnce(&V) -> R,
) -> R
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(v) = map.read().expect("metrics handles").get(key) {
        return f(v);
    }
    let (k, v) = make();
    f(map.write().expect("metrics handles").entry(k).or_insert(v))
}

/// A token request finished.
pub fn token_request(env: &str, grant: &'static str, outcome: &'static str, seconds: f64) {
    let Some(h) = handles() else {
        counter!("keyward_tokens_issued_total", "env" => env.to_string(), "grant" => grant, "outcome" => outcome).increment(1);
        histogram!("keyward_token_endpoint_seconds", "env" => env.to_string()).record(seconds);
        return;
    };
    let make_env = || {
        let handles = EnvHandles {
            seconds: histogram!("keyward_token_endpoint_seconds", "env" => env.to_string()),
            issued: RwLock::default(),
        };
        (env.to_string(), handles)
    };
    with_handle(&h.envs, env, make_env, |e| {
        let make_counter = || {
            let c = counter!("keyward_tokens_issued_total", "env" => env.to_string(), "grant" => grant, "outcome" => outcome);
            ((grant, outcome), c)
        };
        with_handle(&e.issued, &(grant, outcome), make_counter, |c| {
            c.increment(1)
        });
        e.seconds.record(seconds);
    });
}

/// A signature was made.
pub fn signing(alg: &'static str, seconds: f64) {
    match handles() {
        Some(h) => with_handle(
            &h.signing,
            alg,
            || (alg, histogram!("keyward_signing_seconds", "alg" => alg)),
            |hist| hist.record(seconds),
        ),
        None => histogram!("keyward_signing_seconds", "alg" => alg).record(seconds),
    }
}

/// A request failed on the server's side (a 5xx), by reason.
pub fn server_error(reason: FaultReason) {
    let r = reason.as_str();
    match handles() {
        Some(h) => with_handle(
            &h.server_errors,
            r,
            || (r, counter!("keyward_server_errors_total", "reason" => r)),
            |c| c.increment(1),
        ),
        None => counter!("keyward_server_errors_total", "reason" => r).increment(1),
    }
}

/// A rotated refresh token was replayed.
pub fn refresh_reuse(env: &str) {
    counter!("keyward_refresh_reuse_detected_total", "env" => env.to_string()).increment(1);
}

/// A rotated refresh token came back within the grace window, its
/// successor unused, and was exchanged again (a lost response).
pub fn refresh_grace_reissue(env: &str) {
    counter!("keyward_refresh_grace_reissues_total", "env" => env.to_string()).increment(1);
}

/// A request to another OAuth endpoint finished.
pub fn endpoint(env: &str, endpoint: &'static str, outcome: &'static str) {
    counter!("keyward_requests_total", "env" => env.to_string(), "endpoint" => endpoint, "outcome" => outcome).increment(1);
}

/// A reload of the server's view failed (`reason`: `store`, `root_key`,
/// `key_open`, `other`).
pub fn reload_failed(reason: &'static str) {
    counter!("keyward_reload_failures_total", "reason" => reason).increment(1);
}

/// Sets the state-derived gauges, then renders everything.
pub async fn render(a: &Authority, handle: &PrometheusHandle) -> String {
    let now = a.now();
    let health = a.reload_health();
    gauge!("keyward_reload_ok").set(if health.failure.is_none() { 1.0 } else { 0.0 });
    if let Some(t) = health.last_success {
        gauge!("keyward_reload_last_success_timestamp_seconds").set(t as f64);
    }
    gauge!("keyward_root_key_stale").set(if health.root_key_stale.is_some() {
        1.0
    } else {
        0.0
    });
    for e in a.snapshot().envs.iter() {
        let name = e.env.name.clone();
        gauge!("keyward_env_without_key", "env" => name.clone()).set(if e.keys.is_empty() {
            1.0
        } else {
            0.0
        });
        gauge!("keyward_env_can_sign", "env" => name.clone()).set(if e.signer(now).is_some() {
            1.0
        } else {
            0.0
        });
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
