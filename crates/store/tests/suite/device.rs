//! Device requests ([`keyward_store::device`], RFC 8628), once per backend:
//! a user code is confirmed once and only while pending and unexpired, a
//! login ends once, polls within the interval grow it, the tokens are
//! issued once; taken along when their client or environment goes.

use keyward_jose::crypto::sha256;
use keyward_store::{DeviceAuthorization, DeviceStatus, Poll, Store};

use crate::common::Ctx;

crate::backend_suite!(
    device_requests_move_once_through_their_states,
    polls_within_the_interval_slow_the_device_down,
    deleting_a_client_or_environment_takes_device_requests_along,
);

fn h(s: &str) -> Vec<u8> {
    sha256(s.as_bytes()).to_vec()
}

fn device(name: &str, client: &str, at: i64) -> DeviceAuthorization {
    DeviceAuthorization {
        device_hash: h(&format!("device-{name}")),
        user_code_hash: h(&format!("user-{name}")),
        env: "prod".into(),
        client_id: client.into(),
        scope: "openid offline_access".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        status: DeviceStatus::Pending,
        state_hash: None,
        code_hash: None,
        error: None,
        interval_secs: 5,
        last_poll_at: None,
        created_at: at,
        expires_at: at + 600,
        consumed_at: None,
    }
}

async fn insert(store: &Store, d: &DeviceAuthorization) {
    let mut tx = store.begin().await.unwrap();
    tx.insert_device_authorization(d).await.unwrap();
    tx.commit().await.unwrap();
}

async fn device_requests_move_once_through_their_states(store: Store, _ctx: Ctx) {
    super::login::setup(&store).await;
    let a = device("a", "app", 5_000);
    let b = device("b", "app", 5_000);
    insert(&store, &a).await;
    insert(&store, &b).await;
    // The same user code twice is refused.
    let mut tx = store.begin().await.unwrap();
    let mut twin = device("c", "app", 5_000);
    twin.user_code_hash = a.user_code_hash.clone();
    assert!(tx.insert_device_authorization(&twin).await.is_err());
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.count_open_device_authorizations("prod", "app", 5_001)
            .await
            .unwrap(),
        2
    );
    drop(tx);

    // Pending and unexpired: shown; another environment's code: not.
    let shown = store
        .pending_device_authorization(&a.user_code_hash, "prod", 5_001)
        .await
        .unwrap();
    assert_eq!(shown.as_ref(), Some(&a));
    assert_eq!(
        store
            .pending_device_authorization(&a.user_code_hash, "dev", 5_001)
            .await
            .unwrap(),
        None
    );
    // Confirmed once: then it is no longer pending.
    let mut tx = store.begin().await.unwrap();
    let entered = tx
        .enter_user_code(&a.user_code_hash, "prod", &h("state-a"), 5_002)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entered.status, DeviceStatus::Entered);
    assert_eq!(entered.state_hash, Some(h("state-a")));
    assert_eq!(
        tx.enter_user_code(&a.user_code_hash, "prod", &h("state-x"), 5_002)
            .await
            .unwrap(),
        None
    );
    // Not at or after its expiry.
    assert_eq!(
        tx.enter_user_code(&b.user_code_hash, "prod", &h("state-b"), 5_600)
            .await
            .unwrap(),
        None
    );
    tx.commit().await.unwrap();

    // The login ends once, by its state, in its environment.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.finish_device_login(&h("state-a"), "dev", Ok(&h("code")), 5_003)
            .await
            .unwrap(),
        None
    );
    let approved = tx
        .finish_device_login(&h("state-a"), "prod", Ok(&h("code")), 5_003)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(approved.status, DeviceStatus::Approved);
    assert_eq!(approved.code_hash, Some(h("code")));
    assert_eq!(
        tx.finish_device_login(&h("state-a"), "prod", Err("access_denied"), 5_003)
            .await
            .unwrap(),
        None
    );
    tx.commit().await.unwrap();

    // Redeemed once; a pending request cannot be.
    let mut tx = store.begin().await.unwrap();
    assert!(!tx
        .consume_device_authorization(&b.device_hash, 5_004)
        .await
        .unwrap());
    assert!(tx
        .consume_device_authorization(&a.device_hash, 5_004)
        .await
        .unwrap());
    assert!(!tx
        .consume_device_authorization(&a.device_hash, 5_005)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    let a_now = store
        .device_authorization(&a.device_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a_now.consumed_at, Some(5_004));
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.count_open_device_authorizations("prod", "app", 5_005)
            .await
            .unwrap(),
        1
    );
    drop(tx);

    // A refusal is recorded with its error.
    let d = device("d", "app", 5_000);
    insert(&store, &d).await;
    let mut tx = store.begin().await.unwrap();
    tx.enter_user_code(&d.user_code_hash, "prod", &h("state-d"), 5_010)
        .await
        .unwrap()
        .unwrap();
    let denied = tx
        .finish_device_login(&h("state-d"), "prod", Err("access_denied"), 5_011)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(denied.status, DeviceStatus::Denied);
    assert_eq!(denied.error.as_deref(), Some("access_denied"));

    // Requests expired over an hour ago are forgotten on the next insert.
    insert(&store, &device("e", "app", 5_600 + 3601)).await;
    assert_eq!(store.count_device_authorizations("prod").await.unwrap(), 1);
    // The scheduler's purge keeps them an hour after expiry too (a poll is
    // told expired_token, not that the code is unknown).
    let mut tx = store.begin().await.unwrap();
    tx.purge_login_records(5_600 + 3601 + 600 + 3599)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_device_authorizations("prod").await.unwrap(), 1);
    let mut tx = store.begin().await.unwrap();
    tx.purge_login_records(5_600 + 3601 + 600 + 3601)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_device_authorizations("prod").await.unwrap(), 0);
}

