//! `GateLayer`, `Authenticated` and `Verified` in a real axum server on
//! 127.0.0.1, with a gate trusting an issuer whose keys are a JWK Set file
//! generated at test time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::get;
use axum::Router;
use keyward_jose::{sign_jwt, Algorithm, JwkSet, LocalSigner, PrivateKey, TokenSigner};
use keyward_verify::layer::Verified;
use keyward_verify::{Authenticated, Gate, GateLayer, IssuerPolicy, KeySource, Requirement};
use serde_json::{json, Value};
use tower::Layer;

const ISSUER: &str = "https://issuer.test/prod";
const AUDIENCE: &str = "orders-api";
const REALM: &str = "orders";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn es256(kid: &str) -> LocalSigner {
    LocalSigner::new(
        PrivateKey::generate(Algorithm::ES256, None).unwrap(),
        Some(kid.into()),
    )
}

/// A gate trusting [`ISSUER`], whose only key is `signer`'s, read from a file.
struct Issuer {
    signer: LocalSigner,
    gate: Gate,
    _dir: tempfile::TempDir,
}

impl Issuer {
    fn new() -> Issuer {
        Issuer::with(es256("k1"), Algorithm::DEFAULT_ACCEPTED.to_vec())
    }

    /// A gate whose policy accepts `algorithms`, trusting `signer`'s key.
    fn with(signer: LocalSigner, algorithms: Vec<Algorithm>) -> Issuer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let set = JwkSet {
            keys: vec![signer.public_jwk()],
        };
        std::fs::write(&path, set.to_json()).unwrap();
        let policy = IssuerPolicy {
            source: KeySource::File(path),
            audiences: vec![AUDIENCE.into()],
            algorithms,
            ..IssuerPolicy::new(ISSUER)
        };
        let gate = Gate::builder().issuer(policy).build().unwrap();
        Issuer {
            signer,
            gate,
            _dir: dir,
        }
    }

    /// An access token for `alice` with `extra` claims merged in (a `null`
    /// removes a claim).
    fn token(&self, extra: Value) -> String {
        sign(&self.signer, Some("at+jwt"), extra)
    }
}

fn claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "client_id": "web",
        "iat": now(), "exp": now() + 300, "jti": format!("{:x}", rand_u64()),
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn rand_u64() -> u64 {
    u64::from_le_bytes(keyward_jose::crypto::random_bytes::<8>())
}

fn sign(signer: &LocalSigner, typ: Option<&str>, extra: Value) -> String {
    sign_jwt(signer, typ, &claims(extra)).unwrap()
}

/// Counts handler runs: a refused request must never reach a handler.
#[derive(Clone, Default)]
struct Hits(Arc<AtomicUsize>);

impl Hits {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// A handler that counts its runs and answers with the caller's subject.
    fn handler(&self) -> axum::routing::MethodRouter {
        let hits = self.clone();
        get(move |Authenticated(who): Authenticated| async move {
            hits.0.fetch_add(1, Ordering::SeqCst);
            who.subject.clone().unwrap_or_default()
        })
    }
}

fn layer(gate: &Gate) -> GateLayer {
    GateLayer::new(gate.clone()).realm(REALM)
}

/// The application under test: each route group has its own layer.
fn app(gate: &Gate, hits: &Hits) -> Router {
    let orders = Router::new()
        .route("/orders/{id}", hits.handler())
        .route_layer(
            layer(gate).require_permissions(Requirement::all_of(["orders.{id}.read"]).unwrap()),
        );
    let reports = Router::new().route("/reports", hits.handler()).route_layer(
        layer(gate).require_scopes(Requirement::any_of(["reports:read", "reports:admin"]).unwrap()),
    );
    let me = Router::new()
        .route("/me", hits.handler())
        .route_layer(layer(gate));
    // No layer: `Authenticated` must refuse, `Verified` verifies by itself.
    let plain = Router::new().route("/plain", hits.handler());
    let verified_hits = hits.clone();
    let verified = Router::new()
        .route(
            "/verified",
            get(move |Verified(who): Verified| async move {
                verified_hits.0.fetch_add(1, Ordering::SeqCst);
                who.subject.clone().unwrap_or_default()
            }),
        )
        .with_state(gate.clone());
    orders.merge(reports).merge(me).merge(plain).merge(verified)
}

/// Serves `service` on an ephemeral 127.0.0.1 port; returns its base URL.
async fn serve<S>(service: S) -> String
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let make = axum::ServiceExt::<axum::extract::Request>::into_make_service(service);
    tokio::spawn(async move { axum::serve(listener, make).await.unwrap() });
    format!("http://{addr}")
}

