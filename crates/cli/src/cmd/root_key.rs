//! `keyward root-key rotate`: re-wrap every data key under a new root key.
//!
//! Order of operations, so that no crash loses the keys: the new key is
//! written beside the old one (`root.key.new`, 0600), the database re-wraps
//! every key and records the new key's id in one transaction, then the new
//! file replaces the old. A crash after the commit leaves the staged file,
//! which the next command finds and completes (see `Context::root_key`).

use crate::output::outln;
use anyhow::{anyhow, bail, Context as _, Result};
use keyward_jose::seal::RootKey;
use keyward_store::RootKeySource;
use serde_json::json;

use crate::args::RootKeyCmd;
use crate::context::Context;
use crate::output::print_json;

pub async fn run(ctx: &Context, cmd: RootKeyCmd) -> Result<()> {
    let RootKeyCmd::Rotate { out, json } = cmd;
    let store = ctx.store().await?;
    let old = ctx.root_key(&store).await?;
    let source = ctx.root_key_source();
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
    let n = match store.rewrap_all(&old, &new, ctx.actor(), ctx.now()).await {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&written);
            return Err(e).context("root-key rotation failed; nothing was changed");
        }
    };
    if out.is_none() {
        source.commit_replace().map_err(|e| anyhow!("{e}"))?;
    }
    if json {
        print_json(&json!({"rewrapped": n, "root_key_id": new.key_id(), "written_to": written}));
    } else {
        outln!(
            "re-wrapped {n} keys under root key {} (the old root key opens nothing now)",
            new.key_id()
        );
        match (&source, out) {
            (_, Some(p)) => outln!(
                "the new root key is in {}; point KEYWARD_ROOT_KEY / KEYWARD_ROOT_KEY_FILE at it before the next command",
                p.display()
            ),
            _ => outln!("the new root key replaced {}", source.describe()),
        }
    }
    Ok(())
}
