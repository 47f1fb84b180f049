//! The issuer's records (clients, refresh tokens, the revocation feed,
//! assertion jtis, admin tokens) and the change counter, once per backend.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use keyward_jose::crypto::{random_bytes, sha256};
use keyward_jose::seal::RootKey;
use keyward_store::{
    AccessRef, AdminToken, AuditEntry, Backend, Client, ClientAuth, FamilyRevocation, RefreshToken,
    Revocation, Store, StoreError, REVOCATION_EXPIRY_MARGIN_SECS,
};
use serde_json::json;

use super::{env, key};
use crate::common::Ctx;

crate::backend_suite!(
    clients_crud,
    clients_refuse_invalid_values,
    delete_client_takes_its_tokens_along,
    refresh_token_rotation_and_family_revocation,
    refresh_token_for_update_serializes_exchanges,
    refresh_tokens_expire,
    refresh_lineage_and_access_tokens_round_trip,
    dpop_bindings_round_trip,
    dpop_nonce_secrets_round_trip_and_follow_the_root_key,
    family_revocation_puts_its_access_tokens_on_the_feed,
    supersede_takes_only_an_unused_successor,
    supersede_waits_for_a_concurrent_exchange_of_the_successor,
    refresh_token_for_update_takes_the_family_lock,
    family_revocation_catches_a_rotation_in_flight,
    grace_reissue_and_reuse_detection_do_not_deadlock,
    client_revocation_catches_a_rotation_in_flight,
    client_families_revoked_before_deletion,
    revocation_feed_order_cursor_and_idempotence,
    revocation_purge_keeps_cursors_valid,
    revocations_become_visible_in_seq_order,
    assertion_jti_replay,
    assertion_jti_concurrent_use_has_one_winner,
    admin_tokens_create_find_revoke,
    admin_tokens_made_before_grants_hold_every_permission,
    generation_moves_with_every_config_change,
    generation_ignores_rollbacks_failures_and_token_writes,
    generation_counts_concurrent_writers,
    keys_all_lists_every_environment,
);

fn client(env: &str, id: &str) -> Client {
    Client {
        env: env.into(),
        client_id: id.into(),
        name: format!("client {id}"),
        auth: ClientAuth::ClientSecretBasic,
        secret_hash: Some(sha256(id.as_bytes()).to_vec()),
        jwks: None,
        jwks_uri: None,
        scopes: vec!["orders.read".into(), "orders.write".into()],
        audiences: vec!["https://api.example".into(), "billing".into()],
        grant_types: vec!["client_credentials".into(), "refresh_token".into()],
        access_token_ttl_secs: None,
        refresh_token_ttl_secs: Some(86_400),
        dpop_bound_access_tokens: false,
        mtls: Default::default(),
        login: Default::default(),
        exchange_issuers: Vec::new(),
        created_at: 2_000,
        updated_at: 2_000,
    }
}

fn jwt_client(env: &str, id: &str) -> Client {
    Client {
        auth: ClientAuth::PrivateKeyJwt,
        secret_hash: None,
        jwks: Some(r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"BB"}]}"#.into()),
        jwks_uri: None,
        scopes: Vec::new(),
        audiences: Vec::new(),
        grant_types: vec!["client_credentials".into()],
        access_token_ttl_secs: Some(300),
        refresh_token_ttl_secs: None,
        dpop_bound_access_tokens: false,
        ..client(env, id)
    }
}

fn refresh(env: &str, client_id: &str, family: &str, value: &str) -> RefreshToken {
    RefreshToken {
        token_hash: sha256(value.as_bytes()).to_vec(),
        env: env.into(),
        client_id: client_id.into(),
        family_id: family.into(),
        subject: "alice".into(),
        scope: "orders.read orders.write".into(),
        audience: Some("https://api.example".into()),
        extra: r#"{"roles":["admin"],"permissions":["orders.*"]}"#.into(),
        issued_at: 3_000,
        expires_at: 3_000 + 86_400,
        rotated_at: None,
        revoked_at: None,
        parent: None,
        access: None,
        dpop_jkt: None,
    }
}

/// A refresh token rotated from `parent`, issued at `issued_at` with access
/// token `jti` expiring at `exp`.
fn child(
    family: &str,
    value: &str,
    parent: &str,
    issued_at: i64,
    jti: &str,
    exp: i64,
) -> RefreshToken {
    RefreshToken {
        issued_at,
        parent: Some(hash(parent)),
        access: Some(AccessRef {
            jti: jti.into(),
            exp,
        }),
        ..refresh("prod", "a", family, value)
    }
}

fn hash(value: &str) -> Vec<u8> {
    sha256(value.as_bytes()).to_vec()
}

/// Environments `prod` and `dev` with clients `a`, `b` (prod) and `a` (dev).
async fn with_clients(store: &Store) {
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.create_environment(&env("dev")).await.unwrap();
    tx.create_client(&client("prod", "a")).await.unwrap();
    tx.create_client(&jwt_client("prod", "b")).await.unwrap();
    tx.create_client(&client("dev", "a")).await.unwrap();
    tx.commit().await.unwrap();
}

async fn insert_refresh(store: &Store, tokens: &[RefreshToken]) {
    let mut tx = store.begin().await.unwrap();
    for t in tokens {
        tx.insert_refresh_token(t).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn clients_crud(store: Store, _ctx: Ctx) {
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.create_environment(&env("dev")).await.unwrap();
    // Created out of order; listed by client id.
    let (mut z, b, a) = (
        client("prod", "z-svc"),
        jwt_client("prod", "b-jwt"),
        client("prod", "a-svc"),
    );
    // An mTLS client (migration 0008's columns round-trip too).
    z.auth = ClientAuth::TlsClientAuth;
    z.secret_hash = None;
    z.mtls = keyward_store::ClientMtls {
        subject: Some((keyward_store::TlsName::SubjectDn, "CN=z,O=Example".into())),
        bound_tokens: Some(false),
    };
    // A client that may exchange other issuers' tokens (migration 0011).
    z.exchange_issuers = vec![
        "https://sso.example/realm".into(),
        "http://127.0.0.1:8080/other".into(),
    ];
    for c in [&z, &b, &a] {
        tx.create_client(c).await.unwrap();
    }
    let mut uri = jwt_client("dev", "a-svc");
    uri.jwks = None;
    uri.jwks_uri = Some("https://client.example/jwks.json".into());
    tx.create_client(&uri).await.unwrap();
    assert_eq!(tx.client("prod", "b-jwt").await.unwrap(), b);
    tx.commit().await.unwrap();

    // Every field round-trips, Nones and empty lists included.
    assert_eq!(
        store.clients("prod").await.unwrap(),
        vec![a.clone(), b.clone(), z.clone()]
    );
    assert_eq!(store.clients("dev").await.unwrap(), vec![uri.clone()]);
    assert_eq!(store.client("prod", "b-jwt").await.unwrap(), b);
    assert_eq!(store.client("dev", "a-svc").await.unwrap(), uri);
    assert_eq!(
        store.all_clients().await.unwrap(),
        vec![uri.clone(), a.clone(), b.clone(), z.clone()]
    );

    // The id is unique per environment, not globally: a-svc exists in both.
    let err = store.client("dev", "z-svc").await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "client", ref name } if name == "dev/z-svc"),
        "{err:?}"
    );
    let err = store.clients("nope").await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "environment", ref name } if name == "nope")
    );
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("empty")).await.unwrap();
    tx.commit().await.unwrap();
    assert!(store.clients("empty").await.unwrap().is_empty());

    let mut tx = store.begin().await.unwrap();
    let err = tx
        .create_client(&client("prod", "a-svc"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { what: "client", ref name } if name == "prod/a-svc"),
        "{err:?}"
    );
    let err = tx.create_client(&client("nope", "x")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "environment", ref name } if name == "nope")
    );

    // Update writes everything but the key and created_at.
    let mut changed = a.clone();
    changed.name = "renamed".into();
    changed.auth = ClientAuth::ClientSecretPost;
    changed.secret_hash = Some(hash("new secret"));
    changed.jwks = Some("{\"keys\":[]}".into());
    changed.jwks_uri = Some("https://x.example/jwks".into());
    changed.scopes = vec!["only.this".into()];
    changed.audiences = vec!["aud-2".into()];
    changed.grant_types = vec!["refresh_token".into()];
    changed.access_token_ttl_secs = Some(60);
    changed.refresh_token_ttl_secs = None;
    changed.exchange_issuers = vec!["https://idp.example".into()];
    changed.updated_at = 9_999;
    let mut sent = changed.clone();
    sent.created_at = 1;
    tx.update_client(&sent).await.unwrap();
    let err = tx
        .update_client(&client("prod", "ghost"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "client", ref name } if name == "prod/ghost")
    );
    tx.commit().await.unwrap();
    assert_eq!(store.client("prod", "a-svc").await.unwrap(), changed);
    // The other environment's client of the same id is untouched.
    assert_eq!(store.client("dev", "a-svc").await.unwrap(), uri);

    // Delete.
    let mut tx = store.begin().await.unwrap();
    tx.delete_client("prod", "a-svc").await.unwrap();
    let err = tx.delete_client("prod", "a-svc").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "client", .. }));
    tx.commit().await.unwrap();
    assert_eq!(store.clients("prod").await.unwrap(), vec![b, z]);
    assert_eq!(store.client("dev", "a-svc").await.unwrap(), uri);
    assert!(matches!(
        store.client("prod", "a-svc").await,
        Err(StoreError::NotFound { what: "client", .. })
    ));
}

