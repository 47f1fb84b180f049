//! TLS to `https://` upstreams: rustls (aws-lc-rs), the system's trusted
//! roots or a route's own CA file, SNI and certificate name from the
//! upstream's host unless `server_name` overrides them, and optionally a
//! client certificate. Built once when the configuration is read, so a
//! missing or unreadable file is reported at its place in the file.
//!
//! ```toml
//! [[route]]
//! path = "/billing/*"
//! upstream = "https://billing.internal:8443"
//! upstream_tls = { ca_file = "internal-ca.pem", server_name = "billing.internal", cert_file = "gw.pem", key_file = "gw-key.pem" }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use toml::Spanned;

use crate::config::Checker;

/// `upstream_tls` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    ca_file: Option<Spanned<String>>,
    server_name: Option<Spanned<String>>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
}

/// How the gateway speaks TLS to one upstream.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The rustls client.
    pub connector: tokio_rustls::TlsConnector,
    /// The name sent as SNI and checked against the certificate.
    pub server_name: ServerName<'static>,
    /// What it was made from (roots, name, client certificate): upstreams
    /// are the same when this is.
    pub describe: String,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.describe == other.describe
    }
}

impl Eq for UpstreamTls {}

fn path_of(base_dir: &Path, s: &Spanned<String>) -> PathBuf {
    let p = PathBuf::from(s.get_ref());
    if p.is_relative() {
        base_dir.join(p)
    } else {
        p
    }
}

/// The TLS settings of an `https://` upstream whose host is `host`; `None`
/// after an error (reported to `c`).
pub(crate) fn resolve(
    host: &str,
    raw: Option<&Spanned<RawUpstreamTls>>,
    base_dir: &Path,
    c: &mut Checker<'_>,
) -> Option<UpstreamTls> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b,
        Err(e) => {
            c.err(0, format!("cannot set up TLS: {e}"), "report this as a bug");
            return None;
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    let mut describe = String::new();
    let r = raw.map(Spanned::get_ref);
    match r.and_then(|r| r.ca_file.as_ref()) {
        Some(f) => {
            let path = path_of(base_dir, f);
            let certs: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(&path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            {
                Ok(c) => c,
                Err(e) => {
                    c.at(f, format!("upstream_tls.ca_file {}: {e}", path.display()), "write the path of a PEM file of CA certificates (relative paths start at the configuration file's directory)");
                    return None;
                }
            };
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                c.at(
                    f,
                    format!(
                        "upstream_tls.ca_file {} holds no usable CA certificate",
                        path.display()
                    ),
                    "write the path of a PEM file with at least one CA certificate",
                );
                return None;
            }
            describe.push_str(&format!("ca {}", path.display()));
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            describe.push_str("system roots");
        }
    }
    let name_text = match r.and_then(|r| r.server_name.as_ref()) {
        Some(n) => n.get_ref().clone(),
        None => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    };
    let server_name = match ServerName::try_from(name_text.clone()) {
        Ok(n) => n,
        Err(_) => {
            match r.and_then(|r| r.server_name.as_ref()) {
                Some(n) => c.at(
                    n,
                    format!(
                        "upstream_tls.server_name {name_text:?} is not a DNS name or IP address"
                    ),
                    "write the name on the upstream's certificate, e.g. \"billing.internal\"",
                ),
                None => c.err(
                    0,
                    format!("upstream host {host:?} is not a TLS server name"),
                    "set upstream_tls.server_name",
                ),
            }
            return None;
        }
    };
    describe.push_str(&format!(", name {name_text}"));
    let builder = builder.with_root_certificates(roots);
    let mut config = match r.map(|r| (&r.cert_file, &r.key_file)) {
        Some((Some(cert), Some(key))) => {
            let cert_path = path_of(base_dir, cert);
            let key_path = path_of(base_dir, key);
            let chain = CertificateDer::pem_file_iter(&cert_path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>());
            let Ok(chain) = chain.map_err(|e| {
                c.at(
                    cert,
                    format!("upstream_tls.cert_file {}: {e}", cert_path.display()),
                    "write the path of the gateway's PEM certificate chain",
                );
            }) else {
                return None;
            };
            let Ok(pk) = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
                c.at(
                    key,
                    format!("upstream_tls.key_file {}: {e}", key_path.display()),
                    "write the path of the certificate's PEM private key",
                );
            }) else {
                return None;
            };
            describe.push_str(&format!(", client cert {}", cert_path.display()));
            match builder.with_client_auth_cert(chain, pk) {
                Ok(cfg) => cfg,
                Err(e) => {
                    c.at(
                        cert,
                        format!(
                            "upstream_tls: the client certificate and key do not go together: {e}"
                        ),
                        "give the key of this certificate",
                    );
                    return None;
                }
            }
        }
        Some((Some(f), None)) | Some((None, Some(f))) => {
            c.at(
                f,
                "upstream_tls.cert_file and key_file go together",
                "set both, or neither",
            );
            return None;
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(UpstreamTls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
        describe,
    })
}
