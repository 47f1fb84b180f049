//! The issuer mints only claims its own gate accepts: one list of strings
//! is fed to the issuer's minting paths (the admin API, `keyward token
//! issue`, `keyward token sign`) and, as the claims of a token signed by a
//! test key, to a real `keyward gateway`. Both refuse the same bad strings
//! and accept the same good ones; a refusal changes nothing in the store.

mod common;

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{write, Gateway, Kw};
use keyward_jose::{sign_jwt, Algorithm, LocalSigner, PrivateKey, TokenSigner};
use serde_json::{json, Value};

/// Refused as a `sub` (and any single-valued identity claim) by both sides.
const BAD_VALUES: &[&str] = &[
    "",
    "al\0ice",
    "al\rice",
    "al\nice",
    "al\r\nice",
    "al\x7fice",
    "al\x01ice",
    "al\x1bice",
    "al\tice",
    "al\u{85}ice",
    " alice",
    "alice ",
    "alice\u{3000}",
];

/// Also refused as a permission or scope (one word each).
const BAD_WORDS_EXTRA: &[&str] = &["orders.read admin", "orders\u{2003}read"];

/// Accepted as a `sub` by both sides.
const GOOD_VALUES: &[&str] = &[
    "alice",
    "alice smith",
    "Zoë Ångström",
    "用户-7",
    "o'brien@example.com",
    "a\u{a0}b",
];

/// Accepted as a permission by both sides.
const GOOD_WORDS: &[&str] = &["orders.read", "orders.*", "ünïcode.lesen", "用户.read"];

fn bad_words() -> Vec<&'static str> {
    BAD_VALUES
        .iter()
        .filter(|v| !v.is_empty() && v.trim() == **v)
        .chain(BAD_WORDS_EXTRA)
        .copied()
        .collect()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---- the gate --------------------------------------------------------------

const ISS: &str = "https://issuer.test";
const AUD: &str = "api://orders";

fn test_key() -> &'static LocalSigner {
    static S: OnceLock<LocalSigner> = OnceLock::new();
    S.get_or_init(|| {
        LocalSigner::new(
            PrivateKey::generate(Algorithm::ES256, None).unwrap(),
            Some("t1".into()),
        )
    })
}

fn token(sub: &str, permissions: &[&str]) -> String {
    let now = now();
    let claims = json!({
        "iss": ISS, "sub": sub, "aud": AUD, "exp": now + 600, "iat": now, "nbf": now,
        "jti": format!("j-{sub:?}-{permissions:?}"), "client_id": "c1", "scope": "orders.read",
        "permissions": permissions,
    });
    sign_jwt(test_key(), Some("at+jwt"), &claims).unwrap()
}

