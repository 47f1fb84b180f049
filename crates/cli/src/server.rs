//! The issuer's HTTP server: hyper serving the axum router over HTTP/1.1 or
//! HTTP/2 (ALPN `h2` over TLS, or the HTTP/2 preface in clear text), over
//! TLS when `[tls]` is configured (the client certificate, if any, goes to
//! the handlers as a request extension), with limits that keep slow or idle
//! clients from using up the server. The limits below are HTTP/1.1's; a TLS
//! handshake must finish within `header_read_timeout`, and counts as
//! waiting on the client (evictable) meanwhile.
//!
//! - **Headers**: a request's line and headers must arrive within
//!   `header_read_timeout` (hyper's timer, which starts when the connection
//!   begins waiting for a request: idle time counts). So `idle_timeout` may
//!   not exceed it (the configuration refuses that), and a connection this
//!   timer closes before any byte of a request arrived is counted `idle`.
//! - **Body**: once a handler has had to wait for a request's body, the
//!   whole body must arrive within `body_read_timeout`; then the read fails,
//!   the handler answers 408 and the connection is closed.
//! - **Idle**: a keep-alive connection on which no byte of a new request has
//!   arrived is closed `idle_timeout` after its last response (or after it
//!   was accepted). Once bytes of a request arrive, the header timer rules.
//! - **Connections**: at most `max_connections` at once (keep it well below
//!   the file-descriptor limit). When a new connection would exceed it, the
//!   connection that has waited longest *on its client* is closed to make
//!   room: one that is idle or still sending a request's head (waiting since
//!   its last response, or since accepted), or one whose handler is waiting
//!   for body bytes that have not arrived (waiting since the handler first
//!   had to wait: a trickle of bytes does not renew it). What a slowloris
//!   flood consists of, with slow heads or slow bodies. A connection whose
//!   request the server is working on (its body complete, or not being read)
//!   is never closed for a newcomer; only when every connection is in that
//!   state is the new one closed at once. So half-open connections cannot
//!   starve `/healthz` or the token endpoint, and a request the server is
//!   working on is never cut off for a newcomer.
//!
//! Shutdown: stop accepting; connections with no request in progress (idle,
//! or still sending a request's head) finish writing their last answer and
//! close (within 250 ms); the others (including a request whose body is
//! still arriving) finish their request with keep-alive off, up to `grace`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use keyward_verify::{PeerCertificate, TlsServer};
use metrics::{Counter, Gauge};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

/// The server's connection limits (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// How long the accept loop waits for a closed idle connection to give its
/// place back before closing the newcomer instead.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

/// The connection metrics, registered once the process's recorder is
/// installed (see [`serve`]): nothing is looked up per request.
struct ConnMetrics {
    /// `keyward_http_connections`: open now.
    open: Gauge,
    /// `keyward_http_connections_closed_total{reason}` for the reasons the
    /// server closed a connection on its own.
    evicted: Counter,
    refused: Counter,
    idle: Counter,
    header_timeout: Counter,
    body_timeout: Counter,
}

static METRICS: std::sync::OnceLock<ConnMetrics> = std::sync::OnceLock::new();

fn conn_metrics() -> &'static ConnMetrics {
    METRICS.get_or_init(|| {
        let closed = |reason: &'static str| {
            metrics::counter!("keyward_http_connections_closed_total", "reason" => reason)
        };
        metrics::describe_gauge!("keyward_http_connections", "Client connections open now.");
        metrics::describe_counter!(
            "keyward_http_connections_closed_total",
            "Client connections the server closed: evicted (waited longest on its client, at max_connections), refused (at max_connections, a request being worked on everywhere), idle (no byte of a request since its last response), header_timeout, body_timeout."
        );
        ConnMetrics {
            open: metrics::gauge!("keyward_http_connections"),
            evicted: closed("evicted"),
            refused: closed("refused"),
            idle: closed("idle"),
            header_timeout: closed("header_timeout"),
            body_timeout: closed("body_timeout"),
        }
    })
}

/// On shutdown, how long a connection with no request in progress may take
/// to finish writing its last answer (hyper closes it sooner if it can).
const CLOSE_SOON: Duration = Duration::from_millis(250);

/// Where a connection is in being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    No,
    /// No request in progress: closed after [`CLOSE_SOON`] at the latest.
    Soon,
    /// Its request is answered first (keep-alive off), within the shutdown grace.
    AfterRequest,
}

