//! The store's behaviour, run once per backend (see `common`).

#[path = "suite/backup.rs"]
mod backup;
mod common;
#[path = "suite/device.rs"]
mod device;
#[path = "suite/device_root.rs"]
mod device_root;
#[path = "suite/issuer.rs"]
mod issuer;
#[path = "suite/login.rs"]
mod login;
#[path = "suite/pushed.rs"]
mod pushed;

use common::Ctx;
use keyward_jose::crypto::random_bytes;
use keyward_jose::seal::RootKey;
use keyward_jose::{Algorithm, SealError};
use keyward_store::{
    open_private_key, seal_private_key, AuditEntry, Environment, KeyMaterial, KeyRecord, KeyState,
    KeyStoreName, RotationPolicy, Store, StoreError, GENESIS_HASH,
};
use serde_json::json;

backend_suite!(
    environments_crud,
    environments_issuer_urls_are_unique,
    issuer_keys_of_older_rows_are_filled_on_open,
    environment_delete_takes_everything_of_it,
    keys_insert_list_update,
    device_keys_round_trip_and_are_marked_destroyed,
    environment_key_store_is_stored_and_updatable,
    uncommitted_transactions_change_nothing,
    audit_append_and_verify,
    audit_tampered_detail_is_located,
    audit_deleted_record_is_a_gap,
    audit_truncated_tail_loses_the_expected_head,
    audit_concurrent_appends_do_not_fork,
    root_key_initialize_and_check,
    rewrap_all_moves_every_key,
    rewrap_all_with_wrong_old_key_changes_nothing,
    rewrap_all_failure_midway_changes_nothing,
    rewrap_all_waits_for_a_transaction_sealing_under_the_old_key,
    store_is_isolated_and_empty,
);

fn env(name: &str) -> Environment {
    Environment {
        name: name.into(),
        issuer: format!("https://auth.example/{name}"),
        policy: RotationPolicy::default(),
        created_at: 1_000,
        key_store: KeyStoreName::Local,
        dpop_nonce_secret: None,
    }
}

fn key(root: &RootKey, env: &str, kid: &str, activates_at: i64, secret: &[u8]) -> KeyRecord {
    KeyRecord {
        env: env.into(),
        kid: kid.into(),
        alg: Algorithm::ES256,
        size_bits: 256,
        public_jwk: format!(r#"{{"kty":"EC","kid":"{kid}"}}"#),
        material: KeyMaterial::Sealed(seal_private_key(root, env, kid, secret).unwrap()),
        origin: "generated".into(),
        owner: Some("ops".into()),
        description: None,
        created_at: 1_000,
        activates_at,
        retires_at: None,
        removes_at: None,
        revoked_at: None,
        destroyed_at: None,
    }
}

fn entry(n: i64) -> AuditEntry {
    AuditEntry {
        at: 10_000 + n,
        actor: "tester".into(),
        action: "test.append".into(),
        env: Some("prod".into()),
        subject: (n % 2 == 0).then(|| format!("s{n}")),
        detail: json!({"n": n, "nested": {"b": [1, 2], "a": "x"}}),
    }
}

async fn append(store: &Store, n: i64) {
    let mut tx = store.begin().await.unwrap();
    tx.append_audit(entry(n)).await.unwrap();
    tx.commit().await.unwrap();
}

async fn environments_crud(store: Store, _ctx: Ctx) {
    assert!(store.environments().await.unwrap().is_empty());
    let err = store.environment("prod").await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotFound {
            what: "environment",
            ..
        }
    ));
    assert_eq!(err.to_string(), "environment \"prod\" not found");

    let mut prod = env("prod");
    prod.policy = RotationPolicy::for_algorithm(Algorithm::EdDSA);
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&prod).await.unwrap();
    tx.create_environment(&env("dev")).await.unwrap();
    assert_eq!(tx.environment("prod").await.unwrap(), prod);
    tx.commit().await.unwrap();

    assert_eq!(store.environment("prod").await.unwrap(), prod);
    let names: Vec<_> = store
        .environments()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["dev", "prod"]);

    let mut tx = store.begin().await.unwrap();
    let err = tx.create_environment(&env("prod")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { what: "environment", ref name } if name == "prod")
    );
    assert_eq!(err.to_string(), "environment \"prod\" already exists");
    drop(tx);

    let mut changed = prod.clone();
    changed.issuer = "https://new.example".into();
    changed.policy.lead_secs = 60;
    changed.created_at = 5; // not updatable
    let mut tx = store.begin().await.unwrap();
    tx.update_environment(&changed).await.unwrap();
    let err = tx.update_environment(&env("nope")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "environment", ref name } if name == "nope")
    );
    tx.commit().await.unwrap();
    let got = store.environment("prod").await.unwrap();
    assert_eq!(got.issuer, "https://new.example");
    assert_eq!(got.policy.lead_secs, 60);
    assert_eq!(got.policy.alg, Algorithm::EdDSA);
    assert_eq!(got.created_at, 1_000);
}

