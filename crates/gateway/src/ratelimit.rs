//! Per-key rate limits: one token bucket per key (a subject, a client id).
//!
//! Each bucket holds up to `burst` tokens and refills at a steady [`Rate`]; a
//! request takes one token or is refused with the time until the next token.
//! The bucket is kept in its GCRA form (the "theoretical arrival time", one
//! `Instant` per key), which is the same token bucket computed exactly, with
//! no floating-point drift and nothing to do for idle keys.
//!
//! The buckets live in 16 shards, each a `Mutex<HashMap>` picked by the key's
//! hash, so concurrent callers rarely wait on each other and each holds a lock
//! only for a map lookup. Memory is bounded: keys are stored as a keyed 64-bit
//! hash (never the untrusted string itself), and at most `max_keys` buckets
//! exist. When a shard is full, buckets that have refilled completely are
//! dropped first (forgetting them changes nothing: a new bucket starts full);
//! only if that frees too little are the buckets nearest to full dropped,
//! which for keys used alike are the ones idle the longest.
//!
//! Time is an input: [`Limiter::check`] takes `now`, so tests control time.
//!
//! **Shared between replicas.** With `redis_url` set, a [`RouteLimiter`]
//! keeps its buckets in Redis instead ([`crate::redis`]): the same GCRA step,
//! run atomically by a Lua script on a key per bucket holding its theoretical
//! arrival time in microseconds since the Unix epoch, so every replica draws
//! from one bucket per key and a limit of N is N across all of them. The
//! replicas' wall clocks are the time input (keep them synchronized; a replica
//! whose clock is behind is refused, never credited, like a late `now`
//! here). While Redis is unreachable or slower than `redis_timeout`, each
//! replica decides with its own local [`Limiter`] (fail open: a limit of N is
//! then N per replica), and goes back to the shared buckets when Redis
//! answers again.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use metrics::Counter;

use crate::error::RateError;
use crate::redis::{unix_micros, Redis};

/// Longest interval between two tokens that a [`Limiter`] honours (one year);
/// slower rates are treated as this one.
const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Number of shards (fewer when `max_keys` is smaller).
const SHARDS: usize = 16;

/// A steady refill rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second (finite and positive when made by [`Rate::parse`]).
    pub per_sec: f64,
}