async fn clients_refuse_invalid_values(store: Store, ctx: Ctx) {
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    for bad in ["two words", "", "tab\there", "nl\n"] {
        let mut c = client("prod", "c");
        c.scopes = vec!["ok".into(), bad.into()];
        let err = tx.create_client(&c).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid { what: "scope", .. }),
            "{bad:?}: {err:?}"
        );
    }
    tx.create_client(&client("prod", "c")).await.unwrap();
    let mut c = client("prod", "c");
    c.scopes = vec!["a b".into()];
    assert!(matches!(
        tx.update_client(&c).await,
        Err(StoreError::Invalid { what: "scope", .. })
    ));
    tx.commit().await.unwrap();
    assert_eq!(
        store.client("prod", "c").await.unwrap(),
        client("prod", "c")
    );

    // A row altered outside keyward is reported as corrupt, not guessed at.
    ctx.exec("UPDATE clients SET auth = 'client_secret_jwt' WHERE client_id = 'c'")
        .await;
    let err = store.client("prod", "c").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    ctx.exec(
        "UPDATE clients SET auth = 'client_secret_basic', audiences = 'nope' WHERE client_id = 'c'",
    )
    .await;
    assert!(matches!(
        store.client("prod", "c").await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn delete_client_takes_its_tokens_along(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let mine = [
        refresh("prod", "a", "fam-1", "r1"),
        refresh("prod", "a", "fam-1", "r2"),
        refresh("prod", "a", "fam-2", "r3"),
    ];
    let others = [
        refresh("prod", "b", "fam-3", "r4"),
        refresh("dev", "a", "fam-4", "r5"),
    ];
    insert_refresh(&store, &mine).await;
    insert_refresh(&store, &others).await;
    assert!(store
        .use_assertion_jti("prod", "a", "j1", 5_000, 4_000)
        .await
        .unwrap());
    assert!(store
        .use_assertion_jti("dev", "a", "j1", 5_000, 4_000)
        .await
        .unwrap());
    assert_eq!(
        store.refresh_token(&hash("r2")).await.unwrap(),
        Some(mine[1].clone())
    );

    let mut tx = store.begin().await.unwrap();
    tx.delete_client("prod", "a").await.unwrap();
    tx.commit().await.unwrap();

    for t in &mine {
        assert_eq!(store.refresh_token(&t.token_hash).await.unwrap(), None);
    }
    for t in &others {
        assert_eq!(
            store.refresh_token(&t.token_hash).await.unwrap().as_ref(),
            Some(t)
        );
    }
    // Its assertion jtis went too (a re-created client starts afresh); the
    // other environment's client keeps its own.
    assert!(store
        .use_assertion_jti("prod", "a", "j1", 5_000, 4_000)
        .await
        .unwrap());
    assert!(!store
        .use_assertion_jti("dev", "a", "j1", 5_000, 4_000)
        .await
        .unwrap());

    // A refresh token needs its client.
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .insert_refresh_token(&refresh("prod", "a", "fam-9", "r9"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "client", ref name } if name == "prod/a"),
        "{err:?}"
    );
}

async fn refresh_token_rotation_and_family_revocation(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let first = refresh("prod", "a", "fam", "v1");
    let other_family = refresh("prod", "a", "other", "o1");
    insert_refresh(&store, &[first.clone(), other_family.clone()]).await;
    assert_eq!(
        store.refresh_token(&hash("v1")).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.refresh_token(&hash("unknown")).await.unwrap(), None);

    let mut tx = store.begin().await.unwrap();
    let err = tx.insert_refresh_token(&first).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                what: "refresh token",
                ..
            }
        ),
        "{err:?}"
    );
    drop(tx);

    // Exchange v1 for v2: the usual rotation.
    let mut tx = store.begin().await.unwrap();
    let got = tx
        .refresh_token_for_update(&hash("v1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, first);
    assert!(tx.mark_refresh_rotated(&hash("v1"), 3_100).await.unwrap());
    // A second marking keeps the first time.
    assert!(!tx.mark_refresh_rotated(&hash("v1"), 3_200).await.unwrap());
    let err = tx
        .mark_refresh_rotated(&hash("nope"), 3_100)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotFound {
            what: "refresh token",
            ..
        }
    ));
    let second = RefreshToken {
        issued_at: 3_100,
        ..refresh("prod", "a", "fam", "v2")
    };
    tx.insert_refresh_token(&second).await.unwrap();
    tx.commit().await.unwrap();
    let v1 = store.refresh_token(&hash("v1")).await.unwrap().unwrap();
    assert_eq!(v1.rotated_at, Some(3_100));
    assert_eq!(v1.revoked_at, None);
    assert_eq!(
        store.refresh_token(&hash("v2")).await.unwrap(),
        Some(second.clone())
    );

    // v2 revoked alone first, then v1 replayed: the whole family goes.
    let mut tx = store.begin().await.unwrap();
    assert!(tx.revoke_refresh_token(&hash("v2"), 3_300).await.unwrap());
    assert!(!tx.revoke_refresh_token(&hash("v2"), 3_301).await.unwrap());
    assert!(!tx
        .revoke_refresh_token(&hash("unknown"), 3_301)
        .await
        .unwrap());
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let replayed = tx
        .refresh_token_for_update(&hash("v1"))
        .await
        .unwrap()
        .unwrap();
    assert!(replayed.rotated_at.is_some());
    let none = FamilyRevocation::default();
    assert_eq!(
        tx.revoke_refresh_family(&replayed.family_id, 3_400)
            .await
            .unwrap(),
        FamilyRevocation {
            refresh_tokens: 1,
            access_tokens: 0
        }
    );
    assert_eq!(tx.revoke_refresh_family("fam", 3_500).await.unwrap(), none);
    assert_eq!(
        tx.revoke_refresh_family("no-such-family", 3_500)
            .await
            .unwrap(),
        none
    );
    tx.commit().await.unwrap();

    let v1 = store.refresh_token(&hash("v1")).await.unwrap().unwrap();
    let v2 = store.refresh_token(&hash("v2")).await.unwrap().unwrap();
    assert_eq!((v1.rotated_at, v1.revoked_at), (Some(3_100), Some(3_400)));
    // Revoked before the family: keeps its own time.
    assert_eq!((v2.rotated_at, v2.revoked_at), (None, Some(3_300)));
    // Another family of the same client and subject is untouched.
    assert_eq!(
        store.refresh_token(&hash("o1")).await.unwrap(),
        Some(other_family)
    );

    // A rolled-back exchange leaves the token as it was.
    let mut tx = store.begin().await.unwrap();
    tx.mark_refresh_rotated(&hash("o1"), 4_000).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        store
            .refresh_token(&hash("o1"))
            .await
            .unwrap()
            .unwrap()
            .rotated_at,
        None
    );
}

