//! `keyward gateway --config FILE [--check]`: the token gate as a reverse
//! proxy. Configuration problems are printed as `FILE:LINE:COL: problem`
//! and `fix: ...` lines, before anything listens. `keyward gateway api-key
//! create|list|revoke --config FILE`: its API keys, stored hashed in FILE.

use crate::output::out;
use anyhow::{Context as _, Result};
use std::path::Path;
use std::time::SystemTime;

use crate::output::{outln, print_json};
use keyward_gateway::{api_keys, Config, Gateway};

use crate::args::{ApiKeyCmd, GatewayArgs, GatewayCmd};
use crate::cmd::serve::{init_logs, shutdown_signal};
use crate::cmd::Reported;

pub async fn run(a: GatewayArgs) -> Result<()> {
    if let Some(GatewayCmd::ApiKey(cmd)) = a.cmd {
        return api_key(cmd);
    }
    let Some(path) = a.config else {
        anyhow::bail!("--config is required");
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Err(Reported.into());
        }
    };
    if a.check {
        out!("{}", config.describe());
        return check_discovery(&config).await;
    }
    init_logs(config.json_logs);
    let running = Gateway::start(config)
        .await
        .context("cannot start the gateway")?;
    eprintln!("gateway listening on http://{}", running.addr());
    if let Some(admin) = running.admin_addr() {
        eprintln!("gateway admin on http://{admin} (/metrics /healthz /readyz)");
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    running.shutdown().await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// `--check`, second half: each issuer whose keys are found by discovery is
/// asked for its discovery document now. A `jwks_uri` on an untrusted host
/// fails the check (the gateway would refuse to start); an issuer that
/// cannot be reached is only reported (the gateway starts and retries).
async fn check_discovery(config: &Config) -> Result<()> {
    let mut refused = false;
    for d in Gateway::check_discovery(config).await {
        match &d.result {
            Ok(uri) => out!("discovery         {}: jwks_uri {uri} (trusted host)", d.issuer),
            Err(e) if d.untrusted_host() => {
                eprintln!("{}: issuer {} is not loaded: {e}", config.file.display(), d.issuer);
                eprintln!("  fix: add the jwks_uri's host to this issuer's jwks_hosts if you trust it, or set jwks_uri to the keys' URL");
                refused = true;
            }
            Err(e) => out!("discovery         {}: not checked now ({e}); the gateway retries at start and in the background", d.issuer),
        }
    }
    if refused {
        return Err(Reported.into());
    }
    Ok(())
}

/// Loads `path`, printing its problems as `FILE:LINE:COL` lines.
fn load(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        Reported.into()
    })
}

/// Replaces `path` by `text` once `text` is a valid configuration (checked
/// as the gateway will read it): written beside it, then renamed over it,
/// with the file's permissions. A failed check leaves the file as it was.
fn replace_config(path: &Path, text: &str) -> Result<()> {
    if let Err(e) = Config::parse(text, path) {
        eprintln!("{e}");
        return Err(Reported.into());
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("the --config path names no file")?;
    let staged = dir.join(format!(".{}.keyward-new", name.to_string_lossy()));
    std::fs::write(&staged, text).with_context(|| format!("cannot write {}", staged.display()))?;
    let perms = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions();
    std::fs::set_permissions(&staged, perms)?;
    std::fs::rename(&staged, path).with_context(|| format!("cannot replace {}", path.display()))
}

fn list_arg(text: &str) -> Vec<String> {
    text.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn api_key(cmd: ApiKeyCmd) -> Result<()> {
    match cmd {
        ApiKeyCmd::Create {
            config,
            subject,
            permissions,
            expires,
            rate_limit,
            routes,
            json,
        } => {
            // The file must be valid as it is: a key is added to a good file only.
            load(&config)?;
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            let key = api_keys::generate();
            let spec = api_keys::KeySpec {
                subject,
                permissions: list_arg(&permissions),
                expires,
                rate_limit,
                routes: routes.as_deref().map(list_arg),
            };
            let edited = api_keys::add_to_config(&text, &key, &spec, SystemTime::now())?;
            replace_config(&config, &edited)?;
            crate::output::shown_once("the API key");
            if json {
                print_json(&serde_json::json!({
                    "id": key.id, "key": key.key, "subject": spec.subject,
                    "config": config.display().to_string(),
                }));
            } else {
                outln!("{}", key.key);
                eprintln!(
                    "API key {} for {} written to {} (only its hash is stored; this is the one time the key is shown)",
                    key.id,
                    spec.subject,
                    config.display()
                );
            }
            Ok(())
        }
        ApiKeyCmd::List { config, json } => {
            let c = load(&config)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let keys = &c.api_keys.keys;
            if json {
                print_json(&serde_json::Value::Array(
                    keys.iter()
                        .map(|k| {
                            serde_json::json!({
                                "id": k.id, "subject": k.subject, "permissions": k.permissions,
                                "expires": k.expires_text(), "state": k.state(now),
                                "rate_limit": k.rate_limit.as_ref().map(|r| r.text.clone()),
                                "routes": k.routes, "created": k.created, "revoked": k.revoked,
                            })
                        })
                        .collect(),
                ));
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.clone(),
                            k.state(now).into(),
                            k.subject.clone(),
                            k.permissions.join(" "),
                            k.expires_text(),
                            k.rate_limit.as_ref().map_or("-".into(), |r| r.text.clone()),
                            k.routes.as_ref().map_or("*".into(), |r| r.join(",")),
                        ]
                    })
                    .collect();
                crate::output::table(
                    &[
                        "ID",
                        "STATE",
                        "SUBJECT",
                        "PERMISSIONS",
                        "EXPIRES",
                        "RATE LIMIT",
                        "ROUTES",
                    ],
                    &rows,
                );
            }
            Ok(())
        }
        ApiKeyCmd::Revoke { config, id } => {
            load(&config)?;
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            let edited = api_keys::revoke_in_config(&text, &id, SystemTime::now())?;
            replace_config(&config, &edited)?;
            eprintln!(
                "API key {id} revoked in {}; a running gateway refuses it once restarted with this file",
                config.display()
            );
            Ok(())
        }
    }
}
