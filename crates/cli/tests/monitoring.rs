//! The dashboards (deploy/grafana) and the Prometheus rules
//! (deploy/prometheus) read only metrics keyward exports: a real issuer
//! and a real gateway are started and driven so that their series exist
//! (a token issued, one refused, an introspection, requests allowed,
//! refused, sent to a dead upstream, a token of an unknown key), both
//! `/metrics` are scraped, and every metric name in every dashboard
//! expression, template query and rule expression must be among them. A
//! metric renamed or dropped in the code fails here, not on a dashboard.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{free_port, Kw};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// PromQL aggregation operators: followed by `(` or by a `by`/`without`
/// clause, never metric names.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
];

/// The metric (and recording rule) names a PromQL expression reads.
///
/// Strings, label matchers `{...}`, ranges and subqueries `[...]`, the
/// label lists of `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`,
/// Grafana variables (`$env`, `$__range`) and numbers are dropped;
/// an identifier followed by `(` is a function or an aggregation. What is
/// left is a metric name.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // 1. Strings out (they may hold braces, brackets and words).
    let mut plain = String::new();
    let mut quote = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' || c == '`' => {
                quote = Some(c);
                plain.push(' ');
            }
            None => plain.push(c),
        }
    }
    assert!(quote.is_none(), "unterminated string in {expr}");
    // 2. Label matchers and ranges out.
    let mut flat = String::new();
    let mut depth = 0usize;
    for c in plain.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.checked_sub(1).expect("unbalanced brackets"),
            _ if depth == 0 => flat.push(c),
            _ => {}
        }
        if depth > 0 && (c == '{' || c == '[') {
            flat.push(' ');
        }
    }
    assert_eq!(depth, 0, "unbalanced brackets in {expr}");
    // 3. Identifiers, with what follows each.
    let chars: Vec<char> = flat.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_label_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' {
            // A Grafana variable.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            // A number (1e3, 0.001, 14.4) or a duration.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
            let lower = word.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                // The label list after a grouping keyword.
                skip_label_list = matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                );
                continue;
            }
            if next == Some('(') || AGGREGATIONS.contains(&lower.as_str()) {
                continue; // a function or an aggregation
            }
            names.insert(word);
            continue;
        }
        if c == '(' && skip_label_list {
            let close = chars[i..]
                .iter()
                .position(|&c| c == ')')
                .expect("label list")
                + i;
            i = close + 1;
            skip_label_list = false;
            continue;
        }
        if !c.is_whitespace() {
            skip_label_list = false;
        }
        i += 1;
    }
    names
}

/// Every `expr` of the rule files, and the names they `record`. Our rule
/// files keep one key per line, an expression either on the line or as a
/// `|` block below it (checked by promtool in CI), so a line reader is
/// enough here.
fn rules() -> (Vec<(String, String)>, BTreeSet<String>) {
    let dir = repo().join("deploy/prometheus");
    let mut exprs = Vec::new();
    let mut recorded = BTreeSet::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.ends_with(".yaml") && !n.ends_with(".test.yaml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "rule files in {}", dir.display());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            let body = line.trim_start();
            let indent = line.len() - body.len();
            let body = body.strip_prefix("- ").unwrap_or(body);
            if let Some(name) = body.strip_prefix("record:") {
                recorded.insert(name.trim().to_string());
            }
            if let Some(e) = body.strip_prefix("expr:") {
                let e = e.trim();
                let expr = if e == "|" || e == ">" {
                    let mut block = String::new();
                    while i + 1 < lines.len() {
                        let next = lines[i + 1];
                        let next_indent = next.len() - next.trim_start().len();
                        if !next.trim().is_empty() && next_indent <= indent {
                            break;
                        }
                        block.push_str(next.trim());
                        block.push('\n');
                        i += 1;
                    }
                    block
                } else {
                    e.to_string()
                };
                assert!(!expr.trim().is_empty(), "empty expr in {}", f.display());
                exprs.push((format!("{}:{}", f.display(), i + 1), expr));
            }
            i += 1;
        }
    }
    (exprs, recorded)
}

/// Every PromQL expression of the dashboards: panel targets and template
/// queries (`label_values(metric, label)` reads `metric`).
fn dashboards() -> Vec<(String, String)> {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("expr", Value::String(e)) => out.push((path.to_string(), e.clone())),
                        ("definition", Value::String(q)) => out.push((path.to_string(), q.clone())),
                        _ => walk(x, path, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, path, out)),
            _ => {}
        }
    }
    let dir = repo().join("deploy/grafana");
    let mut out = Vec::new();
    let mut files = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            files += 1;
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let before = out.len();
            walk(&v, &p.display().to_string(), &mut out);
            assert!(out.len() > before, "no expression in {}", p.display());
        }
    }
    assert_eq!(files, 3, "executive, on-call and debug dashboards");
    out
}

/// The metric names of a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn promql_names_are_read_past_functions_matchers_and_keywords() {
    let e = r#"histogram_quantile(0.99, sum by (le, env) (rate(keyward_token_endpoint_seconds_bucket{env=~"$env",x="a{b}[c] or d"}[$__rate_interval])))
        / on (env) group_left (region) max without (instance) (up offset 5m) * 1e3
        unless on () (max(keyward_rotation_in_progress) > 0) and keyward:token_error_ratio:rate1h > (14.4 * 0.001)"#;
    let names: Vec<String> = metric_names(e).into_iter().collect();
    assert_eq!(
        names,
        [
            "keyward:token_error_ratio:rate1h",
            "keyward_rotation_in_progress",
            "keyward_token_endpoint_seconds_bucket",
            "up",
        ]
    );
    assert_eq!(
        metric_names("label_values(keyward_env_can_sign, env)")
            .into_iter()
            .collect::<Vec<_>>(),
        ["env", "keyward_env_can_sign"],
        "a template query's label argument reads as a name; the caller drops label names it knows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_a_dashboard_or_rule_is_exported() {
    // An issuer with a (configured, unreachable) device key store, so the
    // signer failure counters exist at 0 as they do in production.
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let kw = Kw::new();
    kw.run(&["init", "--issuer", &issuer, "--alg", "ES256"])
        .ok();
    let (id, secret) = kw.create_client("mon", "orders.read", "api://orders");
    let server = kw.start_server(
        &["serve", "--listen", &format!("127.0.0.1:{port}")],
        &[
            ("KEYWARD_AWS_KMS", "1"),
            ("KEYWARD_AWS_KMS_REGION", "us-east-1"),
            ("KEYWARD_AWS_KMS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    let http = common::http();
    let token_url = format!("{issuer}/oauth2/token");
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "orders.read"),
    ];
    let ok = http
        .post(&token_url)
        .basic_auth(&id, Some(&secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = serde_json::from_str(&ok.text().await.unwrap()).unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();
    let bad = http
        .post(&token_url)
        .basic_auth(&id, Some("wrong"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let introspect = http
        .post(format!("{issuer}/oauth2/introspect"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(introspect.status(), 200);

    // A gateway trusting it: one route to a live upstream, one to a dead one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(|| async { "ok" }))
            .await
            .unwrap()
    });
    let dead = format!("http://127.0.0.1:{}", free_port());
    let admin_port = free_port();
    let gw = kw.start_gateway(&format!(
        r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:{admin_port}"

[[issuer]]
issuer = "{issuer}"
audiences = ["api://orders"]

[[route]]
path = "/orders/{{id}}"
upstream = "{up}"
scopes = ["orders.read"]

[[route]]
path = "/dead/{{id}}"
upstream = "{dead}"
scopes = ["orders.read"]
"#
    ));
    let call = |path: &str, token: Option<&str>| {
        let mut rb = http.get(format!("http://{}{path}", gw.addr));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send()
    };
    // Twice: a cache miss, then a hit.
    assert_eq!(call("/orders/1", Some(&token)).await.unwrap().status(), 200);
    assert_eq!(call("/orders/1", Some(&token)).await.unwrap().status(), 200);
    assert_eq!(call("/orders/1", None).await.unwrap().status(), 401);
    assert_eq!(call("/dead/1", Some(&token)).await.unwrap().status(), 502);
    // A token of a key the issuer never published.
    let stranger = keyward_jose::LocalSigner::new(
        keyward_jose::PrivateKey::generate(keyward_jose::Algorithm::ES256, None).unwrap(),
        Some("stranger".into()),
    );
    let claims = keyward_jose::dangerous::decode_unverified(&token)
        .unwrap()
        .1;
    let forged = keyward_jose::sign_jwt(&stranger, Some("at+jwt"), &claims).unwrap();
    assert_eq!(
        call("/orders/1", Some(&forged)).await.unwrap().status(),
        401
    );

    let mut have = BTreeSet::new();
    for url in [
        server.url("/metrics"),
        format!("http://{}/metrics", gw.admin),
    ] {
        let text = http.get(url).send().await.unwrap().text().await.unwrap();
        have.extend(exported(&text));
    }

    let (rule_exprs, recorded) = rules();
    let mut exprs = rule_exprs;
    exprs.extend(dashboards());
    // Prometheus' own series of alert states, read by the dashboards.
    let prometheus_own = ["ALERTS"];
    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    for (from, expr) in &exprs {
        for name in metric_names(expr) {
            // label_values(metric, label): the label is not a metric.
            if expr.starts_with("label_values(") && !expr.contains(&format!("({name}")) {
                continue;
            }
            used.insert(name.clone());
            if recorded.contains(&name) || prometheus_own.contains(&name.as_str()) {
                continue;
            }
            assert!(
                !name.contains(':'),
                "{from}: {name} looks like a recording rule but no rule records it"
            );
            if !have.contains(&name) {
                missing.push(format!("{from}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "used by a dashboard or rule but exported by neither the issuer nor the gateway:\n{}\nexported: {have:#?}",
        missing.join("\n")
    );
    // The parse found the names (not an empty set that passes vacuously),
    // and every recording rule used is defined.
    let raw: BTreeSet<_> = used.iter().filter(|n| !n.contains(':')).collect();
    assert!(
        raw.len() >= 30,
        "only {} metric names found: {raw:?}",
        raw.len()
    );
    for must in [
        "keyward_tokens_issued_total",
        "keyward_signer_errors_total",
        "keyward_rotation_overdue_seconds",
        "keyward_rotation_in_progress",
        "keyward_gate_jwks_age_seconds",
        "keyward_gate_verify_failures_total",
        "keyward_refresh_reuse_detected_total",
        "keyward_gate_token_cache_total",
    ] {
        assert!(used.contains(must), "no dashboard or rule reads {must}");
    }
    drop(gw);
    drop(server);
}
