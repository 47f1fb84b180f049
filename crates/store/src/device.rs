//! The device authorization grant (RFC 8628): a device's request from the
//! device endpoint until its `device_code` is redeemed or expires.
//!
//! The device code, the user code and the code its login ended in are
//! stored here only as their SHA-256; so is the state of that login (the
//! login request it started keeps the state itself, as it keeps every
//! authorization request's). Each step is a conditional
//! `UPDATE` only one transaction can make: a user code is confirmed once,
//! a login ends once, the tokens are issued once, and a poll that comes
//! sooner than the interval after the last one moves nothing but the
//! interval. Nothing here moves [`crate::Store::generation`].

use sqlx::any::AnyRow;

use crate::error::StoreError;
use crate::records::Timestamp;
use crate::store::{get, Tx};

/// Where a device's request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    /// No user has confirmed its user code yet.
    Pending,
    /// A user confirmed it and is logging in.
    Entered,
    /// The login ended in an authorization code (`code_hash`).
    Approved,
    /// The login or the consent was rejected (`error`).
    Denied,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Entered => "entered",
            DeviceStatus::Approved => "approved",
            DeviceStatus::Denied => "denied",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => DeviceStatus::Pending,
            "entered" => DeviceStatus::Entered,
            "approved" => DeviceStatus::Approved,
            "denied" => DeviceStatus::Denied,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "device authorization: unknown status {other:?}"
                )))
            }
        })
    }
}

/// One device authorization request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceAuthorization {
    /// SHA-256 of the `device_code`.
    pub device_hash: Vec<u8>,
    /// SHA-256 of the normalised user code.
    pub user_code_hash: Vec<u8>,
    pub env: String,
    pub client_id: String,
    /// The scopes asked for, space-separated.
    pub scope: String,
    /// The S256 PKCE challenge of the login started for it.
    pub code_challenge: String,
    pub status: DeviceStatus,
    /// SHA-256 of the state of the login started for it.
    pub state_hash: Option<Vec<u8>>,
    /// SHA-256 of the authorization code its login ended in.
    pub code_hash: Option<Vec<u8>>,
    /// Why it was denied (an OAuth error code).
    pub error: Option<String>,
    pub interval_secs: i64,
    pub last_poll_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub consumed_at: Option<Timestamp>,
}

const COLUMNS: &str = "device_hash, user_code_hash, env, client_id, scope, code_challenge, \
     status, state_hash, code_hash, error, interval_secs, last_poll_at, created_at, expires_at, consumed_at";

fn from_row(row: &AnyRow) -> Result<DeviceAuthorization, StoreError> {
    let status: String = get(row, "status")?;
    Ok(DeviceAuthorization {
        device_hash: get(row, "device_hash")?,
        user_code_hash: get(row, "user_code_hash")?,
        env: get(row, "env")?,
        client_id: get(row, "client_id")?,
        scope: get(row, "scope")?,
        code_challenge: get(row, "code_challenge")?,
        status: DeviceStatus::parse(&status)?,
        state_hash: get(row, "state_hash")?,
        code_hash: get(row, "code_hash")?,
        error: get(row, "error")?,
        interval_secs: get(row, "interval_secs")?,
        last_poll_at: get(row, "last_poll_at")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        consumed_at: get(row, "consumed_at")?,
    })
}

/// What a poll found (RFC 8628 §3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Polled within the interval of the previous poll: the request, whose
    /// interval is now 5 seconds longer.
    TooSoon(Box<DeviceAuthorization>),
    /// Recorded as this poll; the request as it stands.
    Polled(Box<DeviceAuthorization>),
}

