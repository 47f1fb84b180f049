//! The JWKS cache rules, one test each, against a real HTTP server on
//! 127.0.0.1 whose answers the test scripts.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use std::time::{Duration, Instant};

use keyward_jose::Algorithm;
use keyward_verify::{
    check_url, CacheConfig, DiscoveryError, FetchError, JwksCache, JwksError, KeySource, UrlError,
    VerifyError,
};
use support::{jwks, signer, JwksServer};

fn config() -> CacheConfig {
    CacheConfig {
        min_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(3600),
        default_ttl: Duration::from_secs(300),
        unknown_kid_cooldown: Duration::from_secs(30),
        max_stale: Duration::from_secs(24 * 3600),
        fetch_timeout: Duration::from_secs(2),
        max_body_bytes: 64 * 1024,
        allow_http: false,
        jwks_hosts: Vec::new(),
    }
}

fn cache(server: &JwksServer, cfg: CacheConfig) -> JwksCache {
    JwksCache::new(
        &server.base(),
        KeySource::JwksUri(server.jwks_uri()),
        cfg,
        &Algorithm::DEFAULT_ACCEPTED,
    )
    .unwrap()
}

fn freshness(c: &JwksCache) -> Duration {
    let s = c.current().unwrap();
    s.expires_at - s.confirmed_at
}

#[tokio::test]
async fn max_age_is_honoured_and_clamped() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    let mut cfg = config();
    cfg.min_ttl = Duration::from_secs(10);
    cfg.max_ttl = Duration::from_secs(100);
    let c = cache(&server, cfg);

    server.set(|s| s.cache_control = Some("public, max-age=50".into()));
    c.refresh().await.unwrap();
    assert_eq!(freshness(&c), Duration::from_secs(50));

    server.set(|s| s.cache_control = Some("public, max-age=86400".into()));
    c.refresh().await.unwrap();
    assert_eq!(
        freshness(&c),
        Duration::from_secs(100),
        "clamped to max_ttl"
    );

    server.set(|s| s.cache_control = Some("max-age=2".into()));
    c.refresh().await.unwrap();
    assert_eq!(freshness(&c), Duration::from_secs(10), "clamped to min_ttl");

    server.set(|s| s.cache_control = Some("no-store".into()));
    c.refresh().await.unwrap();
    assert_eq!(freshness(&c), Duration::from_secs(10), "no-store: min_ttl");

    server.set(|s| s.cache_control = None);
    c.refresh().await.unwrap();
    assert_eq!(
        freshness(&c),
        Duration::from_secs(100),
        "no header: default, clamped"
    );
}

#[tokio::test]
async fn etag_revalidation_keeps_the_set_and_extends_it() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    server.set(|s| {
        s.etag = Some("\"v1\"".into());
        s.cache_control = Some("max-age=60".into());
    });
    let c = cache(&server, config());
    c.refresh().await.unwrap();
    let first = c.current().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.refresh().await.unwrap();
    let second = c.current().unwrap();
    assert_eq!(server.fetches(), 1);
    assert_eq!(
        server
            .not_modified
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(second.generation, first.generation, "304 keeps the set");
    assert!(
        second.confirmed_at > first.confirmed_at,
        "304 re-confirms it"
    );
    assert!(second.keys.get("k1").is_some());

    // A new ETag means a new set.
    let k2 = signer(Algorithm::ES256, "k2");
    server.set(|s| {
        s.etag = Some("\"v2\"".into());
        s.body = jwks(&[&k, &k2]);
    });
    c.refresh().await.unwrap();
    let third = c.current().unwrap();
    assert_eq!(third.generation, first.generation + 1);
    assert!(third.keys.get("k2").is_some());
}

#[tokio::test]
async fn background_refresh_means_no_request_waits() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    server.set(|s| s.cache_control = Some("max-age=1".into()));
    let c = cache(&server, config());
    let task = c.spawn_refresher();
    // Wait for the first fetch, then make every later fetch slow.
    while c.current().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.set(|s| s.delay = Duration::from_millis(600));
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while start.elapsed() < Duration::from_millis(3500) {
        let t = Instant::now();
        let snap = c.key_for("k1").await.unwrap();
        slowest = slowest.max(t.elapsed());
        assert!(snap.keys.get("k1").is_some());
        assert!(Instant::now() < snap.expires_at, "the set never went stale");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    assert!(
        server.fetches() >= 3,
        "refreshed in the background: {}",
        server.fetches()
    );
    assert!(
        slowest < Duration::from_millis(100),
        "a request waited {slowest:?}"
    );
}

