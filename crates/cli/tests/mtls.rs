//! The issuer over TLS (RFC 8705): mTLS client authentication
//! (`tls_client_auth`, `self_signed_tls_client_auth`), certificate-bound
//! access tokens, discovery; curl as the caller, certificates made at run
//! time.

mod common;
#[path = "../../verify/tests/support/pki.rs"]
mod pki;

use base64::Engine as _;
use common::*;
use pki::{curl, Ca, Cert};
use rcgen::SanType;
use serde_json::{json, Value};

struct Setup {
    kw: Kw,
    ca: Ca,
    server: Server,
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.server.addr)
    }

    fn ca_file(&self) -> String {
        self.kw.dir.path().join("ca.pem").display().to_string()
    }

    /// curl with the CA, `cert` (a name written by [`Setup::cert`]) and `args`;
    /// (exit ok, body, http status, http version).
    fn curl(&self, cert: Option<&str>, args: &[&str]) -> (bool, Value, u16, String) {
        let ca = self.ca_file();
        let mut a: Vec<String> = vec![
            "--cacert".into(),
            ca,
            "-w".into(),
            "\n%{http_code} %{http_version}".into(),
        ];
        if let Some(c) = cert {
            let d = self.kw.dir.path();
            a.extend([
                "--cert".into(),
                d.join(format!("{c}.pem")).display().to_string(),
                "--key".into(),
                d.join(format!("{c}.key")).display().to_string(),
            ]);
        }
        a.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = curl(&refs);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
        let mut t = tail.split(' ');
        let status = t.next().unwrap_or("0").parse().unwrap_or(0);
        let version = t.next().unwrap_or("").to_string();
        (
            out.status.success(),
            serde_json::from_str(body).unwrap_or(Value::Null),
            status,
            version,
        )
    }

    fn token(&self, cert: Option<&str>, client_id: &str) -> (u16, Value) {
        let (_, body, status, _) = self.curl(
            cert,
            &[
                "-d",
                "grant_type=client_credentials",
                "-d",
                &format!("client_id={client_id}"),
                &self.url("/oauth2/token"),
            ],
        );
        (status, body)
    }

    /// Lets the server's store reload (1 s) pick up new clients.
    fn settle(&self) {
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }

    fn cert(&self, name: &str, cert: &Cert) {
        cert.write(self.kw.dir.path(), name);
    }

    fn create(&self, args: &[&str]) -> String {
        let mut a = vec![
            "clients",
            "create",
            "--env",
            "default",
            "--name",
            "c",
            "--grant-types",
            "client_credentials",
            "--json",
        ];
        a.extend(args);
        self.kw.run(&a).ok().json()["client_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn start(client_certificates: &str) -> Setup {
    let kw = Kw::new();
    kw.init();
    let ca = Ca::new("client and server CA");
    let d = kw.dir.path();
    ca.server().write(d, "server");
    ca.write(d, "ca");
    let config = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_certificates = \"{client_certificates}\"\nclient_ca = \"{}\"\nself_signed_clients = true\n",
        d.join("server.pem").display(),
        d.join("server.key").display(),
        d.join("ca.pem").display()
    );
    let file = write(d, "keyward.toml", &config);
    let server = kw.start_server(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
    );
    Setup { kw, ca, server }
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn discovery_over_tls_and_h2_advertises_mtls() {
    let s = start("optional");
    for flag in ["--http1.1", "--http2"] {
        let (ok, doc, status, version) =
            s.curl(None, &[flag, &s.url("/.well-known/openid-configuration")]);
        assert!(ok && status == 200, "{doc}");
        assert_eq!(version, if flag == "--http2" { "2" } else { "1.1" });
        assert_eq!(doc["tls_client_certificate_bound_access_tokens"], true);
        let base = doc["issuer"]
            .as_str()
            .unwrap()
            .trim_end_matches('/')
            .to_string();
        assert_eq!(
            doc["mtls_endpoint_aliases"],
            json!({
                "token_endpoint": format!("{base}/oauth2/token"),
                "introspection_endpoint": format!("{base}/oauth2/introspect"),
                "revocation_endpoint": format!("{base}/oauth2/revoke"),
            })
        );
        for m in [
            "tls_client_auth",
            "self_signed_tls_client_auth",
            "client_secret_basic",
        ] {
            assert!(
                doc["token_endpoint_auth_methods_supported"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(m)),
                "{m}: {doc}"
            );
        }
    }
    // Without a listener asking for certificates: nothing of it advertised.
    let kw = Kw::new();
    kw.init();
    let server = kw.serve();
    let out = curl(&[&server.url("/.well-known/openid-configuration")]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc.get("mtls_endpoint_aliases").is_none(), "{doc}");
    assert!(doc
        .get("tls_client_certificate_bound_access_tokens")
        .is_none());
    assert!(!doc["token_endpoint_auth_methods_supported"]
        .to_string()
        .contains("tls_client_auth"));
}

#[test]
fn tls_client_auth_by_subject_dn_and_san_with_bound_tokens() {
    let s = start("optional");
    let by_dn = s.create(&[
        "--auth",
        "tls_client_auth",
        "--tls-subject-dn",
        "cn=app, o=Example",
    ]);
    let by_dns = s.create(&["--auth", "tls_client_auth", "--tls-san-dns", "app.example"]);
    let by_ip = s.create(&["--auth", "tls_client_auth", "--tls-san-ip", "10.0.0.7"]);
    let app = s.ca.client(
        "app",
        "Example",
        vec![SanType::DnsName("app.example".try_into().unwrap())],
    );
    s.cert("app", &app);
    s.cert(
        "other",
        &s.ca.client(
            "other",
            "Example",
            vec![
                SanType::DnsName("other.example".try_into().unwrap()),
                SanType::IpAddress("10.0.0.7".parse().unwrap()),
            ],
        ),
    );
    // Same DN, but self-signed: not from the client CA.
    let fake = pki::self_signed("app");
    s.cert("fake", &fake);
    s.settle();

    // DN match: a token bound to the certificate (thumbprint computed here).
    let (status, body) = s.token(Some("app"), &by_dn);
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(claims(token)["cnf"]["x5t#S256"], app.thumbprint());
    // SAN dns match, SAN ip match (another certificate).
    let (status, body) = s.token(Some("app"), &by_dns);
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.token(Some("other"), &by_ip);
    assert_eq!(status, 200, "{body}");
    // Mismatches, no certificate, a self-signed look-alike: invalid_client.
    for (cert, id) in [
        (Some("other"), &by_dn),
        (Some("other"), &by_dns),
        (Some("app"), &by_ip),
        (None, &by_dn),
        (Some("fake"), &by_dn),
    ] {
        let (status, body) = s.token(cert, id);
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{cert:?}: {body}"
        );
        assert!(body.get("access_token").is_none());
    }
}

