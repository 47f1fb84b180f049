//! The web console in a real browser: Debian's `chromium`, headless, driven
//! over WebDriver by `chromedriver` (package `chromium-driver`), against the
//! real `keyward serve` with the console on. No browser is downloaded.
//!
//! Without chromium or chromedriver the browser test prints SKIPPED; with
//! `KEYWARD_REQUIRE_BROWSER=1` (as `.ci/run` sets) it fails instead. With
//! `KEYWARD_CONSOLE_SCREENSHOTS=DIR` it saves a PNG of each page into DIR
//! (how docs/console/ was made).
//!
//! The CSRF refusal is a plain HTTP test (no browser needed).

mod browser;
mod common;

use browser::{browser, click, count, fill, have_browser, start_driver, text};
use common::{get, Kw, Server};
use fantoccini::Client;
use serde_json::Value;
use std::time::Duration;

/// Saves a screenshot of the current page when asked to.
async fn shot(c: &Client, name: &str) {
    browser::shot_if(c, "KEYWARD_CONSOLE_SCREENSHOTS", name).await
}

fn admin_token(kw: &Kw) -> String {
    admin_token_with(kw, &[])
}

/// An admin token made with `extra` arguments (`--permissions`, `--ttl`).
fn admin_token_with(kw: &Kw, extra: &[&str]) -> String {
    let mut args = vec!["admin-token", "create", "--name", "console-test", "--json"];
    args.extend_from_slice(extra);
    kw.run(&args).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn console_server(kw: &Kw) -> Server {
    kw.start_server(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("KEYWARD_CONSOLE", "true")],
    )
}

fn keys(kw: &Kw) -> Vec<Value> {
    kw.run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    if !have_browser("console browser test") {
        return;
    }
    let kw = Kw::new();
    kw.init();
    let token = admin_token(&kw);
    let server = console_server(&kw);
    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    let run = scenario(&c, &kw, &server, &token).await;
    c.close().await.unwrap();
    run.unwrap_or_else(|e| panic!("{e}\nserver log: {}", server.stderr_text()));
}

