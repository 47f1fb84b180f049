//! The keyring's one "generate and add a key" path ([`keyring::generate_key`]
//! and an environment's first key in [`keyring::create_environment`]) and
//! its refusals, each by its [`IssuerError`] variant, run once per backend
//! (SQLite always, PostgreSQL when `KEYWARD_TEST_DATABASE_URL` is set; see
//! the store's test `common` module, shared here).
//!
//! Every refusal is checked to change nothing: environments, keys and the
//! audit chain are as they were.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use common::Ctx;
use keyward_issuer::keyring::{self, KeyChoice, KeySpec};
use keyward_issuer::{
    AddedKey, Change, FirstKey, IssuerError, KeyOptions, Origin, RetireOptions, RotationError,
    Schedule,
};
use keyward_jose::seal::RootKey;
use keyward_jose::{Algorithm, PrivateKey};
use keyward_store::{
    open_private_key, AuditRecord, Environment, KeyRecord, KeyState, RotationPolicy, Store,
    StoreError,
};

backend_suite!(
    generate_key_follows_the_policy_and_audits_a_rotation,
    generate_key_with_a_spec_into_an_empty_environment_sets_the_policy,
    generate_key_refuses_before_generating_and_changes_nothing,
    create_environment_makes_its_first_key_in_one_go,
    create_environment_refusals_change_nothing,
    retire_revoke_and_delete_refusals_name_their_meaning,
    a_rotation_naming_an_algorithm_moves_the_policy_only_when_it_changes,
);

const NOW: i64 = 1_700_000_000;
const LEAD: i64 = 600;

fn at(now: i64) -> Change<'static> {
    Change { now, actor: "test" }
}

fn environment(name: &str, issuer: &str) -> Environment {
    Environment {
        name: name.into(),
        issuer: issuer.into(),
        policy: RotationPolicy {
            lead_secs: LEAD,
            token_ttl_secs: 300,
            ..RotationPolicy::for_algorithm(Algorithm::ES256)
        },
        created_at: NOW,
        key_store: keyward_store::KeyStoreName::Local,
        dpop_nonce_secret: None,
    }
}

fn opts(description: &str) -> KeyOptions {
    KeyOptions {
        kid: None,
        owner: None,
        description: Some(description.into()),
        origin: Origin::Generated,
    }
}

/// A store with environment `dev` (ES256, one active key); its root key.
async fn initialized(store: &Store) -> RootKey {
    let root = RootKey::generate();
    let key = PrivateKey::generate(Algorithm::ES256, None).unwrap();
    keyring::initialize(
        store,
        &root,
        &environment("dev", "https://issuer.test/dev"),
        &key,
        &opts("first"),
        at(NOW),
    )
    .await
    .unwrap();
    root
}

/// What a refused change must leave as it was.
#[derive(Debug, PartialEq)]
struct State {
    envs: Vec<Environment>,
    keys: Vec<KeyRecord>,
    audit: Vec<AuditRecord>,
}

async fn state(store: &Store) -> State {
    State {
        envs: store.environments().await.unwrap(),
        keys: store.keys_all().await.unwrap(),
        audit: store.audit(0, 1000).await.unwrap(),
    }
}

/// [`keyring::generate_key`] at time `now`.
async fn generate(
    store: &Store,
    root: &RootKey,
    env: &str,
    spec: Option<KeySpec>,
    opts: &KeyOptions,
    schedule: Schedule,
    now: i64,
) -> Result<AddedKey, IssuerError> {
    let choice = spec.map_or(KeyChoice::Policy, KeyChoice::Given);
    keyring::generate_key(
        store,
        root,
        &keyward_issuer::keyring::KeyStores::none(),
        env,
        choice,
        opts,
        schedule,
        || at(now),
    )
    .await
}

async fn last_audit(store: &Store) -> AuditRecord {
    store.audit(0, 1000).await.unwrap().pop().unwrap()
}

