//! What browser logins (the authorization code flow, issue 17) keep:
//!
//! - an environment's [`LoginSettings`]: where keyward sends the browser to
//!   log in and to consent;
//! - **browser sessions** ([`BrowserSession`]): keyward's own session
//!   with a browser (cookie `keyward_session`), who logged in in it and
//!   when; its public id `sid` goes into ID tokens;
//! - **login and consent requests** ([`LoginRequest`]): a challenge the
//!   login app reads and decides once, then a verifier the browser brings
//!   back once, in the session that started it;
//! - **remembered consents** ([`Consent`]) per subject and client;
//! - **authorization codes** ([`AuthorizationCode`]): single use, and what
//!   their exchange issued, so a replay can revoke it.
//!
//! Every secret (cookie, challenge, verifier, code) is stored only as its
//! SHA-256. Nothing here moves [`Store::generation`] except the login
//! settings (an environment's configuration).
//!
//! Single use is enforced by the database, not by a read-then-write: a
//! decision and a verifier's use are conditional `UPDATE`s that only one
//! transaction can make; a code is read `FOR UPDATE` (PostgreSQL; SQLite's
//! `BEGIN IMMEDIATE` already serializes writers) before it is marked used.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor};

use crate::error::StoreError;
use crate::records::Timestamp;
use crate::store::{get, Backend, Store, Tx};
use keyward_jose::crypto::hex;

/// Where an environment sends browsers to log in and consent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginSettings {
    /// `{login_url}?login_challenge=...`; `None`: the environment serves no
    /// browser login (its authorization endpoint answers with an error).
    pub login_url: Option<String>,
    /// `{consent_url}?consent_challenge=...`; `None`: the login URL.
    pub consent_url: Option<String>,
}

impl LoginSettings {
    /// The consent URL in effect (the login URL when none is set).
    pub fn effective_consent_url(&self) -> Option<&str> {
        self.consent_url.as_deref().or(self.login_url.as_deref())
    }
}

/// keyward's session with one browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserSession {
    /// SHA-256 of the cookie value.
    pub session_hash: Vec<u8>,
    pub env: String,
    /// Public session id (the ID token's `sid`).
    pub sid: String,
    /// Who logged in in this session, when one did.
    pub subject: Option<String>,
    pub auth_time: Option<Timestamp>,
    pub acr: Option<String>,
    pub amr: Vec<String>,
    /// JSON object text: the claims the login app supplied.
    pub claims: Option<String>,
    /// Until when a later authorization request may skip the login.
    pub remember_until: Option<Timestamp>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub ended_at: Option<Timestamp>,
}

/// What a login accepted: written into the browser session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionLogin {
    pub subject: String,
    pub auth_time: Timestamp,
    pub acr: Option<String>,
    pub amr: Vec<String>,
    /// JSON object text.
    pub claims: String,
    pub remember_until: Option<Timestamp>,
}

/// A login or a consent request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Login,
    Consent,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Login => "login",
            RequestKind::Consent => "consent",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "login" => Ok(RequestKind::Login),
            "consent" => Ok(RequestKind::Consent),
            _ => Err(StoreError::Corrupt(format!(
                "login request: unknown kind {s:?}"
            ))),
        }
    }
}

/// A login or consent challenge in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRequest {
    /// SHA-256 of the challenge.
    pub challenge_hash: Vec<u8>,
    pub kind: RequestKind,
    pub env: String,
    pub client_id: String,
    /// The browser session that started it.
    pub session_hash: Vec<u8>,
    /// JSON text: the validated authorization request.
    pub request: String,
    /// Consent: who logged in; login: the session's subject when `skip`.
    pub subject: Option<String>,
    /// JSON text: how the subject logged in (consent requests).
    pub login: Option<String>,
    /// The login app may skip asking (the session already satisfies it).
    pub skip: bool,
    pub created_at: Timestamp,
    /// The challenge is refused after this; once decided, the verifier is.
    pub expires_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    /// JSON text: what the login app decided.
    pub outcome: Option<String>,
    pub verifier_hash: Option<Vec<u8>>,
    pub verified_at: Option<Timestamp>,
}