impl Rate {
    /// Parses `N/s`, `N/m` or `N/h` (also `N/sec`, `N/min`, `N/hour`), where N
    /// is a positive number that may have decimals: `100/s`, `0.5/s`, `30/min`.
    pub fn parse(s: &str) -> Result<Rate, RateError> {
        let bad = || RateError::Form { text: s.to_owned() };
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let (n, unit) = (n.trim(), unit.trim());
        let secs = match unit {
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(bad()),
        };
        // Digits and at most one dot only: no signs, exponents, `inf` or `NaN`.
        if n.is_empty()
            || !n.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            || n.bytes().filter(|&b| b == b'.').count() > 1
            || !n.bytes().any(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let count: f64 = n.parse().map_err(|_| bad())?;
        let per_sec = count / secs;
        if !(per_sec.is_finite() && per_sec > 0.0) {
            return Err(RateError::NotPositive { text: s.to_owned() });
        }
        Ok(Rate { per_sec })
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Rate, RateError> {
        Rate::parse(s)
    }
}

/// One bucket's state: when it will next be full again (its "theoretical
/// arrival time"). A bucket with `tat <= now` is full.
type Shard = HashMap<u64, Instant>;

/// Token buckets for many keys, safe to share between tasks.
pub struct Limiter {
    /// Time to earn one token.
    interval: Duration,
    /// How far `tat` may run ahead of `now`: `interval * (burst - 1)`.
    tolerance: Duration,
    burst: u32,
    /// Buckets per shard at most.
    shard_cap: usize,
    /// Keys hashed with a per-process random key, so nobody can aim
    /// collisions at one bucket or shard.
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("interval", &self.interval)
            .field("burst", &self.burst)
            .field("max_keys", &(self.shard_cap * self.shards.len()))
            .field("keys", &self.len())
            .finish()
    }
}

impl Limiter {
    /// A limiter refilling each key's bucket at `rate`, holding at most
    /// `burst` tokens (at least 1), and remembering at most `max_keys` keys
    /// (at least 1).
    pub fn new(rate: Rate, burst: u32, max_keys: usize) -> Limiter {
        let burst = burst.max(1);
        let interval = if rate.per_sec.is_finite() && rate.per_sec > 0.0 {
            Duration::try_from_secs_f64(1.0 / rate.per_sec)
                .unwrap_or(MAX_INTERVAL)
                .min(MAX_INTERVAL)
        } else if rate.per_sec == f64::INFINITY {
            Duration::ZERO
        } else {
            MAX_INTERVAL
        };
        let tolerance = interval.checked_mul(burst - 1).unwrap_or(Duration::MAX);
        let max_keys = max_keys.max(1);
        let shards = SHARDS.min(max_keys);
        Limiter {
            interval,
            tolerance,
            burst,
            shard_cap: max_keys / shards,
            hasher: RandomState::new(),
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes one token from `key`'s bucket at time `now`. `Err` holds how long
    /// until a token is available; the bucket is unchanged then.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let h = self.hasher.hash_one(key);
        // High bits pick the shard; the map hashes the whole value again.
        let shard = &self.shards[((h >> 32) as usize) % self.shards.len()];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&h) && map.len() >= self.shard_cap {
            self.evict(&mut map, now);
        }
        let tat = map.entry(h).or_insert(now);
        let start = (*tat).max(now);
        let ahead = start - now;
        if ahead > self.tolerance {
            // `ahead - tolerance` is never zero here.
            return Err(ahead - self.tolerance);
        }
        match start.checked_add(self.interval) {
            Some(next) => {
                *tat = next;
                Ok(())
            }
            None => Err(self.interval.max(Duration::from_nanos(1))),
        }
    }

    /// Makes room in a full shard: drops every bucket that has refilled
    /// completely, then, if that freed less than a sixteenth of the shard, the
    /// buckets nearest to full until it has. Freeing a batch keeps the cost of
    /// the scan spread over many insertions when keys keep arriving.
    fn evict(&self, map: &mut Shard, now: Instant) {
        let before = map.len();
        map.retain(|_, tat| *tat > now);
        let want = (self.shard_cap / 16).max(1);
        let freed = before - map.len();
        if freed >= want || map.is_empty() {
            return;
        }
        let extra = (want - freed).min(map.len());
        let mut by_tat: Vec<(Instant, u64)> = map.iter().map(|(k, t)| (*t, *k)).collect();
        by_tat.select_nth_unstable(extra - 1);
        for (_, k) in &by_tat[..extra] {
            map.remove(k);
        }
    }

    /// Number of buckets currently held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A route's limiter of one kind (per subject, client or IP): the buckets
/// shared through Redis when configured and reachable, else this replica's
/// own [`Limiter`]. See the module docs.
pub struct RouteLimiter {
    local: Limiter,
    shared: Option<SharedBuckets>,
}

struct SharedBuckets {
    redis: Arc<Redis>,
    /// `{kind}:{route}`, the part of the key naming this limiter.
    scope: String,
    interval_us: u64,
    tolerance_us: u64,
    /// `keyward_gate_rate_limit_local_total{route,kind}`.
    local_total: Counter,
}

impl std::fmt::Debug for RouteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLimiter")
            .field("local", &self.local)
            .field("shared", &self.shared.as_ref().map(|s| &s.scope))
            .finish()
    }
}

/// Largest microsecond count a Lua number (a double) holds exactly.
const MAX_EXACT_US: u64 = 1 << 53;

impl RouteLimiter {
    /// `local`, shared through `redis` (when given) as route `route`'s
    /// limiter of kind `kind` (`subject`, `client`, `ip`).
    pub fn new(local: Limiter, redis: Option<Arc<Redis>>, route: &str, kind: &'static str) -> Self {
        let shared = redis.map(|redis| {
            let interval_us = local.interval.as_nanos().div_ceil(1000).min(u128::from(MAX_EXACT_US)) as u64;
            SharedBuckets {
                redis,
                scope: format!("{kind}:{route}"),
                interval_us,
                tolerance_us: interval_us
                    .saturating_mul(u64::from(local.burst - 1))
                    .min(MAX_EXACT_US),
                local_total: metrics::counter!("keyward_gate_rate_limit_local_total", "route" => route.to_string(), "kind" => kind),
            }
        });
        RouteLimiter { local, shared }
    }

