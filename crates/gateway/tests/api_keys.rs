//! API keys mapped to identities, end to end: keys made and written the way
//! `keyward gateway api-key create` does, a real gateway in front of the
//! echo upstream, and every refusal asserted not to reach the upstream.

mod common;

use std::time::SystemTime;

use common::*;
use keyward_gateway::api_keys::{add_to_config, generate, revoke_in_config, KeySpec, NewKey};

const ROUTES: &str = r#"
[[route]]
name = "reports"
path = "/reports/{id}"
upstream = "{UP}"
api_keys = true
permissions = { all_of = ["reports.{id}.read"] }

[[route]]
name = "admin"
path = "/admin/*"
upstream = "{UP}"
api_keys = true

[[route]]
name = "orders"
path = "/orders/*"
upstream = "{UP}"
"#;

struct Keys {
    good: NewKey,
    expired: NewKey,
    revoked: NewKey,
    admin_only: NewKey,
    weak: NewKey,
    limited: NewKey,
}

fn spec(subject: &str, permissions: &[&str], expires: &str) -> KeySpec {
    KeySpec {
        subject: subject.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        expires: expires.into(),
        rate_limit: None,
        routes: None,
    }
}

async fn setup() -> (Upstream, Gw, Keys) {
    let up = upstream().await;
    let now = SystemTime::now();
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\n\n{}\n{}",
        issuer_section(),
        ROUTES.replace("{UP}", &up.origin())
    );
    let keys = Keys {
        good: generate(),
        expired: generate(),
        revoked: generate(),
        admin_only: generate(),
        weak: generate(),
        limited: generate(),
    };
    for (k, s) in [
        (
            &keys.good,
            spec("billing-batch", &["reports.*", "admin.x"], "90d"),
        ),
        (
            &keys.expired,
            spec("old-batch", &["reports.*"], "2020-01-01T00:00:00Z"),
        ),
        (&keys.revoked, spec("gone-batch", &["reports.*"], "never")),
        (
            &keys.admin_only,
            KeySpec {
                routes: Some(vec!["admin".into()]),
                ..spec("ops", &["reports.*"], "never")
            },
        ),
        (&keys.weak, spec("reader", &["reports.7.read"], "never")),
        (
            &keys.limited,
            KeySpec {
                rate_limit: Some("1/h".into()),
                ..spec("slow", &["reports.*"], "never")
            },
        ),
    ] {
        text = add_to_config(&text, k, &s, now).unwrap();
    }
    text = revoke_in_config(&text, &keys.revoked.id, now).unwrap();
    for k in [
        &keys.good,
        &keys.expired,
        &keys.revoked,
        &keys.admin_only,
        &keys.weak,
        &keys.limited,
    ] {
        assert!(!text.contains(&k.key), "a key is never written");
        assert!(text.contains(&k.hash));
    }
    let gw = start_with(&text, &jwks(&[])).await;
    (up, gw, keys)
}

async fn with_key(gw: &Gw, path: &str, key: &str) -> Resp {
    get(&gw.url(path), &[("x-api-key", key)]).await
}

#[tokio::test]
async fn a_valid_key_gets_the_identity_headers_and_is_not_forwarded() {
    let (up, gw, keys) = setup().await;
    let r = with_key(&gw, "/reports/7", &keys.good.key).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.echoed("x-auth-subject").as_deref(), Some("billing-batch"));
    assert_eq!(
        r.echoed("x-auth-client").as_deref(),
        Some(keys.good.id.as_str())
    );
    assert_eq!(r.echoed("x-auth-issuer").as_deref(), Some("api-key"));
    assert_eq!(
        r.echoed("x-auth-permissions").as_deref(),
        Some("reports.* admin.x")
    );
    assert_eq!(r.echoed("x-api-key"), None, "the key never goes upstream");
    assert_eq!(up.hits(), 1);

    // Tokens still work on the same route.
    let r = get_with(&gw.url("/admin/x"), &token()).await;
    assert_eq!(r.status, 200);
    // Spoofed identity headers are replaced.
    let r = get(
        &gw.url("/reports/7"),
        &[("x-api-key", &keys.good.key), ("x-auth-subject", "root")],
    )
    .await;
    assert_eq!(r.echoed("x-auth-subject").as_deref(), Some("billing-batch"));
}

