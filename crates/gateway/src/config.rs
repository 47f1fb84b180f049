//! The gateway's configuration file: TOML as written (a private `raw` module, unknown
//! fields are errors) is checked and resolved into a [`Config`] before
//! anything listens. Every problem is reported with its place in the file
//! and a fix ([`ConfigError`]); all problems are reported at once where the
//! file could be read as TOML at all.
//!
//! The full reference, field by field, is `docs/gateway.md`.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;
use http::uri::Authority;
use http::Method;
use keyward_verify::check_url;
use keyward_verify::tls::DEFAULT_RELOAD_INTERVAL;
use keyward_verify::{
    CacheConfig, ClientCertificates, ForwardedCertificate, IssuerPolicy, KeySource, Requirement,
    SenderConstraint, Template, TlsSettings,
};
use toml::Spanned;

use crate::error::{line_col, ConfigError, Diagnostic};
use crate::identity_headers::IdentityHeaders;
use crate::ratelimit::Rate;
use crate::routes::Pattern;

/// Default `listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
/// Default route `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default verified-token cache capacity.
pub const DEFAULT_TOKEN_CACHE: usize = 10_000;
/// Default `rate_limit.max_keys`.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The file as written. Private: only [`Config`] leaves this module.
mod raw {
    use serde::Deserialize;
    use toml::Spanned;

    type S = Spanned<String>;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        pub listen: Option<S>,
        pub admin_listen: Option<S>,
        pub allow_anonymous: Option<bool>,
        pub realm: Option<S>,
        pub token_cache: Option<Spanned<usize>>,
        pub log_format: Option<S>,
        pub shutdown_grace: Option<S>,
        pub workers: Option<Spanned<usize>>,
        pub identity_headers: Option<IdentityHeaders>,
        pub dpop: Option<Dpop>,
        pub redis_url: Option<S>,
        pub redis_prefix: Option<S>,
        pub redis_timeout: Option<S>,
        pub dpop_replay_fail_closed: Option<Spanned<bool>>,
        pub tls: Option<Spanned<Tls>>,
        pub client_certificate_header: Option<Spanned<CertificateHeader>>,
        #[serde(default)]
        pub issuer: Vec<Spanned<Issuer>>,
        #[serde(default)]
        pub route: Vec<Spanned<Route>>,
        pub api_key_header: Option<S>,
        #[serde(default)]
        pub api_key: Vec<Spanned<crate::api_keys::RawKey>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Dpop {
        pub public_origin: Option<S>,
        pub algorithms: Option<Spanned<Vec<S>>>,
        pub max_age: Option<S>,
        pub nonce_secret_file: Option<S>,
        pub replay_capacity: Option<Spanned<usize>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct IdentityHeaders {
        pub subject: Option<S>,
        pub client: Option<S>,
        pub issuer: Option<S>,
        pub scopes: Option<S>,
        pub permissions: Option<S>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tls {
        pub cert: S,
        pub key: S,
        pub client_certificates: Option<S>,
        pub client_ca: Option<S>,
        pub self_signed_clients: Option<bool>,
        pub reload_interval: Option<S>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CertificateHeader {
        pub name: S,
        pub trusted_proxies: Spanned<Vec<S>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Issuer {
        pub issuer: S,
        pub audiences: Spanned<Vec<S>>,
        pub algorithms: Option<Spanned<Vec<S>>>,
        pub revocations: Option<bool>,
        pub revocations_poll: Option<S>,
        pub jwks_uri: Option<S>,
        pub jwks_file: Option<S>,
        pub jwks_hosts: Option<Vec<S>>,
        pub allow_http: Option<bool>,
        pub typ: Option<S>,
        pub leeway: Option<S>,
        pub required_claims: Option<Vec<S>>,
        pub max_lifetime: Option<S>,
        pub allow_wildcard_all: Option<bool>,
        pub sender_constraint: Option<S>,
        pub cache: Option<Cache>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Cache {
        pub min_ttl: Option<S>,
        pub max_ttl: Option<S>,
        pub default_ttl: Option<S>,
        pub unknown_kid_cooldown: Option<S>,
        pub max_stale: Option<S>,
        pub fetch_timeout: Option<S>,
        pub max_body_bytes: Option<Spanned<usize>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Route {
        pub name: Option<S>,
        pub path: S,
        pub methods: Option<Spanned<Vec<S>>>,
        pub upstream: S,
        pub permissions: Option<Spanned<Permissions>>,
        pub scopes: Option<Spanned<Vec<S>>>,
        pub anonymous: Option<Spanned<bool>>,
        pub issuers: Option<Spanned<Vec<S>>>,
        pub forward_authorization: Option<bool>,
        pub preserve_host: Option<bool>,
        pub strip_prefix: Option<S>,
        pub timeout: Option<S>,
        pub rate_limit: Option<Spanned<RateLimit>>,
        pub sender_constraint: Option<S>,
        pub api_keys: Option<Spanned<bool>>,
        pub websocket: Option<bool>,
        pub upstream_tls: Option<Spanned<crate::upstream_tls::RawUpstreamTls>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Permissions {
        pub all_of: Option<Spanned<Vec<S>>>,
        pub any_of: Option<Spanned<Vec<S>>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RateLimit {
        pub per_subject: Option<S>,
        pub per_client: Option<S>,
        pub per_ip: Option<S>,
        pub burst: Option<Spanned<u32>>,
        pub max_keys: Option<Spanned<usize>>,
    }
}

/// The resolved, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`, `/healthz`, `/readyz`), if any.
    pub admin_listen: Option<SocketAddr>,
    /// Whether routes that say nothing about authentication are anonymous.
    pub allow_anonymous: bool,
    /// The `realm` of `WWW-Authenticate`.
    pub realm: String,
    /// Verified-token cache capacity (0: off).
    pub token_cache: usize,
    /// Logs as JSON lines.
    pub json_logs: bool,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Proxy worker threads (default: one per core).
    pub workers: usize,
    /// Identity header names.
    pub identity_headers: IdentityHeaders,
    /// Redis for state shared between replicas (`redis_url`), if set.
    pub redis: Option<crate::redis::RedisConfig>,
    /// TLS termination of the proxy listener, if configured.
    pub tls: Option<TlsSettings>,
    /// Where a trusted front proxy passes the client's certificate.
    pub forwarded_certificate: Option<ForwardedCertificate>,
    /// Trusted issuers, in file order.
    pub issuers: Vec<IssuerConfig>,
    /// Routes, in file order (the first match wins).
    pub routes: Vec<RouteConfig>,
    /// How DPoP proofs are checked.
    pub dpop: DpopConfig,
    /// API keys and the header they come in.
    pub api_keys: crate::api_keys::ApiKeysConfig,
}

/// The `[dpop]` table: how DPoP proofs (RFC 9449) are checked.
#[derive(Clone, Debug)]
pub struct DpopConfig {
    /// The scheme and authority clients address (`https://api.example`),
    /// against which a proof's `htu` is checked; default `http://` and the
    /// request's `Host`.
    pub public_origin: Option<String>,
    /// Accepted proof algorithms.
    pub algorithms: Vec<keyward_jose::Algorithm>,
    /// Oldest accepted proof `iat`.
    pub max_age: Duration,
    /// A file whose bytes key the server nonces (required when set).
    pub nonce_secret_file: Option<PathBuf>,
    /// Proof `jti`s remembered per replica.
    pub replay_capacity: usize,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            public_origin: None,
            algorithms: keyward_jose::dpop::DEFAULT_DPOP_ALGORITHMS.to_vec(),
            max_age: Duration::from_secs(60),
            nonce_secret_file: None,
            replay_capacity: keyward_verify::dpop::DEFAULT_REPLAY_CAPACITY,
        }
    }
}

/// Reads a sender-constraint name (`"dpop"`).
fn sender_constraint(v: &Option<Spanned<String>>, c: &mut Checker<'_>) -> Option<SenderConstraint> {
    let v = v.as_ref()?;
    let found = SenderConstraint::parse(v.get_ref());
    if found.is_none() {
        c.at(
            v,
            format!("sender_constraint {:?} is not known", v.get_ref()),
            "write sender_constraint = \"dpop\" (DPoP-bound tokens, RFC 9449) or \"mtls\" (certificate-bound tokens, RFC 8705)",
        );
    }
    found
}

fn resolve_dpop(raw: Option<&raw::Dpop>, base_dir: &Path, c: &mut Checker<'_>) -> DpopConfig {
    let mut out = DpopConfig::default();
    let Some(raw) = raw else { return out };
    if let Some(o) = &raw.public_origin {
        let v = o.get_ref().trim_end_matches('/');
        match url::Url::parse(v) {
            Ok(u) if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && u.query().is_none()
                && !v.ends_with('/') =>
            {
                out.public_origin = Some(v.to_string());
            }
            _ => c.at(
                o,
                format!("public_origin {:?} is not a scheme and authority", o.get_ref()),
                "write the origin clients use, e.g. public_origin = \"https://api.example\" (no path)",
            ),
        }
    }
    if let Some(list) = &raw.algorithms {
        let names: Vec<&str> = list
            .get_ref()
            .iter()
            .map(|n| n.get_ref().as_str())
            .collect();
        match IssuerPolicy::parse_algorithms(&names) {
            Ok(a) => out.algorithms = a,
            Err(e) => c.at(
                list,
                format!("dpop.algorithms: {e}"),
                "list algorithms such as [\"ES256\", \"EdDSA\"]",
            ),
        }
    }
    out.max_age = c.positive("max_age", &raw.max_age, out.max_age);
    if let Some(f) = &raw.nonce_secret_file {
        let path = base_dir.join(f.get_ref());
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() >= 32 => out.nonce_secret_file = Some(path),
            _ => c.at(
                f,
                format!("nonce_secret_file {} is not a file of at least 32 bytes", path.display()),
                "create one with: head -c 32 /dev/urandom > dpop-nonce.key (the same file on every replica)",
            ),
        }
    }
    if let Some(n) = &raw.replay_capacity {
        if *n.get_ref() == 0 {
            c.at(
                n,
                "replay_capacity must be at least 1",
                "size it as proofs per second x max_age, e.g. 100000",
            );
        } else {
            out.replay_capacity = *n.get_ref();
        }
    }
    out
}

/// One trusted issuer.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    /// Verification policy and key source.
    pub policy: IssuerPolicy,
    /// Poll interval of the issuer's `/revocations` feed, when followed.
    pub revocations: Option<Duration>,
}

/// What a route asks of the caller.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Nothing: tokens are not looked at.
    Anonymous,
    /// A valid token, and these requirements.
    Token {
        /// Accept only tokens of these issuers (their `issuer` values).
        issuers: Option<Vec<String>>,
        /// Scopes that must all be present.
        scopes: Option<Requirement>,
        /// Permissions (all of or any of).
        permissions: Option<Requirement>,
        /// Tokens must be sender-constrained this way.
        sender_constraint: Option<SenderConstraint>,
    },
}

/// A rate as written and as parsed.
#[derive(Clone, Debug)]
pub struct RateSpec {
    /// As written (`"100/s"`).
    pub text: String,
    /// As parsed.
    pub rate: Rate,
}

/// Per-route rate limits.
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    /// Keyed by the token's `sub`.
    pub per_subject: Option<RateSpec>,
    /// Keyed by the token's client (`client_id`, else `azp`).
    pub per_client: Option<RateSpec>,
    /// Keyed by the peer IP address.
    pub per_ip: Option<RateSpec>,
    /// Bucket size; default: one second's worth of the rate, at least 1.
    pub burst: Option<u32>,
    /// Most keys tracked per limiter.
    pub max_keys: usize,
}

impl RateLimitConfig {
    /// The burst for `rate`.
    pub fn burst_for(&self, rate: &RateSpec) -> u32 {
        self.burst
            .unwrap_or_else(|| (rate.rate.per_sec.ceil() as u32).max(1))
    }
}

/// An upstream origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `http://host:port` or `https://host:port`.
    pub origin: String,
    /// `host:port`.
    pub authority: Authority,
    /// TLS settings, for `https://`.
    pub tls: Option<crate::upstream_tls::UpstreamTls>,
}

