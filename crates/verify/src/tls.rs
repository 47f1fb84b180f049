//! TLS termination shared by the issuer and the gateway: rustls with the
//! aws-lc-rs provider, TLS 1.3 and 1.2 only, the provider's default suites
//! (ECDHE key exchange and AEAD ciphers only: AES-GCM and ChaCha20-Poly1305),
//! ALPN `h2` and `http/1.1`.
//!
//! The certificate chain and key (PEM files) and the client CA are read
//! again every `reload_interval`: when their bytes change, a new server
//! configuration is built and used for new connections; a file that does not
//! load (half-written, wrong key, no certificate) keeps the old one, logs an
//! error and counts `keyward_tls_reload_total{result="error"}`.
//!
//! Client certificates (RFC 8705) are requested when configured, optional or
//! required. With a `client_ca`, a certificate must chain to it unless
//! `self_signed_clients` is on; then any certificate is accepted at the
//! handshake (the handshake still proves the client holds its key) and
//! whether it chains to the CA is recorded in [`PeerCertificate::ca_verified`]
//! for who needs it (the issuer's `tls_client_auth`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::client_cert::PeerCertificate;

/// Whether clients are asked for a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientCertificates {
    /// Not asked (default).
    #[default]
    Off,
    /// Asked; a client may send none.
    Optional,
    /// Asked; a client that sends none fails the handshake.
    Required,
}

impl ClientCertificates {
    /// From the configuration's words `off`, `optional`, `required`.
    pub fn parse(s: &str) -> Option<ClientCertificates> {
        Some(match s {
            "off" => ClientCertificates::Off,
            "optional" => ClientCertificates::Optional,
            "required" => ClientCertificates::Required,
            _ => return None,
        })
    }
}

/// Default [`TlsSettings::reload_interval`].
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// A TLS listener's files and client-certificate rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM: the server's certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Whether client certificates are requested.
    pub client_certificates: ClientCertificates,
    /// PEM: the CAs client certificates are verified against.
    pub client_ca: Option<PathBuf>,
    /// Accept client certificates that do not chain to `client_ca`
    /// (self-signed ones, RFC 8705 §2.2); always so without a `client_ca`.
    pub self_signed_clients: bool,
    /// How often the files are read again.
    pub reload_interval: Duration,
}

impl TlsSettings {
    /// A listener with `cert` and `key`, asking for no client certificate.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsSettings {
        TlsSettings {
            cert: cert.into(),
            key: key.into(),
            client_certificates: ClientCertificates::Off,
            client_ca: None,
            self_signed_clients: false,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }

    /// Whether any client certificate is accepted at the handshake.
    fn accepts_any_client(&self) -> bool {
        self.client_ca.is_none() || self.self_signed_clients
    }
}

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    Pem { path: PathBuf, what: String },
    #[error("the TLS configuration is not usable: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the client CA is not usable: {0}")]
    ClientCa(String),
}

/// The provider every TLS listener uses: aws-lc-rs, whatever else is in the
/// process (reqwest may bring ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What the files held when they were last read, and what was made of them.
struct Loaded {
    files: [Option<Vec<u8>>; 3],
    acceptor: TlsAcceptor,
    /// Verifies a client's chain against `client_ca`, when there is one.
    ca: Option<Arc<dyn ClientCertVerifier>>,
}

/// A TLS listener's current configuration, reloaded from its files.
pub struct TlsServer {
    settings: TlsSettings,
    current: ArcSwap<Loaded>,
    /// The bytes of the last attempt that failed (so it is logged once).
    failed: std::sync::Mutex<Option<[Option<Vec<u8>>; 3]>>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_err(path: &Path, what: impl Into<String>) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, format!("not a PEM certificate list ({e})")))?;
    if certs.is_empty() {
        return Err(pem_err(path, "holds no certificate"));
    }
    Ok(certs)
}

impl TlsServer {
    /// Reads the files and makes the configuration; an error names the file.
    pub fn load(settings: TlsSettings) -> Result<Arc<TlsServer>, TlsError> {
        let files = Self::read_files(&settings)?;
        let loaded = Self::build(&settings, files)?;
        Ok(Arc::new(TlsServer {
            settings,
            current: ArcSwap::from_pointee(loaded),
            failed: std::sync::Mutex::new(None),
        }))
    }

    /// The settings it was made from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Whether clients are asked for certificates.
    pub fn requests_client_certificates(&self) -> bool {
        self.settings.client_certificates != ClientCertificates::Off
    }

