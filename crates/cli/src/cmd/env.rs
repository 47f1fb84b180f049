//! `keyward env`: environments and their rotation policy.

use crate::output::outln;
use anyhow::{anyhow, bail, Result};
use keyward_issuer::keyring::{KeySpec, KeyStores};
use keyward_issuer::views::{env_json, key_json};
use keyward_issuer::{fmt_time, keyring, rotation, FirstKey, KeyOptions, Origin};
use keyward_jose::KeyFamily;
use keyward_store::{Environment, KeyState, RotationPolicy};
use serde_json::{json, Value};

use crate::args::{EnvCmd, KeyStore, LoginUrlArgs, PolicyArgs};
use crate::context::{generating, Context};
use crate::output::{duration, fields, print_json, table};

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

/// The login settings after `args` (on update: an empty value clears).
fn login_settings(
    mut s: keyward_store::LoginSettings,
    args: &LoginUrlArgs,
) -> Option<keyward_store::LoginSettings> {
    if args.login_url.is_none() && args.consent_url.is_none() {
        return None;
    }
    let value = |v: &str| (!v.is_empty()).then(|| v.to_string());
    if let Some(u) = &args.login_url {
        s.login_url = value(u);
    }
    if let Some(u) = &args.consent_url {
        s.consent_url = value(u);
    }
    Some(s)
}

/// The configured key stores when `store` is a device (refused, saying how
/// to configure it, when it is not configured); none for `local`.
fn stores_for(ctx: &Context, store: KeyStore) -> Result<KeyStores> {
    let name = store.name();
    if !name.is_device() {
        return Ok(KeyStores::none());
    }
    let stores = ctx.key_stores()?;
    stores.get(name.as_str()).map_err(|e| anyhow!("{e}"))?;
    Ok(stores)
}