#[tokio::test]
async fn thousand_random_unknown_kids_cause_at_most_one_fetch() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    let c = cache(&server, config());
    c.refresh().await.unwrap();
    assert_eq!(server.fetches(), 1);
    // Slow fetches make the single-flight visible: all 1,000 arrive together.
    server.set(|s| s.delay = Duration::from_millis(200));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.key_for(&format!("random-{i}-{}", support::rand_id()))
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err(), VerifyError::UnknownKid);
    }
    assert!(server.fetches() <= 2, "fetches: {}", server.fetches());
    // The same unknown kids again: answered from the negative cache.
    let before = server.fetches();
    for i in 0..100 {
        assert_eq!(
            c.key_for(&format!("again-{i}")).await.unwrap_err(),
            VerifyError::UnknownKid
        );
    }
    assert_eq!(server.fetches(), before, "cooldown holds");
    // A known kid is never affected.
    assert!(c.key_for("k1").await.is_ok());
}

#[tokio::test]
async fn unknown_kid_refetch_finds_a_new_key_then_cools_down() {
    let k1 = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k1])).await;
    let mut cfg = config();
    cfg.unknown_kid_cooldown = Duration::from_millis(500);
    let c = cache(&server, cfg);
    c.refresh().await.unwrap();
    // The issuer rotates: the new kid appears in the set.
    let k2 = signer(Algorithm::ES256, "k2");
    server.set(|s| s.body = jwks(&[&k1, &k2]));
    assert!(c.key_for("k2").await.is_ok(), "refetched on unknown kid");
    assert_eq!(server.fetches(), 2);
    // Right after, another unknown kid is refused without fetching.
    let k3 = signer(Algorithm::ES256, "k3");
    server.set(|s| s.body = jwks(&[&k1, &k2, &k3]));
    assert_eq!(c.key_for("k3").await.unwrap_err(), VerifyError::UnknownKid);
    assert_eq!(server.fetches(), 2, "within the cooldown");
    // After the cooldown it may fetch again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(c.key_for("k3").await.is_ok());
    assert_eq!(server.fetches(), 3);
}

#[tokio::test]
async fn failures_serve_the_last_good_set_up_to_max_stale() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    server.set(|s| s.cache_control = Some("max-age=1".into()));
    let mut cfg = config();
    cfg.max_stale = Duration::from_secs(2);
    let c = cache(&server, cfg);
    c.refresh().await.unwrap();
    server.set(|s| s.fail = Some(500));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = c.refresh().await.unwrap_err();
    assert!(
        matches!(&e, JwksError::Fetch(FetchError::Status { status, .. }) if status.as_u16() == 500),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .ends_with("answered 500 Internal Server Error"),
        "{e}"
    );
    let st = c.status();
    assert!(st.stale, "{st:?}");
    assert!(st.last_error.as_deref().unwrap().contains("500"), "{st:?}");
    assert!(c.key_for("k1").await.is_ok(), "stale but within max_stale");
    // Past expiry + max_stale, the set is no longer used.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(c.current().is_none());
    assert_eq!(
        c.key_for("k1").await.unwrap_err(),
        VerifyError::KeysUnavailable
    );
    // The endpoint recovers: keys come back (after the 1 s failure backoff).
    server.set(|s| s.fail = None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(c.key_for("k1").await.is_ok());
    assert!(!c.status().stale);
}

#[tokio::test]
async fn an_issuer_down_from_the_start_is_not_hammered() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    server.set(|s| {
        s.fail = Some(503);
        s.delay = Duration::from_millis(100);
    });
    let c = cache(&server, config());
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { c.keys().await.map(|_| ()) }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err(), VerifyError::KeysUnavailable);
    }
    let attempts = server.attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(attempts, 1, "200 queued requests, one fetch");
    // After the backoff, the next request tries again and recovers.
    server.set(|s| s.fail = None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(c.key_for("k1").await.is_ok());
}

