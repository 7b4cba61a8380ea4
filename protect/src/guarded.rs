//! Guarded buffers: memsec allocations with guard pages, a canary and
//! mlock, closed to all access except inside a scoped accessor.
//!
//! Threats addressed: a stray read or overflow from elsewhere in the
//! process (guard pages on both sides, a canary checked on free, and no
//! access at all while closed); copies surviving in swap, core dumps,
//! freed memory or forked children (mlocked, excluded from dumps, zeroed
//! when dropped, wiped in any child the process forks).

use std::fmt;
use std::ptr::NonNull;
use std::sync::Mutex;

/// Allocation of guarded memory failed; callers report it as an error
/// rather than aborting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocError;

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot allocate guarded memory for a secret")
    }
}

impl std::error::Error for AllocError {}

/// A fixed-size secret in guarded memory.
pub struct GuardedBuf {
    ptr: NonNull<[u8]>,
    len: usize,
    // Serialises the open-use-close windows, so that one user's close
    // cannot revoke another's access in the middle of its use.
    access: Mutex<()>,
}

// SAFETY: the buffer is uniquely owned; every access goes through `access`.
unsafe impl Send for GuardedBuf {}
// SAFETY: shared access is serialised by `access`.
unsafe impl Sync for GuardedBuf {}

impl GuardedBuf {
    /// A new buffer of `len` zero bytes, closed on return.
    pub fn zeroed(len: usize) -> Result<Self, AllocError> {
        // SAFETY: malloc_sized returns a valid allocation of `len` bytes or None.
        let ptr = unsafe { memsec::malloc_sized(len) }.ok_or(AllocError)?;
        let buf = Self {
            ptr,
            len,
            access: Mutex::new(()),
        };
        // SAFETY: the allocation is read-write after malloc and holds `len` bytes.
        unsafe { std::ptr::write_bytes(buf.ptr.as_ptr().cast::<u8>(), 0, len) };
        wipe_on_fork(buf.ptr.as_ptr().cast::<u8>(), len);
        buf.protect(memsec::Prot::NoAccess);
        Ok(buf)
    }

    /// Copies `bytes` into a new guarded buffer, closed on return.
    pub fn copy_from(bytes: &[u8]) -> Result<Self, AllocError> {
        let buf = Self::zeroed(bytes.len())?;
        buf.with_mut(|inside| inside.copy_from_slice(bytes));
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

    /// Opens the buffer read-write for the duration of `write`.
    pub fn with_mut<R>(&self, write: impl FnOnce(&mut [u8]) -> R) -> R {
        let _guard = self
            .access
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.protect(memsec::Prot::ReadWrite);
        // SAFETY: writable now, `len` bytes, and `access` excludes every
        // other user for the duration.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<u8>(), self.len) };
        let result = write(bytes);
        self.protect(memsec::Prot::NoAccess);
        result
    }

    /// The address of the bytes, so that a test can check them after drop.
    #[cfg(test)]
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr().cast::<u8>()
    }

    fn protect(&self, prot: memsec::Prot::Ty) {
        // SAFETY: `ptr` came from memsec::malloc_sized and is not freed yet.
        let done = unsafe { memsec::mprotect(self.ptr, prot) };
        assert!(done, "mprotect of a guarded buffer failed");
    }
}

/// Asks the kernel to hand any forked child (borg, a hook) zeroes in
/// place of the pages holding `len` bytes at `ptr`. Kernels before 4.14
/// lack it; the pages then stay as they are in a child that execs at once.
pub(crate) fn wipe_on_fork(ptr: *const u8, len: usize) {
    let page = rustix::param::page_size();
    let start = (ptr as usize) & !(page - 1);
    let end = (ptr as usize + len).div_ceil(page) * page;
    // SAFETY: the range covers whole pages of an allocation memsec
    // mapped; the advice changes no contents in this process.
    let _ = unsafe {
        rustix::mm::madvise(
            start as *mut std::ffi::c_void,
            (end - start).max(page),
            rustix::mm::Advice::LinuxWipeOnFork,
        )
    };
}

impl Drop for GuardedBuf {
    fn drop(&mut self) {
        // free checks the canary first, so the pages must be readable.
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
        buf.with_mut(|bytes| bytes[0] = b'S');
        assert_eq!(buf.with(<[u8]>::to_vec), b"Secret bytes");
        assert_eq!(GuardedBuf::copy_from(b"").unwrap().with(<[u8]>::len), 0);
    }

    #[test]
    fn zeroed_on_drop() {
        let marker = [0xA5u8; 48];
        let buf = GuardedBuf::copy_from(&marker).unwrap();
        let ptr = buf.as_ptr();
        drop(buf);
        // memsec zeroes before it releases; the heap keeps the pages mapped
        // for this size, so reading them back shows what was left behind.
        // SAFETY: test-only read of freed but still mapped heap memory.
        let left: Vec<u8> = (0..marker.len())
            .map(|i| unsafe { ptr.add(i).read_volatile() })
            .collect();
        assert!(left.iter().all(|byte| *byte != 0xA5), "{left:?}");
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
