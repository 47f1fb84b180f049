//! The server's configuration: a TOML file (unknown fields are errors), every
//! field overridable by a `KEYWARD_<FIELD>` environment variable, and command
//! line flags over both. Raw input is validated into a [`Config`] before
//! anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use keyward_issuer::Settings;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::args::parse_duration;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    /// How often the server checks the store for changes (default 1s).
    pub reload_interval: Option<String>,
    /// How often the rotation scheduler runs (default 30s).
    pub rotation_check_interval: Option<String>,
    /// RSA signing threads (default: the number of cores).
    pub signing_threads: Option<usize>,
    /// Refresh token lifetime (default 30d).
    pub refresh_token_ttl: Option<String>,
    /// Reuse window for a rotated refresh token whose response was lost, while
    /// its successor is unused (default 60s; 0s turns it off).
    pub refresh_grace: Option<String>,
    /// Longest accepted private_key_jwt assertion lifetime (default 1h).
    pub assertion_max_lifetime: Option<String>,
    /// How long in-flight requests may take to finish on shutdown (default 30s).
    pub shutdown_grace: Option<String>,
    /// The longest a device (HSM, KMS) may take to sign a token before the
    /// request answers 503 (default 5s; 100ms to 60s).
    pub signing_timeout: Option<String>,
    /// "text" (default) or "json".
    pub log_format: Option<String>,
    /// How long a client may take to send a request's line and headers,
    /// counted from when the connection starts waiting for it (default 30s).
    pub header_read_timeout: Option<String>,
    /// How long a client may take to send a request's body, counted from
    /// the end of its headers (default 30s).
    pub body_read_timeout: Option<String>,
    /// How long a keep-alive connection may wait between requests (default 30s).
    pub idle_timeout: Option<String>,
    /// Reverse proxies (addresses or CIDR networks) whose `X-Forwarded-For`
    /// names the client (default none: the connection's address).
    pub trusted_proxies: Option<Vec<String>>,
    /// Most client connections open at once (default 512).
    pub max_connections: Option<usize>,
    /// The PKCS#11 key store (see `key_stores.rs`).
    pub pkcs11: Option<crate::key_stores::RawPkcs11>,
    /// The AWS KMS key store.
    pub aws_kms: Option<crate::key_stores::RawAwsKms>,
    /// Where the root key is: `file` (default), `pkcs11:<label>` or
    /// `aws-kms:<key id, ARN or alias/name>`; overridden by
    /// `KEYWARD_ROOT_KEY_SOURCE` (not `KEYWARD_ROOT_KEY`, which holds a key).
    pub root_key: Option<String>,
    /// Serve the web console at `/console` (default false; `keyward up`
    /// turns it on).
    pub console: Option<bool>,
    /// DEVELOPMENT ONLY: serve keyward's own login and consent pages at
    /// `/dev/login/{env}` and `/dev/consent/{env}`, which accept any
    /// username without a password (default false; `keyward up` turns it
    /// on; `serve` only with `dev_login = true` / `KEYWARD_DEV_LOGIN=true`).
    pub dev_login: Option<bool>,
    /// TLS termination (see docs/tls.md); a table, not overridden by
    /// environment variables.
    pub tls: Option<RawTls>,
    /// An external issuer whose access tokens the admin API accepts (see
    /// `admin_config.rs`).
    pub admin: Option<crate::admin_config::RawAdmin>,
    /// Other issuers whose access tokens an environment's clients may
    /// exchange (RFC 8693; see `exchange_config.rs`).
    pub token_exchange: Option<crate::exchange_config::RawTokenExchange>,
}

/// The `[tls]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// "off" (default), "optional" or "required".
    pub client_certificates: Option<String>,
    /// PEM CAs that client certificates are verified against.
    pub client_ca: Option<PathBuf>,
    /// Accept certificates that do not chain to client_ca (self-signed).
    pub self_signed_clients: Option<bool>,
    /// How often the files are read again (default 10s).
    pub reload_interval: Option<String>,
}

