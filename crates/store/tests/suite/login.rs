//! What browser logins keep ([`keyward_store::login`]), once per backend:
//! login settings, browser sessions, single-use challenges and verifiers,
//! remembered consents, single-use authorization codes.

use keyward_jose::crypto::sha256;
use keyward_store::{
    AccessRef, AuthorizationCode, BrowserSession, Client, ClientAuth, ClientLogin, Consent,
    Decision, LoginRequest, LoginSettings, RefreshToken, RequestKind, SessionLogin, Store,
    StoreError,
};

use super::env;
use crate::common::Ctx;

crate::backend_suite!(
    login_settings_round_trip_and_move_the_counter,
    client_login_fields_round_trip,
    browser_sessions_log_in_and_end,
    challenges_are_decided_once_and_verifiers_used_once,
    expired_challenges_cannot_be_decided,
    consents_are_remembered_and_replaced,
    codes_are_used_once_and_record_what_they_issued,
    userinfo_claims_follow_the_code_and_its_refresh_family,
    deleting_a_client_or_environment_takes_login_records_along,
    purge_deletes_only_expired_login_records,
);

fn h(s: &str) -> Vec<u8> {
    sha256(s.as_bytes()).to_vec()
}

fn client(env: &str, id: &str) -> Client {
    Client {
        env: env.into(),
        client_id: id.into(),
        name: format!("app {id}"),
        auth: ClientAuth::None,
        secret_hash: None,
        jwks: None,
        jwks_uri: None,
        scopes: vec!["openid".into(), "offline_access".into()],
        audiences: vec![],
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        access_token_ttl_secs: None,
        refresh_token_ttl_secs: None,
        dpop_bound_access_tokens: false,
        mtls: Default::default(),
        login: ClientLogin {
            redirect_uris: vec![
                "https://rp.example/cb".into(),
                "http://127.0.0.1:8080/cb".into(),
            ],
            post_logout_redirect_uris: vec!["https://rp.example/bye".into()],
            first_party: true,
            require_par: false,
        },
        exchange_issuers: Vec::new(),
        created_at: 2_000,
        updated_at: 2_000,
    }
}

pub(crate) async fn setup(store: &Store) {
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.create_client(&client("prod", "app")).await.unwrap();
    tx.commit().await.unwrap();
}

fn session(hash: &[u8], sid: &str) -> BrowserSession {
    BrowserSession {
        session_hash: hash.to_vec(),
        env: "prod".into(),
        sid: sid.into(),
        subject: None,
        auth_time: None,
        acr: None,
        amr: vec![],
        claims: None,
        remember_until: None,
        created_at: 3_000,
        expires_at: 3_000 + 86_400,
        ended_at: None,
    }
}

fn request(challenge: &str, kind: RequestKind, session: &[u8]) -> LoginRequest {
    LoginRequest {
        challenge_hash: h(challenge),
        kind,
        env: "prod".into(),
        client_id: "app".into(),
        session_hash: session.to_vec(),
        request: r#"{"client_id":"app"}"#.into(),
        subject: None,
        login: None,
        skip: false,
        created_at: 3_000,
        expires_at: 3_600,
        decided_at: None,
        outcome: None,
        verifier_hash: None,
        verified_at: None,
    }
}

fn code(name: &str) -> AuthorizationCode {
    AuthorizationCode {
        code_hash: h(name),
        env: "prod".into(),
        client_id: "app".into(),
        redirect_uri: "https://rp.example/cb".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        nonce: Some("n-1".into()),
        scope: vec!["openid".into(), "offline_access".into()],
        subject: "alice".into(),
        auth_time: 3_000,
        acr: Some("urn:pwd".into()),
        amr: vec!["pwd".into(), "otp".into()],
        sid: "sid-1".into(),
        claims: r#"{"email":"alice@example.com"}"#.into(),
        issued_at: 3_000,
        expires_at: 3_060,
        used_at: None,
        access_jti: None,
        access_exp: None,
        family_id: None,
    }
}

