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
        b.resize(20 * 1024, b'a');
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
    assert!(desc(6).contains("16384"), "{}", desc(6));
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
