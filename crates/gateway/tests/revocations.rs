//! A token revoked at the issuer is refused by the gateway once the
//! revocation feed has delivered it, even though its verification is cached.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get as axum_get;
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};

type Feed = Arc<Mutex<Vec<Value>>>;

async fn feed(State(f): State<Feed>) -> Json<Value> {
    let list = f.lock().unwrap().clone();
    let next = list.len() as i64;
    // One page holding everything; `next` advances with it.
    Json(json!({ "revocations": list, "next": next }))
}

#[tokio::test]
async fn revoked_tokens_are_refused_even_when_cached() {
    let revoked: Feed = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/revocations", axum_get(feed))
        .with_state(revoked.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let up = upstream().await;
    let text = format!(
        "listen = \"127.0.0.1:0\"\n\
         [[issuer]]\nissuer = \"{issuer}\"\naudiences = [\"{AUD}\"]\njwks_file = \"jwks.json\"\n\
         revocations = true\nrevocations_poll = \"100ms\"\n\
         [[route]]\npath = \"/*\"\nupstream = \"{}\"\n",
        up.origin()
    );
    let gw = start_with(&text, &jwks(&[])).await;
    let mut c = claims();
    c["iss"] = json!(issuer);
    let t = token_for(&c);
    let other = {
        let mut c2 = c.clone();
        c2["jti"] = json!("still-good");
        token_for(&c2)
    };
    assert_eq!(get_with(&gw.url("/a"), &t).await.status, 200);
    assert_eq!(get_with(&gw.url("/a"), &t).await.status, 200); // now cached
    assert_eq!(up.hits(), 2);

    revoked.lock().unwrap().push(json!({
        "jti": c["jti"], "exp": c["exp"], "revoked_at": now()
    }));
    let t0 = Instant::now();
    loop {
        let r = get_with(&gw.url("/a"), &t).await;
        if r.status == 401 {
            let w = r.header("www-authenticate").unwrap();
            assert!(w.contains("error=\"invalid_token\""), "{w}");
            assert!(w.contains("revoked"), "{w}");
            break;
        }
        assert_eq!(r.status, 200);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the revocation never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hits = up.hits();
    assert_eq!(get_with(&gw.url("/a"), &t).await.status, 401);
    assert_eq!(up.hits(), hits);
    // Other tokens of the same issuer still pass.
    assert_eq!(get_with(&gw.url("/a"), &other).await.status, 200);
}
