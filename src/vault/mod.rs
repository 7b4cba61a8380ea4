//! The vault at rest: an age-encrypted store of items and client
//! credentials in one locked directory.
//!
//! Layout of the storage directory:
//!
//! ```text
//! VERSION               format version, "1"; written last at initialisation
//! .lock                 flock held by the daemon that has the vault open
//! identity.json         age identity sealed under the passphrase-derived key
//! manifest.json         every item with its record revision, and every client; HMAC-tagged
//! recovery.json         the recovery recipient, if set; HMAC-tagged
//! items/ID.json         item metadata, HMAC-tagged
//! items/ID.GEN.age      one generation of the item's value, an age file
//! clients/ID.json       client record with a keyed hash of its secret
//! ```
//!
//! An item's metadata names its current generation and the keyed checksum
//! of that value; a new value is written as a new generation file before
//! the metadata that points at it, and the manifest after both, so that a
//! crash at any point leaves the item old or new.

mod clients;
mod items;
mod keys;
mod manifest;
mod records;
mod recovery;
mod storage;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;
use thiserror::Error;
use tracing::{info, warn};
use uuid::Uuid;

pub use keys::{KDF_ITERATIONS, KDF_MEMORY_KIB, KDF_PARALLELISM};
pub use records::{ClientRecord, HistoryEntry, ItemRecord};

use crate::secret::SecretBytes;
use keys::{Key, RecordKeys, SealedIdentity};
use manifest::Manifest;
use storage::StorageDir;

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// How many previous values an item keeps.
pub const HISTORY_LEN: usize = 5;
/// The largest value an item may hold.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;
/// The longest description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

const VERSION_FILE: &str = "VERSION";
const IDENTITY_FILE: &str = "identity.json";
const MANIFEST_FILE: &str = "manifest.json";
const RECOVERY_FILE: &str = "recovery.json";
const ITEMS_DIR: &str = "items";
const CLIENTS_DIR: &str = "clients";

/// What can go wrong with the vault. No variant carries a secret.
#[derive(Debug, Error)]
pub enum VaultError {
    #[error("the vault is locked; unlock it with cred store unlock")]
    Locked,
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("unknown client or wrong client secret")]
    BadClientCredentials,
    #[error("this needs the admin passphrase; client credentials cannot do it")]
    AdminOnly,
    #[error("peer mismatch: the item is bound to the address of another host")]
    PeerMismatch,
    #[error("{kind} {id} does not exist")]
    NotFound { kind: &'static str, id: Uuid },
    #[error("integrity check failed for {what}: {why}")]
    Integrity { what: String, why: String },
    #[error("storage directory {} is in use by another credstore", .path.display())]
    InUse { path: PathBuf },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Invalid(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl VaultError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// Whether a write failed because the storage is full (or over quota).
    pub fn is_storage_full(&self) -> bool {
        let full = [
            rustix::io::Errno::NOSPC.raw_os_error(),
            rustix::io::Errno::DQUOT.raw_os_error(),
        ];
        match self {
            Self::Io { source, .. } => source
                .raw_os_error()
                .is_some_and(|code| full.contains(&code)),
            _ => false,
        }
    }

    fn integrity(what: impl Into<String>, why: impl Into<String>) -> Self {
        Self::Integrity {
            what: what.into(),
            why: why.into(),
        }
    }
}

/// What an unlock did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlocked {
    /// The directory was empty; a new vault now exists under the passphrase.
    Initialised,
    Unlocked,
    /// It was unlocked already and the passphrase matched.
    AlreadyUnlocked,
}

/// An item as listed: its metadata, never its value.
pub type ItemInfo = ItemRecord;

/// A client as listed: id, description and creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub id: Uuid,
    pub description: String,
    pub created: u64,
    pub grants: Vec<Uuid>,
}

/// A listing, with the names of records that failed their checks.
#[derive(Debug)]
pub struct Listing<T> {
    pub entries: Vec<T>,
    pub damaged: Vec<String>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            damaged: Vec::new(),
        }
    }
}

/// A vault in an open storage directory, locked or unlocked.
pub struct Vault {
    dir: StorageDir,
    keys: Option<UnlockedKeys>,
}

/// Everything an unlocked vault keeps in memory.
pub struct UnlockedKeys {
    master: keys::MasterKey,
    sealed: SealedIdentity,
    recipient: age::x25519::Recipient,
    records: RecordKeys,
    /// A per-unlock key (sealed) and the passphrase's HMAC under it, so
    /// that admin requests are checked without rerunning the KDF.
    admin_key: protect::Sealed,
    admin_tag: [u8; 32],
    /// Seals the record keys and the admin key; held in a Boojum.
    _sealing: protect::SealingKey,
    manifest: Manifest,
}

