//! State shared between gateway replicas, kept in Redis: rate-limit buckets
//! (used by [`crate::ratelimit::RouteLimiter`]) and the DPoP `jti` replay
//! cache ([`RedisReplayCache`], a [`ReplayCache`]). Configured by `redis_url`; without it every
//! replica keeps its own, as before.
//!
//! One multiplexed connection (redis-rs) carries every call of every worker
//! thread, pipelined. Each call is bounded by `redis_timeout` (a few
//! milliseconds): a Redis that is down or slow never holds a request longer
//! than that.
//!
//! **Health.** The handle is *up* while calls succeed. A call that fails on
//! the connection (refused, dropped, timed out) marks it *down*, counts the
//! error (`keyward_gate_redis_errors_total{op,kind}`), sets
//! `keyward_gate_redis_up` to 0 and wakes the supervisor task. While down,
//! callers do not try Redis at all (no added latency): rate limits are
//! decided by each replica's local limiter (fail open), and the replay cache
//! refuses proofs or uses its local cache (`dpop_replay_fail_closed`). The
//! supervisor pings the connection it has, else reconnects, with exponential
//! backoff (100 ms doubling to 2 s, jittered), and marks the handle up again
//! on the first answer within the timeout. While up, it pings once a second
//! so the gauge is right even when no request uses Redis. A server-side error
//! (out of memory, a script error) fails that one call without marking the
//! connection down.
//!
//! **Keys.** Every key starts with `redis_prefix` (one per gateway
//! deployment: replicas of one deployment share it, deployments sharing a
//! Redis must not). Caller-supplied text never becomes a key: subjects,
//! clients, addresses and `jti`s are hashed (SHA-256, first 128 bits,
//! base64url), so keys have a fixed, small length. Every key has an expiry
//! (see [`Redis::gcra`] and [`Redis::first_use`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisResult, Script};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use keyward_verify::{LocalReplayCache, ReplayCache, ReplayError};
use metrics::{counter, gauge, histogram, Counter};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::error::RedisError;

/// Default `redis_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10);
/// Default `redis_prefix`.
pub const DEFAULT_PREFIX: &str = "keyward:gw:";
/// Longest time to open a connection (TCP, and the client's hello).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// First and longest wait between two reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often an up connection is pinged.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The resolved `redis_*` settings.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// Where Redis is (`redis://`, `unix://`); its password is never printed.
    pub url: RedisUrl,
    /// Prefix of every key (one per gateway deployment).
    pub prefix: String,
    /// Longest wait for one call.
    pub timeout: Duration,
    /// While Redis is unreachable, refuse DPoP proofs (true) or check their
    /// `jti` against this replica's own cache (false).
    pub replay_fail_closed: bool,
}

/// A Redis URL whose `Display` and `Debug` hide the password.
#[derive(Clone)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks `url` (scheme, host, database) without connecting.
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        Client::open(url).map_err(|e| e.to_string())?;
        Ok(RedisUrl(url.to_string()))
    }

    /// The URL with its password, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                f.write_str(u.as_str())
            }
            Ok(_) => f.write_str(&self.0),
            Err(_) => f.write_str("(unparsable URL)"),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// What a call was for (the `op` label of the metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A rate-limit check.
    RateLimit,
    /// A replay-cache check.
    Replay,
    /// A health ping.
    Ping,
    /// Opening a connection.
    Connect,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::RateLimit => "rate_limit",
            Op::Replay => "replay",
            Op::Ping => "ping",
            Op::Connect => "connect",
        }
    }
}

/// The GCRA step of [`crate::ratelimit::Limiter::check`], atomically in
/// Redis. KEYS[1]: the bucket; ARGV: now, interval, tolerance (integer
/// microseconds). The bucket holds its theoretical arrival time; a missing
/// or unreadable one is a full bucket. Returns 0 when a token was taken, else
/// the wait in microseconds (the bucket unchanged). The key expires when its
/// bucket would be full again (at most `burst` intervals), so forgetting it
/// changes nothing.
const GCRA_LUA: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then return ahead - tolerance end
local nxt = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor((nxt - now) / 1000) + 1)
return 0
";

/// When the handle last changed state, and why it is down.
struct Health {
    since: SystemTime,
    last_error: Option<String>,
}

/// A shared Redis connection with its health. See the module docs.
pub struct Redis {
    client: Client,
    url: RedisUrl,
    prefix: String,
    timeout: Duration,
    conn: RwLock<Option<MultiplexedConnection>>,
    up: AtomicBool,
    health: Mutex<Health>,
    wake: Notify,
    gcra: Script,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("up", &self.is_up())
            .finish()
    }
}

/// The hashed form of caller-supplied text in a key.
fn digest(text: &str) -> String {
    let d = keyward_jose::crypto::sha256(text.as_bytes());
    B64.encode(&d[..16])
}

