//! The web console under `/console` (off unless the server's configuration
//! turns it on; `keyward up` does): server-rendered HTML (maud, escaped by
//! the engine), a small stylesheet, no script. Reads work without
//! JavaScript; so do actions (plain HTML forms).
//!
//! - **Login** with an admin token. The token is checked by the admin API's
//!   own lookup ([`AdminState::admin_for`]); the session lives in this
//!   replica's memory ([`session`]) and the browser holds only a random
//!   session id in a cookie that is `HttpOnly`, `SameSite=Strict`,
//!   `Path=/console`, `Secure` when the request came over https
//!   (`X-Forwarded-Proto: https` from a TLS-terminating proxy), and ends
//!   with the session (15 minutes idle, 1 hour at most).
//! - **CSRF**: every form carries the session's token and every POST
//!   without it (or with another) is refused with 403 before anything is
//!   read or changed; the login form carries one bound to a short-lived
//!   pre-login cookie. Actions are POST only.
//! - **Permissions**: every page and action is authorised by
//!   [`authorize`], the one place the console decides.
//! - **Handlers are thin**: they call the admin API's own operations
//!   ([`admin::rotate`], [`admin::retire`], [`admin::revoke`],
//!   [`admin::register_client`], [`admin::new_client_secret`],
//!   [`admin::remove_client`]), so a console action is audited and
//!   reloaded exactly as the API's is (actor `admin:<token id>`).
//! - **Headers**: a Content-Security-Policy without inline script or style,
//!   `frame-ancestors 'none'` and `X-Frame-Options: DENY`, `no-store` on
//!   every page, `nosniff`, no referrer.

mod pages;
mod rates;
mod session;
mod timeline;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use keyward_store::ClientAuth;
use maud::Markup;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::admin::{self, AdminAuth, AdminPrincipal, ApiError, EnvAction, Permission, Refusal};
use crate::authority::Authority;
use crate::clients::NewClient;
use crate::http::{declares_too_large, read_body, AppState, BodyRefused};
use crate::rotation;
use crate::tokens::hash_secret;
use pages::{Chrome, EnvRow};
use session::{Flash, Session, Sessions};

pub use session::{IDLE_SECS, MAX_SECS};

/// The session cookie's name.
pub const COOKIE: &str = "keyward_console";
/// The pre-login cookie's name (binds the login form's CSRF token).
pub const LOGIN_COOKIE: &str = "keyward_console_login";
/// How long a login form stays usable.
const LOGIN_FORM_SECS: i64 = 600;
/// Longest admin token accepted at login (as the admin API's bearer limit).
const MAX_TOKEN_LEN: usize = 512;
/// Audit records shown per page, and read at most to fill one.
const AUDIT_PAGE: usize = 100;
const AUDIT_SCAN: i64 = 20_000;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Clone)]
struct Console {
    authority: Arc<Authority>,
    auth: AdminAuth,
    sessions: Arc<Sessions>,
    rates: Arc<rates::Rates>,
    metrics: PrometheusHandle,
}

impl Console {
    fn sample_rates(&self) {
        self.rates
            .sample(Instant::now(), rates::parse(&self.metrics.render()));
    }
}

/// The console's routes, to merge into the application router. Samples the
/// token counters every [`rates::SAMPLE_EVERY`] while the router lives
/// (when built inside a Tokio runtime).
pub fn router(state: &AppState) -> Router {
    let c = Console {
        authority: state.authority.clone(),
        auth: AdminAuth::new(state.authority.clone()),
        sessions: Arc::new(Sessions::default()),
        rates: Arc::new(rates::Rates::default()),
        metrics: state.metrics.clone(),
    };
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&c.rates);
        let metrics = c.metrics.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(rates::SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let Some(r) = weak.upgrade() else { break };
                r.sample(Instant::now(), rates::parse(&metrics.render()));
            }
        });
    }
    let signed_in = Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/envs", get(envs))
        .route("/console/envs/{env}", get(env_page))
        .route("/console/envs/{env}/rotate", post(rotate))
        .route("/console/envs/{env}/keys/{kid}/retire", post(retire))
        .route("/console/envs/{env}/keys/{kid}/revoke", post(revoke))
        .route(
            "/console/envs/{env}/clients",
            get(clients).post(create_client),
        )
        .route(
            "/console/envs/{env}/clients/{client_id}/rotate-secret",
            post(rotate_secret),
        )
        .route(
            "/console/envs/{env}/clients/{client_id}/delete",
            post(delete_client),
        )
        .route("/console/audit", get(audit))
        .route("/console/health", get(health))
        .route("/console/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(c.clone(), signed_in));
    Router::new()
        .merge(signed_in)
        .route("/console/login", get(login_form).post(login))
        .route(pages::CSS_PATH, get(css))
        .layer(middleware::from_fn(security_headers))
        .with_state(c)
}