async fn generate_key_follows_the_policy_and_audits_a_rotation(store: Store, _: Ctx) {
    let root = initialized(&store).await;
    let old = store.keys("dev").await.unwrap().remove(0);
    let added = generate(
        &store,
        &root,
        "dev",
        None,
        &opts("rotation"),
        Schedule::PolicyLead,
        NOW + 5,
    )
    .await
    .unwrap();
    let k = &added.key;
    // The policy's algorithm, published now, signing after the policy lead.
    assert_eq!((k.alg, k.size_bits), (Algorithm::ES256, 256));
    assert_eq!((k.created_at, k.activates_at), (NOW + 5, NOW + 5 + LEAD));
    assert_eq!(k.state(NOW + 5), KeyState::Pending);
    assert_eq!(k.origin, "generated");
    assert_eq!(k.description.as_deref(), Some("rotation"));
    assert!(!added.policy_updated);
    // Sealed under the root key, bound to its environment and kid.
    let stored = store.key(&k.kid).await.unwrap();
    assert_eq!(&stored, k);
    let pkcs8 = open_private_key(&root, &stored).unwrap();
    let opened = PrivateKey::from_der(Algorithm::ES256, &pkcs8).unwrap();
    assert_eq!(opened.public_key().thumbprint(), k.kid);
    // The signing key retires when the new one activates.
    assert_eq!(added.plan.retiring.len(), 1);
    assert_eq!(added.plan.retiring[0].kid, old.kid);
    let old_now = store.key(&old.kid).await.unwrap();
    assert_eq!(old_now.retires_at, Some(NOW + 5 + LEAD));
    // One audit record, as every rotation writes.
    let rec = last_audit(&store).await;
    assert_eq!(
        (rec.action.as_str(), rec.subject.as_deref(), rec.at),
        ("key.rotate", Some(k.kid.as_str()), NOW + 5)
    );
    assert_eq!(rec.detail["origin"], "generated");
    assert_eq!(rec.detail["activates_at"], NOW + 5 + LEAD);
    assert_eq!(rec.detail["immediate"], false);
    assert_eq!(rec.detail["retiring"][0]["kid"], old.kid.as_str());
    assert_eq!(store.audit_len().await.unwrap(), 4);
}

async fn generate_key_with_a_spec_into_an_empty_environment_sets_the_policy(store: Store, _: Ctx) {
    let root = initialized(&store).await;
    keyring::create_environment(
        &store,
        &environment("empty", "https://issuer.test/empty"),
        None,
        at(NOW),
    )
    .await
    .unwrap();
    let spec = KeySpec {
        alg: Algorithm::EdDSA,
        rsa_bits: None,
    };
    let mut o = opts("chosen");
    o.kid = Some("ed-1".into());
    let added = generate(
        &store,
        &root,
        "empty",
        Some(spec),
        &o,
        Schedule::PolicyLead,
        NOW,
    )
    .await
    .unwrap();
    // Nothing to hand over from: it signs at once, with the given kid.
    assert_eq!(added.key.kid, "ed-1");
    assert_eq!(added.key.alg, Algorithm::EdDSA);
    assert_eq!(added.key.activates_at, NOW);
    assert!(added.plan.retiring.is_empty());
    // The first key of an environment sets its rotation algorithm.
    assert!(added.policy_updated);
    let env = store.environment("empty").await.unwrap();
    assert_eq!(
        (env.policy.alg, env.policy.rsa_bits),
        (Algorithm::EdDSA, None)
    );
    let rec = last_audit(&store).await;
    assert_eq!(
        (rec.action.as_str(), rec.subject.as_deref()),
        ("key.generate", Some("ed-1"))
    );
}

async fn generate_key_refuses_before_generating_and_changes_nothing(store: Store, _: Ctx) {
    let root = initialized(&store).await;
    let gen = |env: &'static str, root: RootKey, kid: Option<&'static str>| {
        let store = store.clone();
        async move {
            let mut o = opts("x");
            o.kid = kid.map(String::from);
            generate(&store, &root, env, None, &o, Schedule::PolicyLead, NOW + 10).await
        }
    };
    let same_root = || RootKey::from_base64(&root.to_base64().unwrap()).unwrap();
    let before = state(&store).await;
    let e = gen("nope", same_root(), None).await.unwrap_err();
    assert!(
        matches!(&e, IssuerError::Store(StoreError::NotFound { what: "environment", name }) if name == "nope"),
        "{e:?}"
    );
    let e = gen("dev", RootKey::generate(), None).await.unwrap_err();
    assert!(
        matches!(e, IssuerError::Store(StoreError::WrongRootKey { .. })),
        "{e:?}"
    );
    let e = gen("dev", same_root(), Some("not a kid"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IssuerError::Invalid { message, source: None } if message.starts_with("a kid is 1 to 128 characters")),
        "{e:?}"
    );
    let rsa = |bits| KeySpec {
        alg: Algorithm::RS256,
        rsa_bits: Some(bits),
    };
    for bits in [1024, 2047, 8192] {
        let e = generate(
            &store,
            &root,
            "dev",
            Some(rsa(bits)),
            &opts("x"),
            Schedule::PolicyLead,
            NOW,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, IssuerError::Invalid { message, .. } if *message == format!("RSA key size {bits} is not offered (choose 2048, 3072 or 4096)")),
            "{e:?}"
        );
    }
    assert_eq!(state(&store).await, before);
    // A lead rotation while one is pending would retire the pending key
    // before it ever signs.
    let first = gen("dev", same_root(), None).await.unwrap();
    let before = state(&store).await;
    let e = gen("dev", same_root(), None).await.unwrap_err();
    assert!(
        matches!(&e, IssuerError::Rotation(RotationError::InProgress { kid, activates_at }) if *kid == first.key.kid && *activates_at == NOW + 10 + LEAD),
        "{e:?}"
    );
    let e = generate(
        &store,
        &root,
        "dev",
        None,
        &opts("x"),
        Schedule::Lead(-1),
        NOW + 10,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, IssuerError::Rotation(RotationError::NegativeLead(-1))),
        "{e:?}"
    );
    // Input is judged before state: a bad size is named, not the rotation.
    let e = generate(
        &store,
        &root,
        "dev",
        Some(rsa(1024)),
        &opts("x"),
        Schedule::PolicyLead,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, IssuerError::Invalid { .. }), "{e:?}");
    assert_eq!(state(&store).await, before);
    // Immediate is not held up by the pending key: it replaces it.
    let now = generate(
        &store,
        &root,
        "dev",
        None,
        &opts("x"),
        Schedule::Immediate,
        NOW + 20,
    )
    .await
    .unwrap();
    assert_eq!(now.key.activates_at, NOW + 20);
    assert_eq!(now.plan.retiring.len(), 2);
}

