//! `cred`: the client of the credstore secret store.

mod cli;
mod commands;
mod input;
mod mount;
mod output;
mod recovery;

use std::process::ExitCode;

use clap::Parser;

use credstore::client::ClientError;
use credstore::protocol::ErrorKind;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cred: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The documented exit status for an error (see `cred --help`).
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<input::UsageError>() {
            return 2;
        }
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return match client {
                ClientError::Connect { .. }
                | ClientError::Tls { .. }
                | ClientError::Timeout { .. }
                | ClientError::FingerprintMismatch { .. } => 3,
                ClientError::Server { kind, .. } => match kind {
                    ErrorKind::Unauthorized | ErrorKind::PeerMismatch => 4,
                    ErrorKind::Locked => 5,
                    ErrorKind::NotFound => 6,
                    ErrorKind::Integrity => 7,
                    ErrorKind::BadRequest | ErrorKind::Internal => 1,
                },
                ClientError::Protocol(_) | ClientError::UnexpectedResponse => 1,
            };
        }
    }
    1
}