#[tokio::test]
async fn refused_keys_never_reach_the_upstream() {
    let (up, gw, keys) = setup().await;
    let good = &keys.good.key;
    // Same id, another secret; an unknown id; wrong shapes.
    let other = generate();
    let wrong_secret = format!("{}{}", &good[..17], &other.key[17..]);
    let unknown = other.key.clone();
    let mut upper = good.clone();
    upper.replace_range(20..21, if &good[20..21] == "A" { "B" } else { "A" });
    for (key, status, reason) in [
        (wrong_secret.as_str(), 401, "not valid"),
        (unknown.as_str(), 401, "not valid"),
        (&upper, 401, "not valid"),
        ("kwk_", 401, "not valid"),
        (&good[..good.len() - 1], 401, "not valid"),
        (&format!("{good}x"), 401, "not valid"),
        (&keys.expired.key, 401, "expired"),
        (&keys.revoked.key, 401, "revoked"),
        (&keys.admin_only.key, 403, "not valid for this route"),
    ] {
        let r = with_key(&gw, "/reports/7", key).await;
        assert_eq!(r.status, status, "{key}: {:?}", r.body);
        assert!(
            r.json()["error_description"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{key}: {:?}",
            r.body
        );
        if status == 401 {
            assert_eq!(
                r.header("www-authenticate"),
                Some("ApiKey realm=\"keyward\"")
            );
        }
        assert!(!String::from_utf8_lossy(&r.body).contains(good.as_str()));
    }
    // The route-limited key works where it is allowed.
    assert_eq!(
        with_key(&gw, "/admin/x", &keys.admin_only.key).await.status,
        200
    );
    assert_eq!(up.hits(), 1);

    // Permission checks are the token ones: reports.7.read covers 7, not 8.
    assert_eq!(
        with_key(&gw, "/reports/7", &keys.weak.key).await.status,
        200
    );
    let r = with_key(&gw, "/reports/8", &keys.weak.key).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(r.json()["error"], "insufficient_scope");
    assert_eq!(up.hits(), 2);

    // A route that does not take keys ignores the header: no token, 401.
    let r = with_key(&gw, "/orders/1", good).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    // A key and a token at once is refused.
    let auth = format!("Bearer {}", token());
    let r = get(
        &gw.url("/reports/7"),
        &[("x-api-key", good), ("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    // The header twice is refused.
    let r = get(
        &gw.url("/reports/7"),
        &[("x-api-key", good), ("x-api-key", good)],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(up.hits(), 2, "no refusal reached the upstream");
}

#[tokio::test]
async fn each_key_has_its_own_rate_limit() {
    let (up, gw, keys) = setup().await;
    assert_eq!(
        with_key(&gw, "/reports/1", &keys.limited.key).await.status,
        200
    );
    let r = with_key(&gw, "/reports/1", &keys.limited.key).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    // Another key is not affected.
    assert_eq!(
        with_key(&gw, "/reports/1", &keys.good.key).await.status,
        200
    );
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn key_configuration_errors_are_located() {
    let k = generate();
    let base = format!(
        "{}\n[[route]]\nname = \"r\"\npath = \"/r\"\nupstream = \"http://127.0.0.1:1\"\napi_keys = true\n",
        issuer_section()
    );
    let ok = add_to_config(&base, &k, &spec("s", &["a.b"], "never"), SystemTime::now()).unwrap();
    let c = check(&ok).unwrap();
    assert_eq!(c.api_keys.keys.len(), 1);
    assert!(c.describe().contains(&k.id) && !c.describe().contains(&k.hash));
    for (from, to, needle) in [
        (k.hash.as_str(), k.key.as_str(), "hash is not"),
        (k.id.as_str(), "XYZ", "12 lower-case hex"),
        ("subject = \"s\"", "subject = \"\"", "subject"),
        ("\"a.b\"", "\"a b\"", "not one word"),
        ("expires = \"never\"", "expires = \"soon\"", "RFC 3339"),
        (
            "expires = \"never\"",
            "expires = \"never\"\nroutes = [\"nope\"]",
            "not a route with api_keys",
        ),
        (
            "expires = \"never\"",
            "expires = \"never\"\nrate_limit = \"fast\"",
            "rate_limit",
        ),
    ] {
        let text = ok.replacen(from, to, 1);
        let e = check(&text).unwrap_err().to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    // The same key twice.
    let twice = format!("{ok}{}", &ok[ok.find("[[api_key]]").unwrap()..]);
    assert!(check(&twice)
        .unwrap_err()
        .to_string()
        .contains("used twice"));
    // A reserved header.
    let e = check(&format!("api_key_header = \"Authorization\"\n{ok}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("manages itself"), "{e}");
    // Anonymous and api_keys contradict.
    let e = check(&ok.replacen("api_keys = true", "api_keys = true\nanonymous = true", 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("API keys"), "{e}");
}
