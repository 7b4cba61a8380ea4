//! Locked bytes: a secret in guarded memory that stays readable for its
//! whole short life, for secrets that pass through APIs wanting `&[u8]`
//! (a passphrase being sent, a value being written out).
//!
//! Threats addressed are those of [`crate::GuardedBuf`] but one: the pages
//! are not closed between uses. Guard pages, canary, mlock, exclusion
//! from core dumps and forked children, and zeroing on drop all apply.

use std::fmt;
use std::ptr::NonNull;

use crate::guarded::{AllocError, wipe_on_fork};

/// A fixed-size secret in guarded, read-only memory.
pub struct LockedBytes {
    ptr: NonNull<[u8]>,
    len: usize,
}

// SAFETY: uniquely owned, and read-only after construction.
unsafe impl Send for LockedBytes {}
// SAFETY: shared access only reads.
unsafe impl Sync for LockedBytes {}

impl LockedBytes {
    /// Copies `bytes` into new locked memory.
    pub fn copy_from(bytes: &[u8]) -> Result<Self, AllocError> {
        // SAFETY: malloc_sized returns a valid allocation of `len` bytes or None.
        let ptr = unsafe { memsec::malloc_sized(bytes.len()) }.ok_or(AllocError)?;
        // SAFETY: read-write after malloc, `len` bytes, not aliased.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr().cast::<u8>(), bytes.len())
        };
        wipe_on_fork(ptr.as_ptr().cast::<u8>(), bytes.len());
        let locked = Self {
            ptr,
            len: bytes.len(),
        };
        // SAFETY: `ptr` came from memsec::malloc_sized.
        assert!(unsafe { memsec::mprotect(locked.ptr, memsec::Prot::ReadOnly) });
        Ok(locked)
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: readable for as long as self lives, `len` bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for LockedBytes {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from memsec::malloc_sized; free needs it
        // writable, then zeroes, unlocks and releases it.
        unsafe {
            memsec::mprotect(self.ptr, memsec::Prot::ReadWrite);
            memsec::free(self.ptr);
        }
    }
}

impl fmt::Debug for LockedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockedBytes")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_zeroed_on_drop() {
        let marker = [0x5Au8; 40];
        let locked = LockedBytes::copy_from(&marker).unwrap();
        assert_eq!(locked.as_slice(), marker);
        let ptr = locked.as_slice().as_ptr();
        drop(locked);
        // SAFETY: test-only read of freed but still mapped heap memory.
        let left: Vec<u8> = (0..marker.len())
            .map(|i| unsafe { ptr.add(i).read_volatile() })
            .collect();
        assert!(left.iter().all(|byte| *byte != 0x5A), "{left:?}");
    }
}