async fn environments_issuer_urls_are_unique(store: Store, _ctx: Ctx) {
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.commit().await.unwrap();
    let generation = store.generation().await.unwrap();
    // The same place, however it is spelled: scheme, host case, trailing slash.
    for issuer in [
        "https://auth.example/prod",
        "http://auth.example/prod",
        "https://AUTH.example/prod/",
    ] {
        let mut dup = env("dup");
        dup.issuer = issuer.into();
        let mut tx = store.begin().await.unwrap();
        let err = tx.create_environment(&dup).await.unwrap_err();
        assert!(
            matches!(err, StoreError::IssuerTaken { ref env, .. } if env == "prod"),
            "{issuer}: {err}"
        );
        assert!(err
            .to_string()
            .contains("already used by environment \"prod\""));
        drop(tx);
    }
    assert_eq!(store.environments().await.unwrap().len(), 1);
    assert_eq!(store.generation().await.unwrap(), generation);
    // Another path or host is another place.
    let mut tx = store.begin().await.unwrap();
    let mut other = env("other");
    other.issuer = "https://auth.example/prod/other".into();
    tx.create_environment(&other).await.unwrap();
    let mut host = env("host");
    host.issuer = "https://other.example/prod".into();
    tx.create_environment(&host).await.unwrap();
    tx.commit().await.unwrap();
    // An update may keep its own issuer, but not take another's.
    let mut tx = store.begin().await.unwrap();
    let mut same = store.environment("prod").await.unwrap();
    same.policy.lead_secs = 120;
    tx.update_environment(&same).await.unwrap();
    let mut taking = other.clone();
    taking.issuer = "https://auth.example/prod/".into();
    let err = tx.update_environment(&taking).await.unwrap_err();
    assert!(matches!(err, StoreError::IssuerTaken { ref env, .. } if env == "prod"));
    drop(tx);
    assert_eq!(
        store.environment("other").await.unwrap().issuer,
        "https://auth.example/prod/other"
    );
    assert_eq!(
        store.environment("prod").await.unwrap().policy.lead_secs,
        60 * 60 * 48
    );
}

async fn issuer_keys_of_older_rows_are_filled_on_open(store: Store, ctx: Ctx) {
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.create_environment(&env("dev")).await.unwrap();
    tx.commit().await.unwrap();
    // As written before issuer keys existed: prod and a duplicate of its issuer.
    ctx.exec("UPDATE environments SET issuer_key = NULL").await;
    ctx.exec("UPDATE environments SET issuer = 'https://auth.example/prod/', created_at = 2000 WHERE name = 'dev'")
        .await;
    let reopened = Store::open_url(&ctx.url).await.unwrap();
    // The older environment got the key; the duplicate is left without one...
    assert_eq!(
        ctx.fetch_text("SELECT COALESCE(issuer_key, '-') FROM environments WHERE name = 'prod'")
            .await,
        "auth.example/prod"
    );
    assert_eq!(
        ctx.fetch_text("SELECT COALESCE(issuer_key, '-') FROM environments WHERE name = 'dev'")
            .await,
        "-"
    );
    // ...and no new environment can take the issuer from either.
    let mut tx = reopened.begin().await.unwrap();
    let mut third = env("third");
    third.issuer = "https://auth.example/prod".into();
    assert!(matches!(
        tx.create_environment(&third).await.unwrap_err(),
        StoreError::IssuerTaken { .. }
    ));
    drop(tx);
    // Giving the duplicate an issuer of its own fills its key.
    let mut dev = reopened.environment("dev").await.unwrap();
    dev.issuer = "https://auth.example/dev".into();
    let mut tx = reopened.begin().await.unwrap();
    tx.update_environment(&dev).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        ctx.fetch_text("SELECT issuer_key FROM environments WHERE name = 'dev'")
            .await,
        "auth.example/dev"
    );
    reopened.close().await;
}

