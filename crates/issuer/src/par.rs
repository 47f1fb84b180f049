//! Pushed authorization requests (RFC 9126).
//!
//! A client sends its authorization request's parameters straight to
//! `POST {issuer}/oauth2/par`, authenticated as at the token endpoint; they
//! are checked exactly as the authorization endpoint checks them
//! ([`Authority::check_request`]) and stored, and the client gets a
//! `request_uri` (`urn:ietf:params:oauth:request_uri:<random>`) valid for
//! [`PAR_TTL_SECS`]. The browser then goes to `{issuer}/oauth2/authorize`
//! with only `client_id` and `request_uri`: the pushed request is used once
//! (a conditional `UPDATE`), only by the client that pushed it, in the
//! environment it was pushed to. Other parameters of that authorization
//! request are ignored (only what was pushed, authenticated, counts).
//!
//! A client registered with `require_pushed_authorization_requests`
//! (`keyward clients update --require-par`) is refused at the
//! authorization endpoint unless its request was pushed.

use keyward_store::{PushedRequest, Timestamp};

use crate::authority::{Authority, EnvState};
use crate::clients::Credentials;
use crate::login::{error_page, error_reply, AuthRequest, AuthorizeAnswer, Params};
use crate::oauth::{ErrorCode, FaultReason, OAuthError};
use crate::tokens::{hash_secret, new_secret};

/// The `request_uri` prefix RFC 9126 §2.2 gives.
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// How long a pushed request may be used (RFC 9126 §2.2: short, "5 to
/// 600 seconds"; the browser goes there at once).
pub const PAR_TTL_SECS: i64 = 60;

/// The answer of the PAR endpoint (RFC 9126 §2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    pub request_uri: String,
    pub expires_in: i64,
}

/// The PAR endpoint's error for what the authorization endpoint would have
/// shown or redirected (RFC 9126 §2.3: the same error codes, as JSON).
fn as_oauth_error(a: AuthorizeAnswer) -> OAuthError {
    match a {
        AuthorizeAnswer::ErrorPage { message, .. } => OAuthError::invalid_request(message),
        AuthorizeAnswer::Respond(reply) => {
            let get = |n: &str| {
                reply
                    .params
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
            };
            let error = get("error").unwrap_or("invalid_request");
            let description = get("error_description").unwrap_or("").to_owned();
            match error {
                "invalid_scope" => OAuthError::invalid_scope(description),
                "unauthorized_client" => {
                    OAuthError::new(ErrorCode::UnauthorizedClient, description)
                }
                "invalid_request" => OAuthError::invalid_request(description),
                other => OAuthError::invalid_request(format!("{other}: {description}")),
            }
        }
        AuthorizeAnswer::Redirect(_) => OAuthError::server_error(),
    }
}

impl Authority {
    /// `POST {issuer}/oauth2/par`: authenticates the client, checks the
    /// authorization request `params` as the authorization endpoint would,
    /// and stores it under a new `request_uri`. Refusals write nothing.
    pub async fn push_authorization_request(
        &self,
        env: &EnvState,
        creds: &Credentials,
        mut params: Vec<(String, String)>,
    ) -> Result<Pushed, OAuthError> {
        let client = self.authenticate(env, creds).await?;
        if let Some(named) = creds.client_id.as_deref() {
            if named != client.client_id {
                return Err(OAuthError::invalid_request(
                    "client_id is not the authenticated client",
                ));
            }
        }
        if !client.grant_types.iter().any(|g| g == "authorization_code") {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this client may not use the authorization code flow",
            ));
        }
        if params.iter().any(|(k, _)| k == "request_uri") {
            return Err(OAuthError::invalid_request(
                "request_uri cannot be pushed (RFC 9126 §2.1)",
            ));
        }
        params.retain(|(k, _)| k != "client_id");
        params.push(("client_id".into(), client.client_id.clone()));
        let req = self
            .check_request(env, &Params(params))
            .map_err(as_oauth_error)?;
        let now = self.now();
        let (request_uri, uri_hash) = new_secret(REQUEST_URI_PREFIX);
        let request = serde_json::to_string(&req)
            .map_err(|e| OAuthError::internal(FaultReason::Internal, &e))?;
        let store = |e| OAuthError::internal(FaultReason::Store, &e);
        let mut tx = self.store.begin().await.map_err(store)?;
        tx.insert_pushed_request(&PushedRequest {
            uri_hash,
            env: env.env.name.clone(),
            client_id: client.client_id.clone(),
            request,
            created_at: now,
            expires_at: now + PAR_TTL_SECS,
            used_at: None,
        })
        .await
        .map_err(store)?;
        tx.commit().await.map_err(store)?;
        Ok(Pushed {
            request_uri,
            expires_in: PAR_TTL_SECS,
        })
    }

    /// The authorization request pushed under `request_uri` by
    /// `client_id`, used now (once). Anything else (no `client_id`, an
    /// unknown, expired, used or another client's `request_uri`) is an
    /// error page, never a redirect: the redirect URI is only known from
    /// the pushed request.
    pub(crate) async fn pushed_request(
        &self,
        env: &EnvState,
        client_id: Option<&str>,
        request_uri: &str,
    ) -> Result<AuthRequest, AuthorizeAnswer> {
        let Some(client_id) = client_id else {
            return Err(error_page(400, "the request has no client_id"));
        };
        let unusable = || {
            error_page(
                400,
                "the request_uri is unknown, expired, already used, or not this client's",
            )
        };
        if !request_uri.starts_with(REQUEST_URI_PREFIX) || request_uri.len() > 200 {
            return Err(unusable());
        }
        let now: Timestamp = self.now();
        let server = |e: keyward_store::StoreError| crate::login::server_error_page(env, &e);
        let mut tx = self.store.begin().await.map_err(server)?;
        let Some(pushed) = tx
            .use_pushed_request(&hash_secret(request_uri), &env.env.name, client_id, now)
            .await
            .map_err(server)?
        else {
            return Err(unusable());
        };
        tx.commit().await.map_err(server)?;
        let req: AuthRequest = serde_json::from_str(&pushed.request)
            .map_err(|_| error_page(500, "the pushed request cannot be read; push it again"))?;
        // The client may have changed since (at most PAR_TTL_SECS ago).
        let snapshot = self.snapshot();
        let still = snapshot
            .client(&env.env.name, client_id)
            .is_some_and(|c| c.login.redirect_uris.contains(&req.redirect_uri));
        if !still {
            return Err(error_page(
                400,
                "the redirect_uri is no longer registered for this client",
            ));
        }
        Ok(req)
    }

    /// For a request that was not pushed: the refusal if its client must
    /// push its requests (RFC 9126 §6 `require_pushed_authorization_requests`).
    pub(crate) fn must_push(&self, env: &EnvState, req: &AuthRequest) -> Option<AuthorizeAnswer> {
        let snapshot = self.snapshot();
        let client = snapshot.client(&env.env.name, &req.client_id)?;
        client.login.require_par.then(|| {
            error_reply(
                env,
                &req.redirect_uri,
                req.response_mode,
                req.state.as_deref(),
                "invalid_request",
                Some("this client must push its authorization requests first (POST {issuer}/oauth2/par)"),
            )
        })
    }
}
