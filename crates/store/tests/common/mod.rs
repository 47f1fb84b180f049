//! Runs one async test body against each backend: SQLite in a temporary
//! directory always, PostgreSQL (a fresh schema per test, dropped afterwards)
//! when `KEYWARD_TEST_DATABASE_URL` is set.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;

use keyward_jose::crypto::{hex, random_bytes};
use keyward_store::Store;
use sqlx::{AnyConnection, Connection, Executor};

/// What a test body gets besides the store: a way to reach the same database
/// with raw SQL (to tamper with it).
#[derive(Clone, Debug)]
pub struct Ctx {
    pub url: String,
    pub db_file: Option<PathBuf>,
    pub schema: Option<String>,
}

impl Ctx {
    /// Runs raw SQL on a separate connection to the test's database.
    pub async fn exec(&self, sql: &str) -> u64 {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(&self.url)
            .await
            .expect("raw connection");
        let done = conn.execute(sql).await.expect("raw SQL");
        conn.close().await.ok();
        done.rows_affected()
    }

    /// Runs a raw query returning one text value.
    pub async fn fetch_text(&self, sql: &str) -> String {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(&self.url)
            .await
            .expect("raw connection");
        let row = conn.fetch_one(sql).await.expect("raw SQL");
        conn.close().await.ok();
        sqlx::Row::get(&row, 0)
    }
}

pub const PG_VAR: &str = "KEYWARD_TEST_DATABASE_URL";

pub async fn run_sqlite<F, Fut>(body: F)
where
    F: FnOnce(Store, Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.db");
    let store = Store::open_sqlite(&path).await.unwrap();
    let ctx = Ctx {
        url: format!("sqlite://{}?mode=rw", path.display()),
        db_file: Some(path),
        schema: None,
    };
    body(store.clone(), ctx).await;
    store.close().await;
}

/// A URL for `base` whose connections use `schema` as their search path.
pub fn url_with_schema(base: &str, schema: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

pub async fn new_schema(base: &str) -> String {
    let schema = format!("kw_test_{}", hex(&random_bytes::<8>()));
    let mut admin = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to PostgreSQL");
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .unwrap();
    admin.close().await.ok();
    schema
}

pub async fn drop_schema(base: &str, schema: &str) {
    let mut admin = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to PostgreSQL");
    admin
        .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
        .await
        .unwrap();
    admin.close().await.ok();
}

pub async fn run_postgres<F, Fut>(body: F)
where
    F: FnOnce(Store, Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(base) = postgres_url("the PostgreSQL run of a store suite test") else {
        return;
    };
    let schema = new_schema(&base).await;
    let url = url_with_schema(&base, &schema);
    let store = Store::open_url(&url).await.expect("open PostgreSQL store");
    let ctx = Ctx {
        url,
        db_file: None,
        schema: Some(schema.clone()),
    };
    // Run the body as a task so a failing assertion still drops the schema.
    let outcome = tokio::spawn(body(store.clone(), ctx)).await;
    store.close().await;
    drop_schema(&base, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Declares each listed `async fn(Store, Ctx)` as a test per backend.
#[macro_export]
macro_rules! backend_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::common::run_postgres(super::$name).await;
                }
            )*
        }
    };
}

/// The PostgreSQL server the PostgreSQL tests use (`KEYWARD_TEST_DATABASE_URL`).
/// Without one the test is skipped and says so on the test run's own output
/// (written past the test harness's capture, one `SKIPPED` line per skip,
/// so `grep -c SKIPPED` counts them); with `KEYWARD_REQUIRE_POSTGRES=1`, as
/// `.ci/run` sets, a missing server fails the test instead.
pub fn postgres_url(what: &str) -> Option<String> {
    if let Some(url) = std::env::var(PG_VAR).ok().filter(|u| !u.is_empty()) {
        return Some(url);
    }
    assert!(
        std::env::var("KEYWARD_REQUIRE_POSTGRES").as_deref() != Ok("1"),
        "KEYWARD_TEST_DATABASE_URL is not set, but KEYWARD_REQUIRE_POSTGRES=1: {what} must run"
    );
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED (no PostgreSQL; set KEYWARD_TEST_DATABASE_URL): {what}"
    );
    None
}
