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
//! `-- count:N [ALGORITHM...]` instead runs each verifier of each named case
//! (all four by default) exactly N times, in `instr_raw`, `instr_keyward`
//! and `instr_jsonwebtoken`, and prints nothing: under
//! `valgrind --tool=callgrind --toggle-collect='*::instr_*'` each function's
//! inclusive total / N is that verifier's instruction count, the same from
//! run to run whatever else the machine is doing.

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

/// `count:N`: each verifier of each case N times, for an instruction count.
/// `Case::new` has already run each once (warm), outside these functions.
fn count(n: u64, names: &[String]) {
    for name in common::NAMES {
        if !names.is_empty() && !names.iter().any(|x| x == name) {
            continue;
        }
        let case = common::Case::new(name);
        instr_raw(&case, n);
        instr_keyward(&case, n);
        instr_jsonwebtoken(&case, n);
    }
}

#[inline(never)]
fn instr_raw(case: &common::Case, n: u64) {
    for _ in 0..n {
        case.raw();
    }
}

#[inline(never)]
fn instr_keyward(case: &common::Case, n: u64) {
    for _ in 0..n {
        case.keyward();
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
            .filter(|a| common::NAMES.contains(&a.as_str()))
            .cloned()
            .collect();
        count(n.parse().expect("count:N"), &names);
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
        let fns: [&dyn Fn(); 3] = [&|| case.raw(), &|| case.keyward(), &|| case.jsonwebtoken()];
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
    for l in lines {
        println!("{l}");
    }
}