/// One route.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Label for metrics and logs (default: the path pattern).
    pub name: String,
    /// Line of the route's `path` in the file.
    pub line: usize,
    /// The compiled path pattern.
    pub pattern: Pattern,
    /// Allowed methods (`None`: any).
    pub methods: Option<Vec<Method>>,
    /// Where requests go.
    pub upstream: UpstreamUrl,
    /// What the caller must present.
    pub auth: Auth,
    /// Forward the caller's `Authorization` header upstream.
    pub forward_authorization: bool,
    /// Keep the caller's `Host` instead of the upstream's.
    pub preserve_host: bool,
    /// Literal path prefix removed before forwarding.
    pub strip_prefix: Option<String>,
    /// Longest wait for the upstream's response headers.
    pub timeout: Duration,
    /// Rate limits.
    pub rate_limit: Option<RateLimitConfig>,
    /// A sender constraint every token on this route must carry.
    pub sender_constraint: Option<SenderConstraint>,
    /// Accepts API keys (in `api_key_header`) besides tokens.
    pub api_keys: bool,
    /// Passes WebSocket upgrades (HTTP/1.1 `Upgrade: websocket`) through
    /// to the upstream once the handshake request has passed the gate.
    pub websocket: bool,
}

/// Collects diagnostics with byte offsets; converted to lines at the end.
pub(crate) struct Checker<'a> {
    pub(crate) text: &'a str,
    found: Vec<(usize, String, String)>,
}

const DURATION_FIX: &str = "write a duration such as \"500ms\", \"30s\", \"5m\", \"24h\"";

impl<'a> Checker<'a> {
    pub(crate) fn err(&mut self, at: usize, message: impl Into<String>, fix: impl Into<String>) {
        self.found.push((at, message.into(), fix.into()));
    }

    pub(crate) fn at<T>(
        &mut self,
        s: &Spanned<T>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.err(s.span().start, message, fix);
    }

    /// Offset of byte `inner` of a string value spanning `span`.
    fn inside(&self, span: Range<usize>, inner: usize) -> usize {
        let t = &self.text.as_bytes()[span.start.min(self.text.len())..];
        let quote = if t.starts_with(b"\"\"\"") || t.starts_with(b"'''") {
            3
        } else if t.starts_with(b"\"") || t.starts_with(b"'") {
            1
        } else {
            0
        };
        span.start + quote + inner
    }

    fn duration(
        &mut self,
        field: &str,
        v: &Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let Some(v) = v else { return default };
        match humantime::parse_duration(v.get_ref().trim()) {
            Ok(d) => d,
            Err(e) => {
                self.at(
                    v,
                    format!("{field}: {:?} is not a duration ({e})", v.get_ref()),
                    DURATION_FIX,
                );
                default
            }
        }
    }

    fn positive(
        &mut self,
        field: &str,
        v: &Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(field, v, default);
        if d.is_zero() {
            if let Some(v) = v {
                self.at(v, format!("{field} must be longer than 0"), DURATION_FIX);
            }
            return default;
        }
        d
    }

    fn addr(&mut self, field: &str, v: &Spanned<String>) -> Option<SocketAddr> {
        match v.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.at(
                    v,
                    format!("{field}: {:?} is not an IP address and port", v.get_ref()),
                    format!(
                        "write {field} = \"127.0.0.1:8081\" (or \"0.0.0.0:8081\", \"[::1]:8081\")"
                    ),
                );
                None
            }
        }
    }

    fn finish(self, file: &Path) -> Result<(), ConfigError> {
        if self.found.is_empty() {
            return Ok(());
        }
        let mut found = self.found;
        found.sort_by_key(|(at, _, _)| *at);
        Err(ConfigError {
            file: file.to_path_buf(),
            diagnostics: found
                .into_iter()
                .map(|(at, message, fix)| {
                    let (line, column) = line_col(self.text, at);
                    Diagnostic {
                        line,
                        column,
                        message,
                        fix,
                    }
                })
                .collect(),
        })
    }
}

/// A fix for a TOML or type error, from its message and the text it
/// points at.
fn toml_fix(msg: &str, at: &str) -> String {
    let after = |needle: &str| msg.split_once(needle).map(|(_, r)| r.trim().to_string());
    if msg.starts_with("unknown field") {
        return match after("expected one of") {
            Some(list) => format!("remove it, or use one of the fields this table accepts: {list} (see docs/gateway.md)"),
            None => match after("expected") {
                Some(one) => format!("remove it; this table accepts only {one}"),
                None => "remove it".into(),
            },
        };
    }
    if let Some(field) = msg.strip_prefix("missing field ") {
        return format!(
            "add {} = ... to this table (see docs/gateway.md)",
            field.trim_matches('`')
        );
    }
    if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        if let Some(expected) = after("expected") {
            return match expected.as_str() {
                "a sequence" if at.starts_with("[route]") || at.starts_with("[issuer]") => {
                    "route and issuer sections repeat: write [[route]] / [[issuer]] (double brackets)".into()
                }
                "a sequence" => "write a list in brackets, e.g. [\"GET\", \"POST\"]".into(),
                "a string" => "write a string in double quotes, e.g. \"127.0.0.1:8081\" or \"30s\"".into(),
                "a boolean" => "write true or false (no quotes)".into(),
                "struct" | "a map" => "write a table: { key = value, ... }".into(),
                other if other.contains("integer") => "write a whole number (no quotes), e.g. 10000".into(),
                other => format!("write {other} here"),
            };
        }
    }
    if msg.contains("duplicate key") {
        return "remove one of the two definitions".into();
    }
    if msg.starts_with("unknown variant") {
        if let Some(list) = after("expected") {
            return format!("use one of: {list}");
        }
    }
    "correct the TOML here: strings in double quotes, lists in [...], inline tables in {...}, \
     repeated sections as [[route]] / [[issuer]]"
        .into()
}

fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Header names an identity header may not take.
pub(crate) const RESERVED_HEADERS: [&str; 16] = [
    "host",
    "authorization",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "cookie",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(
                path,
                Diagnostic {
                    line: 1,
                    column: 1,
                    message: format!("cannot read the configuration file: {e}"),
                    fix: "pass the path of a readable TOML file with --config".into(),
                },
            )
        })?;
        Config::parse(&text, path)
    }

    /// Checks configuration `text`; `file` names it in errors, and relative
    /// `jwks_file` paths are taken relative to its directory.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let raw: raw::Config = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            let (line, column) = line_col(text, at);
            let message = e.message().trim().to_string();
            let from = text.get(at..).unwrap_or_default();
            ConfigError::one(
                file,
                Diagnostic {
                    line,
                    column,
                    fix: toml_fix(&message, from),
                    message,
                },
            )
        })?;
        let mut c = Checker {
            text,
            found: Vec::new(),
        };
        let config = resolve(raw, file, &mut c);
        c.finish(file)?;
        Ok(config)
    }
}

fn resolve(raw: raw::Config, file: &Path, c: &mut Checker<'_>) -> Config {
    let listen = match &raw.listen {
        Some(l) => c.addr("listen", l),
        None => DEFAULT_LISTEN.parse().ok(),
    }
    .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default address"));
    let admin_listen = raw
        .admin_listen
        .as_ref()
        .and_then(|a| c.addr("admin_listen", a));
    if let (Some(a), Some(spanned)) = (admin_listen, &raw.admin_listen) {
        if a == listen && a.port() != 0 {
            c.at(
                spanned,
                "admin_listen is the same address as listen",
                "give the admin listener its own port, e.g. \"127.0.0.1:9091\"",
            );
        }
    }
    let realm = match &raw.realm {
        Some(r) => {
            let v = r.get_ref();
            if v.is_empty()
                || v.chars()
                    .any(|ch| ch == '"' || ch == '\\' || !(' '..='~').contains(&ch))
            {
                c.at(
                    r,
                    format!("realm {v:?} must be non-empty printable ASCII without '\"' or '\\'"),
                    "write realm = \"keyward\"",
                );
            }
            v.clone()
        }
        None => "keyward".to_string(),
    };
    let token_cache = raw
        .token_cache
        .as_ref()
        .map_or(DEFAULT_TOKEN_CACHE, |t| *t.get_ref());
    let json_logs = match &raw.log_format {
        None => false,
        Some(f) => match f.get_ref().as_str() {
            "text" => false,
            "json" => true,
            other => {
                c.at(
                    f,
                    format!("log_format {other:?} is not \"text\" or \"json\""),
                    "write log_format = \"json\" (or \"text\")",
                );
                false
            }
        },
    };
    let shutdown_grace = c.duration(
        "shutdown_grace",
        &raw.shutdown_grace,
        Duration::from_secs(30),
    );
    let identity_headers = resolve_identity_headers(raw.identity_headers.as_ref(), c);
    let dpop_base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let dpop = resolve_dpop(raw.dpop.as_ref(), &dpop_base, c);
    let redis = resolve_redis(&raw, c);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = match &raw.workers {
        None => cores,
        Some(w) if (1..=1024).contains(w.get_ref()) => *w.get_ref(),
        Some(w) => {
            c.at(w, format!("workers = {} is out of range", w.get_ref()), format!("write a number from 1 to 1024, or remove workers to use one per core ({cores} here)"));
            cores
        }
    };

    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let tls = raw
        .tls
        .as_ref()
        .and_then(|t| resolve_tls(t.get_ref(), &base_dir, c));
    let forwarded_certificate = raw
        .client_certificate_header
        .as_ref()
        .and_then(|h| resolve_certificate_header(h.get_ref(), c));
    let mut issuers: Vec<IssuerConfig> = Vec::new();
    let mut issuer_spans: Vec<(String, usize)> = Vec::new();
    for i in &raw.issuer {
        let name = i.get_ref().issuer.get_ref().clone();
        if let Some((_, first)) = issuer_spans.iter().find(|(n, _)| *n == name) {
            let (line, _) = line_col(c.text, *first);
            let spanned = &i.get_ref().issuer;
            c.at(
                spanned,
                format!("issuer {name:?} is already configured at line {line}"),
                "remove one of the two [[issuer]] sections, or merge their settings",
            );
            continue;
        }
        issuer_spans.push((name, i.get_ref().issuer.span().start));
        if let Some(ic) = resolve_issuer(i.get_ref(), &base_dir, c) {
            issuers.push(ic);
        }
    }

    let mut routes: Vec<RouteConfig> = Vec::new();
    for r in &raw.route {
        if let Some(rc) = resolve_route(
            r.get_ref(),
            raw.allow_anonymous.unwrap_or(false),
            &issuer_spans,
            &base_dir,
            c,
        ) {
            // A route matching exactly what an earlier one matches is dead.
            if let Some(prev) = routes.iter().find(|p| {
                p.pattern.same_shape(&rc.pattern)
                    && match (&p.methods, &rc.methods) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(a), Some(b)) => b.iter().all(|m| a.contains(m)),
                    }
            }) {
                c.at(
                    &r.get_ref().path,
                    format!(
                        "duplicate route: the route at line {} already matches every request this one would ({} {})",
                        prev.line,
                        describe_methods(&rc.methods),
                        rc.pattern.as_str()
                    ),
                    "remove this route, or change its path or methods (routes are tried in file order; the first match wins)",
                );
                continue;
            }
            routes.push(rc);
        }
    }
    if raw.route.is_empty() {
        c.err(
            c.text.len(),
            "no [[route]] is configured: the gateway would answer 404 to everything",
            "add a route: [[route]] path = \"/api/*\" upstream = \"http://127.0.0.1:9000\"",
        );
    }
    let needs_issuer = routes
        .iter()
        .any(|r| matches!(r.auth, Auth::Token { .. }) && !r.api_keys);
    let api_keys = crate::api_keys::resolve(raw.api_key_header.as_ref(), &raw.api_key, &routes, c);
    if needs_issuer && raw.issuer.is_empty() {
        c.err(
            c.text.len(),
            "routes require a token but no [[issuer]] is configured",
            "add [[issuer]] with issuer = \"https://auth.example\" and audiences = [\"api://default\"], or mark the routes anonymous = true",
        );
    }
    Config {
        file: file.to_path_buf(),
        listen,
        admin_listen,
        allow_anonymous: raw.allow_anonymous.unwrap_or(false),
        realm,
        token_cache,
        json_logs,
        shutdown_grace,
        workers,
        identity_headers,
        redis,
        tls,
        forwarded_certificate,
        issuers,
        routes,
        dpop,
        api_keys,
    }
}

