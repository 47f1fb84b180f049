//! End to end: the real `keyward serve` / `keyward up` on 127.0.0.1, driven
//! over HTTP with reqwest and by the CLI beside it. Tokens are verified the
//! way a resource server would: against the JWKS the server publishes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::{
    eventually, get, http, metric, post_form, send, write, Auth, Kw, PgSchema, Resp, Server,
};
use keyward_jose::{
    sign_jwt, verify_jwt, Algorithm, JwkSet, KeySet, LocalSigner, PrivateKey, TokenSigner,
    Validation, VerifiedToken,
};
use serde_json::{json, Value};

/// The issuer `Kw::init` gives the default environment.
const ISSUER: &str = "http://127.0.0.1:8080";
/// How soon a change made beside a running server must take effect.
const PROPAGATION: Duration = Duration::from_secs(5);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `clients create --env default --json ARGS`: (client_id, client_secret).
fn create_client(kw: &Kw, args: &[&str]) -> (String, Option<String>) {
    let mut a = vec!["clients", "create", "--env", "default", "--json"];
    a.extend_from_slice(args);
    let v = kw.run(&a).ok().json();
    (
        v["client_id"].as_str().unwrap().to_string(),
        v["client_secret"].as_str().map(String::from),
    )
}

/// A client_secret_basic client with `scopes` (and more flags).
fn secret_client(kw: &Kw, name: &str, scopes: &str, more: &[&str]) -> (String, String) {
    let mut a = vec!["--name", name, "--scopes", scopes];
    a.extend_from_slice(more);
    let (id, secret) = create_client(kw, &a);
    (id, secret.expect("a secret client has a secret"))
}

fn active_kid(kw: &Kw) -> String {
    let keys = kw
        .run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json();
    let active: Vec<&Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "{keys:#}");
    active[0]["kid"].as_str().unwrap().to_string()
}

/// `audit list --json` and every client: what a refused request must not change.
fn observable(kw: &Kw) -> (Value, Value) {
    (
        kw.run(&["audit", "list", "--json", "--limit", "10000"])
            .ok()
            .json(),
        kw.run(&["clients", "list", "--env", "default", "--json"])
            .ok()
            .json(),
    )
}

fn audit_actions(kw: &Kw) -> Vec<Value> {
    observable(kw).0.as_array().unwrap().clone()
}

async fn jwks_doc(url: &str) -> (Resp, JwkSet, KeySet) {
    let r = get(url).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let set = JwkSet::parse(&r.body, Algorithm::RS256).unwrap();
    let keys = KeySet::from_jwks(&set).unwrap();
    (r, set, keys)
}

async fn server_keys(s: &Server) -> KeySet {
    jwks_doc(&s.url("/.well-known/jwks.json")).await.2
}

fn kids(set: &JwkSet) -> Vec<String> {
    let mut v: Vec<String> = set.keys.iter().filter_map(|k| k.kid.clone()).collect();
    v.sort();
    v
}

/// Verifies an access token as a resource server for `aud` would.
fn verify(token: &str, keys: &KeySet, issuer: &str, aud: &str) -> VerifiedToken {
    verify_jwt(
        token,
        keys,
        &Validation::access_token(issuer, &[aud]),
        now(),
    )
    .unwrap_or_else(|e| panic!("token does not verify: {e}"))
}

async fn client_credentials(s: &Server, auth: Auth<'_>, extra: &[(&str, &str)]) -> Resp {
    let mut f = vec![("grant_type", "client_credentials")];
    f.extend_from_slice(extra);
    post_form(&s.url("/oauth2/token"), auth, &f).await
}

async fn refresh(s: &Server, auth: Auth<'_>, token: &str, extra: &[(&str, &str)]) -> Resp {
    let mut f = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    f.extend_from_slice(extra);
    post_form(&s.url("/oauth2/token"), auth, &f).await
}

async fn introspect(s: &Server, auth: Auth<'_>, token: &str) -> Value {
    let r = post_form(&s.url("/oauth2/introspect"), auth, &[("token", token)]).await;
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    r.ok_json()
}

async fn revoke(s: &Server, auth: Auth<'_>, token: &str) -> Resp {
    post_form(&s.url("/oauth2/revoke"), auth, &[("token", token)]).await
}

/// A successful token response: 200, JSON, never cached.
fn token_ok(r: &Resp) -> Value {
    let v = r.ok_json();
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("pragma").as_deref(), Some("no-cache"));
    assert_eq!(v["token_type"], "Bearer");
    v
}

fn token_issue(kw: &Kw, client: &str, extra: &[&str]) -> Value {
    let mut a = vec![
        "token", "issue", "--env", "default", "--sub", "alice", "--client", client, "--json",
    ];
    a.extend_from_slice(extra);
    kw.run(&a).ok().json()
}

