//! Sealed secrets: ciphertext under an AEAD key kept in a [`Boojum`],
//! opened into a guarded buffer only for the scope of one use.
//!
//! Threat addressed: a long-lived secret (an HMAC key, a client secret,
//! a cached value) read out of memory. At rest in the process it is only
//! ciphertext; what decrypts it is split in the Boojum, and the plaintext
//! exists in a guarded buffer only inside [`Sealed::with`].

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rand::rngs::OsRng;

use crate::boojum::{Boojum, KEY_LEN};
use crate::guarded::{AllocError, GuardedBuf};

/// The key every sealed secret of a process is sealed under.
#[derive(Clone)]
pub struct SealingKey(Arc<Boojum>);

impl SealingKey {
    /// A fresh random key, held in a Boojum.
    pub fn generate() -> Result<Self, AllocError> {
        let mut key = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut key);
        let boojum = Boojum::new(&key);
        key.fill(0);
        std::hint::black_box(&key);
        Ok(Self(Arc::new(boojum?)))
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey").finish_non_exhaustive()
    }
}

/// One secret, sealed.
pub struct Sealed {
    key: SealingKey,
    nonce: [u8; 24],
    ciphertext: Vec<u8>,
    /// Where the plaintext is opened for each use, wiped after it.
    scratch: Mutex<GuardedBuf>,
}

impl Sealed {
    /// Seals `plaintext` under `key`.
    pub fn new(key: &SealingKey, plaintext: &[u8]) -> Result<Self, AllocError> {
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = key
            .0
            .with_key(|k| {
                XChaCha20Poly1305::new(k.into()).encrypt(XNonce::from_slice(&nonce), plaintext)
            })?
            .map_err(|_| AllocError)?;
        let scratch = Mutex::new(GuardedBuf::zeroed(plaintext.len())?);
        Ok(Self {
            key: key.clone(),
            nonce,
            ciphertext,
            scratch,
        })
    }

    /// The plaintext's length.
    pub fn len(&self) -> usize {
        self.ciphertext.len() - 16
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens the secret into a guarded buffer for the duration of `use_it`.
    pub fn with<R>(&self, use_it: impl FnOnce(&[u8]) -> R) -> Result<R, AllocError> {
        let scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        let (sealed, tag) = self.ciphertext.split_at(self.len());
        scratch.with_mut(|out| {
            out.copy_from_slice(sealed);
            let opened = self.key.0.with_key(|k| {
                let tag = chacha20poly1305::Tag::from_slice(tag);
                XChaCha20Poly1305::new(k.into()).decrypt_in_place_detached(
                    XNonce::from_slice(&self.nonce),
                    b"",
                    out,
                    tag,
                )
            });
            let result = match opened {
                Ok(Ok(())) => Ok(use_it(out)),
                _ => Err(AllocError),
            };
            out.fill(0);
            result
        })
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_plaintext_at_rest() {
        let key = SealingKey::generate().unwrap();
        let sealed = Sealed::new(&key, b"a long-lived secret").unwrap();
        assert_eq!(sealed.len(), 19);
        assert_eq!(sealed.with(<[u8]>::to_vec).unwrap(), b"a long-lived secret");
        let needle = b"long-lived";
        assert!(
            !sealed
                .ciphertext
                .windows(needle.len())
                .any(|window| window == needle)
        );
        assert_eq!(format!("{sealed:?}"), "Sealed { len: 19, .. }");
    }

    #[test]
    fn concurrent_opens() {
        let key = SealingKey::generate().unwrap();
        let sealed = Arc::new(Sealed::new(&key, &[9u8; 64]).unwrap());
        let users: Vec<_> = (0..8)
            .map(|_| {
                let sealed = sealed.clone();
                std::thread::spawn(move || {
                    (0..200).all(|_| sealed.with(|bytes| bytes == [9u8; 64]).unwrap())
                })
            })
            .collect();
        assert!(users.into_iter().all(|user| user.join().unwrap()));
    }
}
