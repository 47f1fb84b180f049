//! Private keys never appear in plaintext (DESIGN.md rule 2), and the root
//! key can be rotated and sourced from the environment or a file.

mod common;

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::{Kw, Run};
use keyward_jose::seal::RootKey;
use keyward_store::{open_private_key, Store};

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push(std::fs::read(p).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn no_private_key_bytes_in_files_or_output() {
    let kw = Kw::new();
    let mut outputs: Vec<Run> = Vec::new();
    outputs.push(kw.run(&[
        "init",
        "--issuer",
        "http://127.0.0.1:8080",
        "--bits",
        "2048",
    ]));
    for alg in ["ES256", "ES384", "ES512", "EdDSA", "PS384"] {
        let bits: &[&str] = if alg.starts_with('P') {
            &["--bits", "2048"]
        } else {
            &[]
        };
        let mut args = vec![
            "keys",
            "generate",
            "--env",
            "default",
            "--alg",
            alg,
            "--immediate",
        ];
        args.extend_from_slice(bits);
        outputs.push(kw.run(&args));
        outputs.push(kw.run(&["keys", "list", "--env", "default", "--json"]));
        outputs.push(kw.run(&["keys", "export", "--env", "default", "--format", "pem"]));
        outputs.push(kw.run(&[
            "token",
            "sign",
            "--env",
            "default",
            "--claims",
            r#"{"sub":"x"}"#,
        ]));
    }
    outputs.push(kw.run(&["audit", "list", "--json"]));
    for o in &outputs {
        o.ok();
    }
    // Open every sealed key the way the issuer does, to know what must not leak.
    let store = Store::open_sqlite(&kw.data_dir().join("keyward.db"))
        .await
        .unwrap();
    let root =
        RootKey::from_base64(&std::fs::read_to_string(kw.data_dir().join("root.key")).unwrap())
            .unwrap();
    let keys = store.keys("default").await.unwrap();
    assert_eq!(keys.len(), 6);
    store.close().await;
    let on_disk = files(&kw.data_dir());
    let text: String = outputs
        .iter()
        .map(|o| format!("{}{}", o.stdout, o.stderr))
        .collect();
    for k in &keys {
        let pkcs8 = open_private_key(&root, k).unwrap();
        let secret = secret_mask(&pkcs8, &public_bytes(k));
        let mut checked = 0;
        for i in 0..pkcs8.len().saturating_sub(16) {
            if secret[i..i + 16].iter().all(|&s| s) {
                checked += 1;
                let w = &pkcs8[i..i + 16];
                for f in &on_disk {
                    assert!(
                        !f.windows(16).any(|x| x == w),
                        "plaintext key bytes of {} on disk",
                        k.kid
                    );
                }
                let hex = keyward_jose::crypto::hex(w);
                assert!(
                    !text.contains(&hex),
                    "hex key material of {} in output",
                    k.kid
                );
            }
        }
        assert!(
            checked >= 8,
            "{}: only {checked} secret windows checked",
            k.kid
        );
        // Base64 in both alphabets, at every byte alignment.
        for off in 0..3 {
            for engine in [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ] {
                let enc = engine.encode(&pkcs8[off..]);
                for c in (0..enc.len().saturating_sub(32)).step_by(4) {
                    let b = off + c / 4 * 3;
                    if b + 24 <= pkcs8.len() && secret[b..b + 24].iter().all(|&s| s) {
                        assert!(
                            !text.contains(&enc[c..c + 32]),
                            "base64 key material of {} in output",
                            k.kid
                        );
                    }
                }
            }
        }
    }
}

/// The raw public numbers of a stored key (public material may appear anywhere).
fn public_bytes(k: &keyward_store::KeyRecord) -> Vec<Vec<u8>> {
    let jwk: serde_json::Value = serde_json::from_str(&k.public_jwk).unwrap();
    ["n", "e", "x", "y"]
        .iter()
        .filter_map(|m| jwk[*m].as_str())
        .map(|v| B64.decode(v).unwrap())
        .collect()
}

/// Which bytes of a PKCS#8 document are secret: not the ASN.1 header and
/// algorithm identifiers, and not a copy of the public key.
fn secret_mask(pkcs8: &[u8], public: &[Vec<u8>]) -> Vec<bool> {
    let mut m = vec![true; pkcs8.len()];
    for x in m.iter_mut().take(26) {
        *x = false;
    }
    for p in public.iter().filter(|p| p.len() >= 8) {
        for i in 0..pkcs8.len().saturating_sub(p.len() - 1) {
            if &pkcs8[i..i + p.len()] == p.as_slice() {
                m[i..i + p.len()].iter_mut().for_each(|x| *x = false);
            }
        }
    }
    m
}

#[test]
fn root_key_rotation_rewraps_everything() {
    let kw = Kw::new();
    kw.init();
    kw.run(&[
        "keys",
        "generate",
        "--env",
        "default",
        "--alg",
        "EdDSA",
        "--immediate",
    ])
    .ok();
    let old = std::fs::read_to_string(kw.data_dir().join("root.key")).unwrap();
    let before = kw
        .run(&["keys", "export", "--env", "default"])
        .ok()
        .stdout
        .clone();
    let out = kw.run(&["root-key", "rotate", "--json"]).ok().json();
    assert_eq!(out["rewrapped"], 2);
    let new = std::fs::read_to_string(kw.data_dir().join("root.key")).unwrap();
    assert_ne!(old, new);
    assert!(!kw.data_dir().join("root.key.new").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kw.data_dir().join("root.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Same public keys; signing works with the new root key; the old one opens nothing.
    assert_eq!(
        before,
        kw.run(&["keys", "export", "--env", "default"]).ok().stdout
    );
    kw.run(&["token", "sign", "--env", "default", "--claims", "{}"])
        .ok();
    kw.run_with(
        &["token", "sign", "--env", "default", "--claims", "{}"],
        &[("KEYWARD_ROOT_KEY", old.trim())],
    )
    .fails_with("does not open this store");
    let audit = kw.run(&["audit", "list", "--json"]).ok().json();
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "root_key.rotate"));
    kw.run(&["audit", "verify"]).ok();
}

#[test]
fn interrupted_root_key_rotation_is_completed() {
    // Simulate a crash after the database committed but before the rename:
    // rotate with the key from a file, then put the old file back and stage the new one.
    let kw = Kw::new();
    kw.init();
    let path = kw.data_dir().join("root.key");
    let old = std::fs::read_to_string(&path).unwrap();
    kw.run(&["root-key", "rotate"]).ok();
    let new = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &old).unwrap();
    std::fs::write(kw.data_dir().join("root.key.new"), &new).unwrap();
    let out = kw.run(&["token", "sign", "--env", "default", "--claims", "{}"]);
    out.ok();
    assert!(out
        .stderr
        .contains("completed an interrupted root-key rotation"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), new);
}

