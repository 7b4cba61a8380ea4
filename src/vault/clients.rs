//! Client credentials: a random id and secret, of which the vault keeps
//! only a keyed hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq;
use tracing::warn;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{
    ClientInfo, ClientRecord, Listing, Vault, VaultError, check_description, record_file, records,
    storage, unix_now,
};
use crate::secret::SecretBytes;

impl Vault {
    /// Creates a client credential and answers its id and secret; the
    /// secret is shown only this once.
    pub fn create_client(
        &mut self,
        description: &str,
        grants: &[Uuid],
    ) -> Result<(Uuid, SecretBytes), VaultError> {
        check_description(description)?;
        self.check_items_exist(grants)?;
        let keys = self.keys()?;
        let id = Uuid::new_v4();
        let secret = new_client_secret();
        let record = ClientRecord {
            id,
            description: description.to_owned(),
            created: unix_now(),
            secret_mac: keys
                .records
                .client(|key| records::client_secret_mac(key, id, secret.expose()))?,
            grants: grants.iter().copied().collect(),
            revision: 0,
        };
        self.commit_client(record)?;
        Ok((id, secret))
    }

    pub fn list_clients(&self) -> Result<Listing<ClientInfo>, VaultError> {
        let ids: Vec<Uuid> = self.keys()?.manifest.clients.keys().copied().collect();
        let mut listing = Listing::default();
        for id in ids {
            match self.client(id) {
                Ok(client) => listing.entries.push(ClientInfo {
                    id: client.id,
                    description: client.description,
                    created: client.created,
                    grants: client.grants.into_iter().collect(),
                }),
                Err(err) => {
                    warn!(error = %err, "skipping a damaged client record");
                    listing.damaged.push(record_file(id));
                }
            }
        }
        Ok(listing)
    }

    /// Deletes every client in `ids`, or none when one of them is not in
    /// the vault; a damaged record can be deleted too.
    pub fn delete_clients(&mut self, ids: &[Uuid]) -> Result<(), VaultError> {
        let manifest = &self.keys()?.manifest;
        if let Some(id) = ids.iter().find(|id| !manifest.clients.contains_key(id)) {
            return Err(VaultError::NotFound {
                kind: "client",
                id: *id,
            });
        }
        self.update_manifest(|manifest| {
            for id in ids {
                manifest.clients.remove(id);
            }
        })?;
        for id in ids {
            storage::remove_durable(&self.clients_dir(), &record_file(*id))?;
        }
        Ok(())
    }

    /// Lets `client` read `items` (all must exist), or with `grant` false
    /// stops it from reading them.
    pub fn set_grants(
        &mut self,
        client: Uuid,
        items: &[Uuid],
        grant: bool,
    ) -> Result<(), VaultError> {
        if grant {
            self.check_items_exist(items)?;
        }
        let mut record = self.client(client)?;
        for item in items {
            if grant {
                record.grants.insert(*item);
            } else {
                record.grants.remove(item);
            }
        }
        self.commit_client(record)
    }

    /// Writes `record` as its next revision, then the manifest that
    /// vouches for it, so an older copy put back (with grants since
    /// revoked) is refused.
    fn commit_client(&mut self, mut record: ClientRecord) -> Result<(), VaultError> {
        record.revision += 1;
        let keys = self.keys()?;
        let bytes = keys.records.metadata(|key| records::seal(&record, key))?;
        storage::write_atomic(&self.clients_dir(), &record_file(record.id), &bytes)?;
        let (id, revision) = (record.id, record.revision);
        self.update_manifest(|manifest| {
            manifest.clients.insert(id, revision);
        })
    }

    /// Whether `client` was granted `item`.
    pub fn is_granted(&self, client: Uuid, item: Uuid) -> Result<bool, VaultError> {
        Ok(self.client(client)?.grants.contains(&item))
    }

    fn check_items_exist(&self, items: &[Uuid]) -> Result<(), VaultError> {
        let manifest = &self.keys()?.manifest;
        match items.iter().find(|item| !manifest.items.contains_key(item)) {
            Some(item) => Err(VaultError::NotFound {
                kind: "item",
                id: *item,
            }),
            None => Ok(()),
        }
    }

    /// Checks a client's secret; a missing client and a wrong secret give
    /// the same error, so that callers cannot probe for ids.
    pub fn verify_client(&self, id: Uuid, secret: &SecretBytes) -> Result<(), VaultError> {
        self.checked_client(id, secret).map(|_| ())
    }

    /// Checks a client's secret and answers whether it was granted `item`,
    /// reading its record once.
    pub fn verify_client_grant(
        &self,
        id: Uuid,
        secret: &SecretBytes,
        item: Uuid,
    ) -> Result<bool, VaultError> {
        Ok(self.checked_client(id, secret)?.grants.contains(&item))
    }

    fn checked_client(&self, id: Uuid, secret: &SecretBytes) -> Result<ClientRecord, VaultError> {
        let keys = self.keys()?;
        let record = match self.client(id) {
            Ok(record) => record,
            Err(VaultError::NotFound { .. }) => return Err(VaultError::BadClientCredentials),
            Err(err) => return Err(err),
        };
        let actual = keys
            .records
            .client(|key| records::client_secret_mac(key, id, secret.expose()))?;
        if bool::from(actual.as_bytes().ct_eq(record.secret_mac.as_bytes())) {
            Ok(record)
        } else {
            Err(VaultError::BadClientCredentials)
        }
    }

    /// A client the manifest lists, with its record checked; a deleted
    /// client's record put back is not found.
    fn client(&self, id: Uuid) -> Result<ClientRecord, VaultError> {
        let keys = self.keys()?;
        if !keys.manifest.clients.contains_key(&id) {
            return Err(VaultError::NotFound { kind: "client", id });
        }
        let bytes = storage::read_optional(&self.clients_dir(), &record_file(id))?
            .ok_or_else(|| VaultError::integrity(format!("client record {id}"), "it is missing"))?;
        let record: ClientRecord = keys
            .records
            .metadata(|key| records::open(&bytes, key, id))??;
        keys.manifest.check_client(id, record.revision)?;
        Ok(record)
    }
}

fn new_client_secret() -> SecretBytes {
    let mut raw = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(raw.as_mut());
    SecretBytes::from(URL_SAFE_NO_PAD.encode(raw.as_ref()))
}