/// [`Slot::body_wait_since`] when the handler is not waiting on the body.
const NOT_WAITING: u64 = u64::MAX;

/// One open connection, as the accept loop and the eviction see it.
struct Slot {
    /// The registry's epoch.
    epoch: Instant,
    /// A request is in progress (its head has arrived, its answer is not
    /// made yet).
    busy: AtomicBool,
    /// When the connection last had no request in progress: accepted or
    /// last response, in ms since [`Registry::epoch`].
    idle_since: AtomicU64,
    /// While the request's handler waits for body bytes from the client
    /// (its [`TimedBody`] returned `Pending`): since when it has been waiting
    /// on them (the request's first wait, in ms since the epoch: a trickle
    /// of bytes does not renew it). [`NOT_WAITING`] otherwise.
    body_wait_since: AtomicU64,
    /// Bytes have arrived since the last response (or since accepted): the
    /// client has started a request, so the connection is no longer idle.
    request_started: AtomicBool,
    /// Asks the connection to close (eviction).
    close: Notify,
}

/// The open connections.
struct Registry {
    epoch: Instant,
    conns: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn insert(&self, id: u64) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            epoch: self.epoch,
            busy: AtomicBool::new(false),
            idle_since: AtomicU64::new(self.now_ms()),
            body_wait_since: AtomicU64::new(NOT_WAITING),
            request_started: AtomicBool::new(false),
            close: Notify::new(),
        });
        self.lock().insert(id, slot.clone());
        slot
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection that has waited longest on its client (see
    /// [`Slot::waiting_since`]). False when the server is working on a
    /// request on every connection.
    fn evict_longest_waiting(&self) -> bool {
        let mut conns = self.lock();
        let victim = conns
            .iter()
            .filter_map(|(id, s)| Some((*id, s.waiting_since()?)))
            .min_by_key(|&(_, since)| since)
            .map(|(id, _)| id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some(slot) => {
                slot.close.notify_one();
                true
            }
            None => false,
        }
    }
}

impl Slot {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Since when (ms since the epoch) the connection has been waiting on
    /// its client: idle or sending a request's head (since its last
    /// response or since accepted), or sending a body its handler waits for
    /// (since the handler first had to wait). `None` while the server works
    /// on its request (body complete, or the handler not reading it): such
    /// a connection is never evicted.
    fn waiting_since(&self) -> Option<u64> {
        if !self.busy.load(Ordering::Relaxed) {
            return Some(self.idle_since.load(Ordering::Relaxed));
        }
        match self.body_wait_since.load(Ordering::Relaxed) {
            NOT_WAITING => None,
            since => Some(since),
        }
    }

    /// A request's head has arrived: the server works on it.
    fn start_request(&self) {
        self.body_wait_since.store(NOT_WAITING, Ordering::Relaxed);
        self.busy.store(true, Ordering::Relaxed);
    }
}

/// Marks a connection idle again when its request is done (or dropped).
struct Serving<'a>(&'a Slot);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.request_started.store(false, Ordering::Relaxed);
        self.0.body_wait_since.store(NOT_WAITING, Ordering::Relaxed);
        self.0.busy.store(false, Ordering::Relaxed);
    }
}

