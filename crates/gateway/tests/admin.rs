//! The admin listener: health, readiness and metrics.

mod common;

use common::*;
use keyward_jose::sign_jwt;
use serde_json::json;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let up = upstream().await;
    let gw = start(
        "[[route]]\npath = \"/orders/{id}\"\nupstream = \"{UP}\"\nname = \"orders\"\n",
        &up,
    )
    .await;
    let admin = format!("http://{}", gw.running.admin_addr().unwrap());
    assert_eq!(get(&format!("{admin}/healthz"), &[]).await.status, 200);
    let r = get(&format!("{admin}/readyz"), &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let t = token();
    for _ in 0..3 {
        assert_eq!(get_with(&gw.url("/orders/1"), &t).await.status, 200);
    }
    assert_eq!(get(&gw.url("/orders/1"), &[]).await.status, 401);
    assert_eq!(get(&gw.url("/none"), &[]).await.status, 404);
    // Refusals by reason and kid: an expired token of the issuer's key k1,
    // and one of a key it does not publish (whose kid is not a label value).
    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    assert_eq!(
        get_with(&gw.url("/orders/1"), &token_for(&expired))
            .await
            .status,
        401
    );
    let forged = sign_jwt(attacker(), Some("at+jwt"), &claims()).unwrap();
    assert_eq!(get_with(&gw.url("/orders/1"), &forged).await.status, 401);

    let m = get(&format!("{admin}/metrics"), &[]).await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body);
    for needle in [
        "keyward_gate_decisions_total{route=\"orders\",outcome=\"allow\",reason=\"token\"}",
        "keyward_gate_decisions_total{route=\"orders\",outcome=\"deny\",reason=\"missing_token\"}",
        "keyward_gate_decisions_total{route=\"-\",outcome=\"deny\",reason=\"no_route\"}",
        "keyward_gate_verify_seconds_bucket",
        "keyward_gate_upstream_seconds_bucket{route=\"orders\"",
        "keyward_gate_jwks_age_seconds{issuer=\"https://issuer.test\"}",
        "keyward_gate_token_cache_hit_ratio",
        "keyward_gate_verify_failures_total{issuer=\"https://issuer.test\",kid=\"k1\",reason=\"expired\"} 1",
        "keyward_gate_verify_failures_total{issuer=\"https://issuer.test\",kid=\"unknown\",reason=\"unknown_kid\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(
        !text.contains("kid=\"attacker\""),
        "a kid the issuer does not publish became a label"
    );
    assert_eq!(get(&format!("{admin}/nope"), &[]).await.status, 404);
}

#[tokio::test]
async fn not_ready_until_every_issuer_has_keys() {
    let up = upstream().await;
    let port = closed_port().await;
    let text = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}\n\
         [[issuer]]\nissuer = \"https://unreachable.test\"\naudiences = [\"a\"]\n\
         jwks_uri = \"http://127.0.0.1:{port}/jwks\"\ncache = {{ fetch_timeout = \"200ms\" }}\n\
         [[route]]\npath = \"/*\"\nupstream = \"{}\"\n",
        issuer_section(),
        up.origin()
    );
    let gw = start_with(&text, &jwks(&[])).await;
    let admin = format!("http://{}", gw.running.admin_addr().unwrap());
    let r = get(&format!("{admin}/readyz"), &[]).await;
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("https://unreachable.test"));
    // The other issuer's tokens are still served.
    assert_eq!(get_with(&gw.url("/x"), &token()).await.status, 200);
}