impl RawTls {
    /// Checked settings; the files must load now.
    fn resolve(self) -> Result<keyward_verify::TlsSettings> {
        use keyward_verify::{ClientCertificates, TlsSettings};
        let client_certificates = match self.client_certificates.as_deref() {
            None => ClientCertificates::Off,
            Some(v) => ClientCertificates::parse(v).ok_or_else(|| {
                anyhow!(
                    "tls.client_certificates: {v:?} is not \"off\", \"optional\" or \"required\""
                )
            })?,
        };
        if client_certificates == ClientCertificates::Off && self.client_ca.is_some() {
            bail!("tls.client_ca is set but tls.client_certificates is off: set it to \"optional\" or \"required\"");
        }
        let reload = match self.reload_interval.as_deref() {
            None => keyward_verify::tls::DEFAULT_RELOAD_INTERVAL,
            Some(v) => humantime::parse_duration(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    anyhow!("tls.reload_interval: {v:?} is not a duration such as \"10s\"")
                })?,
        };
        let mut settings = TlsSettings::new(self.cert, self.key);
        settings.client_certificates = client_certificates;
        settings.client_ca = self.client_ca;
        settings.self_signed_clients = self.self_signed_clients.unwrap_or(false);
        settings.reload_interval = reload;
        keyward_verify::TlsServer::load(settings.clone()).map_err(|e| anyhow!("tls: {e}"))?;
        Ok(settings)
    }
}

/// The fields and their environment variables, for overrides and docs.
pub const FIELDS: [&str; 20] = [
    "listen",
    "data_dir",
    "database_url",
    "reload_interval",
    "rotation_check_interval",
    "signing_threads",
    "refresh_token_ttl",
    "refresh_grace",
    "assertion_max_lifetime",
    "shutdown_grace",
    "signing_timeout",
    "log_format",
    "header_read_timeout",
    "body_read_timeout",
    "idle_timeout",
    "max_connections",
    "trusted_proxies",
    "root_key",
    "console",
    "dev_login",
];

/// The resolved configuration. Its `Debug` output is [`Config::to_json`]'s,
/// so no secret is shown.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub reload_interval: Duration,
    pub rotation_check_interval: Duration,
    pub signing_threads: usize,
    pub settings: Settings,
    pub shutdown_grace: Duration,
    pub json_logs: bool,
    pub connections: crate::server::Limits,
    /// Where device keys live.
    pub key_stores: crate::key_stores::KeyStoreConfig,
    /// The configured root key source, if any (see `root_source.rs`).
    pub root_key: Option<keyward_issuer::RootKeySpec>,
    /// Serve the web console at `/console`.
    pub console: bool,
    /// DEVELOPMENT ONLY: serve the any-username login page (`/dev/login/{env}`).
    pub dev_login: bool,
    /// TLS termination, if configured.
    pub tls: Option<keyward_verify::TlsSettings>,
    /// The trusted admin issuer, if any (also in `settings.admin_issuer`).
    pub admin_issuer: Option<crate::admin_config::AdminIssuer>,
    /// Token exchange's trusted issuers (also in `settings.exchange_issuers`).
    pub exchange_issuers: crate::exchange_config::ExchangeIssuers,
}

