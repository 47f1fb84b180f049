//! Backups: the whole store as one file, taken while it serves, and its
//! restore into an empty store of either backend.
//!
//! # What is in the file
//!
//! Every row of every table in [`TABLES`], as stored: private keys stay
//! sealed under the root key (a device key is only its reference), client
//! secrets, refresh tokens and admin tokens stay hashed, and the audit chain
//! comes whole with its head. The root key itself is never in the file.
//!
//! # Format (version 1)
//!
//! UTF-8 text, one JSON value per line, each line ending in `\n`:
//!
//! ```text
//! {"format":"keyward-backup","version":1,"created_at":…,"source":"sqlite","schema":5,
//!  "tables":["environments",…],"root_key_id":"…","root_key_ref":null,
//!  "audit_length":N,"audit_head":"<hex>"}                       header
//! {"table":"environments","columns":[["name","text"],…]}        a table begins
//! ["prod","https://…",…]                                        one row: a JSON array
//! {"end":"environments","rows":1}                               the table ends
//! …                                                             every table of "tables", in order
//! {"sha256":"<hex>"}                                            trailer
//! ```
//!
//! - `schema` is the source's newest migration; a store restores a file of
//!   its own schema (every table present) or an older one (columns the
//!   file lacks take their defaults, tables it lacks stay empty), never a
//!   newer one.
//! - A row holds its table's columns in the order its `columns` line names
//!   them: `text` as a JSON string, `int` as a JSON integer (64-bit), `blob`
//!   as standard padded base64, SQL `NULL` as `null`.
//! - `sha256` is the hex SHA-256 of every byte of the file before the
//!   trailer line. Nothing may follow the trailer: a cut-off file has no
//!   trailer (or a wrong sum) and is refused.
//! - Lines are at most 1 MiB; the file is read and written one line at a
//!   time, never whole.
//!
//! The format is the same for both backends, so a SQLite backup restores
//! into PostgreSQL and the other way round.
//!
//! # Consistency
//!
//! The backup is one read transaction: on SQLite a deferred transaction in
//! WAL mode (its snapshot is taken at the first read; writers go on), on
//! PostgreSQL `REPEATABLE READ READ ONLY`. Every table is read from the same
//! snapshot, so keys, tokens and the audit chain agree with each other.
//!
//! # Checks
//!
//! [`verify_backup`] reads the whole file without touching a store: the
//! format and version, every line's shape, every value's type, row counts,
//! the audit chain (each link and hash, its length and head equal the
//! header's) and the checksum. [`prepare_restore`] adds the root key: its id
//! is the file's and it opens every sealed key. [`Store::restore`] then
//! reads the file again into one transaction of an empty store, checks the
//! checksum is still the verified one before committing, and appends a
//! `store.restore` audit record after the restored chain.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures_util::TryStreamExt as _;
use keyward_jose::crypto::{hex, random_bytes, Sha256};
use keyward_jose::seal::{open, RootKey, SealedKey};
use keyward_jose::SealError;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use crate::audit::{AuditEntry, ChainWalker, StoredAudit};
use crate::error::StoreError;
use crate::records::{KeyStoreName, Timestamp};
use crate::sealing::key_aad;
use crate::store::{Backend, Store};

/// The `format` of the header line.
pub const FORMAT: &str = "keyward-backup";
/// The format version this keyward writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The longest line the reader accepts.
const MAX_LINE: usize = 1 << 20;
/// Most bind parameters in one multi-row `INSERT` of a restore.
const MAX_PARAMS: usize = 1000;

/// How a column's values are written in a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    Int,
    Blob,
}

/// A column of a [`Table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub nullable: bool,
}

/// A table a backup carries.
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// The order rows are written in (the primary key).
    pub order_by: &'static str,
    /// A column PostgreSQL generates (`GENERATED ALWAYS AS IDENTITY`):
    /// restored as stored, and its sequence moved past the largest value.
    pub identity: Option<&'static str>,
}

const fn col(name: &'static str, ty: ColumnType, nullable: bool) -> Column {
    Column { name, ty, nullable }
}
const fn text(name: &'static str) -> Column {
    col(name, ColumnType::Text, false)
}
const fn text_null(name: &'static str) -> Column {
    col(name, ColumnType::Text, true)
}
const fn int(name: &'static str) -> Column {
    col(name, ColumnType::Int, false)
}
const fn int_null(name: &'static str) -> Column {
    col(name, ColumnType::Int, true)
}
const fn blob(name: &'static str) -> Column {
    col(name, ColumnType::Blob, false)
}
const fn blob_null(name: &'static str) -> Column {
    col(name, ColumnType::Blob, true)
}

