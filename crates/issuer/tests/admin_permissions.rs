//! Fine-grained admin permissions: every route refuses a caller without its
//! permission (403 naming it, audited, nothing changed) and admits one
//! holding just that; group grants and environments; admin tokens handed
//! on no wider and no longer than their creator's; expired and revoked
//! tokens; a second keyward environment acting as the company's SSO; the
//! bound on audited unauthenticated refusals.

#[path = "support/admin_fixture.rs"]
mod admin_fixture;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use admin_fixture::*;
use axum::http::{header, Method, StatusCode};
use keyward_issuer::admin::auth::UNAUTHENTICATED_AUDITS_PER_MINUTE;
use keyward_issuer::admin::{Need, ROUTES};
use keyward_issuer::{Clock, FixedClock, Settings};
use keyward_store::AuditRecord;
use keyward_verify::{Gate, IssuerPolicy};
use serde_json::{json, Value};

/// A clock the test moves.
struct StepClock(AtomicI64);

impl Clock for StepClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The audit records appended since `before` records.
async fn audit_since(f: &Fixture, before: i64) -> Vec<AuditRecord> {
    f.authority.store.audit(before, 1000).await.unwrap()
}

/// Asserts `r` is a 403 naming `permission` in its body and challenge.
#[track_caller]
fn assert_forbidden(r: &Answer, permission: &str) {
    assert_error(r, StatusCode::FORBIDDEN, "insufficient_scope");
    assert_eq!(r.body["permission"], permission, "{r:?}");
    let challenge = r.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"keyward-admin\", error=\"insufficient_scope\"")
            && challenge.ends_with(&format!("scope=\"{permission}\"")),
        "{challenge}"
    );
}

/// The request each route is probed with: its path filled, and a body
/// that fails to parse (the guard answers before a body is read).
fn probe(path: &str, kid: &str, client_id: &str, token_id: &str) -> String {
    path.replace("{env}", "dev")
        .replace("{kid}", kid)
        .replace("{client_id}", client_id)
        .replace("{id}", token_id)
}