// ---------------------------------------------------------------------------
// Permissions: the one place the console decides

/// Who is signed in: the admin token of the session, with its grants.
#[derive(Clone, Debug)]
struct Principal {
    admin: AdminPrincipal,
}

/// What a console page or action needs. Each names the admin permission
/// (issue 18 §1) it stands for.
#[derive(Clone, Copy, Debug)]
enum Need<'a> {
    KeysRead(&'a str),
    KeysRotate(&'a str),
    KeysRetire(&'a str),
    KeysRevoke(&'a str),
    ClientsRead(&'a str),
    ClientsWrite(&'a str),
    AuditRead,
    HealthRead,
}

impl Need<'_> {
    /// The admin permission (issue 18 §1) it stands for.
    fn permission(&self) -> Permission {
        match *self {
            Need::KeysRead(e) => Permission::env(EnvAction::KeysRead, e),
            Need::KeysRotate(e) => Permission::env(EnvAction::KeysRotate, e),
            Need::KeysRetire(e) => Permission::env(EnvAction::KeysRetire, e),
            Need::KeysRevoke(e) => Permission::env(EnvAction::KeysRevoke, e),
            Need::ClientsRead(e) => Permission::env(EnvAction::ClientsRead, e),
            Need::ClientsWrite(e) => Permission::env(EnvAction::ClientsWrite, e),
            Need::AuditRead => Permission::Global(admin::permissions::AUDIT_READ),
            Need::HealthRead => Permission::Global(admin::permissions::HEALTH_READ),
        }
    }
}

/// Whether the signed-in administrator holds what `need` names (for
/// filtering what a page lists; refusals go through [`authorize`]).
fn may(who: &Principal, need: Need) -> bool {
    who.admin.may(&need.permission())
}

/// Every console page and action asks here, and only here: the admin
/// API's own check ([`AdminAuth::authorize`]), so a refusal is a 403 naming
/// the missing permission and is audited as `admin.denied`.
async fn authorize(c: &Console, cur: &Current, need: Need<'_>) -> Result<(), Problem> {
    c.auth
        .authorize(&cur.who.admin, &need.permission(), "console")
        .await
        .map_err(|d| {
            Problem::new(
                StatusCode::FORBIDDEN,
                format!("this needs the permission {}", d.permission),
            )
        })
}

// ---------------------------------------------------------------------------
// Responses

/// A refusal shown as a page: status and what was wrong.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    text: String,
}

impl Problem {
    fn new(status: StatusCode, text: impl Into<String>) -> Self {
        Problem {
            status,
            text: text.into(),
        }
    }

    fn bad(text: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, text)
    }
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Self {
        Problem::new(e.status, e.description)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        html(
            self.status,
            pages::problem(self.status.as_u16(), &self.text, &Chrome::NONE),
        )
    }
}

type PageResult = Result<Response, Problem>;

fn html(status: StatusCode, m: Markup) -> Response {
    let mut r = (status, m.into_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn css() -> Response {
    let mut r = pages::CSS.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r
}

// ---------------------------------------------------------------------------
// Cookies

/// The value of cookie `name` in the request (the first one), if short.
fn cookie<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Whether the browser reached us over https (through a proxy that says so).
fn over_https(h: &HeaderMap) -> bool {
    h.get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

fn set_cookie(r: &mut Response, name: &str, value: &str, path: &str, max_age: i64, secure: bool) {
    let v = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

// ---------------------------------------------------------------------------
// Sessions

/// The signed-in request's session, put in place by [`signed_in`].
#[derive(Clone)]
struct Current {
    cookie: String,
    session: Session,
    who: Principal,
}

impl Current {
    fn chrome(&self) -> Chrome<'_> {
        Chrome {
            session: Some((&self.session.admin_id, &self.session.csrf)),
            flash: self.session.flash.as_ref(),
        }
    }

    fn actor(&self) -> String {
        self.who.admin.actor()
    }
}

/// Lets a request through with its [`Current`] session, or sends the
/// browser to the login page (nothing read, nothing changed). A session
/// whose admin token was revoked ends here.
async fn signed_in(State(c): State<Console>, mut req: Request, next: Next) -> Response {
    if declares_too_large(req.headers()) {
        return Problem::new(
            BodyRefused::TooLarge.status(),
            BodyRefused::TooLarge.description(),
        )
        .into_response();
    }
    let Some(id) = cookie(req.headers(), COOKIE).map(str::to_string) else {
        return see_other("/console/login");
    };
    let is_get = req.method() == axum::http::Method::GET;
    let Some(session) = c.sessions.touch(&id, c.authority.now(), is_get) else {
        return see_other("/console/login");
    };
    match c
        .auth
        .authenticate_hash(&session.token_hash, "console")
        .await
    {
        Ok(admin) if admin.id == session.admin_id => {
            let who = Principal { admin };
            req.extensions_mut().insert(Current {
                cookie: id,
                session,
                who,
            });
            next.run(req).await
        }
        Err(Refusal::ServerError) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the store did not answer; try again",
        )
        .into_response(),
        // Revoked, expired, or another token under this hash: signed out.
        Ok(_) | Err(_) => {
            c.sessions.end(&id);
            see_other("/console/login")
        }
    }
}

// ---------------------------------------------------------------------------
// Forms

/// A POSTed form whose CSRF token matched the session's: its fields
/// (each at most once), the token taken out.
struct Form(Vec<(String, String)>);

impl Form {
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.swap_remove(i).1)
    }

    /// Refuses fields the handler does not know.
    fn done(self) -> Result<(), Problem> {
        match self.0.first() {
            None => Ok(()),
            Some((k, _)) => Err(Problem::bad(format!(
                "unknown form field {:?}",
                k.chars().take(40).collect::<String>()
            ))),
        }
    }
}

/// Reads an `application/x-www-form-urlencoded` body of bounded size,
/// strictly (the OAuth endpoints' parser).
async fn read_fields(req: Request) -> Result<Vec<(String, String)>, Problem> {
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a form must be sent as application/x-www-form-urlencoded",
        ));
    }
    let body = read_body(req.into_body())
        .await
        .map_err(|r| Problem::new(r.status(), r.description()))?;
    crate::oauth::parse_form(&body).map_err(|e| Problem::bad(e.description))
}

