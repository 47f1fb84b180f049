//! Gateway replicas that behave as one: rate-limit buckets and the DPoP
//! replay cache shared through Redis (`redis_url`).
//!
//! Every test starts its own `redis-server` on an ephemeral port (never the
//! machine's 127.0.0.1:6379), so it can stop, pause and restart it:
//! - the shared buckets give exactly the local limiter's answers, and their
//!   keys expire once full again;
//! - the replay cache answers "first use" once across handles, even to
//!   concurrent callers, and forgets a value when it expires; a DPoP proof
//!   accepted at replica A is a replay at replica B; with Redis down, proofs
//!   are refused (fail closed, the default) or checked by the replica's own
//!   cache (fail open);
//! - two `keyward gateway` processes with a limit of N per minute let N
//!   requests through in total, not 2N; with Redis stopped they keep serving
//!   under their own local limits and say so (metrics, `/readyz`); when it
//!   comes back they share again;
//! - a Redis that stops answering (SIGSTOP) costs a request at most
//!   `redis_timeout`, never a hang.
//!
//! Without `redis-server` installed the tests skip (one `SKIPPED` line);
//! with `KEYWARD_REQUIRE_REDIS=1`, as `.ci/run` sets, they fail instead.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{eventually, http, metric, Gateway, Kw};
use keyward_gateway::ratelimit::{Limiter, Rate, RouteLimiter};
use keyward_gateway::redis::{Redis, RedisConfig, RedisReplayCache, RedisUrl};
use keyward_jose::{sign_jwt, Algorithm, LocalSigner, PrivateKey, TokenSigner};
use keyward_verify::error::DpopRefusal;
use keyward_verify::{DpopPolicy, ProofTarget, ReplayCache, ReplayError};
use serde_json::json;

// ---- a redis-server of the test's own ----------------------------------------

struct RedisServer {
    port: u16,
    child: Option<Child>,
    paused: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts one, or `None` (the test skips) when redis-server is not
    /// installed and `KEYWARD_REQUIRE_REDIS` is not 1.
    fn start(what: &str) -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            assert!(
                std::env::var("KEYWARD_REQUIRE_REDIS").as_deref() != Ok("1"),
                "redis-server is not installed, but KEYWARD_REQUIRE_REDIS=1: {what} must run"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (no redis-server; apt-get install redis-server): {what}"
            );
            return None;
        }
        let mut s = RedisServer {
            port: free_port(),
            child: None,
            paused: false,
        };
        s.spawn();
        Some(s)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts redis-server on `port` (again), no persistence, and waits for PONG.
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pongs() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pongs(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Kills it (its data is gone: no persistence).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.signal("CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{sig}");
        }
    }

    /// Freezes it: connections stay open, nothing answers.
    fn pause(&mut self) {
        self.signal("STOP");
        self.paused = true;
    }

    fn resume(&mut self) {
        self.signal("CONT");
        self.paused = false;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(url: &str, prefix: &str, timeout: Duration) -> RedisConfig {
    RedisConfig {
        url: RedisUrl::parse(url).unwrap(),
        prefix: prefix.into(),
        timeout,
        replay_fail_closed: true,
    }
}

async fn connected(url: &str, prefix: &str) -> Arc<Redis> {
    let r = Redis::new(&config(url, prefix, Duration::from_millis(500))).unwrap();
    r.connect().await.unwrap();
    assert!(r.is_up());
    r
}

/// One raw command on a connection of its own.
async fn raw(url: &str, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c).await.unwrap()
}

// ---- the shared bucket is the local bucket ---------------------------------------

