//! Headless Debian `chromium` over WebDriver (`chromedriver`), shared by the
//! browser tests (console_browser.rs, login_browser.rs). No browser is
//! downloaded: without chromium or chromedriver a test prints SKIPPED, or
//! fails under `KEYWARD_REQUIRE_BROWSER=1` (as `.ci/run` sets).
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::common;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver, if installed.
pub fn chromedriver() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Whether the browser is here; otherwise SKIPPED, or a failure under
/// `KEYWARD_REQUIRE_BROWSER=1`.
pub fn have_browser(what: &str) -> bool {
    if std::path::Path::new(CHROMIUM).exists() && chromedriver().is_some() {
        return true;
    }
    assert!(
        std::env::var("KEYWARD_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "chromium or chromedriver is not installed (Debian: chromium chromium-driver), but KEYWARD_REQUIRE_BROWSER=1"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED (no chromium/chromedriver): {what}"
    );
    false
}

/// chromedriver on a free port, stopped on drop.
pub struct Driver {
    child: Child,
    pub port: u16,
    _log: tempfile::NamedTempFile,
}

impl Drop for Driver {
    fn drop(&mut self) {
        common::stop_child(&mut self.child);
    }
}

pub fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(chromedriver().unwrap())
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        port,
        _log: log,
    }
}

/// A headless chromium session with a fresh profile. The console's pages
/// run no script at all: their Content-Security-Policy allows none, so
/// what works here works without JavaScript.
pub async fn browser(d: &Driver, profile: &std::path::Path) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": args,
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("a chromium session")
}

/// Saves a screenshot of the current page as DIR/NAME.png when the
/// environment variable `var` names a DIR.
pub async fn shot_if(c: &Client, var: &str, name: &str) {
    let Ok(dir) = std::env::var(var) else {
        return;
    };
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
}

pub async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.unwrap().len()
}

pub async fn fill(c: &Client, css: &str, value: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

/// Clicks what `css` finds (a link or a form's button) and waits until
/// the next page has replaced this one.
pub async fn click(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    // The old document's element goes stale once the new page is in.
    while old.tag_name().await.is_ok() {
        assert!(Instant::now() < deadline, "{css}: no new page");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