impl FromRequest<Console> for Form {
    type Rejection = Problem;

    async fn from_request(req: Request, _: &Console) -> Result<Self, Problem> {
        let Some(cur) = req.extensions().get::<Current>().cloned() else {
            return Err(Problem::new(StatusCode::UNAUTHORIZED, "not signed in"));
        };
        let mut form = Form(read_fields(req).await?);
        let sent = form.take("csrf");
        if !cur.session.csrf_matches(sent.as_deref()) {
            return Err(csrf_refused());
        }
        Ok(form)
    }
}

fn csrf_refused() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "the form's CSRF token is missing or wrong (the form is from another session or another site): nothing was changed; reload the page and try again",
    )
}

// ---------------------------------------------------------------------------
// Login and logout

async fn login_form(State(c): State<Console>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, COOKIE) {
        if c.sessions.touch(id, c.authority.now(), false).is_some() {
            return see_other("/console/envs");
        }
    }
    login_page(&headers, StatusCode::OK, None)
}

/// The login form with a fresh pre-login CSRF token (and its cookie).
fn login_page(headers: &HeaderMap, status: StatusCode, problem: Option<&str>) -> Response {
    let token = keyward_jose::crypto::random_text::<32>();
    let mut r = html(status, pages::login(&token, problem));
    set_cookie(
        &mut r,
        LOGIN_COOKIE,
        &token,
        "/console/login",
        LOGIN_FORM_SECS,
        over_https(headers),
    );
    r
}

