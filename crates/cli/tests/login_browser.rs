//! A user logs in through keyward in a real browser: Debian's `chromium`,
//! headless, over WebDriver (`chromedriver`), against the real `keyward
//! serve`, the example login app (`examples/login-app/app.py`, Python
//! standard library) and a relying party in this test.
//!
//! The user opens the relying party, is sent to keyward's authorize
//! endpoint, then to the login app's login page, types a username and a
//! password (a wrong one first), gets the consent page, unticks `email` and
//! allows, and lands back in the relying party signed in: it shows the
//! subject of the ID token it received (checked by `keyward token verify`
//! against the JWKS: iss, aud, typ JWT, signature; and its nonce) and the
//! userinfo claims, which have the name and not the email that was unticked.
//!
//! Then a TV (the device grant, RFC 8628) asks for a code; the user types it
//! on keyward's device page, confirms what the TV asks for, logs in and
//! consents in the same login app (through the redirects the confirmation's
//! Content Security Policy must allow), and sees "Device connected"; the TV's
//! next poll gets an ID token for alice.
//!
//! Without chromium or chromedriver it prints SKIPPED; with
//! `KEYWARD_REQUIRE_BROWSER=1` (as `.ci/run` sets) it fails instead. With
//! `KEYWARD_LOGIN_SCREENSHOTS=DIR` it saves a PNG of each page into DIR
//! (how docs/login-flows/ was made).

mod browser;
mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use browser::{browser, click, count, fill, have_browser, start_driver, text};
use common::{http, Kw, Server};
use fantoccini::{Client, Locator};
use serde_json::Value;

async fn shot(c: &Client, name: &str) {
    browser::shot_if(c, "KEYWARD_LOGIN_SCREENSHOTS", name).await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn random_b64(n: usize) -> String {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut b).unwrap();
    B64.encode(b)
}

/// The example login app, stopped on drop.
struct LoginApp {
    child: Child,
    log: PathBuf,
}

impl Drop for LoginApp {
    fn drop(&mut self) {
        common::stop_child(&mut self.child);
    }
}

fn start_login_app(keyward: &str, admin_token: &str, port: u16, dir: &std::path::Path) -> LoginApp {
    let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/login-app/app.py");
    let log = dir.join("login-app.log");
    let child = Command::new("python3")
        .arg(app)
        .env("LOGIN_APP_KEYWARD_URL", keyward)
        .env("LOGIN_APP_ADMIN_TOKEN", admin_token)
        .env("LOGIN_APP_ENV", "default")
        .env("LOGIN_APP_LISTEN", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("login-app.err")).unwrap())
        .spawn()
        .expect("python3 is installed");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the login app did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    LoginApp { child, log }
}

// --- the relying party -------------------------------------------------------

/// A minimal confidential client: `/` links to `/login`, which starts the
/// authorization code flow (PKCE S256, state, nonce); `/callback` redeems the
/// code, checks the ID token and calls userinfo.
struct Rp {
    issuer: String,
    client_id: String,
    secret: String,
    redirect_uri: String,
    /// state -> (PKCE verifier, nonce)
    pending: Mutex<HashMap<String, (String, String)>>,
}

async fn rp_home() -> Html<&'static str> {
    Html(
        "<!doctype html><title>Example relying party</title>\
         <h1>Example relying party</h1><p>Not signed in.</p>\
         <p><a id=login href=/login>Sign in with keyward</a></p>",
    )
}

async fn rp_login(State(rp): State<Arc<Rp>>) -> Redirect {
    let verifier = random_b64(32);
    let challenge = B64.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let (state, nonce) = (random_b64(16), random_b64(16));
    rp.pending
        .lock()
        .unwrap()
        .insert(state.clone(), (verifier, nonce.clone()));
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &rp.client_id)
        .append_pair("redirect_uri", &rp.redirect_uri)
        .append_pair("scope", "openid profile email")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    Redirect::to(&format!("{}/oauth2/authorize?{q}", rp.issuer))
}

