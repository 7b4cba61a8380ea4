//! Byte strings that hold secrets: passphrases, client secrets, item values.
//!
//! They zero their memory when dropped and print as `[redacted]`, so that a
//! secret cannot reach a log line, an error message or a panic through
//! `Debug`. The only way to the bytes is an explicit call to
//! [`SecretBytes::expose`].

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// A secret byte string, zeroed on drop and redacted in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; the caller's vector becomes the secret.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// The secret bytes themselves; keep the borrow short.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes, still zeroed on drop, for APIs that take a vector.
    pub fn into_zeroizing(self) -> Zeroizing<Vec<u8>> {
        self.0
    }

    /// Compares with `other` in time that depends only on the lengths.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        bool::from(self.0.as_slice().ct_eq(other))
    }

    /// Drops one trailing line ending, as left by `echo` or an editor in a
    /// passphrase file.
    pub fn trim_line_ending(mut self) -> Self {
        for ending in [&b"\r\n"[..], b"\n"] {
            if self.0.ends_with(ending) {
                let keep = self.0.len() - ending.len();
                self.0[keep..].zeroize();
                self.0.truncate(keep);
                break;
            }
        }
        self
    }
}

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

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
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
        let capacity = seq.size_hint().unwrap_or(0).min(1 << 20);
        let mut secret = SecretBytes::new(Vec::with_capacity(capacity));
        while let Some(byte) = seq.next_element()? {
            secret.0.push(byte);
        }
        Ok(secret)
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
