//! The token service: the `client_credentials` and `refresh_token` grants,
//! minting for users a login service authenticated, introspection (RFC 7662)
//! and revocation (RFC 7009).
//!
//! Refresh tokens rotate on every use. A rotated token presented again is a
//! replay (RFC 9700 §4.14.2): the whole family is revoked, its access tokens
//! go on the revocation feed, and the event is audited. One exception covers
//! a client that lost the response carrying its new token (a crash, a
//! dropped connection): presented again within `refresh_grace` of its
//! rotation *while its successor is still unused*, a rotated token gets a
//! fresh one, and that unused successor is superseded (marked rotated, its
//! access token revoked). Whoever presents the superseded successor later is
//! then caught as reuse, so a thief racing inside the window delays
//! detection until the real client comes back but never wins silently.
//!
//! Each refresh (normal, grace reissue or reuse) and each RFC 7009
//! revocation of a refresh token reads the presented token with
//! [`keyward_store::Tx::refresh_token_for_update`], which on PostgreSQL
//! takes the token's family lock before its row lock: whatever touches one
//! family runs one at a time, so a family revocation never misses a
//! successor issued at the same moment, and a grace reissue never deadlocks
//! with a reuse detection in its family.

use std::sync::Arc;

use keyward_jose::{claim_text, verify_jwt, PreparedSigner, Validation, DEFAULT_MAX_TOKEN_LEN};
use keyward_store::{AccessRef, AuditEntry, Client, RefreshToken, Timestamp};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::authority::{Authority, DpopNonces, EnvState};
use crate::clients::Credentials;
use crate::oauth::{ErrorCode, FaultReason, OAuthError};
use crate::tokens::{hash_secret, new_id, new_secret, parse_scope, AccessClaims};

/// Why an access token was not handed out: signed, it is longer than the
/// limit every keyward gate (and many HTTP servers' header limits) holds
/// tokens to. Its claims (permissions, roles, audiences) or its algorithm's
/// signature must shrink.
#[derive(Debug, thiserror::Error)]
#[error("the signed {alg} access token is {len} bytes, over the {DEFAULT_MAX_TOKEN_LEN}-byte limit gates enforce: it was not issued (fewer claims, or a smaller signature algorithm, would fit)")]
struct TokenTooLarge {
    len: usize,
    alg: &'static str,
}

/// A token request's parameters (RFC 6749 §4.4.2, §6).
#[derive(Debug, Default, Clone)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub scope: Option<String>,
    /// `audience` (or RFC 8707 `resource`).
    pub audience: Option<String>,
    pub refresh_token: Option<String>,
    pub credentials: Credentials,
    /// The request's one `DPoP` header (RFC 9449), if any.
    pub dpop_proof: Option<String>,
    /// `grant_type=authorization_code`: the code, the `redirect_uri` of its
    /// authorization request and the PKCE `code_verifier` (RFC 7636).
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    /// Token exchange (RFC 8693 §2.1): the token traded in and its type.
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    /// Who acts for the subject, and its token's type.
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    /// The device grant (RFC 8628 §3.4): the device's code.
    pub device_code: Option<String>,
}

/// A successful token response (RFC 6749 §5.1). The members are declared
/// in name order, the order they had when the response went through a
/// `serde_json::Value`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenResponse {
    pub access_token: String,
    pub expires_in: i64,
    /// An OIDC ID token (`grant_type=authorization_code` with `openid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// Token exchange (RFC 8693 §2.2.1): what `access_token` holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub token_type: &'static str,
}

/// Which grant a response came from, for metrics.
pub fn grant_label(req: &TokenRequest) -> &'static str {
    match req.grant_type.as_deref() {
        Some("client_credentials") => "client_credentials",
        Some("refresh_token") => "refresh_token",
        Some("authorization_code") => "authorization_code",
        Some(crate::exchange::TOKEN_EXCHANGE_GRANT) => "token_exchange",
        Some(crate::device::DEVICE_CODE_GRANT) => "device_code",
        _ => "other",
    }
}

/// What `mint_for_user` is asked for.
#[derive(Debug, Clone, Default)]
pub struct UserGrant {
    pub subject: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    /// Also issue a refresh token (default true).
    pub refresh: bool,
    /// Who asked (`admin:...`, `cli:...`): the actor of the `token.issue`
    /// audit record.
    pub actor: String,
}

