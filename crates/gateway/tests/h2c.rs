//! HTTP/2 from clients: on plain TCP, a client that starts with the HTTP/2
//! preface (h2c, prior knowledge) is served HTTP/2 beside HTTP/1.1 clients;
//! verification, identity headers and refusals are the same, and the
//! upstream still gets HTTP/1.1.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::test]
async fn h2c_prior_knowledge_is_served_beside_http1() {
    let up = upstream().await;
    let gw = start(
        "[[route]]\npath = \"/orders/{id}\"\nupstream = \"{UP}\"\npermissions = { all_of = [\"orders.{id}.read\"] }\n",
        &up,
    )
    .await;
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let send = |path: &str, token: Option<String>| {
        let mut b = Request::builder().uri(gw.url(path));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        h2.request(b.body(Full::new(Bytes::new())).unwrap())
    };
    let r = send("/orders/1", Some(token())).await.unwrap();
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let e: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(e["version"], "HTTP/1.1", "the upstream gets HTTP/1.1");
    assert_eq!(e["headers"]["x-auth-subject"][0], "alice");
    assert_eq!(
        e["headers"]["x-forwarded-host"][0],
        gw.base.trim_start_matches("http://")
    );
    // Refusals are the same over HTTP/2, and never reach the upstream.
    let r = send("/orders/2", Some(token())).await.unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (Version::HTTP_2, 403));
    let r = send("/orders/1", None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(up.hits(), 1);
    // HTTP/1.1 on the same listener.
    let r = get_with(&gw.url("/orders/1"), &token()).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 2);
}