fn st(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

// 1 ---------------------------------------------------------------------------

/// The value after `label` on the banner line that has it.
fn banner_value<'a>(banner: &'a [String], label: &str) -> &'a str {
    banner
        .iter()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {banner:#?}"))
        .split_whitespace()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_initializes_once_and_its_curl_line_gets_a_verifiable_token() {
    let kw = Kw::new();
    let mut server = kw.start_server(&["up", "--listen", "127.0.0.1:0"], &[]);
    let issuer = format!("http://{}", server.addr);
    let banner = server.banner.clone();
    assert!(
        banner.contains(&format!("keyward is serving {issuer}")),
        "{banner:#?}"
    );
    let id = banner_value(&banner, "demo client:").to_string();
    let secret = banner_value(&banner, "client secret:").to_string();
    assert!(
        secret.starts_with("kws_") && secret.len() >= 4 + 43,
        "{secret}"
    );
    let curl = banner
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("curl "))
        .unwrap();
    assert_eq!(
        curl,
        format!(
            "curl -s -u '{id}:{secret}' -d grant_type=client_credentials {issuer}/oauth2/token"
        )
    );

    // Run the printed request, as curl would: -u is Basic auth, -d a form body.
    let words: Vec<&str> = curl.split_whitespace().collect();
    let after = |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1];
    let (cid, csecret) = after("-u").trim_matches('\'').split_once(':').unwrap();
    let url = *words.last().unwrap();
    let curl_request = || {
        http()
            .post(url)
            .basic_auth(cid, Some(csecret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(after("-d").to_string())
    };
    let t = token_ok(&send(curl_request()).await);

    // Verify it the way a resource server does: discovery -> jwks_uri.
    let d = get(&format!("{issuer}/.well-known/openid-configuration"))
        .await
        .ok_json();
    assert_eq!(d["issuer"], issuer.as_str());
    let (_, _, keys) = jwks_doc(st(&d["jwks_uri"])).await;
    let ok = verify(st(&t["access_token"]), &keys, &issuer, "api://demo");
    assert_eq!(ok.claims.sub(), Some(id.as_str()));
    assert_eq!(ok.claims.get("client_id"), Some(json!(id)));
    assert_eq!(ok.claims.get("scope"), Some(json!("demo.read demo.write")));
    assert_eq!(ok.header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(server.stop().code(), Some(0), "{}", server.stderr_text());

    // Again on the used data dir (same address, so the issuer URL still
    // names it): it just serves.
    let addr = server.addr.clone();
    let again = kw.start_server(&["up", "--listen", &addr], &[]);
    assert_eq!(again.banner, vec![format!("keyward is serving on {addr}")]);
    token_ok(&send(curl_request()).await);
    let envs = kw.run(&["env", "list", "--json"]).ok().json();
    assert_eq!(envs.as_array().unwrap().len(), 1, "{envs:#}");
    let keys = kw
        .run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys:#}");
    let clients = kw
        .run(&["clients", "list", "--env", "default", "--json"])
        .ok()
        .json();
    // The client_credentials demo client and the browser flow's public one
    // (tests/dev_login.rs).
    assert_eq!(clients.as_array().unwrap().len(), 2, "{clients:#}");
    assert!(clients
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["client_id"] == id.as_str()));
    let actions: Vec<Value> = audit_actions(&kw)
        .iter()
        .map(|a| a["action"].clone())
        .collect();
    assert_eq!(
        actions,
        json!([
            "store.init",
            "env.create",
            "key.generate",
            "client.create",
            "env.login_settings",
            "client.create"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_gives_a_wildcard_listen_address_a_usable_issuer_and_takes_issuer() {
    // A wildcard address: the issuer is loopback with the port, and a warning says so.
    let kw = Kw::new();
    let mut server = kw.start_server(&["up", "--listen", "0.0.0.0:0"], &[]);
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let issuer = format!("http://127.0.0.1:{port}");
    assert!(
        server
            .banner
            .contains(&format!("keyward is serving {issuer}")),
        "{:#?}",
        server.banner
    );
    let d = get(&format!("{issuer}/.well-known/openid-configuration"))
        .await
        .ok_json();
    assert_eq!(d["issuer"], issuer.as_str());
    server.stop();
    let log = server.stderr_text();
    assert!(
        log.contains("listening on every interface") && log.contains("--issuer"),
        "{log}"
    );

    // --issuer names the URL clients use; the server still listens where told.
    let kw = Kw::new();
    kw.run_bounded(
        &["up", "--listen", "127.0.0.1:0", "--issuer", "not a url"],
        Duration::from_secs(60),
    )
    .fails_with("invalid issuer URL");
    assert!(!kw.data_dir().join("keyward.db").exists());
    let mut server = kw.start_server(
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--issuer",
            "https://auth.example.test/kw",
        ],
        &[],
    );
    assert!(
        server
            .banner
            .contains(&"keyward is serving https://auth.example.test/kw".to_string()),
        "{:#?}",
        server.banner
    );
    let d = get(&server.url("/kw/.well-known/openid-configuration"))
        .await
        .ok_json();
    assert_eq!(d["issuer"], "https://auth.example.test/kw");
    assert_eq!(
        d["token_endpoint"],
        "https://auth.example.test/kw/oauth2/token"
    );
    server.stop();
}

#[test]
fn up_on_a_busy_port_fails_before_initializing() {
    let kw = Kw::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    kw.run_bounded(&["up", "--listen", &addr], Duration::from_secs(60))
        .fails_with(&format!("cannot listen on {addr}"));
    // Nothing was initialized, so no demo secret was made and lost unseen.
    assert!(!kw.data_dir().join("keyward.db").exists());
    assert!(!kw.data_dir().join("root.key").exists());
}

// 2 ---------------------------------------------------------------------------

#[test]
fn serve_reports_an_environment_without_keys_and_refuses_one_whose_keys_cannot_sign() {
    let kw = Kw::new();
    kw.init();
    kw.run(&[
        "env",
        "create",
        "empty",
        "--issuer",
        "http://127.0.0.1:8080/empty",
        "--no-key",
    ])
    .ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // An environment with no key at all (just created) is reported, not
    // fatal: serve starts, is ready, and names it.
    assert!(kw
        .run(&["keys", "list", "--env", "empty", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    {
        let before = kw.snapshot();
        let mut server = kw.serve();
        rt.block_on(async {
            let r = get(&server.url("/readyz")).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (
                    200,
                    "ready\nno key yet (reported, not serving tokens): empty"
                )
            );
            let m = get(&server.url("/metrics")).await.text();
            assert_eq!(
                metric(&m, "keyward_env_without_key", &[("env", "empty")]),
                1.0
            );
            assert_eq!(
                metric(&m, "keyward_env_without_key", &[("env", "default")]),
                0.0
            );
        });
        server.stop();
        assert!(server
            .stderr_text()
            .contains("environment empty has no key yet"));
        // It created nothing (keys are made on purpose).
        assert_eq!(kw.snapshot(), before);
    }
    // With a key it serves each environment at its issuer path with its own keys.
    kw.run(&["keys", "generate", "--env", "empty", "--alg", "ES256"])
        .ok();
    let server = kw.serve();
    rt.block_on(async {
        let r = get(&server.url("/readyz")).await;
        assert_eq!((r.status, r.text().as_str()), (200, "ready"));
        let d = get(&server.url("/empty/.well-known/openid-configuration"))
            .await
            .ok_json();
        assert_eq!(d["issuer"], "http://127.0.0.1:8080/empty");
        assert_eq!(
            d["token_endpoint"],
            "http://127.0.0.1:8080/empty/oauth2/token"
        );
        let (_, empty, _) = jwks_doc(&server.url("/empty/.well-known/jwks.json")).await;
        let (_, default, _) = jwks_doc(&server.url("/.well-known/jwks.json")).await;
        assert_eq!(empty.keys.len(), 1);
        assert_eq!(kids(&default), vec![active_kid(&kw)]);
        assert_ne!(kids(&empty), kids(&default));
    });
    drop(server);
    // Keys that exist but of which none can sign (all revoked): not ready
    // while running, and a start is refused.
    let kid = kw
        .run(&["keys", "list", "--env", "empty", "--json"])
        .ok()
        .json()[0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    kw.run(&["keys", "revoke", &kid, "--reason", "test"]).ok();
    let before = kw.snapshot();
    kw.run_bounded(
        &["serve", "--listen", "127.0.0.1:0"],
        Duration::from_secs(30),
    )
    .fails_with("environment empty has no active or pending key");
    assert_eq!(kw.snapshot(), before);
}

#[test]
fn config_check_names_the_bad_line_and_hides_the_password() {
    let kw = Kw::new();
    let bad = write(
        kw.dir.path(),
        "bad.toml",
        "listen = \"127.0.0.1:9000\"\nlisten_adress = \"x\"\n",
    );
    let bad = bad.to_str().unwrap();
    let r = kw.run(&["config", "check", "--config", bad]);
    r.fails_with(&format!("{bad}:2"))
        .fails_with("listen_adress")
        .fails_with("valid fields: listen, data_dir");
    // The valid fields are listed once.
    assert_eq!(r.stderr.matches("log_format").count(), 1, "{}", r.stderr);
    let good = write(
        kw.dir.path(),
        "good.toml",
        concat!(
            "listen = \"127.0.0.1:9000\"\n",
            "database_url = \"postgres://kw:s3cr3t-pw@db.example:5432/kw\"\n",
            "refresh_grace = \"10s\"\n",
            "reload_interval = \"2s\"\n",
        ),
    );
    let good = good.to_str().unwrap();
    let r = kw.run(&["config", "check", "--config", good]);
    r.ok();
    assert!(!r.stdout.contains("s3cr3t-pw"), "{}", r.stdout);
    let c = r.json();
    assert_eq!(c["listen"], "127.0.0.1:9000");
    assert_eq!(c["database_url"], "postgres://kw:****@db.example:5432/kw");
    assert_eq!(c["refresh_grace_secs"], 10);
    assert_eq!(c["reload_interval_secs"], 2);
    // KEYWARD_<FIELD> overrides the file.
    let c = kw
        .run_with(
            &["config", "check", "--config", good],
            &[("KEYWARD_LISTEN", "127.0.0.1:9001")],
        )
        .ok()
        .json();
    assert_eq!(c["listen"], "127.0.0.1:9001");
    // A value the server cannot run with is refused before anything starts.
    let slow = write(kw.dir.path(), "slow.toml", "reload_interval = \"30s\"\n");
    kw.run(&["config", "check", "--config", slow.to_str().unwrap()])
        .fails_with("reload_interval");
}

#[test]
fn config_check_masks_every_secret_and_refuses_unusable_database_urls() {
    let kw = Kw::new();
    let cfg = write(
        kw.dir.path(),
        "pw.toml",
        "database_url = \"postgresql://kw:s3cr3t-1@db.example/kw?sslmode=require&password=s3cr3t-2&sslpassword=s3cr3t-3\"\n",
    );
    let cfg = cfg.to_str().unwrap();
    let r = kw.run(&["config", "check", "--config", cfg]);
    r.ok();
    assert!(!r.stdout.contains("s3cr3t"), "{}", r.stdout);
    assert_eq!(
        r.json()["database_url"],
        "postgresql://kw:****@db.example/kw?sslmode=require&password=****&sslpassword=****"
    );
    // The same from the environment and from the flag.
    let url = "postgres://kw@db.example/kw?password=s3cr3t-4";
    let r = kw.run_with(&["config", "check"], &[("KEYWARD_DATABASE_URL", url)]);
    r.ok();
    assert!(!r.stdout.contains("s3cr3t"), "{}", r.stdout);
    let r = kw.run(&["--database-url", url, "config", "check"]);
    r.ok();
    assert!(!r.stdout.contains("s3cr3t"), "{}", r.stdout);
    // A percent-encoded name is the name sqlx reads; an unknown one is masked too.
    let url = "postgres://kw@db.example/kw?p%61ssword=s3cr3t-8&x=s3cr3t-9&application_name=kw";
    let r = kw.run(&["--database-url", url, "config", "check"]);
    assert_eq!(
        r.ok().json()["database_url"],
        "postgres://kw@db.example/kw?p%61ssword=****&x=****&application_name=kw"
    );
    // What no command could open is refused here, clearly and without the password.
    for bad in [
        "host=db.example user=kw password=s3cr3t-5 dbname=kw",
        "mysql://kw:s3cr3t-6@db.example/kw",
        "postgres://kw:s3cr3t-7@db.example:port/kw",
        "sqlite:",
    ] {
        let f = write(
            kw.dir.path(),
            "bad-url.toml",
            &format!("database_url = {bad:?}\n"),
        );
        let r = kw.run(&["config", "check", "--config", f.to_str().unwrap()]);
        r.fails_with("database_url");
        assert!(
            !r.stderr.contains("s3cr3t") && !r.stdout.contains("s3cr3t"),
            "{bad}: {}",
            r.stderr
        );
        // serve refuses it the same way, before touching anything.
        let r = kw.run(&["serve", "--config", f.to_str().unwrap()]);
        r.fails_with("database_url");
        assert!(!r.stderr.contains("s3cr3t"), "{}", r.stderr);
    }
    let r = kw.run(&[
        "config",
        "check",
        "--config",
        write(
            kw.dir.path(),
            "bad-url.toml",
            "database_url = \"host=h password=s3cr3t-8\"\n",
        )
        .to_str()
        .unwrap(),
    ]);
    r.fails_with("expected a postgres://, postgresql:// or sqlite: URL");
}

// 3 ---------------------------------------------------------------------------

fn max_age(r: &Resp) -> i64 {
    let cc = r.header("cache-control").expect("Cache-Control");
    cc.strip_prefix("public, max-age=")
        .unwrap_or_else(|| panic!("Cache-Control: {cc}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_jwks_caching_follow_rotation() {
    let kw = Kw::new();
    kw.init();
    kw.run(&["env", "update", "default", "--lead", "2h"]).ok();
    secret_client(&kw, "a", "orders.write orders.read", &[]);
    secret_client(&kw, "b", "billing.read orders.read", &[]);
    let first = active_kid(&kw);
    let s = kw.serve();

    let d = get(&s.url("/.well-known/openid-configuration")).await;
    assert_eq!(
        d.header("content-type").as_deref(),
        Some("application/json")
    );
    let d = d.ok_json();
    assert_eq!(d["issuer"], ISSUER);
    assert_eq!(d["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    assert_eq!(d["token_endpoint"], format!("{ISSUER}/oauth2/token"));
    assert_eq!(
        d["introspection_endpoint"],
        format!("{ISSUER}/oauth2/introspect")
    );
    assert_eq!(d["revocation_endpoint"], format!("{ISSUER}/oauth2/revoke"));
    assert_eq!(
        d["grant_types_supported"],
        json!([
            "authorization_code",
            "client_credentials",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:grant-type:device_code"
        ])
    );
    assert_eq!(
        d["pushed_authorization_request_endpoint"],
        format!("{ISSUER}/oauth2/par")
    );
    assert_eq!(
        d["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none"
        ])
    );
    let algs: Vec<&str> = d["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(st)
        .collect();
    for want in ["RS256", "PS256", "ES256", "ES384", "EdDSA"] {
        assert!(algs.contains(&want), "{algs:?}");
    }
    assert!(!algs.iter().any(|a| *a == "none" || a.starts_with("HS")));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["ES256"]));
    assert_eq!(
        d["scopes_supported"],
        json!(["billing.read", "orders.read", "orders.write"])
    );
    // Only what is served: the code flow (never the implicit flow's
    // `token`), with PKCE S256 only.
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        d["authorization_endpoint"],
        format!("{ISSUER}/oauth2/authorize")
    );
    assert_eq!(d["subject_types_supported"], json!(["public"]));

    // JWKS: entity tag, conditional GET, bounded caching.
    let url = s.url("/.well-known/jwks.json");
    let (r, set, _) = jwks_doc(&url).await;
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(kids(&set), vec![first.clone()]);
    assert!(!r.text().contains("\"d\""), "private material in the JWKS");
    let etag = r.header("etag").expect("ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let n = max_age(&r);
    assert!((1..=3600).contains(&n), "max-age {n} > lead/2");
    let cond = |tag: String| send(http().get(&url).header("if-none-match", tag));
    let nm = cond(etag.clone()).await;
    assert_eq!(nm.status, 304);
    assert!(nm.body.is_empty());
    assert_eq!(nm.header("etag").as_deref(), Some(etag.as_str()));
    assert_eq!(max_age(&nm), n);
    assert_eq!(cond("\"something-else\"".into()).await.status, 200);
    // If-None-Match compares weakly (RFC 9110 §13.1.2), and takes lists.
    assert_eq!(cond(format!("W/{etag}")).await.status, 304);
    assert_eq!(cond(format!("\"x\", {etag}")).await.status, 304);

    // Rotation publishes the next key at once (it signs after the lead).
    let next = kw
        .run(&["keys", "rotate", "--env", "default", "--json"])
        .ok()
        .json();
    let next = st(&next["kid"]).to_string();
    assert_ne!(next, first);
    let took = eventually(PROPAGATION, "the JWKS publishes the next key", || async {
        kids(&jwks_doc(&url).await.1).len() == 2
    })
    .await;
    eprintln!("rotation reached the JWKS in {took:?}");
    let (r, set, _) = jwks_doc(&url).await;
    let mut both = vec![first.clone(), next.clone()];
    both.sort();
    assert_eq!(kids(&set), both);
    let etag2 = r.header("etag").unwrap();
    assert_ne!(etag2, etag);
    assert_eq!(
        cond(etag.clone()).await.status,
        200,
        "old ETag still matches"
    );
    assert_eq!(cond(etag2.clone()).await.status, 304);
    // Tokens are still signed by the first key: the next one waits for the lead.
    let (id, secret) = secret_client(&kw, "c", "orders.read", &[]);
    eventually(PROPAGATION, "the new client is known", || async {
        client_credentials(&s, Auth::Basic(&id, &secret), &[])
            .await
            .status
            == 200
    })
    .await;
    let t = token_ok(&client_credentials(&s, Auth::Basic(&id, &secret), &[]).await);
    let ok = verify(
        st(&t["access_token"]),
        &server_keys(&s).await,
        ISSUER,
        ISSUER,
    );
    assert_eq!(ok.header.kid.as_deref(), Some(first.as_str()));

    // A shorter lead shortens the cache lifetime with it.
    kw.run(&["env", "update", "default", "--lead", "10m"]).ok();
    eventually(PROPAGATION, "max-age follows the lead", || async {
        max_age(&get(&url).await) <= 300
    })
    .await;
}

// 4 ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_with_basic_and_post() {
    let kw = Kw::new();
    kw.init();
    let (id, secret) = secret_client(
        &kw,
        "orders-svc",
        "orders.read orders.write",
        &[
            "--audience",
            "api://orders",
            "--audience",
            "api://billing",
            "--access-token-ttl",
            "10m",
        ],
    );
    let (pid, psecret) = secret_client(
        &kw,
        "post-svc",
        "orders.read",
        &["--auth", "client-secret-post"],
    );
    let kid = active_kid(&kw);
    let s = kw.serve();
    let keys = server_keys(&s).await;

    let before = now();
    let t = token_ok(&client_credentials(&s, Auth::Basic(&id, &secret), &[]).await);
    assert_eq!(t["expires_in"], 600);
    assert_eq!(t["scope"], "orders.read orders.write");
    assert!(
        t.get("refresh_token").is_none(),
        "client_credentials gives no refresh token"
    );
    let ok = verify(st(&t["access_token"]), &keys, ISSUER, "api://orders");
    assert_eq!(ok.header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(ok.header.kid.as_deref(), Some(kid.as_str()));
    assert_eq!(ok.header.alg, Algorithm::ES256);
    let c = ok.claims.to_value();
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], id.as_str());
    assert_eq!(c["client_id"], id.as_str());
    assert_eq!(c["aud"], json!(["api://orders", "api://billing"]));
    assert_eq!(c["scope"], "orders.read orders.write");
    let iat = c["iat"].as_i64().unwrap();
    assert!((before - 1..=now() + 1).contains(&iat), "iat {iat}");
    assert_eq!(c["exp"].as_i64().unwrap() - iat, 600);
    assert_eq!(c["nbf"].as_i64(), Some(iat));
    assert!(st(&c["jti"]).len() >= 16);

    // Narrowing: one scope, one audience.
    let t = token_ok(
        &client_credentials(
            &s,
            Auth::Basic(&id, &secret),
            &[("scope", "orders.read"), ("audience", "api://billing")],
        )
        .await,
    );
    assert_eq!(t["scope"], "orders.read");
    let c = verify(st(&t["access_token"]), &keys, ISSUER, "api://billing")
        .claims
        .to_value();
    assert_eq!(c["aud"], "api://billing");
    assert_eq!(c["scope"], "orders.read");

    // Asking for more than registered.
    client_credentials(
        &s,
        Auth::Basic(&id, &secret),
        &[("scope", "orders.read admin")],
    )
    .await
    .assert_oauth_error(400, "invalid_scope");
    client_credentials(
        &s,
        Auth::Basic(&id, &secret),
        &[("audience", "api://other")],
    )
    .await
    .assert_oauth_error(400, "invalid_target");

    // client_secret_post; no audience registered: the issuer is the audience;
    // the environment's TTL (1 h).
    let t = token_ok(&client_credentials(&s, Auth::Post(&pid, &psecret), &[]).await);
    assert_eq!(t["expires_in"], 3600);
    let c = verify(st(&t["access_token"]), &keys, ISSUER, ISSUER)
        .claims
        .to_value();
    assert_eq!(c["sub"], pid.as_str());
    assert_eq!(c["aud"], ISSUER);
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    // Each client must use the method it registered.
    client_credentials(&s, Auth::Basic(&pid, &psecret), &[])
        .await
        .assert_oauth_error(401, "invalid_client");
    client_credentials(&s, Auth::Post(&id, &secret), &[])
        .await
        .assert_oauth_error(401, "invalid_client");
}

// 5 ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_replay_revokes_the_family() {
    let kw = Kw::new();
    kw.init();
    let (a, asec) = secret_client(&kw, "app", "orders.read orders.write", &[]);
    let (b, bsec) = secret_client(&kw, "other", "orders.read orders.write", &[]);
    let s = kw.serve();
    let keys = server_keys(&s).await;
    let minted = token_issue(&kw, &a, &["--permissions", "orders.read"]);
    let rt1 = st(&minted["refresh_token"]).to_string();
    assert!(rt1.starts_with("kwr_"));
    let minted_claims = verify(st(&minted["access_token"]), &keys, ISSUER, ISSUER)
        .claims
        .to_value();
    assert_eq!(minted_claims["sub"], "alice");
    assert_eq!(minted_claims["permissions"], json!(["orders.read"]));

    // Another client's refresh token: refused, and nothing changes.
    let before = observable(&kw);
    refresh(&s, Auth::Basic(&b, &bsec), &rt1, &[])
        .await
        .assert_oauth_error(400, "invalid_grant");
    assert_eq!(observable(&kw), before);

    // Its owner refreshes: a new pair, the claims carried over.
    let t = token_ok(&refresh(&s, Auth::Basic(&a, &asec), &rt1, &[]).await);
    let rt2 = st(&t["refresh_token"]).to_string();
    assert!(rt2.starts_with("kwr_") && rt2 != rt1);
    assert_eq!(t["scope"], "orders.read orders.write");
    let c = verify(st(&t["access_token"]), &keys, ISSUER, ISSUER)
        .claims
        .to_value();
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["client_id"], a.as_str());
    assert_eq!(c["permissions"], json!(["orders.read"]));
    assert_eq!(c["scope"], "orders.read orders.write");
    assert_ne!(c["jti"], minted_claims["jti"]);

    // Narrowing on refresh is allowed, widening is not.
    refresh(
        &s,
        Auth::Basic(&a, &asec),
        &rt2,
        &[("scope", "orders.read admin")],
    )
    .await
    .assert_oauth_error(400, "invalid_scope");
    let t = token_ok(
        &refresh(
            &s,
            Auth::Basic(&a, &asec),
            &rt2,
            &[("scope", "orders.read")],
        )
        .await,
    );
    assert_eq!(t["scope"], "orders.read");
    let rt3 = st(&t["refresh_token"]).to_string();

    // Replay of a rotated token: refused, the whole family revoked, audited.
    let reuse_metric = || async {
        let m = get(&s.url("/metrics")).await.text();
        metric(
            &m,
            "keyward_refresh_reuse_detected_total",
            &[("env", "default")],
        )
    };
    assert_eq!(reuse_metric().await, 0.0);
    refresh(&s, Auth::Basic(&a, &asec), &rt1, &[])
        .await
        .assert_oauth_error(400, "invalid_grant");
    refresh(&s, Auth::Basic(&a, &asec), &rt3, &[])
        .await
        .assert_oauth_error(400, "invalid_grant");
    let reuse: Vec<Value> = audit_actions(&kw)
        .into_iter()
        .filter(|e| e["action"] == "refresh.reuse_detected")
        .collect();
    assert_eq!(reuse.len(), 1, "{reuse:#?}");
    assert_eq!(reuse[0]["env"], "default");
    assert_eq!(reuse[0]["subject"], "alice");
    assert_eq!(reuse[0]["actor"], format!("client:{a}"));
    assert_eq!(reuse_metric().await, 1.0);
    assert_eq!(
        introspect(&s, Auth::Basic(&a, &asec), &rt3).await,
        json!({"active": false})
    );
}

// 6 ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_revocation_and_the_revocation_feed() {
    let kw = Kw::new();
    kw.init();
    let (a, asec) = secret_client(&kw, "app", "orders.read", &[]);
    let (b, bsec) = secret_client(&kw, "other", "orders.read", &[]);
    let s = kw.serve();
    let t = token_ok(&client_credentials(&s, Auth::Basic(&a, &asec), &[]).await);
    let at = st(&t["access_token"]).to_string();
    let claims = verify(&at, &server_keys(&s).await, ISSUER, ISSUER)
        .claims
        .to_value();

    let v = introspect(&s, Auth::Basic(&a, &asec), &at).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["token_type"], "access_token");
    for k in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "jti",
        "client_id",
        "scope",
    ] {
        assert_eq!(v[k], claims[k], "{k}");
    }
    // Any client of the environment may introspect an access token (a resource server).
    assert_eq!(
        introspect(&s, Auth::Basic(&b, &bsec), &at).await["active"],
        true
    );
    // Not an anonymous caller.
    post_form(&s.url("/oauth2/introspect"), Auth::None, &[("token", &at)])
        .await
        .assert_oauth_error(401, "invalid_client");
    assert_eq!(
        introspect(&s, Auth::Basic(&a, &asec), "not-a-token").await,
        json!({"active": false})
    );

    // Another client cannot revoke it.
    revoke(&s, Auth::Basic(&b, &bsec), &at)
        .await
        .assert_oauth_error(400, "unauthorized_client");
    assert_eq!(
        introspect(&s, Auth::Basic(&a, &asec), &at).await["active"],
        true
    );
    let feed = get(&s.url("/revocations?since=0")).await.ok_json();
    assert_eq!(feed["revocations"], json!([]));

    // Its client can.
    let r = revoke(&s, Auth::Basic(&a, &asec), &at).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        introspect(&s, Auth::Basic(&a, &asec), &at).await,
        json!({"active": false})
    );
    let r = get(&s.url("/revocations?since=0")).await;
    let feed = r.ok_json();
    let list = feed["revocations"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{feed:#}");
    assert_eq!(list[0]["jti"], claims["jti"]);
    assert_eq!(list[0]["exp"], claims["exp"]);
    let next = feed["next"].as_i64().expect("next cursor");
    assert!(next > 0);
    let rest = get(&s.url(&format!("/revocations?since={next}")))
        .await
        .ok_json();
    assert_eq!(rest, json!({"revocations": [], "next": next}));
    // Revoking again is fine (RFC 7009 §2.2) and adds nothing to the feed.
    assert_eq!(revoke(&s, Auth::Basic(&a, &asec), &at).await.status, 200);
    let again = get(&s.url("/revocations?since=0")).await.ok_json();
    assert_eq!(again["revocations"].as_array().unwrap().len(), 1);
    get(&s.url("/revocations?since=-1"))
        .await
        .assert_oauth_error(400, "invalid_request");

    // Refresh tokens: introspected by their own client only.
    let minted = token_issue(&kw, &a, &[]);
    let rt = st(&minted["refresh_token"]).to_string();
    let v = introspect(&s, Auth::Basic(&a, &asec), &rt).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["token_type"], "refresh_token");
    assert_eq!(v["client_id"], a.as_str());
    assert_eq!(v["sub"], "alice");
    assert_eq!(v["scope"], "orders.read");
    assert_eq!(
        introspect(&s, Auth::Basic(&b, &bsec), &rt).await,
        json!({"active": false})
    );
    assert_eq!(revoke(&s, Auth::Basic(&a, &asec), &rt).await.status, 200);
    assert_eq!(
        introspect(&s, Auth::Basic(&a, &asec), &rt).await,
        json!({"active": false})
    );
    refresh(&s, Auth::Basic(&a, &asec), &rt, &[])
        .await
        .assert_oauth_error(400, "invalid_grant");
}

// 8 ---------------------------------------------------------------------------

fn assertion(signer: &LocalSigner, client_id: &str, aud: &str, exp: i64) -> String {
    let jti = keyward_jose::crypto::hex(&keyward_jose::crypto::random_bytes::<16>());
    assertion_with_jti(signer, client_id, aud, exp, &jti)
}

fn assertion_with_jti(
    signer: &LocalSigner,
    client_id: &str,
    aud: &str,
    exp: i64,
    jti: &str,
) -> String {
    sign_jwt(
        signer,
        None,
        &json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": exp, "iat": now(), "jti": jti}),
    )
    .unwrap()
}

async fn with_assertion(s: &Server, a: &str) -> Resp {
    post_form(
        &s.url("/oauth2/token"),
        Auth::None,
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", a),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_assertions() {
    let kw = Kw::new();
    kw.init();
    let signer = LocalSigner::new(
        PrivateKey::generate(Algorithm::ES256, None).unwrap(),
        Some("client-key-1".into()),
    );
    let jwks = JwkSet {
        keys: vec![signer.public_jwk()],
    };
    let file = write(kw.dir.path(), "client-jwks.json", &jwks.to_json());
    let (id, secret) = create_client(
        &kw,
        &[
            "--name",
            "jwt-client",
            "--auth",
            "private-key-jwt",
            "--jwks",
            file.to_str().unwrap(),
            "--scopes",
            "orders.read",
        ],
    );
    assert_eq!(secret, None, "a private_key_jwt client has no secret");
    let s = kw.serve();
    let d = get(&s.url("/.well-known/openid-configuration"))
        .await
        .ok_json();
    let token_endpoint = st(&d["token_endpoint"]).to_string();

    let good = assertion(&signer, &id, &token_endpoint, now() + 60);
    let t = token_ok(&with_assertion(&s, &good).await);
    let c = verify(
        st(&t["access_token"]),
        &server_keys(&s).await,
        ISSUER,
        ISSUER,
    )
    .claims
    .to_value();
    assert_eq!(c["sub"], id.as_str());
    assert_eq!(c["client_id"], id.as_str());
    // The issuer is also an accepted audience (RFC 7523 §3).
    token_ok(&with_assertion(&s, &assertion(&signer, &id, ISSUER, now() + 60)).await);

    // The same assertion again: a replay.
    with_assertion(&s, &good)
        .await
        .assert_oauth_error(401, "invalid_client");
    // Expired (beyond any leeway).
    with_assertion(&s, &assertion(&signer, &id, &token_endpoint, now() - 600))
        .await
        .assert_oauth_error(401, "invalid_client");
    // For another server.
    with_assertion(
        &s,
        &assertion(
            &signer,
            &id,
            "https://elsewhere.example/oauth2/token",
            now() + 60,
        ),
    )
    .await
    .assert_oauth_error(401, "invalid_client");
    // Signed by a key the client did not register.
    let stranger = LocalSigner::new(
        PrivateKey::generate(Algorithm::ES256, None).unwrap(),
        Some("client-key-1".into()),
    );
    with_assertion(&s, &assertion(&stranger, &id, &token_endpoint, now() + 60))
        .await
        .assert_oauth_error(401, "invalid_client");
    // Valid for far too long.
    with_assertion(
        &s,
        &assertion(&signer, &id, &token_endpoint, now() + 86_400),
    )
    .await
    .assert_oauth_error(401, "invalid_client");
    // A jti that cannot be right is refused saying what is wrong with it,
    // not that the assertion "names no client".
    for (jti, why) in [
        ("j".repeat(10_000), "longer than the 8192-byte limit"),
        ("j".repeat(300), "jti is 300 bytes long; at most 256"),
        (String::new(), "jti is empty"),
        ("j\u{1}".into(), "jti contains the control character U+0001"),
        (
            "j\u{85}".into(),
            "jti contains the control character U+0085",
        ),
        (" j".into(), "jti begins or ends with white space"),
    ] {
        let a = assertion_with_jti(&signer, &id, &token_endpoint, now() + 60, &jti);
        let r = with_assertion(&s, &a).await;
        r.assert_oauth_error(401, "invalid_client");
        let d = r.json()["error_description"].as_str().unwrap().to_string();
        assert!(d.contains(why), "jti of {} bytes: {d}", jti.len());
    }
    // An assertion without a sub, and no client_id: it names no client.
    let a = sign_jwt(
        &signer,
        None,
        &json!({"iss": id, "aud": token_endpoint, "exp": now() + 60, "jti": "x"}),
    )
    .unwrap();
    let r = with_assertion(&s, &a).await;
    r.assert_oauth_error(401, "invalid_client");
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("names no client"));
    // And it still works with a fresh one.
    token_ok(&with_assertion(&s, &assertion(&signer, &id, &token_endpoint, now() + 60)).await);
}

/// A client whose keys are at a `jwks_uri`: fetched by keyward's one bounded
/// fetcher, and a key host that fails or answers too much refuses the client
/// (invalid_client) with the reason in the log; a `jwks_uri` no fetch would
/// accept is refused at registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_keys_from_a_jwks_uri() {
    use std::sync::{Arc, Mutex};
    let signer = LocalSigner::new(
        PrivateKey::generate(Algorithm::ES256, None).unwrap(),
        Some("uri-key".into()),
    );
    let jwks = JwkSet {
        keys: vec![signer.public_jwk()],
    }
    .to_json();
    // The client's key host: (status, body) answered at /jwks.
    let answer = Arc::new(Mutex::new((200u16, jwks.clone())));
    let app = axum::Router::new()
        .route(
            "/jwks",
            axum::routing::get(
                |axum::extract::State(a): axum::extract::State<Arc<Mutex<(u16, String)>>>| async move {
                    let (code, body) = a.lock().unwrap().clone();
                    (axum::http::StatusCode::from_u16(code).unwrap(), body)
                },
            ),
        )
        .with_state(answer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let kw = Kw::new();
    kw.init();
    let uri = format!("http://{host}/jwks");
    let create = |name: &str, uri: &str| {
        create_client(
            &kw,
            &[
                "--name",
                name,
                "--auth",
                "private-key-jwt",
                "--jwks",
                uri,
                "--scopes",
                "orders.read",
            ],
        )
        .0
    };
    let id = create("uri-client", &uri);
    // A jwks_uri that no fetch would accept (plain http to a host that is
    // not loopback) is refused at registration, and nothing is registered.
    kw.run(&[
        "clients",
        "create",
        "--env",
        "default",
        "--name",
        "remote-client",
        "--auth",
        "private-key-jwt",
        "--jwks",
        "http://keys.example/jwks",
    ])
    .fails_with("the client's jwks_uri cannot be fetched: http://keys.example/jwks uses plain http to a non-loopback host");
    let listed = kw
        .run(&["clients", "list", "--env", "default", "--json"])
        .ok()
        .json();
    assert!(!listed.to_string().contains("remote-client"), "{listed}");
    let s = kw.serve();
    let d = get(&s.url("/.well-known/openid-configuration"))
        .await
        .ok_json();
    let token_endpoint = st(&d["token_endpoint"]).to_string();
    let fresh = || assertion(&signer, &id, &token_endpoint, now() + 60);
    token_ok(&with_assertion(&s, &fresh()).await);

    let refused = |why: &'static str| {
        let log = s.stderr_text();
        assert!(
            log.lines()
                .any(|l| l.contains("cannot load a client's keys") && l.contains(why)),
            "{why:?} not logged:\n{log}"
        );
    };
    *answer.lock().unwrap() = (500, String::new());
    with_assertion(&s, &fresh())
        .await
        .assert_oauth_error(401, "invalid_client");
    refused("answered 500 Internal Server Error");
    *answer.lock().unwrap() = (200, " ".repeat(300 * 1024));
    with_assertion(&s, &fresh())
        .await
        .assert_oauth_error(401, "invalid_client");
    refused("body larger than 262144 bytes");
    // The key host recovers: so does the client.
    *answer.lock().unwrap() = (200, jwks);
    token_ok(&with_assertion(&s, &fresh()).await);
}

// 9 ---------------------------------------------------------------------------

/// `env create --alg ML-DSA-65` makes an environment whose token endpoint
/// signs ML-DSA-65 access tokens: its JWKS publishes the `AKP` key, its
/// discovery names the algorithm, a verifier that lists ML-DSA-65 accepts
/// the tokens and one that does not refuses them for their algorithm. A
/// client there authenticates with an ML-DSA-44 client assertion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ml_dsa_environment_issues_ml_dsa_access_tokens() {
    let kw = Kw::new();
    kw.init();
    let issuer = format!("{ISSUER}/pq");
    let env = kw
        .run(&[
            "env",
            "create",
            "pq",
            "--issuer",
            &issuer,
            "--alg",
            "ML-DSA-65",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(env["first_key"]["alg"], "ML-DSA-65", "{env:#}");
    let created = |args: &[&str]| {
        let mut a = vec![
            "clients",
            "create",
            "--env",
            "pq",
            "--json",
            "--scopes",
            "orders.read",
        ];
        a.extend_from_slice(args);
        kw.run(&a).ok().json()
    };
    let c = created(&["--name", "svc", "--audience", "api://orders"]);
    let (id, secret) = (st(&c["client_id"]), st(&c["client_secret"]));
    let client_key = LocalSigner::new(
        PrivateKey::generate(Algorithm::MlDsa44, None).unwrap(),
        Some("client-pq".into()),
    );
    let file = write(
        kw.dir.path(),
        "pq-client-jwks.json",
        &JwkSet {
            keys: vec![client_key.public_jwk()],
        }
        .to_json(),
    );
    let pk = created(&[
        "--name",
        "pq-jwt",
        "--audience",
        "api://orders",
        "--auth",
        "private-key-jwt",
        "--jwks",
        file.to_str().unwrap(),
    ]);
    let s = kw.serve();

    let d = get(&s.url("/pq/.well-known/openid-configuration"))
        .await
        .ok_json();
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        json!(["ML-DSA-65"])
    );
    let auth_algs = d["token_endpoint_auth_signing_alg_values_supported"].to_string();
    for alg in ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87", "ES256"] {
        assert!(auth_algs.contains(&format!("\"{alg}\"")), "{auth_algs}");
    }
    let (r, set, keys) = jwks_doc(&s.url("/pq/.well-known/jwks.json")).await;
    let raw = r.json();
    assert_eq!(raw["keys"][0]["kty"], "AKP", "{raw}");
    assert_eq!(raw["keys"][0]["alg"], "ML-DSA-65");
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(st(&raw["keys"][0]["pub"]))
            .unwrap()
            .len(),
        1952
    );
    assert!(raw["keys"][0].get("priv").is_none());
    assert_eq!(set.keys.len(), 1);

    let token_url = s.url("/pq/oauth2/token");
    let grant = [("grant_type", "client_credentials")];
    let t = token_ok(&post_form(&token_url, Auth::Basic(id, secret), &grant).await);
    let token = st(&t["access_token"]);
    let header = keyward_jose::dangerous::decode_unverified(token).unwrap().0;
    assert_eq!(header["alg"], "ML-DSA-65");
    assert_eq!(header["kid"], raw["keys"][0]["kid"]);
    let policy = Validation {
        algorithms: vec![Algorithm::MlDsa65],
        ..Validation::access_token(&issuer, &["api://orders"])
    };
    let ok = verify_jwt(token, &keys, &policy, now()).unwrap();
    assert_eq!(ok.claims.sub(), Some(id));
    // A verifier left at the default algorithms refuses it for its algorithm.
    assert_eq!(
        verify_jwt(
            token,
            &keys,
            &Validation::access_token(&issuer, &["api://orders"]),
            now()
        )
        .unwrap_err(),
        keyward_jose::Error::Token(keyward_jose::TokenError::AlgorithmNotAllowed("ML-DSA-65"))
    );

    // private_key_jwt with an ML-DSA-44 client key, at this environment.
    let pk_id = st(&pk["client_id"]);
    let a = assertion(
        &client_key,
        pk_id,
        &format!("{issuer}/oauth2/token"),
        now() + 60,
    );
    let r = post_form(
        &token_url,
        Auth::None,
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &a),
        ],
    )
    .await;
    let t = token_ok(&r);
    let ok = verify_jwt(st(&t["access_token"]), &keys, &policy, now()).unwrap();
    assert_eq!(ok.claims.client_id(), Some(pk_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_changes_reach_the_running_server_within_5_seconds() {
    let kw = Kw::new();
    kw.init();
    let first = active_kid(&kw);
    let s = kw.serve();

    // A client created beside the running server.
    let (id, secret) = secret_client(&kw, "late", "orders.read", &[]);
    let took = eventually(PROPAGATION, "a new client gets a token", || async {
        client_credentials(&s, Auth::Basic(&id, &secret), &[])
            .await
            .status
            == 200
    })
    .await;
    eprintln!("new client: {took:?}");

    // Its secret rotated: the old one stops working, the new one works.
    let new_secret = kw
        .run(&[
            "clients",
            "rotate-secret",
            "--env",
            "default",
            &id,
            "--json",
        ])
        .ok()
        .json();
    let new_secret = st(&new_secret["client_secret"]).to_string();
    let took = eventually(PROPAGATION, "the old secret fails", || async {
        client_credentials(&s, Auth::Basic(&id, &secret), &[])
            .await
            .status
            == 401
    })
    .await;
    eprintln!("rotated secret: {took:?}");
    client_credentials(&s, Auth::Basic(&id, &secret), &[])
        .await
        .assert_oauth_error(401, "invalid_client");
    token_ok(&client_credentials(&s, Auth::Basic(&id, &new_secret), &[]).await);

    // A key revoked beside it disappears from the JWKS. (Its kid starts
    // with "-", as one thumbprint in 64 does: the CLI takes it as is.)
    let next = "-next-key".to_string();
    kw.run(&[
        "keys", "generate", "--env", "default", "--alg", "ES256", "--kid", &next,
    ])
    .ok();
    let url = s.url("/.well-known/jwks.json");
    eventually(PROPAGATION, "the JWKS publishes the new key", || async {
        kids(&jwks_doc(&url).await.1).contains(&next)
    })
    .await;
    kw.run(&["keys", "revoke", &next, "--reason", "test"]).ok();
    let states = kw
        .run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json();
    let revoked = states
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == next.as_str());
    assert_eq!(revoked.unwrap()["state"], "revoked", "{states:#}");
    let took = eventually(PROPAGATION, "the JWKS drops the revoked key", || async {
        kids(&jwks_doc(&url).await.1) == vec![first.clone()]
    })
    .await;
    eprintln!("revoked key: {took:?}");

    // A deleted client stops getting tokens.
    kw.run(&["clients", "delete", "--env", "default", &id]).ok();
    eventually(PROPAGATION, "a deleted client is refused", || async {
        client_credentials(&s, Auth::Basic(&id, &new_secret), &[])
            .await
            .status
            == 401
    })
    .await;
}

// 10 --------------------------------------------------------------------------

async fn tokens_survive_a_restart(kw: &Kw) {
    kw.init();
    let (a, asec) = secret_client(kw, "app", "orders.read", &[]);
    let mut first = kw.serve();
    let at = st(
        &token_ok(&client_credentials(&first, Auth::Basic(&a, &asec), &[]).await)["access_token"],
    )
    .to_string();
    let minted = token_issue(kw, &a, &["--permissions", "orders.read"]);
    let t = token_ok(
        &refresh(
            &first,
            Auth::Basic(&a, &asec),
            st(&minted["refresh_token"]),
            &[],
        )
        .await,
    );
    let rt = st(&t["refresh_token"]).to_string();
    let kid = verify(&at, &server_keys(&first).await, ISSUER, ISSUER)
        .header
        .kid
        .clone();
    let etag = get(&first.url("/.well-known/jwks.json"))
        .await
        .header("etag")
        .unwrap();
    assert_eq!(first.stop().code(), Some(0), "{}", first.stderr_text());
    assert!(get_fails(&first.url("/healthz")).await, "still serving");

    let second = kw.serve();
    // Same keys, same entity tag: caches need not refetch after a restart.
    let (r, _, keys) = jwks_doc(&second.url("/.well-known/jwks.json")).await;
    assert_eq!(r.header("etag"), Some(etag));
    let ok = verify(&at, &keys, ISSUER, ISSUER);
    assert_eq!(ok.header.kid, kid);
    assert_eq!(
        introspect(&second, Auth::Basic(&a, &asec), &at).await["active"],
        true
    );
    assert_eq!(
        introspect(&second, Auth::Basic(&a, &asec), &rt).await["active"],
        true
    );
    let t = token_ok(&refresh(&second, Auth::Basic(&a, &asec), &rt, &[]).await);
    let c = verify(st(&t["access_token"]), &keys, ISSUER, ISSUER)
        .claims
        .to_value();
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["permissions"], json!(["orders.read"]));
    // The refresh token used before the restart is now rotated, and the one
    // it was exchanged for has been used too: presenting it again is reuse.
    let next = st(&t["refresh_token"]).to_string();
    token_ok(&refresh(&second, Auth::Basic(&a, &asec), &next, &[]).await);
    refresh(&second, Auth::Basic(&a, &asec), &rt, &[])
        .await
        .assert_oauth_error(400, "invalid_grant");
}

