//! `keyward backup` and `keyward restore`: the whole store as one file
//! (format and checks in `keyward_store::backup`; runbook in docs/backup.md).

use anyhow::{anyhow, Context as _, Result};
use keyward_issuer::fmt_time;
use keyward_store::{
    prepare_restore, verify_backup, BackupHeader, BackupSummary, RootKeyRecord, StoreError,
};

use crate::args::{BackupArgs, BackupCmd, RestoreArgs};
use crate::context::Context;
use crate::output::{fields, outln, print_json};

pub async fn backup(ctx: &Context, args: BackupArgs) -> Result<()> {
    if let Some(BackupCmd::Verify { file, json }) = args.cmd {
        let summary = blocking(move || verify_backup(&file)).await?;
        if json {
            print_json(&serde_json::to_value(&summary)?);
        } else {
            outln!("backup intact");
            show(&summary);
        }
        return Ok(());
    }
    let out = args
        .out
        .ok_or_else(|| anyhow!("keyward backup needs --out FILE"))?;
    let store = ctx.store().await?;
    let summary = store
        .backup(&out, ctx.now())
        .await
        .with_context(|| format!("backup to {} failed (nothing was written)", out.display()))?;
    store.close().await;
    if args.json {
        print_json(&serde_json::to_value(&summary)?);
    } else {
        outln!("backup written to {}", out.display());
        show(&summary);
    }
    Ok(())
}

pub async fn restore(ctx: &Context, args: RestoreArgs) -> Result<()> {
    let file = args.file;
    // Everything is checked before the target is opened: a refused restore
    // creates no data directory, no database file and no tables.
    let header = {
        let file = file.clone();
        blocking(move || BackupHeader::read(&file)).await?
    };
    let root = ctx.root_key_for(&RootKeyRecord {
        id: header.root_key_id.clone(),
        reference: header.root_key_ref.clone(),
    })?;
    let plan = {
        let file = file.clone();
        blocking(move || prepare_restore(&file, &root)).await?
    };
    let store = ctx.open_store_for_init().await?;
    let result = store.restore(&plan, ctx.actor(), ctx.now()).await;
    store.close().await;
    let done = result.map_err(|e| match e {
        StoreError::NotEmpty(_) => anyhow!("{e}; nothing was written"),
        e => anyhow!(e).context("restore failed; nothing was written"),
    })?;
    if args.json {
        print_json(&serde_json::to_value(&done)?);
    } else {
        outln!(
            "restored {} into {} (audit record {} notes the restore)",
            file.display(),
            target(ctx),
            done.audit_seq
        );
        show(&done.backup);
    }
    Ok(())
}

/// Where the command's store is, for messages (never the URL: it may hold a password).
fn target(ctx: &Context) -> String {
    match &ctx.database_url {
        Some(_) => "the database of --database-url".into(),
        None => ctx.data_dir.display().to_string(),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T> {
    Ok(tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| anyhow!("the backup check did not complete: {e}"))??)
}

fn show(s: &BackupSummary) {
    let tables = s
        .tables
        .iter()
        .map(|t| format!("{} {}", t.table, t.rows))
        .collect::<Vec<_>>()
        .join(", ");
    fields(&[
        ("taken", fmt_time(s.created_at)),
        ("from", format!("{} (schema {})", s.source, s.schema)),
        ("size", format!("{} bytes", s.bytes)),
        ("sha256", s.sha256.clone()),
        ("rows", tables),
        (
            "audit",
            format!(
                "{} records, head {}",
                s.audit_length,
                s.audit_head.as_deref().unwrap_or("-")
            ),
        ),
        (
            "root key",
            match &s.root_key_ref {
                Some(r) => format!("{} ({r})", s.root_key_id),
                None => format!("{} (local)", s.root_key_id),
            },
        ),
        ("sealed keys", s.sealed_keys.to_string()),
        ("device keys", s.device_keys.len().to_string()),
    ]);
    for d in &s.device_keys {
        outln!(
            "  device key {} (env {}): {} {} (the device must still hold it)",
            d.kid,
            d.env,
            d.store,
            d.reference
        );
    }
}
