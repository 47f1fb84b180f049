//! [`Store`]: one API over SQLite and PostgreSQL, and [`Tx`], a write
//! transaction.
//!
//! Both backends run through sqlx's `Any` driver with one set of queries
//! (`$n` placeholders; only `i64`, `String`, `Vec<u8>` and `Option`s of them
//! cross the boundary). Each backend has its own migrations, embedded in the
//! binary. Every write happens inside a [`Tx`]; a `Tx` dropped without
//! [`Tx::commit`] rolls back, so a failed command leaves the store as it was
//! (DESIGN rule 5).
//!
//! Concurrency: on SQLite a `Tx` starts with `BEGIN IMMEDIATE`, taking the
//! database's single write lock up front (other writers wait up to the busy
//! timeout). On PostgreSQL, appending to the audit chain, checking the root
//! key in a transaction and root-key rotation take one transaction-scoped
//! advisory lock (the "writer lock") before reading, so concurrent writers
//! never fork the chain and never seal a key under a root key that is being
//! rotated away. Every change to environments, keys, clients, admin tokens
//! or the root key takes the same lock first and moves the change counter
//! ([`Store::generation`]) in the same transaction; so does adding to the
//! revocation feed (which keeps its `seq` order equal to commit order; see
//! [`crate::tokens`]), without moving the counter. Refresh tokens and
//! assertion jtis, written on the token path, take no store-wide lock,
//! except when revoking a refresh-token family or superseding a token's
//! successor, which add to the revocation feed and so take the writer lock.
//!
//! Everything that reads a refresh token to rotate it or revokes its family
//! first takes that family's lock (PostgreSQL: a transaction-scoped advisory
//! lock on the two keys `(hashtext('keyward.refresh_family'),
//! hashtext(family_id))`, which never meets the writer lock's single-bigint
//! key; see [`Tx::lock_refresh_family`]), so one family's exchanges, grace
//! reissues, reuse detections and revocations run one after the other.
//!
//! Lock order on PostgreSQL, kept by every transaction: **family lock, then
//! row locks, then the writer lock** (a transaction holding the writer lock
//! takes no family lock after it). Deleting a client keeps it by revoking
//! the client's families ([`Tx::revoke_client_refresh_families`]: their
//! locks, then their rows) before [`Tx::delete_client`] takes the writer
//! lock. Should two transactions still meet in opposite orders (a caller
//! that skips a step), the server's deadlock detector aborts one, which
//! changes nothing (a failed request), and no revocation misses a row.
//!
//! The issuer's records ([`crate::clients`], [`crate::tokens`],
//! [`crate::admin`]) add their methods to `Store` and `Tx` in their own
//! modules.

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use keyward_jose::seal::{open, rewrap, RootKey, SealedKey};
use keyward_jose::Algorithm;
use keyward_jose::SealError;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Executor, Row};

use crate::audit::{
    record_hash, AuditEntry, AuditRecord, AuditReport, ChainWalker, StoredAudit, GENESIS_HASH,
};
use crate::error::{is_unique_violation, StoreError};
use crate::records::{issuer_key, Environment, KeyMaterial, KeyRecord, KeyStoreName, Timestamp};
use crate::sealing::key_aad;

/// What the store records about its root key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootKeyRecord {
    /// [`RootKey::key_id`] of the key the store's keys are sealed under.
    pub id: String,
    /// For a root key in a device, [`RootKey::reference`]: how every
    /// command and server finds it. `None` for a local root key.
    pub reference: Option<String>,
}

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The `meta` row holding the id of the root key the store's keys are sealed under.
pub(crate) const META_ROOT_KEY_ID: &str = "root_key_id";
/// The `meta` row holding, for a root key in a device, how to find it
/// (`pkcs11:<label>`, `aws-kms:<key ARN>`); absent for a local root key.
pub(crate) const META_ROOT_KEY_REF: &str = "root_key_ref";
/// The `meta` row holding the change counter (see [`Store::generation`]).
const META_GENERATION: &str = "generation";
/// Advisory lock serializing audit-chain appends and root-key changes on
/// PostgreSQL (the id spells "keyward" + 1).
const WRITER_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(7738144482497766401)";
/// Rows read per batch while verifying the audit chain.
const VERIFY_BATCH: i64 = 1000;
/// How long SQLite waits for another writer's lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 15_000;

const ENV_COLUMNS: &str = "name, issuer, policy, created_at, key_store, dpop_nonce_secret";
const KEY_COLUMNS: &str =
    "env, kid, alg, size_bits, public_jwk, sealed, origin, owner, description, \
     created_at, activates_at, retires_at, removes_at, revoked_at, key_store, hw_ref, destroyed_at";
const AUDIT_COLUMNS: &str = "seq, at, actor, action, env, subject, detail, prev_hash, hash";

/// The persistent state of a keyward installation. Cheap to clone (a
/// connection pool inside).
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
}

/// Migrations compiled into the binary, one set per backend.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

