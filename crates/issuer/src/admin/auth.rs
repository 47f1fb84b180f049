//! Who is calling the admin API (or the console), and whether they may.
//!
//! The API, stable for every surface that acts for an administrator:
//!
//! - [`AdminAuth`]: made once per server ([`AdminAuth::new`]), shared by
//!   clones. [`AdminAuth::authenticate`] turns a presented token into an
//!   [`AdminPrincipal`] or a [`Refusal`] (and audits the refusal, bounded:
//!   see below). Call it on every request (it caches a checked admin token
//!   for at most 5 s and never past a revocation this server has seen), so
//!   a revoked or expired token stops working at once.
//! - [`require`]`(&principal, &permission) -> Result<(), Denied>`: the
//!   check alone, with no side effect. [`AdminAuth::authorize`] is the same
//!   check that also audits a refusal; surfaces use it.
//! - [`Permission`] and the catalogue in [`super::permissions`]: what each
//!   operation requires.
//!
//! Two kinds of token are accepted:
//!
//! - **admin tokens** (`kwa_...`, `keyward admin-token create`): looked up by
//!   their SHA-256; each holds its grants, an optional expiry and owner. A
//!   bare `*` grant covers everything (tokens made before grants existed
//!   hold it).
//! - **access tokens of a trusted issuer** (the company's SSO), when the
//!   server is configured with one ([`crate::Settings::admin_issuer`]):
//!   verified by keyward-verify's [`Gate`] (signature, `iss`, `aud`,
//!   `exp`, `typ: at+jwt`, ...); their `permissions` claim is their grants
//!   (a bare `*` only if that issuer's policy allows it). No long-lived
//!   admin secret needs to exist.
//!
//! Every refusal is audited as `admin.denied`. A 403 (an authenticated
//! caller lacking a permission) is always recorded: the caller is known
//! and can be revoked. A 401 (no, a malformed, an unknown, a revoked or an
//! expired token) costs an attacker nothing, so at most
//! [`UNAUTHENTICATED_AUDITS_PER_MINUTE`] are recorded per minute and per
//! server; the next one recorded says how many were left out
//! (`unaudited_before`), and every one is counted in the metric
//! `keyward_admin_refusals_total{status, reason}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use keyward_store::{AdminToken, AuditEntry, StoreError, Timestamp};
use keyward_verify::{Gate, Grants, VerifyError};
use serde_json::{json, Value};

use super::permissions::Permission;
use crate::authority::Authority;
use crate::error::error_chain;
use crate::tokens::hash_secret;

/// How admin tokens begin (SSO access tokens are JWTs and never do).
pub const ADMIN_TOKEN_PREFIX: &str = "kwa_";
/// Most refusals without a known caller (401) written to the audit chain
/// per minute and per server.
pub const UNAUTHENTICATED_AUDITS_PER_MINUTE: u32 = 10;
/// How long a checked admin token is trusted without asking the store again.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Most admin tokens remembered at once.
const CACHE_MAX: usize = 256;
/// Longest route text kept in an audit record.
const MAX_ROUTE_LEN: usize = 256;

/// What authenticated the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An admin token; the principal's id is the token's id.
    Token,
    /// An access token of the trusted issuer `issuer`; the principal's id
    /// is its `sub`.
    Sso { issuer: String },
}

/// An authenticated administrator: who, holding what, until when.
#[derive(Clone, Debug)]
pub struct AdminPrincipal {
    pub kind: PrincipalKind,
    /// The admin token's id, or the SSO token's `sub`.
    pub id: String,
    /// Who the admin token was made for (the SSO subject for SSO).
    pub owner: Option<String>,
    /// The grants as presented (the token's, or the `permissions` claim).
    pub permissions: Vec<String>,
    /// The same, ready for matching.
    pub grants: Grants,
    /// When the credential stops working (`None`: an admin token that
    /// never expires).
    pub expires_at: Option<Timestamp>,
}

impl AdminPrincipal {
    /// The principal an admin token stands for.
    pub fn of_token(t: &AdminToken) -> AdminPrincipal {
        AdminPrincipal {
            kind: PrincipalKind::Token,
            id: t.id.clone(),
            owner: t.owner.clone(),
            grants: Grants::new(&t.permissions, true),
            permissions: t.permissions.clone(),
            expires_at: t.expires_at,
        }
    }

