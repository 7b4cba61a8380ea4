//! The vault's keys: the master key derived from the passphrase, the age
//! identity it seals, and the HMAC keys derived from that identity.
//!
//! The KDF parameters are fixed constants rather than calibrated on the
//! machine that creates a vault, so that a vault made on a fast host still
//! unlocks on a small one in a known time and memory. They are stored with
//! the sealed identity, so a later release can raise them for new vaults
//! without breaking old ones.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use protect::{AllocError, Boojum, GuardedBuf, Sealed, SealingKey};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::VaultError;
use crate::secret::SecretBytes;

/// Memory cost of the master-key KDF, in KiB (64 MiB).
pub const KDF_MEMORY_KIB: u32 = 64 * 1024;
/// Passes over that memory.
pub const KDF_ITERATIONS: u32 = 3;
/// Lanes; one keeps the cost the same on a single-core host.
pub const KDF_PARALLELISM: u32 = 1;

/// The most a stored parameter set may ask for (four times today's
/// memory, eight passes), so that an edited identity file cannot make an
/// unlock exhaust the host, while a later release can still raise them.
const KDF_MEMORY_KIB_LIMIT: u32 = 4 * KDF_MEMORY_KIB;
const KDF_ITERATIONS_LIMIT: u32 = 8;

pub type HmacSha256 = Hmac<Sha256>;

/// A 32-byte key, zeroed on drop.
pub type Key = Zeroizing<[u8; 32]>;

/// How the master key was derived from the passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    pub algorithm: String,
    pub version: u32,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: String,
}

/// The memory (KiB) and passes of a new vault's key derivation. Fuzzing
/// builds, and only they, use the least argon2 allows, so that a fuzz
/// target can unlock a vault hundreds of times a second.
#[cfg(not(fuzzing))]
const FRESH_COSTS: (u32, u32) = (KDF_MEMORY_KIB, KDF_ITERATIONS);
#[cfg(fuzzing)]
const FRESH_COSTS: (u32, u32) = (8 * KDF_PARALLELISM, 1);

impl KdfParams {
    fn fresh() -> Self {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        Self {
            algorithm: "argon2id".into(),
            version: 0x13,
            memory_kib: FRESH_COSTS.0,
            iterations: FRESH_COSTS.1,
            parallelism: KDF_PARALLELISM,
            salt: BASE64.encode(salt),
        }
    }

    /// Runs the KDF, refusing parameters outside the supported bounds.
    pub fn derive(&self, passphrase: &SecretBytes) -> Result<Key, VaultError> {
        let damaged = |why: &str| VaultError::integrity("the identity file", why);
        if self.algorithm != "argon2id" || self.version != 0x13 {
            return Err(damaged("it names an unsupported key derivation"));
        }
        if self.memory_kib > KDF_MEMORY_KIB_LIMIT || self.iterations > KDF_ITERATIONS_LIMIT {
            return Err(damaged(
                "its key derivation cost exceeds the supported bounds",
            ));
        }
        let salt = BASE64
            .decode(&self.salt)
            .map_err(|_| damaged("its salt is not base64"))?;
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|_| damaged("its key derivation parameters are invalid"))?;

        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.expose(), &salt, key.as_mut())
            .map_err(|_| damaged("its salt has an invalid length"))?;
        Ok(key)
    }
}

/// The age identity encrypted under the master key, as stored on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedIdentity {
    pub kdf: KdfParams,
    pub nonce: String,
    pub ciphertext: String,
}

/// The identity file: the sealed identity and a plain checksum of it.
///
/// The checksum is not a defence (anyone can recompute it); it tells a
/// damaged file apart from a wrong passphrase, which the AEAD alone cannot.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    sealed: SealedIdentity,
    checksum: String,
}