#[test]
fn root_key_from_env_and_file() {
    let kw = Kw::new();
    let key = RootKey::generate();
    let b64 = key.to_base64().unwrap();
    // init with KEYWARD_ROOT_KEY: no root.key is written.
    kw.run_with(
        &["init", "--issuer", "https://e.example", "--alg", "ES256"],
        &[("KEYWARD_ROOT_KEY", b64.as_str())],
    )
    .ok();
    assert!(!kw.data_dir().join("root.key").exists());
    kw.run_with(
        &["keys", "rotate", "--env", "default", "--immediate"],
        &[("KEYWARD_ROOT_KEY", b64.as_str())],
    )
    .ok();
    // Without it, the command names the data-dir file it tried.
    kw.run(&["keys", "rotate", "--env", "default", "--immediate"])
        .fails_with("root.key");
    // The same key from a file.
    let file = kw.dir.path().join("rk");
    std::fs::write(&file, b64.as_str()).unwrap();
    kw.run_with(
        &["token", "sign", "--env", "default", "--claims", "{}"],
        &[("KEYWARD_ROOT_KEY_FILE", file.to_str().unwrap())],
    )
    .ok();
    // Rotating an env-sourced key needs --out.
    kw.run_with(
        &["root-key", "rotate"],
        &[("KEYWARD_ROOT_KEY", b64.as_str())],
    )
    .fails_with("--out");
    let out = kw.dir.path().join("new.key");
    kw.run_with(
        &["root-key", "rotate", "--out", out.to_str().unwrap()],
        &[("KEYWARD_ROOT_KEY", b64.as_str())],
    )
    .ok();
    let new = std::fs::read_to_string(&out).unwrap();
    kw.run_with(
        &["token", "sign", "--env", "default", "--claims", "{}"],
        &[("KEYWARD_ROOT_KEY", new.trim())],
    )
    .ok();
    kw.run_with(
        &["token", "sign", "--env", "default", "--claims", "{}"],
        &[("KEYWARD_ROOT_KEY", b64.as_str())],
    )
    .fails_with("does not open");
}
