//! `keyward keys`: the key lifecycle.

use crate::output::{out, outln};
use anyhow::{bail, Context as _, Result};
use keyward_issuer::keyring::{KeyChoice, KeySpec, KeyStores};
use keyward_issuer::{
    fmt_time, keyring, rotation, AddedKey, KeyOptions, Origin, RetireOptions, Schedule,
};
use std::path::Path;

use keyward_jose::{Algorithm, KeyFamily, PrivateKey};
use keyward_store::Environment;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::args::{ExportFormat, KeyMeta, KeysCmd, ScheduleArgs};
use crate::context::{generating, Context};
use crate::output::{key_json, key_rows, print_json, table, KEY_HEADER};

fn immediate_warning(env: &Environment) {
    eprintln!(
        "warning: --immediate: the new key signs now, before verifiers that cached the JWKS of {} have seen it; \
         they reject its tokens until their cache refreshes (up to {} s here, longer for caches that ignore Cache-Control)",
        env.name,
        rotation::jwks_max_age(&env.policy)
    );
}

fn report(ctx: &Context, added: &AddedKey, json: bool) {
    let now = ctx.now();
    if json {
        let mut v = key_json(&added.key, now);
        v["retiring"] = Value::Array(
            added
                .plan
                .retiring
                .iter()
                .map(|k| key_json(k, now))
                .collect(),
        );
        print_json(&v);
        return;
    }
    let k = &added.key;
    // An ML-DSA key's parameter set is its algorithm: no size to add.
    let size = match k.alg.family() {
        KeyFamily::MlDsa(_) => String::new(),
        _ => format!(", {} bits", k.size_bits),
    };
    outln!(
        "{} key {} ({}{size}) in environment {}",
        k.origin,
        k.kid,
        k.alg,
        k.env
    );
    if k.activates_at <= now {
        outln!("  signs from now on");
    } else {
        outln!("  published now; signs from {}", fmt_time(k.activates_at));
    }
    for r in &added.plan.retiring {
        outln!(
            "  key {} retires at {} and is removed at {}",
            r.kid,
            r.retires_at.map(fmt_time).unwrap_or_default(),
            r.removes_at.map(fmt_time).unwrap_or_default()
        );
    }
    if added.policy_updated {
        outln!("  automatic rotation of {} now uses {}", k.env, k.alg);
    }
}

/// Where a new key comes from.
enum NewKey {
    /// Generated: the environment's policy, or this algorithm and size
    /// (adopted by the policy when a rotation names them).
    Generate(KeyChoice),
    /// Imported (or why it could not be read).
    Import(Result<PrivateKey>),
}

/// Brings a generated or imported key into environment `env_name`.
async fn add(
    ctx: &Context,
    env_name: &str,
    new: NewKey,
    meta: KeyMeta,
    s: &ScheduleArgs,
    json: bool,
) -> Result<()> {
    let store = ctx.store().await?;
    let env = store.environment(env_name).await?;
    let root = ctx.root_key(&store).await?;
    let sched = Schedule::requested(s.immediate, s.lead);
    let mut opts = KeyOptions {
        kid: meta.kid,
        owner: meta.owner,
        description: meta.description,
        origin: Origin::Generated,
    };
    let added = match new {
        NewKey::Generate(choice) => {
            let shown = match choice {
                KeyChoice::Policy => KeySpec::for_policy(&env.policy),
                KeyChoice::Given(s) | KeyChoice::Adopt(s) => s,
            };
            // The environment's device store (refused, saying how to
            // configure it, when it is not configured here).
            let stores = match env.key_store.is_device() {
                true => ctx.key_stores()?,
                false => KeyStores::none(),
            };
            let work = keyring::generate_key(
                &store,
                &root,
                &stores,
                env_name,
                choice,
                &opts,
                sched,
                || ctx.at(),
            );
            generating(shown, json, work).await?
        }
        NewKey::Import(key) => {
            opts.origin = Origin::Imported;
            keyring::add_key(&store, &root, env_name, &key?, &opts, sched, ctx.at()).await?
        }
    };
    let alg = added.key.alg;
    if sched == Schedule::Immediate && !added.plan.retiring.is_empty() {
        immediate_warning(&env);
    }
    if !json && !added.policy_updated && env.policy.alg != alg {
        eprintln!(
            "note: automatic rotation of {} still uses {} (change it with `keyward env update {} --alg {alg}`)",
            env.name, env.policy.alg, env.name,
        );
    }
    report(ctx, &added, json);
    Ok(())
}