async fn scenario(c: &Client, kw: &Kw, server: &Server, token: &str) -> Result<(), String> {
    // Signed out, a page sends the browser to the login form.
    c.goto(&server.url("/console/envs")).await.unwrap();
    let url = c.current_url().await.unwrap();
    assert_eq!(url.path(), "/console/login");
    shot(c, "login").await;
    // A wrong token is refused.
    fill(c, "#token", "kwa_wrong").await;
    click(c, "form.login button").await;
    assert!(text(c, "main")
        .await
        .contains("invalid, expired or revoked"));
    // Log in.
    fill(c, "#token", token).await;
    click(c, "form.login button").await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/console/envs",
        "{}",
        text(c, "main").await
    );
    assert!(text(c, "table.envs").await.contains("default"));
    shot(c, "environments").await;

    // The environment: one key on the timeline.
    click(c, "table.envs a[href='/console/envs/default']").await;
    assert_eq!(count(c, "svg.timeline g.key").await, 1);
    assert_eq!(count(c, "svg.timeline line.next").await, 1);
    assert_eq!(count(c, "svg.timeline line.now").await, 1);
    let first = keys(kw)[0]["kid"].as_str().unwrap().to_string();

    // Rotate: the timeline gains the new key's bar, pending then active.
    click(c, "form.rotate button").await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/console/envs/default"
    );
    assert!(text(c, "p.flash.ok").await.starts_with("Rotated: key"));
    assert_eq!(count(c, "svg.timeline g.key").await, 2);
    assert_eq!(count(c, "svg.timeline rect.seg.pending").await, 1);
    let ks = keys(kw);
    assert_eq!(ks.len(), 2);
    let new = ks
        .iter()
        .find(|k| k["kid"] != first.as_str())
        .unwrap()
        .clone();
    assert_eq!(new["state"], "pending");
    let new = new["kid"].as_str().unwrap().to_string();
    let bar = format!("svg.timeline g.key[data-kid='{new}'] rect.seg.pending");
    assert_eq!(count(c, &bar).await, 1);
    shot(c, "environment").await;

    // Revoke the new key: a wrong confirmation changes nothing.
    let row = format!("table.keys tr[data-kid='{new}']");
    fill(c, &format!("{row} input[name=confirm]"), "not-the-kid").await;
    click(c, &format!("{row} form.revoke button")).await;
    assert!(text(c, "main").await.contains("type its kid exactly"));
    assert_eq!(
        keys(kw).iter().filter(|k| k["state"] == "revoked").count(),
        0
    );
    c.back().await.unwrap();
    c.refresh().await.unwrap();
    fill(c, &format!("{row} input[name=confirm]"), &new).await;
    fill(c, &format!("{row} input[name=reason]"), "browser test").await;
    click(c, &format!("{row} form.revoke button")).await;
    assert!(text(c, "p.flash.ok").await.contains("is revoked"));
    assert_eq!(text(c, &format!("{row} span.state")).await, "revoked");
    assert_eq!(count(c, "svg.timeline line.revoked").await, 1);
    let revoked: Vec<Value> = keys(kw)
        .into_iter()
        .filter(|k| k["state"] == "revoked")
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["kid"], new.as_str());

    // Create a client: its secret is shown once and works.
    c.goto(&server.url("/console/envs/default/clients"))
        .await
        .unwrap();
    fill(c, "#name", "<script>alert(1)</script> billing").await;
    fill(c, "#scopes", "orders.read").await;
    click(c, "form.create button").await;
    let id = text(c, "#client-id").await;
    let secret = text(c, "#client-secret").await;
    assert!(secret.len() > 30);
    shot(c, "client-secret").await;
    let r = common::post_form(
        &server.url("/oauth2/token"),
        common::Auth::Basic(&id, &secret),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The list shows the name as text (escaped), never the secret.
    c.goto(&server.url("/console/envs/default/clients"))
        .await
        .unwrap();
    let row = text(c, &format!("table.clients tr[data-client='{id}'] td.name")).await;
    assert_eq!(row, "<script>alert(1)</script> billing");
    assert!(!c.source().await.unwrap().contains(&secret));
    shot(c, "clients").await;

    // The audit log: the chain is intact and shows what was done.
    click(c, "nav a[href='/console/audit']").await;
    assert!(text(c, "p.chain").await.starts_with("Chain intact"));
    let log = text(c, "table.audit").await;
    for action in ["key.rotate", "key.revoke", "client.create"] {
        assert!(log.contains(action), "{action}: {log}");
    }
    fill(c, "#action", "key.").await;
    click(c, "form.filters button").await;
    let filtered = text(c, "table.audit").await;
    assert!(filtered.contains("key.revoke") && !filtered.contains("client.create"));
    c.goto(&server.url("/console/audit")).await.unwrap();
    shot(c, "audit").await;

    // Health: ready, signing, the token just issued counted.
    click(c, "nav a[href='/console/health']").await;
    assert_eq!(text(c, "p.chain").await, "Ready");
    assert!(text(c, "table.signers").await.contains(&first));
    shot(c, "health").await;

    // Logout: the session is gone.
    click(c, "form.logout button").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/console/login");
    c.goto(&server.url("/console/envs")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/console/login");

    // A token that may only read keys: it sees the environment, and its
    // rotate is refused with the permission named; nothing changes.
    let reader = admin_token_with(
        kw,
        &[
            "--permissions",
            "keyward.env.default.keys.read",
            "--ttl",
            "1h",
        ],
    );
    fill(c, "#token", &reader).await;
    click(c, "form.login button").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/console/envs");
    click(c, "table.envs a[href='/console/envs/default']").await;
    let before = keys(kw);
    click(c, "form.rotate button").await;
    let refused = text(c, "main").await;
    assert!(
        refused.contains("keyward.env.default.keys.rotate"),
        "{refused}"
    );
    assert_eq!(keys(kw), before);
    shot(c, "refused").await;
    Ok(())
}

/// An HTTP client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The session cookie and the CSRF token of a page, logged in over plain
/// HTTP (what a browser does, without one).
async fn http_login(server: &Server, token: &str) -> (String, String) {
    let client = no_redirects();
    let form = client
        .get(server.url("/console/login"))
        .send()
        .await
        .unwrap();
    let pre = form
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = form.text().await.unwrap();
    let csrf = csrf_of(&html);
    let r = client
        .post(server.url("/console/login"))
        .header("cookie", &pre)
        .form(&[("csrf", csrf.as_str()), ("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("keyward_console="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = client
        .get(server.url("/console/envs/default"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (cookie, csrf_of(&page))
}

fn csrf_of(html: &str) -> String {
    let k = "name=\"csrf\" value=\"";
    let i = html.find(k).expect("a csrf field") + k.len();
    html[i..i + html[i..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn a_post_without_the_csrf_token_changes_nothing() {
    let kw = Kw::new();
    kw.init();
    let token = admin_token(&kw);
    let server = console_server(&kw);
    let (cookie, csrf) = http_login(&server, &token).await;
    let before = kw.snapshot();
    let kid = keys(&kw)[0]["kid"].as_str().unwrap().to_string();
    let client = no_redirects();
    for (path, form) in [
        (
            "/console/envs/default/rotate",
            vec![("schedule", "immediate")],
        ),
        (
            &*format!("/console/envs/default/keys/{kid}/revoke"),
            vec![("confirm", kid.as_str())],
        ),
        ("/console/envs/default/clients", vec![("name", "x")]),
    ] {
        for bad in [None, Some("forged")] {
            let mut f = form.clone();
            if let Some(b) = bad {
                f.push(("csrf", b));
            }
            let r = client
                .post(server.url(path))
                .header("cookie", &cookie)
                .form(&f)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path} {bad:?}");
            assert!(r.text().await.unwrap().contains("CSRF"));
        }
    }
    assert_eq!(kw.snapshot(), before, "a refused form changed the store");
    // With the token, the same request goes through.
    let r = client
        .post(server.url("/console/envs/default/rotate"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("schedule", "immediate")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(keys(&kw).len(), 2);
    // The console is off unless configured: plain `serve` has no /console.
    drop(server);
    let plain = kw.serve();
    assert_eq!(get(&plain.url("/console/login")).await.status, 404);
}
