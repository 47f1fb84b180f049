//! Refresh-token rotation and reuse detection in the issuer itself
//! ([`Authority::token`] with `grant_type=refresh_token`), run once per
//! backend: SQLite always, PostgreSQL when `KEYWARD_TEST_DATABASE_URL` is
//! set (the store's test harness, shared by path; it prints `SKIPPED` and
//! honours `KEYWARD_REQUIRE_POSTGRES=1`). The binary's end-to-end view is
//! in `crates/cli/tests/refresh.rs`.
//!
//! Every refusal is checked for its OAuth error code and description, and
//! the store for exactly what the refusal may change: nothing, or (for a
//! reuse) the family's revocation, its access tokens on the revocation
//! feed and one audit record.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use common::Ctx;
use keyward_issuer::authority::EnvState;
use keyward_issuer::clients::{self, Credentials, NewClient};
use keyward_issuer::grants::{TokenRequest, TokenResponse, UserGrant};
use keyward_issuer::signing::SigningPool;
use keyward_issuer::tokens::hash_secret;
use keyward_issuer::{
    keyring, Authority, Change, Clock, ErrorCode, KeyOptions, OAuthError, Origin, Settings,
};
use keyward_jose::seal::RootKey;
use keyward_jose::{Algorithm, PrivateKey};
use keyward_store::{
    AuditRecord, ClientAuth, Environment, RefreshToken, Revocation, RotationPolicy, Store,
    Timestamp,
};

backend_suite!(
    a_refresh_rotates_the_token_and_binds_the_new_one_to_the_grant,
    reuse_after_the_grace_window_revokes_the_family_and_its_access_tokens,
    reuse_inside_the_grace_window_once_the_successor_was_used_revokes_the_family,
    grace_reissues_for_an_unused_successor_and_supersedes_it,
    without_grace_every_replay_revokes,
    another_client_or_environment_is_refused_and_changes_nothing,
    scope_can_narrow_but_never_widen,
    an_expired_token_is_refused_and_changes_nothing,
    a_revoked_family_is_refused_and_changes_nothing,
    an_access_token_too_large_for_gates_leaves_the_refresh_token_usable,
    dpop_proofs_bind_access_tokens_to_the_key,
    a_dpop_bound_family_refreshes_only_with_its_key_and_changes_nothing_otherwise,
);

const NOW: Timestamp = 1_700_000_000;
const GRACE: i64 = 60;
const REFRESH_TTL: i64 = 3600;
const SCOPES: [&str; 2] = ["orders.read", "orders.write"];

/// A clock the test moves.
#[derive(Debug)]
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        self.0.load(Ordering::SeqCst)
    }
}

/// A secret client's credentials.
#[derive(Clone, Debug)]
struct Caller {
    id: String,
    secret: String,
}

impl Caller {
    fn credentials(&self) -> Credentials {
        Credentials {
            basic: Some((self.id.clone(), self.secret.clone())),
            ..Credentials::default()
        }
    }
}

struct Fx {
    store: Store,
    ctx: Ctx,
    clock: Arc<TestClock>,
    authority: Arc<Authority>,
    dev: Arc<EnvState>,
    client: Caller,
    /// The root key (base64), for tests that add keys.
    root: String,
    /// Every refresh token handed out so far, in order.
    seen: Vec<String>,
    /// The DPoP proof the next exchange sends.
    dpop: Option<String>,
}

/// A DPoP proof (RFC 9449) by `key` for the token endpoint of `dev`, made
/// at `NOW`, with a fresh `jti` unless `jti` is given.
fn proof(key: &PrivateKey, htu: &str, jti: Option<&str>) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = serde_json::json!({
        "typ": "dpop+jwt", "alg": "ES256",
        "jwk": key.public_key().to_jwk(None).to_value(),
    });
    let jti = jti.map_or_else(keyward_jose::crypto::random_text::<12>, String::from);
    let claims = serde_json::json!({"jti": jti, "htm": "POST", "htu": htu, "iat": NOW});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&sig))
}

