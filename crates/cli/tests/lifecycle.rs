//! The key lifecycle through the CLI, with the clock passed in (`--now`).

mod common;

use common::Kw;
use serde_json::Value;

fn states(kw: &Kw, env: &str, now: i64) -> Vec<(String, String)> {
    let v = kw
        .run(&[
            "keys",
            "list",
            "--env",
            env,
            "--json",
            "--now",
            &now.to_string(),
        ])
        .ok()
        .json();
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_string(),
                k["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn jwks_kids(kw: &Kw, env: &str, now: i64) -> Vec<String> {
    let v = kw
        .run(&["keys", "export", "--env", env, "--now", &now.to_string()])
        .ok()
        .json();
    let mut kids: Vec<String> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    kids.sort();
    kids
}

#[test]
fn init_defaults_to_one_active_rs256_4096_key() {
    let kw = Kw::new();
    let out = kw.run(&["init", "--issuer", "http://127.0.0.1:8080", "--json"]);
    out.ok();
    let v = out.json();
    assert_eq!(v["alg"], "RS256");
    assert_eq!(v["size"], 4096);
    assert_eq!(v["env"], "default");
    let root = kw.data_dir().join("root.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "root.key must be 0600");
        let dir = std::fs::metadata(kw.data_dir())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir, 0o700, "the data dir must be 0700");
    }
    let keys = kw
        .run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json();
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["state"], "active");
    assert_eq!(keys[0]["alg"], "RS256");
    assert_eq!(keys[0]["size"], 4096);
    for field in ["created_at", "activates_at"] {
        let t = keys[0][field].as_str().unwrap();
        assert!(
            t.ends_with('Z') && t.contains('T'),
            "{field} is RFC 3339: {t}"
        );
    }
    // Human listing has a header and the key.
    let table = kw
        .run(&["keys", "list", "--env", "default"])
        .ok()
        .stdout
        .clone();
    assert!(table.starts_with("KID"));
    assert!(table.contains("active"));
}

#[test]
fn rotation_publishes_first_then_signs_then_retires_then_removes() {
    let kw = Kw::new();
    let t0 = 1_900_000_000i64;
    let now = |t: i64| t.to_string();
    kw.run(&[
        "init",
        "--issuer",
        "http://127.0.0.1:8080",
        "--alg",
        "ES256",
        "--now",
        &now(t0),
    ])
    .ok();
    kw.run(&[
        "env",
        "update",
        "default",
        "--lead",
        "1h",
        "--token-ttl",
        "10m",
        "--now",
        &now(t0),
    ])
    .ok();
    let first = states(&kw, "default", t0)[0].0.clone();
    let rot = kw
        .run(&[
            "keys",
            "rotate",
            "--env",
            "default",
            "--json",
            "--now",
            &now(t0 + 10),
        ])
        .ok()
        .json();
    let second = rot["kid"].as_str().unwrap().to_string();
    assert_eq!(rot["state"], "pending");
    assert_eq!(rot["retiring"][0]["kid"], first.as_str());

    // Before activation: the old key signs, the new one is already published.
    let s = states(&kw, "default", t0 + 60);
    assert!(s.contains(&(first.clone(), "active".into())));
    assert!(s.contains(&(second.clone(), "pending".into())));
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert_eq!(jwks_kids(&kw, "default", t0 + 60), both);
    let tok = kw
        .run(&[
            "token",
            "sign",
            "--env",
            "default",
            "--claims",
            r#"{"sub":"a"}"#,
            "--now",
            &now(t0 + 60),
        ])
        .ok()
        .stdout
        .clone();
    let header = kw.run(&["token", "decode", tok.trim()]).ok().json();
    assert_eq!(header["header"]["kid"], first.as_str());

    // A second rotation while one is pending is refused and changes nothing.
    let before = kw.snapshot();
    kw.run(&["keys", "rotate", "--env", "default", "--now", &now(t0 + 70)])
        .fails_with("already in progress");
    assert_eq!(before, kw.snapshot());

    // After the lead (1 h): the new key signs, the old one is retired but still published.
    let t1 = t0 + 10 + 3600;
    let s = states(&kw, "default", t1);
    assert!(s.contains(&(first.clone(), "retired".into())));
    assert!(s.contains(&(second.clone(), "active".into())));
    assert_eq!(jwks_kids(&kw, "default", t1), both);
    let tok = kw
        .run(&[
            "token",
            "sign",
            "--env",
            "default",
            "--claims",
            r#"{"sub":"a"}"#,
            "--now",
            &now(t1),
        ])
        .ok()
        .stdout
        .clone();
    assert_eq!(
        kw.run(&["token", "decode", tok.trim()]).ok().json()["header"]["kid"],
        second.as_str()
    );

    // Removed after token TTL (10 min) + JWKS max-age (lead/2 = 30 min).
    let t2 = t1 + 600 + 1800;
    assert_eq!(
        states(&kw, "default", t2 - 1)
            .iter()
            .find(|k| k.0 == first)
            .unwrap()
            .1,
        "retired"
    );
    assert_eq!(
        states(&kw, "default", t2)
            .iter()
            .find(|k| k.0 == first)
            .unwrap()
            .1,
        "removed"
    );
    assert_eq!(jwks_kids(&kw, "default", t2), vec![second.clone()]);
}

