//! The recovery recipient: an age public key every value is also
//! encrypted to, so that `age -d -i recovery-identity.txt ID.GEN.age`
//! recovers a value offline with the standard age tool.
//!
//! The recipient is stored with an HMAC tag and checked before every
//! use: a recipient edited or swapped on disk would otherwise receive
//! every new value. A failed check refuses the write and is logged.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};
use uuid::Uuid;

use super::records::{self, Record};
use super::{RECOVERY_FILE, Vault, VaultError, storage};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoveryRecord {
    recipient: String,
}

impl Record for RecoveryRecord {
    const DOMAIN: &'static [u8] = b"borg-collective recovery recipient v1\0";
    const KIND: &'static str = "recovery recipient";

    fn id(&self) -> Uuid {
        Uuid::nil()
    }
}

impl Vault {
    /// The checked recovery recipient, if one is set.
    pub fn recovery_recipient(&self) -> Result<Option<age::x25519::Recipient>, VaultError> {
        let Some(bytes) = storage::read_optional(self.path(), RECOVERY_FILE)? else {
            return Ok(None);
        };
        let keys = self.keys()?;
        let record: Result<RecoveryRecord, _> = keys
            .records
            .metadata(|key| records::open(&bytes, key, Uuid::nil()))?;
        let record = record.inspect_err(|err| {
            error!(error = %err, "the recovery recipient failed its check; no value is written");
        })?;
        age::x25519::Recipient::from_str(&record.recipient)
            .map(Some)
            .map_err(|_| VaultError::integrity("the recovery recipient", "it does not parse"))
    }

    /// Sets the recovery recipient and re-encrypts every kept value to the
    /// primary recipient and it. Each value file is replaced atomically,
    /// so a crash part way leaves every item readable; running it again
    /// finishes the job.
    pub fn set_recovery_recipient(&mut self, recipient: &str) -> Result<usize, VaultError> {
        age::x25519::Recipient::from_str(recipient).map_err(|_| {
            VaultError::Invalid("the recovery recipient is not an age X25519 recipient".into())
        })?;
        let record = RecoveryRecord {
            recipient: recipient.to_owned(),
        };
        let keys = self.keys()?;
        let bytes = keys.records.metadata(|key| records::seal(&record, key))?;
        storage::write_atomic(self.path(), RECOVERY_FILE, &bytes)?;
        info!("recovery recipient set; re-encrypting every value");

        let ids: Vec<Uuid> = self.keys()?.manifest.items.keys().copied().collect();
        let mut rewritten = 0;
        for id in ids {
            match self.reencrypt_item(id) {
                Ok(count) => rewritten += count,
                Err(err) => warn!(%id, error = %err, "item not re-encrypted"),
            }
        }
        Ok(rewritten)
    }

    fn reencrypt_item(&self, id: Uuid) -> Result<usize, VaultError> {
        let record = self.item(id)?;
        let kept = std::iter::once((record.generation, record.value_mac.clone())).chain(
            record
                .history
                .iter()
                .map(|entry| (entry.generation, entry.value_mac.clone())),
        );
        let mut count = 0;
        for (generation, mac) in kept {
            let value = self.read_value(&record, generation, &mac)?;
            self.write_value(id, generation, &value)?;
            count += 1;
        }
        Ok(count)
    }
}
