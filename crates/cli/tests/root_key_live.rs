//! Root-key rotation under running servers (issue 13, item 2), and the
//! "root key leaked" runbook of docs/incidents.md run as written against two
//! `serve` replicas on one store (PostgreSQL when `KEYWARD_TEST_DATABASE_URL`
//! is set, a shared SQLite data directory always), both reading the root key
//! from one `KEYWARD_ROOT_KEY_FILE`:
//!
//! 1. `keyward root-key rotate`;
//! 2. `keyward keys rotate --env default --immediate` (and the same through
//!    the admin API on one replica);
//! 3. `keyward keys revoke OLD_KID`;
//!
//! with no restart: both replicas publish and sign with the new keys, drop the
//! revoked one, honour a client secret rotated afterwards, and stay ready.
//!
//! A replica whose root key comes from `KEYWARD_ROOT_KEY` (which cannot change
//! in a running process) keeps signing with its open key but reports itself
//! not ready, with a failure metric, until it is restarted with the new key.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{eventually, get, http, metric, post_form, send, Auth, Kw, PgSchema, Server};
use keyward_jose::seal::RootKey;
use serde_json::{json, Value};

/// How long a change may take to reach every replica (reload interval 1 s).
const PROPAGATION: Duration = Duration::from_secs(5);

fn kid_of(token: &str) -> String {
    let head = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The kid of a token from `server` with client credentials; `None` when refused.
async fn token_kid(server: &Server, id: &str, secret: &str) -> Option<String> {
    let r = post_form(
        &server.url("/oauth2/token"),
        Auth::Basic(id, secret),
        &[("grant_type", "client_credentials")],
    )
    .await;
    (r.status == 200).then(|| kid_of(r.json()["access_token"].as_str().unwrap()))
}

async fn jwks_kids(server: &Server) -> Vec<String> {
    get(&server.url("/.well-known/jwks.json")).await.ok_json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

async fn assert_ready(servers: &[&Server], when: &str) {
    for (i, s) in servers.iter().enumerate() {
        let r = get(&s.url("/readyz")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "ready"),
            "replica {i} {when}\nlog: {}",
            s.stderr_text()
        );
    }
}

/// Both replicas publish `kid` and sign with it.
async fn both_sign_with(servers: &[&Server], id: &str, secret: &str, kid: &str, what: &str) {
    for (i, s) in servers.iter().enumerate() {
        let took = eventually(
            PROPAGATION,
            &format!("replica {i} signs with {what}"),
            || async {
                jwks_kids(s).await.iter().any(|k| k == kid)
                    && token_kid(s, id, secret).await.as_deref() == Some(kid)
            },
        )
        .await;
        eprintln!("replica {i} signs with {what} after {took:?}");
    }
}

fn new_client(kw: &Kw) -> (String, String) {
    let c = kw
        .run(&[
            "clients", "create", "--env", "default", "--name", "app", "--scopes", "a", "--json",
        ])
        .ok()
        .json();
    (
        c["client_id"].as_str().unwrap().to_string(),
        c["client_secret"].as_str().unwrap().to_string(),
    )
}

/// `kw` with the root key in a file named by `KEYWARD_ROOT_KEY_FILE`,
/// initialized (ES256).
fn shared_key_file_store(kw: &mut Kw) {
    let file = kw.dir.path().join("secrets").join("root.key");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        format!("{}\n", &*RootKey::generate().to_base64().unwrap()),
    )
    .unwrap();
    kw.env
        .push(("KEYWARD_ROOT_KEY_FILE".into(), file.display().to_string()));
    kw.init();
}