async fn refresh_token_for_update_serializes_exchanges(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    insert_refresh(&store, &[refresh("prod", "a", "fam", "v1")]).await;

    let mut tx = store.begin().await.unwrap();
    let t = tx
        .refresh_token_for_update(&hash("v1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.rotated_at, None);
    // A second exchange of the same token, concurrently.
    let second = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let t = tx
                .refresh_token_for_update(&hash("v1"))
                .await
                .unwrap()
                .unwrap();
            let won = t.rotated_at.is_none()
                && tx.mark_refresh_rotated(&hash("v1"), 3_200).await.unwrap();
            tx.commit().await.unwrap();
            (t.rotated_at, won)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second exchange did not wait for the first"
    );
    assert!(tx.mark_refresh_rotated(&hash("v1"), 3_100).await.unwrap());
    tx.commit().await.unwrap();
    // It saw the first exchange's mark, so it lost.
    assert_eq!(second.await.unwrap(), (Some(3_100), false));
    let v1 = store.refresh_token(&hash("v1")).await.unwrap().unwrap();
    assert_eq!(v1.rotated_at, Some(3_100));
}

async fn refresh_tokens_expire(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let mut tokens = Vec::new();
    for (i, exp) in [(1, 100), (2, 200), (3, 300), (4, 301)] {
        tokens.push(RefreshToken {
            expires_at: exp,
            ..refresh("prod", "a", "fam", &format!("e{i}"))
        });
    }
    insert_refresh(&store, &tokens).await;
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.delete_expired_refresh_tokens(100).await.unwrap(), 0);
    assert_eq!(tx.delete_expired_refresh_tokens(300).await.unwrap(), 2);
    tx.commit().await.unwrap();
    let left: Vec<bool> = present(&store, &["e1", "e2", "e3", "e4"]).await;
    assert_eq!(left, [false, false, true, true]);
}

async fn present(store: &Store, values: &[&str]) -> Vec<bool> {
    let mut out = Vec::new();
    for v in values {
        out.push(store.refresh_token(&hash(v)).await.unwrap().is_some());
    }
    out
}

async fn revoke(store: &Store, env: &str, jti: &str, exp: i64) -> Option<Revocation> {
    let mut tx = store.begin().await.unwrap();
    let r = tx.revoke_jti(env, jti, exp, exp - 100).await.unwrap();
    tx.commit().await.unwrap();
    r
}

fn jtis(feed: &[Revocation]) -> Vec<&str> {
    feed.iter().map(|r| r.jti.as_str()).collect()
}

async fn revocation_feed_order_cursor_and_idempotence(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    assert!(store
        .revocations_since("prod", 0, 100)
        .await
        .unwrap()
        .is_empty());
    let mut prod = Vec::new();
    for (i, jti) in ["p1", "p2", "p3", "p4", "p5"].iter().enumerate() {
        prod.push(
            revoke(&store, "prod", jti, 10_000 + i as i64)
                .await
                .unwrap(),
        );
        // Interleave another environment's entries.
        if i % 2 == 0 {
            revoke(&store, "dev", &format!("d{i}"), 20_000)
                .await
                .unwrap();
        }
    }
    // Entries as returned, with seq increasing across environments.
    assert_eq!(prod[0].env, "prod");
    assert_eq!(prod[0].jti, "p1");
    assert_eq!(prod[0].exp, 10_000);
    assert_eq!(prod[0].revoked_at, 9_900);
    for w in prod.windows(2) {
        assert!(w[1].seq > w[0].seq, "{w:?}");
    }

    let all = store.revocations_since("prod", 0, 100).await.unwrap();
    assert_eq!(all, prod);
    let dev = store.revocations_since("dev", 0, 100).await.unwrap();
    assert_eq!(jtis(&dev), ["d0", "d2", "d4"]);
    assert!(dev.iter().all(|r| r.env == "dev"));
    assert!(store
        .revocations_since("nope", 0, 100)
        .await
        .unwrap()
        .is_empty());

    // Paging by cursor.
    let page1 = store.revocations_since("prod", 0, 2).await.unwrap();
    assert_eq!(jtis(&page1), ["p1", "p2"]);
    let page2 = store
        .revocations_since("prod", page1[1].seq, 2)
        .await
        .unwrap();
    assert_eq!(jtis(&page2), ["p3", "p4"]);
    let page3 = store
        .revocations_since("prod", page2[1].seq, 2)
        .await
        .unwrap();
    assert_eq!(jtis(&page3), ["p5"]);
    assert!(store
        .revocations_since("prod", page3[0].seq, 2)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .revocations_since("prod", 0, 0)
        .await
        .unwrap()
        .is_empty());

    // Idempotent: a second revocation of the same jti changes nothing.
    assert_eq!(revoke(&store, "prod", "p2", 99_999).await, None);
    assert_eq!(store.revocations_since("prod", 0, 100).await.unwrap(), prod);
    // The same jti in another environment is a different entry.
    let cross = revoke(&store, "dev", "p2", 30_000).await.unwrap();
    assert!(cross.seq > prod[4].seq);

    assert!(store.is_jti_revoked("prod", "p3").await.unwrap());
    assert!(!store.is_jti_revoked("prod", "d0").await.unwrap());
    assert!(store.is_jti_revoked("dev", "d0").await.unwrap());
    assert!(!store.is_jti_revoked("prod", "never").await.unwrap());

    let mut tx = store.begin().await.unwrap();
    let err = tx.revoke_jti("nope", "x", 1, 1).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotFound {
            what: "environment",
            ..
        }
    ));
    drop(tx);

    // Rolled back: not revoked, and the feed is as it was.
    let mut tx = store.begin().await.unwrap();
    assert!(tx
        .revoke_jti("prod", "rb", 50_000, 1)
        .await
        .unwrap()
        .is_some());
    tx.rollback().await.unwrap();
    assert!(!store.is_jti_revoked("prod", "rb").await.unwrap());
    assert_eq!(store.revocations_since("prod", 0, 100).await.unwrap(), prod);
}