async fn environment_delete_takes_everything_of_it(store: Store, ctx: Ctx) {
    let root = RootKey::generate();
    let mut tx = store.begin().await.unwrap();
    tx.initialize(&root.key_id()).await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.create_environment(&env("dev")).await.unwrap();
    tx.insert_key(&key(&root, "prod", "p1", 1_000, b"p"))
        .await
        .unwrap();
    tx.insert_key(&key(&root, "dev", "d1", 1_000, b"d"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for env in ["prod", "dev"] {
        ctx.exec(&format!(
            "INSERT INTO clients (env, client_id, name, auth, scopes, audiences, grant_types, created_at, updated_at) \
             VALUES ('{env}', 'c-{env}', 'n', 'client_secret_basic', 'a', '[]', '[]', 1, 1)"
        ))
        .await;
        ctx.exec(&format!(
            "INSERT INTO refresh_tokens (token_hash, env, client_id, family_id, subject, scope, extra, issued_at, expires_at) \
             VALUES ({}, '{env}', 'c-{env}', 'f', 's', 'a', '{{}}', 1, 99999999999)",
            if ctx.schema.is_some() { format!("'\\x{}'::bytea", if env == "prod" { "01" } else { "02" }) } else { format!("X'{}'", if env == "prod" { "01" } else { "02" }) }
        ))
        .await;
        ctx.exec(&format!(
            "INSERT INTO revocations (env, jti, exp, revoked_at) VALUES ('{env}', 'j-{env}', 99999999999, 1)"
        ))
        .await;
        ctx.exec(&format!(
            "INSERT INTO assertion_jtis (env, client_id, jti, exp) VALUES ('{env}', 'c-{env}', 'a-{env}', 99999999999)"
        ))
        .await;
    }
    let generation = store.generation().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.client_ids("prod").await.unwrap(), ["c-prod"]);
    tx.delete_environment("prod").await.unwrap();
    assert!(matches!(
        tx.delete_environment("nope").await.unwrap_err(),
        StoreError::NotFound {
            what: "environment",
            ..
        }
    ));
    tx.commit().await.unwrap();
    assert!(store.generation().await.unwrap() > generation);
    assert!(matches!(
        store.environment("prod").await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
    for table in [
        "keys",
        "clients",
        "refresh_tokens",
        "revocations",
        "assertion_jtis",
    ] {
        let left = ctx
            .fetch_text(&format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM {table} WHERE env = 'prod'"
            ))
            .await;
        assert_eq!(left, "0", "{table}");
        let kept = ctx
            .fetch_text(&format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM {table} WHERE env = 'dev'"
            ))
            .await;
        assert_eq!(kept, "1", "{table} of dev");
    }
    // The issuer URL is free again.
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.commit().await.unwrap();
}

async fn keys_insert_list_update(store: Store, _ctx: Ctx) {
    let root = RootKey::generate();
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.create_environment(&env("dev")).await.unwrap();
    let k_b = key(&root, "prod", "b", 200, b"secret-b");
    let k_a = key(&root, "prod", "a", 200, b"secret-a");
    let mut k_c = key(&root, "prod", "c", 100, b"secret-c");
    k_c.alg = Algorithm::RS256;
    k_c.size_bits = 4096;
    k_c.origin = "imported".into();
    k_c.owner = None;
    k_c.description = Some("legacy key".into());
    k_c.retires_at = Some(300);
    for k in [&k_b, &k_a, &k_c] {
        tx.insert_key(k).await.unwrap();
    }
    assert_eq!(tx.keys("prod").await.unwrap().len(), 3);
    tx.commit().await.unwrap();

    // Ordered by activates_at, then kid; every field round-trips.
    let keys = store.keys("prod").await.unwrap();
    assert_eq!(keys, vec![k_c.clone(), k_a.clone(), k_b.clone()]);
    assert_eq!(store.key("c").await.unwrap(), k_c);
    assert!(store.keys("dev").await.unwrap().is_empty());
    let err = store.keys("nope").await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotFound {
            what: "environment",
            ..
        }
    ));
    let err = store.key("zzz").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "key", ref name } if name == "zzz"));
    assert_eq!(
        open_private_key(&root, &store.key("a").await.unwrap())
            .unwrap()
            .as_slice(),
        b"secret-a"
    );

    let mut tx = store.begin().await.unwrap();
    let err = tx
        .insert_key(&key(&root, "dev", "a", 1, b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "key", ref name } if name == "a"));
    assert_eq!(err.to_string(), "key \"a\" already exists");
    let err = tx
        .insert_key(&key(&root, "nope", "n1", 1, b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "environment", ref name } if name == "nope")
    );

    // Rotation moves timestamps; state follows the clock passed in.
    let mut a = k_a.clone();
    a.retires_at = Some(400);
    a.removes_at = Some(500);
    a.revoked_at = Some(450);
    tx.update_key_times(&a).await.unwrap();
    let mut ghost = k_a.clone();
    ghost.kid = "ghost".into();
    let err = tx.update_key_times(&ghost).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "key", .. }));
    tx.commit().await.unwrap();

    let a = store.key("a").await.unwrap();
    assert_eq!(
        (a.retires_at, a.removes_at, a.revoked_at),
        (Some(400), Some(500), Some(450))
    );
    assert_eq!(a.state(199), KeyState::Pending);
    assert_eq!(a.state(200), KeyState::Active);
    assert_eq!(a.state(400), KeyState::Retired);
    assert_eq!(a.state(450), KeyState::Revoked);
    // Other fields untouched.
    assert_eq!(a.material, k_a.material);
    assert_eq!(a.public_jwk, k_a.public_jwk);

    // Clearing timestamps back to NULL works too.
    let mut tx = store.begin().await.unwrap();
    let mut cleared = a.clone();
    cleared.retires_at = None;
    cleared.removes_at = None;
    cleared.revoked_at = None;
    tx.update_key_times(&cleared).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.key("a").await.unwrap(), cleared);
}