const TOKEN_ENDPOINT: &str = "https://issuer.test/dev/oauth2/token";

/// The `cnf.jkt` of an access token (read unverified: the issuer's own).
fn cnf_jkt(access_token: &str) -> Option<String> {
    let (_, claims) = keyward_jose::dangerous::decode_unverified(access_token).unwrap();
    claims["cnf"]["jkt"].as_str().map(String::from)
}

fn environment(name: &str) -> Environment {
    Environment {
        name: name.into(),
        issuer: format!("https://issuer.test/{name}"),
        policy: RotationPolicy {
            token_ttl_secs: 300,
            ..RotationPolicy::for_algorithm(Algorithm::ES256)
        },
        created_at: NOW,
        key_store: keyward_store::KeyStoreName::Local,
    }
}

async fn register(store: &Store, env: &str, name: &str) -> Caller {
    let reg = clients::create_client(
        store,
        NewClient {
            env: env.into(),
            name: name.into(),
            auth: ClientAuth::ClientSecretBasic,
            scopes: SCOPES.map(String::from).to_vec(),
            audiences: vec![],
            grant_types: vec!["client_credentials".into(), "refresh_token".into()],
            jwks: None,
            jwks_uri: None,
            access_token_ttl_secs: None,
            refresh_token_ttl_secs: None,
            dpop_bound_access_tokens: false,
            mtls: Default::default(),
            login: Default::default(),
            exchange_issuers: Vec::new(),
        },
        Change {
            now: NOW,
            actor: "test",
        },
    )
    .await
    .unwrap();
    Caller {
        id: reg.client.client_id,
        secret: reg.secret.unwrap(),
    }
}

/// Environment `dev` (one ES256 key) with a secret client, and an
/// authority on it whose refresh grace is `grace`.
async fn fixture(store: Store, ctx: Ctx, grace: i64) -> Fx {
    let root = RootKey::generate();
    let at = Change {
        now: NOW,
        actor: "test",
    };
    let opts = KeyOptions {
        kid: None,
        owner: None,
        description: None,
        origin: Origin::Generated,
    };
    let root_b64 = root.to_base64().unwrap().to_string();
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    keyring::initialize(&store, &root, &environment("dev"), &key, &opts, at)
        .await
        .unwrap();
    let client = register(&store, "dev", "app").await;
    let clock = Arc::new(TestClock(AtomicI64::new(NOW)));
    let settings = Settings {
        refresh_token_ttl_secs: REFRESH_TTL,
        refresh_grace_secs: grace,
        ..Settings::default()
    };
    let authority = Authority::load(
        store.clone(),
        root,
        clock.clone(),
        SigningPool::new(1),
        settings,
    )
    .await
    .unwrap();
    let dev = authority.snapshot().env("dev").unwrap().clone();
    Fx {
        store,
        ctx,
        clock,
        authority,
        dev,
        client,
        root: root_b64,
        seen: Vec::new(),
        dpop: None,
    }
}

/// What the store holds about the grants: every refresh token seen, the
/// number of refresh-token rows, the revocation feed and the audit chain.
#[derive(Clone, Debug, PartialEq)]
struct State {
    tokens: Vec<RefreshToken>,
    rows: String,
    feed: Vec<Revocation>,
    audit: Vec<AuditRecord>,
}

impl Fx {
    fn set_time(&self, t: Timestamp) {
        self.clock.0.store(t, Ordering::SeqCst);
    }

    /// The operator mints a token pair for alice (as `keyward token issue`).
    async fn mint(&mut self) -> TokenResponse {
        let grant = UserGrant {
            subject: "alice".into(),
            client_id: self.client.id.clone(),
            refresh: true,
            actor: "test".into(),
            ..UserGrant::default()
        };
        let t = self
            .authority
            .mint_for_user(&self.dev, grant)
            .await
            .unwrap();
        self.seen.push(t.refresh_token.clone().unwrap());
        t
    }

