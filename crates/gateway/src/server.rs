//! Starting and stopping the gateway: the gate, its background tasks, the
//! listeners and their connections: HTTP/1.1 and HTTP/2 (ALPN `h2` over
//! TLS, or the HTTP/2 preface in clear text), over TLS when `[tls]` is
//! configured (certificate files reloaded on change, see
//! `keyward_verify::tls`).
//!
//! The proxy runs thread-per-core, like nginx's and Envoy's workers: each of
//! `workers` OS threads runs its own single-threaded tokio runtime, accepts
//! from the shared listening socket, and has its own upstream connection
//! pools, so a request, its connection and its upstream connection never
//! change threads. Configuration, the gate and its caches, rate limiters and
//! metrics are shared (`Arc`). Background work (JWKS refresh, revocation
//! feed) and the admin listener run on the runtime that called
//! [`Gateway::start`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use keyward_verify::{
    DiscoveryError, Gate, JwksCache, JwksError, RevocationList, SenderConstraint, SharedClock,
    SystemClock, TlsServer,
};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::api_keys::ApiKeyStore;
use crate::config::{Auth, Config};
use crate::error::StartError;
use crate::metrics::RouteMetrics;
use crate::proxy::{Peer, RouteState, Shared};
use crate::ratelimit::{Limiter, RouteLimiter};
use crate::redis::Redis;
use crate::routes::{RouteEntry, RouteTable};
use crate::upstream::{Upstream, Upstreams};

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The reverse proxy. See [`Gateway::start`].
#[derive(Debug)]
pub struct Gateway;

/// A started gateway: its addresses and a handle to stop it. Dropping it
/// stops accepting connections and the background tasks at once; call
/// [`Running::shutdown`] to let in-flight requests finish first.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    gate: Option<Gate>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    workers: Vec<oneshot::Receiver<()>>,
    background: Vec<JoinHandle<()>>,
}

/// What one proxy worker thread serves with.
struct Worker {
    shared: Arc<Shared>,
    upstreams: Box<[Upstream]>,
}

impl Gateway {
    /// Builds everything from `config` and starts serving: the gate (keys
    /// fetched once now; failures are logged and fetching is retried on
    /// first use and in the background), JWKS refreshers, revocation feeds,
    /// upstream pools, rate limiters, then the proxy and admin listeners.
    /// With port 0 in `listen`, [`Running::addr`] has the port bound.
    pub async fn start(config: Config) -> Result<Running, StartError> {
        let prometheus = crate::metrics::install();

        // Bind first: an address in use is reported before anything else runs.
        let listener = bind(config.listen).await?;
        let admin_listener = match config.admin_listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let addr = local_addr(&listener, config.listen);
        let admin_addr = admin_listener
            .as_ref()
            .zip(config.admin_listen)
            .map(|(l, a)| local_addr(l, a));

        // Tokens are judged and revocations pruned at the same time.
        let clock: SharedClock = Arc::new(SystemClock);
        let mut background = Vec::new();
        // Redis, when configured: one try now (bounded), then the supervisor
        // keeps reconnecting; the gateway serves either way.
        let redis = match &config.redis {
            Some(rc) => {
                let redis = Redis::new(rc)?;
                if let Err(error) = redis.connect().await {
                    tracing::warn!(%error, "redis is unreachable at start: rate limits are per replica until it answers");
                }
                background.push(redis.spawn_supervisor());
                Some(redis)
            }
            None => None,
        };

        let gate = if config.issuers.is_empty() {
            None
        } else {
            let revocations = Arc::new(RevocationList::new());
            let mut b = Gate::builder()
                .dpop(dpop_policy(
                    &config.dpop,
                    redis.as_ref(),
                    config.redis.as_ref(),
                )?)
                .token_cache(config.token_cache)
                .revocations(revocations)
                .clock(clock.clone());
            for i in &config.issuers {
                b = b.issuer(i.policy.clone());
            }
            Some(b.build()?)
        };

        let tls = match &config.tls {
            Some(settings) => {
                let tls = TlsServer::load(settings.clone())?;
                background.push(tls.spawn_reloader());
                Some(tls)
            }
            None => None,
        };
        if let Some(gate) = &gate {
            for (issuer, error) in gate.warm_up().await {
                if is_untrusted_jwks_host(&error) {
                    return Err(StartError::UntrustedJwksHost {
                        issuer,
                        source: error,
                    });
                }
                tracing::warn!(%issuer, %error, "cannot fetch the issuer's keys yet; will retry in the background and on first use");
            }
            background.extend(gate.spawn_refreshers());
            for i in &config.issuers {
                if let Some(interval) = i.revocations {
                    background.push(crate::revocation_feed::spawn(
                        i.policy.issuer.clone(),
                        gate.revocations().clone(),
                        interval,
                        i.policy.cache.allow_http,
                        clock.clone(),
                    ));
                }
            }
        }

        let mut upstreams = Upstreams::default();

        let mut routes = Vec::with_capacity(config.routes.len());
        let mut entries = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let limiter = |spec: &Option<crate::config::RateSpec>, kind| -> Option<RouteLimiter> {
                let (spec, rl) = (spec.as_ref()?, r.rate_limit.as_ref()?);
                let local = Limiter::new(spec.rate, rl.burst_for(spec), rl.max_keys);
                Some(RouteLimiter::new(local, redis.clone(), &r.name, kind))
            };
            let (per_subject, per_client, per_ip) = match &r.rate_limit {
                Some(rl) => (
                    limiter(&rl.per_subject, "subject"),
                    limiter(&rl.per_client, "client"),
                    limiter(&rl.per_ip, "ip"),
                ),
                None => (None, None, None),
            };
            let allow_reason = match r.auth {
                Auth::Anonymous => "anonymous",
                Auth::Token { .. } => "token",
            };
            entries.push(RouteEntry {
                pattern: r.pattern.clone(),
                methods: r.methods.clone().map(Vec::into_boxed_slice),
            });
            routes.push(RouteState {
                upstream: upstreams.index(&r.upstream),
                per_subject,
                per_client,
                per_ip,
                metrics: RouteMetrics::new(&r.name, allow_reason),
                config: r.clone(),
            });
        }
        let api_keys = if config.routes.iter().any(|r| r.api_keys) {
            Some(ApiKeyStore::new(&config.api_keys, clock.clone())?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            gate: gate.clone(),
            api_keys,
            table: RouteTable::new(entries),
            routes: routes.into_boxed_slice(),
            identity_headers: config.identity_headers.clone(),
            realm: config.realm.clone(),
            verify_seconds: crate::metrics::verify_seconds(),
            public_origin: config.dpop.public_origin.clone(),
            forwarded_certificate: config.forwarded_certificate.clone(),
            mtls_issuers: config
                .issuers
                .iter()
                .filter(|i| i.policy.sender_constraint == Some(SenderConstraint::Mtls))
                .map(|i| i.policy.issuer.clone())
                .collect(),
        });