fn device_key(env: &str, kid: &str, store: KeyStoreName, activates_at: i64) -> KeyRecord {
    KeyRecord {
        material: KeyMaterial::Device {
            store,
            reference: format!("serial-1/{kid}"),
        },
        ..key(&RootKey::generate(), env, kid, activates_at, b"unused")
    }
}

async fn device_keys_round_trip_and_are_marked_destroyed(store: Store, ctx: Ctx) {
    let root = RootKey::generate();
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    let local = key(&root, "prod", "local", 100, b"secret");
    let mut removed = device_key("prod", "hsm-removed", KeyStoreName::Pkcs11, 100);
    removed.retires_at = Some(200);
    removed.removes_at = Some(300);
    let mut revoked = device_key("prod", "kms-revoked", KeyStoreName::AwsKms, 100);
    revoked.revoked_at = Some(250);
    let live = device_key("prod", "hsm-live", KeyStoreName::Pkcs11, 400);
    for k in [&local, &removed, &revoked, &live] {
        tx.insert_key(k).await.unwrap();
    }
    tx.commit().await.unwrap();

    // Every field round-trips, the material included.
    assert_eq!(store.key("hsm-removed").await.unwrap(), removed);
    assert_eq!(store.key("kms-revoked").await.unwrap(), revoked);
    assert_eq!(store.key("local").await.unwrap(), local);
    assert_eq!(store.keys_all().await.unwrap().len(), 4);
    // A device key's sealed column is the empty blob; its store and reference are columns.
    let row = ctx
        .fetch_text(
            "SELECT key_store || ' ' || hw_ref || ' ' || CAST(LENGTH(sealed) AS TEXT) FROM keys WHERE kid = 'hsm-live'",
        )
        .await;
    assert_eq!(row, "pkcs11 serial-1/hsm-live 0");
    // Nothing to unseal.
    let e = open_private_key(&root, &live).unwrap_err();
    assert!(matches!(e, StoreError::DeviceKey { .. }), "{e}");

    // What the sweep destroys: unpublished device keys, not yet destroyed.
    let kids = |v: Vec<KeyRecord>| v.into_iter().map(|k| k.kid).collect::<Vec<_>>();
    assert!(store.keys_to_destroy(249).await.unwrap().is_empty());
    assert_eq!(
        kids(store.keys_to_destroy(250).await.unwrap()),
        ["kms-revoked"]
    );
    assert_eq!(
        kids(store.keys_to_destroy(300).await.unwrap()),
        ["hsm-removed", "kms-revoked"]
    );

    let g = store.generation().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.mark_destroyed("kms-revoked", 260).await.unwrap();
    // Twice: another replica got there first.
    let e = tx.mark_destroyed("kms-revoked", 261).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    let e = tx.mark_destroyed("local", 261).await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid { .. }), "{e}");
    let e = tx.mark_destroyed("nope", 261).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { what: "key", .. }), "{e}");
    tx.commit().await.unwrap();
    assert!(
        store.generation().await.unwrap() > g,
        "a key change moves the counter"
    );
    assert_eq!(
        store.key("kms-revoked").await.unwrap().destroyed_at,
        Some(260)
    );
    assert_eq!(store.key("local").await.unwrap().destroyed_at, None);
    assert_eq!(
        kids(store.keys_to_destroy(300).await.unwrap()),
        ["hsm-removed"]
    );

    // A device record without a reference, or a "local" device, is refused.
    let mut tx = store.begin().await.unwrap();
    for bad in [
        KeyMaterial::Device {
            store: KeyStoreName::Pkcs11,
            reference: String::new(),
        },
        KeyMaterial::Device {
            store: KeyStoreName::Local,
            reference: "x".into(),
        },
    ] {
        let k = KeyRecord {
            material: bad,
            ..device_key("prod", "bad", KeyStoreName::Pkcs11, 1)
        };
        let e = tx.insert_key(&k).await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid { .. }), "{e}");
    }
    drop(tx);
    assert!(matches!(
        store.key("bad").await.unwrap_err(),
        StoreError::NotFound { .. }
    ));

    // A row whose store and reference disagree is reported, not guessed.
    ctx.exec("UPDATE keys SET hw_ref = NULL WHERE kid = 'hsm-live'")
        .await;
    let e = store.key("hsm-live").await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
}

