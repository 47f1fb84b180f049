//! TLS termination and certificate-bound tokens (RFC 8705) at the gateway,
//! with curl as the caller and certificates made at run time.

mod common;
#[path = "../../verify/tests/support/pki.rs"]
mod pki;

use std::path::Path;
use std::time::Duration;

use common::*;
use pki::{curl, Ca, Cert};
use serde_json::{json, Value};

/// The gateway's `[tls]` section for `dir`'s `server.pem` / `server.key`.
fn tls_section(extra: &str) -> String {
    format!("[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nreload_interval = \"100ms\"\n{extra}\n")
}

/// Starts a gateway over TLS: `tls_extra` goes in `[tls]`, `routes` after.
async fn start_tls(ca: &Ca, tls_extra: &str, routes: &str, up: &Upstream) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    ca.server().write(dir.path(), "server");
    ca.write(dir.path(), "ca");
    let text = format!(
        "listen = \"127.0.0.1:0\"\n{}\n{}\n{}",
        tls_section(tls_extra),
        issuer_section(),
        routes.replace("{UP}", &up.origin())
    );
    std::fs::write(dir.path().join("jwks.json"), jwks(&[])).unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    let config = keyward_gateway::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let running = keyward_gateway::Gateway::start(config).await.unwrap();
    let base = format!("https://127.0.0.1:{}", running.addr().port());
    Gw { running, dir, base }
}