/// Reads the private key of `keys import`: a PEM for `alg`, or a private
/// AKP JWK (whose algorithm must be `alg` when one is named).
fn import(alg: Option<Algorithm>, pem: Option<&Path>, jwk: Option<&Path>) -> Result<PrivateKey> {
    let file = pem.or(jwk).context("--pem or --jwk is required")?;
    let text = Zeroizing::new(
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?,
    );
    let key = match (alg, jwk) {
        (_, Some(_)) => PrivateKey::from_jwk(text.trim().as_bytes()),
        (Some(alg), None) => PrivateKey::from_pem(alg, &text),
        (None, None) => bail!("--alg is required with --pem"),
    }
    .with_context(|| format!("cannot import {}", file.display()))?;
    match alg {
        Some(alg) if alg != key.algorithm() => bail!(
            "cannot import {}: it is an {} key, not {alg}",
            file.display(),
            key.algorithm()
        ),
        _ => Ok(key),
    }
}

pub async fn run(ctx: &Context, cmd: KeysCmd) -> Result<()> {
    match cmd {
        KeysCmd::Generate {
            env,
            key,
            meta,
            schedule,
            json,
        } => {
            if key.bits.is_some() && !matches!(key.alg.family(), KeyFamily::Rsa) {
                bail!("--bits applies to RSA algorithms only");
            }
            let spec = KeySpec {
                alg: key.alg,
                rsa_bits: key.bits,
            };
            add(
                ctx,
                &env,
                NewKey::Generate(KeyChoice::Given(spec)),
                meta,
                &schedule,
                json,
            )
            .await
        }
        KeysCmd::Import {
            env,
            alg,
            pem,
            jwk,
            meta,
            schedule,
            json,
        } => {
            let k = import(alg, pem.as_deref(), jwk.as_deref());
            add(ctx, &env, NewKey::Import(k), meta, &schedule, json).await
        }
        KeysCmd::Rotate {
            env,
            alg,
            bits,
            schedule,
            json,
        } => {
            // A rotation that names an algorithm or a size moves the policy to it.
            let choice = match (alg, bits) {
                (None, None) => KeyChoice::Policy,
                _ => {
                    let store = ctx.store().await?;
                    let e = store.environment(&env).await?;
                    KeyChoice::for_rotation(&e.policy, alg, bits)?
                }
            };
            let meta = KeyMeta {
                kid: None,
                owner: None,
                description: Some("rotation".into()),
            };
            add(ctx, &env, NewKey::Generate(choice), meta, &schedule, json).await
        }
        KeysCmd::List { env, json } => {
            let store = ctx.store().await?;
            let keys = store.keys(&env).await?;
            let now = ctx.now();
            if json {
                print_json(&Value::Array(
                    keys.iter().map(|k| key_json(k, now)).collect(),
                ));
            } else {
                table(&KEY_HEADER, &key_rows(&keys, now));
            }
            Ok(())
        }
        KeysCmd::Retire {
            kid,
            force,
            accept_outage,
            json,
        } => {
            let store = ctx.store().await?;
            let opts = RetireOptions {
                force,
                accept_outage,
            };
            let rec = keyring::retire_key(&store, &kid, ctx.at(), opts).await?;
            if json {
                print_json(&key_json(&rec, ctx.now()));
            } else {
                outln!(
                    "key {kid} retired: no longer signs; published until {}",
                    rec.removes_at.map(fmt_time).unwrap_or_default()
                );
            }
            Ok(())
        }
        KeysCmd::Revoke { kid, reason, json } => {
            let store = ctx.store().await?;
            // A device key is destroyed at once where its store is
            // configured; otherwise the server's sweep does it.
            let stores = ctx.key_stores().unwrap_or_else(|e| {
                eprintln!("warning: key stores: {e:#}; a device key is revoked but destroyed later by the server's sweep");
                KeyStores::none()
            });
            let (rec, was_signing) =
                keyring::revoke_key(&store, &stores, &kid, ctx.at(), reason.as_deref()).await?;
            if json {
                let mut v = key_json(&rec, ctx.now());
                v["was_signing"] = json!(was_signing);
                print_json(&v);
            } else {
                outln!("key {kid} revoked: unpublished now; its tokens fail as soon as verifiers refresh the JWKS");
            }
            if was_signing {
                eprintln!(
                    "warning: {kid} was the signing key of {}: it has no active key now. Run `keyward keys rotate --env {} --immediate`",
                    rec.env, rec.env
                );
            }
            Ok(())
        }
        KeysCmd::Export { env, format } => {
            let store = ctx.store().await?;
            let keys = store.keys(&env).await?;
            let now = ctx.now();
            let set = keyring::jwks(&keys, now)?;
            match format {
                ExportFormat::Jwks => print_json(&set.to_value()),
                ExportFormat::Pem => {
                    for (jwk, rec) in set.keys.iter().zip(rotation::published(&keys, now)) {
                        outln!(
                            "kid: {} alg: {} state: {}",
                            rec.kid,
                            rec.alg,
                            rec.state(now)
                        );
                        out!("{}", jwk.key.to_pem());
                    }
                }
            }
            Ok(())
        }
    }
}
