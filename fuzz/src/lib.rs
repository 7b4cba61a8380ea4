//! What the fuzz targets share: a small populated vault to tamper with.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use credstore::secret::SecretBytes;
use credstore::vault::{ItemRecord, Vault};
use uuid::Uuid;

/// The master passphrase of every fixture vault.
pub const PASSPHRASE: &[u8] = b"fuzzing passphrase";

/// A vault with two items (one updated, so it keeps a previous value), a
/// recovery recipient and a client granted the first item only.
pub struct Populated {
    pub dir: tempfile::TempDir,
    pub storage: PathBuf,
    pub items: Vec<Item>,
    pub client: Uuid,
    pub secret: SecretBytes,
    /// An item the client was not granted.
    pub ungranted: Uuid,
    pub recipient: String,
}

/// One item as it was stored.
pub struct Item {
    pub record: ItemRecord,
    /// Every generation the vault keeps, with its value.
    pub values: Vec<(u64, Vec<u8>)>,
}

impl Populated {
    /// Builds the vault in a fresh directory (on /dev/shm where there is
    /// one, since the targets rewrite files on every run) and answers it
    /// with its handle, unlocked; drop the handle to open the directory
    /// again.
    pub fn new() -> (Self, Vault) {
        let dir = if Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).expect("the storage directory");
        fs::set_permissions(&storage, fs::Permissions::from_mode(0o700)).unwrap();

        let mut vault = Vault::open(&storage).expect("an empty vault opens");
        vault
            .unlock(&SecretBytes::copy_from(PASSPHRASE))
            .expect("the vault initialises");
        let value = |text: &str| SecretBytes::copy_from(text.as_bytes());
        let first = vault.create_item("first", &value("one")).unwrap();
        vault.update_item(first, &value("two")).unwrap();
        let second = vault.create_item("second", &value("three")).unwrap();
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        vault.set_recovery_recipient(&recipient).unwrap();
        let (client, secret) = vault.create_client("host", &[first]).unwrap();

        let items = vec![
            Item {
                record: vault.item(first).unwrap(),
                values: vec![(1, b"one".to_vec()), (2, b"two".to_vec())],
            },
            Item {
                record: vault.item(second).unwrap(),
                values: vec![(1, b"three".to_vec())],
            },
        ];
        let populated = Self {
            dir,
            storage,
            items,
            client,
            secret,
            ungranted: second,
            recipient,
        };
        (populated, vault)
    }

    /// Reads every item, client and the recipient through `vault` and
    /// panics on an answer
    /// that differs from what was stored: a failed read is fine, a wrong
    /// one is a finding.
    pub fn check_reads(&self, vault: &Vault) {
        if let Ok(listing) = vault.list_items(None) {
            let known = |id: &Uuid| self.items.iter().any(|item| item.record.id == *id);
            assert!(
                listing.entries.iter().all(|entry| known(&entry.id)),
                "an item was listed that was never created"
            );
        }
        let _ = vault.list_clients();
        for item in &self.items {
            let id = item.record.id;
            if let Ok(record) = vault.item(id) {
                assert_eq!(record, item.record, "a changed record of item {id} was accepted");
            }
            for (generation, value) in &item.values {
                if let Ok(read) = vault.read_item_generation(id, *generation) {
                    assert_eq!(read.expose(), value, "a wrong value of item {id} was read");
                }
            }
        }

        let wrong = SecretBytes::copy_from(b"not the client secret");
        assert!(vault.verify_client(self.client, &wrong).is_err(), "a wrong secret passed");
        let _ = vault.verify_client(self.client, &self.secret);
        assert!(
            !vault.is_granted(self.client, self.ungranted).unwrap_or(false),
            "a grant appeared that was never given"
        );
        if let Ok(Some(recipient)) = vault.recovery_recipient() {
            assert_eq!(recipient.to_string(), self.recipient, "a foreign recipient was accepted");
        }
    }
}

/// Reads `path` and keeps its bytes, so that a target can put them back.
pub fn original(path: PathBuf) -> (PathBuf, Vec<u8>) {
    let bytes = fs::read(&path).unwrap_or_else(|err| panic!("cannot read {path:?}: {err}"));
    (path, bytes)
}
