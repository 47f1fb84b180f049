//! Time as an input (DESIGN.md rule 4): token validity, key states and
//! schedules are judged against a [`Clock`] the caller passes in, so
//! replicas agree and tests and drills control time. The one clock trait of
//! keyward: the gate, the issuer (which re-exports it and adds an
//! accelerated clock for rotation drills) and the CLI all read it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where "now" (unix seconds) comes from.
pub trait Clock: Send + Sync + 'static {
    /// Unix seconds.
    fn now(&self) -> i64;
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

/// A clock that always reads the same time (tests, `keyward --now`).
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now(&self) -> i64 {
        self.0
    }
}
