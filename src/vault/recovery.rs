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
    /// Matches the manifest's, so that an older recipient put back after
    /// a rotation is refused.
    revision: u64,
}

impl Record for RecoveryRecord {
    const DOMAIN: &'static [u8] = b"borg-collective recovery recipient v1\0";
    const KIND: &'static str = "recovery recipient";

    fn id(&self) -> Uuid {
        Uuid::nil()
    }
}

impl Vault {
    /// The checked recovery recipient, if one is set. The file must be
    /// there exactly when the manifest says one was set, carry a valid tag,
    /// and be the revision the manifest names.
    pub fn recovery_recipient(&self) -> Result<Option<age::x25519::Recipient>, VaultError> {
        let keys = self.keys()?;
        let expected = keys.manifest.recovery;
        let checked = match (
            storage::read_optional(self.path(), RECOVERY_FILE)?,
            expected,
        ) {
            (None, 0) => return Ok(None),
            (None, _) => Err(VaultError::integrity(
                "the recovery recipient",
                "its file is missing; set the recipient again",
            )),
            (Some(_), 0) => Err(VaultError::integrity(
                "the recovery recipient",
                "a recipient file is there that this vault never set",
            )),
            (Some(bytes), expected) => keys
                .records
                .metadata(|key| records::open::<RecoveryRecord>(&bytes, key, Uuid::nil()))?
                .and_then(|record| {
                    if record.revision == expected {
                        Ok(record)
                    } else {
                        Err(VaultError::integrity(
                            "the recovery recipient",
                            "it is not the one last set; an older recipient was put back",
                        ))
                    }
                }),
        };
        let record = checked.inspect_err(|err| {
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
        let revision = self.keys()?.manifest.recovery + 1;
        let record = RecoveryRecord {
            recipient: recipient.to_owned(),
            revision,
        };
        let keys = self.keys()?;
        let bytes = keys.records.metadata(|key| records::seal(&record, key))?;
        storage::write_atomic(self.path(), RECOVERY_FILE, &bytes)?;
        self.update_manifest(|manifest| manifest.recovery = revision)?;
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
