//! Bad input at the running server's OAuth endpoints: each request gets the
//! RFC 6749 §5.2 error (status, `error`, JSON, no caching), changes nothing,
//! and is counted in `/metrics`.

mod common;

use std::collections::BTreeMap;

use common::{get, http, metric, post_form, send, Auth, Kw, Resp, Server};

fn client(kw: &Kw, args: &[&str]) -> (String, String) {
    let mut a = vec!["clients", "create", "--env", "default", "--json"];
    a.extend_from_slice(args);
    let v = kw.run(&a).ok().json();
    (
        v["client_id"].as_str().unwrap().to_string(),
        v["client_secret"].as_str().unwrap().to_string(),
    )
}

/// The audit chain and the client list: what a refused request must leave alone.
fn observable(kw: &Kw) -> (String, String) {
    (
        kw.run(&["audit", "list", "--json", "--limit", "10000"])
            .ok()
            .stdout
            .clone(),
        kw.run(&["clients", "list", "--env", "default", "--json"])
            .ok()
            .stdout
            .clone(),
    )
}

/// A raw POST: any content type, any bytes.
async fn raw(
    s: &Server,
    path: &str,
    ctype: &str,
    basic: Option<(&str, &str)>,
    body: &[u8],
) -> Resp {
    let mut rb = http()
        .post(s.url(path))
        .header("content-type", ctype)
        .body(body.to_vec());
    if let Some((id, secret)) = basic {
        rb = rb.basic_auth(id, Some(secret));
    }
    send(rb).await
}

const FORM: &str = "application/x-www-form-urlencoded";

