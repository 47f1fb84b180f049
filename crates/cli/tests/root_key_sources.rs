//! Root-key sources at the CLI, without a device: a rotation killed (kill
//! -9) between re-wrapping every key and its commit changes nothing; a
//! device source that is not configured, an invalid source, and a
//! configured source that disagrees with the store's are each one clear
//! error that changes nothing. (Rotations to and from real PKCS#11 tokens
//! and KMS keys are tested with SoftHSM and moto beside the backends.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Kw;
use keyward_jose::seal::RootKey;
use keyward_store::{open_private_key, Store};

/// Every key of `default` opens under the key in `<data-dir>/root.key`.
async fn every_key_opens_with_the_key_file(kw: &Kw, url: Option<&str>) -> usize {
    let store = match url {
        Some(u) => Store::open_url(u).await.unwrap(),
        None => Store::open_sqlite(&kw.data_dir().join("keyward.db"))
            .await
            .unwrap(),
    };
    let root =
        RootKey::from_base64(&std::fs::read_to_string(kw.data_dir().join("root.key")).unwrap())
            .unwrap();
    store.check_root_key(&root).await.unwrap();
    assert_eq!(store.root_key_ref().await.unwrap(), None);
    let keys = store.keys("default").await.unwrap();
    for k in &keys {
        open_private_key(&root, k).unwrap();
    }
    store.close().await;
    keys.len()
}

/// Kills `root-key rotate` (SIGKILL) after it re-wrapped every key inside
/// its transaction, before the commit; then shows that nothing changed.
async fn killed_before_its_commit(kw: &Kw, url: Option<&str>) {
    kw.init();
    for _ in 0..2 {
        kw.run(&[
            "keys",
            "generate",
            "--env",
            "default",
            "--alg",
            "ES256",
            "--immediate",
        ])
        .ok();
    }
    let before = kw.snapshot();
    let key_file = std::fs::read_to_string(kw.data_dir().join("root.key")).unwrap();

    let mut child = kw
        .cmd()
        .args(["root-key", "rotate"])
        .env("KEYWARD_TEST_PAUSE_BEFORE_COMMIT_MS", "60000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until every key is re-wrapped inside the transaction.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("pausing") => break l,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("the rotation never reached its commit: {e}");
            }
        }
    };
    assert!(line.contains("re-wrapped 3 keys"), "{line}");
    // The new key was staged beside the old one; the database not committed.
    assert!(kw.data_dir().join("root.key.new").exists());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Nothing changed: the store opens with the old root key, every key opens.
    assert_eq!(
        std::fs::read_to_string(kw.data_dir().join("root.key")).unwrap(),
        key_file
    );
    assert_eq!(every_key_opens_with_the_key_file(kw, url).await, 3);
    assert_eq!(kw.snapshot(), before);
    kw.run(&["audit", "verify"]).ok();
    kw.run(&["token", "sign", "--env", "default", "--claims", "{}"])
        .ok();
    // A later rotation replaces the stale staged file and goes through.
    let out = kw.run(&["root-key", "rotate", "--json"]);
    out.ok();
    assert_eq!(out.json()["rewrapped"], 3);
    assert!(!kw.data_dir().join("root.key.new").exists());
    assert_eq!(every_key_opens_with_the_key_file(kw, url).await, 3);
    kw.run(&["audit", "verify"]).ok();
}

#[tokio::test]
async fn a_rotation_killed_before_its_commit_changes_nothing() {
    killed_before_its_commit(&Kw::new(), None).await;
}

#[tokio::test]
async fn a_rotation_killed_before_its_commit_changes_nothing_on_postgres() {
    let Some(schema) = common::PgSchema::new("kw_rootkill") else {
        return;
    };
    let mut kw = Kw::new();
    kw.env.push(("KEYWARD_DATABASE_URL".into(), schema.url()));
    killed_before_its_commit(&kw, Some(&schema.url())).await;
}

