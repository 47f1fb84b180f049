//! WebSocket upgrades through the gateway: a real WebSocket echo upstream
//! (tokio-tungstenite) on 127.0.0.1, clients through the gateway. The
//! handshake is judged like any request; only an authorised one reaches the
//! upstream and is upgraded, then frames flow both ways until either side
//! closes.

mod common;
#[path = "../../verify/tests/support/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The WebSocket echo upstream: echoes text and binary messages, closes
/// (server side) on the text `bye`, and records what it saw.
struct WsUpstream {
    addr: SocketAddr,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
    /// The request headers of every completed handshake.
    handshakes: Arc<Mutex<Vec<HeaderMap>>>,
    /// Close frames received from the gateway's side.
    closes: Arc<AtomicUsize>,
    /// Echo sessions that have ended (connection gone).
    ended: Arc<AtomicUsize>,
}

impl WsUpstream {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    fn handshake(&self, i: usize) -> HeaderMap {
        self.handshakes.lock().unwrap()[i].clone()
    }
}

/// One echo session over `stream` (plain or TLS).
async fn echo_session<S>(
    stream: S,
    up: (
        Arc<Mutex<Vec<HeaderMap>>>,
        Arc<AtomicUsize>,
        Arc<AtomicUsize>,
    ),
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (handshakes, closes, ended) = up;
    // The callback's signature is tokio-tungstenite's (its error type is large).
    #[allow(clippy::result_large_err)]
    let record = move |req: &WsRequest, resp: WsResponse| {
        handshakes.lock().unwrap().push(req.headers().clone());
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
        ended.fetch_add(1, Ordering::SeqCst);
        return;
    };
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Text(t) if t.as_str() == "bye" => {
                let _ = ws.close(None).await;
            }
            m @ (Message::Text(_) | Message::Binary(_)) => {
                let sent = ws.send(m).await;
                if sent.is_err() {
                    break;
                }
            }
            Message::Close(_) => {
                closes.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
    ended.fetch_add(1, Ordering::SeqCst);
}

/// Starts the echo upstream; over TLS with `tls` (certificate and key PEM).
async fn ws_upstream(tls: Option<&pki::Cert>) -> WsUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = WsUpstream {
        addr,
        connections: Arc::default(),
        handshakes: Arc::default(),
        closes: Arc::default(),
        ended: Arc::default(),
    };
    let acceptor = tls.map(|c| {
        let certs = CertificateDer::pem_slice_iter(c.pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let (connections, handshakes, closes, ended) = (
        up.connections.clone(),
        up.handshakes.clone(),
        up.closes.clone(),
        up.ended.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            connections.fetch_add(1, Ordering::SeqCst);
            let state = (handshakes.clone(), closes.clone(), ended.clone());
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => echo_session(stream, state).await,
                    Some(a) => {
                        if let Ok(tls) = a.accept(stream).await {
                            echo_session(tls, state).await
                        }
                    }
                }
            });
        }
    });
    up
}

const ROUTES: &str = r#"
[[route]]
path = "/ws/{id}"
upstream = "{UP}"
permissions = { all_of = ["orders.{id}.read"] }
websocket = true

[[route]]
path = "/plain/*"
upstream = "{UP}"
"#;

async fn gateway(up: &WsUpstream) -> Gw {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nshutdown_grace = \"20s\"\n\n{}\n{}",
        issuer_section(),
        ROUTES.replace("{UP}", &format!("http://{}", up.addr))
    );
    start_with(&text, &jwks(&[])).await
}

type Ws = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `url` (ws://) with these extra headers.
async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("handshake timed out")
    .map(|(ws, _)| ws)
}

fn ws_url(gw: &Gw, path: &str) -> String {
    gw.url(path).replacen("http://", "ws://", 1)
}

/// The next message within 10 s (`None`: the stream ended).
async fn next<S>(ws: &mut WebSocketStream<S>) -> Option<Result<Message, WsError>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no message within 10 s")
}

