//! Backups ([`keyward_store::backup`]), once per backend: the table list
//! covers the migrated schema, and a backup restores whole into the other
//! backend (or a second store of the same one) with its revocation feed's
//! sequence intact.

use keyward_jose::seal::RootKey;
use keyward_store::backup::ColumnType;
use keyward_store::{
    prepare_restore, verify_backup, Backend, RestorePlan, Store, StoreError, TABLES,
};
use sqlx::{AnyConnection, Connection, Executor, Row};

use super::{env, key};
use crate::common::Ctx;

crate::backend_suite!(
    backup_covers_every_table_and_column,
    backup_restores_into_an_empty_store_of_each_backend,
);

/// Every (table, column, type, NOT NULL) of the migrated database.
async fn schema_columns(store: &Store, ctx: &Ctx) -> Vec<(String, String, ColumnType, bool)> {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(&ctx.url).await.unwrap();
    let sql = match store.backend() {
        Backend::Sqlite => {
            "SELECT m.name AS t, p.name AS c, p.type AS ty, p.\"notnull\" AS nn \
             FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS ty, \
             CASE WHEN is_nullable = 'YES' THEN 0 ELSE 1 END::bigint AS nn \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'"
        }
    };
    let rows = conn.fetch_all(sql).await.unwrap();
    conn.close().await.ok();
    let mut out: Vec<_> = rows
        .iter()
        .map(|r| {
            let ty: String = r.get("ty");
            let ty = match ty.to_ascii_lowercase().as_str() {
                "text" => ColumnType::Text,
                "integer" | "bigint" => ColumnType::Int,
                "blob" | "bytea" => ColumnType::Blob,
                other => panic!("a column of type {other}: teach the backup its type"),
            };
            (r.get("t"), r.get("c"), ty, r.get::<i64, _>("nn") != 0)
        })
        .collect();
    out.sort();
    out
}

async fn backup_covers_every_table_and_column(store: Store, ctx: Ctx) {
    let in_db = schema_columns(&store, &ctx).await;
    assert!(
        in_db.len() > 40,
        "the schema query found too little: {in_db:?}"
    );
    let mut listed: Vec<_> = TABLES
        .iter()
        .flat_map(|t| {
            t.columns
                .iter()
                .map(|c| (t.name.to_owned(), c.name.to_owned(), c.ty, !c.nullable))
        })
        .collect();
    listed.sort();
    let missing: Vec<_> = in_db.iter().filter(|c| !listed.contains(c)).collect();
    assert!(
        missing.is_empty(),
        "columns in the migrations that keyward_store::backup::TABLES does not carry (add them there): {missing:?}"
    );
    let stale: Vec<_> = listed.iter().filter(|c| !in_db.contains(c)).collect();
    assert!(
        stale.is_empty(),
        "columns in keyward_store::backup::TABLES that the database does not have: {stale:?}"
    );
}

async fn backup_restores_into_an_empty_store_of_each_backend(store: Store, _ctx: Ctx) {
    let root = RootKey::generate();
    let mut tx = store.begin().await.unwrap();
    tx.initialize_root(&root).await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.insert_key(&key(&root, "prod", "k1", 1_000, b"secret one"))
        .await
        .unwrap();
    // Enough rows that the restore inserts them in several statements.
    for n in 0..400 {
        tx.revoke_jti("prod", &format!("jti-{n}"), 9_000, 1_500)
            .await
            .unwrap();
    }
    tx.append_audit(keyward_store::AuditEntry {
        at: 1_600,
        actor: "test".into(),
        action: "thing.do".into(),
        env: Some("prod".into()),
        subject: None,
        detail: serde_json::json!({"n": 1}),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.kwb");
    let taken = store.backup(&file, 2_000).await.unwrap();
    assert_eq!(verify_backup(&file).unwrap(), taken);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Another root key is refused before any store is touched.
    let e = prepare_restore(&file, &RootKey::generate()).unwrap_err();
    assert!(matches!(e, StoreError::WrongRootKey { .. }), "{e:?}");
    let plan = prepare_restore(&file, &root).unwrap();

    // Restored into SQLite (the other backend for a PostgreSQL run).
    let target = Store::open_sqlite(&dir.path().join("restored.db"))
        .await
        .unwrap();
    restored_whole(&store, &target, &plan, &root).await;
    target.close().await;

    // And into a fresh PostgreSQL schema (the restore resets the identity
    // sequence there).
    if let Some(base) = crate::common::postgres_url("the PostgreSQL restore of the backup test") {
        let schema = crate::common::new_schema(&base).await;
        let pg = Store::open_url(&crate::common::url_with_schema(&base, &schema))
            .await
            .unwrap();
        let outcome = tokio::spawn({
            let (store, pg) = (store.clone(), pg.clone());
            async move { restored_whole(&store, &pg, &plan, &root).await }
        })
        .await;
        pg.close().await;
        crate::common::drop_schema(&base, &schema).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Restores `plan` (a backup of `source`) into the empty `target` and
/// checks it holds the same, goes on from there, and refuses a second restore.
async fn restored_whole(source: &Store, target: &Store, plan: &RestorePlan, root: &RootKey) {
    let taken = plan.summary().clone();
    let done = target.restore(plan, "test", 3_000).await.unwrap();
    assert_eq!(done.backup, taken);
    assert_eq!(
        target.environments().await.unwrap(),
        source.environments().await.unwrap()
    );
    assert_eq!(
        target.keys_all().await.unwrap(),
        source.keys_all().await.unwrap()
    );
    let feed = source.revocations_since("prod", 0, 1_000).await.unwrap();
    assert_eq!(feed.len(), 400);
    assert_eq!(
        target.revocations_since("prod", 0, 1_000).await.unwrap(),
        feed
    );
    // The feed goes on after the restored seqs.
    let mut tx = target.begin().await.unwrap();
    let next = tx
        .revoke_jti("prod", "d", 9_000, 3_100)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert!(next.seq > feed.last().unwrap().seq);
    let report = target.verify_audit().await.unwrap();
    assert!(report.is_intact());
    assert_eq!(report.length, taken.audit_length + 1);
    let last = target.audit(taken.audit_length, 1).await.unwrap();
    assert_eq!(last[0].action, "store.restore");
    assert_eq!(last[0].prev_hash, taken.audit_head.clone().unwrap());
    assert!(target.check_root_key_opens(root).await.is_ok());
    // A second restore into the same store is refused, and changes nothing.
    let before = target.audit_len().await.unwrap();
    let e = target.restore(plan, "test", 3_200).await.unwrap_err();
    assert!(matches!(e, StoreError::NotEmpty(_)), "{e:?}");
    assert_eq!(target.audit_len().await.unwrap(), before);
}
