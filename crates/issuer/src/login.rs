//! Browser logins: the authorization code flow with PKCE (RFC 6749 §4.1,
//! RFC 7636, RFC 9700), with login and consent delegated to an application
//! the operator runs (as Ory Hydra does), ID tokens (OIDC Core), userinfo
//! and RP-initiated logout.
//!
//! The flow, as the browser sees it:
//!
//! 1. `GET {issuer}/oauth2/authorize?...` — the request is checked
//!    ([`Authority::authorize`]); keyward's browser session cookie
//!    ([`SESSION_COOKIE`]) is set; the browser goes to
//!    `{login_url}?login_challenge=C`.
//! 2. The login app reads the request (`GET .../login-requests/C`) and
//!    accepts or rejects it ([`Authority::accept_login`]); it gets a
//!    `redirect_to`: `{issuer}/oauth2/authorize?login_verifier=V`.
//! 3. The browser brings `V` back in the session that started the flow (a
//!    verifier from another session is refused: CSRF). Consent follows the
//!    same way (`consent_challenge`, `consent_verifier`), skipped for
//!    first-party clients and for consents remembered earlier.
//! 4. The browser goes back to the client's registered `redirect_uri` with
//!    `code`, `state` and `iss` (RFC 9207), in the query or as an
//!    auto-submitting form (`response_mode=form_post`).
//! 5. The client exchanges the code at the token endpoint
//!    ([`Authority::exchange_code`]): once, within [`CODE_TTL_SECS`], with
//!    its `redirect_uri` and PKCE verifier; a replayed code revokes what it
//!    issued.
//!
//! Errors before the client and its redirect URI are known to be genuine
//! (an unknown `client_id`, a `redirect_uri` not registered for it, a
//! verifier that is unknown or from another session) are shown to the user
//! ([`AuthorizeAnswer::ErrorPage`]) and never sent anywhere. Every other
//! error goes to the client's redirect URI with `error`, `state` and `iss`.
//!
//! Every secret (cookie, challenge, verifier, code) is random (256 bits)
//! and stored only as its SHA-256 ([`keyward_store::login`]).

use std::sync::Arc;

use keyward_jose::crypto::{constant_time_eq, oidc_token_hash, sha256};
use keyward_jose::{claim_text, verify_jwt, PreparedSigner, Validation};
use keyward_store::{
    AccessRef, AuditEntry, AuthorizationCode, BrowserSession, Client, ClientAuth, Consent,
    Decision, LoginRequest, RefreshToken, RequestKind, SessionLogin, StoreError, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::authority::{Authority, EnvState};
use crate::grants::TokenResponse;
use crate::oauth::{FaultReason, OAuthError};
use crate::tokens::{hash_secret, new_id, new_secret, parse_scope};

/// The browser session cookie (per environment: its path is the issuer's).
pub const SESSION_COOKIE: &str = "keyward_session";
/// How long a login or consent challenge may be read and decided.
pub const CHALLENGE_TTL_SECS: i64 = 600;
/// How long after a decision the browser may bring the verifier back.
pub const VERIFIER_TTL_SECS: i64 = 300;
/// How long an authorization code may be exchanged (RFC 6749 §4.1.2
/// recommends at most 10 minutes; OAuth 2.1 and keyward: 60 s).
pub const CODE_TTL_SECS: i64 = 60;
/// How long a browser session lives on the server.
pub const SESSION_TTL_SECS: i64 = 24 * 3600;
/// Longest accepted authorization request parameter.
pub const MAX_PARAM_LEN: usize = 2048;
/// Longest accepted `claims` object of a login accept, as JSON.
pub const MAX_CLAIMS_LEN: usize = 16 * 1024;
/// The `typ` header of ID tokens: never `at+jwt`, so no gate takes one for
/// an access token (DESIGN rule 1).
pub const ID_TOKEN_TYP: &str = "JWT";

/// The `prompt` values accepted (OIDC Core §3.1.2.1).
const PROMPTS: [&str; 4] = ["none", "login", "consent", "select_account"];
/// Claims the login app may not supply: the ID token's own.
const RESERVED_CLAIMS: [&str; 16] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "azp",
    "at_hash",
    "c_hash",
    "sid",
    "scope",
];

/// The claims each scope releases at userinfo (OIDC Core §5.4).
pub const SCOPE_CLAIMS: [(&str, &[&str]); 4] = [
    (
        "profile",
        &[
            "name",
            "family_name",
            "given_name",
            "middle_name",
            "nickname",
            "preferred_username",
            "profile",
            "picture",
            "website",
            "gender",
            "birthdate",
            "zoneinfo",
            "locale",
            "updated_at",
        ],
    ),
    ("email", &["email", "email_verified"]),
    ("address", &["address"]),
    ("phone", &["phone_number", "phone_number_verified"]),
];

/// Where the authorization response goes (OAuth 2.0 Multiple Response
/// Types §2.1, OAuth 2.0 Form Post Response Mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    Query,
    FormPost,
}

/// A checked authorization request: what a login request stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub response_mode: ResponseMode,
    pub scope: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// The S256 PKCE challenge.
    pub code_challenge: String,
    pub prompt: Vec<String>,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// A device's request (RFC 8628, [`crate::device`]): its redirect URI
    /// is the issuer's device callback, which the client does not register.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub device: bool,
}

/// An authorization response on its way to the client: `params` go to
/// `redirect_uri` in the query or as a form post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub redirect_uri: String,
    pub mode: ResponseMode,
    pub params: Vec<(String, String)>,
}

impl Reply {
    /// The URL to redirect to (query mode): the registered URI's own query
    /// is kept (RFC 6749 §3.1.2).
    pub fn url(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.params {
            q.append_pair(k, v);
        }
        let sep = if self.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}{}", self.redirect_uri, q.finish())
    }
}

/// What the authorization endpoint answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorizeAnswer {
    /// Shown to the user, never sent to a client: the client or redirect
    /// URI cannot be trusted, or the browser is not the one that started
    /// the flow.
    ErrorPage { status: u16, message: String },
    /// The browser goes to the login or consent app.
    Redirect(String),
    /// The authorization response (a code or an error) to the client.
    Respond(Reply),
}

/// The endpoint's answer, and the session cookie value to set (a new
/// browser session).
#[derive(Clone, Debug)]
pub struct Authorized {
    pub answer: AuthorizeAnswer,
    pub new_session: Option<String>,
}

impl Authorized {
    /// An answer that leaves the browser's session cookie as it is.
    pub(crate) fn plain(answer: AuthorizeAnswer) -> Self {
        Authorized {
            answer,
            new_session: None,
        }
    }
}

/// How the subject logged in: carried from the login to the consent and
/// into the code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LoginInfo {
    subject: String,
    auth_time: Timestamp,
    acr: Option<String>,
    amr: Vec<String>,
    claims: Map<String, Value>,
    sid: String,
}

/// What the login app decided on a login request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LoginOutcome {
    Accepted {
        subject: String,
        auth_time: Timestamp,
        acr: Option<String>,
        amr: Vec<String>,
        remember: bool,
        remember_for: Option<i64>,
        claims: Map<String, Value>,
    },
    Rejected {
        error: String,
        error_description: Option<String>,
    },
}

/// What the login app decided on a consent request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ConsentOutcome {
    Accepted {
        grant_scope: Vec<String>,
        remember: bool,
        remember_for: Option<i64>,
    },
    Rejected {
        error: String,
        error_description: Option<String>,
    },
}

/// The body of `POST .../login-requests/{challenge}/accept`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptLogin {
    pub subject: String,
    #[serde(default)]
    pub acr: Option<String>,
    #[serde(default)]
    pub amr: Vec<String>,
    #[serde(default)]
    pub remember: bool,
    /// Seconds; absent or 0: as long as the browser session lives.
    #[serde(default)]
    pub remember_for: Option<i64>,
    #[serde(default)]
    pub claims: Option<Map<String, Value>>,
}

/// The body of `POST .../consent-requests/{challenge}/accept`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptConsent {
    #[serde(default)]
    pub grant_scope: Vec<String>,
    #[serde(default)]
    pub remember: bool,
    /// Seconds; absent or 0: until revoked.
    #[serde(default)]
    pub remember_for: Option<i64>,
}

