//! Load client for scripts/bench-issuer.sh's code-flow case: complete
//! browser logins per second against a running `keyward serve`.
//!
//! One login, as a browser and the example login app do it (8 requests,
//! HTTP/1.1 keep-alive, a fresh browser session each time):
//!   GET  {issuer}/oauth2/authorize?...                   -> 302 login_url?login_challenge=C
//!   GET  /admin/v1/envs/{env}/login-requests/C            (the login app reads it)
//!   POST /admin/v1/envs/{env}/login-requests/C/accept     -> redirect_to
//!   GET  redirect_to (session cookie)                     -> 302 consent_url?consent_challenge=K
//!   GET  /admin/v1/envs/{env}/consent-requests/K
//!   POST /admin/v1/envs/{env}/consent-requests/K/accept   -> redirect_to
//!   GET  redirect_to (session cookie)                     -> 302 redirect_uri?code=...
//!   POST {issuer}/oauth2/token (code, PKCE verifier, client_secret_basic) -> ID + access token
//!
//! usage: bench_login ISSUER ADMIN_BASE ENV ADMIN_TOKEN CLIENT_ID SECRET REDIRECT_URI CONNS SECONDS
//! Prints one JSON line: {"logins", "seconds", "rate", "p50_ms", "p99_ms", "errors", "first_error"}.
//! Any failed step counts as an error (and the login as not complete).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SecureRandom as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{json, Value};

struct Cfg {
    issuer: String,
    admin: String,
    env: String,
    admin_token: String,
    client_id: String,
    secret: String,
    redirect_uri: String,
}

fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut b).unwrap();
    B64.encode(b)
}

/// The browser's cookies (name -> value), updated from every response.
fn take_cookies(jar: &mut HashMap<String, String>, h: &HeaderMap) {
    for v in h.get_all(SET_COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        let pair = v.split(';').next().unwrap_or("");
        if let Some((k, val)) = pair.split_once('=') {
            jar.insert(k.trim().to_string(), val.trim().to_string());
        }
    }
}

fn cookie_header(jar: &HashMap<String, String>) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn query_param(url: &str, name: &str) -> Result<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| format!("no {name} in {url}"))
}

async fn browser_get(
    http: &reqwest::Client,
    url: &str,
    jar: &mut HashMap<String, String>,
) -> Result<String, String> {
    let r = http
        .get(url)
        .header(COOKIE, cookie_header(jar))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    take_cookies(jar, r.headers());
    let status = r.status();
    let loc = r
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match loc {
        Some(l) if status.is_redirection() => Ok(l),
        _ => Err(format!(
            "GET {url}: {status} {}",
            r.text().await.unwrap_or_default()
        )),
    }
}

async fn admin(
    http: &reqwest::Client,
    cfg: &Cfg,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let url = format!("{}/admin/v1/envs/{}/{path}", cfg.admin, cfg.env);
    let rb = match &body {
        Some(b) => http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b.to_string()),
        None => http.get(&url),
    };
    let r = rb
        .bearer_auth(&cfg.admin_token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = serde_json::from_slice(&r.bytes().await.map_err(|e| e.to_string())?)
        .map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}: {status} {v}"));
    }
    Ok(v)
}

async fn one_login(http: &reqwest::Client, cfg: &Cfg) -> Result<(), String> {
    let mut jar = HashMap::new();
    let verifier = random_b64(32);
    let challenge = B64.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let state = random_b64(12);
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &cfg.client_id)
        .append_pair("redirect_uri", &cfg.redirect_uri)
        .append_pair("scope", "openid profile email")
        .append_pair("state", &state)
        .append_pair("nonce", &random_b64(12))
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let to_login = browser_get(
        http,
        &format!("{}/oauth2/authorize?{q}", cfg.issuer),
        &mut jar,
    )
    .await?;
    let c = query_param(&to_login, "login_challenge")?;
    admin(http, cfg, &format!("login-requests/{c}"), None).await?;
    let accepted = admin(
        http,
        cfg,
        &format!("login-requests/{c}/accept"),
        Some(json!({"subject": "bench-user", "claims": {"name": "Bench User", "email": "bench@example.com"}})),
    )
    .await?;
    let to_consent = browser_get(
        http,
        accepted["redirect_to"].as_str().ok_or("no redirect_to")?,
        &mut jar,
    )
    .await?;
    let k = query_param(&to_consent, "consent_challenge")?;
    let req = admin(http, cfg, &format!("consent-requests/{k}"), None).await?;
    let accepted = admin(
        http,
        cfg,
        &format!("consent-requests/{k}/accept"),
        Some(json!({"grant_scope": req["requested_scope"]})),
    )
    .await?;
    let back = browser_get(
        http,
        accepted["redirect_to"].as_str().ok_or("no redirect_to")?,
        &mut jar,
    )
    .await?;
    if !back.starts_with(&cfg.redirect_uri) || query_param(&back, "state")? != state {
        return Err(format!("unexpected redirect {back}"));
    }
    let code = query_param(&back, "code")?;
    let r = http
        .post(format!("{}/oauth2/token", cfg.issuer))
        .basic_auth(&cfg.client_id, Some(&cfg.secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &cfg.redirect_uri),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = serde_json::from_slice(&r.bytes().await.map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if !status.is_success() || v["id_token"].as_str().is_none() {
        return Err(format!("token: {status} {v}"));
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 9 {
        eprintln!("usage: bench_login ISSUER ADMIN_BASE ENV ADMIN_TOKEN CLIENT_ID SECRET REDIRECT_URI CONNS SECONDS");
        std::process::exit(2);
    }
    let cfg = Arc::new(Cfg {
        issuer: a[0].clone(),
        admin: a[1].clone(),
        env: a[2].clone(),
        admin_token: a[3].clone(),
        client_id: a[4].clone(),
        secret: a[5].clone(),
        redirect_uri: a[6].clone(),
    });
    let conns: usize = a[7].parse().expect("CONNS");
    let secs: f64 = a[8].parse().expect("SECONDS");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(conns * 2)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let lat = Arc::new(Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(Mutex::new((0u64, None::<String>)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (http, cfg, stop, lat, errors) = (
            http.clone(),
            cfg.clone(),
            stop.clone(),
            lat.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match one_login(&http, &cfg).await {
                    Ok(()) => lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        let mut g = errors.lock().unwrap();
                        g.0 += 1;
                        g.1.get_or_insert(e);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut l = lat.lock().unwrap().clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if l.is_empty() {
            0.0
        } else {
            l[((l.len() as f64 * p) as usize).min(l.len() - 1)]
        }
    };
    let (errs, first) = errors.lock().unwrap().clone();
    println!(
        "{}",
        json!({
            "logins": l.len(),
            "seconds": elapsed,
            "rate": l.len() as f64 / elapsed,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "errors": errs,
            "first_error": first,
        })
    );
}
