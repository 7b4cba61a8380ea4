//! What the bench binaries share: which store to talk to, how to trust it
//! and which credentials to send, taken from flags or from a directory
//! that `cred --config-dir` configured.
//!
//! Secrets come from files or a config directory, never from an argument,
//! so that they do not show in the process list.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use credstore::client::{ClientConfig, ServerEntry, Trust};
use credstore::protocol::Auth;
use credstore::secret::SecretBytes;
use uuid::Uuid;

/// Where the store is: a `cred` config directory, flags, or both (flags
/// win).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// A directory `cred --config-dir` configured: store, trust and any
    /// client credentials saved by `cred login`
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// The store's host
    #[arg(long)]
    pub host: Option<String>,
    /// The store's port
    #[arg(long)]
    pub port: Option<u16>,
    /// The SHA-256 fingerprint of the store's certificate
    #[arg(long)]
    pub fingerprint: Option<String>,
}

/// A store to connect to, checked.
#[derive(Debug, Clone)]
pub struct Target {
    pub server: ServerEntry,
    pub trust: Trust,
}

impl StoreArgs {
    /// The config directory's contents; empty without one.
    pub fn config(&self) -> Result<ClientConfig> {
        match &self.config_dir {
            Some(dir) => ClientConfig::load(dir),
            None => Ok(ClientConfig::default()),
        }
    }

    /// The store from the flags, falling back to the config directory.
    pub fn target(&self) -> Result<Target> {
        let config = self.config()?;
        let saved = config.server.as_ref();
        let host = self
            .host
            .clone()
            .or_else(|| saved.map(|server| server.host.clone()))
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = self
            .port
            .or_else(|| saved.map(|server| server.port))
            .context("no port; pass --port or --config-dir")?;
        let trust = match (&self.fingerprint, saved) {
            (Some(fingerprint), _) => {
                Trust::Fingerprint(fingerprint.parse().map_err(anyhow::Error::msg)?)
            }
            (None, Some(server)) => server.trust()?,
            (None, None) => anyhow::bail!("no fingerprint; pass --fingerprint or --config-dir"),
        };
        let server = ServerEntry::new(host, port, &trust);
        Ok(Target { server, trust })
    }
}

/// A client's id and secret: from flags, else from the config directory.
pub fn client_auth(
    store: &StoreArgs,
    id: Option<Uuid>,
    secret_file: Option<&Path>,
) -> Result<Auth> {
    if let (Some(id), Some(path)) = (id, secret_file) {
        let secret = read_secret_file(path)?;
        return Ok(Auth::Client { id, secret });
    }
    let credentials = store.config()?.client.context(
        "no client credentials; pass --client-id and --client-secret-file, or a --config-dir \
         that cred login saved them in",
    )?;
    Ok(Auth::Client {
        id: credentials.id,
        secret: credentials.secret(),
    })
}

/// A secret file's bytes, less one trailing line ending, as `cred`
/// reads `--passphrase-file`.
pub fn read_secret_file(path: &Path) -> Result<SecretBytes> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(SecretBytes::new(bytes).trim_line_ending())
}
