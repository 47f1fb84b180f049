//! The device authorization grant (RFC 8628): a device with no browser (a
//! TV, a CLI) gets tokens for a user who logs in on another screen.
//!
//! 1. The device posts to `{issuer}/oauth2/device_authorization` (client
//!    authentication as at the token endpoint; a public client by its id)
//!    and gets a `device_code`, a short `user_code` (eight letters of
//!    [`USER_CODE_ALPHABET`], shown `BCDF-GHJK`) and the page to enter it
//!    at, `{issuer}/device` ([`DeviceGrant`]).
//! 2. The user opens that page, types the code (or follows
//!    `verification_uri_complete`) and confirms on a page that names the
//!    client and the scopes it asks for (RFC 8628 §5.4: the user checks
//!    the code on the device matches; the confirmation is a `POST` with a
//!    CSRF token bound to a `SameSite=Strict` cookie). Codes tried are
//!    limited per client address and per environment
//!    ([`CODE_TRIES_PER_MINUTE`], [`CODE_TRIES_PER_MINUTE_PER_ENV`], §5.1),
//!    requests at the device endpoint per address ([`STARTS_PER_MINUTE`]).
//! 3. The confirmation starts an ordinary login for the client: the same
//!    login app, consent, remembered sessions and audit as the code flow,
//!    with the redirect URI `{issuer}/device/callback` (the client does not
//!    register it) and a PKCE challenge whose verifier is derived from the
//!    device code, so the store holds nothing that redeems it.
//! 4. The login ends in a code whose hash is recorded against the
//!    device's request as it is issued (the code itself is never sent
//!    anywhere); the browser lands on the callback, which tells the user
//!    to go back to the device, or records the refusal.
//! 5. The device polls the token endpoint with
//!    `grant_type=urn:ietf:params:oauth:grant-type:device_code`:
//!    `authorization_pending`, `slow_down` (polled within the interval,
//!    which then grows by 5 s), `access_denied`, `expired_token`, and once
//!    approved, its tokens (the code is redeemed as in the code flow: ID
//!    token with `openid`, refresh token with `offline_access`, DPoP or
//!    certificate binding). The device code is redeemed once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use keyward_jose::crypto::{random_bytes, sha256};
use keyward_store::{Client, DeviceAuthorization, DeviceStatus, Poll, StoreError, Timestamp};
use serde::Serialize;

use crate::authority::{Authority, EnvState};
use crate::clients::Credentials;
use crate::grants::TokenResponse;
use crate::login::{
    b64url, error_page, is_error_code, issuer_base, s256, server_error_page, AuthRequest,
    Authorized, Params, ResponseMode,
};
use crate::oauth::{ErrorCode, FaultReason, OAuthError};
use crate::tokens::{hash_secret, new_secret, parse_scope};

/// The grant type of the device's token requests (RFC 8628 §3.4).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long a device's request lives (RFC 8628 §3.2 `expires_in`).
pub const DEVICE_TTL_SECS: i64 = 600;
/// The polling interval a device starts with (RFC 8628 §3.2 `interval`).
pub const DEVICE_INTERVAL_SECS: i64 = 5;
/// The letters of user codes: consonants only, no vowels (no words), none
/// easily mistaken for another (RFC 8628 §6.1): 20^8 ≈ 2^34.6 codes.
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Letters in a user code.
pub const USER_CODE_LEN: usize = 8;
/// Open (unexpired, unredeemed) requests one client may hold.
pub const MAX_OPEN_PER_CLIENT: i64 = 1000;
/// User codes one client address may try per minute at the device page
/// (RFC 8628 §5.1: looking one up and confirming it each count), per
/// environment and replica.
pub const CODE_TRIES_PER_MINUTE: u32 = 10;
/// User codes all addresses together may try per minute in one
/// environment, per replica: the ceiling on guessing from many addresses.
pub const CODE_TRIES_PER_MINUTE_PER_ENV: u32 = 1000;
/// Device authorization requests one client address may make per minute,
/// per environment and replica.
pub const STARTS_PER_MINUTE: u32 = 30;
/// The page users enter their code at, under the issuer.
pub const VERIFICATION_PATH: &str = "/device";
/// Where the logins of device requests end, under the issuer.
pub const CALLBACK_PATH: &str = "/device/callback";

