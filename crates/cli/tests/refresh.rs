//! Refresh-token rotation against the real `keyward serve`: reuse detection
//! revokes the family *and* its access tokens (introspection, the
//! revocation feed), the grace window covers a lost response (a crash) but
//! never lets a second holder of the family win silently, and a `kill -9`
//! in the middle of refreshes logs nobody out with the default settings.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{get, metric, post_form, Auth, Kw, PgSchema, Resp, Server};
use serde_json::Value;

/// A client_secret_basic client allowed both grants: (client_id, secret).
fn secret_client(kw: &Kw, name: &str) -> (String, String) {
    let v = kw
        .run(&[
            "clients",
            "create",
            "--env",
            "default",
            "--json",
            "--name",
            name,
            "--scopes",
            "orders.read",
        ])
        .ok()
        .json();
    (
        v["client_id"].as_str().unwrap().to_string(),
        v["client_secret"].as_str().unwrap().to_string(),
    )
}

/// A token pair for user alice, minted by the operator (`token issue`).
fn mint(kw: &Kw, client: &str) -> Pair {
    let v = kw
        .run(&[
            "token", "issue", "--env", "default", "--sub", "alice", "--client", client, "--json",
        ])
        .ok()
        .json();
    Pair::from(&v)
}

/// An access token and the refresh token issued with it.
#[derive(Clone, Debug)]
struct Pair {
    access: String,
    refresh: String,
}

impl Pair {
    fn from(v: &Value) -> Pair {
        Pair {
            access: v["access_token"].as_str().expect("access_token").into(),
            refresh: v["refresh_token"].as_str().expect("refresh_token").into(),
        }
    }

    /// The access token's `jti` (read without verification: the server
    /// tests verify tokens; here only the id matters).
    fn jti(&self) -> String {
        let payload = self.access.split('.').nth(1).expect("a JWS");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let claims: Value = serde_json::from_slice(&bytes).unwrap();
        claims["jti"].as_str().unwrap().to_string()
    }
}