#[test]
fn immediate_rotation_warns_and_signs_at_once() {
    let kw = Kw::new();
    kw.init();
    let out = kw.run(&[
        "keys",
        "rotate",
        "--env",
        "default",
        "--immediate",
        "--json",
    ]);
    out.ok();
    assert_eq!(out.json()["state"], "active");
    assert!(
        out.stderr.contains("--immediate"),
        "the risk is stated: {}",
        out.stderr
    );
    let s = kw
        .run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json();
    let active: Vec<&Value> = s
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1);
}

#[test]
fn generate_with_metadata_then_retire_and_revoke() {
    let kw = Kw::new();
    kw.init();
    kw.run(&[
        "env",
        "create",
        "prod",
        "--issuer",
        "https://auth.example.com",
        "--no-key",
    ])
    .ok();
    // The first key of an empty environment signs at once and sets its policy.
    let k = kw
        .run(&[
            "keys",
            "generate",
            "--env",
            "prod",
            "--alg",
            "EdDSA",
            "--kid",
            "prod-1",
            "--owner",
            "team-a",
            "--description",
            "first",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(k["kid"], "prod-1");
    assert_eq!(k["state"], "active");
    assert_eq!(k["owner"], "team-a");
    assert_eq!(
        kw.run(&["env", "show", "prod", "--json"]).ok().json()["policy"]["alg"],
        "EdDSA"
    );
    // RSA with explicit size.
    let r = kw
        .run(&[
            "keys", "generate", "--env", "prod", "--alg", "PS256", "--bits", "2048", "--kid",
            "prod-2", "--json",
        ])
        .ok()
        .json();
    assert_eq!(r["state"], "pending");
    assert_eq!(r["size"], 2048);
    // Retiring the only key that signs now is refused without --force
    // --accept-outage.
    kw.run(&["keys", "retire", "prod-2"]).ok();
    let before = kw.snapshot();
    kw.run(&["keys", "retire", "prod-1"])
        .fails_with("only key of environment prod that signs now");
    kw.run(&["keys", "retire", "prod-1", "--force"])
        .fails_with("--accept-outage");
    assert_eq!(before, kw.snapshot());
    // Revoke: unpublished at once, and the operator is told the env cannot sign.
    let out = kw.run(&["keys", "revoke", "prod-1", "--reason", "leaked"]);
    out.ok();
    assert!(out.stderr.contains("no active key"), "{}", out.stderr);
    let jwks = kw.run(&["keys", "export", "--env", "prod"]).ok().json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        vec!["prod-2"],
        "revoked key unpublished, retired key still published"
    );
    kw.run(&["keys", "revoke", "prod-1"])
        .fails_with("already revoked");
    kw.run(&["token", "sign", "--env", "prod", "--claims", "{}"])
        .fails_with("no active key");
    // The audit chain recorded every step and is intact.
    let audit = kw.run(&["audit", "list", "--json"]).ok().json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for a in [
        "store.init",
        "env.create",
        "key.generate",
        "key.retire",
        "key.revoke",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    kw.run(&["audit", "verify"]).ok();
}

#[test]
fn retiring_the_signing_key_while_its_successor_is_pending_is_refused() {
    let kw = Kw::new();
    kw.init();
    let active = states(&kw, "default", now_secs())[0].0.clone();
    let next = kw
        .run(&["keys", "rotate", "--env", "default", "--json"])
        .ok()
        .json();
    assert_eq!(next["state"], "pending");
    let next_kid = next["kid"].as_str().unwrap();
    let activates = next["activates_at"].as_str().unwrap();
    // The reproduction: retiring the active key now would leave nothing
    // signing for 48 h. Refused, with what to do instead.
    let before = kw.snapshot();
    let out = kw.run(&["keys", "retire", &active]);
    out.fails_with("only key of environment default that signs now");
    for needle in [
        "keyward keys rotate --env default --immediate",
        &format!("wait until {activates}"),
        next_kid,
        "--force --accept-outage",
    ] {
        assert!(out.stderr.contains(needle), "{needle} in {}", out.stderr);
    }
    kw.run(&["keys", "retire", &active, "--force"])
        .fails_with("--accept-outage");
    let out = kw.run(&["keys", "retire", &active, "--accept-outage"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert_eq!(before, kw.snapshot());
    // The environment still signs.
    kw.run(&["token", "sign", "--env", "default", "--claims", "{}"])
        .ok();
    // With the acknowledgement it goes, and the environment stops signing
    // until the pending key activates.
    let r = kw
        .run(&[
            "keys",
            "retire",
            &active,
            "--force",
            "--accept-outage",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(r["state"], "retired");
    kw.run(&["token", "sign", "--env", "default", "--claims", "{}"])
        .fails_with("no active key");
    let last = kw.run(&["audit", "list", "--json"]).ok().json();
    let last = last.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "key.retire");
    assert_eq!(last["detail"]["outage_accepted"], true);
}

#[test]
fn the_advised_immediate_rotation_replaces_the_signing_key_without_a_gap() {
    let kw = Kw::new();
    kw.init();
    let active = states(&kw, "default", now_secs())[0].0.clone();
    kw.run(&["keys", "rotate", "--env", "default"]).ok();
    kw.run(&["keys", "rotate", "--env", "default", "--immediate"])
        .ok();
    let s = states(&kw, "default", now_secs());
    assert!(s.contains(&(active.clone(), "retired".into())), "{s:?}");
    assert_eq!(s.iter().filter(|(_, st)| st == "active").count(), 1);
    kw.run(&["token", "sign", "--env", "default", "--claims", "{}"])
        .ok();
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn export_is_public_only_in_both_formats() {
    let kw = Kw::new();
    kw.init();
    kw.run(&[
        "keys", "generate", "--env", "default", "--alg", "RS256", "--bits", "2048",
    ])
    .ok();
    let jwks = kw
        .run(&["keys", "export", "--env", "default", "--format", "jwks"])
        .ok()
        .stdout
        .clone();
    for private in ["\"d\"", "\"p\"", "\"q\"", "\"dp\"", "\"dq\"", "\"qi\""] {
        assert!(!jwks.contains(private), "JWKS has private member {private}");
    }
    let v: Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(v["keys"].as_array().unwrap().len(), 2);
    for k in v["keys"].as_array().unwrap() {
        assert_eq!(k["use"], "sig");
        assert!(k["kid"].is_string() && k["alg"].is_string());
    }
    let pem = kw
        .run(&["keys", "export", "--env", "default", "--format", "pem"])
        .ok()
        .stdout
        .clone();
    assert_eq!(pem.matches("-----BEGIN PUBLIC KEY-----").count(), 2);
    assert!(!pem.contains("PRIVATE"));
}

#[test]
fn audit_verify_names_the_first_broken_link() {
    let kw = Kw::new();
    kw.init();
    kw.run(&[
        "env",
        "create",
        "prod",
        "--issuer",
        "https://a.example",
        "--alg",
        "ES384",
    ])
    .ok();
    kw.run(&["audit", "verify"]).ok();
    let db = kw.data_dir().join("keyward.db");
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE audit SET actor='mallory' WHERE seq=4\"); c.commit()",
            db.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    kw.run(&["audit", "verify"]).fails_with("record 4");
}

/// Records cut off the end of the chain leave no break; a head recorded
/// earlier (`--expect-head`) catches it, and still passes once the chain
/// has grown past it.
#[test]
fn audit_verify_expect_head_detects_a_truncated_tail() {
    let kw = Kw::new();
    kw.init();
    kw.run(&["env", "create", "prod", "--issuer", "https://a.example"])
        .ok();
    let report = kw.run(&["audit", "verify", "--json"]).ok().json();
    let head = report["head_hash"].as_str().unwrap().to_string();
    let length = report["length"].as_i64().unwrap();
    assert!(report.get("expected_head").is_none(), "{report}");
    let r = kw.run(&["audit", "verify", "--expect-head", &head]);
    r.ok();
    assert!(
        r.stdout
            .contains(&format!("the expected head is record {length}")),
        "{}",
        r.stdout
    );

    // The chain grows: the old head is still there, and linked to.
    kw.run(&["keys", "generate", "--env", "prod", "--alg", "ES384"])
        .ok();
    kw.run(&["env", "create", "staging", "--issuer", "https://s.example"])
        .ok();
    let r = kw
        .run(&["audit", "verify", "--expect-head", &head, "--json"])
        .ok()
        .json();
    assert_eq!(r["expected_head"]["seq"], length, "{r}");
    assert!(r["length"].as_i64().unwrap() > length);

    // Delete the newest records with raw SQL, back to before the old head.
    let db = kw.data_dir().join("keyward.db");
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM audit WHERE seq >= ?', (int(sys.argv[2]),)); c.commit()",
            db.to_str().unwrap(),
            &length.to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    // Plain verify cannot tell; --expect-head can.
    kw.run(&["audit", "verify"]).ok();
    kw.run(&["audit", "verify", "--expect-head", &head])
        .fails_with("is not in the audit chain");
    let r = kw.run(&["audit", "verify", "--expect-head", &head, "--json"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["expected_head"]["seq"], serde_json::Value::Null);

    // A malformed hash is refused as such.
    for bad in ["abc", &head.to_uppercase(), &format!("{head}0")] {
        kw.run(&["audit", "verify", "--expect-head", bad])
            .fails_with("64 lowercase hex digits");
    }
}

/// `keys rotate --alg ML-DSA-65` moves an RS256 environment to ML-DSA-65 by
/// an ordinary rotation: the ML-DSA key is published at once beside the
/// RSA key, signs after the lead, and the environment's policy (hence every
/// later rotation) uses ML-DSA-65, changed in the rotation's transaction.
#[test]
fn rotate_alg_moves_an_environment_to_ml_dsa_with_pre_publication() {
    let kw = Kw::new();
    let t0 = 1_900_000_000i64;
    let at = |t: i64| t.to_string();
    kw.run(&[
        "init",
        "--issuer",
        "http://127.0.0.1:8080",
        "--alg",
        "RS256",
        "--bits",
        "2048",
        "--now",
        &at(t0),
    ])
    .ok();
    kw.run(&["env", "update", "default", "--lead", "1h", "--now", &at(t0)])
        .ok();
    let rsa = states(&kw, "default", t0)[0].0.clone();
    let policy =
        |kw: &Kw| kw.run(&["env", "show", "default", "--json"]).ok().json()["policy"].clone();
    let sign_alg = |t: i64| {
        let tok = kw
            .run(&[
                "token",
                "sign",
                "--env",
                "default",
                "--claims",
                r#"{"sub":"a"}"#,
                "--now",
                &at(t),
            ])
            .ok()
            .stdout
            .clone();
        let h = kw.run(&["token", "decode", tok.trim()]).ok().json()["header"].clone();
        (
            h["alg"].as_str().unwrap().to_string(),
            h["kid"].as_str().unwrap().to_string(),
        )
    };

    // A size for an algorithm that has none is refused, and changes nothing.
    let before = kw.snapshot();
    kw.run(&[
        "keys",
        "rotate",
        "--env",
        "default",
        "--alg",
        "ML-DSA-65",
        "--bits",
        "2048",
        "--now",
        &at(t0 + 5),
    ])
    .fails_with("rsa_bits applies only to RSA algorithms, not ML-DSA-65");
    assert_eq!(before, kw.snapshot());

    let out = kw
        .run(&[
            "keys",
            "rotate",
            "--env",
            "default",
            "--alg",
            "ML-DSA-65",
            "--now",
            &at(t0 + 10),
        ])
        .ok()
        .stdout
        .clone();
    assert!(
        out.contains("automatic rotation of default now uses ML-DSA-65"),
        "{out}"
    );
    assert!(out.contains(" (ML-DSA-65) in environment default"), "{out}");
    let p = policy(&kw);
    assert_eq!(p["alg"], "ML-DSA-65");
    assert!(p["rsa_bits"].is_null(), "{p}");
    let keys = kw
        .run(&["keys", "list", "--env", "default", "--json"])
        .ok()
        .json();
    let pq = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == "ML-DSA-65")
        .expect("an ML-DSA-65 key");
    let pq_kid = pq["kid"].as_str().unwrap().to_string();
    let audit = kw.run(&["audit", "list", "--json"]).ok().json();
    let last = audit.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "key.rotate");
    assert_eq!(last["detail"]["policy_alg"], "ML-DSA-65");

    // Before activation: RS256 signs, both keys are published.
    let mut both = vec![rsa.clone(), pq_kid.clone()];
    both.sort();
    assert_eq!(jwks_kids(&kw, "default", t0 + 60), both);
    assert_eq!(sign_alg(t0 + 60), ("RS256".to_string(), rsa.clone()));
    // After the lead: ML-DSA-65 signs; the RSA key stays published, retired.
    let t1 = t0 + 10 + 3600;
    assert_eq!(sign_alg(t1), ("ML-DSA-65".to_string(), pq_kid.clone()));
    assert_eq!(jwks_kids(&kw, "default", t1), both);
    assert!(states(&kw, "default", t1).contains(&(rsa, "retired".into())));

    // The next ordinary rotation follows the new policy.
    let next = kw
        .run(&[
            "keys",
            "rotate",
            "--env",
            "default",
            "--json",
            "--now",
            &at(t1 + 10),
        ])
        .ok()
        .json();
    assert_eq!(next["alg"], "ML-DSA-65");
    assert_eq!(next["retiring"][0]["kid"], pq_kid.as_str());
}
