//! The client's config file: which store to talk to, how to trust it, and
//! the host's client credentials once `cred login` has saved them.
//!
//! The file is written mode 0600 in a directory of mode 0700, atomically.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::secret::SecretBytes;
use crate::tls::Fingerprint;

pub const CONFIG_FILE: &str = "config.toml";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub server: Option<ServerEntry>,
    pub client: Option<ClientCredentials>,
}

/// Where the store is and how it is trusted: exactly one of a pinned
/// fingerprint, a CA file, or `tls = false` for a development store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    pub host: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub tls: bool,
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

/// How the client trusts the server, once the entry is checked.
#[derive(Debug, Clone)]
pub enum Trust {
    Fingerprint(Fingerprint),
    CaFile(PathBuf),
    PlainTcp,
}

impl ServerEntry {
    pub fn new(host: String, port: u16, trust: &Trust) -> Self {
        let mut entry = Self {
            host,
            port,
            fingerprint: None,
            ca_file: None,
            tls: true,
        };
        match trust {
            Trust::Fingerprint(fingerprint) => entry.fingerprint = Some(fingerprint.to_string()),
            Trust::CaFile(path) => entry.ca_file = Some(path.clone()),
            Trust::PlainTcp => entry.tls = false,
        }
        entry
    }

    pub fn trust(&self) -> Result<Trust> {
        match (&self.fingerprint, &self.ca_file, self.tls) {
            (Some(fingerprint), None, true) => Ok(Trust::Fingerprint(
                fingerprint.parse().map_err(anyhow::Error::msg)?,
            )),
            (None, Some(path), true) => Ok(Trust::CaFile(path.clone())),
            (None, None, false) => Ok(Trust::PlainTcp),
            _ => bail!(
                "the [server] table must have exactly one of fingerprint, ca_file or tls = false; \
                 run cred configure again"
            ),
        }
    }
}

/// A host's client credentials.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentials {
    pub id: Uuid,
    secret: Zeroizing<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    pub fn new(id: Uuid, secret: &SecretBytes) -> Result<Self> {
        let text = std::str::from_utf8(secret.expose())
            .context("the client secret is not text; paste it as cred client create printed it")?;
        Ok(Self {
            id,
            secret: Zeroizing::new(text.to_owned()),
        })
    }

    pub fn secret(&self) -> SecretBytes {
        SecretBytes::copy_from(self.secret.as_bytes())
    }
}

impl ClientConfig {
    /// Reads the config in `dir`; a missing file is an empty config.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => Zeroizing::new(text),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        check_private(&path)?;
        toml::from_str(&text).with_context(|| format!("{} is not a valid config", path.display()))
    }

    /// Writes the config into `dir` (made 0700 if missing), mode 0600.
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create config directory {}", dir.display()))?;
        let text = Zeroizing::new(toml::to_string(self).context("cannot encode the config")?);
        let path = dir.join(CONFIG_FILE);
        let temp = dir.join(format!(".{CONFIG_FILE}.tmp-{}", std::process::id()));
        write_private(&temp, text.as_bytes())
            .and_then(|()| fs::rename(&temp, &path))
            .inspect_err(|_| {
                let _ = fs::remove_file(&temp);
            })
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn server(&self) -> Result<&ServerEntry> {
        self.server.as_ref().context(
            "no store is configured; run cred configure --host HOST --port PORT \
             --fingerprint SHA256",
        )
    }
}

/// Refuses a config that others may read or change: it holds the client
/// secret, and whoever edits it chooses which server this host trusts.
fn check_private(path: &Path) -> Result<()> {
    let mode = fs::metadata(path)
        .with_context(|| format!("cannot inspect {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is open to other users (mode {:03o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

/// Creates `path`, which must not exist yet, mode 0600, and writes
/// `bytes` durably: for files that hold secrets.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// `$XDG_CONFIG_HOME/credstore`, else `$HOME/.config/credstore`.
pub fn default_dir() -> Result<PathBuf> {
    if let Some(base) = std::env::var_os("XDG_CONFIG_HOME").filter(|value| !value.is_empty()) {
        return Ok(PathBuf::from(base).join("credstore"));
    }
    let home = std::env::var_os("HOME")
        .filter(|value| !value.is_empty())
        .context("neither XDG_CONFIG_HOME nor HOME is set; pass --config-dir DIR")?;
    Ok(PathBuf::from(home).join(".config").join("credstore"))
}