async fn rp_callback(
    State(rp): State<Arc<Rp>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match callback(&rp, &q).await {
        Ok(page) => Html(page).into_response(),
        Err(e) => Html(format!(
            "<!doctype html><title>Error</title><h1>Sign-in failed</h1><p id=error>{}</p>",
            html_escape(&e)
        ))
        .into_response(),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn callback(rp: &Rp, q: &HashMap<String, String>) -> Result<String, String> {
    if let Some(e) = q.get("error") {
        return Err(format!("keyward said {e}"));
    }
    let state = q.get("state").ok_or("no state")?;
    let (verifier, nonce) = rp
        .pending
        .lock()
        .unwrap()
        .remove(state)
        .ok_or("unknown state")?;
    if q.get("iss") != Some(&rp.issuer) {
        return Err(format!(
            "iss {:?} is not our issuer (RFC 9207)",
            q.get("iss")
        ));
    }
    let code = q.get("code").ok_or("no code")?;
    let resp = http()
        .post(format!("{}/oauth2/token", rp.issuer))
        .basic_auth(&rp.client_id, Some(&rp.secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &rp.redirect_uri),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let tokens: Value = serde_json::from_slice(&resp.bytes().await.map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("token endpoint: {status} {tokens}"));
    }
    let id_token = tokens["id_token"].as_str().ok_or("no id_token")?;
    let access = tokens["access_token"].as_str().ok_or("no access_token")?;
    // The ID token: signature against the issuer's JWKS, iss, aud, exp, typ.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["token", "verify", "--jwks"])
        .arg(format!("{}/.well-known/jwks.json", rp.issuer))
        .args([
            "--iss",
            &rp.issuer,
            "--aud",
            &rp.client_id,
            "--typ",
            "JWT",
            id_token,
        ])
        .env_remove("KEYWARD_DATA_DIR")
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "the ID token does not verify: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let payload = id_token.split('.').nth(1).ok_or("not a JWT")?;
    let claims: Value = serde_json::from_slice(&B64.decode(payload).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if claims["nonce"].as_str() != Some(nonce.as_str()) {
        return Err("nonce mismatch".into());
    }
    let sub = claims["sub"].as_str().ok_or("no sub")?;
    let info = http()
        .get(format!("{}/oauth2/userinfo", rp.issuer))
        .bearer_auth(access)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    let info: Value = serde_json::from_slice(&info).map_err(|e| e.to_string())?;
    if info["sub"].as_str() != Some(sub) {
        return Err(format!(
            "userinfo sub {} is not the ID token's",
            info["sub"]
        ));
    }
    let show = |k: &str| html_escape(info[k].as_str().unwrap_or("(not shared)"));
    Ok(format!(
        "<!doctype html><title>Signed in</title><h1>Example relying party</h1>\
         <p>Signed in as <b id=subject>{}</b> (the ID token's <code>sub</code>).</p>\
         <p>Name: <span id=name>{}</span></p><p>Email: <span id=email>{}</span></p>\
         <p>Scope: <code id=scope>{}</code></p>",
        html_escape(sub),
        show("name"),
        show("email"),
        html_escape(tokens["scope"].as_str().unwrap_or("")),
    ))
}

async fn start_rp(rp: Arc<Rp>, listener: tokio::net::TcpListener) {
    let app = axum::Router::new()
        .route("/", get(rp_home))
        .route("/login", get(rp_login))
        .route("/callback", get(rp_callback))
        .with_state(rp);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

// --- the test -----------------------------------------------------------------

struct World {
    kw: Kw,
    server: Server,
    login_app: LoginApp,
    rp_url: String,
    issuer: String,
    /// A public client with the device grant (a TV).
    tv: String,
}

async fn world() -> World {
    let kw = Kw::new();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    kw.run(&["init", "--issuer", &issuer, "--alg", "ES256"])
        .ok();
    let admin = kw
        .run(&[
            "admin-token",
            "create",
            "--name",
            "login-app",
            "--permissions",
            "keyward.env.default.logins.accept",
            "--ttl",
            "1h",
            "--json",
        ])
        .ok()
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let login_port = free_port();
    let login = format!("http://127.0.0.1:{login_port}");
    kw.run(&[
        "env",
        "update",
        "default",
        "--login-url",
        &format!("{login}/login"),
        "--consent-url",
        &format!("{login}/consent"),
    ])
    .ok();
    let rp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rp_url = format!("http://{}", rp_listener.local_addr().unwrap());
    let redirect_uri = format!("{rp_url}/callback");
    let client = kw
        .run(&[
            "clients",
            "create",
            "--env",
            "default",
            "--name",
            "Example RP",
            "--scopes",
            "openid profile email",
            "--audience",
            "api://example",
            "--grant-type",
            "authorization_code",
            "--redirect-uri",
            &redirect_uri,
            "--json",
        ])
        .ok()
        .json();
    let tv = kw
        .run(&[
            "clients",
            "create",
            "--env",
            "default",
            "--name",
            "Living-room TV",
            "--public",
            "--scopes",
            "openid profile",
            "--grant-type",
            "urn:ietf:params:oauth:grant-type:device_code",
            "--json",
        ])
        .ok()
        .json()["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let server = kw.start_server(&["serve", "--listen", &format!("127.0.0.1:{port}")], &[]);
    let login_app = start_login_app(&issuer, &admin, login_port, kw.dir.path());
    let rp = Arc::new(Rp {
        issuer,
        client_id: client["client_id"].as_str().unwrap().to_string(),
        secret: client["client_secret"].as_str().unwrap().to_string(),
        redirect_uri,
        pending: Mutex::new(HashMap::new()),
    });
    let issuer = rp.issuer.clone();
    start_rp(rp, rp_listener).await;
    World {
        kw,
        server,
        login_app,
        rp_url,
        issuer,
        tv,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logs_in_through_the_example_login_app_in_a_real_browser() {
    if !have_browser("login browser test") {
        return;
    }
    let w = world().await;
    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    let run = scenario(&c, &w).await;
    c.close().await.unwrap();
    run.unwrap_or_else(|e| {
        panic!(
            "{e}\nserver log: {}\nlogin app log: {}",
            w.server.stderr_text(),
            std::fs::read_to_string(w.login_app.log.with_extension("err")).unwrap_or_default()
        )
    });
    let _ = &w.kw;
}

async fn scenario(c: &Client, w: &World) -> Result<(), String> {
    c.goto(&w.rp_url).await.map_err(|e| e.to_string())?;
    shot(c, "1-relying-party").await;
    // To keyward, which sends the browser on to the login app.
    click(c, "#login").await;
    let url = c.current_url().await.unwrap();
    if url.path() != "/login" || !url.query().unwrap_or("").contains("login_challenge=") {
        return Err(format!(
            "expected the login page, at {url}: {}",
            text(c, "body").await
        ));
    }
    assert_eq!(text(c, "#client").await, "Example RP");
    assert!(text(c, "#scopes").await.contains("openid"));
    // A wrong password: the form again, with an error.
    fill(c, "#username", "alice").await;
    fill(c, "#password", "not-her-password").await;
    click(c, "#accept").await;
    assert!(text(c, "#error")
        .await
        .contains("Wrong username or password"));
    fill(c, "#password", "alice-demo-password").await;
    shot(c, "2-login").await;
    click(c, "#accept").await;
    // Consent: every requested scope ticked; untick email.
    let url = c.current_url().await.unwrap();
    if url.path() != "/consent" {
        return Err(format!(
            "expected the consent page, at {url}: {}",
            text(c, "body").await
        ));
    }
    assert_eq!(text(c, "#subject").await, "alice");
    assert_eq!(count(c, "input[name=grant_scope]").await, 3);
    c.find(Locator::Css("#scope-email"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    shot(c, "3-consent").await;
    click(c, "#accept").await;
    // Back at the relying party, signed in.
    let url = c.current_url().await.unwrap();
    if url.path() != "/callback" {
        return Err(format!(
            "expected the relying party, at {url}: {}",
            text(c, "body").await
        ));
    }
    if count(c, "#error").await > 0 {
        return Err(format!(
            "the relying party says: {}",
            text(c, "#error").await
        ));
    }
    shot(c, "4-signed-in").await;
    assert_eq!(text(c, "#subject").await, "alice");
    assert_eq!(text(c, "#name").await, "Alice Example");
    assert_eq!(text(c, "#email").await, "(not shared)");
    let scope = text(c, "#scope").await;
    assert!(
        scope.split(' ').any(|s| s == "profile") && !scope.split(' ').any(|s| s == "email"),
        "granted scope {scope}"
    );
    device(c, w).await
}

/// Waits (up to 15 s) until the page has what `css` finds: a click only
/// waits for the old page to go, and a redirect chain may still be loading.
async fn wait_for(c: &Client, css: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.find(Locator::Css(css)).await.is_err() {
        if Instant::now() > deadline {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            return Err(format!(
                "{css} never came, at {url}: {}",
                text(c, "body").await
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The device grant: the TV's code typed on keyward's device page.
async fn device(c: &Client, w: &World) -> Result<(), String> {
    let http = http();
    let g: Value = http
        .post(format!("{}/oauth2/device_authorization", w.issuer))
        .form(&[("client_id", w.tv.as_str()), ("scope", "openid profile")])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{e}: {t}")))?;
    let device_code = g["device_code"]
        .as_str()
        .ok_or(format!("no device_code: {g}"))?;
    let user_code = g["user_code"].as_str().unwrap();
    c.goto(g["verification_uri"].as_str().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    wait_for(c, "#user_code").await?;
    fill(c, "#user_code", &user_code.replace('-', "").to_lowercase()).await;
    shot(c, "5-device-code").await;
    click(c, "#continue").await;
    wait_for(c, "input[name=confirm]").await?;
    let page = text(c, "body").await;
    if !page.contains("Living-room TV") || !page.contains(user_code) {
        return Err(format!("expected the device confirmation: {page}"));
    }
    shot(c, "6-device-confirm").await;
    click(c, "#continue").await;
    // The login app again (this login was not remembered), then consent.
    wait_for(c, "#username").await?;
    let url = c.current_url().await.unwrap();
    if url.path() != "/login" {
        return Err(format!(
            "expected the login page, at {url}: {}",
            text(c, "body").await
        ));
    }
    assert_eq!(text(c, "#client").await, "Living-room TV");
    fill(c, "#username", "alice").await;
    fill(c, "#password", "alice-demo-password").await;
    click(c, "#accept").await;
    wait_for(c, "input[name=grant_scope]").await?;
    let url = c.current_url().await.unwrap();
    if url.path() != "/consent" {
        return Err(format!(
            "expected the consent page, at {url}: {}",
            text(c, "body").await
        ));
    }
    click(c, "#accept").await;
    wait_for(c, "h1").await?;
    let url = c.current_url().await.unwrap();
    let page = text(c, "body").await;
    if url.path() != "/device/callback" || !page.contains("Device connected") {
        return Err(format!("expected the device callback, at {url}: {page}"));
    }
    shot(c, "7-device-connected").await;
    // The TV's next poll: its tokens.
    let r = http
        .post(format!("{}/oauth2/token", w.issuer))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", w.tv.as_str()),
            ("device_code", device_code),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let t: Value = r
        .text()
        .await
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{e}: {t}")))?;
    if !status.is_success() {
        return Err(format!("the TV's poll: {status} {t}"));
    }
    let id_token = t["id_token"].as_str().ok_or(format!("no ID token: {t}"))?;
    let payload: Value =
        serde_json::from_slice(&B64.decode(id_token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(payload["sub"], "alice");
    assert_eq!(payload["aud"][0], w.tv.as_str());
    Ok(())
}
