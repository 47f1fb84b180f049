//! The one bounded fetcher: each way a server can misbehave ends in its own
//! [`FetchError`], within the time bound. The server is a raw TCP listener
//! on 127.0.0.1 so a test can lie in `Content-Length`, trickle a body or
//! never answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_verify::fetch::{Fetched, MAX_REDIRECTS};
use keyward_verify::{FetchError, FetchLimits, Fetcher, RedirectRefusal, UrlError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with a request for a path.
enum Answer {
    /// Writes these bytes and closes.
    Raw(String),
    /// Writes `head`, then `chunks` chunks of `chunk` bytes each `every`.
    Trickle {
        head: String,
        chunk: usize,
        chunks: usize,
        every: Duration,
    },
    /// Reads the request and never answers.
    Hang,
}

struct Server {
    addr: SocketAddr,
    /// Requests received.
    hits: Arc<AtomicUsize>,
}

impl Server {
    async fn start(answer: fn(&str, SocketAddr) -> Answer) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let _ = serve(s, answer, addr, &counted).await;
                });
            }
        });
        Server { addr, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut s: TcpStream,
    answer: fn(&str, SocketAddr) -> Answer,
    addr: SocketAddr,
    hits: &AtomicUsize,
) -> std::io::Result<()> {
    loop {
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            req.extend_from_slice(&buf[..n]);
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let text = String::from_utf8_lossy(&req).to_string();
        let path = text.split(' ').nth(1).unwrap_or("/").to_string();
        match answer(&path, addr) {
            Answer::Raw(r) => {
                s.write_all(r.as_bytes()).await?;
            }
            Answer::Trickle {
                head,
                chunk,
                chunks,
                every,
            } => {
                s.write_all(head.as_bytes()).await?;
                for _ in 0..chunks {
                    tokio::time::sleep(every).await;
                    s.write_all(&vec![b' '; chunk]).await?;
                }
                return Ok(());
            }
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
        }
    }
}

fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn status(code: &str) -> String {
    format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n\r\n")
}

fn redirect(to: &str) -> String {
    format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\n\r\n")
}

fn fetcher(timeout_ms: u64, max_body_bytes: usize) -> Fetcher {
    Fetcher::new(FetchLimits {
        timeout: Duration::from_millis(timeout_ms),
        max_body_bytes,
        allow_http: false,
    })
    .unwrap()
}