async fn revocation_purge_keeps_cursors_valid(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let a = revoke(&store, "prod", "a", 1_000).await.unwrap();
    let b = revoke(&store, "prod", "b", 5_000).await.unwrap();
    let c = revoke(&store, "prod", "c", 2_000).await.unwrap();
    let d = revoke(&store, "dev", "d", 1_500).await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.purge_revocations(1_000).await.unwrap(), 0);
    assert_eq!(tx.purge_revocations(2_001).await.unwrap(), 3);
    tx.commit().await.unwrap();
    assert_eq!(
        store.revocations_since("prod", 0, 10).await.unwrap(),
        vec![b.clone()]
    );
    assert!(store
        .revocations_since("dev", 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(!store.is_jti_revoked("prod", "a").await.unwrap());
    assert!(store.is_jti_revoked("prod", "b").await.unwrap());

    // A reader whose cursor points at a purged entry still gets what follows.
    let e = revoke(&store, "prod", "e", 9_000).await.unwrap();
    assert_eq!(
        store.revocations_since("prod", a.seq, 10).await.unwrap(),
        vec![b.clone(), e.clone()]
    );
    assert_eq!(
        store.revocations_since("prod", c.seq, 10).await.unwrap(),
        vec![e.clone()]
    );

    // Purging everything, the newest included, never lets a seq come back.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.purge_revocations(i64::MAX).await.unwrap(), 2);
    tx.commit().await.unwrap();
    let f = revoke(&store, "prod", "f", 9_000).await.unwrap();
    assert!(
        f.seq > e.seq && f.seq > d.seq,
        "seq reused: {f:?} after {e:?}"
    );
    assert_eq!(
        store.revocations_since("prod", e.seq, 10).await.unwrap(),
        vec![f.clone()]
    );
    // A purged jti may be revoked again (it is a new entry).
    let a2 = revoke(&store, "prod", "a", 1_000).await.unwrap();
    assert!(a2.seq > f.seq);
}

async fn revocations_become_visible_in_seq_order(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    // A revocation whose transaction is still open holds back the next
    // one, so a feed reader can never see a later seq before an earlier one.
    let mut tx = store.begin().await.unwrap();
    let first = tx
        .revoke_jti("prod", "slow", 9_000, 1)
        .await
        .unwrap()
        .unwrap();
    let second = tokio::spawn({
        let store = store.clone();
        async move { revoke(&store, "prod", "fast", 9_000).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second revocation did not wait for the first"
    );
    assert!(store
        .revocations_since("prod", 0, 10)
        .await
        .unwrap()
        .is_empty());
    tx.commit().await.unwrap();
    let second = second.await.unwrap();
    assert!(second.seq > first.seq);
    assert_eq!(
        store.revocations_since("prod", 0, 10).await.unwrap(),
        vec![first, second]
    );
}

async fn assertion_jti_replay(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let now = 10_000;
    assert!(store
        .use_assertion_jti("prod", "b", "j1", now + 60, now)
        .await
        .unwrap());
    // Replays within the lifetime are refused, up to and including exp.
    assert!(!store
        .use_assertion_jti("prod", "b", "j1", now + 60, now + 1)
        .await
        .unwrap());
    assert!(!store
        .use_assertion_jti("prod", "b", "j1", now + 120, now + 60)
        .await
        .unwrap());
    // Another client, another environment, another jti: independent.
    assert!(store
        .use_assertion_jti("prod", "a", "j1", now + 60, now)
        .await
        .unwrap());
    assert!(store
        .use_assertion_jti("dev", "b", "j1", now + 60, now)
        .await
        .unwrap());
    assert!(store
        .use_assertion_jti("prod", "b", "j2", now + 60, now)
        .await
        .unwrap());
    // Once the recorded one has expired, the jti may be used again, and the
    // new record's exp then governs.
    assert!(store
        .use_assertion_jti("prod", "b", "j1", now + 500, now + 61)
        .await
        .unwrap());
    assert!(!store
        .use_assertion_jti("prod", "b", "j1", now + 500, now + 400)
        .await
        .unwrap());
    assert!(!store
        .use_assertion_jti("prod", "b", "j1", now + 500, now + 500)
        .await
        .unwrap());
    assert!(store
        .use_assertion_jti("prod", "b", "j1", now + 900, now + 501)
        .await
        .unwrap());

    // Housekeeping drops only expired records.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.delete_expired_assertion_jtis(now + 60).await.unwrap(), 0);
    // prod/a/j1, dev/b/j1, prod/b/j2 expire at now + 60.
    assert_eq!(tx.delete_expired_assertion_jtis(now + 61).await.unwrap(), 3);
    tx.commit().await.unwrap();
    assert!(!store
        .use_assertion_jti("prod", "b", "j1", now + 900, now + 600)
        .await
        .unwrap());
}

async fn assertion_jti_concurrent_use_has_one_winner(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    const TASKS: usize = 8;
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let jti = format!("jti-{round}");
        // Every other round reuses an expired record, so the update branch
        // races too.
        let now = if round % 2 == 0 { 1_000 } else { 2_000 };
        if round % 2 == 1 {
            assert!(store
                .use_assertion_jti("prod", "b", &jti, 1_500, 1_000)
                .await
                .unwrap());
        }
        let mut handles = Vec::new();
        for _ in 0..TASKS {
            let (store, barrier, jti) = (store.clone(), barrier.clone(), jti.clone());
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .use_assertion_jti("prod", "b", &jti, now + 60, now)
                    .await
                    .unwrap()
            }));
        }
        let mut wins = 0;
        for h in handles {
            wins += usize::from(h.await.unwrap());
        }
        assert_eq!(wins, 1, "round {round}: {wins} callers accepted one jti");
    }
}

fn admin(id: &str, created_at: i64) -> AdminToken {
    AdminToken {
        id: id.into(),
        name: format!("token {id}"),
        token_hash: hash(&format!("secret-{id}")),
        created_at,
        revoked_at: None,
        permissions: vec![format!("keyward.env.{id}.*"), "keyward.audit.read".into()],
        owner: Some(format!("owner of {id}")),
        expires_at: Some(created_at + 3600),
        created_by: Some("cli:test".into()),
    }
}

async fn admin_tokens_create_find_revoke(store: Store, _ctx: Ctx) {
    assert!(store.admin_tokens().await.unwrap().is_empty());
    let (x, y, z) = (admin("x", 30), admin("y", 10), admin("z", 10));
    let mut tx = store.begin().await.unwrap();
    for t in [&x, &y, &z] {
        tx.create_admin_token(t).await.unwrap();
    }
    let err = tx.create_admin_token(&admin("x", 99)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "admin token", ref name } if name == "x"));
    // Permissions are stored space-separated: none, an empty one or one
    // with white space is refused.
    for bad in [
        vec![],
        vec![String::new()],
        vec!["a b".to_string()],
        vec!["a\tb".into()],
    ] {
        let t = AdminToken {
            id: "v".into(),
            token_hash: hash("secret-v"),
            permissions: bad.clone(),
            ..x.clone()
        };
        let err = tx.create_admin_token(&t).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Invalid {
                    what: "admin token",
                    ..
                }
            ),
            "{bad:?}: {err:?}"
        );
    }
    let same_hash = AdminToken {
        id: "w".into(),
        ..x.clone()
    };
    assert!(matches!(
        tx.create_admin_token(&same_hash).await,
        Err(StoreError::Conflict {
            what: "admin token",
            ..
        })
    ));
    tx.commit().await.unwrap();

    // By created_at, then id.
    assert_eq!(
        store.admin_tokens().await.unwrap(),
        vec![y.clone(), z.clone(), x.clone()]
    );
    assert_eq!(
        store.admin_token_by_hash(&hash("secret-z")).await.unwrap(),
        Some(z.clone())
    );
    assert_eq!(
        store.admin_token_by_hash(&hash("secret-q")).await.unwrap(),
        None
    );

    let mut tx = store.begin().await.unwrap();
    assert!(tx.revoke_admin_token("z", 500).await.unwrap());
    assert!(!tx.revoke_admin_token("z", 600).await.unwrap());
    let err = tx.revoke_admin_token("q", 600).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "admin token", ref name } if name == "q"));
    tx.commit().await.unwrap();
    let found = store
        .admin_token_by_hash(&hash("secret-z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.revoked_at, Some(500));
    assert_eq!(store.admin_tokens().await.unwrap()[1], found);
    assert_eq!(
        store.admin_token_by_hash(&hash("secret-y")).await.unwrap(),
        Some(y)
    );
}

/// Runs the body in a transaction `tx`, commits, and returns how far the counter moved.
macro_rules! moved {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let before = $store.generation().await.unwrap();
        let mut $tx = $store.begin().await.unwrap();
        $body;
        $tx.commit().await.unwrap();
        $store.generation().await.unwrap() - before
    }};
}

