//! The wire protocol between `cred` and `credstore`.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! payload; the payload is a 2-byte big-endian protocol version and a
//! postcard-encoded [`Request`] or [`Response`]. The length is checked
//! against [`MAX_FRAME_LEN`] before anything is allocated. Frame buffers
//! are zeroed when dropped, since requests and responses carry secrets.

use std::io::{self, Read, Write};
use std::net::IpAddr;

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
    ClientCreate {
        description: String,
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
            Self::ItemDelete { .. } => "item-delete",
            Self::ClientCreate { .. } => "client-create",
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

/// Encodes `message` as one complete frame, header included.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    // Sizing the buffer first means it never reallocates, which would
    // leave an unzeroed copy of the secrets in freed memory.
    let body_len = postcard::to_extend(message, ByteCounter(0))
        .map_err(|_| FrameError::Unencodable)?
        .0;
    let mut frame = Zeroizing::new(Vec::with_capacity(HEADER_LEN + VERSION_LEN + body_len));
    frame.extend_from_slice(&[0; HEADER_LEN]);
    frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    *frame = postcard::to_extend(message, std::mem::take(&mut *frame))
        .map_err(|_| FrameError::Unencodable)?;

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

/// Decodes a payload after checking its protocol version.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (version, body) = payload
        .split_at_checked(VERSION_LEN)
        .ok_or(FrameError::Malformed)?;
    let version = u16::from_be_bytes([version[0], version[1]]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    postcard::from_bytes(body).map_err(|_| FrameError::Malformed)
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
pub fn write_message<T: Serialize>(writer: &mut impl Write, message: &T) -> Result<(), FrameError> {
    let frame = encode_frame(message)?;
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

    fn round_trip(request: &Request) -> Request {
        let frame = encode_frame(request).unwrap();
        let payload = read_payload(&mut &frame[..]).unwrap();
        decode_payload(&payload).unwrap()
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
        let back = round_trip(&request);
        assert!(matches!(back.operation, Operation::ItemRead { id: read } if read == id));
        assert!(matches!(back.auth, Auth::Client { secret, .. } if secret.expose() == b"s"));
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
        let frame = encode_frame(&Response::Done).unwrap();
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
        let mut frame = encode_frame(&Response::Done).unwrap();
        frame[HEADER_LEN + 1] = 9;
        let payload = read_payload(&mut &frame[..]).unwrap();
        assert!(matches!(
            decode_payload::<Response>(&payload),
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
            assert!(decode_payload::<Request>(garbage).is_err());
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
