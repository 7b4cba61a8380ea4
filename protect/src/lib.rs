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

/// Overwrites the stack below the caller with zeros.
///
/// Hash and cipher implementations keep their working state on the stack
/// and do not clear it, so bytes of a passphrase an HMAC or the KDF has
/// just read linger there until something else happens to overwrite
/// them. Calling this after a secret-handling call, from the same frame,
/// overwrites what that call left.
pub fn scrub_stack() {
    scrub::<{ 64 * 1024 }>();
}

#[inline(never)]
fn scrub<const N: usize>() {
    let mut area = [0u8; N];
    // Volatile writes cannot be optimised away.
    for byte in area.iter_mut() {
        // SAFETY: a valid, aligned, exclusive reference to a local.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
    std::hint::black_box(&area);
}