async fn environment_key_store_is_stored_and_updatable(store: Store, ctx: Ctx) {
    let mut prod = env("prod");
    prod.key_store = KeyStoreName::Pkcs11;
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&prod).await.unwrap();
    tx.create_environment(&env("dev")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.environment("prod").await.unwrap(), prod);
    assert_eq!(
        store.environment("dev").await.unwrap().key_store,
        KeyStoreName::Local
    );
    prod.key_store = KeyStoreName::AwsKms;
    let mut tx = store.begin().await.unwrap();
    tx.update_environment(&prod).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.environments().await.unwrap()[1], prod);
    // An unknown store in the row is reported, not guessed.
    ctx.exec("UPDATE environments SET key_store = 'floppy' WHERE name = 'prod'")
        .await;
    let e = store.environment("prod").await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
}

async fn uncommitted_transactions_change_nothing(store: Store, _ctx: Ctx) {
    let root = RootKey::generate();
    {
        let mut tx = store.begin().await.unwrap();
        tx.initialize(&root.key_id()).await.unwrap();
        tx.create_environment(&env("prod")).await.unwrap();
        tx.insert_key(&key(&root, "prod", "k1", 0, b"s"))
            .await
            .unwrap();
        tx.append_audit(entry(1)).await.unwrap();
        // A failing step, then the caller gives up: dropped, not committed.
        let err = tx.create_environment(&env("prod")).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { what: "environment", ref name } if name == "prod"),
            "{err:?}"
        );
    }
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("dev")).await.unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(store.root_key_id().await.unwrap(), None);
    assert!(store.environments().await.unwrap().is_empty());
    assert!(matches!(
        store.key("k1").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.audit_len().await.unwrap(), 0);

    // And the store is still usable afterwards (no lock left behind).
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.environments().await.unwrap().len(), 1);
}

