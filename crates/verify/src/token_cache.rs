//! The verified-token cache: a bounded LRU keyed by the SHA-256 of the whole
//! token. A hit skips parsing and the signature check, and is only served
//! while the token's `exp` has not passed, its key is still in its issuer's
//! key set, and its `jti` is not revoked; otherwise the entry is dropped and
//! the token verified again from scratch.

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

/// A bounded, sharded LRU of verified tokens.
pub struct TokenCache {
    shards: Vec<Mutex<LruCache<[u8; 32], Entry>>>,
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
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per)))
                .collect(),
        }
    }

    /// The cache key of `token`.
    pub fn key(token: &str) -> [u8; 32] {
        keyward_jose::crypto::sha256(token.as_bytes())
    }

    fn shard(&self, key: &[u8; 32]) -> &Mutex<LruCache<[u8; 32], Entry>> {
        &self.shards[key[0] as usize % SHARDS]
    }

    /// The entry for `key`, if present (marks it recently used).
    pub fn get(&self, key: &[u8; 32]) -> Option<Entry> {
        self.shard(key)
            .lock()
            .expect("token cache lock")
            .get(key)
            .cloned()
    }

    /// Stores an entry.
    pub fn insert(&self, key: [u8; 32], entry: Entry) {
        self.shard(&key)
            .lock()
            .expect("token cache lock")
            .put(key, entry);
    }

    /// Drops the entry for `key`.
    pub fn remove(&self, key: &[u8; 32]) {
        self.shard(key).lock().expect("token cache lock").pop(key);
    }

    /// Updates the generation an entry's key was last seen in.
    pub fn touch(&self, key: &[u8; 32], generation: u64) {
        if let Some(e) = self
            .shard(key)
            .lock()
            .expect("token cache lock")
            .peek_mut(key)
        {
            e.generation = generation;
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
