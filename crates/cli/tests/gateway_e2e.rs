//! The gate end to end with the keyward issuer: `keyward serve` issues
//! tokens, `keyward gateway` verifies them in front of an upstream.
//!
//! - keys rotate while traffic flows: zero 401s for valid tokens, and the
//!   gateway learned the next key from the published JWKS (no unknown-kid
//!   refetch was needed);
//! - a token revoked at the issuer is refused within the poll interval;
//! - so are the access tokens of a refresh family revoked for reuse;
//! - with the issuer stopped, the gateway keeps verifying from its cache.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, Gateway, Kw};
use serde_json::Value;

/// An upstream that answers 200 with the identity headers it received, and
/// counts requests.
async fn upstream(hits: Arc<AtomicUsize>) -> String {
    use axum::http::HeaderMap;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let sub = headers
                .get("x-auth-subject")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            format!("hello {sub}")
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn start_gateway(kw: &Kw, config: &str) -> Gateway {
    kw.start_gateway(config)
}

async fn token(client: &reqwest::Client, issuer: &str, id: &str, secret: &str) -> (String, String) {
    let body = client
        .post(format!("{issuer}/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "orders.read"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    let t = r["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let header = keyward_jose::dangerous::decode_unverified(&t).unwrap().0;
    (t, header["kid"].as_str().unwrap().to_string())
}

async fn call(client: &reqwest::Client, gw: &Gateway, token: &str) -> u16 {
    client
        .get(format!("http://{}/orders/42", gw.addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn metrics_text(client: &reqwest::Client, gw: &Gateway) -> String {
    let url = format!("http://{}/metrics", gw.admin);
    client.get(url).send().await.unwrap().text().await.unwrap()
}

fn metric(text: &str, name: &str, label_part: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label_part))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A running `keyward serve` on a free port, initialized with `init_args`
/// (after `--issuer`), its lead shortened to `lead` when given, with one
/// client_credentials client for scope `orders.read` and audience
/// `api://orders`.
struct Issuer {
    kw: Kw,
    url: String,
    id: String,
    secret: String,
    server: common::Server,
}

fn issuer(init_args: &[&str], lead: Option<&str>) -> Issuer {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let kw = Kw::new();
    let mut init = vec!["init", "--issuer", &url];
    init.extend_from_slice(init_args);
    kw.run(&init).ok();
    if let Some(lead) = lead {
        kw.run(&["env", "update", "default", "--lead", lead]).ok();
    }
    let (id, secret) = kw.create_client("e2e", "orders.read", "api://orders");
    let server = kw.start_server(&["serve", "--listen", &format!("127.0.0.1:{port}")], &[]);
    Issuer {
        kw,
        url,
        id,
        secret,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_revocation_and_issuer_outage() {
    // A short lead: the next key is published 6 s before it signs, and the
    // JWKS max-age is half of that.
    let Issuer {
        kw,
        url: issuer,
        id,
        secret,
        mut server,
    } = issuer(&["--alg", "ES256"], Some("6s"));

    let hits = Arc::new(AtomicUsize::new(0));
    let up = upstream(hits.clone()).await;
    let admin_port = free_port();
    let gw = start_gateway(
        &kw,
        &format!(
            r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:{admin_port}"
token_cache = 0

[[issuer]]
issuer = "{issuer}"
audiences = ["api://orders"]
revocations = true
cache = {{ min_ttl = "1s" }}

[[route]]
path = "/orders/{{id}}"
upstream = "{up}"
scopes = ["orders.read"]
"#
        ),
    );
    let client = reqwest::Client::new();

    // 1. Rotate while traffic flows.
    let (first, first_kid) = token(&client, &issuer, &id, &secret).await;
    assert_eq!(call(&client, &gw, &first).await, 200);
    kw.run(&["keys", "rotate", "--env", "default"]).ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut requests, mut rejected, mut kids) = (0, 0, std::collections::BTreeSet::new());
    while Instant::now() < deadline {
        let (t, kid) = token(&client, &issuer, &id, &secret).await;
        kids.insert(kid.clone());
        for _ in 0..5 {
            requests += 1;
            if call(&client, &gw, &t).await != 200 {
                rejected += 1;
            }
        }
        if kid != first_kid && kids.len() == 2 && requests > 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("rotation: {requests} requests, {rejected} refused, kids {kids:?}");
    assert_eq!(
        kids.len(),
        2,
        "the issuer switched keys during the run: {kids:?}"
    );
    assert_eq!(
        rejected, 0,
        "{rejected} of {requests} valid requests were refused"
    );
    let metrics = metrics_text(&client, &gw).await;
    assert_eq!(
        metric(
            &metrics,
            "keyward_gate_jwks_fetches_total",
            "cause=\"unknown_kid\""
        ),
        0.0,
        "the next key was known before it signed"
    );
    // Tokens of the retired key still verify.
    assert_eq!(call(&client, &gw, &first).await, 200);

    // 2. Revoke a token at the issuer: refused within the 5 s poll interval.
    let (victim, _) = token(&client, &issuer, &id, &secret).await;
    assert_eq!(call(&client, &gw, &victim).await, 200);
    let r = client
        .post(format!("{issuer}/oauth2/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", victim.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked_at = Instant::now();
    let before = hits.load(Ordering::SeqCst);
    let mut allowed_after = 0;
    loop {
        let s = call(&client, &gw, &victim).await;
        if s == 401 {
            break;
        }
        allowed_after += 1;
        assert!(
            revoked_at.elapsed() < Duration::from_secs(6),
            "still accepted after 6 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = revoked_at.elapsed();
    assert!(took <= Duration::from_secs(6), "refused after {took:?}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before + allowed_after,
        "refused requests never reached the upstream"
    );
    eprintln!("revocation took effect after {took:?}");

    // 3. Stop the issuer: the gateway keeps verifying from its cached keys,
    //    past the JWKS max-age (3 s), with the verified-token cache off.
    let (last, _) = token(&client, &issuer, &id, &secret).await;
    server.terminate();
    server
        .wait_exit(Duration::from_secs(10))
        .expect("issuer stopped");
    let until = Instant::now() + Duration::from_secs(5);
    let mut n = 0;
    while Instant::now() < until {
        assert_eq!(
            call(&client, &gw, &last).await,
            200,
            "request {n} after the issuer stopped"
        );
        assert_eq!(call(&client, &gw, &first).await, 200);
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = metrics_text(&client, &gw).await;
    assert!(
        metric(
            &metrics,
            "keyward_gate_jwks_fetches_total",
            "outcome=\"failed\""
        ) >= 1.0,
        "the failed refreshes are counted"
    );
    assert_eq!(
        metric(&metrics, "keyward_gate_jwks_stale", ""),
        1.0,
        "and the set is marked stale"
    );
}

/// `POST {issuer}/oauth2/token` with `grant_type=refresh_token`: the status
/// and the (access, refresh) pair on success.
async fn refresh(
    client: &reqwest::Client,
    issuer: &str,
    id: &str,
    secret: &str,
    token: &str,
) -> (u16, Option<(String, String)>) {
    let r = client
        .post(format!("{issuer}/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let pair = v["access_token"].as_str().map(|a| {
        (
            a.to_string(),
            v["refresh_token"].as_str().unwrap().to_string(),
        )
    });
    (status, pair)
}

/// A replayed refresh token revokes its family, and the gate refuses the
/// family's access tokens (verified and cached ones included) within one
/// poll of the revocation feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reuse_reaches_the_gate_within_one_poll() {
    let Issuer {
        kw,
        url: issuer,
        id,
        secret,
        server: _server,
    } = issuer(&["--alg", "ES256"], None);
    let up = upstream(Arc::new(AtomicUsize::new(0))).await;
    let gw = start_gateway(
        &kw,
        &format!(
            r#"listen = "127.0.0.1:0"

[[issuer]]
issuer = "{issuer}"
audiences = ["api://orders"]
revocations = true
revocations_poll = "1s"

[[route]]
path = "/orders/{{id}}"
upstream = "{up}"
scopes = ["orders.read"]
"#
        ),
    );
    let client = reqwest::Client::new();
    let minted = kw
        .run(&[
            "token", "issue", "--env", "default", "--sub", "alice", "--client", &id, "--json",
        ])
        .ok()
        .json();
    let r1 = minted["refresh_token"].as_str().unwrap().to_string();
    let a1 = minted["access_token"].as_str().unwrap().to_string();
    let (_, p2) = refresh(&client, &issuer, &id, &secret, &r1).await;
    let (a2, r2) = p2.expect("R1 -> R2");
    let (_, p3) = refresh(&client, &issuer, &id, &secret, &r2).await;
    let (a3, _r3) = p3.expect("R2 -> R3");
    for a in [&a1, &a2, &a3] {
        assert_eq!(call(&client, &gw, a).await, 200);
    }
    // R1 again, after R2 was used: reuse. The family's access tokens go too.
    let (status, _) = refresh(&client, &issuer, &id, &secret, &r1).await;
    assert_eq!(status, 400);
    let replayed = Instant::now();
    loop {
        let refused = [&a1, &a2, &a3].into_iter().map(|a| call(&client, &gw, a));
        let mut all = true;
        for s in refused {
            all &= s.await == 401;
        }
        if all {
            break;
        }
        assert!(
            replayed.elapsed() < Duration::from_secs(3),
            "the family's access tokens still pass the gate 3 s after reuse (poll 1 s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("reuse reached the gate after {:?}", replayed.elapsed());
}

/// An environment moves from RS256 to ML-DSA-65 by an ordinary rotation
/// with pre-publication (`keys rotate --alg ML-DSA-65`) while traffic flows.
/// A gateway whose `algorithms` list both sees zero failures and never needs
/// an unknown-kid refetch; a gateway left at the default algorithms (no
/// ML-DSA) skips the published AKP key, counts it, and keeps verifying the
/// RS256 tokens until the switch, after which it refuses the ML-DSA ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_to_ml_dsa_65_migration_with_zero_failures() {
    let Issuer {
        kw,
        url: issuer,
        id,
        secret,
        server: _server,
    } = issuer(&["--alg", "RS256", "--bits", "2048"], Some("6s"));
    let up = upstream(Arc::new(AtomicUsize::new(0))).await;
    let config = |admin_port: u16, algorithms: &str| {
        format!(
            r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:{admin_port}"
token_cache = 0

[[issuer]]
issuer = "{issuer}"
audiences = ["api://orders"]
cache = {{ min_ttl = "1s" }}
{algorithms}

[[route]]
path = "/orders/{{id}}"
upstream = "{up}"
scopes = ["orders.read"]
"#
        )
    };
    let gw = start_gateway(
        &kw,
        &config(free_port(), r#"algorithms = ["RS256", "ML-DSA-65"]"#),
    );
    // Its own directory, so that the two gateways' files stay apart.
    let kw_rsa = Kw::new();
    let gw_rsa = start_gateway(&kw_rsa, &config(free_port(), ""));
    let client = reqwest::Client::new();

    let (first, first_kid) = token(&client, &issuer, &id, &secret).await;
    assert_eq!(call(&client, &gw, &first).await, 200);
    assert_eq!(call(&client, &gw_rsa, &first).await, 200);
    kw.run(&["keys", "rotate", "--env", "default", "--alg", "ML-DSA-65"])
        .ok();
    // Discovery names both algorithms while the ML-DSA key is pre-published
    // (once the server has reloaded the store: within its 1 s interval).
    let published = Instant::now();
    loop {
        let d = client
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let d: Value = serde_json::from_str(&d).unwrap();
        let algs = &d["id_token_signing_alg_values_supported"];
        if *algs == serde_json::json!(["RS256", "ML-DSA-65"]) {
            break;
        }
        assert_eq!(*algs, serde_json::json!(["RS256"]));
        assert!(published.elapsed() < Duration::from_secs(3), "{d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(25);
    let (mut requests, mut rejected) = (0, 0);
    let mut algs = std::collections::BTreeSet::new();
    let (mut rsa_before_switch, mut rsa_refused_before_switch) = (0, 0);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (t, kid) = token(&client, &issuer, &id, &secret).await;
        let alg = keyward_jose::dangerous::decode_unverified(&t).unwrap().0["alg"]
            .as_str()
            .unwrap()
            .to_string();
        algs.insert(alg.clone());
        for _ in 0..5 {
            requests += 1;
            if call(&client, &gw, &t).await != 200 {
                rejected += 1;
            }
        }
        if alg == "RS256" {
            rsa_before_switch += 1;
            if call(&client, &gw_rsa, &t).await != 200 {
                rsa_refused_before_switch += 1;
            }
        }
        last = t;
        if kid != first_kid && alg == "ML-DSA-65" && requests > 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("migration: {requests} requests, {rejected} refused, algorithms {algs:?}");
    assert_eq!(
        algs.into_iter().collect::<Vec<_>>(),
        ["ML-DSA-65", "RS256"],
        "the issuer switched algorithms during the run"
    );
    assert_eq!(
        rejected, 0,
        "{rejected} of {requests} valid requests were refused"
    );
    let metrics = metrics_text(&client, &gw).await;
    assert_eq!(
        metric(
            &metrics,
            "keyward_gate_jwks_fetches_total",
            "cause=\"unknown_kid\""
        ),
        0.0,
        "the ML-DSA key was known before it signed"
    );
    assert_eq!(
        metric(&metrics, "keyward_gate_jwks_keys_skipped_total", ""),
        0.0
    );
    // Tokens of the retired RSA key still verify.
    assert_eq!(call(&client, &gw, &first).await, 200);

    // The gateway without ML-DSA: RS256 tokens passed until the switch, the
    // AKP key was skipped (not the whole set), and ML-DSA tokens are refused.
    assert!(rsa_before_switch > 0);
    assert_eq!(rsa_refused_before_switch, 0);
    let metrics = metrics_text(&client, &gw_rsa).await;
    assert!(
        metric(
            &metrics,
            "keyward_gate_jwks_keys_skipped_total",
            "alg=\"ML-DSA-65\""
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(call(&client, &gw_rsa, &first).await, 200);
    assert_eq!(call(&client, &gw_rsa, &last).await, 401);
}
