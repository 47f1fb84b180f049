//! The verify ratios measured in interleaved rounds, for a machine shared
//! with other work: each round times a short batch (about 0.25 ms) of `raw`,
//! `keyward` and `jsonwebtoken` back to back, in a rotating order, and keeps
//! the ratios of that round. A neighbour that slows the core for a while
//! slows all three batches of a round alike, so the median of the per-round
//! ratios holds still where the ratio of separately measured means (what
//! criterion reports) swings by ±10%.
//!
//! `cargo bench -p keyward-jose --bench paired [-- SECONDS_PER_CASE]` prints,
//! per algorithm, the median ns of each verifier and the median and quartiles
//! of keyward/raw and keyward/jsonwebtoken, then one `PAIRED` line each for
//! `scripts/bench-jose.sh`.
//!
//! The ML-DSA cases (`common::PQ_NAMES`) pair `raw` with `keyward`
//! verification and `raw_sign` with `keyward_sign` (batches of about 5 ms:
//! an ML-DSA signature takes a varying number of rejection rounds, so a
//! batch holds enough of them to average out); one `PAIREDPQ` line each.
//!
//! `-- count:N [ALGORITHM...] [fn:NAME...]` instead runs each verifier of
//! each named case (all seven by default) exactly N times, in `instr_raw`,
//! `instr_keyward`, `instr_jsonwebtoken` (classical cases only),
//! `instr_raw_sign` and `instr_keyward_sign` (ML-DSA cases only), or only
//! those named with `fn:` (`fn:raw` `fn:keyward_sign`), and prints nothing: under
//! `valgrind --tool=callgrind --toggle-collect='*::instr_*'` each function's
//! inclusive total / N is that verifier's instruction count, the same from
//! run to run whatever else the machine is doing (signing aside: aws-lc's
//! ML-DSA signatures are hedged, so their rejection rounds vary per call;
//! `scripts/bench-jose.sh` subtracts the aws-lc-rs call inside
//! `instr_keyward_sign` to get keyward's own instructions exactly).

#[allow(dead_code)] // each bench uses part of it
mod common;

use std::time::{Duration, Instant};

fn quartiles(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    [at(0.25), at(0.5), at(0.75)]
}

/// CPU ns per call of `f` over a batch of `n` calls.
fn batch(n: u32, f: impl Fn()) -> f64 {
    let start = common::now_ns();
    for _ in 0..n {
        f();
    }
    (common::now_ns() - start) as f64 / n as f64
}

/// `count:N`: each verifier of each case N times (or those of `fns`), for an
/// instruction count. `Case::new` has already run each once (warm),
/// outside these functions.
fn count(n: u64, names: &[String], fns: &[String]) {
    let chosen = |list: &[String], x: &str| list.is_empty() || list.iter().any(|y| y == x);
    for name in common::NAMES {
        if !chosen(names, name) {
            continue;
        }
        let case = common::Case::new(name);
        if chosen(fns, "raw") {
            instr_raw(&case.v, n);
        }
        if chosen(fns, "keyward") {
            instr_keyward(&case.v, n);
        }
        if chosen(fns, "jsonwebtoken") {
            instr_jsonwebtoken(&case, n);
        }
    }
    for name in common::PQ_NAMES {
        if !chosen(names, name) {
            continue;
        }
        let case = common::PqCase::new(name);
        if chosen(fns, "raw") {
            instr_raw(&case.v, n);
        }
        if chosen(fns, "keyward") {
            instr_keyward(&case.v, n);
        }
        if chosen(fns, "raw_sign") {
            instr_raw_sign(&case, n);
        }
        if chosen(fns, "keyward_sign") {
            instr_keyward_sign(&case, n);
        }
    }
}

#[inline(never)]
fn instr_raw(v: &common::Verifying, n: u64) {
    for _ in 0..n {
        v.raw();
    }
}

#[inline(never)]
fn instr_keyward(v: &common::Verifying, n: u64) {
    for _ in 0..n {
        v.keyward();
    }
}

#[inline(never)]
fn instr_raw_sign(case: &common::PqCase, n: u64) {
    for _ in 0..n {
        case.raw_sign();
    }
}

#[inline(never)]
fn instr_keyward_sign(case: &common::PqCase, n: u64) {
    for _ in 0..n {
        case.keyward_sign();
    }
}

