//! The verified-token cache: a bounded LRU of verified tokens, found by a
//! keyed 64-bit hash of the whole token and confirmed by comparing the whole
//! token, so two tokens can never share an entry (a hash collision is only a
//! miss). A hit skips parsing and the signature check, and is only served
//! while the token's `exp` has not passed, its key is still in its issuer's
//! key set, and its `jti` is not revoked; otherwise the entry is dropped and
//! the token verified again from scratch.
//!
//! The hash is foldhash, seeded at random per cache: a few hundred
//! instructions for a 1 KB token where SHA-256 cost thousands, on every
//! request. Its strength does not matter here, because the comparison
//! decides; the cache holds the tokens it has verified, in memory only.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::identity::Identity;

/// Number of independently locked shards (a power of two).
const SHARDS: usize = 16;

/// A cached verification.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The verified identity.
    pub identity: Arc<Identity>,
    /// Index of the trusted issuer that verified it.
    pub issuer: usize,
    /// Key-set generation in which the key was last seen.
    pub generation: u64,
}

/// Where a token's entry would be: its keyed hash. Only meaningful for the
/// cache that computed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key(u64);

/// One shard: entries by key, each with the token it belongs to.
type Shard = Mutex<LruCache<u64, (Box<str>, Entry)>>;

/// A bounded, sharded LRU of verified tokens.
pub struct TokenCache {
    hasher: foldhash::quality::RandomState,
    shards: Vec<Shard>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.len())
            .finish()
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (at least one per shard).
    pub fn new(capacity: usize) -> Self {
        let per = NonZeroUsize::new(capacity.div_ceil(SHARDS).max(1)).expect("non-zero");
        TokenCache {
            hasher: foldhash::quality::RandomState::default(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per)))
                .collect(),
        }
    }

    /// The cache key of `token` (its bytes, whether or not they are a
    /// well-formed token: only a token that was verified is ever found).
    pub fn key(&self, token: &[u8]) -> Key {
        Key(self.hasher.hash_one(token))
    }

    fn shard(&self, key: Key) -> &Shard {
        // The top bits: the shard's own map hashes the whole key again.
        &self.shards[(key.0 >> 60) as usize % SHARDS]
    }

    /// The entry of exactly `token` (whose key is `key`), if present; marks
    /// it recently used.
    pub fn get(&self, key: Key, token: &[u8]) -> Option<Entry> {
        let mut shard = self.shard(key).lock().expect("token cache lock");
        match shard.get(&key.0) {
            Some((stored, entry)) if stored.as_bytes() == token => Some(entry.clone()),
            _ => None,
        }
    }

    /// Stores the entry of `token`, replacing whatever had its key.
    pub fn insert(&self, key: Key, token: &str, entry: Entry) {
        self.shard(key)
            .lock()
            .expect("token cache lock")
            .put(key.0, (token.into(), entry));
    }

    /// Drops the entry under `key`.
    pub fn remove(&self, key: Key) {
        self.shard(key)
            .lock()
            .expect("token cache lock")
            .pop(&key.0);
    }

    /// Updates the generation the key of `token`'s entry was last seen in
    /// (not another token's entry that has since taken its place).
    pub fn touch(&self, key: Key, token: &[u8], generation: u64) {
        let mut shard = self.shard(key).lock().expect("token cache lock");
        if let Some((stored, e)) = shard.peek_mut(&key.0) {
            if stored.as_bytes() == token {
                e.generation = generation;
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("token cache lock").len())
            .sum()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry (for example when the revocation list is reloaded).
    pub fn clear(&self) {
        for s in &self.shards {
            s.lock().expect("token cache lock").clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sub: &str) -> Entry {
        let claims = crate::verified_claims(&format!(r#"{{"iss":"i","sub":"{sub}"}}"#), &[]);
        Entry {
            identity: Arc::new(Identity::from_claims(claims, None).unwrap()),
            issuer: 0,
            generation: 1,
        }
    }

    #[test]
    fn an_entry_answers_only_its_own_token() {
        let cache = TokenCache::new(100);
        let (a, b) = ("aaa.bbb.ccc", "aaa.bbb.ccd");
        let (ab, bb) = (a.as_bytes(), b.as_bytes());
        let ka = cache.key(ab);
        assert_eq!(ka, cache.key(ab), "the key is a function of the token");
        assert_ne!(ka, cache.key(bb));
        cache.insert(ka, a, entry("alice"));
        let hit = cache.get(ka, ab).expect("hit");
        assert_eq!(hit.identity.subject.as_deref(), Some("alice"));
        // Another token that reached the same key (as a hash collision
        // would) is a miss, never alice's identity.
        assert!(cache.get(ka, bb).is_none());
        assert!(cache.get(ka, b"aaa.bbb.cc").is_none());
        assert!(cache.get(ka, b"").is_none());
        // Storing it replaces alice's entry; hers is then a miss.
        cache.insert(ka, b, entry("bob"));
        assert!(cache.get(ka, ab).is_none());
        assert_eq!(
            cache.get(ka, bb).unwrap().identity.subject.as_deref(),
            Some("bob")
        );
        assert_eq!(cache.len(), 1);
        cache.touch(ka, ab, 7);
        assert_eq!(cache.get(ka, bb).unwrap().generation, 1, "not a's entry");
        cache.touch(ka, bb, 7);
        assert_eq!(cache.get(ka, bb).unwrap().generation, 7);
        cache.remove(ka);
        assert!(cache.get(ka, bb).is_none() && cache.is_empty());
    }

    #[test]
    fn keys_differ_between_caches() {
        // Seeded at random per cache.
        let (one, two) = (TokenCache::new(1), TokenCache::new(1));
        let t = b"header.payload.signature";
        assert_ne!(one.key(t), two.key(t));
    }

    #[test]
    fn capacity_is_bounded() {
        let cache = TokenCache::new(32);
        for i in 0..1000 {
            let t = format!("t.{i}.s");
            cache.insert(cache.key(t.as_bytes()), &t, entry("x"));
        }
        assert!(cache.len() <= 32, "{}", cache.len());
    }
}