/// The body of a reject (login or consent).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reject {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
}

/// Why the admin API refused to read or decide a challenge.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("no such {0} request")]
    NotFound(&'static str),
    #[error("the {0} request was already decided: a challenge is accepted or rejected once")]
    AlreadyDecided(&'static str),
    #[error("the {0} request expired: the user must start again at the application")]
    Expired(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The authorization request a login or consent request was made for.
fn stored_request(r: &LoginRequest) -> Result<AuthRequest, StoreError> {
    serde_json::from_str(&r.request).map_err(|e| {
        StoreError::Corrupt(format!(
            "{} request: unreadable request: {e}",
            kind_name(r.kind)
        ))
    })
}

fn kind_name(k: RequestKind) -> &'static str {
    match k {
        RequestKind::Login => "login",
        RequestKind::Consent => "consent",
    }
}

/// `{base}?{name}={value}`, keeping a query the base has.
fn with_param(base: &str, name: &str, value: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair(name, value)
        .finish();
    format!("{base}{sep}{q}")
}

/// Whether `req`'s redirect URI is still one its client may use: a
/// registered one, or for a device's request the device callback.
fn redirect_allowed(env: &EnvState, client: &Client, req: &AuthRequest) -> bool {
    if req.device {
        crate::device::may_use(client) && req.redirect_uri == crate::device::callback_uri(env)
    } else {
        client.login.redirect_uris.contains(&req.redirect_uri)
    }
}

pub(crate) fn issuer_base(env: &EnvState) -> &str {
    env.env.issuer.trim_end_matches('/')
}

/// A code to redeem at the token endpoint: by its hash, with the
/// `redirect_uri` and PKCE verifier the request must bring, and for a
/// device's code the device request it answers.
pub(crate) struct Redeem<'a> {
    pub code_hash: Vec<u8>,
    pub redirect_uri: &'a str,
    pub verifier: &'a str,
    pub device_hash: Option<&'a [u8]>,
}

/// A new random secret (256 bits) and its stored hash.
fn secret() -> (String, Vec<u8>) {
    new_secret("")
}

pub(crate) fn error_page(status: u16, message: impl Into<String>) -> AuthorizeAnswer {
    AuthorizeAnswer::ErrorPage {
        status,
        message: message.into(),
    }
}

pub(crate) fn server_error_page(
    env: &EnvState,
    e: &(dyn std::error::Error + 'static),
) -> AuthorizeAnswer {
    OAuthError::internal(FaultReason::Store, e).report(&env.env.name, "authorize");
    error_page(500, "the server could not complete the request; try again")
}

/// The error response to the client (RFC 6749 §4.1.2.1, RFC 9207).
pub(crate) fn error_reply(
    env: &EnvState,
    redirect_uri: &str,
    mode: ResponseMode,
    state: Option<&str>,
    error: &str,
    description: Option<&str>,
) -> AuthorizeAnswer {
    let mut params = vec![("error".to_string(), error.to_string())];
    if let Some(d) = description {
        params.push(("error_description".into(), d.to_string()));
    }
    if let Some(s) = state {
        params.push(("state".into(), s.to_string()));
    }
    params.push(("iss".into(), env.env.issuer.clone()));
    AuthorizeAnswer::Respond(Reply {
        redirect_uri: redirect_uri.to_string(),
        mode,
        params,
    })
}

/// An RFC 7636 S256 challenge: 43 base64url characters (a SHA-256).
fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An RFC 7636 §4.1 code verifier: 43 to 128 unreserved characters.
fn is_code_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// BASE64URL(SHA256(verifier)) == challenge, in constant time.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    constant_time_eq(s256(verifier).as_bytes(), challenge.as_bytes())
}

/// The S256 PKCE challenge of `verifier` (RFC 7636 §4.2).
pub(crate) fn s256(verifier: &str) -> String {
    b64url(&sha256(verifier.as_bytes()))
}

/// Unpadded base64url.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `e` is an OAuth error code as keyward keeps them: `[a-z_]`, 1
/// to 64.
pub(crate) fn is_error_code(e: &str) -> bool {
    !e.is_empty() && e.len() <= 64 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// An OAuth error code chosen by the login app: `[a-z_]`, 1 to 64.
fn check_error_code(e: &str) -> Result<(), ChallengeError> {
    if is_error_code(e) {
        Ok(())
    } else {
        Err(ChallengeError::Invalid(
            "error is an OAuth error code: 1 to 64 of a-z and _ (e.g. access_denied)".into(),
        ))
    }
}

/// An `error_description` (RFC 6749 §4.1.2.1: printable ASCII except `"`
/// and `\`), at most 500 characters.
fn check_description(d: Option<&str>) -> Result<(), ChallengeError> {
    match d {
        Some(d)
            if d.len() > 500
                || !d.bytes().all(|b| {
                    b == 0x20
                        || b == 0x21
                        || (0x23..=0x5b).contains(&b)
                        || (0x5d..=0x7e).contains(&b)
                }) =>
        {
            Err(ChallengeError::Invalid(
                "error_description is at most 500 printable ASCII characters without \" or \\"
                    .into(),
            ))
        }
        _ => Ok(()),
    }
}

fn check_remember_for(v: Option<i64>) -> Result<(), ChallengeError> {
    match v {
        Some(s) if !(0..=crate::clients::MAX_TOKEN_TTL_SECS).contains(&s) => Err(
            ChallengeError::Invalid("remember_for is 0 to 10 years, in seconds".into()),
        ),
        _ => Ok(()),
    }
}

/// The claims the granted `scope` releases (OIDC Core §5.4); `sub` always.
pub fn released_claims(subject: &str, claims: &Map<String, Value>, scope: &[String]) -> Value {
    let mut out = Map::new();
    out.insert("sub".into(), json!(subject));
    for (s, names) in SCOPE_CLAIMS {
        if scope.iter().any(|g| g == s) {
            for n in names {
                if let Some(v) = claims.get(*n) {
                    out.insert((*n).to_string(), v.clone());
                }
            }
        }
    }
    Value::Object(out)
}

/// The authorization request's parameters, each at most once.
pub(crate) struct Params(pub(crate) Vec<(String, String)>);

impl Params {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Authority {
    /// The live browser session of `env` among the cookie values presented.
    async fn find_session(
        &self,
        env: &EnvState,
        cookies: &[String],
        now: Timestamp,
    ) -> Result<Option<BrowserSession>, StoreError> {
        for c in cookies {
            if c.is_empty() || c.len() > 100 {
                continue;
            }
            if let Some(s) = self.store.browser_session(&hash_secret(c)).await? {
                if s.env == env.env.name && s.ended_at.is_none() && s.expires_at > now {
                    return Ok(Some(s));
                }
            }
        }
        Ok(None)
    }

    /// `GET|POST {issuer}/oauth2/authorize` with its parameters (query or
    /// form, each at most once) and the `keyward_session` cookie values.
    pub async fn authorize(
        &self,
        env: &EnvState,
        params: Vec<(String, String)>,
        cookies: &[String],
    ) -> Authorized {
        let params = Params(params);
        let plain = |answer| Authorized {
            answer,
            new_session: None,
        };
        if let Some(v) = params.get("login_verifier") {
            return self.continue_login(env, v, cookies).await;
        }
        if let Some(v) = params.get("consent_verifier") {
            return plain(self.continue_consent(env, v, cookies).await);
        }
        // RFC 9126: a request pushed earlier, by its request_uri, once.
        if let Some(uri) = params.get("request_uri") {
            let req = match self.pushed_request(env, params.get("client_id"), uri).await {
                Ok(r) => r,
                Err(answer) => return plain(answer),
            };
            return match self.start(env, req, cookies).await {
                Ok(a) => a,
                Err(e) => plain(server_error_page(env, &e)),
            };
        }
        let req = match self.check_request(env, &params) {
            Ok(r) => r,
            Err(answer) => return plain(answer),
        };
        if let Some(refused) = self.must_push(env, &req) {
            return plain(refused);
        }
        match self.start(env, req, cookies).await {
            Ok(a) => a,
            Err(e) => plain(server_error_page(env, &e)),
        }
    }

    /// Checks a new authorization request: the client and redirect URI
    /// first (errors shown, not redirected), then the rest (errors
    /// redirected to the client).
    pub(crate) fn check_request(
        &self,
        env: &EnvState,
        p: &Params,
    ) -> Result<AuthRequest, AuthorizeAnswer> {
        if let Some((k, _)) = p.0.iter().find(|(_, v)| v.len() > MAX_PARAM_LEN) {
            return Err(error_page(
                400,
                format!("the parameter {k:?} is longer than {MAX_PARAM_LEN} characters"),
            ));
        }
        let Some(client_id) = p.get("client_id") else {
            return Err(error_page(400, "the request has no client_id"));
        };
        let snapshot = self.snapshot();
        let Some(client) = snapshot.client(&env.env.name, client_id) else {
            return Err(error_page(
                400,
                "the client_id names no client of this issuer",
            ));
        };
        let Some(redirect_uri) = p.get("redirect_uri") else {
            return Err(error_page(
                400,
                "the request has no redirect_uri (keyward requires it)",
            ));
        };
        // Byte for byte: no prefix, no wildcard, no normalisation.
        if !client.login.redirect_uris.iter().any(|u| u == redirect_uri) {
            return Err(error_page(
                400,
                "the redirect_uri is not registered for this client",
            ));
        }
        let state = p.get("state");
        let (mode, bad_mode) = match p.get("response_mode") {
            None | Some("query") => (ResponseMode::Query, false),
            Some("form_post") => (ResponseMode::FormPost, false),
            Some(_) => (ResponseMode::Query, true),
        };
        let fail =
            |error: &str, d: &str| error_reply(env, redirect_uri, mode, state, error, Some(d));
        if bad_mode {
            return Err(fail(
                "invalid_request",
                "response_mode is query or form_post",
            ));
        }
        if !client.grant_types.iter().any(|g| g == "authorization_code") {
            return Err(fail(
                "unauthorized_client",
                "this client may not use the authorization code flow",
            ));
        }
        match p.get("response_type") {
            Some("code") => {}
            None => return Err(fail("invalid_request", "response_type is missing")),
            Some(_) => {
                return Err(fail(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                ))
            }
        }
        if p.get("request").is_some() {
            return Err(fail(
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        if p.get("request_uri").is_some() {
            return Err(fail(
                "request_uri_not_supported",
                "request_uri is not supported",
            ));
        }
        let scope = parse_scope(p.get("scope").unwrap_or(""));
        if let Some(bad) = scope.iter().find(|s| !client.scopes.contains(s)) {
            return Err(fail(
                "invalid_scope",
                &format!("scope {bad:?} is not allowed for this client"),
            ));
        }
        let Some(challenge) = p.get("code_challenge") else {
            return Err(fail(
                "invalid_request",
                "code_challenge is required (PKCE, RFC 7636, with S256)",
            ));
        };
        match p.get("code_challenge_method") {
            Some("S256") => {}
            Some("plain") | None => {
                return Err(fail(
                    "invalid_request",
                    "code_challenge_method must be S256 (plain is refused)",
                ))
            }
            Some(_) => {
                return Err(fail(
                    "invalid_request",
                    "code_challenge_method must be S256",
                ))
            }
        }
        if !is_s256_challenge(challenge) {
            return Err(fail(
                "invalid_request",
                "code_challenge is not an S256 challenge (43 base64url characters)",
            ));
        }
        let openid = scope.iter().any(|s| s == "openid");
        let nonce = p.get("nonce");
        if nonce.is_none() && openid && client.auth == ClientAuth::None {
            return Err(fail(
                "invalid_request",
                "nonce is required for public clients asking for an ID token",
            ));
        }
        let prompt = parse_scope(p.get("prompt").unwrap_or(""));
        if let Some(bad) = prompt.iter().find(|v| !PROMPTS.contains(&v.as_str())) {
            return Err(fail(
                "invalid_request",
                &format!("prompt {bad:?} is not supported (none, login, consent, select_account)"),
            ));
        }
        if prompt.iter().any(|v| v == "none") && prompt.len() > 1 {
            return Err(fail(
                "invalid_request",
                "prompt=none cannot be combined with other values",
            ));
        }
        let max_age = match p.get("max_age") {
            None => None,
            Some(m) => match m.parse::<i64>() {
                Ok(n) if n >= 0 => Some(n),
                _ => {
                    return Err(fail(
                        "invalid_request",
                        "max_age is a non-negative number of seconds",
                    ))
                }
            },
        };
        Ok(AuthRequest {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            response_mode: mode,
            scope,
            state: state.map(str::to_owned),
            nonce: nonce.map(str::to_owned),
            code_challenge: challenge.to_string(),
            prompt,
            max_age,
            login_hint: p.get("login_hint").map(str::to_owned),
            device: false,
        })
    }

    /// A checked request: the browser session (new or found), then the
    /// login app, or straight on for `prompt=none`.
    pub(crate) async fn start(
        &self,
        env: &EnvState,
        req: AuthRequest,
        cookies: &[String],
    ) -> Result<Authorized, StoreError> {
        let now = self.now();
        let settings = self.store.login_settings(&env.env.name).await?;
        let Some(login_url) = settings.login_url.clone() else {
            return Ok(Authorized {
                answer: error_page(
                    503,
                    "this environment has no login URL configured (keyward env update --login-url)",
                ),
                new_session: None,
            });
        };
        // Read before the transaction: a store with one connection (an
        // in-memory SQLite) has none left while a transaction holds it.
        let found = self.find_session(env, cookies, now).await?;
        let mut tx = self.store.begin().await?;
        let (session, new_session) = match found {
            Some(s) => (s, None),
            None => {
                let (cookie, hash) = secret();
                let s = BrowserSession {
                    session_hash: hash,
                    env: env.env.name.clone(),
                    sid: new_id(),
                    subject: None,
                    auth_time: None,
                    acr: None,
                    amr: Vec::new(),
                    claims: None,
                    remember_until: None,
                    created_at: now,
                    expires_at: now + SESSION_TTL_SECS,
                    ended_at: None,
                };
                tx.insert_browser_session(&s).await?;
                (s, Some(cookie))
            }
        };
        // The session's login satisfies this request when it was
        // remembered, is not forced again, and is recent enough.
        let satisfies = match (&session.subject, session.auth_time, session.remember_until) {
            (Some(_), Some(at), Some(until)) => {
                until > now
                    && !req.prompt.iter().any(|p| p == "login")
                    && req.max_age.is_none_or(|m| now - at <= m)
            }
            _ => false,
        };
        if req.prompt.iter().any(|p| p == "none") {
            tx.commit().await?;
            let answer = if satisfies {
                let login = LoginInfo {
                    subject: session.subject.clone().unwrap_or_default(),
                    auth_time: session.auth_time.unwrap_or(now),
                    acr: session.acr.clone(),
                    amr: session.amr.clone(),
                    claims: session
                        .claims
                        .as_deref()
                        .and_then(|c| serde_json::from_str(c).ok())
                        .unwrap_or_default(),
                    sid: session.sid.clone(),
                };
                self.after_login(env, &req, &session.session_hash, login)
                    .await?
            } else {
                error_reply(
                    env,
                    &req.redirect_uri,
                    req.response_mode,
                    req.state.as_deref(),
                    "login_required",
                    Some("the user is not logged in (or must log in again) and prompt=none"),
                )
            };
            return Ok(Authorized {
                answer,
                new_session,
            });
        }
        let (challenge, hash) = secret();
        tx.insert_login_request(&LoginRequest {
            challenge_hash: hash,
            kind: RequestKind::Login,
            env: env.env.name.clone(),
            client_id: req.client_id.clone(),
            session_hash: session.session_hash.clone(),
            request: serde_json::to_string(&req).expect("request serializes"),
            subject: if satisfies {
                session.subject.clone()
            } else {
                None
            },
            login: None,
            skip: satisfies,
            created_at: now,
            expires_at: now + CHALLENGE_TTL_SECS,
            decided_at: None,
            outcome: None,
            verifier_hash: None,
            verified_at: None,
        })
        .await?;
        tx.commit().await?;
        Ok(Authorized {
            answer: AuthorizeAnswer::Redirect(with_param(
                &login_url,
                "login_challenge",
                &challenge,
            )),
            new_session,
        })
    }

    /// Uses verifier `v` of a request of `kind` in the session the cookies
    /// name: the request, its authorization request and client; or the
    /// page to show. The transaction is returned uncommitted: the caller
    /// commits only once it acts on it (a refusal changes nothing, so the
    /// rightful browser can still use the verifier).
    async fn verified(
        &self,
        env: &EnvState,
        kind: RequestKind,
        v: &str,
        cookies: &[String],
    ) -> Result<
        Result<
            (
                keyward_store::Tx<'static>,
                LoginRequest,
                AuthRequest,
                Arc<Client>,
            ),
            AuthorizeAnswer,
        >,
        StoreError,
    > {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let unknown = || {
            error_page(
                400,
                format!(
                    "the {} verifier is unknown, was used already, or expired: start again at the application",
                    kind_name(kind)
                ),
            )
        };
        if v.is_empty() || v.len() > 100 {
            return Ok(Err(unknown()));
        }
        let Some(r) = tx.use_login_verifier(&hash_secret(v), kind, now).await? else {
            return Ok(Err(unknown()));
        };
        if r.env != env.env.name {
            return Ok(Err(unknown()));
        }
        // CSRF: only the browser that started the flow may finish it.
        let from_this_browser = cookies
            .iter()
            .any(|c| constant_time_eq(&hash_secret(c), &r.session_hash));
        let live = match tx.browser_session(&r.session_hash).await? {
            Some(s) => s.ended_at.is_none() && s.expires_at > now,
            None => false,
        };
        if !from_this_browser || !live {
            return Ok(Err(error_page(
                403,
                "this login was started in another browser session: start again at the application",
            )));
        }
        let req = stored_request(&r)?;
        let snapshot = self.snapshot();
        let client = match snapshot.client(&env.env.name, &req.client_id) {
            Some(c) if redirect_allowed(env, c, &req) => c.clone(),
            _ => {
                return Ok(Err(error_page(
                    400,
                    "the client (or its redirect URI) is no longer registered",
                )))
            }
        };
        Ok(Ok((tx, r, req, client)))
    }

    async fn continue_login(&self, env: &EnvState, v: &str, cookies: &[String]) -> Authorized {
        match self.continue_login_inner(env, v, cookies).await {
            Ok(a) => a,
            Err(e) => Authorized {
                answer: server_error_page(env, &e),
                new_session: None,
            },
        }
    }

    async fn continue_login_inner(
        &self,
        env: &EnvState,
        v: &str,
        cookies: &[String],
    ) -> Result<Authorized, StoreError> {
        let now = self.now();
        let (mut tx, r, req, _client) =
            match self.verified(env, RequestKind::Login, v, cookies).await? {
                Ok(x) => x,
                Err(page) => return Ok(Authorized::plain(page)),
            };
        let outcome: LoginOutcome = r
            .outcome
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok())
            .ok_or_else(|| StoreError::Corrupt("login request: unreadable outcome".into()))?;
        match outcome {
            LoginOutcome::Rejected {
                error,
                error_description,
            } => {
                tx.commit().await?;
                Ok(Authorized::plain(error_reply(
                    env,
                    &req.redirect_uri,
                    req.response_mode,
                    req.state.as_deref(),
                    &error,
                    error_description.as_deref(),
                )))
            }
            LoginOutcome::Accepted {
                subject,
                auth_time,
                acr,
                amr,
                remember,
                remember_for,
                claims,
            } => {
                let session = tx
                    .browser_session(&r.session_hash)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("browser session vanished".into()))?;
                // A login of the session's own subject (a skipped one)
                // keeps what was remembered before.
                let remember_until = if remember {
                    Some(match remember_for {
                        Some(s) if s > 0 => (now + s).min(session.expires_at),
                        _ => session.expires_at,
                    })
                } else if session.subject.as_deref() == Some(subject.as_str()) {
                    session.remember_until
                } else {
                    None
                };
                // A new session secret at login (no session fixation):
                // the browser gets it with this answer.
                let (cookie, new_hash) = secret();
                tx.set_session_login(
                    &r.session_hash,
                    &new_hash,
                    &SessionLogin {
                        subject: subject.clone(),
                        auth_time,
                        acr: acr.clone(),
                        amr: amr.clone(),
                        claims: Value::Object(claims.clone()).to_string(),
                        remember_until,
                    },
                )
                .await?;
                tx.commit().await?;
                let login = LoginInfo {
                    subject,
                    auth_time,
                    acr,
                    amr,
                    claims,
                    sid: session.sid,
                };
                let answer = self.after_login(env, &req, &new_hash, login).await?;
                Ok(Authorized {
                    answer,
                    new_session: Some(cookie),
                })
            }
        }
    }

    /// After the login: consent (skipped for first-party clients and for a
    /// remembered consent covering the scopes), then the code.
    async fn after_login(
        &self,
        env: &EnvState,
        req: &AuthRequest,
        session_hash: &[u8],
        login: LoginInfo,
    ) -> Result<AuthorizeAnswer, StoreError> {
        let now = self.now();
        let snapshot = self.snapshot();
        let Some(client) = snapshot.client(&env.env.name, &req.client_id).cloned() else {
            return Ok(error_page(400, "the client is no longer registered"));
        };
        if client.login.first_party {
            return self.issue_code(env, req, &login, &req.scope).await;
        }
        let remembered = self
            .store
            .consent(&env.env.name, &login.subject, &client.client_id)
            .await?
            .filter(|c| c.expires_at.is_none_or(|e| e > now))
            .is_some_and(|c| req.scope.iter().all(|s| c.scope.contains(s)));
        let forced = req.prompt.iter().any(|p| p == "consent");
        if remembered && !forced {
            return self.issue_code(env, req, &login, &req.scope).await;
        }
        if req.prompt.iter().any(|p| p == "none") {
            return Ok(error_reply(
                env,
                &req.redirect_uri,
                req.response_mode,
                req.state.as_deref(),
                "consent_required",
                Some("the user has not consented and prompt=none"),
            ));
        }
        let settings = self.store.login_settings(&env.env.name).await?;
        let Some(consent_url) = settings.effective_consent_url().map(str::to_owned) else {
            return Ok(error_page(
                503,
                "this environment has no consent URL configured",
            ));
        };
        let (challenge, hash) = secret();
        let mut tx = self.store.begin().await?;
        tx.insert_login_request(&LoginRequest {
            challenge_hash: hash,
            kind: RequestKind::Consent,
            env: env.env.name.clone(),
            client_id: req.client_id.clone(),
            session_hash: session_hash.to_vec(),
            request: serde_json::to_string(req).expect("request serializes"),
            subject: Some(login.subject.clone()),
            login: Some(serde_json::to_string(&login).expect("login serializes")),
            skip: remembered,
            created_at: now,
            expires_at: now + CHALLENGE_TTL_SECS,
            decided_at: None,
            outcome: None,
            verifier_hash: None,
            verified_at: None,
        })
        .await?;
        tx.commit().await?;
        Ok(AuthorizeAnswer::Redirect(with_param(
            &consent_url,
            "consent_challenge",
            &challenge,
        )))
    }

    async fn continue_consent(
        &self,
        env: &EnvState,
        v: &str,
        cookies: &[String],
    ) -> AuthorizeAnswer {
        match self.continue_consent_inner(env, v, cookies).await {
            Ok(a) => a,
            Err(e) => server_error_page(env, &e),
        }
    }

    async fn continue_consent_inner(
        &self,
        env: &EnvState,
        v: &str,
        cookies: &[String],
    ) -> Result<AuthorizeAnswer, StoreError> {
        let now = self.now();
        let (mut tx, r, req, client) =
            match self.verified(env, RequestKind::Consent, v, cookies).await? {
                Ok(x) => x,
                Err(page) => return Ok(page),
            };
        let outcome: ConsentOutcome = r
            .outcome
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok())
            .ok_or_else(|| StoreError::Corrupt("consent request: unreadable outcome".into()))?;
        let login: LoginInfo = r
            .login
            .as_deref()
            .and_then(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| StoreError::Corrupt("consent request: unreadable login".into()))?;
        match outcome {
            ConsentOutcome::Rejected {
                error,
                error_description,
            } => {
                tx.commit().await?;
                Ok(error_reply(
                    env,
                    &req.redirect_uri,
                    req.response_mode,
                    req.state.as_deref(),
                    &error,
                    error_description.as_deref(),
                ))
            }
            ConsentOutcome::Accepted {
                grant_scope,
                remember,
                remember_for,
            } => {
                if remember {
                    tx.remember_consent(&Consent {
                        env: env.env.name.clone(),
                        subject: login.subject.clone(),
                        client_id: client.client_id.clone(),
                        scope: grant_scope.clone(),
                        granted_at: now,
                        expires_at: remember_for.filter(|s| *s > 0).map(|s| now + s),
                    })
                    .await?;
                }
                tx.commit().await?;
                self.issue_code(env, &req, &login, &grant_scope).await
            }
        }
    }

    /// Stores a new authorization code and answers the client with it.
    async fn issue_code(
        &self,
        env: &EnvState,
        req: &AuthRequest,
        login: &LoginInfo,
        granted: &[String],
    ) -> Result<AuthorizeAnswer, StoreError> {
        let now = self.now();
        // A device's code never leaves keyward: it waits for the device's
        // next poll, as long as the device's request lives.
        let ttl = if req.device {
            crate::device::DEVICE_TTL_SECS
        } else {
            CODE_TTL_SECS
        };
        let (code, hash) = new_secret("kwc_");
        let mut tx = self.store.begin().await?;
        tx.insert_authorization_code(&AuthorizationCode {
            code_hash: hash.clone(),
            env: env.env.name.clone(),
            client_id: req.client_id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            code_challenge: req.code_challenge.clone(),
            nonce: req.nonce.clone(),
            scope: granted.to_vec(),
            subject: login.subject.clone(),
            auth_time: login.auth_time,
            acr: login.acr.clone(),
            amr: login.amr.clone(),
            sid: login.sid.clone(),
            claims: Value::Object(login.claims.clone()).to_string(),
            issued_at: now,
            expires_at: now + ttl,
            used_at: None,
            access_jti: None,
            access_exp: None,
            family_id: None,
        })
        .await?;
        tx.append_audit(AuditEntry {
            at: now,
            actor: format!("client:{}", req.client_id),
            action: "code.issue".into(),
            env: Some(env.env.name.clone()),
            subject: Some(login.subject.clone()),
            detail: json!({
                "client_id": req.client_id,
                "scope": granted.join(" "),
                "redirect_uri": req.redirect_uri,
                "sid": login.sid,
            }),
        })
        .await?;
        // A device's code goes to its request, not to the browser.
        if req.device {
            let state = req.state.as_deref().unwrap_or_default();
            let recorded = tx
                .finish_device_login(&hash_secret(state), &env.env.name, Ok(&hash), now)
                .await?;
            if recorded.is_none() {
                return Ok(error_page(
                    400,
                    "the device's request expired or was answered already: start again on the device",
                ));
            }
        }
        tx.commit().await?;
        let mut params = Vec::new();
        if !req.device {
            params.push(("code".to_string(), code));
        }
        if let Some(s) = &req.state {
            params.push(("state".into(), s.clone()));
        }
        params.push(("iss".into(), env.env.issuer.clone()));
        Ok(AuthorizeAnswer::Respond(Reply {
            redirect_uri: req.redirect_uri.clone(),
            mode: req.response_mode,
            params,
        }))
    }

    // -----------------------------------------------------------------
    // The login app's side (the admin API)

    /// A request of `kind` by challenge, if it may still be decided.
    async fn open_request(
        &self,
        env: &EnvState,
        kind: RequestKind,
        challenge: &str,
    ) -> Result<LoginRequest, ChallengeError> {
        let name = kind_name(kind);
        if challenge.is_empty() || challenge.len() > 100 {
            return Err(ChallengeError::NotFound(name));
        }
        let r = self
            .store
            .login_request(&hash_secret(challenge))
            .await?
            .filter(|r| r.env == env.env.name && r.kind == kind)
            .ok_or(ChallengeError::NotFound(name))?;
        if r.decided_at.is_some() {
            return Err(ChallengeError::AlreadyDecided(name));
        }
        if r.expires_at <= self.now() {
            return Err(ChallengeError::Expired(name));
        }
        Ok(r)
    }

    /// `GET .../login-requests/{challenge}`: what the login app shows.
    pub async fn login_request(
        &self,
        env: &EnvState,
        challenge: &str,
    ) -> Result<Value, ChallengeError> {
        let r = self
            .open_request(env, RequestKind::Login, challenge)
            .await?;
        let req = stored_request(&r)?;
        let client_name = self
            .snapshot()
            .client(&env.env.name, &req.client_id)
            .map(|c| c.name.clone());
        Ok(json!({
            "challenge": challenge,
            "client_id": req.client_id,
            "client_name": client_name,
            "requested_scope": req.scope,
            "login_hint": req.login_hint,
            "prompt": req.prompt.join(" "),
            "max_age": req.max_age,
            "skip": r.skip,
            "subject": r.subject,
            // A device's request (RFC 8628): the user confirmed its code.
            "device": req.device,
            "request_url": self.request_url(env, &req),
            "expires_at": crate::fmt_time(r.expires_at),
        }))
    }

    /// The authorization request as the client sent it (for display).
    fn request_url(&self, env: &EnvState, req: &AuthRequest) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", &req.client_id)
            .append_pair("redirect_uri", &req.redirect_uri)
            .append_pair("scope", &req.scope.join(" "));
        // A device request's state is its callback's key: not shown.
        if let Some(s) = req.state.as_ref().filter(|_| !req.device) {
            q.append_pair("state", s);
        }
        format!("{}/oauth2/authorize?{}", issuer_base(env), q.finish())
    }

    /// Decides `r` with `outcome`; the `redirect_to` the login app sends
    /// the browser to.
    async fn decide(
        &self,
        env: &EnvState,
        r: &LoginRequest,
        outcome: String,
        audit: AuditEntry,
    ) -> Result<String, ChallengeError> {
        let now = self.now();
        let (verifier, verifier_hash) = secret();
        let mut tx = self.store.begin().await?;
        let decided = tx
            .decide_login_request(
                &r.challenge_hash,
                r.kind,
                &Decision {
                    outcome,
                    verifier_hash,
                    verifier_expires_at: now + VERIFIER_TTL_SECS,
                },
                now,
            )
            .await?;
        if !decided {
            // Another call decided it (or it expired) in between.
            return Err(ChallengeError::AlreadyDecided(kind_name(r.kind)));
        }
        tx.append_audit(audit).await?;
        tx.commit().await?;
        let name = match r.kind {
            RequestKind::Login => "login_verifier",
            RequestKind::Consent => "consent_verifier",
        };
        Ok(with_param(
            &format!("{}/oauth2/authorize", issuer_base(env)),
            name,
            &verifier,
        ))
    }

    /// `POST .../login-requests/{challenge}/accept`.
    pub async fn accept_login(
        &self,
        env: &EnvState,
        challenge: &str,
        b: AcceptLogin,
        actor: &str,
    ) -> Result<String, ChallengeError> {
        let r = self
            .open_request(env, RequestKind::Login, challenge)
            .await?;
        claim_text::value("sub", &b.subject)
            .map_err(|e| ChallengeError::Invalid(format!("subject: {e}")))?;
        if b.subject.len() > 255 {
            return Err(ChallengeError::Invalid(
                "subject is at most 255 bytes".into(),
            ));
        }
        if let Some(acr) = &b.acr {
            claim_text::value("acr", acr)
                .map_err(|e| ChallengeError::Invalid(format!("acr: {e}")))?;
        }
        claim_text::words("amr", b.amr.iter().map(String::as_str))
            .map_err(|e| ChallengeError::Invalid(format!("amr: {e}")))?;
        check_remember_for(b.remember_for)?;
        let restated = b.claims.is_some();
        let mut claims = b.claims.unwrap_or_default();
        if let Some(k) = claims
            .keys()
            .find(|k| RESERVED_CLAIMS.contains(&k.as_str()))
        {
            return Err(ChallengeError::Invalid(format!(
                "claims may not set {k:?}: keyward sets it"
            )));
        }
        if Value::Object(claims.clone()).to_string().len() > MAX_CLAIMS_LEN {
            return Err(ChallengeError::Invalid(format!(
                "claims are at most {MAX_CLAIMS_LEN} bytes of JSON"
            )));
        }
        // A skipped login keeps the session's subject and its login time,
        // and what the login app does not restate (claims, acr, amr) is
        // what the session's login gave.
        let mut auth_time = self.now();
        let (mut acr, mut amr) = (b.acr, b.amr);
        if r.skip {
            if r.subject.as_deref() != Some(b.subject.as_str()) {
                return Err(ChallengeError::Invalid(
                    "skip is true: accept with the session's subject (or reject)".into(),
                ));
            }
            if let Some(s) = self.store.browser_session(&r.session_hash).await? {
                auth_time = s.auth_time.unwrap_or(auth_time);
                if !restated {
                    claims = s
                        .claims
                        .as_deref()
                        .and_then(|c| serde_json::from_str(c).ok())
                        .unwrap_or_default();
                }
                if acr.is_none() {
                    acr = s.acr;
                }
                if amr.is_empty() {
                    amr = s.amr;
                }
            }
        }
        let client_id = r.client_id.clone();
        let audit = AuditEntry {
            at: self.now(),
            actor: actor.to_string(),
            action: "login.accept".into(),
            env: Some(env.env.name.clone()),
            subject: Some(b.subject.clone()),
            detail: json!({
                "client_id": client_id,
                "acr": acr,
                "amr": amr,
                "remember": b.remember,
                "skip": r.skip,
            }),
        };
        let outcome = LoginOutcome::Accepted {
            subject: b.subject,
            auth_time,
            acr,
            amr,
            remember: b.remember,
            remember_for: b.remember_for,
            claims,
        };
        let outcome = serde_json::to_string(&outcome).expect("outcome serializes");
        self.decide(env, &r, outcome, audit).await
    }

    /// `POST .../{login,consent}-requests/{challenge}/reject`.
    pub async fn reject_request(
        &self,
        env: &EnvState,
        kind: RequestKind,
        challenge: &str,
        b: Reject,
        actor: &str,
    ) -> Result<String, ChallengeError> {
        let r = self.open_request(env, kind, challenge).await?;
        check_error_code(&b.error)?;
        check_description(b.error_description.as_deref())?;
        let audit = AuditEntry {
            at: self.now(),
            actor: actor.to_string(),
            action: format!("{}.reject", kind_name(kind)),
            env: Some(env.env.name.clone()),
            subject: r.subject.clone(),
            detail: json!({"client_id": r.client_id, "error": b.error}),
        };
        let outcome = match kind {
            RequestKind::Login => serde_json::to_string(&LoginOutcome::Rejected {
                error: b.error,
                error_description: b.error_description,
            }),
            RequestKind::Consent => serde_json::to_string(&ConsentOutcome::Rejected {
                error: b.error,
                error_description: b.error_description,
            }),
        }
        .expect("outcome serializes");
        self.decide(env, &r, outcome, audit).await
    }

    /// `GET .../consent-requests/{challenge}`.
    pub async fn consent_request(
        &self,
        env: &EnvState,
        challenge: &str,
    ) -> Result<Value, ChallengeError> {
        let r = self
            .open_request(env, RequestKind::Consent, challenge)
            .await?;
        let req = stored_request(&r)?;
        let client_name = self
            .snapshot()
            .client(&env.env.name, &req.client_id)
            .map(|c| c.name.clone());
        Ok(json!({
            "challenge": challenge,
            "client_id": req.client_id,
            "client_name": client_name,
            "subject": r.subject,
            "requested_scope": req.scope,
            "skip": r.skip,
            "request_url": self.request_url(env, &req),
            "expires_at": crate::fmt_time(r.expires_at),
        }))
    }

    /// `POST .../consent-requests/{challenge}/accept`.
    pub async fn accept_consent(
        &self,
        env: &EnvState,
        challenge: &str,
        b: AcceptConsent,
        actor: &str,
    ) -> Result<String, ChallengeError> {
        let r = self
            .open_request(env, RequestKind::Consent, challenge)
            .await?;
        let req = stored_request(&r)?;
        if let Some(bad) = b.grant_scope.iter().find(|s| !req.scope.contains(s)) {
            return Err(ChallengeError::Invalid(format!(
                "grant_scope {bad:?} was not requested"
            )));
        }
        check_remember_for(b.remember_for)?;
        let mut grant = Vec::new();
        for s in b.grant_scope {
            if !grant.contains(&s) {
                grant.push(s);
            }
        }
        let audit = AuditEntry {
            at: self.now(),
            actor: actor.to_string(),
            action: "consent.grant".into(),
            env: Some(env.env.name.clone()),
            subject: r.subject.clone(),
            detail: json!({
                "client_id": r.client_id,
                "grant_scope": grant.join(" "),
                "remember": b.remember,
            }),
        };
        let outcome = serde_json::to_string(&ConsentOutcome::Accepted {
            grant_scope: grant,
            remember: b.remember,
            remember_for: b.remember_for,
        })
        .expect("outcome serializes");
        self.decide(env, &r, outcome, audit).await
    }

    // -----------------------------------------------------------------
    // The token endpoint: grant_type=authorization_code

    /// Exchanges an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.6):
    /// `client` authenticated already (a public client by its id alone),
    /// `jkt`/`x5t` the DPoP key or certificate its tokens are bound to.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn exchange_code(
        &self,
        env: &EnvState,
        client: &Arc<Client>,
        code: Option<&str>,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        jkt: Option<&str>,
        x5t: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let code = code.ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
        let redirect_uri =
            redirect_uri.ok_or_else(|| OAuthError::invalid_request("redirect_uri is missing"))?;
        let verifier = verifier.ok_or_else(|| {
            OAuthError::invalid_request("code_verifier is missing (PKCE is required)")
        })?;
        if !is_code_verifier(verifier) {
            return Err(OAuthError::invalid_request(
                "code_verifier is 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            ));
        }
        let redeem = Redeem {
            code_hash: hash_secret(code),
            redirect_uri,
            verifier,
            device_hash: None,
        };
        self.redeem_code(env, client, redeem, jkt, x5t).await
    }

    /// Redeems the code `r.code_hash` for `client`: checks, marks it used
    /// (and the device request it answers redeemed), issues its tokens.
    pub(crate) async fn redeem_code(
        &self,
        env: &EnvState,
        client: &Arc<Client>,
        r: Redeem<'_>,
        jkt: Option<&str>,
        x5t: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let Redeem {
            code_hash: hash,
            redirect_uri,
            verifier,
            device_hash,
        } = r;
        let now = self.now();
        let server = |e: StoreError| OAuthError::internal(FaultReason::Store, &e);
        let invalid = || {
            OAuthError::invalid_grant(
                "the authorization code is invalid, expired or was issued to another client",
            )
        };
        let mut tx = self.store.begin().await.map_err(server)?;
        // First, so that of two polls at once the second finds the device
        // request redeemed and never reaches the code (whose second use
        // would revoke what the first issued).
        if let Some(d) = device_hash {
            if !tx
                .consume_device_authorization(d, now)
                .await
                .map_err(server)?
            {
                return Err(OAuthError::invalid_grant(
                    "the device_code was used already",
                ));
            }
        }
        let Some(c) = tx
            .authorization_code_for_update(&hash)
            .await
            .map_err(server)?
        else {
            return Err(invalid());
        };
        if c.env != env.env.name {
            return Err(invalid());
        }
        if let Some(used) = c.used_at {
            // RFC 6749 §4.1.2: a code used twice is refused, and what it
            // issued is revoked (whoever holds it may have stolen it).
            let mut revoked_refresh = 0;
            if let Some(family) = &c.family_id {
                revoked_refresh = tx
                    .revoke_refresh_family(family, now)
                    .await
                    .map_err(server)?
                    .refresh_tokens;
            }
            let mut revoked_access = false;
            if let (Some(jti), Some(exp)) = (&c.access_jti, c.access_exp) {
                revoked_access = tx
                    .revoke_jti(&env.env.name, jti, exp, now)
                    .await
                    .map_err(server)?
                    .is_some();
            }
            tx.append_audit(AuditEntry {
                at: now,
                actor: format!("client:{}", client.client_id),
                action: "code.replay_detected".into(),
                env: Some(env.env.name.clone()),
                subject: Some(c.subject.clone()),
                detail: json!({
                    "client_id": c.client_id,
                    "presented_by": client.client_id,
                    "used_at": used,
                    "access_token_revoked": revoked_access,
                    "refresh_tokens_revoked": revoked_refresh,
                }),
            })
            .await
            .map_err(|e| OAuthError::internal(FaultReason::Audit, &e))?;
            tx.commit().await.map_err(server)?;
            return Err(OAuthError::invalid_grant(
                "the authorization code was already used; what it issued is revoked",
            ));
        }
        if c.client_id != client.client_id || c.expires_at <= now {
            return Err(invalid());
        }
        if c.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        if !pkce_matches(verifier, &c.code_challenge) {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        // Scopes the client lost since the login are dropped.
        let scopes: Vec<String> = c
            .scope
            .iter()
            .filter(|s| client.scopes.contains(s))
            .cloned()
            .collect();
        let audience = crate::grants::grant_audience(client, env, None)?;
        let extra = crate::grants::bound(&Map::new(), jkt, x5t);
        crate::grants::check_forwardable(&c.subject, &client.client_id, &scopes, &extra)?;
        let pending = self.prepare_access(env, client, now)?;
        let access_ref: AccessRef = pending.access_ref();
        // A refresh token only for offline_access (OIDC Core §11) granted
        // to a client that may refresh.
        let mut refresh = None;
        if scopes.iter().any(|s| s == "offline_access")
            && client.grant_types.iter().any(|g| g == "refresh_token")
        {
            let (token, token_hash) = new_secret("kwr_");
            let family = new_id();
            tx.insert_refresh_token(&RefreshToken {
                token_hash,
                env: env.env.name.clone(),
                client_id: client.client_id.clone(),
                family_id: family.clone(),
                subject: c.subject.clone(),
                scope: scopes.join(" "),
                audience: None,
                extra: "{}".into(),
                issued_at: now,
                expires_at: now + self.refresh_ttl(client),
                rotated_at: None,
                revoked_at: None,
                parent: None,
                access: Some(access_ref.clone()),
                // A public client's family is bound to its DPoP key
                // (RFC 9449 §5), as refreshes check.
                dpop_jkt: (client.auth == ClientAuth::None)
                    .then(|| jkt.map(str::to_owned))
                    .flatten(),
            })
            .await
            .map_err(server)?;
            refresh = Some((token, family));
        }
        let marked = tx
            .use_authorization_code(
                &hash,
                now,
                &access_ref,
                refresh.as_ref().map(|(_, f)| f.as_str()),
            )
            .await
            .map_err(server)?;
        if !marked {
            return Err(invalid());
        }
        // Checked before the code is spent: a token gates would refuse
        // must not cost the client its code.
        self.access_payload(
            env, client, &pending, &c.subject, &scopes, &audience, &extra,
        )?;
        tx.commit().await.map_err(server)?;
        let ttl = pending.ttl;
        let signer = pending.signer.clone();
        let mut t = self
            .access_token(
                env,
                client,
                pending,
                &c.subject,
                &scopes,
                &audience,
                &extra,
                refresh.map(|(t, _)| t),
            )
            .await?;
        if scopes.iter().any(|s| s == "openid") {
            let alg = signer.signer().algorithm();
            let mut claims = json!({
                "iss": env.env.issuer,
                "sub": c.subject,
                "aud": [client.client_id],
                "azp": client.client_id,
                "iat": now,
                "exp": now + ttl,
                "auth_time": c.auth_time,
                "at_hash": oidc_token_hash(alg, &t.access_token),
                "sid": c.sid,
            });
            if let Some(n) = &c.nonce {
                claims["nonce"] = json!(n);
            }
            if let Some(acr) = &c.acr {
                claims["acr"] = json!(acr);
            }
            if !c.amr.is_empty() {
                claims["amr"] = json!(c.amr);
            }
            let id_signer = Arc::new(PreparedSigner::new(
                signer.signer().clone(),
                Some(ID_TOKEN_TYP),
            ));
            let payload = serde_json::to_vec(&claims).expect("claims serialize");
            let id_token = self
                .pool
                .sign_within(id_signer, payload, self.settings.signing_timeout)
                .await
                .map_err(|e| OAuthError::internal(FaultReason::Signing, &e))?;
            t.id_token = Some(id_token);
        }
        Ok(t)
    }

    // -----------------------------------------------------------------
    // userinfo and logout

    /// `{issuer}/oauth2/userinfo` (OIDC Core §5.3) for a verified access
    /// token's claims: `sub` and the claims its scope releases. `None` when
    /// the token was not issued through a login (no userinfo to give).
    pub async fn userinfo(
        &self,
        env: &EnvState,
        claims: &Value,
    ) -> Result<Option<Value>, OAuthError> {
        let jti = claims["jti"].as_str().unwrap_or_default();
        let subject = claims["sub"].as_str().unwrap_or_default();
        let scope = parse_scope(claims["scope"].as_str().unwrap_or(""));
        if !scope.iter().any(|s| s == "openid") {
            return Ok(None);
        }
        let stored = self
            .store
            .userinfo_claims(&env.env.name, jti)
            .await
            .map_err(|e| OAuthError::internal(FaultReason::Store, &e))?;
        let Some(text) = stored else { return Ok(None) };
        let map: Map<String, Value> = serde_json::from_str(&text).unwrap_or_default();
        Ok(Some(released_claims(subject, &map, &scope)))
    }

    /// Verifies an access token of this environment for a resource
    /// keyward serves (userinfo): signature, `typ: at+jwt`, issuer, expiry,
    /// and not revoked. `None` when invalid.
    pub async fn verify_own_access_token(
        &self,
        env: &EnvState,
        token: &str,
    ) -> Result<Option<Value>, OAuthError> {
        self.verify_access_token(env, token, self.now()).await
    }

    /// `{issuer}/oauth2/logout` (OIDC RP-Initiated Logout 1.0): ends the
    /// browser session of `cookies` and sends the browser to the client's
    /// registered `post_logout_redirect_uri` (exact match) with `state`.
    pub async fn end_session(
        &self,
        env: &EnvState,
        params: Vec<(String, String)>,
        cookies: &[String],
    ) -> LogoutAnswer {
        let p = Params(params);
        let now = self.now();
        if let Some((k, _)) = p.0.iter().find(|(_, v)| v.len() > 8 * 1024) {
            return LogoutAnswer::ErrorPage(format!("the parameter {k:?} is too long"));
        }
        // The client: the ID token's audience, or client_id; both agree.
        let mut client_id = p.get("client_id").map(str::to_owned);
        let mut hint_sid = None;
        if let Some(hint) = p.get("id_token_hint") {
            let Some(claims) = self.verify_id_token_hint(env, hint) else {
                return LogoutAnswer::ErrorPage(
                    "id_token_hint is not an ID token of this issuer".into(),
                );
            };
            let aud = claims["azp"]
                .as_str()
                .or_else(|| claims["aud"].as_str())
                .or_else(|| claims["aud"][0].as_str())
                .map(str::to_owned);
            if client_id.is_some() && client_id != aud {
                return LogoutAnswer::ErrorPage(
                    "client_id is not the id_token_hint's audience".into(),
                );
            }
            client_id = aud;
            hint_sid = claims["sid"].as_str().map(str::to_owned);
        }
        let target = match p.get("post_logout_redirect_uri") {
            None => None,
            Some(uri) => {
                let snapshot = self.snapshot();
                let registered = client_id
                    .as_deref()
                    .and_then(|id| snapshot.client(&env.env.name, id))
                    .is_some_and(|c| c.login.post_logout_redirect_uris.iter().any(|u| u == uri));
                if !registered {
                    return LogoutAnswer::ErrorPage(
                        "post_logout_redirect_uri is not registered for the client (an id_token_hint or client_id names it)".into(),
                    );
                }
                Some(match p.get("state") {
                    Some(s) => with_param(uri, "state", s),
                    None => uri.to_string(),
                })
            }
        };
        let ended = async {
            let Some(session) = self.find_session(env, cookies, now).await? else {
                return Ok::<_, StoreError>(SessionOutcome::NoSession);
            };
            // Ended at once only for a hint of this very session (its
            // RP-initiated logout); else the user confirms on a page whose
            // form only this browser can fill (OIDC RP-Initiated Logout §2:
            // no forced logout by a link, or by someone else's hint).
            let own_hint = hint_sid.as_deref() == Some(session.sid.as_str());
            let expected = cookies
                .iter()
                .find(|c| constant_time_eq(&hash_secret(c), &session.session_hash))
                .map(|c| logout_token(c));
            let confirmed = match (p.get("logout_confirm"), &expected) {
                (Some(got), Some(want)) => constant_time_eq(got.as_bytes(), want.as_bytes()),
                _ => false,
            };
            if !own_hint && !confirmed {
                let mut fields: Vec<(String, String)> = [
                    "id_token_hint",
                    "client_id",
                    "post_logout_redirect_uri",
                    "state",
                ]
                .iter()
                .filter_map(|k| p.get(k).map(|v| (k.to_string(), v.to_string())))
                .collect();
                fields.push(("logout_confirm".into(), expected.unwrap_or_default()));
                return Ok(SessionOutcome::Confirm(fields));
            }
            let mut tx = self.store.begin().await?;
            tx.end_browser_session(&env.env.name, &session.sid, now)
                .await?;
            tx.append_audit(AuditEntry {
                at: now,
                actor: match &client_id {
                    Some(c) => format!("client:{c}"),
                    None => "browser".into(),
                },
                action: "session.end".into(),
                env: Some(env.env.name.clone()),
                subject: session.subject.clone(),
                detail: json!({
                    "sid": session.sid,
                    "hint_sid_matches": hint_sid.as_deref().map(|s| s == session.sid),
                }),
            })
            .await?;
            tx.commit().await?;
            Ok(SessionOutcome::Ended)
        }
        .await;
        match ended {
            Err(e) => {
                OAuthError::internal(FaultReason::Store, &e).report(&env.env.name, "logout");
                LogoutAnswer::ErrorPage("the server could not end the session; try again".into())
            }
            Ok(SessionOutcome::Confirm(fields)) => LogoutAnswer::Confirm { fields, target },
            Ok(SessionOutcome::NoSession | SessionOutcome::Ended) => match target {
                Some(url) => LogoutAnswer::Redirect(url),
                None => LogoutAnswer::LoggedOut,
            },
        }
    }

    /// An ID token of this environment (signature, `typ: JWT`, issuer);
    /// an expired one is still a hint (OIDC RP-Initiated Logout §2).
    fn verify_id_token_hint(&self, env: &EnvState, token: &str) -> Option<Value> {
        let now = self.now();
        let doc = env.jwks(now).ok()?;
        let policy = Validation {
            algorithms: keyward_jose::Algorithm::ALL.to_vec(),
            issuer: Some(env.env.issuer.clone()),
            required_typ: Some(ID_TOKEN_TYP.into()),
            // Expired hints are accepted: they only name the session.
            leeway_secs: 366 * 24 * 3600,
            required_claims: ["iss", "sub", "aud"].map(String::from).to_vec(),
            ..Validation::default()
        };
        verify_jwt(token, &doc.keys, &policy, now)
            .ok()
            .map(|ok| ok.claims.to_value())
    }
}

/// Sets environment `env`'s login and consent URLs (each an absolute https
/// URI, or http to a loopback host; no fragment), audited as
/// `env.login_settings`.
pub async fn set_login_settings(
    store: &keyward_store::Store,
    env: &str,
    settings: &keyward_store::LoginSettings,
    at: crate::keyring::Change<'_>,
) -> Result<(), crate::error::IssuerError> {
    check_login_settings(settings)?;
    let mut tx = store.begin().await?;
    tx.set_login_settings(env, settings).await?;
    tx.append_audit(AuditEntry {
        at: at.now,
        actor: at.actor.to_string(),
        action: "env.login_settings".into(),
        env: Some(env.to_string()),
        subject: Some(env.to_string()),
        detail: json!({"login_url": settings.login_url, "consent_url": settings.consent_url}),
    })
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Checks login settings without writing them (see [`set_login_settings`]).
pub fn check_login_settings(
    settings: &keyward_store::LoginSettings,
) -> Result<(), crate::error::IssuerError> {
    for (what, u) in [
        ("login URL", &settings.login_url),
        ("consent URL", &settings.consent_url),
    ] {
        if let Some(u) = u {
            crate::clients::check_redirect_uri(what, u)?;
        }
    }
    if settings.login_url.is_none() && settings.consent_url.is_some() {
        return Err(crate::error::IssuerError::invalid(
            "a consent URL needs a login URL",
        ));
    }
    Ok(())
}

/// The login settings as JSON members of an environment.
pub fn settings_json(v: &mut Value, s: &keyward_store::LoginSettings) {
    v["login_url"] = json!(s.login_url);
    v["consent_url"] = json!(s.consent_url);
}

impl Authority {
    /// Deletes the login records nothing can use any more (see
    /// [`keyward_store::Tx::purge_login_records`]); run by the scheduler.
    pub async fn purge_login_records(&self) -> Result<u64, StoreError> {
        let mut tx = self.store.begin().await?;
        let n = tx.purge_login_records(self.now()).await?;
        tx.commit().await?;
        Ok(n)
    }
}

/// What the logout endpoint answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogoutAnswer {
    /// To the client's registered post-logout redirect URI.
    Redirect(String),
    /// A page saying the session ended.
    LoggedOut,
    /// Refused (nothing ended): shown, never redirected.
    ErrorPage(String),
    /// Nothing ended yet: the user is asked, with a form that posts
    /// `fields` back (the request's parameters and `logout_confirm`) and
    /// then goes to `target` (the checked post-logout redirect URI).
    Confirm {
        fields: Vec<(String, String)>,
        target: Option<String>,
    },
}

/// What a logout did with the browser's session.
enum SessionOutcome {
    /// There was none.
    NoSession,
    /// It ended.
    Ended,
    /// The user must confirm first (these fields post it back).
    Confirm(Vec<(String, String)>),
}

/// The value a logout confirmation must carry for the session cookie
/// `cookie`: only the browser holding the cookie can know it.
fn logout_token(cookie: &str) -> String {
    b64url(&sha256(format!("keyward logout\u{0}{cookie}").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_code_verifier(verifier));
        assert!(is_s256_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        // plain would compare the verifier itself: never accepted.
        assert!(!pkce_matches(verifier, verifier));
        assert!(!is_code_verifier("short"));
        assert!(!is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c="
        ));
    }

    #[test]
    fn replies_keep_the_registered_query() {
        let r = Reply {
            redirect_uri: "https://rp.example/cb?tenant=a".into(),
            mode: ResponseMode::Query,
            params: vec![
                ("code".into(), "x y".into()),
                ("state".into(), "s&t".into()),
            ],
        };
        assert_eq!(
            r.url(),
            "https://rp.example/cb?tenant=a&code=x+y&state=s%26t"
        );
    }

    #[test]
    fn scopes_release_their_claims_only() {
        let claims: Map<String, Value> = serde_json::from_value(json!({
            "name": "Alice", "email": "a@example.com", "email_verified": true,
            "phone_number": "+1", "custom": 1
        }))
        .unwrap();
        let scope = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            released_claims("alice", &claims, &scope(&["openid"])),
            json!({"sub": "alice"})
        );
        assert_eq!(
            released_claims("alice", &claims, &scope(&["openid", "email"])),
            json!({"sub": "alice", "email": "a@example.com", "email_verified": true})
        );
        assert_eq!(
            released_claims("alice", &claims, &scope(&["openid", "profile", "phone"])),
            json!({"sub": "alice", "name": "Alice", "phone_number": "+1"})
        );
    }
}
