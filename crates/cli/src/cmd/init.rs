//! `keyward init`: a new store, its root key, the first environment and key.

use crate::output::outln;
use anyhow::{anyhow, bail, Context as _, Result};
use keyward_issuer::keyring::KeySpec;
use keyward_issuer::root_source::{open_device_root, RootKeySpec};
use keyward_issuer::{fmt_time, keyring, KeyOptions, Origin};
use keyward_jose::seal::RootKey;
use keyward_jose::KeyFamily;
use keyward_signers::KeyStores;
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
    let root_spec = match &a.root_key {
        Some(t) => Some(crate::root_source::parse_spec(t, "--root-key")?),
        None => ctx.root_key_spec()?,
    }
    .unwrap_or(RootKeySpec::File);
    // A device root needs its store configured: say so before anything.
    let stores = match &root_spec {
        RootKeySpec::Device { store, .. } => {
            let stores = ctx.key_stores()?;
            stores
                .get(store)
                .map_err(|e| anyhow!("root key {root_spec}: {e} (nothing was changed)"))?;
            stores
        }
        RootKeySpec::File => KeyStores::none(),
    };
    // Refuse a used data dir before touching anything.
    if ctx.database_url.is_none() && ctx.sqlite_path().exists() {
        bail!(
            "{} is already initialized (keyward.db exists); nothing was changed",
            ctx.data_dir.display()
        );
    }
    if let (RootKeySource::DataDir(p), RootKeySpec::File) = (&source, &root_spec) {
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
    let (root, created_file) = match (&root_spec, &source) {
        // Made in the device when missing; nothing is written to disk.
        (RootKeySpec::Device { .. }, _) => (
            open_device_root(&stores, &root_spec, true)
                .map_err(|e| anyhow!("{e} (nothing was changed)"))?,
            false,
        ),
        (_, RootKeySource::DataDir(_)) => {
            let root = RootKey::generate();
            source.create(&root).map_err(|e| anyhow!("{e}"))?;
            (root, true)
        }
        (_, _) => (source.load().map_err(|e| anyhow!("{e}"))?, false),
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
        dpop_nonce_secret: None,
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
    let root_where = match &root_spec {
        RootKeySpec::Device { .. } => format!("{root_spec} (in the device; no root key on disk)"),
        RootKeySpec::File => source.describe(),
    };
    if a.json {
        print_json(&json!({
            "data_dir": ctx.data_dir,
            "root_key": match &root_spec {
                RootKeySpec::Device { .. } => root_spec.to_string(),
                RootKeySpec::File => source.describe(),
            },
            "root_key_ref": root.reference(),
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
            "  root key:     {} (id {}) — {}",
            root_where,
            root.key_id(),
            if root.is_device() {
                "without it no key opens: keep the device key (its backups) safe"
            } else {
                "back it up; without it no key opens"
            }
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
