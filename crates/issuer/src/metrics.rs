//! Prometheus metrics. Counters and histograms are recorded where things
//! happen; gauges that derive from state (key age, time to next rotation,
//! audit chain length) are computed when `/metrics` is scraped, by the
//! authority (`Authority::gauges`), and set here by [`render`]. This module
//! knows metric names, not the authority's state: it depends on no other
//! module of the crate but `oauth` (the reasons of server errors).

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use metrics::{counter, gauge, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::oauth::FaultReason;

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
    signing: RwLock<HashMap<(&'static str, &'static str), Histogram>>,
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

/// A signature was made (or tried) by a key of `alg` held by `store`
/// (`local`, `pkcs11`, `aws-kms`): `keyward_signing_seconds{alg,store}`,
/// the signing latency per algorithm and per store.
pub fn signing(alg: &'static str, store: &'static str, seconds: f64) {
    match handles() {
        Some(h) => with_handle(
            &h.signing,
            &(alg, store),
            || {
                let hist = histogram!("keyward_signing_seconds", "alg" => alg, "store" => store);
                ((alg, store), hist)
            },
            |hist| hist.record(seconds),
        ),
        None => {
            histogram!("keyward_signing_seconds", "alg" => alg, "store" => store).record(seconds)
        }
    }
}

/// The reasons a device fails, as [`keyward_signers::SignerError::reason`]
/// names them, shown at 0 from the start for each configured store.
pub const SIGNER_ERROR_REASONS: [&str; 16] = [
    "module",
    "token",
    "pin",
    "session",
    "device",
    "throttled",
    "server",
    "timeout",
    "unreachable",
    "disabled",
    "key",
    "bad_signature",
    "not_found",
    "mismatch",
    "config",
    "unsupported",
];

/// A device failed (to open a key, sign, generate, destroy):
/// `keyward_signer_errors_total{store,reason}`.
pub fn signer_error(store: &'static str, reason: &'static str) {
    counter!("keyward_signer_errors_total", "store" => store, "reason" => reason).increment(1);
}

/// Shows every configured device store's failure counters at 0 (so a rate
/// has a base).
pub fn register_key_stores(stores: &keyward_signers::KeyStores) {
    for s in stores.iter() {
        for r in SIGNER_ERROR_REASONS {
            counter!("keyward_signer_errors_total", "store" => s.name(), "reason" => r)
                .increment(0);
        }
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

/// The state-derived gauges of the whole server, as of one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gauges {
    /// The last reload succeeded.
    pub reload_ok: bool,
    /// Unix time of the last successful reload.
    pub reload_last_success: Option<i64>,
    /// This server does not hold the store's root key.
    pub root_key_stale: bool,
    pub envs: Vec<EnvGauges>,
    /// Records in the audit chain, when the store answered.
    pub audit_chain_length: Option<i64>,
}

/// The state-derived gauges of one environment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnvGauges {
    pub env: String,
    pub without_key: bool,
    pub can_sign: bool,
    /// While a key signs: its age and the seconds to the next rotation.
    pub signing_key_age_secs: Option<i64>,
    pub secs_to_next_rotation: Option<i64>,
    pub published_keys: usize,
    /// Keys in each published state (`pending`, `active`, `retired`).
    pub keys_by_state: [(&'static str, usize); 3],
    /// Seconds since the scheduled rotation became due with none pending
    /// (0 while it is not due); `None` while nothing signs.
    pub rotation_overdue_secs: Option<i64>,
    /// A key is pending, or took over less than a JWKS cache lifetime ago.
    pub rotation_in_progress: bool,
}

/// Sets the state-derived gauges, then renders everything.
pub fn render(g: &Gauges, handle: &PrometheusHandle) -> String {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    gauge!("keyward_reload_ok").set(flag(g.reload_ok));
    if let Some(t) = g.reload_last_success {
        gauge!("keyward_reload_last_success_timestamp_seconds").set(t as f64);
    }
    gauge!("keyward_root_key_stale").set(flag(g.root_key_stale));
    for e in &g.envs {
        let name = e.env.clone();
        gauge!("keyward_env_without_key", "env" => name.clone()).set(flag(e.without_key));
        gauge!("keyward_env_can_sign", "env" => name.clone()).set(flag(e.can_sign));
        if let Some(age) = e.signing_key_age_secs {
            gauge!("keyward_signing_key_age_seconds", "env" => name.clone()).set(age as f64);
        }
        if let Some(next) = e.secs_to_next_rotation {
            gauge!("keyward_seconds_to_next_rotation", "env" => name.clone()).set(next as f64);
        }
        gauge!("keyward_published_keys", "env" => name.clone()).set(e.published_keys as f64);
        for (state, n) in e.keys_by_state {
            gauge!("keyward_keys", "env" => name.clone(), "state" => state).set(n as f64);
        }
        if let Some(overdue) = e.rotation_overdue_secs {
            gauge!("keyward_rotation_overdue_seconds", "env" => name.clone()).set(overdue as f64);
        }
        gauge!("keyward_rotation_in_progress", "env" => name.clone())
            .set(flag(e.rotation_in_progress));
        // Rare events, shown at 0 from the first scrape so that `increase()`
        // sees the first one (a series born at 1 has no earlier sample).
        counter!("keyward_refresh_reuse_detected_total", "env" => name.clone()).increment(0);
        counter!("keyward_refresh_grace_reissues_total", "env" => name).increment(0);
    }
    if let Some(n) = g.audit_chain_length {
        gauge!("keyward_audit_chain_length").set(n as f64);
    }
    handle.render()
}