#[tokio::test]
async fn shared_buckets_answer_exactly_as_the_local_limiter() {
    let Some(server) = RedisServer::start("shared_buckets_answer_exactly_as_the_local_limiter")
    else {
        return;
    };
    let redis = connected(&server.url(), "t1:").await;
    // Rates whose interval is a whole number of microseconds, so both sides
    // compute exactly the same times.
    for (n, (rate, burst)) in [
        ("1/s", 3),
        ("10/s", 2),
        ("2/min", 1),
        ("100/s", 20),
        ("4/h", 5),
    ]
    .into_iter()
    .enumerate()
    {
        let r = Rate::parse(rate).unwrap();
        let local = Limiter::new(r, burst, 100);
        let shared = RouteLimiter::new(
            Limiter::new(r, burst, 100),
            Some(redis.clone()),
            &format!("route-{n}"),
            "subject",
        );
        assert!(shared.is_shared());
        let interval_us = (1e6 / r.per_sec) as i64;
        let (t0, w0) = (
            Instant::now(),
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        );
        // A fixed pseudo-random walk: bursts at one instant, steps around
        // the interval, long idle times, and clocks read a little late.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
        let mut t: i64 = 10 * interval_us;
        let (mut allowed, mut refused) = (0, 0);
        for i in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t += match x % 10 {
                0..=3 => 0,
                4..=7 => (x >> 8) as i64 % (2 * interval_us),
                8 => 5 * interval_us * burst as i64,
                _ => -((x >> 8) as i64 % (interval_us / 2 + 1)),
            };
            let t = t.max(0) as u64;
            let at = Duration::from_micros(t);
            let want = local.check("alice", t0 + at);
            let got = shared.check("alice", t0, w0 + at).await;
            assert_eq!(got, want, "{rate} burst {burst}, step {i} at {t} us");
            if want.is_ok() {
                allowed += 1;
            } else {
                refused += 1;
            }
        }
        assert!(allowed > 20 && refused > 20, "{rate}: {allowed}/{refused}");

        // The key lives until its bucket is full again, never longer than
        // burst intervals.
        let key = redis.bucket_key(&format!("subject:route-{n}"), "alice");
        let redis::Value::Int(pttl) = raw(&server.url(), &["PTTL", &key]).await else {
            panic!("PTTL");
        };
        let bound_ms = (burst as i64 * interval_us) / 1000 + 1;
        assert!(
            pttl <= bound_ms,
            "{rate}: key lives {pttl} ms > {bound_ms} ms"
        );
        assert!(
            pttl == -2 || pttl > 0,
            "{rate}: key without expiry ({pttl})"
        );
    }
    // Subjects never appear in keys: fixed-length digests under the prefix.
    let long = "x".repeat(100_000);
    let shared = RouteLimiter::new(
        Limiter::new(Rate::parse("1/s").unwrap(), 1, 10),
        Some(redis.clone()),
        "r",
        "ip",
    );
    assert!(shared
        .check(&long, Instant::now(), SystemTime::now())
        .await
        .is_ok());
    let redis::Value::Array(keys) = raw(&server.url(), &["KEYS", "*"]).await else {
        panic!("KEYS");
    };
    assert!(!keys.is_empty());
    for k in keys {
        let redis::Value::BulkString(k) = k else {
            panic!()
        };
        let k = String::from_utf8(k).unwrap();
        assert!(k.starts_with("t1:rl:") && k.len() < 48, "{k}");
        assert!(!k.contains("alice") && !k.contains("xxxx"), "{k}");
    }
}

// ---- the replay cache -------------------------------------------------------

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn a_value_is_fresh_once_across_handles() {
    let Some(mut server) = RedisServer::start("a_value_is_fresh_once_across_handles") else {
        return;
    };
    let url = server.url();
    let (a, b) = (
        connected(&url, "dep1:").await,
        connected(&url, "dep1:").await,
    );
    let other_deployment = connected(&url, "dep2:").await;
    let now = unix_now();
    assert!(a.first_use("jti-1", now + 60, now).await.unwrap());
    assert!(!b.first_use("jti-1", now + 60, now).await.unwrap());
    assert!(!a.first_use("jti-1", now + 60, now + 1).await.unwrap());
    assert!(b.first_use("jti-2", now + 60, now).await.unwrap());
    assert!(other_deployment
        .first_use("jti-1", now + 60, now)
        .await
        .unwrap());

    // Twenty callers at once on two handles: one first use.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            h.first_use("jti-race", now + 60, now).await.unwrap()
        }));
    }
    let mut firsts = 0;
    for t in tasks {
        firsts += usize::from(t.await.unwrap());
    }
    assert_eq!(firsts, 1);

    // Remembered until it expires, then forgotten.
    assert!(a.first_use("jti-short", now + 1, now).await.unwrap());
    assert!(!b.first_use("jti-short", now + 1, now).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(b.first_use("jti-short", now + 61, now + 1).await.unwrap());

    // Redis gone: an error, never a "first use".
    server.stop();
    let e = a.first_use("jti-3", now + 60, now).await.unwrap_err();
    assert!(["connection", "timeout", "down"].contains(&e.kind()), "{e}");
    assert!(!a.is_up());
    assert!(a.first_use("jti-4", now + 60, now).await.is_err());
}