#[tokio::test]
async fn a_timeout_keeps_the_old_set() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    let mut cfg = config();
    cfg.fetch_timeout = Duration::from_millis(300);
    let c = cache(&server, cfg);
    c.refresh().await.unwrap();
    let before = c.current().unwrap().generation;
    server.set(|s| s.delay = Duration::from_secs(2));
    let t = Instant::now();
    let err = c.refresh().await.unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "bounded: {:?}",
        t.elapsed()
    );
    assert!(
        matches!(&err, JwksError::Fetch(FetchError::Timeout { after, .. }) if after.as_millis() == 300),
        "{err:?}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(c.current().unwrap().generation, before);
}

#[tokio::test]
async fn a_new_set_replaces_the_old_one_whole() {
    let k1 = signer(Algorithm::ES256, "k1");
    let k2 = signer(Algorithm::EdDSA, "k2");
    let server = JwksServer::start(jwks(&[&k1])).await;
    let c = cache(&server, config());
    c.refresh().await.unwrap();
    let held = c.current().unwrap();
    server.set(|s| s.body = jwks(&[&k2]));
    c.refresh().await.unwrap();
    let now = c.current().unwrap();
    assert!(now.keys.get("k1").is_none() && now.keys.get("k2").is_some());
    assert_eq!(now.generation, held.generation + 1);
    // A reader holding the old snapshot still sees a consistent old set.
    assert!(held.keys.get("k1").is_some() && held.keys.get("k2").is_none());
}

#[tokio::test]
async fn oversize_or_malformed_bodies_are_refused_and_change_nothing() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    let c = cache(&server, config());
    c.refresh().await.unwrap();
    let gen = c.current().unwrap().generation;
    for (body, why) in [
        (
            format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(70 * 1024)),
            "body larger than 65536 bytes",
        ),
        (
            "not json".to_string(),
            "not a JWK Set: malformed key: JWK Set is not a JSON object",
        ),
        (
            "{\"keys\":{}}".to_string(),
            "not a JWK Set: malformed key: JWK Set needs a \"keys\" array",
        ),
        (
            "[]".to_string(),
            "not a JWK Set: malformed key: JWK Set is not a JSON object",
        ),
    ] {
        server.set(|s| s.body = body.clone());
        let e = c.refresh().await.unwrap_err();
        let what = &body[..body.len().min(40)];
        if why.starts_with("body") {
            assert!(
                matches!(
                    &e,
                    JwksError::Fetch(FetchError::TooLarge { max: 65536, .. })
                ),
                "{what}: {e:?}"
            );
        } else {
            assert!(matches!(&e, JwksError::NotAJwkSet(_)), "{what}: {e:?}");
        }
        assert!(e.to_string().contains(why), "{what}: {e}");
        let snap = c.current().unwrap();
        assert_eq!(snap.generation, gen);
        assert!(snap.keys.get("k1").is_some());
    }
}

#[tokio::test]
async fn weak_and_malformed_keys_are_dropped_and_the_rest_used() {
    let good = signer(Algorithm::ES256, "good");
    let good_jwk =
        serde_json::from_str::<serde_json::Value>(&jwks(&[&good])).unwrap()["keys"][0].clone();
    let b64 = |bytes: &[u8]| B64.encode(bytes);
    let mut n = vec![0xC3u8; 128];
    n[127] |= 1;
    let rsa_1024 = serde_json::json!({"kty":"RSA","kid":"rsa1024","alg":"RS256","use":"sig","n":b64(&n),"e":"AQAB"});
    let off_curve = serde_json::json!({"kty":"EC","kid":"offcurve","crv":"P-256","alg":"ES256",
        "x": b64(&[1u8; 32]), "y": b64(&[2u8; 32])});
    let mut private = good_jwk.clone();
    private["kid"] = "private".into();
    private["d"] = b64(&[7u8; 32]).into();
    let dup_a = {
        let mut j = good_jwk.clone();
        j["kid"] = "dup".into();
        j
    };
    let dup_b = dup_a.clone();
    let hmac = serde_json::json!({"kty":"oct","kid":"hmac","k":b64(b"secret")});
    let set =
        serde_json::json!({"keys":[rsa_1024, off_curve, private, dup_a, dup_b, hmac, good_jwk]});
    let server = JwksServer::start(set.to_string()).await;
    let c = cache(&server, config());
    c.refresh().await.unwrap();
    let snap = c.current().unwrap();
    let kids: Vec<&str> = snap.keys.kids().collect();
    assert_eq!(kids, vec!["good"], "only the good key survives");
}

