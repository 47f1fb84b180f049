//! The replay cache: "has this one-time value been seen before?", answered
//! once per value until it expires. DPoP proofs (RFC 9449 §11.1) use it for
//! their `jti`: a proof is accepted once, within its `iat` window, and the
//! cache remembers it for as long as the window would still accept it.
//!
//! [`ReplayCache`] is the contract; [`LocalReplayCache`] is the bounded
//! in-memory one (per replica). A shared one (Redis) implements the same
//! trait elsewhere, so replicas refuse a proof any one of them has seen.
//!
//! **Full means refuse.** An in-memory cache must be bounded, and evicting
//! an unexpired entry to make room would let that value be replayed, so
//! [`LocalReplayCache`] never evicts before expiry: when every slot holds an
//! unexpired value it answers [`ReplayError::Full`] and the caller refuses
//! the proof (fail closed), counts it (`keyward_replay_cache_full_total`) and
//! says so. Size it as (proofs per second) x (window in seconds) with
//! headroom: 1,000 proofs/s with a 60 s window needs 60,000 entries, about
//! 10 MB with the 69-byte keys the DPoP check makes (`dpop:` and 64 hex
//! digits, held once for the map and the expiry heap).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use thiserror::Error;

/// Why a replay cache could not answer. Either way the value is not known to
/// be fresh, so the caller refuses it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Every slot of a bounded cache holds a value that has not expired.
    #[error("the replay cache is full ({capacity} unexpired entries)")]
    Full {
        /// The cache's capacity.
        capacity: usize,
    },
    /// A shared cache's backend did not answer (or answered nonsense).
    #[error("the replay cache is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A set of one-time values, each remembered until it expires.
pub trait ReplayCache: Send + Sync {
    /// Ok(true): first use of `key`, now remembered until `expires_at` (unix seconds);
    /// Ok(false): a replay.
    fn first_use<'a>(
        &'a self,
        key: &'a str,
        expires_at: i64,
        now: i64,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ReplayError>> + Send + 'a>>;
}

/// A bounded in-memory [`ReplayCache`] for one replica. Never evicts an
/// unexpired entry: when full, it refuses ([`ReplayError::Full`]).
pub struct LocalReplayCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each remembered key and when it expires. (foldhash, seeded at
    /// random per map: the DPoP check's keys are SHA-256 digests anyway.)
    seen: foldhash::HashMap<Arc<str>, i64>,
    /// The same entries by expiry, soonest first, to drop expired ones.
    by_expiry: BinaryHeap<Reverse<(i64, Arc<str>)>>,
}

impl Inner {
    /// Drops every entry that has expired at `now`.
    fn purge(&mut self, now: i64) {
        while let Some(Reverse((at, _))) = self.by_expiry.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.by_expiry.pop() else {
                break;
            };
            // A key is in the heap once: it is only inserted when absent
            // from `seen` (or expired, when its old heap entry was popped
            // first, since its expiry is earlier).
            if self.seen.get(&key) == Some(&at) {
                self.seen.remove(&key);
            }
        }
    }
}

impl std::fmt::Debug for LocalReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalReplayCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl LocalReplayCache {
    /// A cache of at most `capacity` unexpired values (at least one).
    pub fn new(capacity: usize) -> Self {
        LocalReplayCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Entries held (expired ones included until the next call purges them).
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (each
        // operation's writes are a map insert and a heap push).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The synchronous check behind [`ReplayCache::first_use`].
    pub fn check(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, ReplayError> {
        let mut inner = self.lock();
        inner.purge(now);
        if inner.seen.contains_key(key) {
            return Ok(false);
        }
        if expires_at <= now {
            // Already expired: nothing to remember, and nothing that a later
            // use inside the window could replay.
            return Ok(true);
        }
        if inner.seen.len() >= self.capacity {
            metrics::counter!("keyward_replay_cache_full_total").increment(1);
            return Err(ReplayError::Full {
                capacity: self.capacity,
            });
        }
        let key: Arc<str> = key.into();
        inner.seen.insert(key.clone(), expires_at);
        inner.by_expiry.push(Reverse((expires_at, key)));
        Ok(true)
    }
}

impl ReplayCache for LocalReplayCache {
    fn first_use<'a>(
        &'a self,
        key: &'a str,
        expires_at: i64,
        now: i64,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ReplayError>> + Send + 'a>> {
        let answer = self.check(key, expires_at, now);
        Box::pin(std::future::ready(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(
        cache: &dyn ReplayCache,
        key: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, ReplayError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(cache.first_use(key, expires_at, now))
    }

    #[test]
    fn a_value_is_fresh_once_until_it_expires() {
        let cache = LocalReplayCache::new(10);
        assert!(first(&cache, "a", 100, 10).unwrap());
        assert!(!first(&cache, "a", 100, 11).unwrap());
        assert!(!first(&cache, "a", 200, 99).unwrap());
        assert!(first(&cache, "b", 100, 12).unwrap());
        // Expired: forgotten, and fresh again.
        assert!(first(&cache, "a", 300, 100).unwrap());
        assert!(!first(&cache, "a", 300, 101).unwrap());
    }

    #[test]
    fn full_refuses_rather_than_evicting_an_unexpired_value() {
        let cache = LocalReplayCache::new(2);
        assert!(first(&cache, "a", 100, 0).unwrap());
        assert!(first(&cache, "b", 100, 0).unwrap());
        assert!(matches!(
            first(&cache, "c", 100, 1),
            Err(ReplayError::Full { capacity: 2 })
        ));
        // Nothing was evicted: both are still replays.
        assert!(!first(&cache, "a", 100, 2).unwrap());
        assert!(!first(&cache, "b", 100, 2).unwrap());
        assert_eq!(cache.len(), 2);
        // Once they expire there is room again.
        assert!(first(&cache, "c", 200, 100).unwrap());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_already_expired_value_takes_no_room() {
        let cache = LocalReplayCache::new(1);
        assert!(first(&cache, "old", 5, 10).unwrap());
        assert!(cache.is_empty());
        assert!(first(&cache, "new", 20, 10).unwrap());
    }
}