async fn audit_append_and_verify(store: Store, _ctx: Ctx) {
    let empty = store.verify_audit().await.unwrap();
    assert_eq!(
        (
            empty.length,
            empty.head_hash.clone(),
            empty.first_broken.clone()
        ),
        (0, None, None)
    );

    let mut tx = store.begin().await.unwrap();
    let first = tx.append_audit(entry(1)).await.unwrap();
    let second = tx.append_audit(entry(2)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev_hash, GENESIS_HASH);
    assert_eq!(second.seq, 2);
    assert_eq!(second.prev_hash, first.hash);
    assert_eq!(first.hash, first.expected_hash());
    for n in 3..=25 {
        append(&store, n).await;
    }
    assert_eq!(store.audit_len().await.unwrap(), 25);

    let all = store.audit(0, 100).await.unwrap();
    assert_eq!(all.len(), 25);
    assert_eq!(all[0], first);
    assert_eq!(all[1], second);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1);
        assert_eq!(r.detail["n"], json!(r.seq));
        assert_eq!(r.hash, r.expected_hash());
        if i > 0 {
            assert_eq!(r.prev_hash, all[i - 1].hash);
        }
    }
    let page = store.audit(10, 5).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15]
    );
    assert!(store.audit(25, 10).await.unwrap().is_empty());
    assert!(store.audit(0, 0).await.unwrap().is_empty());

    let report = store.verify_audit().await.unwrap();
    assert_eq!(report.length, 25);
    assert_eq!(report.head_hash.as_deref(), Some(all[24].hash.as_str()));
    assert_eq!(report.first_broken, None);
}

