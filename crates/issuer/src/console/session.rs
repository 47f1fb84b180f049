//! Console sessions, held server-side in this replica's memory.
//!
//! The browser's cookie holds only a random session id (256 bits); the
//! server keys its table by the id's SHA-256, and a session holds the
//! admin token's *hash* (never the token), the token's id, its CSRF token
//! and its times. Every request re-checks the admin token by its hash
//! (the admin API's lookup), so revoking the token ends its sessions within
//! the lookup cache's few seconds.
//!
//! Times come from the authority's clock (DESIGN.md rule 4): a session
//! ends [`IDLE_SECS`] after its last request or [`MAX_SECS`] after login,
//! whichever is first.

use std::collections::HashMap;
use std::sync::Mutex;

use keyward_jose::crypto::{constant_time_eq, random_text, sha256};
use keyward_store::Timestamp;

/// A session ends after this long without a request.
pub const IDLE_SECS: i64 = 15 * 60;
/// A session ends this long after login, however busy.
pub const MAX_SECS: i64 = 60 * 60;
/// Most sessions held at once: beyond it, expired ones go, then the oldest.
const MAX_SESSIONS: usize = 1024;

/// A one-line message shown on the next page (after a redirect).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Flash {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// SHA-256 of the admin token that logged in (what the admin API's
    /// lookup takes).
    pub(crate) token_hash: Vec<u8>,
    /// The admin token's id (the audit actor is `admin:<id>`).
    pub(crate) admin_id: String,
    /// The value every form of this session must send back.
    pub(crate) csrf: String,
    pub(crate) created_at: Timestamp,
    pub(crate) last_seen: Timestamp,
    pub(crate) flash: Option<Flash>,
}

impl Session {
    fn expired(&self, now: Timestamp) -> bool {
        now >= self.last_seen + IDLE_SECS || now >= self.created_at + MAX_SECS
    }

    /// Whether `sent` is this session's CSRF token (constant time).
    pub(crate) fn csrf_matches(&self, sent: Option<&str>) -> bool {
        sent.is_some_and(|s| constant_time_eq(s.as_bytes(), self.csrf.as_bytes()))
    }
}

/// The sessions of this replica.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id_hash: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock cannot leave the map half-written.
        self.by_id_hash.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session; returns the cookie value (the session id).
    pub(crate) fn create(&self, token_hash: Vec<u8>, admin_id: String, now: Timestamp) -> String {
        let id = random_text::<32>();
        let session = Session {
            token_hash,
            admin_id,
            csrf: random_text::<32>(),
            created_at: now,
            last_seen: now,
            flash: None,
        };
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| !s.expired(now));
            if map.len() >= MAX_SESSIONS {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, s)| s.created_at)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
        }
        map.insert(sha256(id.as_bytes()), session);
        id
    }

    /// The live session of cookie value `id` at `now` (its last request
    /// moved to `now`, its flash taken when `take_flash`); an expired one is
    /// dropped.
    pub(crate) fn touch(&self, id: &str, now: Timestamp, take_flash: bool) -> Option<Session> {
        let key = sha256(id.as_bytes());
        let mut map = self.lock();
        let s = map.get_mut(&key)?;
        if s.expired(now) {
            map.remove(&key);
            return None;
        }
        s.last_seen = now;
        let copy = s.clone();
        if take_flash {
            s.flash = None;
        }
        Some(copy)
    }

    /// Sets the message the session's next page shows.
    pub(crate) fn flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self.lock().get_mut(&sha256(id.as_bytes())) {
            s.flash = Some(flash);
        }
    }

    /// Ends a session (logout, or its admin token no longer valid).
    pub(crate) fn end(&self, id: &str) {
        self.lock().remove(&sha256(id.as_bytes()));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_or_old() {
        let s = Sessions::default();
        let id = s.create(vec![1], "a".into(), 1000);
        assert_eq!(id.len(), 43);
        assert!(s.touch("wrong", 1000, false).is_none());
        // Each request moves the idle deadline ...
        assert!(s.touch(&id, 1000 + IDLE_SECS - 1, false).is_some());
        assert!(s.touch(&id, 1000 + 2 * IDLE_SECS - 2, false).is_some());
        // ... but not the absolute one.
        assert!(s.touch(&id, 1000 + MAX_SECS, false).is_none());
        assert_eq!(s.len(), 0, "an expired session is dropped");
        let id = s.create(vec![1], "a".into(), 1000);
        assert!(s.touch(&id, 1000 + IDLE_SECS, false).is_none());
        let id = s.create(vec![1], "a".into(), 1000);
        s.end(&id);
        assert!(s.touch(&id, 1000, false).is_none());
    }

    #[test]
    fn csrf_is_checked_exactly() {
        let s = Sessions::default();
        let id = s.create(vec![1], "a".into(), 0);
        let session = s.touch(&id, 0, false).unwrap();
        assert!(session.csrf_matches(Some(&session.csrf.clone())));
        assert!(!session.csrf_matches(None));
        assert!(!session.csrf_matches(Some("")));
        assert!(!session.csrf_matches(Some(&session.csrf[1..])));
        let other = s.create(vec![1], "a".into(), 0);
        let other = s.touch(&other, 0, false).unwrap();
        assert_ne!(other.csrf, session.csrf);
        assert!(!session.csrf_matches(Some(&other.csrf)));
    }

    #[test]
    fn a_flash_is_shown_once() {
        let s = Sessions::default();
        let id = s.create(vec![1], "a".into(), 0);
        s.flash(
            &id,
            Flash {
                ok: true,
                text: "done".into(),
            },
        );
        assert!(s.touch(&id, 1, false).unwrap().flash.is_some());
        assert!(s.touch(&id, 1, true).unwrap().flash.is_some());
        assert!(s.touch(&id, 1, true).unwrap().flash.is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sessions::default();
        let first = s.create(vec![1], "a".into(), 0);
        for _ in 0..MAX_SESSIONS + 5 {
            s.create(vec![1], "a".into(), 1);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(
            s.touch(&first, 10, false).is_none(),
            "the oldest went first"
        );
    }
}