#[tokio::test]
async fn discovery_finds_the_jwks_uri_and_checks_the_issuer() {
    let k = signer(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&k])).await;
    let c = JwksCache::new(
        &server.base(),
        KeySource::Discovery,
        config(),
        &Algorithm::DEFAULT_ACCEPTED,
    )
    .unwrap();
    assert!(c.key_for("k1").await.is_ok());
    assert_eq!(
        server.discoveries.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    c.refresh().await.unwrap();
    assert_eq!(
        server.discoveries.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "discovered once"
    );

    // A discovery document naming another issuer is refused (OIDC Discovery §4.3).
    let evil = JwksServer::start(jwks(&[&k])).await;
    evil.set(|s| s.discovery_issuer = Some("https://someone-else.example".into()));
    let c = JwksCache::new(
        &evil.base(),
        KeySource::Discovery,
        config(),
        &Algorithm::DEFAULT_ACCEPTED,
    )
    .unwrap();
    assert_eq!(
        c.key_for("k1").await.unwrap_err(),
        VerifyError::KeysUnavailable
    );
    let e = c.refresh().await.unwrap_err();
    assert!(
        matches!(&e, JwksError::Discovery(DiscoveryError::WrongIssuer { found: Some(f), .. }) if f == "https://someone-else.example"),
        "{e:?}"
    );
    assert!(c.status().last_error.unwrap().contains("different issuer"));
    assert_eq!(evil.fetches(), 0, "its JWKS was never fetched");
}

/// A discovery document may point the keys only at the issuer's own host
/// and port, or at a host the issuer's `jwks_hosts` names.
#[tokio::test]
async fn a_discovered_jwks_uri_must_be_on_a_trusted_host() {
    let k = signer(Algorithm::ES256, "k1");
    let issuer = JwksServer::start(jwks(&[&k])).await;
    let elsewhere = JwksServer::start(jwks(&[&k])).await;
    issuer.set(|s| s.discovery_jwks_uri = Some(elsewhere.jwks_uri()));
    let with_hosts = |hosts: &[String]| {
        JwksCache::new(
            &issuer.base(),
            KeySource::Discovery,
            CacheConfig {
                jwks_hosts: hosts.to_vec(),
                ..config()
            },
            &Algorithm::DEFAULT_ACCEPTED,
        )
        .unwrap()
    };
    let other_port = format!("127.0.0.1:{}", elsewhere.addr.port());
    for refused in [
        vec![],
        vec!["localhost".to_string()],
        vec![format!("127.0.0.1:{}", issuer.addr.port())],
        vec!["127.0.0.2".to_string()],
    ] {
        let c = with_hosts(&refused);
        let e = c.refresh().await.unwrap_err();
        assert!(
            matches!(&e, JwksError::Discovery(DiscoveryError::UntrustedJwksHost { jwks_uri, .. }) if *jwks_uri == elsewhere.jwks_uri()),
            "{refused:?}: {e:?}"
        );
        assert!(e.to_string().contains("jwks_hosts"), "{e}");
        assert_eq!(
            c.key_for("k1").await.unwrap_err(),
            VerifyError::KeysUnavailable
        );
        assert_eq!(
            c.discover_jwks_uri()
                .await
                .unwrap()
                .unwrap_err()
                .to_string(),
            e.to_string()
        );
    }
    assert_eq!(
        elsewhere.fetches(),
        0,
        "keys were never fetched from an untrusted host"
    );
    for allowed in [other_port.clone(), "127.0.0.1".to_string()] {
        let c = with_hosts(std::slice::from_ref(&allowed));
        assert!(c.key_for("k1").await.is_ok(), "{allowed}");
        assert_eq!(
            c.discover_jwks_uri().await.unwrap().unwrap(),
            elsewhere.jwks_uri()
        );
    }
    assert!(elsewhere.fetches() > 0);
    // Sources other than discovery have nothing to discover.
    let direct = JwksCache::new(
        &issuer.base(),
        KeySource::JwksUri(elsewhere.jwks_uri()),
        config(),
        &Algorithm::DEFAULT_ACCEPTED,
    )
    .unwrap();
    assert!(direct.discover_jwks_uri().await.is_none());
}

