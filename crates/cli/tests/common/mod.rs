//! Drives the real `keyward` binary against a temporary data directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub struct Kw {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    /// Exit 1 with a one-line error containing `needle`.
    pub fn fails_with(&self, needle: &str) -> &Self {
        assert_eq!(
            self.code, 1,
            "expected exit 1\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected a one-line error, got: {:?}",
            self.stderr
        );
        assert!(
            self.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "error {:?} does not mention {needle:?}",
            self.stderr
        );
        self
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl Kw {
    pub fn new() -> Self {
        Kw {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
        c.env_remove("KEYWARD_ROOT_KEY")
            .env_remove("KEYWARD_ROOT_KEY_FILE")
            .env_remove("KEYWARD_DATABASE_URL")
            .env_remove("KEYWARD_NOW")
            .env("KEYWARD_DATA_DIR", self.data_dir());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let mut c = self.cmd();
        c.args(args);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        output(c.output().expect("run keyward"))
    }

    /// `init` with a fast ES256 key.
    pub fn init(&self) -> &Self {
        self.run(&[
            "init",
            "--issuer",
            "http://127.0.0.1:8080",
            "--alg",
            "ES256",
        ])
        .ok();
        self
    }

    /// Every observable piece of the store: environments, keys, audit chain,
    /// root key file. Compared before and after a refused command.
    pub fn snapshot(&self) -> String {
        let envs = self.run(&["env", "list", "--json"]).ok().stdout.clone();
        let mut s = envs.clone();
        for e in serde_json::from_str::<Value>(&envs)
            .unwrap()
            .as_array()
            .unwrap()
        {
            let name = e["name"].as_str().unwrap();
            s.push_str(
                &self
                    .run(&["keys", "list", "--env", name, "--json"])
                    .ok()
                    .stdout,
            );
        }
        s.push_str(
            &self
                .run(&["audit", "list", "--json", "--limit", "10000"])
                .ok()
                .stdout,
        );
        if let Ok(k) = std::fs::read_to_string(self.data_dir().join("root.key")) {
            s.push_str(&k);
        }
        s
    }
}

pub fn output(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// Runs openssl to make a test key (generated at test time, never committed).
pub fn openssl(args: &[&str]) -> String {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

// ---------------------------------------------------------------------------
// A running `keyward serve` / `keyward up`, and HTTP helpers for talking to it.

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to print its banner (`up` generates an RSA key).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A `keyward` server process on 127.0.0.1, stopped (SIGTERM, then wait) on drop.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`, as the banner printed it.
    pub addr: String,
    /// The stdout lines up to and including the banner.
    pub banner: Vec<String>,
    stderr: PathBuf,
}

impl Kw {
    /// `keyward serve --listen 127.0.0.1:0`.
    pub fn serve(&self) -> Server {
        self.start_server(&["serve", "--listen", "127.0.0.1:0"], &[])
    }

    /// Starts `keyward ARGS` (serve or up) with a 1 s reload interval and
    /// waits for its banner: "keyward is serving on ADDR", or the `up`
    /// banner ending with its curl line.
    pub fn start_server(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Server {
        let stderr = self.dir.path().join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut c = self.cmd();
        c.args(args)
            .env("KEYWARD_RELOAD_INTERVAL", "1s")
            .env_remove("KEYWARD_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start keyward");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Keeps draining stdout for the life of the process.
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut banner = Vec::new();
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
            banner: Vec::new(),
            stderr,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(e) => panic!(
                    "keyward {args:?} printed no banner ({e:?})\nstdout: {banner:#?}\nstderr: {}",
                    server.stderr_text()
                ),
            };
            banner.push(line.clone());
            if let Some(a) = line.strip_prefix("keyward is serving on ") {
                server.addr = a.trim().to_string();
                break;
            }
            if let Some(a) = line.strip_prefix("keyward is serving http://") {
                server.addr = a.trim().to_string();
            }
            // `up` with an issuer URL other than its listen address.
            if let Some(a) = line.trim().strip_prefix("listening on:") {
                // A wildcard address is reached on loopback.
                server.addr = a.trim().replace("0.0.0.0:", "127.0.0.1:");
            }
            if line.trim_start().starts_with("curl ") {
                break;
            }
        }
        assert!(
            server.addr.starts_with("127.0.0.1:") && !server.addr.ends_with(":0"),
            "bad address in banner {banner:#?}"
        );
        server.banner = banner;
        server
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the server logged so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill is installed");
        assert!(st.success(), "kill -TERM failed");
    }

    /// Waits up to `limit` for the process to exit; `None` if it did not.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (`kill -9`: no shutdown, in-flight requests die with the
    /// process) and reap it.
    pub fn kill_hard(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// SIGTERM, and the exit status (within 10 s, or the test fails).
    pub fn stop(&mut self) -> ExitStatus {
        self.terminate();
        match self.wait_exit(Duration::from_secs(10)) {
            Some(st) => st,
            None => panic!(
                "keyward did not stop within 10 s of SIGTERM\nstderr: {}",
                self.stderr_text()
            ),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop_child(child);
        }
    }
}

/// Stops a child process the way an operator would (SIGTERM) and reaps it;
/// SIGKILL if it is still running 10 s later. For test processes' `Drop`.
pub fn stop_child(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }
    /// Status 200 with a JSON body.
    pub fn ok_json(&self) -> Value {
        assert_eq!(self.status, 200, "expected 200, got {}", self.text());
        self.json()
    }
    /// An RFC 6749 §5.2 error: the status, `error` code, a JSON body with a
    /// description, and no caching.
    pub fn assert_oauth_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!(
            (self.status, self.json()["error"].as_str()),
            (status, Some(code)),
            "body: {}",
            self.text()
        );
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(self.header("cache-control").as_deref(), Some("no-store"));
        assert_eq!(self.header("pragma").as_deref(), Some("no-cache"));
        let d = self.json()["error_description"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(!d.is_empty(), "no error_description: {}", self.text());
        if status == 401 {
            assert!(
                self.header("www-authenticate").is_some(),
                "a 401 needs WWW-Authenticate"
            );
        }
        self
    }
}

/// An HTTP client for tests: bounded in time, no proxies.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .no_proxy()
        .build()
        .unwrap()
}

pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let r = rb.send().await.expect("HTTP request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.expect("HTTP body").to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// Client authentication for a form POST.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    None,
    /// `Authorization: Basic` (RFC 6749 §2.3.1: id and secret form-encoded).
    Basic(&'a str, &'a str),
    /// `client_id` and `client_secret` in the body.
    Post(&'a str, &'a str),
}

/// POSTs a form to `url` with `auth`.
pub async fn post_form(url: &str, auth: Auth<'_>, fields: &[(&str, &str)]) -> Resp {
    let mut fields: Vec<(&str, &str)> = fields.to_vec();
    let mut rb = http().post(url);
    match auth {
        Auth::None => {}
        Auth::Basic(id, secret) => rb = rb.basic_auth(id, Some(secret)),
        Auth::Post(id, secret) => {
            fields.push(("client_id", id));
            fields.push(("client_secret", secret));
        }
    }
    send(rb.form(&fields)).await
}

pub async fn get(url: &str) -> Resp {
    send(http().get(url)).await
}

/// Polls `check` every 100 ms until it returns true, for at most `limit`;
/// returns how long it took, or panics with `what`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        if start.elapsed() >= limit {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of the Prometheus samples named `name` whose labels include `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, lbls) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let have: Vec<(&str, &str)> = lbls
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        if labels.iter().all(|l| have.contains(l)) {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// A fresh PostgreSQL schema for one test when `KEYWARD_TEST_DATABASE_URL`
/// is set (dropped afterwards); `None` (the test skips) otherwise.
pub struct PgSchema {
    base: String,
    name: String,
}

impl PgSchema {
    pub fn new(prefix: &str) -> Option<PgSchema> {
        let base = postgres_url(&format!(
            "the PostgreSQL part of a test (schema {prefix}_*)"
        ))?;
        let name = format!(
            "{prefix}_{}",
            keyward_jose::crypto::hex(&keyward_jose::crypto::random_bytes::<6>())
        );
        psql(&base, &format!("CREATE SCHEMA {name}"));
        Some(PgSchema { base, name })
    }

    /// The URL with this schema as the search path.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.base, self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        psql(&self.base, &format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

fn psql(url: &str, sql: &str) {
    let st = Command::new("psql")
        .args([url, "-q", "-c", sql])
        .env("PGOPTIONS", "--client-min-messages=warning")
        .status()
        .expect("psql is installed");
    assert!(st.success(), "psql {sql}");
}

impl Kw {
    /// Runs a command that must finish within `limit` (it is killed otherwise
    /// and the test fails): for commands that would serve if they did not refuse.
    pub fn run_bounded(&self, args: &[&str], limit: Duration) -> Run {
        let mut c = self.cmd();
        c.args(args)
            .env("KEYWARD_RELOAD_INTERVAL", "1s")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("run keyward");
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!(
                    "keyward {args:?} still running after {limit:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        output(child.wait_with_output().unwrap())
    }
}

/// A `keyward gateway` process, stopped (SIGTERM, then wait) on drop.
pub struct Gateway {
    child: Child,
    /// `127.0.0.1:PORT`, as it logged it.
    pub addr: String,
    /// `admin_listen` from its configuration, if any.
    pub admin: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

impl Kw {
    /// Writes `config` as gateway.toml and starts `keyward gateway` with it;
    /// waits (30 s at most) for "gateway listening on http://ADDR".
    pub fn start_gateway(&self, config: &str) -> Gateway {
        let path = write(self.dir.path(), "gateway.toml", config);
        let mut child = self
            .cmd()
            .args(["gateway", "--config", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keyward gateway");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let addr = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("gateway did not start: {seen:#?}"));
            if let Some(a) = line.split("gateway listening on http://").nth(1) {
                break a.trim().to_string();
            }
            seen.push(line);
        };
        // Keep draining stderr so the gateway never blocks on a full pipe.
        std::thread::spawn(move || for _ in rx {});
        let admin = config
            .lines()
            .find_map(|l| l.strip_prefix("admin_listen = "))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default();
        Gateway { child, addr, admin }
    }
}

/// The PostgreSQL server the PostgreSQL tests use (`KEYWARD_TEST_DATABASE_URL`).
/// Without one the test is skipped and says so on the test run's own output
/// (written past the test harness's capture, one `SKIPPED` line per skip,
/// so `grep -c SKIPPED` counts them); with `KEYWARD_REQUIRE_POSTGRES=1`, as
/// `.ci/run` sets, a missing server fails the test instead.
pub fn postgres_url(what: &str) -> Option<String> {
    if let Some(url) = std::env::var("KEYWARD_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Some(url);
    }
    assert!(
        std::env::var("KEYWARD_REQUIRE_POSTGRES").as_deref() != Ok("1"),
        "KEYWARD_TEST_DATABASE_URL is not set, but KEYWARD_REQUIRE_POSTGRES=1: {what} must run"
    );
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED (no PostgreSQL; set KEYWARD_TEST_DATABASE_URL): {what}"
    );
    None
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Kw {
    /// `clients create` in environment `default` for `scopes` and
    /// `audience`: its (client_id, client_secret).
    pub fn create_client(&self, name: &str, scopes: &str, audience: &str) -> (String, String) {
        let c = self
            .run(&[
                "clients",
                "create",
                "--env",
                "default",
                "--name",
                name,
                "--scopes",
                scopes,
                "--audience",
                audience,
                "--json",
            ])
            .ok()
            .json();
        (
            c["client_id"].as_str().unwrap().to_string(),
            c["client_secret"].as_str().unwrap().to_string(),
        )
    }
}