/// Every table of the store and every column, in restore order (a table
/// after those it references). **A migration that adds a table or a column
/// adds it here**; the store suite's `backup_covers_every_table_and_column`
/// compares this list with the migrated database of each backend and fails
/// on anything missing.
pub const TABLES: &[Table] = &[
    Table {
        name: "environments",
        columns: &[
            text("name"),
            text("issuer"),
            text("policy"),
            int("created_at"),
            text_null("issuer_key"),
            text("key_store"),
            text_null("login_url"),
            text_null("consent_url"),
            blob_null("dpop_nonce_secret"),
        ],
        order_by: "name",
        identity: None,
    },
    Table {
        name: "keys",
        columns: &[
            text("kid"),
            text("env"),
            text("alg"),
            int("size_bits"),
            text("public_jwk"),
            blob("sealed"),
            text("origin"),
            text_null("owner"),
            text_null("description"),
            int("created_at"),
            int("activates_at"),
            int_null("retires_at"),
            int_null("removes_at"),
            int_null("revoked_at"),
            text("key_store"),
            text_null("hw_ref"),
            int_null("destroyed_at"),
        ],
        order_by: "kid",
        identity: None,
    },
    Table {
        name: "clients",
        columns: &[
            text("env"),
            text("client_id"),
            text("name"),
            text("auth"),
            blob_null("secret_hash"),
            text_null("jwks"),
            text_null("jwks_uri"),
            text("scopes"),
            text("audiences"),
            text("grant_types"),
            int_null("access_token_ttl_secs"),
            int_null("refresh_token_ttl_secs"),
            int("created_at"),
            int("updated_at"),
            int("dpop_bound_access_tokens"),
            text_null("tls_subject_kind"),
            text_null("tls_subject"),
            int_null("tls_bound_tokens"),
            text("redirect_uris"),
            text("post_logout_redirect_uris"),
            int("first_party"),
            text("exchange_issuers"),
            int("require_par"),
        ],
        order_by: "env, client_id",
        identity: None,
    },
    Table {
        name: "refresh_tokens",
        columns: &[
            blob("token_hash"),
            text("env"),
            text("client_id"),
            text("family_id"),
            text("subject"),
            text("scope"),
            text_null("audience"),
            text("extra"),
            int("issued_at"),
            int("expires_at"),
            int_null("rotated_at"),
            int_null("revoked_at"),
            blob_null("parent"),
            text_null("access_jti"),
            int_null("access_exp"),
            text_null("dpop_jkt"),
        ],
        order_by: "token_hash",
        identity: None,
    },
    Table {
        name: "browser_sessions",
        columns: &[
            blob("session_hash"),
            text("env"),
            text("sid"),
            text_null("subject"),
            int_null("auth_time"),
            text_null("acr"),
            text_null("amr"),
            text_null("claims"),
            int_null("remember_until"),
            int("created_at"),
            int("expires_at"),
            int_null("ended_at"),
        ],
        order_by: "session_hash",
        identity: None,
    },
    Table {
        name: "login_requests",
        columns: &[
            blob("challenge_hash"),
            text("kind"),
            text("env"),
            text("client_id"),
            blob("session_hash"),
            text("request"),
            text_null("subject"),
            text_null("login"),
            int("skip"),
            int("created_at"),
            int("expires_at"),
            int_null("decided_at"),
            text_null("outcome"),
            blob_null("verifier_hash"),
            int_null("verified_at"),
        ],
        order_by: "challenge_hash",
        identity: None,
    },
    Table {
        name: "pushed_requests",
        columns: &[
            blob("uri_hash"),
            text("env"),
            text("client_id"),
            text("request"),
            int("created_at"),
            int("expires_at"),
            int_null("used_at"),
        ],
        order_by: "uri_hash",
        identity: None,
    },
    Table {
        name: "device_authorizations",
        columns: &[
            blob("device_hash"),
            blob("user_code_hash"),
            text("env"),
            text("client_id"),
            text("scope"),
            text("code_challenge"),
            text("status"),
            blob_null("state_hash"),
            blob_null("code_hash"),
            text_null("error"),
            int("interval_secs"),
            int_null("last_poll_at"),
            int("created_at"),
            int("expires_at"),
            int_null("consumed_at"),
        ],
        order_by: "device_hash",
        identity: None,
    },
    Table {
        name: "consents",
        columns: &[
            text("env"),
            text("subject"),
            text("client_id"),
            text("scope"),
            int("granted_at"),
            int_null("expires_at"),
        ],
        order_by: "env, subject, client_id",
        identity: None,
    },
    Table {
        name: "authorization_codes",
        columns: &[
            blob("code_hash"),
            text("env"),
            text("client_id"),
            text("redirect_uri"),
            text("code_challenge"),
            text_null("nonce"),
            text("scope"),
            text("subject"),
            int("auth_time"),
            text_null("acr"),
            text("amr"),
            text("sid"),
            text("claims"),
            int("issued_at"),
            int("expires_at"),
            int_null("used_at"),
            text_null("access_jti"),
            int_null("access_exp"),
            text_null("family_id"),
        ],
        order_by: "code_hash",
        identity: None,
    },
    Table {
        name: "revocations",
        columns: &[
            int("seq"),
            text("env"),
            text("jti"),
            int("exp"),
            int("revoked_at"),
        ],
        order_by: "seq",
        identity: Some("seq"),
    },
    Table {
        name: "assertion_jtis",
        columns: &[text("env"), text("client_id"), text("jti"), int("exp")],
        order_by: "env, client_id, jti",
        identity: None,
    },
    Table {
        name: "admin_tokens",
        columns: &[
            text("id"),
            text("name"),
            blob("token_hash"),
            int("created_at"),
            int_null("revoked_at"),
            text("permissions"),
            text_null("owner"),
            int_null("expires_at"),
            text_null("created_by"),
        ],
        order_by: "id",
        identity: None,
    },
    Table {
        name: "audit",
        columns: &[
            int("seq"),
            int("at"),
            text("actor"),
            text("action"),
            text_null("env"),
            text_null("subject"),
            text("detail"),
            text("prev_hash"),
            text("hash"),
        ],
        order_by: "seq",
        identity: None,
    },
    Table {
        name: "meta",
        columns: &[text("name"), text("value")],
        order_by: "name",
        identity: None,
    },
];

fn table_spec(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// The first line of a backup file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    pub format: String,
    pub version: u32,
    /// When the backup was taken (unix seconds).
    pub created_at: Timestamp,
    /// The backend it was taken from: `sqlite` or `postgres`.
    pub source: String,
    /// The source's newest migration.
    pub schema: i64,
    /// The tables that follow, in order.
    pub tables: Vec<String>,
    /// The id of the root key the file's keys are sealed under.
    pub root_key_id: String,
    /// For a root key in a device, how to find it.
    pub root_key_ref: Option<String>,
    pub audit_length: i64,
    /// The hash of the newest audit record (`None`: no records).
    pub audit_head: Option<String>,
}

impl BackupHeader {
    /// Reads and checks the header line of the file at `path`, and nothing more.
    pub fn read(path: &Path) -> Result<BackupHeader, StoreError> {
        let (_, header) = Reader::open(open_file(path)?)?;
        Ok(header)
    }
}