async fn login(State(c): State<Console>, req: Request) -> Response {
    let headers = req.headers().clone();
    let fields = match read_fields(req).await {
        Ok(f) => f,
        Err(p) => return p.into_response(),
    };
    let mut form = Form(fields);
    let sent = form.take("csrf");
    let expected = cookie(&headers, LOGIN_COOKIE);
    let csrf_ok = match (sent.as_deref(), expected) {
        (Some(s), Some(e)) => keyward_jose::crypto::constant_time_eq(s.as_bytes(), e.as_bytes()),
        _ => false,
    };
    if !csrf_ok {
        return login_page(
            &headers,
            StatusCode::FORBIDDEN,
            Some("the login form expired or did not come from this console: try again"),
        );
    }
    let token = form.take("token").unwrap_or_default();
    if let Err(p) = form.done() {
        return p.into_response();
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return login_page(
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("the admin token is invalid, expired or revoked"),
        );
    }
    let hash = hash_secret(token);
    // Admin tokens only: the session keeps the token's hash and checks it
    // again at every request, which an SSO access token does not allow.
    if !token.starts_with(admin::auth::ADMIN_TOKEN_PREFIX) {
        return login_page(
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("the console takes an admin token (kwa_...)"),
        );
    }
    match c.auth.authenticate_hash(&hash, "POST /console/login").await {
        Ok(admin) => {
            let id = c.sessions.create(hash, admin.id, c.authority.now());
            let mut r = see_other("/console/envs");
            let secure = over_https(&headers);
            set_cookie(&mut r, COOKIE, &id, "/console", MAX_SECS, secure);
            set_cookie(&mut r, LOGIN_COOKIE, "", "/console/login", 0, secure);
            r
        }
        Err(Refusal::ServerError) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the store did not answer; try again",
        )
        .into_response(),
        Err(_) => login_page(
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("the admin token is invalid, expired or revoked"),
        ),
    }
}

async fn logout(
    State(c): State<Console>,
    Extension(cur): Extension<Current>,
    headers: HeaderMap,
    form: Form,
) -> PageResult {
    form.done()?;
    c.sessions.end(&cur.cookie);
    let mut r = see_other("/console/login");
    set_cookie(&mut r, COOKIE, "", "/console", 0, over_https(&headers));
    Ok(r)
}

// ---------------------------------------------------------------------------
// Pages

async fn home() -> Response {
    see_other("/console/envs")
}

/// Path parameters, with a console refusal when they do not decode.
struct Params<T>(T);

impl<T> axum::extract::FromRequestParts<Console> for Params<T>
where
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &Console,
    ) -> Result<Self, Problem> {
        Path::<T>::from_request_parts(parts, s)
            .await
            .map(|Path(v)| Params(v))
            .map_err(|e| Problem::bad(e.body_text()))
    }
}

async fn envs(State(c): State<Console>, Extension(cur): Extension<Current>) -> PageResult {
    let a = &c.authority;
    let now = a.now();
    let all = a.store.environments().await.map_err(ApiError::from_store)?;
    let mut shown = Vec::new();
    for e in all {
        // Only the environments whose keys this admin may read.
        if may(&cur.who, Need::KeysRead(&e.name)) {
            let keys = a.store.keys(&e.name).await.map_err(ApiError::from_store)?;
            shown.push((e, keys));
        }
    }
    let rows: Vec<EnvRow> = shown
        .iter()
        .map(|(e, keys)| EnvRow {
            env: e,
            signing: rotation::signing_key(keys, now),
            next_rotation: rotation::next_rotation(&e.policy, keys, now),
            keys: keys.len(),
        })
        .collect();
    Ok(html(StatusCode::OK, pages::envs(&rows, now, &cur.chrome())))
}