impl SealedIdentity {
    /// Generates a new identity and seals it under a key from `passphrase`.
    pub fn create(passphrase: &SecretBytes) -> Result<(Self, Key), VaultError> {
        let kdf = KdfParams::fresh();
        let master = kdf.derive(passphrase)?;
        let identity = age::x25519::Identity::generate();
        let plain = Zeroizing::new(
            age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_owned(),
        );

        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let aad = serde_json::to_vec(&kdf).expect("kdf parameters serialise");
        let ciphertext = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(master.as_ref()))
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Internal("sealing the identity failed".into()))?;

        let sealed = Self {
            kdf,
            nonce: BASE64.encode(nonce),
            ciphertext: BASE64.encode(ciphertext),
        };
        Ok((sealed, master))
    }

    /// Decrypts the identity with the master key, for one operation.
    pub fn open(&self, master: &[u8; 32]) -> Result<age::x25519::Identity, VaultError> {
        let damaged = |why: &str| VaultError::integrity("the identity file", why);
        let nonce = BASE64
            .decode(&self.nonce)
            .map_err(|_| damaged("its nonce is not base64"))?;
        if nonce.len() != 24 {
            return Err(damaged("its nonce has the wrong length"));
        }
        let ciphertext = BASE64
            .decode(&self.ciphertext)
            .map_err(|_| damaged("its ciphertext is not base64"))?;
        let aad = serde_json::to_vec(&self.kdf).expect("kdf parameters serialise");

        if ciphertext.len() < 16 {
            return Err(damaged("its ciphertext is too short"));
        }

        // Decrypted in place inside guarded memory, for this one use.
        let (sealed, tag) = ciphertext.split_at(ciphertext.len() - 16);
        let plain = GuardedBuf::copy_from(sealed).map_err(out_of_memory)?;
        let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(master.as_ref()));
        plain
            .with_mut(|buffer| {
                let tag = chacha20poly1305::Tag::from_slice(tag);
                cipher.decrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, buffer, tag)
            })
            .map_err(|_| VaultError::WrongPassphrase)?;
        plain.with(|bytes| {
            let text =
                std::str::from_utf8(bytes).map_err(|_| damaged("its identity is not text"))?;
            text.parse()
                .map_err(|_| damaged("its identity does not parse"))
        })
    }

    pub fn to_file_bytes(&self) -> Vec<u8> {
        let file = IdentityFile {
            sealed: self.clone(),
            checksum: checksum(self),
        };
        serde_json::to_vec_pretty(&file).expect("identity file serialises")
    }

    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        let file: IdentityFile = serde_json::from_slice(bytes)
            .map_err(|_| VaultError::integrity("the identity file", "it does not parse"))?;
        if file.checksum != checksum(&file.sealed) {
            return Err(VaultError::integrity(
                "the identity file",
                "its checksum does not match",
            ));
        }
        Ok(file.sealed)
    }
}

fn checksum(sealed: &SealedIdentity) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(sealed).expect("identity serialises"),
    ))
}

/// The keys that authenticate records, all derived from the identity so
/// that whoever can decrypt the values can also check their metadata.
/// Each is kept sealed and opened into guarded memory for one use.
pub struct RecordKeys {
    /// Tags item and client metadata records and the manifest.
    metadata: Sealed,
    /// Keys the checksum of each value.
    value: Sealed,
    /// Keys the stored hash of each client secret.
    client: Sealed,
}

impl RecordKeys {
    pub fn derive(
        identity: &age::x25519::Identity,
        sealing: &SealingKey,
    ) -> Result<Self, VaultError> {
        let text = identity.to_string();
        let ikm = age::secrecy::ExposeSecret::expose_secret(&text).as_bytes();
        let hkdf = Hkdf::<Sha256>::new(Some(b"borg-collective record keys v1"), ikm);
        let expand = |info: &[u8]| {
            let mut key = Zeroizing::new([0u8; 32]);
            hkdf.expand(info, key.as_mut())
                .expect("32 bytes is a valid HKDF length");
            Sealed::new(sealing, key.as_ref()).map_err(out_of_memory)
        };
        Ok(Self {
            metadata: expand(b"metadata")?,
            value: expand(b"value")?,
            client: expand(b"client")?,
        })
    }

    pub fn metadata<R>(&self, use_key: impl FnOnce(&[u8; 32]) -> R) -> Result<R, VaultError> {
        with_sealed_key(&self.metadata, use_key)
    }

    pub fn value<R>(&self, use_key: impl FnOnce(&[u8; 32]) -> R) -> Result<R, VaultError> {
        with_sealed_key(&self.value, use_key)
    }

    pub fn client<R>(&self, use_key: impl FnOnce(&[u8; 32]) -> R) -> Result<R, VaultError> {
        with_sealed_key(&self.client, use_key)
    }
}

/// Opens a sealed 32-byte key for the duration of `use_key`.
pub fn with_sealed_key<R>(
    sealed: &Sealed,
    use_key: impl FnOnce(&[u8; 32]) -> R,
) -> Result<R, VaultError> {
    sealed
        .with(|bytes| bytes.try_into().map(use_key))
        .map_err(out_of_memory)?
        .map_err(|_| VaultError::Internal("a sealed key has the wrong length".into()))
}

/// The master key, split in a Boojum while the vault is unlocked.
pub struct MasterKey(Boojum);

impl MasterKey {
    pub fn new(key: &Key) -> Result<Self, VaultError> {
        Boojum::new(key).map(Self).map_err(out_of_memory)
    }

    pub fn with<R>(&self, use_key: impl FnOnce(&[u8; 32]) -> R) -> Result<R, VaultError> {
        self.0.with_key(use_key).map_err(out_of_memory)
    }
}

pub fn out_of_memory(err: AllocError) -> VaultError {
    VaultError::Internal(err.to_string())
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
pub fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    hmac_of(key, parts).finalize().into_bytes().into()
}

/// Checks a hex-encoded tag against the HMAC of `parts` in constant time.
pub fn verify_mac(key: &[u8; 32], parts: &[&[u8]], tag_hex: &str) -> bool {
    hex::decode(tag_hex).is_ok_and(|tag| hmac_of(key, parts).verify_slice(&tag).is_ok())
}

fn hmac_of(key: &[u8; 32], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key.as_ref()).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// A fresh random 32-byte key.
pub fn random_key() -> Key {
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut());
    key
}