/// The connection's socket, noting in its [`Slot`] when bytes of a new
/// request arrive (so an idle connection is told from one sending a head).
struct Watched<IO> {
    inner: IO,
    slot: Arc<Slot>,
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.slot.request_started.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// requests in progress finish for up to `grace`. False when some did not.
/// Connection metrics go to the process's `metrics` recorder, which must
/// be installed before (`keyward_issuer::metrics::install`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<TlsServer>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> bool {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        conns: Mutex::new(HashMap::new()),
    });
    if let Some(files) = open_files_limit() {
        // The store, the listener, logs and the like need some too.
        if limits.max_connections as u64 + 64 > files {
            tracing::warn!(
                max_connections = limits.max_connections,
                open_files_limit = files,
                "max_connections is not well below the open-files limit: connections beyond it fail to be accepted; raise `ulimit -n` or lower max_connections"
            );
        }
    }
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    let m = conn_metrics();
    let mut next_id = 0u64;
    // When "every connection is busy" was last logged: once a second at most.
    let mut warned: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let evicted = registry.evict_longest_waiting();
                let p = if evicted {
                    tokio::time::timeout(EVICTION_WAIT, permits.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                if evicted {
                    m.evicted.increment(1);
                }
                match p {
                    Some(p) => {
                        tracing::debug!(%peer, "connection limit reached: closed the connection that waited longest on its client");
                        p
                    }
                    None => {
                        m.refused.increment(1);
                        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            warned = Some(Instant::now());
                            tracing::warn!(%peer, max = limits.max_connections, "connection limit reached and the server is working on a request on every connection: closing new connections");
                        }
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let slot = registry.insert(id);
        m.open.increment(1.0);
        let (builder, registry, router, mut stopped, tls) = (
            builder.clone(),
            registry.clone(),
            router.clone(),
            stopped.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            let conn = Conn {
                builder: &builder,
                slot: &slot,
                limits,
                peer,
            };
            match tls {
                None => conn.drive(stream, None, router, &mut stopped).await,
                Some(tls) => {
                    // Evicted or stopped while shaking hands: closed.
                    let shake = tls.accept(stream, limits.header_read_timeout);
                    let shaken = tokio::select! {
                        r = shake => match r {
                            Ok(done) => Some(done),
                            Err(e) => {
                                metrics::counter!("keyward_tls_handshake_failures_total").increment(1);
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                None
                            }
                        },
                        _ = slot.close.notified() => None,
                        _ = stopped.changed() => None,
                    };
                    if let Some((stream, cert)) = shaken {
                        conn.drive(stream, cert, router, &mut stopped).await;
                    }
                }
            }

            // Dropping the connection closes the socket.
            registry.remove(id);
            m.open.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let finished = tokio::time::timeout(grace, permits.acquire_many(all))
        .await
        .is_ok();
    if !finished {
        tracing::warn!(
            "in-flight requests did not finish within {} s",
            grace.as_secs()
        );
    }
    finished
}

/// One accepted connection, served until it closes.
struct Conn<'a> {
    builder: &'a auto::Builder<TokioExecutor>,
    slot: &'a Arc<Slot>,
    limits: Limits,
    peer: std::net::SocketAddr,
}

impl Conn<'_> {
    /// Serves HTTP on `stream` (HTTP/1.1 or HTTP/2) until the client or
    /// the server closes it; `cert` is the client's TLS certificate.
    async fn drive<IO>(
        self,
        stream: IO,
        cert: Option<Arc<PeerCertificate>>,
        router: Router,
        stopped: &mut watch::Receiver<bool>,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            builder,
            slot,
            limits,
            peer,
        } = self;
        let m = conn_metrics();
        {
            let body_timeout = limits.body_read_timeout;
            let svc = {
                let slot = slot.clone();
                service_fn(move |req: Request<Incoming>| {
                    slot.start_request();
                    let mut req = req.map(|b| TimedBody::new(b, body_timeout, Some(slot.clone())));
                    if let Some(cert) = &cert {
                        req.extensions_mut().insert(cert.clone());
                    }
                    // The client's address (the device page limits wrong
                    // user codes per address).
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    let call = router.clone().oneshot(req);
                    let slot = slot.clone();
                    async move {
                        let _serving = Serving(&slot);
                        call.await
                    }
                })
            };
            let io = Watched {
                inner: stream,
                slot: slot.clone(),
            };
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            let hyper_timeout = |e: &(dyn std::error::Error + Send + Sync + 'static)| {
                e.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout)
            };
            tokio::pin!(conn);
            // The idle deadline; once closing, how long a connection with no
            // request in progress may take to finish writing its last answer.
            let idle = tokio::time::sleep(limits.idle_timeout);
            tokio::pin!(idle);
            let mut closing = Closing::No;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            if hyper_timeout(&*e) {
                                // hyper's header timer also runs while a
                                // keep-alive connection is idle: with no byte
                                // of a request, it was an idle connection.
                                if slot.request_started.load(Ordering::Relaxed) {
                                    m.header_timeout.increment(1);
                                } else {
                                    m.idle.increment(1);
                                }
                            }
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    // Evicted: the connection that waited longest on its
                    // client (idle, sending a head, or a body its handler
                    // waits for); closed at once to free its place.
                    _ = slot.close.notified(), if closing == Closing::No => {
                        if slot.waiting_since().is_some() {
                            break;
                        }
                        // The server started working on its request
                        // meanwhile: answer that first.
                        conn.as_mut().graceful_shutdown();
                        closing = Closing::AfterRequest;
                    }
                    // The server stops: no new request; one in progress is
                    // answered first, a last answer is finished writing.
                    _ = stopped.changed(), if closing == Closing::No => {
                        conn.as_mut().graceful_shutdown();
                        closing = if slot.busy.load(Ordering::Relaxed) {
                            Closing::AfterRequest
                        } else {
                            idle.as_mut().reset(Instant::now() + CLOSE_SOON);
                            Closing::Soon
                        };
                    }
                    _ = &mut idle, if closing != Closing::AfterRequest => {
                        if closing == Closing::Soon {
                            break;
                        }
                        // A request in progress, or the head of one on its
                        // way (hyper's header timer watches that): not idle.
                        let left = if slot.busy.load(Ordering::Relaxed)
                            || slot.request_started.load(Ordering::Relaxed)
                        {
                            limits.idle_timeout
                        } else {
                            let since = slot.idle_since.load(Ordering::Relaxed);
                            let idle_for = Duration::from_millis(slot.now_ms().saturating_sub(since));
                            if idle_for >= limits.idle_timeout {
                                tracing::debug!(%peer, "closing an idle connection");
                                m.idle.increment(1);
                                break;
                            }
                            limits.idle_timeout - idle_for
                        };
                        idle.as_mut().reset(Instant::now() + left);
                    }
                }
            }
        }
    }
}