const SQLITE_MIGRATIONS: Embedded = Embedded(&[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "issuer",
        include_str!("../migrations/sqlite/0002_issuer.sql"),
    ),
    (
        3,
        "issuer_unique",
        include_str!("../migrations/sqlite/0003_issuer_unique.sql"),
    ),
    (
        4,
        "refresh_lineage",
        include_str!("../migrations/sqlite/0004_refresh_lineage.sql"),
    ),
    (
        5,
        "key_stores",
        include_str!("../migrations/sqlite/0005_key_stores.sql"),
    ),
    (
        6,
        "admin_permissions",
        include_str!("../migrations/sqlite/0006_admin_permissions.sql"),
    ),
    (
        7,
        "dpop",
        include_str!("../migrations/sqlite/0007_dpop.sql"),
    ),
    (
        8,
        "client_mtls",
        include_str!("../migrations/sqlite/0008_client_mtls.sql"),
    ),
    (
        9,
        "login_flows",
        include_str!("../migrations/sqlite/0009_login_flows.sql"),
    ),
    (
        10,
        "dpop_nonce",
        include_str!("../migrations/sqlite/0010_dpop_nonce.sql"),
    ),
    (
        11,
        "token_exchange",
        include_str!("../migrations/sqlite/0011_token_exchange.sql"),
    ),
    (
        12,
        "device_grant",
        include_str!("../migrations/sqlite/0012_device_grant.sql"),
    ),
]);
const POSTGRES_MIGRATIONS: Embedded = Embedded(&[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "issuer",
        include_str!("../migrations/postgres/0002_issuer.sql"),
    ),
    (
        3,
        "issuer_unique",
        include_str!("../migrations/postgres/0003_issuer_unique.sql"),
    ),
    (
        4,
        "refresh_lineage",
        include_str!("../migrations/postgres/0004_refresh_lineage.sql"),
    ),
    (
        5,
        "key_stores",
        include_str!("../migrations/postgres/0005_key_stores.sql"),
    ),
    (
        6,
        "admin_permissions",
        include_str!("../migrations/postgres/0006_admin_permissions.sql"),
    ),
    (
        7,
        "dpop",
        include_str!("../migrations/postgres/0007_dpop.sql"),
    ),
    (
        8,
        "client_mtls",
        include_str!("../migrations/postgres/0008_client_mtls.sql"),
    ),
    (
        9,
        "login_flows",
        include_str!("../migrations/postgres/0009_login_flows.sql"),
    ),
    (
        10,
        "dpop_nonce",
        include_str!("../migrations/postgres/0010_dpop_nonce.sql"),
    ),
    (
        11,
        "token_exchange",
        include_str!("../migrations/postgres/0011_token_exchange.sql"),
    ),
    (
        12,
        "device_grant",
        include_str!("../migrations/postgres/0012_device_grant.sql"),
    ),
]);

