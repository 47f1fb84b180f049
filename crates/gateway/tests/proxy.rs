//! The proxy end to end: a real gateway on 127.0.0.1 in front of an echo
//! upstream, tokens signed at test time and published through a JWKS file.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &str = r#"
[[route]]
path = "/orders/{id}"
methods = ["GET", "POST"]
upstream = "{UP}"
permissions = { all_of = ["orders.{id}.read"] }

[[route]]
path = "/reports/*"
upstream = "{UP}"
permissions = { any_of = ["reports.view", "admin.all"] }

[[route]]
path = "/scoped"
upstream = "{UP}"
scopes = ["orders:read", "orders:write"]

[[route]]
path = "/needs-admin-scope"
upstream = "{UP}"
scopes = ["admin"]

[[route]]
path = "/forward/*"
upstream = "{UP}"
forward_authorization = true

[[route]]
path = "/public/*"
upstream = "{UP}"
anonymous = true

[[route]]
path = "/echo/*"
upstream = "{UP}"

[[route]]
path = "/stream"
methods = ["POST"]
upstream = "{UP}"
anonymous = true

[[route]]
path = "/slow/*"
upstream = "{UP}"
anonymous = true
timeout = "200ms"

[[route]]
path = "/limited"
upstream = "{UP}"
rate_limit = { per_subject = "1/m", burst = 2 }

[[route]]
path = "/api/*"
upstream = "{UP}"
strip_prefix = "/api"
anonymous = true
preserve_host = true
"#;

async fn setup() -> (Upstream, Gw) {
    let up = upstream().await;
    let gw = start(ROUTES, &up).await;
    (up, gw)
}

