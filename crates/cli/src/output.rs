//! Printing: JSON for machines, aligned tables for people.
//!
//! Every write to standard output goes through [`out!`] / [`outln!`] (or
//! [`banner!`] for a server's start-up lines), never `print!`/`println!`,
//! which panic when the reader has gone: `keyward audit list | head` must
//! end quietly, not with a panic and exit 101.

use std::io::Write as _;

use keyward_issuer::fmt_time;
use keyward_jose::KeyFamily;
use keyward_store::{KeyRecord, Timestamp};
use serde_json::Value;

pub use keyward_issuer::views::key_json;

/// Writes to standard output. When the reader has gone (a closed pipe, as
/// when `head` has read enough), the process exits at once, quietly, with
/// status 0, as ripgrep does: the output was cut short on purpose, and 141
/// would fail a `set -o pipefail` script for it. Everything a command
/// changes is committed before it prints. Any other write error (a full
/// disk) ends the process with a one-line error and status 1.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        stdout_failed(e);
    }
}

/// [`write_out`] for bytes.
pub fn write_out_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        stdout_failed(e);
    }
}

/// What this command's output carries that is shown once (a client secret,
/// an admin token), if anything: then a reader that has gone is an error.
static SHOWN_ONCE: std::sync::Mutex<Option<&'static str>> = std::sync::Mutex::new(None);

/// Marks this command's output as carrying `what` (e.g. "the client secret"),
/// shown once and stored only hashed: if it cannot be delivered (the reader
/// closed the pipe), the command fails (exit 1) and says how to get a new
/// one, instead of ending quietly as a cut-short listing does.
pub fn shown_once(what: &'static str) {
    *SHOWN_ONCE.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
}

fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        let once = *SHOWN_ONCE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(what) = once {
            eprintln!(
                "error: {what} was made but not delivered (the reader closed the pipe); keyward stores only its hash, so make a new one"
            );
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// A server's start-up line: a reader that has gone does not stop the
/// server, so write errors are ignored.
pub fn write_banner(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stdout().lock().write_fmt(args);
}

/// `print!` through [`write_out`].
macro_rules! out {
    ($($t:tt)*) => {
        $crate::output::write_out(format_args!($($t)*))
    };
}

/// `println!` through [`write_out`].
macro_rules! outln {
    () => {
        $crate::output::write_out(format_args!("\n"))
    };
    ($($t:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($t)*)))
    };
}

/// `println!` through [`write_banner`].
macro_rules! banner {
    ($($t:tt)*) => {
        $crate::output::write_banner(format_args!("{}\n", format_args!($($t)*)))
    };
}

pub(crate) use {banner, out, outln};

pub fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).expect("JSON value"));
}

fn opt_cell(t: Option<Timestamp>) -> String {
    t.map(fmt_time).unwrap_or_else(|| "-".into())
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// How to run this binary again in a shell: `keyward` when that name on
/// PATH is this binary, else its full path (after `cargo run` it is under
/// target/ and not on PATH). The second value is a hint to print then.
pub fn command_name() -> (String, Option<String>) {
    let Ok(exe) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return ("keyward".into(), None);
    };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            dir.join("keyward")
                .canonicalize()
                .is_ok_and(|found| found == exe)
        })
    });
    if on_path {
        return ("keyward".into(), None);
    }
    let full = exe.display().to_string();
    let hint = format!(
        "keyward is not on your PATH: install it with `cargo install --path crates/cli`, or run it as {full}"
    );
    (full, Some(hint))
}

/// Prints `name: value` lines, the values aligned.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(n, _)| n.len()).max().unwrap_or(0) + 1;
    for (name, value) in pairs {
        outln!("{:<width$} {value}", format!("{name}:"));
    }
}

/// Seconds as a short duration in the units the flags take: `90d`, `48h`,
/// `15m`, `1h 30m`, `0s`.
pub fn duration(secs: i64) -> String {
    if secs <= 0 {
        return format!("{secs}s");
    }
    let mut left = secs;
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if left >= size {
            parts.push(format!("{}{unit}", left / size));
            left %= size;
        }
    }
    parts.join(" ")
}

pub fn key_rows(keys: &[KeyRecord], now: Timestamp) -> Vec<Vec<String>> {
    keys.iter()
        .map(|k| {
            vec![
                k.kid.clone(),
                k.alg.name().to_string(),
                match k.alg.family() {
                    KeyFamily::Rsa => k.size_bits.to_string(),
                    KeyFamily::Ec(c) => c.name().to_string(),
                    KeyFamily::Ed25519 => "Ed25519".to_string(),
                    KeyFamily::MlDsa(p) => p.name().to_string(),
                },
                k.state(now).to_string(),
                fmt_time(k.created_at),
                fmt_time(k.activates_at),
                opt_cell(k.retires_at),
                opt_cell(k.removes_at.or(k.revoked_at)),
                k.key_store().to_string(),
                k.owner.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

pub const KEY_HEADER: [&str; 10] = [
    "KID",
    "ALG",
    "SIZE/CURVE",
    "STATE",
    "CREATED",
    "ACTIVATES",
    "RETIRES",
    "REMOVED/REVOKED",
    "STORE",
    "OWNER",
];

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_read_like_the_flags() {
        assert_eq!(duration(90 * 86_400), "90d");
        assert_eq!(duration(48 * 3_600), "2d");
        assert_eq!(duration(3_600 + 1_800), "1h 30m");
        assert_eq!(duration(61), "1m 1s");
        assert_eq!(duration(0), "0s");
    }
}
