//! Process hardening at start: no core dumps and no ptrace attach by
//! other processes of the same user, and a report of whether memory can
//! be locked, so that secrets are not written to swap unnoticed.

use std::fmt;

use rustix::process::{DumpableBehavior, Resource, Rlimit};

/// What [`harden_process`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// PR_SET_DUMPABLE 0: no core dumps, no ptrace or /proc/PID/mem access
    /// by other processes of this user.
    pub not_dumpable: bool,
    /// RLIMIT_CORE is 0.
    pub no_core: bool,
    /// Whether a page could be mlocked.
    pub memory_lockable: bool,
    /// RLIMIT_MEMLOCK in bytes; `None` when unlimited.
    pub memlock_limit: Option<u64>,
}

/// Applies the hardening and reports what took effect.
pub fn harden_process() -> Hardening {
    let not_dumpable =
        rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable).is_ok();
    let no_core = rustix::process::setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .is_ok();
    let memlock_limit = rustix::process::getrlimit(Resource::Memlock).current;
    Hardening {
        not_dumpable,
        no_core,
        memory_lockable: can_lock_a_page(),
        memlock_limit,
    }
}

fn can_lock_a_page() -> bool {
    let mut page = vec![0u8; rustix::param::page_size()];
    let ptr = page.as_mut_ptr().cast::<std::ffi::c_void>();
    // SAFETY: the range is this vector's own memory, unlocked again below.
    let locked = unsafe { rustix::mm::mlock(ptr, page.len()) }.is_ok();
    if locked {
        // SAFETY: as above.
        let _ = unsafe { rustix::mm::munlock(ptr, page.len()) };
    }
    locked
}

impl fmt::Display for Hardening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = match self.memlock_limit {
            None => "unlimited".to_owned(),
            Some(bytes) => format!("{} KiB", bytes / 1024),
        };
        let lock = if self.memory_lockable {
            "can be locked"
        } else {
            "can NOT be locked"
        };
        write!(f, "secret memory {lock} (RLIMIT_MEMLOCK {limit}); ")?;
        write!(
            f,
            "core dumps and ptrace {}",
            if self.not_dumpable && self.no_core {
                "off"
            } else {
                "NOT fully off"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_takes_effect() {
        let hardening = harden_process();
        assert!(hardening.not_dumpable && hardening.no_core, "{hardening:?}");
        let dumpable = rustix::process::dumpable_behavior().unwrap();
        assert_eq!(dumpable, DumpableBehavior::NotDumpable);
        assert_eq!(rustix::process::getrlimit(Resource::Core).current, Some(0));
    }
}