impl fmt::Debug for UnlockedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockedKeys").finish_non_exhaustive()
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.dir.path())
            .field("locked", &self.keys.is_none())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the storage directory at `path`, locked, and takes its lock.
    pub fn open(path: &Path) -> Result<Self, VaultError> {
        let dir = StorageDir::open(path)?;
        check_layout(dir.path())?;
        if dir.path().join(VERSION_FILE).exists() {
            for name in [ITEMS_DIR, CLIENTS_DIR] {
                dir.ensure_subdir(name)?;
            }
        }
        Ok(Self { dir, keys: None })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_initialised(&self) -> bool {
        self.dir.path().join(VERSION_FILE).exists()
    }

    pub fn is_locked(&self) -> bool {
        self.keys.is_none()
    }

    /// Unlocks with `passphrase`, initialising an empty directory with it.
    pub fn unlock(&mut self, passphrase: &SecretBytes) -> Result<Unlocked, VaultError> {
        if self.keys.is_some() {
            self.verify_admin(passphrase)?;
            return Ok(Unlocked::AlreadyUnlocked);
        }
        if !self.is_initialised() {
            self.keys = Some(self.initialise(passphrase)?);
            return Ok(Unlocked::Initialised);
        }
        let keys = self.derive_keys(passphrase)?;
        Ok(self.install(keys))
    }

    /// The slow half of an unlock (the KDF), which needs only shared
    /// access, so that a server can run it without blocking readers.
    pub fn derive_keys(&self, passphrase: &SecretBytes) -> Result<UnlockedKeys, VaultError> {
        check_passphrase(passphrase)?;
        let bytes = storage::read_optional(self.path(), IDENTITY_FILE)?.ok_or_else(|| {
            VaultError::integrity(
                "the identity file",
                "it is missing; restore it from a backup",
            )
        })?;
        let sealed = SealedIdentity::from_file_bytes(&bytes)?;
        let master = sealed.kdf.derive(passphrase)?;
        let mut keys = unlocked_keys(sealed, master, passphrase)?;
        keys.manifest = self.read_manifest(&keys.records)?;
        Ok(keys)
    }

    /// The quick half of an unlock: takes the derived keys into use.
    pub fn install(&mut self, keys: UnlockedKeys) -> Unlocked {
        if self.keys.is_some() {
            return Unlocked::AlreadyUnlocked;
        }
        self.keys = Some(keys);
        self.clean_up();
        Unlocked::Unlocked
    }

    /// Makes a new vault in an empty directory. VERSION is written last:
    /// until it exists the directory counts as empty, so a crash part way
    /// through leaves nothing that needs repair.
    fn initialise(&self, passphrase: &SecretBytes) -> Result<UnlockedKeys, VaultError> {
        check_passphrase(passphrase)?;
        self.dir.ensure_subdir(ITEMS_DIR)?;
        self.dir.ensure_subdir(CLIENTS_DIR)?;
        let (sealed, master) = SealedIdentity::create(passphrase)?;
        storage::write_atomic(self.path(), IDENTITY_FILE, &sealed.to_file_bytes())?;
        let keys = unlocked_keys(sealed, master, passphrase)?;
        let manifest = keys.records.metadata(|key| keys.manifest.seal(key))?;
        storage::write_atomic(self.path(), MANIFEST_FILE, &manifest)?;
        let version = format!("{FORMAT_VERSION}\n");
        storage::write_atomic(self.path(), VERSION_FILE, version.as_bytes())?;
        info!(path = %self.path().display(), "initialised a new vault");
        Ok(keys)
    }

    fn read_manifest(&self, keys: &RecordKeys) -> Result<Manifest, VaultError> {
        let bytes = storage::read_optional(self.path(), MANIFEST_FILE)?.ok_or_else(|| {
            VaultError::integrity("the manifest", "it is missing; restore it from a backup")
        })?;
        keys.metadata(|key| Manifest::open(&bytes, key))?
    }

    /// Applies `change` to the manifest and writes it: the commit point of
    /// every change. When the write fails (a full disk) the manifest in
    /// memory is put back, so memory and disk agree on what was committed.
    fn update_manifest(&mut self, change: impl FnOnce(&mut Manifest)) -> Result<(), VaultError> {
        let keys = self.keys.as_mut().ok_or(VaultError::Locked)?;
        let before = keys.manifest.clone();
        change(&mut keys.manifest);
        let keys = self.keys()?;
        let written = keys
            .records
            .metadata(|key| keys.manifest.seal(key))
            .and_then(|bytes| storage::write_atomic(self.path(), MANIFEST_FILE, &bytes));
        if written.is_err()
            && let Some(keys) = self.keys.as_mut()
        {
            keys.manifest = before;
        }
        written
    }

    /// Forgets every key; the vault reads nothing until unlocked again.
    pub fn lock(&mut self) {
        self.keys = None;
    }

    /// Checks an admin passphrase against the one the vault was unlocked with.
    pub fn verify_admin(&self, passphrase: &SecretBytes) -> Result<(), VaultError> {
        let keys = self.keys()?;
        let tag = keys::with_sealed_key(&keys.admin_key, |key| {
            keys::mac(key, &[passphrase.expose()])
        })?;
        if bool::from(tag.ct_eq(&keys.admin_tag)) {
            Ok(())
        } else {
            Err(VaultError::WrongPassphrase)
        }
    }

    fn keys(&self) -> Result<&UnlockedKeys, VaultError> {
        self.keys.as_ref().ok_or(VaultError::Locked)
    }

    fn items_dir(&self) -> PathBuf {
        self.path().join(ITEMS_DIR)
    }

    fn clients_dir(&self) -> PathBuf {
        self.path().join(CLIENTS_DIR)
    }

    /// Removes temporary files that interrupted writes left, and makes
    /// sure both subdirectories exist, closed to others. Failures only
    /// warn: nothing here is committed data.
    fn clean_up(&self) {
        for name in [ITEMS_DIR, CLIENTS_DIR] {
            if let Err(err) = self.dir.ensure_subdir(name) {
                warn!(error = %err, "cannot restore a vault directory");
            }
        }
        for dir in [self.path().to_owned(), self.items_dir(), self.clients_dir()] {
            match storage::remove_temp_files(&dir) {
                Ok(0) => {}
                Ok(removed) => info!(dir = %dir.display(), removed, "removed interrupted writes"),
                Err(err) => warn!(error = %err, "cannot remove interrupted writes"),
            }
        }
    }
}