    /// Takes one token from `key`'s bucket: in Redis when it answers within
    /// its timeout (at wall-clock time `wall`), else locally (at `now`).
    /// `Err` holds how long until a token is available.
    pub async fn check(&self, key: &str, now: Instant, wall: SystemTime) -> Result<(), Duration> {
        if let Some(s) = &self.shared {
            if s.redis.is_up() {
                let bucket = s.redis.bucket_key(&s.scope, key);
                match s
                    .redis
                    .gcra(&bucket, unix_micros(wall), s.interval_us, s.tolerance_us)
                    .await
                {
                    Ok(None) => return Ok(()),
                    Ok(Some(wait)) => return Err(wait),
                    // Counted by the handle; decided locally below.
                    Err(_) => {}
                }
            }
            s.local_total.increment(1);
        }
        self.local.check(key, now)
    }

    /// Whether the buckets are shared through Redis (when it answers).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        Rate::parse(s).unwrap()
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let l = Limiter::new(rate("1/s"), 3, 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check("alice", t0), Ok(()));
        }
        assert_eq!(l.check("alice", t0), Err(Duration::from_secs(1)));
        // A refusal takes nothing: the wait only shrinks with time.
        assert_eq!(l.check("alice", t0), Err(Duration::from_secs(1)));
        assert_eq!(
            l.check("alice", t0 + Duration::from_millis(250)),
            Err(Duration::from_millis(750))
        );
    }

    #[test]
    fn refills_over_time() {
        let l = Limiter::new(rate("10/s"), 2, 100);
        let t0 = Instant::now();
        assert!(l.check("k", t0).is_ok());
        assert!(l.check("k", t0).is_ok());
        assert_eq!(l.check("k", t0), Err(Duration::from_millis(100)));
        // One token after 100 ms, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.check("k", t1).is_ok());
        assert_eq!(l.check("k", t1), Err(Duration::from_millis(100)));
        // A long idle time refills to `burst`, never beyond.
        let t2 = t1 + Duration::from_secs(3600);
        assert!(l.check("k", t2).is_ok());
        assert!(l.check("k", t2).is_ok());
        assert_eq!(l.check("k", t2), Err(Duration::from_millis(100)));
        // A steady 10/s is always allowed.
        for i in 1..=50u64 {
            assert!(
                l.check("k", t2 + Duration::from_millis(100 * i)).is_ok(),
                "{i}"
            );
        }
    }

    #[test]
    fn slow_rates_and_out_of_order_clocks() {
        let l = Limiter::new(rate("2/min"), 1, 10);
        let t0 = Instant::now() + Duration::from_secs(60);
        assert!(l.check("k", t0).is_ok());
        assert_eq!(l.check("k", t0), Err(Duration::from_secs(30)));
        // A caller whose `now` was read a little earlier is refused, not
        // credited, and nothing panics.
        assert_eq!(
            l.check("k", t0 - Duration::from_secs(10)),
            Err(Duration::from_secs(40))
        );
        assert!(l.check("k", t0 + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn keys_are_independent() {
        let l = Limiter::new(rate("1/h"), 1, 100);
        let t0 = Instant::now();
        assert!(l.check("a", t0).is_ok());
        assert_eq!(l.check("a", t0), Err(Duration::from_secs(3600)));
        assert!(l.check("b", t0).is_ok());
        assert_eq!(l.check("b", t0), Err(Duration::from_secs(3600)));
        assert!(l.check("", t0).is_ok());
        let long = "x".repeat(1 << 20);
        assert!(l.check(&long, t0).is_ok());
        assert_eq!(l.check(&long, t0), Err(Duration::from_secs(3600)));
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn memory_stays_bounded() {
        let max = 1000;
        let l = Limiter::new(rate("1/s"), 5, max);
        let t0 = Instant::now();
        // 100k distinct keys, none of them refilled: the oldest debts go.
        for i in 0..100_000 {
            assert!(l.check(&format!("user-{i}"), t0).is_ok());
            assert!(l.len() <= max);
        }
        assert!(l.len() > max / 2, "{}", l.len());
        // A key that is over its limit and keeps coming survives the churn
        // long enough to stay limited while others are evicted around it.
        let t1 = t0 + Duration::from_millis(1);
        for _ in 0..5 {
            assert!(l.check("hot", t1).is_ok());
        }
        for i in 0..100 {
            let _ = l.check(&format!("other-{i}"), t1);
        }
        assert_eq!(l.check("hot", t1), Err(Duration::from_secs(1)));
        // Much later every bucket is full again, so eviction is lossless.
        let t2 = t0 + Duration::from_secs(60);
        for i in 0..100_000 {
            assert!(l.check(&format!("later-{i}"), t2).is_ok());
        }
        assert!(l.len() <= max);
    }

    #[test]
    fn tiny_and_degenerate_limits() {
        let t0 = Instant::now();
        let l = Limiter::new(rate("1/s"), 0, 0);
        assert!(l.check("a", t0).is_ok());
        assert_eq!(l.check("a", t0), Err(Duration::from_secs(1)));
        assert!(l.check("b", t0).is_ok());
        assert_eq!(l.len(), 1);
        let l = Limiter::new(Rate { per_sec: 1e-30 }, u32::MAX, 10);
        assert!(l.check("a", t0).is_ok());
        let l = Limiter::new(Rate { per_sec: f64::NAN }, 1, 10);
        assert!(l.check("a", t0).is_ok());
        assert_eq!(l.check("a", t0), Err(MAX_INTERVAL), "NaN: the slowest rate");
        let l = Limiter::new(Rate { per_sec: 1e300 }, 1, 10);
        for _ in 0..1000 {
            assert!(l.check("a", t0).is_ok());
        }
    }

    #[test]
    fn concurrent_callers_share_the_budget() {
        let l = std::sync::Arc::new(Limiter::new(rate("1/h"), 100, 1000));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..100).filter(|_| l.check("k", t0).is_ok()).count())
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(allowed, 100);
    }

    #[test]
    fn parse_rates() {
        assert_eq!(rate("100/s").per_sec, 100.0);
        assert_eq!(rate("100/sec").per_sec, 100.0);
        assert_eq!(rate("60/m").per_sec, 1.0);
        assert_eq!(rate("30/min").per_sec, 0.5);
        assert_eq!(rate("7200/h").per_sec, 2.0);
        assert_eq!(rate("3600/hour").per_sec, 1.0);
        assert_eq!(rate("0.5/s").per_sec, 0.5);
        assert_eq!(rate(" 1.5 / s ").per_sec, 1.5);
        assert_eq!(rate(".5/s").per_sec, 0.5);
        assert_eq!("10/s".parse::<Rate>().unwrap().per_sec, 10.0);
        for bad in [
            "",
            "10",
            "10/",
            "/s",
            "10/d",
            "10/S",
            "10/seconds",
            "0/s",
            "0.0/m",
            "-1/s",
            "+1/s",
            "1e3/s",
            "inf/s",
            "NaN/s",
            "1..2/s",
            "./s",
            "1/s/s",
            "ten/s",
            "1 0/s",
        ] {
            let e = Rate::parse(bad).unwrap_err();
            let text = bad.to_string();
            if bad.starts_with('0') {
                assert_eq!(e, RateError::NotPositive { text }, "{bad}");
                assert!(e.to_string().contains("greater than zero"), "{bad}: {e}");
            } else {
                assert_eq!(e, RateError::Form { text }, "{bad}");
                assert!(e.to_string().contains("N/s, N/m or N/h"), "{bad}: {e}");
            }
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert_eq!(
            "10/x".parse::<Rate>().unwrap_err(),
            RateError::Form {
                text: "10/x".into()
            }
        );
    }
}
