//! Reconnecting with backoff: after a device fails, calls fail fast for a
//! while instead of each waiting on a device that is down, and the wait
//! doubles while it stays down.
//!
//! A circuit breaker with a half-open state:
//!
//! - closed: every call is admitted;
//! - open (a window): calls fail at once until the window ends. A failure
//!   reported by a call admitted before the window opened (a burst of
//!   concurrent calls failing together) neither extends nor doubles it:
//!   each [`Permit`] carries the window count at admission, and only a
//!   failure of the current count opens the next window;
//! - half-open: when a window ends, ONE call (the probe) is admitted; the
//!   others keep failing fast until it reports. [`Backoff::succeeded`]
//!   closes the breaker; a failed probe opens the next, doubled window. A
//!   probe that never reports (its caller vanished) does not wedge the
//!   device: after `max` another probe is admitted.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The state of one device's retries. Thread-safe.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    state: Mutex<State>,
}

/// What [`Backoff::admit`] gives an admitted call, to hand back to
/// [`Backoff::failed`] if the call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Permit {
    /// Windows opened before this call was admitted.
    epoch: u64,
}

#[derive(Debug, Default)]
struct State {
    /// No call before this instant (the current window's end).
    until: Option<Instant>,
    /// The wait after the next failure.
    next: Duration,
    /// Consecutive failures (those that opened a window).
    failures: u32,
    /// Windows opened so far.
    epoch: u64,
    /// When the probe of the ended window was admitted; none yet.
    probe: Option<Instant>,
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

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves consistent data: a poisoned lock is used.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A [`Permit`] when the device may be tried now; otherwise how long
    /// until it may (at least 1 ms while a probe is out), and how many
    /// failures in a row led here.
    pub fn admit(&self) -> Result<Permit, (Duration, u32)> {
        let mut s = self.lock();
        let Some(until) = s.until else {
            return Ok(Permit { epoch: s.epoch });
        };
        let now = Instant::now();
        if now < until {
            return Err((until - now, s.failures));
        }
        match s.probe {
            // A probe is out and has not given up yet: wait for its report.
            Some(at) if now < at + self.max => Err((
                (at + self.max - now).max(Duration::from_millis(1)),
                s.failures,
            )),
            // The window ended (or the probe vanished): this call probes.
            _ => {
                s.probe = Some(now);
                Ok(Permit { epoch: s.epoch })
            }
        }
    }

    /// Records the failure of a call admitted with `permit`: when nothing
    /// failed since it was admitted, the device is not tried again for the
    /// current wait, which then doubles; a failure of a call admitted
    /// before the current window opened changes nothing.
    pub fn failed(&self, permit: Permit) {
        let mut s = self.lock();
        if permit.epoch != s.epoch {
            return;
        }
        s.failures = s.failures.saturating_add(1);
        s.epoch += 1;
        s.probe = None;
        s.until = Some(Instant::now() + s.next);
        s.next = (s.next * 2).min(self.max);
    }

    /// Records a call that says nothing about the device's health (a
    /// configuration error, an answer about one key): when it was the
    /// probe, the next call may probe at once instead of after `max`.
    pub fn release(&self, permit: Permit) {
        let mut s = self.lock();
        if permit.epoch == s.epoch {
            s.probe = None;
        }
    }

    /// Records a success: the breaker closes and the next failure waits
    /// `min` again.
    pub fn succeeded(&self) {
        let mut s = self.lock();
        if s.failures != 0 || s.until.is_some() {
            *s = State {
                next: self.min,
                epoch: s.epoch,
                ..State::default()
            };
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.lock().failures
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

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_and_reset_on_success() {
        let b = Backoff::new(40 * MS, 100 * MS);
        let p = b.admit().unwrap();
        b.failed(p);
        let (wait, n) = b.admit().unwrap_err();
        assert!(wait <= 40 * MS && n == 1);
        std::thread::sleep(45 * MS);
        let p = b.admit().expect("the probe once the wait is over");
        b.failed(p);
        let (wait, n) = b.admit().unwrap_err();
        assert!(wait > 40 * MS && wait <= 80 * MS, "{wait:?}");
        assert_eq!(n, 2);
        std::thread::sleep(85 * MS);
        let p = b.admit().unwrap();
        b.failed(p);
        let (wait, n) = b.admit().unwrap_err();
        assert!(
            wait > 80 * MS && wait <= 100 * MS,
            "capped at max: {wait:?}"
        );
        assert_eq!(n, 3);
        b.succeeded();
        assert!(b.admit().is_ok());
        assert_eq!(b.failures(), 0);
        // After a success the next failure waits `min` again.
        let p = b.admit().unwrap();
        b.failed(p);
        let (wait, _) = b.admit().unwrap_err();
        assert!(wait <= 40 * MS, "{wait:?}");
    }

    #[test]
    fn a_burst_of_failures_opens_one_window() {
        let b = Backoff::new(40 * MS, 10_000 * MS);
        // Seven calls admitted together, all failing.
        let permits: Vec<Permit> = (0..7).map(|_| b.admit().unwrap()).collect();
        for p in permits {
            b.failed(p);
        }
        assert_eq!(b.failures(), 1, "one window for one outage");
        let (wait, _) = b.admit().unwrap_err();
        assert!(wait <= 40 * MS, "not escalated: {wait:?}");
    }

    #[test]
    fn one_probe_when_a_window_ends() {
        let b = Backoff::new(20 * MS, 200 * MS);
        let p = b.admit().unwrap();
        b.failed(p);
        std::thread::sleep(25 * MS);
        let probe = b.admit().expect("one probe");
        for _ in 0..5 {
            assert!(b.admit().is_err(), "others fail fast while it is out");
        }
        // A late failure of a call admitted before the window changes nothing.
        b.failed(p);
        assert_eq!(b.failures(), 1);
        // The probe fails: the next window is doubled.
        b.failed(probe);
        assert_eq!(b.failures(), 2);
        let (wait, _) = b.admit().unwrap_err();
        assert!(wait > 20 * MS && wait <= 40 * MS, "{wait:?}");
        std::thread::sleep(45 * MS);
        let _probe = b.admit().expect("the next probe");
        assert!(b.admit().is_err());
        b.succeeded();
        for _ in 0..5 {
            assert!(b.admit().is_ok(), "closed again: every call goes");
        }
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn a_vanished_probe_does_not_wedge_the_device() {
        let b = Backoff::new(10 * MS, 60 * MS);
        let p = b.admit().unwrap();
        b.failed(p);
        std::thread::sleep(15 * MS);
        let _lost = b.admit().expect("a probe that never reports");
        let (wait, _) = b.admit().unwrap_err();
        assert!(wait <= 60 * MS, "{wait:?}");
        std::thread::sleep(65 * MS);
        assert!(b.admit().is_ok(), "another probe after max");
        assert!(b.admit().is_err(), "but only one");
    }

    #[test]
    fn a_probe_that_says_nothing_lets_the_next_probe_in() {
        let b = Backoff::new(10 * MS, 10_000 * MS);
        let p = b.admit().unwrap();
        b.failed(p);
        std::thread::sleep(15 * MS);
        let probe = b.admit().unwrap();
        assert!(b.admit().is_err());
        // A call of the closed state released late changes nothing.
        b.release(p);
        assert!(b.admit().is_err());
        b.release(probe);
        let next = b.admit().expect("the next probe, not after max");
        assert!(b.admit().is_err(), "still one at a time");
        assert_eq!(b.failures(), 1);
        b.failed(next);
        assert_eq!(b.failures(), 2);
    }
}
