//! One trusted issuer's JWK Set, fetched and kept fresh by the rules users
//! have asked every other gateway for:
//!
//! - `Cache-Control: max-age` and `ETag`/`If-None-Match` are honoured,
//!   clamped to [`CacheConfig::min_ttl`]..[`CacheConfig::max_ttl`]; a
//!   background task refreshes the set before it expires, so no request waits
//!   on a fetch while the cache is warm ([`JwksCache::spawn_refresher`]);
//! - an unknown `kid` triggers at most one refetch at a time (single-flight)
//!   and at most one per [`CacheConfig::unknown_kid_cooldown`]; unknown kids
//!   are negatively cached until the set next changes or the cooldown ends;
//! - when the endpoint fails or times out, the last good set keeps serving
//!   up to [`CacheConfig::max_stale`] past its expiry, and metrics and logs
//!   say so;
//! - a fetched set replaces the old one atomically; fetch time and body size
//!   are bounded; keys that are weak or malformed (RSA under 2048 bits, an
//!   invalid curve point, private members, a duplicate `kid`) are dropped and
//!   logged, and the rest are used;
//! - keys of an algorithm the issuer's policy does not accept (an ML-DSA
//!   `AKP` key where ML-DSA is not configured) are skipped with a log line
//!   and a count, never a reason to refuse the set; a token naming one is
//!   refused for its algorithm without a refetch.
//!
//! Fetches go through one [`Fetcher`] per issuer, with the rules of
//! [`crate::fetch`]: plain `http://` only for loopback hosts unless
//! [`CacheConfig::allow_http`] says otherwise, only `200 OK` (or `304`),
//! redirects only to the same scheme and at most
//! [`crate::fetch::MAX_REDIRECTS`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use keyward_jose::{Algorithm, JwkSet, KeySet};
use metrics::{counter, gauge};

use crate::error::{DiscoveryError, JwksError, VerifyError};
use crate::fetch::{check_url, etag as etag_of, FetchLimits, Fetched as Answer, Fetcher};

/// Where an issuer's keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// OIDC discovery: `{issuer}/.well-known/openid-configuration`, whose
    /// `issuer` must equal the configured one and whose `jwks_uri` is used.
    Discovery,
    /// An explicit JWK Set URL.
    JwksUri(String),
    /// A JWK Set file, read at start and re-read when it changes.
    File(PathBuf),
}

/// Cache rules for one issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Shortest time a fetched set is considered fresh (default 30 s).
    pub min_ttl: Duration,
    /// Longest time a fetched set is considered fresh (default 24 h).
    pub max_ttl: Duration,
    /// Freshness when the response has no usable `max-age` (default 5 min).
    pub default_ttl: Duration,
    /// Fewest seconds between refetches caused by unknown kids (default 30 s).
    pub unknown_kid_cooldown: Duration,
    /// How long past expiry the last good set keeps serving while the
    /// endpoint fails (default 24 h).
    pub max_stale: Duration,
    /// Whole-fetch timeout (default 5 s).
    pub fetch_timeout: Duration,
    /// Largest accepted response body (default 256 KiB).
    pub max_body_bytes: usize,
    /// Accept `http://` for non-loopback hosts (default false).
    pub allow_http: bool,
    /// Hosts besides the issuer's own that a discovered `jwks_uri` may
    /// name: `host` (any port) or `host:port` (see [`jwks_host_allowed`]).
    /// Empty (the default): only the issuer's host and port.
    pub jwks_hosts: Vec<String>,
}

impl CacheConfig {
    /// The bounds of this issuer's fetches.
    pub fn fetch_limits(&self) -> FetchLimits {
        FetchLimits {
            timeout: self.fetch_timeout,
            max_body_bytes: self.max_body_bytes,
            allow_http: self.allow_http,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(300),
            unknown_kid_cooldown: Duration::from_secs(30),
            max_stale: Duration::from_secs(24 * 3600),
            fetch_timeout: Duration::from_secs(5),
            max_body_bytes: 256 * 1024,
            allow_http: false,
            jwks_hosts: Vec::new(),
        }
    }
}