async fn create_environment_makes_its_first_key_in_one_go(store: Store, _: Ctx) {
    let root = initialized(&store).await;
    let mut env = environment("rsa", "https://issuer.test/rsa");
    env.policy.alg = Algorithm::RS256;
    env.policy.rsa_bits = Some(2048);
    let o = opts("first key, made with the environment");
    let first = FirstKey {
        root: &root,
        stores: &keyward_issuer::keyring::KeyStores::none(),
        opts: &o,
    };
    let rec = keyring::create_environment(&store, &env, Some(first), at(NOW + 1))
        .await
        .unwrap()
        .expect("a first key");
    // The policy's algorithm and size, active at once.
    assert_eq!((rec.alg, rec.size_bits), (Algorithm::RS256, 2048));
    assert_eq!(rec.state(NOW + 1), KeyState::Active);
    assert_eq!(store.keys("rsa").await.unwrap(), vec![rec.clone()]);
    let audit = store.audit(0, 1000).await.unwrap();
    let tail: Vec<(&str, Option<&str>)> = audit[audit.len() - 2..]
        .iter()
        .map(|r| (r.action.as_str(), r.subject.as_deref()))
        .collect();
    assert_eq!(
        tail,
        [
            ("env.create", Some("rsa")),
            ("key.generate", Some(rec.kid.as_str()))
        ]
    );
}

async fn create_environment_refusals_change_nothing(store: Store, _: Ctx) {
    let root = initialized(&store).await;
    let o = opts("first");
    let before = state(&store).await;
    let create = |env: Environment, root: RootKey| {
        let store = store.clone();
        let o = o.clone();
        async move {
            let first = FirstKey {
                root: &root,
                stores: &keyward_issuer::keyring::KeyStores::none(),
                opts: &o,
            };
            keyring::create_environment(&store, &env, Some(first), at(NOW)).await
        }
    };
    let same_root = || RootKey::from_base64(&root.to_base64().unwrap()).unwrap();
    // A taken name.
    let e = create(environment("dev", "https://other.test"), same_root())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IssuerError::Store(StoreError::Conflict { what: "environment", name }) if name == "dev"),
        "{e:?}"
    );
    // A taken issuer URL, however it is spelled.
    let e = create(environment("dup", "http://ISSUER.test/dev/"), same_root())
        .await
        .unwrap_err();
    assert!(
        matches!(e, IssuerError::Store(StoreError::IssuerTaken { .. })),
        "{e:?}"
    );
    // Under another environment's endpoints: a conflict with it.
    let e = create(
        environment("hidden", "https://issuer.test/dev/oauth2"),
        same_root(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, IssuerError::Conflict(m) if m.contains("lies under the endpoints of dev")),
        "{e:?}"
    );
    // Invalid input.
    let e = create(environment("a b", "https://x.test"), same_root())
        .await
        .unwrap_err();
    assert!(matches!(e, IssuerError::Invalid { .. }), "{e:?}");
    let e = create(environment("x", "ftp://x.test"), same_root())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IssuerError::Invalid { message, .. } if message.starts_with("invalid issuer URL")),
        "{e:?}"
    );
    // A root key that is not the store's: refused before generating.
    let e = create(environment("x", "https://x.test"), RootKey::generate())
        .await
        .unwrap_err();
    assert!(
        matches!(e, IssuerError::Store(StoreError::WrongRootKey { .. })),
        "{e:?}"
    );
    assert_eq!(state(&store).await, before);
}

