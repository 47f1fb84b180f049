//! `keyward env`: environments and their rotation policy.

use crate::output::outln;
use anyhow::{anyhow, bail, Result};
use keyward_issuer::views::env_json;
use keyward_issuer::{fmt_time, keyring};
use keyward_jose::KeyFamily;
use keyward_store::{Environment, RotationPolicy};
use serde_json::Value;

use crate::args::{EnvCmd, PolicyArgs};
use crate::context::Context;
use crate::output::{print_json, table};

/// An issuer URL keyward accepts: absolute http(s), no query or fragment.
pub fn check_issuer(issuer: &str) -> Result<()> {
    keyring::check_issuer(issuer).map_err(|e| anyhow!("{e}"))
}

fn apply(mut p: RotationPolicy, a: &PolicyArgs) -> Result<RotationPolicy> {
    if let Some(alg) = a.alg {
        p.alg = alg;
        p.rsa_bits = matches!(alg.family(), KeyFamily::Rsa)
            .then_some(p.rsa_bits.unwrap_or(keyward_jose::DEFAULT_RSA_BITS));
    }
    if let Some(b) = a.bits {
        if !matches!(p.alg.family(), KeyFamily::Rsa) {
            bail!("--bits applies to RSA algorithms only");
        }
        if !keyward_jose::RSA_SIZES.contains(&b) {
            bail!("RSA key size {b} is not offered (choose 2048, 3072 or 4096)");
        }
        p.rsa_bits = Some(b);
    }
    if let Some(v) = a.rotate_every {
        p.rotate_every_secs = v;
    }
    if let Some(v) = a.lead {
        p.lead_secs = v;
    }
    if let Some(v) = a.token_ttl {
        p.token_ttl_secs = v;
    }
    keyring::check_policy(&p).map_err(|e| anyhow!("{e}"))?;
    Ok(p)
}

pub async fn run(ctx: &Context, cmd: EnvCmd) -> Result<()> {
    let store = ctx.store().await?;
    match cmd {
        EnvCmd::Create {
            name,
            issuer,
            policy,
            json,
        } => {
            keyring::check_env_name(&name).map_err(|e| anyhow!("{e}"))?;
            check_issuer(&issuer)?;
            let env = Environment {
                name: name.clone(),
                issuer,
                policy: apply(RotationPolicy::default(), &policy)?,
                created_at: ctx.now(),
            };
            keyring::create_environment(&store, &env, ctx.at()).await?;
            if json {
                print_json(&env_json(&env));
            } else {
                outln!("created environment {name} (issuer {})", env.issuer);
                outln!(
                    "it has no key yet: keyward keys generate --env {name} --alg {}",
                    env.policy.alg
                );
            }
        }
        EnvCmd::List { json } => {
            let envs = store.environments().await?;
            if json {
                print_json(&Value::Array(envs.iter().map(env_json).collect()));
            } else {
                let rows: Vec<Vec<String>> = envs
                    .iter()
                    .map(|e| {
                        vec![
                            e.name.clone(),
                            e.issuer.clone(),
                            e.policy.alg.to_string(),
                            fmt_time(e.created_at),
                        ]
                    })
                    .collect();
                table(&["NAME", "ISSUER", "ALG", "CREATED"], &rows);
            }
        }
        EnvCmd::Show { name, json } => {
            let e = store.environment(&name).await?;
            if json {
                print_json(&env_json(&e));
            } else {
                outln!("{}", serde_json::to_string_pretty(&env_json(&e))?);
            }
        }
        EnvCmd::Update {
            name,
            issuer,
            policy,
            json,
        } => {
            let mut e = store.environment(&name).await?;
            if let Some(i) = issuer {
                check_issuer(&i)?;
                e.issuer = i;
            }
            e.policy = apply(e.policy, &policy)?;
            keyring::update_environment(&store, &e, ctx.at()).await?;
            if json {
                print_json(&env_json(&e));
            } else {
                outln!("updated environment {name}");
            }
        }
    }
    Ok(())
}