/// The answer while an environment's signing key is in a device that fails
/// (cannot be opened, does not sign, signs too slowly or wrongly): 503
/// `temporarily_unavailable`, with `Retry-After` (added by the HTTP layer
/// to every `temporarily_unavailable`). The store and the reason are for
/// `/readyz`, the log and the metrics, not for the client.
fn signing_key_unavailable() -> OAuthError {
    OAuthError::new(
        ErrorCode::TemporarilyUnavailable,
        "the signing key is temporarily unavailable; retry later",
    )
}

/// `extra` with `cnf.jkt` (RFC 9449 §6.1) when the token is bound to a key.
pub(crate) fn bound(
    extra: &Map<String, Value>,
    jkt: Option<&str>,
    x5t: Option<&str>,
) -> Map<String, Value> {
    let mut out = extra.clone();
    let mut cnf = Map::new();
    if let Some(jkt) = jkt {
        cnf.insert("jkt".into(), json!(jkt));
    }
    if let Some(x5t) = x5t {
        cnf.insert("x5t#S256".into(), json!(x5t));
    }
    if !cnf.is_empty() {
        out.insert("cnf".into(), Value::Object(cnf));
    }
    out
}

/// The token endpoint's answer to a refused DPoP proof (RFC 9449 §5, §8).
fn dpop_refused(e: &keyward_verify::DpopRefusal) -> OAuthError {
    let code = match e.nonce() {
        Some(_) => ErrorCode::UseDpopNonce,
        None => ErrorCode::InvalidDpopProof,
    };
    OAuthError {
        dpop_nonce: e.nonce().map(str::to_owned),
        ..OAuthError::new(code, e.to_string())
    }
}

/// An access token whose signer, `jti` and lifetime are chosen but which is
/// not signed yet: a refresh token records its `jti` and `exp` before it is.
pub(crate) struct PendingAccess {
    pub(crate) signer: Arc<PreparedSigner>,
    pub(crate) jti: String,
    now: Timestamp,
    pub(crate) ttl: i64,
}

impl PendingAccess {
    pub(crate) fn access_ref(&self) -> AccessRef {
        AccessRef {
            jti: self.jti.clone(),
            exp: self.now + self.ttl,
        }
    }
}

/// Chooses the scopes of a token: the requested ones, each registered for the
/// client; without a request, all the client's scopes.
fn grant_scopes(client: &Client, requested: Option<&str>) -> Result<Vec<String>, OAuthError> {
    match requested {
        None => Ok(client.scopes.clone()),
        Some(r) => {
            let want = parse_scope(r);
            if let Some(bad) = want.iter().find(|s| !client.scopes.contains(s)) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope {bad:?} is not allowed for this client"
                )));
            }
            Ok(want)
        }
    }
}

/// Chooses the audience: the requested one if registered for the client;
/// without a request, the client's registered audiences, or the issuer if it
/// has none.
pub(crate) fn grant_audience(
    client: &Client,
    env: &EnvState,
    requested: Option<&str>,
) -> Result<Vec<String>, OAuthError> {
    match requested {
        Some(a) if client.audiences.iter().any(|x| x == a) => Ok(vec![a.to_string()]),
        Some(a) => Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            format!("audience {a:?} is not allowed for this client"),
        )),
        None if client.audiences.is_empty() => Ok(vec![env.env.issuer.clone()]),
        None => Ok(client.audiences.clone()),
    }
}

/// RFC 8705 §3: the `cnf` claim binding the access token to the client
/// certificate of the request, when the client's tokens are bound
/// (`tls_client_certificate_bound_access_tokens`, by default those of
/// clients that authenticate with a certificate). A client whose tokens are
/// bound and that presents no certificate is refused: a bearer token is not
/// what it registered for.
fn certificate_binding(
    client: &Client,
    creds: &crate::clients::Credentials,
) -> Result<Option<String>, OAuthError> {
    if !client.mtls.binds_tokens(client.auth) {
        return Ok(None);
    }
    match &creds.certificate {
        Some(cert) => Ok(Some(cert.thumbprint().to_owned())),
        None => Err(OAuthError::invalid_request(
            "this client's access tokens are bound to its client certificate: connect with it over TLS",
        )),
    }
}