#[test]
fn self_signed_tls_client_auth_uses_the_registered_x5c() {
    let s = start("optional");
    let mine = pki::self_signed("my service");
    s.cert("mine", &mine);
    s.cert("theirs", &pki::self_signed("my service"));
    let x5c = base64::engine::general_purpose::STANDARD.encode(&mine.der);
    let jwks = write(
        s.kw.dir.path(),
        "client-jwks.json",
        &json!({"keys": [{"kty": "EC", "crv": "P-256", "x5c": [x5c]}]}).to_string(),
    );
    let id = s.create(&[
        "--auth",
        "self_signed_tls_client_auth",
        "--jwks",
        jwks.to_str().unwrap(),
    ]);
    s.settle();
    let (status, body) = s.token(Some("mine"), &id);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["cnf"]["x5t#S256"],
        mine.thumbprint()
    );
    for cert in [Some("theirs"), None] {
        let (status, body) = s.token(cert, &id);
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
    }
}

#[test]
fn secret_clients_get_bound_tokens_only_when_registered_so() {
    let s = start("optional");
    s.cert("any", &pki::self_signed("anything"));
    let create = |bound: &[&str]| {
        let mut a = vec![
            "clients", "create", "--env", "default", "--name", "s", "--json",
        ];
        a.extend(bound);
        let v = s.kw.run(&a).ok().json();
        (
            v["client_id"].as_str().unwrap().to_string(),
            v["client_secret"].as_str().unwrap().to_string(),
        )
    };
    let token = |cert: Option<&str>, (id, secret): &(String, String)| {
        let (_, body, status, _) = s.curl(
            cert,
            &[
                "-u",
                &format!("{id}:{secret}"),
                "-d",
                "grant_type=client_credentials",
                &s.url("/oauth2/token"),
            ],
        );
        (status, body)
    };
    let plain = create(&[]);
    let bound = create(&["--tls-bound-tokens", "true"]);
    s.settle();
    let (status, body) = token(Some("any"), &plain);
    assert_eq!(status, 200, "{body}");
    assert!(claims(body["access_token"].as_str().unwrap())
        .get("cnf")
        .is_none());
    let (status, body) = token(Some("any"), &bound);
    assert_eq!(status, 200, "{body}");
    assert!(claims(body["access_token"].as_str().unwrap())["cnf"]["x5t#S256"].is_string());
    // Bound tokens, no certificate: refused, no token.
    let (status, body) = token(None, &bound);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
}

