//! `keyward admin-token create|list|revoke` with permissions, expiry and
//! owner, and what a running server makes of the tokens.

mod common;

use common::{http, send, Kw};
use serde_json::Value;

fn tokens(kw: &Kw) -> Value {
    kw.run(&["admin-token", "list", "--json"]).ok().json()
}

#[test]
fn create_list_revoke_with_permissions_expiry_and_owner() {
    let kw = Kw::new();
    kw.init();
    let r = kw.run(&[
        "admin-token",
        "create",
        "--permissions",
        "keyward.env.prod.keys.* keyward.audit.read",
        "--ttl",
        "8h",
        "--owner",
        "alice",
        "--name",
        "rotation",
        "--json",
    ]);
    r.ok();
    assert!(
        !r.stderr.contains("note:"),
        "a limited token gets no warning: {}",
        r.stderr
    );
    let made = r.json();
    assert!(made["token"].as_str().unwrap().starts_with("kwa_"));
    assert_eq!(made["owner"], "alice");
    assert_eq!(made["name"], "rotation");
    assert_eq!(
        made["permissions"],
        serde_json::json!(["keyward.env.prod.keys.*", "keyward.audit.read"])
    );
    assert!(made["created_by"].as_str().unwrap().starts_with("cli:"));
    let created = humantime::parse_rfc3339(made["created_at"].as_str().unwrap()).unwrap();
    let expires = humantime::parse_rfc3339(made["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires.duration_since(created).unwrap().as_secs(), 8 * 3600);

    // The default: every permission, no expiry, said on stderr.
    let r = kw.run(&["admin-token", "create", "--json"]);
    r.ok();
    assert!(
        r.stderr.contains("every permission") && r.stderr.contains("never expires"),
        "{}",
        r.stderr
    );
    assert_eq!(r.json()["permissions"], serde_json::json!(["*"]));

    let list = tokens(&kw);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let mine = |list: &Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == made["id"])
            .unwrap()
            .clone()
    };
    assert_eq!(mine(&list)["owner"], "alice");
    assert!(!list.to_string().contains("kwa_"), "never a token value");
    let text = kw.run(&["admin-token", "list"]).ok().stdout.clone();
    assert!(text.contains("OWNER") && text.contains("PERMISSIONS") && text.contains("alice"));
    assert!(
        text.contains("keyward.env.prod.keys.* keyward.audit.read"),
        "{text}"
    );

    // Bad input: refused with nothing written.
    let before = kw.snapshot();
    let listed = tokens(&kw);
    for (args, needle) in [
        (
            &["--permissions", "keyward.env.{env}.read"][..],
            "contains '{'",
        ),
        (
            &["--permissions", "keyward.*.read"],
            "only as the whole last segment",
        ),
        (&["--permissions", ","], "at least one permission"),
        (&["--ttl", "soon"], "--ttl"),
        (&["--ttl", "0s"], "at least 1s"),
        (&["--owner", ""], "owner"),
    ] {
        let mut all = vec!["admin-token", "create"];
        all.extend_from_slice(args);
        kw.run(&all).fails_with(needle);
    }
    assert_eq!(kw.snapshot(), before);
    assert_eq!(tokens(&kw), listed);

    let id = made["id"].as_str().unwrap();
    kw.run(&["admin-token", "revoke", id]).ok();
    assert!(mine(&tokens(&kw))["revoked_at"].is_string());
    kw.run(&["admin-token", "revoke", id])
        .fails_with("already revoked");
    kw.run(&["admin-token", "revoke", "nope"])
        .fails_with("not found");
}

#[tokio::test]
async fn a_running_server_holds_each_token_to_its_permissions() {
    let kw = Kw::new();
    kw.init();
    let make = |perms: &str| {
        kw.run(&[
            "admin-token",
            "create",
            "--permissions",
            perms,
            "--ttl",
            "1h",
            "--json",
        ])
        .ok()
        .json()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let reader = make("keyward.env.default.keys.read");
    let all = make("*");
    let server = kw.serve();
    let get = |token: &str, path: &str| send(http().get(server.url(path)).bearer_auth(token));
    assert_eq!(
        get(&reader, "/admin/v1/envs/default/keys").await.status,
        200
    );
    let r = get(&reader, "/admin/v1/envs/default/clients").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["permission"], "keyward.env.default.clients.read");
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("scope=\"keyward.env.default.clients.read\""));
    assert_eq!(
        get(&all, "/admin/v1/envs/default/clients").await.status,
        200
    );
    // The refusal is in the audit chain.
    let audit = get(&all, "/admin/v1/audit?limit=1000").await.ok_json();
    let denied: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "admin.denied")
        .collect();
    assert_eq!(denied.len(), 1, "{audit}");
    assert_eq!(
        denied[0]["detail"]["permission"],
        "keyward.env.default.clients.read"
    );
}