/// `redis_url` and the settings that only make sense with it.
fn resolve_redis(raw: &raw::Config, c: &mut Checker<'_>) -> Option<crate::redis::RedisConfig> {
    use crate::redis::{RedisConfig, RedisUrl, DEFAULT_PREFIX, DEFAULT_TIMEOUT};
    let Some(u) = &raw.redis_url else {
        let alone = [&raw.redis_prefix, &raw.redis_timeout]
            .into_iter()
            .flatten()
            .map(|s| s.span().start);
        for at in alone.chain(raw.dpop_replay_fail_closed.iter().map(|b| b.span().start)) {
            c.err(
                at,
                "this setting needs redis_url",
                "add redis_url = \"redis://127.0.0.1:6379\", or remove the setting",
            );
        }
        return None;
    };
    let url = RedisUrl::parse(u.get_ref()).map_err(|e| {
        c.at(u, format!("redis_url: {e}"), "write redis_url = \"redis://[:PASSWORD@]HOST[:PORT][/DB]\" (or unix:///path/to/redis.sock)");
    });
    let prefix = raw
        .redis_prefix
        .as_ref()
        .map_or(DEFAULT_PREFIX.to_string(), |p| p.get_ref().clone());
    if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        if let Some(p) = &raw.redis_prefix {
            c.at(p, format!("redis_prefix {prefix:?} must be 1 to 64 printable ASCII characters without spaces"), "write a prefix naming this gateway deployment, e.g. redis_prefix = \"keyward:gw:prod:\"");
        }
    }
    let timeout = c.positive("redis_timeout", &raw.redis_timeout, DEFAULT_TIMEOUT);
    if timeout > Duration::from_secs(5) {
        if let Some(t) = &raw.redis_timeout {
            c.at(
                t,
                "redis_timeout above 5s would hold requests that long while Redis is slow",
                "write redis_timeout = \"10ms\"",
            );
        }
    }
    Some(RedisConfig {
        url: url.ok()?,
        prefix,
        timeout,
        replay_fail_closed: raw
            .dpop_replay_fail_closed
            .as_ref()
            .is_none_or(|b| *b.get_ref()),
    })
}

/// A path of the configuration, relative ones from the file's directory;
/// an error unless it names a file.
fn config_file(
    c: &mut Checker<'_>,
    base_dir: &Path,
    field: &str,
    v: &Spanned<String>,
) -> Option<PathBuf> {
    let path = PathBuf::from(v.get_ref());
    let path = if path.is_relative() {
        base_dir.join(path)
    } else {
        path
    };
    if v.get_ref().is_empty() || !path.is_file() {
        c.at(v, format!("{field} {} does not exist or is not a file", path.display()), "write the path of a PEM file (relative paths start at the configuration file's directory)");
        return None;
    }
    Some(path)
}

fn resolve_tls(t: &raw::Tls, base_dir: &Path, c: &mut Checker<'_>) -> Option<TlsSettings> {
    let cert = config_file(c, base_dir, "tls.cert", &t.cert);
    let key = config_file(c, base_dir, "tls.key", &t.key);
    let client_ca = match &t.client_ca {
        Some(v) => Some(config_file(c, base_dir, "tls.client_ca", v)?),
        None => None,
    };
    let client_certificates = match &t.client_certificates {
        None => ClientCertificates::Off,
        Some(v) => match ClientCertificates::parse(v.get_ref()) {
            Some(m) => m,
            None => {
                c.at(
                    v,
                    format!(
                        "tls.client_certificates {:?} is not off, optional or required",
                        v.get_ref()
                    ),
                    "write client_certificates = \"optional\" (or \"required\", \"off\")",
                );
                return None;
            }
        },
    };
    if client_certificates == ClientCertificates::Off {
        if let Some(v) = &t.client_ca {
            c.at(
                v,
                "tls.client_ca is set but client certificates are not requested",
                "add client_certificates = \"optional\" (or \"required\"), or remove client_ca",
            );
            return None;
        }
    }
    let reload_interval = c.positive(
        "tls.reload_interval",
        &t.reload_interval,
        DEFAULT_RELOAD_INTERVAL,
    );
    let mut settings = TlsSettings::new(cert?, key?);
    settings.client_certificates = client_certificates;
    settings.client_ca = client_ca;
    settings.self_signed_clients = t.self_signed_clients.unwrap_or(false);
    settings.reload_interval = reload_interval;
    // The files must load now, not at the first connection.
    if let Err(e) = keyward_verify::TlsServer::load(settings.clone()) {
        c.at(
            &t.cert,
            format!("tls: {e}"),
            "give a PEM certificate chain in cert and its PEM private key in key",
        );
        return None;
    }
    Some(settings)
}

fn resolve_certificate_header(
    h: &raw::CertificateHeader,
    c: &mut Checker<'_>,
) -> Option<ForwardedCertificate> {
    let name = match HeaderName::from_bytes(h.name.get_ref().as_bytes()) {
        Ok(n) if !RESERVED_HEADERS.contains(&n.as_str()) => n,
        _ => {
            c.at(
                &h.name,
                format!(
                    "client_certificate_header.name {:?} cannot be used",
                    h.name.get_ref()
                ),
                "write a header name of your own, such as \"X-Client-Cert\"",
            );
            return None;
        }
    };
    let mut trusted = Vec::new();
    for p in h.trusted_proxies.get_ref() {
        let text = p.get_ref();
        match keyward_verify::forwarded::parse_net(text) {
            Some(n) => trusted.push(n),
            None => c.at(
                p,
                format!("trusted_proxies: {text:?} is not an IP address or CIDR"),
                "write addresses such as \"10.0.0.0/8\" or \"127.0.0.1\"",
            ),
        }
    }
    if h.trusted_proxies.get_ref().is_empty() {
        c.at(
            &h.trusted_proxies,
            "trusted_proxies is empty: the header would never be believed",
            "list the front proxies' addresses, e.g. [\"10.0.0.5\"]",
        );
        return None;
    }
    (trusted.len() == h.trusted_proxies.get_ref().len()).then_some(ForwardedCertificate {
        header: name,
        trusted,
    })
}

fn resolve_identity_headers(
    raw: Option<&raw::IdentityHeaders>,
    c: &mut Checker<'_>,
) -> IdentityHeaders {
    let mut out = IdentityHeaders::default();
    let Some(raw) = raw else { return out };
    let mut seen: Vec<HeaderName> = Vec::new();
    type Field<'a> = (
        &'a Option<Spanned<String>>,
        &'a mut Option<HeaderName>,
        &'a str,
    );
    let fields: [Field<'_>; 5] = [
        (&raw.subject, &mut out.subject, "subject"),
        (&raw.client, &mut out.client, "client"),
        (&raw.issuer, &mut out.issuer, "issuer"),
        (&raw.scopes, &mut out.scopes, "scopes"),
        (&raw.permissions, &mut out.permissions, "permissions"),
    ];
    for (v, slot, field) in fields {
        let Some(v) = v else {
            if let Some(h) = slot.as_ref() {
                seen.push(h.clone());
            }
            continue;
        };
        if v.get_ref().is_empty() {
            *slot = None;
            continue;
        }
        match HeaderName::from_bytes(v.get_ref().as_bytes()) {
            Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) || h.as_str().starts_with("proxy-") => {
                c.at(
                    v,
                    format!(
                        "identity_headers.{field}: {:?} is a header the gateway manages itself",
                        v.get_ref()
                    ),
                    "choose another name, such as \"X-Auth-Subject\"",
                );
            }
            Ok(h) if seen.contains(&h) => {
                c.at(
                    v,
                    format!(
                        "identity_headers.{field}: {:?} is already used for another identity field",
                        v.get_ref()
                    ),
                    "give each identity field its own header name",
                );
            }
            Ok(h) => {
                seen.push(h.clone());
                *slot = Some(h);
            }
            Err(_) => c.at(
                v,
                format!(
                    "identity_headers.{field}: {:?} is not a valid header name",
                    v.get_ref()
                ),
                "use letters, digits and '-', such as \"X-Auth-Subject\"; \"\" disables the header",
            ),
        }
    }
    out
}

