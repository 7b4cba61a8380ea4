//! `credstore`: the daemon, and its certificate generator.

mod cli;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, GenCertArgs};
use credstore::server::{Server, ServerConfig};
use credstore::tls;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match (cli.command, cli.config) {
        (Some(Command::GenCert(args)), _) => gen_cert(&args),
        (None, Some(config)) => serve(&config, cli.production, cli.allow_unlocked_memory),
        (None, None) => {
            eprintln!(
                "credstore: give a CONFIG file to serve, or a subcommand; see credstore --help"
            );
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("credstore: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn gen_cert(args: &GenCertArgs) -> Result<()> {
    let generated = tls::generate_cert(&args.hosts)?;
    tls::write_cert(&args.out, &generated, args.force)?;
    println!(
        "wrote {} and {}",
        args.out.join("cert.pem").display(),
        args.out.join("key.pem").display()
    );
    println!("SHA-256 fingerprint: {}", generated.fingerprint);
    Ok(())
}

fn serve(config_path: &std::path::Path, production: bool, allow_unlocked: bool) -> Result<()> {
    init_logging();
    let hardening = protect::harden_process();
    info!(%hardening, "process hardening");
    if production && !hardening.memory_lockable && !allow_unlocked {
        anyhow::bail!(
            "production mode needs lockable memory and none can be locked ({hardening}); raise \
             RLIMIT_MEMLOCK or pass --allow-unlocked-memory"
        );
    }
    let config = ServerConfig::load(config_path)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(&config, production).await?;
        if let Some(cert) = server.certificate() {
            reload_on_hangup(cert)?;
        }
        let shutdown = shutdown_signal()?;
        server.run(shutdown).await
    })
}

/// Reloads the certificate and key on every SIGHUP; a failed reload is
/// logged and the old certificate kept.
fn reload_on_hangup(cert: std::sync::Arc<tls::ReloadableCert>) -> Result<()> {
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match cert.reload() {
                Ok(fingerprint) => info!(%fingerprint, "certificate reloaded"),
                Err(err) => {
                    tracing::error!(error = %err, "certificate not reloaded; keeping the old one")
                }
            }
        }
    });
    Ok(())
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

/// Logs go to stderr at `info` unless RUST_LOG says otherwise.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
