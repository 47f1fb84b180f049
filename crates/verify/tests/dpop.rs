//! DPoP-bound tokens at the gate (RFC 9449 §7): `Authorization: DPoP` with
//! a proof by the key the token is bound to, on every request, cached token
//! or not; bound tokens refused as Bearer; sender constraints required by a
//! route or an issuer; the challenge and `DPoP-Nonce` of a refusal.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Request};
use keyward_jose::{
    access_token_hash, sign_jwt, Algorithm, JwkSet, LocalSigner, NonceKey, PrivateKey, TokenSigner,
};
use keyward_verify::{
    DpopPolicy, DpopRefusal, Gate, GateLayer, IssuerPolicy, KeySource, RequestTarget,
    SenderConstraint, VerifyError,
};
use serde_json::{json, Value};
use tower::{Layer, ServiceExt};

const ISSUER: &str = "https://issuer.test/prod";
const URI: &str = "https://api.test/orders/7";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A client's DPoP key.
struct Client(PrivateKey);

impl Client {
    fn new() -> Self {
        Client(PrivateKey::generate(Algorithm::ES256, None).unwrap())
    }

    fn jkt(&self) -> String {
        self.0.public_key().thumbprint()
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({
            "typ": "dpop+jwt", "alg": "ES256",
            "jwk": self.0.public_key().to_jwk(None).to_value(),
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.0.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64(&sig))
    }

    /// A fresh proof for `method` `uri` carrying `ath` of `token`.
    fn proof(&self, method: &str, uri: &str, token: &str) -> String {
        self.sign(&json!({
            "jti": keyward_jose::crypto::random_text::<12>(),
            "htm": method, "htu": uri, "iat": now(),
            "ath": access_token_hash(token),
        }))
    }
}

struct Setup {
    signer: LocalSigner,
    gate: Gate,
    _dir: tempfile::TempDir,
}

fn setup_with(dpop: DpopPolicy, require: Option<SenderConstraint>) -> Setup {
    let signer = LocalSigner::new(
        PrivateKey::generate(Algorithm::ES256, None).unwrap(),
        Some("k1".into()),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let set = JwkSet {
        keys: vec![signer.public_jwk()],
    };
    std::fs::write(&path, set.to_json()).unwrap();
    let policy = IssuerPolicy {
        source: KeySource::File(path),
        sender_constraint: require,
        ..IssuerPolicy::new(ISSUER)
    };
    let gate = Gate::builder().issuer(policy).dpop(dpop).build().unwrap();
    Setup {
        signer,
        gate,
        _dir: dir,
    }
}

fn setup() -> Setup {
    setup_with(DpopPolicy::default(), None)
}

impl Setup {
    /// An access token, bound to `jkt` when given.
    fn token(&self, jkt: Option<&str>) -> String {
        let mut c = json!({
            "iss": ISSUER, "sub": "alice", "iat": now(), "exp": now() + 300,
            "jti": keyward_jose::crypto::random_text::<8>(),
        });
        if let Some(jkt) = jkt {
            c["cnf"] = json!({ "jkt": jkt });
        }
        sign_jwt(&self.signer, Some("at+jwt"), &c).unwrap()
    }

    async fn call(
        &self,
        authorization: &str,
        proofs: &[&str],
        method: &str,
        require: Option<SenderConstraint>,
    ) -> Result<String, VerifyError> {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(authorization).unwrap(),
        );
        for p in proofs {
            h.append("dpop", HeaderValue::from_str(p).unwrap());
        }
        let target = RequestTarget {
            method,
            uri: URI,
            require,
        };
        self.gate
            .verify_request(&h, &target)
            .await
            .map(|id| id.subject.clone().unwrap_or_default())
    }
}

fn dpop_err(e: Result<String, VerifyError>) -> DpopRefusal {
    match e {
        Err(VerifyError::Dpop(d)) => d,
        other => panic!("expected a DPoP refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bound_token_passes_with_its_proof_on_every_request_cached_or_not() {
    let s = setup();
    let c = Client::new();
    let t = s.token(Some(&c.jkt()));
    let auth = format!("DPoP {t}");
    let p1 = c.proof("GET", URI, &t);
    assert_eq!(s.call(&auth, &[&p1], "GET", None).await.unwrap(), "alice");
    assert_eq!(s.gate.token_cache().unwrap().len(), 1);

    // The token is now cached; the proof is still required and checked.
    assert_eq!(
        dpop_err(s.call(&auth, &[], "GET", None).await),
        DpopRefusal::Missing
    );
    assert_eq!(
        dpop_err(s.call(&auth, &[&p1], "GET", None).await),
        DpopRefusal::Replayed
    );
    let other = Client::new();
    assert_eq!(
        dpop_err(
            s.call(&auth, &[&other.proof("GET", URI, &t)], "GET", None)
                .await
        ),
        DpopRefusal::KeyMismatch
    );
    assert_eq!(
        dpop_err(
            s.call(&auth, &[&c.proof("GET", URI, "another")], "GET", None)
                .await
        ),
        DpopRefusal::AthMismatch
    );
    let no_ath = c.sign(&json!({"jti": "x1", "htm": "GET", "htu": URI, "iat": now()}));
    assert_eq!(
        dpop_err(s.call(&auth, &[&no_ath], "GET", None).await),
        DpopRefusal::AthMissing
    );
    assert_eq!(
        dpop_err(
            s.call(&auth, &[&c.proof("POST", URI, &t)], "GET", None)
                .await
        ),
        DpopRefusal::Method
    );
    assert_eq!(
        dpop_err(
            s.call(
                &auth,
                &[&c.proof("GET", "https://api.test/orders/8", &t)],
                "GET",
                None
            )
            .await
        ),
        DpopRefusal::Uri
    );
    let (a, b) = (c.proof("GET", URI, &t), c.proof("GET", URI, &t));
    assert_eq!(
        dpop_err(s.call(&auth, &[&a, &b], "GET", None).await),
        DpopRefusal::Repeated
    );
    let mut bad_typ = c.proof("GET", URI, &t);
    bad_typ.insert(0, 'x');
    assert!(matches!(
        dpop_err(s.call(&auth, &[&bad_typ], "GET", None).await),
        DpopRefusal::Malformed(_)
    ));
    // A fresh proof passes again, from the cache; a normalised htu too.
    let p2 = c.proof("GET", "HTTPS://API.test:443/orders/7?page=2", &t);
    assert_eq!(s.call(&auth, &[&p2], "GET", None).await.unwrap(), "alice");

    // A second token bound to the same key, both cached with the hash
    // their proofs were checked against: each token's own `ath` only.
    let t2 = s.token(Some(&c.jkt()));
    assert_ne!(t2, t, "each token has its own jti");
    let auth2 = format!("DPoP {t2}");
    for _ in 0..2 {
        assert_eq!(
            s.call(&auth2, &[&c.proof("GET", URI, &t2)], "GET", None)
                .await
                .unwrap(),
            "alice"
        );
        assert_eq!(
            dpop_err(
                s.call(&auth2, &[&c.proof("GET", URI, &t)], "GET", None)
                    .await
            ),
            DpopRefusal::AthMismatch
        );
        assert_eq!(
            dpop_err(
                s.call(&auth, &[&c.proof("GET", URI, &t2)], "GET", None)
                    .await
            ),
            DpopRefusal::AthMismatch
        );
    }
    assert_eq!(s.gate.token_cache().unwrap().len(), 2);
}

#[tokio::test]
async fn bearer_downgrade_and_unbound_dpop_are_refused() {
    let s = setup();
    let c = Client::new();
    let bound = s.token(Some(&c.jkt()));
    let unbound = s.token(None);
    for _ in 0..2 {
        // Twice: the second time the tokens come from the cache.
        let e = s.call(&format!("Bearer {bound}"), &[], "GET", None).await;
        assert_eq!(e.unwrap_err(), VerifyError::BoundTokenAsBearer);
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {bound}").parse().unwrap());
        assert_eq!(
            s.gate.verify_headers(&h).await.unwrap_err(),
            VerifyError::BoundTokenAsBearer
        );
        let proof = c.proof("GET", URI, &unbound);
        let e = s
            .call(&format!("DPoP {unbound}"), &[&proof], "GET", None)
            .await;
        assert_eq!(e.unwrap_err(), VerifyError::UnboundTokenAsDpop);
        // An unbound token as Bearer is fine where nothing is required.
        let ok = s.call(&format!("Bearer {unbound}"), &[], "GET", None).await;
        assert_eq!(ok.unwrap(), "alice");
    }
}

#[tokio::test]
async fn a_route_or_an_issuer_can_require_dpop() {
    let s = setup();
    let unbound = s.token(None);
    assert_eq!(
        s.call(
            &format!("Bearer {unbound}"),
            &[],
            "GET",
            Some(SenderConstraint::Dpop)
        )
        .await
        .unwrap_err(),
        VerifyError::SenderConstraintRequired("dpop")
    );
    let strict = setup_with(DpopPolicy::default(), Some(SenderConstraint::Dpop));
    let unbound = strict.token(None);
    assert_eq!(
        strict
            .call(&format!("Bearer {unbound}"), &[], "GET", None)
            .await
            .unwrap_err(),
        VerifyError::SenderConstraintRequired("dpop")
    );
    let c = Client::new();
    let bound = strict.token(Some(&c.jkt()));
    let p = c.proof("GET", URI, &bound);
    assert_eq!(
        strict
            .call(&format!("DPoP {bound}"), &[&p], "GET", None)
            .await
            .unwrap(),
        "alice"
    );
}

#[tokio::test]
async fn the_layer_answers_with_a_dpop_challenge_and_a_nonce() {
    let key = Arc::new(NonceKey::derive(b"gateway secret", "api", 300));
    let s = setup_with(
        DpopPolicy {
            nonces: Some(key.clone()),
            ..DpopPolicy::default()
        },
        None,
    );
    let service = GateLayer::new(s.gate.clone())
        .public_origin("https://api.test")
        .layer(tower::service_fn(|_req: Request<axum::body::Body>| async {
            Ok::<_, std::convert::Infallible>(axum::response::Response::new(
                axum::body::Body::from("ok"),
            ))
        }));
    let c = Client::new();
    let t = s.token(Some(&c.jkt()));
    let send = |proof: String, auth: String| {
        let service = service.clone();
        async move {
            let req = Request::get("/orders/7")
                .header("host", "internal:8080")
                .header("authorization", auth)
                .header("dpop", proof)
                .body(axum::body::Body::empty())
                .unwrap();
            service.oneshot(req).await.unwrap()
        }
    };
    // No nonce: 401 use_dpop_nonce with a DPoP-Nonce to retry with.
    let r = send(c.proof("GET", URI, &t), format!("DPoP {t}")).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("DPoP realm=\"keyward\", error=\"use_dpop_nonce\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("algs=\"ES256 EdDSA RS256 PS256"),
        "{challenge}"
    );
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_string();
    assert!(key.check(&nonce, now()));
    // With it: through (htu is the public origin, not the Host header).
    let with_nonce = c.sign(&json!({
        "jti": "n1", "htm": "GET", "htu": URI, "iat": now(),
        "ath": access_token_hash(&t), "nonce": nonce,
    }));
    let r = send(with_nonce.clone(), format!("DPoP {t}")).await;
    assert_eq!(r.status(), 200);
    // Replayed: invalid_dpop_proof.
    let r = send(with_nonce, format!("DPoP {t}")).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error=\"invalid_dpop_proof\""),
        "{challenge}"
    );
    // A bound token as Bearer: a DPoP challenge, invalid_token.
    let r = send(String::new(), format!("Bearer {t}")).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("DPoP ") && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );
}