/// An upstream that answers 200 with the subject it was given.
async fn upstream() -> String {
    use axum::http::HeaderMap;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|h: HeaderMap| async move {
        String::from_utf8_lossy(h["x-auth-subject"].as_bytes()).into_owned()
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn gateway(kw: &Kw) -> Gateway {
    let jwks = json!({"keys": [test_key().public_jwk().to_value()]}).to_string();
    write(kw.dir.path(), "jwks.json", &jwks);
    let up = upstream().await;
    let config = format!(
        r#"listen = "127.0.0.1:0"

[[issuer]]
issuer = "{ISS}"
audiences = ["{AUD}"]
jwks_file = "jwks.json"

[[route]]
path = "/orders"
upstream = "{up}"
"#
    );
    kw.start_gateway(&config)
}

/// The gateway's status for a token, and the subject the upstream saw.
async fn through_gate(gw: &Gateway, token: &str) -> (u16, String) {
    let r = common::http()
        .get(format!("http://{}/orders", gw.addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The gate's JSON answer refuses the token for its claim `claim`.
fn gate_refused_claim(body: &str, claim: &str) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["error"], "invalid_token", "{body}");
    assert_eq!(
        v["error_description"],
        format!("claim '{claim}' is malformed"),
        "{body}"
    );
}

// ---- the issuer ------------------------------------------------------------

struct Issuer {
    kw: Kw,
    client: String,
}

fn issuer() -> Issuer {
    let kw = Kw::new();
    kw.init();
    let c = kw
        .run(&[
            "clients",
            "create",
            "--env",
            "default",
            "--name",
            "web",
            "--scopes",
            "orders.read",
            "--audience",
            AUD,
            "--json",
        ])
        .ok()
        .json();
    Issuer {
        client: c["client_id"].as_str().unwrap().to_string(),
        kw,
    }
}

/// `keyward token sign` with `sub` and `permissions`.
fn cli_sign(i: &Issuer, sub: &str, permissions: &[&str]) -> common::Run {
    let claims = json!({"sub": sub, "aud": AUD, "permissions": permissions}).to_string();
    i.kw.run(&["token", "sign", "--env", "default", "--claims", &claims])
}

/// `keyward token issue` with `sub` and one permission (a command-line
/// argument cannot hold NUL: `None` then).
fn cli_issue(i: &Issuer, sub: &str, permission: &str) -> Option<common::Run> {
    if sub.contains('\0') || permission.contains('\0') {
        return None;
    }
    Some(i.kw.run(&[
        "token",
        "issue",
        "--env",
        "default",
        "--client",
        &i.client,
        "--sub",
        sub,
        "--permissions",
        permission,
    ]))
}

async fn admin_mint(
    server: &common::Server,
    admin: &str,
    client: &str,
    sub: &str,
    permissions: &[&str],
) -> (u16, Value) {
    let r = common::http()
        .post(server.url("/admin/v1/envs/default/tokens"))
        .bearer_auth(admin)
        .header("content-type", "application/json")
        .body(json!({"sub": sub, "client_id": client, "permissions": permissions}).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuer_mints_only_what_the_gate_accepts() {
    let i = issuer();
    let gw = gateway(&i.kw).await;
    let admin = i.kw.run(&["admin-token", "create", "--json"]).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let server = i.kw.serve();

    // Bad subjects: the gate refuses them, and so does every minting path.
    let before = i.kw.snapshot();
    for &sub in BAD_VALUES {
        let (status, body) = through_gate(&gw, &token(sub, &["orders.read"])).await;
        assert_eq!(status, 401, "the gate accepted sub {sub:?}");
        gate_refused_claim(&body, "sub");
        let (status, body) = admin_mint(&server, &admin, &i.client, sub, &[]).await;
        assert_eq!(status, 400, "the admin API minted sub {sub:?}: {body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
        if !sub.is_empty() {
            let d = body["error_description"].as_str().unwrap();
            assert!(d.contains("sub "), "{d}");
        }
        let run = cli_sign(&i, sub, &["orders.read"]);
        assert_eq!(run.code, 1, "token sign minted sub {sub:?}: {}", run.stdout);
        if !sub.is_empty() {
            assert!(
                run.stderr.contains("gate would refuse: sub "),
                "{}",
                run.stderr
            );
        }
        if let Some(run) = cli_issue(&i, sub, "orders.read") {
            assert_eq!(
                run.code, 1,
                "token issue minted sub {sub:?}: {}",
                run.stdout
            );
        }
        // Nor is such a string registered as an audience a token will carry.
        if !sub.contains('\0') {
            let run = i.kw.run(&[
                "clients",
                "create",
                "--env",
                "default",
                "--name",
                "x",
                "--audience",
                sub,
            ]);
            assert_eq!(run.code, 1, "audience {sub:?} registered: {}", run.stdout);
        }
    }
    // Bad permissions, likewise.
    for w in bad_words() {
        let (status, body) = through_gate(&gw, &token("alice", &[w])).await;
        assert_eq!(status, 401, "the gate accepted permission {w:?}");
        gate_refused_claim(&body, "permissions");
        let (status, body) = admin_mint(&server, &admin, &i.client, "alice", &[w]).await;
        assert_eq!(status, 400, "the admin API minted permission {w:?}: {body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
        let run = cli_sign(&i, "alice", &[w]);
        assert_eq!(run.code, 1, "token sign minted permission {w:?}");
        assert!(run.stderr.contains("permissions "), "{}", run.stderr);
        // `token issue` splits --permissions on spaces, as documented, so
        // only the strings without a plain space are one permission there.
        if !w.contains(' ') {
            if let Some(run) = cli_issue(&i, "alice", w) {
                assert_eq!(run.code, 1, "token issue minted permission {w:?}");
            }
        }
    }
    // Roles are not forwarded, but are words too, for the CLI as for the API.
    let run = i.kw.run(&[
        "token", "issue", "--env", "default", "--client", &i.client, "--sub", "alice", "--roles",
        "ops\u{1}",
    ]);
    assert_eq!(run.code, 1, "token issue minted a role with U+0001");
    assert!(run.stderr.contains("roles "), "{}", run.stderr);
    assert_eq!(i.kw.snapshot(), before, "a refused mint changed the store");

    // Good strings: minted by every path and forwarded by the gate.
    for &sub in GOOD_VALUES {
        let (status, got) = through_gate(&gw, &token(sub, GOOD_WORDS)).await;
        assert_eq!(
            (status, got.as_str()),
            (200, sub),
            "the gate refused sub {sub:?}"
        );
        let (status, body) = admin_mint(&server, &admin, &i.client, sub, GOOD_WORDS).await;
        assert_eq!(status, 200, "the admin API refused sub {sub:?}: {body}");
        cli_sign(&i, sub, GOOD_WORDS).ok();
        for w in GOOD_WORDS {
            cli_issue(&i, sub, w).unwrap().ok();
        }
    }
}
