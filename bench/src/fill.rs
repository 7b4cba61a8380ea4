//! `credstore-fill`: creates many items over one persistent connection,
//! so that a store with thousands of items is set up in seconds rather
//! than one `cred item create` process (and handshake) per item.
//!
//! Values are short, distinct and not secret; descriptions are numbered
//! so that `cred item list SEARCH` has something to match.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use bench::{StoreArgs, read_secret_file};
use clap::Parser;
use credstore::client::Connection;
use credstore::protocol::{Auth, Operation, Request, Response};
use credstore::secret::SecretBytes;

/// Creates COUNT items in a credstore as the administrator
#[derive(Debug, Parser)]
#[command(name = "credstore-fill")]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
    /// A file holding the master passphrase
    #[arg(long)]
    passphrase_file: PathBuf,
    /// How many items to create
    #[arg(long)]
    count: u64,
    /// The first item's number, to continue an earlier fill
    #[arg(long, default_value_t = 0)]
    first: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("credstore-fill: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let target = cli.store.target()?;
    let passphrase = read_secret_file(&cli.passphrase_file)?;
    let mut connection = Connection::open(&target.server, &target.trust)?;
    let began = Instant::now();
    for number in cli.first..cli.first + cli.count {
        let request = Request {
            auth: Auth::Admin {
                passphrase: passphrase.clone(),
            },
            operation: Operation::ItemCreate {
                description: format!("bench item {number}"),
                value: SecretBytes::copy_from(format!("value {number}").as_bytes()),
            },
        };
        let Response::ItemCreated { .. } = connection.call(&request)? else {
            bail!("the store answered a create with another kind of response");
        };
    }
    let seconds = began.elapsed().as_secs_f64();
    println!("created {} items in {seconds:.6} s", cli.count);
    Ok(())
}