#[test]
fn jwks_host_rules() {
    use keyward_verify::{jwks_host_allowed as ok, parse_jwks_host};
    let none: &[String] = &[];
    assert!(ok(
        "https://auth.example",
        "https://auth.example/jwks",
        none
    ));
    assert!(ok(
        "https://Auth.Example/t1",
        "https://auth.example:443/k",
        none
    ));
    assert!(!ok(
        "https://auth.example",
        "https://auth.example:8443/k",
        none
    ));
    assert!(!ok("https://auth.example", "https://keys.example/k", none));
    assert!(!ok(
        "https://auth.example",
        "https://auth.example.evil/k",
        none
    ));
    assert!(!ok("https://auth.example", "not a url", none));
    let hosts = ["keys.example".to_string(), "cdn.example:8443".to_string()];
    assert!(ok(
        "https://auth.example",
        "https://KEYS.example:9/k",
        &hosts
    ));
    assert!(ok(
        "https://auth.example",
        "https://cdn.example:8443/k",
        &hosts
    ));
    assert!(!ok("https://auth.example", "https://cdn.example/k", &hosts));
    assert_eq!(
        parse_jwks_host("Keys.Example"),
        Some(("keys.example".into(), None))
    );
    assert_eq!(
        parse_jwks_host("[::1]:8443"),
        Some(("[::1]".into(), Some(8443)))
    );
    for bad in [
        "",
        "https://keys.example",
        "keys.example/path",
        "u@keys.example",
        "a b",
        "keys.example:x",
    ] {
        assert_eq!(parse_jwks_host(bad), None, "{bad}");
    }
}

#[tokio::test]
async fn a_static_file_source_is_read() {
    let k = signer(Algorithm::EdDSA, "file-key");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&k])).unwrap();
    let file_cache = |cfg: CacheConfig| {
        JwksCache::new(
            "https://issuer.example",
            KeySource::File(path.clone()),
            cfg,
            &Algorithm::DEFAULT_ACCEPTED,
        )
        .unwrap()
    };
    let c = file_cache(config());
    assert!(c.key_for("file-key").await.is_ok());
    // A file larger than the body limit, and a file gone: each its error,
    // and the keys read before stay.
    let mut small = config();
    small.max_body_bytes = 100;
    let e = file_cache(small).refresh().await.unwrap_err();
    assert!(
        matches!(&e, JwksError::FileTooLarge { max: 100, path: p } if *p == path),
        "{e:?}"
    );
    std::fs::remove_file(&path).unwrap();
    let e = c.refresh().await.unwrap_err();
    assert!(
        matches!(&e, JwksError::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert!(
        c.key_for("file-key").await.is_ok(),
        "the last good set stays"
    );
}

#[test]
fn plain_http_only_for_loopback_unless_allowed() {
    assert!(check_url("https://issuer.example/jwks", false).is_ok());
    assert!(check_url("http://127.0.0.1:8080/jwks", false).is_ok());
    assert!(check_url("http://[::1]:8080/jwks", false).is_ok());
    assert!(check_url("http://localhost/jwks", false).is_ok());
    let e = check_url("http://issuer.example/jwks", false).unwrap_err();
    assert_eq!(
        e,
        UrlError::PlainHttp {
            url: "http://issuer.example/jwks".into()
        }
    );
    assert!(e.to_string().contains("https"), "{e}");
    assert!(check_url("http://issuer.example/jwks", true).is_ok());
    for (url, scheme) in [
        ("ftp://issuer.example/jwks", "ftp"),
        ("file:///etc/passwd", "file"),
    ] {
        let e = check_url(url, true).unwrap_err();
        assert!(
            matches!(&e, UrlError::Scheme { scheme: s, .. } if s == scheme),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains(&format!("unsupported scheme {scheme:?}")),
            "{e}"
        );
    }
    let e = check_url("not a url", true).unwrap_err();
    assert!(matches!(e, UrlError::Malformed { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with("\"not a url\" is not a URL"),
        "{e}"
    );
    let Err(e) = JwksCache::new(
        "http://issuer.example",
        KeySource::Discovery,
        CacheConfig::default(),
        &Algorithm::DEFAULT_ACCEPTED,
    ) else {
        panic!("a plain http issuer must be refused");
    };
    assert!(
        matches!(
            e,
            JwksError::Fetch(FetchError::Url(UrlError::PlainHttp { .. }))
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("plain http to a non-loopback host"),
        "{e}"
    );
}
