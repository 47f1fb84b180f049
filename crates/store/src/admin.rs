//! Admin tokens: bearer tokens that guard the admin API.
//!
//! Only the SHA-256 of a token is stored (tokens are 256-bit random values,
//! so a plain hash suffices). A revoked token stays listed with its
//! `revoked_at`, so the listing shows what existed. Each token carries its
//! grants (permission strings, see `keyward_issuer::admin`), an optional
//! expiry and owner, and who made it. Tokens made before grants existed
//! hold `*` (migration 0006).

use sqlx::any::AnyRow;

use crate::error::{is_unique_violation, StoreError};
use crate::records::Timestamp;
use crate::store::{get, Store, Tx};

/// An admin token as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminToken {
    /// Unique; how the token is named in listings and revocation.
    pub id: String,
    pub name: String,
    /// SHA-256 of the token; unique.
    pub token_hash: Vec<u8>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// The token's grants: non-empty strings without white space (the
    /// issuer checks their form). Stored space-separated.
    pub permissions: Vec<String>,
    /// Who the token was made for.
    pub owner: Option<String>,
    /// When the token stops working; `None`: never.
    pub expires_at: Option<Timestamp>,
    /// The actor that made it.
    pub created_by: Option<String>,
}

impl AdminToken {
    /// Whether the token is refused at `now`: revoked, or expired
    /// (`expires_at <= now`).
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

const ADMIN_COLUMNS: &str =
    "id, name, token_hash, created_at, revoked_at, permissions, owner, expires_at, created_by";

fn admin_from_row(row: &AnyRow) -> Result<AdminToken, StoreError> {
    Ok(AdminToken {
        id: get(row, "id")?,
        name: get(row, "name")?,
        token_hash: get(row, "token_hash")?,
        created_at: get(row, "created_at")?,
        revoked_at: get(row, "revoked_at")?,
        permissions: get::<String>(row, "permissions")?
            .split(' ')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        owner: get(row, "owner")?,
        expires_at: get(row, "expires_at")?,
        created_by: get(row, "created_by")?,
    })
}

impl Store {
    /// The admin token whose hash is `hash`, revoked or not (the caller
    /// checks `revoked_at`).
    pub async fn admin_token_by_hash(&self, hash: &[u8]) -> Result<Option<AdminToken>, StoreError> {
        let sql = format!("SELECT {ADMIN_COLUMNS} FROM admin_tokens WHERE token_hash = $1");
        let row = sqlx::query(&sql)
            .bind(hash.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(admin_from_row).transpose()
    }

    /// Every admin token, revoked ones included, by `created_at` then id.
    pub async fn admin_tokens(&self) -> Result<Vec<AdminToken>, StoreError> {
        let sql = format!("SELECT {ADMIN_COLUMNS} FROM admin_tokens ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(admin_from_row).collect()
    }
}

impl Tx<'_> {
    /// Stores an admin token; `Conflict` if its id or its hash is taken,
    /// `Invalid` if it holds no permission or one that is empty or holds
    /// white space (they are stored space-separated).
    pub async fn create_admin_token(&mut self, token: &AdminToken) -> Result<(), StoreError> {
        if token.permissions.is_empty()
            || token
                .permissions
                .iter()
                .any(|p| p.is_empty() || p.chars().any(char::is_whitespace))
        {
            return Err(StoreError::Invalid {
                what: "admin token",
                reason: "its permissions must be one or more strings without white space".into(),
            });
        }
        self.writer_lock().await?;
        let conflict = || StoreError::Conflict {
            what: "admin token",
            name: token.id.clone(),
        };
        let exists =
            sqlx::query("SELECT 1 AS one FROM admin_tokens WHERE id = $1 OR token_hash = $2")
                .bind(token.id.clone())
                .bind(token.token_hash.clone())
                .fetch_optional(&mut *self.tx)
                .await?;
        if exists.is_some() {
            return Err(conflict());
        }
        let sql = format!(
            "INSERT INTO admin_tokens ({ADMIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        sqlx::query(&sql)
            .bind(token.id.clone())
            .bind(token.name.clone())
            .bind(token.token_hash.clone())
            .bind(token.created_at)
            .bind(token.revoked_at)
            .bind(token.permissions.join(" "))
            .bind(token.owner.clone())
            .bind(token.expires_at)
            .bind(token.created_by.clone())
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    conflict()
                } else {
                    e.into()
                }
            })?;
        self.bump_generation().await
    }

    /// Revokes admin token `id` at `at`. True if it was revoked now, false
    /// if it already was (its first `revoked_at` stays); `NotFound` if there
    /// is no such token.
    pub async fn revoke_admin_token(
        &mut self,
        id: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.writer_lock().await?;
        let done = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(id.to_owned())
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() > 0 {
            self.bump_generation().await?;
            return Ok(true);
        }
        let exists = sqlx::query("SELECT 1 AS one FROM admin_tokens WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&mut *self.tx)
            .await?;
        if exists.is_some() {
            Ok(false)
        } else {
            Err(StoreError::NotFound {
                what: "admin token",
                name: id.to_owned(),
            })
        }
    }
}