/// A `jwks_hosts` entry, `host` or `host:port`, as a lower-case host and an
/// optional port; `None` when it is not one (a path, user information, a
/// scheme...).
pub fn parse_jwks_host(entry: &str) -> Option<(String, Option<u16>)> {
    if entry.is_empty()
        || entry.contains(['/', '@', '?', '#', '\\'])
        || entry.contains(char::is_whitespace)
    {
        return None;
    }
    let url = url::Url::parse(&format!("https://{entry}/")).ok()?;
    Some((url.host_str()?.to_ascii_lowercase(), url.port()))
}

/// The host and effective port of an `http(s)` URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let u = url::Url::parse(url).ok()?;
    Some((
        u.host_str()?.to_ascii_lowercase(),
        u.port_or_known_default()?,
    ))
}

/// Whether an OIDC discovery document of `issuer` may point its keys at
/// `jwks_uri`: on the issuer's own host and port, or on a host `jwks_hosts`
/// names (`host` for any port, `host:port` for that port only). Keys are
/// accepted only from hosts the operator trusts, never from wherever a
/// (possibly tampered) discovery document says.
pub fn jwks_host_allowed(issuer: &str, jwks_uri: &str, jwks_hosts: &[String]) -> bool {
    let Some((host, port)) = host_port(jwks_uri) else {
        return false;
    };
    if host_port(issuer).is_some_and(|(h, p)| h == host && p == port) {
        return true;
    }
    jwks_hosts
        .iter()
        .filter_map(|e| parse_jwks_host(e))
        .any(|(h, p)| h == host && p.is_none_or(|p| p == port))
}

/// The set currently in use, replaced as a whole.
#[derive(Debug)]
pub struct Snapshot {
    /// The usable keys.
    pub keys: KeySet,
    /// Increases by one with every replacement.
    pub generation: u64,
    /// When the set was last confirmed (fetched or revalidated).
    pub confirmed_at: Instant,
    /// When the set stops being fresh.
    pub expires_at: Instant,
    etag: Option<String>,
}

/// What [`JwksCache::status`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheStatus {
    /// Seconds since the set was last confirmed (`None` before the first fetch).
    pub age_secs: Option<u64>,
    /// Whether the set is past its freshness (served only because of `max_stale`).
    pub stale: bool,
    /// Number of usable keys.
    pub keys: usize,
    /// The last fetch error, if the last fetch failed.
    pub last_error: Option<String>,
}

/// Result of one fetch.
enum Fetched {
    New(KeySet, Option<String>, Duration),
    NotModified(Duration),
}

struct Inner {
    issuer: String,
    source: KeySource,
    config: CacheConfig,
    /// The algorithms the policy accepts: keys of others are skipped.
    algorithms: Vec<Algorithm>,
    rsa_default: Algorithm,
    fetcher: Fetcher,
    current: ArcSwapOption<Snapshot>,
    /// Held while fetching: one fetch at a time (single-flight).
    fetching: tokio::sync::Mutex<FetchState>,
    /// Unknown kids and the generation they were unknown in.
    negative: Mutex<HashMap<String, (u64, Instant)>>,
    last_error: Mutex<Option<String>>,
}

#[derive(Default)]
struct FetchState {
    /// The `jwks_uri` found by discovery.
    jwks_uri: Option<String>,
    /// When an unknown kid last caused a fetch.
    last_unknown_fetch: Option<Instant>,
    /// When the last fetch failed (cleared by a success).
    last_failure: Option<Instant>,
}

/// Most unknown kids remembered; the map is cleared when full.
const NEGATIVE_MAX: usize = 10_000;
/// Least time between request-driven fetches while the endpoint fails and
/// nothing is cached.
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);
/// Retry interval after a failed background fetch (doubling up to the ttl bounds).
const RETRY_MIN: Duration = Duration::from_secs(1);