    /// The actor its changes are audited as: `admin:<token id>` or
    /// `sso:<subject>`.
    pub fn actor(&self) -> String {
        match self.kind {
            PrincipalKind::Token => format!("admin:{}", self.id),
            PrincipalKind::Sso { .. } => format!("sso:{}", self.id),
        }
    }

    /// Whether it holds `permission`.
    pub fn may(&self, permission: &Permission) -> bool {
        permission.is_covered_by(&self.grants)
    }
}

/// A permission the caller lacks (HTTP 403, `insufficient_scope`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{description}")]
pub struct Denied {
    /// The permission (or grant) missing, as a grant would have to cover it.
    pub permission: String,
    /// What was refused and why, for the caller.
    pub description: String,
}

impl Denied {
    /// The refusal of an operation that needs `permission`.
    pub fn missing(permission: &Permission) -> Denied {
        let needed = permission.to_string();
        let description = match permission {
            Permission::Env(_, env) if needed == "keyward.env.*" => format!(
                "this needs the permission keyward.env.* : the environment name {env:?} contains '.', which cannot be named in a permission, so only grants on every environment reach it"
            ),
            _ => format!("this needs the permission {needed}"),
        };
        Denied {
            permission: needed,
            description,
        }
    }
}

/// The one check: whether `principal` holds `permission`.
pub fn require(principal: &AdminPrincipal, permission: &Permission) -> Result<(), Denied> {
    if principal.may(permission) {
        Ok(())
    } else {
        Err(Denied::missing(permission))
    }
}

/// Why a request has no authenticated caller (HTTP 401, or 500 for
/// [`Refusal::ServerError`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not one well-formed bearer token
    /// (the text says which rule it breaks).
    Malformed(String),
    /// No such admin token (or, without a trusted issuer, not an admin token).
    Unknown,
    /// A revoked admin token.
    Revoked { id: String },
    /// An expired admin token.
    Expired { id: String, at: Timestamp },
    /// An access token the trusted issuer's policy refuses.
    Sso(VerifyError),
    /// The store could not be asked (the cause is logged).
    ServerError,
}