/// The soft open-files limit (`RLIMIT_NOFILE`), where the system says
/// (Linux: `/proc/self/limits`); `None` when unknown or unlimited.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&text)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A request body that must arrive within a deadline, counted from the
/// first time a reader has to wait for it (no timer for a body that is
/// already there).
///
/// While it waits, the connection counts as waiting on its client (see
/// [`Slot::waiting_since`]), so it can be evicted at `max_connections`.
pub struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    /// The connection, told when the handler waits for body bytes.
    slot: Option<Arc<Slot>>,
    /// When the handler first had to wait (ms since the registry's epoch).
    waiting_from: Option<u64>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration, slot: Option<Arc<Slot>>) -> TimedBody {
        TimedBody {
            inner,
            timeout,
            deadline: None,
            slot,
            waiting_from: None,
        }
    }

    /// The handler waits for the client: the connection may be evicted.
    fn waiting(&mut self) {
        if let Some(slot) = &self.slot {
            let since = *self.waiting_from.get_or_insert_with(|| slot.now_ms());
            slot.body_wait_since.store(since, Ordering::Relaxed);
        }
    }

    /// The server has what it waited for (or gave up on it): the request
    /// is the server's work again, protected from eviction.
    fn not_waiting(&self) {
        if let (Some(slot), Some(since)) = (&self.slot, self.waiting_from) {
            // Only this body's own mark: never another request's.
            let _ = slot.body_wait_since.compare_exchange(
                since,
                NOT_WAITING,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        self.not_waiting();
    }
}

/// Errors are `io::Error`s: hyper's read errors wrapped, and a deadline
/// passed as kind `TimedOut`, which the issuer answers with 408.
impl Body for TimedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.not_waiting();
                Poll::Ready(r.map(|f| f.map_err(std::io::Error::other)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.not_waiting();
                        if let Some(m) = METRICS.get() {
                            m.body_timeout.increment(1);
                        }
                        Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "the request body did not arrive within {} s",
                                timeout.as_secs()
                            ),
                        ))))
                    }
                    Poll::Pending => {
                        this.waiting();
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `s` was asked to close (takes the notification).
    async fn closed(s: &Slot) -> bool {
        tokio::time::timeout(Duration::from_millis(10), s.close.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn eviction_takes_the_longest_waiting_on_its_client_never_one_being_worked_on() {
        let r = Registry {
            epoch: Instant::now(),
            conns: Mutex::new(HashMap::new()),
        };
        let slots: Vec<Arc<Slot>> = (1..=5).map(|id| r.insert(id)).collect();
        for (s, since) in slots.iter().zip([500, 100, 300, 200, 50]) {
            s.idle_since.store(since, Ordering::Relaxed);
        }
        // 2 is the longest idle, but its request is being worked on; 5 has
        // a request whose handler has waited for its body since 400.
        slots[1].start_request();
        slots[4].start_request();
        slots[4].body_wait_since.store(400, Ordering::Relaxed);
        assert_eq!(slots[1].waiting_since(), None);
        assert_eq!(slots[4].waiting_since(), Some(400));
        // 4 goes, then 3, then 5 (its body wait), then 1.
        assert!(r.evict_longest_waiting());
        assert!(closed(&slots[3]).await && !closed(&slots[0]).await);
        assert!(r.evict_longest_waiting());
        assert!(closed(&slots[2]).await);
        assert!(r.evict_longest_waiting());
        assert!(closed(&slots[4]).await);
        assert!(r.evict_longest_waiting());
        assert!(closed(&slots[0]).await);
        assert!(!closed(&slots[1]).await);
        // Only the one being worked on is left.
        assert!(!r.evict_longest_waiting());
        assert_eq!(r.lock().len(), 1);
        // Once its handler waits for body bytes, it is waiting on the client.
        slots[1].body_wait_since.store(700, Ordering::Relaxed);
        assert!(r.evict_longest_waiting());
        assert!(closed(&slots[1]).await);
        assert!(!r.evict_longest_waiting());
        // Its answer made, a connection waits on its client again.
        drop(Serving(&slots[4]));
        assert_eq!(
            slots[4].body_wait_since.load(Ordering::Relaxed),
            NOT_WAITING
        );
        assert!(slots[4].waiting_since().is_some());
    }

    /// Reads until the peer closes; what it sent, or `None` if still open
    /// after `limit`.
    async fn read_to_close(c: &mut tokio::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt as _;
        let mut got = Vec::new();
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The real server with a handler the test holds up: a request the
    /// server is working on is never cut off for a newcomer, while one whose
    /// handler waits for body bytes that do not come is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_being_worked_on_is_never_evicted_one_waiting_on_its_body_is() {
        use tokio::io::AsyncWriteExt as _;
        let release = Arc::new(Semaphore::new(0));
        let router = Router::new()
            .route(
                "/slow",
                axum::routing::post({
                    let release = release.clone();
                    move |body: String| async move {
                        let _ = release.acquire().await.map(|p| p.forget());
                        format!("done {}", body.len())
                    }
                }),
            )
            .route("/fast", axum::routing::get(|| async { "fast" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_connections: 2,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            router,
            limits,
            None,
            async move {
                let _ = stop_rx.await;
            },
            Duration::from_secs(5),
        ));
        let connect = |bytes: &'static [u8]| async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(bytes).await.unwrap();
            c
        };
        let slow: &[u8] = b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok";
        // Both places taken by requests the server is working on.
        let mut worked_on = vec![connect(slow).await, connect(slow).await];
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut newcomer = connect(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let got = read_to_close(&mut newcomer, Duration::from_secs(2)).await;
        assert_eq!(got.as_deref(), Some(&b""[..]), "newcomer not refused");
        // Let one finish: it answers in full; its place is then idle.
        release.add_permits(1);
        let mut buf = [0u8; 1024];
        let mut answered = Vec::new();
        for c in &mut worked_on {
            let read = tokio::io::AsyncReadExt::read(c, &mut buf);
            answered.push(
                match tokio::time::timeout(Duration::from_secs(2), read).await {
                    Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                    _ => String::new(),
                },
            );
        }
        let done: Vec<bool> = answered
            .iter()
            .map(|t| t.starts_with("HTTP/1.1 200"))
            .collect();
        assert_eq!(done.iter().filter(|d| **d).count(), 1, "{answered:?}");
        assert!(
            answered.iter().any(|t| t.ends_with("done 2")),
            "{answered:?}"
        );
        // A request whose handler waits for a body that does not come takes
        // the idle connection's place (evicted); the next newcomer evicts it
        // in turn (the other request is being worked on) and is answered at once.
        let mut stalled =
            connect(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nab").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let mut c = connect(b"GET /fast HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
        let got = read_to_close(&mut c, Duration::from_secs(2))
            .await
            .expect("answered");
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let got = read_to_close(&mut stalled, Duration::from_secs(2)).await;
        assert_eq!(got.as_deref(), Some(&b""[..]), "stalled body not evicted");
        // The request still being worked on was not cut off: it is answered.
        release.add_permits(1);
        let c = &mut worked_on[done.iter().position(|d| !d).unwrap()];
        let read = tokio::io::AsyncReadExt::read(c, &mut buf);
        let n = tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .expect("answered")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("done 2"),
            "{text}"
        );
        let _ = stop_tx.send(());
        assert!(server.await.unwrap());
    }

    #[test]
    fn open_files_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             63318                63318                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited), None);
        assert_eq!(parse_open_files_limit(""), None);
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }
}
