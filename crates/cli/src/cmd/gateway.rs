//! `keyward gateway --config FILE [--check]`: the token gate as a reverse
//! proxy. Configuration problems are printed as `FILE:LINE:COL: problem`
//! and `fix: ...` lines, before anything listens.

use crate::output::out;
use anyhow::{Context as _, Result};
use keyward_gateway::{Config, Gateway};

use crate::args::GatewayArgs;
use crate::cmd::serve::{init_logs, shutdown_signal};
use crate::cmd::Reported;

pub async fn run(a: GatewayArgs) -> Result<()> {
    let config = match Config::load(&a.config) {
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