/// Refuses, before anything is written, a claim keyward's gate would refuse
/// to forward ([`claim_text`], the rule the gate applies): the issuer never
/// mints a token its own gate rejects as malformed.
pub(crate) fn check_forwardable(
    subject: &str,
    client_id: &str,
    scopes: &[String],
    extra: &Map<String, Value>,
) -> Result<(), OAuthError> {
    claim_text::value("sub", subject)
        .and_then(|_| claim_text::value("client_id", client_id))
        .and_then(|_| claim_text::words("scope", scopes.iter().map(String::as_str)))
        .and_then(|_| claim_text::check_claims(extra))
        // The gate does not forward roles, but they are words like the
        // others (the admin API has always refused anything else).
        .and_then(|_| match extra.get("roles") {
            Some(Value::Array(r)) => claim_text::words("roles", r.iter().filter_map(Value::as_str)),
            _ => Ok(()),
        })
        .map_err(|e| {
            OAuthError::invalid_request(format!(
                "refused to mint a token keyward's gate would refuse: {e}"
            ))
        })
}

impl Authority {
    /// `POST {issuer}/oauth2/token`.
    pub async fn token(
        &self,
        env: &EnvState,
        req: TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let grant = req
            .grant_type
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
        if !matches!(
            grant,
            "client_credentials"
                | "refresh_token"
                | "authorization_code"
                | crate::exchange::TOKEN_EXCHANGE_GRANT
                | crate::device::DEVICE_CODE_GRANT
        ) {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!(
                    "supported grant types: client_credentials, refresh_token, authorization_code, {}, {}",
                    crate::exchange::TOKEN_EXCHANGE_GRANT,
                    crate::device::DEVICE_CODE_GRANT,
                ),
            ));
        }
        let client = self.authenticate(env, &req.credentials).await?;
        if !client.grant_types.iter().any(|g| g == grant) {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!("this client may not use the {grant} grant"),
            ));
        }
        let x5t = certificate_binding(&client, &req.credentials)?;
        let jkt = self
            .dpop_key(env, &client, req.dpop_proof.as_deref())
            .await?;
        match grant {
            "client_credentials" => {
                let scopes = grant_scopes(&client, req.scope.as_deref())?;
                let audience = grant_audience(&client, env, req.audience.as_deref())?;
                // No claim-text check here: the client id is keyward's own
                // and registration admits only RFC 6749 scope tokens, which
                // the gate's rule accepts (see `clients::validate`).
                let pending = self.prepare_access(env, &client, self.now())?;
                self.access_token(
                    env,
                    &client,
                    pending,
                    &client.client_id,
                    &scopes,
                    &audience,
                    &bound(&Map::new(), jkt.as_deref(), x5t.as_deref()),
                    None,
                )
                .await
            }
            "authorization_code" => {
                self.exchange_code(
                    env,
                    &client,
                    req.code.as_deref(),
                    req.redirect_uri.as_deref(),
                    req.code_verifier.as_deref(),
                    jkt.as_deref(),
                    x5t.as_deref(),
                )
                .await
            }
            "refresh_token" => {
                self.refresh(env, &client, &req, jkt.as_deref(), x5t.as_deref())
                    .await
            }
            crate::device::DEVICE_CODE_GRANT => {
                self.poll_device(
                    env,
                    &client,
                    req.device_code.as_deref(),
                    jkt.as_deref(),
                    x5t.as_deref(),
                )
                .await
            }
            _ => {
                self.exchange(env, &client, &req, jkt.as_deref(), x5t.as_deref())
                    .await
            }
        }
    }

    /// The key thumbprint a token request proves with its `DPoP` header
    /// (RFC 9449 §5), checked against `POST {issuer}/oauth2/token`; `None`
    /// without one. A client registered with `dpop_bound_access_tokens`
    /// must send one. In an environment that requires server nonces the
    /// proof must carry a current one of its own (RFC 9449 §8), else
    /// `use_dpop_nonce` with a fresh one: checked before anything is
    /// written or signed.
    async fn dpop_key(
        &self,
        env: &EnvState,
        client: &Client,
        proof: Option<&str>,
    ) -> Result<Option<String>, OAuthError> {
        let Some(proof) = proof else {
            if client.dpop_bound_access_tokens {
                return Err(OAuthError::new(
                    ErrorCode::InvalidDpopProof,
                    "this client must send a DPoP proof with every token request",
                ));
            }
            return Ok(None);
        };
        let uri = format!("{}/oauth2/token", env.env.issuer.trim_end_matches('/'));
        let target = keyward_verify::ProofTarget {
            method: "POST",
            uri: &uri,
            token: None,
        };
        let nonces = match &env.dpop_nonces {
            DpopNonces::Off => None,
            DpopNonces::Required(k) => Some(k.as_ref()),
            DpopNonces::Unopened => {
                return Err(OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "DPoP nonces cannot be checked now; retry later",
                ))
            }
        };
        match self
            .settings
            .dpop
            .check_with_nonces(proof, &target, self.now(), nonces)
            .await
        {
            Ok(p) => Ok(Some(p.jkt)),
            Err(e) => Err(dpop_refused(&e)),
        }
    }

    /// Chooses the signer, `jti` and lifetime of an access token issued at
    /// `now`; `temporarily_unavailable` if no key signs now. Nothing is
    /// written, so it runs before any refresh token is stored.
    pub(crate) fn prepare_access(
        &self,
        env: &EnvState,
        client: &Client,
        now: Timestamp,
    ) -> Result<PendingAccess, OAuthError> {
        let signer = env.access_token_signer(now).cloned().ok_or_else(|| {
            if env.signing_key_unopened(now).is_some() {
                signing_key_unavailable()
            } else {
                OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "no signing key is active",
                )
            }
        })?;
        let ttl = client
            .access_token_ttl_secs
            .unwrap_or(env.env.policy.token_ttl_secs);
        let ttl = ttl.min(env.env.policy.token_ttl_secs);
        Ok(PendingAccess {
            signer,
            jti: new_id(),
            now,
            ttl,
        })
    }

    /// Signs a prepared access token and builds the response (with
    /// `refresh_token` if given).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn access_token(
        &self,
        env: &EnvState,
        client: &Client,
        pending: PendingAccess,
        subject: &str,
        scopes: &[String],
        audience: &[String],
        extra: &Map<String, Value>,
        refresh_token: Option<String>,
    ) -> Result<TokenResponse, OAuthError> {
        let payload =
            self.access_payload(env, client, &pending, subject, scopes, audience, extra)?;
        let PendingAccess { signer, ttl, .. } = pending;
        let kid = signer.signer().kid().to_string();
        let token = self
            .pool
            .sign_within(signer, payload, self.settings.signing_timeout)
            .await;
        let token = match token {
            Ok(t) => {
                self.sign_succeeded(&env.env.name);
                t
            }
            // The device is down, slow, throttled, or signed garbage (no
            // such token leaves): this environment answers 503 until it
            // signs again; the others go on.
            Err(e) => match crate::authority::device_failure(&e) {
                Some((store, reason)) => {
                    self.sign_failed(&env.env.name, &kid, store, reason);
                    return Err(signing_key_unavailable());
                }
                None => return Err(OAuthError::internal(FaultReason::Signing, &e)),
            },
        };
        Ok(TokenResponse {
            access_token: token,
            // RFC 9449 §5.1: a token bound to a DPoP key is a DPoP token; a
            // certificate-bound one stays a Bearer token (RFC 8705 §3).
            token_type: if extra.get("cnf").is_some_and(|c| c.get("jkt").is_some()) {
                "DPoP"
            } else {
                "Bearer"
            },
            expires_in: ttl,
            id_token: None,
            issued_token_type: None,
            scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
            refresh_token,
        })
    }

    /// The claims of a prepared access token, checked against the token
    /// length gates accept before anything is signed or stored: a token over
    /// it is never handed out (`server_error`, logged and counted as
    /// `token_too_large`). The refresh grant checks it before it commits the
    /// rotation, so an oversized token never costs a client its refresh token.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn access_payload(
        &self,
        env: &EnvState,
        client: &Client,
        pending: &PendingAccess,
        subject: &str,
        scopes: &[String],
        audience: &[String],
        extra: &Map<String, Value>,
    ) -> Result<Vec<u8>, OAuthError> {
        let payload = AccessClaims {
            issuer: &env.env.issuer,
            subject,
            client_id: &client.client_id,
            audience,
            scope: scopes,
            extra,
            now: pending.now,
            ttl: pending.ttl,
            jti: &pending.jti,
        }
        .to_json();
        let len = pending.signer.token_len(payload.len());
        if len > DEFAULT_MAX_TOKEN_LEN {
            let cause = TokenTooLarge {
                len,
                alg: pending.signer.signer().algorithm().name(),
            };
            return Err(OAuthError::internal(FaultReason::TokenTooLarge, &cause));
        }
        Ok(payload)
    }

    /// Mints an access token (and a refresh token) for a user that the caller
    /// authenticated: the admin API and `keyward token issue`. The access
    /// token is signed first; then the refresh token and the `token.issue`
    /// audit record (actor `g.actor`) are written in one transaction. A
    /// failure anywhere leaves the store as it was and hands out nothing.
    pub async fn mint_for_user(
        &self,
        env: &EnvState,
        g: UserGrant,
    ) -> Result<TokenResponse, OAuthError> {
        if g.subject.is_empty() {
            return Err(OAuthError::invalid_request("the subject is empty"));
        }
        let snapshot = self.snapshot();
        let client = snapshot
            .client(&env.env.name, &g.client_id)
            .cloned()
            .ok_or_else(|| {
                OAuthError::invalid_request(format!(
                    "no client {:?} in {}",
                    g.client_id, env.env.name
                ))
            })?;
        let requested = (!g.scopes.is_empty()).then(|| g.scopes.join(" "));
        let scopes = grant_scopes(&client, requested.as_deref())?;
        let audience = grant_audience(&client, env, g.audience.as_deref())?;
        let mut extra = Map::new();
        if !g.roles.is_empty() {
            extra.insert("roles".into(), json!(g.roles));
        }
        if !g.permissions.is_empty() {
            extra.insert("permissions".into(), json!(g.permissions));
        }
        check_forwardable(&g.subject, &client.client_id, &scopes, &extra)?;
        let now = self.now();
        let pending = self.prepare_access(env, &client, now)?;
        let access_ref = pending.access_ref();
        // Signed first: a signing failure writes nothing, and a failed
        // write below throws the signed token away unseen.
        let mut t = self
            .access_token(
                env, &client, pending, &g.subject, &scopes, &audience, &extra, None,
            )
            .await?;
        // A refresh token only for a client that may use the refresh_token
        // grant; stored in one transaction with the `token.issue` record
        // that describes it, so both are written or neither is.
        let store = |e| OAuthError::internal(FaultReason::Store, &e);
        let mut tx = self.store.begin().await.map_err(store)?;
        if g.refresh && client.grant_types.iter().any(|t| t == "refresh_token") {
            let (token, hash) = new_secret("kwr_");
            let rt = RefreshToken {
                token_hash: hash,
                env: env.env.name.clone(),
                client_id: client.client_id.clone(),
                family_id: new_id(),
                subject: g.subject.clone(),
                scope: scopes.join(" "),
                audience: g.audience.clone(),
                extra: Value::Object(extra.clone()).to_string(),
                issued_at: now,
                expires_at: now + self.refresh_ttl(&client),
                rotated_at: None,
                revoked_at: None,
                parent: None,
                access: Some(access_ref),
                dpop_jkt: None,
            };
            tx.insert_refresh_token(&rt).await.map_err(store)?;
            t.refresh_token = Some(token);
        }
        tx.append_audit(AuditEntry {
            at: now,
            actor: g.actor,
            action: "token.issue".into(),
            env: Some(env.env.name.clone()),
            subject: Some(g.subject),
            detail: json!({
                "client_id": client.client_id,
                "scope": t.scope,
                "refresh": t.refresh_token.is_some(),
            }),
        })
        .await
        .map_err(|e| OAuthError::internal(FaultReason::Audit, &e))?;
        tx.commit().await.map_err(store)?;
        Ok(t)
    }

    pub(crate) fn refresh_ttl(&self, client: &Client) -> i64 {
        client
            .refresh_token_ttl_secs
            .unwrap_or(self.settings.refresh_token_ttl_secs)
    }

    async fn refresh(
        &self,
        env: &EnvState,
        client: &Arc<Client>,
        req: &TokenRequest,
        jkt: Option<&str>,
        x5t: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let presented = req
            .refresh_token
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
        let hash = hash_secret(presented);
        let now = self.now();
        let server = |e| OAuthError::internal(FaultReason::Store, &e);
        let invalid =
            || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
        let mut tx = self.store.begin().await.map_err(server)?;
        let Some(rt) = tx.refresh_token_for_update(&hash).await.map_err(server)? else {
            return Err(invalid());
        };
        if rt.env != env.env.name || rt.client_id != client.client_id {
            // Another client's token: refused, and nothing changes.
            return Err(invalid());
        }
        if rt.revoked_at.is_some() || rt.expires_at <= now {
            return Err(invalid());
        }
        // A family bound to a DPoP key (RFC 9449 §5) is refreshed only with
        // a proof by that key; checked before anything is written, so a
        // stolen bound token changes nothing (not even reuse detection).
        if let Some(bound_to) = rt.dpop_jkt.as_deref() {
            if jkt != Some(bound_to) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidDpopProof,
                    "this refresh token is bound to a DPoP key: send a DPoP proof made with it",
                ));
            }
        }
        // A rotated token is accepted again only within the grace window
        // and while the token it was exchanged for is unused: that one is
        // superseded (whoever holds it is caught when presenting it).
        let mut superseded = None;
        if let Some(rotated) = rt.rotated_at {
            let grace = self.settings.refresh_grace_secs;
            let in_grace = grace > 0 && now - rotated <= grace;
            if in_grace {
                superseded = tx
                    .supersede_refresh_successor(&hash, now)
                    .await
                    .map_err(server)?;
            }
            if superseded.is_none() {
                let n = tx
                    .revoke_refresh_family(&rt.family_id, now)
                    .await
                    .map_err(server)?;
                tx.append_audit(AuditEntry {
                    at: now,
                    actor: format!("client:{}", client.client_id),
                    action: "refresh.reuse_detected".into(),
                    env: Some(env.env.name.clone()),
                    subject: Some(rt.subject.clone()),
                    detail: json!({
                        "family": rt.family_id,
                        "revoked": n.refresh_tokens,
                        "access_tokens_revoked": n.access_tokens,
                        "rotated_at": rotated,
                        "within_grace": in_grace,
                    }),
                })
                .await
                .map_err(|e| OAuthError::internal(FaultReason::Audit, &e))?;
                tx.commit().await.map_err(server)?;
                crate::metrics::refresh_reuse(&env.env.name);
                return Err(OAuthError::invalid_grant(
                    "the refresh token was already used; its whole grant is revoked",
                ));
            }
        }
        // Narrowing the scope is allowed (RFC 6749 §6); widening is not.
        let original = parse_scope(&rt.scope);
        let scopes = match req.scope.as_deref() {
            None => original.clone(),
            Some(s) => {
                let want = parse_scope(s);
                if let Some(bad) = want.iter().find(|w| !original.contains(w)) {
                    return Err(OAuthError::invalid_scope(format!(
                        "scope {bad:?} was not granted"
                    )));
                }
                want
            }
        };
        // Scopes the client lost since are dropped.
        let scopes: Vec<String> = scopes
            .into_iter()
            .filter(|s| client.scopes.contains(s))
            .collect();
        let audience = grant_audience(client, env, rt.audience.as_deref())?;
        let extra: Map<String, Value> = serde_json::from_str(&rt.extra).unwrap_or_default();
        check_forwardable(&rt.subject, &client.client_id, &scopes, &extra)?;
        let extra = bound(&extra, jkt, x5t);
        let pending = self.prepare_access(env, client, now)?;
        let (token, new_hash) = new_secret("kwr_");
        if superseded.is_none() {
            tx.mark_refresh_rotated(&hash, now).await.map_err(server)?;
        }
        tx.insert_refresh_token(&RefreshToken {
            token_hash: new_hash,
            issued_at: now,
            expires_at: now + self.refresh_ttl(client),
            rotated_at: None,
            revoked_at: None,
            scope: original.join(" "),
            parent: Some(hash),
            access: Some(pending.access_ref()),
            ..rt.clone()
        })
        .await
        .map_err(server)?;
        if let Some(lost) = &superseded {
            // Not an alarm: what a client that lost a response does. Kept so
            // a later reuse of this family can be traced to this reissue.
            tx.append_audit(AuditEntry {
                at: now,
                actor: format!("client:{}", client.client_id),
                action: "refresh.grace_reissue".into(),
                env: Some(env.env.name.clone()),
                subject: Some(rt.subject.clone()),
                detail: json!({
                    "family": rt.family_id,
                    "rotated_at": rt.rotated_at,
                    "superseded_issued_at": lost.issued_at,
                }),
            })
            .await
            .map_err(|e| OAuthError::internal(FaultReason::Audit, &e))?;
        }
        // Checked before the rotation is committed: an access token gates
        // would refuse must not cost the client its refresh token.
        self.access_payload(
            env,
            client,
            &pending,
            &rt.subject,
            &scopes,
            &audience,
            &extra,
        )?;
        tx.commit().await.map_err(server)?;
        if superseded.is_some() {
            crate::metrics::refresh_grace_reissue(&env.env.name);
        }
        self.access_token(
            env,
            client,
            pending,
            &rt.subject,
            &scopes,
            &audience,
            &extra,
            Some(token),
        )
        .await
    }

    /// `POST {issuer}/oauth2/introspect` (RFC 7662): any authenticated client
    /// of the environment may introspect access tokens; refresh tokens only
    /// their own. Anything unknown, expired or revoked is `{"active": false}`.
    pub async fn introspect(
        &self,
        env: &EnvState,
        creds: &Credentials,
        token: &str,
    ) -> Result<Value, OAuthError> {
        let client = self.authenticate(env, creds).await?;
        if client.auth == keyward_store::ClientAuth::None {
            // RFC 7662 §2.1: introspection needs an authenticated caller;
            // a public client only names itself.
            return Err(OAuthError::invalid_client(
                "a public client cannot introspect tokens",
            ));
        }
        let now = self.now();
        let inactive = json!({"active": false});
        if token.starts_with("kwr_") {
            let rt = self
                .store
                .refresh_token(&hash_secret(token))
                .await
                .map_err(|e| OAuthError::internal(FaultReason::Store, &e))?;
            return Ok(match rt {
                Some(rt)
                    if rt.env == env.env.name
                        && rt.client_id == client.client_id
                        && rt.revoked_at.is_none()
                        && rt.rotated_at.is_none()
                        && rt.expires_at > now =>
                {
                    json!({
                        "active": true,
                        "token_type": "refresh_token",
                        "client_id": rt.client_id,
                        "sub": rt.subject,
                        "scope": rt.scope,
                        "iat": rt.issued_at,
                        "exp": rt.expires_at,
                        "iss": env.env.issuer,
                    })
                }
                _ => inactive,
            });
        }
        let Some(claims) = self.verify_access_token(env, token, now).await? else {
            return Ok(inactive);
        };
        let mut v = claims;
        v["active"] = json!(true);
        v["token_type"] = json!("access_token");
        Ok(v)
    }

    /// Verifies one of this environment's access tokens; `None` if invalid,
    /// expired or revoked.
    pub(crate) async fn verify_access_token(
        &self,
        env: &EnvState,
        token: &str,
        now: Timestamp,
    ) -> Result<Option<Value>, OAuthError> {
        let doc = env
            .jwks(now)
            .map_err(|e| OAuthError::internal(FaultReason::Keys, &e))?;
        let policy = Validation {
            // The environment's own published keys, each bound to its one
            // algorithm: whatever they sign with (ML-DSA included) is accepted.
            algorithms: keyward_jose::Algorithm::ALL.to_vec(),
            issuer: Some(env.env.issuer.clone()),
            required_typ: Some("at+jwt".into()),
            leeway_secs: 0,
            required_claims: ["iss", "sub", "exp", "jti", "client_id"]
                .map(String::from)
                .to_vec(),
            ..Validation::default()
        };
        let Ok(ok) = verify_jwt(token, &doc.keys, &policy, now) else {
            return Ok(None);
        };
        let jti = ok.claims.jti().unwrap_or_default().to_owned();
        if self
            .store
            .is_jti_revoked(&env.env.name, &jti)
            .await
            .map_err(|e| OAuthError::internal(FaultReason::Store, &e))?
        {
            return Ok(None);
        }
        Ok(Some(ok.claims.to_value()))
    }

    /// `POST {issuer}/oauth2/revoke` (RFC 7009). Revoking a refresh token
    /// revokes its whole family; revoking an access token puts its `jti` on
    /// the revocation feed. Unknown or invalid tokens succeed silently; a
    /// token of another client is refused.
    pub async fn revoke(
        &self,
        env: &EnvState,
        creds: &Credentials,
        token: &str,
    ) -> Result<(), OAuthError> {
        let client = self.authenticate(env, creds).await?;
        let now = self.now();
        let server = |e| OAuthError::internal(FaultReason::Store, &e);
        let other_client = || {
            OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the token was issued to another client",
            )
        };
        if token.starts_with("kwr_") {
            let mut tx = self.store.begin().await.map_err(server)?;
            if let Some(rt) = tx
                .refresh_token_for_update(&hash_secret(token))
                .await
                .map_err(server)?
            {
                if rt.env != env.env.name {
                    return Ok(());
                }
                if rt.client_id != client.client_id {
                    return Err(other_client());
                }
                tx.revoke_refresh_family(&rt.family_id, now)
                    .await
                    .map_err(server)?;
                tx.commit().await.map_err(server)?;
            }
            return Ok(());
        }
        let Some(claims) = self.verify_access_token(env, token, now).await? else {
            return Ok(());
        };
        if claims["client_id"].as_str() != Some(client.client_id.as_str()) {
            return Err(other_client());
        }
        let jti = claims["jti"].as_str().unwrap_or_default();
        let exp = claims["exp"].as_f64().unwrap_or(now as f64) as Timestamp;
        let mut tx = self.store.begin().await.map_err(server)?;
        tx.revoke_jti(&env.env.name, jti, exp, now)
            .await
            .map_err(server)?;
        tx.commit().await.map_err(server)?;
        Ok(())
    }

    /// `GET {issuer}/revocations?since=CURSOR`: revoked access-token `jti`s
    /// after `since`, with their `exp`, and the cursor to ask with next.
    pub async fn revocations(
        &self,
        env: &EnvState,
        since: i64,
        limit: i64,
    ) -> Result<Value, OAuthError> {
        let list = self
            .store
            .revocations_since(&env.env.name, since, limit)
            .await
            .map_err(|e| OAuthError::internal(FaultReason::Store, &e))?;
        let next = list.last().map(|r| r.seq).unwrap_or(since);
        let items: Vec<Value> = list
            .iter()
            .map(|r| json!({"jti": r.jti, "exp": r.exp, "revoked_at": r.revoked_at}))
            .collect();
        Ok(json!({"revocations": items, "next": next}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_store::ClientAuth;

    fn client(scopes: &[&str], auds: &[&str]) -> Client {
        Client {
            env: "e".into(),
            client_id: "c".into(),
            name: "n".into(),
            auth: ClientAuth::ClientSecretBasic,
            secret_hash: None,
            jwks: None,
            jwks_uri: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            audiences: auds.iter().map(|s| s.to_string()).collect(),
            grant_types: vec!["client_credentials".into()],
            access_token_ttl_secs: None,
            refresh_token_ttl_secs: None,
            dpop_bound_access_tokens: false,
            mtls: Default::default(),
            login: Default::default(),
            exchange_issuers: vec![],
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn scopes_must_be_registered() {
        let c = client(&["a", "b"], &[]);
        assert_eq!(grant_scopes(&c, None).unwrap(), vec!["a", "b"]);
        assert_eq!(grant_scopes(&c, Some("b")).unwrap(), vec!["b"]);
        assert_eq!(
            grant_scopes(&c, Some("a c")).unwrap_err().code,
            ErrorCode::InvalidScope
        );
    }
}
