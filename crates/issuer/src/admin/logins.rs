//! The login app's routes (Hydra-shaped): read, accept and reject an
//! environment's login and consent requests. All six require
//! `keyward.env.{env}.logins.accept`; the domain is [`crate::login`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use keyward_store::RequestKind;
use serde_json::json;

use super::{reply, AdminState, ApiError, ApiResult, Caller, JsonBody, PathParams};
use crate::authority::EnvState;
use crate::login::{AcceptConsent, AcceptLogin, ChallengeError, Reject};

impl ApiError {
    fn from_challenge(e: ChallengeError) -> Self {
        match e {
            ChallengeError::NotFound(_) => ApiError::not_found(e.to_string()),
            ChallengeError::AlreadyDecided(_) => {
                ApiError::new(StatusCode::CONFLICT, "already_decided", e.to_string())
            }
            ChallengeError::Expired(_) => ApiError::new(StatusCode::GONE, "expired", e.to_string()),
            ChallengeError::Invalid(d) => ApiError::bad_request(d),
            ChallengeError::Store(e) => ApiError::from_store(e),
        }
    }
}

fn env_state(s: &AdminState, env: &str) -> Result<std::sync::Arc<EnvState>, ApiError> {
    s.authority
        .snapshot()
        .env(env)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("environment {env:?} not found")))
}

fn redirect_to(r: Result<String, ChallengeError>) -> ApiResult {
    let url = r.map_err(ApiError::from_challenge)?;
    Ok(reply(StatusCode::OK, json!({ "redirect_to": url })))
}

pub(super) async fn get_login(
    State(s): State<AdminState>,
    PathParams((env, challenge)): PathParams<(String, String)>,
) -> ApiResult {
    let e = env_state(&s, &env)?;
    let v = s
        .authority
        .login_request(&e, &challenge)
        .await
        .map_err(ApiError::from_challenge)?;
    Ok(reply(StatusCode::OK, v))
}

pub(super) async fn accept_login(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams((env, challenge)): PathParams<(String, String)>,
    JsonBody(b): JsonBody<AcceptLogin>,
) -> ApiResult {
    let e = env_state(&s, &env)?;
    redirect_to(
        s.authority
            .accept_login(&e, &challenge, b, &caller.actor())
            .await,
    )
}

pub(super) async fn reject_login(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams((env, challenge)): PathParams<(String, String)>,
    JsonBody(b): JsonBody<Reject>,
) -> ApiResult {
    let e = env_state(&s, &env)?;
    redirect_to(
        s.authority
            .reject_request(&e, RequestKind::Login, &challenge, b, &caller.actor())
            .await,
    )
}

pub(super) async fn get_consent(
    State(s): State<AdminState>,
    PathParams((env, challenge)): PathParams<(String, String)>,
) -> ApiResult {
    let e = env_state(&s, &env)?;
    let v = s
        .authority
        .consent_request(&e, &challenge)
        .await
        .map_err(ApiError::from_challenge)?;
    Ok(reply(StatusCode::OK, v))
}

pub(super) async fn accept_consent(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams((env, challenge)): PathParams<(String, String)>,
    JsonBody(b): JsonBody<AcceptConsent>,
) -> ApiResult {
    let e = env_state(&s, &env)?;
    redirect_to(
        s.authority
            .accept_consent(&e, &challenge, b, &caller.actor())
            .await,
    )
}

pub(super) async fn reject_consent(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    PathParams((env, challenge)): PathParams<(String, String)>,
    JsonBody(b): JsonBody<Reject>,
) -> ApiResult {
    let e = env_state(&s, &env)?;
    redirect_to(
        s.authority
            .reject_request(&e, RequestKind::Consent, &challenge, b, &caller.actor())
            .await,
    )
}