/// The newest migration this build knows (both backends number theirs alike).
pub(crate) fn latest_migration() -> i64 {
    let last = |m: &Embedded| m.0.iter().map(|(v, _, _)| *v).max().unwrap_or(0);
    last(&SQLITE_MIGRATIONS).max(last(&POSTGRES_MIGRATIONS))
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Percent-encodes a path for a `sqlite://` URL (sqlx decodes it again).
fn sqlite_url(path: &Path) -> Result<String, StoreError> {
    let text = path.to_str().ok_or(StoreError::InvalidUrl(
        "the SQLite database path is not valid UTF-8",
    ))?;
    let mut url = String::from("sqlite://");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url.push_str("?mode=rwc");
    Ok(url)
}

/// Creates the database file (mode 0600) and its directory if missing, and
/// returns the file's canonical path.
fn prepare_sqlite_file(path: &Path) -> Result<PathBuf, StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(parent)
                .map_err(|e| StoreError::io("create directory", parent, e))?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map_err(|e| StoreError::io("open database file", path, e))?;
    path.canonicalize()
        .map_err(|e| StoreError::io("resolve database path", path, e))
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`: the parent
    /// directory is created (mode 0700) and the file (mode 0600) if missing;
    /// connections use WAL journaling, a busy timeout and foreign keys; the
    /// schema is migrated.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let path = prepare_sqlite_file(path)?;
        let url = sqlite_url(&path)?;
        Store::connect_sqlite(&url, false).await
    }

    /// Opens a store by URL: `postgres://` or `postgresql://` selects
    /// PostgreSQL; `sqlite:` selects SQLite (`sqlite:PATH` or
    /// `sqlite://PATH` without parameters is opened as by
    /// [`Store::open_sqlite`]; `sqlite::memory:` is a private in-memory
    /// database). The schema is migrated.
    pub async fn open_url(url: &str) -> Result<Store, StoreError> {
        match check_url(url)? {
            UrlTarget::Postgres => Store::connect_postgres(url).await,
            // One connection that never closes: each new in-memory connection
            // would otherwise be a different, empty database.
            UrlTarget::SqliteMemory => Store::connect_sqlite("sqlite::memory:", true).await,
            UrlTarget::SqliteFile(path) => Store::open_sqlite(Path::new(&path)).await,
            UrlTarget::SqliteWithParams => Store::connect_sqlite(url, false).await,
        }
    }

    /// Checks a database URL by the rules of [`Store::open_url`], without
    /// connecting or touching a file. The error never repeats the URL (it
    /// may hold a password).
    pub fn check_url(url: &str) -> Result<(), StoreError> {
        check_url(url).map(|_| ())
    }

    async fn connect_sqlite(url: &str, memory: bool) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let mut options = AnyPoolOptions::new()
            .max_connections(if memory { 1 } else { 4 })
            .min_connections(u32::from(memory))
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute(
                        format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str(),
                    )
                    .await?;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    Ok(())
                })
            });
        if memory {
            options = options.idle_timeout(None).max_lifetime(None);
        }
        let pool = options.connect(url).await?;
        Store::migrate(pool, Backend::Sqlite).await
    }

    async fn connect_postgres(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        Store::migrate(pool, Backend::Postgres).await
    }

    async fn migrate(pool: AnyPool, backend: Backend) -> Result<Store, StoreError> {
        let source = match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        let migrator = Migrator::new(source).await?;
        migrator.run(&pool).await?;
        let store = Store { pool, backend };
        store.backfill_issuer_keys().await?;
        Ok(store)
    }

    /// Fills `issuer_key` of environments written before it existed. Two
    /// such environments that share an issuer URL cannot both have it: the
    /// older keeps it, and the other stays without one until `env update`
    /// gives it an issuer of its own (or `env delete` removes it).
    async fn backfill_issuer_keys(&self) -> Result<(), StoreError> {
        let rows = sqlx::query(
            "SELECT name, issuer FROM environments WHERE issuer_key IS NULL ORDER BY created_at, name",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let name: String = get(row, "name")?;
            let issuer: String = get(row, "issuer")?;
            let key = issuer_key(&issuer);
            let taken = sqlx::query("SELECT 1 AS one FROM environments WHERE issuer_key = $1")
                .bind(key.clone())
                .fetch_optional(&self.pool)
                .await?;
            if taken.is_some() {
                continue;
            }
            match sqlx::query("UPDATE environments SET issuer_key = $1 WHERE name = $2")
                .bind(key)
                .bind(name)
                .execute(&self.pool)
                .await
            {
                Ok(_) => {}
                // Another process filled it in at the same moment.
                Err(e) if is_unique_violation(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The database behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The id of the root key this store's keys are sealed under, if the
    /// store has been initialized.
    pub async fn root_key_id(&self) -> Result<Option<String>, StoreError> {
        read_root_key_id(&self.pool).await
    }

    /// Where the store's root key lives when a device holds it
    /// (`pkcs11:<label>`, `aws-kms:<key ARN>`, as [`RootKey::reference`]
    /// gave it); `None` for a local root key (or an uninitialized store).
    pub async fn root_key_ref(&self) -> Result<Option<String>, StoreError> {
        Ok(self.root_key_record().await?.and_then(|r| r.reference))
    }

    /// The root key's id and device reference, read together (one
    /// statement, so a concurrent rotation is seen whole or not at all);
    /// `None` before the store is initialized.
    pub async fn root_key_record(&self) -> Result<Option<RootKeyRecord>, StoreError> {
        read_root_key_record(&self.pool).await
    }

    /// Checks that `root` is the key this store's keys are sealed under.
    pub async fn check_root_key(&self, root: &RootKey) -> Result<(), StoreError> {
        compare_root_key(self.root_key_id().await?, root)
    }

    /// [`Store::check_root_key`], then proves that `root` opens the newest
    /// sealed (`local`) key, if there is one: a device root's id derives
    /// from its reference, so a device object replaced under the same name
    /// has the right id but another key ([`StoreError::RootKeyDoesNotOpen`]).
    /// A device root is asked once (on a blocking thread).
    pub async fn check_root_key_opens(&self, root: &RootKey) -> Result<(), StoreError> {
        self.check_root_key(root).await?;
        let row = sqlx::query(
            "SELECT env, kid, sealed FROM keys WHERE key_store = 'local' \
             ORDER BY created_at DESC, kid LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(()) };
        let env: String = get(&row, "env")?;
        let kid: String = get(&row, "kid")?;
        let blob: Vec<u8> = get(&row, "sealed")?;
        let sealed = stored_sealed(&kid, &blob)?;
        let root = root.clone();
        let aad = key_aad(&env, &kid);
        let opened = tokio::task::spawn_blocking(move || {
            open(&root, &aad, &sealed)
                .map(|_| ())
                .map_err(|e| (root.key_id(), e))
        })
        .await
        .map_err(|e| joined(e, "opening a sealed key"))?;
        match opened {
            Ok(()) => Ok(()),
            Err((id, SealError::OpenFailed)) => Err(StoreError::RootKeyDoesNotOpen { id, kid }),
            Err((_, e)) => Err(e.into()),
        }
    }

    /// One environment; `NotFound` if there is none by that name.
    pub async fn environment(&self, name: &str) -> Result<Environment, StoreError> {
        fetch_environment(&self.pool, name).await
    }

    /// Every environment, by name.
    pub async fn environments(&self) -> Result<Vec<Environment>, StoreError> {
        let sql = format!("SELECT {ENV_COLUMNS} FROM environments ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(env_from_row).collect()
    }

    /// The keys of environment `env`, by `activates_at` then kid; `NotFound`
    /// if the environment does not exist.
    pub async fn keys(&self, env: &str) -> Result<Vec<KeyRecord>, StoreError> {
        fetch_keys(&self.pool, env).await
    }

    /// One key by kid; `NotFound` if absent.
    pub async fn key(&self, kid: &str) -> Result<KeyRecord, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE kid = $1");
        let row = sqlx::query(&sql)
            .bind(kid.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "key",
                name: kid.to_owned(),
            })?;
        key_from_row(&row)
    }

    /// Every environment's keys, by environment, then `activates_at`, then
    /// kid (what a server loads on start and reload).
    pub async fn keys_all(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY env, activates_at, kid");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Device keys that left the JWKS by `now` (removed or revoked) and
    /// whose device object is not destroyed yet, by kid: what the sweep
    /// destroys.
    pub async fn keys_to_destroy(&self, now: Timestamp) -> Result<Vec<KeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE key_store <> 'local' AND destroyed_at IS NULL \
             AND (removes_at <= $1 OR revoked_at <= $2) ORDER BY kid"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// The store's change counter. Every committed transaction that changed
    /// environments, keys, clients, admin tokens or the root key moved it
    /// forward (by one per change, in that transaction: a rolled-back
    /// transaction leaves it as it was). Refresh tokens, revocations and
    /// assertion jtis do not move it: servers read those directly.
    ///
    /// A running server polls it and reloads when it has moved. Read it
    /// *before* loading: a change committed during the load then shows up as
    /// a moved counter at the next poll, so nothing is missed. (On
    /// PostgreSQL the counter's row is written under the store's writer
    /// lock, so counter order is commit order.)
    pub async fn generation(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT value FROM meta WHERE name = $1")
            .bind(META_GENERATION)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(0) };
        let text: String = get(&row, "value")?;
        text.parse()
            .map_err(|_| StoreError::Corrupt("meta generation is not an integer".into()))
    }

    /// Up to `limit` audit records with `seq > after_seq`, in order.
    pub async fn audit(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let rows = fetch_audit_batch(&self.pool, after_seq, limit).await?;
        rows.into_iter().map(audit_record).collect()
    }

    /// Walks the whole audit chain (in batches) and reports its length, head
    /// and the first break, if any. A tampered chain is a report, not an error.
    pub async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        self.walk_audit(ChainWalker::new()).await
    }

    /// [`Store::verify_audit`], also finding the record whose hash is
    /// `head` (a head recorded earlier): if the chain is intact and has it,
    /// every record since links back to it, so nothing was cut off the end.
    pub async fn verify_audit_expecting(&self, head: &str) -> Result<AuditReport, StoreError> {
        self.walk_audit(ChainWalker::new().expecting_head(head))
            .await
    }

    async fn walk_audit(&self, mut walker: ChainWalker) -> Result<AuditReport, StoreError> {
        let mut after = i64::MIN;
        loop {
            let batch = fetch_audit_batch(&self.pool, after, VERIFY_BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = last.seq;
            let done = (batch.len() as i64) < VERIFY_BATCH;
            batch.iter().for_each(|r| walker.push(r));
            if done {
                break;
            }
        }
        Ok(walker.finish())
    }

    /// The number of audit records.
    pub async fn audit_len(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM audit")
            .fetch_one(&self.pool)
            .await?;
        get(&row, "n")
    }

    /// Starts a write transaction. On SQLite it holds the database's write
    /// lock until it ends.
    pub async fn begin(&self) -> Result<Tx<'static>, StoreError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx {
            tx,
            backend: self.backend,
            writer_locked: false,
            families_locked: Vec::new(),
            _store: PhantomData,
        })
    }

    /// Re-wraps every sealed (`local`) key from `old` to `new` and records
    /// `new`'s id and device reference (cleared for a local `new`), in one
    /// transaction, with an audit record `root_key.rotate` naming both keys'
    /// ids, stores and references: [`Tx::rewrap_all`], committed. Fails
    /// with `WrongRootKey` if `old` is not the store's root key; any failure
    /// (a key `old` does not open, a device that stops answering half-way)
    /// leaves everything unchanged. Returns the number of keys re-wrapped.
    pub async fn rewrap_all(
        &self,
        old: &RootKey,
        new: &RootKey,
        actor: &str,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin().await?;
        let n = tx.rewrap_all(old, new, actor, now).await?;
        tx.commit().await?;
        Ok(n)
    }
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx<'a> {
    pub(crate) tx: sqlx::Transaction<'static, Any>,
    pub(crate) backend: Backend,
    /// Whether this transaction already holds the writer lock (PostgreSQL).
    writer_locked: bool,
    /// Refresh-token families whose lock this transaction holds
    /// (PostgreSQL; see [`Tx::lock_refresh_family`]).
    pub(crate) families_locked: Vec<String>,
    _store: PhantomData<&'a Store>,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Tx<'_> {
    /// Records the root key the store's keys will be sealed under: its id
    /// and, for a device root, its reference ([`Store::root_key_ref`]).
    /// `AlreadyInitialized` if one is recorded.
    pub async fn initialize_root(&mut self, root: &RootKey) -> Result<(), StoreError> {
        self.initialize(&root.key_id()).await?;
        self.set_root_key_ref(root.reference().as_deref()).await
    }

    async fn set_root_key_ref(&mut self, reference: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM meta WHERE name = $1")
            .bind(META_ROOT_KEY_REF)
            .execute(&mut *self.tx)
            .await?;
        if let Some(r) = reference {
            sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2)")
                .bind(META_ROOT_KEY_REF)
                .bind(r.to_owned())
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// The work of [`Store::rewrap_all`] inside this transaction, which the
    /// caller commits (or drops: nothing changes). The sealed keys are read
    /// and re-wrapped on a blocking thread (a device root blocks), every
    /// one before any is written.
    pub async fn rewrap_all(
        &mut self,
        old: &RootKey,
        new: &RootKey,
        actor: &str,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        // Takes the writer lock first (PostgreSQL), so transactions that
        // called `Tx::check_root_key` finish before, or see the new id after.
        self.check_root_key(old).await?;

        // Device keys have no sealed blob: nothing to re-wrap.
        let rows =
            sqlx::query("SELECT env, kid, sealed FROM keys WHERE key_store = 'local' ORDER BY kid")
                .fetch_all(&mut *self.tx)
                .await?;
        let mut sealed = Vec::with_capacity(rows.len());
        for row in &rows {
            let env: String = get(row, "env")?;
            let kid: String = get(row, "kid")?;
            let blob: Vec<u8> = get(row, "sealed")?;
            let key = stored_sealed(&kid, &blob)?;
            sealed.push((key_aad(&env, &kid), kid, key));
        }
        let (from, to) = (old.clone(), new.clone());
        let rewrapped = tokio::task::spawn_blocking(move || {
            sealed
                .into_iter()
                .map(|(aad, kid, key)| Ok((kid, rewrap(&from, &to, &aad, &key)?.to_bytes())))
                .collect::<Result<Vec<_>, SealError>>()
        })
        .await
        .map_err(|e| joined(e, "re-wrapping the sealed keys"))??;
        for (kid, blob) in &rewrapped {
            sqlx::query("UPDATE keys SET sealed = $1 WHERE kid = $2")
                .bind(blob.clone())
                .bind(kid.clone())
                .execute(&mut *self.tx)
                .await?;
        }
        // The environments' DPoP nonce secrets are sealed the same way.
        let rows = sqlx::query(
            "SELECT name, dpop_nonce_secret FROM environments \
             WHERE dpop_nonce_secret IS NOT NULL ORDER BY name",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        let mut secrets = Vec::with_capacity(rows.len());
        for row in &rows {
            let env: String = get(row, "name")?;
            let blob: Vec<u8> = get(row, "dpop_nonce_secret")?;
            let sealed = SealedKey::from_bytes(&blob).map_err(|e| {
                StoreError::Corrupt(format!(
                    "environment {env:?}: malformed sealed DPoP nonce secret: {e}"
                ))
            })?;
            secrets.push((env, sealed));
        }
        let (from, to) = (old.clone(), new.clone());
        let secrets = tokio::task::spawn_blocking(move || {
            secrets
                .into_iter()
                .map(|(env, s)| {
                    let aad = crate::sealing::dpop_nonce_aad(&env);
                    Ok((env, rewrap(&from, &to, &aad, &s)?.to_bytes()))
                })
                .collect::<Result<Vec<_>, SealError>>()
        })
        .await
        .map_err(|e| joined(e, "re-wrapping the DPoP nonce secrets"))??;
        for (env, blob) in secrets {
            sqlx::query("UPDATE environments SET dpop_nonce_secret = $1 WHERE name = $2")
                .bind(blob)
                .bind(env)
                .execute(&mut *self.tx)
                .await?;
        }
        sqlx::query("UPDATE meta SET value = $1 WHERE name = $2")
            .bind(new.key_id())
            .bind(META_ROOT_KEY_ID)
            .execute(&mut *self.tx)
            .await?;
        self.set_root_key_ref(new.reference().as_deref()).await?;
        self.bump_generation().await?;
        self.append_audit(AuditEntry {
            at: now,
            actor: actor.to_owned(),
            action: "root_key.rotate".to_owned(),
            env: None,
            subject: None,
            detail: serde_json::json!({
                "from": old.key_id(),
                "to": new.key_id(),
                "from_store": old.store(),
                "to_store": new.store(),
                "from_ref": old.reference(),
                "to_ref": new.reference(),
                "keys": rewrapped.len(),
            }),
        })
        .await?;
        Ok(rewrapped.len())
    }

    /// Records the id of the root key the store's keys will be sealed under.
    /// `AlreadyInitialized` if one is recorded.
    pub async fn initialize(&mut self, root_key_id: &str) -> Result<(), StoreError> {
        self.writer_lock().await?;
        if read_root_key_id(&mut *self.tx).await?.is_some() {
            return Err(StoreError::AlreadyInitialized);
        }
        sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2)")
            .bind(META_ROOT_KEY_ID)
            .bind(root_key_id.to_owned())
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyInitialized
                } else {
                    e.into()
                }
            })?;
        self.bump_generation().await
    }

    /// Checks, inside this transaction, that `root` is the store's root key.
    /// Call it before sealing keys in a transaction: it also serializes the
    /// transaction with a concurrent root-key rotation ([`Store::rewrap_all`]),
    /// so keys written in it stay under the checked key. (SQLite: already
    /// serialized by the write lock. PostgreSQL: takes the store's writer
    /// lock until the transaction ends.)
    pub async fn check_root_key(&mut self, root: &RootKey) -> Result<(), StoreError> {
        self.writer_lock().await?;
        compare_root_key(read_root_key_id(&mut *self.tx).await?, root)
    }

    /// Takes the store's writer lock now, before this transaction reads
    /// what it will decide on (PostgreSQL; on SQLite `BEGIN IMMEDIATE`
    /// already holds it). A check-then-write transaction (retire only if
    /// another key still signs, delete only if nothing is in use) calls it
    /// first, so no concurrent change slips between its check and its write.
    pub async fn lock_for_change(&mut self) -> Result<(), StoreError> {
        self.writer_lock().await
    }

    /// Every environment, by name, as this transaction sees it.
    pub async fn environments(&mut self) -> Result<Vec<Environment>, StoreError> {
        let sql = format!("SELECT {ENV_COLUMNS} FROM environments ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&mut *self.tx).await?;
        rows.iter().map(env_from_row).collect()
    }

    /// On PostgreSQL, takes the transaction-scoped advisory lock that
    /// serializes audit appends and root-key changes across processes
    /// (re-entrant within a transaction). SQLite's `BEGIN IMMEDIATE` already
    /// holds the database's only write lock.
    pub(crate) async fn writer_lock(&mut self) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres && !self.writer_locked {
            self.tx.execute(WRITER_LOCK_SQL).await?;
            self.writer_locked = true;
        }
        Ok(())
    }

    /// Increments the store's change counter ([`Store::generation`]) in
    /// this transaction. Every method that changes environments, keys,
    /// clients, admin tokens or the root key calls it after its write, and
    /// takes the writer lock ([`Tx::writer_lock`]) *before* its first read
    /// or write, so such transactions always take the writer lock before the
    /// counter's row and the rows they change: no lock-order inversion
    /// between them on PostgreSQL.
    pub(crate) async fn bump_generation(&mut self) -> Result<(), StoreError> {
        self.writer_lock().await?;
        // An upsert, so a store whose counter row went missing recovers.
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, '1') ON CONFLICT (name) \
             DO UPDATE SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT)",
        )
        .bind(META_GENERATION)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Creates an environment; `Conflict` if the name is taken.
    pub async fn create_environment(&mut self, env: &Environment) -> Result<(), StoreError> {
        self.writer_lock().await?;
        let conflict = || StoreError::Conflict {
            what: "environment",
            name: env.name.clone(),
        };
        let exists = sqlx::query("SELECT 1 AS one FROM environments WHERE name = $1")
            .bind(env.name.clone())
            .fetch_optional(&mut *self.tx)
            .await?;
        if exists.is_some() {
            return Err(conflict());
        }
        let key = self.free_issuer_key(env).await?;
        sqlx::query(
            "INSERT INTO environments (name, issuer, policy, created_at, issuer_key, key_store, dpop_nonce_secret) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(env.name.clone())
        .bind(env.issuer.clone())
        .bind(policy_json(env)?)
        .bind(env.created_at)
        .bind(key)
        .bind(env.key_store.as_str())
        .bind(env.dpop_nonce_secret.as_ref().map(|s| s.to_bytes()))
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

    /// `env`'s issuer key, after checking no other environment serves at
    /// it (`IssuerTaken` names the one that does). The unique index stays
    /// the last word; this check gives the clear error.
    async fn free_issuer_key(&mut self, env: &Environment) -> Result<String, StoreError> {
        let key = issuer_key(&env.issuer);
        let holder =
            sqlx::query("SELECT name FROM environments WHERE issuer_key = $1 AND name <> $2")
                .bind(key.clone())
                .bind(env.name.clone())
                .fetch_optional(&mut *self.tx)
                .await?;
        if let Some(row) = holder {
            return Err(StoreError::IssuerTaken {
                issuer: env.issuer.clone(),
                env: get(&row, "name")?,
            });
        }
        Ok(key)
    }

    /// Deletes environment `name` and everything that belongs to it: its
    /// keys, clients, refresh tokens, revocation feed and assertion jtis.
    /// The audit chain keeps its records. `NotFound` if absent. Whether the
    /// deletion is wise is the caller's to decide.
    pub async fn delete_environment(&mut self, name: &str) -> Result<(), StoreError> {
        self.writer_lock().await?;
        fetch_environment(&mut *self.tx, name).await?;
        for table in [
            "refresh_tokens",
            "authorization_codes",
            "login_requests",
            "consents",
            "pushed_requests",
            "device_authorizations",
            "browser_sessions",
            "assertion_jtis",
            "revocations",
            "clients",
            "keys",
            "environments",
        ] {
            let column = if table == "environments" {
                "name"
            } else {
                "env"
            };
            let sql = format!("DELETE FROM {table} WHERE {column} = $1");
            sqlx::query(&sql)
                .bind(name.to_owned())
                .execute(&mut *self.tx)
                .await?;
        }
        self.bump_generation().await
    }

    /// Updates an environment's issuer, policy, key store (the store of
    /// its new keys: existing keys keep theirs) and DPoP nonce secret;
    /// `NotFound` if absent.
    pub async fn update_environment(&mut self, env: &Environment) -> Result<(), StoreError> {
        self.writer_lock().await?;
        let key = self.free_issuer_key(env).await?;
        let done = sqlx::query(
            "UPDATE environments SET issuer = $1, policy = $2, issuer_key = $3, key_store = $4, \
             dpop_nonce_secret = $5 WHERE name = $6",
        )
        .bind(env.issuer.clone())
        .bind(policy_json(env)?)
        .bind(key)
        .bind(env.key_store.as_str())
        .bind(env.dpop_nonce_secret.as_ref().map(|s| s.to_bytes()))
        .bind(env.name.clone())
        .execute(&mut *self.tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::IssuerTaken {
                    issuer: env.issuer.clone(),
                    env: "(another)".into(),
                }
            } else {
                e.into()
            }
        })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "environment",
                name: env.name.clone(),
            });
        }
        self.bump_generation().await
    }

    /// One environment, as this transaction sees it.
    pub async fn environment(&mut self, name: &str) -> Result<Environment, StoreError> {
        fetch_environment(&mut *self.tx, name).await
    }

    /// The keys of `env`, as this transaction sees them.
    pub async fn keys(&mut self, env: &str) -> Result<Vec<KeyRecord>, StoreError> {
        fetch_keys(&mut *self.tx, env).await
    }

    /// Inserts a key; `Conflict` if the kid exists, `NotFound` if its
    /// environment does not.
    pub async fn insert_key(&mut self, key: &KeyRecord) -> Result<(), StoreError> {
        self.writer_lock().await?;
        // Checked first so the error names the environment, not a constraint.
        fetch_environment(&mut *self.tx, &key.env).await?;
        let conflict = || StoreError::Conflict {
            what: "key",
            name: key.kid.clone(),
        };
        let exists = sqlx::query("SELECT 1 AS one FROM keys WHERE kid = $1")
            .bind(key.kid.clone())
            .fetch_optional(&mut *self.tx)
            .await?;
        if exists.is_some() {
            return Err(conflict());
        }
        let sql = format!(
            "INSERT INTO keys ({KEY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        );
        let (sealed, hw_ref) = match &key.material {
            KeyMaterial::Sealed(s) => (s.to_bytes(), None),
            KeyMaterial::Device { store, reference } => {
                if !store.is_device() || reference.is_empty() {
                    return Err(StoreError::Invalid {
                        what: "key",
                        reason: format!(
                            "key {:?}: a device key needs a device store and a reference",
                            key.kid
                        ),
                    });
                }
                (Vec::new(), Some(reference.clone()))
            }
        };
        sqlx::query(&sql)
            .bind(key.env.clone())
            .bind(key.kid.clone())
            .bind(key.alg.name())
            .bind(i64::from(key.size_bits))
            .bind(key.public_jwk.clone())
            .bind(sealed)
            .bind(key.origin.clone())
            .bind(key.owner.clone())
            .bind(key.description.clone())
            .bind(key.created_at)
            .bind(key.activates_at)
            .bind(key.retires_at)
            .bind(key.removes_at)
            .bind(key.revoked_at)
            .bind(key.key_store().as_str())
            .bind(hw_ref)
            .bind(key.destroyed_at)
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

    /// Writes `activates_at`, `retires_at`, `removes_at` and `revoked_at` of
    /// an existing key (matched by kid and environment); `NotFound` if absent.
    pub async fn update_key_times(&mut self, key: &KeyRecord) -> Result<(), StoreError> {
        self.writer_lock().await?;
        let done = sqlx::query(
            "UPDATE keys SET activates_at = $1, retires_at = $2, removes_at = $3, revoked_at = $4 \
             WHERE kid = $5 AND env = $6",
        )
        .bind(key.activates_at)
        .bind(key.retires_at)
        .bind(key.removes_at)
        .bind(key.revoked_at)
        .bind(key.kid.clone())
        .bind(key.env.clone())
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "key",
                name: key.kid.clone(),
            });
        }
        self.bump_generation().await
    }

    /// Records that device key `kid` was destroyed in its device (or its
    /// deletion scheduled) at `at`. `NotFound` if there is no such device
    /// key; `Conflict` if it is already marked (another replica's sweep
    /// got there first). A local key has no device object: `Invalid`.
    pub async fn mark_destroyed(&mut self, kid: &str, at: Timestamp) -> Result<(), StoreError> {
        self.writer_lock().await?;
        let row = sqlx::query("SELECT key_store, destroyed_at FROM keys WHERE kid = $1")
            .bind(kid.to_owned())
            .fetch_optional(&mut *self.tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "key",
                name: kid.to_owned(),
            })?;
        let store: String = get(&row, "key_store")?;
        if store == KeyStoreName::Local.as_str() {
            return Err(StoreError::Invalid {
                what: "key",
                reason: format!("key {kid:?} is a local key: it has no device object to destroy"),
            });
        }
        if get::<Option<i64>>(&row, "destroyed_at")?.is_some() {
            return Err(StoreError::Conflict {
                what: "destroyed key",
                name: kid.to_owned(),
            });
        }
        sqlx::query("UPDATE keys SET destroyed_at = $1 WHERE kid = $2")
            .bind(at)
            .bind(kid.to_owned())
            .execute(&mut *self.tx)
            .await?;
        self.bump_generation().await
    }

    /// Appends a record to the audit chain and returns it as stored.
    pub async fn append_audit(&mut self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        // Nobody else reads the head until this transaction ends: no fork.
        self.writer_lock().await?;
        let head = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *self.tx)
            .await?;
        let (seq, prev_hash) = match head {
            Some(row) => {
                let seq: i64 = get(&row, "seq")?;
                let seq = seq
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Corrupt("audit sequence overflow".into()))?;
                (seq, get::<String>(&row, "hash")?)
            }
            None => (1, GENESIS_HASH.to_owned()),
        };
        let detail_text = entry.detail.to_string();
        let hash = record_hash(
            seq,
            entry.at,
            &entry.actor,
            &entry.action,
            entry.env.as_deref(),
            entry.subject.as_deref(),
            &detail_text,
            &prev_hash,
        );
        let sql = format!(
            "INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        sqlx::query(&sql)
            .bind(seq)
            .bind(entry.at)
            .bind(entry.actor.clone())
            .bind(entry.action.clone())
            .bind(entry.env.clone())
            .bind(entry.subject.clone())
            .bind(detail_text)
            .bind(prev_hash.clone())
            .bind(hash.clone())
            .execute(&mut *self.tx)
            .await?;
        Ok(AuditRecord {
            seq,
            at: entry.at,
            actor: entry.actor,
            action: entry.action,
            env: entry.env,
            subject: entry.subject,
            detail: entry.detail,
            prev_hash,
            hash,
        })
    }

    /// Makes every write of this transaction durable, all at once.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Discards every write of this transaction (as dropping it does).
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

