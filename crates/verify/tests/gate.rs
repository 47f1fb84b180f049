//! The Gate: verification through the JWKS cache, several issuers, the
//! verified-token cache and its invalidation rules, revocation.

#[path = "support/logs.rs"]
mod logs;
mod support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keyward_jose::{Algorithm, Error as JoseError, TokenError};
use keyward_verify::{
    BearerError, CacheConfig, Clock, Gate, IssuerPolicy, KeySource, RevocationList, VerifyError,
};
use support::{jwks, now, signer, token, JwksServer};

/// A clock the test moves.
struct TestClock(AtomicI64);
impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn policy(server: &JwksServer) -> IssuerPolicy {
    let mut p = IssuerPolicy::new(server.base());
    p.source = KeySource::JwksUri(server.jwks_uri());
    p.audiences = vec!["api".into()];
    p.cache = CacheConfig {
        min_ttl: Duration::from_millis(100),
        unknown_kid_cooldown: Duration::from_millis(100),
        ..CacheConfig::default()
    };
    p
}

#[tokio::test]
async fn verifies_and_reads_the_identity() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    let gate = Gate::builder().issuer(policy(&server)).build().unwrap();
    let t = token(
        &k,
        &server.base(),
        "api",
        now(),
        serde_json::json!({"permissions": ["orders.*"]}),
    );
    let id = gate.verify(&t).await.unwrap();
    assert_eq!(id.subject.as_deref(), Some("alice"));
    assert_eq!(id.client_id.as_deref(), Some("svc"));
    assert_eq!(id.scopes, vec!["orders:read"]);
    assert_eq!(id.permissions, vec!["orders.*"]);
    assert_eq!(id.kid.as_deref(), Some("k1"));

    // Wrong audience, wrong issuer, wrong typ are refused.
    let other_aud = token(&k, &server.base(), "other", now(), serde_json::json!({}));
    assert_eq!(
        gate.verify(&other_aud).await.unwrap_err().reason(),
        "audience"
    );
    let other_iss = token(
        &k,
        "https://evil.example",
        "api",
        now(),
        serde_json::json!({}),
    );
    assert_eq!(
        gate.verify(&other_iss).await.unwrap_err().reason(),
        "issuer"
    );
    let id_token = keyward_jose::sign_jwt(
        &k,
        Some("JWT"),
        &serde_json::json!({
            "iss": server.base(), "sub": "alice", "aud": "api", "iat": now(), "exp": now() + 60
        }),
    )
    .unwrap();
    assert_eq!(gate.verify(&id_token).await.unwrap_err().reason(), "typ");
    // `permissions` of the wrong type rejects the token instead of granting nothing.
    let bad_perm = token(
        &k,
        &server.base(),
        "api",
        now(),
        serde_json::json!({"permissions": "orders.*"}),
    );
    assert_eq!(
        gate.verify(&bad_perm).await.unwrap_err(),
        VerifyError::MalformedClaim("permissions")
    );
}

#[tokio::test]
async fn several_issuers_each_with_their_own_keys() {
    let ka = signer(Algorithm::ES256, "a");
    let kb = signer(Algorithm::EdDSA, "b");
    let sa = JwksServer::start(jwks(&[&ka])).await;
    let sb = JwksServer::start(jwks(&[&kb])).await;
    let gate = Gate::builder()
        .issuer(policy(&sa))
        .issuer(policy(&sb))
        .build()
        .unwrap();
    assert!(gate
        .verify(&token(&ka, &sa.base(), "api", now(), serde_json::json!({})))
        .await
        .is_ok());
    assert!(gate
        .verify(&token(&kb, &sb.base(), "api", now(), serde_json::json!({})))
        .await
        .is_ok());
    // Issuer B's key cannot sign for issuer A: A publishes no kid "b", even
    // after the refetch an unknown kid allows.
    let forged = token(&kb, &sa.base(), "api", now(), serde_json::json!({}));
    assert_eq!(
        gate.verify(&forged).await.unwrap_err(),
        VerifyError::UnknownKid
    );
    // A token naming an issuer nobody trusts is refused as such, whether it
    // is signed with a key no trusted issuer publishes or with issuer A's
    // key (whose header bytes the gate has already seen).
    let kc = signer(Algorithm::ES256, "c");
    let stranger = |k| {
        token(
            k,
            "https://stranger.example",
            "api",
            now(),
            serde_json::json!({}),
        )
    };
    assert_eq!(
        gate.verify(&stranger(&kc)).await.unwrap_err(),
        VerifyError::UntrustedIssuer
    );
    assert_eq!(
        gate.verify(&stranger(&ka)).await.unwrap_err(),
        VerifyError::UntrustedIssuer
    );
}

