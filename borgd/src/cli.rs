//! Command-line interface of borgd: clap types only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Runs Borg backups on schedule; the passphrase is fetched for each run
#[derive(Debug, Parser)]
#[command(name = "borgd", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    /// The TOML config (see contrib/borgd.example.toml)
    #[arg(value_name = "CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Run every backup once now (then compaction, if scheduled) and exit;
    /// the exit status is 1 when any of them failed
    #[arg(long)]
    pub(crate) once: bool,

    /// Print what would run, with the borg commands, and run nothing
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Log debug messages too
    #[arg(long, short)]
    pub(crate) verbose: bool,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check the config and the borg version, and print the plan
    Check { config: PathBuf },
    /// Print the last result of each backup from the state file
    Status { config: PathBuf },
}