fn compare_root_key(stored: Option<String>, root: &RootKey) -> Result<(), StoreError> {
    let expected = stored.ok_or(StoreError::NotInitialized)?;
    let got = root.key_id();
    if expected == got {
        Ok(())
    } else {
        Err(StoreError::WrongRootKey { expected, got })
    }
}

fn policy_json(env: &Environment) -> Result<String, StoreError> {
    serde_json::to_string(&env.policy).map_err(|e| {
        StoreError::Corrupt(format!(
            "environment {:?}: policy does not serialize: {e}",
            env.name
        ))
    })
}

pub(crate) fn get<'r, T>(row: &'r AnyRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(column)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

/// A blocking task that did not finish: a panic is passed on.
fn joined(e: tokio::task::JoinError, what: &'static str) -> StoreError {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    StoreError::Interrupted(what)
}

pub(crate) async fn read_root_key_record<'c, E>(ex: E) -> Result<Option<RootKeyRecord>, StoreError>
where
    E: Executor<'c, Database = Any>,
{
    let rows = sqlx::query("SELECT name, value FROM meta WHERE name = $1 OR name = $2")
        .bind(META_ROOT_KEY_ID)
        .bind(META_ROOT_KEY_REF)
        .fetch_all(ex)
        .await?;
    let mut id = None;
    let mut reference = None;
    for r in &rows {
        let name: String = get(r, "name")?;
        let value: String = get(r, "value")?;
        if name == META_ROOT_KEY_ID {
            id = Some(value);
        } else {
            reference = Some(value);
        }
    }
    Ok(id.map(|id| RootKeyRecord { id, reference }))
}