        let (stop, stopped) = watch::channel(false);
        let listener = listener.into_std().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let upstreams = Arc::new(upstreams);
        let mut workers = Vec::with_capacity(config.workers);
        for n in 0..config.workers {
            let socket = listener.try_clone().map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
            let (done, finished) = oneshot::channel();
            let (shared, upstreams, stopped) = (shared.clone(), upstreams.clone(), stopped.clone());
            let grace = config.shutdown_grace;
            let tls = tls.clone();
            std::thread::Builder::new()
                .name(format!("keyward-gw-{n}"))
                .spawn(move || {
                    run_worker(socket, shared, &upstreams, stopped, grace, tls);
                    let _ = done.send(());
                })
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
            workers.push(finished);
        }
        drop(listener);
        let mut servers = Vec::new();
        if let Some(l) = admin_listener {
            let admin = Arc::new(Admin {
                gate: gate.clone(),
                prometheus,
                redis: redis.clone(),
            });
            servers.push(tokio::spawn(serve(
                l,
                stopped,
                config.shutdown_grace,
                None,
                move |_peer: Arc<Peer>, req| {
                    let admin = admin.clone();
                    async move { admin.handle(&req) }
                },
            )));
        }
        tracing::info!(%addr, admin = ?admin_addr, routes = config.routes.len(), issuers = config.issuers.len(), "gateway started");
        Ok(Running {
            addr,
            admin_addr,
            gate,
            stop,
            servers,
            workers,
            background,
        })
    }
}

/// Whether discovery refused the `jwks_uri` for its host.
fn is_untrusted_jwks_host(e: &JwksError) -> bool {
    matches!(
        e,
        JwksError::Discovery(DiscoveryError::UntrustedJwksHost { .. })
    )
}

/// What OIDC discovery says now about one issuer whose keys it finds
/// ([`Gateway::check_discovery`]).
#[derive(Debug)]
pub struct DiscoveryCheck {
    /// The issuer.
    pub issuer: String,
    /// The `jwks_uri` found, or why none is usable.
    pub result: Result<String, JwksError>,
}

impl DiscoveryCheck {
    /// Whether the `jwks_uri` is refused for its host: the gateway would
    /// not start with this configuration.
    pub fn untrusted_host(&self) -> bool {
        self.result.as_ref().is_err_and(is_untrusted_jwks_host)
    }
}

impl Gateway {
    /// Runs OIDC discovery for every issuer whose keys it finds, as
    /// [`Gateway::start`] would (for `keyward gateway --check`).
    pub async fn check_discovery(config: &Config) -> Vec<DiscoveryCheck> {
        let mut out = Vec::new();
        for i in &config.issuers {
            let p = &i.policy;
            let result =
                match JwksCache::new(&p.issuer, p.source.clone(), p.cache.clone(), &p.algorithms) {
                    Ok(cache) => match cache.discover_jwks_uri().await {
                        Some(r) => r,
                        None => continue,
                    },
                    Err(e) => Err(e),
                };
            out.push(DiscoveryCheck {
                issuer: p.issuer.clone(),
                result,
            });
        }
        out
    }
}