/// The device authorization response (RFC 8628 §3.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceGrant {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// A new user code: [`USER_CODE_LEN`] letters of [`USER_CODE_ALPHABET`],
/// uniformly drawn.
pub fn new_user_code() -> String {
    let mut out = String::with_capacity(USER_CODE_LEN);
    while out.len() < USER_CODE_LEN {
        for b in random_bytes::<16>() {
            // 240 = 12 × 20: bytes from 240 up would favour some letters.
            if b < 240 && out.len() < USER_CODE_LEN {
                out.push(USER_CODE_ALPHABET[usize::from(b % 20)] as char);
            }
        }
    }
    out
}

/// What a user typed, as a user code: case ignored, dashes and spaces
/// dropped (RFC 8628 §6.1); `None` if it cannot be one.
pub fn normalize_user_code(input: &str) -> Option<String> {
    if input.len() > 64 {
        return None;
    }
    let mut out = String::with_capacity(USER_CODE_LEN);
    for c in input.chars() {
        if c == '-' || c.is_whitespace() {
            continue;
        }
        let u = c.to_ascii_uppercase();
        if !u.is_ascii() || !USER_CODE_ALPHABET.contains(&(u as u8)) {
            return None;
        }
        out.push(u);
    }
    (out.len() == USER_CODE_LEN).then_some(out)
}

/// A user code as shown: `BCDF-GHJK`.
pub fn display_user_code(code: &str) -> String {
    match (code.get(..4), code.get(4..)) {
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => code.to_owned(),
    }
}

/// The stored form of a (normalised) user code of `env`.
fn user_code_hash(env: &str, code: &str) -> Vec<u8> {
    hash_secret(&format!("{env}\u{0}{code}"))
}

/// The PKCE verifier of the login a device request starts: derived from
/// its device code (43 base64url characters), never stored.
pub(crate) fn device_verifier(device_code: &str) -> String {
    b64url(&sha256(
        format!("keyward device PKCE verifier\u{0}{device_code}").as_bytes(),
    ))
}

/// `{issuer}/device/callback`: the redirect URI of device logins.
pub(crate) fn callback_uri(env: &EnvState) -> String {
    format!("{}{CALLBACK_PATH}", issuer_base(env))
}

/// `{issuer}/device`: where users enter their code.
pub fn verification_uri(env: &EnvState) -> String {
    format!("{}{VERIFICATION_PATH}", issuer_base(env))
}

/// Whether `client` may use the device grant.
pub(crate) fn may_use(client: &Client) -> bool {
    client.grant_types.iter().any(|g| g == DEVICE_CODE_GRANT)
}

/// Requests counted per environment and client address in one-minute
/// windows, with a ceiling per environment too. Checking and counting are
/// one step under one lock, so requests sent at once cannot all pass
/// before any is counted. Bounded: past windows are dropped when it grows.
#[derive(Debug)]
pub(crate) struct MinuteLimiter {
    per_address: u32,
    per_env: u32,
    windows: Mutex<HashMap<Who, Window>>,
}

/// An environment and a client address (`None`: the environment's own
/// ceiling; an IPv6 address counts by its /64, what one host may use).
type Who = (String, Option<IpAddr>);
/// When a window started, and the requests counted in it.
type Window = (Timestamp, u32);
/// A pending request found by its user code: the normalised code, the
/// request, its client.
type Found = (String, DeviceAuthorization, Arc<Client>);

/// Windows the limiter keeps before it drops past ones.
const MAX_TRACKED: usize = 10_000;

/// The address a limit counts `ip` under: IPv6 by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
    }
}