#[test]
fn rotating_to_a_device_that_is_not_configured_changes_nothing() {
    let kw = Kw::new();
    kw.init();
    let before = kw.snapshot();
    kw.run(&["root-key", "rotate", "--to", "pkcs11:root"])
        .fails_with(
            "root key pkcs11:root: pkcs11 key store configuration: no PKCS#11 module is configured",
        );
    kw.run(&["root-key", "rotate", "--to", "aws-kms:alias/keyward-root"])
        .fails_with("root key aws-kms:alias/keyward-root: aws-kms key store configuration: AWS KMS is not configured");
    kw.run(&["root-key", "rotate", "--to", "hsm:root"])
        .fails_with("invalid root key source \"hsm:root\": unknown key store");
    kw.run(&["root-key", "rotate", "--to", "pkcs11:"])
        .fails_with("the key's name is empty");
    kw.run(&[
        "root-key",
        "rotate",
        "--to",
        "pkcs11:root",
        "--out",
        "/tmp/x",
    ])
    .fails_with("--out applies to --to file only");
    assert_eq!(kw.snapshot(), before);
    assert!(!kw.data_dir().join("root.key.new").exists());
    // `--to file` is today's rotation.
    let out = kw.run(&["root-key", "rotate", "--to", "file", "--json"]);
    out.ok();
    assert_eq!(out.json()["root_key_store"], "local");
    assert_eq!(out.json()["root_key_ref"], serde_json::Value::Null);
}

#[test]
fn init_with_a_device_root_that_is_not_configured_writes_nothing() {
    let kw = Kw::new();
    for (args, env, needle) in [
        (
            vec!["--root-key", "pkcs11:root"],
            vec![],
            "root key pkcs11:root: pkcs11 key store configuration: no PKCS#11 module is configured",
        ),
        (
            vec![],
            vec![("KEYWARD_ROOT_KEY_SOURCE", "aws-kms:alias/root")],
            "root key aws-kms:alias/root: aws-kms key store configuration",
        ),
        (
            vec![],
            vec![("KEYWARD_ROOT_KEY_SOURCE", "vault:x")],
            "KEYWARD_ROOT_KEY_SOURCE: invalid root key source \"vault:x\"",
        ),
    ] {
        let mut all = vec![
            "init",
            "--issuer",
            "http://127.0.0.1:8080",
            "--alg",
            "ES256",
        ];
        all.extend(args);
        kw.run_with(&all, &env).fails_with(needle);
        assert!(!kw.data_dir().join("keyward.db").exists());
        assert!(!kw.data_dir().join("root.key").exists());
    }
}

#[test]
fn a_configured_source_that_is_not_the_stores_is_refused() {
    let kw = Kw::new();
    kw.init();
    let before = kw.snapshot();
    kw.run_with(
        &["keys", "generate", "--env", "default", "--alg", "ES256"],
        &[("KEYWARD_ROOT_KEY_SOURCE", "pkcs11:root")],
    )
    .fails_with("the configured root key source (pkcs11:root: root_key in keyward.toml or KEYWARD_ROOT_KEY_SOURCE) is not the store's root key, which is a local root key (file)");
    // The same through KEYWARD_CONFIG's root_key.
    let cfg = kw.dir.path().join("keyward.toml");
    std::fs::write(&cfg, "root_key = \"aws-kms:alias/root\"\n").unwrap();
    kw.run_with(
        &["root-key", "rotate"],
        &[("KEYWARD_CONFIG", cfg.to_str().unwrap())],
    )
    .fails_with("run `keyward root-key rotate --to aws-kms:alias/root`");
    assert_eq!(kw.snapshot(), before);
    // `file` agrees with a local root key.
    kw.run_with(
        &["keys", "generate", "--env", "default", "--alg", "ES256"],
        &[("KEYWARD_ROOT_KEY_SOURCE", "file")],
    )
    .ok();
}