async fn polls_within_the_interval_slow_the_device_down(store: Store, _ctx: Ctx) {
    super::login::setup(&store).await;
    let a = device("a", "app", 5_000);
    insert(&store, &a).await;
    let poll = |at: i64| {
        let store = store.clone();
        let hash = a.device_hash.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let p = tx.poll_device_authorization(&hash, at).await.unwrap();
            tx.commit().await.unwrap();
            p
        }
    };
    assert!(matches!(poll(5_001).await, Some(Poll::Polled(_))));
    // 4 s later: too soon, and the interval is now 10 s.
    let too_soon = |p: Option<Poll>| match p {
        Some(Poll::TooSoon(d)) => d.interval_secs,
        other => panic!("{other:?}"),
    };
    assert_eq!(too_soon(poll(5_005).await), 10);
    // 5 s after the last poll is still too soon (10 s now): 15 s.
    assert_eq!(too_soon(poll(5_006).await), 15);
    match poll(5_016).await {
        Some(Poll::Polled(d)) => {
            assert_eq!(d.interval_secs, 15);
            assert_eq!(d.last_poll_at, Some(5_001));
        }
        other => panic!("{other:?}"),
    }
    let now = store
        .device_authorization(&a.device_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.last_poll_at, Some(5_016));
    // Unknown: nothing.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.poll_device_authorization(&h("nope"), 5_020)
            .await
            .unwrap(),
        None
    );
    drop(tx);
    // Once expired, polls are not limited (the answer is expired_token).
    assert!(matches!(poll(5_600).await, Some(Poll::Polled(_))));
    assert!(matches!(poll(5_601).await, Some(Poll::Polled(_))));
}

async fn deleting_a_client_or_environment_takes_device_requests_along(store: Store, _ctx: Ctx) {
    super::login::setup(&store).await;
    insert(&store, &device("a", "app", 5_000)).await;
    let mut tx = store.begin().await.unwrap();
    tx.delete_client("prod", "app").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_device_authorizations("prod").await.unwrap(), 0);
    insert(&store, &device("b", "app", 5_000)).await;
    let mut tx = store.begin().await.unwrap();
    tx.delete_environment("prod").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.count_device_authorizations("prod").await.unwrap(), 0);
}