async fn generation_moves_with_every_config_change(store: Store, _ctx: Ctx) {
    assert_eq!(store.generation().await.unwrap(), 0);
    let root = RootKey::generate();
    let new_root = RootKey::generate();
    let s = &store;
    assert_eq!(
        moved!(s, |tx| tx.initialize(&root.key_id()).await.unwrap()),
        1
    );
    assert_eq!(
        moved!(s, |tx| tx.create_environment(&env("prod")).await.unwrap()),
        1
    );
    let mut prod = env("prod");
    prod.issuer = "https://other.example".into();
    assert_eq!(
        moved!(s, |tx| tx.update_environment(&prod).await.unwrap()),
        1
    );
    let mut k = key(&root, "prod", "k1", 5, b"secret");
    assert_eq!(moved!(s, |tx| tx.insert_key(&k).await.unwrap()), 1);
    k.retires_at = Some(50);
    assert_eq!(moved!(s, |tx| tx.update_key_times(&k).await.unwrap()), 1);
    assert_eq!(
        moved!(s, |tx| tx
            .create_client(&client("prod", "c"))
            .await
            .unwrap()),
        1
    );
    let mut c = client("prod", "c");
    c.name = "changed".into();
    assert_eq!(moved!(s, |tx| tx.update_client(&c).await.unwrap()), 1);
    assert_eq!(
        moved!(s, |tx| tx.delete_client("prod", "c").await.unwrap()),
        1
    );
    assert_eq!(
        moved!(s, |tx| tx.create_admin_token(&admin("t", 1)).await.unwrap()),
        1
    );
    assert_eq!(
        moved!(s, |tx| assert!(tx
            .revoke_admin_token("t", 2)
            .await
            .unwrap())),
        1
    );

    let before = store.generation().await.unwrap();
    assert_eq!(before, 10);
    store
        .rewrap_all(&root, &new_root, "admin", 100)
        .await
        .unwrap();
    assert_eq!(store.generation().await.unwrap(), before + 1);

    // Several changes in one transaction: one step each.
    let n = moved!(s, |tx| {
        tx.create_environment(&env("dev")).await.unwrap();
        tx.create_client(&client("dev", "c1")).await.unwrap();
        tx.create_client(&client("dev", "c2")).await.unwrap();
        tx.append_audit(AuditEntry {
            at: 1,
            actor: "t".into(),
            action: "x".into(),
            env: None,
            subject: None,
            detail: json!({}),
        })
        .await
        .unwrap();
    });
    assert_eq!(n, 3);
    assert_eq!(store.generation().await.unwrap(), 14);
}

async fn generation_ignores_rollbacks_failures_and_token_writes(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let start = store.generation().await.unwrap();
    assert_eq!(start, 5, "2 environments + 3 clients");

    // Rolled back, or dropped: no movement.
    let mut tx = store.begin().await.unwrap();
    tx.create_client(&client("prod", "rolled")).await.unwrap();
    tx.create_admin_token(&admin("rolled", 1)).await.unwrap();
    tx.rollback().await.unwrap();
    {
        let mut tx = store.begin().await.unwrap();
        tx.create_environment(&env("dropped")).await.unwrap();
    }
    assert_eq!(store.generation().await.unwrap(), start);

    // Failed changes in a committed transaction: no movement either.
    let s = &store;
    let n = moved!(s, |tx| {
        let not_found = |e: StoreError, w: &str, n: &str| {
            assert!(
                matches!(&e, StoreError::NotFound { what, name } if *what == w && name == n),
                "{e:?}"
            )
        };
        let conflict = |e: StoreError, w: &str, n: &str| {
            assert!(
                matches!(&e, StoreError::Conflict { what, name } if *what == w && name == n),
                "{e:?}"
            )
        };
        let ghost = client("prod", "ghost");
        not_found(
            tx.update_client(&ghost).await.unwrap_err(),
            "client",
            "prod/ghost",
        );
        not_found(
            tx.delete_client("prod", "ghost").await.unwrap_err(),
            "client",
            "prod/ghost",
        );
        conflict(
            tx.create_client(&client("prod", "a")).await.unwrap_err(),
            "client",
            "prod/a",
        );
        conflict(
            tx.create_environment(&env("prod")).await.unwrap_err(),
            "environment",
            "prod",
        );
        not_found(
            tx.update_environment(&env("ghost")).await.unwrap_err(),
            "environment",
            "ghost",
        );
        not_found(
            tx.revoke_admin_token("ghost", 1).await.unwrap_err(),
            "admin token",
            "ghost",
        );
    });
    assert_eq!(n, 0);

    // Token-path writes are read directly, not signalled.
    let n = moved!(s, |tx| {
        tx.insert_refresh_token(&refresh("prod", "a", "f", "v"))
            .await
            .unwrap();
        tx.mark_refresh_rotated(&hash("v"), 2).await.unwrap();
        tx.revoke_refresh_family("f", 3).await.unwrap();
        tx.revoke_refresh_token(&hash("v"), 3).await.unwrap();
        tx.delete_expired_refresh_tokens(i64::MAX).await.unwrap();
        tx.revoke_jti("prod", "j", 10, 5).await.unwrap().unwrap();
        tx.purge_revocations(i64::MAX).await.unwrap();
        tx.delete_expired_assertion_jtis(i64::MAX).await.unwrap();
    });
    assert_eq!(n, 0);
    assert!(store
        .use_assertion_jti("prod", "b", "j", 10, 5)
        .await
        .unwrap());
    assert_eq!(store.generation().await.unwrap(), start);

    // An admin token revoked twice moves it once.
    let n = moved!(s, |tx| {
        tx.create_admin_token(&admin("t", 1)).await.unwrap();
        tx.revoke_admin_token("t", 2).await.unwrap();
        tx.revoke_admin_token("t", 3).await.unwrap();
    });
    assert_eq!(n, 2);
}

async fn generation_counts_concurrent_writers(store: Store, _ctx: Ctx) {
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.commit().await.unwrap();
    const TASKS: usize = 4;
    const EACH: usize = 5;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..EACH {
                let mut tx = store.begin().await.unwrap();
                tx.create_client(&client("prod", &format!("c{t}-{i}")))
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
                tx.commit().await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(store.clients("prod").await.unwrap().len(), TASKS * EACH);
    assert_eq!(store.generation().await.unwrap(), 1 + (TASKS * EACH) as i64);
}

async fn keys_all_lists_every_environment(store: Store, _ctx: Ctx) {
    assert!(store.keys_all().await.unwrap().is_empty());
    let root = RootKey::generate();
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.create_environment(&env("dev")).await.unwrap();
    tx.create_environment(&env("empty")).await.unwrap();
    let keys = [
        key(&root, "prod", "p-late", 300, &random_bytes::<16>()),
        key(&root, "prod", "p-early", 100, &random_bytes::<16>()),
        key(&root, "dev", "d-b", 200, &random_bytes::<16>()),
        key(&root, "dev", "d-a", 200, &random_bytes::<16>()),
    ];
    for k in &keys {
        tx.insert_key(k).await.unwrap();
    }
    tx.commit().await.unwrap();
    let all = store.keys_all().await.unwrap();
    // By environment, then activates_at, then kid; every field round-trips.
    assert_eq!(
        all,
        vec![
            keys[3].clone(),
            keys[2].clone(),
            keys[1].clone(),
            keys[0].clone()
        ]
    );
}

/// Every revocation of `env`, as `(jti, exp, revoked_at)` in feed order.
async fn feed(store: &Store, env: &str) -> Vec<(String, i64, i64)> {
    store
        .revocations_since(env, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.jti, r.exp, r.revoked_at))
        .collect()
}

