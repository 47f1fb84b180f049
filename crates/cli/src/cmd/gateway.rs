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
        return Ok(());
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