async fn audit_tampered_detail_is_located(store: Store, ctx: Ctx) {
    for n in 1..=6 {
        append(&store, n).await;
    }
    assert!(store.verify_audit().await.unwrap().first_broken.is_none());
    let changed = ctx
        .exec(r#"UPDATE audit SET detail = '{"n":3,"nested":{"a":"y","b":[1,2]}}' WHERE seq = 3"#)
        .await;
    assert_eq!(changed, 1);
    let report = store.verify_audit().await.unwrap();
    assert_eq!(report.length, 6);
    let broken = report.first_broken.expect("tampering detected");
    assert_eq!(broken.seq, 3);
    assert_eq!(broken.reason, "hash does not match the record's contents");

    // Re-computing the edited record's own hash only moves the break on.
    let rec = &store.audit(2, 1).await.unwrap()[0];
    let forged = rec.expected_hash();
    ctx.exec(&format!("UPDATE audit SET hash = '{forged}' WHERE seq = 3"))
        .await;
    let broken = store.verify_audit().await.unwrap().first_broken.unwrap();
    assert_eq!(
        (broken.seq, broken.reason.as_str()),
        (4, "prev_hash does not match record 3")
    );
}

async fn audit_deleted_record_is_a_gap(store: Store, ctx: Ctx) {
    for n in 1..=6 {
        append(&store, n).await;
    }
    assert_eq!(ctx.exec("DELETE FROM audit WHERE seq = 4").await, 1);
    let report = store.verify_audit().await.unwrap();
    assert_eq!(report.length, 5);
    let broken = report.first_broken.expect("gap detected");
    assert_eq!(
        (broken.seq, broken.reason.as_str()),
        (5, "sequence gap: expected 4")
    );
}

async fn audit_truncated_tail_loses_the_expected_head(store: Store, ctx: Ctx) {
    for n in 1..=4 {
        append(&store, n).await;
    }
    let head = store.verify_audit().await.unwrap().head_hash.unwrap();
    for n in 5..=7 {
        append(&store, n).await;
    }
    // Grown since: the recorded head is record 4, and the chain links to it.
    let r = store.verify_audit_expecting(&head).await.unwrap();
    assert_eq!(r.expected_head.as_ref().unwrap().seq, Some(4));
    assert!(r.is_intact() && !r.expected_head_missing());
    // The newest records cut off, down past the recorded head.
    assert_eq!(ctx.exec("DELETE FROM audit WHERE seq >= 4").await, 4);
    assert!(store.verify_audit().await.unwrap().is_intact());
    let r = store.verify_audit_expecting(&head).await.unwrap();
    assert!(r.is_intact() && r.expected_head_missing(), "{r:?}");
    assert_eq!(r.length, 3);
}

async fn audit_concurrent_appends_do_not_fork(store: Store, _ctx: Ctx) {
    const TASKS: i64 = 6;
    const EACH: i64 = 8;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..EACH {
                let mut tx = store.begin().await.unwrap();
                tx.append_audit(entry(t * 100 + i)).await.unwrap();
                // Hold the transaction open a moment to provoke interleaving.
                tokio::task::yield_now().await;
                tx.commit().await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let report = store.verify_audit().await.unwrap();
    assert_eq!(report.length, TASKS * EACH);
    assert_eq!(report.first_broken, None);
    let seqs: Vec<i64> = store
        .audit(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (1..=TASKS * EACH).collect::<Vec<_>>());
}

async fn root_key_initialize_and_check(store: Store, _ctx: Ctx) {
    let root = RootKey::generate();
    let other = RootKey::generate();
    assert_eq!(store.root_key_id().await.unwrap(), None);
    assert!(matches!(
        store.check_root_key(&root).await,
        Err(StoreError::NotInitialized)
    ));

    let mut tx = store.begin().await.unwrap();
    tx.initialize(&root.key_id()).await.unwrap();
    assert!(matches!(
        tx.initialize(&other.key_id()).await,
        Err(StoreError::AlreadyInitialized)
    ));
    tx.check_root_key(&root).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(store.root_key_id().await.unwrap(), Some(root.key_id()));
    store.check_root_key(&root).await.unwrap();
    let err = store.check_root_key(&other).await.unwrap_err();
    match &err {
        StoreError::WrongRootKey { expected, got } => {
            assert_eq!(expected, &root.key_id());
            assert_eq!(got, &other.key_id());
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(err.to_string().contains(&root.key_id()));

    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        tx.initialize(&other.key_id()).await,
        Err(StoreError::AlreadyInitialized)
    ));
    assert!(matches!(
        tx.check_root_key(&other).await,
        Err(StoreError::WrongRootKey { .. })
    ));
}

/// An initialized store with two environments and `n` keys sealed under `root`.
async fn seeded(store: &Store, root: &RootKey, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut tx = store.begin().await.unwrap();
    tx.initialize_root(root).await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.create_environment(&env("dev")).await.unwrap();
    let mut secrets = Vec::new();
    for i in 0..n {
        let env = if i % 2 == 0 { "prod" } else { "dev" };
        let kid = format!("kid-{i}");
        let secret = random_bytes::<48>().to_vec();
        tx.insert_key(&key(root, env, &kid, i as i64, &secret))
            .await
            .unwrap();
        secrets.push((kid, secret));
    }
    tx.append_audit(entry(0)).await.unwrap();
    tx.commit().await.unwrap();
    secrets
}

async fn all_keys(store: &Store) -> Vec<KeyRecord> {
    let mut keys = store.keys("dev").await.unwrap();
    keys.extend(store.keys("prod").await.unwrap());
    keys
}

async fn rewrap_all_moves_every_key(store: Store, _ctx: Ctx) {
    let old = RootKey::generate();
    let new = RootKey::generate();
    let secrets = seeded(&store, &old, 5).await;
    let before = all_keys(&store).await;

    let n = store.rewrap_all(&old, &new, "admin", 50_000).await.unwrap();
    assert_eq!(n, 5);
    assert_eq!(store.root_key_id().await.unwrap(), Some(new.key_id()));
    store.check_root_key(&new).await.unwrap();
    let err = store.check_root_key(&old).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::WrongRootKey { expected, got }
            if *expected == new.key_id() && *got == old.key_id()),
        "{err:?}"
    );

    for (kid, secret) in &secrets {
        let k = store.key(kid).await.unwrap();
        assert_eq!(
            open_private_key(&new, &k).unwrap().as_slice(),
            secret.as_slice()
        );
        assert!(
            matches!(
                open_private_key(&old, &k),
                Err(StoreError::Seal(SealError::OpenFailed))
            ),
            "old root still opens {kid}"
        );
        let prev = before.iter().find(|b| &b.kid == kid).unwrap();
        assert_ne!(prev.material, k.material);
        assert_eq!(
            (&prev.public_jwk, prev.activates_at),
            (&k.public_jwk, k.activates_at)
        );
    }

    let audit = store.audit(0, 10).await.unwrap();
    let last = audit.last().unwrap();
    assert_eq!(last.action, "root_key.rotate");
    assert_eq!(last.actor, "admin");
    assert_eq!(last.at, 50_000);
    assert_eq!(last.detail["from"], json!(old.key_id()));
    assert_eq!(last.detail["to"], json!(new.key_id()));
    assert_eq!(last.detail["keys"], json!(5));
    assert_eq!(last.detail["from_store"], json!("local"));
    assert_eq!(last.detail["to_store"], json!("local"));
    assert_eq!(last.detail["to_ref"], json!(null));
    assert_eq!(store.root_key_ref().await.unwrap(), None);
    assert!(store.verify_audit().await.unwrap().first_broken.is_none());
}