/// A decision on a request: what [`Tx::decide_login_request`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// JSON text.
    pub outcome: String,
    pub verifier_hash: Vec<u8>,
    /// Until when the verifier may be brought back.
    pub verifier_expires_at: Timestamp,
}

/// A consent remembered for a subject and client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    pub env: String,
    pub subject: String,
    pub client_id: String,
    pub scope: Vec<String>,
    pub granted_at: Timestamp,
    /// `None`: until revoked.
    pub expires_at: Option<Timestamp>,
}

/// An authorization code (RFC 6749 §4.1.2), stored as its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationCode {
    pub code_hash: Vec<u8>,
    pub env: String,
    pub client_id: String,
    pub redirect_uri: String,
    /// The S256 `code_challenge` (RFC 7636).
    pub code_challenge: String,
    pub nonce: Option<String>,
    /// Granted scopes.
    pub scope: Vec<String>,
    pub subject: String,
    pub auth_time: Timestamp,
    pub acr: Option<String>,
    pub amr: Vec<String>,
    pub sid: String,
    /// JSON object text: userinfo claims.
    pub claims: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
    /// What its exchange issued: the access token ...
    pub access_jti: Option<String>,
    pub access_exp: Option<Timestamp>,
    /// ... and the refresh-token family, if one was issued.
    pub family_id: Option<String>,
}

const SESSION_COLUMNS: &str = "session_hash, env, sid, subject, auth_time, acr, amr, claims, \
     remember_until, created_at, expires_at, ended_at";
const REQUEST_COLUMNS: &str = "challenge_hash, kind, env, client_id, session_hash, request, \
     subject, login, skip, created_at, expires_at, decided_at, outcome, verifier_hash, verified_at";
const CODE_COLUMNS: &str =
    "code_hash, env, client_id, redirect_uri, code_challenge, nonce, scope, \
     subject, auth_time, acr, amr, sid, claims, issued_at, expires_at, used_at, access_jti, \
     access_exp, family_id";

fn json_list(what: &str, text: Option<String>) -> Result<Vec<String>, StoreError> {
    match text {
        None => Ok(Vec::new()),
        Some(t) => serde_json::from_str(&t)
            .map_err(|_| StoreError::Corrupt(format!("{what}: not a JSON list of strings"))),
    }
}

fn to_json_list(v: &[String]) -> String {
    serde_json::to_string(v).expect("strings serialize")
}

fn session_from_row(row: &AnyRow) -> Result<BrowserSession, StoreError> {
    Ok(BrowserSession {
        session_hash: get(row, "session_hash")?,
        env: get(row, "env")?,
        sid: get(row, "sid")?,
        subject: get(row, "subject")?,
        auth_time: get(row, "auth_time")?,
        acr: get(row, "acr")?,
        amr: json_list("browser session amr", get(row, "amr")?)?,
        claims: get(row, "claims")?,
        remember_until: get(row, "remember_until")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        ended_at: get(row, "ended_at")?,
    })
}

fn request_from_row(row: &AnyRow) -> Result<LoginRequest, StoreError> {
    Ok(LoginRequest {
        challenge_hash: get(row, "challenge_hash")?,
        kind: RequestKind::parse(&get::<String>(row, "kind")?)?,
        env: get(row, "env")?,
        client_id: get(row, "client_id")?,
        session_hash: get(row, "session_hash")?,
        request: get(row, "request")?,
        subject: get(row, "subject")?,
        login: get(row, "login")?,
        skip: get::<i64>(row, "skip")? != 0,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        decided_at: get(row, "decided_at")?,
        outcome: get(row, "outcome")?,
        verifier_hash: get(row, "verifier_hash")?,
        verified_at: get(row, "verified_at")?,
    })
}

