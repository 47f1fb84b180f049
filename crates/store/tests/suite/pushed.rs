//! Pushed authorization requests ([`keyward_store::pushed`]), once per
//! backend: used once, only by their client in their environment, only
//! before they expire; taken along when their client or environment goes.

use keyward_jose::crypto::sha256;
use keyward_store::{PushedRequest, Store};

use crate::common::Ctx;

crate::backend_suite!(
    pushed_requests_are_used_once_by_their_client_before_expiry,
    deleting_a_client_or_environment_takes_pushed_requests_along,
);

fn pushed(hash: &str, client: &str, at: i64) -> PushedRequest {
    PushedRequest {
        uri_hash: sha256(hash.as_bytes()).to_vec(),
        env: "prod".into(),
        client_id: client.into(),
        request: r#"{"client_id":"x"}"#.into(),
        created_at: at,
        expires_at: at + 60,
        used_at: None,
    }
}

async fn setup(store: &Store) {
    super::login::setup(store).await;
}

async fn pushed_requests_are_used_once_by_their_client_before_expiry(store: Store, _ctx: Ctx) {
    setup(&store).await;
    let a = pushed("a", "app", 5_000);
    let b = pushed("b", "app", 5_000);
    let mut tx = store.begin().await.unwrap();
    tx.insert_pushed_request(&a).await.unwrap();
    tx.insert_pushed_request(&b).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_pushed_requests("prod").await.unwrap(), 2);
    // The same hash twice is refused (PostgreSQL then aborts that transaction).
    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_pushed_request(&a).await.is_err());
    drop(tx);

    let mut tx = store.begin().await.unwrap();
    // Another client's, another environment's, or unknown: nothing used.
    assert_eq!(
        tx.use_pushed_request(&a.uri_hash, "prod", "web", 5_001)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        tx.use_pushed_request(&a.uri_hash, "dev", "app", 5_001)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        tx.use_pushed_request(&sha256(b"c"), "prod", "app", 5_001)
            .await
            .unwrap(),
        None
    );
    // Its client, in time: once.
    let used = tx
        .use_pushed_request(&a.uri_hash, "prod", "app", 5_001)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        used,
        PushedRequest {
            used_at: Some(5_001),
            ..a.clone()
        }
    );
    assert_eq!(
        tx.use_pushed_request(&a.uri_hash, "prod", "app", 5_002)
            .await
            .unwrap(),
        None
    );
    // At its expiry: no longer.
    assert_eq!(
        tx.use_pushed_request(&b.uri_hash, "prod", "app", 5_060)
            .await
            .unwrap(),
        None
    );
    tx.commit().await.unwrap();

    // Requests expired over an hour ago are forgotten on the next push.
    let mut tx = store.begin().await.unwrap();
    tx.insert_pushed_request(&pushed("d", "app", 5_061 + 3600))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_pushed_requests("prod").await.unwrap(), 1);
}

async fn deleting_a_client_or_environment_takes_pushed_requests_along(store: Store, _ctx: Ctx) {
    setup(&store).await;
    let mut tx = store.begin().await.unwrap();
    tx.insert_pushed_request(&pushed("a", "app", 5_000))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.delete_client("prod", "app").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_pushed_requests("prod").await.unwrap(), 0);
    let mut tx = store.begin().await.unwrap();
    tx.insert_pushed_request(&pushed("b", "app", 5_000))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.delete_environment("prod").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_pushed_requests("prod").await.unwrap(), 0);
}