/// Whether a GET to `url` is refused at connect (nothing listens there),
/// as opposed to answered or failing in some other way.
async fn get_fails(url: &str) -> bool {
    match http().get(url).send().await {
        Ok(_) => false,
        Err(e) => {
            assert!(e.is_connect(), "not refused at connect: {e:?}");
            true
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_restart_on_sqlite() {
    tokens_survive_a_restart(&Kw::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_restart_on_postgres() {
    let Some(schema) = PgSchema::new("kw_srv") else {
        return;
    };
    let mut kw = Kw::new();
    kw.env.push(("KEYWARD_DATABASE_URL".into(), schema.url()));
    tokens_survive_a_restart(&kw).await;
    assert!(!kw.data_dir().join("keyward.db").exists());
}

/// A store failure under a running server: the client gets a bare
/// `server_error`, the log one line naming the cause, and `/metrics` counts it.
async fn a_store_failure_is_a_logged_counted_server_error(kw: &Kw, break_store: impl FnOnce()) {
    kw.init();
    let (a, asec) = secret_client(kw, "app", "orders.read", &[]);
    let s = kw.serve();
    let rt = st(&token_issue(kw, &a, &[])["refresh_token"]).to_string();
    break_store();
    let r = refresh(&s, Auth::Basic(&a, &asec), &rt, &[]).await;
    r.assert_oauth_error(500, "server_error");
    assert_eq!(
        r.json(),
        json!({"error": "server_error", "error_description": "the server could not complete the request"})
    );
    let m = get(&s.url("/metrics")).await.text();
    let n = metric(&m, "keyward_server_errors_total", &[("reason", "store")]);
    assert!(n >= 1.0, "{m}");
    let log = s.stderr_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request failed on the server's side"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    for want in ["ERROR", "default", "token", "store", "refresh_tokens"] {
        assert!(lines[0].contains(want), "{want:?} not in {}", lines[0]);
    }
    assert!(!log.contains(&rt) && !log.contains(&asec), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_is_a_logged_counted_server_error_on_sqlite() {
    let kw = Kw::new();
    let db = kw.data_dir().join("keyward.db");
    a_store_failure_is_a_logged_counted_server_error(&kw, || {
        let st = std::process::Command::new("python3")
            .args(["-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('DROP TABLE refresh_tokens'); c.commit()"])
            .arg(&db)
            .status()
            .expect("python3");
        assert!(st.success());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_is_a_logged_counted_server_error_on_postgres() {
    let Some(schema) = PgSchema::new("kw_fault") else {
        return;
    };
    let mut kw = Kw::new();
    kw.env.push(("KEYWARD_DATABASE_URL".into(), schema.url()));
    a_store_failure_is_a_logged_counted_server_error(&kw, || {
        let st = std::process::Command::new("psql")
            .args([
                &schema.url(),
                "-q",
                "-c",
                "DROP TABLE refresh_tokens CASCADE",
            ])
            .env("PGOPTIONS", "--client-min-messages=warning")
            .status()
            .expect("psql");
        assert!(st.success());
    })
    .await;
}

// 11 --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let kw = Kw::new();
    kw.init();
    let (id, secret) = secret_client(&kw, "app", "orders.read", &[]);
    let mut server = kw.serve();
    let r = get(&server.url("/healthz")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = get(&server.url("/readyz")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ready"));

    // A request whose body is still on its way when SIGTERM arrives.
    let addr = server.addr.clone();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let body = b"grant_type=client_credentials&scope=orders.read";
    let (head, tail) = body.split_at(10);
    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        conn,
        "POST /oauth2/token HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(head).unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    server.terminate();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "exited with a request in flight"
    );
    // No new connections are taken meanwhile.
    assert!(get_fails(&server.url("/healthz")).await, "still accepting");
    conn.write_all(tail).unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    let response = String::from_utf8(response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200 OK\r\n"),
        "{response}\n{}",
        server.stderr_text()
    );
    let (_, json_body) = response.split_once("\r\n\r\n").unwrap();
    let t: Value = serde_json::from_str(json_body).unwrap();
    assert_eq!(t["scope"], "orders.read");
    assert!(t["access_token"].as_str().is_some());
    let status = server
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM"));
    assert_eq!(status.code(), Some(0), "{}", server.stderr_text());
    eprintln!("stopped {:?} after SIGTERM", signalled.elapsed());
}
