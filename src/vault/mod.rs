//! The vault at rest: an age-encrypted store of items and client
//! credentials in one locked directory.
//!
//! Layout of the storage directory:
//!
//! ```text
//! VERSION               format version, "1"
//! .lock                 flock held by the daemon that has the vault open
//! identity.json         age identity sealed under the passphrase-derived key
//! items/ID.json         item metadata, HMAC-tagged
//! items/ID.GEN.age      one generation of the item's value, an age file
//! clients/ID.json       client record with a keyed hash of its secret
//! ```
//!
//! An item's metadata names its current generation and the keyed checksum
//! of that value; a new value is written as a new generation file before
//! the metadata that points at it, so the metadata rename is the commit.

mod keys;
mod records;
mod storage;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{Read, Write};
use std::iter;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq;
use thiserror::Error;
use tracing::{info, warn};
use uuid::Uuid;
use zeroize::Zeroizing;

pub use keys::{KDF_ITERATIONS, KDF_MEMORY_KIB, KDF_PARALLELISM};
pub use records::{ClientRecord, HistoryEntry, ItemRecord};

use crate::secret::SecretBytes;
use keys::{Key, RecordKeys, SealedIdentity};
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
}

/// A listing, with the names of records that failed their checks.
#[derive(Debug, Default)]
pub struct Listing<T> {
    pub entries: Vec<T>,
    pub damaged: Vec<String>,
}

/// A vault in an open storage directory, locked or unlocked.
pub struct Vault {
    dir: StorageDir,
    keys: Option<UnlockedKeys>,
}

/// Everything an unlocked vault keeps in memory.
struct UnlockedKeys {
    master: Key,
    sealed: SealedIdentity,
    recipient: age::x25519::Recipient,
    records: RecordKeys,
    /// A per-unlock key and the passphrase's HMAC under it, so that admin
    /// requests are checked without rerunning the KDF.
    admin_key: Key,
    admin_tag: [u8; 32],
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
        check_format_version(dir.path())?;
        Ok(Self { dir, keys: None })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_initialised(&self) -> bool {
        self.dir.path().join(IDENTITY_FILE).exists()
    }

    pub fn is_locked(&self) -> bool {
        self.keys.is_none()
    }

    /// Unlocks with `passphrase`, initialising an empty directory with it.
    pub fn unlock(&mut self, passphrase: &SecretBytes) -> Result<Unlocked, VaultError> {
        if passphrase.is_empty() {
            return Err(VaultError::Invalid("the passphrase is empty".into()));
        }
        if self.keys.is_some() {
            self.verify_admin(passphrase)?;
            return Ok(Unlocked::AlreadyUnlocked);
        }

        let (sealed, master, outcome) = match storage::read_optional(self.path(), IDENTITY_FILE)? {
            Some(bytes) => {
                let sealed = SealedIdentity::from_file_bytes(&bytes)?;
                let master = sealed.kdf.derive(passphrase)?;
                (sealed, master, Unlocked::Unlocked)
            }
            None => {
                let (sealed, master) = self.initialise(passphrase)?;
                (sealed, master, Unlocked::Initialised)
            }
        };

        let identity = sealed.open(&master)?;
        let admin_key = keys::random_key();
        let admin_tag = keys::mac(&admin_key, &[passphrase.expose()]);
        self.keys = Some(UnlockedKeys {
            recipient: identity.to_public(),
            records: RecordKeys::derive(&identity),
            master,
            sealed,
            admin_key,
            admin_tag,
        });
        drop(identity);

        self.clean_up();
        Ok(outcome)
    }

    /// Writes a new identity sealed under `passphrase` and the vault's
    /// directories. The identity file is written last: it is what makes a
    /// directory an initialised vault.
    fn initialise(&self, passphrase: &SecretBytes) -> Result<(SealedIdentity, Key), VaultError> {
        storage::write_atomic(
            self.path(),
            VERSION_FILE,
            format!("{FORMAT_VERSION}\n").as_bytes(),
        )?;
        self.dir.ensure_subdir(ITEMS_DIR)?;
        self.dir.ensure_subdir(CLIENTS_DIR)?;

        let (sealed, master) = SealedIdentity::create(passphrase)?;
        storage::write_atomic(self.path(), IDENTITY_FILE, &sealed.to_file_bytes())?;
        info!(path = %self.path().display(), "initialised a new vault");
        Ok((sealed, master))
    }

    /// Forgets every key; the vault reads nothing until unlocked again.
    pub fn lock(&mut self) {
        self.keys = None;
    }