impl Refusal {
    /// 401, or 500 for a server error.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// A stable label for the audit record and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing_token",
            Refusal::Malformed(_) => "malformed_header",
            Refusal::Unknown => "unknown_token",
            Refusal::Revoked { .. } => "revoked",
            Refusal::Expired { .. } => "expired",
            Refusal::Sso(_) => "sso_token",
            Refusal::ServerError => "server_error",
        }
    }

    /// What the caller is told (never the token).
    pub fn description(&self) -> String {
        match self {
            Refusal::Missing => "an admin token is required: Authorization: Bearer <token>".into(),
            Refusal::Malformed(why) => why.clone(),
            Refusal::Unknown | Refusal::Revoked { .. } => {
                "the admin token is invalid or revoked".into()
            }
            Refusal::Expired { at, .. } => {
                format!("the admin token expired at {}", crate::fmt_time(*at))
            }
            Refusal::Sso(e) => format!("the access token is not accepted: {}", e.description()),
            Refusal::ServerError => "the server could not complete the request".into(),
        }
    }

    /// The admin token it concerns, when one was found.
    fn token_id(&self) -> Option<&str> {
        match self {
            Refusal::Revoked { id } | Refusal::Expired { id, .. } => Some(id),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Cached {
    token: Arc<AdminToken>,
    generation: i64,
    checked: Instant,
}

/// The budget of unauthenticated refusals written to the audit chain.
#[derive(Debug, Default)]
struct AuditBudget {
    /// Start of the current minute (the authority's clock).
    window_start: Timestamp,
    written: u32,
    /// Refusals left out since the last one written.
    left_out: u64,
}

struct Inner {
    authority: Arc<Authority>,
    sso: Option<Gate>,
    /// Recently checked tokens, by hash. An entry is used for at most
    /// [`CACHE_TTL`] and only while the store generation the server sees
    /// is unchanged (revoking an admin token moves it).
    cache: Mutex<HashMap<Vec<u8>, Cached>>,
    budget: Mutex<AuditBudget>,
}

/// Authenticates and authorizes administrators; see the module docs.
/// Cheap to clone (clones share the cache and the audit budget).
#[derive(Clone)]
pub struct AdminAuth {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("sso", &self.inner.sso)
            .finish_non_exhaustive()
    }
}

impl AdminAuth {
    /// The admin authenticator of `authority`, trusting the issuer of its
    /// settings' [`crate::Settings::admin_issuer`] if any.
    pub fn new(authority: Arc<Authority>) -> AdminAuth {
        let sso = authority.settings.admin_issuer.clone();
        AdminAuth {
            inner: Arc::new(Inner {
                authority,
                sso,
                cache: Mutex::new(HashMap::new()),
                budget: Mutex::new(AuditBudget::default()),
            }),
        }
    }

    /// The authority it checks against.
    pub fn authority(&self) -> &Arc<Authority> {
        &self.inner.authority
    }

    /// Authenticates a presented token (the value after `Bearer `) into the
    /// principal it stands for. A refusal is audited (bounded, see the
    /// module docs) as `admin.denied` on `route` (e.g. `POST
    /// /admin/v1/envs`, or a console page).
    pub async fn authenticate(&self, token: &str, route: &str) -> Result<AdminPrincipal, Refusal> {
        let found = self.check(token).await;
        if let Err(r) = &found {
            self.refuse(route, r).await;
        }
        found
    }

    async fn check(&self, token: &str) -> Result<AdminPrincipal, Refusal> {
        if !token.starts_with(ADMIN_TOKEN_PREFIX) {
            if let Some(gate) = &self.inner.sso {
                return self.check_sso(gate, token).await;
            }
            return Err(Refusal::Unknown);
        }
        self.check_hash(&hash_secret(token)).await
    }

    /// [`AdminAuth::authenticate`] for an admin token known by its hash
    /// (the console's session keeps the hash, never the token), so a
    /// revoked or expired token stops working at its next request.
    pub async fn authenticate_hash(
        &self,
        hash: &[u8],
        route: &str,
    ) -> Result<AdminPrincipal, Refusal> {
        let found = self.check_hash(hash).await;
        if let Err(r) = &found {
            self.refuse(route, r).await;
        }
        found
    }

    async fn check_hash(&self, hash: &[u8]) -> Result<AdminPrincipal, Refusal> {
        let now = self.inner.authority.now();
        let t = self
            .admin_token(hash)
            .await
            .map_err(|e| {
                crate::oauth::report(
                    crate::oauth::FaultReason::Store,
                    "-",
                    "admin",
                    &error_chain(&e),
                );
                Refusal::ServerError
            })?
            .ok_or(Refusal::Unknown)?;
        if t.revoked_at.is_some() {
            return Err(Refusal::Revoked { id: t.id.clone() });
        }
        match t.expires_at {
            Some(at) if at <= now => Err(Refusal::Expired {
                id: t.id.clone(),
                at,
            }),
            _ => Ok(AdminPrincipal::of_token(&t)),
        }
    }

    async fn check_sso(&self, gate: &Gate, token: &str) -> Result<AdminPrincipal, Refusal> {
        let id = gate.verify(token).await.map_err(Refusal::Sso)?;
        // The gate's policy requires `sub` unless configured otherwise.
        let sub = id
            .subject
            .clone()
            .ok_or(Refusal::Sso(VerifyError::MalformedClaim("sub")))?;
        Ok(AdminPrincipal {
            kind: PrincipalKind::Sso {
                issuer: id.issuer.clone(),
            },
            owner: Some(sub.clone()),
            id: sub,
            grants: id.permission_grants().clone(),
            permissions: id.permissions.clone(),
            expires_at: Some(id.expires_at),
        })
    }

    /// The admin token whose hash is `hash`, revoked or not, from the cache
    /// when it is fresh.
    async fn admin_token(&self, hash: &[u8]) -> Result<Option<Arc<AdminToken>>, StoreError> {
        let a = &self.inner.authority;
        let generation = a.snapshot().generation;
        if let Some(c) = self.inner.cache.lock().expect("admin cache").get(hash) {
            if c.generation == generation && c.checked.elapsed() < CACHE_TTL {
                return Ok(Some(c.token.clone()));
            }
        }
        let found = a.store.admin_token_by_hash(hash).await?.map(Arc::new);
        let mut cache = self.inner.cache.lock().expect("admin cache");
        match &found {
            // Only live tokens are kept: a refusal is always asked again.
            Some(t) if t.revoked_at.is_none() => {
                if cache.len() >= CACHE_MAX {
                    cache.retain(|_, c| c.checked.elapsed() < CACHE_TTL);
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(
                    hash.to_vec(),
                    Cached {
                        token: t.clone(),
                        generation,
                        checked: Instant::now(),
                    },
                );
            }
            _ => {
                cache.remove(hash);
            }
        }
        Ok(found)
    }

    /// [`require`], auditing a refusal of `principal` on `route` as
    /// `admin.denied` (always: the caller is known). `env` is the
    /// environment concerned, if any, for the record.
    pub async fn authorize(
        &self,
        principal: &AdminPrincipal,
        permission: &Permission,
        route: &str,
    ) -> Result<(), Denied> {
        let checked = require(principal, permission);
        if let Err(d) = &checked {
            let env = match permission {
                Permission::Env(_, env) => Some(env.as_str()),
                Permission::Global(_) => None,
            };
            self.denied(principal, route, env, d).await;
        }
        checked
    }

    /// Audits a refusal of `principal` on `route` (always).
    pub async fn denied(
        &self,
        principal: &AdminPrincipal,
        route: &str,
        env: Option<&str>,
        d: &Denied,
    ) {
        metrics::counter!("keyward_admin_refusals_total", "status" => "403", "reason" => "insufficient_scope").increment(1);
        let mut detail = json!({
            "status": 403,
            "route": bounded(route),
            "permission": d.permission,
            "owner": principal.owner,
            "kind": match principal.kind {
                PrincipalKind::Token => "admin_token",
                PrincipalKind::Sso { .. } => "sso",
            },
        });
        if let PrincipalKind::Sso { issuer } = &principal.kind {
            detail["issuer"] = json!(issuer);
        }
        self.write(AuditEntry {
            at: self.inner.authority.now(),
            actor: principal.actor(),
            action: "admin.denied".into(),
            env: env.map(str::to_owned),
            subject: Some(principal.id.clone()),
            detail,
        })
        .await;
    }

    /// Audits a request refused without a caller (a 401, e.g. a missing or
    /// malformed `Authorization` header) on `route`, within the budget of
    /// [`UNAUTHENTICATED_AUDITS_PER_MINUTE`]. [`AdminAuth::authenticate`]
    /// calls it for the refusals it makes.
    pub async fn refuse(&self, route: &str, r: &Refusal) {
        let status = r.status();
        metrics::counter!("keyward_admin_refusals_total", "status" => status.as_str().to_owned(), "reason" => r.reason()).increment(1);
        if *r == Refusal::ServerError {
            return;
        }
        let now = self.inner.authority.now();
        let left_out = {
            let mut b = self.inner.budget.lock().expect("audit budget");
            if now >= b.window_start.saturating_add(60) || now < b.window_start {
                b.window_start = now;
                b.written = 0;
            }
            if b.written >= UNAUTHENTICATED_AUDITS_PER_MINUTE {
                b.left_out += 1;
                return;
            }
            b.written += 1;
            std::mem::take(&mut b.left_out)
        };
        let mut detail = json!({
            "status": 401,
            "route": bounded(route),
            "reason": r.reason(),
        });
        if let Refusal::Sso(e) = r {
            detail["sso_reason"] = Value::from(e.reason());
        }
        if left_out > 0 {
            detail["unaudited_before"] = json!(left_out);
        }
        self.write(AuditEntry {
            at: now,
            actor: "anonymous".into(),
            action: "admin.denied".into(),
            env: None,
            subject: r.token_id().map(str::to_owned),
            detail,
        })
        .await;
    }

    /// Appends a record; a failure is logged and changes nothing else
    /// (the request is refused either way).
    async fn write(&self, entry: AuditEntry) {
        let store = &self.inner.authority.store;
        let done = async {
            let mut tx = store.begin().await?;
            tx.append_audit(entry).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %error_chain(&e), "an admin refusal could not be audited");
        }
    }
}

/// `route` cut to [`MAX_ROUTE_LEN`] bytes (at a character boundary).
fn bounded(route: &str) -> &str {
    if route.len() <= MAX_ROUTE_LEN {
        return route;
    }
    let mut end = MAX_ROUTE_LEN;
    while !route.is_char_boundary(end) {
        end -= 1;
    }
    &route[..end]
}