async fn rewrap_all_with_wrong_old_key_changes_nothing(store: Store, _ctx: Ctx) {
    let old = RootKey::generate();
    let wrong = RootKey::generate();
    let new = RootKey::generate();
    seeded(&store, &old, 3).await;
    let before = all_keys(&store).await;
    let audit_before = store.audit_len().await.unwrap();

    let err = store
        .rewrap_all(&wrong, &new, "admin", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongRootKey { .. }), "{err:?}");

    assert_eq!(all_keys(&store).await, before);
    assert_eq!(store.root_key_id().await.unwrap(), Some(old.key_id()));
    assert_eq!(store.audit_len().await.unwrap(), audit_before);
    for k in &before {
        open_private_key(&old, k).unwrap();
    }
}

async fn rewrap_all_failure_midway_changes_nothing(store: Store, _ctx: Ctx) {
    let old = RootKey::generate();
    let stranger = RootKey::generate();
    let new = RootKey::generate();
    seeded(&store, &old, 4).await;
    // A key the recorded root key cannot open (sorted last by kid).
    let mut tx = store.begin().await.unwrap();
    tx.insert_key(&key(&stranger, "prod", "zz-foreign", 9, b"foreign"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let before = all_keys(&store).await;
    let audit_before = store.audit_len().await.unwrap();

    let err = store.rewrap_all(&old, &new, "admin", 1).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Seal(SealError::OpenFailed)),
        "{err:?}"
    );

    assert_eq!(all_keys(&store).await, before);
    assert_eq!(store.root_key_id().await.unwrap(), Some(old.key_id()));
    assert_eq!(store.audit_len().await.unwrap(), audit_before);
    for k in before.iter().filter(|k| k.kid != "zz-foreign") {
        open_private_key(&old, k).unwrap();
        assert!(matches!(
            open_private_key(&new, k),
            Err(StoreError::Seal(SealError::OpenFailed))
        ));
    }
}

async fn rewrap_all_waits_for_a_transaction_sealing_under_the_old_key(store: Store, _ctx: Ctx) {
    let old = std::sync::Arc::new(RootKey::generate());
    let new = std::sync::Arc::new(RootKey::generate());
    seeded(&store, &old, 2).await;

    let mut tx = store.begin().await.unwrap();
    tx.check_root_key(&old).await.unwrap();
    tx.insert_key(&key(&old, "prod", "late", 7, b"late secret"))
        .await
        .unwrap();
    let rotation = tokio::spawn({
        let (store, old, new) = (store.clone(), old.clone(), new.clone());
        async move { store.rewrap_all(&old, &new, "admin", 2).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !rotation.is_finished(),
        "rotation did not wait for the open transaction"
    );
    tx.commit().await.unwrap();
    assert_eq!(rotation.await.unwrap().unwrap(), 3);

    let late = store.key("late").await.unwrap();
    assert_eq!(
        open_private_key(&new, &late).unwrap().as_slice(),
        b"late secret"
    );
    // After the rotation, a transaction holding the old key is refused.
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        tx.check_root_key(&old).await,
        Err(StoreError::WrongRootKey { .. })
    ));
    tx.check_root_key(&new).await.unwrap();
}

async fn store_is_isolated_and_empty(store: Store, ctx: Ctx) {
    // Every test starts from an empty store of its own.
    assert_eq!(store.root_key_id().await.unwrap(), None);
    assert!(store.environments().await.unwrap().is_empty());
    assert_eq!(store.audit_len().await.unwrap(), 0);
    if let Some(schema) = &ctx.schema {
        let mut tx = store.begin().await.unwrap();
        tx.create_environment(&env("marker")).await.unwrap();
        tx.commit().await.unwrap();
        // Connections use this test's schema, and the tables live there.
        assert_eq!(
            &ctx.fetch_text("SELECT current_schema()::text").await,
            schema
        );
        let n = ctx
            .exec(&format!(
                "UPDATE {schema}.environments SET issuer = 'x' WHERE name = 'marker'"
            ))
            .await;
        assert_eq!(n, 1);
    }
}