    async fn exchange(
        &mut self,
        env: &EnvState,
        caller: &Caller,
        token: &str,
        scope: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let req = TokenRequest {
            grant_type: Some("refresh_token".into()),
            scope: scope.map(String::from),
            audience: None,
            refresh_token: Some(token.into()),
            credentials: caller.credentials(),
            dpop_proof: self.dpop.take(),
            ..TokenRequest::default()
        };
        let r = self.authority.token(env, req).await;
        if let Ok(t) = &r {
            self.seen
                .push(t.refresh_token.clone().expect("a new refresh token"));
        }
        r
    }

    /// The client refreshes `token` in `dev`.
    async fn refresh(&mut self, token: &str) -> Result<TokenResponse, OAuthError> {
        let (dev, client) = (self.dev.clone(), self.client.clone());
        self.exchange(&dev, &client, token, None).await
    }

    async fn refreshed(&mut self, token: &str) -> String {
        let t = self.refresh(token).await.unwrap();
        t.refresh_token.unwrap()
    }

    async fn record(&self, token: &str) -> RefreshToken {
        self.store
            .refresh_token(&hash_secret(token))
            .await
            .unwrap()
            .expect("a stored refresh token")
    }

    /// The `jti` of the access token issued with refresh token `token`.
    async fn access_jti(&self, token: &str) -> String {
        self.record(token).await.access.expect("recorded").jti
    }

    async fn state(&self) -> State {
        let mut tokens = Vec::new();
        for t in &self.seen {
            tokens.push(self.record(t).await);
        }
        State {
            tokens,
            rows: self
                .ctx
                .fetch_text("SELECT CAST(COUNT(*) AS TEXT) FROM refresh_tokens")
                .await,
            feed: self.store.revocations_since("dev", 0, 1000).await.unwrap(),
            audit: self.store.audit(0, 1000).await.unwrap(),
        }
    }

    /// Whether introspection calls the access token active.
    async fn active(&self, access_token: &str) -> bool {
        let v = self
            .authority
            .introspect(&self.dev, &self.client.credentials(), access_token)
            .await
            .unwrap();
        v["active"] == true
    }
}

fn assert_refused(r: Result<TokenResponse, OAuthError>, code: ErrorCode, description: &str) {
    let e = r.expect_err("refused");
    assert_eq!((e.code, e.description.as_str()), (code, description), "{e}");
    assert!(e.fault.is_none(), "{e:?}");
}

const INVALID: &str = "the refresh token is invalid, expired or revoked";
const REUSED: &str = "the refresh token was already used; its whole grant is revoked";

/// After a detected reuse at `now`: `before` with every refresh token of
/// the (one) family revoked at `now`, `jtis` (and nothing else) added to
/// the feed, and one `refresh.reuse_detected` audit record.
fn assert_family_revoked(before: &State, after: &State, now: Timestamp, jtis: &[String]) {
    let mut want = before.clone();
    for t in &mut want.tokens {
        t.revoked_at.get_or_insert(now);
    }
    assert_eq!(after.tokens, want.tokens);
    assert_eq!(after.rows, before.rows);
    assert_eq!(after.feed[..before.feed.len()], before.feed[..]);
    let added: BTreeSet<(String, Timestamp)> = after.feed[before.feed.len()..]
        .iter()
        .map(|r| (r.jti.clone(), r.revoked_at))
        .collect();
    let expected: BTreeSet<(String, Timestamp)> = jtis.iter().map(|j| (j.clone(), now)).collect();
    assert_eq!(added, expected);
    assert_eq!(after.audit[..before.audit.len()], before.audit[..]);
    assert_eq!(after.audit.len(), before.audit.len() + 1);
    let rec = after.audit.last().unwrap();
    assert_eq!(rec.action, "refresh.reuse_detected");
    assert_eq!(rec.detail["family"], before.tokens[0].family_id.as_str());
    assert_eq!(rec.detail["access_tokens_revoked"], jtis.len());
}

