//! `keyward root-key rotate [--to file|pkcs11:<label>|aws-kms:<name>]`:
//! re-wrap every local key's data key under a new root key, in one
//! transaction with its audit record.
//!
//! Order of operations, so that no crash loses the keys:
//! - to a key file (the default for a local root key): the new key is
//!   written beside the old one (`root.key.new`, 0600), the database
//!   re-wraps every key and records the new key's id in one transaction,
//!   then the new file replaces the old. A crash after the commit leaves the
//!   staged file, which the next command finds and completes (see
//!   `Context::root_key`); a crash before it changes nothing.
//! - to a device key: the key is found (or made) in the device first, then
//!   the one transaction re-wraps every key and records the new id and the
//!   device reference, which every command and server follows from then on.
//!   A key file the old root came from opens nothing afterwards and is
//!   removed, so no root key lies on disk.

use crate::output::outln;
use anyhow::{anyhow, bail, Context as _, Result};
use keyward_issuer::root_source::{open_device_root, RootKeySpec};
use keyward_jose::seal::RootKey;
use keyward_jose::SealError;
use keyward_store::{RootKeySource, StoreError};
use serde_json::json;

use crate::args::RootKeyCmd;
use crate::context::Context;
use crate::output::print_json;
use crate::root_source::parse_spec;

/// A test hook, in debug builds only: sleep this many milliseconds after
/// every key was re-wrapped and before the commit (so a test can kill the
/// process there).
#[cfg(debug_assertions)]
const PAUSE_VAR: &str = "KEYWARD_TEST_PAUSE_BEFORE_COMMIT_MS";

pub async fn run(ctx: &Context, cmd: RootKeyCmd) -> Result<()> {
    let RootKeyCmd::Rotate { to, out, json } = cmd;
    let to = to.as_deref().map(|t| parse_spec(t, "--to")).transpose()?;
    let store = ctx.store().await?;
    let old = ctx.root_key(&store).await?;
    let source = ctx.root_key_source();
    let old_where = match old.reference() {
        Some(r) => r,
        None => source.describe(),
    };
    let target = match to {
        Some(t) => t,
        None if old.is_device() => bail!(
            "the root key is {old_where}: name the new one with --to (pkcs11:<label>, aws-kms:<name> or file); nothing was changed"
        ),
        None => RootKeySpec::File,
    };
    if out.is_some() && target.is_device() {
        bail!("--out applies to --to file only; nothing was changed");
    }
    let (new, written) = match &target {
        RootKeySpec::Device { .. } => {
            let stores = ctx.key_stores()?;
            let new = open_device_root(&stores, &target, true)
                .map_err(|e| anyhow!("{e}; nothing was changed"))?;
            if new.key_id() == old.key_id() {
                bail!("{target} is already the store's root key; nothing was changed");
            }
            (new, None)
        }
        RootKeySpec::File => {
            let new = RootKey::generate();
            let written = match (&source, &out) {
                (RootKeySource::Env, None) => {
                    bail!("the root key comes from KEYWARD_ROOT_KEY; pass --out FILE to receive the new key (nothing was changed)")
                }
                (_, Some(path)) => {
                    let dest = RootKeySource::File(path.clone());
                    dest.create(&new).map_err(|e| anyhow!("{e}"))?;
                    path.clone()
                }
                (_, None) => source.stage_replace(&new).map_err(|e| anyhow!("{e}"))?,
            };
            (new, Some(written))
        }
    };
    let rotated = async {
        let mut tx = store.begin().await?;
        let n = tx.rewrap_all(&old, &new, ctx.actor(), ctx.now()).await?;
        pause_before_commit(n).await;
        tx.commit().await?;
        Ok::<_, StoreError>(n)
    }
    .await;
    let n = match rotated {
        Ok(n) => n,
        Err(e) => {
            if let Some(w) = &written {
                let _ = std::fs::remove_file(w);
            }
            let e = match e {
                StoreError::Seal(SealError::OpenFailed) => anyhow!(
                    "the root key from {old_where} (id {}) does not open every sealed key: it has the store's id but is another key, or a sealed key was altered",
                    old.key_id()
                ),
                StoreError::Seal(e @ SealError::BadRootKey(_)) => {
                    anyhow!("the new root key {target}: {e}")
                }
                other => anyhow!(other),
            };
            return Err(e).context("root-key rotation failed; nothing was changed");
        }
    };
    if target == RootKeySpec::File && out.is_none() {
        source.commit_replace().map_err(|e| anyhow!("{e}"))?;
    }
    // Moved off a key file: that key opens nothing now; no root key stays on disk.
    let mut removed = None;
    if new.is_device() && !old.is_device() {
        if let Some(p) = source.path().filter(|p| p.exists()) {
            match std::fs::remove_file(p) {
                Ok(()) => removed = Some(p.to_path_buf()),
                Err(e) => eprintln!(
                    "warning: cannot remove the old root key file {}: {e}; it opens nothing now, delete it",
                    p.display()
                ),
            }
        }
    }
    let new_where = match new.reference() {
        Some(r) => r,
        None => match &out {
            Some(p) => p.display().to_string(),
            None => source.describe(),
        },
    };
    if json {
        print_json(&json!({
            "rewrapped": n,
            "root_key_id": new.key_id(),
            "root_key_store": new.store(),
            "root_key_ref": new.reference(),
            "written_to": written,
            "removed": removed,
        }));
    } else {
        outln!(
            "re-wrapped {n} keys under root key {} ({new_where}); the old root key opens nothing now",
            new.key_id()
        );
        match (&target, &out) {
            (RootKeySpec::Device { .. }, _) => {
                outln!("every command and server now uses {new_where} (the store records it); configure the device where they run");
                if let Some(p) = &removed {
                    outln!("removed the old root key file {}", p.display());
                }
                if source == RootKeySource::Env && !old.is_device() {
                    outln!("unset KEYWARD_ROOT_KEY where it is set: that key opens nothing now");
                }
            }
            (_, Some(p)) => outln!(
                "the new root key is in {}; point KEYWARD_ROOT_KEY / KEYWARD_ROOT_KEY_FILE at it before the next command",
                p.display()
            ),
            _ => outln!("the new root key replaced {}", source.describe()),
        }
    }
    Ok(())
}

#[cfg(debug_assertions)]
async fn pause_before_commit(n: usize) {
    let ms = std::env::var(PAUSE_VAR)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = ms {
        eprintln!("test hook: re-wrapped {n} keys; pausing {ms} ms before the commit");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

#[cfg(not(debug_assertions))]
async fn pause_before_commit(_n: usize) {}