async fn login_settings_round_trip_and_move_the_counter(store: Store, _ctx: Ctx) {
    setup(&store).await;
    assert_eq!(
        store.login_settings("prod").await.unwrap(),
        LoginSettings::default()
    );
    let before = store.generation().await.unwrap();
    let s = LoginSettings {
        login_url: Some("https://login.example/in?tenant=a".into()),
        consent_url: None,
    };
    let mut tx = store.begin().await.unwrap();
    tx.set_login_settings("prod", &s).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.login_settings("prod").await.unwrap(), s);
    assert_eq!(
        s.effective_consent_url(),
        Some("https://login.example/in?tenant=a")
    );
    assert!(store.generation().await.unwrap() > before);
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        tx.set_login_settings("nope", &s).await,
        Err(StoreError::NotFound { .. })
    ));
    drop(tx);
    assert!(matches!(
        store.login_settings("nope").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn client_login_fields_round_trip(store: Store, _ctx: Ctx) {
    setup(&store).await;
    let got = store.client("prod", "app").await.unwrap();
    assert_eq!(got, client("prod", "app"));
    assert_eq!(got.auth, ClientAuth::None);
    let mut changed = got.clone();
    changed.login.redirect_uris = vec!["https://rp.example/other".into()];
    changed.login.first_party = false;
    let mut tx = store.begin().await.unwrap();
    tx.update_client(&changed).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.client("prod", "app").await.unwrap(), changed);
}

async fn browser_sessions_log_in_and_end(store: Store, _ctx: Ctx) {
    setup(&store).await;
    let mut tx = store.begin().await.unwrap();
    tx.insert_browser_session(&session(&h("cookie"), "sid-1"))
        .await
        .unwrap();
    // A second session with the same sid is refused.
    assert!(matches!(
        tx.insert_browser_session(&session(&h("other"), "sid-1"))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    tx.insert_browser_session(&session(&h("cookie"), "sid-1"))
        .await
        .unwrap();
    let login = SessionLogin {
        subject: "alice".into(),
        auth_time: 3_100,
        acr: Some("urn:pwd".into()),
        amr: vec!["pwd".into()],
        claims: r#"{"name":"Alice"}"#.into(),
        remember_until: Some(4_000),
    };
    tx.insert_login_request(&request("pending", RequestKind::Login, &h("cookie")))
        .await
        .unwrap();
    tx.set_session_login(&h("cookie"), &h("renewed"), &login)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The login renewed the session's secret: the old cookie finds nothing.
    assert!(store.browser_session(&h("cookie")).await.unwrap().is_none());
    // ... and the session's pending requests follow it.
    let pending = store.login_request(&h("pending")).await.unwrap().unwrap();
    assert_eq!(pending.session_hash, h("renewed"));
    let s = store.browser_session(&h("renewed")).await.unwrap().unwrap();
    assert_eq!(s.subject.as_deref(), Some("alice"));
    assert_eq!(s.amr, vec!["pwd".to_string()]);
    assert_eq!(s.remember_until, Some(4_000));
    assert_eq!(
        store.browser_session_by_sid("prod", "sid-1").await.unwrap(),
        Some(s)
    );
    let mut tx = store.begin().await.unwrap();
    assert!(tx
        .end_browser_session("prod", "sid-1", 3_200)
        .await
        .unwrap());
    assert!(!tx
        .end_browser_session("prod", "sid-1", 3_300)
        .await
        .unwrap());
    // An ended session takes no login.
    assert!(matches!(
        tx.set_session_login(&h("renewed"), &h("again"), &login)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    tx.commit().await.unwrap();
    assert!(store.browser_session(&h("again")).await.unwrap().is_none());
    let s = store.browser_session(&h("renewed")).await.unwrap().unwrap();
    assert_eq!(s.ended_at, Some(3_200));
    assert!(store.browser_session(&h("nope")).await.unwrap().is_none());
}

async fn challenges_are_decided_once_and_verifiers_used_once(store: Store, _ctx: Ctx) {
    setup(&store).await;
    let mut tx = store.begin().await.unwrap();
    tx.insert_login_request(&request("c1", RequestKind::Login, &h("cookie")))
        .await
        .unwrap();
    assert!(matches!(
        tx.insert_login_request(&request("c1", RequestKind::Login, &h("cookie")))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    tx.insert_login_request(&request("c1", RequestKind::Login, &h("cookie")))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let decision = |v: &str| Decision {
        outcome: r#"{"accepted":{}}"#.into(),
        verifier_hash: h(v),
        verifier_expires_at: 3_400,
    };
    let mut tx = store.begin().await.unwrap();
    // The wrong kind decides nothing.
    assert!(!tx
        .decide_login_request(&h("c1"), RequestKind::Consent, &decision("v0"), 3_100)
        .await
        .unwrap());
    assert!(tx
        .decide_login_request(&h("c1"), RequestKind::Login, &decision("v1"), 3_100)
        .await
        .unwrap());
    // Decided once, ever.
    assert!(!tx
        .decide_login_request(&h("c1"), RequestKind::Login, &decision("v2"), 3_101)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    let r = store.login_request(&h("c1")).await.unwrap().unwrap();
    assert_eq!(r.decided_at, Some(3_100));
    assert_eq!(r.expires_at, 3_400);
    assert_eq!(r.verifier_hash, Some(h("v1")));
    let mut tx = store.begin().await.unwrap();
    assert!(tx
        .use_login_verifier(&h("v2"), RequestKind::Login, 3_200)
        .await
        .unwrap()
        .is_none());
    assert!(tx
        .use_login_verifier(&h("v1"), RequestKind::Consent, 3_200)
        .await
        .unwrap()
        .is_none());
    let used = tx
        .use_login_verifier(&h("v1"), RequestKind::Login, 3_200)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.verified_at, Some(3_200));
    assert_eq!(used.session_hash, h("cookie"));
    assert!(tx
        .use_login_verifier(&h("v1"), RequestKind::Login, 3_201)
        .await
        .unwrap()
        .is_none());
    tx.commit().await.unwrap();
    // A rolled-back use leaves the verifier usable.
    let mut tx = store.begin().await.unwrap();
    tx.insert_login_request(&request("c2", RequestKind::Consent, &h("cookie")))
        .await
        .unwrap();
    assert!(tx
        .decide_login_request(&h("c2"), RequestKind::Consent, &decision("w1"), 3_100)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(tx
        .use_login_verifier(&h("w1"), RequestKind::Consent, 3_200)
        .await
        .unwrap()
        .is_some());
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    assert!(tx
        .use_login_verifier(&h("w1"), RequestKind::Consent, 3_200)
        .await
        .unwrap()
        .is_some());
    tx.commit().await.unwrap();
}

async fn expired_challenges_cannot_be_decided(store: Store, _ctx: Ctx) {
    setup(&store).await;
    let mut tx = store.begin().await.unwrap();
    tx.insert_login_request(&request("c1", RequestKind::Login, &h("cookie")))
        .await
        .unwrap();
    let d = Decision {
        outcome: "{}".into(),
        verifier_hash: h("v1"),
        verifier_expires_at: 4_000,
    };
    // expires_at is 3_600: at 3_600 it is over.
    assert!(!tx
        .decide_login_request(&h("c1"), RequestKind::Login, &d, 3_600)
        .await
        .unwrap());
    assert!(tx
        .decide_login_request(&h("c1"), RequestKind::Login, &d, 3_599)
        .await
        .unwrap());
    // The verifier expires at verifier_expires_at.
    assert!(tx
        .use_login_verifier(&h("v1"), RequestKind::Login, 4_000)
        .await
        .unwrap()
        .is_none());
    assert!(tx
        .use_login_verifier(&h("v1"), RequestKind::Login, 3_999)
        .await
        .unwrap()
        .is_some());
    tx.commit().await.unwrap();
}

async fn consents_are_remembered_and_replaced(store: Store, _ctx: Ctx) {
    setup(&store).await;
    assert!(store
        .consent("prod", "alice", "app")
        .await
        .unwrap()
        .is_none());
    let c = Consent {
        env: "prod".into(),
        subject: "alice".into(),
        client_id: "app".into(),
        scope: vec!["openid".into(), "email".into()],
        granted_at: 3_000,
        expires_at: Some(9_000),
    };
    let mut tx = store.begin().await.unwrap();
    tx.remember_consent(&c).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.consent("prod", "alice", "app").await.unwrap(),
        Some(c.clone())
    );
    let wider = Consent {
        scope: vec!["openid".into(), "email".into(), "profile".into()],
        granted_at: 3_500,
        expires_at: None,
        ..c
    };
    let mut tx = store.begin().await.unwrap();
    tx.remember_consent(&wider).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.consent("prod", "alice", "app").await.unwrap(),
        Some(wider)
    );
    assert!(store.consent("prod", "bob", "app").await.unwrap().is_none());
}

async fn codes_are_used_once_and_record_what_they_issued(store: Store, _ctx: Ctx) {
    setup(&store).await;
    let mut tx = store.begin().await.unwrap();
    tx.insert_authorization_code(&code("k1")).await.unwrap();
    assert!(matches!(
        tx.insert_authorization_code(&code("k1")).await,
        Err(StoreError::Conflict { .. })
    ));
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    tx.insert_authorization_code(&code("k1")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store
            .count_authorization_codes("prod", "app")
            .await
            .unwrap(),
        1
    );
    let access = AccessRef {
        jti: "jti-1".into(),
        exp: 6_600,
    };
    let mut tx = store.begin().await.unwrap();
    let c = tx
        .authorization_code_for_update(&h("k1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c, code("k1"));
    assert!(tx
        .use_authorization_code(&h("k1"), 3_010, &access, Some("fam-1"))
        .await
        .unwrap());
    assert!(!tx
        .use_authorization_code(&h("k1"), 3_011, &access, None)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    let c = store.authorization_code(&h("k1")).await.unwrap().unwrap();
    assert_eq!(c.used_at, Some(3_010));
    assert_eq!(c.access_jti.as_deref(), Some("jti-1"));
    assert_eq!(c.access_exp, Some(6_600));
    assert_eq!(c.family_id.as_deref(), Some("fam-1"));
    assert!(store
        .authorization_code(&h("nope"))
        .await
        .unwrap()
        .is_none());
}

async fn userinfo_claims_follow_the_code_and_its_refresh_family(store: Store, _ctx: Ctx) {
    setup(&store).await;
    let mut tx = store.begin().await.unwrap();
    tx.insert_authorization_code(&code("k1")).await.unwrap();
    tx.use_authorization_code(
        &h("k1"),
        3_010,
        &AccessRef {
            jti: "jti-1".into(),
            exp: 6_600,
        },
        Some("fam-1"),
    )
    .await
    .unwrap();
    tx.insert_refresh_token(&RefreshToken {
        token_hash: h("rt-2"),
        env: "prod".into(),
        client_id: "app".into(),
        family_id: "fam-1".into(),
        subject: "alice".into(),
        scope: "openid offline_access".into(),
        audience: None,
        extra: "{}".into(),
        issued_at: 3_500,
        expires_at: 90_000,
        rotated_at: None,
        revoked_at: None,
        parent: None,
        access: Some(AccessRef {
            jti: "jti-2".into(),
            exp: 7_100,
        }),
        dpop_jkt: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let want = Some(r#"{"email":"alice@example.com"}"#.to_string());
    assert_eq!(store.userinfo_claims("prod", "jti-1").await.unwrap(), want);
    assert_eq!(store.userinfo_claims("prod", "jti-2").await.unwrap(), want);
    assert_eq!(store.userinfo_claims("prod", "jti-3").await.unwrap(), None);
    assert_eq!(store.userinfo_claims("dev", "jti-1").await.unwrap(), None);
}

async fn deleting_a_client_or_environment_takes_login_records_along(store: Store, _ctx: Ctx) {
    setup(&store).await;
    let mut tx = store.begin().await.unwrap();
    tx.insert_authorization_code(&code("k1")).await.unwrap();
    tx.insert_login_request(&request("c1", RequestKind::Login, &h("cookie")))
        .await
        .unwrap();
    tx.remember_consent(&Consent {
        env: "prod".into(),
        subject: "alice".into(),
        client_id: "app".into(),
        scope: vec!["openid".into()],
        granted_at: 3_000,
        expires_at: None,
    })
    .await
    .unwrap();
    tx.insert_browser_session(&session(&h("cookie"), "sid-1"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.delete_client("prod", "app").await.unwrap();
    tx.commit().await.unwrap();
    assert!(store.authorization_code(&h("k1")).await.unwrap().is_none());
    assert!(store.login_request(&h("c1")).await.unwrap().is_none());
    assert!(store
        .consent("prod", "alice", "app")
        .await
        .unwrap()
        .is_none());
    // The browser session is not the client's.
    assert!(store.browser_session(&h("cookie")).await.unwrap().is_some());
    let mut tx = store.begin().await.unwrap();
    tx.delete_environment("prod").await.unwrap();
    tx.commit().await.unwrap();
    assert!(store.browser_session(&h("cookie")).await.unwrap().is_none());
}

async fn purge_deletes_only_expired_login_records(store: Store, _ctx: Ctx) {
    setup(&store).await;
    let mut tx = store.begin().await.unwrap();
    tx.insert_authorization_code(&code("k1")).await.unwrap();
    tx.insert_login_request(&request("c1", RequestKind::Login, &h("cookie")))
        .await
        .unwrap();
    tx.insert_browser_session(&session(&h("cookie"), "sid-1"))
        .await
        .unwrap();
    // A used code whose refresh family lives is kept (userinfo reads it).
    let mut used = code("k2");
    used.access_jti = Some("j2".into());
    used.access_exp = Some(3_300);
    used.family_id = Some("fam-2".into());
    tx.insert_authorization_code(&used).await.unwrap();
    tx.insert_refresh_token(&RefreshToken {
        token_hash: h("rt-2"),
        env: "prod".into(),
        client_id: "app".into(),
        family_id: "fam-2".into(),
        subject: "alice".into(),
        scope: "openid".into(),
        audience: None,
        extra: "{}".into(),
        issued_at: 3_000,
        expires_at: 90_000,
        rotated_at: None,
        revoked_at: None,
        parent: None,
        access: None,
        dpop_jkt: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    // Nothing has expired at 3_000.
    assert_eq!(tx.purge_login_records(3_000).await.unwrap(), 0);
    // The request (3_600) and the unused code (3_060) have; the session
    // has not, and the used code's family lives.
    assert_eq!(tx.purge_login_records(3_601).await.unwrap(), 2);
    tx.commit().await.unwrap();
    assert!(store.authorization_code(&h("k1")).await.unwrap().is_none());
    assert!(store.authorization_code(&h("k2")).await.unwrap().is_some());
    assert!(store.login_request(&h("c1")).await.unwrap().is_none());
    assert!(store.browser_session(&h("cookie")).await.unwrap().is_some());
    // Once the family is gone, the code goes too.
    let mut tx = store.begin().await.unwrap();
    tx.delete_expired_refresh_tokens(i64::MAX).await.unwrap();
    assert_eq!(tx.purge_login_records(3_601).await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert!(store.authorization_code(&h("k2")).await.unwrap().is_none());
}
