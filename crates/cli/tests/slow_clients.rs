//! Slow and idle clients cannot use up the issuer: half-sent requests are
//! closed after `header_read_timeout` / `body_read_timeout`, idle keep-alive
//! connections after `idle_timeout`, and beyond `max_connections` the
//! connections that have waited longest on their client (idle, sending a
//! request's head, or a body their handler waits for) make room, so
//! `/healthz` and the token endpoint keep answering. (That a request the
//! server is working on is never cut off for a newcomer is tested with a
//! handler the test holds up, in `server.rs`.)

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{get, metric, post_form, Auth, Kw, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 64;

fn start(kw: &Kw) -> Server {
    kw.start_server(
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("KEYWARD_HEADER_READ_TIMEOUT", "5s"),
            ("KEYWARD_BODY_READ_TIMEOUT", "5s"),
            ("KEYWARD_IDLE_TIMEOUT", "2s"),
            ("KEYWARD_MAX_CONNECTIONS", &MAX_CONNECTIONS.to_string()),
        ],
    )
}

/// `keyward_http_connections_closed_total{reason}` in a scrape.
fn closed(m: &str, reason: &str) -> f64 {
    metric(
        m,
        "keyward_http_connections_closed_total",
        &[("reason", reason)],
    )
}

fn client(kw: &Kw) -> (String, String) {
    let v = kw
        .run(&[
            "clients",
            "create",
            "--env",
            "default",
            "--name",
            "app",
            "--scopes",
            "orders.read",
            "--json",
        ])
        .ok()
        .json();
    (
        v["client_id"].as_str().unwrap().to_string(),
        v["client_secret"].as_str().unwrap().to_string(),
    )
}

/// Opens a connection and sends `bytes` (the start of a request), then stalls.
async fn stall(s: &Server, bytes: &[u8]) -> TcpStream {
    let mut c = TcpStream::connect(&s.addr).await.expect("connect");
    c.write_all(bytes).await.expect("write");
    c
}

