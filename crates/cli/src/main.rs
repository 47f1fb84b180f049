//! keyward: a token authority and a token gate, in one binary.
#![forbid(unsafe_code)]

mod admin_config;
mod args;
mod cmd;
mod config;
mod context;
mod exchange_config;
mod key_stores;
mod output;
mod root_source;
mod server;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Cmd};
use crate::context::Context;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    return ExitCode::SUCCESS;
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    return ExitCode::FAILURE;
                }
                _ => {}
            }
            // One line, exit 1, like every other error.
            let text = e.render().to_string();
            let head: Vec<&str> = text
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{}", head.join(" "));
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes (unless the command has
            // already reported it in its own format).
            if e.downcast_ref::<cmd::Reported>().is_none() {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context::new(&cli)?;
    match cli.cmd {
        Cmd::Up(a) => cmd::serve::up(&ctx, a).await,
        Cmd::Serve(a) => cmd::serve::serve(&ctx, a).await,
        Cmd::Config(args::ConfigCmd::Check { config }) => {
            cmd::serve::config_check(&ctx, config.as_deref())
        }
        Cmd::Gateway(a) => cmd::gateway::run(a).await,
        Cmd::Clients(c) => cmd::clients::run(&ctx, c).await,
        Cmd::AdminToken(c) => cmd::clients::admin_token(&ctx, c).await,
        Cmd::Init(a) => cmd::init::run(&ctx, a).await,
        Cmd::Env(c) => cmd::env::run(&ctx, c).await,
        Cmd::Keys(c) => cmd::keys::run(&ctx, c).await,
        Cmd::Jwk(c) => cmd::jwk::run(c),
        Cmd::Token(c) => cmd::token::run(&ctx, c).await,
        Cmd::Jws(c) => cmd::token::run_jws(c),
        Cmd::RootKey(c) => cmd::root_key::run(&ctx, c).await,
        Cmd::Audit(c) => cmd::audit::run(&ctx, c).await,
        Cmd::Backup(a) => cmd::backup::backup(&ctx, a).await,
        Cmd::Restore(a) => cmd::backup::restore(&ctx, a).await,
        Cmd::Completions { shell } => cmd::docs::completions(shell),
        Cmd::Man { out } => cmd::docs::man(out.as_deref()),
    }
}
