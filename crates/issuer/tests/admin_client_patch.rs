//! `PATCH /admin/v1/envs/{env}/clients/{client_id}` and the RFC 8705
//! fields: a client moved to and from `tls_client_auth` and
//! `self_signed_tls_client_auth` (same id; its secret dropped, or a new one
//! shown once), its certificate name replaced or cleared, its token binding
//! set and reset, `dpop_bound_access_tokens`; every bad input refused with
//! 400 as registration refuses it, and the store left as it was; only a
//! caller holding `clients.write` may patch. The token endpoint is asked
//! after each change (a client certificate put on the request as the TLS
//! listener does).

#[path = "support/admin_fixture.rs"]
mod admin_fixture;

use std::sync::Arc;

use admin_fixture::*;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine as _;
use keyward_verify::PeerCertificate;
use serde_json::{json, Value};

/// A certificate with subject `CN=app,O=Example` and SAN `app.example`,
/// self-signed (a CA-issued one is modelled by `ca_verified`).
struct Cert {
    der: Vec<u8>,
}

fn certificate(cn: &str) -> Cert {
    let mut params = rcgen::CertificateParams::new(vec!["app.example".to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // Encoded O then CN: RFC 4514 writes it CN=...,O=Example.
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Cert {
        der: cert.der().to_vec(),
    }
}

impl Cert {
    fn thumbprint(&self) -> String {
        PeerCertificate::new(self.der.clone(), true)
            .thumbprint()
            .to_string()
    }

    /// A JWK Set carrying the certificate in x5c (self_signed_tls_client_auth).
    fn jwks(&self) -> Value {
        let x5c = base64::engine::general_purpose::STANDARD.encode(&self.der);
        json!({"keys": [{"kty": "EC", "crv": "P-256", "x5c": [x5c]}]})
    }
}

fn path(id: &str) -> String {
    format!("/admin/v1/envs/dev/clients/{id}")
}

/// client_credentials for `id`, with `secret` (Basic) or by `client_id` in
/// the form, over a connection that presented `cert` (`ca_verified`: by
/// the listener's client CA).
async fn token(f: &Fixture, id: &str, secret: Option<&str>, cert: Option<(&Cert, bool)>) -> Answer {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri("/dev/oauth2/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    let form = match secret {
        Some(s) => {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{s}"));
            b = b.header(header::AUTHORIZATION, format!("Basic {basic}"));
            "grant_type=client_credentials".to_string()
        }
        None => format!("grant_type=client_credentials&client_id={id}"),
    };
    let mut req = b.body(Body::from(form)).unwrap();
    if let Some((c, verified)) = cert {
        req.extensions_mut()
            .insert(Arc::new(PeerCertificate::new(c.der.clone(), verified)));
    }
    f.send(req).await
}

fn x5t(access_token: &str) -> Option<String> {
    let (_, claims) = keyward_jose::dangerous::decode_unverified(access_token).unwrap();
    claims["cnf"]["x5t#S256"].as_str().map(String::from)
}

#[tokio::test]
async fn a_secret_client_moves_to_certificates_and_back() {
    let f = fixture().await;
    let app = certificate("app");
    let (id, secret) = f.client(json!({"name": "svc", "scopes": ["a"]})).await;
    assert_eq!(
        token(&f, &id, Some(&secret), None).await.status,
        StatusCode::OK
    );

    // To tls_client_auth by subject DN (written in its canonical form).
    let r = f
        .call(
            Method::PATCH,
            &path(&id),
            Some(json!({"auth": "tls_client_auth", "tls_client_auth_subject_dn": "CN=app, O=Example"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["auth"], "tls_client_auth");
    assert_eq!(r.body["tls_client_auth_subject_dn"], "CN=app,O=Example");
    assert_eq!(r.body["tls_client_certificate_bound_access_tokens"], true);
    assert!(r.body.get("client_secret").is_none(), "{r:?}");
    let audit = f.last_audit().await;
    assert_eq!(audit.action, "client.update");
    assert_eq!(audit.detail["previous_auth"], "client_secret_basic");
    // The secret stopped working; the certificate works, and binds.
    let stored = f.authority.store.client("dev", &id).await.unwrap();
    assert!(stored.secret_hash.is_none());
    assert_eq!(
        token(&f, &id, Some(&secret), Some((&app, true)))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let t = token(&f, &id, None, Some((&app, true))).await;
    assert_eq!(t.status, StatusCode::OK, "{t:?}");
    assert_eq!(
        x5t(t.body["access_token"].as_str().unwrap()),
        Some(app.thumbprint())
    );
    assert_eq!(
        token(&f, &id, None, Some((&certificate("other"), true)))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Another name kind replaces the DN.
    let r = f
        .call(
            Method::PATCH,
            &path(&id),
            Some(json!({"tls_client_auth_san_dns": "app.example"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["tls_client_auth_san_dns"], "app.example");
    assert!(r.body.get("tls_client_auth_subject_dn").is_none(), "{r:?}");

    // Unbound tokens, then back to the default.
    let r = f
        .call(
            Method::PATCH,
            &path(&id),
            Some(json!({"tls_client_certificate_bound_access_tokens": false, "dpop_bound_access_tokens": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["tls_client_certificate_bound_access_tokens"], false);
    assert_eq!(r.body["dpop_bound_access_tokens"], true);
    let r = f
        .call(
            Method::PATCH,
            &path(&id),
            Some(json!({"tls_client_certificate_bound_access_tokens": null, "dpop_bound_access_tokens": false})),
        )
        .await;
    assert_eq!(r.body["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(r.body["dpop_bound_access_tokens"], false);

    // To self_signed_tls_client_auth with its certificate in x5c: the
    // certificate name goes, a self-signed certificate is accepted.
    let own = certificate("own");
    let r = f
        .call(
            Method::PATCH,
            &path(&id),
            Some(json!({"auth": "self_signed_tls_client_auth", "jwks": own.jwks()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["has_jwks"], true);
    assert!(r.body.get("tls_client_auth_san_dns").is_none(), "{r:?}");
    let t = token(&f, &id, None, Some((&own, false))).await;
    assert_eq!(t.status, StatusCode::OK, "{t:?}");
    assert_eq!(
        token(&f, &id, None, Some((&app, true))).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Back to a secret: a new one, shown once; the keys go.
    let r = f
        .call(
            Method::PATCH,
            &path(&id),
            Some(json!({"auth": "client_secret_basic"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["has_jwks"], false);
    assert_eq!(r.body["tls_client_certificate_bound_access_tokens"], false);
    let new_secret = r.body["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    assert_eq!(f.last_audit().await.detail["new_secret"], true);
    assert_eq!(
        token(&f, &id, Some(&secret), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        token(&f, &id, Some(&new_secret), None).await.status,
        StatusCode::OK
    );
    // A secret client patched otherwise keeps its secret and shows none.
    let r = f
        .call(Method::PATCH, &path(&id), Some(json!({"name": "renamed"})))
        .await;
    assert!(r.body.get("client_secret").is_none(), "{r:?}");
    assert_eq!(
        token(&f, &id, Some(&new_secret), None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_mtls_patches_are_refused_and_change_nothing() {
    let f = fixture().await;
    let (secret_id, _) = f.client(json!({"name": "svc"})).await;
    let (tls_id, _) = f
        .client(json!({"name": "tls", "auth": "tls_client_auth", "tls_client_auth_subject_dn": "CN=app,O=Example"}))
        .await;
    let no_x5c = json!({"keys": [{"kty": "EC", "crv": "P-256"}]});
    let cases: Vec<(&str, Value)> = vec![
        // A certificate method without what it needs.
        (&secret_id, json!({"auth": "tls_client_auth"})),
        (&secret_id, json!({"auth": "self_signed_tls_client_auth"})),
        (
            &secret_id,
            json!({"auth": "self_signed_tls_client_auth", "jwks": no_x5c}),
        ),
        (
            &secret_id,
            json!({"auth": "self_signed_tls_client_auth", "jwks_uri": "https://example.com/jwks"}),
        ),
        // A certificate name for a client that does not use one.
        (
            &secret_id,
            json!({"tls_client_auth_san_dns": "app.example"}),
        ),
        // Two names, or a name and a clearing null.
        (
            &tls_id,
            json!({"tls_client_auth_subject_dn": "CN=a", "tls_client_auth_san_dns": "b"}),
        ),
        (
            &tls_id,
            json!({"tls_client_auth_subject_dn": "CN=a", "tls_client_auth_san_dns": null}),
        ),
        // Clearing the only name of a tls_client_auth client.
        (&tls_id, json!({"tls_client_auth_subject_dn": null})),
        // Malformed names.
        (&tls_id, json!({"tls_client_auth_subject_dn": "not a dn"})),
        (&tls_id, json!({"tls_client_auth_subject_dn": ""})),
        (&tls_id, json!({"tls_client_auth_san_ip": "999.1.1.1"})),
        (&tls_id, json!({"tls_client_auth_san_dns": "two words"})),
        (
            &tls_id,
            json!({"tls_client_auth_san_uri": "x".repeat(1001)}),
        ),
        // Wrong types and unknown fields.
        (
            &tls_id,
            json!({"tls_client_certificate_bound_access_tokens": "yes"}),
        ),
        (&tls_id, json!({"dpop_bound_access_tokens": "true"})),
        (&tls_id, json!({"tls_client_auth_san_email": 7})),
        (&tls_id, json!({"tls_subject": "CN=app"})),
        (&tls_id, json!({"auth": "tls"})),
        // A JWK Set for a method that takes none.
        (&tls_id, json!({"jwks": {"keys": []}})),
    ];
    for (id, body) in cases {
        let before = f.state().await;
        let r = f.call(Method::PATCH, &path(id), Some(body.clone())).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(r.body.get("client_secret").is_none());
        assert_eq!(f.state().await, before, "{body} changed something");
    }
}

#[tokio::test]
async fn patching_mtls_fields_needs_clients_write() {
    let f = fixture().await;
    let (id, _) = f.client(json!({"name": "svc"})).await;
    let body = json!({"auth": "tls_client_auth", "tls_client_auth_subject_dn": "CN=app,O=Example"});
    for held in [
        &["keyward.env.dev.clients.read"][..],
        &["keyward.env.prod.clients.write"][..],
        &["keyward.env.dev.keys.write"][..],
    ] {
        let (token, _) = add_admin_token_with(&f.authority.store, held, None).await;
        let before = f.state().await;
        let r = f
            .call_as(&token, Method::PATCH, &path(&id), Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{held:?}: {r:?}");
        assert_eq!(f.state().await.clients, before.clients, "{held:?}");
    }
    let (token, _) =
        add_admin_token_with(&f.authority.store, &["keyward.env.dev.clients.write"], None).await;
    let r = f
        .call_as(&token, Method::PATCH, &path(&id), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["auth"], "tls_client_auth");
}