async fn env_page(
    State(c): State<Console>,
    Extension(cur): Extension<Current>,
    Params(env): Params<String>,
) -> PageResult {
    authorize(&c, &cur, Need::KeysRead(&env)).await?;
    let a = &c.authority;
    let e = a
        .store
        .environment(&env)
        .await
        .map_err(ApiError::from_store)?;
    let mut keys = a.store.keys(&env).await.map_err(ApiError::from_store)?;
    let now = a.now();
    keys.sort_by_key(|k| std::cmp::Reverse((k.created_at, k.activates_at)));
    let page = pages::EnvPage {
        env: &e,
        keys: &keys,
        timeline: timeline::svg(&keys, &e.policy, now),
        next_rotation: rotation::next_rotation(&e.policy, &keys, now),
        now,
    };
    Ok(html(StatusCode::OK, pages::env(&page, &cur.chrome())))
}

/// After an action: a message on the next page, and there.
fn done(c: &Console, cur: &Current, text: String, to: &str) -> Response {
    c.sessions.flash(&cur.cookie, Flash { ok: true, text });
    see_other(to)
}

async fn rotate(
    State(c): State<Console>,
    Extension(cur): Extension<Current>,
    Params(env): Params<String>,
    mut form: Form,
) -> PageResult {
    authorize(&c, &cur, Need::KeysRotate(&env)).await?;
    let immediate = match form.take("schedule").as_deref() {
        None | Some("lead") => false,
        Some("immediate") => true,
        Some(_) => return Err(Problem::bad("schedule is lead or immediate")),
    };
    form.done()?;
    let req = admin::RotateKey {
        immediate,
        ..Default::default()
    };
    let added = admin::rotate(&c.authority, &cur.actor(), &env, req).await?;
    let text = format!(
        "Rotated: key {} is published and signs from {}",
        added.key.kid,
        crate::fmt_time(added.key.activates_at)
    );
    Ok(done(&c, &cur, text, &format!("/console/envs/{env}")))
}

/// The key `kid` of environment `env` (404 when it is another's).
async fn key_of(c: &Console, env: &str, kid: &str) -> Result<keyward_store::KeyRecord, Problem> {
    let k = c
        .authority
        .store
        .key(kid)
        .await
        .map_err(ApiError::from_store)?;
    if k.env != env {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!("key {kid:?} is not a key of environment {env:?}"),
        ));
    }
    Ok(k)
}

async fn retire(
    State(c): State<Console>,
    Extension(cur): Extension<Current>,
    Params((env, kid)): Params<(String, String)>,
    form: Form,
) -> PageResult {
    authorize(&c, &cur, Need::KeysRetire(&env)).await?;
    form.done()?;
    key_of(&c, &env, &kid).await?;
    let (rec, now) = admin::retire(
        &c.authority,
        &cur.actor(),
        &kid,
        admin::RetireKey::default(),
    )
    .await?;
    let text = format!("Key {} is {}", rec.kid, rec.state(now).name());
    Ok(done(&c, &cur, text, &format!("/console/envs/{env}")))
}

async fn revoke(
    State(c): State<Console>,
    Extension(cur): Extension<Current>,
    Params((env, kid)): Params<(String, String)>,
    mut form: Form,
) -> PageResult {
    authorize(&c, &cur, Need::KeysRevoke(&env)).await?;
    let confirm = form.take("confirm").unwrap_or_default();
    let reason = form.take("reason").filter(|r| !r.trim().is_empty());
    form.done()?;
    // The typed confirmation: the kid itself, exactly.
    if confirm != kid {
        return Err(Problem::bad(format!(
            "to revoke key {kid}, type its kid exactly in the confirmation field: nothing was changed"
        )));
    }
    key_of(&c, &env, &kid).await?;
    let (rec, was_signing, now) = admin::revoke(
        &c.authority,
        &cur.actor(),
        &kid,
        admin::RevokeKey { reason },
    )
    .await?;
    let text = format!(
        "Key {} is {}{}",
        rec.kid,
        rec.state(now).name(),
        if was_signing {
            ": it was signing; the environment's next key signs now"
        } else {
            ""
        }
    );
    Ok(done(&c, &cur, text, &format!("/console/envs/{env}")))
}

async fn clients(
    State(c): State<Console>,
    Extension(cur): Extension<Current>,
    Params(env): Params<String>,
) -> PageResult {
    authorize(&c, &cur, Need::ClientsRead(&env)).await?;
    let a = &c.authority;
    // An unknown environment is a 404, not an empty list.
    a.store
        .environment(&env)
        .await
        .map_err(ApiError::from_store)?;
    let list = a.store.clients(&env).await.map_err(ApiError::from_store)?;
    Ok(html(
        StatusCode::OK,
        pages::clients(&env, &list, &cur.chrome()),
    ))
}