async fn read_root_key_id<'c, E>(ex: E) -> Result<Option<String>, StoreError>
where
    E: Executor<'c, Database = Any>,
{
    let row = sqlx::query("SELECT value FROM meta WHERE name = $1")
        .bind(META_ROOT_KEY_ID)
        .fetch_optional(ex)
        .await?;
    row.map(|r| get(&r, "value")).transpose()
}

async fn fetch_environment<'c, E>(ex: E, name: &str) -> Result<Environment, StoreError>
where
    E: Executor<'c, Database = Any>,
{
    let sql = format!("SELECT {ENV_COLUMNS} FROM environments WHERE name = $1");
    let row = sqlx::query(&sql)
        .bind(name.to_owned())
        .fetch_optional(ex)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "environment",
            name: name.to_owned(),
        })?;
    env_from_row(&row)
}

async fn fetch_keys<'c, E>(ex: E, env: &str) -> Result<Vec<KeyRecord>, StoreError>
where
    E: Executor<'c, Database = Any>,
{
    // One statement, so the existence check and the listing see the same
    // snapshot: a LEFT JOIN yields one all-NULL key row for an empty env.
    let sql = format!(
        "SELECT e.name AS env_name, {} FROM environments e LEFT JOIN keys k ON k.env = e.name \
         WHERE e.name = $1 ORDER BY k.activates_at, k.kid",
        KEY_COLUMNS
            .split(", ")
            .map(|c| format!("k.{c} AS {c}", c = c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rows = sqlx::query(&sql).bind(env.to_owned()).fetch_all(ex).await?;
    if rows.is_empty() {
        return Err(StoreError::NotFound {
            what: "environment",
            name: env.to_owned(),
        });
    }
    let mut keys = Vec::with_capacity(rows.len());
    for row in &rows {
        if get::<Option<String>>(row, "kid")?.is_some() {
            keys.push(key_from_row(row)?);
        }
    }
    Ok(keys)
}

async fn fetch_audit_batch<'c, E>(
    ex: E,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<StoredAudit>, StoreError>
where
    E: Executor<'c, Database = Any>,
{
    let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2");
    let rows = sqlx::query(&sql)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(ex)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredAudit {
                seq: get(r, "seq")?,
                at: get(r, "at")?,
                actor: get(r, "actor")?,
                action: get(r, "action")?,
                env: get(r, "env")?,
                subject: get(r, "subject")?,
                detail: get(r, "detail")?,
                prev_hash: get(r, "prev_hash")?,
                hash: get(r, "hash")?,
            })
        })
        .collect()
}