async fn a_refresh_rotates_the_token_and_binds_the_new_one_to_the_grant(store: Store, ctx: Ctx) {
    let mut f = fixture(store, ctx, GRACE).await;
    let first = f.mint().await;
    let t0 = first.refresh_token.clone().unwrap();
    let before = f.state().await;
    f.set_time(NOW + 10);
    let second = f.refresh(&t0).await.unwrap();
    let t1 = second.refresh_token.clone().unwrap();
    // A new refresh token and a new access token, with the grant's scope.
    assert_ne!(t1, t0);
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(second.scope.as_deref(), Some("orders.read orders.write"));
    assert_eq!((second.token_type, second.expires_in), ("Bearer", 300));
    // The old token is marked rotated now; nothing else of it changed.
    let r0 = f.record(&t0).await;
    let mut want = before.tokens[0].clone();
    want.rotated_at = Some(NOW + 10);
    assert_eq!(r0, want);
    // The new one is of the same family, subject, client and scope, made
    // from the old one, with the access token issued beside it.
    let r1 = f.record(&t1).await;
    assert_eq!(
        (
            &r1.family_id,
            &r1.subject,
            &r1.client_id,
            &r1.scope,
            &r1.env
        ),
        (
            &r0.family_id,
            &r0.subject,
            &r0.client_id,
            &r0.scope,
            &r0.env
        )
    );
    assert_eq!(r1.parent.as_deref(), Some(&hash_secret(&t0)[..]));
    assert_eq!(
        (r1.issued_at, r1.expires_at),
        (NOW + 10, NOW + 10 + REFRESH_TTL)
    );
    assert_eq!((r1.rotated_at, r1.revoked_at), (None, None));
    let access = r1.access.clone().unwrap();
    assert_eq!(access.exp, NOW + 10 + 300);
    let v = f
        .authority
        .introspect(&f.dev, &f.client.credentials(), &second.access_token)
        .await
        .unwrap();
    assert_eq!(v["active"], true);
    assert_eq!(v["jti"], access.jti.as_str());
    assert_eq!(v["sub"], "alice");
    // No revocation and no audit record for an ordinary rotation.
    let after = f.state().await;
    assert_eq!(after.feed, before.feed);
    assert_eq!(after.audit, before.audit);
    // The new token rotates in turn.
    let t2 = f.refreshed(&t1).await;
    assert_eq!(f.record(&t2).await.parent, Some(hash_secret(&t1)));
    assert!(f.active(&first.access_token).await);
}

async fn reuse_after_the_grace_window_revokes_the_family_and_its_access_tokens(
    store: Store,
    ctx: Ctx,
) {
    let mut f = fixture(store, ctx, GRACE).await;
    let first = f.mint().await;
    let t0 = first.refresh_token.clone().unwrap();
    let second = f.refresh(&t0).await.unwrap();
    let t1 = second.refresh_token.clone().unwrap();
    let jtis = vec![f.access_jti(&t0).await, f.access_jti(&t1).await];
    // Past the grace window the old token stops working, even with its
    // successor unused: presenting it is reuse.
    f.set_time(NOW + GRACE + 1);
    let before = f.state().await;
    assert_refused(f.refresh(&t0).await, ErrorCode::InvalidGrant, REUSED);
    let after = f.state().await;
    assert_family_revoked(&before, &after, NOW + GRACE + 1, &jtis);
    assert_eq!(after.audit.last().unwrap().detail["within_grace"], false);
    // The whole family is dead, and so are its access tokens.
    let before = f.state().await;
    assert_refused(f.refresh(&t1).await, ErrorCode::InvalidGrant, INVALID);
    assert_refused(f.refresh(&t0).await, ErrorCode::InvalidGrant, INVALID);
    assert_eq!(f.state().await, before);
    assert!(!f.active(&first.access_token).await);
    assert!(!f.active(&second.access_token).await);
}