#[tokio::test]
async fn forwards_method_path_query_body_and_headers() {
    let (up, gw) = setup().await;
    let t = token();
    let auth = format!("Bearer {t}");
    let r = send(
        "POST",
        &gw.url("/orders/1?x=1&y=%20z"),
        &[
            ("authorization", &auth),
            ("content-type", "text/plain"),
            ("x-custom", "kept"),
            ("connection", "x-hop-in"),
            ("x-hop-in", "dropped"),
            ("host", "public.example"),
            ("x-forwarded-for", "203.0.113.7"),
        ],
        "hello body",
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let e = r.json();
    assert_eq!(e["method"], "POST");
    assert_eq!(e["path"], "/orders/1");
    assert_eq!(e["query"], "x=1&y=%20z");
    assert_eq!(e["body"], "hello body");
    assert_eq!(e["version"], "HTTP/1.1");
    assert_eq!(r.echoed("x-custom").as_deref(), Some("kept"));
    assert_eq!(r.echoed("content-type").as_deref(), Some("text/plain"));
    assert_eq!(
        r.echoed("x-hop-in"),
        None,
        "headers named in Connection are hop-by-hop"
    );
    // Host is the upstream's; the caller's goes in X-Forwarded-Host.
    assert_eq!(r.echoed("host"), Some(up.addr.to_string()));
    assert_eq!(
        r.echoed("x-forwarded-host").as_deref(),
        Some("public.example")
    );
    assert_eq!(r.echoed("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        r.echoed("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    // The upstream's headers come back, its hop-by-hop ones do not.
    assert_eq!(r.header("x-upstream"), Some("echo"));
    assert_eq!(r.header("x-hop-secret"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn identity_headers_replace_spoofed_ones_and_authorization_is_dropped() {
    let (_up, gw) = setup().await;
    let auth = format!("Bearer {}", token());
    let r = get(
        &gw.url("/orders/1"),
        &[
            ("authorization", &auth),
            ("x-auth-subject", "mallory"),
            ("X-Auth-Permissions", "admin.*"),
            ("x_auth_client", "evil-client"),
            ("x-auth-issuer", "https://evil"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let e = r.json();
    let h = &e["headers"];
    assert_eq!(h["x-auth-subject"], json!(["alice"]));
    assert_eq!(h["x-auth-client"], json!(["client-1"]));
    assert_eq!(h["x-auth-issuer"], json!([ISS]));
    assert_eq!(h["x-auth-scopes"], json!(["orders:read orders:write"]));
    assert_eq!(h["x-auth-permissions"], json!(["orders.1.read reports.*"]));
    assert!(h.get("x_auth_client").is_none(), "{h}");
    assert!(
        h.get("authorization").is_none(),
        "the token is not forwarded by default"
    );
}

#[tokio::test]
async fn spoofed_identity_headers_are_stripped_on_anonymous_routes_too() {
    let (_up, gw) = setup().await;
    let auth = format!("Bearer {}", token());
    let r = get(
        &gw.url("/public/x"),
        &[
            ("x-auth-subject", "mallory"),
            ("X-AUTH-SCOPES", "admin"),
            ("x_auth_permissions", "*"),
            ("authorization", &auth),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    for name in [
        "x-auth-subject",
        "x-auth-scopes",
        "x_auth_permissions",
        "x-auth-client",
        "x-auth-issuer",
        "x-auth-permissions",
        "authorization",
    ] {
        assert!(h.get(name).is_none(), "{name} reached the upstream: {h}");
    }
}

#[tokio::test]
async fn authorization_is_forwarded_when_the_route_says_so() {
    let (_up, gw) = setup().await;
    let t = token();
    let r = get_with(&gw.url("/forward/x"), &t).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed("authorization"), Some(format!("Bearer {t}")));
    assert_eq!(r.echoed("x-auth-subject").as_deref(), Some("alice"));
}

#[tokio::test]
async fn missing_and_bad_tokens_get_401_with_www_authenticate() {
    let (up, gw) = setup().await;
    let r = get(&gw.url("/echo/x"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"keyward\"")
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = get(
        &gw.url("/echo/x"),
        &[("authorization", "Basic dXNlcjpwdw==")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"keyward\"")
    );

    let r = get(
        &gw.url("/echo/x"),
        &[("authorization", "Bearer not a token")],
    )
    .await;
    assert_eq!(r.status, 401);
    let w = r.header("www-authenticate").unwrap();
    assert!(
        w.starts_with("Bearer realm=\"keyward\", error=\"invalid_request\", error_description=\"malformed Authorization header\""),
        "{w}"
    );

    let r = get_with(&gw.url("/echo/x"), "abc.def.ghi").await;
    assert_eq!(r.status, 401);
    let w = r.header("www-authenticate").unwrap();
    assert!(
        w.starts_with("Bearer realm=\"keyward\", error=\"invalid_token\", error_description=\"token header is not a JSON object"),
        "{w}"
    );
    assert_eq!(r.json()["error"], "invalid_token");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn lacking_permission_or_scope_gets_403() {
    let (up, gw) = setup().await;
    let t = token();
    // orders.1.read is granted, orders.2.read is not.
    assert_eq!(get_with(&gw.url("/orders/1"), &t).await.status, 200);
    let r = get_with(&gw.url("/orders/2"), &t).await;
    assert_eq!(r.status, 403);
    let w = r.header("www-authenticate").unwrap();
    assert!(
        w.starts_with("Bearer realm=\"keyward\", error=\"insufficient_scope\""),
        "{w}"
    );
    assert_eq!(r.json()["error"], "insufficient_scope");
    // A path value cannot widen the requirement.
    assert_eq!(get_with(&gw.url("/orders/*"), &t).await.status, 403);
    // Group grant reports.* covers reports.view (any_of).
    assert_eq!(get_with(&gw.url("/reports/q1"), &t).await.status, 200);
    // Scopes: all must be present.
    assert_eq!(get_with(&gw.url("/scoped"), &t).await.status, 200);
    assert_eq!(
        get_with(&gw.url("/needs-admin-scope"), &t).await.status,
        403
    );
    let mut c = claims();
    c["scope"] = json!("orders:read");
    assert_eq!(
        get_with(&gw.url("/scoped"), &token_for(&c)).await.status,
        403
    );
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn no_route_404_and_wrong_method_405() {
    let (up, gw) = setup().await;
    let r = get(&gw.url("/nowhere"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = send("DELETE", &gw.url("/orders/1"), &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    let r = send("GET", &gw.url("/stream"), &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    // Paths an upstream could resolve elsewhere are refused.
    for p in [
        "/public/../orders/1",
        "/public/%2e%2e/orders/1",
        "/public//x",
        "/public/a%2Fb",
    ] {
        let r = get(&gw.url(p), &[]).await;
        assert_eq!(r.status, 400, "{p}");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    let up = upstream().await;
    let port = closed_port().await;
    let routes = format!(
        "[[route]]\npath = \"/down\"\nupstream = \"http://127.0.0.1:{port}\"\nanonymous = true\n{ROUTES}"
    );
    let gw = start(&routes, &up).await;
    let r = get(&gw.url("/down"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "bad_gateway");

    let t0 = std::time::Instant::now();
    let r = get(&gw.url("/slow/1000"), &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "gateway_timeout");
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    // Within the timeout it passes.
    assert_eq!(get(&gw.url("/slow/10"), &[]).await.status, 200);
}

#[tokio::test]
async fn rate_limited_requests_get_429_with_retry_after() {
    let (up, gw) = setup().await;
    let t = token();
    assert_eq!(get_with(&gw.url("/limited"), &t).await.status, 200);
    assert_eq!(get_with(&gw.url("/limited"), &t).await.status, 200);
    let r = get_with(&gw.url("/limited"), &t).await;
    assert_eq!(r.status, 429);
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    assert_eq!(r.json()["error"], "rate_limited");
    // Another subject has its own bucket.
    let mut c = claims();
    c["sub"] = json!("bob");
    assert_eq!(
        get_with(&gw.url("/limited"), &token_for(&c)).await.status,
        200
    );
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn rejections_never_reach_the_upstream() {
    let (up, gw) = setup().await;
    let t = token();
    let auth = format!("Bearer {t}");
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);
    let rejected: Vec<Case<'_>> = vec![
        ("GET", "/echo/x", vec![], 401),
        (
            "POST",
            "/echo/x",
            vec![("authorization", "Bearer x.y.z")],
            401,
        ),
        ("GET", "/orders/7", vec![("authorization", &auth)], 403),
        ("GET", "/missing", vec![("authorization", &auth)], 404),
        ("PUT", "/orders/1", vec![("authorization", &auth)], 405),
        ("GET", "/public/./x", vec![], 400),
    ];
    for (m, p, h, status) in rejected {
        let r = send(m, &gw.url(p), &h, "body that must not arrive").await;
        assert_eq!(r.status, status, "{m} {p}");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn strip_prefix_and_preserve_host() {
    let (_up, gw) = setup().await;
    let r = get(&gw.url("/api/v1/items?q=1"), &[("host", "svc.example")]).await;
    assert_eq!(r.status, 200);
    let e = r.json();
    assert_eq!(e["path"], "/v1/items");
    assert_eq!(e["query"], "q=1");
    assert_eq!(r.echoed("host").as_deref(), Some("svc.example"));
}

#[tokio::test]
async fn keep_alive_both_sides() {
    let (up, gw) = setup().await;
    // Three requests on one client connection.
    let mut s = tokio::net::TcpStream::connect(gw.running.addr())
        .await
        .unwrap();
    for i in 0..3 {
        let req = format!("GET /public/k{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let text = read_response(&mut s).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(&format!("\"/public/k{i}\"")), "{text}");
    }
    // The upstream saw one pooled connection from the gateway.
    let peers = up.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 3);
    assert!(peers.iter().all(|p| *p == peers[0]), "{peers:?}");
}

/// Reads one response with a Content-Length body.
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn a_large_request_body_streams_through_unbuffered() {
    const TOTAL: u64 = 32 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let (up, gw) = setup().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let req = Request::post(gw.url("/stream"))
        .body(ChannelBody(rx))
        .unwrap();
    let streamed = up.streamed.clone();
    let producer = tokio::spawn(async move {
        let mut i: u64 = 0;
        while i < TOTAL {
            let chunk: Vec<u8> = (i..i + CHUNK as u64).map(pattern_byte).collect();
            tx.send(Bytes::from(chunk)).await.unwrap();
            i += CHUNK as u64;
            if i == TOTAL / 2 {
                // Half sent: a buffering proxy would not have passed any of
                // it on yet. Wait until the upstream has received some.
                let t0 = std::time::Instant::now();
                while streamed.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    assert!(
                        t0.elapsed() < Duration::from_secs(10),
                        "the upstream received nothing of the first 16 MiB: the body is buffered"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    });
    let r = send_streaming(req).await;
    producer.await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json(), json!({"bytes": TOTAL, "intact": true}));
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let (_up, gw) = setup().await;
    let url = gw.url("/slow/150");
    let inflight = tokio::spawn(async move { get(&url, &[]).await.status });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let addr = gw.running.addr();
    gw.running.shutdown().await;
    assert_eq!(inflight.await.unwrap(), 200);
    let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
}

#[tokio::test]
async fn upstreams_that_close_connections_are_handled() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // An upstream that closes every connection after one response.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"bye")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let up = upstream().await;
    let routes = format!(
        "[[route]]\npath = \"/closing/*\"\nupstream = \"http://{addr}\"\nanonymous = true\n"
    );
    let gw = start(&routes, &up).await;
    for i in 0..5 {
        let r = get(&gw.url(&format!("/closing/{i}")), &[]).await;
        assert_eq!(r.status, 200, "request {i}: {:?}", r.body);
        assert_eq!(&r.body[..], b"bye");
    }
    assert_eq!(conns.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn concurrent_requests_reuse_pooled_upstream_connections() {
    let (up, gw) = setup().await;
    for round in 0..4 {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let url = gw.url(&format!("/public/r{round}/{i}"));
            tasks.push(tokio::spawn(async move { get(&url, &[]).await.status }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
    }
    let peers = up.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 64);
    let distinct: std::collections::HashSet<_> = peers.iter().collect();
    // At most 16 connections per worker thread; later rounds reuse them.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let bound = (16 * workers + 4).min(60);
    assert!(
        distinct.len() <= bound,
        "{} upstream connections",
        distinct.len()
    );
}