/// A data dir whose store records a root key in a device (made with the
/// in-memory test device, which no command can reach).
async fn store_with_a_device_root(kw: &Kw) {
    use keyward_issuer::{keyring, Change, KeyOptions, Origin};
    use keyward_jose::{Algorithm, PrivateKey};
    use keyward_signers::test_device::TestDevice;
    use keyward_signers::KeyStore;
    use keyward_store::{Environment, RotationPolicy};

    std::fs::create_dir_all(kw.data_dir()).unwrap();
    let store = Store::open_sqlite(&kw.data_dir().join("keyward.db"))
        .await
        .unwrap();
    let device = TestDevice::new("pkcs11", &[]);
    let root = RootKey::device(device.root_key("root", true).unwrap());
    let env = Environment {
        name: "default".into(),
        issuer: "http://127.0.0.1:8080".into(),
        policy: RotationPolicy::for_algorithm(Algorithm::ES256),
        key_store: keyward_store::KeyStoreName::Local,
        created_at: 1,
        dpop_nonce_secret: None,
    };
    let opts = KeyOptions {
        kid: None,
        owner: None,
        description: None,
        origin: Origin::Generated,
    };
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let at = Change {
        now: 1,
        actor: "test",
    };
    keyring::initialize(&store, &root, &env, &key, &opts, at)
        .await
        .unwrap();
    assert_eq!(
        store.root_key_ref().await.unwrap().as_deref(),
        Some("pkcs11:root")
    );
    store.close().await;
}

#[tokio::test]
async fn every_command_follows_the_stores_device_root_and_says_what_is_missing() {
    let kw = Kw::new();
    store_with_a_device_root(&kw).await;
    let before = kw.snapshot();
    // No root key file: none is needed, none is looked for.
    assert!(!kw.data_dir().join("root.key").exists());
    kw.run(&["keys", "generate", "--env", "default", "--alg", "ES256"])
        .fails_with(
            "root key pkcs11:root: pkcs11 key store configuration: no PKCS#11 module is configured",
        );
    kw.run(&["root-key", "rotate", "--to", "file"])
        .fails_with("root key pkcs11:root: pkcs11 key store configuration");
    kw.run(&["root-key", "rotate"])
        .fails_with("root key pkcs11:root: pkcs11 key store configuration");
    kw.run_with(
        &["keys", "generate", "--env", "default", "--alg", "ES256"],
        &[("KEYWARD_ROOT_KEY_SOURCE", "file")],
    )
    .fails_with("is not the store's root key, which is pkcs11:root");
    // serve: a device store that is not configured can never work: it exits
    // with the same clear error (a configured device that is down does not
    // stop it; see the issuer's tests).
    let out = kw.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("root key pkcs11:root: pkcs11 key store configuration"),
        "{}",
        out.stderr
    );
    assert_eq!(kw.snapshot(), before);
    assert!(!kw.data_dir().join("root.key").exists());
}

#[test]
fn a_local_root_key_does_not_depend_on_the_device_settings() {
    let kw = Kw::new();
    kw.init();
    // Incomplete PKCS#11 settings (no PIN): only device keys need them.
    kw.run_with(
        &[
            "keys",
            "generate",
            "--env",
            "default",
            "--alg",
            "ES256",
            "--immediate",
        ],
        &[
            ("KEYWARD_PKCS11_MODULE", "/nonexistent/libpkcs11.so"),
            ("KEYWARD_PKCS11_TOKEN_LABEL", "keyward"),
        ],
    )
    .ok();
    kw.run_with(
        &["root-key", "rotate"],
        &[("KEYWARD_PKCS11_MODULE", "/nonexistent/libpkcs11.so")],
    )
    .ok();
}

#[test]
fn a_rotation_from_a_device_to_a_file_interrupted_before_the_rename_is_completed() {
    // `rotate --to file` from a device root: the store committed the new
    // local key, the process died before `root.key.new` was renamed into
    // place, and there is no older key file (the root was in a device).
    let kw = Kw::new();
    kw.init();
    let live = kw.data_dir().join("root.key");
    let staged = kw.data_dir().join("root.key.new");
    std::fs::rename(&live, &staged).unwrap();
    let out = kw.run(&["token", "sign", "--env", "default", "--claims", "{}"]);
    out.ok();
    assert!(
        out.stderr
            .contains("completed an interrupted root-key rotation"),
        "{}",
        out.stderr
    );
    assert!(live.exists() && !staged.exists());
}
