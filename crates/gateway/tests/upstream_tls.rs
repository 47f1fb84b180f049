//! HTTPS upstreams: a TLS echo upstream whose certificate a CA made at test
//! time signed; the gateway trusts that CA from `upstream_tls.ca_file`, sends
//! SNI from the upstream host or `server_name`, and refuses (502) an upstream
//! whose certificate it cannot verify.

mod common;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA and a server certificate for `names`, signed by it.
fn pki(names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A TLS upstream answering `tls <SNI>` with the request's path; returns
/// its port.
async fn tls_upstream(p: &Pki) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(p.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let body = format!("tls {sni} {}", req.uri().path());
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_upstreams_are_verified_with_the_configured_ca_and_sni() {
    let p = pki(&["localhost", "api.internal"]);
    let port = tls_upstream(&p).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &p.ca_pem).unwrap();
    let other = pki(&["localhost"]);
    std::fs::write(dir.path().join("other-ca.pem"), &other.ca_pem).unwrap();
    let ca = dir.path().join("ca.pem");
    let other_ca = dir.path().join("other-ca.pem");
    let routes = format!(
        r#"
[[route]]
path = "/ok/*"
upstream = "https://localhost:{port}"
anonymous = true
upstream_tls = {{ ca_file = "{ca}" }}

[[route]]
path = "/sni/*"
upstream = "https://127.0.0.1:{port}"
anonymous = true
upstream_tls = {{ ca_file = "{ca}", server_name = "api.internal" }}

[[route]]
path = "/wrong-name/*"
upstream = "https://127.0.0.1:{port}"
anonymous = true
upstream_tls = {{ ca_file = "{ca}", server_name = "elsewhere.internal" }}

[[route]]
path = "/wrong-ca/*"
upstream = "https://localhost:{port}"
anonymous = true
upstream_tls = {{ ca_file = "{other}" }}

[[route]]
path = "/system-roots/*"
upstream = "https://localhost:{port}"
anonymous = true

[[route]]
path = "/plain/*"
upstream = "http://localhost:{port}"
anonymous = true
"#,
        ca = ca.display(),
        other = other_ca.display()
    );
    let up = upstream().await;
    let gw = start(&routes, &up).await;
    let r = get(&gw.url("/ok/a"), &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, "tls localhost /ok/a");
    // Keep-alive: a second request on the pooled TLS connection.
    assert_eq!(get(&gw.url("/ok/b"), &[]).await.body, "tls localhost /ok/b");
    let r = get(&gw.url("/sni/a"), &[]).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (200, &b"tls api.internal /sni/a"[..])
    );
    for refused in [
        "/wrong-name/a",
        "/wrong-ca/a",
        "/system-roots/a",
        "/plain/a",
    ] {
        let r = get(&gw.url(refused), &[]).await;
        assert_eq!(r.status, 502, "{refused}: {:?}", r.body);
    }
}

#[test]
fn upstream_tls_errors_are_located() {
    for (route, needle) in [
        (
            "upstream = \"http://127.0.0.1:1\"\nupstream_tls = { ca_file = \"ca.pem\" }",
            "upstream is http://",
        ),
        (
            "upstream = \"https://127.0.0.1:1\"\nupstream_tls = { ca_file = \"missing.pem\" }",
            "missing.pem",
        ),
        (
            "upstream = \"https://127.0.0.1:1\"\nupstream_tls = { ca_file = \"jwks.json\" }",
            "no usable CA certificate",
        ),
        (
            "upstream = \"https://127.0.0.1:1\"\nupstream_tls = { cert_file = \"jwks.json\" }",
            "go together",
        ),
        (
            "upstream = \"https://127.0.0.1:1\"\nupstream_tls = { server_name = \"bad name!\" }",
            "not a DNS name",
        ),
        ("upstream = \"ftp://127.0.0.1:1\"", "scheme"),
    ] {
        let text = format!("[[route]]\npath = \"/a\"\nanonymous = true\n{route}\n");
        let e = check(&text).unwrap_err().to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
}
