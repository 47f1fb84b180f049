//! Test fixtures: an ES256 issuer key published through a `jwks_file`, an
//! echo upstream that counts its hits, a gateway started on an ephemeral
//! port, and a small HTTP client.
#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyward_gateway::{Config, Gateway, Running};
use keyward_jose::{sign_jwt, Algorithm, LocalSigner, PrivateKey, TokenSigner};
use serde_json::{json, Value};

pub const ISS: &str = "https://issuer.test";
pub const AUD: &str = "api://default";
pub const KID: &str = "k1";

/// The issuer's signing key (ES256, kid `k1`).
pub fn signer() -> &'static LocalSigner {
    static S: OnceLock<LocalSigner> = OnceLock::new();
    S.get_or_init(|| {
        LocalSigner::new(
            PrivateKey::generate(Algorithm::ES256, None).unwrap(),
            Some(KID.into()),
        )
    })
}

/// A key the gateway does not trust (ES256, kid `attacker`).
pub fn attacker() -> &'static LocalSigner {
    static S: OnceLock<LocalSigner> = OnceLock::new();
    S.get_or_init(|| {
        LocalSigner::new(
            PrivateKey::generate(Algorithm::ES256, None).unwrap(),
            Some("attacker".into()),
        )
    })
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid access-token claims for alice.
pub fn claims() -> Value {
    let now = now();
    json!({
        "iss": ISS, "sub": "alice", "aud": AUD, "exp": now + 600, "iat": now, "nbf": now,
        "jti": format!("j-{}", B64.encode(keyward_jose::crypto::random_bytes::<9>())),
        "client_id": "client-1", "scope": "orders:read orders:write",
        "permissions": ["orders.1.read", "reports.*"]
    })
}

/// A token for `claims`, correctly signed, `typ: at+jwt`.
pub fn token_for(claims: &Value) -> String {
    sign_jwt(signer(), Some("at+jwt"), claims).unwrap()
}

/// A valid token.
pub fn token() -> String {
    token_for(&claims())
}

/// `header.payload.signature` from raw JSON texts, signed by `s` over
/// exactly the encoded text.
pub fn signed_raw(s: &dyn TokenSigner, header: &str, payload: &str) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.as_bytes()),
        B64.encode(payload.as_bytes())
    );
    let sig = s.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(&sig))
}

/// The default ES256 header.
pub fn header() -> Value {
    json!({"alg": "ES256", "kid": KID, "typ": "at+jwt"})
}

// ---- upstream --------------------------------------------------------------

/// The echo upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Peer addresses of the gateway connections, one per request.
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
    /// Bytes of `/stream` bodies received so far.
    pub streamed: Arc<AtomicU64>,
}

impl Upstream {
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Byte `i` of the streamed test body.
pub fn pattern_byte(i: u64) -> u8 {
    ((i.wrapping_mul(31) + 7) % 251) as u8
}

type UpBody = Full<Bytes>;

async fn echo(
    req: Request<Incoming>,
    peer: SocketAddr,
    hits: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    streamed: Arc<AtomicU64>,
) -> Response<UpBody> {
    hits.fetch_add(1, Ordering::SeqCst);
    peers.lock().unwrap().push(peer);
    let (parts, mut body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|s| s.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path.starts_with("/stream") {
        let mut n: u64 = 0;
        let mut intact = true;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                intact = false;
                break;
            };
            if let Ok(data) = frame.into_data() {
                for b in data.iter() {
                    intact &= *b == pattern_byte(n);
                    n += 1;
                }
                streamed.store(n, Ordering::SeqCst);
            }
        }
        let out = json!({"bytes": n, "intact": intact}).to_string();
        return Response::new(Full::new(Bytes::from(out)));
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in parts.headers.iter() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let out = json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    })
    .to_string();
    let mut r = Response::new(Full::new(Bytes::from(out)));
    let h = r.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("x-upstream", "echo".parse().unwrap());
    // Hop-by-hop headers the gateway must not pass back.
    h.insert("connection", "x-hop-secret".parse().unwrap());
    h.insert("x-hop-secret", "1".parse().unwrap());
    h.insert("keep-alive", "timeout=30".parse().unwrap());
    r
}

/// Starts the echo upstream on an ephemeral port.
pub async fn upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let peers = Arc::new(Mutex::new(Vec::new()));
    let streamed = Arc::new(AtomicU64::new(0));
    let (h, p, s) = (hits.clone(), peers.clone(), streamed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let (h, p, s) = (h.clone(), p.clone(), s.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let (h, p, s) = (h.clone(), p.clone(), s.clone());
                    async move { Ok::<_, Infallible>(echo(req, peer, h, p, s).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        hits,
        peers,
        streamed,
    }
}

/// A port nothing listens on.
pub async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

// ---- gateway ---------------------------------------------------------------

/// A running gateway with its temporary directory (config, JWKS).
pub struct Gw {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub base: String,
}

impl Gw {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// The JWK Set holding the issuer's key (plus `extra` keys).
pub fn jwks(extra: &[Value]) -> String {
    let mut keys = vec![signer().public_jwk().to_value()];
    keys.extend(extra.iter().cloned());
    json!({ "keys": keys }).to_string()
}

/// The standard `[[issuer]]` section reading `jwks.json`.
pub fn issuer_section() -> String {
    format!("[[issuer]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\njwks_file = \"jwks.json\"\n")
}

/// Starts a gateway on 127.0.0.1:0 from `text` (the whole file); `jwks`
/// becomes `jwks.json` beside it.
pub async fn start_with(text: &str, jwks_text: &str) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks_text).unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    let running = Gateway::start(config).await.unwrap();
    let base = format!("http://{}", running.addr());
    Gw { running, dir, base }
}

/// A gateway with the standard issuer and `routes` (TOML; `{UP}` is
/// replaced by `up`'s origin).
pub async fn start(routes: &str, up: &Upstream) -> Gw {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n{}\n{}",
        issuer_section(),
        routes.replace("{UP}", &up.origin())
    );
    start_with(&text, &jwks(&[])).await
}

/// Parses a config from text in a temp dir holding `jwks.json`.
pub fn check(text: &str) -> Result<Config, keyward_gateway::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks(&[])).unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path)
}

// ---- client ----------------------------------------------------------------

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    /// The echo's view of one request header (first value).
    pub fn echoed(&self, name: &str) -> Option<String> {
        self.json()["headers"][name][0].as_str().map(str::to_owned)
    }
}

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static C: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    C.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

/// Sends a request; `headers` as (name, value) pairs.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut b = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    send("GET", url, headers, "").await
}

/// GET with `Authorization: Bearer <token>`.
pub async fn get_with(url: &str, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    get(url, &[("authorization", &auth)]).await
}

/// A request body fed from a channel, to prove bodies stream.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Sends `req` with a streamed body on its own client.
pub async fn send_streaming(req: Request<ChannelBody>) -> Resp {
    let c: Client<HttpConnector, ChannelBody> = Client::builder(TokioExecutor::new()).build_http();
    let resp = c.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Reads a data file of this crate's tests.
pub fn data(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}
