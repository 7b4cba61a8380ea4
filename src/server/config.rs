//! The daemon's TOML configuration.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// What `credstore CONFIG` reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The vault's storage directory (mode 0700).
    pub storage_path: PathBuf,
    /// Address and port to listen on, such as `0.0.0.0:7443`.
    pub listen_address: SocketAddr,
    /// Certificate and key; without them the daemon speaks plain TCP,
    /// which only development mode allows.
    pub tls: Option<TlsFiles>,
    /// Connections one IP address may hold open at once (default 32), so
    /// that one peer cannot take every connection slot.
    #[serde(default = "default_connections_per_peer")]
    pub max_connections_per_peer: usize,
}

fn default_connections_per_peer() -> usize {
    32
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ServerConfig {
    /// Reads and parses the config file; relative paths in it are taken
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut config: Self = toml::from_str(&text)
            .with_context(|| format!("config {} is not valid", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.storage_path = base.join(&config.storage_path);
        if let Some(tls) = &mut config.tls {
            tls.cert_file = base.join(&tls.cert_file);
            tls.key_file = base.join(&tls.key_file);
        }
        Ok(config)
    }
}
