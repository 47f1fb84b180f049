//! Upstream origins and their keep-alive connection pools.
//!
//! Each proxy worker thread has one pool per distinct upstream origin
//! ([`Upstreams::pools`]), so a request and its upstream connection stay on
//! one thread. A pool is a stack of idle HTTP/1.1 connections (the most
//! recently used first, as it is the most likely to be warm and alive). A
//! connection goes back to its pool when the response body has been passed
//! on completely ([`PooledBody`]); a response abandoned half-way closes its
//! connection instead. Connections closed by the upstream are noticed and
//! dropped at checkout, as are connections still busy with an earlier
//! request body; a request that could not be written on a pooled
//! connection is retried on another one. At most [`POOL_MAX_IDLE`] idle
//! connections are kept per origin and worker; idle ones are closed by the
//! upstream's own keep-alive timeout.
//!
//! Connections use `TCP_NODELAY`. Bodies stream through both ways; nothing
//! is buffered beyond hyper's read and write buffers.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::config::UpstreamUrl;
use crate::upstream_tls::UpstreamTls;

/// Most idle connections kept per upstream and worker.
pub const POOL_MAX_IDLE: usize = 512;
/// Pooled connections tried before opening a new one.
const CHECKOUT_TRIES: usize = 4;

/// Why an upstream request failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be opened.
    Connect(std::io::Error),
    /// The connection failed during the exchange.
    Http(hyper::Error),
    /// The upstream switched to a protocol other than the one asked for.
    Upgrade,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "cannot connect: {e}"),
            UpstreamError::Http(e) => write!(f, "{e}"),
            UpstreamError::Upgrade => {
                write!(
                    f,
                    "answered 101 without switching to the protocol asked for"
                )
            }
        }
    }
}

/// The sending half of an upstream HTTP/1.1 connection.
pub type Sender = SendRequest<Incoming>;

/// The idle connections of one origin on one worker.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<Sender>>,
}

impl Pool {
    fn pop(&self) -> Option<Sender> {
        self.idle.lock().ok()?.pop()
    }

    fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < POOL_MAX_IDLE {
                idle.push(sender);
            }
        }
    }
}

/// One upstream origin and this worker's pool for it.
pub struct Upstream {
    /// `http://host:port`.
    pub origin: String,
    /// The `Host` header value sent upstream (unless a route preserves the caller's).
    pub host: HeaderValue,
    /// `host:port` to connect to.
    addr: String,
    /// TLS, for an `https://` upstream.
    tls: Option<UpstreamTls>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A pool for `url` (nothing connects until the first request).
    pub fn new(url: &UpstreamUrl) -> Upstream {
        let host = HeaderValue::from_str(url.authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Upstream {
            origin: url.origin.clone(),
            host,
            addr: url.authority.as_str().to_string(),
            tls: url.tls.clone(),
            pool: Arc::new(Pool::default()),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) on a pooled or new
    /// connection. The response body returns the connection to the pool
    /// when it has been read to the end.
    pub async fn send(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        for _ in 0..CHECKOUT_TRIES {
            let Some(mut sender) = self.pool.pop() else {
                break;
            };
            if !sender.is_ready() {
                // Its connection task may not have run since the previous
                // exchange ended (same thread): give it one turn. Still not
                // ready means closed, or still sending an earlier request
                // body the upstream answered early: let it go.
                tokio::task::yield_now().await;
                if !sender.is_ready() {
                    continue;
                }
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.pooled(resp, sender)),
                Err(mut e) => match e.take_message() {
                    // Not written (the connection closed meanwhile): try another.
                    Some(r) => req = r,
                    None => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
        let mut sender = self.connect(false).await?;
        match sender.send_request(req).await {
            Ok(resp) => Ok(self.pooled(resp, sender)),
            Err(e) => Err(UpstreamError::Http(e)),
        }
    }

    /// Sends an upgrade request (WebSocket) on a new connection of its own,
    /// never pooled: after a `101 Switching Protocols` the connection
    /// belongs to the upgraded protocol (`hyper::upgrade::on` on the
    /// response yields it). The sender comes back too: it must live until
    /// the upgrade has completed. Any other answer's body is passed on as
    /// usual and its connection closes after it.
    pub async fn send_upgrade(
        &self,
        req: Request<Incoming>,
    ) -> Result<(Response<PooledBody>, Sender), UpstreamError> {
        let mut sender = self.connect(true).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Http)?;
        let resp = resp.map(|inner| PooledBody {
            inner,
            done: false,
            sender: None,
            pool: self.pool.clone(),
        });
        Ok((resp, sender))
    }

    fn pooled(&self, resp: Response<Incoming>, sender: Sender) -> Response<PooledBody> {
        resp.map(|inner| PooledBody {
            inner,
            done: false,
            sender: Some(sender),
            pool: self.pool.clone(),
        })
    }

    /// A new connection; `upgrades`: one that may switch protocols.
    async fn connect(&self, upgrades: bool) -> Result<Sender, UpstreamError> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => handshake(stream, upgrades).await,
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(UpstreamError::Connect)?;
                handshake(stream, upgrades).await
            }
        }
    }
}

/// An HTTP/1.1 client connection over `io`, its driver spawned on this
/// thread; with `upgrades`, one that hands itself over on a 101.
async fn handshake<T>(io: T, upgrades: bool) -> Result<Sender, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        let ended = if upgrades {
            conn.with_upgrades().await
        } else {
            conn.await
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

impl Upstream {}

/// An upstream response body that hands its connection back to the pool
/// once it has been read to the end (and closes it otherwise).
pub struct PooledBody {
    inner: Incoming,
    done: bool,
    sender: Option<Sender>,
    pool: Arc<Pool>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            if self.done || self.inner.is_end_stream() {
                self.pool.put(sender);
            }
        }
    }
}

/// The distinct upstream origins of a configuration. Each proxy worker
/// thread makes its own [`Upstream`] (pool) per origin.
#[derive(Debug, Default)]
pub struct Upstreams {
    urls: Vec<UpstreamUrl>,
}

impl Upstreams {
    /// The index of `url`'s origin, registering it on first use.
    pub fn index(&mut self, url: &UpstreamUrl) -> usize {
        match self.urls.iter().position(|u| u == url) {
            Some(i) => i,
            None => {
                self.urls.push(url.clone());
                self.urls.len() - 1
            }
        }
    }

    /// One fresh pool per origin, in index order (made on the worker
    /// thread that uses them).
    pub fn pools(&self) -> Box<[Upstream]> {
        self.urls.iter().map(Upstream::new).collect()
    }
}