impl MinuteLimiter {
    pub(crate) fn new(per_address: u32, per_env: u32) -> Self {
        MinuteLimiter {
            per_address,
            per_env,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request from `who` (unknown: counted as one address) in
    /// `env` at `now`; false, and nothing counted, if its address or the
    /// environment has had its limit this minute.
    pub(crate) fn admit(&self, env: &str, who: Option<IpAddr>, now: Timestamp) -> bool {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() >= MAX_TRACKED {
            w.retain(|_, (start, _)| now - *start < 60);
        }
        // Unknown addresses share one bucket, apart from the ceiling's.
        let unknown: IpAddr = std::net::Ipv6Addr::UNSPECIFIED.into();
        let address = (env.to_owned(), Some(who.map_or(unknown, address_key)));
        let ceiling = (env.to_owned(), None);
        let count = |w: &HashMap<Who, Window>, k: &Who| {
            let e = w.get(k).copied().filter(|(start, _)| now - start < 60);
            e.map_or(0, |(_, n)| n)
        };
        if count(&w, &address) >= self.per_address || count(&w, &ceiling) >= self.per_env {
            return false;
        }
        for k in [address, ceiling] {
            let e = w.entry(k).or_insert((now, 0));
            if now - e.0 >= 60 {
                *e = (now, 0);
            }
            e.1 += 1;
        }
        true
    }
}

/// The issuer's limits on the device grant's unauthenticated doors.
#[derive(Debug)]
pub(crate) struct DeviceLimits {
    /// User codes tried at the device page (RFC 8628 §5.1).
    pub(crate) codes: MinuteLimiter,
    /// Requests at the device endpoint (a public client's id is no secret).
    pub(crate) starts: MinuteLimiter,
}

impl Default for DeviceLimits {
    fn default() -> Self {
        DeviceLimits {
            codes: MinuteLimiter::new(CODE_TRIES_PER_MINUTE, CODE_TRIES_PER_MINUTE_PER_ENV),
            // No ceiling per environment: one address must not be able to
            // stop every device from starting.
            starts: MinuteLimiter::new(STARTS_PER_MINUTE, u32::MAX),
        }
    }
}

/// What the page at `{issuer}/device` shows next.
#[derive(Debug)]
pub enum DevicePage {
    /// The code entry form, with why the last code was refused.
    Enter {
        status: u16,
        message: Option<String>,
    },
    /// What the device asks for, and a button to go on (RFC 8628 §5.4).
    Confirm {
        user_code: String,
        client_id: String,
        client_name: String,
        scope: Vec<String>,
    },
    /// The browser goes on to the login app (or sees an error page).
    Go(Authorized),
}

/// What the device callback found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceDone {
    /// The device will get its tokens at its next poll.
    Approved,
    /// The login or consent was refused; the device is told so.
    Denied,
    /// No login of a device request waits for this answer.
    Unknown,
}

impl Authority {
    /// `POST {issuer}/oauth2/device_authorization` (RFC 8628 §3.1):
    /// authenticates the client, checks its scope and stores the request.
    /// Refusals write nothing.
    pub async fn device_authorization(
        &self,
        env: &EnvState,
        creds: &Credentials,
        params: Vec<(String, String)>,
        who: Option<IpAddr>,
    ) -> Result<DeviceGrant, OAuthError> {
        let busy = || {
            OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "too many device requests; retry later",
            )
        };
        if !self
            .device_limits
            .starts
            .admit(&env.env.name, who, self.now())
        {
            return Err(busy());
        }
        let client = self.authenticate(env, creds).await?;
        if let Some(named) = creds.client_id.as_deref() {
            if named != client.client_id {
                return Err(OAuthError::invalid_request(
                    "client_id is not the authenticated client",
                ));
            }
        }
        if !may_use(&client) {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!("this client may not use the {DEVICE_CODE_GRANT} grant"),
            ));
        }
        let p = Params(params);
        let scope = parse_scope(p.get("scope").unwrap_or(""));
        if let Some(bad) = scope.iter().find(|s| !client.scopes.contains(s)) {
            return Err(OAuthError::invalid_scope(format!(
                "scope {bad:?} is not allowed for this client"
            )));
        }
        let now = self.now();
        let store = |e| OAuthError::internal(FaultReason::Store, &e);
        for _ in 0..3 {
            let (device_code, device_hash) = new_secret("kwd_");
            let user_code = new_user_code();
            let mut tx = self.store.begin().await.map_err(store)?;
            let open = tx
                .count_open_device_authorizations(&env.env.name, &client.client_id, now)
                .await
                .map_err(store)?;
            if open >= MAX_OPEN_PER_CLIENT {
                return Err(busy());
            }
            let inserted = tx
                .insert_device_authorization(&DeviceAuthorization {
                    device_hash,
                    user_code_hash: user_code_hash(&env.env.name, &user_code),
                    env: env.env.name.clone(),
                    client_id: client.client_id.clone(),
                    scope: scope.join(" "),
                    code_challenge: s256(&device_verifier(&device_code)),
                    status: DeviceStatus::Pending,
                    state_hash: None,
                    code_hash: None,
                    error: None,
                    interval_secs: DEVICE_INTERVAL_SECS,
                    last_poll_at: None,
                    created_at: now,
                    expires_at: now + DEVICE_TTL_SECS,
                    consumed_at: None,
                })
                .await;
            match inserted {
                // A user code drawn twice (one in 2^34 per open request).
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
                Ok(()) => {}
            }
            tx.commit().await.map_err(store)?;
            let shown = display_user_code(&user_code);
            let mut complete = form_urlencoded::Serializer::new(String::new());
            complete.append_pair("user_code", &shown);
            return Ok(DeviceGrant {
                device_code,
                user_code: shown,
                verification_uri: verification_uri(env),
                verification_uri_complete: format!(
                    "{}?{}",
                    verification_uri(env),
                    complete.finish()
                ),
                expires_in: DEVICE_TTL_SECS,
                interval: DEVICE_INTERVAL_SECS,
            });
        }
        Err(OAuthError::internal(
            FaultReason::Internal,
            &StoreError::Corrupt("three user codes in a row were taken".into()),
        ))
    }

    /// The pending request of `env` a user's `input` names, or the entry
    /// page to show again (a wrong code counts against `who`).
    async fn pending_for(
        &self,
        env: &EnvState,
        input: &str,
        who: Option<IpAddr>,
    ) -> Result<Result<Found, DevicePage>, StoreError> {
        let now = self.now();
        if !self.device_limits.codes.admit(&env.env.name, who, now) {
            return Ok(Err(DevicePage::Enter {
                status: 429,
                message: Some("Too many codes tried: wait a minute and try again.".into()),
            }));
        }
        let wrong = || {
            Err(DevicePage::Enter {
                status: 400,
                message: Some(
                    "That code is not valid (or it expired, or was used). Check the code your device shows."
                        .into(),
                ),
            })
        };
        let Some(code) = normalize_user_code(input) else {
            return Ok(wrong());
        };
        let Some(d) = self
            .store
            .pending_device_authorization(&user_code_hash(&env.env.name, &code), &env.env.name, now)
            .await?
        else {
            return Ok(wrong());
        };
        let Some(client) = self.snapshot().client(&env.env.name, &d.client_id).cloned() else {
            return Ok(wrong());
        };
        if !may_use(&client) {
            return Ok(wrong());
        }
        Ok(Ok((code, d, client)))
    }

    /// The user typed (or followed a link with) `input`: the confirmation
    /// of what the device asks for, or the entry page again.
    pub async fn device_lookup(
        &self,
        env: &EnvState,
        input: &str,
        who: Option<IpAddr>,
    ) -> DevicePage {
        match self.pending_for(env, input, who).await {
            Ok(Ok((code, d, client))) => DevicePage::Confirm {
                user_code: display_user_code(&code),
                client_id: client.client_id.clone(),
                client_name: client.name.clone(),
                scope: parse_scope(&d.scope),
            },
            Ok(Err(page)) => page,
            Err(e) => DevicePage::Go(Authorized::plain(server_error_page(env, &e))),
        }
    }

    /// The user confirmed `input` (CSRF checked by the caller): the
    /// request is taken (once) and its login starts, in the browser
    /// session the cookies name.
    pub async fn device_confirm(
        &self,
        env: &EnvState,
        input: &str,
        cookies: &[String],
        who: Option<IpAddr>,
    ) -> DevicePage {
        match self.device_confirm_inner(env, input, cookies, who).await {
            Ok(page) => page,
            Err(e) => DevicePage::Go(Authorized::plain(server_error_page(env, &e))),
        }
    }

    async fn device_confirm_inner(
        &self,
        env: &EnvState,
        input: &str,
        cookies: &[String],
        who: Option<IpAddr>,
    ) -> Result<DevicePage, StoreError> {
        let (code, d, client) = match self.pending_for(env, input, who).await? {
            Ok(found) => found,
            Err(page) => return Ok(page),
        };
        // A request without a login app to go to stays pending.
        if self
            .store
            .login_settings(&env.env.name)
            .await?
            .login_url
            .is_none()
        {
            return Ok(DevicePage::Go(Authorized::plain(error_page(
                503,
                "this environment has no login URL configured (keyward env update --login-url)",
            ))));
        }
        let (state, state_hash) = new_secret("");
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let Some(d) = tx
            .enter_user_code(
                &user_code_hash(&env.env.name, &code),
                &env.env.name,
                &state_hash,
                now,
            )
            .await?
            .filter(|e| e.device_hash == d.device_hash)
        else {
            // Confirmed by another browser a moment ago.
            return Ok(DevicePage::Enter {
                status: 400,
                message: Some("That code was used already.".into()),
            });
        };
        tx.commit().await?;
        let req = AuthRequest {
            client_id: client.client_id.clone(),
            redirect_uri: callback_uri(env),
            response_mode: ResponseMode::Query,
            scope: parse_scope(&d.scope),
            state: Some(state),
            nonce: None,
            code_challenge: d.code_challenge.clone(),
            prompt: Vec::new(),
            max_age: None,
            login_hint: None,
            device: true,
        };
        match self.start(env, req, cookies).await {
            Ok(a) => Ok(DevicePage::Go(a)),
            Err(e) => {
                // No login started: the code may be confirmed again.
                if let Ok(mut tx) = self.store.begin().await {
                    if tx
                        .reopen_device_authorization(&d.device_hash, &state_hash)
                        .await
                        .is_ok()
                    {
                        let _ = tx.commit().await;
                    }
                }
                Err(e)
            }
        }
    }

    /// `GET {issuer}/device/callback`: the login of a device request ended,
    /// its state names the request. Its code was recorded when it was
    /// issued (it never leaves keyward); a refusal (`error`) is recorded
    /// here.
    pub async fn device_callback(
        &self,
        env: &EnvState,
        params: Vec<(String, String)>,
    ) -> Result<DeviceDone, StoreError> {
        let p = Params(params);
        let Some(state) = p.get("state").filter(|s| !s.is_empty() && s.len() <= 100) else {
            return Ok(DeviceDone::Unknown);
        };
        let state_hash = hash_secret(state);
        let now = self.now();
        if let Some(error) = p.get("error") {
            // Only an OAuth error code is kept (and shown to the device).
            let error = if is_error_code(error) {
                error
            } else {
                "access_denied"
            };
            let mut tx = self.store.begin().await?;
            let done = tx
                .finish_device_login(&state_hash, &env.env.name, Err(error), now)
                .await?;
            tx.commit().await?;
            return Ok(match done {
                Some(_) => DeviceDone::Denied,
                None => DeviceDone::Unknown,
            });
        }
        let found = self
            .store
            .device_authorization_by_state(&state_hash, &env.env.name)
            .await?;
        Ok(match found {
            Some(d) if d.status == DeviceStatus::Approved && d.consumed_at.is_none() => {
                DeviceDone::Approved
            }
            _ => DeviceDone::Unknown,
        })
    }

    /// The token endpoint with `grant_type` [`DEVICE_CODE_GRANT`] (RFC 8628
    /// §3.4, §3.5), for `client` (authenticated already).
    pub(crate) async fn poll_device(
        &self,
        env: &EnvState,
        client: &Arc<Client>,
        device_code: Option<&str>,
        jkt: Option<&str>,
        x5t: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let device_code =
            device_code.ok_or_else(|| OAuthError::invalid_request("device_code is missing"))?;
        let unknown = || {
            OAuthError::invalid_grant("the device_code is unknown or was issued to another client")
        };
        if device_code.len() > 200 {
            return Err(unknown());
        }
        let device_hash = hash_secret(device_code);
        let now = self.now();
        let store = |e| OAuthError::internal(FaultReason::Store, &e);
        let mut tx = self.store.begin().await.map_err(store)?;
        // Dropping `tx` uncommitted forgets this poll.
        let d = match tx
            .poll_device_authorization(&device_hash, now)
            .await
            .map_err(store)?
        {
            None => return Err(unknown()),
            Some(Poll::TooSoon(d)) => {
                if d.env != env.env.name || d.client_id != client.client_id {
                    return Err(unknown());
                }
                tx.commit().await.map_err(store)?;
                return Err(OAuthError::new(
                    ErrorCode::SlowDown,
                    format!(
                        "polled too often: wait {} seconds between polls",
                        d.interval_secs
                    ),
                ));
            }
            Some(Poll::Polled(d)) => *d,
        };
        if d.env != env.env.name || d.client_id != client.client_id {
            return Err(unknown());
        }
        if d.consumed_at.is_some() {
            return Err(OAuthError::invalid_grant(
                "the device_code was used already",
            ));
        }
        if d.expires_at <= now {
            return Err(OAuthError::new(
                ErrorCode::ExpiredToken,
                "the device_code expired: start again",
            ));
        }
        match d.status {
            DeviceStatus::Pending | DeviceStatus::Entered => {
                tx.commit().await.map_err(store)?;
                Err(OAuthError::new(
                    ErrorCode::AuthorizationPending,
                    "the user has not finished yet",
                ))
            }
            DeviceStatus::Denied => Err(OAuthError::new(
                ErrorCode::AccessDenied,
                format!(
                    "the user or the login app refused ({})",
                    d.error.as_deref().unwrap_or("access_denied")
                ),
            )),
            DeviceStatus::Approved => {
                drop(tx);
                let code_hash = d.code_hash.ok_or_else(|| {
                    OAuthError::internal(
                        FaultReason::Store,
                        &StoreError::Corrupt("an approved device request has no code".into()),
                    )
                })?;
                self.redeem_code(
                    env,
                    client,
                    crate::login::Redeem {
                        code_hash,
                        redirect_uri: &callback_uri(env),
                        verifier: &device_verifier(device_code),
                        device_hash: Some(&device_hash),
                    },
                    jkt,
                    x5t,
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_letters_of_the_alphabet() {
        for _ in 0..200 {
            let c = new_user_code();
            assert_eq!(c.len(), USER_CODE_LEN);
            assert!(c.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)), "{c}");
        }
        assert_ne!(new_user_code(), new_user_code());
    }

    #[test]
    fn typed_codes_are_normalised() {
        assert_eq!(
            normalize_user_code("bcdf-ghjk").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(
            normalize_user_code(" BCDF GHJK ").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(normalize_user_code("BCDFGHJK").as_deref(), Some("BCDFGHJK"));
        // Vowels and digits are not in the alphabet; lengths must match.
        assert_eq!(normalize_user_code("ABCD-EFGH"), None);
        assert_eq!(normalize_user_code("BCDF-GHJ1"), None);
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
        assert_eq!(normalize_user_code("BCDF-GHJKL"), None);
        assert_eq!(normalize_user_code("BCDF-GHJ\u{212A}"), None);
        assert_eq!(display_user_code("BCDFGHJK"), "BCDF-GHJK");
    }

    #[test]
    fn verifiers_are_pkce_verifiers_and_differ_per_device_code() {
        let a = device_verifier("kwd_a");
        assert_eq!(a.len(), 43);
        assert_ne!(a, device_verifier("kwd_b"));
        assert_ne!(hash_secret("kwd_a"), sha256(a.as_bytes()).to_vec());
    }

    #[test]
    fn limits_count_per_address_and_environment_and_window() {
        let l = MinuteLimiter::new(3, 5);
        let a: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let b: Option<IpAddr> = Some("192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            assert!(l.admit("e", a, 1000));
        }
        assert!(!l.admit("e", a, 1030), "the address had its 3");
        assert!(
            l.admit("other", a, 1030),
            "another environment counts apart"
        );
        assert!(l.admit("e", b, 1030));
        assert!(l.admit("e", None, 1030));
        assert!(
            !l.admit("e", Some("192.0.2.3".parse().unwrap()), 1030),
            "the environment had its 5"
        );
        assert!(l.admit("e", a, 1060), "the next minute starts afresh");
        // IPv6: one /64 is one address.
        let l = MinuteLimiter::new(1, 100);
        assert!(l.admit("e", Some("2001:db8::1".parse().unwrap()), 1000));
        assert!(!l.admit("e", Some("2001:db8::2:3".parse().unwrap()), 1000));
        assert!(l.admit("e", Some("2001:db8:0:1::1".parse().unwrap()), 1000));
    }
}