#[inline(never)]
fn instr_jsonwebtoken(case: &common::Case, n: u64) {
    for _ in 0..n {
        case.jsonwebtoken();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(n) = args.iter().find_map(|a| a.strip_prefix("count:")) {
        let names: Vec<String> = args
            .iter()
            .filter(|a| {
                common::NAMES.contains(&a.as_str()) || common::PQ_NAMES.contains(&a.as_str())
            })
            .cloned()
            .collect();
        let fns: Vec<String> = args
            .iter()
            .filter_map(|a| a.strip_prefix("fn:"))
            .map(str::to_owned)
            .collect();
        count(n.parse().expect("count:N"), &names, &fns);
        return;
    }
    // `cargo bench` passes `--bench`; the first number is seconds per case.
    let secs: f64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(4.0);
    println!(
        "{:<12} {:>9} {:>10} {:>9}   {:<23} {:<23} {:>6}",
        "algorithm",
        "raw ns",
        "keyward ns",
        "jwt ns",
        "keyward/raw p25 p50 p75",
        "keyward/jwt p25 p50 p75",
        "rounds"
    );
    let mut lines = Vec::new();
    for name in common::NAMES {
        let case = common::Case::new(name);
        let fns: [&dyn Fn(); 3] = [&|| case.v.raw(), &|| case.v.keyward(), &|| {
            case.jsonwebtoken()
        }];
        // Warm up, and size a batch to about 0.25 ms of the slowest verifier.
        let mut per_call = [0.0f64; 3];
        for (i, f) in fns.iter().enumerate() {
            batch(50, f);
            per_call[i] = batch(200, f);
        }
        let n = (2.5e5 / per_call.iter().cloned().fold(1.0, f64::max)).clamp(1.0, 10_000.0) as u32;
        let (mut ns, mut kr, mut kj) = ([vec![], vec![], vec![]], vec![], vec![]);
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut round = 0usize;
        while Instant::now() < deadline {
            let mut t = [0.0f64; 3];
            for k in 0..3 {
                let i = (round + k) % 3;
                t[i] = batch(n, fns[i]);
            }
            for i in 0..3 {
                ns[i].push(t[i]);
            }
            kr.push(t[1] / t[0]);
            kj.push(t[1] / t[2]);
            round += 1;
        }
        let med = |v: &Vec<f64>| quartiles(v.clone())[1];
        let [kr25, kr50, kr75] = quartiles(kr);
        let [kj25, kj50, kj75] = quartiles(kj);
        println!(
            "{:<12} {:>9.0} {:>10.0} {:>9.0}   {:.3} {:.3} {:.3}       {:.3} {:.3} {:.3}       {:>6}",
            name, med(&ns[0]), med(&ns[1]), med(&ns[2]), kr25, kr50, kr75, kj25, kj50, kj75, round
        );
        lines.push(format!(
            "PAIRED {name} {:.0} {:.0} {:.0} {kr50:.4} {kj50:.4} {kr25:.4} {kr75:.4} {round}",
            med(&ns[0]),
            med(&ns[1]),
            med(&ns[2])
        ));
    }
    println!();
    println!(
        "{:<12} {:<7} {:>10} {:>11}   {:<23} {:>6}",
        "algorithm", "op", "raw ns", "keyward ns", "keyward/raw p25 p50 p75", "rounds"
    );
    for name in common::PQ_NAMES {
        let case = common::PqCase::new(name);
        let ops: [(&str, Two, f64); 2] = [
            ("verify", [&|| case.v.raw(), &|| case.v.keyward()], 2.5e5),
            (
                "sign",
                [&|| case.raw_sign(), &|| drop(case.keyward_sign())],
                5e6,
            ),
        ];
        for (op, fns, batch_ns) in ops {
            let Paired {
                first_ns: raw,
                second_ns: kw,
                ratio: [kr25, kr50, kr75],
                rounds,
            } = pair(fns, batch_ns, secs / 2.0);
            println!(
                "{:<12} {:<7} {:>10.0} {:>11.0}   {:.3} {:.3} {:.3}       {:>6}",
                name, op, raw, kw, kr25, kr50, kr75, rounds
            );
            lines.push(format!(
                "PAIREDPQ {name} {op} {raw:.0} {kw:.0} {kr50:.4} {kr25:.4} {kr75:.4} {rounds}"
            ));
        }
    }
    for l in lines {
        println!("{l}");
    }
}

/// The two functions [`pair`] compares, the floor first.
type Two<'a> = [&'a dyn Fn(); 2];

/// What [`pair`] measured.
struct Paired {
    /// Median ns per call of each function.
    first_ns: f64,
    second_ns: f64,
    /// Quartiles of the per-round second/first ratio.
    ratio: [f64; 3],
    rounds: usize,
}

/// Two functions in interleaved batches of about `batch_ns` each for
/// `secs`.
fn pair(fns: Two, batch_ns: f64, secs: f64) -> Paired {
    let mut per_call = [0.0f64; 2];
    for (i, f) in fns.iter().enumerate() {
        batch(3, f);
        per_call[i] = batch(10, f);
    }
    let n = (batch_ns / per_call.iter().cloned().fold(1.0, f64::max)).clamp(1.0, 10_000.0) as u32;
    let (mut ns, mut ratio) = ([vec![], vec![]], vec![]);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut round = 0usize;
    while Instant::now() < deadline {
        let mut t = [0.0f64; 2];
        for k in 0..2 {
            let i = (round + k) % 2;
            t[i] = batch(n, fns[i]);
        }
        ns[0].push(t[0]);
        ns[1].push(t[1]);
        ratio.push(t[1] / t[0]);
        round += 1;
    }
    let med = |v: &Vec<f64>| quartiles(v.clone())[1];
    Paired {
        first_ns: med(&ns[0]),
        second_ns: med(&ns[1]),
        ratio: quartiles(ratio),
        rounds: round,
    }
}