async fn refresh_lineage_and_access_tokens_round_trip(store: Store, ctx: Ctx) {
    with_clients(&store).await;
    let first = RefreshToken {
        access: Some(AccessRef {
            jti: "at-1".into(),
            exp: 3_300,
        }),
        ..refresh("prod", "a", "fam", "v1")
    };
    let second = child("fam", "v2", "v1", 3_100, "at-2", 3_400);
    insert_refresh(&store, &[first.clone(), second.clone()]).await;
    assert_eq!(store.refresh_token(&hash("v1")).await.unwrap(), Some(first));
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.refresh_token_for_update(&hash("v2")).await.unwrap(),
        Some(second)
    );
    drop(tx);
    // A row with half an access token is corrupt, not "no access token".
    ctx.exec("UPDATE refresh_tokens SET access_exp = NULL WHERE access_jti = 'at-2'")
        .await;
    let err = store.refresh_token(&hash("v2")).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

/// A client's `dpop_bound_access_tokens` and a refresh family's DPoP key
/// binding (migration 0007) are stored, read and updated as given.
async fn dpop_bindings_round_trip(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let bound = RefreshToken {
        dpop_jkt: Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into()),
        ..refresh("prod", "a", "fam", "v1")
    };
    let unbound = refresh("prod", "a", "fam2", "v2");
    insert_refresh(&store, &[bound.clone(), unbound.clone()]).await;
    assert_eq!(store.refresh_token(&hash("v1")).await.unwrap(), Some(bound));
    assert_eq!(
        store.refresh_token(&hash("v2")).await.unwrap(),
        Some(unbound)
    );

    assert!(
        !store
            .client("prod", "a")
            .await
            .unwrap()
            .dpop_bound_access_tokens
    );
    let mut c = store.client("prod", "a").await.unwrap();
    c.dpop_bound_access_tokens = true;
    let mut tx = store.begin().await.unwrap();
    tx.update_client(&c).await.unwrap();
    let mut d = client("prod", "d");
    d.dpop_bound_access_tokens = true;
    tx.create_client(&d).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        store
            .client("prod", "a")
            .await
            .unwrap()
            .dpop_bound_access_tokens
    );
    assert_eq!(store.client("prod", "d").await.unwrap(), d);
}

/// An environment's sealed DPoP nonce secret (migration 0010) is stored,
/// read back, cleared, and re-wrapped with the keys by a root-key rotation.
async fn dpop_nonce_secrets_round_trip_and_follow_the_root_key(store: Store, _ctx: Ctx) {
    use keyward_store::sealing::{open_dpop_nonce_secret, seal_dpop_nonce_secret};
    let old = RootKey::generate();
    let mut tx = store.begin().await.unwrap();
    tx.initialize_root(&old).await.unwrap();
    let mut prod = env("prod");
    prod.dpop_nonce_secret = Some(seal_dpop_nonce_secret(&old, "prod").unwrap());
    tx.create_environment(&prod).await.unwrap();
    tx.create_environment(&env("dev")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.environment("prod").await.unwrap(), prod);
    assert!(!store
        .environment("dev")
        .await
        .unwrap()
        .requires_dpop_nonce());
    let sealed = prod.dpop_nonce_secret.clone().unwrap();
    let secret = open_dpop_nonce_secret(&old, "prod", &sealed).unwrap();
    assert_eq!(secret.len(), 32);
    // Bound to its environment: it does not open as another's.
    assert!(open_dpop_nonce_secret(&old, "dev", &sealed).is_err());

    let new = RootKey::generate();
    store.rewrap_all(&old, &new, "test", 1).await.unwrap();
    let moved = store
        .environment("prod")
        .await
        .unwrap()
        .dpop_nonce_secret
        .unwrap();
    assert_ne!(moved, sealed);
    assert!(open_dpop_nonce_secret(&old, "prod", &moved).is_err());
    assert_eq!(
        open_dpop_nonce_secret(&new, "prod", &moved).unwrap(),
        secret
    );
    assert!(!store
        .environment("dev")
        .await
        .unwrap()
        .requires_dpop_nonce());

    // Cleared by an update.
    let mut off = store.environment("prod").await.unwrap();
    off.dpop_nonce_secret = None;
    let mut tx = store.begin().await.unwrap();
    tx.update_environment(&off).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!store
        .environment("prod")
        .await
        .unwrap()
        .requires_dpop_nonce());
}

async fn family_revocation_puts_its_access_tokens_on_the_feed(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let at = 10_000;
    let fam = [
        // Recorded before lineage was: no access token known.
        refresh("prod", "a", "fam", "r0"),
        child(
            "fam",
            "r1",
            "r0",
            9_000,
            "j-expired-long-ago",
            at - REVOCATION_EXPIRY_MARGIN_SECS,
        ),
        child("fam", "r2", "r1", 9_500, "j-within-margin", at - 10),
        child("fam", "r3", "r2", 9_900, "j-live", at + 300),
    ];
    let other = child("other", "o1", "x", 9_900, "j-other", at + 300);
    insert_refresh(&store, &fam).await;
    insert_refresh(&store, std::slice::from_ref(&other)).await;
    // Revoked on its own earlier: keeps its first entry and seq.
    let mut tx = store.begin().await.unwrap();
    let early = tx
        .revoke_jti("prod", "j-within-margin", at - 10, 9_990)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();

    // Rolled back: nothing changes.
    let mut tx = store.begin().await.unwrap();
    tx.revoke_refresh_family("fam", at).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(feed(&store, "prod").await.len(), 1);
    assert_eq!(
        store
            .refresh_token(&hash("r3"))
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.revoke_refresh_family("fam", at).await.unwrap(),
        FamilyRevocation {
            refresh_tokens: 4,
            access_tokens: 1
        }
    );
    tx.commit().await.unwrap();
    assert_eq!(
        feed(&store, "prod").await,
        vec![
            ("j-within-margin".to_string(), at - 10, 9_990),
            ("j-live".to_string(), at + 300, at),
        ]
    );
    assert_eq!(
        store.revocations_since("prod", 0, 1).await.unwrap()[0],
        early
    );
    assert!(store.is_jti_revoked("prod", "j-live").await.unwrap());
    assert!(!store
        .is_jti_revoked("prod", "j-expired-long-ago")
        .await
        .unwrap());
    assert!(!store.is_jti_revoked("prod", "j-other").await.unwrap());
    assert!(feed(&store, "dev").await.is_empty());
    for t in &fam {
        let got = store.refresh_token(&t.token_hash).await.unwrap().unwrap();
        assert_eq!(got.revoked_at, Some(at));
    }
    assert_eq!(store.refresh_token(&hash("o1")).await.unwrap(), Some(other));

    // Again: nothing new.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.revoke_refresh_family("fam", at + 5).await.unwrap(),
        FamilyRevocation::default()
    );
    tx.commit().await.unwrap();
    assert_eq!(feed(&store, "prod").await.len(), 2);
}

