//! JSON views of stored records: what `keyward ... --json` prints and the
//! admin API answers, in one place so the two never disagree. Nothing secret
//! is shown: no private key, no secret hash, no JWK Set body.

use keyward_jose::KeyFamily;
use keyward_store::{Client, Environment, KeyRecord, Timestamp};
use serde_json::{json, Value};

use crate::{fmt_time, rotation};

/// An optional time as RFC 3339 text, or null.
pub fn opt_time(t: Option<Timestamp>) -> Value {
    t.map(|t| Value::String(fmt_time(t))).unwrap_or(Value::Null)
}

/// A key as JSON: the fields of `keys list --json`, its state at `now`.
pub fn key_json(k: &KeyRecord, now: Timestamp) -> Value {
    json!({
        "kid": k.kid,
        "env": k.env,
        "alg": k.alg.name(),
        "size": k.size_bits,
        "curve": match k.alg.family() {
            KeyFamily::Rsa => Value::Null,
            KeyFamily::Ec(c) => json!(c.name()),
            KeyFamily::Ed25519 => json!("Ed25519"),
            // An AKP key has no curve; `alg` names its parameter set.
            KeyFamily::MlDsa(_) => Value::Null,
        },
        "state": k.state(now).to_string(),
        "origin": k.origin,
        "owner": k.owner,
        "description": k.description,
        "created_at": fmt_time(k.created_at),
        "activates_at": fmt_time(k.activates_at),
        "retires_at": opt_time(k.retires_at),
        "removes_at": opt_time(k.removes_at),
        "revoked_at": opt_time(k.revoked_at),
        // Where the private half lives; for a device key, the device's
        // reference to it (no secret) and when its object was destroyed.
        "key_store": k.key_store().as_str(),
        "reference": k.reference(),
        "destroyed_at": opt_time(k.destroyed_at),
    })
}

/// A client as JSON (never its secret or secret hash).
pub fn client_json(c: &Client) -> Value {
    let mut v = json!({
        "client_id": c.client_id,
        "env": c.env,
        "name": c.name,
        "auth": c.auth.as_str(),
        "scopes": c.scopes,
        "audiences": c.audiences,
        "grant_types": c.grant_types,
        "jwks_uri": c.jwks_uri,
        "has_jwks": c.jwks.is_some(),
        "access_token_ttl_secs": c.access_token_ttl_secs,
        "refresh_token_ttl_secs": c.refresh_token_ttl_secs,
        "dpop_bound_access_tokens": c.dpop_bound_access_tokens,
        "exchange_issuers": c.exchange_issuers,
        "created_at": fmt_time(c.created_at),
        "updated_at": fmt_time(c.updated_at),
        "tls_client_certificate_bound_access_tokens": c.mtls.binds_tokens(c.auth),
        "redirect_uris": c.login.redirect_uris,
        "post_logout_redirect_uris": c.login.post_logout_redirect_uris,
        "first_party": c.login.first_party,
    });
    if let Some((kind, value)) = &c.mtls.subject {
        v[kind.metadata_name()] = json!(value);
    }
    v
}

/// An environment as JSON, with its rotation policy.
pub fn env_json(e: &Environment) -> Value {
    json!({
        "name": e.name,
        "issuer": e.issuer,
        "created_at": fmt_time(e.created_at),
        "key_store": e.key_store.as_str(),
        "policy": {
            "alg": e.policy.alg.name(),
            "rsa_bits": e.policy.rsa_bits,
            "rotate_every_secs": e.policy.rotate_every_secs,
            "lead_secs": e.policy.lead_secs,
            "token_ttl_secs": e.policy.token_ttl_secs,
            "jwks_max_age_secs": rotation::jwks_max_age(&e.policy),
        },
    })
}
