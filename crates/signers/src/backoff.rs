//! Reconnecting with backoff: after a device fails, calls fail fast for a
//! while instead of each waiting on a device that is down, and the wait
//! doubles while it stays down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The state of one device's retries. Thread-safe.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// No call before this instant.
    until: Option<Instant>,
    /// The wait after the next failure.
    next: Duration,
    /// Consecutive failures.
    failures: u32,
}

impl Backoff {
    /// Waits from `min` (after the first failure), doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            state: Mutex::new(State {
                next: min,
                ..State::default()
            }),
        }
    }

    /// `Ok` when the device may be tried now; otherwise how long until it
    /// may, and how many failures in a row led here.
    pub fn admit(&self) -> Result<(), (Duration, u32)> {
        let s = self.state.lock().expect("backoff lock");
        match s.until {
            Some(until) => {
                let now = Instant::now();
                if now >= until {
                    Ok(())
                } else {
                    Err((until - now, s.failures))
                }
            }
            None => Ok(()),
        }
    }

    /// Records a failure: the device is not tried again for the current
    /// wait, which then doubles.
    pub fn failed(&self) {
        let mut s = self.state.lock().expect("backoff lock");
        s.failures = s.failures.saturating_add(1);
        s.until = Some(Instant::now() + s.next);
        s.next = (s.next * 2).min(self.max);
    }

    /// Records a success: the next failure waits `min` again.
    pub fn succeeded(&self) {
        let mut s = self.state.lock().expect("backoff lock");
        if s.failures != 0 || s.until.is_some() {
            *s = State {
                next: self.min,
                ..State::default()
            };
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.state.lock().expect("backoff lock").failures
    }
}

impl Default for Backoff {
    /// 100 ms, doubling up to 10 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_and_reset_on_success() {
        let b = Backoff::new(Duration::from_millis(40), Duration::from_millis(100));
        assert!(b.admit().is_ok());
        b.failed();
        let (wait, n) = b.admit().unwrap_err();
        assert!(wait <= Duration::from_millis(40) && n == 1);
        std::thread::sleep(Duration::from_millis(45));
        assert!(b.admit().is_ok(), "tried again once the wait is over");
        b.failed();
        let (wait, n) = b.admit().unwrap_err();
        assert!(wait > Duration::from_millis(40) && wait <= Duration::from_millis(80));
        assert_eq!(n, 2);
        b.failed();
        b.failed();
        let (wait, _) = b.admit().unwrap_err();
        assert!(
            wait <= Duration::from_millis(100),
            "capped at max: {wait:?}"
        );
        b.succeeded();
        assert!(b.admit().is_ok());
        assert_eq!(b.failures(), 0);
    }
}
