//! credfs: a read-only FUSE filesystem in which each configured secret
//! appears as a short-lived file.
//!
//! Opening a file fetches its value from a [`SecretSource`]; the value is
//! kept in a guarded buffer for its time-to-live and then wiped, and reads
//! use direct I/O so the kernel page cache never holds it. Listing and
//! stat never fetch. The source is a trait so that the filesystem can be
//! tested alone and never depends on a particular client.

mod cache;
mod fs;
mod tree;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use tracing::debug;
use zeroize::Zeroizing;

pub use tree::FileSpec;

use cache::Cache;
use tree::Tree;

/// Gives the bytes of one secret by its id.
pub trait SecretSource: Send + Sync + 'static {
    /// Fetches the value of `item`, giving up once `deadline` has passed.
    fn fetch(&self, item: &str, deadline: Instant) -> Result<Zeroizing<Vec<u8>>, FetchError>;
}

/// Why a fetch failed; none of these carries the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The store refused: wrong or revoked credentials, or an unknown item.
    Denied,
    /// The store is locked.
    Locked,
    /// The store did not answer in time.
    Timeout,
    /// Anything else, described for the log.
    Failed(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied => f.write_str("the store refused the request"),
            Self::Locked => f.write_str("the store is locked"),
            Self::Timeout => f.write_str("the store did not answer in time"),
            Self::Failed(why) => write!(f, "fetching the secret failed: {why}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// How a mount behaves, beyond its files.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Let users other than the mounting one in (the `allow_other` option).
    pub allow_other: bool,
    /// How long an open may wait for the store before failing with EIO.
    pub fetch_timeout: Duration,
}

impl Default for MountConfig {
    fn default() -> Self {
        Self {
            allow_other: false,
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// A mounted filesystem; dropping it or calling [`Mount::unmount`] wipes
/// every value and unmounts.
pub struct Mount {
    session: Option<BackgroundSession>,
    cache: Arc<Cache>,
    stop: Arc<AtomicBool>,
}

impl fmt::Debug for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mount").finish_non_exhaustive()
    }
}

/// Mounts `files` at `mountpoint`, read-only, nosuid, nodev, noexec, with
/// kernel permission checks, serving values from `source`.
pub fn mount(
    mountpoint: &Path,
    files: Vec<FileSpec>,
    source: Arc<dyn SecretSource>,
    config: &MountConfig,
) -> io::Result<Mount> {
    let tree = Arc::new(
        Tree::build(files).map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?,
    );
    let entries = tree
        .files()
        .map(|(ino, spec)| (ino, spec.item.clone(), spec.ttl));
    let cache = Arc::new(Cache::new(entries, source, config.fetch_timeout));
    let notifier = Arc::new(OnceLock::new());
    let filesystem = fs::CredFs::new(tree.clone(), cache.clone(), notifier.clone());

    let mut options = Config::default();
    options.mount_options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
        MountOption::FSName("credfs".into()),
        MountOption::Subtype("credfs".into()),
    ];
    // No auto_unmount: fusermount3's watcher for it can die before the
    // mount does and leave unmounting to nobody. A crashed mount is
    // instead cleared by the next `cred mount` on the same directory.
    if config.allow_other {
        options.acl = SessionACL::All;
    }
    let session = fuser::spawn_mount(filesystem, mountpoint, &options)?;
    let _ = notifier.set(session.notifier());
    debug!(mountpoint = %mountpoint.display(), files = tree.files().count(), "mounted");

    let stop = Arc::new(AtomicBool::new(false));
    spawn_sweeper(cache.clone(), stop.clone());
    Ok(Mount {
        session: Some(session),
        cache,
        stop,
    })
}

/// Wipes values as their time-to-live ends, within a quarter second.
fn spawn_sweeper(cache: Arc<Cache>, stop: Arc<AtomicBool>) {
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(250));
            let expired = cache.expire();
            if expired > 0 {
                debug!(expired, "wiped values whose time-to-live ended");
            }
        }
    });
}

impl Mount {
    /// Wipes every value and unmounts, waiting for the session to end.
    pub fn unmount(mut self) -> io::Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.cache.clear();
        match self.session.take() {
            Some(session) => session.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}