/// What a backup file holds, as its check found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    pub format_version: u32,
    pub created_at: Timestamp,
    pub source: String,
    pub schema: i64,
    /// Hex SHA-256 of the file up to its trailer (the trailer's value).
    pub sha256: String,
    /// The file's size in bytes.
    pub bytes: u64,
    pub tables: Vec<TableCount>,
    pub root_key_id: String,
    pub root_key_ref: Option<String>,
    pub audit_length: i64,
    pub audit_head: Option<String>,
    /// Keys sealed under the root key (inside the file).
    pub sealed_keys: usize,
    /// Keys held by devices: only their references are in the file; the
    /// devices must still hold them for the restored store to sign.
    pub device_keys: Vec<DeviceKeyRef>,
}

/// Rows of one table in a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableCount {
    pub table: String,
    pub rows: u64,
}

/// A device key named by a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceKeyRef {
    pub env: String,
    pub kid: String,
    pub store: String,
    pub reference: String,
}

/// A backup file checked against a root key: what [`Store::restore`] takes.
#[derive(Debug)]
pub struct RestorePlan {
    path: PathBuf,
    header: BackupHeader,
    summary: BackupSummary,
}

impl RestorePlan {
    pub fn summary(&self) -> &BackupSummary {
        &self.summary
    }
}

/// What [`Store::restore`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoreSummary {
    pub backup: BackupSummary,
    /// The sequence number of the `store.restore` audit record.
    pub audit_seq: i64,
}

fn invalid(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidBackup(reason.into())
}

fn open_file(path: &Path) -> Result<BufReader<File>, StoreError> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 16, f))
        .map_err(|e| StoreError::io("open backup file", path, e))
}

/// One value of a row.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Null,
    Text(String),
    Int(i64),
    Blob(Vec<u8>),
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Text(t) => s.serialize_str(t),
            Value::Int(n) => s.serialize_i64(*n),
            Value::Blob(b) => s.serialize_str(&B64.encode(b)),
        }
    }
}

impl Value {
    fn from_json(v: serde_json::Value, col: &Column) -> Result<Value, String> {
        match (v, col.ty) {
            (serde_json::Value::Null, _) if col.nullable => Ok(Value::Null),
            (serde_json::Value::Null, _) => Err(format!("column {} is NULL", col.name)),
            (serde_json::Value::String(s), ColumnType::Text) => Ok(Value::Text(s)),
            (serde_json::Value::Number(n), ColumnType::Int) => n
                .as_i64()
                .map(Value::Int)
                .ok_or_else(|| format!("column {} is not a 64-bit integer", col.name)),
            (serde_json::Value::String(s), ColumnType::Blob) => B64
                .decode(s.as_bytes())
                .map(Value::Blob)
                .map_err(|_| format!("column {} is not canonical base64", col.name)),
            _ => Err(format!("column {} has the wrong type", col.name)),
        }
    }

    fn from_row(row: &AnyRow, i: usize, col: &Column) -> Result<Value, StoreError> {
        let bad = |e: sqlx::Error| StoreError::Corrupt(format!("column {}: {e}", col.name));
        let v = match col.ty {
            ColumnType::Text => row
                .try_get::<Option<String>, _>(i)
                .map_err(bad)?
                .map(Value::Text),
            ColumnType::Int => row
                .try_get::<Option<i64>, _>(i)
                .map_err(bad)?
                .map(Value::Int),
            ColumnType::Blob => row
                .try_get::<Option<Vec<u8>>, _>(i)
                .map_err(bad)?
                .map(Value::Blob),
        };
        Ok(v.unwrap_or(Value::Null))
    }

    fn text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }
}

/// The columns of one table as a file lays them out.
#[derive(Debug)]
struct Layout {
    table: &'static Table,
    columns: Vec<&'static Column>,
}

