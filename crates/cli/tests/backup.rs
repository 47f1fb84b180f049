//! `keyward backup`, `backup verify` and `restore` driving the real binary:
//! a backup taken while tokens are issued and keys rotated restores into a
//! fresh data dir and a fresh PostgreSQL schema, where tokens issued before
//! the backup verify, their refresh tokens work, the audit chain verifies
//! and the JWKS is the one the original served at backup time; and every
//! damaged file or wrong target is refused with nothing written.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{get, post_form, Auth, Kw, PgSchema, Server};
use keyward_jose::crypto::{hex, sha256};
use serde_json::Value;

const ISSUER: &str = "http://127.0.0.1:8080";

fn secret_client(kw: &Kw) -> (String, String) {
    let v = kw
        .run(&[
            "clients",
            "create",
            "--env",
            "default",
            "--json",
            "--name",
            "app",
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

/// An access token and its refresh token, minted by the operator.
fn mint(kw: &Kw, client: &str) -> (String, String) {
    let v = kw
        .run(&[
            "token", "issue", "--env", "default", "--sub", "alice", "--client", client, "--json",
        ])
        .ok()
        .json();
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

async fn client_credentials(s: &Server, id: &str, secret: &str) -> String {
    let r = post_form(
        &s.url("/oauth2/token"),
        Auth::Basic(id, secret),
        &[("grant_type", "client_credentials")],
    )
    .await;
    r.ok_json()["access_token"].as_str().unwrap().to_string()
}

async fn jwks(s: &Server) -> Value {
    get(&s.url("/.well-known/jwks.json")).await.ok_json()
}

fn kids(doc: &Value) -> Vec<String> {
    let mut k: Vec<String> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

/// The kids of the store's "default" environment.
fn key_ids(kw: &Kw) -> Vec<String> {
    let v = kw
        .run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json();
    kids(&serde_json::json!({ "keys": v }))
}

/// A new data dir holding (only) the root key of `from`.
fn with_root_key_of(from: &Kw) -> Kw {
    let kw = Kw::new();
    std::fs::create_dir(kw.data_dir()).unwrap();
    let dst = kw.data_dir().join("root.key");
    std::fs::copy(from.data_dir().join("root.key"), &dst).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(kw.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    kw
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_into_sqlite_and_postgres() {
    let kw = Arc::new(Kw::new());
    kw.init();
    let (id, secret) = secret_client(&kw);
    let server = kw.serve();

    // Issued before the backup: access tokens over HTTP, pairs by the operator.
    let mut before = Vec::new();
    for _ in 0..3 {
        before.push(client_credentials(&server, &id, &secret).await);
    }
    let pairs: Vec<(String, String)> = (0..3).map(|_| mint(&kw, &id)).collect();
    before.extend(pairs.iter().map(|p| p.0.clone()));

    // Load: tokens issued without pause, and keys rotated (each rotation's
    // JWKS recorded once the server publishes it).
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicUsize::new(0));
    let states = Arc::new(Mutex::new(vec![jwks(&server).await]));
    let issuer = tokio::spawn({
        let (stop, issued, url) = (stop.clone(), issued.clone(), server.url("/oauth2/token"));
        let (id, secret) = (id.clone(), secret.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let r = post_form(
                    &url,
                    Auth::Basic(&id, &secret),
                    &[("grant_type", "client_credentials")],
                )
                .await;
                assert_eq!(
                    r.status,
                    200,
                    "a token request under load failed: {}",
                    r.text()
                );
                issued.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let rotator = tokio::spawn({
        let (stop, states, kw) = (stop.clone(), states.clone(), kw.clone());
        let url = server.url("/.well-known/jwks.json");
        async move {
            while !stop.load(Ordering::SeqCst) {
                let k2 = kw.clone();
                let v = blocking(move || {
                    k2.run(&[
                        "keys",
                        "rotate",
                        "--env",
                        "default",
                        "--immediate",
                        "--json",
                    ])
                    .ok()
                    .json()
                })
                .await
                .unwrap();
                let kid = v["kid"]
                    .as_str()
                    .expect("rotate --json names the new kid")
                    .to_string();
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let doc = get(&url).await.ok_json();
                    if kids(&doc).contains(&kid) {
                        states.lock().unwrap().push(doc);
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the server never published {kid}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    // Under way: at least one rotation and some tokens before the backup.
    let deadline = Instant::now() + Duration::from_secs(60);
    while states.lock().unwrap().len() < 2 || issued.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let states_before = states.lock().unwrap().len();
    let issued_before = issued.load(Ordering::SeqCst);
    let file = kw.dir.path().join("backup.kwb");
    let taken = {
        let (kw, file) = (kw.clone(), file.clone());
        blocking(move || {
            kw.run(&["backup", "--out", file.to_str().unwrap(), "--json"])
                .ok()
                .json()
        })
        .await
        .unwrap()
    };
    // The load went on during and after the backup.
    let deadline = Instant::now() + Duration::from_secs(60);
    while states.lock().unwrap().len() < states_before + 1 {
        assert!(Instant::now() < deadline, "no rotation after the backup");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let states_after = states.lock().unwrap().len();
    stop.store(true, Ordering::SeqCst);
    issuer.await.unwrap();
    rotator.await.unwrap();
    assert!(
        issued.load(Ordering::SeqCst) > issued_before,
        "tokens were issued meanwhile"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the backup is private");
    }
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(kw.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("backup.kwb"))
        .collect();
    assert_eq!(names, vec!["backup.kwb".to_string()]);
    let checked = kw
        .run(&["backup", "verify", file.to_str().unwrap(), "--json"])
        .ok()
        .json();
    assert_eq!(checked, taken);
    // Secrets never appear: the client secret is only hashed in the file.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&secret));
    assert!(!text.contains(&pairs[0].1));

    // The JWKS of the snapshot is one the original served while the
    // backup ran: between the last state before it and the first after.
    let states = states.lock().unwrap().clone();
    let window = &states[states_before - 1..states_after];

    let sqlite = with_root_key_of(&kw);
    check_restored(
        &sqlite, &file, &taken, window, &before, &pairs, &id, &secret,
    )
    .await;
    if let Some(schema) = PgSchema::new("kw_backup") {
        let mut pg = with_root_key_of(&kw);
        pg.env.push(("KEYWARD_DATABASE_URL".into(), schema.url()));
        check_restored(&pg, &file, &taken, window, &before, &pairs, &id, &secret).await;
        // And back: a backup of the PostgreSQL store restores into SQLite.
        let again = pg.dir.path().join("from-postgres.kwb");
        pg.run(&["backup", "--out", again.to_str().unwrap()]).ok();
        let back = with_root_key_of(&kw);
        back.run(&["restore", again.to_str().unwrap()]).ok();
        back.run(&["audit", "verify"]).ok();
        assert_eq!(key_ids(&back), key_ids(&pg));
    }
}

#[allow(clippy::too_many_arguments)]
async fn check_restored(
    kw: &Kw,
    file: &Path,
    taken: &Value,
    window: &[Value],
    before: &[String],
    pairs: &[(String, String)],
    id: &str,
    secret: &str,
) {
    let done = kw
        .run(&["restore", file.to_str().unwrap(), "--json"])
        .ok()
        .json();
    assert_eq!(&done["backup"], taken);
    let head = taken["audit_head"].as_str().unwrap();
    let v = kw
        .run(&["audit", "verify", "--json", "--expect-head", head])
        .ok()
        .json();
    assert_eq!(v["length"], taken["audit_length"].as_i64().unwrap() + 1);
    let last = kw
        .run(&[
            "audit",
            "list",
            "--json",
            "--after",
            &taken["audit_length"].to_string(),
        ])
        .ok()
        .json();
    assert_eq!(last[0]["action"], "store.restore");

    let server = kw.serve();
    let doc = jwks(&server).await;
    assert!(
        window.contains(&doc),
        "the restored JWKS {:?} is none of those served during the backup: {:?}",
        kids(&doc),
        window.iter().map(kids).collect::<Vec<_>>()
    );
    let jwks_url = server.url("/.well-known/jwks.json");
    for t in before {
        kw.run(&[
            "token", "verify", "--jwks", &jwks_url, "--typ", "at+jwt", "--iss", ISSUER, t,
        ])
        .ok();
    }
    for (_, refresh) in pairs {
        let r = post_form(
            &server.url("/oauth2/token"),
            Auth::Basic(id, secret),
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
        let v = r.ok_json();
        let access = v["access_token"].as_str().unwrap();
        assert!(v["refresh_token"].as_str().is_some());
        kw.run(&[
            "token", "verify", "--jwks", &jwks_url, "--typ", "at+jwt", "--iss", ISSUER, access,
        ])
        .ok();
    }
    // New tokens are issued too.
    let fresh = client_credentials(&server, id, secret).await;
    kw.run(&[
        "token", "verify", "--jwks", &jwks_url, "--iss", ISSUER, &fresh,
    ])
    .ok();
}

/// A small initialized store and its backup.
fn small_backup() -> (Kw, PathBuf, Value) {
    let kw = Kw::new();
    kw.init();
    let (id, _) = secret_client(&kw);
    mint(&kw, &id);
    let file = kw.dir.path().join("small.kwb");
    let v = kw
        .run(&["backup", "--out", file.to_str().unwrap(), "--json"])
        .ok()
        .json();
    (kw, file, v)
}

/// Rewrites the file's trailer so its checksum matches its (changed) body.
fn reseal(text: &str) -> String {
    let body_end = text.trim_end_matches('\n').rfind('\n').unwrap() + 1;
    let body = &text[..body_end];
    format!(
        "{body}{{\"sha256\":\"{}\"}}\n",
        hex(&sha256(body.as_bytes()))
    )
}

/// Every way a restore is refused: the data dir is not created, the
/// PostgreSQL schema gets no table, and an existing store is unchanged.
fn refused(source: &Kw, file: &Path, needle: &str) {
    let fresh = with_root_key_of(source);
    fresh
        .run(&["restore", file.to_str().unwrap()])
        .fails_with(needle);
    assert!(
        !fresh.data_dir().join("keyward.db").exists(),
        "{needle}: a database was created"
    );
    if let Some(schema) = PgSchema::new("kw_backup_refused") {
        let mut pg = with_root_key_of(source);
        pg.env.push(("KEYWARD_DATABASE_URL".into(), schema.url()));
        pg.run(&["restore", file.to_str().unwrap()])
            .fails_with(needle);
        let out = std::process::Command::new("psql")
            .args([
                schema.url().as_str(),
                "-tAc",
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "{needle}: tables were created"
        );
    }
}

#[test]
fn damaged_files_and_wrong_targets_are_refused_with_nothing_written() {
    let (kw, file, _) = small_backup();
    let text = std::fs::read_to_string(&file).unwrap();
    let dir = kw.dir.path();
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };

    // One changed byte inside a value: the JSON still parses, the sum does not match.
    let at = text.find("http://127.0.0.1:8080").unwrap() + "http://".len();
    let mut bytes = text.clone().into_bytes();
    bytes[at] = b'9';
    let corrupt = dir.join("corrupt.kwb");
    std::fs::write(&corrupt, &bytes).unwrap();
    // Cut off mid-way, and cut off exactly before the trailer.
    let truncated = write("truncated.kwb", &text[..text.len() / 2]);
    let body_end = text.trim_end_matches('\n').rfind('\n').unwrap() + 1;
    let no_trailer = write("no-trailer.kwb", &text[..body_end]);
    // Another format version (checksum recomputed: the version is what is refused).
    let v2 = write(
        "v2.kwb",
        &reseal(&text.replacen("\"version\":1", "\"version\":2", 1)),
    );
    // An audit record edited inside, checksum recomputed.
    let tampered = text.replacen("\"env.create\"", "\"env.delete\"", 1);
    assert_ne!(tampered, text);
    let broken_chain = write("chain.kwb", &reseal(&tampered));
    // Bytes after the trailer.
    let trailing = write("trailing.kwb", &format!("{text}{{}}\n"));

    for (f, needle) in [
        (&corrupt, "checksum mismatch"),
        (&truncated, "truncated"),
        (&no_trailer, "truncated"),
        (&v2, "format version 2 is not supported"),
        (&broken_chain, "audit chain inside is broken"),
        (&trailing, "after the checksum trailer"),
    ] {
        kw.run(&["backup", "verify", f.to_str().unwrap()])
            .fails_with(needle);
        refused(&kw, f, needle);
    }

    // The wrong root key: refused before anything is opened.
    let other = Kw::new();
    other.init();
    let wrong = with_root_key_of(&other);
    wrong
        .run(&["restore", file.to_str().unwrap()])
        .fails_with("wrong root key");
    assert!(!wrong.data_dir().join("keyward.db").exists());
    // Given by KEYWARD_ROOT_KEY_FILE, with no data dir at all.
    let bare = Kw::new();
    bare.run_with(
        &["restore", file.to_str().unwrap()],
        &[(
            "KEYWARD_ROOT_KEY_FILE",
            other.data_dir().join("root.key").to_str().unwrap(),
        )],
    )
    .fails_with("wrong root key");
    assert!(!bare.data_dir().exists());
    // No root key at all.
    bare.run(&["restore", file.to_str().unwrap()])
        .fails_with("root key");
    assert!(!bare.data_dir().exists());

    // A store that is not empty: the original itself, and an initialized one.
    let snap = kw.snapshot();
    kw.run(&["restore", file.to_str().unwrap()])
        .fails_with("not empty");
    assert_eq!(kw.snapshot(), snap);
    let used = with_root_key_of(&kw);
    used.run(&["restore", file.to_str().unwrap()]).ok();
    let snap = used.snapshot();
    used.run(&["restore", file.to_str().unwrap()])
        .fails_with("not empty");
    assert_eq!(used.snapshot(), snap);
    if let Some(schema) = PgSchema::new("kw_backup_nonempty") {
        let mut pg = with_root_key_of(&kw);
        pg.env.push(("KEYWARD_DATABASE_URL".into(), schema.url()));
        pg.run(&["restore", file.to_str().unwrap()]).ok();
        let snap = pg.snapshot();
        pg.run(&["restore", file.to_str().unwrap()])
            .fails_with("not empty");
        assert_eq!(pg.snapshot(), snap);
    }

    // A backup never writes half a file over an existing one: an
    // uninitialized store is refused and the old file stays.
    let empty = Kw::new();
    empty
        .run(&["backup", "--out", file.to_str().unwrap()])
        .fails_with("no keyward store");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    kw.run(&["backup"]).fails_with("--out");
}