/// A DPoP proof (RFC 9449) by `key` for `method` `uri` at `iat`.
fn proof(key: &LocalSigner, method: &str, uri: &str, iat: i64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk().to_value()});
    let claims = json!({
        "jti": keyward_jose::crypto::random_text::<12>(),
        "htm": method, "htu": uri, "iat": iat,
    });
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig))
}

/// A replica's DPoP policy with its replay cache in `redis`.
fn replica(redis: Arc<Redis>, fail_closed: bool) -> DpopPolicy {
    DpopPolicy {
        replay: Arc::new(RedisReplayCache::new(redis, fail_closed, 1000)),
        ..DpopPolicy::default()
    }
}

#[tokio::test]
async fn a_dpop_proof_used_at_one_replica_is_a_replay_at_the_other() {
    let what = "a_dpop_proof_used_at_one_replica_is_a_replay_at_the_other";
    let Some(mut server) = RedisServer::start(what) else {
        return;
    };
    let url = server.url();
    let (ra, rb) = (
        connected(&url, "dpop:").await,
        connected(&url, "dpop:").await,
    );
    let (a, b) = (replica(ra.clone(), true), replica(rb.clone(), true));
    let key = LocalSigner::new(PrivateKey::generate(Algorithm::ES256, None).unwrap(), None);
    let target = ProofTarget {
        method: "POST",
        uri: "https://auth.example/oauth2/token",
        token: None,
    };
    let now = unix_now();
    let p = proof(&key, "POST", target.uri, now);
    assert!(a.check(&p, &target, now).await.is_ok());
    assert_eq!(
        b.check(&p, &target, now + 1).await.unwrap_err(),
        DpopRefusal::Replayed
    );
    assert_eq!(
        a.check(&p, &target, now + 2).await.unwrap_err(),
        DpopRefusal::Replayed
    );
    // A fresh proof by the same key passes at B, once.
    let p2 = proof(&key, "POST", target.uri, now);
    assert!(b.check(&p2, &target, now).await.is_ok());
    assert_eq!(
        a.check(&p2, &target, now).await.unwrap_err(),
        DpopRefusal::Replayed
    );

    // Redis gone. Fail closed (the default): every proof refused, fresh or
    // not, and counted as such.
    server.stop();
    let fresh = proof(&key, "POST", target.uri, now);
    for _ in 0..2 {
        assert_eq!(
            a.check(&fresh, &target, now).await.unwrap_err(),
            DpopRefusal::ReplayCacheUnavailable
        );
    }
    let closed = RedisReplayCache::new(ra.clone(), true, 10);
    assert!(matches!(
        closed.first_use("k", now + 60, now).await,
        Err(ReplayError::Unavailable(_))
    ));
    // Fail open: the replica's own cache answers, so a proof is fresh once
    // there (a replay at the same replica is still refused).
    let open = replica(rb.clone(), false);
    assert!(open.check(&fresh, &target, now).await.is_ok());
    assert_eq!(
        open.check(&fresh, &target, now).await.unwrap_err(),
        DpopRefusal::Replayed
    );

    // Back: shared again, with what was stored before the restart gone
    // (no persistence), and new proofs shared at once.
    server.spawn();
    eventually(Duration::from_secs(15), "reconnected", || {
        let ra = ra.clone();
        async move { ra.connect().await.is_ok() }
    })
    .await;
    rb.connect().await.unwrap();
    let p3 = proof(&key, "POST", target.uri, now);
    assert!(a.check(&p3, &target, now).await.is_ok());
    assert_eq!(
        b.check(&p3, &target, now).await.unwrap_err(),
        DpopRefusal::Replayed
    );
}