fn resolve_issuer(i: &raw::Issuer, base_dir: &Path, c: &mut Checker<'_>) -> Option<IssuerConfig> {
    let issuer = i.issuer.get_ref().clone();
    let allow_http = i.allow_http.unwrap_or(false);
    let mut ok = true;
    if issuer.is_empty() {
        c.at(
            &i.issuer,
            "issuer is empty",
            "write the exact iss value of the tokens, e.g. issuer = \"https://auth.example\"",
        );
        ok = false;
    }
    let url_fix = |what: &str| {
        format!("write {what} as https://host[:port][/path] (http:// is accepted for loopback hosts, or anywhere with allow_http = true)")
    };
    let source = match (&i.jwks_uri, &i.jwks_file) {
        (Some(u), Some(f)) => {
            c.at(f, "jwks_uri and jwks_file are both set", "keep one: jwks_uri to fetch the keys over HTTPS, or jwks_file to read them from disk");
            ok = false;
            KeySource::JwksUri(u.get_ref().clone())
        }
        (Some(u), None) => {
            if let Err(e) = check_url(u.get_ref(), allow_http) {
                c.at(u, format!("jwks_uri: {e}"), url_fix("jwks_uri"));
                ok = false;
            }
            KeySource::JwksUri(u.get_ref().clone())
        }
        (None, Some(f)) => {
            let path = PathBuf::from(f.get_ref());
            let path = if path.is_relative() {
                base_dir.join(path)
            } else {
                path
            };
            if f.get_ref().is_empty() || !path.is_file() {
                c.at(f, format!("jwks_file {} does not exist or is not a file", path.display()), "write the path of a JWK Set file (relative paths start at the configuration file's directory)");
                ok = false;
            }
            KeySource::File(path)
        }
        (None, None) => {
            if !issuer.is_empty() {
                if let Err(e) = check_url(&issuer, allow_http) {
                    c.at(&i.issuer, format!("issuer: {e} (its keys are found by OIDC discovery at {{issuer}}/.well-known/openid-configuration)"), format!("{}, or set jwks_uri / jwks_file", url_fix("the issuer")));
                    ok = false;
                }
            }
            KeySource::Discovery
        }
    };
    let revocations = if i.revocations.unwrap_or(false) {
        let poll = c.positive(
            "revocations_poll",
            &i.revocations_poll,
            Duration::from_secs(5),
        );
        if poll < Duration::from_millis(100) {
            if let Some(p) = &i.revocations_poll {
                c.at(
                    p,
                    "revocations_poll must be at least 100ms",
                    "write revocations_poll = \"5s\"",
                );
            }
        }
        if !matches!(source, KeySource::Discovery) && !issuer.is_empty() {
            if let Err(e) = check_url(&issuer, allow_http) {
                c.at(&i.issuer, format!("revocations = true needs the issuer to be a URL (its feed is {{issuer}}/revocations): {e}"), "make the issuer an https:// URL, or set revocations = false");
                ok = false;
            }
        }
        Some(poll)
    } else {
        if let Some(p) = &i.revocations_poll {
            c.at(
                p,
                "revocations_poll is set but revocations is not",
                "add revocations = true, or remove revocations_poll",
            );
        }
        None
    };

    let mut audiences = Vec::new();
    if i.audiences.get_ref().is_empty() {
        c.at(
            &i.audiences,
            "audiences is empty: every token of this issuer would be accepted whatever it is for",
            "list the audiences this gateway serves, e.g. audiences = [\"api://default\"]",
        );
        ok = false;
    }
    for a in i.audiences.get_ref() {
        if a.get_ref().is_empty() {
            c.at(
                a,
                "an audience cannot be empty",
                "write the aud value your tokens carry, e.g. \"api://default\"",
            );
            ok = false;
        }
        audiences.push(a.get_ref().clone());
    }
    let algorithms = match &i.algorithms {
        None => keyward_verify::IssuerPolicy::new("x").algorithms,
        Some(list) => {
            let mut bad = false;
            for a in list.get_ref() {
                if let Err(e) = IssuerPolicy::parse_algorithms(&[a.get_ref()]) {
                    c.at(a, format!("algorithms: {e}"), "use asymmetric algorithms only: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA ML-DSA-44 ML-DSA-65 ML-DSA-87 (none and HS* are never accepted)");
                    bad = true;
                }
            }
            if list.get_ref().is_empty() {
                c.at(list, "algorithms is empty", "remove algorithms to accept every asymmetric algorithm but ML-DSA, or list some, e.g. [\"RS256\", \"ES256\"]");
                bad = true;
            }
            if bad {
                ok = false;
                Vec::new()
            } else {
                IssuerPolicy::parse_algorithms(
                    &list
                        .get_ref()
                        .iter()
                        .map(|a| a.get_ref().as_str())
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default()
            }
        }
    };
    let typ = match &i.typ {
        None => "at+jwt".to_string(),
        Some(t) => {
            if t.get_ref().trim().is_empty() {
                c.at(t, "typ cannot be empty: the gate always requires a token type, so a refresh or ID token cannot pass as an access token", "remove typ (default \"at+jwt\", RFC 9068), or write the typ your issuer puts in access tokens");
                ok = false;
            }
            t.get_ref().clone()
        }
    };
    let leeway = c.duration("leeway", &i.leeway, Duration::from_secs(60));
    if leeway > Duration::from_secs(600) {
        if let Some(l) = &i.leeway {
            c.at(
                l,
                "leeway above 10m would accept long-expired tokens",
                "write leeway = \"60s\" (clocks should be synchronized)",
            );
        }
    }
    let required_claims = match &i.required_claims {
        None => IssuerPolicy::new("x").required_claims,
        Some(list) => {
            for r in list {
                if r.get_ref().is_empty() {
                    c.at(
                        r,
                        "a required claim name cannot be empty",
                        "write claim names, e.g. [\"iss\", \"sub\", \"exp\", \"iat\"]",
                    );
                }
            }
            list.iter().map(|r| r.get_ref().clone()).collect()
        }
    };
    let max_lifetime = i.max_lifetime.as_ref().map(|_| {
        c.positive("max_lifetime", &i.max_lifetime, Duration::from_secs(3600))
            .as_secs()
    });
    let mut cache = resolve_cache(i.cache.as_ref(), allow_http, c);
    match resolve_jwks_hosts(i, &source, c) {
        Some(hosts) => cache.jwks_hosts = hosts,
        None => ok = false,
    }
    let constraint = sender_constraint(&i.sender_constraint, c);
    if !ok || (i.sender_constraint.is_some() && constraint.is_none()) {
        return None;
    }
    let mut policy = IssuerPolicy::new(issuer);
    policy.source = source;
    policy.audiences = audiences;
    policy.algorithms = algorithms;
    policy.required_typ = Some(typ);
    policy.leeway_secs = leeway.as_secs();
    policy.required_claims = required_claims;
    policy.max_lifetime_secs = max_lifetime;
    policy.allow_wildcard_all = i.allow_wildcard_all.unwrap_or(false);
    policy.cache = cache;
    policy.sender_constraint = constraint;
    Some(IssuerConfig {
        policy,
        revocations,
    })
}

/// An issuer's `jwks_hosts`: where its discovery document may point its
/// keys besides the issuer's own host and port. `None` after an error.
fn resolve_jwks_hosts(
    i: &raw::Issuer,
    source: &KeySource,
    c: &mut Checker<'_>,
) -> Option<Vec<String>> {
    let Some(list) = &i.jwks_hosts else {
        return Some(Vec::new());
    };
    let mut ok = true;
    if *source != KeySource::Discovery {
        if let Some(first) = list.first() {
            c.at(first, "jwks_hosts applies only to keys found by discovery, and this issuer sets jwks_uri or jwks_file", "remove jwks_hosts (a configured jwks_uri is trusted as written)");
            ok = false;
        }
    }
    let mut hosts = Vec::with_capacity(list.len());
    for h in list {
        match keyward_verify::parse_jwks_host(h.get_ref()) {
            Some((host, port)) => hosts.push(match port {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }),
            None => {
                c.at(h, format!("jwks_hosts: {:?} is not a host or host:port", h.get_ref()), "write a host name such as \"keys.example\" (any port) or \"keys.example:8443\" (that port only), without scheme or path");
                ok = false;
            }
        }
    }
    ok.then_some(hosts)
}

fn resolve_cache(raw: Option<&raw::Cache>, allow_http: bool, c: &mut Checker<'_>) -> CacheConfig {
    let d = CacheConfig::default();
    let Some(r) = raw else {
        return CacheConfig { allow_http, ..d };
    };
    let min_ttl = c.duration("cache.min_ttl", &r.min_ttl, d.min_ttl);
    let max_ttl = c.duration("cache.max_ttl", &r.max_ttl, d.max_ttl);
    if min_ttl > max_ttl {
        if let Some(s) = r.min_ttl.as_ref().or(r.max_ttl.as_ref()) {
            c.at(
                s,
                "cache.min_ttl is longer than cache.max_ttl",
                "make min_ttl at most max_ttl, e.g. min_ttl = \"30s\", max_ttl = \"24h\"",
            );
        }
    }
    let max_body_bytes = match &r.max_body_bytes {
        Some(b) if *b.get_ref() < 1024 => {
            c.at(
                b,
                "cache.max_body_bytes below 1024 cannot hold a JWK Set",
                "write max_body_bytes = 262144 (the default)",
            );
            d.max_body_bytes
        }
        Some(b) => *b.get_ref(),
        None => d.max_body_bytes,
    };
    CacheConfig {
        min_ttl,
        max_ttl,
        default_ttl: c.duration("cache.default_ttl", &r.default_ttl, d.default_ttl),
        unknown_kid_cooldown: c.duration(
            "cache.unknown_kid_cooldown",
            &r.unknown_kid_cooldown,
            d.unknown_kid_cooldown,
        ),
        max_stale: c.duration("cache.max_stale", &r.max_stale, d.max_stale),
        fetch_timeout: c.positive("cache.fetch_timeout", &r.fetch_timeout, d.fetch_timeout),
        max_body_bytes,
        allow_http,
        jwks_hosts: Vec::new(),
    }
}

fn resolve_route(
    r: &raw::Route,
    allow_anonymous: bool,
    issuers: &[(String, usize)],
    base_dir: &Path,
    c: &mut Checker<'_>,
) -> Option<RouteConfig> {
    let mut ok = true;
    let (line, _) = line_col(c.text, r.path.span().start);
    let pattern = match Pattern::parse(r.path.get_ref()) {
        Ok(p) => Some(p),
        Err(e) => {
            let at = c.inside(r.path.span(), e.offset);
            c.err(at, format!("bad route path: {}", e.message), e.fix);
            None
        }
    };
    let methods = match &r.methods {
        None => None,
        Some(list) => {
            if list.get_ref().is_empty() {
                c.at(
                    list,
                    "methods is empty: the route would match nothing",
                    "remove methods to allow every method, or list some, e.g. [\"GET\", \"POST\"]",
                );
                ok = false;
            }
            let mut out: Vec<Method> = Vec::new();
            for m in list.get_ref() {
                let text = m.get_ref();
                let token = !text.is_empty()
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !token || text.bytes().any(|b| b.is_ascii_lowercase()) {
                    c.at(
                        m,
                        format!("{text:?} is not an HTTP method (methods are case-sensitive)"),
                        format!("write {:?}", text.to_ascii_uppercase()),
                    );
                    ok = false;
                    continue;
                }
                match Method::from_bytes(text.as_bytes()) {
                    Ok(m) if !out.contains(&m) => out.push(m),
                    Ok(_) => {}
                    Err(_) => {
                        c.at(
                            m,
                            format!("{text:?} is not an HTTP method"),
                            "write a method such as \"GET\"",
                        );
                        ok = false;
                    }
                }
            }
            Some(out)
        }
    };
    let upstream = resolve_upstream(&r.upstream, c).and_then(|mut u| {
        let host = u.authority.host().to_string();
        match (u.origin.starts_with("https://"), &r.upstream_tls) {
            (true, tls) => {
                u.tls = Some(crate::upstream_tls::resolve(
                    &host,
                    tls.as_ref(),
                    base_dir,
                    c,
                )?);
            }
            (false, Some(tls)) => {
                c.at(
                    tls,
                    "upstream_tls is set but the upstream is http://",
                    "write the upstream as https://host:port, or remove upstream_tls",
                );
                return None;
            }
            (false, None) => {}
        }
        Some(u)
    });
    let timeout = c.positive("timeout", &r.timeout, DEFAULT_TIMEOUT);

    // Authentication and authorization.
    let anonymous = r.anonymous.as_ref().map(|a| *a.get_ref());
    let mut scopes = None;
    let mut permissions = None;
    let mut route_issuers = None;
    let params: Vec<&str> = pattern
        .as_ref()
        .map(|p| p.params().collect())
        .unwrap_or_default();
    let check_templates = |list: &Spanned<Vec<Spanned<String>>>,
                           what: &str,
                           c: &mut Checker<'_>|
     -> bool {
        let mut good = true;
        for t in list.get_ref() {
            match Template::parse(t.get_ref()) {
                Ok(tpl) => {
                    for p in tpl.params() {
                        if pattern.is_some() && !params.contains(&p) {
                            let fix = if params.is_empty() {
                                format!(
                                    "add {{{p}}} to the route path, or remove it from the {what}"
                                )
                            } else {
                                format!(
                                    "use a parameter of the route path ({}), or add {{{p}}} to the path",
                                    params.iter().map(|x| format!("{{{x}}}")).collect::<Vec<_>>().join(", ")
                                )
                            };
                            let inner = t.get_ref().find(&format!("{{{p}}}")).unwrap_or(0);
                            let at = c.inside(t.span(), inner);
                            c.err(at, format!("{what} {:?} names {{{p}}}, which the route path {:?} does not have", t.get_ref(), r.path.get_ref()), fix);
                            good = false;
                        }
                    }
                }
                Err(e) => {
                    c.at(t, format!("{what}: {e}"), "write dotted segments of letters, digits, '_', ':' and '-', with whole-segment parameters, e.g. \"orders.{id}.read\"");
                    good = false;
                }
            }
        }
        good
    };
    if let Some(s) = &r.scopes {
        if s.get_ref().is_empty() {
            c.at(s, "scopes is empty", "list the scopes a token must all have, e.g. scopes = [\"orders:read\"], or remove scopes");
            ok = false;
        } else {
            for t in s.get_ref() {
                if !is_scope_token(t.get_ref()) {
                    c.at(t, format!("scope {:?} is not a scope token (RFC 6749 §3.3: no spaces, quotes or backslashes)", t.get_ref()), "write each scope as its own string, e.g. [\"orders:read\", \"orders:write\"]");
                    ok = false;
                }
            }
            if ok && check_templates(s, "scope", c) {
                scopes = Requirement::all_of(s.get_ref().iter().map(|x| x.get_ref())).ok();
            } else {
                ok = false;
            }
        }
    }
    if let Some(p) = &r.permissions {
        match (&p.get_ref().all_of, &p.get_ref().any_of) {
            (Some(_), Some(any)) => {
                c.at(any, "permissions has both all_of and any_of", "keep one: permissions = { all_of = [...] } or permissions = { any_of = [...] }");
                ok = false;
            }
            (None, None) => {
                c.at(
                    p,
                    "permissions names no requirement",
                    "write permissions = { all_of = [\"orders.{id}.read\"] } or { any_of = [...] }",
                );
                ok = false;
            }
            (Some(list), None) | (None, Some(list)) => {
                let any = p.get_ref().any_of.is_some();
                if list.get_ref().is_empty() {
                    c.at(list, "the permission list is empty", "list at least one permission, e.g. [\"orders.{id}.read\"], or remove permissions to require only a valid token");
                    ok = false;
                } else if check_templates(list, "permission", c) {
                    let items = list.get_ref().iter().map(|x| x.get_ref());
                    permissions = if any {
                        Requirement::any_of(items)
                    } else {
                        Requirement::all_of(items)
                    }
                    .ok();
                } else {
                    ok = false;
                }
            }
        }
    }
    if let Some(list) = &r.issuers {
        if list.get_ref().is_empty() {
            c.at(
                list,
                "issuers is empty: no token could pass",
                "remove issuers to accept every configured issuer, or list some",
            );
            ok = false;
        }
        let mut names = Vec::new();
        for i in list.get_ref() {
            if !issuers.iter().any(|(n, _)| n == i.get_ref()) {
                let known: Vec<String> = issuers.iter().map(|(n, _)| format!("{n:?}")).collect();
                let fix = if known.is_empty() {
                    "add an [[issuer]] section with this issuer first".to_string()
                } else {
                    format!(
                        "use the issuer value of a configured [[issuer]]: {}",
                        known.join(", ")
                    )
                };
                c.at(
                    i,
                    format!(
                        "route names issuer {:?}, which no [[issuer]] section configures",
                        i.get_ref()
                    ),
                    fix,
                );
                ok = false;
            }
            names.push(i.get_ref().clone());
        }
        route_issuers = Some(names);
    }
    let route_constraint = sender_constraint(&r.sender_constraint, c);
    let api_keys = r.api_keys.as_ref().is_some_and(|a| *a.get_ref());
    let wants_token = r.scopes.is_some()
        || r.permissions.is_some()
        || r.issuers.is_some()
        || r.sender_constraint.is_some()
        || api_keys;
    let auth = match anonymous {
        Some(true) if wants_token => {
            let a = r.anonymous.as_ref().expect("anonymous is set");
            c.at(
                a,
                "an anonymous route cannot also require scopes, permissions, issuers, API keys or a sender constraint",
                "remove anonymous = true, or remove the requirements",
            );
            ok = false;
            Auth::Anonymous
        }
        Some(true) => Auth::Anonymous,
        None if allow_anonymous && !wants_token => Auth::Anonymous,
        _ => Auth::Token {
            issuers: route_issuers,
            scopes,
            permissions,
            sender_constraint: route_constraint,
        },
    };

    let strip_prefix = match &r.strip_prefix {
        None => None,
        Some(s) => {
            let v = s.get_ref();
            let prefix_ok = v.starts_with('/') && !v.ends_with('/') && !v.contains("//");
            let literal = pattern
                .as_ref()
                .map(|p| p.literal_prefix())
                .unwrap_or_default();
            let covered = literal == *v || literal.starts_with(&format!("{v}/"));
            if !prefix_ok || (pattern.is_some() && !covered) {
                c.at(s, format!("strip_prefix {v:?} is not a literal leading part of the route path {:?}", r.path.get_ref()), format!("write whole leading segments of the path without a trailing '/', e.g. strip_prefix = {:?}", if literal.is_empty() { "/api".to_string() } else { literal.clone() }));
                ok = false;
            }
            Some(v.clone())
        }
    };
    let rate_limit = r
        .rate_limit
        .as_ref()
        .and_then(|rl| resolve_rate_limit(rl, c));
    if r.rate_limit.is_some() && rate_limit.is_none() {
        ok = false;
    }
    let name = match &r.name {
        Some(n) if n.get_ref().trim().is_empty() => {
            c.at(
                n,
                "name cannot be empty",
                "remove name (the path is used), or write a short label",
            );
            ok = false;
            String::new()
        }
        Some(n) => n.get_ref().clone(),
        None => r.path.get_ref().clone(),
    };
    let constraint = route_constraint;
    if let (Some(sc), Auth::Anonymous) = (&r.sender_constraint, &auth) {
        c.at(
            sc,
            "an anonymous route cannot require a sender constraint",
            "remove anonymous = true, or remove sender_constraint",
        );
        ok = false;
    }
    if r.sender_constraint.is_some() && constraint.is_none() {
        ok = false;
    }
    let (Some(pattern), Some(upstream), true) = (pattern, upstream, ok) else {
        return None;
    };
    Some(RouteConfig {
        name,
        line,
        pattern,
        methods,
        upstream,
        auth,
        forward_authorization: r.forward_authorization.unwrap_or(false),
        preserve_host: r.preserve_host.unwrap_or(false),
        strip_prefix,
        timeout,
        rate_limit,
        sender_constraint: constraint,
        api_keys,
        websocket: r.websocket.unwrap_or(false),
    })
}

fn resolve_upstream(u: &Spanned<String>, c: &mut Checker<'_>) -> Option<UpstreamUrl> {
    let text = u.get_ref();
    let fix = "write the upstream's origin, e.g. upstream = \"http://127.0.0.1:9000\" (the request path is appended unchanged)";
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(e) => {
            c.at(u, format!("upstream {text:?} is not a URL: {e}"), fix);
            return None;
        }
    };
    if url.scheme() != "http" && url.scheme() != "https" {
        c.at(u, format!("upstream {text:?} has scheme {:?}; the gateway speaks HTTP/1.1 to upstreams, plain or over TLS", url.scheme()), "use http://host:port or https://host:port");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        c.at(u, format!("upstream {text:?} has user information"), fix);
        return None;
    }
    if (url.path() != "/" && !url.path().is_empty())
        || url.query().is_some()
        || url.fragment().is_some()
    {
        c.at(
            u,
            format!("upstream {text:?} has a path, query or fragment"),
            "write only http://host:port; to change the path upstream, use strip_prefix",
        );
        return None;
    }
    let Some(host) = url.host_str() else {
        c.at(u, format!("upstream {text:?} has no host"), fix);
        return None;
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = format!("{host}:{port}");
    match authority.parse::<Authority>() {
        Ok(authority) => Some(UpstreamUrl {
            origin: format!("{}://{authority}", url.scheme()),
            authority,
            tls: None,
        }),
        Err(_) => {
            c.at(u, format!("upstream {text:?} has an invalid host"), fix);
            None
        }
    }
}

fn resolve_rate_limit(
    rl: &Spanned<raw::RateLimit>,
    c: &mut Checker<'_>,
) -> Option<RateLimitConfig> {
    let r = rl.get_ref();
    let mut ok = true;
    let mut rate =
        |v: &Option<Spanned<String>>, field: &str, c: &mut Checker<'_>| -> Option<RateSpec> {
            let v = v.as_ref()?;
            match Rate::parse(v.get_ref()) {
                Ok(rate) => Some(RateSpec {
                    text: v.get_ref().clone(),
                    rate,
                }),
                Err(e) => {
                    c.at(
                        v,
                        format!("rate_limit.{field}: {e}"),
                        "write a rate such as \"100/s\", \"6000/m\" or \"10/h\"",
                    );
                    ok = false;
                    None
                }
            }
        };
    let per_subject = rate(&r.per_subject, "per_subject", c);
    let per_client = rate(&r.per_client, "per_client", c);
    let per_ip = rate(&r.per_ip, "per_ip", c);
    if r.per_subject.is_none() && r.per_client.is_none() && r.per_ip.is_none() {
        c.at(rl, "rate_limit sets no rate", "add per_subject, per_client or per_ip, e.g. rate_limit = { per_subject = \"100/s\", burst = 20 }");
        ok = false;
    }
    let burst = match &r.burst {
        Some(b) if *b.get_ref() == 0 => {
            c.at(
                b,
                "rate_limit.burst must be at least 1",
                "write burst = 20 (requests that may arrive at once)",
            );
            ok = false;
            None
        }
        Some(b) => Some(*b.get_ref()),
        None => None,
    };
    let max_keys = match &r.max_keys {
        Some(m) if *m.get_ref() == 0 => {
            c.at(
                m,
                "rate_limit.max_keys must be at least 1",
                "write max_keys = 100000",
            );
            ok = false;
            DEFAULT_MAX_KEYS
        }
        Some(m) => *m.get_ref(),
        None => DEFAULT_MAX_KEYS,
    };
    ok.then_some(RateLimitConfig {
        per_subject,
        per_client,
        per_ip,
        burst,
        max_keys,
    })
}