#[test]
fn a_required_client_certificate_is_asked_at_the_handshake() {
    let s = start("required");
    let (ok, _, _, _) = s.curl(None, &[&s.url("/.well-known/openid-configuration")]);
    assert!(!ok, "no client certificate, yet served");
    s.cert("app", &s.ca.client("app", "Example", vec![]));
    let (ok, _, status, _) = s.curl(Some("app"), &[&s.url("/.well-known/openid-configuration")]);
    assert!(ok && status == 200);
}

#[test]
fn bad_mtls_registrations_are_refused_and_change_nothing() {
    let kw = Kw::new();
    kw.init();
    let before = kw.snapshot();
    let d = kw.dir.path();
    let no_x5c = write(
        d,
        "jwks.json",
        r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"BB"}]}"#,
    );
    let bad_x5c = write(
        d,
        "bad.json",
        r#"{"keys":[{"kty":"EC","x5c":["bm90IGEgY2VydA=="]}]}"#,
    );
    for (args, needle) in [
        (vec!["--auth", "tls_client_auth"], "subject DN or one SAN"),
        (
            vec!["--auth", "tls_client_auth", "--tls-subject-dn", "not a dn"],
            "tls_client_auth_subject_dn",
        ),
        (
            vec!["--auth", "tls_client_auth", "--tls-san-ip", "10.0.0.300"],
            "not an IP address",
        ),
        (
            vec!["--auth", "tls_client_auth", "--tls-san-dns", "a b"],
            "tls_client_auth_san_dns",
        ),
        (
            vec![
                "--auth",
                "tls_client_auth",
                "--tls-subject-dn",
                "CN=a",
                "--tls-san-dns",
                "a",
            ],
            "cannot be used with",
        ),
        (
            vec!["--tls-san-dns", "a.example"],
            "for tls_client_auth clients only",
        ),
        (vec!["--auth", "self_signed_tls_client_auth"], "x5c"),
        (
            vec![
                "--auth",
                "self_signed_tls_client_auth",
                "--jwks",
                no_x5c.to_str().unwrap(),
            ],
            "x5c",
        ),
        (
            vec![
                "--auth",
                "self_signed_tls_client_auth",
                "--jwks",
                bad_x5c.to_str().unwrap(),
            ],
            "x5c",
        ),
    ] {
        let mut a = vec!["clients", "create", "--env", "default", "--name", "x"];
        a.extend(&args);
        kw.run(&a).fails_with(needle);
        assert_eq!(kw.snapshot(), before, "{args:?}");
    }
    let list = kw
        .run(&["clients", "list", "--env", "default", "--json"])
        .ok()
        .json();
    assert_eq!(list.as_array().map(Vec::len), Some(0));
}