async fn retire_revoke_and_delete_refusals_name_their_meaning(store: Store, _: Ctx) {
    initialized(&store).await;
    let kid = store.keys("dev").await.unwrap().remove(0).kid;
    let before = state(&store).await;
    let strict = RetireOptions::default();
    // The only key that signs: retiring it stops the token endpoint.
    let e = keyring::retire_key(&store, &kid, at(NOW + 1), strict)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IssuerError::NeedsForce(m) if m.contains("--force --accept-outage")),
        "{e:?}"
    );
    let e = keyring::retire_key(
        &store,
        &kid,
        at(NOW + 1),
        RetireOptions {
            force: true,
            accept_outage: false,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, IssuerError::NeedsForce(_)), "{e:?}");
    // Published keys: deleting the environment needs force.
    let e = keyring::delete_environment(&store, "dev", false, at(NOW + 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IssuerError::NeedsForce(m) if m.contains("1 published key(s) and 0 client(s)")),
        "{e:?}"
    );
    let e = keyring::retire_key(&store, "nope", at(NOW + 1), strict)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            IssuerError::Store(StoreError::NotFound { what: "key", .. })
        ),
        "{e:?}"
    );
    assert_eq!(state(&store).await, before);
    // Revoked once; a second revocation or a retirement conflicts with that.
    keyring::revoke_key(
        &store,
        &keyward_issuer::keyring::KeyStores::none(),
        &kid,
        at(NOW + 2),
        Some("test"),
    )
    .await
    .unwrap();
    let before = state(&store).await;
    let e = keyring::revoke_key(
        &store,
        &keyward_issuer::keyring::KeyStores::none(),
        &kid,
        at(NOW + 3),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, IssuerError::Conflict(m) if *m == format!("key {kid} is already revoked")),
        "{e:?}"
    );
    let e = keyring::retire_key(&store, &kid, at(NOW + 3), strict)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IssuerError::Conflict(m) if *m == format!("key {kid} is already revoked")),
        "{e:?}"
    );
    assert_eq!(state(&store).await, before);
}

async fn a_rotation_naming_an_algorithm_moves_the_policy_only_when_it_changes(
    store: Store,
    _: Ctx,
) {
    let root = initialized(&store).await;
    let policy = || async { store.environment("dev").await.unwrap().policy };
    let rotate = |choice: KeyChoice, now: i64| {
        let (store, root) = (&store, &root);
        async move {
            keyring::generate_key(
                store,
                root,
                &keyward_issuer::keyring::KeyStores::none(),
                "dev",
                choice,
                &opts("rotation"),
                Schedule::Immediate,
                || at(now),
            )
            .await
            .unwrap()
        }
    };
    // Naming the policy's own algorithm changes nothing about the policy.
    let same = KeyChoice::for_rotation(&policy().await, Some(Algorithm::ES256), None).unwrap();
    assert!(matches!(same, KeyChoice::Adopt(s) if s.alg == Algorithm::ES256));
    let added = rotate(same, NOW + 1).await;
    assert!(!added.policy_updated);
    assert!(last_audit(&store).await.detail.get("policy_alg").is_none());
    assert_eq!(policy().await.alg, Algorithm::ES256);
    // Another algorithm: the policy adopts it in the rotation's transaction.
    let next = KeyChoice::for_rotation(&policy().await, Some(Algorithm::MlDsa65), None).unwrap();
    let added = rotate(next, NOW + 2).await;
    assert!(added.policy_updated);
    assert_eq!(added.key.alg, Algorithm::MlDsa65);
    assert_eq!(last_audit(&store).await.detail["policy_alg"], "ML-DSA-65");
    let moved = policy().await;
    assert_eq!((moved.alg, moved.rsa_bits), (Algorithm::MlDsa65, None));
    // To RSA without a size: the default size, then the same again is no change.
    let rsa = KeyChoice::for_rotation(&moved, Some(Algorithm::RS256), None).unwrap();
    assert!(rotate(rsa, NOW + 3).await.policy_updated);
    let again = KeyChoice::for_rotation(&policy().await, Some(Algorithm::RS256), None).unwrap();
    assert!(!rotate(again, NOW + 4).await.policy_updated);
    // A size for a family without sizes is refused before anything is made.
    assert!(matches!(
        KeyChoice::for_rotation(&policy().await, Some(Algorithm::ES256), Some(2048)),
        Err(IssuerError::Invalid { .. })
    ));
    // Nothing named: the policy's key.
    assert_eq!(
        KeyChoice::for_rotation(&policy().await, None, None).unwrap(),
        KeyChoice::Policy
    );
}