/// `keyward_tokens_issued_total` by (grant, outcome).
fn token_counts(metrics: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for grant in ["client_credentials", "refresh_token", "other"] {
        for outcome in [
            "ok",
            "invalid_request",
            "invalid_client",
            "invalid_grant",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "invalid_target",
            "server_error",
        ] {
            let n = metric(
                metrics,
                "keyward_tokens_issued_total",
                &[("env", "default"), ("grant", grant), ("outcome", outcome)],
            );
            if n != 0.0 {
                out.insert((grant.to_string(), outcome.to_string()), n);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_requests_get_rfc_errors_change_nothing_and_are_counted() {
    let kw = Kw::new();
    kw.init();
    let (id, secret) = client(&kw, &["--name", "app", "--scopes", "orders.read"]);
    let (rid, rsecret) = client(
        &kw,
        &[
            "--name",
            "refresh-only",
            "--scopes",
            "orders.read",
            "--grant-types",
            "refresh_token",
        ],
    );
    let s = kw.serve();
    let basic = Some((id.as_str(), secret.as_str()));
    let before = observable(&kw);
    let counts_before = token_counts(&get(&s.url("/metrics")).await.text());
    assert!(counts_before.is_empty(), "{counts_before:?}");

    let cc = b"grant_type=client_credentials";
    let big = {
        let mut b = b"grant_type=client_credentials&pad=".to_vec();
        b.resize(70 * 1024, b'a');
        b
    };
    // (what, response, status, error, grant label in the metrics)
    let cases: Vec<(&str, Resp, u16, &str, &str)> = vec![
        (
            "wrong content type",
            raw(&s, "/oauth2/token", "text/plain", basic, cc).await,
            400,
            "invalid_request",
            "other",
        ),
        (
            "JSON body",
            raw(
                &s,
                "/oauth2/token",
                "application/json",
                basic,
                br#"{"grant_type":"client_credentials"}"#,
            )
            .await,
            400,
            "invalid_request",
            "other",
        ),
        (
            "duplicate parameter",
            raw(
                &s,
                "/oauth2/token",
                FORM,
                basic,
                b"grant_type=client_credentials&scope=orders.read&scope=orders.read",
            )
            .await,
            400,
            "invalid_request",
            "other",
        ),
        (
            "bad percent-encoding",
            raw(
                &s,
                "/oauth2/token",
                FORM,
                basic,
                b"grant_type=client_credentials&scope=orders%2",
            )
            .await,
            400,
            "invalid_request",
            "other",
        ),
        (
            "percent-encoded non-UTF-8",
            raw(
                &s,
                "/oauth2/token",
                FORM,
                basic,
                b"grant_type=client_credentials&scope=%FF%FE",
            )
            .await,
            400,
            "invalid_request",
            "other",
        ),
        (
            "raw non-UTF-8",
            raw(
                &s,
                "/oauth2/token",
                FORM,
                basic,
                b"grant_type=client_credentials&scope=\xc3\x28",
            )
            .await,
            400,
            "invalid_request",
            "other",
        ),
        (
            "oversize body",
            raw(&s, "/oauth2/token", FORM, basic, &big).await,
            413,
            "invalid_request",
            "other",
        ),
        (
            "missing grant_type",
            post_form(
                &s.url("/oauth2/token"),
                Auth::Basic(&id, &secret),
                &[("scope", "orders.read")],
            )
            .await,
            400,
            "invalid_request",
            "other",
        ),
        (
            "unknown grant",
            post_form(
                &s.url("/oauth2/token"),
                Auth::Basic(&id, &secret),
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", "x"),
                ],
            )
            .await,
            400,
            "unsupported_grant_type",
            "other",
        ),
        (
            "wrong secret",
            post_form(
                &s.url("/oauth2/token"),
                Auth::Basic(&id, "kws_wrong"),
                &[("grant_type", "client_credentials")],
            )
            .await,
            401,
            "invalid_client",
            "client_credentials",
        ),
        (
            "unknown client",
            post_form(
                &s.url("/oauth2/token"),
                Auth::Basic("no-such-client", &secret),
                &[("grant_type", "client_credentials")],
            )
            .await,
            401,
            "invalid_client",
            "client_credentials",
        ),
        (
            "no client authentication",
            post_form(
                &s.url("/oauth2/token"),
                Auth::None,
                &[("grant_type", "client_credentials"), ("client_id", &id)],
            )
            .await,
            401,
            "invalid_client",
            "client_credentials",
        ),
        (
            "malformed Basic header",
            send(
                http()
                    .post(s.url("/oauth2/token"))
                    .header("authorization", "Basic !!!")
                    .header("content-type", FORM)
                    .body(cc.to_vec()),
            )
            .await,
            401,
            "invalid_client",
            "other",
        ),
        (
            "two authentication methods",
            post_form(
                &s.url("/oauth2/token"),
                Auth::Basic(&id, &secret),
                &[
                    ("grant_type", "client_credentials"),
                    ("client_secret", &secret),
                ],
            )
            .await,
            400,
            "invalid_request",
            "client_credentials",
        ),
        (
            "grant not allowed for the client",
            post_form(
                &s.url("/oauth2/token"),
                Auth::Basic(&rid, &rsecret),
                &[("grant_type", "client_credentials")],
            )
            .await,
            400,
            "unauthorized_client",
            "client_credentials",
        ),
        (
            "refresh without a refresh token",
            post_form(
                &s.url("/oauth2/token"),
                Auth::Basic(&id, &secret),
                &[("grant_type", "refresh_token")],
            )
            .await,
            400,
            "invalid_request",
            "refresh_token",
        ),
        (
            "unknown refresh token",
            post_form(
                &s.url("/oauth2/token"),
                Auth::Basic(&id, &secret),
                &[
                    ("grant_type", "refresh_token"),
                    (
                        "refresh_token",
                        "kwr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                    ),
                ],
            )
            .await,
            400,
            "invalid_grant",
            "refresh_token",
        ),
    ];

    let mut expected: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (what, r, status, code, grant) in &cases {
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (*status, Some(*code)),
            "{what}: {}",
            r.text()
        );
        r.assert_oauth_error(*status, code);
        *expected
            .entry((grant.to_string(), code.to_string()))
            .or_default() += 1.0;
    }
    // The description says what was wrong, without internals.
    let desc = |i: usize| cases[i].1.json()["error_description"].to_string();
    assert!(desc(2).contains("more than once"), "{}", desc(2));
    assert!(desc(6).contains("65536"), "{}", desc(6));
    assert!(!cases
        .iter()
        .any(|c| c.1.text().contains(&secret) || c.1.text().contains("sqlx")));

    // Other endpoints refuse the same way.
    let r = post_form(&s.url("/oauth2/introspect"), Auth::Basic(&id, &secret), &[]).await;
    r.assert_oauth_error(400, "invalid_request");
    let r = post_form(
        &s.url("/oauth2/revoke"),
        Auth::Basic(&id, "kws_wrong"),
        &[("token", "x")],
    )
    .await;
    r.assert_oauth_error(401, "invalid_client");
    let r = raw(&s, "/oauth2/introspect", FORM, basic, b"token=a&token=b").await;
    r.assert_oauth_error(400, "invalid_request");
    let r = send(http().get(s.url("/oauth2/token"))).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    let r = get(&s.url("/no/such/endpoint")).await;
    assert_eq!(r.status, 404);

    // Nothing changed, and the server still works.
    assert_eq!(observable(&kw), before);
    let r = post_form(
        &s.url("/oauth2/token"),
        Auth::Basic(&id, &secret),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    expected.insert(("client_credentials".into(), "ok".into()), 1.0);

    // Every refusal counted, by grant and outcome.
    let m = get(&s.url("/metrics")).await;
    assert_eq!(m.status, 200);
    let counts = token_counts(&m.text());
    assert_eq!(counts, expected);
    let introspect_bad = metric(
        &m.text(),
        "keyward_requests_total",
        &[("endpoint", "introspect"), ("outcome", "invalid_request")],
    );
    assert_eq!(introspect_bad, 2.0);
}

/// A raw HTTP/1.1 request for what reqwest cannot show: a body announced
/// but not sent (the answer must come without it), or a chunked body. The
/// server may stop reading and close early; write errors are ignored.
/// Returns the answer's status code and body.
async fn raw_request(
    s: &Server,
    method: &str,
    path: &str,
    headers: &str,
    chunked: Option<&[u8]>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n{headers}\r\n",
        s.addr
    );
    c.write_all(head.as_bytes()).await.unwrap();
    if let Some(body) = chunked {
        for chunk in body.chunks(8 * 1024) {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(chunk);
            frame.extend_from_slice(b"\r\n");
            if c.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = c.write_all(b"0\r\n\r\n").await;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Until the server closes (it does: the body was not read) or a deadline.
    while let Ok(Ok(n)) = tokio::time::timeout(
        deadline.saturating_duration_since(std::time::Instant::now()),
        c.read(&mut buf),
    )
    .await
    {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_everywhere_and_change_nothing() {
    let kw = Kw::new();
    kw.init();
    let (id, secret) = client(&kw, &["--name", "app", "--scopes", "orders.read"]);
    let admin = kw.run(&["admin-token", "create", "--json"]).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let kid = kw
        .run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json()[0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let s = kw.serve();
    let before = (kw.snapshot(), observable(&kw));

    let bearer = format!("Bearer {admin}");
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    let form = "application/x-www-form-urlencoded";
    let json = "application/json";
    // (method, path, content type, Authorization)
    let endpoints: Vec<(&str, String, &str, &str)> = vec![
        ("POST", "/oauth2/token".into(), form, &basic),
        ("POST", "/oauth2/introspect".into(), form, &basic),
        ("POST", "/oauth2/revoke".into(), form, &basic),
        ("POST", "/admin/v1/envs".into(), json, &bearer),
        (
            "POST",
            "/admin/v1/envs/default/keys/rotate".into(),
            json,
            &bearer,
        ),
        (
            "POST",
            format!("/admin/v1/keys/{kid}/retire"),
            json,
            &bearer,
        ),
        (
            "POST",
            format!("/admin/v1/keys/{kid}/revoke"),
            json,
            &bearer,
        ),
        (
            "POST",
            "/admin/v1/envs/default/clients".into(),
            json,
            &bearer,
        ),
        (
            "PATCH",
            format!("/admin/v1/envs/default/clients/{id}"),
            json,
            &bearer,
        ),
        (
            "POST",
            format!("/admin/v1/envs/default/clients/{id}/rotate-secret"),
            json,
            &bearer,
        ),
        (
            "POST",
            "/admin/v1/envs/default/tokens".into(),
            json,
            &bearer,
        ),
    ];
    // 10 MB announced by Content-Length: refused before a byte of it is read.
    let mut long = b"grant_type=client_credentials&pad=".to_vec();
    long.resize(70 * 1024, b'a');
    for (method, path, ctype, auth) in &endpoints {
        let h = format!("content-type: {ctype}\r\nauthorization: {auth}\r\n");
        for (what, extra, chunked) in [
            ("10 MB announced", "content-length: 10485760\r\n", None),
            (
                "70 KiB chunked",
                "transfer-encoding: chunked\r\n",
                Some(long.as_slice()),
            ),
        ] {
            let (status, body) =
                raw_request(&s, method, path, &format!("{h}{extra}"), chunked).await;
            assert_eq!(status, 413, "{what}: {method} {path}: {body}");
            assert!(
                body.contains(r#""error":"invalid_request""#) && body.contains("65536"),
                "{what}: {method} {path}: {body}"
            );
        }
    }
    // Endpoints that take no body refuse an announced large one the same way.
    for (path, auth) in [
        ("/.well-known/jwks.json", ""),
        ("/.well-known/openid-configuration", ""),
        ("/revocations", ""),
        ("/admin/v1/envs", bearer.as_str()),
    ] {
        let h = if auth.is_empty() {
            String::new()
        } else {
            format!("authorization: {auth}\r\n")
        };
        let (status, body) = raw_request(
            &s,
            "GET",
            path,
            &format!("{h}content-length: 10485760\r\n"),
            None,
        )
        .await;
        assert_eq!(status, 413, "GET {path}: {body}");
        assert!(body.contains("65536"), "GET {path}: {body}");
    }
    // The same answer through an ordinary client, with the usual headers.
    let r = raw(&s, "/oauth2/introspect", form, None, &long).await;
    r.assert_oauth_error(413, "invalid_request");
    // Under the limit is fine (the server still works).
    let r = post_form(
        &s.url("/oauth2/token"),
        Auth::Basic(&id, &secret),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Nothing the refused requests would have changed did change.
    assert_eq!((kw.snapshot(), observable(&kw)), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_feed_refuses_repeated_parameters() {
    let kw = Kw::new();
    kw.init();
    let s = kw.serve();
    for q in [
        "since=0&since=5",
        "limit=10&limit=10",
        "since=1&limit=2&since=1",
    ] {
        let r = get(&s.url(&format!("/revocations?{q}"))).await;
        r.assert_oauth_error(400, "invalid_request");
        assert!(
            r.json()["error_description"]
                .as_str()
                .unwrap()
                .contains("more than once"),
            "{q}: {}",
            r.text()
        );
    }
    for q in ["since=0&limit=10", "since=3", "limit=1&cb=1&cb=2", ""] {
        let r = get(&s.url(&format!("/revocations?{q}"))).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text());
    }
}