fn audit_record(s: StoredAudit) -> Result<AuditRecord, StoreError> {
    let detail = serde_json::from_str(&s.detail).map_err(|_| {
        StoreError::Corrupt(format!("audit record {}: detail is not valid JSON", s.seq))
    })?;
    Ok(AuditRecord {
        seq: s.seq,
        at: s.at,
        actor: s.actor,
        action: s.action,
        env: s.env,
        subject: s.subject,
        detail,
        prev_hash: s.prev_hash,
        hash: s.hash,
    })
}

fn env_from_row(row: &AnyRow) -> Result<Environment, StoreError> {
    let name: String = get(row, "name")?;
    let policy_text: String = get(row, "policy")?;
    let policy = serde_json::from_str(&policy_text)
        .map_err(|e| StoreError::Corrupt(format!("environment {name:?}: invalid policy: {e}")))?;
    let key_store: String = get(row, "key_store")?;
    let key_store = KeyStoreName::parse(&key_store)
        .map_err(|e| StoreError::Corrupt(format!("environment {name:?}: {e}")))?;
    let nonce: Option<Vec<u8>> = get(row, "dpop_nonce_secret")?;
    let dpop_nonce_secret = nonce
        .map(|b| {
            SealedKey::from_bytes(&b).map_err(|e| {
                StoreError::Corrupt(format!(
                    "environment {name:?}: malformed sealed DPoP nonce secret: {e}"
                ))
            })
        })
        .transpose()?;
    Ok(Environment {
        issuer: get(row, "issuer")?,
        created_at: get(row, "created_at")?,
        policy,
        key_store,
        dpop_nonce_secret,
        name,
    })
}