async fn reuse_inside_the_grace_window_once_the_successor_was_used_revokes_the_family(
    store: Store,
    ctx: Ctx,
) {
    let mut f = fixture(store, ctx, GRACE).await;
    let t0 = f.mint().await.refresh_token.unwrap();
    let t1 = f.refreshed(&t0).await;
    f.set_time(NOW + 1);
    let t2 = f.refreshed(&t1).await;
    let mut jtis = Vec::new();
    for t in [&t0, &t1, &t2] {
        jtis.push(f.access_jti(t).await);
    }
    // Inside the window, but t0's successor has been used: not a lost
    // response, a second holder.
    f.set_time(NOW + 2);
    let before = f.state().await;
    assert_refused(f.refresh(&t0).await, ErrorCode::InvalidGrant, REUSED);
    let after = f.state().await;
    assert_family_revoked(&before, &after, NOW + 2, &jtis);
    assert_eq!(after.audit.last().unwrap().detail["within_grace"], true);
    assert_refused(f.refresh(&t2).await, ErrorCode::InvalidGrant, INVALID);
}

async fn grace_reissues_for_an_unused_successor_and_supersedes_it(store: Store, ctx: Ctx) {
    let mut f = fixture(store, ctx, GRACE).await;
    let t0 = f.mint().await.refresh_token.unwrap();
    let lost = f.refresh(&t0).await.unwrap();
    let t1 = lost.refresh_token.clone().unwrap();
    // The client lost that response and presents t0 again in the window.
    f.set_time(NOW + GRACE);
    let before = f.state().await;
    let again = f.refresh(&t0).await.unwrap();
    let t1b = again.refresh_token.clone().unwrap();
    assert_ne!(t1b, t1);
    let after = f.state().await;
    // t0 keeps its first rotation; the unused successor t1 is superseded
    // (marked rotated) and its access token revoked; a new successor of t0.
    let mut want = before.tokens.clone();
    want[1].rotated_at = Some(NOW + GRACE);
    assert_eq!(after.tokens[..2], want[..]);
    let r1b = &after.tokens[2];
    assert_eq!(r1b.parent, Some(hash_secret(&t0)));
    assert_eq!(r1b.family_id, want[0].family_id);
    assert_eq!((r1b.rotated_at, r1b.revoked_at), (None, None));
    assert_eq!(
        after.rows,
        (before.rows.parse::<u64>().unwrap() + 1).to_string()
    );
    let jti1 = f.access_jti(&t1).await;
    let added: Vec<&str> = after.feed[before.feed.len()..]
        .iter()
        .map(|r| r.jti.as_str())
        .collect();
    assert_eq!(added, [jti1.as_str()]);
    assert!(!f.active(&lost.access_token).await);
    assert!(f.active(&again.access_token).await);
    assert_eq!(after.audit.len(), before.audit.len() + 1);
    let rec = after.audit.last().unwrap();
    assert_eq!(rec.action, "refresh.grace_reissue");
    assert_eq!(rec.detail["superseded_issued_at"], NOW);
    // Whoever holds the superseded t1 is caught: the family is revoked,
    // the reissued token included.
    f.set_time(NOW + GRACE + 1);
    let before = f.state().await;
    assert_refused(f.refresh(&t1).await, ErrorCode::InvalidGrant, REUSED);
    let after = f.state().await;
    // t1's access token is on the feed already; t0's and t1b's join it.
    let jtis = vec![f.access_jti(&t0).await, f.access_jti(&t1b).await];
    assert_family_revoked(&before, &after, NOW + GRACE + 1, &jtis);
    assert_refused(f.refresh(&t1b).await, ErrorCode::InvalidGrant, INVALID);
}

async fn without_grace_every_replay_revokes(store: Store, ctx: Ctx) {
    let mut f = fixture(store, ctx, 0).await;
    let t0 = f.mint().await.refresh_token.unwrap();
    let t1 = f.refreshed(&t0).await;
    let jtis = vec![f.access_jti(&t0).await, f.access_jti(&t1).await];
    // The same second, successor unused: still reuse.
    let before = f.state().await;
    assert_refused(f.refresh(&t0).await, ErrorCode::InvalidGrant, REUSED);
    assert_family_revoked(&before, &f.state().await, NOW, &jtis);
}