struct Reply {
    status: u16,
    challenge: Option<String>,
    cache_control: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    fn challenge(&self) -> &str {
        self.challenge.as_deref().unwrap_or_default()
    }
}

async fn call(base: &str, path: &str, authorization: Option<&str>) -> Reply {
    let client = reqwest::Client::new();
    let mut req = client.get(format!("{base}{path}"));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (challenge, cache_control) = (header("www-authenticate"), header("cache-control"));
    Reply {
        status: resp.status().as_u16(),
        challenge,
        cache_control,
        body: resp.text().await.unwrap(),
    }
}

async fn get_with(base: &str, path: &str, token: &str) -> Reply {
    call(base, path, Some(&format!("Bearer {token}"))).await
}

async fn setup() -> (Issuer, Hits, String) {
    let issuer = Issuer::new();
    let hits = Hits::default();
    let base = serve(app(&issuer.gate, &hits)).await;
    (issuer, hits, base)
}

#[tokio::test]
async fn no_token_gets_a_bare_challenge_and_the_handler_never_runs() {
    let (_issuer, hits, base) = setup().await;
    for auth in [None, Some("Basic YWxpY2U6c2VjcmV0")] {
        for path in ["/orders/7", "/me", "/reports"] {
            let r = call(&base, path, auth).await;
            assert_eq!(r.status, 401, "{path} {auth:?}");
            assert_eq!(r.challenge(), "Bearer realm=\"orders\"");
            assert_eq!(r.cache_control.as_deref(), Some("no-store"));
            assert!(
                r.body.is_empty(),
                "no error code without a token: {:?}",
                r.body
            );
        }
    }
    assert_eq!(hits.get(), 0);
}

#[tokio::test]
async fn invalid_tokens_are_401_invalid_token() {
    let (issuer, hits, base) = setup().await;
    let forged = sign(
        &es256("k1"),
        Some("at+jwt"),
        json!({ "permissions": ["orders.*"] }),
    );
    // Each with the error_description of its own rejection.
    let cases = [
        ("bad signature", forged, "signature does not verify"),
        (
            "expired",
            issuer.token(json!({ "iat": now() - 1000, "exp": now() - 500 })),
            "token has expired",
        ),
        (
            "wrong audience",
            issuer.token(json!({ "aud": "other-api" })),
            "token audience does not match",
        ),
        (
            "wrong issuer",
            issuer.token(json!({ "iss": "https://evil.test" })),
            "token issuer does not match",
        ),
        (
            "not an access token",
            sign(&issuer.signer, Some("JWT"), json!({})),
            "token type (typ) Some('JWT') is not the required 'at+jwt'",
        ),
        (
            "no typ",
            sign(&issuer.signer, None, json!({})),
            "token type (typ) None is not the required 'at+jwt'",
        ),
        (
            "unknown kid",
            sign(&es256("k2"), Some("at+jwt"), json!({})),
            "no key with the token's kid",
        ),
        (
            "garbage",
            "abc.def.ghi".to_string(),
            "token header is not a JSON object",
        ),
    ];
    for (what, token, why) in cases {
        let r = get_with(&base, "/me", &token).await;
        assert_eq!(r.status, 401, "{what}");
        assert!(
            r.challenge().starts_with(&format!(
                "Bearer realm=\"orders\", error=\"invalid_token\", error_description=\"{why}"
            )),
            "{what}: {}",
            r.challenge()
        );
        assert_eq!(r.cache_control.as_deref(), Some("no-store"));
        assert_eq!(r.json()["error"], "invalid_token", "{what}");
        let description = r.json()["error_description"].as_str().unwrap().to_owned();
        assert!(description.starts_with(why), "{what}: {description}");
        assert!(
            !r.body.contains(&token),
            "{what}: the token is never echoed"
        );
    }
    assert_eq!(hits.get(), 0);
}

#[tokio::test]
async fn a_malformed_authorization_header_is_invalid_request() {
    let (issuer, hits, base) = setup().await;
    let token = issuer.token(json!({}));
    for auth in [
        format!("Bearer {token} x"),
        "Bearer".into(),
        "Bearer ".into(),
        "Bearer a\"b".into(),
    ] {
        let r = call(&base, "/me", Some(&auth)).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(
            r.challenge().contains("error=\"invalid_request\""),
            "{auth:?}: {}",
            r.challenge()
        );
        assert_eq!(r.json()["error"], "invalid_request");
    }
    assert_eq!(hits.get(), 0);
}