/// Messages go both ways, text and binary, many times.
async fn exchange<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for i in 0..20 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next(ws).await.unwrap().unwrap(), Message::text(text));
    }
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(ws).await.unwrap().unwrap(), Message::binary(big));
}

/// Waits up to 10 s for `f` to hold.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {what}");
}

/// After a close, the stream ends (no more messages, no error other than
/// the connection being closed).
async fn ends<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match next(ws).await {
            None | Some(Err(WsError::ConnectionClosed)) | Some(Err(WsError::AlreadyClosed)) => {
                return
            }
            Some(Ok(Message::Close(_))) => continue,
            other => panic!("expected the end of the stream, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_authorised_upgrade_is_spliced_with_identity_headers_at_the_handshake() {
    let up = ws_upstream(None).await;
    let gw = gateway(&up).await;
    let auth = format!("Bearer {}", token());
    let mut ws = connect(
        &ws_url(&gw, "/ws/1"),
        &[
            ("authorization", &auth),
            ("x-auth-subject", "mallory"),
            ("x-custom", "kept"),
        ],
    )
    .await
    .expect("the handshake passes");
    exchange(&mut ws).await;

    assert_eq!(up.connections(), 1);
    let h = up.handshake(0);
    let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(get("x-auth-subject").as_deref(), Some("alice"), "{h:?}");
    assert_eq!(get("x-auth-client").as_deref(), Some("client-1"));
    assert_eq!(get("x-auth-issuer").as_deref(), Some(ISS));
    assert_eq!(
        get("x-auth-permissions").as_deref(),
        Some("orders.1.read reports.*")
    );
    assert_eq!(get("x-custom").as_deref(), Some("kept"));
    assert_eq!(get("authorization"), None, "the token is not forwarded");
    assert_eq!(get("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(get("host"), Some(up.addr.to_string()));
    assert!(get("sec-websocket-key").is_some());
    assert_eq!(get("upgrade").as_deref(), Some("websocket"));
    assert_eq!(get("connection").as_deref(), Some("upgrade"));

    // The client closes: the upstream gets the close frame, both ends end.
    ws.close(None).await.unwrap();
    ends(&mut ws).await;
    eventually("the upstream saw the close", || {
        up.closes.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("the upstream session ended", || {
        up.ended.load(Ordering::SeqCst) == 1
    })
    .await;

    // The gateway goes on serving.
    let mut again = connect(&ws_url(&gw, "/ws/1"), &[("authorization", &auth)])
        .await
        .unwrap();
    exchange(&mut again).await;
}

#[tokio::test]
async fn the_upstream_closing_ends_the_callers_connection() {
    let up = ws_upstream(None).await;
    let gw = gateway(&up).await;
    let auth = format!("Bearer {}", token());
    let mut ws = connect(&ws_url(&gw, "/ws/1"), &[("authorization", &auth)])
        .await
        .unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::text("ping"));
    ws.send(Message::text("bye")).await.unwrap();
    // The upstream's close frame arrives, then the stream ends.
    match next(&mut ws).await {
        Some(Ok(Message::Close(_))) => {}
        other => panic!("expected the upstream's close frame, got {other:?}"),
    }
    ends(&mut ws).await;
    eventually("the upstream session ended", || {
        up.ended.load(Ordering::SeqCst) == 1
    })
    .await;
}

/// `connect`'s refusal: the HTTP status the gateway answered.
fn refused_status(r: Result<Ws, WsError>) -> (u16, HeaderMap) {
    match r {
        Err(WsError::Http(resp)) => (resp.status().as_u16(), resp.headers().clone()),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

#[tokio::test]
async fn refused_handshakes_never_reach_the_upstream_and_are_not_upgraded() {
    let up = ws_upstream(None).await;
    let gw = gateway(&up).await;
    let url = ws_url(&gw, "/ws/1");

    // No token.
    let (status, headers) = refused_status(connect(&url, &[]).await);
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    // A token signed by a key the gateway does not trust.
    let forged = keyward_jose::sign_jwt(attacker(), Some("at+jwt"), &claims()).unwrap();
    let auth = format!("Bearer {forged}");
    let (status, _) = refused_status(connect(&url, &[("authorization", &auth)]).await);
    assert_eq!(status, 401);
    // A valid token without the permission `/ws/2` needs.
    let auth = format!("Bearer {}", token());
    let (status, headers) =
        refused_status(connect(&ws_url(&gw, "/ws/2"), &[("authorization", &auth)]).await);
    assert_eq!(status, 403);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));
    // The upstream never saw a connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(up.connections(), 0);
    assert!(up.handshakes.lock().unwrap().is_empty());

    // A route without `websocket = true` does not pass the upgrade: the
    // upstream gets a plain GET (which a WebSocket server refuses).
    let r = connect(&ws_url(&gw, "/plain/x"), &[("authorization", &auth)]).await;
    let (status, _) = refused_status(r);
    assert_ne!(status, 101);
    assert!(up.handshakes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn graceful_shutdown_completes_with_a_websocket_open() {
    let up = ws_upstream(None).await;
    let gw = gateway(&up).await;
    let auth = format!("Bearer {}", token());
    let mut ws = connect(&ws_url(&gw, "/ws/1"), &[("authorization", &auth)])
        .await
        .unwrap();
    exchange(&mut ws).await;
    let Gw { running, dir, .. } = gw;
    // Shutdown waits for in-flight requests (up to the 20 s grace), not for
    // upgraded connections: it ends promptly and the tunnel closes.
    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("shutdown did not complete");
    loop {
        match next(&mut ws).await {
            None | Some(Err(_)) => break,
            Some(Ok(Message::Close(_))) => continue,
            Some(Ok(m)) => panic!("unexpected message after shutdown: {m:?}"),
        }
    }
    eventually("the upstream session ended", || {
        up.ended.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(dir);
}

#[tokio::test]
async fn over_tls_listener_and_https_upstream() {
    let ca = pki::Ca::new("ws test ca");
    let server = ca.server();
    let up = ws_upstream(Some(&server)).await;
    let dir = tempfile::tempdir().unwrap();
    server.write(dir.path(), "server");
    ca.write(dir.path(), "ca");
    std::fs::write(dir.path().join("jwks.json"), jwks(&[])).unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\n{}\n\
         [[route]]\npath = \"/ws/{{id}}\"\nupstream = \"https://127.0.0.1:{}\"\n\
         upstream_tls = {{ ca_file = \"ca.pem\" }}\npermissions = {{ all_of = [\"orders.{{id}}.read\"] }}\nwebsocket = true\n",
        issuer_section(),
        up.addr.port()
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    let config = keyward_gateway::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let running = keyward_gateway::Gateway::start(config).await.unwrap();

    // A TLS client trusting the test CA (no ALPN: HTTP/1.1).
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let open = |path: &'static str, auth: Option<String>| {
        let connector = connector.clone();
        let addr = running.addr();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("127.0.0.1").unwrap();
            let tls = connector.connect(name, tcp).await.unwrap();
            let mut req = format!("wss://127.0.0.1:{}{path}", addr.port())
                .into_client_request()
                .unwrap();
            if let Some(a) = auth {
                req.headers_mut()
                    .insert("authorization", a.parse().unwrap());
            }
            tokio_tungstenite::client_async(req, tls).await
        }
    };
    match open("/ws/1", None).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    assert_eq!(up.connections(), 0);

    let (mut ws, resp) = open("/ws/1", Some(format!("Bearer {}", token())))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    exchange(&mut ws).await;
    assert_eq!(
        up.handshake(0)["x-forwarded-proto"].to_str().unwrap(),
        "https"
    );
    assert_eq!(up.handshake(0)["x-auth-subject"].to_str().unwrap(), "alice");
    ws.close(None).await.unwrap();
    ends(&mut ws).await;
    eventually("the upstream saw the close", || {
        up.closes.load(Ordering::SeqCst) == 1
    })
    .await;
    running.shutdown().await;
}
