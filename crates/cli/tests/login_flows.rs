//! Browser logins from the command line and over a real `keyward serve`:
//! `env update --login-url`, `clients create --public --redirect-uri ...`
//! (and what they refuse, changing nothing), then the whole code flow over
//! HTTP with a login-app admin token holding only `logins.accept`.

mod common;

use common::Kw;
use serde_json::{json, Value};

const CB: &str = "http://127.0.0.1:9/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(15))
        .no_proxy()
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

fn param(url: &str, name: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

#[test]
fn login_settings_and_public_clients_are_validated() {
    let kw = Kw::new();
    kw.init();
    let before = kw.snapshot();
    for (args, needle) in [
        (
            vec![
                "env",
                "update",
                "default",
                "--login-url",
                "https://login.test/#x",
            ],
            "fragment",
        ),
        (
            vec![
                "env",
                "update",
                "default",
                "--login-url",
                "http://login.test/in",
            ],
            "localhost",
        ),
        (
            vec![
                "clients",
                "create",
                "--env",
                "default",
                "--name",
                "x",
                "--public",
                "--scopes",
                "openid",
                "--redirect-uri",
                "https://*.rp.test/cb",
            ],
            "wildcards",
        ),
        (
            vec![
                "clients",
                "create",
                "--env",
                "default",
                "--name",
                "x",
                "--public",
                "--grant-type",
                "client_credentials",
            ],
            "public client",
        ),
        (
            vec![
                "clients",
                "create",
                "--env",
                "default",
                "--name",
                "x",
                "--grant-type",
                "authorization_code",
            ],
            "redirect uri",
        ),
    ] {
        kw.run(&args).fails_with(needle);
        assert_eq!(kw.snapshot(), before, "{args:?} changed something");
    }
    let v = kw
        .run(&[
            "env",
            "update",
            "default",
            "--login-url",
            "http://localhost:9/login",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["login_url"], "http://localhost:9/login");
    assert_eq!(v["consent_url"], Value::Null);
    let show = kw.run(&["env", "show", "default"]).ok().stdout.clone();
    assert!(show.contains("http://localhost:9/login"), "{show}");
    let c = kw
        .run(&[
            "clients",
            "create",
            "--env",
            "default",
            "--name",
            "spa",
            "--public",
            "--first-party",
            "--scopes",
            "openid email offline_access",
            "--redirect-uri",
            CB,
            "--redirect-uri",
            "https://app.test/cb",
            "--post-logout-redirect-uri",
            "https://app.test/",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(c["auth"], "none");
    assert_eq!(c["client_secret"], Value::Null);
    assert_eq!(c["first_party"], true);
    assert_eq!(
        c["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(c["redirect_uris"], json!([CB, "https://app.test/cb"]));
    assert_eq!(c["post_logout_redirect_uris"], json!(["https://app.test/"]));
    let id = c["client_id"].as_str().unwrap();
    let c = kw
        .run(&[
            "clients",
            "update",
            "--env",
            "default",
            id,
            "--redirect-uri",
            "https://app.test/new",
            "--first-party=false",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(c["redirect_uris"], json!(["https://app.test/new"]));
    assert_eq!(c["first_party"], false);
    let actions: Vec<String> = kw
        .run(&["audit", "list", "--json", "--limit", "1000"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect();
    assert!(
        actions.contains(&"env.login_settings".to_string()),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_flow_over_a_real_server() {
    let kw = Kw::new();
    kw.init();
    kw.run(&[
        "env",
        "update",
        "default",
        "--login-url",
        "http://localhost:9/login",
    ])
    .ok();
    let c = kw
        .run(&[
            "clients",
            "create",
            "--env",
            "default",
            "--name",
            "spa",
            "--public",
            "--scopes",
            "openid email offline_access",
            "--redirect-uri",
            CB,
            "--json",
        ])
        .ok()
        .json();
    let client = c["client_id"].as_str().unwrap().to_string();
    let t = kw
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
        .json();
    let admin = t["token"].as_str().unwrap().to_string();
    let server = kw.serve();
    let http = no_redirects();

    // 1. authorize: to the login app, with a session cookie.
    let url = reqwest::Url::parse_with_params(
        &server.url("/oauth2/authorize"),
        [
            ("response_type", "code"),
            ("client_id", &client),
            ("redirect_uri", CB),
            ("scope", "openid email offline_access"),
            ("state", "s1"),
            ("nonce", "n1"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_string();
    let challenge = param(&location(&r), "login_challenge");

    // 2. the login app, with its one permission.
    let admin_url = |p: &str| server.url(&format!("/admin/v1/envs/default/{p}"));
    let req: Value = http
        .get(admin_url(&format!("login-requests/{challenge}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        .unwrap();
    assert_eq!(req["client_id"], client);
    assert_eq!(
        req["requested_scope"],
        json!(["openid", "email", "offline_access"])
    );
    let acc: Value = http
        .post(admin_url(&format!("login-requests/{challenge}/accept")))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(json!({"subject": "alice", "claims": {"email": "alice@example.com"}}).to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        .unwrap();
    // The admin token can do nothing else.
    let r = http
        .get(server.url("/admin/v1/envs/default/clients"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // 3. back in the browser: consent, then the code.
    let to = acc["redirect_to"].as_str().unwrap();
    let to = to.replace("http://127.0.0.1:8080", &server.url(""));
    let r = http
        .get(&to)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // The login renewed the session cookie (no session fixation).
    let renewed = r.headers()["set-cookie"].to_str().unwrap();
    let renewed = renewed.split(';').next().unwrap().to_string();
    assert_ne!(renewed, cookie);
    let cookie = renewed;
    let consent = param(&location(&r), "consent_challenge");
    let acc: Value = http
        .post(admin_url(&format!("consent-requests/{consent}/accept")))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(json!({"grant_scope": ["openid", "email", "offline_access"]}).to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        .unwrap();
    let to = acc["redirect_to"]
        .as_str()
        .unwrap()
        .replace("http://127.0.0.1:8080", &server.url(""));
    let r = http
        .get(&to)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    assert!(loc.starts_with(CB), "{loc}");
    assert_eq!(param(&loc, "state"), "s1");
    assert_eq!(param(&loc, "iss"), "http://127.0.0.1:8080");
    let code = param(&loc, "code");

    // 4. the relying party redeems it.
    let tok: Value = http
        .post(server.url("/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client),
            ("code", &code),
            ("redirect_uri", CB),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        .unwrap();
    assert!(tok["id_token"].is_string(), "{tok}");
    assert!(tok["refresh_token"].is_string(), "{tok}");
    let access = tok["access_token"].as_str().unwrap();
    let info: Value = http
        .get(server.url("/oauth2/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        .unwrap();
    assert_eq!(info, json!({"sub": "alice", "email": "alice@example.com"}));
    // A replay is refused.
    let r = http
        .post(server.url("/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client),
            ("code", &code),
            ("redirect_uri", CB),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