fn describe_methods(m: &Option<Vec<Method>>) -> String {
    match m {
        None => "*".into(),
        Some(list) => list
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Auth {
    /// One line for `--check` output.
    pub fn describe(&self) -> String {
        match self {
            Auth::Anonymous => "anonymous".into(),
            Auth::Token {
                issuers,
                scopes,
                permissions,
                sender_constraint,
            } => {
                let mut parts = Vec::new();
                if let Some(p) = permissions {
                    parts.push(format!("permissions {p}"));
                }
                if let Some(s) = scopes {
                    let list: Vec<&str> = s.templates().iter().map(|t| t.as_str()).collect();
                    parts.push(format!("scopes [{}]", list.join(", ")));
                }
                if parts.is_empty() {
                    parts.push("valid token".into());
                }
                if let Some(i) = issuers {
                    parts.push(format!("issuers [{}]", i.join(", ")));
                }
                if let Some(sc) = sender_constraint {
                    parts.push(format!("sender-constrained ({})", sc.name()));
                }
                parts.join("; ")
            }
        }
    }
}

impl RateLimitConfig {
    /// One line for `--check` output.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (kind, r) in [
            ("subject", &self.per_subject),
            ("client", &self.per_client),
            ("ip", &self.per_ip),
        ] {
            if let Some(r) = r {
                parts.push(format!(
                    "{} per {kind} (burst {})",
                    r.text,
                    self.burst_for(r)
                ));
            }
        }
        parts.join(", ")
    }
}

