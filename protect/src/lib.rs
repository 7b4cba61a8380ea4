//! Hardened memory for secrets that live longer than one call.
//!
//! [`GuardedBuf`] addresses two threats: a stray read or overflow from
//! elsewhere in the process (guard pages on both sides, a canary, and no
//! access at all while the buffer is closed), and copies surviving in
//! swap, core dumps or freed memory (mlocked, excluded from dumps, zeroed
//! when dropped).

use std::fmt;
use std::ptr::NonNull;
use std::sync::Mutex;

/// Allocation of guarded memory failed (address space, or the canary
/// set-up); callers report it as an error rather than aborting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocError;

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot allocate guarded memory for a secret")
    }
}

impl std::error::Error for AllocError {}

/// A fixed-size secret in guarded memory, inaccessible except inside
/// [`GuardedBuf::with`].
pub struct GuardedBuf {
    ptr: NonNull<[u8]>,
    len: usize,
    // Serialises the open-read-close windows of concurrent readers, so one
    // reader's close cannot revoke another's access mid-read.
    access: Mutex<()>,
}

// SAFETY: the buffer is uniquely owned; every access goes through `access`.
unsafe impl Send for GuardedBuf {}
// SAFETY: shared access only reads, one reader at a time (see `access`).
unsafe impl Sync for GuardedBuf {}

impl GuardedBuf {
    /// Copies `bytes` into a new guarded buffer, closed on return.
    pub fn copy_from(bytes: &[u8]) -> Result<Self, AllocError> {
        // SAFETY: malloc_sized returns a valid allocation of `len` bytes or None.
        let ptr = unsafe { memsec::malloc_sized(bytes.len()) }.ok_or(AllocError)?;
        let buf = Self {
            ptr,
            len: bytes.len(),
            access: Mutex::new(()),
        };
        // SAFETY: the allocation is read-write after malloc and holds `len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr().cast::<u8>(), buf.len)
        };
        buf.protect(memsec::Prot::NoAccess);
        Ok(buf)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Opens the buffer read-only for the duration of `read`.
    pub fn with<R>(&self, read: impl FnOnce(&[u8]) -> R) -> R {
        let _guard = self
            .access
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.protect(memsec::Prot::ReadOnly);
        // SAFETY: readable now, `len` bytes, and no writer exists.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) };
        let result = read(bytes);
        self.protect(memsec::Prot::NoAccess);
        result
    }

    fn protect(&self, prot: memsec::Prot::Ty) {
        // SAFETY: `ptr` came from memsec::malloc_sized and is not freed yet.
        let done = unsafe { memsec::mprotect(self.ptr, prot) };
        assert!(done, "mprotect of a guarded buffer failed");
    }
}

impl Drop for GuardedBuf {
    fn drop(&mut self) {
        // free checks the canary before anything else, so it must be readable.
        self.protect(memsec::Prot::ReadWrite);
        // SAFETY: `ptr` came from memsec::malloc_sized; free zeroes it,
        // unlocks it and releases it.
        unsafe { memsec::free(self.ptr) };
    }
}

impl fmt::Debug for GuardedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedBuf")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let buf = GuardedBuf::copy_from(b"secret bytes").unwrap();
        assert_eq!(buf.len(), 12);
        assert_eq!(buf.with(<[u8]>::to_vec), b"secret bytes");
        assert_eq!(GuardedBuf::copy_from(b"").unwrap().with(<[u8]>::len), 0);
    }

    #[test]
    fn debug_shows_only_the_length() {
        let buf = GuardedBuf::copy_from(b"hunter2").unwrap();
        assert_eq!(format!("{buf:?}"), "GuardedBuf { len: 7, .. }");
    }

    #[test]
    fn concurrent_readers_all_see_the_value() {
        let buf = std::sync::Arc::new(GuardedBuf::copy_from(&[7u8; 5000]).unwrap());
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let buf = buf.clone();
                std::thread::spawn(move || {
                    (0..200).all(|_| buf.with(|bytes| bytes.iter().all(|b| *b == 7)))
                })
            })
            .collect();
        assert!(readers.into_iter().all(|reader| reader.join().unwrap()));
    }
}
