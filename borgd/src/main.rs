//! borgd: runs Borg backups on schedule, fetching the repository
//! passphrase at run time instead of keeping it in its config.

mod cli;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::Local;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::info;
use tracing_subscriber::EnvFilter;

use borgd::borg::Borg;
use borgd::config::{Config, Source};
use borgd::run::Runner;
use borgd::state::{Outcome, State};
use borgd::{borg, daemon, schedule};
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("borgd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("borgd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match (cli.command, cli.config) {
        (Some(Command::Check { config }), _) => check(&config).await,
        (Some(Command::Status { config }), _) => status(&config),
        (None, Some(config)) => {
            init_logging(cli.verbose);
            let hardening = protect::harden_process();
            info!(%hardening, "process hardening");
            let config = Arc::new(Config::load(&config)?);
            if cli.dry_run {
                print_plan(&config);
                return Ok(ExitCode::SUCCESS);
            }
            let borg = Borg::new(&config);
            let version = borg.check_version().await?;
            info!(version, repository = %config.repository.location, "borg found");
            let state = State::load(&config.state_file)?;
            let runner = Arc::new(Runner::new(
                borg,
                &config.passphrase,
                state,
                config.state_file.clone(),
            ));
            if cli.once {
                return Ok(once(&config, &runner).await);
            }
            let shutdown = shutdown_signal()?;
            daemon::serve(config, runner, shutdown).await;
            Ok(ExitCode::SUCCESS)
        }
        (None, None) => {
            eprintln!("borgd: give a CONFIG file, or a subcommand; see borgd --help");
            Ok(ExitCode::from(2))
        }
    }
}

/// Runs every backup once, then compaction if it is scheduled.
async fn once(config: &Config, runner: &Runner) -> ExitCode {
    let (_keep, interrupt) = watch::channel(false);
    let mut failed = false;
    for backup in &config.backups {
        failed |= runner.backup(backup, interrupt.clone()).await.outcome == Outcome::Failure;
    }
    if config.compaction.is_some() {
        failed |= runner.compact(interrupt).await.outcome == Outcome::Failure;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn check(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let version = Borg::new(&config).check_version().await?;
    println!(
        "config {} is valid; borg {version} ({} supported)",
        path.display(),
        borg::SUPPORTED
    );
    print_plan(&config);
    Ok(ExitCode::SUCCESS)
}

fn print_plan(config: &Config) {
    println!("repository: {}", config.repository.location);
    println!("passphrase: {}", config.passphrase.describe());
    for backup in &config.backups {
        let what = match &backup.source {
            Source::Paths(paths) => format!("paths {}", paths.join(" ")),
            Source::Command(command) => format!("stdout of {}", command.join(" ")),
        };
        println!("backup {}: {what}", backup.name);
        println!("  schedule {}", backup.schedule.pattern);
        let source = match &backup.source {
            Source::Paths(paths) => paths.join(" "),
            Source::Command(_) => "-".into(),
        };
        println!(
            "  runs borg create --json {}::{}-<time> {source}",
            config.repository.location, backup.name
        );
        for at in schedule::upcoming(&backup.schedule, Local::now(), 3) {
            println!("  next {}", at.format("%Y-%m-%d %H:%M:%S %z"));
        }
    }
    if let Some(compaction) = &config.compaction {
        let next = schedule::upcoming(compaction, Local::now(), 1);
        let next = next.first().map_or("never".into(), |at| {
            at.format("%Y-%m-%d %H:%M:%S %z").to_string()
        });
        println!("compaction: {} (next {next})", compaction.pattern);
    }
}

fn status(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let state = State::load(&config.state_file)?;
    for backup in &config.backups {
        match state.backups.get(&backup.name) {
            None => println!("{}: never run", backup.name),
            Some(result) => {
                let outcome = serde_json::to_value(&result.outcome).expect("outcome serialises");
                let detail = result
                    .error
                    .clone()
                    .or_else(|| result.archive.clone())
                    .unwrap_or_default();
                println!(
                    "{}: {} at {} {}",
                    backup.name,
                    outcome.as_str().unwrap_or("?"),
                    result.finished.format("%Y-%m-%d %H:%M:%S"),
                    detail
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Completes on the first SIGINT or SIGTERM.
fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => info!("SIGINT received"),
            _ = terminate.recv() => info!("SIGTERM received"),
        }
    })
}

fn init_logging(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
