//! keyward-gateway: the token gate as a reverse proxy.
//!
//! It sits in front of HTTP services that should not verify tokens
//! themselves. For each request it finds the route (path pattern and
//! method, first match wins), verifies the bearer token with a
//! [`keyward_verify::Gate`] (remote JWKS, strict JOSE, issuer policy,
//! revocations), checks the route's scopes or permissions (TKeeper-style
//! templates filled from path parameters), applies rate limits, and
//! forwards the request to the route's upstream with the caller's identity
//! in headers (`X-Auth-Subject`, ...) instead of the token. Anything it
//! refuses never reaches the upstream.
//!
//! - [`config`]: the TOML file, checked into a [`Config`] with every error
//!   located (`FILE:LINE:COL`) and a fix ([`ConfigError`]);
//! - [`routes`]: compiled path patterns and the route table;
//! - [`proxy`]: the request path, on hyper directly, bodies streamed;
//! - [`identity_headers`]: stripping spoofed and adding real identity headers;
//! - [`upstream`]: pooled keep-alive clients per upstream; [`upstream_tls`]:
//!   TLS to `https://` upstreams; [`websocket`]: WebSocket upgrades passed
//!   through after authorisation;
//! - [`api_keys`]: API keys mapped to identities, stored hashed;
//! - [`ratelimit`], [`revocation_feed`]: per-route limits, the issuer's
//!   revocation feed;
//! - [`admin`], [`metrics`], [`decision`]: `/metrics` `/healthz` `/readyz`,
//!   Prometheus metrics, the per-request decision log;
//! - [`server`]: [`Gateway::start`] and [`Running`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = keyward_gateway::Config::load("gateway.toml")?;
//! let running = keyward_gateway::Gateway::start(config).await?;
//! eprintln!("gateway listening on http://{}", running.addr());
//! running.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod api_keys;
pub mod config;
pub mod decision;
pub mod error;
pub mod identity_headers;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod redis;
pub mod revocation_feed;
pub mod routes;
pub mod server;
pub mod upstream;
pub mod upstream_tls;
pub mod websocket;

pub use config::Config;
pub use error::{
    ApiKeyError, ConfigError, Diagnostic, Error, FeedError, PageError, RateError, RedisError,
    StartError,
};
pub use server::{Gateway, Running};