/// Two JWKS servers with these keys, and an uncached gate trusting both.
async fn two_issuers(
    a: &[&keyward_jose::LocalSigner],
    b: &[&keyward_jose::LocalSigner],
) -> (JwksServer, JwksServer, Gate) {
    let sa = JwksServer::start(jwks(a)).await;
    let sb = JwksServer::start(jwks(b)).await;
    let gate = Gate::builder()
        .issuer(policy(&sa))
        .issuer(policy(&sb))
        .token_cache(0)
        .build()
        .unwrap();
    (sa, sb, gate)
}

#[tokio::test]
async fn issuers_sharing_a_kid_are_told_apart_by_iss() {
    // Both issuers publish a key named "k1"; the header bytes of A's tokens
    // and B's tokens are identical, so only `iss` can choose. No warm-up:
    // A's header is remembered before B's keys were ever fetched.
    let ka = signer(Algorithm::ES256, "k1");
    let kb = signer(Algorithm::ES256, "k1");
    let (sa, sb, gate) = two_issuers(&[&ka], &[&kb]).await;
    for _ in 0..3 {
        for (k, s) in [(&ka, &sa), (&kb, &sb)] {
            let t = token(k, &s.base(), "api", now(), serde_json::json!({}));
            let id = gate.verify(&t).await.unwrap();
            assert_eq!(id.issuer, s.base());
        }
    }
    // B's key signing as A: held to A's "k1", whose signature it is not
    // (not refused for B's issuer, whose key did sign it).
    let crossed = token(&kb, &sa.base(), "api", now(), serde_json::json!({}));
    assert_eq!(
        gate.verify(&crossed).await.unwrap_err(),
        VerifyError::Invalid(JoseError::Token(TokenError::BadSignature))
    );
}

#[tokio::test]
async fn an_issuer_that_starts_publishing_a_remembered_kid_is_still_reached() {
    // A's header (kid "k1") is remembered while B publishes only "b0"; then
    // B rotates to its own "k1". B's tokens must not be held to A's key.
    let ka = signer(Algorithm::ES256, "k1");
    let b0 = signer(Algorithm::ES256, "b0");
    let kb = signer(Algorithm::ES256, "k1");
    let (sa, sb, gate) = two_issuers(&[&ka], &[&b0]).await;
    gate.warm_up().await;
    let ta = token(&ka, &sa.base(), "api", now(), serde_json::json!({}));
    gate.verify(&ta).await.unwrap();
    gate.verify(&ta).await.unwrap();
    sb.set(|s| s.body = jwks(&[&b0, &kb]));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let tb = token(&kb, &sb.base(), "api", now(), serde_json::json!({}));
    assert_eq!(gate.verify(&tb).await.unwrap().issuer, sb.base());
    assert_eq!(gate.verify(&ta).await.unwrap().issuer, sa.base());
}

#[tokio::test]
async fn cached_entries_never_outlive_exp() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    let t0 = now();
    let clock = Arc::new(TestClock(AtomicI64::new(t0)));
    let gate = Gate::builder()
        .issuer(policy(&server))
        .clock(clock.clone())
        .build()
        .unwrap();
    let t = token(
        &k,
        &server.base(),
        "api",
        t0,
        serde_json::json!({"exp": t0 + 100}),
    );
    gate.verify(&t).await.unwrap();
    assert_eq!(gate.token_cache().unwrap().len(), 1);
    clock.0.store(t0 + 99, Ordering::SeqCst);
    assert!(gate.verify(&t).await.is_ok(), "cached hit before exp");
    // Past exp (and past the 60 s leeway a fresh verification allows).
    clock.0.store(t0 + 161, Ordering::SeqCst);
    assert_eq!(gate.verify(&t).await.unwrap_err().reason(), "expired");
    assert_eq!(
        gate.token_cache().unwrap().len(),
        0,
        "expired entry dropped"
    );
}

#[tokio::test]
async fn cached_entries_die_with_their_key() {
    let k1 = signer(Algorithm::ES256, "k1");
    let k2 = signer(Algorithm::ES256, "k2");
    let server = JwksServer::start(jwks(&[&k1, &k2])).await;
    let gate = Gate::builder().issuer(policy(&server)).build().unwrap();
    let t = token(&k1, &server.base(), "api", now(), serde_json::json!({}));
    gate.verify(&t).await.unwrap();
    // A rotation that keeps k1: the cached token stays valid.
    let k3 = signer(Algorithm::ES256, "k3");
    server.set(|s| s.body = jwks(&[&k1, &k2, &k3]));
    gate.issuers()[0].keys.refresh().await.unwrap();
    assert!(gate.verify(&t).await.is_ok());
    // k1 is revoked at the issuer (dropped from the set): the cached entry goes too.
    server.set(|s| s.body = jwks(&[&k2, &k3]));
    gate.issuers()[0].keys.refresh().await.unwrap();
    assert_eq!(gate.verify(&t).await.unwrap_err(), VerifyError::UnknownKid);
    assert_eq!(gate.token_cache().unwrap().len(), 0);
}

