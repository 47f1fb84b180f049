//! The admin API (`/admin/v1/`), driven through the application router with
//! `tower::ServiceExt::oneshot` over a temporary SQLite store.
//!
//! Every refused request is checked to leave the store as it was: audit
//! chain length, generation, environments, keys and clients.

#[path = "../../verify/tests/support/logs.rs"]
mod logs;

#[path = "support/admin_fixture.rs"]
mod admin_fixture;

use admin_fixture::*;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use keyward_issuer::tokens::new_secret;
use keyward_jose::{verify_jwt, Algorithm, PrivateKey, Validation};
use serde_json::{json, Value};
use tower::ServiceExt;

// ---------------------------------------------------------------------------

#[tokio::test]
async fn requests_without_a_valid_admin_token_are_refused() {
    let f = fixture().await;
    let before = f.state().await;
    let body = json!({"name": "x", "issuer": "https://x.test"}).to_string();
    let req = |auth: Option<&str>| {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/admin/v1/envs")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(Body::from(body.clone())).unwrap()
    };
    let wrong = format!("Bearer {}", new_secret("kwa_").0);
    let basic = format!("Basic {}", f.token);
    for auth in [
        None,
        Some(wrong.as_str()),
        Some(basic.as_str()),
        Some("Bearer"),
    ] {
        let r = f.send(req(auth)).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        let challenge = r.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert_eq!(challenge, "Bearer realm=\"keyward-admin\"");
    }
    // GETs too.
    let r = f
        .send(
            Request::builder()
                .uri("/admin/v1/envs")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");

    // A revoked token: accepted before, refused once the server sees the revocation.
    let (other, other_id) = add_admin_token(&f.authority.store).await;
    let with = |t: &str| {
        Request::builder()
            .uri("/admin/v1/envs")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(f.send(with(&other)).await.status, StatusCode::OK);
    let mut tx = f.authority.store.begin().await.unwrap();
    assert!(tx.revoke_admin_token(&other_id, NOW).await.unwrap());
    tx.commit().await.unwrap();
    f.authority.reload().await.unwrap();
    let r = f.send(with(&other)).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    // The fixture's token still works.
    assert_eq!(f.send(with(&f.token)).await.status, StatusCode::OK);

    // Nothing changed but the audit chain, which holds one `admin.denied`
    // record per refusal (six, within the budget of unauthenticated ones).
    let after = f.state().await;
    assert_eq!(after.envs, before.envs);
    assert_eq!(after.keys, before.keys);
    assert_eq!(after.clients, before.clients);
    assert_eq!(after.audit, before.audit + 6);
    let s = &f.authority.store;
    let records = s.audit(before.audit as i64, 100).await.unwrap();
    assert!(
        records.iter().all(|r| r.action == "admin.denied"),
        "{records:?}"
    );
    let reasons: Vec<&str> = records
        .iter()
        .map(|r| r.detail["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "missing_token",
            "unknown_token",
            "malformed_header",
            "malformed_header",
            "missing_token",
            "revoked"
        ]
    );
    assert_eq!(records[5].subject.as_deref(), Some(other_id.as_str()));
    assert_eq!(records[0].detail["route"], "POST /admin/v1/envs");
}

#[tokio::test]
async fn openapi_is_served_without_auth_and_describes_bearer_auth() {
    let f = fixture().await;
    let r = f
        .send(
            Request::builder()
                .uri("/admin/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["openapi"], "3.1.0");
    let schemes = r.body["components"]["securitySchemes"].as_object().unwrap();
    let (name, scheme) = schemes.iter().next().unwrap();
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(r.body["security"], json!([{name.clone(): []}]));
    // Every $ref points at something defined.
    let text = r.body.to_string();
    for part in text.split("\"$ref\":\"#/").skip(1) {
        let path = &part[..part.find('"').unwrap()];
        let mut v = &r.body;
        for seg in path.split('/') {
            v = &v[seg];
        }
        assert!(!v.is_null(), "dangling $ref #/{path}");
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let f = fixture().await;
    let doc = f.get("/admin/v1/openapi.json").await.body;
    let kid = f.get("/admin/v1/envs/dev/keys").await.body[0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let (client_id, _) = f
        .client(json!({"name": "probe", "scopes": ["a"], "audiences": []}))
        .await;
    let mut ops: Vec<(String, String, bool)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((
                method.to_uppercase(),
                path.clone(),
                op.get("requestBody").is_some(),
            ));
        }
    }
    let mut documented: Vec<(String, String)> =
        ops.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = [
        ("GET", "/admin/v1/openapi.json"),
        ("GET", "/admin/v1/envs"),
        ("POST", "/admin/v1/envs"),
        ("GET", "/admin/v1/envs/{env}"),
        ("PATCH", "/admin/v1/envs/{env}"),
        ("DELETE", "/admin/v1/envs/{env}"),
        ("GET", "/admin/v1/envs/{env}/keys"),
        ("POST", "/admin/v1/envs/{env}/keys/rotate"),
        ("POST", "/admin/v1/keys/{kid}/retire"),
        ("POST", "/admin/v1/keys/{kid}/revoke"),
        ("GET", "/admin/v1/envs/{env}/clients"),
        ("POST", "/admin/v1/envs/{env}/clients"),
        ("GET", "/admin/v1/envs/{env}/clients/{client_id}"),
        ("PATCH", "/admin/v1/envs/{env}/clients/{client_id}"),
        ("DELETE", "/admin/v1/envs/{env}/clients/{client_id}"),
        (
            "POST",
            "/admin/v1/envs/{env}/clients/{client_id}/rotate-secret",
        ),
        ("POST", "/admin/v1/envs/{env}/tokens"),
        ("GET", "/admin/v1/envs/{env}/login-requests/{challenge}"),
        (
            "POST",
            "/admin/v1/envs/{env}/login-requests/{challenge}/accept",
        ),
        (
            "POST",
            "/admin/v1/envs/{env}/login-requests/{challenge}/reject",
        ),
        ("GET", "/admin/v1/envs/{env}/consent-requests/{challenge}"),
        (
            "POST",
            "/admin/v1/envs/{env}/consent-requests/{challenge}/accept",
        ),
        (
            "POST",
            "/admin/v1/envs/{env}/consent-requests/{challenge}/reject",
        ),
        ("GET", "/admin/v1/admin-tokens"),
        ("POST", "/admin/v1/admin-tokens"),
        ("POST", "/admin/v1/admin-tokens/{id}/revoke"),
        ("GET", "/admin/v1/audit"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    expected.sort();
    assert_eq!(documented, expected);

    // DELETE last: it removes the client the others use.
    ops.sort_by_key(|(m, _, _)| m == "DELETE");
    for (method, path, _) in &ops {
        let uri = path
            .replace("{env}", "dev")
            .replace("{kid}", &kid)
            .replace("{client_id}", &client_id)
            .replace("{id}", &f.token_id)
            .replace("{challenge}", "no-such-challenge");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        // A probe body with an unknown field: every operation that reads a
        // body refuses it (400) before changing anything.
        let body = (m == Method::POST || m == Method::PATCH).then(|| json!({"__probe": true}));
        let r = f.call(m.clone(), &uri, body).await;
        if path.contains("{challenge}") && m == Method::GET {
            // Routed: the handler (not the fallback) says the challenge
            // is unknown.
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {uri}: {r:?}");
            assert!(
                r.body["error_description"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("no such")),
                "{method} {uri} is documented but not routed: {r:?}"
            );
            continue;
        }
        assert!(
            r.status != StatusCode::NOT_FOUND && r.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri} is documented but not routed: {r:?}"
        );
        let want = match m {
            Method::GET => StatusCode::OK,
            // Refused: the environment still has keys (and without force).
            Method::DELETE if path == "/admin/v1/envs/{env}" => StatusCode::CONFLICT,
            Method::DELETE => StatusCode::NO_CONTENT,
            _ => StatusCode::BAD_REQUEST,
        };
        assert_eq!(r.status, want, "{method} {uri}: {r:?}");
    }
}

#[tokio::test]
async fn environments_list_create_show() {
    let f = fixture().await;
    let r = f.get("/admin/v1/envs").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    assert_eq!(r.body[0]["name"], "dev");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");

    let r = f
        .post(
            "/admin/v1/envs",
            json!({"name": "staging", "issuer": "https://staging.test", "policy": {"alg": "ES384", "lead_secs": 120, "rotate_every_secs": 3600}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.body["name"], "staging");
    assert_eq!(r.body["policy"]["alg"], "ES384");
    assert_eq!(r.body["policy"]["rsa_bits"], Value::Null);
    assert_eq!(r.body["policy"]["lead_secs"], 120);
    assert_eq!(r.body["policy"]["token_ttl_secs"], 3600);
    assert_eq!(r.body["created_at"], "2023-11-14T22:13:20Z");
    // Its first key, per the policy, came with it and signs at once.
    assert_eq!(r.body["first_key"]["alg"], "ES384");
    assert_eq!(r.body["first_key"]["state"], "active");
    let first = r.body["first_key"]["kid"].as_str().unwrap().to_string();
    let n = f.authority.store.audit_len().await.unwrap();
    let last_two = f.authority.store.audit(n - 2, 2).await.unwrap();
    assert_eq!(
        last_two
            .iter()
            .map(|a| (a.action.as_str(), a.actor.as_str(), a.subject.as_deref()))
            .collect::<Vec<_>>(),
        [
            ("env.create", f.actor().as_str(), Some("staging")),
            ("key.generate", f.actor().as_str(), Some(first.as_str())),
        ]
    );
    // Live on this server at once, signing.
    let snapshot = f.authority.snapshot();
    let staging = snapshot.env("staging").unwrap();
    assert!(staging.signer(NOW).is_some());
    let r = f.get("/admin/v1/envs/staging/keys").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    assert_eq!(r.body[0]["kid"], first.as_str());
    // Default policy; `first_key: false` makes no key.
    let r = f
        .post(
            "/admin/v1/envs",
            json!({"name": "prod", "issuer": "https://prod.test/", "first_key": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.body["policy"]["alg"], "RS256");
    assert_eq!(r.body["policy"]["rsa_bits"], 4096);
    assert_eq!(r.body["first_key"], Value::Null);
    let r = f.get("/admin/v1/envs/prod/keys").await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!([])));

    let r = f.get("/admin/v1/envs/staging").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["issuer"], "https://staging.test");

    // Refused requests change nothing.
    let before = f.state().await;
    let bad: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"name": "staging", "issuer": "https://other.test"}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        // Another environment's issuer URL, however it is spelled.
        (
            json!({"name": "dup", "issuer": ISSUER, "policy": {"alg": "ES256"}}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            json!({"name": "dup", "issuer": "http://ISSUER.test/dev/", "policy": {"alg": "ES256"}}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        // Under another environment's endpoints: it would take its requests.
        (
            json!({"name": "hidden", "issuer": format!("{ISSUER}/oauth2"), "policy": {"alg": "ES256"}}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test", "first_key": "no"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test", "extra": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"issuer": "https://x.test"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "ftp://x.test"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test?a=b"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "a b", "issuer": "https://x.test"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "", "issuer": "https://x.test"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": 5, "issuer": "https://x.test"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test", "policy": {"alg": "HS256"}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test", "policy": {"alg": "none"}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test", "policy": {"alg": "ES256", "rsa_bits": 2048}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test", "policy": {"alg": "RS256", "rsa_bits": 1024}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test", "policy": {"lead_secs": 0}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test", "policy": {"lead_secs": 100, "rotate_every_secs": 100}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test", "policy": {"token_ttl_secs": -1}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test", "policy": {"rotate_every_secs": i64::MAX}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "x", "issuer": "https://x.test", "policy": {"algo": "RS256"}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (json!(["x"]), StatusCode::BAD_REQUEST, "invalid_request"),
    ];
    for (body, status, code) in bad {
        let r = f.post("/admin/v1/envs", body.clone()).await;
        assert_error(&r, status, code);
        assert_eq!(f.state().await, before, "{body} changed the store");
    }
    let r = f
        .raw(
            Method::POST,
            "/admin/v1/envs",
            "application/json",
            b"{\"name\": ".to_vec(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = f
        .raw(
            Method::POST,
            "/admin/v1/envs",
            "application/json",
            br#"{"name": "x", "name": "y", "issuer": "https://x.test"}"#.to_vec(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = f
        .raw(
            Method::POST,
            "/admin/v1/envs",
            "text/plain",
            br#"{"name": "x", "issuer": "https://x.test"}"#.to_vec(),
        )
        .await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request");
    let mut big = br#"{"name": "x", "issuer": "https://x.test", "pad": ""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 70 * 1024));
    big.extend(b"\"}");
    let r = f
        .raw(Method::POST, "/admin/v1/envs", "application/json", big)
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request");
    let r = f.get("/admin/v1/envs/nope").await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = f.get("/admin/v1/envs/nope/keys").await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(f.state().await, before);
}

#[tokio::test]
async fn environments_delete_only_when_asked_to_force_what_is_in_use() {
    let f = fixture().await;
    let r = f
        .post(
            "/admin/v1/envs",
            json!({"name": "gone", "issuer": "https://gone.test", "policy": {"alg": "EdDSA"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let kid = r.body["first_key"]["kid"].as_str().unwrap().to_string();
    let (client_id, _) = {
        let r = f
            .post(
                "/admin/v1/envs/gone/clients",
                json!({"name": "c", "scopes": ["a"], "audiences": []}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        (r.body["client_id"].as_str().unwrap().to_string(), ())
    };
    // Refused while it publishes a key and has a client; bad queries too.
    let before = f.state().await;
    for (query, status) in [
        ("", StatusCode::CONFLICT),
        ("?force=false", StatusCode::CONFLICT),
        ("?force=yes", StatusCode::BAD_REQUEST),
        ("?force=true&force=true", StatusCode::BAD_REQUEST),
        ("?forced=true", StatusCode::BAD_REQUEST),
    ] {
        let r = f
            .call(Method::DELETE, &format!("/admin/v1/envs/gone{query}"), None)
            .await;
        assert_eq!(r.status, status, "{query}: {r:?}");
        assert_eq!(f.state().await, before, "{query} changed the store");
    }
    let r = f.call(Method::DELETE, "/admin/v1/envs/gone", None).await;
    let d = r.body["error_description"].as_str().unwrap();
    assert!(
        d.contains("1 published key(s) and 1 client(s)") && d.contains("--force"),
        "{d}"
    );
    let r = f
        .call(Method::DELETE, "/admin/v1/envs/nope?force=true", None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    let r = f
        .call(Method::DELETE, "/admin/v1/envs/gone?force=true", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["keys"], json!([kid]));
    assert_eq!(r.body["clients"], json!([client_id]));
    let audit = f.last_audit().await;
    assert_eq!(
        (
            audit.action.as_str(),
            audit.actor.as_str(),
            audit.env.as_deref()
        ),
        ("env.delete", f.actor().as_str(), Some("gone"))
    );
    assert_eq!(audit.detail["forced"], true);
    // Gone from the store and from this server at once; dev untouched.
    assert!(f.authority.snapshot().env("gone").is_none());
    let r = f.get("/admin/v1/envs/gone").await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        f.state().await.envs,
        before
            .envs
            .into_iter()
            .filter(|e| e.name != "gone")
            .collect::<Vec<_>>()
    );
    // An environment without keys or clients goes without force, and its
    // issuer URL can be used again.
    for _ in 0..2 {
        let r = f
            .post(
                "/admin/v1/envs",
                json!({"name": "again", "issuer": "https://gone.test", "first_key": false}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        let r = f.call(Method::DELETE, "/admin/v1/envs/again", None).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
}

#[tokio::test]
async fn keys_list_rotate_retire_revoke() {
    let f = fixture().await;
    let r = f.get("/admin/v1/envs/dev/keys").await;
    assert_eq!(r.status, StatusCode::OK);
    let first = r.body[0]["kid"].as_str().unwrap().to_string();
    assert_eq!(r.body[0]["state"], "active");
    assert_eq!(r.body[0]["alg"], "ES256");
    assert_eq!(r.body[0]["size"], 256);
    assert_eq!(r.body[0]["curve"], "P-256");
    assert_eq!(r.body[0]["activates_at"], "2023-11-14T22:13:20Z");
    assert_eq!(r.body[0]["retires_at"], Value::Null);

    // A lead rotation: published now, signs after the policy's lead (600 s).
    let r = f.post("/admin/v1/envs/dev/keys/rotate", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let second = r.body["kid"].as_str().unwrap().to_string();
    assert_eq!(r.body["state"], "pending");
    assert_eq!(r.body["alg"], "ES256");
    assert_eq!(r.body["activates_at"], "2023-11-14T22:23:20Z");
    assert_eq!(r.body["retiring"][0]["kid"], first.as_str());
    let audit = f.last_audit().await;
    assert_eq!(
        (audit.action.as_str(), audit.actor.as_str()),
        ("key.rotate", f.actor().as_str())
    );
    // Published at once on this server.
    assert!(f.served_keys().await.get(&second).is_some());
    // The reproduction: retiring the signing key while its successor is only
    // pending would leave nothing signing for the lead time. Refused, saying
    // when the successor signs; the token endpoint keeps signing.
    let before = f.state().await;
    let r = f
        .post(
            &format!("/admin/v1/keys/{first}/retire"),
            json!({"force": true}),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    let d = r.body["error_description"].as_str().unwrap();
    assert!(
        d.contains("2023-11-14T22:23:20Z") && d.contains(&second) && d.contains("--immediate"),
        "{d}"
    );
    assert_eq!(f.state().await, before);
    assert!(f
        .authority
        .snapshot()
        .env("dev")
        .unwrap()
        .signer(NOW)
        .is_some());

    let before = f.state().await;
    let bad: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "/admin/v1/envs/dev/keys/rotate",
            json!({}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            "/admin/v1/envs/dev/keys/rotate",
            json!({"immediate": true, "lead_secs": 5}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/admin/v1/envs/dev/keys/rotate",
            json!({"lead_secs": -1}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/admin/v1/envs/dev/keys/rotate",
            json!({"lead_secs": i64::MAX}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/admin/v1/envs/dev/keys/rotate",
            json!({"immediate": "yes"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/admin/v1/envs/dev/keys/rotate",
            json!({"algorithm": "RS256"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/admin/v1/envs/dev/keys/rotate",
            json!({"alg": "HS256"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/admin/v1/envs/dev/keys/rotate",
            json!({"alg": "RS256", "rsa_bits": 1024}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/admin/v1/envs/nope/keys/rotate",
            json!({}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/admin/v1/keys/nope/retire",
            json!({}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/admin/v1/keys/nope/revoke",
            json!({}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        // An unknown key is 404 before its body is read: the permission
        // it needs depends on its environment.
        (
            "/admin/v1/keys/nope/revoke",
            json!({"why": "x"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (path, body, status, code) in bad {
        let r = f.post(path, body.clone()).await;
        assert_error(&r, status, code);
        assert_eq!(f.state().await, before, "{path} {body} changed the store");
    }
    let r = f
        .post(
            &format!("/admin/v1/keys/{first}/revoke"),
            json!({"reason": "x".repeat(501)}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(f.state().await, before);

    // An immediate rotation signs at once.
    let r = f
        .post("/admin/v1/envs/dev/keys/rotate", json!({"immediate": true}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let third = r.body["kid"].as_str().unwrap().to_string();
    assert_eq!(r.body["state"], "active");
    let listed = f.get("/admin/v1/envs/dev/keys").await.body;
    let state_of = |kid: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state_of(&first), "retired");
    assert_eq!(state_of(&third), "active");

    // Retiring the only key that signs now needs force and an acknowledged
    // outage; the refusal says what to do instead.
    let before = f.state().await;
    for body in [
        json!({}),
        json!({"force": true}),
        json!({"accept_outage": true}),
    ] {
        let r = f
            .post(&format!("/admin/v1/keys/{third}/retire"), body.clone())
            .await;
        assert_error(&r, StatusCode::CONFLICT, "conflict");
        let d = r.body["error_description"].as_str().unwrap();
        assert!(
            d.contains("--immediate") && d.contains("--accept-outage"),
            "{d}"
        );
        assert_eq!(f.state().await, before, "{body}");
    }
    let r = f
        .post(
            &format!("/admin/v1/keys/{third}/retire"),
            json!({"force": true, "accept_outage": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["state"], "retired");
    assert_eq!(f.last_audit().await.action, "key.retire");

    // Revoke (empty body allowed), then revoking again conflicts.
    let r = f
        .call(
            Method::POST,
            &format!("/admin/v1/keys/{first}/revoke"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["state"], "revoked");
    assert_eq!(r.body["was_signing"], false);
    let audit = f.last_audit().await;
    assert_eq!(
        (audit.action.as_str(), audit.actor.as_str()),
        ("key.revoke", f.actor().as_str())
    );
    assert!(f.served_keys().await.get(&first).is_none());
    let before = f.state().await;
    let r = f
        .post(
            &format!("/admin/v1/keys/{first}/revoke"),
            json!({"reason": "again"}),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    assert_eq!(f.state().await, before);
}

#[tokio::test]
async fn clients_create_list_show_update_rotate_delete() {
    let f = fixture().await;
    let r = f
        .post(
            "/admin/v1/envs/dev/clients",
            json!({"name": "orders", "scopes": ["orders.read", "orders.write"], "audiences": ["api://orders"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let id = r.body["client_id"].as_str().unwrap().to_string();
    let secret = r.body["client_secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("kws_"));
    assert_eq!(r.body["auth"], "client_secret_basic");
    assert_eq!(
        r.body["grant_types"],
        json!(["client_credentials", "refresh_token"])
    );
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let audit = f.last_audit().await;
    assert_eq!(
        (audit.action.as_str(), audit.actor.as_str()),
        ("client.create", f.actor().as_str())
    );
    // Live at once: the token endpoint knows the client.
    let t = f
        .token_endpoint(&id, &secret, "grant_type=client_credentials")
        .await;
    assert_eq!(t.status, StatusCode::OK, "{t:?}");

    let list = f.get("/admin/v1/envs/dev/clients").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    assert!(list.body[0].get("client_secret").is_none());
    let r = f.get(&format!("/admin/v1/envs/dev/clients/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["name"], "orders");
    assert!(!r.body.to_string().contains(&secret));

    // A private_key_jwt client: no secret.
    let jwk = PrivateKey::generate(Algorithm::ES256, None)
        .unwrap()
        .public_key()
        .to_jwk(Some("c1".into()))
        .to_value();
    let r = f
        .post(
            "/admin/v1/envs/dev/clients",
            json!({"name": "svc", "auth": "private_key_jwt", "jwks": {"keys": [jwk]}, "scopes": ["a"], "grant_types": ["client_credentials"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.body["client_secret"], Value::Null);
    assert_eq!(r.body["has_jwks"], true);
    let pkjwt = r.body["client_id"].as_str().unwrap().to_string();

    // Bad input and unknown things change nothing.
    let before = f.state().await;
    let bad_create: Vec<(&str, Value, StatusCode)> = vec![
        (
            "dev",
            json!({"name": "x", "scopes": ["a b"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "dev",
            json!({"name": "x", "grant_types": ["password"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "dev",
            json!({"name": "x", "auth": "none"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "dev",
            json!({"name": "x", "auth": "private_key_jwt"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "dev",
            json!({"name": "x", "auth": "private_key_jwt", "jwks": "{}"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "dev",
            json!({"name": "x", "auth": "private_key_jwt", "jwks": {"keys": []}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "dev",
            json!({"name": "x", "jwks_uri": "https://x.test/jwks"}),
            StatusCode::BAD_REQUEST,
        ),
        ("dev", json!({"name": ""}), StatusCode::BAD_REQUEST),
        (
            "dev",
            json!({"name": "x", "refresh_token_ttl_secs": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "dev",
            json!({"name": "x", "refresh_token_ttl_secs": i64::MAX}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "dev",
            json!({"name": "x", "client_secret": "mine"}),
            StatusCode::BAD_REQUEST,
        ),
        ("dev", json!({"scopes": ["a"]}), StatusCode::BAD_REQUEST),
        ("nope", json!({"name": "x"}), StatusCode::NOT_FOUND),
    ];
    for (env, body, status) in bad_create {
        let r = f
            .post(&format!("/admin/v1/envs/{env}/clients"), body.clone())
            .await;
        assert_eq!(r.status, status, "{body}: {r:?}");
        assert_eq!(f.state().await, before, "{body} changed the store");
    }
    let path = format!("/admin/v1/envs/dev/clients/{id}");
    let bad_patch: Vec<(String, Value, StatusCode)> = vec![
        (
            path.clone(),
            json!({"scopes": ["a b"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            path.clone(),
            json!({"auth": "private_key_jwt"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            path.clone(),
            json!({"client_id": "other"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            path.clone(),
            json!({"access_token_ttl_secs": -5}),
            StatusCode::BAD_REQUEST,
        ),
        (
            path.clone(),
            json!({"grant_types": "client_credentials"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/v1/envs/dev/clients/nope".into(),
            json!({"name": "y"}),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/admin/v1/envs/nope/clients/{id}"),
            json!({"name": "y"}),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (p, body, status) in bad_patch {
        let r = f.call(Method::PATCH, &p, Some(body.clone())).await;
        assert_eq!(r.status, status, "{body}: {r:?}");
        assert_eq!(f.state().await, before, "{body} changed the store");
    }
    for (m, p) in [
        (Method::GET, "/admin/v1/envs/dev/clients/nope".to_string()),
        (Method::GET, "/admin/v1/envs/nope/clients".to_string()),
        (
            Method::DELETE,
            "/admin/v1/envs/dev/clients/nope".to_string(),
        ),
        (Method::DELETE, format!("/admin/v1/envs/nope/clients/{id}")),
        (
            Method::POST,
            "/admin/v1/envs/dev/clients/nope/rotate-secret".to_string(),
        ),
    ] {
        let r = f.call(m.clone(), &p, None).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(f.state().await, before, "{m} {p} changed the store");
    }
    let r = f
        .call(
            Method::POST,
            &format!("/admin/v1/envs/dev/clients/{pkjwt}/rotate-secret"),
            None,
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    assert_eq!(f.state().await, before);

    // Update: narrower scopes and a TTL override, live at once.
    let r = f
        .call(
            Method::PATCH,
            &path,
            Some(
                json!({"name": "orders-2", "scopes": ["orders.read"], "access_token_ttl_secs": 60}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["name"], "orders-2");
    assert_eq!(r.body["scopes"], json!(["orders.read"]));
    assert_eq!(r.body["audiences"], json!(["api://orders"]));
    assert_eq!(r.body["access_token_ttl_secs"], 60);
    assert_eq!(f.last_audit().await.action, "client.update");
    let t = f
        .token_endpoint(
            &id,
            &secret,
            "grant_type=client_credentials&scope=orders.write",
        )
        .await;
    assert_eq!(t.status, StatusCode::BAD_REQUEST);
    assert_eq!(t.body["error"], "invalid_scope");
    let t = f
        .token_endpoint(&id, &secret, "grant_type=client_credentials")
        .await;
    assert_eq!(t.body["expires_in"], 60);
    // null clears the override.
    let r = f
        .call(
            Method::PATCH,
            &path,
            Some(json!({"access_token_ttl_secs": null})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["access_token_ttl_secs"], Value::Null);

    // Rotate the secret: the old one stops working at once.
    let r = f
        .call(Method::POST, &format!("{path}/rotate-secret"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let new_secret = r.body["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    assert_eq!(r.body["client_id"], id.as_str());
    let audit = f.last_audit().await;
    assert_eq!(
        (audit.action.as_str(), audit.actor.as_str()),
        ("client.rotate_secret", f.actor().as_str())
    );
    let old = f
        .token_endpoint(&id, &secret, "grant_type=client_credentials")
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = f
        .token_endpoint(&id, &new_secret, "grant_type=client_credentials")
        .await;
    assert_eq!(new.status, StatusCode::OK);

    // Delete.
    let r = f.call(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert_eq!(f.last_audit().await.action, "client.delete");
    let r = f.get(&path).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let gone = f
        .token_endpoint(&id, &new_secret, "grant_type=client_credentials")
        .await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);
    let list = f.get("/admin/v1/envs/dev/clients").await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn minted_tokens_verify_against_the_jwks_and_carry_roles_and_permissions() {
    let f = fixture().await;
    let (id, secret) = f
        .client(json!({"name": "web", "scopes": ["orders.read", "orders.write"], "audiences": ["api://orders"]}))
        .await;
    let r = f
        .post(
            "/admin/v1/envs/dev/tokens",
            json!({
                "sub": "alice",
                "client_id": id,
                "scopes": ["orders.read"],
                "roles": ["admin", "ops"],
                "permissions": ["orders.*.read", "invoices.42.pay"],
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 300);
    assert_eq!(r.body["scope"], "orders.read");
    let refresh = r.body["refresh_token"].as_str().unwrap().to_string();
    assert!(refresh.starts_with("kwr_"));
    let token = r.body["access_token"].as_str().unwrap();

    let keys = f.served_keys().await;
    let ok = verify_jwt(
        token,
        &keys,
        &Validation::access_token(ISSUER, &["api://orders"]),
        NOW,
    )
    .unwrap();
    assert_eq!(ok.claims.sub(), Some("alice"));
    assert_eq!(ok.claims.client_id(), Some(id.as_str()));
    assert_eq!(ok.claims.scope(), Some("orders.read"));
    assert_eq!(ok.claims.get("roles"), Some(json!(["admin", "ops"])));
    assert_eq!(
        ok.claims.get("permissions"),
        Some(json!(["orders.*.read", "invoices.42.pay"]))
    );
    let audit = f.last_audit().await;
    assert_eq!(audit.action, "token.issue");
    assert_eq!(audit.actor, f.actor());
    assert_eq!(audit.subject.as_deref(), Some("alice"));
    assert_eq!(audit.env.as_deref(), Some("dev"));

    // The refresh token works at the token endpoint and keeps the claims.
    let t = f
        .token_endpoint(
            &id,
            &secret,
            &format!("grant_type=refresh_token&refresh_token={refresh}"),
        )
        .await;
    assert_eq!(t.status, StatusCode::OK, "{t:?}");
    let again = verify_jwt(
        t.body["access_token"].as_str().unwrap(),
        &keys,
        &Validation::access_token(ISSUER, &["api://orders"]),
        NOW,
    )
    .unwrap();
    assert_eq!(again.claims.get("roles"), Some(json!(["admin", "ops"])));

    // Without a refresh token; default scopes are all of the client's.
    let r = f
        .post(
            "/admin/v1/envs/dev/tokens",
            json!({"sub": "bob", "client_id": id, "refresh": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.body.get("refresh_token").is_none());
    assert_eq!(r.body["scope"], "orders.read orders.write");

    // Refusals change nothing.
    let before = f.state().await;
    let bad: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "dev",
            json!({"sub": "a", "client_id": "nope"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "nope",
            json!({"sub": "a", "client_id": id}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "dev",
            json!({"sub": "a", "client_id": id, "scopes": ["admin"]}),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            "dev",
            json!({"sub": "a", "client_id": id, "audience": "api://other"}),
            StatusCode::BAD_REQUEST,
            "invalid_target",
        ),
        (
            "dev",
            json!({"sub": "", "client_id": id}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "dev",
            json!({"client_id": id}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "dev",
            json!({"sub": "a", "client_id": id, "roles": [""]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "dev",
            json!({"sub": "a", "client_id": id, "permissions": ["a b"]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "dev",
            json!({"sub": "a", "client_id": id, "permissions": "a.b"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "dev",
            json!({"sub": "a", "client_id": id, "claims": {"iss": "x"}}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (env, body, status, code) in bad {
        let r = f
            .post(&format!("/admin/v1/envs/{env}/tokens"), body.clone())
            .await;
        assert_error(&r, status, code);
        assert_eq!(f.state().await, before, "{body} changed the store");
    }
}

/// Runs SQL on the fixture's SQLite file from outside the server (python3's
/// sqlite3), as an operator or a broken disk would; returns what it prints.
fn sqlite(f: &Fixture, sql: &str) -> String {
    let db = f._dir.path().join("keyward.db");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             for row in c.execute(sys.argv[2]): print(*row)\n\
             c.commit()",
        ])
        .arg(&db)
        .arg(sql)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The value of `keyward_server_errors_total{reason}` on `/metrics`.
async fn server_errors(f: &Fixture, reason: &str) -> f64 {
    let resp = f
        .app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let want = format!("keyward_server_errors_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .map(|v| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no {want} in {text}"))
}

const SERVER_ERROR_BODY: &str =
    r#"{"error":"server_error","error_description":"the server could not complete the request"}"#;

#[tokio::test]
async fn a_store_failure_at_the_token_endpoint_is_logged_once_and_counted() {
    let f = fixture().await;
    let (id, secret) = f.client(json!({"name": "web", "scopes": ["a"]})).await;
    let r = f
        .post(
            "/admin/v1/envs/dev/tokens",
            json!({"sub": "alice", "client_id": id}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let refresh = r.body["refresh_token"].as_str().unwrap().to_string();
    let before = server_errors(&f, "store").await;

    // The refresh grant reads and writes the store: take its table away.
    sqlite(&f, "DROP TABLE refresh_tokens");
    let (logs, guard) = logs::capture_logs();
    let t = f
        .token_endpoint(
            &id,
            &secret,
            &format!("grant_type=refresh_token&refresh_token={refresh}"),
        )
        .await;
    drop(guard);
    assert_eq!(t.status, StatusCode::INTERNAL_SERVER_ERROR, "{t:?}");
    assert_eq!(t.body.to_string(), SERVER_ERROR_BODY);
    assert_eq!(t.headers[header::CACHE_CONTROL], "no-store");

    let logs = logs.text();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("request failed on the server's side"))
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    for want in [
        "ERROR",
        r#"env="dev""#,
        r#"endpoint="token""#,
        r#"reason="store""#,
        "no such table: refresh_tokens",
    ] {
        assert!(lines[0].contains(want), "{want} not in {logs}");
    }
    assert!(
        !logs.contains(&refresh) && !logs.contains(&secret),
        "{logs}"
    );
    assert!(server_errors(&f, "store").await >= before + 1.0);
}

#[tokio::test]
async fn token_issue_is_audited_with_its_refresh_token_or_not_at_all() {
    let f = fixture().await;
    let (id, _) = f.client(json!({"name": "web", "scopes": ["a"]})).await;
    let mint = || {
        f.post(
            "/admin/v1/envs/dev/tokens",
            json!({"sub": "alice", "client_id": id}),
        )
    };
    let count = || sqlite(&f, "SELECT count(*) FROM refresh_tokens");
    let before_audit_errors = server_errors(&f, "audit").await;

    // The audit append fails: no refresh token stays behind either.
    sqlite(
        &f,
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit \
         BEGIN SELECT RAISE(ABORT, 'audit is read-only'); END",
    );
    let state = f.state().await;
    let (logs, guard) = logs::capture_logs();
    let r = mint().await;
    drop(guard);
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{r:?}");
    assert_eq!(r.body.to_string(), SERVER_ERROR_BODY);
    assert_eq!(count(), "0");
    assert_eq!(f.state().await, state);
    let logs = logs.text();
    assert_eq!(
        logs.matches("request failed on the server's side").count(),
        1,
        "{logs}"
    );
    assert!(logs.contains(r#"reason="audit""#), "{logs}");
    assert!(logs.contains("audit is read-only"), "{logs}");
    assert!(server_errors(&f, "audit").await >= before_audit_errors + 1.0);

    // Audited again: both are written, together.
    sqlite(&f, "DROP TRIGGER no_audit");
    let r = mint().await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(count(), "1");
    let audit = f.last_audit().await;
    assert_eq!(audit.action, "token.issue");
    assert_eq!(audit.actor, f.actor());
    assert_eq!(audit.detail["refresh"], true);
    assert_eq!(audit.detail["client_id"], id.as_str());
}

/// Rotating to another algorithm through the API (`alg` in the rotate body)
/// moves the environment's policy with the key; an ML-DSA-87 access token
/// that would exceed the 8 KiB gates accept is not handed out: a
/// `server_error`, logged once and counted as `token_too_large`, and the
/// store is left as it was. A token with fewer claims is issued.
#[tokio::test]
async fn rotating_to_ml_dsa_87_and_tokens_too_large_for_gates() {
    let f = fixture().await;
    let (id, _) = f
        .client(json!({"name": "web", "scopes": ["a"], "audiences": ["api://orders"]}))
        .await;

    let state = f.state().await;
    let r = f
        .post(
            "/admin/v1/envs/dev/keys/rotate",
            json!({"immediate": true, "alg": "ML-DSA-87", "rsa_bits": 2048}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("rsa_bits applies only to RSA algorithms, not ML-DSA-87"),
        "{r:?}"
    );
    assert_eq!(f.state().await, state);
    let r = f
        .post(
            "/admin/v1/envs/dev/keys/rotate",
            json!({"immediate": true, "alg": "ML-DSA-87"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.body["alg"], "ML-DSA-87");
    let env = f.get("/admin/v1/envs/dev").await;
    assert_eq!(env.body["policy"]["alg"], "ML-DSA-87", "{env:?}");
    assert_eq!(f.last_audit().await.detail["policy_alg"], "ML-DSA-87");

    let mint = |n: usize| {
        let permissions: Vec<String> = (0..n).map(|i| format!("orders.{i:04}.read")).collect();
        f.post(
            "/admin/v1/envs/dev/tokens",
            json!({"sub": "alice", "client_id": id, "permissions": permissions}),
        )
    };
    let before = server_errors(&f, "token_too_large").await;
    let state = f.state().await;
    let (logs, guard) = logs::capture_logs();
    let r = mint(90).await;
    drop(guard);
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{r:?}");
    assert_eq!(r.body.to_string(), SERVER_ERROR_BODY);
    assert_eq!(f.state().await, state, "no refresh token, no audit record");
    let logs = logs.text();
    assert_eq!(
        logs.matches("request failed on the server's side").count(),
        1,
        "{logs}"
    );
    for want in [
        r#"reason="token_too_large""#,
        "the signed ML-DSA-87 access token is",
        "over the 8192-byte limit gates enforce: it was not issued",
    ] {
        assert!(logs.contains(want), "{want} not in {logs}");
    }
    assert_eq!(server_errors(&f, "token_too_large").await, before + 1.0);

    let r = mint(10).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let token = r.body["access_token"].as_str().unwrap();
    assert!(token.len() <= keyward_jose::DEFAULT_MAX_TOKEN_LEN);
    let policy = Validation {
        algorithms: vec![Algorithm::MlDsa87],
        ..Validation::access_token(ISSUER, &["api://orders"])
    };
    let ok = verify_jwt(token, &f.served_keys().await, &policy, NOW).unwrap();
    assert_eq!(ok.header.alg, Algorithm::MlDsa87);
}
