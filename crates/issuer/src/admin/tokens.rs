//! Admin tokens: making and revoking them (shared by `keyward admin-token`
//! and the admin API), and the API's `/admin/v1/admin-tokens` routes.
//!
//! Through the API a caller hands on only what it holds: every grant of
//! the new token must be wholly covered by the caller's grants
//! ([`super::permissions::first_not_held`]: `keyward.env.prod.*` covers
//! `keyward.env.prod.keys.*` but not `keyward.env.*`; no exact grant
//! covers a group; only a `*` that covers everything covers `*`), and the
//! new token expires no later than the caller's credential. Either
//! refusal is a 403, audited.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use keyward_store::{AdminToken, AuditEntry, Store, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};

use super::permissions::{check_grants, first_not_held};
use super::{reply, AdminState, ApiError, ApiResult, Caller, Denied, JsonBody, PathParams};
use crate::error::IssuerError;
use crate::keyring::Change;
use crate::tokens::{new_id, new_secret};

/// Longest accepted name or owner.
const MAX_LABEL_LEN: usize = 200;
/// Longest lifetime of a token made through the API (a year).
pub const MAX_API_TTL_SECS: i64 = 366 * 24 * 3600;

/// What a new admin token holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAdminToken {
    /// To recognise it by in listings.
    pub name: String,
    /// Who it is for.
    pub owner: Option<String>,
    /// Its grants (see [`super::permissions::check_grant`] for the form).
    pub permissions: Vec<String>,
    /// When it stops working; `None`: never.
    pub expires_at: Option<Timestamp>,
}

fn check_label(field: &str, v: &str) -> Result<(), IssuerError> {
    if v.is_empty() || v.len() > MAX_LABEL_LEN || v.chars().any(char::is_control) {
        return Err(IssuerError::invalid(format!(
            "the {field} is 1 to {MAX_LABEL_LEN} characters without control characters"
        )));
    }
    Ok(())
}

/// Makes an admin token and audits it (`admin_token.create`, with its
/// grants, owner and expiry) in one transaction. Returns the record and
/// the token, which is shown once: only its SHA-256 is stored.
pub async fn create_admin_token(
    store: &Store,
    new: NewAdminToken,
    at: Change<'_>,
) -> Result<(AdminToken, String), IssuerError> {
    check_label("name", &new.name)?;
    if let Some(o) = &new.owner {
        check_label("owner", o)?;
    }
    check_grants(&new.permissions).map_err(IssuerError::invalid)?;
    if new.expires_at.is_some_and(|e| e <= at.now) {
        return Err(IssuerError::invalid("the expiry must be in the future"));
    }
    let mut permissions = new.permissions;
    permissions.dedup();
    let (token, hash) = new_secret(super::auth::ADMIN_TOKEN_PREFIX);
    let t = AdminToken {
        id: new_id(),
        name: new.name,
        token_hash: hash,
        created_at: at.now,
        revoked_at: None,
        permissions,
        owner: new.owner,
        expires_at: new.expires_at,
        created_by: Some(at.actor.to_owned()),
    };
    let mut tx = store.begin().await?;
    tx.create_admin_token(&t).await?;
    tx.append_audit(AuditEntry {
        at: at.now,
        actor: at.actor.to_owned(),
        action: "admin_token.create".into(),
        env: None,
        subject: Some(t.id.clone()),
        detail: json!({
            "name": t.name,
            "owner": t.owner,
            "permissions": t.permissions,
            "expires_at": t.expires_at,
        }),
    })
    .await?;
    tx.commit().await?;
    Ok((t, token))
}

/// Revokes admin token `id` and audits it (`admin_token.revoke`). False
/// (and nothing written) if it was revoked already; `NotFound` if there is
/// no such token.
pub async fn revoke_admin_token(
    store: &Store,
    id: &str,
    at: Change<'_>,
) -> Result<bool, IssuerError> {
    let mut tx = store.begin().await?;
    if !tx.revoke_admin_token(id, at.now).await? {
        return Ok(false);
    }
    tx.append_audit(AuditEntry {
        at: at.now,
        actor: at.actor.to_owned(),
        action: "admin_token.revoke".into(),
        env: None,
        subject: Some(id.to_owned()),
        detail: json!({}),
    })
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// An admin token as listed: never its hash.
pub fn admin_token_json(t: &AdminToken) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "owner": t.owner,
        "permissions": t.permissions,
        "created_at": crate::fmt_time(t.created_at),
        "expires_at": t.expires_at.map(crate::fmt_time),
        "revoked_at": t.revoked_at.map(crate::fmt_time),
        "created_by": t.created_by,
    })
}

// ---------------------------------------------------------------------------
// Routes

pub(super) async fn list(State(s): State<AdminState>) -> ApiResult {
    let list = s
        .authority
        .store
        .admin_tokens()
        .await
        .map_err(ApiError::from_store)?;
    Ok(reply(
        StatusCode::OK,
        list.iter().map(admin_token_json).collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    permissions: Vec<String>,
    ttl_secs: i64,
}

pub(super) async fn create(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    JsonBody(b): JsonBody<CreateBody>,
) -> ApiResult {
    if !(1..=MAX_API_TTL_SECS).contains(&b.ttl_secs) {
        return Err(ApiError::bad_request(format!(
            "ttl_secs is from 1 to {MAX_API_TTL_SECS}"
        )));
    }
    check_grants(&b.permissions).map_err(ApiError::bad_request)?;
    let a = &s.authority;
    let now = a.now();
    let p = &caller.principal;
    // No more than the caller holds...
    if let Some(g) = first_not_held(&p.grants, &b.permissions) {
        let d = Denied {
            permission: g.to_owned(),
            description: format!(
                "a token cannot be given more than its creator holds: your grants do not cover {g}"
            ),
        };
        s.auth.denied(p, &caller.route, None, &d).await;
        return Err(ApiError::forbidden(d));
    }
    // ...and for no longer.
    let expires_at = now.saturating_add(b.ttl_secs);
    if let Some(limit) = p.expires_at.filter(|l| expires_at > *l) {
        let d = Denied {
            permission: super::permissions::ADMIN_TOKENS_CREATE.to_owned(),
            description: format!(
                "a token cannot outlive its creator: yours expires at {}, ask for a ttl of at most {} s",
                crate::fmt_time(limit),
                (limit - now).max(0)
            ),
        };
        s.auth.denied(p, &caller.route, None, &d).await;
        return Err(ApiError::forbidden(d));
    }
    let actor = caller.actor();
    let new = NewAdminToken {
        name: b.name.unwrap_or_else(|| "admin".into()),
        owner: b.owner.or_else(|| p.owner.clone()),
        permissions: b.permissions,
        expires_at: Some(expires_at),
    };
    let (t, token) = create_admin_token(&a.store, new, Change { now, actor: &actor })
        .await
        .map_err(ApiError::from_issuer)?;
    let mut v = admin_token_json(&t);
    v["token"] = json!(token);
    Ok(reply(StatusCode::CREATED, v))
}

pub(super) async fn revoke(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams(id): PathParams<String>,
    JsonBody(super::NoFields {}): JsonBody<super::NoFields>,
) -> ApiResult {
    let a = &s.authority;
    let actor = caller.actor();
    let at = Change {
        now: a.now(),
        actor: &actor,
    };
    let revoked_now = revoke_admin_token(&a.store, &id, at)
        .await
        .map_err(ApiError::from_issuer)?;
    super::reload(a).await;
    Ok(reply(
        StatusCode::OK,
        json!({"id": id, "revoked": true, "already_revoked": !revoked_now}),
    ))
}