#[tokio::test]
async fn a_valid_token_lacking_the_permission_is_403() {
    let (issuer, hits, base) = setup().await;
    let tokens = [
        issuer.token(json!({ "permissions": ["orders.8.read", "orders.7.write", "orders.7"] })),
        issuer.token(json!({})),
        issuer.token(json!({ "permissions": [], "scope": "orders.7.read" })),
    ];
    for token in tokens {
        let r = get_with(&base, "/orders/7", &token).await;
        assert_eq!(r.status, 403);
        assert!(
            r.challenge()
                .starts_with("Bearer realm=\"orders\", error=\"insufficient_scope\""),
            "{}",
            r.challenge()
        );
        assert_eq!(r.cache_control.as_deref(), Some("no-store"));
        let v = r.json();
        assert_eq!(v["error"], "insufficient_scope");
        assert!(
            v["error_description"]
                .as_str()
                .unwrap()
                .contains("orders.7.read"),
            "{v}"
        );
    }
    assert_eq!(hits.get(), 0);
}

#[tokio::test]
async fn granted_tokens_reach_the_handler_with_their_identity() {
    let (issuer, hits, base) = setup().await;
    for grant in ["orders.*", "orders.7.read", "orders.7.*"] {
        let token = issuer.token(json!({ "permissions": [grant] }));
        let r = get_with(&base, "/orders/7", &token).await;
        assert_eq!((r.status, r.body.as_str()), (200, "alice"), "{grant}");
    }
    let bob = issuer.token(json!({ "sub": "bob" }));
    let r = get_with(&base, "/me", &bob).await;
    assert_eq!((r.status, r.body.as_str()), (200, "bob"));
    // Served again from the verified-token cache.
    let r = get_with(&base, "/me", &bob).await;
    assert_eq!((r.status, r.body.as_str()), (200, "bob"));
    assert_eq!(hits.get(), 5);
}

#[tokio::test]
async fn ml_dsa_tokens_pass_the_layer_where_the_policy_lists_ml_dsa() {
    let pq = || {
        LocalSigner::new(
            PrivateKey::generate(Algorithm::MlDsa65, None).unwrap(),
            Some("pq".into()),
        )
    };
    let issuer = Issuer::with(pq(), vec![Algorithm::ES256, Algorithm::MlDsa65]);
    let hits = Hits::default();
    let base = serve(app(&issuer.gate, &hits)).await;
    let token = issuer.token(json!({ "permissions": ["orders.7.read"] }));
    let r = get_with(&base, "/orders/7", &token).await;
    assert_eq!((r.status, r.body.as_str()), (200, "alice"));
    // One signature character changed: refused before the handler.
    let mut forged = token.into_bytes();
    let i = forged.len() - 100;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let r = get_with(&base, "/orders/7", &forged).await;
    assert_eq!(r.status, 401);
    assert!(
        r.challenge()
            .contains(r#"error="invalid_token", error_description="signature does not verify""#),
        "{}",
        r.challenge()
    );
    assert_eq!(hits.get(), 1);

    // The default policy leaves ML-DSA out: the same kind of token is refused.
    let default = Issuer::with(pq(), Algorithm::DEFAULT_ACCEPTED.to_vec());
    let base = serve(app(&default.gate, &hits)).await;
    let token = default.token(json!({ "permissions": ["orders.7.read"] }));
    let r = get_with(&base, "/orders/7", &token).await;
    assert_eq!(r.status, 401);
    assert!(
        r.challenge()
            .contains("token algorithm ML-DSA-65 is not allowed by the policy"),
        "{}",
        r.challenge()
    );
    assert_eq!(hits.get(), 1);
}

#[tokio::test]
async fn path_values_cannot_widen_or_reshape_the_requirement() {
    let (issuer, hits, base) = setup().await;
    // Each grant would match the required string if the path value were
    // pasted in verbatim; each must be refused.
    let cases = [
        ("orders.7.read.read", "/orders/7.read"),
        ("orders.7.read.read", "/orders/7%2Eread"),
        ("orders.7.*", "/orders/7.x"),
        ("orders.*.read", "/orders/%2A"),
        ("orders.*.read", "/orders/7"),
        ("orders.{id}.read", "/orders/%7Bid%7D"),
        ("orders.7 .read", "/orders/7%20"),
        ("orders.7\t.read", "/orders/7%09"),
        ("*", "/orders/7"),
    ];
    for (grant, path) in cases {
        let token = issuer.token(json!({ "permissions": [grant] }));
        let r = get_with(&base, path, &token).await;
        assert_eq!(r.status, 403, "grant {grant:?} on {path}");
        assert_eq!(r.json()["error"], "insufficient_scope");
    }
    assert_eq!(hits.get(), 0);
    // The same grants still work for what they really cover.
    let token = issuer.token(json!({ "permissions": ["orders.7.*"] }));
    assert_eq!(get_with(&base, "/orders/7", &token).await.status, 200);
    assert_eq!(hits.get(), 1);
}

#[tokio::test]
async fn scope_requirements_check_scopes_only() {
    let (issuer, hits, base) = setup().await;
    for (scope, want) in [
        ("reports:read", 200),
        ("openid reports:admin", 200),
        ("orders:read", 403),
    ] {
        let token = issuer.token(json!({ "scope": scope }));
        assert_eq!(
            get_with(&base, "/reports", &token).await.status,
            want,
            "{scope}"
        );
    }
    let token = issuer.token(json!({ "permissions": ["reports:read"] }));
    let r = get_with(&base, "/reports", &token).await;
    assert_eq!(r.status, 403, "a permission is not a scope");
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("reports:read"));
    assert_eq!(hits.get(), 2);
}