async fn another_client_or_environment_is_refused_and_changes_nothing(store: Store, ctx: Ctx) {
    let mut f = fixture(store, ctx, GRACE).await;
    let t0 = f.mint().await.refresh_token.unwrap();
    let t1 = f.refreshed(&t0).await;
    let thief = register(&f.store, "dev", "other").await;
    keyring::create_environment(
        &f.store,
        &environment("prod"),
        None,
        Change {
            now: NOW,
            actor: "test",
        },
    )
    .await
    .unwrap();
    let elsewhere = register(&f.store, "prod", "app").await;
    f.authority.reload().await.unwrap();
    let prod = f.authority.snapshot().env("prod").unwrap().clone();
    let dev = f.dev.clone();
    let before = f.state().await;
    // Another client of the same environment, with the live token and
    // with the rotated one (which would be a reuse if it were the owner).
    for t in [&t1, &t0] {
        let r = f.exchange(&dev, &thief, t, None).await;
        assert_refused(r, ErrorCode::InvalidGrant, INVALID);
    }
    // A client of another environment, at that environment's endpoint.
    let r = f.exchange(&prod, &elsewhere, &t1, None).await;
    assert_refused(r, ErrorCode::InvalidGrant, INVALID);
    // A wrong secret never reaches the token.
    let wrong = Caller {
        id: f.client.id.clone(),
        secret: "kws_wrong".into(),
    };
    let r = f.exchange(&dev, &wrong, &t1, None).await;
    assert_refused(r, ErrorCode::InvalidClient, "client authentication failed");
    // An unknown token.
    assert_refused(
        f.refresh("kwr_unknown").await,
        ErrorCode::InvalidGrant,
        INVALID,
    );
    assert_eq!(f.state().await, before);
    // The owner's grant is untouched: t1 still refreshes.
    f.refreshed(&t1).await;
}

async fn scope_can_narrow_but_never_widen(store: Store, ctx: Ctx) {
    let mut f = fixture(store, ctx, GRACE).await;
    let t0 = f.mint().await.refresh_token.unwrap();
    let (dev, client) = (f.dev.clone(), f.client.clone());
    let before = f.state().await;
    // Beyond the grant (and a scope the client does not even have).
    for wider in ["orders.read orders.admin", "orders.admin"] {
        let r = f.exchange(&dev, &client, &t0, Some(wider)).await;
        assert_refused(
            r,
            ErrorCode::InvalidScope,
            "scope \"orders.admin\" was not granted",
        );
    }
    assert_eq!(f.state().await, before);
    // Narrower: the access token gets less, the grant keeps its scope.
    let narrow = f
        .exchange(&dev, &client, &t0, Some("orders.read"))
        .await
        .unwrap();
    assert_eq!(narrow.scope.as_deref(), Some("orders.read"));
    let t1 = narrow.refresh_token.unwrap();
    assert_eq!(f.record(&t1).await.scope, "orders.read orders.write");
    let full = f.refresh(&t1).await.unwrap();
    assert_eq!(full.scope.as_deref(), Some("orders.read orders.write"));
}

async fn an_expired_token_is_refused_and_changes_nothing(store: Store, ctx: Ctx) {
    let mut f = fixture(store, ctx, GRACE).await;
    let t0 = f.mint().await.refresh_token.unwrap();
    // Valid until the last second before its expiry.
    f.set_time(NOW + REFRESH_TTL - 1);
    let t1 = f.refreshed(&t0).await;
    let expiry = f.record(&t1).await.expires_at;
    f.set_time(expiry);
    let before = f.state().await;
    assert_refused(f.refresh(&t1).await, ErrorCode::InvalidGrant, INVALID);
    f.set_time(expiry + 1000);
    assert_refused(f.refresh(&t1).await, ErrorCode::InvalidGrant, INVALID);
    assert_eq!(f.state().await, before);
}

