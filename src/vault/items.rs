//! Items: create, update (keeping a bounded history), read, list, delete.

use std::io::{Read, Write};
use std::iter;
use std::net::IpAddr;

use subtle::ConstantTimeEq;
use tracing::warn;
use uuid::Uuid;

use super::{
    HISTORY_LEN, HistoryEntry, ItemInfo, ItemRecord, Listing, MAX_VALUE_LEN, Vault, VaultError,
    check_description, record_file, records, storage, unix_now,
};
use crate::secret::SecretBytes;

impl Vault {
    /// Stores a new item and answers its id.
    pub fn create_item(
        &mut self,
        description: &str,
        value: &SecretBytes,
    ) -> Result<Uuid, VaultError> {
        check_description(description)?;
        check_value(value)?;
        let id = Uuid::new_v4();
        let now = unix_now();
        let generation = 1;

        self.write_value(id, generation, value)?;
        let mut record = ItemRecord {
            id,
            description: description.to_owned(),
            created: now,
            updated: now,
            generation,
            value_mac: self.value_mac(id, generation, value)?,
            bound_peer: None,
            revision: 0,
            history: Vec::new(),
        };
        self.commit_item(&mut record)?;
        Ok(id)
    }

    /// Replaces an item's value, keeping the previous one in its history.
    pub fn update_item(&mut self, id: Uuid, value: &SecretBytes) -> Result<ItemRecord, VaultError> {
        check_value(value)?;
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
        record.value_mac = self.value_mac(id, generation, value)?;
        self.commit_item(&mut record)?;

        for old in dropped {
            storage::remove_durable(&self.items_dir(), &value_file(id, old.generation))?;
        }
        Ok(record)
    }

    /// The checked metadata of one item.
    pub fn item(&self, id: Uuid) -> Result<ItemRecord, VaultError> {
        let keys = self.keys()?;
        if !keys.manifest.items.contains_key(&id) {
            return Err(VaultError::NotFound { kind: "item", id });
        }
        let bytes = storage::read_optional(&self.items_dir(), &record_file(id))?
            .ok_or_else(|| VaultError::integrity(format!("item record {id}"), "it is missing"))?;
        let record: ItemRecord = keys
            .records
            .metadata(|key| records::open(&bytes, key, id))??;
        keys.manifest.check_item(id, record.revision)?;
        Ok(record)
    }

    /// The items whose description contains `search` (ignoring case).
    pub fn list_items(&self, search: Option<&str>) -> Result<Listing<ItemInfo>, VaultError> {
        let needle = search.map(str::to_lowercase);
        let ids: Vec<Uuid> = self.keys()?.manifest.items.keys().copied().collect();
        let mut listing = Listing::default();
        for id in ids {
            match self.item(id) {
                Ok(item) => listing.entries.push(item),
                Err(err) => {
                    warn!(error = %err, "skipping a damaged item record");
                    listing.damaged.push(record_file(id));
                }
            }
        }
        if let Some(needle) = needle {
            listing
                .entries
                .retain(|item| item.description.to_lowercase().contains(&needle));
        }
        Ok(listing)
    }

    /// The current value of an item, checked against its keyed checksum.
    pub fn read_item(&self, id: Uuid) -> Result<SecretBytes, VaultError> {
        self.read_current(&self.item(id)?)
    }