#[tokio::test]
async fn revoked_jti_is_refused_cached_or_not() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    let list = Arc::new(RevocationList::new());
    let gate = Gate::builder()
        .issuer(policy(&server))
        .revocations(list.clone())
        .build()
        .unwrap();
    let a = token(
        &k,
        &server.base(),
        "api",
        now(),
        serde_json::json!({"jti": "jti-a"}),
    );
    let b = token(
        &k,
        &server.base(),
        "api",
        now(),
        serde_json::json!({"jti": "jti-b"}),
    );
    gate.verify(&a).await.unwrap();
    list.revoke("jti-a", now() + 600);
    list.revoke("jti-b", now() + 600);
    assert_eq!(
        gate.verify(&a).await.unwrap_err(),
        VerifyError::Revoked,
        "cached entry"
    );
    assert_eq!(
        gate.verify(&b).await.unwrap_err(),
        VerifyError::Revoked,
        "never seen"
    );
}

#[tokio::test]
async fn without_the_token_cache_every_call_verifies() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    let gate = Gate::builder()
        .issuer(policy(&server))
        .token_cache(0)
        .build()
        .unwrap();
    assert!(gate.token_cache().is_none());
    let t = token(&k, &server.base(), "api", now(), serde_json::json!({}));
    for _ in 0..3 {
        assert!(gate.verify(&t).await.is_ok());
    }
}