async fn a_revoked_family_is_refused_and_changes_nothing(store: Store, ctx: Ctx) {
    let mut f = fixture(store, ctx, GRACE).await;
    let first = f.mint().await;
    let t0 = first.refresh_token.clone().unwrap();
    let t1 = f.refreshed(&t0).await;
    // The client revokes its grant (RFC 7009) through the rotated token.
    f.set_time(NOW + 5);
    f.authority
        .revoke(&f.dev, &f.client.credentials(), &t0)
        .await
        .unwrap();
    let revoked = f.state().await;
    assert!(revoked.tokens.iter().all(|t| t.revoked_at == Some(NOW + 5)));
    assert!(!f.active(&first.access_token).await);
    // Both tokens are refused as revoked, the rotated one inside its grace
    // window too; no reuse alarm, no write.
    f.set_time(NOW + 6);
    for t in [&t1, &t0] {
        assert_refused(f.refresh(t).await, ErrorCode::InvalidGrant, INVALID);
    }
    assert_eq!(f.state().await, revoked);
}

/// An access token over the 8 KiB gates accept is never handed out, and
/// the refresh that would have carried it is refused before it commits:
/// the client keeps its refresh token (no rotation, no false reuse alarm
/// on its retry) and the store is as it was.
async fn an_access_token_too_large_for_gates_leaves_the_refresh_token_usable(
    store: Store,
    ctx: Ctx,
) {
    let mut f = fixture(store, ctx, GRACE).await;
    // Permissions that fit beside an ES256 signature, not an ML-DSA-87 one.
    let grant = UserGrant {
        subject: "alice".into(),
        client_id: f.client.id.clone(),
        permissions: (0..80)
            .map(|i| format!("orders.{i:04}.items.read"))
            .collect(),
        refresh: true,
        actor: "test".into(),
        ..UserGrant::default()
    };
    let minted = f.authority.mint_for_user(&f.dev, grant).await.unwrap();
    assert!(
        minted.access_token.len() < 4_000,
        "{}",
        minted.access_token.len()
    );
    let t0 = minted.refresh_token.unwrap();
    f.seen.push(t0.clone());
    // The environment moves to ML-DSA-87 at once.
    let root = RootKey::from_base64(&f.root).unwrap();
    let spec = keyring::KeySpec {
        alg: Algorithm::MlDsa87,
        rsa_bits: None,
    };
    let opts = KeyOptions {
        kid: None,
        owner: None,
        description: None,
        origin: Origin::Generated,
    };
    keyring::generate_key(
        &f.store,
        &root,
        &keyward_issuer::keyring::KeyStores::none(),
        "dev",
        keyring::KeyChoice::Given(spec),
        &opts,
        keyward_issuer::Schedule::Immediate,
        || Change {
            now: NOW,
            actor: "test",
        },
    )
    .await
    .unwrap();
    f.authority.reload().await.unwrap();
    f.dev = f.authority.snapshot().env("dev").unwrap().clone();
    let before = f.state().await;
    f.set_time(NOW + 10);
    let e = f.refresh(&t0).await.expect_err("too large");
    assert_eq!(e.code, ErrorCode::ServerError);
    let fault = e.fault.expect("a server fault");
    assert_eq!(fault.reason.as_str(), "token_too_large");
    assert!(fault.cause.contains("ML-DSA-87"), "{}", fault.cause);
    // Nothing was committed: t0 is not rotated and no successor exists.
    assert_eq!(f.state().await, before);
    assert!(f.record(&t0).await.rotated_at.is_none());
}

