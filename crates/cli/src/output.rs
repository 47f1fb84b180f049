//! Printing: JSON for machines, aligned tables for people.

use keyward_issuer::fmt_time;
use keyward_jose::KeyFamily;
use keyward_store::{KeyRecord, Timestamp};
use serde_json::Value;

pub use keyward_issuer::views::key_json;

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON value"));
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
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
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
                },
                k.state(now).to_string(),
                fmt_time(k.created_at),
                fmt_time(k.activates_at),
                opt_cell(k.retires_at),
                opt_cell(k.removes_at.or(k.revoked_at)),
                k.owner.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

pub const KEY_HEADER: [&str; 9] = [
    "KID",
    "ALG",
    "SIZE/CURVE",
    "STATE",
    "CREATED",
    "ACTIVATES",
    "RETIRES",
    "REMOVED/REVOKED",
    "OWNER",
];
