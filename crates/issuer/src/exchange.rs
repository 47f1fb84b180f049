//! Token exchange (RFC 8693): a client trades a token it was given (the
//! `subject_token`, and optionally an `actor_token` naming who acts for the
//! subject) for an access token of this environment, for an audience it may
//! call, with at most the scopes the subject token holds.
//!
//! Who may exchange what:
//! - the client's `grant_types` holds [`TOKEN_EXCHANGE_GRANT`];
//! - a token of its own environment is accepted when it was issued to the
//!   client or names the client (its `client_id`) in `aud`: a client cannot
//!   trade a token it merely saw for one of its own;
//! - a token of another issuer only when that issuer is one of the
//!   environment's trusted issuers (the server configuration's
//!   `[[token_exchange.trusted_issuers]]`, verified through keyward-verify's
//!   [`keyward_verify::Gate`], whose audience rule plays the part of the
//!   `aud` rule above) *and* one of the client's `exchange_issuers`;
//! - the scopes asked for are within both the subject token's and the
//!   client's; without `scope`, the subject token's that the client holds;
//! - the audience (`audience` or `resource`) is one the client may request
//!   (its registered audiences, as for every grant).
//!
//! A sender-constrained subject token (`cnf.jkt`, `cnf.x5t#S256`) is only
//! exchanged with a proof of its key (a `DPoP` proof by that key, that client
//! certificate): a stolen bound token does not become a bearer token here.
//! The issued token ends no later than the subject token, carries the
//! subject token's `act` chain (RFC 8693 §4.1) with the actor on top, and
//! each exchange is audited (`token.exchange`). Refusals write nothing.

use keyward_jose::{dangerous, UnverifiedToken, DEFAULT_MAX_TOKEN_LEN};
use keyward_store::{AuditEntry, Client, Timestamp};
use serde_json::{json, Map, Value};

use crate::authority::{Authority, EnvState};
use crate::grants::{TokenRequest, TokenResponse};
use crate::oauth::{ErrorCode, FaultReason, OAuthError};
use crate::tokens::parse_scope;

/// The grant type of RFC 8693 §2.1.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3 token type identifiers.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const REFRESH_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:refresh_token";

/// Which presented token (for error messages and the audit record).
#[derive(Clone, Copy)]
enum Role {
    Subject,
    Actor,
}

impl Role {
    fn param(self) -> &'static str {
        match self {
            Role::Subject => "subject_token",
            Role::Actor => "actor_token",
        }
    }
}

/// A presented token, verified: what the exchange reads of it.
#[derive(Debug)]
struct Presented {
    issuer: String,
    /// Issued by this environment.
    own: bool,
    subject: String,
    client_id: Option<String>,
    audiences: Vec<String>,
    scopes: Vec<String>,
    exp: Timestamp,
    jti: Option<String>,
    /// Its `act` claim (an object), if any.
    act: Option<Value>,
    cnf_jkt: Option<String>,
    cnf_x5t: Option<String>,
    /// Its `roles` and `permissions`, kept only for this environment's
    /// tokens (another issuer's grants are not this environment's).
    roles: Option<Value>,
    permissions: Option<Value>,
}

/// `invalid_request` for a presented token that is not acceptable (RFC 8693
/// §2.2.2: "if either the subject_token or actor_token are invalid for any
/// reason, or are unacceptable based on policy").
fn unacceptable(role: Role, why: impl std::fmt::Display) -> OAuthError {
    OAuthError::invalid_request(format!("the {} is not acceptable: {why}", role.param()))
}

/// Whether the requesting `client` may present `token`: a subject token of
/// this environment must be the client's own or made for it (`aud`; an
/// actor token names whoever acts, so it may be another client's), and a
/// sender-constrained token, subject or actor, needs the proof of its key
/// (`jkt`, the request's DPoP key) or certificate (`x5t`, the
/// connection's), so a leaked bound token is worth nothing here either.
fn held_by(
    token: &Presented,
    role: Role,
    client: &Client,
    jkt: Option<&str>,
    x5t: Option<&str>,
) -> Result<(), OAuthError> {
    if matches!(role, Role::Subject)
        && token.own
        && token.client_id.as_deref() != Some(client.client_id.as_str())
        && !token.audiences.contains(&client.client_id)
    {
        return Err(unacceptable(
            role,
            "it was neither issued to this client nor made for it (aud)",
        ));
    }
    if let Some(bound) = token.cnf_jkt.as_deref() {
        if jkt != Some(bound) {
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                format!(
                    "the {} is bound to a DPoP key: send a DPoP proof made with it",
                    role.param()
                ),
            ));
        }
    }
    if let Some(bound) = token.cnf_x5t.as_deref() {
        if x5t != Some(bound) {
            return Err(unacceptable(
                role,
                "it is bound to a client certificate this request was not made with",
            ));
        }
    }
    Ok(())
}