async fn supersede_takes_only_an_unused_successor(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let parent = RefreshToken {
        rotated_at: Some(3_100),
        ..refresh("prod", "a", "fam", "p")
    };
    let s1 = child("fam", "s1", "p", 3_100, "j-s1", 3_400);
    insert_refresh(&store, &[parent, s1.clone()]).await;

    // Unknown parent, or a token nobody was rotated from: none.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.supersede_refresh_successor(&hash("nope"), 3_150)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        tx.supersede_refresh_successor(&hash("s1"), 3_150)
            .await
            .unwrap(),
        None
    );
    tx.commit().await.unwrap();

    // Rolled back: s1 stays unused and its access token live.
    let mut tx = store.begin().await.unwrap();
    assert!(tx
        .supersede_refresh_successor(&hash("p"), 3_150)
        .await
        .unwrap()
        .is_some());
    tx.rollback().await.unwrap();
    assert_eq!(
        store.refresh_token(&hash("s1")).await.unwrap(),
        Some(s1.clone())
    );
    assert!(feed(&store, "prod").await.is_empty());

    // The unused successor is returned as it was, marked rotated, and its
    // access token goes on the feed.
    let mut tx = store.begin().await.unwrap();
    let got = tx
        .supersede_refresh_successor(&hash("p"), 3_150)
        .await
        .unwrap();
    assert_eq!(got, Some(s1.clone()));
    let s2 = child("fam", "s2", "p", 3_150, "j-s2", 3_450);
    tx.insert_refresh_token(&s2).await.unwrap();
    tx.commit().await.unwrap();
    let s1_now = store.refresh_token(&hash("s1")).await.unwrap().unwrap();
    assert_eq!((s1_now.rotated_at, s1_now.revoked_at), (Some(3_150), None));
    assert_eq!(
        feed(&store, "prod").await,
        vec![("j-s1".to_string(), 3_400, 3_150)]
    );

    // The second reissue supersedes the new successor, not the old one.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.supersede_refresh_successor(&hash("p"), 3_160)
            .await
            .unwrap(),
        Some(s2.clone())
    );
    tx.rollback().await.unwrap();

    // A used successor (rotated into s3) is not superseded...
    let mut tx = store.begin().await.unwrap();
    assert!(tx.mark_refresh_rotated(&hash("s2"), 3_170).await.unwrap());
    tx.insert_refresh_token(&child("fam", "s3", "s2", 3_170, "j-s3", 3_470))
        .await
        .unwrap();
    assert_eq!(
        tx.supersede_refresh_successor(&hash("p"), 3_180)
            .await
            .unwrap(),
        None
    );
    tx.commit().await.unwrap();
    // ...nor a revoked one.
    let mut tx = store.begin().await.unwrap();
    assert!(tx.revoke_refresh_token(&hash("s3"), 3_190).await.unwrap());
    assert_eq!(
        tx.supersede_refresh_successor(&hash("s2"), 3_200)
            .await
            .unwrap(),
        None
    );
    tx.commit().await.unwrap();
    assert_eq!(feed(&store, "prod").await.len(), 1);
    assert_eq!(
        store
            .refresh_token(&hash("s2"))
            .await
            .unwrap()
            .unwrap()
            .rotated_at,
        Some(3_170)
    );
}

async fn supersede_waits_for_a_concurrent_exchange_of_the_successor(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let parent = RefreshToken {
        rotated_at: Some(3_100),
        ..refresh("prod", "a", "fam", "p")
    };
    insert_refresh(
        &store,
        &[parent, child("fam", "s1", "p", 3_100, "j-s1", 3_400)],
    )
    .await;

    // The successor is being exchanged by its holder...
    let mut tx = store.begin().await.unwrap();
    let s1 = tx
        .refresh_token_for_update(&hash("s1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s1.rotated_at, None);
    // ...while its parent comes back within the grace window.
    let reissue = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let got = tx
                .supersede_refresh_successor(&hash("p"), 3_150)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            got
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reissue.is_finished(),
        "the reissue did not wait for the exchange"
    );
    assert!(tx.mark_refresh_rotated(&hash("s1"), 3_120).await.unwrap());
    tx.commit().await.unwrap();
    // The successor was used: nothing to supersede (the caller sees reuse).
    assert_eq!(reissue.await.unwrap(), None);
    assert_eq!(
        store
            .refresh_token(&hash("s1"))
            .await
            .unwrap()
            .unwrap()
            .rotated_at,
        Some(3_120)
    );
    assert!(feed(&store, "prod").await.is_empty());
}

/// Reading a token to rotate it holds its family (any other transaction
/// taking that family's lock waits) and no other family.
async fn refresh_token_for_update_takes_the_family_lock(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    insert_refresh(
        &store,
        &[
            refresh("prod", "a", "fam", "v1"),
            refresh("prod", "a", "other", "o1"),
        ],
    )
    .await;
    let mut tx = store.begin().await.unwrap();
    tx.refresh_token_for_update(&hash("v1"))
        .await
        .unwrap()
        .unwrap();
    // Again in the same transaction: no wait on itself.
    tx.lock_refresh_family("fam").await.unwrap();
    assert!(tx
        .refresh_token_for_update(&hash("v1"))
        .await
        .unwrap()
        .is_some());
    let lock = |family: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tx = store.begin().await?;
            tx.lock_refresh_family(family).await?;
            tx.commit().await
        })
    };
    if store.backend() == Backend::Postgres {
        // (On SQLite a second writer waits for any other anyway.)
        tokio::time::timeout(Duration::from_secs(5), lock("other"))
            .await
            .expect("another family is not held")
            .unwrap()
            .unwrap();
    }
    let same = lock("fam");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!same.is_finished(), "the family lock was not held");
    tx.commit().await.unwrap();
    same.await.unwrap().unwrap();
}

