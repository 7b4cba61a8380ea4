//! Hardened memory for secrets that live longer than one call, and the
//! process hardening that goes with it.
//!
//! - [`GuardedBuf`]: guard pages, canary, mlock, no access while closed.
//! - [`Boojum`]: a 32-byte key split in two re-randomised partitions.
//! - [`Sealed`]: a secret encrypted under a Boojum-held key.
//! - [`LockedBytes`]: guarded, mlocked, read-only bytes for short-lived
//!   secrets handed through `&[u8]` APIs.
//! - [`harden_process`]: no core dumps, no ptrace attach, a report on
//!   how much memory can be locked.

mod boojum;
mod guarded;
mod hardening;
mod locked;
mod sealed;

pub use boojum::{Boojum, KEY_LEN, REKEY_INTERVAL};
pub use guarded::{AllocError, GuardedBuf};
pub use hardening::{Hardening, harden_process};
pub use locked::LockedBytes;
pub use sealed::{Sealed, SealingKey};
