//! What the token path writes: refresh tokens and their families, the
//! revocation feed of access-token jtis, and the jtis of client assertions
//! seen (RFC 7523 replay protection).
//!
//! None of these move [`Store::generation`]: a server reads them directly
//! when it needs them.
//!
//! # Refresh tokens
//!
//! Stored only as the SHA-256 of the opaque value. Every rotation of one
//! grant shares a `family_id`; a token is marked `rotated_at` when it is
//! exchanged, and replaying a rotated token is expected to revoke the whole
//! family ([`Tx::revoke_refresh_family`], RFC 9700).
//!
//! Every transaction that touches a family runs alone in it: read the
//! presented token with [`Tx::refresh_token_for_update`] inside the
//! transaction that rotates it or revokes its family. On PostgreSQL that
//! takes the family's lock ([`Tx::lock_refresh_family`]) and only then
//! locks the token's row (`SELECT ... FOR UPDATE`), so two concurrent
//! exchanges of one token cannot both succeed, and a family revocation
//! waits for an exchange in flight and then sees (and revokes) the
//! successor it inserted. (Row locks alone are not enough under READ
//! COMMITTED: a revoking `UPDATE` that waits for the presented token's row
//! re-checks only that row, never the successor inserted by the same
//! transaction.) On SQLite `BEGIN IMMEDIATE` already serializes writers.
//! The lock order is the store's: family lock, row locks, writer lock
//! (see [`crate::store`]).
//!
//! Each row also records its `parent` (the hash of the token it was rotated
//! from) and the access token minted in the same issuance ([`AccessRef`]:
//! its `jti` and `exp`). The parent link finds a rotated token's successor
//! ([`Tx::supersede_refresh_successor`], for a grace reissue); the access
//! token lets every revocation of a family ([`Tx::revoke_refresh_family`],
//! [`Tx::revoke_client_refresh_families`]) put the family's access tokens on
//! the revocation feed in the same transaction, so introspection and gates
//! refuse them too.
//!
//! Those revocations take the writer lock after the family locks and the
//! rows, as the store's lock order has it.
//!
//! # The revocation feed
//!
//! [`Tx::revoke_jti`] appends `(env, jti, exp)` with a `seq`;
//! [`Store::revocations_since`] pages through one environment's entries by
//! `seq`. A reader keeps the last `seq` it saw as its cursor. Guarantees:
//!
//! - `seq` only grows and is never handed out twice, even after purging
//!   (SQLite `AUTOINCREMENT`, a PostgreSQL identity column). It may have
//!   gaps (a rolled-back revocation, another environment's entries).
//! - `seq` order is commit order: on PostgreSQL a revocation takes the
//!   store's writer lock before it draws its `seq`, so no entry with a
//!   smaller `seq` can become visible after a reader has moved past it.
//! - [`Tx::purge_revocations`] deletes only entries whose access token has
//!   expired (`exp < expired_before`). A cursor pointing at a purged entry
//!   still works: the reader gets every newer entry. What a slow reader
//!   misses is only the revocation of tokens that are expired anyway, so
//!   purge with a margin of at least the gates' clock leeway.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor};

use keyward_jose::crypto::hex;

use crate::error::{is_unique_violation, StoreError};
use crate::records::Timestamp;
use crate::store::{get, Backend, Store, Tx};

/// How long after its `exp` a revoked access token is still put on the
/// revocation feed: gates accept a token for up to their clock leeway past
/// `exp` (keyward's gateway allows at most 10 minutes), so a token that
/// expired less than this long ago may still pass one.
pub const REVOCATION_EXPIRY_MARGIN_SECS: Timestamp = 600;

/// The access token minted in the same issuance as a refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRef {
    pub jti: String,
    pub exp: Timestamp,
}

/// What revoking refresh-token families changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FamilyRevocation {
    /// Refresh tokens newly revoked (those already revoked keep their time).
    pub refresh_tokens: u64,
    /// Access tokens newly put on the revocation feed.
    pub access_tokens: u64,
}