async fn refresh(s: &Server, auth: Auth<'_>, token: &str) -> Resp {
    post_form(
        &s.url("/oauth2/token"),
        auth,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

/// A refresh that must succeed.
async fn refreshed(s: &Server, auth: Auth<'_>, token: &str) -> Pair {
    Pair::from(&refresh(s, auth, token).await.ok_json())
}

async fn refused(s: &Server, auth: Auth<'_>, token: &str) {
    refresh(s, auth, token)
        .await
        .assert_oauth_error(400, "invalid_grant");
}

async fn active(s: &Server, auth: Auth<'_>, token: &str) -> bool {
    let r = post_form(&s.url("/oauth2/introspect"), auth, &[("token", token)]).await;
    r.ok_json()["active"]
        .as_bool()
        .expect("active is a boolean")
}

/// The jtis on the revocation feed. (A set: tokens revoked together are
/// listed by issue time, and these were issued within one second.)
async fn feed(s: &Server) -> BTreeSet<String> {
    let v = get(&s.url("/revocations?since=0")).await.ok_json();
    v["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["jti"].as_str().unwrap().to_string())
        .collect()
}

fn jtis(pairs: &[&Pair]) -> BTreeSet<String> {
    pairs.iter().map(|p| p.jti()).collect()
}

fn audit(kw: &Kw, action: &str) -> Vec<Value> {
    let all = kw
        .run(&["audit", "list", "--json", "--limit", "100000"])
        .ok()
        .json();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action)
        .cloned()
        .collect()
}

async fn counter(s: &Server, name: &str) -> f64 {
    let m = get(&s.url("/metrics")).await.text();
    metric(&m, name, &[("env", "default")])
}

const REUSE: &str = "keyward_refresh_reuse_detected_total";
const REISSUES: &str = "keyward_refresh_grace_reissues_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_revokes_the_family_and_its_access_tokens() {
    let kw = Kw::new();
    kw.init();
    let (a, asec) = secret_client(&kw, "app");
    let auth = Auth::Basic(&a, &asec);
    let s = kw.serve();
    let p1 = mint(&kw, &a);
    let p2 = refreshed(&s, auth, &p1.refresh).await;
    let p3 = refreshed(&s, auth, &p2.refresh).await;
    // Beside it: another grant of the same user and client, and a
    // client_credentials token; neither is part of the family.
    let other = mint(&kw, &a);
    let cc = post_form(
        &s.url("/oauth2/token"),
        auth,
        &[("grant_type", "client_credentials")],
    )
    .await
    .ok_json();
    let cc = cc["access_token"].as_str().unwrap().to_string();
    for p in [&p1, &p2, &p3] {
        assert!(active(&s, auth, &p.access).await);
    }
    assert!(feed(&s).await.is_empty());

    // R1 again after R2 was used: reuse, although well within the grace
    // window (its successor is not unused).
    refused(&s, auth, &p1.refresh).await;
    let reuse = audit(&kw, "refresh.reuse_detected");
    assert_eq!(reuse.len(), 1, "{reuse:#?}");
    assert_eq!(reuse[0]["actor"], format!("client:{a}"));
    assert_eq!(reuse[0]["subject"], "alice");
    assert_eq!(reuse[0]["detail"]["revoked"], 3);
    assert_eq!(reuse[0]["detail"]["access_tokens_revoked"], 3);
    assert_eq!(reuse[0]["detail"]["within_grace"], true);
    assert_eq!(counter(&s, REUSE).await, 1.0);

    // Every token of the family is dead: refresh tokens refused, access
    // tokens inactive at introspection and on the feed for the gates.
    refused(&s, auth, &p3.refresh).await;
    assert!(!active(&s, auth, &p3.refresh).await);
    for p in [&p1, &p2, &p3] {
        assert!(!active(&s, auth, &p.access).await, "{p:?}");
    }
    assert_eq!(feed(&s).await, jtis(&[&p1, &p2, &p3]));
    // The other grant and the client_credentials token are untouched.
    assert!(active(&s, auth, &other.access).await);
    assert!(active(&s, auth, &cc).await);
    refreshed(&s, auth, &other.refresh).await;
    assert_eq!(audit(&kw, "refresh.reuse_detected").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thief_inside_the_grace_window_is_caught_when_the_client_returns() {
    let kw = Kw::new();
    kw.init();
    let (a, asec) = secret_client(&kw, "app");
    let auth = Auth::Basic(&a, &asec);
    let s = kw.serve();
    let p1 = mint(&kw, &a);
    // The client refreshes and keeps R2; a thief holding R1 replays it
    // within the window, before the client has used R2: it gets a token.
    let client = refreshed(&s, auth, &p1.refresh).await;
    let thief = refreshed(&s, auth, &p1.refresh).await;
    assert_eq!(audit(&kw, "refresh.grace_reissue").len(), 1);
    assert!(audit(&kw, "refresh.reuse_detected").is_empty());
    assert_eq!(counter(&s, REISSUES).await, 1.0);
    // R2 was superseded: its access token is revoked at once, so the real
    // client comes back soon.
    assert!(!active(&s, auth, &client.access).await);
    assert_eq!(feed(&s).await, jtis(&[&client]));
    assert!(active(&s, auth, &thief.access).await);
    assert!(!active(&s, auth, &client.refresh).await);
    // The thief keeps going.
    let thief2 = refreshed(&s, auth, &thief.refresh).await;

    // The client presents R2: reuse. The whole family goes, the thief's
    // tokens included.
    refused(&s, auth, &client.refresh).await;
    let reuse = audit(&kw, "refresh.reuse_detected");
    assert_eq!(reuse.len(), 1, "{reuse:#?}");
    assert_eq!(counter(&s, REUSE).await, 1.0);
    refused(&s, auth, &thief2.refresh).await;
    for p in [&p1, &client, &thief, &thief2] {
        assert!(!active(&s, auth, &p.access).await, "{p:?}");
    }
    assert_eq!(feed(&s).await, jtis(&[&p1, &client, &thief, &thief2]));

    // The other order: the client retries R1 (its response lost) after the
    // thief has already used what R1 was exchanged for: reuse.
    let q1 = mint(&kw, &a);
    let stolen = refreshed(&s, auth, &q1.refresh).await;
    let stolen2 = refreshed(&s, auth, &stolen.refresh).await;
    refused(&s, auth, &q1.refresh).await;
    assert_eq!(audit(&kw, "refresh.reuse_detected").len(), 2);
    assert!(!active(&s, auth, &stolen2.access).await);
    refused(&s, auth, &stolen2.refresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_covers_lost_responses_inside_the_window_only() {
    let kw = Kw::new();
    kw.init();
    let (a, asec) = secret_client(&kw, "app");
    let auth = Auth::Basic(&a, &asec);
    let s = kw.start_server(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("KEYWARD_REFRESH_GRACE", "2s")],
    );
    let p1 = mint(&kw, &a);
    // The responses carrying R2, then R3, were lost: R1 again each time.
    let lost = refreshed(&s, auth, &p1.refresh).await;
    let lost_again = refreshed(&s, auth, &p1.refresh).await;
    let p4 = refreshed(&s, auth, &p1.refresh).await;
    let p5 = refreshed(&s, auth, &p4.refresh).await;
    assert!(active(&s, auth, &p5.access).await);
    assert!(active(&s, auth, &p1.access).await);
    assert!(audit(&kw, "refresh.reuse_detected").is_empty());
    assert_eq!(audit(&kw, "refresh.grace_reissue").len(), 2);
    // The lost responses' access tokens were never delivered: revoked.
    assert_eq!(feed(&s).await, jtis(&[&lost, &lost_again]));

    // Past the window, R (its successor unused) is reuse.
    let q1 = mint(&kw, &a);
    let q2 = refreshed(&s, auth, &q1.refresh).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    refused(&s, auth, &q1.refresh).await;
    let reuse = audit(&kw, "refresh.reuse_detected");
    assert_eq!(reuse.len(), 1, "{reuse:#?}");
    assert_eq!(reuse[0]["detail"]["within_grace"], false);
    refused(&s, auth, &q2.refresh).await;
    assert!(!active(&s, auth, &q2.access).await);
    // The first family lives on.
    refreshed(&s, auth, &p5.refresh).await;
    // The signing latency is recorded per algorithm and per key store.
    let m = get(&s.url("/metrics")).await.text();
    assert!(
        m.contains("keyward_signing_seconds_count{alg=\"ES256\",store=\"local\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_refresh_token_or_deleting_its_client_revokes_its_access_tokens() {
    let kw = Kw::new();
    kw.init();
    let (a, asec) = secret_client(&kw, "app");
    let (b, bsec) = secret_client(&kw, "doomed");
    let s = kw.serve();
    let auth = Auth::Basic(&a, &asec);
    let p1 = mint(&kw, &a);
    let p2 = refreshed(&s, auth, &p1.refresh).await;
    // RFC 7009 §2.1: revoking a refresh token invalidates the access tokens
    // of the same grant too.
    let r = post_form(&s.url("/oauth2/revoke"), auth, &[("token", &p2.refresh)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!active(&s, auth, &p1.access).await);
    assert!(!active(&s, auth, &p2.access).await);
    assert_eq!(feed(&s).await, jtis(&[&p1, &p2]));
    assert!(audit(&kw, "refresh.reuse_detected").is_empty());

    let b1 = mint(&kw, &b);
    let b2 = refreshed(&s, Auth::Basic(&b, &bsec), &b1.refresh).await;
    assert!(active(&s, auth, &b2.access).await);
    kw.run(&["clients", "delete", "--env", "default", &b]).ok();
    assert!(!active(&s, auth, &b1.access).await);
    assert!(!active(&s, auth, &b2.access).await);
    assert_eq!(feed(&s).await, jtis(&[&p1, &p2, &b1, &b2]));
    let deleted = audit(&kw, "client.delete");
    assert_eq!(deleted[0]["detail"]["access_tokens_revoked"], 2);
}

// A crash in the middle of refreshes ------------------------------------------

const FAMILIES: usize = 6;
/// At most this many crashes...
const MAX_CRASHES: usize = 12;
/// ...stopping once this many responses were lost in them (a crash between
/// a refresh's commit and its response: what used to revoke families)...
const LOST_ENOUGH: usize = 3;
/// ...but while none was lost yet, crashing on past `MAX_CRASHES` until this
/// much time has passed: a run that never lost a response never tried the
/// grace path, and proves nothing.
const CRASH_BUDGET: Duration = Duration::from_secs(25);

/// One refresh family's client: refreshes in a loop with the last refresh
/// token it *received*; when a request fails without an answer (the server
/// died) it retries with the same token, as a real client would.
struct Family {
    done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<String, String>>,
}

fn spawn_family(
    addr: Arc<RwLock<String>>,
    stop: Arc<AtomicBool>,
    id: String,
    secret: String,
    first: String,
) -> Family {
    let done = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn({
        let done = done.clone();
        async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .no_proxy()
                .build()
                .unwrap();
            let mut token = first;
            while !stop.load(Ordering::Relaxed) {
                let url = format!("http://{}/oauth2/token", addr.read().unwrap());
                let sent = http
                    .post(url)
                    .basic_auth(&id, Some(&secret))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
                    .send()
                    .await;
                let answer = match sent {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        r.bytes().await.map(|b| (status, b))
                    }
                    Err(e) => Err(e),
                };
                match answer {
                    Ok((200, body)) => {
                        let v: Value = serde_json::from_slice(&body).unwrap();
                        token = v["refresh_token"].as_str().unwrap().to_string();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, body)) if status < 500 => {
                        let e = format!("{status} {}", String::from_utf8_lossy(&body));
                        eprintln!("a family was refused: {e}");
                        return Err(e);
                    }
                    // No answer, or the server is starting: the same token again.
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            Ok(token)
        }
    });
    Family { done, task }
}

fn total(families: &[Family]) -> u64 {
    families
        .iter()
        .map(|f| f.done.load(Ordering::Relaxed))
        .sum()
}

/// Waits until every family has refreshed `more` times since `since`.
async fn each_refreshes(families: &[Family], since: &[u64], more: u64, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        let all = families
            .iter()
            .zip(since)
            .all(|(f, s)| f.done.load(Ordering::Relaxed) >= s + more);
        if all || families.iter().any(|f| f.task.is_finished()) {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// 6 families refreshing concurrently; the server is killed (`kill -9`)
/// mid-flight and restarted on the same store, until `LOST_ENOUGH`
/// responses were lost in the crashes (or `MAX_CRASHES` crashes, once at
/// least one was lost; or `CRASH_BUDGET`). Returns the number of lost
/// responses retried (grace reissues).
async fn refresh_through_crashes(kw: &Kw) -> usize {
    kw.init();
    let (id, secret) = secret_client(kw, "app");
    // The default configuration (an empty variable is no override).
    let serve = || {
        kw.start_server(
            &["serve", "--listen", "127.0.0.1:0"],
            &[("KEYWARD_REFRESH_GRACE", "")],
        )
    };
    let firsts: Vec<String> = (0..FAMILIES).map(|_| mint(kw, &id).refresh).collect();
    let mut server = serve();
    let addr = Arc::new(RwLock::new(server.addr.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let families: Vec<Family> = firsts
        .into_iter()
        .map(|t| spawn_family(addr.clone(), stop.clone(), id.clone(), secret.clone(), t))
        .collect();
    let started = Instant::now();
    let mut crashes = 0;
    let mut lost = 0;
    while lost < LOST_ENOUGH
        && (crashes < MAX_CRASHES || lost == 0)
        && started.elapsed() < CRASH_BUDGET
    {
        let round = crashes;
        // Let every family get going on this server, then kill it mid-flight.
        let since: Vec<u64> = families
            .iter()
            .map(|f| f.done.load(Ordering::Relaxed))
            .collect();
        assert!(
            each_refreshes(&families, &since, 5, Duration::from_secs(10)).await,
            "round {round}: the families stopped refreshing\n{}",
            server.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20 + (37 * round as u64) % 150)).await;
        server.kill_hard();
        crashes += 1;
        // While it is down, count the responses lost so far (clients keep
        // retrying meanwhile).
        lost = audit(kw, "refresh.grace_reissue").len();
        server = serve();
        *addr.write().unwrap() = server.addr.clone();
    }
    // After the last restart every client keeps refreshing.
    let since: Vec<u64> = families
        .iter()
        .map(|f| f.done.load(Ordering::Relaxed))
        .collect();
    let kept_going = each_refreshes(&families, &since, 5, Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let refreshes = total(&families);
    let mut last = Vec::new();
    for (i, f) in families.into_iter().enumerate() {
        match f.task.await.unwrap() {
            Ok(token) => last.push(token),
            Err(e) => panic!("family {i} was refused after a crash: {e}"),
        }
    }
    assert!(kept_going, "not every client could keep refreshing");
    assert!(
        audit(kw, "refresh.reuse_detected").is_empty(),
        "a crash was taken for token theft: {:#?}",
        audit(kw, "refresh.reuse_detected")
    );
    // Each client's last token is its family's live one.
    for token in &last {
        refreshed(&server, Auth::Basic(&id, &secret), token).await;
    }
    let reissues = audit(kw, "refresh.grace_reissue").len();
    eprintln!(
        "{refreshes} refreshes through {crashes} crashes in {:?}; {reissues} lost responses retried",
        started.elapsed()
    );
    reissues
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_refresh_revokes_no_family_on_sqlite() {
    let kw = Kw::new();
    let reissues = tokio::time::timeout(Duration::from_secs(60), refresh_through_crashes(&kw))
        .await
        .expect("bounded in time");
    assert!(reissues > 0, "no crash lost a response: grace never tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_refresh_revokes_no_family_on_postgres() {
    let Some(schema) = PgSchema::new("kw_crash") else {
        return;
    };
    let mut kw = Kw::new();
    kw.env.push(("KEYWARD_DATABASE_URL".into(), schema.url()));
    let reissues = tokio::time::timeout(Duration::from_secs(60), refresh_through_crashes(&kw))
        .await
        .expect("bounded in time");
    assert!(reissues > 0, "no crash lost a response: grace never tried");
}
