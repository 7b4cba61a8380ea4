//! The wire protocol between `cred` and `credstore`.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! payload; the payload is a 2-byte big-endian protocol version and a
//! postcard-encoded [`Request`] or [`Response`]. The length is checked
//! against [`MAX_FRAME_LEN`] before anything is allocated. Frame buffers
//! are zeroed when dropped, since requests and responses carry secrets.

use std::io::{self, Read, Write};
use std::net::IpAddr;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::secret::SecretBytes;

/// The ALPN protocol name; a TLS peer that does not offer it is refused.
pub const ALPN: &[u8] = b"borg-collective/1";
/// The version every payload starts with.
pub const PROTOCOL_VERSION: u16 = 1;
/// The largest payload either side accepts: a value at its 1 MiB limit
/// plus ample room for the rest of the message.
pub const MAX_FRAME_LEN: usize = 2 * 1024 * 1024;

const HEADER_LEN: usize = 4;
const VERSION_LEN: usize = 2;

/// One request: who is asking and what for.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub auth: Auth,
    pub operation: Operation,
}

/// The credentials a request carries.
#[derive(Debug, Serialize, Deserialize)]
pub enum Auth {
    None,
    Admin { passphrase: SecretBytes },
    Client { id: Uuid, secret: SecretBytes },
}