/// A refresh token as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    /// SHA-256 of the opaque token value; unique.
    pub token_hash: Vec<u8>,
    pub env: String,
    pub client_id: String,
    /// Shared by every rotation of one grant.
    pub family_id: String,
    pub subject: String,
    /// Space-separated scopes.
    pub scope: String,
    pub audience: Option<String>,
    /// JSON object text carried into each new access token (`roles`,
    /// `permissions`).
    pub extra: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// When it was exchanged for a new one.
    pub rotated_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// SHA-256 of the token this one was rotated from; `None` for the first
    /// token of a family (and for rows stored before lineage was recorded).
    pub parent: Option<Vec<u8>>,
    /// The access token issued together with this one, if recorded.
    pub access: Option<AccessRef>,
    /// The thumbprint of the DPoP key this token's family is bound to
    /// (RFC 9449 §5): a refresh must prove that key. `None`: not bound.
    pub dpop_jkt: Option<String>,
}

/// One entry of the revocation feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Revocation {
    /// The feed cursor: grows with every revocation, across environments.
    pub seq: i64,
    pub env: String,
    pub jti: String,
    /// The revoked access token's expiry.
    pub exp: Timestamp,
    pub revoked_at: Timestamp,
}

const REFRESH_COLUMNS: &str = "token_hash, env, client_id, family_id, subject, scope, audience, \
     extra, issued_at, expires_at, rotated_at, revoked_at, parent, access_jti, access_exp, dpop_jkt";
const REVOCATION_COLUMNS: &str = "seq, env, jti, exp, revoked_at";

/// The PostgreSQL advisory-lock keys of refresh-token family `$1` (or of the
/// column `family_id` where that replaces `$1`): the two-`int4` form, whose
/// key space never meets the single-`bigint` writer lock's.
const FAMILY_LOCK_KEYS: &str = "hashtext('keyward.refresh_family'), hashtext($1)";
/// The families of client `$2` of environment `$1`, locked in key order
/// (PostgreSQL; see [`Tx::revoke_client_refresh_families`]).
const CLIENT_FAMILIES_LOCK_SQL: &str =
    "SELECT CAST(pg_advisory_xact_lock(hashtext('keyward.refresh_family'), f.k) AS TEXT) AS locked \
     FROM (SELECT DISTINCT hashtext(family_id) AS k FROM refresh_tokens \
           WHERE env = $1 AND client_id = $2 ORDER BY k) f";

fn refresh_from_row(row: &AnyRow) -> Result<RefreshToken, StoreError> {
    Ok(RefreshToken {
        token_hash: get(row, "token_hash")?,
        env: get(row, "env")?,
        client_id: get(row, "client_id")?,
        family_id: get(row, "family_id")?,
        subject: get(row, "subject")?,
        scope: get(row, "scope")?,
        audience: get(row, "audience")?,
        extra: get(row, "extra")?,
        issued_at: get(row, "issued_at")?,
        expires_at: get(row, "expires_at")?,
        rotated_at: get(row, "rotated_at")?,
        revoked_at: get(row, "revoked_at")?,
        parent: get(row, "parent")?,
        access: match (get(row, "access_jti")?, get(row, "access_exp")?) {
            (Some(jti), Some(exp)) => Some(AccessRef { jti, exp }),
            (None, None) => None,
            _ => {
                return Err(StoreError::Corrupt(
                    "refresh token: access_jti and access_exp must be set together".into(),
                ))
            }
        },
        dpop_jkt: get(row, "dpop_jkt")?,
    })
}

