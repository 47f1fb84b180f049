//! Recent token rates for the health page, from the metrics registry:
//! `keyward_tokens_issued_total{env,grant,outcome}` as this process's
//! Prometheus exporter renders it, sampled every [`SAMPLE_EVERY`] (and at
//! each view of the page); a rate is the counters' growth between the
//! newest sample and the oldest one of the last [`WINDOW`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The window a rate is measured over (at most).
pub const WINDOW: Duration = Duration::from_secs(300);
const METRIC: &str = "keyward_tokens_issued_total";

/// Counter values by (environment, outcome), summed over grants.
pub(crate) type Counts = BTreeMap<(String, String), f64>;

/// Reads the token counters out of the exporter's text.
pub(crate) fn parse(text: &str) -> Counts {
    let mut out = Counts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(METRIC).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (mut env, mut outcome) = (None, None);
        // Label values here are environment names (A-Z a-z 0-9 . _ -),
        // grants and outcomes: no quote or comma inside.
        for pair in labels.split(',') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let v = v.trim_matches('"');
            match k.trim() {
                "env" => env = Some(v.to_string()),
                "outcome" => outcome = Some(v.to_string()),
                _ => {}
            }
        }
        if let (Some(e), Some(o)) = (env, outcome) {
            *out.entry((e, o)).or_default() += value;
        }
    }
    out
}

/// One row of the rates table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rate {
    pub(crate) env: String,
    pub(crate) outcome: String,
    /// Since the process started.
    pub(crate) total: f64,
    /// Per minute over [`Rates::measure`]'s window.
    pub(crate) per_minute: f64,
}

/// The samples kept.
#[derive(Default)]
pub(crate) struct Rates {
    samples: Mutex<VecDeque<(Instant, Counts)>>,
}

impl Rates {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Counts)>> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the counters as of `at`, dropping samples older than the window.
    pub(crate) fn sample(&self, at: Instant, counts: Counts) {
        let mut s = self.lock();
        while s
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > WINDOW)
        {
            s.pop_front();
        }
        s.push_back((at, counts));
    }

    /// The rates between the oldest and the newest sample, and the time
    /// between them; `None` until two samples at least a second apart exist.
    pub(crate) fn measure(&self) -> Option<(Vec<Rate>, Duration)> {
        let s = self.lock();
        let (t0, first) = s.front()?;
        let (t1, last) = s.back()?;
        let span = t1.saturating_duration_since(*t0);
        if span < Duration::from_secs(1) {
            return None;
        }
        let minutes = span.as_secs_f64() / 60.0;
        let rows = last
            .iter()
            .map(|((env, outcome), total)| {
                let before = first
                    .get(&(env.clone(), outcome.clone()))
                    .copied()
                    .unwrap_or(0.0);
                Rate {
                    env: env.clone(),
                    outcome: outcome.clone(),
                    total: *total,
                    per_minute: (total - before).max(0.0) / minutes,
                }
            })
            .collect();
        Some((rows, span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE keyward_tokens_issued_total counter\n\
        keyward_tokens_issued_total{env=\"dev\",grant=\"client_credentials\",outcome=\"ok\"} 10\n\
        keyward_tokens_issued_total{env=\"dev\",grant=\"refresh_token\",outcome=\"ok\"} 5\n\
        keyward_tokens_issued_total{env=\"dev\",grant=\"client_credentials\",outcome=\"invalid_client\"} 2\n\
        keyward_tokens_issued_total_other{env=\"x\",outcome=\"ok\"} 99\n\
        keyward_token_endpoint_seconds_count{env=\"dev\"} 17\n";

    #[test]
    fn counters_are_read_per_env_and_outcome() {
        let c = parse(TEXT);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[&("dev".into(), "ok".into())], 15.0);
        assert_eq!(c[&("dev".into(), "invalid_client".into())], 2.0);
        assert!(parse("garbage {\nkeyward_tokens_issued_total{env=\"a\"} x\n").is_empty());
    }

    #[test]
    fn a_rate_is_the_growth_over_the_window() {
        let r = Rates::default();
        let t = Instant::now();
        assert!(r.measure().is_none());
        r.sample(t, parse(TEXT));
        assert!(r.measure().is_none(), "one sample has no rate");
        let later = TEXT.replace("} 10\n", "} 70\n");
        r.sample(t + Duration::from_secs(30), parse(&later));
        let (rows, span) = r.measure().unwrap();
        assert_eq!(span, Duration::from_secs(30));
        let ok = rows.iter().find(|r| r.outcome == "ok").unwrap();
        assert_eq!((ok.total, ok.per_minute), (75.0, 120.0));
        let bad = rows.iter().find(|r| r.outcome != "ok").unwrap();
        assert_eq!(bad.per_minute, 0.0);
        // Samples older than the window are dropped.
        r.sample(t + WINDOW + Duration::from_secs(29), parse(&later));
        let (rows, span) = r.measure().unwrap();
        assert_eq!(span, WINDOW - Duration::from_secs(1));
        assert!(rows.iter().all(|r| r.per_minute == 0.0));
    }
}