impl RawConfig {
    /// Reads a file; errors name the file, line and column.
    pub fn from_file(path: &Path) -> Result<RawConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!(":{line}")
                })
                .unwrap_or_default();
            // toml's message for an unknown field lists the expected ones in
            // its own words; say it once, ours.
            let msg = e.message();
            let msg = match msg.split_once(", expected one of") {
                Some((unknown, _)) if msg.starts_with("unknown field") => {
                    format!("{unknown} (valid fields: {})", FIELDS.join(", "))
                }
                _ => msg.trim_end().to_string(),
            };
            anyhow!("{}{at}: {msg}", path.display())
        })
    }

    /// Applies `KEYWARD_<FIELD>` variables from `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        let get =
            |f: &str| var(&format!("KEYWARD_{}", f.to_ascii_uppercase())).filter(|v| !v.is_empty());
        macro_rules! s {
            ($f:ident) => {
                if let Some(v) = get(stringify!($f)) {
                    self.$f = Some(v.into());
                }
            };
        }
        s!(listen);
        s!(data_dir);
        s!(database_url);
        s!(reload_interval);
        s!(rotation_check_interval);
        s!(refresh_token_ttl);
        s!(refresh_grace);
        s!(assertion_max_lifetime);
        s!(shutdown_grace);
        s!(signing_timeout);
        s!(log_format);
        s!(header_read_timeout);
        s!(body_read_timeout);
        s!(idle_timeout);
        if let Some(v) = get("signing_threads") {
            self.signing_threads = Some(
                v.parse()
                    .map_err(|e| anyhow!("KEYWARD_SIGNING_THREADS must be a number: {e}"))?,
            );
        }
        if let Some(v) = get("max_connections") {
            self.max_connections = Some(
                v.parse()
                    .map_err(|e| anyhow!("KEYWARD_MAX_CONNECTIONS must be a number: {e}"))?,
            );
        }
        if let Some(v) = get("console") {
            self.console = Some(match v.as_str() {
                "true" => true,
                "false" => false,
                _ => bail!("KEYWARD_CONSOLE must be true or false"),
            });
        }
        if let Some(v) = get("trusted_proxies") {
            self.trusted_proxies = Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
        if let Some(v) = get("dev_login") {
            self.dev_login = Some(match v.as_str() {
                "true" => true,
                "false" => false,
                _ => bail!("KEYWARD_DEV_LOGIN must be true or false"),
            });
        }
        if let Some(v) = var(crate::root_source::SOURCE_VAR).filter(|v| !v.is_empty()) {
            self.root_key = Some(v);
        }
        let mut stores = crate::key_stores::RawKeyStores {
            pkcs11: self.pkcs11.take(),
            aws_kms: self.aws_kms.take(),
        };
        stores.apply_env(&var)?;
        self.pkcs11 = stores.pkcs11;
        self.aws_kms = stores.aws_kms;
        self.admin
            .get_or_insert_with(Default::default)
            .apply_env(&var);
        Ok(())
    }

    /// Validates into a [`Config`].
    pub fn resolve(self) -> Result<Config> {
        let dur = |name: &str, v: &Option<String>, default: &str| -> Result<i64> {
            parse_duration(v.as_deref().unwrap_or(default)).map_err(|e| anyhow!("{name}: {e}"))
        };
        let listen = self.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen: SocketAddr = listen
            .parse()
            .map_err(|_| anyhow!("listen: {listen:?} is not an address like 127.0.0.1:8080"))?;
        let reload = dur("reload_interval", &self.reload_interval, "1s")?;
        if !(1..=5).contains(&reload) {
            bail!("reload_interval must be between 1s and 5s (changes must reach the server within 5 s)");
        }
        let rotation = dur(
            "rotation_check_interval",
            &self.rotation_check_interval,
            "30s",
        )?;
        if rotation < 1 {
            bail!("rotation_check_interval must be at least 1s");
        }
        let threads = self.signing_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        if !(1..=256).contains(&threads) {
            bail!("signing_threads must be between 1 and 256");
        }
        let refresh_ttl = dur("refresh_token_ttl", &self.refresh_token_ttl, "30d")?;
        if refresh_ttl < 60 {
            bail!("refresh_token_ttl must be at least 1m");
        }
        let refresh_grace = match self.refresh_grace.as_deref() {
            Some(v) => parse_duration(v).map_err(|e| anyhow!("refresh_grace: {e}"))?,
            None => keyward_issuer::DEFAULT_REFRESH_GRACE_SECS,
        };
        if refresh_grace > 3600 {
            bail!("refresh_grace must be at most 1h (a rotated refresh token must not stay usable for long)");
        }
        if let Some(url) = &self.database_url {
            keyward_store::Store::check_url(url)
                .map_err(|e| anyhow!("database_url ({}): {e}", redact_url(url)))?;
        }
        let json_logs = match self.log_format.as_deref().unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => bail!("log_format: {other:?} is not \"text\" or \"json\""),
        };
        let timeout = |name: &str, v: &Option<String>| -> Result<Duration> {
            let secs = dur(name, v, "30s")?;
            if !(1..=3600).contains(&secs) {
                bail!("{name} must be between 1s and 1h");
            }
            Ok(Duration::from_secs(secs as u64))
        };
        let connections = crate::server::Limits {
            header_read_timeout: timeout("header_read_timeout", &self.header_read_timeout)?,
            body_read_timeout: timeout("body_read_timeout", &self.body_read_timeout)?,
            idle_timeout: timeout("idle_timeout", &self.idle_timeout)?,
            max_connections: match self.max_connections.unwrap_or(512) {
                n @ 1..=1_000_000 => n,
                _ => bail!("max_connections must be between 1 and 1000000"),
            },
        };
        // hyper's header timer starts when a connection begins waiting for a
        // request, idle time included: a longer idle_timeout would never be
        // reached (idle connections would close at header_read_timeout).
        if connections.idle_timeout > connections.header_read_timeout {
            bail!(
                "idle_timeout ({}s) must not exceed header_read_timeout ({}s): the header timer also runs while a keep-alive connection is idle, so idle connections would be closed at header_read_timeout",
                connections.idle_timeout.as_secs(),
                connections.header_read_timeout.as_secs()
            );
        }
        let tls = self.tls.map(RawTls::resolve).transpose()?;
        let mtls = tls
            .as_ref()
            .is_some_and(|t| t.client_certificates != keyward_verify::ClientCertificates::Off);
        let admin_issuer = self.admin.unwrap_or_default().resolve()?;
        let exchange_issuers = self.token_exchange.unwrap_or_default().resolve()?;
        Ok(Config {
            tls,
            listen,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from("./keyward-data")),
            database_url: self.database_url,
            reload_interval: Duration::from_secs(reload as u64),
            rotation_check_interval: Duration::from_secs(rotation as u64),
            signing_threads: threads,
            settings: Settings {
                refresh_token_ttl_secs: refresh_ttl,
                refresh_grace_secs: refresh_grace,
                assertion_max_lifetime_secs: dur(
                    "assertion_max_lifetime",
                    &self.assertion_max_lifetime,
                    "1h",
                )? as u64,
                signing_timeout: signing_timeout(self.signing_timeout.as_deref())?,
                // The stores themselves are opened by `serve` (Context::key_stores).
                key_stores: keyward_issuer::keyring::KeyStores::none(),
                dpop: keyward_verify::DpopPolicy::default(),
                mtls,
                admin_issuer: admin_issuer.as_ref().map(|a| a.gate.clone()),
                exchange_issuers: exchange_issuers.gates.clone(),
                trusted_proxies: trusted_proxies(self.trusted_proxies.as_deref())?,
            },
            admin_issuer,
            exchange_issuers,
            shutdown_grace: Duration::from_secs(
                dur("shutdown_grace", &self.shutdown_grace, "30s")? as u64,
            ),
            json_logs,
            connections,
            root_key: self
                .root_key
                .as_deref()
                .map(|t| crate::root_source::parse_spec(t, "root_key"))
                .transpose()?,
            console: self.console.unwrap_or(false),
            dev_login: self.dev_login.unwrap_or(false),
            key_stores: crate::key_stores::RawKeyStores {
                pkcs11: self.pkcs11,
                aws_kms: self.aws_kms,
            }
            .resolve(&|k: &str| std::env::var(k).ok())?,
        })
    }
}