/// The token types a presented token may be declared as: keyward exchanges
/// JWT access tokens (this environment's, or a trusted issuer's, `typ`
/// `at+jwt` either way), whether declared as `access_token` or `jwt`.
fn check_type(role: Role, ty: Option<&str>) -> Result<(), OAuthError> {
    let param = match role {
        Role::Subject => "subject_token_type",
        Role::Actor => "actor_token_type",
    };
    match ty {
        None => Err(OAuthError::invalid_request(format!("{param} is missing"))),
        Some(ACCESS_TOKEN_TYPE | JWT_TOKEN_TYPE) => Ok(()),
        Some(ID_TOKEN_TYPE | REFRESH_TOKEN_TYPE) => Err(OAuthError::invalid_request(format!(
            "{param} {:?} is not exchanged here: present an access token ({ACCESS_TOKEN_TYPE})",
            ty.unwrap_or_default()
        ))),
        Some(other) => Err(OAuthError::invalid_request(format!(
            "{param} {:?} is not supported ({ACCESS_TOKEN_TYPE}, {JWT_TOKEN_TYPE})",
            other.chars().take(100).collect::<String>()
        ))),
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// What an exchanged token's `act` claim is (RFC 8693 §4.1): the actor on
/// top of the subject token's own chain; without an actor, that chain as it
/// was.
fn act_claim(own_issuer: &str, actor: Option<&Presented>, prior: Option<&Value>) -> Option<Value> {
    let Some(actor) = actor else {
        return prior.cloned();
    };
    let mut act = Map::new();
    act.insert("sub".into(), json!(actor.subject));
    if actor.issuer != own_issuer {
        act.insert("iss".into(), json!(actor.issuer));
    }
    if let Some(p) = prior {
        act.insert("act".into(), p.clone());
    }
    Some(Value::Object(act))
}

impl Authority {
    /// The `urn:ietf:params:oauth:grant-type:token-exchange` grant for an
    /// authenticated `client` allowed to use it; `jkt` and `x5t` are the
    /// request's DPoP key and the new token's certificate binding.
    pub(crate) async fn exchange(
        &self,
        env: &EnvState,
        client: &Client,
        req: &TokenRequest,
        jkt: Option<&str>,
        x5t: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let subject_token = req
            .subject_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::invalid_request("subject_token is missing"))?;
        check_type(Role::Subject, req.subject_token_type.as_deref())?;
        let actor_token = match (&req.actor_token, &req.actor_token_type) {
            (None, None) => None,
            (Some(t), ty) if !t.is_empty() => {
                check_type(Role::Actor, ty.as_deref())?;
                Some(t.as_str())
            }
            (Some(_), _) => return Err(OAuthError::invalid_request("actor_token is empty")),
            (None, Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "actor_token_type is given without an actor_token",
                ))
            }
        };
        match req.requested_token_type.as_deref() {
            None | Some(ACCESS_TOKEN_TYPE) => {}
            Some(other) => {
                return Err(OAuthError::invalid_request(format!(
                    "requested_token_type {:?} is not issued here (only {ACCESS_TOKEN_TYPE})",
                    other.chars().take(100).collect::<String>()
                )))
            }
        }
        let now = self.now();
        let subject = self
            .presented(env, client, Role::Subject, subject_token, now)
            .await?;
        let certificate = req.credentials.certificate.as_ref().map(|c| c.thumbprint());
        held_by(&subject, Role::Subject, client, jkt, certificate)?;
        let actor = match actor_token {
            Some(t) => {
                let actor = self.presented(env, client, Role::Actor, t, now).await?;
                held_by(&actor, Role::Actor, client, jkt, certificate)?;
                Some(actor)
            }
            None => None,
        };
        // Scopes only narrow: within the subject token's and the client's.
        let scopes: Vec<String> = match req.scope.as_deref() {
            Some(s) => {
                let want = parse_scope(s);
                if let Some(bad) = want.iter().find(|w| !subject.scopes.contains(w)) {
                    return Err(OAuthError::invalid_scope(format!(
                        "scope {bad:?} is not held by the subject_token"
                    )));
                }
                if let Some(bad) = want.iter().find(|w| !client.scopes.contains(w)) {
                    return Err(OAuthError::invalid_scope(format!(
                        "scope {bad:?} is not allowed for this client"
                    )));
                }
                want
            }
            None => subject
                .scopes
                .iter()
                .filter(|s| client.scopes.contains(s))
                .cloned()
                .collect(),
        };
        let audience = crate::grants::grant_audience(client, env, req.audience.as_deref())?;
        let mut extra = Map::new();
        if let Some(act) = act_claim(&env.env.issuer, actor.as_ref(), subject.act.as_ref()) {
            extra.insert("act".into(), act);
        }
        if let Some(r) = &subject.roles {
            extra.insert("roles".into(), r.clone());
        }
        if let Some(p) = &subject.permissions {
            extra.insert("permissions".into(), p.clone());
        }
        crate::grants::check_forwardable(&subject.subject, &client.client_id, &scopes, &extra)?;
        let extra = crate::grants::bound(&extra, jkt, x5t);
        let mut pending = self.prepare_access(env, client, now)?;
        // Never outlives what it was exchanged for.
        pending.ttl = pending.ttl.min(subject.exp - now);
        let jti = pending.jti.clone();
        let mut t = self
            .access_token(
                env,
                client,
                pending,
                &subject.subject,
                &scopes,
                &audience,
                &extra,
                None,
            )
            .await?;
        t.issued_token_type = Some(ACCESS_TOKEN_TYPE);
        // Audited before it is handed out: no record, no token.
        let store = |e| OAuthError::internal(FaultReason::Store, &e);
        let mut tx = self.store.begin().await.map_err(store)?;
        tx.append_audit(AuditEntry {
            at: now,
            actor: format!("client:{}", client.client_id),
            action: "token.exchange".into(),
            env: Some(env.env.name.clone()),
            subject: Some(subject.subject.clone()),
            detail: json!({
                "client_id": client.client_id,
                "jti": jti,
                "scope": t.scope,
                "audience": audience,
                "subject_issuer": subject.issuer,
                "subject_jti": subject.jti,
                "subject_client_id": subject.client_id,
                "actor": actor.as_ref().map(|a| json!({"sub": a.subject, "iss": a.issuer})),
                "act": extra.get("act"),
                "expires_in": t.expires_in,
            }),
        })
        .await
        .map_err(|e| OAuthError::internal(FaultReason::Audit, &e))?;
        tx.commit().await.map_err(store)?;
        Ok(t)
    }

    /// Verifies a presented token: this environment's access token (valid,
    /// not revoked), or one of a trusted issuer the client may exchange
    /// from (through the environment's gate, keys fetched and cached by
    /// keyward-verify).
    async fn presented(
        &self,
        env: &EnvState,
        client: &Client,
        role: Role,
        token: &str,
        now: Timestamp,
    ) -> Result<Presented, OAuthError> {
        // Whose token it claims to be decides where it is verified; both
        // paths check `iss` again.
        // The cause goes back to the client that sent the token: what the
        // parser says of it (bounded, and JSON-escaped in the answer).
        let parsed = UnverifiedToken::parse(token, DEFAULT_MAX_TOKEN_LEN)
            .map_err(|e| unacceptable(role, format!("it cannot be read as a JWT ({e})")))?;
        let names = dangerous::peek_names(&parsed)
            .map_err(|e| unacceptable(role, format!("it cannot be read as a JWT ({e})")))?;
        let iss = names.iss().unwrap_or_default().to_owned();
        if iss == env.env.issuer {
            let claims = self
                .verify_access_token(env, token, now)
                .await?
                .ok_or_else(|| {
                    unacceptable(
                        role,
                        "it is not a valid access token of this environment (invalid, expired or revoked)",
                    )
                })?;
            return Ok(Presented {
                issuer: iss,
                own: true,
                subject: claims["sub"].as_str().unwrap_or_default().to_owned(),
                client_id: claims["client_id"].as_str().map(str::to_owned),
                audiences: string_list(claims.get("aud")),
                scopes: claims["scope"]
                    .as_str()
                    .map(parse_scope)
                    .unwrap_or_default(),
                // Verified a finite number; keyward writes whole seconds.
                exp: claims["exp"].as_f64().map_or(now, |e| e as Timestamp),
                jti: claims["jti"].as_str().map(str::to_owned),
                act: claims.get("act").cloned(),
                cnf_jkt: claims["cnf"]["jkt"].as_str().map(str::to_owned),
                cnf_x5t: claims["cnf"]["x5t#S256"].as_str().map(str::to_owned),
                roles: claims.get("roles").cloned(),
                permissions: claims.get("permissions").cloned(),
            });
        }
        let untrusted = || {
            unacceptable(
                role,
                format!(
                    "its issuer {:?} is not one this client may exchange tokens of",
                    iss.chars().take(200).collect::<String>()
                ),
            )
        };
        if !client.exchange_issuers.contains(&iss) {
            return Err(untrusted());
        }
        let gate = self
            .settings
            .exchange_issuers
            .get(&env.env.name)
            .filter(|g| g.issuers().iter().any(|t| t.policy.issuer == iss))
            .ok_or_else(untrusted)?;
        let id = gate.verify(token).await.map_err(|e| {
            tracing::debug!(env = %env.env.name, issuer = %iss, error = %e, "token exchange: a trusted issuer's token is refused");
            unacceptable(role, format!("verification failed ({})", e.reason()))
        })?;
        let claims = id.claims.to_value();
        let Some(subject) = id.subject.clone().filter(|s| !s.is_empty()) else {
            return Err(unacceptable(role, "it has no sub"));
        };
        let act = match claims.get("act") {
            None => None,
            Some(a @ Value::Object(_)) => Some(a.clone()),
            Some(_) => return Err(unacceptable(role, "its act claim is not an object")),
        };
        Ok(Presented {
            issuer: id.issuer.clone(),
            own: false,
            subject,
            client_id: id.client_id.clone(),
            audiences: string_list(claims.get("aud")),
            scopes: id.scopes.clone(),
            exp: id.expires_at,
            jti: id.jti.clone(),
            act,
            cnf_jkt: id.cnf_jkt.clone(),
            cnf_x5t: id.cnf_x5t_s256.clone(),
            roles: None,
            permissions: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(sub: &str, iss: &str) -> Presented {
        Presented {
            issuer: iss.into(),
            own: true,
            subject: sub.into(),
            client_id: None,
            audiences: vec![],
            scopes: vec![],
            exp: 0,
            jti: None,
            act: None,
            cnf_jkt: None,
            cnf_x5t: None,
            roles: None,
            permissions: None,
        }
    }

    #[test]
    fn the_actor_goes_on_top_of_the_subject_tokens_chain() {
        let own = "https://issuer.test/dev";
        assert_eq!(act_claim(own, None, None), None);
        let prior = json!({"sub": "gateway"});
        assert_eq!(act_claim(own, None, Some(&prior)), Some(prior.clone()));
        let svc = presented("svc-a", own);
        assert_eq!(
            act_claim(own, Some(&svc), None),
            Some(json!({"sub": "svc-a"}))
        );
        let ext = presented("robot", "https://sso.example");
        assert_eq!(
            act_claim(own, Some(&ext), Some(&prior)),
            Some(json!({"sub": "robot", "iss": "https://sso.example", "act": {"sub": "gateway"}}))
        );
    }

    #[test]
    fn only_access_tokens_are_exchanged() {
        assert!(check_type(Role::Subject, Some(ACCESS_TOKEN_TYPE)).is_ok());
        assert!(check_type(Role::Actor, Some(JWT_TOKEN_TYPE)).is_ok());
        for bad in [
            None,
            Some(ID_TOKEN_TYPE),
            Some(REFRESH_TOKEN_TYPE),
            Some("x"),
        ] {
            let e = check_type(Role::Subject, bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad:?}");
        }
    }
}