// ---- two gateway replicas ------------------------------------------------------

/// An upstream that answers 200 and counts requests.
async fn upstream(hits: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            "ok"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Issuer {
    signer: LocalSigner,
    dir: tempfile::TempDir,
}

impl Issuer {
    fn new() -> Issuer {
        let signer = LocalSigner::new(
            PrivateKey::generate(Algorithm::ES256, None).unwrap(),
            Some("k1".into()),
        );
        let dir = tempfile::tempdir().unwrap();
        let jwks = json!({ "keys": [signer.public_jwk().to_value()] });
        std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
        Issuer { signer, dir }
    }

    fn token(&self, sub: &str) -> String {
        let now = unix_now();
        let claims = json!({
            "iss": "https://issuer.test", "sub": sub, "aud": "api://orders",
            "exp": now + 600, "iat": now, "client_id": "c1",
        });
        sign_jwt(&self.signer, Some("at+jwt"), &claims).unwrap()
    }

    /// A gateway config: one limited route, one anonymous route.
    fn gateway(&self, upstream: &str, redis: &str, prefix: &str, timeout: &str) -> String {
        format!(
            r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:{admin}"
redis_url = "{redis}"
redis_prefix = "{prefix}"
redis_timeout = "{timeout}"

[[issuer]]
issuer = "https://issuer.test"
audiences = ["api://orders"]
jwks_file = "{jwks}"

[[route]]
path = "/orders/{{id}}"
upstream = "{upstream}"
rate_limit = {{ per_subject = "10/m", burst = 10 }}

[[route]]
path = "/health"
upstream = "{upstream}"
anonymous = true
"#,
            admin = free_port(),
            jwks = self.dir.path().join("jwks.json").display(),
        )
    }
}

async fn status(gw: &Gateway, path: &str, token: &str) -> u16 {
    http()
        .get(format!("http://{}{path}", gw.addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn metrics(gw: &Gateway) -> String {
    let url = format!("http://{}/metrics", gw.admin);
    http().get(url).send().await.unwrap().text().await.unwrap()
}

async fn readyz(gw: &Gateway) -> (u16, String) {
    let r = http()
        .get(format!("http://{}/readyz", gw.admin))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Sends `n` requests for `sub`, alternating between `gws`; returns how
/// many got 200, after checking every other one got 429.
async fn burst(gws: &[&Gateway], sub_token: &str, n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        match status(gws[i % gws.len()], "/orders/1", sub_token).await {
            200 => ok += 1,
            429 => {}
            other => panic!("request {i}: {other}"),
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_limit_and_fall_back_to_their_own_while_redis_is_away() {
    let what = "two_replicas_share_one_limit_and_fall_back_to_their_own_while_redis_is_away";
    let Some(mut server) = RedisServer::start(what) else {
        return;
    };
    let hits = Arc::new(AtomicUsize::new(0));
    let up = upstream(hits.clone()).await;
    let issuer = Issuer::new();
    // A generous timeout: this test is about sharing, not speed, and debug
    // builds on a loaded machine are slow.
    let (kw_a, kw_b) = (Kw::new(), Kw::new());
    let a = kw_a.start_gateway(&issuer.gateway(&up, &server.url(), "it:", "300ms"));
    let b = kw_b.start_gateway(&issuer.gateway(&up, &server.url(), "it:", "300ms"));
    let alice = issuer.token("alice");
    for gw in [&a, &b] {
        let (code, body) = readyz(gw).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.starts_with("ready\nredis: up"), "{body}");
        assert_eq!(
            metric(&metrics(gw).await, "keyward_gate_redis_up", &[]),
            1.0
        );
    }

    // 10 per minute, burst 10: 30 requests through both replicas, 10 pass.
    // (One token comes back every 6 s; the 30 take far less.)
    let t = Instant::now();
    assert_eq!(
        burst(&[&a, &b], &alice, 30).await,
        10,
        "shared: N in total, not 2N"
    );
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert_eq!(hits.load(Ordering::SeqCst), 10);

    // Redis gone: both keep serving, each under its own limit of 10 (its
    // local buckets are full: they were never used).
    server.stop();
    let t = Instant::now();
    assert_eq!(burst(&[&a], &alice, 15).await, 10, "replica A, local limit");
    assert_eq!(burst(&[&b], &alice, 15).await, 10, "replica B, local limit");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Nothing else changed: other routes and other callers are served.
    for gw in [&a, &b] {
        assert_eq!(status(gw, "/health", "").await, 200);
        assert_eq!(status(gw, "/orders/2", &issuer.token("bob")).await, 200);
        assert_eq!(status(gw, "/orders/2", "not-a-token").await, 401);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 10 + 20 + 4);
    // ... and they say so.
    for gw in [&a, &b] {
        let m = metrics(gw).await;
        assert_eq!(metric(&m, "keyward_gate_redis_up", &[]), 0.0, "{m}");
        assert!(
            metric(&m, "keyward_gate_redis_errors_total", &[]) >= 1.0,
            "{m}"
        );
        assert!(
            metric(
                &m,
                "keyward_gate_rate_limit_local_total",
                &[("kind", "subject")]
            ) >= 16.0,
            "{m}"
        );
        let (code, body) = readyz(gw).await;
        assert_eq!(code, 200, "serving with local limits is ready: {body}");
        assert!(body.contains("redis: down for"), "{body}");
        assert!(body.contains("reconnecting"), "{body}");
    }

    // Redis back (empty): both reconnect on their own, and share again.
    // Their local buckets for alice are empty, so only the shared bucket
    // (full again) can let anything through: 10 in total.
    server.spawn();
    for gw in [&a, &b] {
        eventually(Duration::from_secs(15), "reconnected", || async {
            metric(&metrics(gw).await, "keyward_gate_redis_up", &[]) == 1.0
        })
        .await;
        assert!(readyz(gw).await.1.contains("redis: up"));
    }
    assert_eq!(burst(&[&a, &b], &alice, 30).await, 10, "shared again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_costs_a_request_at_most_the_timeout() {
    let what = "a_redis_that_stops_answering_costs_a_request_at_most_the_timeout";
    let Some(mut server) = RedisServer::start(what) else {
        return;
    };
    let hits = Arc::new(AtomicUsize::new(0));
    let up = upstream(hits.clone()).await;
    let issuer = Issuer::new();
    let kw = Kw::new();
    let gw = kw.start_gateway(&issuer.gateway(&up, &server.url(), "slow:", "200ms"));
    let alice = issuer.token("alice");
    assert_eq!(status(&gw, "/orders/1", &alice).await, 200);

    server.pause();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(status(&gw, "/orders/1", &alice).await, 200);
        slowest = slowest.max(t.elapsed());
    }
    // The first waits out the 200 ms timeout; the others skip Redis while
    // it is marked down.
    assert!(slowest < Duration::from_millis(1500), "{slowest:?}");
    let m = metrics(&gw).await;
    assert!(
        metric(
            &m,
            "keyward_gate_redis_errors_total",
            &[("kind", "timeout")]
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "keyward_gate_redis_up", &[]), 0.0, "{m}");
    let (code, body) = readyz(&gw).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("did not answer within"), "{body}");

    server.resume();
    eventually(Duration::from_secs(15), "back up after SIGCONT", || async {
        metric(&metrics(&gw).await, "keyward_gate_redis_up", &[]) == 1.0
    })
    .await;
    assert_eq!(status(&gw, "/orders/1", &alice).await, 200);
}