impl Tx<'_> {
    /// Stores a new device request (and forgets those that expired over an
    /// hour before `d.created_at`); `Conflict` if its device or user code
    /// hash exists (the caller draws new codes).
    pub async fn insert_device_authorization(
        &mut self,
        d: &DeviceAuthorization,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM device_authorizations WHERE expires_at < $1")
            .bind(d.created_at - 3600)
            .execute(&mut *self.tx)
            .await?;
        let sql = format!(
            "INSERT INTO device_authorizations ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        );
        sqlx::query(&sql)
            .bind(d.device_hash.clone())
            .bind(d.user_code_hash.clone())
            .bind(d.env.clone())
            .bind(d.client_id.clone())
            .bind(d.scope.clone())
            .bind(d.code_challenge.clone())
            .bind(d.status.as_str())
            .bind(d.state_hash.clone())
            .bind(d.code_hash.clone())
            .bind(d.error.clone())
            .bind(d.interval_secs)
            .bind(d.last_poll_at)
            .bind(d.created_at)
            .bind(d.expires_at)
            .bind(d.consumed_at)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                if crate::error::is_unique_violation(&e) {
                    StoreError::Conflict {
                        what: "device authorization",
                        name: "(hash)".into(),
                    }
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    /// How many device requests of `client_id` in `env` are still open
    /// (not expired, not redeemed) at `at`.
    pub async fn count_open_device_authorizations(
        &mut self,
        env: &str,
        client_id: &str,
        at: Timestamp,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM device_authorizations \
             WHERE env = $1 AND client_id = $2 AND expires_at > $3 AND consumed_at IS NULL",
        )
        .bind(env.to_owned())
        .bind(client_id.to_owned())
        .bind(at)
        .fetch_one(&mut *self.tx)
        .await?;
        get(&row, "n")
    }

    /// A user confirmed the user code hashing to `user_code_hash` in `env`
    /// at `at`: the pending, unexpired request moves to `entered` with the
    /// state of the login started for it, and is returned; `None` if there
    /// is no such request (unknown, expired, or confirmed already).
    pub async fn enter_user_code(
        &mut self,
        user_code_hash: &[u8],
        env: &str,
        state_hash: &[u8],
        at: Timestamp,
    ) -> Result<Option<DeviceAuthorization>, StoreError> {
        let sql = format!(
            "UPDATE device_authorizations SET status = 'entered', state_hash = $1 \
             WHERE user_code_hash = $2 AND env = $3 AND status = 'pending' AND expires_at > $4 \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(state_hash.to_vec())
            .bind(user_code_hash.to_vec())
            .bind(env.to_owned())
            .bind(at)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The login started for the request whose state hashes to
    /// `state_hash` ended: in an authorization code (`Ok(code_hash)`) or a
    /// refusal (`Err(error)`). Only an `entered`, unexpired request moves;
    /// the request is returned, `None` if there was none such.
    pub async fn finish_device_login(
        &mut self,
        state_hash: &[u8],
        env: &str,
        outcome: Result<&[u8], &str>,
        at: Timestamp,
    ) -> Result<Option<DeviceAuthorization>, StoreError> {
        let (status, code_hash, error) = match outcome {
            Ok(code) => (DeviceStatus::Approved, Some(code.to_vec()), None),
            Err(e) => (DeviceStatus::Denied, None, Some(e.to_owned())),
        };
        let sql = format!(
            "UPDATE device_authorizations SET status = $1, code_hash = $2, error = $3 \
             WHERE state_hash = $4 AND env = $5 AND status = 'entered' AND expires_at > $6 \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(status.as_str())
            .bind(code_hash)
            .bind(error)
            .bind(state_hash.to_vec())
            .bind(env.to_owned())
            .bind(at)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A poll of the device request `device_hash` at `at`: `None` if there
    /// is none; [`Poll::TooSoon`] (and the interval grows by 5 seconds) if
    /// it is still waiting for its user and was polled less than its
    /// interval ago; else the poll is recorded and the request returned.
    pub async fn poll_device_authorization(
        &mut self,
        device_hash: &[u8],
        at: Timestamp,
    ) -> Result<Option<Poll>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM device_authorizations WHERE device_hash = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(device_hash.to_vec())
            .fetch_optional(&mut *self.tx)
            .await?
        else {
            return Ok(None);
        };
        let d = from_row(&row)?;
        let waiting = matches!(d.status, DeviceStatus::Pending | DeviceStatus::Entered);
        if waiting && d.consumed_at.is_none() && d.expires_at > at {
            // Conditional: of two polls at once, one is the poll, the other
            // is too soon.
            let polled = sqlx::query(
                "UPDATE device_authorizations SET last_poll_at = $1 WHERE device_hash = $2 \
                 AND (last_poll_at IS NULL OR last_poll_at + interval_secs <= $1)",
            )
            .bind(at)
            .bind(device_hash.to_vec())
            .execute(&mut *self.tx)
            .await?
            .rows_affected()
                == 1;
            if !polled {
                let row = sqlx::query(&format!(
                    "UPDATE device_authorizations SET interval_secs = interval_secs + 5 \
                     WHERE device_hash = $1 RETURNING {COLUMNS}"
                ))
                .bind(device_hash.to_vec())
                .fetch_one(&mut *self.tx)
                .await?;
                return Ok(Some(Poll::TooSoon(Box::new(from_row(&row)?))));
            }
        }
        Ok(Some(Poll::Polled(Box::new(d))))
    }

    /// The login started for the `entered` request `device_hash` with the
    /// state hashing to `state_hash` could not start: it is pending again.
    pub async fn reopen_device_authorization(
        &mut self,
        device_hash: &[u8],
        state_hash: &[u8],
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE device_authorizations SET status = 'pending', state_hash = NULL \
             WHERE device_hash = $1 AND state_hash = $2 AND status = 'entered'",
        )
        .bind(device_hash.to_vec())
        .bind(state_hash.to_vec())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks the approved request `device_hash` redeemed at `at`; true if
    /// it was marked now, false if it was redeemed already (once, ever).
    pub async fn consume_device_authorization(
        &mut self,
        device_hash: &[u8],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE device_authorizations SET consumed_at = $1 \
             WHERE device_hash = $2 AND status = 'approved' AND consumed_at IS NULL",
        )
        .bind(at)
        .bind(device_hash.to_vec())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl crate::Store {
    /// The open request of `env` whose user code hashes to
    /// `user_code_hash`, still waiting for its user at `at` (what the
    /// confirmation page shows).
    pub async fn pending_device_authorization(
        &self,
        user_code_hash: &[u8],
        env: &str,
        at: Timestamp,
    ) -> Result<Option<DeviceAuthorization>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM device_authorizations WHERE user_code_hash = $1 AND env = $2 \
             AND status = 'pending' AND expires_at > $3"
        );
        let row = sqlx::query(&sql)
            .bind(user_code_hash.to_vec())
            .bind(env.to_owned())
            .bind(at)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The request of `env` whose login's state hashes to `state_hash`.
    pub async fn device_authorization_by_state(
        &self,
        state_hash: &[u8],
        env: &str,
    ) -> Result<Option<DeviceAuthorization>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM device_authorizations WHERE state_hash = $1 AND env = $2"
        );
        let row = sqlx::query(&sql)
            .bind(state_hash.to_vec())
            .bind(env.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The request `device_hash`, whatever its state (tests, the "nothing
    /// changed" checks).
    pub async fn device_authorization(
        &self,
        device_hash: &[u8],
    ) -> Result<Option<DeviceAuthorization>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM device_authorizations WHERE device_hash = $1");
        let row = sqlx::query(&sql)
            .bind(device_hash.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// How many device requests `env` holds, for tests.
    pub async fn count_device_authorizations(&self, env: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM device_authorizations WHERE env = $1")
            .bind(env.to_owned())
            .fetch_one(&self.pool)
            .await?;
        get(&row, "n")
    }
}
