//! credfs: a read-only FUSE filesystem in which each configured secret
//! appears as a short-lived file.
//!
//! The filesystem takes its values from a [`SecretSource`], so that it can
//! be tested alone and so that it never depends on a particular client.
//! Not yet here: the filesystem itself; this crate so far only fixes the
//! boundary between the mount and the client that feeds it.

use std::fmt;
use std::time::Instant;

/// Gives the bytes of one secret by its id.
pub trait SecretSource: Send + Sync {
    /// Fetches the value of `id`, giving up with [`FetchError::Timeout`]
    /// once `deadline` has passed rather than blocking a reader forever.
    fn fetch(&self, id: &str, deadline: Instant) -> Result<Vec<u8>, FetchError>;
}

/// Why a fetch failed; none of these carries the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The store refused: wrong or revoked credentials, or an unknown item.
    Denied,
    /// The store is locked.
    Locked,
    /// The store could not be reached in time.
    Timeout,
    /// Anything else, described for the log.
    Failed(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied => f.write_str("the store refused the request"),
            Self::Locked => f.write_str("the store is locked"),
            Self::Timeout => f.write_str("the store did not answer in time"),
            Self::Failed(why) => write!(f, "fetching the secret failed: {why}"),
        }
    }
}

impl std::error::Error for FetchError {}