fn words(v: Option<String>) -> Vec<String> {
    v.unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

async fn create_client(
    State(c): State<Console>,
    Extension(cur): Extension<Current>,
    Params(env): Params<String>,
    mut form: Form,
) -> PageResult {
    authorize(&c, &cur, Need::ClientsWrite(&env)).await?;
    let name = form.take("name").unwrap_or_default();
    let auth = match form.take("auth").as_deref() {
        None | Some("client_secret_basic") => ClientAuth::ClientSecretBasic,
        Some("client_secret_post") => ClientAuth::ClientSecretPost,
        Some(_) => {
            return Err(Problem::bad(
                "auth is client_secret_basic or client_secret_post (private_key_jwt clients are made with the CLI or the admin API)",
            ))
        }
    };
    let scopes = words(form.take("scopes"));
    let audiences = words(form.take("audiences"));
    let mut grant_types = Vec::new();
    for g in ["client_credentials", "refresh_token"] {
        match form.take(g).as_deref() {
            None => {}
            Some("on") => grant_types.push(g.to_string()),
            Some(_) => return Err(Problem::bad(format!("{g} is a checkbox"))),
        }
    }
    form.done()?;
    let new = NewClient {
        env: env.clone(),
        name,
        auth,
        scopes,
        audiences,
        grant_types,
        jwks: None,
        jwks_uri: None,
        access_token_ttl_secs: None,
        refresh_token_ttl_secs: None,
        dpop_bound_access_tokens: false,
        mtls: Default::default(),
        login: Default::default(),
        exchange_issuers: Vec::new(),
    };
    let reg = admin::register_client(&c.authority, &cur.actor(), new).await?;
    let secret = reg.secret.unwrap_or_default();
    let m = pages::secret(
        &env,
        &reg.client.client_id,
        &reg.client.name,
        &secret,
        &cur.chrome(),
    );
    Ok(html(StatusCode::CREATED, m))
}

async fn rotate_secret(
    State(c): State<Console>,
    Extension(cur): Extension<Current>,
    Params((env, client_id)): Params<(String, String)>,
    form: Form,
) -> PageResult {
    authorize(&c, &cur, Need::ClientsWrite(&env)).await?;
    form.done()?;
    let client = c
        .authority
        .store
        .client(&env, &client_id)
        .await
        .map_err(ApiError::from_store)?;
    let secret = admin::new_client_secret(&c.authority, &cur.actor(), &env, &client_id).await?;
    let m = pages::secret(&env, &client_id, &client.name, &secret, &cur.chrome());
    Ok(html(StatusCode::OK, m))
}

async fn delete_client(
    State(c): State<Console>,
    Extension(cur): Extension<Current>,
    Params((env, client_id)): Params<(String, String)>,
    form: Form,
) -> PageResult {
    authorize(&c, &cur, Need::ClientsWrite(&env)).await?;
    form.done()?;
    admin::remove_client(&c.authority, &cur.actor(), &env, &client_id).await?;
    let text = format!("Client {client_id} deleted (its refresh tokens are revoked)");
    Ok(done(
        &c,
        &cur,
        text,
        &format!("/console/envs/{env}/clients"),
    ))
}

/// Parses a filter time: RFC 3339 (`Z` or no zone: UTC), or a date.
fn filter_time(name: &str, v: &str) -> Result<Option<i64>, Problem> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let text = if v.len() == 10 {
        format!("{v}T00:00:00Z")
    } else {
        v.to_string()
    };
    humantime::parse_rfc3339_weak(&text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Some(d.as_secs() as i64))
        .ok_or_else(|| {
            Problem::bad(format!(
                "{name} is a UTC time like 2026-01-31T12:00:00Z or a date like 2026-01-31"
            ))
        })
}