#[tokio::test]
async fn every_route_refuses_without_its_permission_and_admits_with_it() {
    let f = fixture().await;
    let kid = f.get("/admin/v1/envs/dev/keys").await.body[0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let (client_id, _) = f
        .client(json!({"name": "probe", "scopes": ["a"], "audiences": []}))
        .await;
    // Holds a permission of another environment and unrelated ones only.
    let (nobody, nobody_id) = add_admin_token_with(
        &f.authority.store,
        &[
            "keyward.env.prod.*",
            "keyward.envx.*",
            "keyward.admin.tokens",
        ],
        None,
    )
    .await;
    let mut checked = 0;
    // DELETEs last: they remove what the others use.
    let mut routes: Vec<_> = ROUTES.iter().collect();
    routes.sort_by_key(|r| r.method == "DELETE");
    for route in routes {
        let uri = probe(route.path, &kid, &client_id, &f.token_id);
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        let garbage =
            (method == Method::POST || method == Method::PATCH).then(|| json!({"__probe": true}));
        let (required, body) = match route.need {
            Need::Public => {
                let r = f.call_as(&nobody, method, &uri, None).await;
                assert_eq!(r.status, StatusCode::OK, "{uri}");
                continue;
            }
            Need::EachEnv(a) => {
                // Answers, leaving out what the caller may not see.
                let before = f.state().await;
                let r = f.call_as(&nobody, method.clone(), &uri, None).await;
                assert_eq!((r.status, &r.body), (StatusCode::OK, &json!([])), "{uri}");
                assert_eq!(f.state().await, before);
                let required = a.template().replace("{env}", "dev");
                let (reader, _) =
                    add_admin_token_with(&f.authority.store, &[&required], None).await;
                let r = f.call_as(&reader, method, &uri, None).await;
                assert_eq!(r.body.as_array().unwrap().len(), 1, "{r:?}");
                assert_eq!(r.body[0]["name"], "dev");
                checked += 1;
                continue;
            }
            // The environment is the body's: the body must be readable.
            Need::BodyEnv(a) => (
                a.template().replace("{env}", "stage"),
                Some(
                    json!({"name": "stage", "issuer": "https://issuer.test/stage", "first_key": false}),
                ),
            ),
            Need::Global(p) => (p.to_string(), garbage),
            Need::Env(a) | Need::KeyEnv(a) => (a.template().replace("{env}", "dev"), garbage),
        };
        let before = f.state().await;
        let r = f.call_as(&nobody, method.clone(), &uri, body.clone()).await;
        assert_forbidden(&r, &required);
        // Nothing changed but one audit record saying who was refused what.
        let after = f.state().await;
        assert_eq!(
            (&after.envs, &after.keys, &after.clients, after.generation),
            (
                &before.envs,
                &before.keys,
                &before.clients,
                before.generation
            ),
            "{} {uri}",
            route.method
        );
        let records = audit_since(&f, before.audit).await;
        assert_eq!(records.len(), 1, "{records:?}");
        let rec = &records[0];
        assert_eq!(rec.action, "admin.denied");
        assert_eq!(rec.actor, format!("admin:{nobody_id}"));
        assert_eq!(rec.subject.as_deref(), Some(nobody_id.as_str()));
        assert_eq!(rec.detail["status"], 403);
        assert_eq!(rec.detail["permission"], required.as_str());
        assert_eq!(rec.detail["owner"], "tester");
        assert_eq!(
            rec.detail["route"],
            format!("{} {}", route.method, route.path)
        );

        // A token holding just that permission passes the guard.
        let (holder, _) = add_admin_token_with(&f.authority.store, &[&required], None).await;
        let r = f.call_as(&holder, method.clone(), &uri, body).await;
        let want = match (route.method, route.need) {
            (_, Need::BodyEnv(_)) => StatusCode::CREATED,
            // Past the guard, the handler finds no such challenge.
            ("GET", _) if route.path.contains("{challenge}") => StatusCode::NOT_FOUND,
            ("GET", _) => StatusCode::OK,
            ("DELETE", _) if route.path == "/admin/v1/envs/{env}" => StatusCode::CONFLICT,
            ("DELETE", _) => StatusCode::NO_CONTENT,
            // The probe body: refused as a bad request, past the guard.
            _ => StatusCode::BAD_REQUEST,
        };
        assert_eq!(
            r.status, want,
            "{} {uri} with {required}: {r:?}",
            route.method
        );
        checked += 1;
    }
    assert_eq!(checked, ROUTES.len() - 1, "every guarded route was probed");
}

#[tokio::test]
async fn group_grants_cover_their_environment_only() {
    let f = fixture().await;
    // A second environment, and one whose name holds a dot.
    for (name, issuer) in [
        ("prod", "https://issuer.test/prod"),
        ("eu.prod", "https://issuer.test/eu-prod"),
    ] {
        let r = f
            .post(
                "/admin/v1/envs",
                json!({"name": name, "issuer": issuer, "policy": {"alg": "ES256"}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
    let store = &f.authority.store;
    let (dev_all, _) = add_admin_token_with(store, &["keyward.env.dev.*"], None).await;
    let (dev_keys, _) = add_admin_token_with(store, &["keyward.env.dev.keys.*"], None).await;
    let (eu, _) = add_admin_token_with(store, &["keyward.env.eu.*"], None).await;
    let (every_env, _) = add_admin_token_with(store, &["keyward.env.*"], None).await;
    let get = |t: &str, p: &str| {
        let t = t.to_owned();
        let p = p.to_owned();
        let f = &f;
        async move { f.call_as(&t, Method::GET, &p, None).await }
    };
    assert_eq!(
        get(&dev_all, "/admin/v1/envs/dev/clients").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&dev_all, "/admin/v1/envs/dev").await.status,
        StatusCode::OK
    );
    assert_forbidden(
        &get(&dev_all, "/admin/v1/envs/prod/keys").await,
        "keyward.env.prod.keys.read",
    );
    assert_eq!(
        get(&dev_keys, "/admin/v1/envs/dev/keys").await.status,
        StatusCode::OK
    );
    assert_forbidden(
        &get(&dev_keys, "/admin/v1/envs/dev/clients").await,
        "keyward.env.dev.clients.read",
    );
    assert_forbidden(
        &get(&dev_keys, "/admin/v1/envs/dev").await,
        "keyward.env.dev.read",
    );
    // A dotted name cannot be named in a permission: only grants on every
    // environment reach it, never those of an environment `eu`.
    let r = get(&eu, "/admin/v1/envs/eu.prod/keys").await;
    assert_forbidden(&r, "keyward.env.*");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("contains '.'"),
        "{r:?}"
    );
    assert_eq!(
        get(&every_env, "/admin/v1/envs/eu.prod/keys").await.status,
        StatusCode::OK
    );
    // Listing shows what each may read.
    let names = |r: Answer| -> Vec<String> {
        r.body
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(get(&dev_all, "/admin/v1/envs").await), ["dev"]);
    assert_eq!(
        names(get(&dev_keys, "/admin/v1/envs").await),
        Vec::<String>::new()
    );
    assert_eq!(
        names(get(&every_env, "/admin/v1/envs").await),
        ["dev", "eu.prod", "prod"]
    );
    // Retiring a key is judged by the key's environment.
    let prod_kid = f.get("/admin/v1/envs/prod/keys").await.body[0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = f.state().await;
    let r = f
        .call_as(
            &dev_all,
            Method::POST,
            &format!("/admin/v1/keys/{prod_kid}/revoke"),
            Some(json!({})),
        )
        .await;
    assert_forbidden(&r, "keyward.env.prod.keys.revoke");
    assert_eq!(f.state().await.keys, before.keys);
}

/// Creates an admin token through the API as `as_token`.
async fn create_as(f: &Fixture, as_token: &str, permissions: &[&str], ttl: i64) -> Answer {
    f.call_as(
        as_token,
        Method::POST,
        "/admin/v1/admin-tokens",
        Some(json!({"permissions": permissions, "ttl_secs": ttl, "owner": "bob"})),
    )
    .await
}

#[tokio::test]
async fn a_token_cannot_create_a_token_with_more_than_it_holds() {
    let f = fixture().await;
    let store = &f.authority.store;
    let (creator, creator_id) = add_admin_token_with(
        store,
        &["keyward.env.dev.*", "keyward.admin.tokens.create"],
        Some(NOW + 3600),
    )
    .await;
    let tokens_before = store.admin_tokens().await.unwrap();
    let audit_before = f.state().await.audit;
    // Each attempt to widen what is held, and the grant that is named.
    let attempts: [(&[&str], &str); 8] = [
        (&["keyward.env.*"], "keyward.env.*"),
        (&["*"], "*"),
        (&["keyward.*"], "keyward.*"),
        (
            &["keyward.env.prod.keys.read"],
            "keyward.env.prod.keys.read",
        ),
        (
            &["keyward.env.dev.keys.*", "keyward.audit.read"],
            "keyward.audit.read",
        ),
        // An exact grant does not cover the group of the same name.
        (&["keyward.admin.tokens.*"], "keyward.admin.tokens.*"),
        (
            &["keyward.admin.tokens.create.*"],
            "keyward.admin.tokens.create.*",
        ),
        // `dev.*` covers below dev, not a sibling that shares its prefix.
        (&["keyward.env.devx.*"], "keyward.env.devx.*"),
    ];
    for (wanted, named) in attempts {
        let r = create_as(&f, &creator, wanted, 60).await;
        assert_forbidden(&r, named);
        assert!(
            r.body["error_description"]
                .as_str()
                .unwrap()
                .contains("more than its creator holds"),
            "{r:?}"
        );
    }
    // Nor for longer than it lives.
    let r = create_as(&f, &creator, &["keyward.env.dev.keys.read"], 3601).await;
    assert_error(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("cannot outlive"),
        "{r:?}"
    );
    // Templates and stars inside a grant are not grants.
    for bad in [
        &["keyward.env.{env}.read"][..],
        &["keyward.env.*.read"],
        &["a b"],
        &[],
    ] {
        let r = create_as(&f, &creator, bad, 60).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    // None of it made a token; each escalation is audited.
    assert_eq!(store.admin_tokens().await.unwrap(), tokens_before);
    let denied = audit_since(&f, audit_before).await;
    assert_eq!(denied.len(), 9, "{denied:?}");
    assert!(denied.iter().all(|r| r.action == "admin.denied"
        && r.actor == format!("admin:{creator_id}")
        && r.detail["status"] == 403));

    // What it holds, for no longer: made, and it works for that only.
    let r = create_as(&f, &creator, &["keyward.env.dev.keys.*"], 3600).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.body["permissions"], json!(["keyward.env.dev.keys.*"]));
    assert_eq!(r.body["owner"], "bob");
    assert_eq!(r.body["created_by"], format!("admin:{creator_id}"));
    assert_eq!(r.body["expires_at"], keyward_issuer::fmt_time(NOW + 3600));
    let child = r.body["token"].as_str().unwrap().to_owned();
    let child_id = r.body["id"].as_str().unwrap().to_owned();
    let rec = f.last_audit().await;
    assert_eq!(rec.action, "admin_token.create");
    assert_eq!(rec.subject.as_deref(), Some(child_id.as_str()));
    let ok = f
        .call_as(&child, Method::GET, "/admin/v1/envs/dev/keys", None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_forbidden(
        &f.call_as(&child, Method::GET, "/admin/v1/envs/dev/clients", None)
            .await,
        "keyward.env.dev.clients.read",
    );
    // It cannot make tokens at all: it was not given that.
    assert_forbidden(
        &create_as(&f, &child, &["keyward.env.dev.keys.read"], 60).await,
        "keyward.admin.tokens.create",
    );
    // A `*` token may hand on anything, `*` included.
    let r = create_as(&f, &f.token, &["*"], 60).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_refused() {
    let f = fixture().await;
    let store = &f.authority.store;
    let (expired, expired_id) = add_admin_token_with(store, &["*"], Some(NOW)).await;
    let (live, live_id) = add_admin_token_with(store, &["*"], Some(NOW + 1)).await;
    let before = f.state().await;
    let r = f
        .call_as(
            &expired,
            Method::POST,
            "/admin/v1/envs/dev/keys/rotate",
            Some(json!({})),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{r:?}"
    );
    let after = f.state().await;
    assert_eq!(
        (&after.keys, after.generation),
        (&before.keys, before.generation)
    );
    let rec = f.last_audit().await;
    assert_eq!(
        (rec.action.as_str(), rec.detail["reason"].as_str()),
        ("admin.denied", Some("expired"))
    );
    assert_eq!(rec.subject.as_deref(), Some(expired_id.as_str()));
    assert_eq!(rec.detail["status"], 401);
    assert_eq!(
        f.call_as(&live, Method::GET, "/admin/v1/envs", None)
            .await
            .status,
        StatusCode::OK
    );

    // Revoked through the API (by a token allowed to): refused at once.
    let (revoker, _) = add_admin_token_with(store, &["keyward.admin.tokens.revoke"], None).await;
    let r = f
        .call_as(
            &revoker,
            Method::POST,
            &format!("/admin/v1/admin-tokens/{live_id}/revoke"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["already_revoked"], false);
    let rec = f.last_audit().await;
    assert_eq!(rec.action, "admin_token.revoke");
    let r = f.call_as(&live, Method::GET, "/admin/v1/envs", None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(f.last_audit().await.detail["reason"], "revoked");
    // The listing shows both, never a hash.
    let list = f.get("/admin/v1/admin-tokens").await.body;
    let shown = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == live_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(shown["revoked_at"], keyward_issuer::fmt_time(NOW));
    assert!(!list.to_string().contains("hash"), "{list}");
    // Revoking needs its permission.
    let (reader, _) = add_admin_token_with(store, &["keyward.admin.tokens.read"], None).await;
    assert_forbidden(
        &f.call_as(
            &reader,
            Method::POST,
            &format!("/admin/v1/admin-tokens/{expired_id}/revoke"),
            None,
        )
        .await,
        "keyward.admin.tokens.revoke",
    );
    assert!(store
        .admin_tokens()
        .await
        .unwrap()
        .iter()
        .any(|t| t.id == expired_id && t.revoked_at.is_none()));
}

#[tokio::test]
async fn unauthenticated_refusals_are_audited_within_a_budget() {
    let clock = Arc::new(StepClock(AtomicI64::new(NOW)));
    let f = fixture_with(clock.clone(), Settings::default()).await;
    let before = f.state().await.audit;
    let flood = UNAUTHENTICATED_AUDITS_PER_MINUTE as usize + 7;
    for _ in 0..flood {
        let r = f
            .call_as("kwa_not-a-token", Method::GET, "/admin/v1/envs", None)
            .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let records = audit_since(&f, before).await;
    assert_eq!(records.len(), UNAUTHENTICATED_AUDITS_PER_MINUTE as usize);
    assert!(records.iter().all(|r| r.action == "admin.denied"
        && r.actor == "anonymous"
        && r.detail["reason"] == "unknown_token"
        && r.detail.get("unaudited_before").is_none()));
    // A minute later the next one is written, saying how many were not.
    clock.0.fetch_add(60, Ordering::SeqCst);
    let r = f
        .call_as("kwa_still-not", Method::GET, "/admin/v1/envs/dev", None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let rec = f.last_audit().await;
    assert_eq!(rec.detail["unaudited_before"], 7);
    assert_eq!(rec.detail["route"], "GET /admin/v1/envs/{env}");
    // A 403 is always written: the caller is known.
    let (weak, _) = add_admin_token_with(&f.authority.store, &["keyward.audit.read"], None).await;
    let n = f.state().await.audit;
    for _ in 0..flood {
        let r = f
            .call_as(&weak, Method::GET, "/admin/v1/envs/dev", None)
            .await;
        assert_forbidden(&r, "keyward.env.dev.read");
    }
    assert_eq!(f.state().await.audit, n + flood as i64);
    // The audit chain is intact, and readable with its permission.
    assert!(f.authority.store.verify_audit().await.unwrap().is_intact());
    let r = f
        .call_as(&weak, Method::GET, "/admin/v1/audit?after=0&limit=5", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body.as_array().unwrap().len(), 5);
    assert_eq!(r.body[0]["seq"], 1);
    for bad in [
        "limit=0",
        "limit=1001",
        "after=-1",
        "after=x",
        "after=1&after=2",
        "x=1",
    ] {
        let r = f
            .call_as(&weak, Method::GET, &format!("/admin/v1/audit?{bad}"), None)
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
}

/// Mints a token in environment `env` for `sub` with `permissions`, for `audience`.
async fn mint(
    f: &Fixture,
    env: &str,
    client_id: &str,
    audience: &str,
    permissions: &[&str],
) -> String {
    let r = f
        .post(
            &format!("/admin/v1/envs/{env}/tokens"),
            json!({"sub": "alice", "client_id": client_id, "audience": audience,
                   "permissions": permissions, "refresh": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    r.body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_sso_issuers_access_tokens_carry_admin_grants() {
    // The SSO is a second keyward environment, served on 127.0.0.1; the
    // admin API trusts its tokens for the audience `keyward-admin`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sso = format!("http://{}/sso", listener.local_addr().unwrap());
    let mut policy = IssuerPolicy::new(&sso);
    policy.audiences = vec!["keyward-admin".into()];
    let clock = Arc::new(FixedClock(NOW));
    let gate = Gate::builder()
        .issuer(policy)
        .clock(clock.clone())
        .build()
        .unwrap();
    let settings = Settings {
        admin_issuer: Some(gate),
        ..Settings::default()
    };
    let f = fixture_with(clock, settings).await;
    let r = f
        .post(
            "/admin/v1/envs",
            json!({"name": "sso", "issuer": sso, "policy": {"alg": "ES256", "token_ttl_secs": 600}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let app = f.app.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let r = f
        .post(
            "/admin/v1/envs/sso/clients",
            json!({"name": "console", "audiences": ["keyward-admin", "another-app"]}),
        )
        .await;
    let client = r.body["client_id"].as_str().unwrap().to_owned();

    let alice = mint(
        &f,
        "sso",
        &client,
        "keyward-admin",
        &["keyward.env.dev.keys.read", "keyward.admin.tokens.create"],
    )
    .await;
    let r = f
        .call_as(&alice, Method::GET, "/admin/v1/envs/dev/keys", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let before = f.state().await;
    let r = f
        .call_as(
            &alice,
            Method::POST,
            "/admin/v1/envs/dev/keys/rotate",
            Some(json!({})),
        )
        .await;
    assert_forbidden(&r, "keyward.env.dev.keys.rotate");
    let rec = f.last_audit().await;
    assert_eq!(rec.actor, "sso:alice");
    assert_eq!(rec.detail["kind"], "sso");
    assert_eq!(rec.detail["issuer"], sso.as_str());
    assert_eq!(f.state().await.keys, before.keys);
    // Tokens it makes hold no more than its grants, and end no later than it.
    let r = create_as(&f, &alice, &["keyward.env.dev.keys.read"], 600).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.body["created_by"], "sso:alice");
    assert_forbidden(
        &create_as(&f, &alice, &["keyward.env.dev.*"], 60).await,
        "keyward.env.dev.*",
    );
    let r = create_as(&f, &alice, &["keyward.env.dev.keys.read"], 601).await;
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("cannot outlive"),
        "{r:?}"
    );

    // Minting in the trusted environment hands on only what the minter holds.
    let (minter, _) =
        add_admin_token_with(&f.authority.store, &["keyward.env.sso.tokens.mint"], None).await;
    let r = f
        .call_as(
            &minter,
            Method::POST,
            "/admin/v1/envs/sso/tokens",
            Some(
                json!({"sub": "mallory", "client_id": client, "audience": "keyward-admin",
                        "permissions": ["keyward.env.*"], "refresh": false}),
            ),
        )
        .await;
    assert_forbidden(&r, "keyward.env.*");
    // A bare `*` is no grant unless the issuer's policy allows it.
    let star = mint(&f, "sso", &client, "keyward-admin", &["*"]).await;
    assert_forbidden(
        &f.call_as(&star, Method::GET, "/admin/v1/envs/dev", None)
            .await,
        "keyward.env.dev.read",
    );
    // A token of the same issuer for another application is no credential.
    let other = mint(&f, "sso", &client, "another-app", &["*"]).await;
    let r = f
        .call_as(&other, Method::GET, "/admin/v1/envs/dev", None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let challenge = r.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let rec = f.last_audit().await;
    assert_eq!(
        (
            rec.detail["reason"].as_str(),
            rec.detail["sso_reason"].as_str()
        ),
        (Some("sso_token"), Some("audience"))
    );
    // Nor is a token of this server's own dev environment.
    let r = f
        .post(
            "/admin/v1/envs/dev/clients",
            json!({"name": "app", "audiences": ["keyward-admin"]}),
        )
        .await;
    let dev_client = r.body["client_id"].as_str().unwrap().to_owned();
    let dev = mint(&f, "dev", &dev_client, "keyward-admin", &["*"]).await;
    let r = f
        .call_as(&dev, Method::GET, "/admin/v1/envs/dev", None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let rec = f.last_audit().await;
    assert_eq!(rec.detail["reason"], "sso_token");
    assert!(rec.detail["sso_reason"].is_string(), "{rec:?}");
    server.abort();
}

#[tokio::test]
async fn openapi_states_every_routes_permission() {
    let f = fixture().await;
    let doc: Value = f.get("/admin/v1/openapi.json").await.body;
    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented += 1;
            let route = ROUTES
                .iter()
                .find(|r| r.path == path && r.method.eq_ignore_ascii_case(method))
                .unwrap_or_else(|| panic!("{method} {path} is documented but not routed"));
            let stated = &op["x-keyward-permission"];
            let description = op["description"].as_str().unwrap();
            match route.need.permission_text() {
                None => {
                    assert!(
                        stated.is_null() && op.get("x-keyward-permission").is_some(),
                        "{path}"
                    );
                    assert_eq!(description, "Requires no permission.");
                }
                Some(p) => {
                    assert_eq!(stated, p, "{method} {path}");
                    assert!(
                        description.starts_with(&format!("Requires `{p}`")),
                        "{description}"
                    );
                    assert!(p.starts_with("keyward."), "{p}");
                    assert!(op["responses"]["403"].is_object(), "{method} {path}");
                }
            }
        }
    }
    assert_eq!(documented, ROUTES.len(), "every route is documented");
}