/// A family revoked (reuse detected, or RFC 7009) while its head is being
/// rotated in another transaction: the successor that transaction inserts
/// is revoked too and its access token goes on the feed. Once through the
/// path the issuer takes (the presented token read with
/// `refresh_token_for_update`, then the family revoked), once by a caller
/// that calls `revoke_refresh_family` alone.
async fn family_revocation_catches_a_rotation_in_flight(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    for (fam, via_presented_token) in [("fam-a", true), ("fam-b", false)] {
        let name = |v: &str| format!("{fam}-{v}");
        let r0 = RefreshToken {
            rotated_at: Some(3_100),
            access: Some(AccessRef {
                jti: name("j0"),
                exp: 20_000,
            }),
            ..refresh("prod", "a", fam, &name("r0"))
        };
        let r1 = child(fam, &name("r1"), &name("r0"), 3_100, &name("j1"), 20_000);
        insert_refresh(&store, &[r0, r1]).await;

        // The holder of r1 exchanges it: r1 locked and marked, r2 inserted,
        // not committed yet...
        let mut rotation = store.begin().await.unwrap();
        let head = rotation
            .refresh_token_for_update(&hash(&name("r1")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head.rotated_at, None);
        assert!(rotation
            .mark_refresh_rotated(&hash(&name("r1")), 3_200)
            .await
            .unwrap());
        rotation
            .insert_refresh_token(&child(
                fam,
                &name("r2"),
                &name("r1"),
                3_200,
                &name("j2"),
                20_000,
            ))
            .await
            .unwrap();
        // ...while the family is revoked.
        let revocation = tokio::spawn({
            let store = store.clone();
            let replayed = hash(&name("r0"));
            async move {
                let mut tx = store.begin().await?;
                if via_presented_token {
                    let t = tx.refresh_token_for_update(&replayed).await?.unwrap();
                    assert!(t.rotated_at.is_some());
                }
                let n = tx.revoke_refresh_family(fam, 3_250).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(n)
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        rotation.commit().await.unwrap();
        let revoked = revocation.await.unwrap().unwrap();
        assert_eq!(
            revoked,
            FamilyRevocation {
                refresh_tokens: 3,
                access_tokens: 3
            },
            "{fam}"
        );
        for v in ["r0", "r1", "r2"] {
            let t = store.refresh_token(&hash(&name(v))).await.unwrap().unwrap();
            assert_eq!(t.revoked_at, Some(3_250), "{fam}: {v} not revoked");
        }
        for j in ["j0", "j1", "j2"] {
            assert!(
                store.is_jti_revoked("prod", &name(j)).await.unwrap(),
                "{fam}: {j} not on the feed"
            );
        }
    }
}

/// A grace reissue (the presented token's successor superseded) and a
/// reuse detection (the family revoked) in one family at the same moment:
/// both complete (no deadlock, no error) and the family ends revoked,
/// including the token the reissue issued.
async fn grace_reissue_and_reuse_detection_do_not_deadlock(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let q = RefreshToken {
        rotated_at: Some(3_000),
        ..refresh("prod", "a", "fam", "q")
    };
    let p = RefreshToken {
        rotated_at: Some(3_100),
        ..child("fam", "p", "q", 3_000, "j-p", 20_000)
    };
    let s1 = child("fam", "s1", "p", 3_100, "j-s1", 20_000);
    insert_refresh(&store, &[q, p, s1]).await;

    // p comes back within the grace window...
    let mut grace = store.begin().await.unwrap();
    let got = grace
        .refresh_token_for_update(&hash("p"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.rotated_at, Some(3_100));
    // ...while q, rotated long ago, is replayed.
    let reuse = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await?;
            let t = tx.refresh_token_for_update(&hash("q")).await?.unwrap();
            let n = tx.revoke_refresh_family(&t.family_id, 3_300).await?;
            tx.append_audit(AuditEntry {
                at: 3_300,
                actor: "client:a".into(),
                action: "refresh.reuse_detected".into(),
                env: Some("prod".into()),
                subject: Some(t.subject.clone()),
                detail: json!({"family": t.family_id}),
            })
            .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(n)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reissue = async {
        let lost = grace.supersede_refresh_successor(&hash("p"), 3_150).await?;
        grace
            .insert_refresh_token(&child("fam", "s2", "p", 3_150, "j-s2", 20_000))
            .await?;
        grace
            .append_audit(AuditEntry {
                at: 3_150,
                actor: "client:a".into(),
                action: "refresh.grace_reissue".into(),
                env: Some("prod".into()),
                subject: Some("alice".into()),
                detail: json!({"family": "fam"}),
            })
            .await?;
        grace.commit().await?;
        Ok::<_, StoreError>(lost)
    }
    .await;
    let reused = reuse.await.unwrap();
    let lost = reissue.expect("the grace reissue failed");
    let revoked = reused.expect("the reuse detection failed");
    assert_eq!(lost.map(|t| t.token_hash), Some(hash("s1")));
    // The reissue committed first; the revocation took its token too.
    assert_eq!(
        revoked,
        FamilyRevocation {
            refresh_tokens: 4,
            access_tokens: 2
        }
    );
    for v in ["q", "p", "s1", "s2"] {
        let t = store.refresh_token(&hash(v)).await.unwrap().unwrap();
        assert_eq!(t.revoked_at, Some(3_300), "{v} not revoked");
    }
    for j in ["j-p", "j-s1", "j-s2"] {
        assert!(
            store.is_jti_revoked("prod", j).await.unwrap(),
            "{j} not on the feed"
        );
    }
    assert!(store.verify_audit().await.unwrap().first_broken.is_none());
}

/// A client deleted (its families revoked first) while one of its tokens
/// is being rotated: the successor's access token goes on the feed too.
async fn client_revocation_catches_a_rotation_in_flight(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let r0 = RefreshToken {
        rotated_at: Some(3_100),
        access: Some(AccessRef {
            jti: "j0".into(),
            exp: 20_000,
        }),
        ..refresh("prod", "a", "fam", "r0")
    };
    let r1 = child("fam", "r1", "r0", 3_100, "j1", 20_000);
    let other = child("fam-2", "o1", "o0", 3_100, "j-o1", 20_000);
    insert_refresh(&store, &[r0, r1, other]).await;

    let mut rotation = store.begin().await.unwrap();
    rotation
        .refresh_token_for_update(&hash("r1"))
        .await
        .unwrap()
        .unwrap();
    assert!(rotation
        .mark_refresh_rotated(&hash("r1"), 3_200)
        .await
        .unwrap());
    rotation
        .insert_refresh_token(&child("fam", "r2", "r1", 3_200, "j2", 20_000))
        .await
        .unwrap();
    let deletion = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await?;
            let n = tx
                .revoke_client_refresh_families("prod", "a", 3_250)
                .await?;
            tx.delete_client("prod", "a").await?;
            tx.commit().await?;
            Ok::<_, StoreError>(n)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    rotation.commit().await.unwrap();
    assert_eq!(
        deletion.await.unwrap().unwrap(),
        FamilyRevocation {
            refresh_tokens: 4,
            access_tokens: 4
        }
    );
    let jtis: BTreeSet<String> = feed(&store, "prod")
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(jtis, ["j0", "j1", "j2", "j-o1"].map(String::from).into());
    for v in ["r0", "r1", "r2", "o1"] {
        assert_eq!(store.refresh_token(&hash(v)).await.unwrap(), None, "{v}");
    }
}

async fn client_families_revoked_before_deletion(store: Store, _ctx: Ctx) {
    with_clients(&store).await;
    let at = 10_000;
    let mine = [
        child("fam-1", "m1", "m0", 9_000, "j-m1", at + 100),
        child("fam-2", "m2", "m9", 9_100, "j-m2", at + 200),
        RefreshToken {
            revoked_at: Some(9_500),
            ..child("fam-3", "m3", "m8", 9_200, "j-m3", at + 300)
        },
    ];
    let dev = RefreshToken {
        env: "dev".into(),
        ..child("fam-4", "d1", "d0", 9_000, "j-m1", at + 100)
    };
    insert_refresh(&store, &mine).await;
    insert_refresh(&store, std::slice::from_ref(&dev)).await;

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.revoke_client_refresh_families("prod", "a", at)
            .await
            .unwrap(),
        FamilyRevocation {
            refresh_tokens: 2,
            access_tokens: 3
        }
    );
    tx.delete_client("prod", "a").await.unwrap();
    tx.commit().await.unwrap();
    let jtis: Vec<String> = feed(&store, "prod")
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(jtis, ["j-m1", "j-m2", "j-m3"]);
    // The same jti in another environment is another token.
    assert!(!store.is_jti_revoked("dev", "j-m1").await.unwrap());
    assert_eq!(store.refresh_token(&hash("d1")).await.unwrap(), Some(dev));

    // An unknown client has nothing to revoke.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.revoke_client_refresh_families("prod", "ghost", at)
            .await
            .unwrap(),
        FamilyRevocation::default()
    );
}

/// Migration 0006 on a store whose admin tokens predate grants: each
/// existing token holds `*`, has no owner, no expiry and no creator, and
/// keeps working (not revoked).
async fn admin_tokens_made_before_grants_hold_every_permission(store: Store, ctx: Ctx) {
    store.close().await;
    // The store as it was before 0006: its columns gone, the migration unrecorded.
    for column in ["permissions", "owner", "expires_at", "created_by"] {
        ctx.exec(&format!("ALTER TABLE admin_tokens DROP COLUMN {column}"))
            .await;
    }
    ctx.exec("DELETE FROM _sqlx_migrations WHERE version = 6")
        .await;
    let old_hash = hash("secret-old");
    let hex: String = old_hash.iter().map(|b| format!("{b:02x}")).collect();
    let literal = if ctx.db_file.is_some() {
        format!("X'{hex}'")
    } else {
        format!("'\\x{hex}'::bytea")
    };
    ctx.exec(&format!(
        "INSERT INTO admin_tokens (id, name, token_hash, created_at, revoked_at) \
         VALUES ('old', 'ci', {literal}, 5, NULL)"
    ))
    .await;
    let store = Store::open_url(&ctx.url).await.unwrap();
    let t = store.admin_token_by_hash(&old_hash).await.unwrap().unwrap();
    assert_eq!(t.id, "old");
    assert_eq!(t.permissions, ["*"]);
    assert_eq!(
        (&t.owner, t.expires_at, &t.created_by),
        (&None, None, &None)
    );
    assert!(t.is_live(i64::MAX));
}