fn code_from_row(row: &AnyRow) -> Result<AuthorizationCode, StoreError> {
    let scope: String = get(row, "scope")?;
    Ok(AuthorizationCode {
        code_hash: get(row, "code_hash")?,
        env: get(row, "env")?,
        client_id: get(row, "client_id")?,
        redirect_uri: get(row, "redirect_uri")?,
        code_challenge: get(row, "code_challenge")?,
        nonce: get(row, "nonce")?,
        scope: scope.split_whitespace().map(str::to_owned).collect(),
        subject: get(row, "subject")?,
        auth_time: get(row, "auth_time")?,
        acr: get(row, "acr")?,
        amr: json_list("authorization code amr", Some(get(row, "amr")?))?,
        sid: get(row, "sid")?,
        claims: get(row, "claims")?,
        issued_at: get(row, "issued_at")?,
        expires_at: get(row, "expires_at")?,
        used_at: get(row, "used_at")?,
        access_jti: get(row, "access_jti")?,
        access_exp: get(row, "access_exp")?,
        family_id: get(row, "family_id")?,
    })
}

fn short(hash: &[u8]) -> String {
    hex(&hash[..hash.len().min(8)])
}

async fn fetch_session<'c, E>(ex: E, hash: &[u8]) -> Result<Option<BrowserSession>, StoreError>
where
    E: Executor<'c, Database = Any>,
{
    let sql = format!("SELECT {SESSION_COLUMNS} FROM browser_sessions WHERE session_hash = $1");
    let row = sqlx::query(&sql)
        .bind(hash.to_vec())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(session_from_row).transpose()
}

async fn fetch_request<'c, E>(ex: E, hash: &[u8]) -> Result<Option<LoginRequest>, StoreError>
where
    E: Executor<'c, Database = Any>,
{
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM login_requests WHERE challenge_hash = $1");
    let row = sqlx::query(&sql)
        .bind(hash.to_vec())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(request_from_row).transpose()
}

