//! `keyward completions` and `keyward man`: shell completion scripts and
//! the manual page, generated from the same clap definition the binary
//! parses, so they never drift from the commands.

use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory;

use crate::args::Cli;
use crate::output::{write_out, write_out_bytes};

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "keyward", &mut script);
    write_out_bytes(&script);
    Ok(())
}

/// Prints keyward(1) in roff, or, with `out`, writes `keyward.1` and one
/// `keyward-<command>.1` per command and subcommand into that directory
/// (created if missing) and prints the paths written.
pub fn man(out: Option<&Path>) -> Result<()> {
    let cmd = Cli::command();
    let Some(dir) = out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .context("cannot render the man page")?;
        write_out_bytes(&page);
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    for p in pages {
        write_out(format_args!("{}\n", p.display()));
    }
    Ok(())
}