/// Microseconds since the Unix epoch (0 before it).
pub fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros().min(u128::from(u64::MAX)) as u64)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl Redis {
    /// A handle for `config`, not connected yet: call [`Redis::connect`]
    /// (once, at start) and [`Redis::spawn_supervisor`].
    pub fn new(config: &RedisConfig) -> Result<Arc<Redis>, RedisError> {
        let client = Client::open(config.url.expose()).map_err(RedisError::Connection)?;
        gauge!("keyward_gate_redis_up").set(0.0);
        Ok(Arc::new(Redis {
            client,
            url: config.url.clone(),
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            conn: RwLock::new(None),
            up: AtomicBool::new(false),
            health: Mutex::new(Health {
                since: SystemTime::now(),
                last_error: Some("not connected yet".into()),
            }),
            wake: Notify::new(),
            gcra: Script::new(GCRA_LUA),
        }))
    }

    /// Whether calls currently go to Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One line for `/readyz`: `redis: up ...` or `redis: down ...`.
    pub fn status(&self) -> String {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let secs = h.since.elapsed().map_or(0, |d| d.as_secs());
        if self.is_up() {
            format!("redis: up for {secs} s ({})", self.url)
        } else {
            format!(
                "redis: down for {secs} s ({}: {}); reconnecting",
                self.url,
                h.last_error.as_deref().unwrap_or("unknown error")
            )
        }
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        if !self.is_up() {
            return None;
        }
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_up(&self) {
        {
            let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            h.since = SystemTime::now();
            h.last_error = None;
        }
        if !self.up.swap(true, Ordering::AcqRel) {
            gauge!("keyward_gate_redis_up").set(1.0);
            tracing::info!(url = %self.url, "redis reachable: rate limits and the replay cache are shared");
        }
    }

    /// Records a failed call; a connection-level failure marks the handle
    /// down and wakes the supervisor.
    fn failed(&self, op: Op, e: &RedisError) {
        let kind = e.kind();
        counter!("keyward_gate_redis_errors_total", "op" => op.label(), "kind" => kind)
            .increment(1);
        if kind == "server" {
            tracing::warn!(op = op.label(), error = %e, "redis call failed");
            return;
        }
        let was_up = self.up.swap(false, Ordering::AcqRel);
        {
            let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            if was_up {
                h.since = SystemTime::now();
            }
            h.last_error = Some(e.to_string());
        }
        if was_up {
            gauge!("keyward_gate_redis_up").set(0.0);
            tracing::warn!(url = %self.url, op = op.label(), error = %e, "redis unreachable: rate limits are per replica until it returns");
            self.wake.notify_one();
        }
    }

    /// Awaits one call, bounded by the timeout; records its time, and its
    /// failure.
    async fn bounded<T>(
        &self,
        op: Op,
        call: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T, RedisError> {
        let start = Instant::now();
        let r = tokio::time::timeout(self.timeout, call).await;
        histogram!("keyward_gate_redis_seconds", "op" => op.label())
            .record(start.elapsed().as_secs_f64());
        let e = match r {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => RedisError::from_redis(e, ms(self.timeout)),
            Err(_) => RedisError::Timeout(ms(self.timeout)),
        };
        self.failed(op, &e);
        Err(e)
    }

    /// Takes one token from the shared bucket `bucket` (a key under the
    /// prefix, made by [`Redis::bucket_key`]): `Ok(None)` when taken,
    /// `Ok(Some(wait))` when refused. Same arithmetic as the local
    /// [`crate::ratelimit::Limiter`], in microseconds.
    pub async fn gcra(
        &self,
        bucket: &str,
        now_us: u64,
        interval_us: u64,
        tolerance_us: u64,
    ) -> Result<Option<Duration>, RedisError> {
        let mut conn = self.connection().ok_or(RedisError::Down)?;
        let mut inv = self.gcra.key(bucket);
        inv.arg(now_us).arg(interval_us).arg(tolerance_us);
        let wait: i64 = self
            .bounded(Op::RateLimit, inv.invoke_async(&mut conn))
            .await?;
        Ok((wait > 0).then(|| Duration::from_micros(wait as u64)))
    }

    /// The key of `text`'s bucket among `scope`'s (a route's limiter of one
    /// kind): `{prefix}rl:{scope}:{digest}`.
    pub fn bucket_key(&self, scope: &str, text: &str) -> String {
        format!("{}rl:{scope}:{}", self.prefix, digest(text))
    }

    /// Remembers `key` (a `jti`, hashed) until `expires_at` if it is new:
    /// `Ok(true)` the first time, `Ok(false)` for a replay. One `SET NX PX`,
    /// so two replicas asked at once give one `true`. A value that has
    /// already expired is kept for a second.
    pub async fn first_use(
        &self,
        key: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, RedisError> {
        let k = format!("{}jti:{}", self.prefix, digest(key));
        let ttl_ms = expires_at.saturating_sub(now).clamp(1, 366 * 86_400) * 1000;
        let mut conn = self.connection().ok_or(RedisError::Down)?;
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(&k).arg(1).arg("NX").arg("PX").arg(ttl_ms);
        let set: Option<String> = self.bounded(Op::Replay, cmd.query_async(&mut conn)).await?;
        Ok(set.is_some())
    }

    /// Pings `conn` within the timeout.
    async fn ping(&self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        match tokio::time::timeout(
            self.timeout,
            ::redis::cmd("PING").query_async::<String>(conn),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(RedisError::from_redis(e, ms(self.timeout))),
            Err(_) => Err(RedisError::Timeout(ms(self.timeout))),
        }
    }

    /// Makes the handle usable: pings the connection it has, else opens a
    /// new one and pings it. On success the handle is up.
    pub async fn connect(&self) -> Result<(), RedisError> {
        let held = self.conn.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(mut c) = held {
            if self.ping(&mut c).await.is_ok() {
                self.set_up();
                return Ok(());
            }
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let opened = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client
                .get_multiplexed_async_connection_with_config(&cfg),
        )
        .await;
        let result = match opened {
            Ok(Ok(mut c)) => {
                c.set_response_timeout(self.timeout);
                self.ping(&mut c).await.map(|()| c)
            }
            Ok(Err(e)) => Err(RedisError::from_redis(e, ms(CONNECT_TIMEOUT))),
            Err(_) => Err(RedisError::Timeout(ms(CONNECT_TIMEOUT))),
        };
        match result {
            Ok(c) => {
                *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(c);
                counter!("keyward_gate_redis_connects_total").increment(1);
                self.set_up();
                Ok(())
            }
            Err(e) => {
                self.failed(Op::Connect, &e);
                Err(e)
            }
        }
    }

    /// Starts the task that keeps the handle healthy: while up, a ping each
    /// second; while down, [`Redis::connect`] with exponential backoff.
    pub fn spawn_supervisor(self: &Arc<Self>) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.supervise().await })
    }

    async fn supervise(&self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            if self.is_up() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(HEALTH_INTERVAL) => {
                        if let Some(mut c) = self.connection() {
                            if let Err(e) = self.ping(&mut c).await {
                                self.failed(Op::Ping, &e);
                            }
                        }
                    }
                }
                backoff = MIN_BACKOFF;
                continue;
            }
            if self.connect().await.is_ok() {
                backoff = MIN_BACKOFF;
                continue;
            }
            // +-20% so replicas that lost Redis together do not return in step.
            let r = f64::from(u16::from_le_bytes(keyward_jose::crypto::random_bytes::<2>()))
                / f64::from(u16::MAX);
            tokio::time::sleep(backoff.mul_f64(0.8 + 0.4 * r)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The DPoP `jti` replay cache shared by every replica through Redis (one
/// `SET NX PX` per proof, see [`Redis::first_use`]): a proof accepted by one
/// replica is a replay at every other.
///
/// While Redis does not answer, `fail_closed` (`dpop_replay_fail_closed`,
/// the default) refuses every proof ([`ReplayError::Unavailable`]; the gate
/// answers 401 `invalid_dpop_proof`, and the client may retry with a fresh
/// proof), because a replay check that silently stops is a hole; otherwise
/// this replica's own [`LocalReplayCache`] answers, which knows only the
/// proofs it saw during the outage. Either way it is counted in
/// `keyward_gate_replay_unavailable_total{action="refused"|"local"}`.
pub struct RedisReplayCache {
    redis: Arc<Redis>,
    fail_closed: bool,
    local: LocalReplayCache,
    refused: Counter,
    local_used: Counter,
}

impl fmt::Debug for RedisReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplayCache")
            .field("redis", &self.redis)
            .field("fail_closed", &self.fail_closed)
            .finish_non_exhaustive()
    }
}

impl RedisReplayCache {
    /// A cache in `redis`; while it is unreachable, refuse (`fail_closed`)
    /// or use a local cache of `local_capacity` entries.
    pub fn new(redis: Arc<Redis>, fail_closed: bool, local_capacity: usize) -> Self {
        RedisReplayCache {
            redis,
            fail_closed,
            local: LocalReplayCache::new(local_capacity),
            refused: counter!("keyward_gate_replay_unavailable_total", "action" => "refused"),
            local_used: counter!("keyward_gate_replay_unavailable_total", "action" => "local"),
        }
    }

    async fn check(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, ReplayError> {
        match self.redis.first_use(key, expires_at, now).await {
            Ok(first) => Ok(first),
            Err(e) if self.fail_closed => {
                self.refused.increment(1);
                Err(ReplayError::Unavailable(Box::new(e)))
            }
            Err(_) => {
                self.local_used.increment(1);
                self.local.check(key, expires_at, now)
            }
        }
    }
}

impl ReplayCache for RedisReplayCache {
    fn first_use<'a>(
        &'a self,
        key: &'a str,
        expires_at: i64,
        now: i64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, ReplayError>> + Send + 'a>>
    {
        Box::pin(self.check(key, expires_at, now))
    }
}