fn check_passphrase(passphrase: &SecretBytes) -> Result<(), VaultError> {
    if passphrase.is_empty() {
        return Err(VaultError::Invalid("the passphrase is empty".into()));
    }
    Ok(())
}

fn unlocked_keys(
    sealed: SealedIdentity,
    master: Key,
    passphrase: &SecretBytes,
) -> Result<UnlockedKeys, VaultError> {
    let identity = sealed.open(&master)?;
    let sealing = protect::SealingKey::generate().map_err(keys::out_of_memory)?;
    let admin = keys::random_key();
    let admin_tag = keys::mac(&admin, &[passphrase.expose()]);
    Ok(UnlockedKeys {
        recipient: identity.to_public(),
        records: RecordKeys::derive(&identity, &sealing)?,
        master: keys::MasterKey::new(&master)?,
        sealed,
        admin_key: protect::Sealed::new(&sealing, admin.as_ref()).map_err(keys::out_of_memory)?,
        admin_tag,
        manifest: Manifest::default(),
        _sealing: sealing,
    })
}

/// Refuses a directory this build cannot use: a newer or unreadable
/// format version, or vault files without a VERSION (a vault whose
/// VERSION was lost must not be initialised afresh over its items).
fn check_layout(dir: &Path) -> Result<(), VaultError> {
    let Some(bytes) = storage::read_optional(dir, VERSION_FILE)? else {
        return check_uninitialised(dir);
    };
    let text = String::from_utf8_lossy(&bytes);
    let version: u32 = text.trim().parse().unwrap_or(0);
    if version == 0 {
        return Err(VaultError::Setup(format!(
            "{} holds no valid format version; restore it from a backup",
            dir.join(VERSION_FILE).display()
        )));
    }
    if version > FORMAT_VERSION {
        return Err(VaultError::Setup(format!(
            "the vault in {} has format version {version}, newer than the {FORMAT_VERSION} this \
             credstore supports; upgrade credstore",
            dir.display()
        )));
    }
    Ok(())
}

/// Without VERSION only the leftovers of an interrupted initialisation
/// may be present: empty subdirectories, an identity and a manifest.
fn check_uninitialised(dir: &Path) -> Result<(), VaultError> {
    for subdir in [ITEMS_DIR, CLIENTS_DIR] {
        let path = dir.join(subdir);
        if path.exists() && !storage::file_names(&path)?.is_empty() {
            return Err(VaultError::Setup(format!(
                "{} holds vault records but {VERSION_FILE} is missing; restore {VERSION_FILE} \
                 from a backup (it holds \"{FORMAT_VERSION}\") rather than starting a new vault",
                dir.display()
            )));
        }
    }
    for name in storage::file_names(dir)? {
        let leftover = [
            ".lock",
            IDENTITY_FILE,
            MANIFEST_FILE,
            ITEMS_DIR,
            CLIENTS_DIR,
        ];
        if !leftover.contains(&name.as_str()) {
            return Err(VaultError::Setup(format!(
                "storage directory {} is not empty and holds no vault ({name} is there); give \
                 credstore an empty directory",
                dir.display()
            )));
        }
    }
    Ok(())
}

fn record_file(id: Uuid) -> String {
    format!("{id}.json")
}

fn check_description(description: &str) -> Result<(), VaultError> {
    if description.len() > MAX_DESCRIPTION_LEN {
        return Err(VaultError::Invalid(format!(
            "the description is {} bytes long; the limit is {MAX_DESCRIPTION_LEN}",
            description.len()
        )));
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
