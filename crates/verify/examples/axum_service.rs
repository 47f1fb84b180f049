//! Protecting an axum service in-process with keyward-verify.
//!
//! ```text
//! KEYWARD_ISSUER=http://127.0.0.1:8080/dev KEYWARD_AUDIENCE=orders-api \
//!     cargo run -p keyward-verify --example axum_service -- 127.0.0.1:3000
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/orders/42
//! ```
//!
//! - `GET /health` is open;
//! - `GET /me` needs any valid access token from the issuer;
//! - `GET /orders/{id}` also needs the permission `orders.{id}.read` (a grant
//!   `orders.*` or `orders.42.*` covers `orders.42.read`).
//!
//! The issuer's keys are found through OIDC discovery
//! (`{issuer}/.well-known/openid-configuration`) and kept fresh in the
//! background.

use axum::routing::get;
use axum::Router;
use keyward_verify::{Authenticated, Gate, GateLayer, IssuerPolicy, Requirement};

/// The application: route groups with their own requirements.
fn app(gate: Gate) -> Result<Router, keyward_verify::Error> {
    let orders = Router::new().route("/orders/{id}", get(order)).route_layer(
        GateLayer::new(gate.clone())
            .realm("orders")
            .require_permissions(Requirement::all_of(["orders.{id}.read"])?),
    );
    let me = Router::new()
        .route("/me", get(me))
        .route_layer(GateLayer::new(gate).realm("orders"));
    Ok(Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(orders)
        .merge(me))
}

/// `GET /me`: who the token says the caller is.
async fn me(Authenticated(who): Authenticated) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "subject": who.subject,
        "client_id": who.client_id,
        "scopes": who.scopes,
        "permissions": who.permissions,
    }))
}

/// `GET /orders/{id}`: reached only with `orders.{id}.read`.
async fn order(
    Authenticated(who): Authenticated,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> String {
    format!(
        "order {id}, read by {}\n",
        who.subject.as_deref().unwrap_or("?")
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer =
        std::env::var("KEYWARD_ISSUER").unwrap_or_else(|_| "http://127.0.0.1:8080/dev".into());
    let audience = std::env::var("KEYWARD_AUDIENCE").ok();
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());

    let mut policy = IssuerPolicy::new(issuer.clone());
    policy.audiences.extend(audience);
    let gate = Gate::builder().issuer(policy).build()?;
    // Fetch the keys once up front (a failure is not fatal: the first
    // request retries) and keep them fresh in the background.
    for (issuer, error) in gate.warm_up().await {
        eprintln!("warning: keys of {issuer} not loaded yet: {error}");
    }
    let _refreshers = gate.spawn_refreshers();

    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    eprintln!("serving on http://{listen}, trusting {issuer}");
    axum::serve(listener, app(gate)?)
        .await
        .map_err(|e| format!("server failed: {e}").into())
}
