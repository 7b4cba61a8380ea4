//! Metadata records of items and clients, and the HMAC tag that binds each
//! record to its contents and to the id in its file name.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::VaultError;
use super::keys::{mac, verify_mac};

/// The metadata of one item; its value lives in a separate age file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemRecord {
    pub id: Uuid,
    pub description: String,
    /// Unix seconds.
    pub created: u64,
    pub updated: u64,
    /// Which value file is current; each update writes generation + 1.
    pub generation: u64,
    /// Keyed checksum of the current value (see `value_mac`).
    pub value_mac: String,
    /// The address of the first client that read the item, once bound.
    pub bound_peer: Option<IpAddr>,
    /// Counts every write of this record; the manifest holds the latest,
    /// so an older copy put back is refused even when only its binding
    /// differs.
    pub revision: u64,
    /// Previous values, newest first, bounded in length.
    pub history: Vec<HistoryEntry>,
}

/// One previous value of an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    pub generation: u64,
    pub updated: u64,
    pub value_mac: String,
}

/// A client credential; only a keyed hash of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRecord {
    pub id: Uuid,
    pub description: String,
    pub created: u64,
    pub secret_mac: String,
    /// The items this client may read; none until granted.
    #[serde(default)]
    pub grants: BTreeSet<Uuid>,
    /// Counts every write of this record, as for items.
    pub revision: u64,
}

/// A record as stored: the record and its tag.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Signed<T> {
    record: T,
    tag: String,
}

/// What a record needs to be signed and checked.
pub trait Record: Serialize + DeserializeOwned {
    /// Separates the tags of different record kinds.
    const DOMAIN: &'static [u8];
    /// Names the kind in errors.
    const KIND: &'static str;

    fn id(&self) -> Uuid;
}

impl Record for ItemRecord {
    const DOMAIN: &'static [u8] = b"borg-collective item record v1\0";
    const KIND: &'static str = "item";

    fn id(&self) -> Uuid {
        self.id
    }
}

impl Record for ClientRecord {
    const DOMAIN: &'static [u8] = b"borg-collective client record v1\0";
    const KIND: &'static str = "client";

    fn id(&self) -> Uuid {
        self.id
    }
}

/// Serialises `record` with its tag under `key`.
pub fn seal<T: Record>(record: &T, key: &[u8; 32]) -> Vec<u8> {
    let body = serde_json::to_vec(record).expect("records serialise");
    let tag = hex::encode(mac(key, &[T::DOMAIN, &body]));
    let signed = Signed { record, tag };
    serde_json::to_vec_pretty(&signed).expect("records serialise")
}

/// Parses a stored record, checking its tag and that it belongs to the
/// file it was read from (`expected`).
pub fn open<T: Record>(bytes: &[u8], key: &[u8; 32], expected: Uuid) -> Result<T, VaultError> {
    let what = || format!("{} record {expected}", T::KIND);
    let signed: Signed<T> = serde_json::from_slice(bytes)
        .map_err(|_| VaultError::integrity(what(), "it does not parse"))?;

    let body = serde_json::to_vec(&signed.record).expect("records serialise");
    if !verify_mac(key, &[T::DOMAIN, &body], &signed.tag) {
        return Err(VaultError::integrity(what(), "its tag does not match"));
    }
    if signed.record.id() != expected {
        return Err(VaultError::integrity(
            what(),
            format!("it holds the record of {} {}", T::KIND, signed.record.id()),
        ));
    }
    Ok(signed.record)
}

/// The keyed checksum of one generation of an item's value.
pub fn value_mac(key: &[u8; 32], id: Uuid, generation: u64, value: &[u8]) -> String {
    let parts: [&[u8]; 4] = [
        b"borg-collective value v1\0",
        id.as_bytes(),
        &generation.to_be_bytes(),
        value,
    ];
    hex::encode(mac(key, &parts))
}

/// The keyed hash under which a client secret is stored.
pub fn client_secret_mac(key: &[u8; 32], id: Uuid, secret: &[u8]) -> String {
    hex::encode(mac(
        key,
        &[b"borg-collective client secret v1\0", id.as_bytes(), secret],
    ))
}