#[tokio::test]
async fn a_200_body_within_the_limits_is_returned() {
    let server = Server::start(|_, _| Answer::Raw(ok(r#"{"keys":[]}"#))).await;
    let body = fetcher(2000, 1024).get(&server.url("/jwks")).await.unwrap();
    assert_eq!(body, br#"{"keys":[]}"#);
}

#[tokio::test]
async fn an_oversized_body_is_refused_by_length_and_while_read() {
    // Declared too large: refused from Content-Length.
    let server = Server::start(|path, _| match path {
        "/declared" => Answer::Raw(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 2048\r\n\r\n{}",
            " ".repeat(2048)
        )),
        // Undeclared (read until close): refused once past the limit.
        _ => Answer::Trickle {
            head: "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".into(),
            chunk: 512,
            chunks: 4,
            every: Duration::from_millis(1),
        },
    })
    .await;
    let f = fetcher(2000, 1024);
    for path in ["/declared", "/streamed"] {
        let url = server.url(path);
        let e = f.get(&url).await.unwrap_err();
        assert!(
            matches!(&e, FetchError::TooLarge { url: u, max: 1024 } if *u == url),
            "{path}: {e:?}"
        );
        assert_eq!(e.to_string(), format!("{url}: body larger than 1024 bytes"));
    }
    // Exactly the limit is read.
    let f = fetcher(2000, 2048);
    assert_eq!(f.get(&server.url("/declared")).await.unwrap().len(), 2048);
}

#[tokio::test]
async fn a_slow_server_is_cut_off_at_the_time_bound() {
    let server = Server::start(|path, _| match path {
        "/hang" => Answer::Hang,
        // Headers at once, then a byte of body every 100 ms: each read is
        // quick, the whole is not.
        _ => Answer::Trickle {
            head: "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".into(),
            chunk: 1,
            chunks: 100,
            every: Duration::from_millis(100),
        },
    })
    .await;
    let f = fetcher(400, 1024);
    for path in ["/hang", "/trickle"] {
        let url = server.url(path);
        let started = Instant::now();
        let e = f.get(&url).await.unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(&e, FetchError::Timeout { url: u, after } if *u == url && after.as_millis() == 400),
            "{path}: {e:?}"
        );
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
            "{path}: {took:?}"
        );
        assert_eq!(e.to_string(), format!("{url}: timed out after 400 ms"));
    }
}

#[tokio::test]
async fn any_status_but_200_is_an_error_naming_it() {
    let server = Server::start(|path, _| match path {
        "/500" => Answer::Raw(status("500 Internal Server Error")),
        "/404" => Answer::Raw(status("404 Not Found")),
        "/204" => Answer::Raw(status("204 No Content")),
        "/206" => Answer::Raw(status("206 Partial Content")),
        _ => Answer::Raw(status("304 Not Modified")),
    })
    .await;
    let f = fetcher(2000, 1024);
    for (path, code) in [
        ("/500", 500),
        ("/404", 404),
        ("/204", 204),
        ("/206", 206),
        ("/304", 304),
    ] {
        let url = server.url(path);
        let e = f.get(&url).await.unwrap_err();
        assert!(
            matches!(&e, FetchError::Status { url: u, status } if *u == url && status.as_u16() == code),
            "{path}: {e:?}"
        );
    }
    let e = f.get(&server.url("/500")).await.unwrap_err();
    assert!(
        e.to_string()
            .ends_with("answered 500 Internal Server Error"),
        "{e}"
    );
}

#[tokio::test]
async fn a_conditional_request_may_be_answered_304() {
    let server = Server::start(|_, _| {
        Answer::Raw(
            "HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncache-control: max-age=60\r\n\r\n".into(),
        )
    })
    .await;
    let got = fetcher(2000, 1024)
        .get_revalidated(&server.url("/jwks"), Some("\"v1\""))
        .await
        .unwrap();
    let Fetched::NotModified { headers } = got else {
        panic!("{got:?}");
    };
    assert_eq!(headers["cache-control"], "max-age=60");
}

#[tokio::test]
async fn redirects_stay_on_the_scheme_and_the_url_rules() {
    let server = Server::start(|path, addr| match path {
        "/same" => Answer::Raw(redirect(&format!("http://{addr}/final"))),
        "/relative" => Answer::Raw(redirect("/final")),
        "/final" => Answer::Raw(ok("{}")),
        "/to-https" => Answer::Raw(redirect(&format!("https://{addr}/final"))),
        "/to-remote-http" => Answer::Raw(redirect("http://jwks.example/final")),
        "/to-file" => Answer::Raw(redirect("file:///etc/passwd")),
        _ => Answer::Raw(redirect("/loop")),
    })
    .await;
    let f = fetcher(2000, 1024);
    for path in ["/same", "/relative"] {
        assert_eq!(f.get(&server.url(path)).await.unwrap(), b"{}", "{path}");
    }
    let e = f.get(&server.url("/to-https")).await.unwrap_err();
    assert!(
        matches!(&e, FetchError::Redirect { why: RedirectRefusal::OtherScheme, location, .. } if location.starts_with("https://")),
        "{e:?}"
    );
    let e = f.get(&server.url("/to-remote-http")).await.unwrap_err();
    assert!(
        matches!(
            &e,
            FetchError::Redirect {
                why: RedirectRefusal::Url(UrlError::PlainHttp { .. }),
                ..
            }
        ),
        "{e:?}"
    );
    let e = f.get(&server.url("/to-file")).await.unwrap_err();
    assert!(
        matches!(
            &e,
            FetchError::Redirect {
                why: RedirectRefusal::OtherScheme,
                ..
            }
        ),
        "{e:?}"
    );
    let before = server.hits();
    let e = f.get(&server.url("/loop")).await.unwrap_err();
    assert!(
        matches!(
            &e,
            FetchError::Redirect {
                why: RedirectRefusal::TooMany,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        server.hits() - before,
        MAX_REDIRECTS + 1,
        "first ask + redirects"
    );
    assert!(
        e.to_string().contains("not followed (too many redirects)"),
        "{e}"
    );
}

#[tokio::test]
async fn refused_urls_are_never_asked_and_dead_hosts_fail_to_connect() {
    let f = fetcher(2000, 1024);
    let e = f.get("http://jwks.example/keys").await.unwrap_err();
    assert!(
        matches!(e, FetchError::Url(UrlError::PlainHttp { .. })),
        "{e:?}"
    );
    let e = f.get("ftp://127.0.0.1/keys").await.unwrap_err();
    assert!(
        matches!(e, FetchError::Url(UrlError::Scheme { .. })),
        "{e:?}"
    );
    // Nothing listens on port 1.
    let e = f.get("http://127.0.0.1:1/keys").await.unwrap_err();
    assert!(matches!(e, FetchError::Connect { .. }), "{e:?}");
    assert_eq!(e.to_string(), "http://127.0.0.1:1/keys: connection failed");
    // The library's reason is kept as the source.
    assert!(std::error::Error::source(&e).is_some());
}
