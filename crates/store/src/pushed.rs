//! Pushed authorization requests (RFC 9126): an authorization request a
//! client pushed (authenticated, checked) and the browser later brings to
//! the authorization endpoint by its `request_uri`, once. The `request_uri`
//! is stored only as its SHA-256; single use is a conditional `UPDATE`
//! only one transaction can make. Nothing here moves [`crate::Store::generation`].

use sqlx::any::AnyRow;

use crate::error::StoreError;
use crate::records::Timestamp;
use crate::store::{get, Tx};

/// One pushed authorization request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedRequest {
    /// SHA-256 of the `request_uri`.
    pub uri_hash: Vec<u8>,
    pub env: String,
    pub client_id: String,
    /// The checked authorization request (JSON, the issuer's).
    pub request: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

const COLUMNS: &str = "uri_hash, env, client_id, request, created_at, expires_at, used_at";

fn from_row(row: &AnyRow) -> Result<PushedRequest, StoreError> {
    Ok(PushedRequest {
        uri_hash: get(row, "uri_hash")?,
        env: get(row, "env")?,
        client_id: get(row, "client_id")?,
        request: get(row, "request")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        used_at: get(row, "used_at")?,
    })
}

impl Tx<'_> {
    /// Stores a pushed request (and forgets those that expired over an
    /// hour before `r.created_at`); `Conflict` if its hash exists.
    pub async fn insert_pushed_request(&mut self, r: &PushedRequest) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pushed_requests WHERE expires_at < $1")
            .bind(r.created_at - 3600)
            .execute(&mut *self.tx)
            .await?;
        let sql =
            format!("INSERT INTO pushed_requests ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
        sqlx::query(&sql)
            .bind(r.uri_hash.clone())
            .bind(r.env.clone())
            .bind(r.client_id.clone())
            .bind(r.request.clone())
            .bind(r.created_at)
            .bind(r.expires_at)
            .bind(r.used_at)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                if crate::error::is_unique_violation(&e) {
                    StoreError::Conflict {
                        what: "pushed authorization request",
                        name: "(hash)".into(),
                    }
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    /// Uses the pushed request whose `request_uri` hashes to `uri_hash`, of
    /// environment `env` and client `client_id`, not expired at `at`, and
    /// returns it; `None` if there is none such or it was used already
    /// (once, ever: a conditional `UPDATE`).
    pub async fn use_pushed_request(
        &mut self,
        uri_hash: &[u8],
        env: &str,
        client_id: &str,
        at: Timestamp,
    ) -> Result<Option<PushedRequest>, StoreError> {
        let sql = format!(
            "UPDATE pushed_requests SET used_at = $1 \
             WHERE uri_hash = $2 AND env = $3 AND client_id = $4 AND used_at IS NULL \
             AND expires_at > $5 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(at)
            .bind(uri_hash.to_vec())
            .bind(env.to_owned())
            .bind(client_id.to_owned())
            .bind(at)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(from_row).transpose()
    }
}

impl crate::Store {
    /// How many pushed requests `env` holds (used or not), for tests and
    /// the "nothing was written" checks.
    pub async fn count_pushed_requests(&self, env: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM pushed_requests WHERE env = $1")
            .bind(env.to_owned())
            .fetch_one(&self.pool)
            .await?;
        get(&row, "n")
    }
}
