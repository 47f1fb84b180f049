//! Trusted JWKS hosts: an issuer found by OIDC discovery is loaded only when
//! its `jwks_uri` is on the issuer's own host and port or on a host its
//! `jwks_hosts` names; otherwise the gateway does not start.

mod common;

use common::{get_with, jwks, token_for, upstream, AUD};
use keyward_gateway::{Config, Gateway, StartError};
use serde_json::json;

/// A discovery server at its own port whose document names itself as the
/// issuer and `jwks_uri` as where the keys are. Returns its base URL.
async fn discovery(jwks_uri: impl Fn(&str) -> String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let doc = json!({ "issuer": base, "jwks_uri": jwks_uri(&base) }).to_string();
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { ([("content-type", "application/json")], doc) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A JWKS server on another port; returns its `jwks_uri`.
async fn keys_elsewhere() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = jwks(&[]);
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/jwks.json")
}

fn config(dir: &tempfile::TempDir, issuer: &str, hosts: Option<&str>, up: &str) -> Config {
    let hosts = hosts.map_or(String::new(), |h| format!("jwks_hosts = {h}\n"));
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[[issuer]]\nissuer = \"{issuer}\"\naudiences = [\"{AUD}\"]\n{hosts}\n\
         [[route]]\npath = \"/*\"\nupstream = \"{up}\"\n"
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    Config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test]
async fn a_jwks_uri_on_another_host_or_port_is_refused_unless_allowed() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = keys_elsewhere().await;
    let port = url_port(&elsewhere);
    let issuer = {
        let e = elsewhere.clone();
        discovery(move |_| e.clone()).await
    };

    // Not allowed: the gateway does not start, and says which issuer and why.
    for hosts in [None, Some("[\"localhost\"]"), Some("[\"127.0.0.1:1\"]")] {
        let c = config(&dir, &issuer, hosts, &up.origin());
        let checks = Gateway::check_discovery(&c).await;
        assert_eq!(checks.len(), 1);
        assert!(checks[0].untrusted_host(), "{hosts:?}: {:?}", checks[0]);
        let e = Gateway::start(c).await.unwrap_err();
        assert!(matches!(e, StartError::UntrustedJwksHost { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains(&issuer) && text.contains(&elsewhere) && text.contains("jwks_hosts"),
            "{text}"
        );
    }

    // Allowed by host:port: the gateway starts and verifies tokens signed
    // with the keys published there.
    let hosts = format!("[\"127.0.0.1:{port}\"]");
    let c = config(&dir, &issuer, Some(&hosts), &up.origin());
    let checks = Gateway::check_discovery(&c).await;
    assert_eq!(checks[0].result.as_deref().unwrap(), elsewhere);
    let running = Gateway::start(c).await.unwrap();
    let now = common::now();
    let t = token_for(&json!({
        "iss": issuer, "sub": "alice", "aud": AUD, "exp": now + 600, "iat": now,
    }));
    let r = get_with(&format!("http://{}/x", running.addr()), &t).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test]
async fn the_issuers_own_host_needs_no_allowlist() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    // jwks_uri on the issuer's own origin (same host and port).
    let issuer = discovery(|base| format!("{base}/jwks.json")).await;
    let c = config(&dir, &issuer, None, &up.origin());
    let checks = Gateway::check_discovery(&c).await;
    assert_eq!(
        checks[0].result.as_deref().unwrap(),
        format!("{issuer}/jwks.json")
    );
    assert!(!checks[0].untrusted_host());
}

#[test]
fn bad_jwks_hosts_are_config_errors() {
    let up = "http://127.0.0.1:9";
    for (hosts, needle) in [
        ("[\"https://keys.example\"]", "not a host"),
        ("[\"keys.example/jwks\"]", "not a host"),
        ("[\"\"]", "not a host"),
    ] {
        let text = format!(
            "[[issuer]]\nissuer = \"https://auth.example\"\naudiences = [\"a\"]\njwks_hosts = {hosts}\n[[route]]\npath = \"/*\"\nupstream = \"{up}\"\n"
        );
        let e = common::check(&text).unwrap_err().to_string();
        assert!(
            e.contains(needle) && e.contains("gateway.toml:4:"),
            "{hosts}: {e}"
        );
    }
    let text = format!(
        "[[issuer]]\nissuer = \"https://auth.example\"\naudiences = [\"a\"]\njwks_uri = \"https://keys.example/jwks\"\njwks_hosts = [\"keys.example\"]\n[[route]]\npath = \"/*\"\nupstream = \"{up}\"\n"
    );
    let e = common::check(&text).unwrap_err().to_string();
    assert!(e.contains("only to keys found by discovery"), "{e}");
}

fn url_port(u: &str) -> u16 {
    u.split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
