//! Token exchange (RFC 8693) at `POST {issuer}/oauth2/token`: a token of
//! this environment, or of a trusted issuer (a second keyward environment
//! served on 127.0.0.1, verified through keyward-verify), traded for an
//! access token for another audience with no more scope; `act` from an
//! actor token, nested on the subject token's chain; and every refusal
//! answered with its error and nothing issued or written.

#[path = "support/admin_fixture.rs"]
mod admin_fixture;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use admin_fixture::*;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine as _;
use keyward_issuer::http::{app, AppState};
use keyward_issuer::signing::SigningPool;
use keyward_issuer::{keyring, Authority, Change, Clock, KeyOptions, Origin, Settings};
use keyward_jose::seal::RootKey;
use keyward_jose::{sign_payload, Algorithm, LocalSigner, PrivateKey, TokenSigner};
use keyward_store::{Environment, RotationPolicy, Store};
use keyward_verify::{Gate, IssuerPolicy};
use serde_json::{json, Value};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A clock the test moves.
struct StepClock(AtomicI64);

impl Clock for StepClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Ex {
    f: Fixture,
    clock: Arc<StepClock>,
    /// The dev environment's signing key and kid (to forge what the issuer
    /// never mints: an ID-token-typed JWT).
    dev_key: LocalSigner,
    /// The trusted issuer's URL (`http://127.0.0.1:PORT/sso`).
    sso: String,
    server: tokio::task::JoinHandle<()>,
    /// B: the API that exchanges (id, secret).
    b: (String, String),
    /// F: the front end the user's token was issued to.
    front: (String, String),
}