    /// The current value of the item whose checked record is `record`.
    pub fn read_current(&self, record: &ItemRecord) -> Result<SecretBytes, VaultError> {
        self.read_value(record, record.generation, &record.value_mac)
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

    /// Deletes every item in `ids`, or none when one of them is not in the
    /// vault. A damaged item can be deleted too: all its files go.
    pub fn delete_items(&mut self, ids: &[Uuid]) -> Result<(), VaultError> {
        let manifest = &self.keys()?.manifest;
        if let Some(id) = ids.iter().find(|id| !manifest.items.contains_key(id)) {
            return Err(VaultError::NotFound {
                kind: "item",
                id: *id,
            });
        }
        self.update_manifest(|manifest| {
            for id in ids {
                manifest.items.remove(id);
            }
        })?;

        let dir = self.items_dir();
        for name in storage::file_names(&dir)? {
            let owner = name
                .split('.')
                .next()
                .and_then(|id| Uuid::parse_str(id).ok());
            if owner.is_some_and(|owner| ids.contains(&owner)) {
                storage::remove_durable(&dir, &name)?;
            }
        }
        Ok(())
    }

    fn value_mac(
        &self,
        id: Uuid,
        generation: u64,
        value: &SecretBytes,
    ) -> Result<String, VaultError> {
        let keys = self.keys()?;
        keys.records
            .value(|key| records::value_mac(key, id, generation, value.expose()))
    }

    /// Writes `record` as its next revision, then the manifest that
    /// vouches for that revision.
    fn commit_item(&mut self, record: &mut ItemRecord) -> Result<(), VaultError> {
        record.revision += 1;
        let keys = self.keys()?;
        let bytes = keys.records.metadata(|key| records::seal(&*record, key))?;
        storage::write_atomic(&self.items_dir(), &record_file(record.id), &bytes)?;
        let (id, revision) = (record.id, record.revision);
        self.update_manifest(|manifest| {
            manifest.items.insert(id, revision);
        })
    }

    /// Binds an unbound item to `peer`, the first client address to read
    /// it; an item bound to another address is a peer mismatch.
    pub fn bind_item(&mut self, id: Uuid, peer: IpAddr) -> Result<(), VaultError> {
        let mut record = self.item(id)?;
        match record.bound_peer {
            Some(bound) if bound == peer => Ok(()),
            Some(_) => Err(VaultError::PeerMismatch),
            None => {
                record.bound_peer = Some(peer);
                self.commit_item(&mut record)
            }
        }
    }

    /// Clears an item's binding, so that the next client to read it binds it.
    pub fn unbind_item(&mut self, id: Uuid) -> Result<(), VaultError> {
        let mut record = self.item(id)?;
        if record.bound_peer.is_none() {
            return Ok(());
        }
        record.bound_peer = None;
        self.commit_item(&mut record)
    }

    pub(super) fn write_value(
        &self,
        id: Uuid,
        generation: u64,
        value: &SecretBytes,
    ) -> Result<(), VaultError> {
        let keys = self.keys()?;
        let recovery = self.recovery_recipient()?;
        let encrypted = encrypt(&keys.recipient, recovery.as_ref(), value)?;
        storage::write_atomic(&self.items_dir(), &value_file(id, generation), &encrypted)
    }

    pub(super) fn read_value(
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

        let identity = keys.master.with(|master| keys.sealed.open(master))??;
        let value =
            decrypt(&identity, &encrypted).map_err(|why| VaultError::integrity(what(), why))?;
        drop(identity);

        let actual = keys
            .records
            .value(|key| records::value_mac(key, record.id, generation, value.expose()))?;
        if !bool::from(actual.as_bytes().ct_eq(expected_mac.as_bytes())) {
            return Err(VaultError::integrity(
                what(),
                "its checksum does not match the metadata",
            ));
        }
        Ok(value)
    }
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

pub(super) fn value_file(id: Uuid, generation: u64) -> String {
    format!("{id}.{generation}.age")
}

fn encrypt(
    primary: &age::x25519::Recipient,
    recovery: Option<&age::x25519::Recipient>,
    value: &SecretBytes,
) -> Result<Vec<u8>, VaultError> {
    let failed = |_| VaultError::Internal("age encryption failed".into());
    let recipients = iter::once(primary as &dyn age::Recipient)
        .chain(recovery.map(|recipient| recipient as &dyn age::Recipient));
    let encryptor = age::Encryptor::with_recipients(recipients)
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