/// Query parameters whose values are shown: known, harmless settings of
/// sqlx's PostgreSQL and SQLite URLs. Every other value is masked, so a
/// parameter this list does not know (a future `sslpassword`-like one, a
/// misspelling the driver still reads) is never printed. `options` is not
/// here: it is free-form (`-c name=value ...`) and may carry anything.
/// Names are compared after percent-decoding, as sqlx reads them.
const SHOWN_PARAMETERS: &[&str] = &[
    // PostgreSQL
    "sslmode",
    "sslrootcert",
    "application_name",
    "connect_timeout",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    // SQLite
    "mode",
    "cache",
    "immutable",
    "vfs",
];

/// A database URL fit to print or log: the password of the userinfo, the
/// values of query parameters other than [`SHOWN_PARAMETERS`] (names
/// percent-decoded first, as sqlx decodes them) and any fragment are masked.
/// Anything that is not a `scheme://` or `sqlite:` URL (a libpq
/// `key=value` string, ...) is masked whole.
pub fn redact_url(url: &str) -> String {
    const MASK: &str = "****";
    let (head, rest) = if let Some(i) = url.find("://") {
        url.split_at(i + 3)
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        ("sqlite:", rest)
    } else {
        return MASK.to_string();
    };
    // The userinfo ends at the last '@' of the authority (as URL parsers
    // read it). If an '@' also follows the authority, the split is
    // ambiguous: mask up to the last '@' of all, so a password holding
    // '/', '?' or '#' is never shown.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = match rest[..authority_end].rfind('@') {
        Some(at) if !rest[authority_end..].contains('@') => Some(at),
        _ => rest.rfind('@'),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    let after = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    let (after, fragment) = match after.split_once('#') {
        Some((a, f)) => (a, Some(f)),
        None => (after, None),
    };
    let (path, query) = match after.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (after, None),
    };
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            // The name as the driver reads it: `p%61ssword` is `password`.
            let shown = form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_some_and(|(name, _)| SHOWN_PARAMETERS.contains(&name.as_ref()));
            match pair.split_once('=') {
                _ if shown || pair.is_empty() => out.push_str(pair),
                Some((name, _)) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(MASK);
                }
                // A bare word: who knows what it is.
                None => out.push_str(MASK),
            }
        }
    }
    if fragment.is_some() {
        out.push('#');
        out.push_str(MASK);
    }
    out
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Config {}", self.to_json())
    }
}

