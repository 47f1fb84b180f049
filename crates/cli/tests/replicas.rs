//! Two `serve` replicas on one PostgreSQL store go through a full automatic
//! rotation on an accelerated clock while a client keeps requesting tokens
//! from both and verifying them with a JWKS cache that honours `max-age` (and
//! never refetches on an unknown kid). Expected: zero verification failures,
//! exactly one new key, and both replicas switching kid at the same instant.
//! Runs when `KEYWARD_TEST_DATABASE_URL` is set.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::Kw;
use keyward_jose::{verify_jwt, Algorithm, JwkSet, KeySet, Validation};
use serde_json::Value;

/// Fake seconds per real second.
const SPEED: f64 = 600.0;

fn psql(url: &str, sql: &str) {
    let st = Command::new("psql")
        .args([url, "-q", "-c", sql])
        .env("PGOPTIONS", "-c client_min_messages=warning")
        .status()
        .expect("psql");
    assert!(st.success(), "psql {sql}");
}

/// A minimal HTTP/1.1 exchange over loopback (Connection: close).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    (status, headers, body.to_string())
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        common::stop_child(&mut self.child);
    }
}

fn start(kw: &Kw, url: &str, clock_start: i64) -> Server {
    let mut c = kw.cmd();
    c.args(["serve", "--listen", "127.0.0.1:0"])
        .env("KEYWARD_DATABASE_URL", url)
        .env("KEYWARD_CLOCK_SPEED", SPEED.to_string())
        .env("KEYWARD_CLOCK_START", clock_start.to_string())
        .env("KEYWARD_ROTATION_CHECK_INTERVAL", "1s")
        .env("KEYWARD_RELOAD_INTERVAL", "1s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("start keyward serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "unexpected banner {line:?}");
    Server { child, addr }
}

fn fake_now(clock_start: i64) -> i64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    (clock_start as f64 + (wall - clock_start as f64) * SPEED).floor() as i64
}

/// A JWKS cache that honours Cache-Control max-age (in the servers' time).
struct Cache {
    keys: KeySet,
    fetched_at: i64,
    max_age: i64,
    fetches: usize,
}

fn fetch_jwks(addr: &str) -> (KeySet, i64) {
    let (status, headers, body) = http(addr, "GET", "/.well-known/jwks.json", &[], "");
    assert_eq!(status, 200);
    let cc = headers
        .iter()
        .find(|(k, _)| k == "cache-control")
        .map(|(_, v)| v.clone())
        .unwrap();
    let max_age: i64 = cc.split("max-age=").nth(1).unwrap().trim().parse().unwrap();
    let set = JwkSet::parse(body.as_bytes(), Algorithm::RS256).unwrap();
    (KeySet::from_jwks(&set).unwrap(), max_age)
}

#[test]
fn two_replicas_rotate_together_without_verification_failures() {
    let Some(base) = common::postgres_url("the two-replica rotation test") else {
        return;
    };
    let schema = format!(
        "kw_rep_{}",
        keyward_jose::crypto::hex(&keyward_jose::crypto::random_bytes::<6>())
    );
    psql(&base, &format!("CREATE SCHEMA {schema}"));
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let result = std::panic::catch_unwind(|| run(&url));
    psql(&base, &format!("DROP SCHEMA {schema} CASCADE"));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn run(url: &str) {
    let mut kw = Kw::new();
    kw.env
        .push(("KEYWARD_DATABASE_URL".into(), url.to_string()));
    let clock_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    kw.run(&[
        "init",
        "--issuer",
        "http://127.0.0.1:1",
        "--alg",
        "ES256",
        "--now",
        &clock_start.to_string(),
    ])
    .ok();
    // Rotate every 4 h with a 2 h lead: the next key is published after 2 h (12 s real)
    // and signs after 4 h (24 s real); tokens live 1 h; JWKS max-age is 1 h.
    kw.run(&[
        "env",
        "update",
        "default",
        "--rotate-every",
        "4h",
        "--lead",
        "2h",
        "--token-ttl",
        "1h",
    ])
    .ok();
    let client = kw
        .run(&[
            "clients",
            "create",
            "--env",
            "default",
            "--name",
            "load",
            "--scopes",
            "a",
            "--audience",
            "api",
            "--json",
        ])
        .ok()
        .json();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap()
    ));
    let first_kid = kw
        .run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json()[0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let a = start(&kw, url, clock_start);
    let b = start(&kw, url, clock_start);
    let replicas = [&a, &b];
    let (keys, max_age) = fetch_jwks(&a.addr);
    assert_eq!(max_age, 3600);
    let mut cache = Cache {
        keys,
        fetched_at: fake_now(clock_start),
        max_age,
        fetches: 1,
    };
    let policy = Validation {
        audiences: vec!["api".into()],
        required_typ: Some("at+jwt".into()),
        ..Validation::default()
    };
    let mut seen: Vec<(usize, i64, String)> = Vec::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    let mut i = 0usize;
    while started.elapsed() < Duration::from_secs(34) {
        let r = i % 2;
        i += 1;
        let now = fake_now(clock_start);
        if now - cache.fetched_at >= cache.max_age {
            let (keys, max_age) = fetch_jwks(&replicas[r].addr);
            cache = Cache {
                keys,
                fetched_at: now,
                max_age,
                fetches: cache.fetches + 1,
            };
        }
        let (status, _, body) = http(
            &replicas[r].addr,
            "POST",
            "/oauth2/token",
            &[
                ("Authorization", format!("Basic {basic}")),
                ("Content-Type", "application/x-www-form-urlencoded".into()),
            ],
            "grant_type=client_credentials",
        );
        assert_eq!(status, 200, "token request to replica {r}: {body}");
        let token = serde_json::from_str::<Value>(&body).unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        match verify_jwt(&token, &cache.keys, &policy, fake_now(clock_start)) {
            Ok(ok) => seen.push((
                r,
                ok.claims.iat().unwrap() as i64,
                ok.header.kid.clone().unwrap(),
            )),
            Err(e) => failures.push(format!("replica {r} at {now}: {e}")),
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    assert!(
        failures.is_empty(),
        "{} verification failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Exactly one rotation happened: two keys, no duplicates.
    let keys = kw
        .run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2, "exactly one new key: {keys:?}");
    let second = keys
        .iter()
        .find(|k| k["kid"] != first_kid.as_str())
        .unwrap();
    let second_kid = second["kid"].as_str().unwrap().to_string();
    let switch = keyward_cli_time(second["activates_at"].as_str().unwrap());
    // Both replicas sign with the old key before the switch and the new one from it on.
    for (r, iat, kid) in &seen {
        let want = if *iat < switch {
            &first_kid
        } else {
            &second_kid
        };
        assert_eq!(
            kid, want,
            "replica {r} signed at {iat} with {kid}; the switch is at {switch}"
        );
    }
    for r in 0..2 {
        assert!(
            seen.iter().any(|(x, _, k)| *x == r && *k == first_kid),
            "replica {r} used the first key"
        );
        assert!(
            seen.iter().any(|(x, _, k)| *x == r && *k == second_kid),
            "replica {r} used the second key"
        );
    }
    assert!(
        cache.fetches >= 3,
        "the client refreshed its JWKS by max-age ({} fetches)",
        cache.fetches
    );
    eprintln!(
        "{} tokens verified across the rotation, 0 failures, {} JWKS fetches, switch at {switch}",
        seen.len(),
        cache.fetches
    );
}

/// RFC 3339 (as printed by the CLI) to unix seconds.
fn keyward_cli_time(s: &str) -> i64 {
    let t = humantime::parse_rfc3339(s).unwrap();
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}
