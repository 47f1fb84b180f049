//! `keyward env`: environments and their rotation policy.

use anyhow::{anyhow, bail, Result};
use keyward_issuer::{fmt_time, keyring, rotation};
use keyward_jose::KeyFamily;
use keyward_store::{Environment, RotationPolicy};
use serde_json::{json, Value};

use crate::args::{EnvCmd, PolicyArgs};
use crate::context::Context;
use crate::output::{print_json, table};

/// An issuer URL keyward accepts: absolute http(s), no query or fragment.
pub fn check_issuer(issuer: &str) -> Result<()> {
    let ok_scheme = issuer.starts_with("https://") || issuer.starts_with("http://");
    let rest = issuer.split_once("://").map(|x| x.1).unwrap_or("");
    if !ok_scheme || rest.is_empty() || rest.starts_with('/') || issuer.contains(['?', '#', ' ']) {
        bail!("invalid issuer URL {issuer:?}: use an absolute http(s) URL without query or fragment, e.g. https://auth.example.com");
    }
    Ok(())
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
    if p.lead_secs <= 0 || p.rotate_every_secs <= p.lead_secs {
        bail!("the rotation period must be longer than the lead time, and the lead positive");
    }
    if p.token_ttl_secs <= 0 {
        bail!("the token TTL must be positive");
    }
    Ok(p)
}

pub fn env_json(e: &Environment) -> Value {
    json!({
        "name": e.name,
        "issuer": e.issuer,
        "created_at": fmt_time(e.created_at),
        "policy": {
            "alg": e.policy.alg.name(),
            "rsa_bits": e.policy.rsa_bits,
            "rotate_every_secs": e.policy.rotate_every_secs,
            "lead_secs": e.policy.lead_secs,
            "token_ttl_secs": e.policy.token_ttl_secs,
            "jwks_max_age_secs": rotation::jwks_max_age(&e.policy),
        },
    })
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
            keyring::check_kid(&name).map_err(|_| {
                anyhow!("an environment name is 1 to 128 characters of A-Z a-z 0-9 . _ -")
            })?;
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
                println!("created environment {name} (issuer {})", env.issuer);
                println!(
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
                println!("{}", serde_json::to_string_pretty(&env_json(&e))?);
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
                println!("updated environment {name}");
            }
        }
    }
    Ok(())
}
