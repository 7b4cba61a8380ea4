//! The manifest: which items (at which generation) and which clients the
//! vault holds, under one HMAC tag.
//!
//! Each record is tagged on its own, so an old but authentic record put
//! back in place of a newer one, or the record of a deleted client, would
//! pass its own check. The manifest catches both: a record older than the
//! manifest says, or one the manifest does not list, is refused. Only a
//! rollback of the whole directory, manifest included, goes unnoticed
//! offline; that needs state kept outside the vault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::VaultError;
use super::records::{self, Record};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Each item and the revision its record was last written at.
    pub items: BTreeMap<Uuid, u64>,
    /// Each client and the revision its record was last written at.
    pub clients: BTreeMap<Uuid, u64>,
    /// The revision of the recovery recipient record; 0 while none is set.
    #[serde(default)]
    pub recovery: u64,
}

impl Record for Manifest {
    const DOMAIN: &'static [u8] = b"borg-collective manifest v1\0";
    const KIND: &'static str = "manifest";

    /// The manifest is one per vault; it carries the nil id.
    fn id(&self) -> Uuid {
        Uuid::nil()
    }
}

impl Manifest {
    pub fn seal(&self, key: &[u8; 32]) -> Vec<u8> {
        records::seal(self, key)
    }

    pub fn open(bytes: &[u8], key: &[u8; 32]) -> Result<Self, VaultError> {
        records::open(bytes, key, Uuid::nil())
    }

    /// Checks an item record's revision against the manifest.
    pub fn check_item(&self, id: Uuid, revision: u64) -> Result<(), VaultError> {
        check_revision("item", self.items.get(&id), id, revision)
    }

    /// Checks a client record's revision against the manifest.
    pub fn check_client(&self, id: Uuid, revision: u64) -> Result<(), VaultError> {
        check_revision("client", self.clients.get(&id), id, revision)
    }
}

fn check_revision(
    kind: &'static str,
    listed: Option<&u64>,
    id: Uuid,
    revision: u64,
) -> Result<(), VaultError> {
    match listed {
        None => Err(VaultError::NotFound { kind, id }),
        // Newer is fine: a crash between writing the record and the
        // manifest leaves exactly that.
        Some(listed) if revision >= *listed => Ok(()),
        Some(listed) => Err(VaultError::integrity(
            format!("{kind} record {id}"),
            format!(
                "it is revision {revision} but the manifest lists {listed}; an older record \
                 was put back"
            ),
        )),
    }
}
