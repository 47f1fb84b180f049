//! Keys in real devices, through the binary: a SoftHSM2 token (PKCS#11)
//! and moto's KMS server, each made fresh for the test.
//!
//! - an environment whose key store is `pkcs11` (or `aws-kms`) has its keys
//!   made inside the device: the store holds the reference and the public
//!   key only, nothing in the database, the data dir or the logs is private
//!   material, and the token's private key object is sensitive and never
//!   extractable;
//! - its tokens verify (keyward's own verifier, with the published JWKS),
//!   and a rotation under load gives zero failures at a gate;
//! - the device fails (wrong PIN, module missing, KMS throttling or 5xx):
//!   `serve` starts anyway, that environment's token endpoint answers 503
//!   `temporarily_unavailable` with `Retry-After`, `/readyz` names it,
//!   `keyward_signer_errors_total` counts the reason, JWKS is still served
//!   and another environment keeps issuing; once the device is back, it
//!   issues again.
//!
//! Without SoftHSM or moto a test prints SKIPPED; with
//! `KEYWARD_REQUIRE_DEVICES=1` (as `.ci/run` sets) it fails instead.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, get, metric, Kw, Resp, Server};
use serde_json::Value;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711-test-pin";

/// Whether a device the test needs is here; otherwise SKIPPED, or a failure
/// under `KEYWARD_REQUIRE_DEVICES=1`.
fn have(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(
        std::env::var("KEYWARD_REQUIRE_DEVICES").as_deref() != Ok("1"),
        "{what} is not installed, but KEYWARD_REQUIRE_DEVICES=1"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED (no {what}): device test");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh SoftHSM2 configuration and token in a temporary directory.
struct SoftHsm {
    _dir: tempfile::TempDir,
    conf: PathBuf,
    tokens: PathBuf,
    label: String,
}

impl SoftHsm {
    fn new() -> Option<SoftHsm> {
        let present = Path::new(MODULE).exists()
            && Command::new("softhsm2-util")
                .arg("--version")
                .output()
                .is_ok();
        if !have("SoftHSM2 (Debian softhsm2)", present) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        let label = format!(
            "kw-{}",
            keyward_jose::crypto::hex(&keyward_jose::crypto::random_bytes::<4>())
        );
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                &label,
                "--pin",
                PIN,
                "--so-pin",
                "so-4711",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        Some(SoftHsm {
            _dir: dir,
            conf,
            tokens,
            label,
        })
    }

    /// What every keyward command needs to reach the token.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SOFTHSM2_CONF".into(), self.conf.display().to_string()),
            ("KEYWARD_PKCS11_MODULE".into(), MODULE.into()),
            ("KEYWARD_PKCS11_TOKEN_LABEL".into(), self.label.clone()),
            ("KEYWARD_PKCS11_PIN".into(), PIN.into()),
        ]
    }

    /// `pkcs11-tool --list-objects` of the token, logged in.
    fn objects(&self) -> String {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .args([
                "--module",
                MODULE,
                "--token-label",
                &self.label,
                "--login",
                "--pin",
                PIN,
                "--list-objects",
            ])
            .output()
            .expect("pkcs11-tool (Debian opensc) is installed");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// moto's KMS server on a free port, stopped on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn start() -> Option<Moto> {
        let present = Command::new("python3")
            .args(["-c", "import moto.server, moto.kms, cryptography"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !have("moto's server (PyPI moto[server])", present) {
            return None;
        }
        let port = free_port();
        // moto with its Sign mended to AWS's API (see that script).
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../signers/tests/moto_kms.py");
        let child = Command::new("python3")
            .arg(&script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

/// What every keyward command needs to reach KMS at `url`.
fn kms_env(url: &str) -> Vec<(String, String)> {
    vec![
        ("KEYWARD_AWS_KMS".into(), "1".into()),
        ("KEYWARD_AWS_KMS_ENDPOINT_URL".into(), url.into()),
        ("KEYWARD_AWS_KMS_REGION".into(), "us-east-1".into()),
        ("KEYWARD_AWS_KMS_CALL_TIMEOUT".into(), "2s".into()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("AWS_CONFIG_FILE".into(), "/nonexistent".into()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into()),
    ]
}

/// A TCP proxy in front of KMS that can be told to answer every request
/// with a throttling error or a 500 instead of passing it on.
struct FaultProxy {
    url: String,
    mode: Arc<AtomicU8>,
}

const PASS: u8 = 0;
const THROTTLE: u8 = 1;
const SERVER_ERROR: u8 = 2;

impl FaultProxy {
    fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = upstream.trim_start_matches("http://").to_string();
        let mode = Arc::new(AtomicU8::new(PASS));
        let m = mode.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { return };
                let up = up.clone();
                let m = m.clone();
                std::thread::spawn(move || proxy_one(client, &up, &m));
            }
        });
        FaultProxy { url, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// Serves one client connection: request by request, either relayed to
/// `up` or answered with the fault the mode names.
fn proxy_one(mut client: TcpStream, up: &str, mode: &AtomicU8) {
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    loop {
        let Some(request) = read_http(&mut client) else {
            return;
        };
        let answer = match mode.load(Ordering::SeqCst) {
            THROTTLE => canned(
                400,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            ),
            SERVER_ERROR => canned(
                500,
                r#"{"__type":"KMSInternalException","message":"internal"}"#,
            ),
            _ => {
                let Ok(mut server) = TcpStream::connect(up) else {
                    return;
                };
                server
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                if server.write_all(&request).is_err() {
                    return;
                }
                match read_http(&mut server) {
                    Some(r) => r,
                    None => return,
                }
            }
        };
        if client.write_all(&answer).is_err() {
            return;
        }
    }
}

fn canned(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One HTTP/1.1 message with a content-length body (all KMS uses), or
/// `None` at the end of the stream.
fn read_http(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    buf.extend(body);
    Some(buf)
}

/// A data dir with a local `default` environment (ES256) and an
/// environment `dev` whose keys live in `store`, each with a
/// client_credentials client; served on a fixed port so the issuer URLs
/// are right.
struct Setup {
    kw: Kw,
    port: u16,
    clients: Vec<(String, String, String)>,
}

fn setup(store: &str, alg: &str, device_env: Vec<(String, String)>) -> Setup {
    let port = free_port();
    let mut kw = Kw::new();
    kw.env = device_env;
    kw.run(&[
        "init",
        "--issuer",
        &format!("http://127.0.0.1:{port}"),
        "--alg",
        "ES256",
    ])
    .ok();
    kw.run(&[
        "env",
        "create",
        "dev",
        "--issuer",
        &format!("http://127.0.0.1:{port}/dev"),
        "--key-store",
        store,
        "--alg",
        alg,
    ])
    .ok();
    let mut s = Setup {
        kw,
        port,
        clients: Vec::new(),
    };
    s.add_client("default");
    s.add_client("dev");
    s
}

impl Setup {
    /// A client_credentials client of `env`, kept for [`Setup::token`].
    fn add_client(&mut self, env: &str) {
        let c = self
            .kw
            .run(&[
                "clients",
                "create",
                "--env",
                env,
                "--name",
                "t",
                "--scopes",
                "a",
                "--audience",
                "api://t",
                "--json",
            ])
            .ok()
            .json();
        self.clients.push((
            env.to_string(),
            c["client_id"].as_str().unwrap().to_string(),
            c["client_secret"].as_str().unwrap().to_string(),
        ));
    }

    /// Environment `name` (served at the issuer's `/name`) in `store`.
    fn add_env(&mut self, name: &str, store: &str, key: &[&str]) {
        let issuer = format!("http://127.0.0.1:{}/{name}", self.port);
        let mut args = vec![
            "env",
            "create",
            name,
            "--issuer",
            &issuer,
            "--key-store",
            store,
        ];
        args.extend_from_slice(key);
        self.kw.run(&args).ok();
        self.add_client(name);
    }

    fn serve(&self, extra: &[(&str, &str)]) -> Server {
        self.kw.start_server(
            &["serve", "--listen", &format!("127.0.0.1:{}", self.port)],
            extra,
        )
    }

    fn issuer(&self, env: &str) -> String {
        match env {
            "default" => format!("http://127.0.0.1:{}", self.port),
            e => format!("http://127.0.0.1:{}/{e}", self.port),
        }
    }

    async fn token(&self, env: &str) -> Resp {
        let (_, id, secret) = self.clients.iter().find(|c| c.0 == env).unwrap();
        common::send(
            common::http()
                .post(format!("{}/oauth2/token", self.issuer(env)))
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "client_credentials")]),
        )
        .await
    }

    /// `keys list --json` of `env`.
    fn keys(&self, env: &str) -> Vec<Value> {
        self.kw
            .run(&["keys", "list", "--env", env, "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Verifies `token` with the CLI against the environment's published JWKS.
    fn verify(&self, env: &str, token: &str) {
        let iss = self.issuer(env);
        self.kw
            .run(&[
                "token",
                "verify",
                "--jwks",
                &format!("{iss}/.well-known/jwks.json"),
                "--allow-http",
                "--iss",
                &iss,
                "--aud",
                "api://t",
                token,
            ])
            .ok();
    }
}

/// Every file under `dir`, read whole.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Checks the data dir, the database and the logs for private material: no
/// PEM/PKCS#8 private key, no device key with a sealed blob, no PIN.
fn assert_no_private_material(s: &Setup, logs: &str, device_kids: &[String]) {
    for (path, bytes) in all_files(&s.kw.data_dir()) {
        assert!(
            !contains(&bytes, b"PRIVATE KEY"),
            "{} holds a PEM private key",
            path.display()
        );
        assert!(
            !contains(&bytes, PIN.as_bytes()),
            "{} holds the PIN",
            path.display()
        );
    }
    assert!(!logs.contains(PIN), "the logs show the PIN");
    assert!(!logs.contains("PRIVATE KEY"));
    // The database's sealed column is empty for device keys.
    let db = s.kw.data_dir().join("keyward.db");
    for kid in device_kids {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; r=sqlite3.connect(sys.argv[1]).execute('select length(sealed), key_store, hw_ref from keys where kid=?',(sys.argv[2],)).fetchone(); print(r[0], r[1], r[2] is not None)",
                db.to_str().unwrap(),
                kid,
            ])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        let mut f = line.split_whitespace();
        assert_eq!(
            f.next(),
            Some("0"),
            "key {kid}: a sealed blob is stored: {line}"
        );
        assert_ne!(f.next(), Some("local"), "{line}");
        assert_eq!(f.next(), Some("True"), "{line}");
    }
}

/// A gateway in front of a trivial upstream, trusting `issuer`.
async fn gate(kw: &Kw, issuer: &str) -> common::Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    kw.start_gateway(&format!(
        r#"listen = "127.0.0.1:0"
token_cache = 0

[[issuer]]
issuer = "{issuer}"
audiences = ["api://t"]
cache = {{ min_ttl = "1s" }}

[[route]]
path = "/x"
upstream = "{up}"
"#
    ))
}

async fn through(gw: &common::Gateway, token: &str) -> u16 {
    common::http()
        .get(format!("http://{}/x", gw.addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn kid_of(token: &str) -> String {
    keyward_jose::dangerous::decode_unverified(token).unwrap().0["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Rotates `dev` while tokens flow through a gateway trusting it: zero
/// refusals, and the issuer switched to the new key (made in `store`).
async fn rotate_under_load(s: &Setup, store: &str) {
    let gw = gate(&s.kw, &s.issuer("dev")).await;
    s.kw.run(&["keys", "rotate", "--env", "dev"]).ok();
    let deadline = Instant::now() + Duration::from_secs(25);
    let (mut requests, mut refused) = (0, 0);
    let mut kids = std::collections::BTreeSet::new();
    while Instant::now() < deadline {
        let r = s.token("dev").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let t = r.json()["access_token"].as_str().unwrap().to_string();
        kids.insert(kid_of(&t));
        for _ in 0..5 {
            requests += 1;
            if through(&gw, &t).await != 200 {
                refused += 1;
            }
        }
        if kids.len() == 2 && requests > 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{store} rotation: {requests} requests, {refused} refused, kids {kids:?}");
    assert_eq!(
        kids.len(),
        2,
        "the issuer switched to the new token key: {kids:?}"
    );
    assert_eq!(
        refused, 0,
        "{refused} of {requests} valid requests were refused"
    );
    let keys = s.keys("dev");
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k["key_store"] == store), "{keys:?}");
}

/// The environment `env` answers 503 `temporarily_unavailable` with a
/// `Retry-After`, while `default` issues, JWKS is served and `/readyz`
/// names the environment.
async fn only_env_unavailable(s: &Setup, server: &Server, env: &str) {
    let r = s.token(env).await;
    r.assert_oauth_error(503, "temporarily_unavailable");
    let retry = r.header("retry-after").expect("a Retry-After header");
    assert!(retry.parse::<u64>().is_ok_and(|n| n >= 1), "{retry}");
    assert_eq!(
        s.token("default").await.status,
        200,
        "another environment keeps issuing"
    );
    let jwks = get(&format!("{}/.well-known/jwks.json", s.issuer(env))).await;
    assert_eq!(jwks.status, 200, "JWKS is still served");
    assert!(!jwks.json()["keys"].as_array().unwrap().is_empty());
    let ready = get(&server.url("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains(env), "{}", ready.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_keys_are_made_in_the_token_sign_rotate_and_never_leave_it() {
    let Some(hsm) = SoftHsm::new() else { return };
    let mut s = setup("pkcs11", "ES256", hsm.env());
    s.kw.run(&["env", "update", "dev", "--lead", "6s"]).ok();
    // RSA too, in its own environment.
    s.add_env("rsa", "pkcs11", &["--alg", "RS256", "--bits", "2048"]);
    let keys = s.keys("dev");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["key_store"], "pkcs11", "{keys:?}");
    assert!(
        keys[0]["reference"].as_str().is_some_and(|r| !r.is_empty()),
        "{keys:?}"
    );
    let first = keys[0]["kid"].as_str().unwrap().to_string();
    // The private key object is in the token: sensitive, never extractable.
    let objects = hsm.objects();
    assert!(objects.contains("Private Key Object"), "{objects}");
    assert!(objects.contains(&first), "{objects}");
    assert!(objects.contains("never extractable"), "{objects}");
    assert!(objects.contains("sensitive"), "{objects}");
    // Importing a key into a device store is refused, nothing changes.
    let before = s.kw.snapshot();
    let pem = common::openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
    ]);
    let f = common::write(s.kw.dir.path(), "k.pem", &pem);
    let r = s.kw.run(&[
        "keys",
        "import",
        "--env",
        "dev",
        "--pem",
        f.to_str().unwrap(),
        "--alg",
        "ES256",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("pkcs11"), "{}", r.stderr);
    assert_eq!(s.kw.snapshot(), before);

    let mut server = s.serve(&[]);
    for env in ["dev", "rsa"] {
        let t = s.token(env).await.ok_json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        s.verify(env, &t);
    }

    rotate_under_load(&s, "pkcs11").await;
    let keys = s.keys("dev");
    assert!(keys.iter().all(|k| k["key_store"] == "pkcs11"), "{keys:?}");

    // Revoking the old key destroys its object in the token.
    s.kw.run(&["keys", "revoke", &first]).ok();
    let objects = hsm.objects();
    assert!(
        !objects.contains(&first),
        "the revoked key's objects are gone: {objects}"
    );

    let device_kids: Vec<String> = ["dev", "rsa"]
        .iter()
        .flat_map(|e| s.keys(e))
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    let logs = server.stderr_text();
    server.stop();
    assert_no_private_material(&s, &logs, &device_kids);
    let _ = hsm.tokens;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_failures_stop_only_that_environment() {
    let Some(hsm) = SoftHsm::new() else { return };
    let s = setup("pkcs11", "ES256", hsm.env());
    for (what, env, reason) in [
        ("a wrong PIN", ("KEYWARD_PKCS11_PIN", "0000"), "pin"),
        (
            "a missing module",
            ("KEYWARD_PKCS11_MODULE", "/nonexistent/libpkcs11.so"),
            "module",
        ),
        (
            "an unknown token",
            ("KEYWARD_PKCS11_TOKEN_LABEL", "no-such-token"),
            "token",
        ),
    ] {
        // `serve` starts anyway, and reports.
        let mut server = s.serve(&[env]);
        only_env_unavailable(&s, &server, "dev").await;
        let m = get(&server.url("/metrics")).await.text();
        assert!(
            metric(
                &m,
                "keyward_signer_errors_total",
                &[("store", "pkcs11"), ("reason", reason)]
            ) >= 1.0,
            "{what}: reason {reason} counted\n{m}"
        );
        let logs = server.stderr_text();
        assert!(!logs.contains(PIN), "{what}: the logs show the PIN");
        server.stop();
    }
    // With the right settings it issues.
    let _server = s.serve(&[]);
    assert_eq!(s.token("dev").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_keys_sign_verify_and_survive_throttling_and_outages() {
    let Some(moto) = Moto::start() else { return };
    let proxy = FaultProxy::start(&moto.url);
    let mut s = setup("aws-kms", "ES256", kms_env(&proxy.url));
    s.kw.run(&["env", "update", "dev", "--lead", "6s"]).ok();
    s.add_env("rsa", "aws-kms", &["--alg", "RS256", "--bits", "2048"]);
    let keys = s.keys("dev");
    assert_eq!(keys[0]["key_store"], "aws-kms", "{keys:?}");
    assert!(
        keys[0]["reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("arn:aws:kms:")),
        "{keys:?}"
    );
    let mut server = s.serve(&[]);
    for env in ["dev", "rsa"] {
        let t = s.token(env).await.ok_json()["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        s.verify(env, &t);
    }
    rotate_under_load(&s, "aws-kms").await;
    for (mode, reason) in [(THROTTLE, "throttled"), (SERVER_ERROR, "server")] {
        proxy.set(mode);
        eventually(Duration::from_secs(10), "dev fails", || async {
            s.token("dev").await.status == 503
        })
        .await;
        only_env_unavailable(&s, &server, "dev").await;
        let m = get(&server.url("/metrics")).await.text();
        assert!(
            metric(
                &m,
                "keyward_signer_errors_total",
                &[("store", "aws-kms"), ("reason", reason)]
            ) >= 1.0,
            "reason {reason} counted\n{m}"
        );
        proxy.set(PASS);
        // Back within the backoff's reach (at most 10 s between tries).
        eventually(Duration::from_secs(20), "dev issues again", || async {
            s.token("dev").await.status == 200
        })
        .await;
    }
    let device_kids: Vec<String> = ["dev", "rsa"]
        .iter()
        .flat_map(|e| s.keys(e))
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    let logs = server.stderr_text();
    server.stop();
    assert_no_private_material(&s, &logs, &device_kids);
    // KMS down altogether: serve starts, dev is unavailable, default issues.
    drop(moto);
    let server = s.serve(&[]);
    only_env_unavailable(&s, &server, "dev").await;
}

/// The root key in a device: `init --root-key pkcs11:<label>` writes no key
/// file, the AES key is a token object, sealed keys open through it and the
/// server issues; a wrong PIN is one clear error that changes nothing;
/// `root-key rotate --to aws-kms:alias/...` moves every sealed key to a KMS
/// key, `--to file` back to a key file, and tokens keep issuing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_key_in_the_token_then_in_kms_then_in_a_file() {
    let Some(hsm) = SoftHsm::new() else { return };
    let Some(moto) = Moto::start() else { return };
    let port = free_port();
    let mut kw = Kw::new();
    kw.env = hsm.env();
    kw.env.extend(kms_env(&moto.url));
    let issuer = format!("http://127.0.0.1:{port}");
    kw.run(&[
        "init",
        "--issuer",
        &issuer,
        "--alg",
        "ES256",
        "--root-key",
        "pkcs11:keyward-root",
    ])
    .ok();
    assert!(
        !kw.data_dir().join("root.key").exists(),
        "no root key file for a root key in the token"
    );
    let objects = hsm.objects();
    assert!(objects.contains("Secret Key Object"), "{objects}");
    assert!(objects.contains("keyward-root"), "{objects}");
    assert!(objects.contains("never extractable"), "{objects}");
    // A second local key, sealed through the token.
    kw.run(&["keys", "generate", "--env", "default", "--alg", "ES256"])
        .ok();

    // A wrong PIN: one clear error, nothing changed.
    let before = kw.snapshot();
    let r = kw.run_with(
        &["keys", "generate", "--env", "default", "--alg", "ES256"],
        &[("KEYWARD_PKCS11_PIN", "0000")],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("pkcs11"), "{}", r.stderr);
    assert!(
        !r.stderr.contains(PIN) && !r.stderr.contains("0000"),
        "{}",
        r.stderr
    );
    assert_eq!(kw.snapshot(), before);

    let mut s = Setup {
        kw,
        port,
        clients: Vec::new(),
    };
    s.add_client("default");
    let check_issues = |s: &Setup| {
        let mut server = s.serve(&[]);
        let rt = tokio::runtime::Handle::current();
        let t = tokio::task::block_in_place(|| rt.block_on(s.token("default")));
        let t = t.ok_json()["access_token"].as_str().unwrap().to_string();
        s.verify("default", &t);
        server.stop();
    };
    check_issues(&s);

    // A rotation to KMS killed (kill -9) after every key was re-wrapped and
    // before its commit changes nothing: the token's key still opens them.
    let before = s.kw.snapshot();
    let mut child =
        s.kw.cmd()
            .args(["root-key", "rotate", "--to", "aws-kms:alias/keyward-root"])
            .env("KEYWARD_TEST_PAUSE_BEFORE_COMMIT_MS", "60000")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(
            n > 0 && Instant::now() < deadline,
            "the rotation never reached its commit"
        );
        if line.contains("pausing") {
            assert!(line.contains("re-wrapped 2 keys"), "{line}");
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(s.kw.snapshot(), before);
    s.kw.run(&["audit", "verify"]).ok();
    check_issues(&s);

    // To KMS: every sealed key re-wrapped, audited, still opening.
    let r =
        s.kw.run(&[
            "root-key",
            "rotate",
            "--to",
            "aws-kms:alias/keyward-root",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(r["rewrapped"], 2, "{r}");
    assert_eq!(r["root_key_store"], "aws-kms", "{r}");
    check_issues(&s);
    let audit =
        s.kw.run(&["audit", "list", "--json", "--limit", "1000"])
            .ok()
            .json();
    let rotation = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|a| a["action"] == "root_key.rotate")
        .unwrap()
        .clone();
    assert_eq!(rotation["detail"]["from_store"], "pkcs11", "{rotation}");
    assert_eq!(rotation["detail"]["to_store"], "aws-kms", "{rotation}");
    s.kw.run(&["audit", "verify"]).ok();

    // Back to a key file.
    s.kw.run(&["root-key", "rotate", "--to", "file"]).ok();
    assert!(s.kw.data_dir().join("root.key").exists());
    check_issues(&s);
}