#[tokio::test]
async fn a_revoked_token_is_refused_even_when_cached() {
    let (issuer, hits, base) = setup().await;
    let token = issuer.token(json!({ "jti": "t-1" }));
    assert_eq!(get_with(&base, "/me", &token).await.status, 200);
    issuer.gate.revocations().revoke("t-1", now() + 300);
    let r = get_with(&base, "/me", &token).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_token");
    assert_eq!(r.json()["error_description"], "token has been revoked");
    assert_eq!(hits.get(), 1);
}

#[tokio::test]
async fn authenticated_without_the_layer_fails_closed() {
    let (issuer, hits, base) = setup().await;
    let token = issuer.token(json!({ "permissions": ["*"] }));
    let r = get_with(&base, "/plain", &token).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.challenge(), "Bearer realm=\"keyward\"");
    assert_eq!(hits.get(), 0);
}

#[tokio::test]
async fn verified_checks_the_token_by_itself() {
    let (issuer, hits, base) = setup().await;
    let r = call(&base, "/verified", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.challenge(), "Bearer realm=\"keyward\"");
    let forged = sign(&es256("k1"), Some("at+jwt"), json!({}));
    let r = get_with(&base, "/verified", &forged).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_token");
    assert_eq!(r.json()["error_description"], "signature does not verify");
    assert_eq!(hits.get(), 0);
    let r = get_with(&base, "/verified", &issuer.token(json!({}))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "alice"));
    assert_eq!(hits.get(), 1);
}

#[tokio::test]
async fn around_the_whole_router_templates_fail_closed() {
    let issuer = Issuer::new();
    let hits = Hits::default();
    let routes = Router::new().route("/orders/{id}", hits.handler());
    // Wrapped from the outside the layer runs before routing: no path
    // parameters, so `orders.{id}.read` cannot be rendered and is refused.
    let guarded = layer(&issuer.gate)
        .require_permissions(Requirement::all_of(["orders.{id}.read"]).unwrap())
        .layer(routes.clone());
    let base = serve(guarded).await;
    let token = issuer.token(json!({ "permissions": ["orders.*"] }));
    let r = get_with(&base, "/orders/7", &token).await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("orders.{id}.read"));
    assert_eq!(hits.get(), 0);
    // Requirements without parameters work from the outside too.
    let guarded = layer(&issuer.gate)
        .require_permissions(Requirement::all_of(["orders.list"]).unwrap())
        .layer(routes);
    let base = serve(guarded).await;
    let token = issuer.token(json!({ "permissions": ["orders.*"] }));
    let r = get_with(&base, "/orders/7", &token).await;
    assert_eq!((r.status, r.body.as_str()), (200, "alice"));
    assert_eq!(hits.get(), 1);
}

#[tokio::test]
async fn certificate_bound_tokens_fail_closed_in_the_layer() {
    // The layer sees no TLS connection, so it cannot match a client
    // certificate: a token bound to one never reaches the handler here.
    let (issuer, hits, base) = setup().await;
    let bound = issuer.token(json!({
        "permissions": ["orders.7.read"],
        "cnf": { "x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2" }
    }));
    let r = get_with(&base, "/orders/7", &bound).await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert!(r.challenge().contains("invalid_token"), "{}", r.challenge());
    // The same grant without the binding passes: the refusal is the binding's.
    let unbound = issuer.token(json!({ "permissions": ["orders.7.read"] }));
    assert_eq!(get_with(&base, "/orders/7", &unbound).await.status, 200);
    assert_eq!(hits.get(), 1);
}