    /// Checks an admin passphrase against the one the vault was unlocked with.
    pub fn verify_admin(&self, passphrase: &SecretBytes) -> Result<(), VaultError> {
        let keys = self.keys()?;
        let tag = keys::mac(&keys.admin_key, &[passphrase.expose()]);
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

    /// Stores a new item and answers its id.
    pub fn create_item(
        &mut self,
        description: &str,
        value: &SecretBytes,
    ) -> Result<Uuid, VaultError> {
        check_description(description)?;
        check_value(value)?;
        let keys = self.keys()?;
        let id = Uuid::new_v4();
        let now = unix_now();
        let generation = 1;

        self.write_value(id, generation, value)?;
        let record = ItemRecord {
            id,
            description: description.to_owned(),
            created: now,
            updated: now,
            generation,
            value_mac: records::value_mac(&keys.records.value, id, generation, value.expose()),
            bound_peer: None,
            history: Vec::new(),
        };
        self.write_item(&record)?;
        Ok(id)
    }

    /// Replaces an item's value, keeping the previous one in its history.
    pub fn update_item(&mut self, id: Uuid, value: &SecretBytes) -> Result<ItemRecord, VaultError> {
        check_value(value)?;
        let keys = self.keys()?;
        let mut record = self.item(id)?;
        let generation = record.generation + 1;

        self.write_value(id, generation, value)?;
        record.history.insert(
            0,
            HistoryEntry {
                generation: record.generation,
                updated: record.updated,
                value_mac: record.value_mac.clone(),
            },
        );
        let dropped = record
            .history
            .split_off(record.history.len().min(HISTORY_LEN));
        record.generation = generation;
        record.updated = unix_now();
        record.value_mac = records::value_mac(&keys.records.value, id, generation, value.expose());
        self.write_item(&record)?;

        for old in dropped {
            storage::remove_durable(&self.items_dir(), &value_file(id, old.generation))?;
        }
        Ok(record)
    }

    /// The checked metadata of one item.
    pub fn item(&self, id: Uuid) -> Result<ItemRecord, VaultError> {
        let keys = self.keys()?;
        let bytes = storage::read_optional(&self.items_dir(), &record_file(id))?
            .ok_or(VaultError::NotFound { kind: "item", id })?;
        records::open(&bytes, &keys.records.metadata, id)
    }

    /// The items whose description contains `search` (ignoring case).
    pub fn list_items(&self, search: Option<&str>) -> Result<Listing<ItemInfo>, VaultError> {
        let needle = search.map(str::to_lowercase);
        let mut listing = self.list_records::<ItemRecord>(&self.items_dir())?;
        if let Some(needle) = needle {
            listing
                .entries
                .retain(|item| item.description.to_lowercase().contains(&needle));
        }
        Ok(listing)
    }

    /// The current value of an item, checked against its keyed checksum.
    pub fn read_item(&self, id: Uuid) -> Result<SecretBytes, VaultError> {
        let record = self.item(id)?;
        self.read_value(&record, record.generation, &record.value_mac)
    }

    /// A previous value of an item, from its history.
    pub fn read_item_generation(
        &self,
        id: Uuid,
        generation: u64,
    ) -> Result<SecretBytes, VaultError> {
        let record = self.item(id)?;
        if generation == record.generation {
            return self.read_value(&record, generation, &record.value_mac);
        }
        let entry = record
            .history
            .iter()
            .find(|entry| entry.generation == generation)
            .ok_or_else(|| {
                VaultError::Invalid(format!("item {id} keeps no generation {generation}"))
            })?;
        self.read_value(&record, generation, &entry.value_mac)
    }

    /// Deletes every item in `ids`, or none when one of them is missing.
    pub fn delete_items(&mut self, ids: &[Uuid]) -> Result<(), VaultError> {
        let records = ids
            .iter()
            .map(|id| self.item(*id))
            .collect::<Result<Vec<_>, _>>()?;
        let dir = self.items_dir();
        for record in records {
            storage::remove_durable(&dir, &record_file(record.id))?;
            let generations = iter::once(record.generation)
                .chain(record.history.iter().map(|entry| entry.generation));
            for generation in generations {
                storage::remove_durable(&dir, &value_file(record.id, generation))?;
            }
        }
        Ok(())
    }

    /// Creates a client credential and answers its id and secret; the
    /// secret is shown only this once.
    pub fn create_client(&mut self, description: &str) -> Result<(Uuid, SecretBytes), VaultError> {
        check_description(description)?;
        let keys = self.keys()?;
        let id = Uuid::new_v4();
        let secret = new_client_secret();
        let record = ClientRecord {
            id,
            description: description.to_owned(),
            created: unix_now(),
            secret_mac: records::client_secret_mac(&keys.records.client, id, secret.expose()),
        };
        let bytes = records::seal(&record, &keys.records.metadata);
        storage::write_atomic(&self.clients_dir(), &record_file(id), &bytes)?;
        Ok((id, secret))
    }

    pub fn list_clients(&self) -> Result<Listing<ClientInfo>, VaultError> {
        let listing = self.list_records::<ClientRecord>(&self.clients_dir())?;
        let entries = listing
            .entries
            .into_iter()
            .map(|client| ClientInfo {
                id: client.id,
                description: client.description,
                created: client.created,
            })
            .collect();
        Ok(Listing {
            entries,
            damaged: listing.damaged,
        })
    }

    /// Deletes every client in `ids`, or none when one of them is missing.
    pub fn delete_clients(&mut self, ids: &[Uuid]) -> Result<(), VaultError> {
        for id in ids {
            self.client(*id)?;
        }
        for id in ids {
            storage::remove_durable(&self.clients_dir(), &record_file(*id))?;
        }
        Ok(())
    }

    /// Checks a client's secret; a missing client and a wrong secret give
    /// the same error, so that callers cannot probe for ids.
    pub fn verify_client(&self, id: Uuid, secret: &SecretBytes) -> Result<(), VaultError> {
        let keys = self.keys()?;
        let expected = match self.client(id) {
            Ok(record) => record.secret_mac,
            Err(VaultError::NotFound { .. }) => return Err(VaultError::BadClientCredentials),
            Err(err) => return Err(err),
        };
        let actual = records::client_secret_mac(&keys.records.client, id, secret.expose());
        if bool::from(actual.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(VaultError::BadClientCredentials)
        }
    }

    fn client(&self, id: Uuid) -> Result<ClientRecord, VaultError> {
        let keys = self.keys()?;
        let bytes = storage::read_optional(&self.clients_dir(), &record_file(id))?
            .ok_or(VaultError::NotFound { kind: "client", id })?;
        records::open(&bytes, &keys.records.metadata, id)
    }

    fn write_item(&self, record: &ItemRecord) -> Result<(), VaultError> {
        let keys = self.keys()?;
        let bytes = records::seal(record, &keys.records.metadata);
        storage::write_atomic(&self.items_dir(), &record_file(record.id), &bytes)
    }

    fn write_value(
        &self,
        id: Uuid,
        generation: u64,
        value: &SecretBytes,
    ) -> Result<(), VaultError> {
        let keys = self.keys()?;
        let encrypted = encrypt(&keys.recipient, value)?;
        storage::write_atomic(&self.items_dir(), &value_file(id, generation), &encrypted)
    }

    fn read_value(
        &self,
        record: &ItemRecord,
        generation: u64,
        expected_mac: &str,
    ) -> Result<SecretBytes, VaultError> {
        let keys = self.keys()?;
        let name = value_file(record.id, generation);
        let what = || format!("value {name}");
        let encrypted = storage::read_optional(&self.items_dir(), &name)?
            .ok_or_else(|| VaultError::integrity(what(), "the file is missing"))?;

        let identity = keys.sealed.open(&keys.master)?;
        let value =
            decrypt(&identity, &encrypted).map_err(|why| VaultError::integrity(what(), why))?;
        drop(identity);

        let actual = records::value_mac(&keys.records.value, record.id, generation, value.expose());
        if !bool::from(actual.as_bytes().ct_eq(expected_mac.as_bytes())) {
            return Err(VaultError::integrity(
                what(),
                "its checksum does not match the metadata",
            ));
        }
        Ok(value)
    }

    fn list_records<T: records::Record>(&self, dir: &Path) -> Result<Listing<T>, VaultError> {
        let keys = self.keys()?;
        let mut listing = Listing {
            entries: Vec::new(),
            damaged: Vec::new(),
        };
        for name in storage::file_names(dir)? {
            let Some(id) = name
                .strip_suffix(".json")
                .and_then(|id| Uuid::parse_str(id).ok())
            else {
                continue;
            };
            let opened = storage::read_optional(dir, &name)?
                .ok_or(VaultError::NotFound { kind: T::KIND, id })
                .and_then(|bytes| records::open::<T>(&bytes, &keys.records.metadata, id));
            match opened {
                Ok(record) => listing.entries.push(record),
                Err(VaultError::NotFound { .. }) => {}
                Err(err) => {
                    warn!(error = %err, "skipping a damaged record");
                    listing.damaged.push(name);
                }
            }
        }
        Ok(listing)
    }

    /// Removes what interrupted writes left behind: temporary files, and
    /// value files no checked record refers to. Failures only warn; the
    /// leftovers are harmless.
    fn clean_up(&self) {
        for dir in [self.path().to_owned(), self.items_dir(), self.clients_dir()] {
            match storage::remove_temp_files(&dir) {
                Ok(0) => {}
                Ok(removed) => info!(dir = %dir.display(), removed, "removed interrupted writes"),
                Err(err) => warn!(error = %err, "cannot remove interrupted writes"),
            }
        }
        if let Err(err) = self.remove_orphan_values() {
            warn!(error = %err, "cannot remove orphaned value files");
        }
    }

    fn remove_orphan_values(&self) -> Result<(), VaultError> {
        let dir = self.items_dir();
        let listing = self.list_records::<ItemRecord>(&dir)?;
        for name in storage::file_names(&dir)? {
            let Some((id, generation)) = parse_value_file(&name) else {
                continue;
            };
            let damaged = listing.damaged.contains(&record_file(id));
            let referenced = listing.entries.iter().any(|item| {
                item.id == id
                    && (item.generation == generation
                        || item
                            .history
                            .iter()
                            .any(|entry| entry.generation == generation))
            });
            if !damaged && !referenced {
                storage::remove_durable(&dir, &name)?;
                info!(file = %name, "removed a value file no item refers to");
            }
        }
        Ok(())
    }
}

fn check_format_version(dir: &Path) -> Result<(), VaultError> {
    let Some(bytes) = storage::read_optional(dir, VERSION_FILE)? else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&bytes);
    let version: u32 = text.trim().parse().map_err(|_| {
        VaultError::Setup(format!(
            "{} holds no format version",
            dir.join(VERSION_FILE).display()
        ))
    })?;
    if version > FORMAT_VERSION {
        return Err(VaultError::Setup(format!(
            "the vault in {} has format version {version}, newer than the {FORMAT_VERSION} this \
             credstore supports; upgrade credstore",
            dir.display()
        )));
    }
    Ok(())
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

fn check_value(value: &SecretBytes) -> Result<(), VaultError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(VaultError::Invalid(format!(
            "the value is {} bytes long; the limit is {MAX_VALUE_LEN}",
            value.len()
        )));
    }
    Ok(())
}