impl Layout {
    fn full(table: &'static Table) -> Layout {
        Layout {
            table,
            columns: table.columns.iter().collect(),
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableStart {
    table: String,
    columns: Vec<(String, ColumnType)>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableEnd {
    end: String,
    rows: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    sha256: String,
}

/// What the reader found next.
enum Event {
    Table,
    Row(Vec<Value>),
    TableEnd,
    /// The trailer, its sum checked; the file's size.
    End(String, u64),
}

/// Reads a backup file line by line, checking its structure and sum.
struct Reader<R> {
    input: R,
    hasher: Sha256,
    bytes: u64,
    line_no: u64,
    tables: Vec<&'static Table>,
    next_table: usize,
    current: Option<(Layout, u64)>,
    done: bool,
}

impl<R: BufRead> Reader<R> {
    fn open(input: R) -> Result<(Reader<R>, BackupHeader), StoreError> {
        let mut r = Reader {
            input,
            hasher: Sha256::new(),
            bytes: 0,
            line_no: 0,
            tables: Vec::new(),
            next_table: 0,
            current: None,
            done: false,
        };
        let line = r.line()?.ok_or_else(|| invalid("the file is empty"))?;
        let value: serde_json::Value = serde_json::from_slice(&line)
            .map_err(|_| invalid("the first line is not a keyward backup header"))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(invalid("the first line is not a keyward backup header"));
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(invalid(format!(
                "format version {v} is not supported (this keyward reads version {FORMAT_VERSION})"
            )))
            }
            None => return Err(invalid("the header has no format version")),
        }
        let header: BackupHeader =
            serde_json::from_value(value).map_err(|e| invalid(format!("malformed header: {e}")))?;
        r.hasher.update(&line);
        if !matches!(header.source.as_str(), "sqlite" | "postgres") {
            return Err(invalid("the header names an unknown source backend"));
        }
        for name in &header.tables {
            let spec = table_spec(name)
                .ok_or_else(|| invalid(format!("unknown table {name:?} (a newer keyward?)")))?;
            if r.tables.iter().any(|t| t.name == spec.name) {
                return Err(invalid(format!("table {name:?} is listed twice")));
            }
            r.tables.push(spec);
        }
        let ours = crate::store::latest_migration();
        if header.schema > ours {
            return Err(invalid(format!(
                "the backup's schema (migration {}) is newer than this keyward's ({ours}): use the keyward that wrote it, or a newer one",
                header.schema
            )));
        }
        // A file of this keyward's schema has every table; an older one may
        // lack tables added since (they stay empty).
        if header.schema == ours {
            if let Some(missing) = TABLES
                .iter()
                .find(|t| !header.tables.iter().any(|n| n == t.name))
            {
                return Err(invalid(format!("table {:?} is missing", missing.name)));
            }
        }
        Ok((r, header))
    }

    /// The next line, with its `\n`; `None` at the end of the file.
    fn line(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let mut buf = Vec::new();
        let n = (&mut self.input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| invalid(format!("cannot read the file: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        self.bytes += n as u64;
        if buf.last() != Some(&b'\n') {
            return Err(if buf.len() > MAX_LINE {
                invalid(format!("line {} is longer than 1 MiB", self.line_no))
            } else {
                invalid("the file is truncated (its last line is cut off)")
            });
        }
        Ok(Some(buf))
    }

    fn bad(&self, reason: impl std::fmt::Display) -> StoreError {
        invalid(format!("line {}: {reason}", self.line_no))
    }

    fn layout(&self) -> Option<&Layout> {
        self.current.as_ref().map(|(l, _)| l)
    }

    fn next(&mut self) -> Result<Event, StoreError> {
        if self.done {
            return Err(invalid("read past the end"));
        }
        let line = self
            .line()?
            .ok_or_else(|| invalid("the file is truncated (no checksum trailer)"))?;
        if self.current.is_none() && self.next_table == self.tables.len() {
            let trailer: Trailer = serde_json::from_slice(&line)
                .map_err(|_| self.bad("expected the checksum trailer"))?;
            let sum = hex(&std::mem::take(&mut self.hasher).finish());
            if trailer.sha256 != sum {
                return Err(invalid(
                    "checksum mismatch: the file was changed or damaged after it was written",
                ));
            }
            let mut rest = [0u8; 1];
            let extra = self
                .input
                .read(&mut rest)
                .map_err(|e| invalid(format!("cannot read the file: {e}")))?;
            if extra != 0 {
                return Err(invalid("data after the checksum trailer"));
            }
            self.done = true;
            return Ok(Event::End(sum, self.bytes));
        }
        self.hasher.update(&line);
        let event = match &mut self.current {
            None => {
                let start: TableStart = serde_json::from_slice(&line)
                    .map_err(|_| self.bad("expected the start of a table"))?;
                let spec = self.tables[self.next_table];
                if start.table != spec.name {
                    return Err(self.bad(format!(
                        "expected table {:?}, found {:?}",
                        spec.name, start.table
                    )));
                }
                let mut columns: Vec<&'static Column> = Vec::new();
                for (name, ty) in &start.columns {
                    let col = spec
                        .columns
                        .iter()
                        .find(|c| c.name == name)
                        .ok_or_else(|| self.bad(format!("unknown column {}.{name}", spec.name)))?;
                    if col.ty != *ty {
                        return Err(
                            self.bad(format!("column {}.{name} has the wrong type", spec.name))
                        );
                    }
                    if columns.iter().any(|c| c.name == col.name) {
                        return Err(
                            self.bad(format!("column {}.{name} is listed twice", spec.name))
                        );
                    }
                    columns.push(col);
                }
                self.next_table += 1;
                self.current = Some((
                    Layout {
                        table: spec,
                        columns,
                    },
                    0,
                ));
                Event::Table
            }
            Some((layout, count)) if line.first() == Some(&b'[') => {
                let values: Vec<serde_json::Value> =
                    serde_json::from_slice(&line).map_err(|_| {
                        invalid(format!(
                            "line {}: a row that is not a JSON array",
                            self.line_no
                        ))
                    })?;
                if values.len() != layout.columns.len() {
                    return Err(invalid(format!(
                        "line {}: a row of {} has {} values, not {}",
                        self.line_no,
                        layout.table.name,
                        values.len(),
                        layout.columns.len()
                    )));
                }
                let row = values
                    .into_iter()
                    .zip(&layout.columns)
                    .map(|(v, c)| Value::from_json(v, c))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        invalid(format!(
                            "line {}: table {}: {e}",
                            self.line_no, layout.table.name
                        ))
                    })?;
                *count += 1;
                Event::Row(row)
            }
            Some((layout, count)) => {
                let end: TableEnd = serde_json::from_slice(&line).map_err(|_| {
                    invalid(format!(
                        "line {}: expected a row or the end of table {}",
                        self.line_no, layout.table.name
                    ))
                })?;
                if end.end != layout.table.name || end.rows != *count {
                    return Err(invalid(format!(
                        "line {}: table {} ends with {} rows, but {} were read",
                        self.line_no, layout.table.name, end.rows, count
                    )));
                }
                Event::TableEnd
            }
        };
        Ok(event)
    }
}

/// The sealed keys of a file: (environment, kid, sealed blob).
type SealedKeys = Vec<(String, String, Vec<u8>)>;

/// The checks made on the rows themselves, as they stream by.
#[derive(Debug)]
struct Checker {
    chain: ChainWalker,
    tables: Vec<TableCount>,
    meta: Vec<(String, String)>,
    sealed: SealedKeys,
    device: Vec<DeviceKeyRef>,
}

impl Checker {
    fn new(head: Option<&str>) -> Checker {
        let chain = match head {
            Some(h) => ChainWalker::new().expecting_head(h),
            None => ChainWalker::new(),
        };
        Checker {
            chain,
            tables: Vec::new(),
            meta: Vec::new(),
            sealed: Vec::new(),
            device: Vec::new(),
        }
    }

    fn table(&mut self, layout: &Layout) -> Result<(), StoreError> {
        let needs: &[&str] = match layout.table.name {
            "audit" => &[
                "seq",
                "at",
                "actor",
                "action",
                "env",
                "subject",
                "detail",
                "prev_hash",
                "hash",
            ],
            "keys" => &["env", "kid", "sealed", "key_store", "hw_ref"],
            "meta" => &["name", "value"],
            _ => &[],
        };
        if let Some(missing) = needs.iter().find(|c| layout.position(c).is_none()) {
            return Err(invalid(format!(
                "table {} lacks column {missing}",
                layout.table.name
            )));
        }
        self.tables.push(TableCount {
            table: layout.table.name.to_owned(),
            rows: 0,
        });
        Ok(())
    }

    fn row(&mut self, layout: &Layout, row: &[Value]) -> Result<(), StoreError> {
        if let Some(t) = self.tables.last_mut() {
            t.rows += 1;
        }
        let get = |name: &str| layout.position(name).map(|i| &row[i]);
        let text = |name: &str| get(name).and_then(Value::text).map(str::to_owned);
        match layout.table.name {
            "audit" => {
                let int = |name: &str| get(name).and_then(Value::int).unwrap_or_default();
                let rec = StoredAudit {
                    seq: int("seq"),
                    at: int("at"),
                    actor: text("actor").unwrap_or_default(),
                    action: text("action").unwrap_or_default(),
                    env: text("env"),
                    subject: text("subject"),
                    detail: text("detail").unwrap_or_default(),
                    prev_hash: text("prev_hash").unwrap_or_default(),
                    hash: text("hash").unwrap_or_default(),
                };
                self.chain.push(&rec);
            }
            "keys" => {
                let env = text("env").unwrap_or_default();
                let kid = text("kid").unwrap_or_default();
                let store_name = text("key_store").unwrap_or_default();
                let store = KeyStoreName::parse(&store_name)
                    .map_err(|e| invalid(format!("key {kid:?}: {e}")))?;
                match (store, text("hw_ref")) {
                    (KeyStoreName::Local, None) => {
                        let Some(Value::Blob(b)) = get("sealed") else {
                            return Err(invalid(format!("key {kid:?}: no sealed key")));
                        };
                        SealedKey::from_bytes(b).map_err(|e| {
                            invalid(format!("key {kid:?}: malformed sealed key: {e}"))
                        })?;
                        self.sealed.push((env, kid, b.clone()));
                    }
                    (store, Some(reference)) if store.is_device() && !reference.is_empty() => {
                        self.device.push(DeviceKeyRef {
                            env,
                            kid,
                            store: store.as_str().to_owned(),
                            reference,
                        });
                    }
                    _ => {
                        return Err(invalid(format!(
                            "key {kid:?}: key store {store} does not match its device reference"
                        )))
                    }
                }
            }
            "meta" => self.meta.push((
                text("name").unwrap_or_default(),
                text("value").unwrap_or_default(),
            )),
            _ => {}
        }
        Ok(())
    }

    fn finish(
        self,
        header: &BackupHeader,
        sha256: String,
        bytes: u64,
    ) -> Result<(BackupSummary, SealedKeys), StoreError> {
        let report = self.chain.finish();
        if let Some(b) = &report.first_broken {
            return Err(invalid(format!(
                "the audit chain inside is broken at record {}: {}",
                b.seq, b.reason
            )));
        }
        if report.length != header.audit_length || report.head_hash != header.audit_head {
            return Err(invalid(format!(
                "the audit chain inside ({} records, head {}) is not the one the header names ({} records, head {})",
                report.length,
                report.head_hash.as_deref().unwrap_or("-"),
                header.audit_length,
                header.audit_head.as_deref().unwrap_or("-")
            )));
        }
        let meta = |name: &str| {
            self.meta
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if meta(crate::store::META_ROOT_KEY_ID).as_deref() != Some(header.root_key_id.as_str())
            || meta(crate::store::META_ROOT_KEY_REF) != header.root_key_ref
        {
            return Err(invalid(
                "the root key recorded inside is not the one the header names",
            ));
        }
        Ok((
            BackupSummary {
                format_version: header.version,
                created_at: header.created_at,
                source: header.source.clone(),
                schema: header.schema,
                sha256,
                bytes,
                tables: self.tables,
                root_key_id: header.root_key_id.clone(),
                root_key_ref: header.root_key_ref.clone(),
                audit_length: report.length,
                audit_head: report.head_hash,
                sealed_keys: self.sealed.len(),
                device_keys: self.device,
            },
            self.sealed,
        ))
    }
}

/// Reads a whole backup file and checks it, rows and all (see the module
/// documentation), without touching any store.
pub fn verify_backup(path: &Path) -> Result<BackupSummary, StoreError> {
    scan(path).map(|(_, summary, _)| summary)
}

fn scan(path: &Path) -> Result<(BackupHeader, BackupSummary, SealedKeys), StoreError> {
    let (mut reader, header) = Reader::open(open_file(path)?)?;
    let mut checker = Checker::new(header.audit_head.as_deref());
    loop {
        match reader.next()? {
            Event::Table => checker.table(reader.layout().expect("a table was started"))?,
            Event::Row(row) => checker.row(reader.layout().expect("in a table"), &row)?,
            Event::TableEnd => reader.current = None,
            Event::End(sum, bytes) => {
                let (summary, sealed) = checker.finish(&header, sum, bytes)?;
                return Ok((header, summary, sealed));
            }
        }
    }
}

/// [`verify_backup`], and checks that `root` is the key the file's keys
/// are sealed under and opens every one of them. Blocks (a device root is
/// asked once per sealed key): call it from a blocking thread.
pub fn prepare_restore(path: &Path, root: &RootKey) -> Result<RestorePlan, StoreError> {
    let (header, summary, sealed) = scan(path)?;
    if root.key_id() != header.root_key_id {
        return Err(StoreError::WrongRootKey {
            expected: header.root_key_id.clone(),
            got: root.key_id(),
        });
    }
    for (env, kid, blob) in &sealed {
        let key = SealedKey::from_bytes(blob)
            .map_err(|e| invalid(format!("key {kid:?}: malformed sealed key: {e}")))?;
        match open(root, &key_aad(env, kid), &key) {
            Ok(_) => {}
            Err(SealError::OpenFailed) => {
                return Err(StoreError::RootKeyDoesNotOpen {
                    id: root.key_id(),
                    kid: kid.clone(),
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(RestorePlan {
        path: path.to_owned(),
        header,
        summary,
    })
}

/// A file being written whose bytes are hashed on the way.
struct HashingWriter {
    path: PathBuf,
    out: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl HashingWriter {
    fn line(&mut self, value: &impl Serialize) -> Result<(), StoreError> {
        let mut buf = serde_json::to_vec(value)
            .map_err(|e| StoreError::Corrupt(format!("a row does not serialize: {e}")))?;
        buf.push(b'\n');
        self.raw(&buf)?;
        self.hasher.update(&buf);
        Ok(())
    }

    fn raw(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        self.out
            .write_all(buf)
            .map_err(|e| StoreError::io("write the backup file", &self.path, e))?;
        self.bytes += buf.len() as u64;
        Ok(())
    }
}

/// Removes the temporary file unless the backup completed.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Store {
    /// The store's newest applied migration.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(crate::store::get::<Option<i64>>(&row, "v")?.unwrap_or(0))
    }

    /// Writes a backup of the whole store to `out` (see the module
    /// documentation), from one consistent snapshot, while the store keeps
    /// serving. The file is written beside `out` under a temporary name
    /// (mode 0600), synced, and renamed over `out` only when complete:
    /// `out` is the whole backup or untouched. `now` is the backup's time.
    pub async fn backup(&self, out: &Path, now: Timestamp) -> Result<BackupSummary, StoreError> {
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = out
            .file_name()
            .ok_or_else(|| StoreError::io("write", out, std::io::ErrorKind::InvalidInput.into()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", hex(&random_bytes::<6>())));
        let tmp_path = dir.join(tmp_name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&tmp_path)
            .map_err(|e| StoreError::io("create the backup file in", &dir, e))?;
        let mut guard = TempFile(Some(tmp_path.clone()));
        let mut w = HashingWriter {
            path: tmp_path.clone(),
            out: BufWriter::with_capacity(1 << 16, file),
            hasher: Sha256::new(),
            bytes: 0,
        };

        let begin = match self.backend {
            Backend::Sqlite => "BEGIN",
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        let mut tx = self.pool.begin_with(begin).await?;
        // The snapshot starts here (SQLite: at this first read).
        let root = crate::store::read_root_key_record(&mut *tx)
            .await?
            .ok_or(StoreError::NotInitialized)?;
        let schema = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
            .fetch_one(&mut *tx)
            .await?;
        let head = sqlx::query("SELECT COUNT(*) AS n, MAX(seq) AS top FROM audit")
            .fetch_one(&mut *tx)
            .await?;
        let audit_length: i64 = crate::store::get(&head, "n")?;
        let top: Option<i64> = crate::store::get(&head, "top")?;
        let audit_head = match top {
            Some(seq) => {
                let row = sqlx::query("SELECT hash FROM audit WHERE seq = $1")
                    .bind(seq)
                    .fetch_one(&mut *tx)
                    .await?;
                Some(crate::store::get::<String>(&row, "hash")?)
            }
            None => None,
        };
        let header = BackupHeader {
            format: FORMAT.to_owned(),
            version: FORMAT_VERSION,
            created_at: now,
            source: match self.backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            }
            .to_owned(),
            schema: crate::store::get::<Option<i64>>(&schema, "v")?.unwrap_or(0),
            tables: TABLES.iter().map(|t| t.name.to_owned()).collect(),
            root_key_id: root.id,
            root_key_ref: root.reference,
            audit_length,
            audit_head,
        };
        w.line(&header)?;
        let mut checker = Checker::new(header.audit_head.as_deref());
        for table in TABLES {
            let layout = Layout::full(table);
            w.line(&TableStart {
                table: table.name.to_owned(),
                columns: table
                    .columns
                    .iter()
                    .map(|c| (c.name.to_owned(), c.ty))
                    .collect(),
            })?;
            checker.table(&layout)?;
            let names: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
            let sql = format!(
                "SELECT {} FROM {} ORDER BY {}",
                names.join(", "),
                table.name,
                table.order_by
            );
            let mut rows = sqlx::query(&sql).fetch(&mut *tx);
            let mut count = 0u64;
            while let Some(row) = rows.try_next().await? {
                let values = table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Value::from_row(&row, i, c))
                    .collect::<Result<Vec<_>, _>>()?;
                checker.row(&layout, &values)?;
                w.line(&values)?;
                count += 1;
            }
            drop(rows);
            w.line(&TableEnd {
                end: table.name.to_owned(),
                rows: count,
            })?;
        }
        tx.rollback().await?;
        let sum = hex(&std::mem::take(&mut w.hasher).finish());
        let mut trailer = serde_json::to_vec(&Trailer {
            sha256: sum.clone(),
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        trailer.push(b'\n');
        w.raw(&trailer)?;
        let bytes = w.bytes;
        let write_error = |e| StoreError::io("write the backup file", &tmp_path, e);
        let file = w
            .out
            .into_inner()
            .map_err(|e| write_error(e.into_error()))?;
        file.sync_all().map_err(write_error)?;
        drop(file);
        let (summary, _) = checker.finish(&header, sum, bytes).map_err(|e| match e {
            // A chain that is broken in the store itself.
            StoreError::InvalidBackup(reason) => StoreError::Corrupt(reason),
            e => e,
        })?;
        std::fs::rename(&tmp_path, out)
            .map_err(|e| StoreError::io("rename the backup to", out, e))?;
        guard.0 = None;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(summary)
    }

    /// The first table holding data, if any (`meta` counts only beyond its
    /// change counter, which every migrated store has).
    pub async fn first_nonempty_table(&self) -> Result<Option<&'static str>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        first_nonempty(&mut conn).await
    }

    /// Restores a checked backup ([`prepare_restore`]) into this store,
    /// which must be empty (`NotEmpty` otherwise), in one transaction: the
    /// file is read again, row by row, and the transaction commits only if
    /// the file still has the checksum that was verified. A `store.restore`
    /// audit record by `actor` at `now` is appended after the restored
    /// chain, and the change counter moves. Any failure leaves the store
    /// empty.
    pub async fn restore(
        &self,
        plan: &RestorePlan,
        actor: &str,
        now: Timestamp,
    ) -> Result<RestoreSummary, StoreError> {
        let ours = self.schema_version().await?;
        if plan.header.schema > ours {
            return Err(invalid(format!(
                "the backup's schema (migration {}) is newer than this keyward's ({ours}): restore it with the keyward that wrote it, or a newer one",
                plan.header.schema
            )));
        }
        let mut tx = self.begin().await?;
        tx.lock_for_change().await?;
        if let Some(table) = first_nonempty(&mut tx.tx).await? {
            return Err(StoreError::NotEmpty(table.to_owned()));
        }
        sqlx::query("DELETE FROM meta").execute(&mut *tx.tx).await?;

        let (mut reader, header) = Reader::open(open_file(&plan.path)?)?;
        if header != plan.header {
            return Err(invalid("the file changed since it was verified"));
        }
        let mut checker = Checker::new(header.audit_head.as_deref());
        let mut batch: Vec<Vec<Value>> = Vec::new();
        let summary = loop {
            match reader.next()? {
                Event::Table => checker.table(reader.layout().expect("a table was started"))?,
                Event::Row(row) => {
                    let layout = reader.layout().expect("in a table");
                    checker.row(layout, &row)?;
                    batch.push(row);
                    if batch.len() * layout.columns.len() >= MAX_PARAMS {
                        insert_rows(&mut tx.tx, self.backend, layout, &batch).await?;
                        batch.clear();
                    }
                }
                Event::TableEnd => {
                    let layout = reader.layout().expect("in a table");
                    insert_rows(&mut tx.tx, self.backend, layout, &batch).await?;
                    batch.clear();
                    // (setval is not undone by a rollback: a failed restore
                    // may leave the empty table's sequence further on.)
                    if let (Backend::Postgres, Some(col)) = (self.backend, layout.table.identity) {
                        let sql = format!(
                            "SELECT setval(pg_get_serial_sequence('{t}', '{col}'), \
                             COALESCE(MAX({col}), 0) + 1, false) FROM {t}",
                            t = layout.table.name
                        );
                        sqlx::query(&sql).execute(&mut *tx.tx).await?;
                    }
                    reader.current = None;
                }
                Event::End(sum, bytes) => break checker.finish(&header, sum, bytes)?.0,
            }
        };
        if summary.sha256 != plan.summary.sha256 {
            return Err(invalid("the file changed since it was verified"));
        }
        tx.bump_generation().await?;
        let rec = tx
            .append_audit(AuditEntry {
                at: now,
                actor: actor.to_owned(),
                action: "store.restore".to_owned(),
                env: None,
                subject: None,
                detail: serde_json::json!({
                    "backup_sha256": summary.sha256,
                    "backup_created_at": summary.created_at,
                    "source": summary.source,
                    "schema": summary.schema,
                    "audit_head": summary.audit_head,
                    "audit_length": summary.audit_length,
                    "tables": summary.tables,
                }),
            })
            .await?;
        tx.commit().await?;
        Ok(RestoreSummary {
            backup: summary,
            audit_seq: rec.seq,
        })
    }
}

async fn first_nonempty(
    conn: &mut sqlx::AnyConnection,
) -> Result<Option<&'static str>, StoreError> {
    for table in TABLES {
        let sql = if table.name == "meta" {
            "SELECT 1 AS one FROM meta WHERE name <> 'generation' LIMIT 1".to_owned()
        } else {
            format!("SELECT 1 AS one FROM {} LIMIT 1", table.name)
        };
        if sqlx::query(&sql)
            .fetch_optional(&mut *conn)
            .await?
            .is_some()
        {
            return Ok(Some(table.name));
        }
    }
    Ok(None)
}

async fn insert_rows(
    tx: &mut sqlx::Transaction<'static, Any>,
    backend: Backend,
    layout: &Layout,
    rows: &[Vec<Value>],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = layout.columns.iter().map(|c| c.name).collect();
    let overriding = match (backend, layout.table.identity) {
        (Backend::Postgres, Some(col)) if names.contains(&col) => " OVERRIDING SYSTEM VALUE",
        _ => "",
    };
    let mut sql = format!(
        "INSERT INTO {} ({}){overriding} VALUES ",
        layout.table.name,
        names.join(", ")
    );
    let mut n = 0;
    for (r, _) in rows.iter().enumerate() {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..names.len() {
            if c > 0 {
                sql.push_str(", ");
            }
            n += 1;
            sql.push_str(&format!("${n}"));
        }
        sql.push(')');
    }
    let mut q = sqlx::query(&sql);
    for row in rows {
        for (v, col) in row.iter().zip(&layout.columns) {
            q = match (v, col.ty) {
                (Value::Null, ColumnType::Text) => q.bind(None::<String>),
                (Value::Null, ColumnType::Int) => q.bind(None::<i64>),
                (Value::Null, ColumnType::Blob) => q.bind(None::<Vec<u8>>),
                (Value::Text(s), _) => q.bind(s.clone()),
                (Value::Int(i), _) => q.bind(*i),
                (Value::Blob(b), _) => q.bind(b.clone()),
            };
        }
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid file: every table empty but `meta` (with `extra` rows added
    /// to the table named), its header edited by `edit`, its trailer right.
    fn file(edit: impl Fn(&mut serde_json::Value), extra: (&str, &[&str])) -> Vec<u8> {
        let mut header = serde_json::to_value(BackupHeader {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            created_at: 1,
            source: "sqlite".into(),
            schema: crate::store::latest_migration(),
            tables: TABLES.iter().map(|t| t.name.to_owned()).collect(),
            root_key_id: "rk".into(),
            root_key_ref: None,
            audit_length: 0,
            audit_head: None,
        })
        .unwrap();
        edit(&mut header);
        let mut out = format!("{header}\n");
        for t in TABLES {
            let cols: Vec<(String, ColumnType)> = t
                .columns
                .iter()
                .map(|c| (c.name.to_owned(), c.ty))
                .collect();
            out.push_str(&serde_json::json!({"table": t.name, "columns": cols}).to_string());
            out.push('\n');
            let mut rows: Vec<String> = Vec::new();
            if t.name == "meta" {
                rows.push(r#"["root_key_id","rk"]"#.into());
            }
            if t.name == extra.0 {
                rows.extend(extra.1.iter().map(|r| r.to_string()));
            }
            for r in &rows {
                out.push_str(r);
                out.push('\n');
            }
            out.push_str(&format!(
                "{{\"end\":\"{}\",\"rows\":{}}}\n",
                t.name,
                rows.len()
            ));
        }
        let sum = hex(&keyward_jose::crypto::sha256(out.as_bytes()));
        out.push_str(&format!("{{\"sha256\":\"{sum}\"}}\n"));
        out.into_bytes()
    }

    fn check(bytes: &[u8]) -> Result<BackupSummary, StoreError> {
        let (mut reader, header) = Reader::open(std::io::Cursor::new(bytes))?;
        let mut checker = Checker::new(header.audit_head.as_deref());
        loop {
            match reader.next()? {
                Event::Table => checker.table(reader.layout().unwrap())?,
                Event::Row(row) => checker.row(reader.layout().unwrap(), &row)?,
                Event::TableEnd => reader.current = None,
                Event::End(sum, bytes) => return Ok(checker.finish(&header, sum, bytes)?.0),
            }
        }
    }

    fn refused(bytes: &[u8], needle: &str) {
        match check(bytes) {
            Err(StoreError::InvalidBackup(m)) => {
                assert!(m.contains(needle), "{m:?} lacks {needle:?}")
            }
            other => panic!("expected a refusal naming {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_file_is_read() {
        let s = check(&file(|_| {}, ("", &[]))).unwrap();
        assert_eq!(s.root_key_id, "rk");
        assert_eq!(s.tables.len(), TABLES.len());
    }

    #[test]
    fn headers_from_elsewhere_are_refused() {
        let newer = crate::store::latest_migration() + 1;
        refused(
            &file(|h| h["schema"] = newer.into(), ("", &[])),
            "is newer than",
        );
        refused(
            &file(|h| h["extra"] = 1.into(), ("", &[])),
            "malformed header",
        );
        refused(
            &file(|h| h["format"] = "other".into(), ("", &[])),
            "not a keyward backup",
        );
        refused(
            &file(|h| h["source"] = "mysql".into(), ("", &[])),
            "unknown source",
        );
        refused(
            &file(
                |h| h["tables"].as_array_mut().unwrap().push("nope".into()),
                ("", &[]),
            ),
            "unknown table",
        );
        refused(
            &file(
                |h| {
                    h["tables"].as_array_mut().unwrap().remove(0);
                },
                ("", &[]),
            ),
            "is missing",
        );
        refused(
            &file(|h| h["root_key_id"] = "other".into(), ("", &[])),
            "root key recorded inside",
        );
        refused(
            &file(|h| h["audit_length"] = 1.into(), ("", &[])),
            "not the one the header names",
        );
    }

    #[test]
    fn rows_of_the_wrong_shape_are_refused() {
        let rev = "revocations";
        refused(
            &file(|_| {}, (rev, &[r#"[1,"default","j",2]"#])),
            "has 4 values, not 5",
        );
        refused(
            &file(|_| {}, (rev, &[r#"["1","default","j",2,3]"#])),
            "column seq has the wrong type",
        );
        refused(
            &file(|_| {}, (rev, &[r#"[1.5,"default","j",2,3]"#])),
            "not a 64-bit integer",
        );
        refused(
            &file(|_| {}, (rev, &[r#"[null,"default","j",2,3]"#])),
            "column seq is NULL",
        );
        refused(
            &file(|_| {}, (rev, &[r#"{"seq":1}"#])),
            "expected a row or the end",
        );
        let admin = "admin_tokens";
        refused(
            &file(
                |_| {},
                (admin, &[r#"["i","n","AB==",1,null,"*",null,null,null]"#]),
            ),
            "not canonical base64",
        );
        assert!(check(&file(
            |_| {},
            (admin, &[r#"["i","n","AA==",1,null,"*",null,null,null]"#])
        ))
        .is_ok());
        let keys = "keys";
        let key = r#"["k","e","ES256",256,"{}","","generated",null,null,1,1,null,null,null,"local",null,null]"#;
        refused(&file(|_| {}, (keys, &[key])), "malformed sealed key");
        let key = r#"["k","e","ES256",256,"{}","","generated",null,null,1,1,null,null,null,"pkcs11",null,null]"#;
        refused(
            &file(|_| {}, (keys, &[key])),
            "does not match its device reference",
        );
        // A line past 1 MiB.
        let long = format!(
            r#"["i","{}","AA==",1,null,"*",null,null,null]"#,
            "n".repeat(MAX_LINE)
        );
        refused(
            &file(|_| {}, (admin, &[long.as_str()])),
            "longer than 1 MiB",
        );
    }
}
