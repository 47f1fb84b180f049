//! `keyward gateway`: `--check` exit codes and output, and a real start,
//! request and graceful stop of the built binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyward_jose::{Algorithm, LocalSigner, PrivateKey, TokenSigner};

fn keyward() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env_remove("KEYWARD_LOG").env_remove("KEYWARD_DATA_DIR");
    c
}

/// A directory with `jwks.json` and `gateway.toml` holding `body`.
fn config_dir(body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let signer = LocalSigner::new(
        PrivateKey::generate(Algorithm::ES256, None).unwrap(),
        Some("k1".into()),
    );
    let jwks = serde_json::json!({"keys": [signer.public_jwk().to_value()]});
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    std::fs::write(dir.path().join("gateway.toml"), body).unwrap();
    dir
}

fn cfg(dir: &tempfile::TempDir) -> String {
    dir.path().join("gateway.toml").display().to_string()
}

/// `keyward gateway --check` on a config with this body (and its JWKS file).
fn check(body: &str) -> (tempfile::TempDir, std::process::Output) {
    let dir = config_dir(body);
    let out = keyward()
        .args(["gateway", "--check", "--config", &cfg(&dir)])
        .output()
        .unwrap();
    (dir, out)
}

const VALID: &str = r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[issuer]]
issuer = "https://issuer.test"
audiences = ["api://default"]
jwks_file = "jwks.json"

[[route]]
path = "/orders/{id}"
methods = ["GET"]
upstream = "http://127.0.0.1:9"
permissions = { all_of = ["orders.{id}.read"] }
rate_limit = { per_subject = "100/s", burst = 20 }

[[route]]
path = "/public/*"
upstream = "http://127.0.0.1:9"
anonymous = true
"#;

#[test]
fn check_prints_the_resolved_config_and_exits_0() {
    let (_dir, out) = check(VALID);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "is valid",
        "GET",
        "/orders/{id}",
        "permissions all of [orders.{id}.read]",
        "100/s per subject (burst 20)",
        "/public/*",
        "anonymous",
        "https://issuer.test",
        "jwks_file",
    ] {
        assert!(
            stdout.contains(needle),
            "{needle:?} missing from:\n{stdout}"
        );
    }
}

#[test]
fn check_reports_every_problem_with_place_and_fix_and_exits_1() {
    let bad = VALID
        .replace("\"/orders/{id}\"", "\"/orders/{id\"")
        .replace("anonymous = true", "anonymous = true\nfoo = 1");
    let (dir, out) = check(&bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    // The unknown field stops TOML reading: it is reported alone.
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{}:20:1: unknown field `foo`", cfg(&dir))),
        "{stderr}"
    );
    assert!(lines[1].starts_with("fix: "), "{stderr}");

    // Semantic problems are all reported at once.
    let bad = VALID
        .replace("\"/orders/{id}\"", "\"/orders/{id\"")
        .replace(
            "audiences = [\"api://default\"]",
            "audiences = [\"api://default\"]\nalgorithms = [\"none\"]",
        );
    let (dir, out) = check(&bad);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{}:7:15: algorithms:", cfg(&dir))),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("fix: use asymmetric algorithms"),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with(&format!("{}:11:17: bad route path", cfg(&dir))),
        "{stderr}"
    );
    assert!(lines[3].starts_with("fix: "), "{stderr}");
}

#[test]
fn a_missing_file_exits_1() {
    let out = keyward()
        .args([
            "gateway",
            "--check",
            "--config",
            "/nonexistent/gateway.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("/nonexistent/gateway.toml:1:1: cannot read"),
        "{stderr}"
    );
    assert!(stderr.contains("\nfix: "), "{stderr}");
}

/// The first line (within 20 s) that starts with `prefix`, or, when
/// `anywhere`, contains it.
fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, prefix: &str) -> String {
    wait_for(rx, prefix, false)
}

fn wait_for(rx: &std::sync::mpsc::Receiver<String>, text: &str, anywhere: bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(text) || (anywhere && line.contains(text)) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no line with {text:?}: {e}"),
        }
    }
}

#[tokio::test]
async fn serves_and_stops_gracefully_on_sigterm() {
    let dir = config_dir(&format!("log_format = \"json\"\n{VALID}"));
    let mut child = keyward()
        .args(["gateway", "--config", &cfg(&dir)])
        .env("KEYWARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = wait_for_line(&rx, "gateway listening on http://");
    let base = line
        .trim_start_matches("gateway listening on ")
        .trim()
        .to_string();
    let admin = wait_for_line(&rx, "gateway admin on http://");
    let admin = admin
        .trim_start_matches("gateway admin on ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let client = reqwest::Client::new();
    let r = client.get(format!("{base}/orders/1")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer realm=\"keyward\""
    );
    let r = client.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Port 9 (discard) is closed on the test machine: the upstream is down.
    let r = client.get(format!("{base}/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let r = client.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{base}/orders/1?secret=q"))
        .header("authorization", "Bearer sentinel.tokenvalue.sig")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // One JSON decision line per request; never the token or the query.
    let mut decisions = Vec::new();
    while decisions.len() < 4 {
        let line = wait_for(&rx, "keyward::decision", true);
        assert!(!line.contains("sentinel"), "{line}");
        assert!(!line.contains("secret=q"), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        decisions.push(v);
    }
    let fields = |i: usize| decisions[i]["fields"].clone();
    assert_eq!(fields(0)["route"], "/orders/{id}");
    assert_eq!(fields(0)["outcome"], "deny");
    assert_eq!(fields(0)["reason"], "missing_token");
    assert_eq!(fields(0)["status"], 401);
    assert_eq!(fields(1)["reason"], "no_route");
    assert_eq!(fields(2)["outcome"], "allow");
    assert_eq!(fields(2)["status"], 502);
    assert_eq!(fields(3)["path"], "/orders/1");
    assert_eq!(fields(3)["reason"], "malformed_token");
    assert!(fields(3)["latency_us"].is_u64());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert_eq!(s.code(), Some(0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(Path::new(&cfg(&dir)).exists());
}