impl Running {
    /// The proxy's bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's bound address, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The token gate (absent when every route is anonymous).
    pub fn gate(&self) -> Option<&Gate> {
        self.gate.as_ref()
    }

    /// Stops accepting connections, lets in-flight requests finish (up to
    /// the configured `shutdown_grace`), then stops the background tasks.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for s in std::mem::take(&mut self.servers) {
            let _ = s.await;
        }
        for w in std::mem::take(&mut self.workers) {
            let _ = w.await;
        }
        for b in std::mem::take(&mut self.background) {
            b.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for b in &self.background {
            b.abort();
        }
    }
}

/// One proxy worker: a single-threaded runtime serving `socket` until
/// `stop`, with its own upstream pools.
fn run_worker(
    socket: std::net::TcpListener,
    shared: Arc<Shared>,
    upstreams: &Upstreams,
    stop: watch::Receiver<bool>,
    grace: Duration,
    tls: Option<Arc<TlsServer>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a proxy worker runtime");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "a proxy worker cannot use the listening socket");
                return;
            }
        };
        let worker = Arc::new(Worker {
            shared,
            upstreams: upstreams.pools(),
        });
        serve(listener, stop, grace, tls, move |peer: Arc<Peer>, req| {
            let w = worker.clone();
            async move { w.shared.handle(&w.upstreams, &peer, req).await }
        })
        .await;
    });
    // Connections still open after the grace period are dropped here.
    rt.shutdown_timeout(Duration::from_millis(100));
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(l: &TcpListener, asked: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(asked)
}

/// How every accepted connection is served: HTTP/1.1 (keep-alive, a header
/// read timeout, upgrades such as WebSocket), or HTTP/2 when the client
/// starts with the HTTP/2 preface (h2c with prior knowledge; over TLS, the
/// protocol ALPN chose).
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Accepts connections (HTTP/1.1 with keep-alive, or HTTP/2; over TLS
/// with `tls`) until `stop`, then waits up to `grace` for open connections
/// to finish their requests.
async fn serve<F, Fut, B>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    tls: Option<Arc<TlsServer>>,
    handler: F,
) where
    F: Fn(Arc<Peer>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(connection_builder());
    let graceful = GracefulShutdown::new();
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
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        let svc = move |conn_peer: Arc<Peer>| {
            service_fn(move |req| {
                let fut = h(conn_peer.clone(), req);
                async move { Ok::<_, Infallible>(fut.await) }
            })
        };
        // Each connection is watched from its own task (after the TLS
        // handshake); shutdown below waits for every watched one.
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        // The handshake runs in the connection's task: a slow client never
        // holds up the accept loop.
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let svc = svc(Arc::new(Peer::new(peer)));
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    watcher.watch(conn.into_owned()).await
                }
                Some(tls) => match tls.accept(stream, HEADER_READ_TIMEOUT).await {
                    Ok((stream, cert)) => {
                        let svc = svc(Arc::new(Peer::tls(peer, cert)));
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(e) => {
                        crate::metrics::tls_handshake_failed();
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("in-flight requests did not finish within {} s", grace.as_secs());
        }
    }
}

/// The DPoP proof policy of `[dpop]`: the replay cache shared through Redis
/// when `redis_url` is set, else an in-memory one per replica, and, with a
/// nonce secret, server nonces (keyed by the secret and this gateway's public
/// origin, so every replica with the same file agrees).
fn dpop_policy(
    c: &crate::config::DpopConfig,
    redis: Option<&Arc<Redis>>,
    redis_config: Option<&crate::redis::RedisConfig>,
) -> Result<keyward_verify::DpopPolicy, StartError> {
    let nonces = match &c.nonce_secret_file {
        None => None,
        Some(path) => {
            let secret = std::fs::read(path).map_err(|source| StartError::NonceSecret {
                path: path.clone(),
                source,
            })?;
            let label = c.public_origin.as_deref().unwrap_or("keyward-gateway");
            Some(Arc::new(keyward_jose::NonceKey::derive(
                &secret, label, 300,
            )))
        }
    };
    Ok(keyward_verify::DpopPolicy {
        algorithms: c.algorithms.clone(),
        max_age_secs: c.max_age.as_secs() as i64,
        replay: match (redis, redis_config) {
            (Some(r), Some(rc)) => Arc::new(crate::redis::RedisReplayCache::new(
                r.clone(),
                rc.replay_fail_closed,
                c.replay_capacity,
            )),
            _ => Arc::new(keyward_verify::LocalReplayCache::new(c.replay_capacity)),
        },
        nonces,
        ..keyward_verify::DpopPolicy::default()
    })
}
