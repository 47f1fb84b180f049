//! `keyward init`: a new store, its root key, the first environment and key.

use crate::output::outln;
use anyhow::{anyhow, bail, Context as _, Result};
use keyward_issuer::keyring::KeySpec;
use keyward_issuer::{fmt_time, keyring, KeyOptions, Origin};
use keyward_jose::seal::RootKey;
use keyward_jose::KeyFamily;
use keyward_store::{Environment, RootKeySource, RotationPolicy};
use serde_json::json;

use crate::args::InitArgs;
use crate::cmd::env::check_issuer;
use crate::context::{generating, Context};
use crate::output::print_json;

pub async fn run(ctx: &Context, a: InitArgs) -> Result<()> {
    check_issuer(&a.issuer)?;
    keyring::check_env_name(&a.env).map_err(|e| anyhow!("{e}"))?;
    let source = ctx.root_key_source();
    // Refuse a used data dir before touching anything.
    if ctx.database_url.is_none() && ctx.sqlite_path().exists() {
        bail!(
            "{} is already initialized (keyward.db exists); nothing was changed",
            ctx.data_dir.display()
        );
    }
    if let RootKeySource::DataDir(p) = &source {
        if p.exists() {
            bail!(
                "{} already exists: already initialized; refusing to replace a root key (nothing was changed)",
                p.display()
            );
        }
    }
    let bits = match a.key.alg.family() {
        KeyFamily::Rsa => Some(a.key.bits.unwrap_or(keyward_jose::DEFAULT_RSA_BITS)),
        _ if a.key.bits.is_some() => bail!("--bits applies to RSA algorithms only"),
        _ => None,
    };
    // The slow part first, before anything is written.
    let spec = KeySpec {
        alg: a.key.alg,
        rsa_bits: bits,
    };
    let key = generating(spec, a.json, keyring::generate(spec)).await?;

    let store = ctx.open_store_for_init().await?;
    if store.root_key_id().await?.is_some() {
        bail!("the database is already initialized; nothing was changed");
    }
    let (root, created_file) = match &source {
        RootKeySource::DataDir(_) => {
            let root = RootKey::generate();
            source.create(&root).map_err(|e| anyhow!("{e}"))?;
            (root, true)
        }
        _ => (source.load().map_err(|e| anyhow!("{e}"))?, false),
    };
    let now = ctx.now();
    let env = Environment {
        name: a.env.clone(),
        issuer: a.issuer.clone(),
        policy: RotationPolicy {
            alg: a.key.alg,
            rsa_bits: bits,
            ..RotationPolicy::default()
        },
        created_at: now,
        key_store: keyward_store::KeyStoreName::Local,
    };
    let opts = KeyOptions {
        kid: None,
        owner: None,
        description: Some("created by keyward init".into()),
        origin: Origin::Generated,
    };
    let at = keyward_issuer::Change {
        now,
        actor: ctx.actor(),
    };
    let rec = match keyring::initialize(&store, &root, &env, &key, &opts, at).await {
        Ok(r) => r,
        Err(e) => {
            if created_file {
                if let Some(p) = source.path() {
                    let _ = std::fs::remove_file(p);
                }
            }
            return Err(e).context("initialization failed; nothing was kept");
        }
    };
    if a.json {
        print_json(&json!({
            "data_dir": ctx.data_dir,
            "root_key": source.describe(),
            "root_key_id": root.key_id(),
            "env": env.name,
            "issuer": env.issuer,
            "kid": rec.kid,
            "alg": rec.alg.name(),
            "size": rec.size_bits,
            "active_since": fmt_time(rec.activates_at),
        }));
    } else {
        outln!("initialized keyward in {}", ctx.data_dir.display());
        outln!(
            "  root key:     {} (id {}) — back it up; without it no key opens",
            source.describe(),
            root.key_id()
        );
        outln!("  environment:  {} (issuer {})", env.name, env.issuer);
        outln!(
            "  active key:   {} ({}, {} bits)",
            rec.kid,
            rec.alg,
            rec.size_bits
        );
        let (keyward, hint) = crate::output::command_name();
        outln!("next: {keyward} keys list --env {}", env.name);
        if let Some(h) = hint {
            outln!("  ({h})");
        }
    }
    Ok(())
}
