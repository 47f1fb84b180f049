//! Time as an input (DESIGN.md rule 4). The server asks a [`Clock`] — the
//! one clock trait of keyward, from keyward-verify, re-exported here so the
//! issuer's users name it as before; tests and rotation drills run an
//! accelerated [`ScaledClock`].

use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use keyward_verify::clock::{Clock, FixedClock, SharedClock, SystemClock};

use keyward_store::Timestamp;

/// A clock that starts at `start` and runs `speed` times faster than real
/// time. Replicas given the same `start` and `speed` agree on the time.
#[derive(Clone, Debug)]
pub struct ScaledClock {
    start: Timestamp,
    speed: f64,
    origin: Instant,
    origin_wall: f64,
}

impl ScaledClock {
    /// Time `start` (unix seconds) is the moment the wall clock read
    /// `start`; from then on time runs `speed` times faster.
    pub fn new(start: Timestamp, speed: f64) -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        ScaledClock {
            start,
            speed,
            origin: Instant::now(),
            origin_wall: wall,
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        // Anchored to the wall clock so separate processes agree.
        let wall = self.origin_wall + self.origin.elapsed().as_secs_f64();
        (self.start as f64 + (wall - self.start as f64) * self.speed).floor() as Timestamp
    }
}