    fn read_files(s: &TlsSettings) -> Result<[Option<Vec<u8>>; 3], TlsError> {
        Ok([
            Some(read(&s.cert)?),
            Some(read(&s.key)?),
            s.client_ca.as_deref().map(read).transpose()?,
        ])
    }

    fn build(s: &TlsSettings, files: [Option<Vec<u8>>; 3]) -> Result<Loaded, TlsError> {
        let provider = provider();
        let certs = certificates(&s.cert, files[0].as_deref().unwrap_or_default())?;
        let key = PrivateKeyDer::from_pem_slice(files[1].as_deref().unwrap_or_default())
            .map_err(|e| pem_err(&s.key, format!("holds no usable private key ({e})")))?;
        let ca = match (&s.client_ca, files[2].as_deref()) {
            (Some(path), Some(pem)) => {
                let mut roots = RootCertStore::empty();
                for c in certificates(path, pem)? {
                    roots
                        .add(c)
                        .map_err(|e| TlsError::ClientCa(format!("{}: {e}", path.display())))?;
                }
                let v =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let v = match s.client_certificates {
                    ClientCertificates::Required => v,
                    _ => v.allow_unauthenticated(),
                };
                Some(v.build().map_err(|e| TlsError::ClientCa(e.to_string()))?)
            }
            _ => None,
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match (s.client_certificates, &ca) {
            (ClientCertificates::Off, _) => builder.with_no_client_auth(),
            (_, Some(ca)) if !s.accepts_any_client() => {
                builder.with_client_cert_verifier(ca.clone())
            }
            (mode, _) => builder.with_client_cert_verifier(Arc::new(AnyClientCertificate {
                provider: provider.clone(),
                required: mode == ClientCertificates::Required,
            })),
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Loaded {
            files,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca,
        })
    }

    /// Reads the files again; when their bytes changed, makes and uses the
    /// new configuration. `Ok(true)` when it changed, `Ok(false)` when
    /// nothing did; an error (logged once per failing content) keeps the
    /// configuration in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let result = Self::read_files(&self.settings).and_then(|files| {
            if files == self.current.load().files {
                return Ok(None);
            }
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            if failed.as_ref() == Some(&files) {
                return Ok(None);
            }
            match Self::build(&self.settings, files.clone()) {
                Ok(l) => {
                    *failed = None;
                    Ok(Some(l))
                }
                Err(e) => {
                    *failed = Some(files);
                    Err(e)
                }
            }
        });
        match result {
            Ok(None) => Ok(false),
            Ok(Some(loaded)) => {
                self.current.store(Arc::new(loaded));
                metrics::counter!("keyward_tls_reload_total", "result" => "ok").increment(1);
                tracing::info!(cert = %self.settings.cert.display(), "TLS certificate reloaded");
                Ok(true)
            }
            Err(e) => {
                metrics::counter!("keyward_tls_reload_total", "result" => "error").increment(1);
                tracing::error!(error = %e, "TLS files changed but do not load; still serving the previous certificate");
                Err(e)
            }
        }
    }

    /// Reloads every `reload_interval` until the handle is aborted.
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        metrics::describe_counter!(
            "keyward_tls_reload_total",
            "TLS certificate reloads after a file changed: ok, or error (the previous certificate stays in use)."
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.settings.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let this = this.clone();
                // File reads and key parsing off the async threads.
                let _ = tokio::task::spawn_blocking(move || this.reload()).await;
            }
        })
    }

    /// The TLS handshake on `io`, within `timeout`; then the client's
    /// certificate, if it sent one.
    pub async fn accept<IO>(
        &self,
        io: IO,
        timeout: Duration,
    ) -> std::io::Result<(TlsStream<IO>, Option<Arc<PeerCertificate>>)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let loaded = self.current.load_full();
        let stream = tokio::time::timeout(timeout, loaded.acceptor.accept(io))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        let peer = match stream.get_ref().1.peer_certificates() {
            Some([end, chain @ ..]) => {
                let ca_verified = match &loaded.ca {
                    Some(ca) => ca.verify_client_cert(end, chain, UnixTime::now()).is_ok(),
                    None => false,
                };
                Some(Arc::new(PeerCertificate::new(end.to_vec(), ca_verified)))
            }
            _ => None,
        };
        Ok((stream, peer))
    }
}

/// Accepts any client certificate whose holder signs the handshake (RFC
/// 8705 §2.2 self-signed certificates): who it belongs to is decided after
/// the handshake, by the client registration or the token's binding.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<CryptoProvider>,
    required: bool,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Still an X.509 certificate that parses; its signatures are
        // checked in the handshake below.
        x509_parser::parse_x509_certificate(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
