//! Command-line interface of the `credstore` daemon.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The credstore daemon: serves an encrypted vault of secrets over TLS
#[derive(Debug, Parser)]
#[command(name = "credstore", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    /// TOML config with storage_path, listen_address and an optional [tls] table
    #[arg(value_name = "CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Refuse to run without TLS and report production mode to clients
    #[arg(long)]
    pub(crate) production: bool,

    /// In production mode, run even when secret memory cannot be locked
    /// (raise RLIMIT_MEMLOCK or LimitMEMLOCK= instead where you can)
    #[arg(long)]
    pub(crate) allow_unlocked_memory: bool,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Write a self-signed certificate and key for first-time setup
    GenCert(GenCertArgs),
}

#[derive(Debug, Args)]
pub(crate) struct GenCertArgs {
    /// A DNS name or IP address clients use to reach the store (repeatable)
    #[arg(long = "host", value_name = "NAME", required = true)]
    pub(crate) hosts: Vec<String>,

    /// Directory to write cert.pem and key.pem into
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,

    /// Replace an existing cert.pem and key.pem
    #[arg(long)]
    pub(crate) force: bool,
}