impl Config {
    /// The resolved configuration as text, for `keyward gateway --check`.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "configuration {} is valid", self.file.display());
        let _ = writeln!(s);
        let _ = writeln!(s, "listen            {}", self.listen);
        let _ = writeln!(
            s,
            "admin_listen      {}",
            self.admin_listen.map_or("(off)".to_string(), |a| format!(
                "{a} (/metrics /healthz /readyz)"
            ))
        );
        let _ = writeln!(s, "allow_anonymous   {}", self.allow_anonymous);
        let _ = writeln!(s, "realm             {}", self.realm);
        let _ = writeln!(
            s,
            "token_cache       {}",
            if self.token_cache == 0 {
                "off".to_string()
            } else {
                format!("{} tokens", self.token_cache)
            }
        );
        let _ = writeln!(
            s,
            "log_format        {}",
            if self.json_logs { "json" } else { "text" }
        );
        let _ = writeln!(s, "shutdown_grace    {}", dur(self.shutdown_grace));
        let _ = writeln!(s, "workers           {}", self.workers);
        let headers: Vec<String> = self
            .identity_headers
            .fields()
            .iter()
            .map(|(f, h)| format!("{f}={}", h.map_or("(off)", |h| h.as_str())))
            .collect();
        let _ = writeln!(s, "identity_headers  {}", headers.join(" "));
        let _ = writeln!(
            s,
            "redis             {}",
            self.redis.as_ref().map_or(
                "(off: limits and replay cache per replica)".to_string(),
                |r| format!(
                    "{} prefix {:?} timeout {} (DPoP replay fail {})",
                    r.url,
                    r.prefix,
                    dur(r.timeout),
                    if r.replay_fail_closed {
                        "closed"
                    } else {
                        "open, local cache"
                    }
                )
            )
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "issuers ({}):", self.issuers.len());
        for i in &self.issuers {
            let p = &i.policy;
            let _ = writeln!(s, "  {}", p.issuer);
            let source = match &p.source {
                KeySource::Discovery => format!(
                    "discovery ({}/.well-known/openid-configuration)",
                    p.issuer.trim_end_matches('/')
                ),
                KeySource::JwksUri(u) => format!("jwks_uri {u}"),
                KeySource::File(f) => format!("jwks_file {}", f.display()),
            };
            let _ = writeln!(s, "    keys            {source}");
            if matches!(p.source, KeySource::Discovery) {
                let _ = writeln!(
                    s,
                    "    jwks_hosts      the issuer's host{}",
                    p.cache
                        .jwks_hosts
                        .iter()
                        .map(|h| format!(", {h}"))
                        .collect::<String>()
                );
            }
            let _ = writeln!(s, "    audiences       {}", p.audiences.join(" "));
            let algs: Vec<&str> = p.algorithms.iter().map(|a| a.name()).collect();
            let _ = writeln!(s, "    algorithms      {}", algs.join(" "));
            let _ = writeln!(
                s,
                "    typ             {}",
                p.required_typ.as_deref().unwrap_or("-")
            );
            let _ = writeln!(
                s,
                "    leeway          {}",
                dur(Duration::from_secs(p.leeway_secs))
            );
            let _ = writeln!(s, "    required_claims {}", p.required_claims.join(" "));
            let _ = writeln!(
                s,
                "    max_lifetime    {}",
                p.max_lifetime_secs
                    .map_or("(none)".into(), |l| dur(Duration::from_secs(l)))
            );
            let _ = writeln!(s, "    wildcard_all    {}", p.allow_wildcard_all);
            let _ = writeln!(
                s,
                "    revocations     {}",
                i.revocations.map_or("off".into(), |d| format!(
                    "{}/revocations every {}",
                    p.issuer.trim_end_matches('/'),
                    dur(d)
                ))
            );
            let cc = &p.cache;
            let _ = writeln!(
                s,
                "    cache           min_ttl {} max_ttl {} default_ttl {} unknown_kid_cooldown {} max_stale {} fetch_timeout {} max_body_bytes {}{}",
                dur(cc.min_ttl),
                dur(cc.max_ttl),
                dur(cc.default_ttl),
                dur(cc.unknown_kid_cooldown),
                dur(cc.max_stale),
                dur(cc.fetch_timeout),
                cc.max_body_bytes,
                if cc.allow_http { " allow_http" } else { "" }
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "routes ({}, tried in order; the first match wins):",
            self.routes.len()
        );
        let header = [
            "#",
            "METHODS",
            "PATH",
            "UPSTREAM",
            "AUTH",
            "RATE LIMIT",
            "OPTIONS",
        ];
        let rows: Vec<[String; 7]> = self
            .routes
            .iter()
            .enumerate()
            .map(|(n, r)| {
                let mut opts = vec![format!("timeout {}", dur(r.timeout))];
                if r.forward_authorization {
                    opts.push("forward_authorization".into());
                }
                if r.preserve_host {
                    opts.push("preserve_host".into());
                }
                if r.websocket {
                    opts.push("websocket".into());
                }
                if let Some(p) = &r.strip_prefix {
                    opts.push(format!("strip_prefix {p}"));
                }
                if r.name != r.pattern.as_str() {
                    opts.push(format!("name {}", r.name));
                }
                [
                    (n + 1).to_string(),
                    describe_methods(&r.methods),
                    r.pattern.as_str().to_string(),
                    r.upstream.origin.clone(),
                    if r.api_keys {
                        format!("{}; or API key", r.auth.describe())
                    } else {
                        r.auth.describe()
                    },
                    r.rate_limit.as_ref().map_or("-".into(), |l| l.describe()),
                    opts.join(", "),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.len());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| -> String {
            let mut out = String::from(" ");
            for (i, (cell, w)) in cells.iter().zip(widths.iter()).enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(&format!(" {cell}"));
                } else {
                    out.push_str(&format!(" {cell:<w$} "));
                }
            }
            out.trim_end().to_string()
        };
        let _ = writeln!(s, "{}", line(header.to_vec()));
        for row in &rows {
            let _ = writeln!(s, "{}", line(row.iter().map(String::as_str).collect()));
        }
        self.api_keys.describe(&mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = r#"
[[issuer]]
issuer = "http://127.0.0.1:8080"
audiences = ["api://default"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("gw.toml"))
    }

    fn err(text: &str) -> Diagnostic {
        let e = parse(text).unwrap_err();
        e.diagnostics[0].clone()
    }

    #[test]
    fn the_spec_example_parses() {
        let text = r#"
listen = "127.0.0.1:8081"
admin_listen = "127.0.0.1:9091"
allow_anonymous = false

[[issuer]]
issuer = "http://127.0.0.1:8080"
audiences = ["api://default"]
algorithms = ["RS256", "ES256", "EdDSA"]
revocations = true

[[route]]
path = "/orders/{id}"
methods = ["GET"]
upstream = "http://127.0.0.1:9000"
permissions = { all_of = ["orders.{id}.read"] }
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.issuers[0].revocations, Some(Duration::from_secs(5)));
        assert_eq!(c.issuers[0].policy.source, KeySource::Discovery);
        assert_eq!(c.routes[0].line, 13);
        assert!(matches!(
            c.routes[0].auth,
            Auth::Token {
                permissions: Some(_),
                ..
            }
        ));
        let d = c.describe();
        assert!(
            d.contains("/orders/{id}") && d.contains("all of [orders.{id}.read]"),
            "{d}"
        );
    }