/// curl, off the async threads; returns (exit ok, stdout).
async fn run(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = curl(&a);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(dir: &Path, url: &str, more: &[&str]) -> Vec<String> {
    let mut a = vec![
        "--cacert".to_string(),
        dir.join("ca.pem").display().to_string(),
    ];
    a.extend(more.iter().map(|s| s.to_string()));
    a.push(url.to_string());
    a
}

fn with_cert(dir: &Path, name: &str) -> Vec<String> {
    vec![
        "--cert".into(),
        dir.join(format!("{name}.pem")).display().to_string(),
        "--key".into(),
        dir.join(format!("{name}.key")).display().to_string(),
    ]
}

/// `-w` output after the body: `\n<status> <http version>`.
fn status_and_version(out: &str) -> (u16, String, Value) {
    let (body, tail) = out.rsplit_once('\n').unwrap_or(("", out));
    let mut t = tail.split(' ');
    let status = t.next().unwrap_or("0").parse().unwrap_or(0);
    let version = t.next().unwrap_or("").to_string();
    (
        status,
        version,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// One anonymous route to the echo upstream.
const ANON_ROUTE: &str = "[[route]]\npath = \"/*\"\nupstream = \"{UP}\"\nanonymous = true\n";

const W: &str = "\n%{http_code} %{http_version}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_12_and_13_and_h2_by_alpn_and_nothing_older() {
    let up = upstream().await;
    let ca = Ca::new("test CA");
    let gw = start_tls(&ca, "", ANON_ROUTE, &up).await;
    let url = gw.url("/hello");
    let d = gw.dir.path();
    for (flags, version) in [
        (vec!["--tlsv1.3", "--http1.1"], "1.1"),
        (vec!["--tlsv1.2", "--tls-max", "1.2", "--http1.1"], "1.1"),
        (vec!["--http2"], "2"),
        (vec!["--tlsv1.2", "--tls-max", "1.2", "--http2"], "2"),
    ] {
        let mut more = flags.clone();
        more.extend(["-w", W]);
        let (ok, out, err) = run(args(d, &url, &more)).await;
        assert!(ok, "{flags:?}: {err}");
        let (status, v, body) = status_and_version(&out);
        assert_eq!((status, v.as_str()), (200, version), "{flags:?}: {out}");
        assert_eq!(body["path"], "/hello");
        assert_eq!(body["headers"]["x-forwarded-proto"][0], "https");
    }
    // TLS 1.1 and older: no handshake.
    let (ok, _, _) = run(args(d, &url, &["--tls-max", "1.1", "--tlsv1"])).await;
    assert!(!ok, "TLS 1.1 was accepted");
    // Clear text on the TLS port: no answer.
    let (ok, _, _) = run(args(d, &url.replace("https", "http"), &[])).await;
    assert!(!ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_reload_on_change_and_a_bad_file_keeps_the_old_one() {
    let up = upstream().await;
    let ca = Ca::new("first CA");
    let gw = start_tls(&ca, "", ANON_ROUTE, &up).await;
    let d = gw.dir.path().to_path_buf();
    let url = gw.url("/x");
    let served_by = |ca_file: &str| {
        let mut a = vec![
            "--cacert".to_string(),
            d.join(ca_file).display().to_string(),
        ];
        a.extend(["-o".into(), "/dev/null".into(), url.clone()]);
        a
    };
    assert!(run(served_by("ca.pem")).await.0);
    // A half-written certificate file: the old one is still served.
    std::fs::write(d.join("server.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        run(served_by("ca.pem")).await.0,
        "bad file replaced the certificate"
    );
    // A key that is not the certificate's: still the old one.
    let other = Ca::new("second CA");
    let new = other.server();
    std::fs::write(d.join("server.pem"), &new.pem).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        run(served_by("ca.pem")).await.0,
        "mismatched key replaced the certificate"
    );
    // Both files: the new certificate, without a restart.
    other.write(&d, "ca2");
    std::fs::write(d.join("server.key"), &new.key_pem).unwrap();
    let t = std::time::Instant::now();
    loop {
        if run(served_by("ca2.pem")).await.0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !run(served_by("ca.pem")).await.0,
        "the old certificate is still served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_required_or_optional() {
    let up = upstream().await;
    let ca = Ca::new("client CA");
    let route = ANON_ROUTE;
    for (mode, without_ok) in [("required", false), ("optional", true)] {
        let extra = format!("client_certificates = \"{mode}\"\nclient_ca = \"ca.pem\"\n");
        let gw = start_tls(&ca, &extra, route, &up).await;
        let d = gw.dir.path();
        ca.client("app", "Example", vec![]).write(d, "client");
        pki::self_signed("stranger").write(d, "stranger");
        let url = gw.url("/x");
        let (ok, _, err) = run(args(d, &url, &["-o", "/dev/null"])).await;
        assert_eq!(ok, without_ok, "{mode} without a certificate: {err}");
        let mut a = args(d, &url, &["-o", "/dev/null"]);
        a.splice(0..0, with_cert(d, "client"));
        assert!(run(a).await.0, "{mode} with a CA-issued certificate");
        // Not issued by the client CA: refused at the handshake.
        let mut a = args(d, &url, &["-o", "/dev/null"]);
        a.splice(0..0, with_cert(d, "stranger"));
        assert!(
            !run(a).await.0,
            "{mode}: a certificate of another CA was accepted"
        );
    }
}

/// A token bound to `cert` (and one not bound at all).
fn bound_token(cert: &Cert) -> String {
    let mut c = claims();
    c["cnf"] = json!({ "x5t#S256": cert.thumbprint() });
    token_for(&c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_bound_token_needs_the_same_certificate_cached_or_not() {
    let up = upstream().await;
    let ca = Ca::new("CA");
    let extra = "client_certificates = \"optional\"\n";
    let routes = "[[route]]\npath = \"/open/*\"\nupstream = \"{UP}\"\n\n[[route]]\npath = \"/strict/*\"\nupstream = \"{UP}\"\nsender_constraint = \"mtls\"\n";
    let gw = start_tls(&ca, extra, routes, &up).await;
    let d = gw.dir.path();
    // Self-signed client certificates: the gateway only compares thumbprints.
    let alice = pki::self_signed("alice");
    alice.write(d, "alice");
    pki::self_signed("mallory").write(d, "mallory");
    let token = bound_token(&alice);
    let call = |path: &str, cert: Option<&str>, token: &str| {
        let mut a = Vec::new();
        if let Some(c) = cert {
            a.extend(with_cert(d, c));
        }
        a.extend(args(
            d,
            &gw.url(path),
            &["-w", W, "-H", &format!("authorization: Bearer {token}")],
        ));
        a
    };
    let hits = up.hits();
    let (ok, out, err) = run(call("/open/a", Some("alice"), &token)).await;
    assert!(ok, "{err}");
    assert_eq!(status_and_version(&out).0, 200, "{out}");
    // Now cached: another certificate, none at all, are still refused.
    for cert in [Some("mallory"), None] {
        let mut a = vec!["-i".to_string()];
        a.extend(call("/open/a", cert, &token));
        let (_, out, _) = run(a).await;
        assert!(out.contains(" 401"), "{cert:?}: {out}");
        assert!(
            out.to_ascii_lowercase()
                .contains("www-authenticate: bearer")
                && out.contains("error=\"invalid_token\""),
            "{out}"
        );
    }
    assert_eq!(
        up.hits(),
        hits + 1,
        "a refused request reached the upstream"
    );
    let cached = gw.running.gate().unwrap().token_cache().unwrap().len();
    assert!(cached >= 1, "the token was not cached");
    // A token not bound: fine on /open, refused where the route requires mtls,
    // even with a certificate.
    let plain = token_for(&claims());
    let (_, out, _) = run(call("/open/a", Some("alice"), &plain)).await;
    assert_eq!(status_and_version(&out).0, 200, "{out}");
    let (_, out, _) = run(call("/strict/a", Some("alice"), &plain)).await;
    assert_eq!(status_and_version(&out).0, 401, "{out}");
    let (_, out, _) = run(call("/strict/a", Some("alice"), &token)).await;
    assert_eq!(status_and_version(&out).0, 200, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_can_require_certificate_bound_tokens() {
    let up = upstream().await;
    let text = format!(
        "listen = \"127.0.0.1:0\"\n{}sender_constraint = \"mtls\"\n\n[[route]]\npath = \"/*\"\nupstream = \"{}\"\n",
        issuer_section(),
        up.origin()
    );
    let gw = start_with(&text, &jwks(&[])).await;
    let r = get_with(&gw.url("/a"), &token()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_token");
    assert_eq!(up.hits(), 0);
}

fn escaped(pem: &str) -> String {
    pem.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_proxy_passes_the_certificate_from_a_trusted_address_only() {
    let up = upstream().await;
    let alice = pki::self_signed("alice");
    let mallory = pki::self_signed("mallory");
    let token = bound_token(&alice);
    let route =
        |up: &Upstream| format!("[[route]]\npath = \"/*\"\nupstream = \"{}\"\n", up.origin());
    // Trusted: 127.0.0.1 (the test's own address).
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[client_certificate_header]\nname = \"X-Client-Cert\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n{}\n{}",
        issuer_section(),
        route(&up)
    );
    let gw = start_with(&text, &jwks(&[])).await;
    let h = |cert: &Cert| escaped(&cert.pem);
    let auth = format!("Bearer {token}");
    let r = get(
        &gw.url("/a"),
        &[("authorization", &auth), ("x-client-cert", &h(&alice))],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.echoed("x-client-cert"), None, "the header was forwarded");
    let r = get(
        &gw.url("/a"),
        &[("authorization", &auth), ("x-client-cert", &h(&mallory))],
    )
    .await;
    assert_eq!(r.status, 401);
    let r = get(&gw.url("/a"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 401);
    // A trusted proxy sending garbage: refused, not taken as "no certificate".
    let r = get(
        &gw.url("/a"),
        &[("authorization", &auth), ("x-client-cert", "not-a-cert")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_token");

    // Untrusted: the header is ignored (the bound token fails) and stripped.
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[client_certificate_header]\nname = \"X-Client-Cert\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n\n{}\n{}\n[[route]]\npath = \"/anon/*\"\nupstream = \"{}\"\nanonymous = true\n",
        issuer_section(),
        route(&up).replace("\"/*\"", "\"/api/*\""),
        up.origin()
    );
    let gw = start_with(&text, &jwks(&[])).await;
    let hits = up.hits();
    let r = get(
        &gw.url("/api/a"),
        &[("authorization", &auth), ("x-client-cert", &h(&alice))],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(up.hits(), hits);
    let r = get(&gw.url("/anon/a"), &[("x-client-cert", &h(&alice))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.echoed("x-client-cert"),
        None,
        "an untrusted header was forwarded"
    );
}

#[test]
fn tls_config_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks(&[])).unwrap();
    std::fs::write(dir.path().join("server.pem"), "not pem").unwrap();
    std::fs::write(dir.path().join("server.key"), "not pem").unwrap();
    let route = "[[route]]\npath = \"/*\"\nupstream = \"http://127.0.0.1:1\"\n";
    for (section, want) in [
        ("[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n", "tls: "),
        ("[tls]\ncert = \"missing.pem\"\nkey = \"server.key\"\n", "tls.cert"),
        ("[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_certificates = \"maybe\"\n", "client_certificates"),
        ("[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"server.pem\"\n", "client_ca is set"),
        ("[client_certificate_header]\nname = \"X-C\"\ntrusted_proxies = [\"nope\"]\n", "not an IP address"),
        ("[client_certificate_header]\nname = \"X-C\"\ntrusted_proxies = []\n", "trusted_proxies is empty"),
        ("[client_certificate_header]\nname = \"authorization\"\ntrusted_proxies = [\"10.0.0.1\"]\n", "cannot be used"),
    ] {
        let text = format!("{section}\n{}\n{route}", issuer_section());
        let path = dir.path().join("g.toml");
        std::fs::write(&path, &text).unwrap();
        let e = keyward_gateway::Config::load(&path).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    let text = format!(
        "{}\n{route}sender_constraint = \"bearer\"\n",
        issuer_section()
    );
    let path = dir.path().join("g.toml");
    std::fs::write(&path, &text).unwrap();
    let e = keyward_gateway::Config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sender_constraint \"bearer\" is not known"),
        "{e}"
    );
}