impl Drop for Ex {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The `dev` environment (as the admin fixture makes it, but keeping its
/// key), a second environment `sso` served on 127.0.0.1 that `dev` trusts
/// for token exchange with audience `keyward-dev`, and two clients: B
/// (token exchange; audiences `inventory`) and F (whose tokens name B).
async fn setup() -> Ex {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sso = format!("http://{}/sso", listener.local_addr().unwrap());
    let clock = Arc::new(StepClock(AtomicI64::new(NOW)));
    let mut policy = IssuerPolicy::new(&sso);
    policy.audiences = vec!["keyward-dev".into()];
    let gate = Gate::builder()
        .issuer(policy)
        .clock(clock.clone())
        .build()
        .unwrap();
    let settings = Settings {
        exchange_issuers: HashMap::from([("dev".to_string(), gate)]),
        ..Settings::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("keyward.db"))
        .await
        .unwrap();
    let root = RootKey::generate();
    let env = Environment {
        name: "dev".into(),
        issuer: ISSUER.into(),
        policy: RotationPolicy {
            lead_secs: 600,
            token_ttl_secs: 300,
            ..RotationPolicy::for_algorithm(Algorithm::ES256)
        },
        created_at: NOW,
        key_store: keyward_store::KeyStoreName::Local,
        dpop_nonce_secret: None,
    };
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let opts = KeyOptions {
        kid: None,
        owner: None,
        description: None,
        origin: Origin::Generated,
    };
    let at = Change {
        now: NOW,
        actor: "test",
    };
    let rec = keyring::initialize(&store, &root, &env, &key, &opts, at)
        .await
        .unwrap();
    let dev_key = LocalSigner::new(key, Some(rec.kid.clone()));
    let (token, token_id) = add_admin_token(&store).await;
    let authority = Authority::load(
        store,
        root.clone(),
        clock.clone(),
        SigningPool::new(1),
        settings,
    )
    .await
    .unwrap();
    let router = app(AppState {
        authority: authority.clone(),
        metrics: keyward_issuer::metrics::install(),
    });
    let f = Fixture {
        _dir: dir,
        app: router.clone(),
        authority,
        token,
        token_id,
        root,
    };
    let r = f
        .post(
            "/admin/v1/envs",
            json!({"name": "sso", "issuer": sso, "policy": {"alg": "ES256", "token_ttl_secs": 600}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let b = f
        .client(json!({
            "name": "orders-api",
            "grant_types": ["client_credentials", EXCHANGE],
            "scopes": ["orders.read", "orders.write", "inventory.read"],
            "audiences": ["inventory"],
        }))
        .await;
    let front = f
        .client(json!({
            "name": "front",
            "scopes": ["orders.read", "orders.write", "profile"],
            "audiences": [b.0.clone(), "elsewhere"],
        }))
        .await;
    Ex {
        f,
        clock,
        dev_key,
        sso,
        server,
        b,
        front,
    }
}

/// Mints in environment `env` an access token for `sub` through the admin API.
async fn mint(f: &Fixture, env: &str, body: Value) -> String {
    let r = f.post(&format!("/admin/v1/envs/{env}/tokens"), body).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.body["access_token"].as_str().unwrap().to_owned()
}

/// Alice's token from the front end, for B, with `orders.* profile`.
async fn alice(x: &Ex) -> String {
    mint(
        &x.f,
        "dev",
        json!({"sub": "alice", "client_id": x.front.0, "audience": x.b.0,
               "scopes": ["orders.read", "orders.write", "profile"],
               "roles": ["buyer"], "refresh": false}),
    )
    .await
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn claims(token: &str) -> (Value, Value) {
    keyward_jose::dangerous::decode_unverified(token).unwrap()
}

/// What a refusal must leave unchanged: the store (audit chain included).
async fn assert_refused(x: &Ex, client: &(String, String), pairs: &[(&str, &str)], code: &str) {
    let before = x.f.state().await;
    let r = x.f.token_endpoint(&client.0, &client.1, &form(pairs)).await;
    assert_eq!(r.body["error"], code, "{pairs:?}: {r:?}");
    assert!(r.status.is_client_error(), "{r:?}");
    assert!(r.body.get("access_token").is_none(), "{r:?}");
    assert_eq!(x.f.state().await, before, "{pairs:?}");
}

#[tokio::test]
async fn a_token_of_this_environment_is_exchanged_for_less() {
    let x = setup().await;
    let subject = alice(&x).await;
    let n_audit = x.f.authority.store.audit_len().await.unwrap();
    x.clock.0.store(NOW + 100, Ordering::SeqCst);
    let r =
        x.f.token_endpoint(
            &x.b.0,
            &x.b.1,
            &form(&[
                ("grant_type", EXCHANGE),
                ("subject_token", &subject),
                ("subject_token_type", AT),
                ("audience", "inventory"),
                ("scope", "orders.read"),
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["issued_token_type"], AT);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["scope"], "orders.read");
    assert!(r.body.get("refresh_token").is_none());
    // It ends when the subject token does (minted at NOW for 300 s).
    assert_eq!(r.body["expires_in"], 200);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let token = r.body["access_token"].as_str().unwrap();
    let (h, c) = claims(token);
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["client_id"], x.b.0.as_str());
    assert_eq!(c["aud"], "inventory");
    assert_eq!(c["scope"], "orders.read");
    assert_eq!(c["exp"], NOW + 300);
    assert_eq!(c["roles"], json!(["buyer"]));
    assert!(c.get("act").is_none());
    // The gate of this environment accepts it: it verifies as ours.
    let r =
        x.f.send(
            Request::builder()
                .method(Method::POST)
                .uri("/dev/oauth2/introspect")
                .header(
                    header::AUTHORIZATION,
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{}:{}", x.b.0, x.b.1))
                    ),
                )
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form(&[("token", token)])))
                .unwrap(),
        )
        .await;
    assert_eq!(r.body["active"], true, "{r:?}");
    // Audited: one record, naming both tokens.
    let rec = x.f.last_audit().await;
    assert_eq!(x.f.authority.store.audit_len().await.unwrap(), n_audit + 1);
    assert_eq!(rec.action, "token.exchange");
    assert_eq!(rec.actor, format!("client:{}", x.b.0));
    assert_eq!(rec.subject.as_deref(), Some("alice"));
    assert_eq!(rec.detail["subject_issuer"], ISSUER);
    assert_eq!(rec.detail["subject_client_id"], x.front.0.as_str());
    assert_eq!(rec.detail["jti"], c["jti"]);

    // Without scope: the subject token's that the client holds (not
    // `profile`); without audience: the client's.
    let r =
        x.f.token_endpoint(
            &x.b.0,
            &x.b.1,
            &form(&[
                ("grant_type", EXCHANGE),
                ("subject_token", &subject),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["scope"], "orders.read orders.write");
    let (_, c) = claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], "inventory");

    // Discovery lists the grant.
    let r = x.f.get("/dev/.well-known/openid-configuration").await;
    let grants = r.body["grant_types_supported"].as_array().unwrap().clone();
    assert!(grants.contains(&json!(EXCHANGE)), "{grants:?}");
}

#[tokio::test]
async fn an_actor_token_gives_an_act_claim_nested_on_the_subjects() {
    let x = setup().await;
    let subject = alice(&x).await;
    // B acts for alice with its own client_credentials token.
    let r =
        x.f.token_endpoint(&x.b.0, &x.b.1, "grant_type=client_credentials")
            .await;
    let b_token = r.body["access_token"].as_str().unwrap().to_owned();
    let r =
        x.f.token_endpoint(
            &x.b.0,
            &x.b.1,
            &form(&[
                ("grant_type", EXCHANGE),
                ("subject_token", &subject),
                ("subject_token_type", AT),
                ("actor_token", &b_token),
                ("actor_token_type", AT),
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let once = r.body["access_token"].as_str().unwrap().to_owned();
    let (_, c) = claims(&once);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["act"], json!({"sub": x.b.0}));
    assert_eq!(x.f.last_audit().await.detail["act"], json!({"sub": x.b.0}));

    // A second hop: the exchanged token (issued to B) traded again, a
    // third service acting: the chain nests, the newest actor on top.
    let c3 =
        x.f.client(json!({"name": "robot", "scopes": ["inventory.read"]}))
            .await;
    let r =
        x.f.token_endpoint(&c3.0, &c3.1, "grant_type=client_credentials")
            .await;
    let robot = r.body["access_token"].as_str().unwrap().to_owned();
    let r =
        x.f.token_endpoint(
            &x.b.0,
            &x.b.1,
            &form(&[
                ("grant_type", EXCHANGE),
                ("subject_token", &once),
                ("subject_token_type", AT),
                ("actor_token", &robot),
                ("actor_token_type", AT),
            ]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let (_, c) = claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(c["act"], json!({"sub": c3.0, "act": {"sub": x.b.0}}));
    // Without an actor, the chain is kept as it was.
    let r =
        x.f.token_endpoint(
            &x.b.0,
            &x.b.1,
            &form(&[
                ("grant_type", EXCHANGE),
                ("subject_token", &once),
                ("subject_token_type", AT),
            ]),
        )
        .await;
    let (_, c) = claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(c["act"], json!({"sub": x.b.0}));

    // An invalid actor token refuses the whole exchange.
    let exchange = |actor: &'static str, ty: Option<&'static str>| {
        let mut p = vec![
            ("grant_type", EXCHANGE),
            ("subject_token", subject.as_str()),
            ("subject_token_type", AT),
            ("actor_token", actor),
        ];
        if let Some(t) = ty {
            p.push(("actor_token_type", t));
        }
        p
    };
    assert_refused(
        &x,
        &x.b,
        &exchange("not-a-token", Some(AT)),
        "invalid_request",
    )
    .await;
    assert_refused(&x, &x.b, &exchange("a.b.c", Some(AT)), "invalid_request").await;
    // The answer says why the parser refused it.
    for (token, why) in [
        ("not-a-token", "exactly three dot-separated segments"),
        ("a.b.c", "header is not canonical unpadded base64url"),
    ] {
        let r =
            x.f.token_endpoint(&x.b.0, &x.b.1, &form(&exchange(token, Some(AT))))
                .await;
        let d = r.body["error_description"].as_str().unwrap_or_default();
        assert!(
            d.contains("cannot be read as a JWT (") && d.contains(why),
            "{token}: {d}"
        );
    }
    let forged = sign_payload(
        &LocalSigner::new(PrivateKey::generate(Algorithm::ES256, None).unwrap(), Some(x.dev_key.kid().to_owned())),
        Some("at+jwt"),
        json!({"iss": ISSUER, "sub": "mallory", "client_id": "x", "jti": "j", "exp": NOW + 60, "iat": NOW}).to_string().as_bytes(),
    )
    .unwrap();
    let forged: &'static str = Box::leak(forged.into_boxed_str());
    assert_refused(&x, &x.b, &exchange(forged, Some(AT)), "invalid_request").await;
    // The actor token's type is required with it.
    let robot: &'static str = Box::leak(robot.into_boxed_str());
    assert_refused(&x, &x.b, &exchange(robot, None), "invalid_request").await;
}

#[tokio::test]
async fn a_trusted_issuers_token_is_exchanged_when_the_client_may() {
    let x = setup().await;
    let r = x
        .f
        .post(
            "/admin/v1/envs/sso/clients",
            json!({"name": "portal", "scopes": ["orders.read", "email"], "audiences": ["keyward-dev", "another-app"]}),
        )
        .await;
    let portal = r.body["client_id"].as_str().unwrap().to_owned();
    let from_sso = mint(
        &x.f,
        "sso",
        json!({"sub": "bob", "client_id": portal, "audience": "keyward-dev",
               "scopes": ["orders.read", "email"], "permissions": ["sso.admin"], "refresh": false}),
    )
    .await;
    // The server trusts sso for dev, but B does not list it yet.
    let p = pairs(&from_sso);
    assert_refused(&x, &x.b, &as_ref(&p), "invalid_request").await;
    let r =
        x.f.call(
            Method::PATCH,
            &format!("/admin/v1/envs/dev/clients/{}", x.b.0),
            Some(json!({"exchange_issuers": [x.sso]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["exchange_issuers"], json!([x.sso]));
    let r = x.f.token_endpoint(&x.b.0, &x.b.1, &form(&as_ref(&p))).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let (_, c) = claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], "bob");
    assert_eq!(c["client_id"], x.b.0.as_str());
    assert_eq!(c["scope"], "orders.read");
    // Another issuer's permissions are not this environment's grants.
    assert!(c.get("permissions").is_none(), "{c}");
    assert_eq!(
        x.f.last_audit().await.detail["subject_issuer"],
        x.sso.as_str()
    );

    // A token of that issuer made for another application is refused.
    let other_app = mint(
        &x.f,
        "sso",
        json!({"sub": "bob", "client_id": portal, "audience": "another-app", "refresh": false}),
    )
    .await;
    assert_refused(&x, &x.b, &as_ref(&pairs(&other_app)), "invalid_request").await;
    // So is a token of an issuer the client lists but the server does not
    // trust (a third environment of this server, say).
    let r =
        x.f.post(
            "/admin/v1/envs",
            json!({"name": "other", "issuer": "https://other.test/x", "policy": {"alg": "ES256"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r =
        x.f.post(
            "/admin/v1/envs/other/clients",
            json!({"name": "o", "audiences": [x.b.0.clone()]}),
        )
        .await;
    let o = r.body["client_id"].as_str().unwrap().to_owned();
    let foreign = mint(
        &x.f,
        "other",
        json!({"sub": "eve", "client_id": o, "audience": x.b.0, "refresh": false}),
    )
    .await;
    assert_refused(&x, &x.b, &as_ref(&pairs(&foreign)), "invalid_request").await;
    let r =
        x.f.call(
            Method::PATCH,
            &format!("/admin/v1/envs/dev/clients/{}", x.b.0),
            Some(json!({"exchange_issuers": [x.sso, "https://other.test/x"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_refused(&x, &x.b, &as_ref(&pairs(&foreign)), "invalid_request").await;
    // An exchange issuer must be a URL keys can be fetched from.
    let r =
        x.f.call(
            Method::PATCH,
            &format!("/admin/v1/envs/dev/clients/{}", x.b.0),
            Some(json!({"exchange_issuers": ["http://sso.example"]})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn each_refusal_issues_nothing() {
    let x = setup().await;
    let subject = alice(&x).await;
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut p: Vec<(&str, String)> = vec![
            ("grant_type", EXCHANGE.into()),
            ("subject_token", subject.clone()),
            ("subject_token_type", AT.into()),
        ];
        for (k, v) in extra {
            p.retain(|(n, _)| n != k);
            p.push((k, v.to_string()));
        }
        p
    };
    let refused = |extra: &'static [(&'static str, &'static str)], code: &'static str| {
        let p = base(extra);
        let x = &x;
        async move {
            let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_refused(x, &x.b, &p, code).await
        }
    };
    // Scope widening: not in the subject token; in it but not the client's.
    refused(&[("scope", "orders.read admin")], "invalid_scope").await;
    refused(&[("scope", "profile")], "invalid_scope").await;
    // An audience the client may not ask for.
    refused(&[("audience", "elsewhere")], "invalid_target").await;
    refused(&[("resource", "https://evil.example/")], "invalid_target").await;
    // Missing or unsupported parameters.
    refused(&[("subject_token", "")], "invalid_request").await;
    refused(&[("subject_token_type", "")], "invalid_request").await;
    refused(
        &[(
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:saml2",
        )],
        "invalid_request",
    )
    .await;
    refused(
        &[(
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:refresh_token",
        )],
        "invalid_request",
    )
    .await;
    refused(&[("actor_token_type", AT)], "invalid_request").await;

    // A client without the grant.
    let no_grant =
        x.f.client(json!({"name": "plain", "scopes": ["orders.read"], "audiences": ["inventory"]}))
            .await;
    let p = base(&[]);
    let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_refused(&x, &no_grant, &p, "unauthorized_client").await;

    // A token of this environment issued to another client and not made
    // for this one: B may not trade F's token that names "elsewhere".
    let elsewhere = mint(
        &x.f,
        "dev",
        json!({"sub": "alice", "client_id": x.front.0, "audience": "elsewhere",
               "scopes": ["orders.read"], "refresh": false}),
    )
    .await;
    let p = base(&[]);
    let mut p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p[1].1 = &elsewhere;
    assert_refused(&x, &x.b, &p, "invalid_request").await;

    // A refresh token, declared as such or as an access token.
    let with_refresh =
        x.f.post(
            "/admin/v1/envs/dev/tokens",
            json!({"sub": "alice", "client_id": x.front.0, "scopes": ["orders.read"]}),
        )
        .await;
    let rt = with_refresh.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(rt.starts_with("kwr_"));
    let p = base(&[]);
    let mut p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p[1].1 = &rt;
    assert_refused(&x, &x.b, &p, "invalid_request").await;
    p[2].1 = "urn:ietf:params:oauth:token-type:refresh_token";
    assert_refused(&x, &x.b, &p, "invalid_request").await;

    // An ID token (typ JWT, signed by this environment's key, aud = the
    // client): never an access token, whatever it is declared as.
    let id_token = sign_payload(
        &x.dev_key,
        Some("JWT"),
        json!({"iss": ISSUER, "sub": "alice", "aud": [x.b.0], "client_id": x.b.0,
               "jti": "id-1", "exp": NOW + 300, "iat": NOW, "scope": "orders.read"})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    // The same claims as an access token do pass: the refusal is the typ.
    let as_access = sign_payload(
        &x.dev_key,
        Some("at+jwt"),
        json!({"iss": ISSUER, "sub": "alice", "aud": [x.b.0], "client_id": x.b.0,
               "jti": "at-1", "exp": NOW + 300, "iat": NOW, "scope": "orders.read"})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let p = base(&[]);
    let mut p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p[1].1 = &id_token;
    assert_refused(&x, &x.b, &p, "invalid_request").await;
    p[2].1 = "urn:ietf:params:oauth:token-type:id_token";
    assert_refused(&x, &x.b, &p, "invalid_request").await;
    p[2].1 = AT;
    p[1].1 = &as_access;
    let r = x.f.token_endpoint(&x.b.0, &x.b.1, &form(&p)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");

    // Revoked: F revokes alice's token; B can no longer trade it.
    let r =
        x.f.send(
            Request::builder()
                .method(Method::POST)
                .uri("/dev/oauth2/revoke")
                .header(
                    header::AUTHORIZATION,
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{}:{}", x.front.0, x.front.1))
                    ),
                )
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form(&[("token", &subject)])))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    refused(&[], "invalid_request").await;

    // Expired: a fresh token, the clock past its exp.
    let fresh = alice(&x).await;
    let p = base(&[]);
    let mut p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p[1].1 = &fresh;
    x.clock.0.store(NOW + 301, Ordering::SeqCst);
    assert_refused(&x, &x.b, &p, "invalid_request").await;
    x.clock.0.store(NOW + 299, Ordering::SeqCst);
    let r = x.f.token_endpoint(&x.b.0, &x.b.1, &form(&p)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["expires_in"], 1);
}

/// An exchange of `t` for a token for `inventory`.
fn pairs(t: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", EXCHANGE),
        ("subject_token", t),
        ("subject_token_type", AT),
        ("audience", "inventory"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

fn as_ref<'a>(p: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    p.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A DPoP proof (RFC 9449) for the dev token endpoint.
fn proof(key: &PrivateKey, jti: &str) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = json!({
        "typ": "dpop+jwt", "alg": "ES256",
        "jwk": key.public_key().to_jwk(None).to_value(),
    });
    let claims = json!({"jti": jti, "htm": "POST",
                        "htu": "https://issuer.test/dev/oauth2/token", "iat": NOW});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&sig))
}

async fn token_with_dpop(x: &Ex, client: &(String, String), body: &str, dpop: &str) -> Answer {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", client.0, client.1));
    x.f.send(
        Request::builder()
            .method(Method::POST)
            .uri("/dev/oauth2/token")
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("dpop", dpop)
            .body(Body::from(body.to_owned()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_dpop_bound_subject_token_needs_a_proof_by_its_key() {
    let x = setup().await;
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    // F's own token, bound to F's key, made for B.
    let r = token_with_dpop(
        &x,
        &x.front,
        &form(&[("grant_type", "client_credentials"), ("audience", &x.b.0)]),
        &proof(&key, "p1"),
    )
    .await;
    assert_eq!(r.body["token_type"], "DPoP", "{r:?}");
    let bound = r.body["access_token"].as_str().unwrap().to_owned();
    let p = [
        ("grant_type", EXCHANGE),
        ("subject_token", bound.as_str()),
        ("subject_token_type", AT),
    ];
    // Without a proof, or with one by another key: refused, nothing issued.
    assert_refused(&x, &x.b, &p, "invalid_dpop_proof").await;
    let other = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let before = x.f.state().await;
    let r = token_with_dpop(&x, &x.b, &form(&p), &proof(&other, "p2")).await;
    assert_eq!(r.body["error"], "invalid_dpop_proof", "{r:?}");
    assert_eq!(x.f.state().await, before);
    // With a proof by its key: a DPoP token bound to that key.
    let r = token_with_dpop(&x, &x.b, &form(&p), &proof(&key, "p3")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["token_type"], "DPoP");
    let (_, c) = claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(c["cnf"]["jkt"], key.public_key().thumbprint());

    // The same for a bound actor token: someone holding F's leaked token
    // cannot name F as the actor without F's key.
    let subject = alice(&x).await;
    let p = [
        ("grant_type", EXCHANGE),
        ("subject_token", subject.as_str()),
        ("subject_token_type", AT),
        ("actor_token", bound.as_str()),
        ("actor_token_type", AT),
    ];
    assert_refused(&x, &x.b, &p, "invalid_dpop_proof").await;
    let before = x.f.state().await;
    let r = token_with_dpop(&x, &x.b, &form(&p), &proof(&other, "p4")).await;
    assert_eq!(r.body["error"], "invalid_dpop_proof", "{r:?}");
    assert_eq!(x.f.state().await, before);
    let r = token_with_dpop(&x, &x.b, &form(&p), &proof(&key, "p5")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let (_, c) = claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(c["act"]["sub"], x.front.0);
}
