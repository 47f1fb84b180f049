//! Revoked token ids (`jti`) with their expiry, so a revoked token is refused
//! before it expires. Filled by the gateway's revocation feed (or any caller);
//! entries are dropped once the token they name has expired anyway.

use std::collections::HashMap;
use std::sync::RwLock;

/// A set of revoked `jti`s, each kept until its token's `exp`.
#[derive(Debug, Default)]
pub struct RevocationList {
    entries: RwLock<HashMap<String, i64>>,
}

impl RevocationList {
    /// An empty list.
    pub fn new() -> Self {
        RevocationList::default()
    }

    /// Records that `jti` (of a token expiring at `exp`) is revoked.
    pub fn revoke(&self, jti: &str, exp: i64) {
        let mut e = self.entries.write().expect("revocations lock");
        let slot = e.entry(jti.to_string()).or_insert(exp);
        *slot = (*slot).max(exp);
    }

    /// Whether `jti` is revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        let e = self.entries.read().expect("revocations lock");
        !e.is_empty() && e.contains_key(jti)
    }

    /// Drops entries whose tokens expired before `now - leeway`.
    pub fn prune(&self, now: i64, leeway: i64) {
        self.entries
            .write()
            .expect("revocations lock")
            .retain(|_, exp| *exp + leeway >= now);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.read().expect("revocations lock").len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_check_prune() {
        let r = RevocationList::new();
        assert!(!r.is_revoked("a"));
        r.revoke("a", 100);
        r.revoke("b", 300);
        assert!(r.is_revoked("a") && r.is_revoked("b"));
        r.prune(200, 60);
        assert!(!r.is_revoked("a"));
        assert!(r.is_revoked("b"));
        assert_eq!(r.len(), 1);
    }
}