async fn dpop_proofs_bind_access_tokens_to_the_key(store: Store, ctx: Ctx) {
    let mut fx = fixture(store, ctx, GRACE).await;
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let jkt = key.public_key().thumbprint();
    let cc = |proof: Option<String>| TokenRequest {
        grant_type: Some("client_credentials".into()),
        credentials: fx.client.credentials(),
        dpop_proof: proof,
        ..TokenRequest::default()
    };
    // client_credentials with a proof: a DPoP token bound to the key.
    let t = fx
        .authority
        .token(&fx.dev, cc(Some(proof(&key, TOKEN_ENDPOINT, Some("j1")))))
        .await
        .unwrap();
    assert_eq!(t.token_type, "DPoP");
    assert_eq!(cnf_jkt(&t.access_token), Some(jkt.clone()));
    // Introspection shows the binding.
    let v = fx
        .authority
        .introspect(&fx.dev, &fx.client.credentials(), &t.access_token)
        .await
        .unwrap();
    assert_eq!(v["cnf"]["jkt"], jkt.as_str());
    // Without a proof: a Bearer token.
    let t = fx.authority.token(&fx.dev, cc(None)).await.unwrap();
    assert_eq!((t.token_type, cnf_jkt(&t.access_token)), ("Bearer", None));
    // Bad proofs: replayed, another endpoint, an ath at the token endpoint.
    let before = fx.state().await;
    for (bad, why) in [
        (
            proof(&key, TOKEN_ENDPOINT, Some("j1")),
            "DPoP proof has been used before (jti)",
        ),
        (
            proof(&key, "https://issuer.test/prod/oauth2/token", None),
            "DPoP proof htu does not match the request URI",
        ),
        (
            "e30.e30.e30".to_string(),
            "DPoP proof: token header is not a JSON object: missing alg",
        ),
    ] {
        let e = fx
            .authority
            .token(&fx.dev, cc(Some(bad)))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code, e.description.as_str()),
            (ErrorCode::InvalidDpopProof, why)
        );
        assert_eq!(e.to_json()["error"], "invalid_dpop_proof");
    }
    assert_eq!(fx.state().await, before);
    // A client registered dpop_bound_access_tokens must send one.
    let mut c = fx.store.client("dev", &fx.client.id).await.unwrap();
    c.dpop_bound_access_tokens = true;
    clients::update_client(
        &fx.store,
        c,
        Change {
            now: NOW,
            actor: "test",
        },
    )
    .await
    .unwrap();
    fx.authority.reload().await.unwrap();
    let e = fx.authority.token(&fx.dev, cc(None)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidDpopProof);
    let t = fx
        .authority
        .token(&fx.dev, cc(Some(proof(&key, TOKEN_ENDPOINT, None))))
        .await
        .unwrap();
    assert_eq!(t.token_type, "DPoP");
    // A refresh (confidential client, family not bound) with a proof binds
    // the new access token to that proof's key.
    let pair = fx.mint().await;
    let other = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    fx.dpop = Some(proof(&other, TOKEN_ENDPOINT, None));
    let r = fx
        .refresh(pair.refresh_token.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(r.token_type, "DPoP");
    assert_eq!(
        cnf_jkt(&r.access_token),
        Some(other.public_key().thumbprint())
    );
}

async fn a_dpop_bound_family_refreshes_only_with_its_key_and_changes_nothing_otherwise(
    store: Store,
    ctx: Ctx,
) {
    let mut fx = fixture(store, ctx, GRACE).await;
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    let jkt = key.public_key().thumbprint();
    let first = fx.mint().await.refresh_token.unwrap();
    // Bound as a public client's family is (RFC 9449 §5).
    fx.ctx
        .exec(&format!("UPDATE refresh_tokens SET dpop_jkt = '{jkt}'"))
        .await;
    assert_eq!(
        fx.record(&first).await.dpop_jkt.as_deref(),
        Some(jkt.as_str())
    );
    let before = fx.state().await;
    let other = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    for p in [None, Some(proof(&other, TOKEN_ENDPOINT, None))] {
        fx.dpop = p;
        let e = fx.refresh(&first).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidDpopProof, "{e}");
        assert_eq!(fx.state().await, before);
    }
    fx.dpop = Some(proof(&key, TOKEN_ENDPOINT, None));
    let t = fx.refresh(&first).await.unwrap();
    assert_eq!(cnf_jkt(&t.access_token), Some(jkt.clone()));
    // The new token stays in the bound family.
    let next = t.refresh_token.unwrap();
    assert_eq!(fx.record(&next).await.dpop_jkt, Some(jkt));
}