async fn runbook_on_two_replicas(kw: &Kw) {
    let (id, secret) = new_client(kw);
    let admin = kw.run(&["admin-token", "create", "--json"]).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let a = kw.serve();
    let b = kw.serve();
    let replicas = [&a, &b];
    let first = token_kid(&a, &id, &secret).await.expect("a token");
    assert_eq!(
        token_kid(&b, &id, &secret).await.as_deref(),
        Some(first.as_str())
    );
    assert_ready(&replicas, "before the rotation").await;
    // Both replicas' readiness, polled every 100 ms for the whole runbook.
    let watch = {
        let urls = [a.url("/readyz"), b.url("/readyz")];
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut polls, mut bad) = (0usize, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, u) in urls.iter().enumerate() {
                    let r = get(u).await;
                    polls += 1;
                    if r.status != 200 {
                        bad.push(format!("replica {i}: {} {}", r.status, r.text()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (polls, bad)
        });
        (stop, task)
    };

    // 1. The root key leaked: rotate it. The servers are not restarted.
    let out = kw.run(&["root-key", "rotate", "--json"]).ok().json();
    let new_root = out["root_key_id"].as_str().unwrap().to_string();
    // Both replicas pick the new root key up from the shared file.
    for (i, s) in replicas.iter().enumerate() {
        eventually(
            PROPAGATION,
            &format!("replica {i} switches root key"),
            || async {
                s.stderr_text()
                    .contains("switched to the store's new root key")
            },
        )
        .await;
    }
    assert_ready(&replicas, "after root-key rotate").await;

    // 2. Rotate the environment at once, through the CLI...
    let cli_kid = kw
        .run(&[
            "keys",
            "rotate",
            "--env",
            "default",
            "--immediate",
            "--json",
        ])
        .ok()
        .json()["kid"]
        .as_str()
        .unwrap()
        .to_string();
    both_sign_with(&replicas, &id, &secret, &cli_kid, "the CLI-rotated key").await;
    assert_ready(&replicas, "after keys rotate --immediate").await;
    // ...and through the admin API of one replica (it seals under the new root key).
    let r = send(
        http()
            .post(b.url("/admin/v1/envs/default/keys/rotate"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(json!({"immediate": true}).to_string()),
    )
    .await;
    assert_eq!(
        r.status,
        201,
        "admin rotate: {}\nlog: {}",
        r.text(),
        b.stderr_text()
    );
    let api_kid = r.json()["kid"].as_str().unwrap().to_string();
    both_sign_with(&replicas, &id, &secret, &api_kid, "the API-rotated key").await;

    // 3. Revoke the key that signed before the incident: unpublished everywhere.
    kw.run(&["keys", "revoke", &first, "--reason", "root key leaked"])
        .ok();
    for (i, s) in replicas.iter().enumerate() {
        eventually(
            PROPAGATION,
            &format!("replica {i} drops the revoked key"),
            || async { !jwks_kids(s).await.contains(&first) },
        )
        .await;
    }

    // A client secret rotated after the root-key rotation is honoured by both.
    let rotated = kw
        .run(&[
            "clients",
            "rotate-secret",
            "--env",
            "default",
            &id,
            "--json",
        ])
        .ok()
        .json();
    let new_secret = rotated["client_secret"].as_str().unwrap().to_string();
    for (i, s) in replicas.iter().enumerate() {
        eventually(
            PROPAGATION,
            &format!("replica {i} takes the new secret"),
            || async {
                token_kid(s, &id, &new_secret).await.as_deref() == Some(api_kid.as_str())
                    && token_kid(s, &id, &secret).await.is_none()
            },
        )
        .await;
    }

    assert_ready(&replicas, "at the end of the runbook").await;
    watch.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let (polls, bad) = watch.1.await.unwrap();
    assert!(
        bad.is_empty(),
        "/readyz was not 200 {} times of {polls}: {bad:?}",
        bad.len()
    );
    assert!(polls > 20, "only {polls} readiness polls");
    for (i, s) in replicas.iter().enumerate() {
        let m = get(&s.url("/metrics")).await.text();
        assert_eq!(
            metric(&m, "keyward_reload_failures_total", &[]),
            0.0,
            "replica {i}: {m}"
        );
        assert_eq!(metric(&m, "keyward_reload_ok", &[]), 1.0, "replica {i}");
        assert_eq!(
            metric(&m, "keyward_root_key_stale", &[]),
            0.0,
            "replica {i}"
        );
        let log = s.stderr_text();
        assert!(
            log.contains(&new_root),
            "replica {i} names the new root key: {log}"
        );
        assert!(!log.contains("reload failed"), "replica {i}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_key_leaked_runbook_on_two_replicas_sharing_a_data_dir() {
    let mut kw = Kw::new();
    shared_key_file_store(&mut kw);
    runbook_on_two_replicas(&kw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_key_leaked_runbook_on_two_replicas_on_postgres() {
    let Some(schema) = PgSchema::new("kw_rootkey") else {
        return;
    };
    let mut kw = Kw::new();
    kw.env.push(("KEYWARD_DATABASE_URL".into(), schema.url()));
    shared_key_file_store(&mut kw);
    runbook_on_two_replicas(&kw).await;
    assert!(!kw.data_dir().join("keyward.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_the_root_key_in_its_environment_reports_until_restarted() {
    let mut kw = Kw::new();
    let old = RootKey::generate();
    let old_text = old.to_base64().unwrap().to_string();
    kw.env.push(("KEYWARD_ROOT_KEY".into(), old_text.clone()));
    kw.init();
    let (id, secret) = new_client(&kw);
    let mut server = kw.serve();
    let first = token_kid(&server, &id, &secret).await.expect("a token");
    assert_ready(&[&server], "at start").await;

    // Rotate the root key into a file, and make the next key with it.
    let out = kw.dir.path().join("new.key");
    let out_s = out.display().to_string();
    let r = kw
        .run(&["root-key", "rotate", "--out", &out_s, "--json"])
        .ok()
        .json();
    let new_id = r["root_key_id"].as_str().unwrap().to_string();
    let new_text = std::fs::read_to_string(&out).unwrap().trim().to_string();
    let next = kw
        .run_with(
            &["keys", "rotate", "--env", "default", "--json"],
            &[("KEYWARD_ROOT_KEY", &new_text)],
        )
        .ok()
        .json()["kid"]
        .as_str()
        .unwrap()
        .to_string();

    // The server cannot open the new key: not ready, with a reason and a metric...
    eventually(PROPAGATION, "readyz turns 503", || async {
        get(&server.url("/readyz")).await.status == 503
    })
    .await;
    let body = get(&server.url("/readyz")).await.text();
    assert!(body.starts_with("reload failing (root_key)"), "{body}");
    assert!(body.contains(&next) && body.contains(&new_id), "{body}");
    assert!(
        !body.contains(&new_text) && !body.contains(&old_text),
        "{body}"
    );
    let m = get(&server.url("/metrics")).await.text();
    assert!(
        metric(
            &m,
            "keyward_reload_failures_total",
            &[("reason", "root_key")]
        ) > 0.0,
        "{m}"
    );
    assert_eq!(metric(&m, "keyward_reload_ok", &[]), 0.0);
    assert_eq!(metric(&m, "keyward_root_key_stale", &[]), 1.0);
    // ...while it keeps signing with the key it holds open, and publishes the next.
    assert_eq!(
        token_kid(&server, &id, &secret).await.as_deref(),
        Some(first.as_str())
    );
    assert!(jwks_kids(&server).await.contains(&next));
    // The failure is logged once, not every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let log = server.stderr_text();
    assert_eq!(log.matches("reload failed").count(), 1, "{log}");
    assert!(log.contains(&new_id), "{log}");
    assert!(!log.contains(&new_text) && !log.contains(&old_text));
    server.stop();

    // Restarted with the new key: ready again, no failures.
    let restarted = kw.start_server(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("KEYWARD_ROOT_KEY", &new_text)],
    );
    assert_ready(&[&restarted], "after a restart with the new key").await;
    let m = get(&restarted.url("/metrics")).await.text();
    assert_eq!(metric(&m, "keyward_reload_failures_total", &[]), 0.0, "{m}");
    assert_eq!(
        token_kid(&restarted, &id, &secret).await.as_deref(),
        Some(first.as_str())
    );
}