fn revocation_from_row(row: &AnyRow) -> Result<Revocation, StoreError> {
    Ok(Revocation {
        seq: get(row, "seq")?,
        env: get(row, "env")?,
        jti: get(row, "jti")?,
        exp: get(row, "exp")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

/// How a refresh token is named in errors: the start of its hash (the
/// token itself is never known to the store).
fn refresh_name(hash: &[u8]) -> String {
    hex(&hash[..hash.len().min(8)])
}

/// Which refresh tokens a revocation covers.
#[derive(Clone, Copy)]
enum Lineage<'a> {
    Family(&'a str),
    Token(&'a [u8]),
    Client(&'a str, &'a str),
}

async fn fetch_refresh<'c, E>(
    ex: E,
    hash: &[u8],
    for_update: bool,
) -> Result<Option<RefreshToken>, StoreError>
where
    E: Executor<'c, Database = Any>,
{
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = $1{lock}");
    let row = sqlx::query(&sql)
        .bind(hash.to_vec())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(refresh_from_row).transpose()
}

impl Store {
    /// A refresh token by the hash of its value.
    pub async fn refresh_token(&self, hash: &[u8]) -> Result<Option<RefreshToken>, StoreError> {
        fetch_refresh(&self.pool, hash, false).await
    }

    /// Up to `limit` revocations of `env` with `seq > after_seq`, by `seq`.
    /// (Start from 0; see the module documentation for the cursor's
    /// guarantees.) An unknown environment has no revocations.
    pub async fn revocations_since(
        &self,
        env: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<Revocation>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {REVOCATION_COLUMNS} FROM revocations WHERE env = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(env.to_owned())
            .bind(after_seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(revocation_from_row).collect()
    }

    /// True if access-token `jti` of `env` is in the revocation feed.
    pub async fn is_jti_revoked(&self, env: &str, jti: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS one FROM revocations WHERE env = $1 AND jti = $2")
            .bind(env.to_owned())
            .bind(jti.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Records that client assertion `jti` of `client_id` in `env` (expiring
    /// at `exp`) was used, and returns true if that is its first use: false
    /// if the same `(env, client_id, jti)` is already recorded with an
    /// `exp >= now` (a replay). A record that expired before `now` is
    /// overwritten, so the check holds within the assertion's lifetime.
    ///
    /// One statement (`INSERT ... ON CONFLICT DO UPDATE ... WHERE`), atomic
    /// on both backends: of concurrent calls with one jti, in any number of
    /// processes, exactly one returns true.
    pub async fn use_assertion_jti(
        &self,
        env: &str,
        client_id: &str,
        jti: &str,
        exp: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO assertion_jtis (env, client_id, jti, exp) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (env, client_id, jti) DO UPDATE SET exp = excluded.exp \
             WHERE assertion_jtis.exp < $5",
        )
        .bind(env.to_owned())
        .bind(client_id.to_owned())
        .bind(jti.to_owned())
        .bind(exp)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Tx<'_> {
    /// Stores a new refresh token. `NotFound` if its client does not exist
    /// in its environment; `Conflict` if the hash is already stored.
    pub async fn insert_refresh_token(&mut self, token: &RefreshToken) -> Result<(), StoreError> {
        let client = sqlx::query("SELECT 1 AS one FROM clients WHERE env = $1 AND client_id = $2")
            .bind(token.env.clone())
            .bind(token.client_id.clone())
            .fetch_optional(&mut *self.tx)
            .await?;
        if client.is_none() {
            return Err(StoreError::NotFound {
                what: "client",
                name: format!("{}/{}", token.env, token.client_id),
            });
        }
        let sql = format!(
            "INSERT INTO refresh_tokens ({REFRESH_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        );
        sqlx::query(&sql)
            .bind(token.token_hash.clone())
            .bind(token.env.clone())
            .bind(token.client_id.clone())
            .bind(token.family_id.clone())
            .bind(token.subject.clone())
            .bind(token.scope.clone())
            .bind(token.audience.clone())
            .bind(token.extra.clone())
            .bind(token.issued_at)
            .bind(token.expires_at)
            .bind(token.rotated_at)
            .bind(token.revoked_at)
            .bind(token.parent.clone())
            .bind(token.access.as_ref().map(|a| a.jti.clone()))
            .bind(token.access.as_ref().map(|a| a.exp))
            .bind(token.dpop_jkt.clone())
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict {
                        what: "refresh token",
                        name: refresh_name(&token.token_hash),
                    }
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    /// A refresh token by hash, for a transaction that may rotate it or
    /// revoke its family: on PostgreSQL, takes its family's lock first
    /// ([`Tx::lock_refresh_family`]) and then locks its row for the rest of
    /// this transaction (`SELECT ... FOR UPDATE`); on SQLite this
    /// transaction already excludes every other writer.
    ///
    /// On PostgreSQL one statement more than a plain read: the first reads
    /// the row without a lock to learn its family (which never changes) and
    /// takes the family's lock; the second locks the row and reads it as
    /// the transactions that held the family left it.
    pub async fn refresh_token_for_update(
        &mut self,
        hash: &[u8],
    ) -> Result<Option<RefreshToken>, StoreError> {
        if self.backend != Backend::Postgres {
            return fetch_refresh(&mut *self.tx, hash, false).await;
        }
        let keys = FAMILY_LOCK_KEYS.replace("$1", "family_id");
        // `void` cast to text: the `Any` driver decodes no `void` column.
        let sql = format!(
            "SELECT family_id, CAST(pg_advisory_xact_lock({keys}) AS TEXT) AS locked \
             FROM refresh_tokens WHERE token_hash = $1"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(hash.to_vec())
            .fetch_optional(&mut *self.tx)
            .await?
        else {
            return Ok(None);
        };
        let family: String = get(&row, "family_id")?;
        if !self.families_locked.contains(&family) {
            self.families_locked.push(family);
        }
        fetch_refresh(&mut *self.tx, hash, true).await
    }

    /// Takes the lock of refresh-token family `family_id` until this
    /// transaction ends (PostgreSQL `pg_advisory_xact_lock` on
    /// `(hashtext('keyward.refresh_family'), hashtext(family_id))`; nothing
    /// on SQLite, where `BEGIN IMMEDIATE` serializes writers). Take it
    /// before any row lock and before the writer lock (the store's lock
    /// order). [`Tx::refresh_token_for_update`] and
    /// [`Tx::revoke_refresh_family`] take it themselves; taking it again in
    /// one transaction costs nothing.
    pub async fn lock_refresh_family(&mut self, family_id: &str) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres || self.families_locked.iter().any(|f| f == family_id)
        {
            return Ok(());
        }
        let sql =
            format!("SELECT CAST(pg_advisory_xact_lock({FAMILY_LOCK_KEYS}) AS TEXT) AS locked");
        sqlx::query(&sql)
            .bind(family_id.to_owned())
            .fetch_one(&mut *self.tx)
            .await?;
        self.families_locked.push(family_id.to_owned());
        Ok(())
    }

    /// Marks a refresh token as exchanged at `at`. True if it was marked
    /// now, false if it had already been rotated (the first time stays);
    /// `NotFound` if there is no such token.
    pub async fn mark_refresh_rotated(
        &mut self,
        hash: &[u8],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET rotated_at = $1 \
             WHERE token_hash = $2 AND rotated_at IS NULL",
        )
        .bind(at)
        .bind(hash.to_vec())
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        match fetch_refresh(&mut *self.tx, hash, false).await? {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound {
                what: "refresh token",
                name: refresh_name(hash),
            }),
        }
    }

    /// Revokes, at `at`, every token of the family that is not revoked yet,
    /// and puts the family's access tokens on the revocation feed (those
    /// that expired more than [`REVOCATION_EXPIRY_MARGIN_SECS`] before `at`
    /// excepted); returns how many of each were revoked now. Tokens already
    /// revoked keep their first time, feed entries their first `seq`.
    ///
    /// On PostgreSQL it takes the family's lock ([`Tx::lock_refresh_family`],
    /// held already if the token was read with
    /// [`Tx::refresh_token_for_update`]), then locks every row of the
    /// family, then the store's writer lock (as [`Tx::revoke_jti`] does).
    /// Locking the rows in a statement of its own waits for any transaction
    /// still holding one of them (one that skipped the family lock), so the
    /// statements after it see what that transaction committed, such as a
    /// successor it inserted: no row of the family is missed.
    pub async fn revoke_refresh_family(
        &mut self,
        family_id: &str,
        at: Timestamp,
    ) -> Result<FamilyRevocation, StoreError> {
        if self.backend == Backend::Postgres {
            self.lock_refresh_family(family_id).await?;
            sqlx::query(
                "SELECT token_hash FROM refresh_tokens WHERE family_id = $1 \
                 ORDER BY token_hash FOR UPDATE",
            )
            .bind(family_id.to_owned())
            .execute(&mut *self.tx)
            .await?;
        }
        let access_tokens = self
            .feed_access_tokens(Lineage::Family(family_id), at)
            .await?;
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(family_id.to_owned())
        .execute(&mut *self.tx)
        .await?;
        Ok(FamilyRevocation {
            refresh_tokens: done.rows_affected(),
            access_tokens,
        })
    }

    /// Revokes every refresh-token family of client `client_id` in `env` as
    /// [`Tx::revoke_refresh_family`] does (its refresh tokens, and their
    /// access tokens onto the revocation feed). Call it before
    /// [`Tx::delete_client`], which deletes the rows that know those access
    /// tokens. An unknown client has nothing to revoke.
    ///
    /// On PostgreSQL it keeps the store's lock order: the locks of the
    /// client's families (in key order), then its rows, then the writer
    /// lock; so an exchange in flight finishes first, and the successor it
    /// inserted is revoked too. Call it before anything else that takes the
    /// writer lock in the transaction.
    pub async fn revoke_client_refresh_families(
        &mut self,
        env: &str,
        client_id: &str,
        at: Timestamp,
    ) -> Result<FamilyRevocation, StoreError> {
        if self.backend == Backend::Postgres {
            for sql in [
                CLIENT_FAMILIES_LOCK_SQL,
                "SELECT token_hash FROM refresh_tokens WHERE env = $1 AND client_id = $2 \
                 ORDER BY token_hash FOR UPDATE",
            ] {
                sqlx::query(sql)
                    .bind(env.to_owned())
                    .bind(client_id.to_owned())
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        let access_tokens = self
            .feed_access_tokens(Lineage::Client(env, client_id), at)
            .await?;
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 \
             WHERE env = $2 AND client_id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(env.to_owned())
        .bind(client_id.to_owned())
        .execute(&mut *self.tx)
        .await?;
        Ok(FamilyRevocation {
            refresh_tokens: done.rows_affected(),
            access_tokens,
        })
    }

    /// A grace reissue: marks the unused successor of refresh token `parent`
    /// (the token issued when `parent` was rotated, neither rotated nor
    /// revoked since) as rotated at `at`, so presenting it later is reuse,
    /// and puts its access token on the revocation feed. Returns the
    /// successor as it was before, or `None` if `parent` has no unused
    /// successor (it was used or revoked: presenting `parent` again is
    /// reuse). On PostgreSQL a concurrent exchange of the successor either
    /// commits first (then this finds none) or waits for this transaction.
    pub async fn supersede_refresh_successor(
        &mut self,
        parent: &[u8],
        at: Timestamp,
    ) -> Result<Option<RefreshToken>, StoreError> {
        let sql = format!(
            "UPDATE refresh_tokens SET rotated_at = $1 \
             WHERE parent = $2 AND rotated_at IS NULL AND revoked_at IS NULL \
             RETURNING {REFRESH_COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(at)
            .bind(parent.to_vec())
            .fetch_all(&mut *self.tx)
            .await?;
        let mut successor = None;
        for row in &rows {
            let mut t = refresh_from_row(row)?;
            self.feed_access_tokens(Lineage::Token(&t.token_hash), at)
                .await?;
            t.rotated_at = None;
            successor.get_or_insert(t);
        }
        Ok(successor)
    }

    /// Puts the recorded access tokens of the refresh tokens `which` selects
    /// on the revocation feed (those expired more than
    /// [`REVOCATION_EXPIRY_MARGIN_SECS`] before `at` excepted), by issue
    /// time; returns how many were added now.
    async fn feed_access_tokens(
        &mut self,
        which: Lineage<'_>,
        at: Timestamp,
    ) -> Result<u64, StoreError> {
        self.writer_lock().await?;
        let filter = match which {
            Lineage::Family(_) => "family_id = $3",
            Lineage::Token(_) => "token_hash = $3",
            Lineage::Client(..) => "env = $3 AND client_id = $4",
        };
        let sql = format!(
            "INSERT INTO revocations (env, jti, exp, revoked_at) \
             SELECT env, access_jti, access_exp, $1 FROM refresh_tokens \
             WHERE {filter} AND access_jti IS NOT NULL AND access_exp > $2 \
             ORDER BY issued_at, access_jti \
             ON CONFLICT (env, jti) DO NOTHING"
        );
        let q = sqlx::query(&sql)
            .bind(at)
            .bind(at.saturating_sub(REVOCATION_EXPIRY_MARGIN_SECS));
        let q = match which {
            Lineage::Family(f) => q.bind(f.to_owned()),
            Lineage::Token(h) => q.bind(h.to_vec()),
            Lineage::Client(env, id) => q.bind(env.to_owned()).bind(id.to_owned()),
        };
        Ok(q.execute(&mut *self.tx).await?.rows_affected())
    }

    /// Revokes one refresh token at `at`. True if it was revoked now; false
    /// if it is unknown or was already revoked (RFC 7009 answers both alike).
    /// Its access token is left alone: to end a grant, revoke its family
    /// ([`Tx::revoke_refresh_family`]).
    pub async fn revoke_refresh_token(
        &mut self,
        hash: &[u8],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(hash.to_vec())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes refresh tokens whose `expires_at` is before `before`;
    /// returns how many.
    pub async fn delete_expired_refresh_tokens(
        &mut self,
        before: Timestamp,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected())
    }

    /// Adds access-token `jti` of `env` (expiring at `exp`) to the
    /// revocation feed and returns the new entry; `None` if it is already
    /// there (nothing changes: the first entry and its `seq` stay).
    /// `NotFound` if the environment does not exist. On PostgreSQL this
    /// takes the store's writer lock (see the module documentation).
    pub async fn revoke_jti(
        &mut self,
        env: &str,
        jti: &str,
        exp: Timestamp,
        at: Timestamp,
    ) -> Result<Option<Revocation>, StoreError> {
        self.writer_lock().await?;
        self.environment(env).await?;
        let sql = format!(
            "INSERT INTO revocations (env, jti, exp, revoked_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (env, jti) DO NOTHING RETURNING {REVOCATION_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(env.to_owned())
            .bind(jti.to_owned())
            .bind(exp)
            .bind(at)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(revocation_from_row).transpose()
    }

    /// Deletes revocations of access tokens that expired before
    /// `expired_before` (`exp < expired_before`); returns how many. Cursors
    /// stay valid (see the module documentation).
    pub async fn purge_revocations(
        &mut self,
        expired_before: Timestamp,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM revocations WHERE exp < $1")
            .bind(expired_before)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes recorded client-assertion jtis that expired before `before`;
    /// returns how many. (They no longer block anything: see
    /// [`Store::use_assertion_jti`].)
    pub async fn delete_expired_assertion_jtis(
        &mut self,
        before: Timestamp,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM assertion_jtis WHERE exp < $1")
            .bind(before)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected())
    }
}
