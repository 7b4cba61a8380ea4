//! Byte strings that hold secrets: passphrases, client secrets, item values.
//!
//! They live in guarded, mlocked memory (guard pages, a canary, excluded
//! from core dumps and forked children), are zeroed when dropped and print
//! as `[redacted]`, so that a secret cannot reach swap, a child process, a
//! log line, an error message or a panic through `Debug`. The only way to
//! the bytes is an explicit call to [`SecretBytes::expose`].

use std::fmt;

use protect::LockedBytes;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// A secret byte string in locked memory, zeroed on drop and redacted in
/// `Debug`.
pub struct SecretBytes(Storage);

enum Storage {
    Locked(LockedBytes),
    /// Only when guarded memory cannot be had (address space exhausted):
    /// still zeroed on drop, not locked.
    Heap(Zeroizing<Vec<u8>>),
}

impl SecretBytes {
    /// Takes the bytes of `bytes` into locked memory and zeroes the vector.
    pub fn new(bytes: Vec<u8>) -> Self {
        let bytes = Zeroizing::new(bytes);
        Self::copy_from(&bytes)
    }

    /// Copies `bytes` into a new secret.
    pub fn copy_from(bytes: &[u8]) -> Self {
        match LockedBytes::copy_from(bytes) {
            Ok(locked) => Self(Storage::Locked(locked)),
            Err(_) => Self(Storage::Heap(Zeroizing::new(bytes.to_vec()))),
        }
    }

    /// The secret bytes themselves; keep the borrow short.
    pub fn expose(&self) -> &[u8] {
        match &self.0 {
            Storage::Locked(locked) => locked.as_slice(),
            Storage::Heap(bytes) => bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// A copy of the bytes, zeroed on drop, for APIs that take a vector.
    pub fn to_zeroizing(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.expose().to_vec())
    }

    /// Compares with `other` in time that depends only on the lengths.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        bool::from(self.expose().ct_eq(other))
    }

    /// Drops one trailing line ending, as left by `echo` or an editor in a
    /// passphrase file.
    pub fn trim_line_ending(self) -> Self {
        let bytes = self.expose();
        for ending in [&b"\r\n"[..], b"\n"] {
            if let Some(kept) = bytes.strip_suffix(ending) {
                return Self::copy_from(kept);
            }
        }
        self
    }
}

impl Default for SecretBytes {
    fn default() -> Self {
        Self::copy_from(&[])
    }
}

impl Clone for SecretBytes {
    fn clone(&self) -> Self {
        Self::copy_from(self.expose())
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other.expose())
    }
}

impl Eq for SecretBytes {}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for SecretBytes {
    fn from(text: String) -> Self {
        Self::new(text.into_bytes())
    }
}

impl From<Zeroizing<String>> for SecretBytes {
    fn from(mut text: Zeroizing<String>) -> Self {
        let secret = Self::copy_from(text.as_bytes());
        text.zeroize();
        secret
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.expose())
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(SecretVisitor)
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<SecretBytes, E> {
        Ok(SecretBytes::copy_from(bytes))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<SecretBytes, E> {
        Ok(SecretBytes::new(bytes))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<SecretBytes, A::Error> {
        // Sized from the hint so that pushing rarely reallocates (each
        // outgrown buffer would be left unzeroed).
        let capacity = seq.size_hint().unwrap_or(0).min(1 << 20);
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(SecretBytes::copy_from(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let secret = SecretBytes::copy_from(b"hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
    }

    #[test]
    fn trims_one_line_ending() {
        let secret = SecretBytes::copy_from(b"pass\n\n").trim_line_ending();
        assert_eq!(secret.expose(), b"pass\n");
        let secret = SecretBytes::copy_from(b"pass\r\n").trim_line_ending();
        assert_eq!(secret.expose(), b"pass");
    }

    #[test]
    fn postcard_round_trip() {
        let secret = SecretBytes::copy_from(&[0, 1, 2, 255]);
        let bytes = postcard::to_stdvec(&secret).unwrap();
        let back: SecretBytes = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.expose(), secret.expose());
    }
}