impl Config {
    /// The resolved configuration, without secrets, for `config check`.
    pub fn to_json(&self) -> Value {
        json!({
            "listen": self.listen.to_string(),
            "data_dir": self.data_dir,
            "database_url": self.database_url.as_deref().map(redact_url),
            "reload_interval_secs": self.reload_interval.as_secs(),
            "rotation_check_interval_secs": self.rotation_check_interval.as_secs(),
            "signing_threads": self.signing_threads,
            "refresh_token_ttl_secs": self.settings.refresh_token_ttl_secs,
            "refresh_grace_secs": self.settings.refresh_grace_secs,
            "assertion_max_lifetime_secs": self.settings.assertion_max_lifetime_secs,
            "signing_timeout_ms": self.settings.signing_timeout.as_millis() as u64,
            "shutdown_grace_secs": self.shutdown_grace.as_secs(),
            "log_format": if self.json_logs { "json" } else { "text" },
            "header_read_timeout_secs": self.connections.header_read_timeout.as_secs(),
            "body_read_timeout_secs": self.connections.body_read_timeout.as_secs(),
            "idle_timeout_secs": self.connections.idle_timeout.as_secs(),
            "max_connections": self.connections.max_connections,
            "trusted_proxies": self.settings.trusted_proxies.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "key_stores": self.key_stores.to_json(),
            "root_key": self.root_key.as_ref().map(|s| s.to_string()),
            "console": self.console,
            "dev_login": self.dev_login,
            "tls": self.tls.as_ref().map(|t| json!({
                "cert": t.cert,
                "key": t.key,
                "client_certificates": format!("{:?}", t.client_certificates).to_ascii_lowercase(),
                "client_ca": t.client_ca,
                "self_signed_clients": t.self_signed_clients,
                "reload_interval_secs": t.reload_interval.as_secs_f64(),
            })),
            "admin": self.admin_issuer.as_ref().map(|a| a.to_json()),
            "token_exchange": self.exchange_issuers.to_json(),
        })
    }
}