async fn audit(
    State(c): State<Console>,
    Extension(cur): Extension<Current>,
    RawQuery(query): RawQuery,
) -> PageResult {
    authorize(&c, &cur, Need::AuditRead).await?;
    let mut f = pages::AuditFilter::default();
    let mut before: Option<i64> = None;
    let mut seen = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        if seen.contains(&k) {
            return Err(Problem::bad(format!("{k} is given more than once")));
        }
        let v = v.chars().take(200).collect::<String>();
        match k.as_ref() {
            "action" => f.action = v,
            "env" => f.env = v,
            "since" => f.since = v,
            "until" => f.until = v,
            "before" => {
                before = Some(
                    v.parse::<i64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| Problem::bad("before is a record number"))?,
                )
            }
            other => return Err(Problem::bad(format!("unknown filter {other:?}"))),
        }
        seen.push(k);
    }
    let since = filter_time("since", &f.since)?;
    let until = filter_time("until", &f.until)?;
    let store = &c.authority.store;
    let report = store.verify_audit().await.map_err(ApiError::from_store)?;
    let matches = |r: &keyward_store::AuditRecord| {
        (f.action.is_empty() || r.action.starts_with(f.action.trim()))
            && (f.env.is_empty() || r.env.as_deref() == Some(f.env.trim()))
            && since.is_none_or(|s| r.at >= s)
            && until.is_none_or(|u| r.at <= u)
    };
    // Newest first: read backwards in chunks until the page is full.
    let mut hi = before.unwrap_or(i64::MAX).min(report.length + 1);
    let floor = (hi - AUDIT_SCAN).max(1);
    let mut found = Vec::new();
    let mut more = false;
    while hi > floor {
        let lo = (hi - 500).max(floor);
        let chunk = store
            .audit(lo - 1, hi - lo)
            .await
            .map_err(ApiError::from_store)?;
        for r in chunk.into_iter().rev() {
            if matches(&r) {
                if found.len() == AUDIT_PAGE {
                    more = true;
                    break;
                }
                found.push(r);
            }
        }
        if more {
            break;
        }
        hi = lo;
    }
    // More to look at: the next page starts below the last record shown
    // (or below what this page scanned).
    let next_before = match (more, found.last()) {
        (true, Some(last)) => Some(last.seq),
        _ if hi > 1 && hi == floor => Some(floor),
        _ => None,
    };
    let older = next_before.map(|b| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("action", &f.action),
            ("env", &f.env),
            ("since", &f.since),
            ("until", &f.until),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        q.append_pair("before", &b.to_string());
        q.finish()
    });
    let page = pages::AuditPage {
        report: &report,
        filter: &f,
        records: &found,
        older,
    };
    Ok(html(StatusCode::OK, pages::audit(&page, &cur.chrome())))
}

async fn health(State(c): State<Console>, Extension(cur): Extension<Current>) -> PageResult {
    authorize(&c, &cur, Need::HealthRead).await?;
    let a = &c.authority;
    let r = crate::http::readiness(a).await;
    let now = a.now();
    let faults = a.device_faults();
    let snapshot = a.snapshot();
    let signers: Vec<pages::SignerRow> = snapshot
        .envs
        .iter()
        .map(|e| {
            let key = rotation::signing_key(&e.keys, now);
            let fault = faults.iter().find(|(env, _)| *env == e.env.name);
            let problem = match (key, fault) {
                (_, Some((_, f))) => Some(format!(
                    "cannot sign: the {} key store fails ({}) since {}",
                    f.store,
                    f.reason,
                    crate::fmt_time(f.since)
                )),
                (None, None) if e.keys.is_empty() => Some("no key yet".into()),
                (None, None) => Some("no signing key".into()),
                (Some(_), None) if e.signer(now).is_none() => {
                    Some("its signing key cannot be opened".into())
                }
                _ => None,
            };
            pages::SignerRow {
                env: e.env.name.clone(),
                signing: key.map(|k| (k.kid.clone(), k.alg.name(), k.key_store().as_str())),
                problem,
            }
        })
        .collect();
    c.sample_rates();
    let page = pages::HealthPage {
        ready: r.ready,
        lines: &r.lines,
        signers: &signers,
        rates: c.rates.measure(),
    };
    Ok(html(StatusCode::OK, pages::health(&page, &cur.chrome())))
}
