//! Verification cost of one realistic RFC 9068 access token, per algorithm,
//! with criterion: `raw` aws-lc-rs, `keyward`, `jsonwebtoken` (see
//! `common/mod.rs`); for ML-DSA-44/65/87 `raw` and `keyward` verification
//! and `raw_sign` and `keyward_sign` signing. Each is measured on its own for seconds at a time, so on
//! a shared machine the three can see different neighbours; `paired.rs`
//! measures the ratios in interleaved rounds instead.
//! `scripts/bench-jose.sh` runs both and prints the tables.

#[allow(dead_code)] // each bench uses part of it
mod common;

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench_verify(c: &mut Criterion<Clock>) {
    for name in common::NAMES {
        let case = common::Case::new(name);
        let mut g = c.benchmark_group(case.name);
        g.bench_function("raw", |b| b.iter(|| case.v.raw()));
        g.bench_function("keyward", |b| b.iter(|| case.v.keyward()));
        g.bench_function("jsonwebtoken", |b| b.iter(|| case.jsonwebtoken()));
        g.finish();
    }
    for name in common::PQ_NAMES {
        let case = common::PqCase::new(name);
        let mut g = c.benchmark_group(case.name);
        g.bench_function("raw", |b| b.iter(|| case.v.raw()));
        g.bench_function("keyward", |b| b.iter(|| case.v.keyward()));
        g.bench_function("raw_sign", |b| b.iter(|| case.raw_sign()));
        g.bench_function("keyward_sign", |b| b.iter(|| case.keyward_sign()));
        g.finish();
    }
}

fn config() -> Criterion<Clock> {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .with_measurement(Clock)
}

/// [`common::now_ns`] as a criterion measurement.
struct Clock;

impl Measurement for Clock {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        common::now_ns()
    }
    fn end(&self, start: u64) -> u64 {
        common::now_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if ns < 1e3 {
            (1.0, "ns")
        } else if ns < 1e6 {
            (1e-3, "µs")
        } else if ns < 1e9 {
            (1e-6, "ms")
        } else {
            (1e-9, "s")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(&self, _: f64, _: &Throughput, _: &mut [f64]) -> &'static str {
        "ns"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_verify
}
criterion_main!(benches);
