//! `cred mount`: plugs the store client into credfs and runs in the
//! foreground until SIGINT or SIGTERM, then wipes and unmounts.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use credfs::{FetchError, FileSpec, MountConfig, SecretSource};
use serde::Deserialize;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::info;
use uuid::Uuid;
use zeroize::Zeroizing;

use credstore::client::{ClientConfig, ClientError, Connection, ServerEntry, Trust};
use credstore::protocol::{Auth, ErrorKind, Operation, Request, Response};
use credstore::secret::SecretBytes;

use crate::cli::MountArgs;

pub(crate) fn run(config: ClientConfig, args: &MountArgs) -> Result<()> {
    let server = config.server()?.clone();
    let trust = server.trust()?;
    // The config holds the client secret in plain memory; only the sealed
    // copy made below outlives this start-up.
    let credentials = config
        .client
        .context("cred mount reads with this host's client credentials; run cred login first")?;
    let files = file_specs(args)?;
    if files.is_empty() {
        bail!("nothing to mount; give --file NAME=ITEM_ID or --map FILE.toml");
    }
    prepare_mountpoint(&args.mountpoint)?;

    // Registered before mounting, so that no signal can end the process
    // between mount and wait and leave the mount behind.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot watch SIGINT and SIGTERM")?;
    init_logging();
    let hardening = protect::harden_process();
    info!(%hardening, "process hardening");
    let count = files.len();
    let sealing = protect::SealingKey::generate()?;
    let client_secret = credentials.secret();
    let source = Arc::new(StoreSource {
        server,
        trust,
        client_id: credentials.id,
        client_secret: protect::Sealed::new(&sealing, client_secret.expose())?,
    });
    drop((client_secret, credentials));
    let mount_config = MountConfig {
        allow_other: args.allow_other,
        fetch_timeout: Duration::from_secs(args.timeout),
    };
    let mount = credfs::mount(&args.mountpoint, files, source, &mount_config)
        .with_context(|| format!("cannot mount on {}", args.mountpoint.display()))?;
    println!("mounted {count} file(s) at {}", args.mountpoint.display());

    let signal = signals.forever().next();
    info!(signal, "wiping values and unmounting");
    mount
        .unmount()
        .with_context(|| format!("cannot unmount {}", args.mountpoint.display()))
}

/// The store as credfs sees it: one client read per fetch.
struct StoreSource {
    server: ServerEntry,
    trust: Trust,
    client_id: Uuid,
    /// The client secret, sealed for as long as the mount runs.
    client_secret: protect::Sealed,
}

impl SecretSource for StoreSource {
    fn fetch(&self, item: &str, deadline: Instant) -> Result<Zeroizing<Vec<u8>>, FetchError> {
        let id: Uuid = item.parse().map_err(|_| FetchError::Denied)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FetchError::Timeout);
        }
        let secret = self
            .client_secret
            .with(SecretBytes::copy_from)
            .map_err(|err| FetchError::Failed(err.to_string()))?;
        let auth = Auth::Client {
            id: self.client_id,
            secret,
        };
        let request = Request {
            auth,
            operation: Operation::ItemRead { id },
        };
        let response = Connection::open_within(&self.server, &self.trust, left)
            .and_then(|mut connection| connection.call(&request))
            .map_err(fetch_error)?;
        match response {
            Response::Value { value } => Ok(value.to_zeroizing()),
            _ => Err(FetchError::Failed(
                "the store sent an unexpected answer".into(),
            )),
        }
    }
}

fn fetch_error(err: ClientError) -> FetchError {
    match err.kind() {
        Some(ErrorKind::Unauthorized | ErrorKind::PeerMismatch | ErrorKind::NotFound) => {
            FetchError::Denied
        }
        Some(ErrorKind::Locked) => FetchError::Locked,
        _ if matches!(err, ClientError::Timeout { .. }) => FetchError::Timeout,
        _ => FetchError::Failed(err.to_string()),
    }
}

/// The map file: a list of `[[file]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    #[serde(default)]
    file: Vec<MapEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MapEntry {
    name: String,
    item: Uuid,
    mode: Option<u16>,
    uid: Option<u32>,
    gid: Option<u32>,
    ttl: Option<u64>,
    allow_uids: Option<Vec<u32>>,
    allow_gids: Option<Vec<u32>>,
}

/// The files to mount, from `--file` and `--map`, with the command-line
/// defaults filled in.
fn file_specs(args: &MountArgs) -> Result<Vec<FileSpec>> {
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let default = |name: String, item: Uuid| FileSpec {
        path: name,
        item: item.to_string(),
        mode: 0o400,
        uid,
        gid,
        ttl: Duration::from_secs(args.ttl),
        allow_uids: args.allow_uids.clone(),
        allow_gids: args.allow_gids.clone(),
    };

    let mut specs = Vec::new();
    for pair in &args.files {
        let (name, item) = pair
            .split_once('=')
            .with_context(|| format!("--file {pair:?} is not NAME=ITEM_ID"))?;
        let item = item
            .parse()
            .with_context(|| format!("--file {pair:?}: the item id is not a UUID"))?;
        specs.push(default(name.to_owned(), item));
    }
    if let Some(path) = &args.map {
        for entry in read_map(path)?.file {
            let mut spec = default(entry.name, entry.item);
            if let Some(mode) = entry.mode {
                if mode & !0o777 != 0 {
                    bail!(
                        "{}: mode {mode:o} of {} is not a permission mode",
                        path.display(),
                        spec.path
                    );
                }
                spec.mode = mode;
            }
            spec.uid = entry.uid.unwrap_or(spec.uid);
            spec.gid = entry.gid.unwrap_or(spec.gid);
            spec.ttl = entry.ttl.map_or(spec.ttl, Duration::from_secs);
            spec.allow_uids = entry.allow_uids.unwrap_or(spec.allow_uids);
            spec.allow_gids = entry.allow_gids.unwrap_or(spec.allow_gids);
            specs.push(spec);
        }
    }
    Ok(specs)
}

fn read_map(path: &Path) -> Result<MapFile> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read map file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("map file {} is not valid", path.display()))
}

/// Checks the mountpoint is an empty directory, clearing a mount that a
/// crashed `cred mount` left behind.
fn prepare_mountpoint(path: &PathBuf) -> Result<()> {
    match fs::metadata(path) {
        Err(err) if err.raw_os_error() == Some(libc_enotconn()) => {
            let cleared = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(path)
                .status();
            if !cleared.is_ok_and(|status| status.success()) {
                bail!(
                    "{} holds a stale mount; unmount it with fusermount3 -u -z",
                    path.display()
                );
            }
            eprintln!(
                "cred: cleared a stale mount at {} left by an earlier cred mount",
                path.display()
            );
            prepare_mountpoint(path)
        }
        Err(err) => Err(err).with_context(|| format!("cannot use mountpoint {}", path.display())),
        Ok(meta) if !meta.is_dir() => bail!("mountpoint {} is not a directory", path.display()),
        Ok(_) => {
            let mut entries = fs::read_dir(path)
                .with_context(|| format!("cannot read mountpoint {}", path.display()))?;
            if entries.next().is_some() {
                bail!("mountpoint {} is not empty", path.display());
            }
            Ok(())
        }
    }
}

fn libc_enotconn() -> i32 {
    rustix::io::Errno::NOTCONN.raw_os_error()
}

/// The access log goes to stderr at `info` unless RUST_LOG says otherwise;
/// the FUSE library only speaks up about problems.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .init();
}