/// A key's stored sealed blob, parsed; what is wrong with it, when it is.
fn stored_sealed(kid: &str, blob: &[u8]) -> Result<SealedKey, StoreError> {
    SealedKey::from_bytes(blob)
        .map_err(|e| StoreError::Corrupt(format!("key {kid:?}: malformed sealed key: {e}")))
}

fn key_from_row(row: &AnyRow) -> Result<KeyRecord, StoreError> {
    let kid: String = get(row, "kid")?;
    let alg_name: String = get(row, "alg")?;
    let alg = Algorithm::from_name(&alg_name)
        .map_err(|_| StoreError::Corrupt(format!("key {kid:?}: unknown algorithm")))?;
    let size: i64 = get(row, "size_bits")?;
    let size_bits = u32::try_from(size)
        .map_err(|_| StoreError::Corrupt(format!("key {kid:?}: invalid size_bits")))?;
    let store_name: String = get(row, "key_store")?;
    let store = KeyStoreName::parse(&store_name)
        .map_err(|e| StoreError::Corrupt(format!("key {kid:?}: {e}")))?;
    let hw_ref: Option<String> = get(row, "hw_ref")?;
    let material = match (store, hw_ref) {
        (KeyStoreName::Local, None) => {
            let blob: Vec<u8> = get(row, "sealed")?;
            KeyMaterial::Sealed(stored_sealed(&kid, &blob)?)
        }
        (store, Some(reference)) if store.is_device() && !reference.is_empty() => {
            KeyMaterial::Device { store, reference }
        }
        _ => {
            return Err(StoreError::Corrupt(format!(
                "key {kid:?}: key store {store} does not match its device reference"
            )))
        }
    };
    Ok(KeyRecord {
        env: get(row, "env")?,
        alg,
        size_bits,
        public_jwk: get(row, "public_jwk")?,
        material,
        origin: get(row, "origin")?,
        owner: get(row, "owner")?,
        description: get(row, "description")?,
        created_at: get(row, "created_at")?,
        activates_at: get(row, "activates_at")?,
        retires_at: get(row, "retires_at")?,
        removes_at: get(row, "removes_at")?,
        revoked_at: get(row, "revoked_at")?,
        destroyed_at: get(row, "destroyed_at")?,
        kid,
    })
}