    #[test]
    fn unknown_field_points_at_it() {
        let d = err(&format!("{ISSUER}\n[[route]]\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\ntimout = \"1s\"\n"));
        assert_eq!((d.line, d.column), (9, 1), "{d:?}");
        assert!(d.message.contains("timout"), "{d:?}");
        assert!(d.fix.contains("timeout"), "{d:?}");
    }

    #[test]
    fn template_parameter_missing_from_path() {
        let d = err(&format!("{ISSUER}\n[[route]]\npath = \"/orders\"\nupstream = \"http://127.0.0.1:1\"\npermissions = {{ any_of = [\"orders.{{id}}.read\"] }}\n"));
        assert_eq!(d.line, 9, "{d:?}");
        assert_eq!(d.column, 35, "{d:?}");
        assert!(d.message.contains("{id}"), "{d:?}");
    }

    #[test]
    fn several_errors_at_once_in_file_order() {
        let e = parse(&format!(
            "{ISSUER}\n[[route]]\npath = \"/a//b\"\nupstream = \"ftp://x\"\ntimeout = \"soon\"\n"
        ))
        .unwrap_err();
        let lines: Vec<usize> = e.diagnostics.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![7, 8, 9], "{e}");
        assert_eq!(e.diagnostics[0].column, 12);
    }

    #[test]
    fn global_anonymous_default_and_overrides() {
        let c = parse(&format!(
            "allow_anonymous = true\n{ISSUER}\n[[route]]\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n\
             [[route]]\npath = \"/b\"\nupstream = \"http://127.0.0.1:1\"\nanonymous = false\n\
             [[route]]\npath = \"/c\"\nupstream = \"http://127.0.0.1:1\"\nscopes = [\"x\"]\n"
        ))
        .unwrap();
        assert!(matches!(c.routes[0].auth, Auth::Anonymous));
        assert!(matches!(c.routes[1].auth, Auth::Token { .. }));
        assert!(matches!(c.routes[2].auth, Auth::Token { .. }));
    }

    #[test]
    fn duplicate_routes() {
        let e = err(&format!(
            "{ISSUER}\n[[route]]\npath = \"/a/{{x}}\"\nupstream = \"http://127.0.0.1:1\"\n\
             [[route]]\npath = \"/a/{{y}}\"\nmethods = [\"GET\"]\nupstream = \"http://127.0.0.1:1\"\n"
        ));
        assert_eq!(e.line, 10);
        assert!(e.message.contains("line 7"), "{e:?}");
    }

    #[test]
    fn no_routes_and_no_issuers() {
        let e = parse("listen = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.to_string().contains("no [[route]]"), "{e}");
        let e = parse("[[route]]\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n").unwrap_err();
        assert!(e.to_string().contains("no [[issuer]]"), "{e}");
        parse("[[route]]\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\nanonymous = true\n")
            .unwrap();
    }
}