/// One issuer's keys. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct JwksCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("issuer", &self.inner.issuer)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// A cache for `issuer`'s keys from `source`, keeping the keys of
    /// `algorithms` (an RSA JWK without `alg` takes the first RSA algorithm
    /// listed, else RS256). Nothing is fetched until the first use,
    /// [`JwksCache::refresh`] or [`JwksCache::spawn_refresher`].
    pub fn new(
        issuer: &str,
        source: KeySource,
        config: CacheConfig,
        algorithms: &[Algorithm],
    ) -> Result<Self, JwksError> {
        if let KeySource::JwksUri(uri) = &source {
            check_url(uri, config.allow_http).map_err(crate::error::FetchError::from)?;
        }
        if source == KeySource::Discovery {
            check_url(issuer, config.allow_http).map_err(crate::error::FetchError::from)?;
        }
        let fetcher = Fetcher::new(config.fetch_limits())?;
        Ok(JwksCache {
            inner: Arc::new(Inner {
                issuer: issuer.to_string(),
                source,
                config,
                algorithms: algorithms.to_vec(),
                rsa_default: crate::policy::rsa_default(algorithms),
                fetcher,
                current: ArcSwapOption::empty(),
                fetching: tokio::sync::Mutex::new(FetchState::default()),
                negative: Mutex::new(HashMap::new()),
                last_error: Mutex::new(None),
            }),
        })
    }

    /// The issuer these keys belong to.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The current set if it may still be used (fresh, or stale within
    /// `max_stale`), without waiting.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        let snap = self.inner.current.load_full()?;
        let limit = snap.expires_at + self.inner.config.max_stale;
        (Instant::now() < limit).then_some(snap)
    }

    /// The usable set, fetching it first if there is none yet (or the last
    /// one is past `max_stale`). Only the first callers ever wait.
    pub async fn keys(&self) -> Result<Arc<Snapshot>, VerifyError> {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let mut state = self.inner.fetching.lock().await;
        if let Some(s) = self.current() {
            return Ok(s);
        }
        // With nothing cached and the endpoint failing, callers queued behind
        // a failed fetch do not each try again: one attempt per backoff.
        if state
            .last_failure
            .is_some_and(|t| t.elapsed() < FAILURE_BACKOFF)
        {
            return Err(VerifyError::KeysUnavailable);
        }
        let _ = self.fetch_locked(&mut state, "initial").await;
        self.current().ok_or(VerifyError::KeysUnavailable)
    }

    /// The key with `kid`, refetching the set once if it is unknown and the
    /// cooldown allows; unknown kids are remembered until the set changes
    /// or the cooldown has passed.
    pub async fn key_for(&self, kid: &str) -> Result<Arc<Snapshot>, VerifyError> {
        let snap = self.keys().await?;
        if snap.keys.get(kid).is_some() {
            return Ok(snap);
        }
        self.refetch_for_unknown(kid, snap.generation).await
    }

    /// The slow path for a `kid` missing from generation `seen`.
    pub async fn refetch_for_unknown(
        &self,
        kid: &str,
        seen: u64,
    ) -> Result<Arc<Snapshot>, VerifyError> {
        let cooldown = self.inner.config.unknown_kid_cooldown;
        if self.is_negative(kid, seen, cooldown) {
            counter!("keyward_gate_unknown_kid_total", "issuer" => self.inner.issuer.clone(), "outcome" => "negative_cache").increment(1);
            return Err(VerifyError::UnknownKid);
        }
        let mut state = self.inner.fetching.lock().await;
        // Someone else may have fetched while we waited for the lock.
        if let Some(s) = self.current() {
            if s.keys.get(kid).is_some() {
                return Ok(s);
            }
        }
        if state
            .last_unknown_fetch
            .is_some_and(|t| t.elapsed() < cooldown)
        {
            let generation = self.current().map(|s| s.generation).unwrap_or(seen);
            self.remember_unknown(kid, generation);
            counter!("keyward_gate_unknown_kid_total", "issuer" => self.inner.issuer.clone(), "outcome" => "cooldown").increment(1);
            return Err(VerifyError::UnknownKid);
        }
        state.last_unknown_fetch = Some(Instant::now());
        counter!("keyward_gate_unknown_kid_total", "issuer" => self.inner.issuer.clone(), "outcome" => "refetch").increment(1);
        let _ = self.fetch_locked(&mut state, "unknown_kid").await;
        drop(state);
        match self.current() {
            Some(s) if s.keys.get(kid).is_some() => Ok(s),
            Some(s) => {
                self.remember_unknown(kid, s.generation);
                Err(VerifyError::UnknownKid)
            }
            None => Err(VerifyError::KeysUnavailable),
        }
    }

    fn is_negative(&self, kid: &str, generation: u64, cooldown: Duration) -> bool {
        let neg = self.inner.negative.lock().expect("negative cache lock");
        neg.get(kid)
            .is_some_and(|(g, at)| *g == generation && at.elapsed() < cooldown)
    }

    fn remember_unknown(&self, kid: &str, generation: u64) {
        let mut neg = self.inner.negative.lock().expect("negative cache lock");
        if neg.len() >= NEGATIVE_MAX {
            neg.clear();
        }
        neg.insert(kid.to_string(), (generation, Instant::now()));
    }

    /// Fetches now (waiting for a fetch in progress instead of starting a
    /// second one). Errors are also recorded for [`JwksCache::status`].
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let mut state = self.inner.fetching.lock().await;
        self.fetch_locked(&mut state, "refresh").await
    }

    /// Health of the cache, for metrics and readiness.
    pub fn status(&self) -> CacheStatus {
        let snap = self.inner.current.load_full();
        let now = Instant::now();
        CacheStatus {
            age_secs: snap
                .as_ref()
                .map(|s| now.saturating_duration_since(s.confirmed_at).as_secs()),
            stale: snap.as_ref().is_some_and(|s| now >= s.expires_at),
            keys: snap.as_ref().map_or(0, |s| s.keys.len()),
            last_error: self.inner.last_error.lock().expect("error lock").clone(),
        }
    }

    /// Runs a task that refreshes the set before it expires (a fifth of its
    /// freshness, or the fetch timeout, ahead) and retries failures with backoff. The task ends when the
    /// returned handle is aborted or the runtime shuts down.
    pub fn spawn_refresher(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut retry = RETRY_MIN;
            loop {
                let ok = this.refresh().await.is_ok();
                let wait = match (ok, this.inner.current.load_full()) {
                    (true, Some(s)) => {
                        retry = RETRY_MIN;
                        // Start early enough that even a fetch taking the
                        // whole timeout lands before expiry.
                        let fresh = s.expires_at.saturating_duration_since(s.confirmed_at);
                        let margin = (fresh / 5).max(this.inner.config.fetch_timeout);
                        fresh.saturating_sub(margin).max(Duration::from_millis(200))
                    }
                    _ => {
                        let wait = retry;
                        retry = (retry * 2).min(this.inner.config.min_ttl.max(RETRY_MIN));
                        wait
                    }
                };
                this.publish_gauges();
                tokio::time::sleep(wait).await;
            }
        })
    }

    fn publish_gauges(&self) {
        let st = self.status();
        let issuer = self.inner.issuer.clone();
        gauge!("keyward_gate_jwks_keys", "issuer" => issuer.clone()).set(st.keys as f64);
        gauge!("keyward_gate_jwks_stale", "issuer" => issuer).set(if st.stale { 1.0 } else { 0.0 });
    }

    async fn fetch_locked(
        &self,
        state: &mut FetchState,
        why: &'static str,
    ) -> Result<(), JwksError> {
        let issuer = self.inner.issuer.clone();
        let result = self.fetch(state).await;
        let now = Instant::now();
        state.last_failure = result.is_err().then_some(now);
        match result {
            Ok(Fetched::New(keys, etag, ttl)) => {
                let generation = self
                    .inner
                    .current
                    .load()
                    .as_ref()
                    .map_or(1, |s| s.generation + 1);
                self.inner.current.store(Some(Arc::new(Snapshot {
                    keys,
                    generation,
                    confirmed_at: now,
                    expires_at: now + ttl,
                    etag,
                })));
                counter!("keyward_gate_jwks_fetches_total", "issuer" => issuer, "outcome" => "updated", "cause" => why).increment(1);
                *self.inner.last_error.lock().expect("error lock") = None;
                Ok(())
            }
            Ok(Fetched::NotModified(ttl)) => {
                if let Some(old) = self.inner.current.load_full() {
                    self.inner.current.store(Some(Arc::new(Snapshot {
                        keys: old.keys.clone(),
                        generation: old.generation,
                        confirmed_at: now,
                        expires_at: now + ttl,
                        etag: old.etag.clone(),
                    })));
                }
                counter!("keyward_gate_jwks_fetches_total", "issuer" => issuer, "outcome" => "not_modified", "cause" => why).increment(1);
                *self.inner.last_error.lock().expect("error lock") = None;
                Ok(())
            }
            Err(e) => {
                counter!("keyward_gate_jwks_fetches_total", "issuer" => issuer.clone(), "outcome" => "failed", "cause" => why).increment(1);
                match self.inner.current.load_full() {
                    Some(s) if now < s.expires_at + self.inner.config.max_stale => tracing::warn!(
                        issuer = %issuer, error = %e, age_secs = now.saturating_duration_since(s.confirmed_at).as_secs(),
                        "JWKS fetch failed; serving the last good key set"
                    ),
                    _ => {
                        tracing::error!(issuer = %issuer, error = %e, "JWKS fetch failed and no usable key set is cached")
                    }
                }
                *self.inner.last_error.lock().expect("error lock") = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn fetch(&self, state: &mut FetchState) -> Result<Fetched, JwksError> {
        let cfg = &self.inner.config;
        let uri = match &self.inner.source {
            KeySource::File(path) => {
                let body = tokio::fs::read(path)
                    .await
                    .map_err(|source| JwksError::File {
                        path: path.clone(),
                        source,
                    })?;
                if body.len() > cfg.max_body_bytes {
                    return Err(JwksError::FileTooLarge {
                        path: path.clone(),
                        max: cfg.max_body_bytes,
                    });
                }
                let keys = self.parse_set(&body)?;
                return Ok(Fetched::New(keys, None, cfg.default_ttl));
            }
            KeySource::JwksUri(uri) => uri.clone(),
            KeySource::Discovery => match &state.jwks_uri {
                Some(uri) => uri.clone(),
                None => {
                    let uri = self.discover().await?;
                    state.jwks_uri = Some(uri.clone());
                    uri
                }
            },
        };
        let etag = self
            .inner
            .current
            .load()
            .as_ref()
            .and_then(|s| s.etag.clone());
        match self
            .inner
            .fetcher
            .get_revalidated(&uri, etag.as_deref())
            .await?
        {
            Answer::NotModified { headers } => Ok(Fetched::NotModified(self.ttl(&headers))),
            Answer::Body { body, headers } => {
                let keys = self.parse_set(&body)?;
                Ok(Fetched::New(keys, etag_of(&headers), self.ttl(&headers)))
            }
        }
    }

    async fn discover(&self) -> Result<String, JwksError> {
        let issuer = &self.inner.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = self.inner.fetcher.get(&url).await?;
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|source| DiscoveryError::NotJson {
                url: url.clone(),
                source,
            })?;
        // OIDC Discovery §4.3: the document's issuer must be the one asked for.
        let named = doc.get("issuer").and_then(|v| v.as_str());
        if named != Some(issuer.as_str()) {
            return Err(DiscoveryError::WrongIssuer {
                found: named.map(str::to_owned),
                url,
            }
            .into());
        }
        let Some(jwks_uri) = doc.get("jwks_uri").and_then(|v| v.as_str()) else {
            return Err(DiscoveryError::NoJwksUri { url }.into());
        };
        check_url(jwks_uri, self.inner.config.allow_http).map_err(|source| {
            DiscoveryError::JwksUri {
                url: url.clone(),
                source,
            }
        })?;
        if !jwks_host_allowed(issuer, jwks_uri, &self.inner.config.jwks_hosts) {
            return Err(DiscoveryError::UntrustedJwksHost {
                url,
                jwks_uri: jwks_uri.to_string(),
            }
            .into());
        }
        Ok(jwks_uri.to_string())
    }

    /// Runs OIDC discovery now (whatever is cached) and returns the
    /// `jwks_uri` it finds, checked as every discovery is: the document names
    /// this issuer, and the `jwks_uri` is a URL the gate fetches on a trusted
    /// host. For `keyward gateway --check`; `None` for other key sources.
    pub async fn discover_jwks_uri(&self) -> Option<Result<String, JwksError>> {
        (self.inner.source == KeySource::Discovery).then_some(self.discover().await)
    }

    fn parse_set(&self, body: &[u8]) -> Result<KeySet, JwksError> {
        let (set, rejected) =
            JwkSet::parse_lenient(body, self.inner.rsa_default).map_err(JwksError::NotAJwkSet)?;
        for r in &rejected {
            counter!("keyward_gate_jwks_keys_rejected_total", "issuer" => self.inner.issuer.clone()).increment(1);
            tracing::warn!(issuer = %self.inner.issuer, index = r.index, kid = ?r.kid, error = %r.error, "JWKS key dropped");
        }
        let mut keys = KeySet::new();
        for k in set.keys {
            let alg = k.key.algorithm();
            let added = if self.inner.algorithms.contains(&alg) {
                keys.insert(k.kid.clone(), k.key)
            } else {
                counter!("keyward_gate_jwks_keys_skipped_total", "issuer" => self.inner.issuer.clone(), "alg" => alg.name()).increment(1);
                tracing::warn!(issuer = %self.inner.issuer, kid = ?k.kid, alg = alg.name(), "JWKS key skipped: its algorithm is not in this issuer's algorithms, so tokens it signs are refused (list it in algorithms to accept them)");
                match k.kid.clone() {
                    Some(kid) => keys.insert_not_accepted(kid, alg),
                    None => Ok(()),
                }
            };
            if let Err(e) = added {
                tracing::warn!(issuer = %self.inner.issuer, kid = ?k.kid, error = %e, "JWKS key dropped");
            }
        }
        Ok(keys)
    }

    /// Freshness from `Cache-Control`, clamped to the configured bounds.
    fn ttl(&self, headers: &reqwest::header::HeaderMap) -> Duration {
        let cfg = &self.inner.config;
        let mut ttl = cfg.default_ttl;
        for v in headers.get_all("cache-control") {
            let Ok(v) = v.to_str() else { continue };
            for d in v.split(',').map(str::trim) {
                let lower = d.to_ascii_lowercase();
                if lower == "no-cache" || lower == "no-store" {
                    ttl = Duration::ZERO;
                } else if let Some(n) = lower.strip_prefix("max-age=") {
                    if let Ok(n) = n.trim_matches('"').parse::<u64>() {
                        ttl = Duration::from_secs(n);
                    }
                }
            }
        }
        ttl.clamp(cfg.min_ttl, cfg.max_ttl.max(cfg.min_ttl))
    }
}