pub async fn run(ctx: &Context, cmd: EnvCmd) -> Result<()> {
    let store = ctx.store().await?;
    match cmd {
        EnvCmd::Create {
            name,
            issuer,
            policy,
            key_store,
            dpop_nonce,
            no_key,
            login,
            json,
        } => {
            keyring::check_env_name(&name).map_err(|e| anyhow!("{e}"))?;
            check_issuer(&issuer)?;
            let settings = login_settings(Default::default(), &login);
            if let Some(s) = &settings {
                keyward_issuer::login::check_login_settings(s)?;
            }
            // A device store that is not configured is refused before anything.
            let stores = stores_for(ctx, key_store)?;
            let mut env = Environment {
                name: name.clone(),
                issuer,
                policy: apply(RotationPolicy::default(), &policy)?,
                created_at: ctx.now(),
                key_store: key_store.name(),
                dpop_nonce_secret: None,
            };
            let nonce = dpop_nonce.setting();
            let root = match no_key && nonce == keyring::DpopNonce::Off {
                true => None,
                false => Some(ctx.root_key(&store).await?),
            };
            keyring::set_dpop_nonce(&store, &mut env, nonce, root.as_ref()).await?;
            let root = root.filter(|_| !no_key);
            let opts = KeyOptions {
                kid: None,
                owner: None,
                description: Some("first key, made with the environment".into()),
                origin: Origin::Generated,
            };
            let first = root.as_ref().map(|root| FirstKey {
                root,
                stores: &stores,
                opts: &opts,
            });
            // A taken name or issuer URL is refused before the slow generation.
            let work = keyring::create_environment(&store, &env, first, ctx.at());
            let rec = match no_key {
                true => work.await?,
                false => generating(KeySpec::for_policy(&env.policy), json, work).await?,
            };
            if let Some(s) = &settings {
                keyward_issuer::login::set_login_settings(&store, &name, s, ctx.at()).await?;
            }
            if json {
                let mut v = env_json(&env);
                keyward_issuer::login::settings_json(&mut v, &settings.unwrap_or_default());
                v["first_key"] = rec.map_or(Value::Null, |k| key_json(&k, ctx.now()));
                print_json(&v);
            } else {
                outln!("created environment {name} (issuer {})", env.issuer);
                match rec {
                    Some(k) => outln!(
                        "  active key:   {} ({}, {} bits, {}), signing from now on",
                        k.kid,
                        k.alg,
                        k.size_bits,
                        match k.reference() {
                            Some(r) => format!("in {} as {r}", k.key_store()),
                            None => "local".into(),
                        }
                    ),
                    None => outln!(
                        "  it has no key yet (--no-key): keyward keys generate --env {name} --alg {}",
                        env.policy.alg
                    ),
                }
            }
        }
        EnvCmd::Delete { name, force, json } => {
            let d = keyring::delete_environment(&store, &name, force, ctx.at()).await?;
            if json {
                print_json(&json!({
                    "deleted": name,
                    "keys": d.keys,
                    "published_keys": d.published_keys,
                    "clients": d.clients,
                }));
            } else {
                outln!(
                    "deleted environment {name}: {} key(s), {} client(s)",
                    d.keys.len(),
                    d.clients.len()
                );
                if !d.published_keys.is_empty() {
                    eprintln!(
                        "warning: keys {} were still published: tokens they signed no longer verify",
                        d.published_keys.join(", ")
                    );
                }
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
                            e.key_store.to_string(),
                            fmt_time(e.created_at),
                        ]
                    })
                    .collect();
                table(&["NAME", "ISSUER", "ALG", "STORE", "CREATED"], &rows);
            }
        }
        EnvCmd::Show { name, json } => {
            let e = store.environment(&name).await?;
            let keys = store.keys(&name).await?;
            let settings = store.login_settings(&name).await?;
            if json {
                let mut v = env_json(&e);
                keyward_issuer::login::settings_json(&mut v, &settings);
                print_json(&v);
            } else {
                let now = ctx.now();
                let p = &e.policy;
                let states: Vec<String> = [
                    KeyState::Pending,
                    KeyState::Active,
                    KeyState::Retired,
                    KeyState::Removed,
                    KeyState::Revoked,
                ]
                .iter()
                .filter_map(|s| {
                    let n = keys.iter().filter(|k| k.state(now) == *s).count();
                    (n > 0).then(|| format!("{n} {s}"))
                })
                .collect();
                fields(&[
                    ("name", e.name.clone()),
                    ("issuer", e.issuer.clone()),
                    ("created", fmt_time(e.created_at)),
                    ("key store", e.key_store.to_string()),
                    (
                        "dpop nonce",
                        keyring::DpopNonce::of(&e).as_str().to_string(),
                    ),
                    (
                        "algorithm",
                        match p.rsa_bits {
                            Some(b) => format!("{} ({b} bits)", p.alg),
                            None => p.alg.to_string(),
                        },
                    ),
                    ("rotate every", duration(p.rotate_every_secs)),
                    ("lead", duration(p.lead_secs)),
                    ("token ttl", duration(p.token_ttl_secs)),
                    ("jwks max-age", duration(rotation::jwks_max_age(p))),
                    (
                        "login url",
                        settings.login_url.clone().unwrap_or_else(|| "none".into()),
                    ),
                    (
                        "consent url",
                        settings
                            .effective_consent_url()
                            .unwrap_or("none")
                            .to_string(),
                    ),
                    (
                        "keys",
                        if states.is_empty() {
                            "none".into()
                        } else {
                            states.join(", ")
                        },
                    ),
                ]);
            }
        }
        EnvCmd::Update {
            name,
            issuer,
            policy,
            key_store,
            login,
            dpop_nonce,
            json,
        } => {
            let mut e = store.environment(&name).await?;
            let settings = login_settings(store.login_settings(&name).await?, &login);
            if let Some(s) = &settings {
                keyward_issuer::login::check_login_settings(s)?;
            }
            if let Some(i) = issuer {
                check_issuer(&i)?;
                e.issuer = i;
            }
            e.policy = apply(e.policy, &policy)?;
            if let Some(k) = key_store {
                // Refused when not configured, or when the store cannot make
                // the policy's keys: the next rotation would fail.
                let stores = stores_for(ctx, k)?;
                keyring::check_store_for(&stores, k.name(), &e.policy).await?;
                e.key_store = k.name();
            }
            // The nonce secret is made (and the root key checked) before
            // anything is written.
            if let Some(n) = dpop_nonce.map(|n| n.setting()) {
                let root = match n == keyring::DpopNonce::Required && !e.requires_dpop_nonce() {
                    true => Some(ctx.root_key(&store).await?),
                    false => None,
                };
                keyring::set_dpop_nonce(&store, &mut e, n, root.as_ref()).await?;
            }
            // The login settings were checked above.
            if let Some(s) = &settings {
                keyward_issuer::login::set_login_settings(&store, &name, s, ctx.at()).await?;
            }
            keyring::update_environment(&store, &e, ctx.at()).await?;
            if json {
                let mut v = env_json(&e);
                let now = store.login_settings(&name).await?;
                keyward_issuer::login::settings_json(&mut v, &now);
                print_json(&v);
            } else {
                outln!("updated environment {name}");
            }
        }
    }
    Ok(())
}