impl Store {
    /// Environment `env`'s login settings; `NotFound` if there is no such
    /// environment.
    pub async fn login_settings(&self, env: &str) -> Result<LoginSettings, StoreError> {
        let row = sqlx::query("SELECT login_url, consent_url FROM environments WHERE name = $1")
            .bind(env.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "environment",
                name: env.to_owned(),
            })?;
        Ok(LoginSettings {
            login_url: get(&row, "login_url")?,
            consent_url: get(&row, "consent_url")?,
        })
    }

    /// A browser session by the hash of its cookie.
    pub async fn browser_session(&self, hash: &[u8]) -> Result<Option<BrowserSession>, StoreError> {
        fetch_session(&self.pool, hash).await
    }

    /// A browser session by its public id.
    pub async fn browser_session_by_sid(
        &self,
        env: &str,
        sid: &str,
    ) -> Result<Option<BrowserSession>, StoreError> {
        let sql =
            format!("SELECT {SESSION_COLUMNS} FROM browser_sessions WHERE env = $1 AND sid = $2");
        let row = sqlx::query(&sql)
            .bind(env.to_owned())
            .bind(sid.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// A login or consent request by the hash of its challenge.
    pub async fn login_request(&self, hash: &[u8]) -> Result<Option<LoginRequest>, StoreError> {
        fetch_request(&self.pool, hash).await
    }

    /// The consent remembered for `subject` and `client_id` in `env`.
    pub async fn consent(
        &self,
        env: &str,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<Consent>, StoreError> {
        let row = sqlx::query(
            "SELECT scope, granted_at, expires_at FROM consents \
             WHERE env = $1 AND subject = $2 AND client_id = $3",
        )
        .bind(env.to_owned())
        .bind(subject.to_owned())
        .bind(client_id.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let scope: String = get(&row, "scope")?;
        Ok(Some(Consent {
            env: env.to_owned(),
            subject: subject.to_owned(),
            client_id: client_id.to_owned(),
            scope: scope.split_whitespace().map(str::to_owned).collect(),
            granted_at: get(&row, "granted_at")?,
            expires_at: get(&row, "expires_at")?,
        }))
    }

    /// An authorization code by its hash (read only; see
    /// [`Tx::authorization_code_for_update`]).
    pub async fn authorization_code(
        &self,
        hash: &[u8],
    ) -> Result<Option<AuthorizationCode>, StoreError> {
        let sql = format!("SELECT {CODE_COLUMNS} FROM authorization_codes WHERE code_hash = $1");
        let row = sqlx::query(&sql)
            .bind(hash.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(code_from_row).transpose()
    }

    /// The userinfo claims (JSON object text) the login behind access
    /// token `jti` of `env` supplied: the code whose exchange issued it, or
    /// whose refresh family issued it. `None` for a token not issued
    /// through a login.
    pub async fn userinfo_claims(
        &self,
        env: &str,
        jti: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT claims FROM authorization_codes WHERE env = $1 AND access_jti = $2 \
             UNION ALL \
             SELECT c.claims AS claims FROM refresh_tokens r \
             JOIN authorization_codes c ON c.env = r.env AND c.family_id = r.family_id \
             WHERE r.env = $3 AND r.access_jti = $4 LIMIT 1",
        )
        .bind(env.to_owned())
        .bind(jti.to_owned())
        .bind(env.to_owned())
        .bind(jti.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| get(&r, "claims")).transpose()
    }

    /// How many authorization codes `client_id` of `env` has (tests and
    /// operators: "nothing was issued").
    pub async fn count_authorization_codes(
        &self,
        env: &str,
        client_id: &str,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM authorization_codes WHERE env = $1 AND client_id = $2",
        )
        .bind(env.to_owned())
        .bind(client_id.to_owned())
        .fetch_one(&self.pool)
        .await?;
        get(&row, "n")
    }
}

impl Tx<'_> {
    /// Sets environment `env`'s login settings; `NotFound` if absent.
    /// Moves the change counter (servers reload it).
    pub async fn set_login_settings(
        &mut self,
        env: &str,
        s: &LoginSettings,
    ) -> Result<(), StoreError> {
        self.writer_lock().await?;
        let done =
            sqlx::query("UPDATE environments SET login_url = $1, consent_url = $2 WHERE name = $3")
                .bind(s.login_url.clone())
                .bind(s.consent_url.clone())
                .bind(env.to_owned())
                .execute(&mut *self.tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "environment",
                name: env.to_owned(),
            });
        }
        self.bump_generation().await
    }

    /// Stores a new browser session; `Conflict` if its hash or sid exists.
    pub async fn insert_browser_session(&mut self, s: &BrowserSession) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO browser_sessions ({SESSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        sqlx::query(&sql)
            .bind(s.session_hash.clone())
            .bind(s.env.clone())
            .bind(s.sid.clone())
            .bind(s.subject.clone())
            .bind(s.auth_time)
            .bind(s.acr.clone())
            .bind((!s.amr.is_empty()).then(|| to_json_list(&s.amr)))
            .bind(s.claims.clone())
            .bind(s.remember_until)
            .bind(s.created_at)
            .bind(s.expires_at)
            .bind(s.ended_at)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                if crate::error::is_unique_violation(&e) {
                    StoreError::Conflict {
                        what: "browser session",
                        name: short(&s.session_hash),
                    }
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    /// A browser session, as this transaction sees it.
    pub async fn browser_session(
        &mut self,
        hash: &[u8],
    ) -> Result<Option<BrowserSession>, StoreError> {
        fetch_session(&mut *self.tx, hash).await
    }

    /// Records a login in a live session (not ended), and renews its
    /// secret: from now on the session is found by `new_hash` only (a
    /// cookie value planted before the login is worth nothing after it),
    /// and the session's pending requests follow it. `NotFound` otherwise.
    pub async fn set_session_login(
        &mut self,
        hash: &[u8],
        new_hash: &[u8],
        login: &SessionLogin,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE browser_sessions SET subject = $1, auth_time = $2, acr = $3, amr = $4, \
             claims = $5, remember_until = $6, session_hash = $7 \
             WHERE session_hash = $8 AND ended_at IS NULL",
        )
        .bind(login.subject.clone())
        .bind(login.auth_time)
        .bind(login.acr.clone())
        .bind(to_json_list(&login.amr))
        .bind(login.claims.clone())
        .bind(login.remember_until)
        .bind(new_hash.to_vec())
        .bind(hash.to_vec())
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "browser session",
                name: short(hash),
            });
        }
        sqlx::query("UPDATE login_requests SET session_hash = $1 WHERE session_hash = $2")
            .bind(new_hash.to_vec())
            .bind(hash.to_vec())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Ends session `sid` of `env` at `at`; true if it was live.
    pub async fn end_browser_session(
        &mut self,
        env: &str,
        sid: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE browser_sessions SET ended_at = $1 \
             WHERE env = $2 AND sid = $3 AND ended_at IS NULL",
        )
        .bind(at)
        .bind(env.to_owned())
        .bind(sid.to_owned())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Stores a new login or consent request; `Conflict` if its challenge
    /// hash exists.
    pub async fn insert_login_request(&mut self, r: &LoginRequest) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO login_requests ({REQUEST_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        );
        sqlx::query(&sql)
            .bind(r.challenge_hash.clone())
            .bind(r.kind.as_str())
            .bind(r.env.clone())
            .bind(r.client_id.clone())
            .bind(r.session_hash.clone())
            .bind(r.request.clone())
            .bind(r.subject.clone())
            .bind(r.login.clone())
            .bind(i64::from(r.skip))
            .bind(r.created_at)
            .bind(r.expires_at)
            .bind(r.decided_at)
            .bind(r.outcome.clone())
            .bind(r.verifier_hash.clone())
            .bind(r.verified_at)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                if crate::error::is_unique_violation(&e) {
                    StoreError::Conflict {
                        what: "login request",
                        name: short(&r.challenge_hash),
                    }
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    /// Decides request `challenge_hash` of kind `kind` at `at`: true if it
    /// was decided now; false if it is unknown, of another kind, already
    /// decided or expired (one decision, ever: a conditional `UPDATE`).
    pub async fn decide_login_request(
        &mut self,
        challenge_hash: &[u8],
        kind: RequestKind,
        d: &Decision,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE login_requests SET decided_at = $1, outcome = $2, verifier_hash = $3, \
             expires_at = $4 \
             WHERE challenge_hash = $5 AND kind = $6 AND decided_at IS NULL AND expires_at > $7",
        )
        .bind(at)
        .bind(d.outcome.clone())
        .bind(d.verifier_hash.clone())
        .bind(d.verifier_expires_at)
        .bind(challenge_hash.to_vec())
        .bind(kind.as_str())
        .bind(at)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Uses the verifier whose hash is `verifier_hash` (of a decided
    /// request of kind `kind`, not expired) at `at`, and returns its
    /// request; `None` if there is none, or it was used already (once,
    /// ever: a conditional `UPDATE`). The caller checks the session.
    pub async fn use_login_verifier(
        &mut self,
        verifier_hash: &[u8],
        kind: RequestKind,
        at: Timestamp,
    ) -> Result<Option<LoginRequest>, StoreError> {
        let sql = format!(
            "UPDATE login_requests SET verified_at = $1 \
             WHERE verifier_hash = $2 AND kind = $3 AND verified_at IS NULL \
             AND decided_at IS NOT NULL AND expires_at > $4 \
             RETURNING {REQUEST_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(at)
            .bind(verifier_hash.to_vec())
            .bind(kind.as_str())
            .bind(at)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(request_from_row).transpose()
    }

    /// Remembers (or replaces) the consent of `c.subject` to `c.client_id`.
    pub async fn remember_consent(&mut self, c: &Consent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO consents (env, subject, client_id, scope, granted_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (env, subject, client_id) \
             DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at, \
             expires_at = excluded.expires_at",
        )
        .bind(c.env.clone())
        .bind(c.subject.clone())
        .bind(c.client_id.clone())
        .bind(c.scope.join(" "))
        .bind(c.granted_at)
        .bind(c.expires_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Stores a new authorization code; `Conflict` if its hash exists.
    pub async fn insert_authorization_code(
        &mut self,
        c: &AuthorizationCode,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO authorization_codes ({CODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
             $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        );
        sqlx::query(&sql)
            .bind(c.code_hash.clone())
            .bind(c.env.clone())
            .bind(c.client_id.clone())
            .bind(c.redirect_uri.clone())
            .bind(c.code_challenge.clone())
            .bind(c.nonce.clone())
            .bind(c.scope.join(" "))
            .bind(c.subject.clone())
            .bind(c.auth_time)
            .bind(c.acr.clone())
            .bind(to_json_list(&c.amr))
            .bind(c.sid.clone())
            .bind(c.claims.clone())
            .bind(c.issued_at)
            .bind(c.expires_at)
            .bind(c.used_at)
            .bind(c.access_jti.clone())
            .bind(c.access_exp)
            .bind(c.family_id.clone())
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                if crate::error::is_unique_violation(&e) {
                    StoreError::Conflict {
                        what: "authorization code",
                        name: short(&c.code_hash),
                    }
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    /// An authorization code by hash, for the transaction that exchanges
    /// it: on PostgreSQL its row is locked until the transaction ends, so
    /// of two concurrent exchanges the second sees the first's use.
    pub async fn authorization_code_for_update(
        &mut self,
        hash: &[u8],
    ) -> Result<Option<AuthorizationCode>, StoreError> {
        let lock = if self.backend == Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let sql =
            format!("SELECT {CODE_COLUMNS} FROM authorization_codes WHERE code_hash = $1{lock}");
        let row = sqlx::query(&sql)
            .bind(hash.to_vec())
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(code_from_row).transpose()
    }

    /// Marks code `hash` used at `at` and records what its exchange issued
    /// (`access_jti`/`access_exp`, and the refresh family if any). True if
    /// it was marked now; false if it was used already.
    pub async fn use_authorization_code(
        &mut self,
        hash: &[u8],
        at: Timestamp,
        access: &crate::tokens::AccessRef,
        family_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE authorization_codes SET used_at = $1, access_jti = $2, access_exp = $3, \
             family_id = $4 WHERE code_hash = $5 AND used_at IS NULL",
        )
        .bind(at)
        .bind(access.jti.clone())
        .bind(access.exp)
        .bind(family_id.map(str::to_owned))
        .bind(hash.to_vec())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes what browser logins keep once nothing can use it: sessions,
    /// requests and consents that expired before `before`, and codes that
    /// expired before it whose access token expired too and whose refresh
    /// family is gone (userinfo reads a code's claims for as long as what
    /// it issued lives; a late replay of it has nothing left to revoke).
    /// Returns how many rows went.
    pub async fn purge_login_records(&mut self, before: Timestamp) -> Result<u64, StoreError> {
        let mut n = 0;
        for sql in [
            "DELETE FROM browser_sessions WHERE expires_at < $1",
            "DELETE FROM login_requests WHERE expires_at < $1",
            // Pushed authorization requests (RFC 9126, `crate::pushed`).
            "DELETE FROM pushed_requests WHERE expires_at < $1",
            // Device requests (RFC 8628, `crate::device`), an hour after
            // they expired: until then a poll is told expired_token.
            "DELETE FROM device_authorizations WHERE expires_at < $1 - 3600",
            "DELETE FROM consents WHERE expires_at IS NOT NULL AND expires_at < $1",
            "DELETE FROM authorization_codes WHERE expires_at < $1 \
             AND (access_exp IS NULL OR access_exp < $1) \
             AND (family_id IS NULL OR NOT EXISTS \
                  (SELECT 1 FROM refresh_tokens r WHERE r.family_id = authorization_codes.family_id))",
        ] {
            n += sqlx::query(sql)
                .bind(before)
                .execute(&mut *self.tx)
                .await?
                .rows_affected();
        }
        Ok(n)
    }
}