fn record_file(id: Uuid) -> String {
    format!("{id}.json")
}

fn value_file(id: Uuid, generation: u64) -> String {
    format!("{id}.{generation}.age")
}

fn parse_value_file(name: &str) -> Option<(Uuid, u64)> {
    let (id, generation) = name.strip_suffix(".age")?.split_once('.')?;
    Some((Uuid::parse_str(id).ok()?, generation.parse().ok()?))
}

fn new_client_secret() -> SecretBytes {
    let mut raw = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(raw.as_mut());
    SecretBytes::from(URL_SAFE_NO_PAD.encode(raw.as_ref()))
}

fn encrypt(recipient: &age::x25519::Recipient, value: &SecretBytes) -> Result<Vec<u8>, VaultError> {
    let failed = |_| VaultError::Internal("age encryption failed".into());
    let encryptor = age::Encryptor::with_recipients(iter::once(recipient as &dyn age::Recipient))
        .map_err(|_| VaultError::Internal("age refused the recipient".into()))?;
    let mut encrypted = Vec::with_capacity(value.len() + 256);
    let mut writer = encryptor.wrap_output(&mut encrypted).map_err(failed)?;
    writer.write_all(value.expose()).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(encrypted)
}

fn decrypt(
    identity: &age::x25519::Identity,
    encrypted: &[u8],
) -> Result<SecretBytes, &'static str> {
    let decryptor = age::Decryptor::new(encrypted).map_err(|_| "it is not a valid age file")?;
    let mut reader = decryptor
        .decrypt(iter::once(identity as &dyn age::Identity))
        .map_err(|_| "it is not encrypted to this vault's identity")?;
    // Sized up front so that reading never reallocates and leaves a copy.
    let mut value = Vec::with_capacity(encrypted.len());
    let read = reader.read_to_end(&mut value);
    let value = SecretBytes::new(value);
    read.map_err(|_| "its contents fail age authentication")?;
    Ok(value)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