#[tokio::test]
async fn a_gate_without_ml_dsa_skips_akp_keys_and_uses_the_rest() {
    let rs = signer(Algorithm::RS256, "rs");
    let pq = signer(Algorithm::MlDsa65, "pq");
    let server = JwksServer::start(jwks(&[&rs, &pq])).await;
    let mut only_rsa = policy(&server);
    only_rsa.algorithms = vec![Algorithm::RS256];
    let gate = Gate::builder().issuer(only_rsa).build().unwrap();
    let claims = serde_json::json!({});
    let (logs, guard) = logs::capture_logs();
    let id = gate
        .verify(&token(&rs, &server.base(), "api", now(), claims.clone()))
        .await
        .unwrap();
    drop(guard);
    assert_eq!(id.kid.as_deref(), Some("rs"));
    assert_eq!(
        gate.issuers()[0].keys.status().keys,
        1,
        "the AKP key is not kept"
    );
    let logs = logs.text();
    let line = logs
        .lines()
        .find(|l| l.contains("JWKS key skipped"))
        .unwrap_or_else(|| panic!("no skip line in {logs:?}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(r#"kid=Some("pq")"#), "{line}");
    assert!(line.contains("alg=\"ML-DSA-65\""), "{line}");
    assert!(!logs.contains("JWKS key dropped"), "{logs}");

    // A token of the skipped key is refused for its algorithm, and does not
    // send the cache to refetch as an unknown kid would.
    let fetches = server.fetches();
    let pq_token = token(&pq, &server.base(), "api", now(), claims.clone());
    assert_eq!(
        gate.verify(&pq_token).await.unwrap_err(),
        VerifyError::Invalid(JoseError::Token(TokenError::AlgorithmNotAllowed(
            "ML-DSA-65"
        )))
    );
    assert_eq!(server.fetches(), fetches);

    // Listed in `algorithms`, ML-DSA keys are used beside RSA ones.
    let mut both = policy(&server);
    both.algorithms = vec![Algorithm::RS256, Algorithm::MlDsa65];
    let gate = Gate::builder().issuer(both).build().unwrap();
    for (t, kid) in [
        (pq_token, "pq"),
        (token(&rs, &server.base(), "api", now(), claims), "rs"),
    ] {
        assert_eq!(gate.verify(&t).await.unwrap().kid.as_deref(), Some(kid));
    }
    assert_eq!(gate.issuers()[0].keys.status().keys, 2);
}

#[tokio::test]
async fn a_rotated_in_key_is_found_through_the_unknown_kid_path() {
    let k1 = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k1])).await;
    let gate = Gate::builder().issuer(policy(&server)).build().unwrap();
    gate.verify(&token(
        &k1,
        &server.base(),
        "api",
        now(),
        serde_json::json!({}),
    ))
    .await
    .unwrap();
    let k2 = signer(Algorithm::RS256, "k2");
    server.set(|s| s.body = jwks(&[&k1, &k2]));
    let t2 = token(&k2, &server.base(), "api", now(), serde_json::json!({}));
    assert!(gate.verify(&t2).await.is_ok());
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn a_malformed_token_is_refused_before_any_key_is_fetched() {
    // A token is read (split, header) once, before an issuer is chosen and
    // before its keys are fetched: whatever a malformed token says, it costs
    // no fetch, with one trusted issuer or several.
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    let (ka, kb) = (signer(Algorithm::ES256, "a"), signer(Algorithm::EdDSA, "b"));
    let (sa, sb) = (
        JwksServer::start(jwks(&[&ka])).await,
        JwksServer::start(jwks(&[&kb])).await,
    );
    let good = token(&ka, &sa.base(), "api", now(), serde_json::json!({}));
    let (h, rest) = good.split_once('.').unwrap();
    let hs256 = B64.encode(r#"{"alg":"HS256","kid":"a","typ":"at+jwt"}"#);
    let crit = B64.encode(r#"{"alg":"ES256","kid":"a","crit":["exp"],"exp":1}"#);
    let cases = [
        ("a.b".to_string(), TokenError::Segments),
        (format!("{good}.x"), TokenError::Segments),
        (format!("{h}=.{rest}"), TokenError::Base64("header")),
        (
            format!("{hs256}.{rest}"),
            TokenError::ForbiddenAlgorithm("HS256".into()),
        ),
        (
            format!("{crit}.{rest}"),
            TokenError::UnknownCritical("exp".into()),
        ),
        ("a.b.c".repeat(2000), TokenError::TooLong(8192)),
    ];
    for gate in [
        Gate::builder().issuer(policy(&sa)).build().unwrap(),
        Gate::builder()
            .issuer(policy(&sa))
            .issuer(policy(&sb))
            .build()
            .unwrap(),
    ] {
        for (t, want) in &cases {
            assert_eq!(
                gate.verify(t).await.unwrap_err(),
                VerifyError::Invalid(JoseError::Token(want.clone())),
                "{}",
                &t[..t.len().min(60)]
            );
        }
        assert_eq!(sa.fetches() + sb.fetches(), 0);
    }
    // The good token still passes, and only then are keys fetched.
    let two = Gate::builder()
        .issuer(policy(&sa))
        .issuer(policy(&sb))
        .build()
        .unwrap();
    assert_eq!(two.verify(&good).await.unwrap().issuer, sa.base());
    assert_eq!((sa.fetches(), sb.fetches()), (1, 0));
}

#[tokio::test]
async fn headers_find_a_cached_token_by_its_bytes_and_still_refuse_malformed_ones() {
    use http::{HeaderMap, HeaderValue};
    let k = signer(Algorithm::EdDSA, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    let gate = Gate::builder().issuer(policy(&server)).build().unwrap();
    let t = token(&k, &server.base(), "api", now(), serde_json::json!({}));
    let h = |v: &[u8]| {
        let mut m = HeaderMap::new();
        m.insert("authorization", HeaderValue::from_bytes(v).unwrap());
        m
    };
    let first = gate
        .verify_headers(&h(format!("Bearer {t}").as_bytes()))
        .await
        .unwrap();
    assert_eq!(first.subject.as_deref(), Some("alice"));
    let cache = gate.token_cache().unwrap();
    assert_eq!(cache.len(), 1);
    // A hit serves the cached identity itself, through either entry point.
    for v in [format!("Bearer {t}"), format!("bEARER {t}")] {
        let again = gate.verify_headers(&h(v.as_bytes())).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "{v}");
    }
    assert!(Arc::ptr_eq(&first, &gate.verify(&t).await.unwrap()));
    // The cached token with anything a b64token may not hold around
    // or inside it is not that token: refused as malformed, cache unchanged.
    let mid = t.len() / 2;
    for (bad, why) in [
        (format!("Bearer {t} ").into_bytes(), BearerError::Space),
        (format!("Bearer {t}\t").into_bytes(), BearerError::Charset),
        (format!("Bearer  {t}").into_bytes(), BearerError::Space),
        (
            [
                b"Bearer ",
                &t.as_bytes()[..mid],
                b"\x80",
                &t.as_bytes()[mid..],
            ]
            .concat(),
            BearerError::Charset,
        ),
        (format!("Bearer {t}\"").into_bytes(), BearerError::Charset),
        (format!("Bearer {t},").into_bytes(), BearerError::Charset),
    ] {
        assert_eq!(
            gate.verify_headers(&h(&bad)).await.unwrap_err(),
            VerifyError::MalformedHeader(why),
            "{:?}",
            String::from_utf8_lossy(&bad)
        );
    }
    assert_eq!(
        gate.verify_headers(&HeaderMap::new()).await.unwrap_err(),
        VerifyError::MissingToken
    );
    assert_eq!(cache.len(), 1);
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn header_rules_map_to_rfc_6750_answers() {
    use http::HeaderMap;
    let k = signer(Algorithm::EdDSA, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    let gate = Gate::builder().issuer(policy(&server)).build().unwrap();
    let h = |v: &[&[u8]]| {
        let mut m = HeaderMap::new();
        for v in v {
            m.append("authorization", http::HeaderValue::from_bytes(v).unwrap());
        }
        m
    };
    // No bearer credential at all: a bare challenge, no error code.
    for none in [h(&[]), h(&[b"Basic dXNlcjpw"]), h(&[b"Basic dXNl\tcjpw"])] {
        let e = gate.verify_headers(&none).await.unwrap_err();
        assert_eq!(e, VerifyError::MissingToken, "{none:?}");
        assert_eq!(e.bearer_error(), None);
    }
    // Anything else is a malformed header (invalid_request), by rule.
    for (bad, why) in [
        (h(&[b"Bearer a", b"Bearer b"]), BearerError::Repeated),
        (h(&[b"Basic \xe9t\xe9"]), BearerError::NotText),
        (h(&[b"abc.def.ghi"]), BearerError::NoSpace),
        (h(&[b"Bearer"]), BearerError::Empty),
        (h(&[b"Bearer "]), BearerError::Empty),
        (h(&[b"Bearer a b"]), BearerError::Space),
        (h(&[b"Bearer a\"b"]), BearerError::Charset),
        (h(&[b"Bearer \xffabc"]), BearerError::Charset),
    ] {
        let e = gate.verify_headers(&bad).await.unwrap_err();
        assert_eq!(e, VerifyError::MalformedHeader(why), "{bad:?}");
        assert_eq!(e.bearer_error(), Some("invalid_request"));
        assert_eq!(e.to_string(), "malformed Authorization header");
        let cause = std::error::Error::source(&e).map(|c| c.to_string());
        assert_eq!(cause, Some(why.to_string()));
    }
    assert_eq!(server.fetches(), 0, "no token was read, no key fetched");
}

#[test]
fn rejections_follow_rfc_6750() {
    let e = VerifyError::MissingToken;
    assert_eq!(e.status(), 401);
    assert_eq!(e.www_authenticate("api"), "Bearer realm=\"api\"");
    let e = VerifyError::InsufficientScope("orders.7.read".into());
    assert_eq!(e.status(), 403);
    assert!(e
        .www_authenticate("api")
        .starts_with("Bearer realm=\"api\", error=\"insufficient_scope\", error_description=\""));
    let e = VerifyError::Revoked;
    assert!(e
        .www_authenticate("a\"b")
        .starts_with("Bearer realm=\"ab\", error=\"invalid_token\""));
}

#[test]
fn the_builder_names_what_it_cannot_build() {
    use keyward_verify::{BuildError, FetchError, JwksError, UrlError};
    let e = Gate::builder().build().unwrap_err();
    assert!(matches!(e, BuildError::NoIssuer), "{e:?}");
    assert_eq!(e.to_string(), "at least one trusted issuer is required");
    let p = IssuerPolicy::new("https://issuer.example");
    let e = Gate::builder()
        .issuer(p.clone())
        .issuer(p)
        .build()
        .unwrap_err();
    assert!(
        matches!(&e, BuildError::DuplicateIssuer(i) if i == "https://issuer.example"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "issuer https://issuer.example is configured twice"
    );
    let mut p = IssuerPolicy::new("https://issuer.example");
    p.source = KeySource::JwksUri("http://keys.example/jwks".into());
    let e = Gate::builder().issuer(p).build().unwrap_err();
    assert!(
        matches!(
            &e,
            BuildError::Keys {
                issuer,
                source: JwksError::Fetch(FetchError::Url(UrlError::PlainHttp { url })),
            } if issuer == "https://issuer.example" && url == "http://keys.example/jwks"
        ),
        "{e:?}"
    );
    // The whole chain, for whoever logs it.
    assert!(
        e.to_string()
            .starts_with("issuer https://issuer.example: http://keys.example/jwks uses plain http"),
        "{e}"
    );
    // And every concern converts into the crate's one error type.
    let any: keyward_verify::Error = e.into();
    assert!(matches!(any, keyward_verify::Error::Build(_)), "{any:?}");
}