/// Reads until the server closes the connection; what it sent, or `None`
/// if it is still open at `deadline`.
async fn until_closed(c: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_cannot_starve_the_issuer() {
    let kw = Kw::new();
    kw.init();
    let (id, secret) = client(&kw);
    let s = start(&kw);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));

    // Requests whose bodies stall half-way: the handler waits on the client.
    let opened = Instant::now();
    let mut bodies = Vec::new();
    for _ in 0..16 {
        let head = format!(
            "POST /oauth2/token HTTP/1.1\r\nhost: {}\r\nauthorization: Basic {basic}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\ngrant_type=client_cre",
            s.addr
        );
        bodies.push(stall(&s, head.as_bytes()).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A slowloris flood: many more connections than the limit (64), each with
    // half a request line and headers, or nothing at all.
    let mut heads = Vec::new();
    for i in 0..300 {
        let part: &[u8] = match i % 3 {
            0 => b"GET /healthz HTTP/1.1\r\nhost: x\r\n",
            1 => b"POST /oauth2/tok",
            _ => b"",
        };
        heads.push(stall(&s, part).await);
    }

    // The issuer still answers, at once (well before any timeout frees a place).
    let t = Instant::now();
    let r = get(&s.url("/healthz")).await;
    assert_eq!(r.status, 200);
    let r = post_form(
        &s.url("/oauth2/token"),
        Auth::Basic(&id, &secret),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "answered only after {:?}",
        t.elapsed()
    );

    // Every stalled connection is closed: by eviction, or by its timeout.
    let deadline = opened + HEADER_TIMEOUT.max(BODY_TIMEOUT) + Duration::from_secs(4);
    for (i, c) in heads.iter_mut().enumerate() {
        let got = until_closed(c, deadline).await;
        assert!(got.is_some(), "half-sent request {i} still open");
    }
    for (i, c) in bodies.iter_mut().enumerate() {
        let got = until_closed(c, deadline)
            .await
            .unwrap_or_else(|| panic!("half-sent body {i} still open"));
        // Evicted (they waited on their client longest: closed without an
        // answer), or the handler gave up on the body: 408, never a token.
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.is_empty()
                || (text.starts_with("HTTP/1.1 408")
                    && text.contains(r#""error":"invalid_request""#)),
            "{text}"
        );
    }

    // And the server is still well, and says what it did.
    let r = get(&s.url("/healthz")).await;
    assert_eq!(r.status, 200);
    let m = get(&s.url("/metrics")).await.text();
    let closed = |reason| closed(&m, reason);
    // 316 stalled requests, 64 places: most made room for newcomers, the
    // rest were closed by their timeouts.
    assert!(closed("evicted") >= 200.0, "{m}");
    let stalled =
        closed("evicted") + closed("idle") + closed("header_timeout") + closed("body_timeout");
    assert!((316.0..=320.0).contains(&stalled), "{m}");
    assert_eq!(closed("refused"), 0.0, "{m}");
    // The scrape's own connection, perhaps reqwest's idle ones: not the flood.
    assert!(metric(&m, "keyward_http_connections", &[]) <= 4.0, "{m}");
    assert!(!s.stderr_text().contains("panicked"), "{}", s.stderr_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_idle_timeout() {
    let kw = Kw::new();
    kw.init();
    let s = start(&kw);
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    // Two requests on one connection: keep-alive works.
    for _ in 0..2 {
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("ok"), "{text}");
    }
    let idle_from = Instant::now();
    let got = until_closed(&mut c, idle_from + HEADER_TIMEOUT + Duration::from_secs(2)).await;
    assert_eq!(
        got.as_deref(),
        Some(&b""[..]),
        "still open or sent something"
    );
    let idle = idle_from.elapsed();
    // Closed by the idle timeout (2 s), well before the header timeout (5 s).
    assert!(
        idle >= IDLE_TIMEOUT - Duration::from_millis(200) && idle < HEADER_TIMEOUT,
        "closed after {idle:?}"
    );
    let m = get(&s.url("/metrics")).await.text();
    assert_eq!(closed(&m, "idle"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_at_header_read_timeout() {
    let kw = Kw::new();
    kw.init();
    // Both 2 s: a connection that has begun a request is cut by the header
    // timeout, not closed as idle.
    let s = kw.start_server(
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("KEYWARD_HEADER_READ_TIMEOUT", "2s"),
            ("KEYWARD_IDLE_TIMEOUT", "2s"),
        ],
    );
    let started = Instant::now();
    let mut c = stall(&s, b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await;
    // Beside it: a connection that never sends a byte, and a keep-alive one
    // after its answer. Whichever timer closes them, they were idle.
    let mut silent = stall(&s, b"").await;
    let mut kept = stall(&s, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // A byte now and then does not keep it open: the headers have a deadline.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.write_all(b"x").await.unwrap();
    }
    let got = until_closed(&mut c, started + Duration::from_secs(6)).await;
    let took = started.elapsed();
    assert!(got.is_some(), "still open after {took:?}");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    for c in [&mut silent, &mut kept] {
        let got = until_closed(c, started + Duration::from_secs(6)).await;
        assert_eq!(
            got.as_deref(),
            Some(&b""[..]),
            "still open or sent something"
        );
    }
    let m = get(&s.url("/metrics")).await.text();
    assert_eq!(closed(&m, "header_timeout"), 1.0, "{m}");
    assert_eq!(closed(&m, "idle"), 2.0, "{m}");
}

#[test]
fn an_idle_timeout_longer_than_the_header_timeout_is_refused() {
    let kw = Kw::new();
    kw.init();
    kw.run_with(
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("KEYWARD_HEADER_READ_TIMEOUT", "10s"),
            ("KEYWARD_IDLE_TIMEOUT", "120s"),
        ],
    )
    .fails_with("idle_timeout (120s) must not exceed header_read_timeout (10s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_cannot_hold_the_connection_limit() {
    let kw = Kw::new();
    kw.init();
    let (id, secret) = client(&kw);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    // Default timeouts (30 s): only eviction can free a place in time.
    let s = kw.start_server(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("KEYWARD_MAX_CONNECTIONS", "4")],
    );
    // Every place taken by a token request whose body trickles in: full
    // headers, a 64 KiB body announced, a byte now and then.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let head = format!(
            "POST /oauth2/token HTTP/1.1\r\nhost: {}\r\nauthorization: Basic {basic}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 65536\r\n\r\ng",
            s.addr
        );
        slow.push(stall(&s, head.as_bytes()).await);
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for c in &mut slow {
            c.write_all(b"r").await.unwrap();
        }
    }
    // /healthz and a token request are answered at once: a newcomer makes
    // room by closing the trickling body that has waited longest.
    let t = Instant::now();
    let r = get(&s.url("/healthz")).await;
    assert_eq!(r.status, 200);
    let r = post_form(
        &s.url("/oauth2/token"),
        Auth::Basic(&id, &secret),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "answered only after {:?}",
        t.elapsed()
    );
    // The evicted ones were closed without an answer, well before their
    // 30 s body timeout.
    let mut evicted = 0;
    for c in &mut slow {
        if let Some(got) = until_closed(c, Instant::now() + Duration::from_millis(500)).await {
            assert_eq!(got, b"", "{}", String::from_utf8_lossy(&got));
            evicted += 1;
        }
    }
    assert!(evicted >= 1, "no trickling body was evicted");
    let m = get(&s.url("/metrics")).await.text();
    // (The client may reuse one connection for both requests and the scrape.)
    assert!(closed(&m, "evicted") >= f64::from(evicted), "{m}");
    assert_eq!(closed(&m, "refused"), 0.0, "{m}");
    assert_eq!(closed(&m, "body_timeout"), 0.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_stalled_or_idle_connections() {
    let kw = Kw::new();
    kw.init();
    let mut s = kw.start_server(&["serve", "--listen", "127.0.0.1:0"], &[]);
    // Defaults: 30 s timeouts and grace; none of them may hold up the exit.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(stall(&s, b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await);
        stalled.push(stall(&s, b"").await);
    }
    let mut idle = stall(&s, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let t = Instant::now();
    s.terminate();
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("still running 5 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", s.stderr_text());
    assert!(t.elapsed() < Duration::from_secs(5));
    for c in &mut stalled {
        assert!(until_closed(c, Instant::now() + Duration::from_secs(1))
            .await
            .is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_limit_above_the_open_files_limit_is_warned_about() {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse::<u64>().ok())
        });
    let Some(soft) = soft.filter(|n| *n < 1_000_000) else {
        eprintln!("note: no finite open-files limit below 1000000 here; skipping");
        return;
    };
    let kw = Kw::new();
    kw.init();
    let s = kw.start_server(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("KEYWARD_MAX_CONNECTIONS", "1000000")],
    );
    let warned = || s.stderr_text().contains("open-files limit");
    let t = Instant::now();
    while !warned() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(warned(), "limit {soft}: {}", s.stderr_text());
    // It still serves.
    assert_eq!(get(&s.url("/healthz")).await.status, 200);
}
