//! Printing: JSON for machines, aligned tables for people.

use keyward_issuer::fmt_time;
use keyward_jose::KeyFamily;
use keyward_store::{KeyRecord, Timestamp};
use serde_json::{json, Value};

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON value"));
}

pub fn opt_time(t: Option<Timestamp>) -> Value {
    t.map(|t| Value::String(fmt_time(t))).unwrap_or(Value::Null)
}

fn opt_cell(t: Option<Timestamp>) -> String {
    t.map(fmt_time).unwrap_or_else(|| "-".into())
}

/// A key as JSON: the fields of `keys list --json`.
pub fn key_json(k: &KeyRecord, now: Timestamp) -> Value {
    json!({
        "kid": k.kid,
        "env": k.env,
        "alg": k.alg.name(),
        "size": k.size_bits,
        "curve": match k.alg.family() {
            KeyFamily::Rsa => Value::Null,
            KeyFamily::Ec(c) => json!(c.name()),
            KeyFamily::Ed25519 => json!("Ed25519"),
        },
        "state": k.state(now).to_string(),
        "origin": k.origin,
        "owner": k.owner,
        "description": k.description,
        "created_at": fmt_time(k.created_at),
        "activates_at": fmt_time(k.activates_at),
        "retires_at": opt_time(k.retires_at),
        "removes_at": opt_time(k.removes_at),
        "revoked_at": opt_time(k.revoked_at),
    })
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