impl Auth {
    /// The same credentials for another request, copied into new locked
    /// memory (secrets are never cloned implicitly).
    pub fn duplicate(&self) -> Self {
        match self {
            Self::None => Self::None,
            Self::Admin { passphrase } => Self::Admin {
                passphrase: SecretBytes::copy_from(passphrase.expose()),
            },
            Self::Client { id, secret } => Self::Client {
                id: *id,
                secret: SecretBytes::copy_from(secret.expose()),
            },
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Operation {
    /// Version, lock state and mode; needs no credentials.
    Info,
    /// Unlocks the vault, or initialises an empty one with this passphrase.
    Unlock {
        passphrase: SecretBytes,
    },
    Lock,
    /// Only checks the request's credentials.
    CheckAuth,
    ItemCreate {
        description: String,
        value: SecretBytes,
    },
    ItemUpdate {
        id: Uuid,
        value: SecretBytes,
    },
    ItemList {
        search: Option<String>,
    },
    ItemRead {
        id: Uuid,
    },
    /// A previous value from an item's history; admin only.
    ItemReadGeneration {
        id: Uuid,
        generation: u64,
    },
    ItemDelete {
        ids: Vec<Uuid>,
    },
    /// Sets the recovery recipient and re-encrypts every value to it.
    SetRecoveryRecipient {
        recipient: String,
    },
    /// Clears an item's binding to its first reader's address; admin only.
    ItemUnbind {
        id: Uuid,
    },
    ClientCreate {
        description: String,
        grants: Vec<Uuid>,
    },
    /// Lets a client read more items.
    ClientGrant {
        id: Uuid,
        items: Vec<Uuid>,
    },
    /// Stops a client from reading items.
    ClientRevoke {
        id: Uuid,
        items: Vec<Uuid>,
    },
    ClientList,
    ClientDelete {
        ids: Vec<Uuid>,
    },
}

impl Operation {
    /// A name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Unlock { .. } => "unlock",
            Self::Lock => "lock",
            Self::CheckAuth => "check-auth",
            Self::ItemCreate { .. } => "item-create",
            Self::ItemUpdate { .. } => "item-update",
            Self::ItemList { .. } => "item-list",
            Self::ItemRead { .. } => "item-read",
            Self::ItemReadGeneration { .. } => "item-read-generation",
            Self::ItemUnbind { .. } => "item-unbind",
            Self::SetRecoveryRecipient { .. } => "set-recovery-recipient",
            Self::ItemDelete { .. } => "item-delete",
            Self::ClientCreate { .. } => "client-create",
            Self::ClientGrant { .. } => "client-grant",
            Self::ClientRevoke { .. } => "client-revoke",
            Self::ClientList => "client-list",
            Self::ClientDelete { .. } => "client-delete",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Info(StoreInfo),
    Done,
    Unlocked {
        initialised: bool,
    },
    ItemCreated {
        id: Uuid,
    },
    ItemUpdated {
        generation: u64,
    },
    Items {
        items: Vec<ItemSummary>,
        damaged: Vec<String>,
    },
    Value {
        value: SecretBytes,
    },
    ClientCreated {
        id: Uuid,
        secret: SecretBytes,
    },
    Clients {
        clients: Vec<ClientSummary>,
        damaged: Vec<String>,
    },
    /// How many value files were re-encrypted.
    Reencrypted {
        values: u64,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

impl Response {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Error {
            kind,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    pub version: String,
    pub locked: bool,
    pub initialised: bool,
    pub production: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemSummary {
    pub id: Uuid,
    pub description: String,
    pub created: u64,
    pub updated: u64,
    pub generation: u64,
    pub bound_peer: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSummary {
    pub id: Uuid,
    pub description: String,
    pub created: u64,
    /// The items the client may read.
    pub grants: Vec<Uuid>,
}

/// The kinds of failure a response reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    Locked,
    /// Wrong credentials, or a client asking for what it may not know of.
    Unauthorized,
    NotFound,
    PeerMismatch,
    BadRequest,
    Integrity,
    Internal,
}

/// What can go wrong with a frame.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    TooLarge { len: usize },
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    #[error("protocol version {0} is not supported; this build speaks {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("the message could not be decoded")]
    Malformed,
    #[error("the message could not be encoded")]
    Unencodable,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A key both ends take from the TLS session (the RFC 5705 exporter),
/// under which every payload body is sealed a second time.
///
/// The TLS library decrypts records in buffers it never zeroes, so a
/// passphrase or value would linger there after use. Sealed bodies mean
/// those buffers only ever hold ciphertext; the plaintext exists only in
/// this module's zeroed buffers. Plain TCP (development mode) has no
/// session to take a key from and sends bodies unsealed.
pub struct FrameSeal(Zeroizing<[u8; 32]>);

/// The exporter label both ends use.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-borg-collective-frame-seal";

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

impl FrameSeal {
    /// Takes the key from a TLS connection's keying-material exporter.
    pub fn from_tls<Data>(connection: &rustls::ConnectionCommon<Data>) -> Result<Self, FrameError> {
        let mut key = Zeroizing::new([0u8; 32]);
        connection
            .export_keying_material(&mut key[..], EXPORTER_LABEL, None)
            .map_err(|_| FrameError::Unencodable)?;
        Ok(Self(key))
    }

    /// A seal under a given key, for the fuzz targets, which have no TLS
    /// session to take one from.
    #[cfg(fuzzing)]
    pub fn from_key(key: [u8; 32]) -> Self {
        Self(Zeroizing::new(key))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(self.0.as_ref()))
    }
}

impl std::fmt::Debug for FrameSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameSeal")
    }
}

/// Encodes `message` as one complete frame, header included, sealing the
/// body when a `seal` is given.
pub fn encode_frame<T: Serialize>(
    message: &T,
    seal: Option<&FrameSeal>,
) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    // Sizing the buffer first means it never reallocates, which would
    // leave an unzeroed copy of the secrets in freed memory.
    let body_len = postcard::to_extend(message, ByteCounter(0))
        .map_err(|_| FrameError::Unencodable)?
        .0;
    let overhead = if seal.is_some() {
        NONCE_LEN + TAG_LEN
    } else {
        0
    };
    let mut frame = Zeroizing::new(Vec::with_capacity(
        HEADER_LEN + VERSION_LEN + overhead + body_len,
    ));
    frame.extend_from_slice(&[0; HEADER_LEN]);
    frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    let mut nonce = [0u8; NONCE_LEN];
    if seal.is_some() {
        OsRng.fill_bytes(&mut nonce);
        frame.extend_from_slice(&nonce);
    }
    let body_start = frame.len();
    *frame = postcard::to_extend(message, std::mem::take(&mut *frame))
        .map_err(|_| FrameError::Unencodable)?;

    if let Some(seal) = seal {
        let aad = PROTOCOL_VERSION.to_be_bytes();
        let tag = seal
            .cipher()
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, &mut frame[body_start..])
            .map_err(|_| FrameError::Unencodable)?;
        frame.extend_from_slice(&tag);
    }

    let len = frame.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    frame[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// Counts the bytes an encoding would produce.
struct ByteCounter(usize);

impl Extend<u8> for ByteCounter {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0 += bytes.into_iter().count();
    }
}

/// Reads a frame header and checks the length it announces.
pub fn payload_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    Ok(len)
}

/// Decodes a payload after checking its protocol version, opening a
/// sealed body in place when a `seal` is given.
pub fn decode_payload<T: DeserializeOwned>(
    payload: &mut [u8],
    seal: Option<&FrameSeal>,
) -> Result<T, FrameError> {
    let (version, body) = payload
        .split_at_mut_checked(VERSION_LEN)
        .ok_or(FrameError::Malformed)?;
    let version = u16::from_be_bytes([version[0], version[1]]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    let Some(seal) = seal else {
        return postcard::from_bytes(body).map_err(|_| FrameError::Malformed);
    };

    if body.len() < NONCE_LEN + TAG_LEN {
        return Err(FrameError::Malformed);
    }
    let (nonce, rest) = body.split_at_mut(NONCE_LEN);
    let (sealed, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    seal.cipher()
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &version.to_be_bytes(),
            sealed,
            chacha20poly1305::Tag::from_slice(tag),
        )
        .map_err(|_| FrameError::Malformed)?;
    postcard::from_bytes(sealed).map_err(|_| FrameError::Malformed)
}

/// Reads one payload from a blocking stream.
pub fn read_payload(reader: &mut impl Read) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header).map_err(eof_is_truncation)?;
    let mut payload = Zeroizing::new(vec![0u8; payload_len(header)?]);
    reader.read_exact(&mut payload).map_err(eof_is_truncation)?;
    Ok(payload)
}

/// Writes one message to a blocking stream.
pub fn write_message<T: Serialize>(
    writer: &mut impl Write,
    message: &T,
    seal: Option<&FrameSeal>,
) -> Result<(), FrameError> {
    let frame = encode_frame(message, seal)?;
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}

pub fn eof_is_truncation(err: io::Error) -> FrameError {
    if err.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal() -> FrameSeal {
        FrameSeal(Zeroizing::new([7u8; 32]))
    }

    fn round_trip(request: &Request, seal: Option<&FrameSeal>) -> Request {
        let frame = encode_frame(request, seal).unwrap();
        let mut payload = read_payload(&mut &frame[..]).unwrap();
        decode_payload(&mut payload, seal).unwrap()
    }

    #[test]
    fn request_round_trip() {
        let id = Uuid::new_v4();
        let request = Request {
            auth: Auth::Client {
                id,
                secret: SecretBytes::copy_from(b"s"),
            },
            operation: Operation::ItemRead { id },
        };
        for seal in [None, Some(&seal())] {
            let back = round_trip(&request, seal);
            assert!(matches!(back.operation, Operation::ItemRead { id: read } if read == id));
            assert!(matches!(back.auth, Auth::Client { secret, .. } if secret.expose() == b"s"));
        }
    }

    #[test]
    fn sealed_frames_hide_secrets_and_refuse_tampering() {
        let request = Request {
            auth: Auth::Admin {
                passphrase: SecretBytes::copy_from(b"visible-if-unsealed"),
            },
            operation: Operation::Lock,
        };
        let frame = encode_frame(&request, Some(&seal())).unwrap();
        let needle = b"visible-if-unsealed";
        assert!(!frame.windows(needle.len()).any(|window| window == needle));
        let plain = encode_frame(&request, None).unwrap();
        assert!(plain.windows(needle.len()).any(|window| window == needle));

        let mut tampered = frame.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let mut payload = read_payload(&mut &tampered[..]).unwrap();
        assert!(decode_payload::<Request>(&mut payload, Some(&seal())).is_err());
        let other = FrameSeal(Zeroizing::new([8u8; 32]));
        let mut payload = read_payload(&mut &frame[..]).unwrap();
        assert!(decode_payload::<Request>(&mut payload, Some(&other)).is_err());
    }

    #[test]
    fn oversized_header_is_refused_before_allocating() {
        let header = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        assert!(matches!(
            payload_len(header),
            Err(FrameError::TooLarge { .. })
        ));
        let mut stream = &[0xff, 0xff, 0xff, 0xff, 0][..];
        assert!(matches!(
            read_payload(&mut stream),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn truncated_frame_is_reported() {
        let frame = encode_frame(&Response::Done, None).unwrap();
        let mut short = &frame[..frame.len() - 1];
        assert!(matches!(
            read_payload(&mut short),
            Err(FrameError::Truncated)
        ));
        let mut header_only = &frame[..2];
        assert!(matches!(
            read_payload(&mut header_only),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn other_version_is_refused() {
        let mut frame = encode_frame(&Response::Done, None).unwrap();
        frame[HEADER_LEN + 1] = 9;
        let mut payload = read_payload(&mut &frame[..]).unwrap();
        assert!(matches!(
            decode_payload::<Response>(&mut payload, None),
            Err(FrameError::Version(9))
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for garbage in [
            &[][..],
            &[0],
            &[0, 1],
            &[0, 1, 0xff, 0xff, 0xff],
            &[0, 1, 200, 3, 4],
        ] {
            let mut garbage = garbage.to_vec();
            assert!(decode_payload::<Request>(&mut garbage, None).is_err());
            assert!(decode_payload::<Request>(&mut garbage, Some(&seal())).is_err());
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let request = Request {
            auth: Auth::Admin {
                passphrase: SecretBytes::copy_from(b"topsecret"),
            },
            operation: Operation::ItemCreate {
                description: "d".into(),
                value: SecretBytes::copy_from(b"hidden-value"),
            },
        };
        let debug = format!("{request:?}");
        assert!(
            !debug.contains("topsecret") && !debug.contains("hidden-value"),
            "{debug}"
        );
    }
}