/// Decodes `%XX` escapes; `None` for a malformed escape or non-UTF-8 result.
/// What a database URL opens.
enum UrlTarget {
    Postgres,
    SqliteMemory,
    /// `sqlite:PATH` without parameters: the decoded path.
    SqliteFile(String),
    SqliteWithParams,
}

fn check_url(url: &str) -> Result<UrlTarget, StoreError> {
    use std::str::FromStr as _;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // sqlx's own parser, the one connecting uses; its message is not
        // passed on, as it may quote the URL.
        sqlx::postgres::PgConnectOptions::from_str(url).map_err(|_| {
            StoreError::InvalidUrl(
                "the postgres:// URL does not parse (check the host, port, %-escapes and parameters)",
            )
        })?;
        return Ok(UrlTarget::Postgres);
    }
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(StoreError::InvalidUrl(
            "expected a postgres://, postgresql:// or sqlite: URL",
        ));
    };
    let (db, params) = match rest.split_once('?') {
        Some((db, params)) => (db, Some(params)),
        None => (rest, None),
    };
    let memory =
        db == ":memory:" || params.is_some_and(|p| p.split('&').any(|kv| kv == "mode=memory"));
    if memory {
        return Ok(UrlTarget::SqliteMemory);
    }
    if db.is_empty() {
        return Err(StoreError::InvalidUrl(
            "the sqlite: URL names no database file",
        ));
    }
    match params {
        None => percent_decode(db)
            .map(UrlTarget::SqliteFile)
            .ok_or(StoreError::InvalidUrl(
                "the sqlite: URL has a malformed %-escape",
            )),
        Some(_) => {
            sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(|_| {
                StoreError::InvalidUrl("the sqlite: URL's parameters are not valid")
            })?;
            Ok(UrlTarget::SqliteWithParams)
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_checked_without_repeating_them() {
        for ok in [
            "postgres://kw:pw@db.example:5432/kw",
            "postgresql://kw@db.example/kw?sslmode=require&password=x",
            "sqlite::memory:",
            "sqlite:/var/lib/keyward/keyward.db",
            "sqlite:///var/lib/keyward/a%20b.db",
            "sqlite:/tmp/k.db?mode=rwc",
        ] {
            assert!(Store::check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "host=db.example user=kw password=s3cr3t-pw dbname=kw",
            "mysql://kw:s3cr3t-pw@db.example/kw",
            "postgres://kw:s3cr3t-pw@db.example:notaport/kw",
            "sqlite:",
            "sqlite:/tmp/s3cr3t-pw%zz.db",
            "",
        ] {
            let e = Store::check_url(bad).unwrap_err();
            assert!(matches!(e, StoreError::InvalidUrl(_)), "{bad}: {e:?}");
            assert!(!e.to_string().contains("s3cr3t-pw"), "{bad}: {e}");
        }
    }

    #[test]
    fn sqlite_urls_escape_paths() {
        let url = sqlite_url(Path::new("/tmp/a b/c?d#e%f.db")).unwrap();
        assert_eq!(url, "sqlite:///tmp/a%20b/c%3Fd%23e%25f.db?mode=rwc");
        assert_eq!(
            percent_decode("/tmp/a%20b/c%3Fd%23e%25f.db").unwrap(),
            "/tmp/a b/c?d#e%f.db"
        );
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
