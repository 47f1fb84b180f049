//! `keyward gateway api-key create|list|revoke` and a gateway serving the
//! keys, driven through the built binary: the key is printed once, only its
//! hash reaches the file, the decision log names the key id and never the
//! key; `keyward gateway --check` refuses an issuer whose discovered
//! `jwks_uri` is on an untrusted host.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn keyward() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env_remove("KEYWARD_LOG").env_remove("KEYWARD_DATA_DIR");
    c
}

fn run(args: &[&str]) -> Output {
    keyward().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An upstream that answers `hello <X-Auth-Subject>` and the API-key
/// header it got, if any.
async fn upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|h: axum::http::HeaderMap| async move {
        let v = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        format!("hello {} key={}", v("x-auth-subject"), v("x-api-key"))
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A started `keyward gateway`, its address and every stderr line so far.
struct Gw {
    child: Child,
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &Path) -> Gw {
    let mut child = keyward()
        .args(["gateway", "--config", config.to_str().unwrap()])
        .env("KEYWARD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Some(a) = lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.split("gateway listening on http://").nth(1))
        {
            break a.trim().to_string();
        }
        assert!(Instant::now() < deadline, "{:?}", lines.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    };
    Gw { child, addr, lines }
}

async fn call(gw: &Gw, key: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{}/r/1", gw.addr))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn api_keys_are_shown_once_stored_hashed_and_never_logged() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    // No [[issuer]]: routes that take API keys need none.
    let original = format!(
        "# keys for the batch jobs\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nname = \"r\"\npath = \"/r/*\"   # reports\nupstream = \"{up}\"\napi_keys = true\n"
    );
    std::fs::write(&config, &original).unwrap();
    let cfg = config.to_str().unwrap();

    // Bad input changes nothing.
    for bad in [
        &["--expires", "soon"][..],
        &["--expires", "never", "--rate-limit", "fast"],
        &["--expires", "never", "--routes", "nope"],
    ] {
        let mut args = vec![
            "gateway",
            "api-key",
            "create",
            "--config",
            cfg,
            "--subject",
            "batch",
        ];
        args.extend_from_slice(bad);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{bad:?}: {}", text(&o.stderr));
        assert!(o.stdout.is_empty(), "no key is shown for a key not stored");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
    }

    let o = run(&[
        "gateway",
        "api-key",
        "create",
        "--config",
        cfg,
        "--subject",
        "batch",
        "--permissions",
        "reports.read, reports.list",
        "--expires",
        "30d",
        "--rate-limit",
        "100/s",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let key = text(&o.stdout).trim().to_string();
    assert!(key.starts_with("kwk_") && key.len() == 60, "{key}");
    let id = &key[4..16];
    let stored = std::fs::read_to_string(&config).unwrap();
    assert!(
        stored.starts_with(&original),
        "the rest of the file is kept:\n{stored}"
    );
    assert!(
        !stored.contains(&key) && !stored.contains(&key[17..]),
        "{stored}"
    );
    assert!(stored.contains(&format!("id = \"{id}\"")) && stored.contains("hash = \"sha256:"));

    let o = run(&["gateway", "api-key", "list", "--config", cfg, "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["state"], "active");
    assert_eq!(
        list[0]["permissions"],
        serde_json::json!(["reports.read", "reports.list"])
    );
    assert!(!text(&o.stdout).contains("sha256:"));
    let o = run(&["gateway", "api-key", "list", "--config", cfg]);
    assert!(text(&o.stdout).contains(id) && !text(&o.stdout).contains(&key[17..]));

    let gw = start(&config);
    let (status, body) = call(&gw, &key).await;
    assert_eq!((status, body.as_str()), (200, "hello batch key=-"));
    let wrong = format!("{}{}", &key[..17], "A".repeat(43));
    assert_eq!(call(&gw, &wrong).await.0, 401);

    let o = run(&["gateway", "api-key", "revoke", "--config", cfg, id]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(&["gateway", "api-key", "revoke", "--config", cfg, id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("already revoked"));
    let o = run(&["gateway", "api-key", "list", "--config", cfg, "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["state"], "revoked");

    // Restarted with the file, the gateway refuses the revoked key.
    let logs_before: Vec<String> = gw.lines.lock().unwrap().clone();
    drop(gw);
    let gw = start(&config);
    assert_eq!(call(&gw, &key).await.0, 401);
    std::thread::sleep(Duration::from_millis(200));
    let mut logs = logs_before;
    logs.extend(gw.lines.lock().unwrap().iter().cloned());
    let decisions: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("keyward::decision"))
        .collect();
    assert_eq!(decisions.len(), 3, "{logs:#?}");
    for (line, reason) in
        decisions
            .iter()
            .zip(["reason=\"ok\"", "api_key_mismatch", "api_key_revoked"])
    {
        assert!(
            line.contains(&format!("api_key=\"{id}\"")) || line.contains(&format!("api_key={id}")),
            "{line}"
        );
        assert!(line.contains(reason), "{reason}: {line}");
    }
    assert!(
        decisions[0].contains("subject=\"batch\"") || decisions[0].contains("subject=batch"),
        "{}",
        decisions[0]
    );
    for l in &logs {
        assert!(
            !l.contains(&key[17..]) && !l.contains(&wrong[17..]),
            "a key was logged: {l}"
        );
    }
}

#[tokio::test]
async fn check_refuses_an_issuer_whose_keys_are_on_an_untrusted_host() {
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_port = elsewhere.local_addr().unwrap().port();
    drop(elsewhere);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let doc = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("http://127.0.0.1:{other_port}/jwks.json"),
    })
    .to_string();
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { ([("content-type", "application/json")], doc) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let write = |hosts: &str| {
        std::fs::write(
            &config,
            format!("[[issuer]]\nissuer = \"{issuer}\"\naudiences = [\"a\"]\n{hosts}\n[[route]]\npath = \"/*\"\nupstream = \"http://127.0.0.1:9\"\n"),
        )
        .unwrap();
    };
    write("");
    let cfg = config.to_str().unwrap().to_string();
    let o = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || run(&["gateway", "--config", &cfg, "--check"])
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(
        err.contains("is not loaded") && err.contains("jwks_hosts") && err.contains(&issuer),
        "{err}"
    );
    // The gateway itself refuses to start.
    let o = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || run(&["gateway", "--config", &cfg])
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("is not loaded"),
        "{}",
        text(&o.stderr)
    );

    write(&format!("jwks_hosts = [\"127.0.0.1:{other_port}\"]\n"));
    let o = tokio::task::spawn_blocking(move || run(&["gateway", "--config", &cfg, "--check"]))
        .await
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("(trusted host)"),
        "{}",
        text(&o.stdout)
    );
}