/// `signing_timeout`: a duration with millisecond precision (`5s`,
/// `1500ms`), between 100 ms and 60 s; default 5 s.
pub fn signing_timeout(v: Option<&str>) -> Result<Duration> {
    let Some(text) = v else {
        return Ok(keyward_issuer::signing::DEFAULT_SIGNING_TIMEOUT);
    };
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        anyhow!("signing_timeout: {text:?} is not a duration like 5s or 1500ms: {e}")
    })?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(60) {
        bail!("signing_timeout must be between 100ms and 60s (got {text:?})");
    }
    Ok(d)
}

/// `trusted_proxies`: each an IP address (one host) or a CIDR network.
fn trusted_proxies(list: Option<&[String]>) -> Result<Vec<ipnet::IpNet>> {
    list.unwrap_or_default()
        .iter()
        .map(|p| {
            keyward_verify::forwarded::parse_net(p).ok_or_else(|| {
                anyhow!(
                    "trusted_proxies: {:?} is not an IP address or a CIDR network",
                    p.chars().take(64).collect::<String>()
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:1\"\nlistne = 3\n").unwrap();
        let e = RawConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains(":2"), "{e}");
        assert!(e.contains("listne"), "{e}");
        // The valid fields, once.
        assert_eq!(e.matches("log_format").count(), 1, "{e}");
        assert!(e.contains("valid fields: listen, data_dir"), "{e}");
        assert!(!e.contains("expected one of"), "{e}");
        // Other errors are toml's, without the list.
        std::fs::write(&p, "listen = 3\n").unwrap();
        let e = RawConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains(":1") && e.contains("invalid type"), "{e}");
        assert!(!e.contains("log_format"), "{e}");
    }

    #[test]
    fn env_overrides_file_and_validation() {
        let mut raw: RawConfig =
            toml::from_str("listen = \"127.0.0.1:1\"\nrefresh_grace = \"10s\"").unwrap();
        raw.apply_env(|k| (k == "KEYWARD_LISTEN").then(|| "127.0.0.1:2".to_string()))
            .unwrap();
        let c = raw.resolve().unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.settings.refresh_grace_secs, 10);
        // The grace window defaults to a minute, may be turned off, and is bounded.
        let c = RawConfig::default().resolve().unwrap();
        assert_eq!(c.settings.refresh_grace_secs, 60);
        assert_eq!(
            c.settings.refresh_grace_secs,
            Settings::default().refresh_grace_secs
        );
        let off: RawConfig = toml::from_str("refresh_grace = \"0s\"").unwrap();
        assert_eq!(off.resolve().unwrap().settings.refresh_grace_secs, 0);
        for bad in ["refresh_grace = \"2h\"", "refresh_grace = \"soon\""] {
            let raw: RawConfig = toml::from_str(bad).unwrap();
            let e = raw.resolve().unwrap_err().to_string();
            assert!(e.contains("refresh_grace"), "{bad}: {e}");
        }
        let bad: RawConfig = toml::from_str("reload_interval = \"10s\"").unwrap();
        assert_eq!(
            bad.resolve().unwrap_err().to_string(),
            "reload_interval must be between 1s and 5s (changes must reach the server within 5 s)"
        );
        let bad: RawConfig = toml::from_str("listen = \"nope\"").unwrap();
        assert_eq!(
            bad.resolve().unwrap_err().to_string(),
            "listen: \"nope\" is not an address like 127.0.0.1:8080"
        );
    }

    #[test]
    fn trusted_proxies_parse_from_file_and_environment() {
        let c = RawConfig::default().resolve().unwrap();
        assert!(c.settings.trusted_proxies.is_empty());
        assert_eq!(c.to_json()["trusted_proxies"], json!([]));
        let raw: RawConfig =
            toml::from_str("trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\", \"2001:db8::/32\"]")
                .unwrap();
        let c = raw.resolve().unwrap();
        assert_eq!(
            c.to_json()["trusted_proxies"],
            json!(["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"])
        );
        let mut raw = RawConfig::default();
        raw.apply_env(|k| {
            (k == "KEYWARD_TRUSTED_PROXIES").then(|| " 127.0.0.1 , fd00::/8,".into())
        })
        .unwrap();
        let c = raw.resolve().unwrap();
        assert_eq!(
            c.to_json()["trusted_proxies"],
            json!(["127.0.0.1/32", "fd00::/8"])
        );
        for bad in [
            "trusted_proxies = [\"10.0.0.0/33\"]",
            "trusted_proxies = [\"lb.internal\"]",
        ] {
            let raw: RawConfig = toml::from_str(bad).unwrap();
            let e = raw.resolve().unwrap_err().to_string();
            assert!(
                e.contains("trusted_proxies") && e.contains("not an IP address"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn connection_limits_default_parse_and_validate() {
        let c = RawConfig::default().resolve().unwrap();
        assert_eq!(
            c.connections,
            crate::server::Limits {
                header_read_timeout: Duration::from_secs(30),
                body_read_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(30),
                max_connections: 512,
            }
        );
        let mut raw: RawConfig = toml::from_str(
            "header_read_timeout = \"5s\"\nbody_read_timeout = \"1m\"\nmax_connections = 10",
        )
        .unwrap();
        raw.apply_env(|k| match k {
            "KEYWARD_IDLE_TIMEOUT" => Some("2s".into()),
            "KEYWARD_MAX_CONNECTIONS" => Some("20".into()),
            _ => None,
        })
        .unwrap();
        let c = raw.resolve().unwrap();
        assert_eq!(c.connections.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.connections.body_read_timeout, Duration::from_secs(60));
        assert_eq!(c.connections.idle_timeout, Duration::from_secs(2));
        assert_eq!(c.connections.max_connections, 20);
        let j = c.to_json();
        assert_eq!(j["header_read_timeout_secs"], 5);
        assert_eq!(j["max_connections"], 20);
        for (toml, needle) in [
            ("header_read_timeout = \"0s\"", "header_read_timeout"),
            ("body_read_timeout = \"2h\"", "body_read_timeout"),
            ("idle_timeout = \"soon\"", "idle_timeout"),
            ("max_connections = 0", "max_connections"),
        ] {
            let raw: RawConfig = toml::from_str(toml).unwrap();
            let e = raw.resolve().unwrap_err().to_string();
            assert!(e.contains(needle), "{toml}: {e}");
        }
        // An idle_timeout the header timer would cut short is refused,
        // naming both; equal is fine.
        for (toml, ok) in [
            (
                "idle_timeout = \"2m\"\nheader_read_timeout = \"10s\"",
                false,
            ),
            ("idle_timeout = \"31s\"", false),
            (
                "idle_timeout = \"10s\"\nheader_read_timeout = \"10s\"",
                true,
            ),
            ("header_read_timeout = \"1m\"\nidle_timeout = \"1m\"", true),
        ] {
            let raw: RawConfig = toml::from_str(toml).unwrap();
            match raw.resolve() {
                Ok(c) => {
                    assert!(ok, "{toml}");
                    assert!(c.connections.idle_timeout <= c.connections.header_read_timeout);
                }
                Err(e) => {
                    let e = e.to_string();
                    assert!(!ok, "{toml}: {e}");
                    assert!(
                        e.contains("idle_timeout") && e.contains("header_read_timeout"),
                        "{e}"
                    );
                }
            }
        }
        let mut raw = RawConfig::default();
        let e = raw
            .apply_env(|k| (k == "KEYWARD_MAX_CONNECTIONS").then(|| "many".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("KEYWARD_MAX_CONNECTIONS"), "{e}");
    }

    #[test]
    fn passwords_are_masked() {
        for (url, shown) in [
            ("postgres://u:secret@h/db", "postgres://u:****@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://h:5432/db", "postgres://h:5432/db"),
            (
                "postgres://u@h/db?password=secret&sslmode=require",
                "postgres://u@h/db?password=****&sslmode=require",
            ),
            (
                "postgresql://u:secret@h/db?sslpassword=secret&sslkey=/k.pem&application_name=kw",
                "postgresql://u:****@h/db?sslpassword=****&sslkey=****&application_name=kw",
            ),
            (
                "postgres://u:sec/ret@h/db?PassWord=secret",
                "postgres://u:****@h/db?PassWord=****",
            ),
            (
                "postgres://u:secret@h/db?application_name=a@b",
                "postgres://u:****@b",
            ),
            ("sqlite:/var/kw.db?mode=rwc", "sqlite:/var/kw.db?mode=rwc"),
            (
                "sqlite:/var/kw.db?token=secret",
                "sqlite:/var/kw.db?token=****",
            ),
            ("host=h user=u password=secret", "****"),
            // Names are read as sqlx reads them: percent-decoded, `+` a space.
            (
                "postgres://u@db/kw?p%61ssword=secret",
                "postgres://u@db/kw?p%61ssword=****",
            ),
            (
                "postgres://u@db/kw?%70%61%73%73%77%6F%72%64=secret&ssl%6Dode=require",
                "postgres://u@db/kw?%70%61%73%73%77%6F%72%64=****&ssl%6Dode=require",
            ),
            (
                "postgres://u@db/kw?application_name=my+app&pass+word=secret",
                "postgres://u@db/kw?application_name=my+app&pass+word=****",
            ),
            // Unknown parameters are masked, known harmless ones shown;
            // repeated ones each on their own.
            (
                "postgres://u@db/kw?sslmode=require&sslmode=verify-full&passfile=secret&options=-c%20x%3Dsecret",
                "postgres://u@db/kw?sslmode=require&sslmode=verify-full&passfile=****&options=****",
            ),
            (
                "postgres://u@db/kw?password=secret&password=secret&connect_timeout=5&",
                "postgres://u@db/kw?password=****&password=****&connect_timeout=5&",
            ),
            (
                "postgres://u@db/kw?secret&sslmode&SSLMODE=secret",
                "postgres://u@db/kw?****&sslmode&SSLMODE=****",
            ),
            // A fragment, whatever it holds.
            (
                "postgres://u@db/kw?sslmode=require#secret",
                "postgres://u@db/kw?sslmode=require#****",
            ),
            (
                "sqlite:/var/kw.db?mode=ro&cache=shared&x=secret",
                "sqlite:/var/kw.db?mode=ro&cache=shared&x=****",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("secret"), "{url}");
        }
    }

    #[test]
    fn database_url_is_validated_without_echoing_it() {
        for bad in [
            "host=db.example user=kw password=s3cr3t dbname=kw",
            "mysql://kw:s3cr3t@db/kw",
            "postgres://kw:s3cr3t@db:port/kw",
        ] {
            let raw = RawConfig {
                database_url: Some(bad.into()),
                ..RawConfig::default()
            };
            let e = format!("{:#}", raw.resolve().unwrap_err());
            assert!(e.contains("database_url"), "{e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
        let raw = RawConfig {
            database_url: Some("postgres://kw:s3cr3t@db/kw?sslpassword=s3cr3t".into()),
            ..RawConfig::default()
        };
        let c = raw.resolve().unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!c.to_json().to_string().contains("s3cr3t"));
    }

    #[test]
    fn signing_timeout_is_bounded() {
        assert_eq!(
            super::signing_timeout(None).unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            super::signing_timeout(Some("1500ms")).unwrap(),
            Duration::from_millis(1500)
        );
        for bad in ["0s", "50ms", "2m", "soon", ""] {
            let e = super::signing_timeout(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("signing_timeout"), "{bad}: {e}");
        }
    }
}
