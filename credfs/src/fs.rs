//! The FUSE callbacks. Each one rejects bad input early, calls a helper
//! that answers `Result<_, Errno>`, and replies exactly once.
//!
//! Opening a file fetches its value on a thread of its own, so that a slow
//! store never stalls `ls` or other readers; reads are served from the
//! guarded buffer with direct I/O, so the kernel keeps no copy.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, IoctlFlags,
    LockOwner, Notifier, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyOpen, ReplyXattr, Request,
};
use tracing::{debug, info, warn};

use crate::FetchError;
use crate::cache::{Cache, Value};
use crate::tree::{FileSpec, Node, ROOT, Tree};

/// Attributes are never cached by the kernel: a file's size changes once
/// its value is known.
const NO_CACHE: Duration = Duration::ZERO;

pub struct CredFs {
    tree: Arc<Tree>,
    cache: Arc<Cache>,
    handles: Arc<Mutex<HashMap<u64, Value>>>,
    next_handle: Arc<AtomicU64>,
    started: SystemTime,
    owner: (u32, u32),
    /// Set once mounted; used to drop any page-cache copy of a file.
    notifier: Arc<OnceLock<Notifier>>,
}

impl CredFs {
    pub fn new(tree: Arc<Tree>, cache: Arc<Cache>, notifier: Arc<OnceLock<Notifier>>) -> Self {
        let owner = (current_uid(), current_gid());
        Self {
            tree,
            cache,
            handles: Arc::new(Mutex::new(HashMap::new())),
            next_handle: Arc::new(AtomicU64::new(1)),
            started: SystemTime::now(),
            owner,
            notifier,
        }
    }

    /// Drops the kernel's cached pages of `ino`. Direct I/O keeps reads out
    /// of the page cache, but a private mmap still pages the value in; once
    /// the file is closed and unmapped, this evicts those pages. It runs
    /// on its own thread: the kernel may wait on this very session.
    fn evict_pages(&self, ino: INodeNo) {
        if let Some(notifier) = self.notifier.get() {
            let notifier = notifier.clone();
            thread::spawn(move || {
                if let Err(err) = notifier.inval_inode(ino, 0, 0) {
                    debug!(error = %err, "cannot evict cached pages");
                }
            });
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, uid, gid, size, nlink) = match self.tree.get(ino)? {
            Node::Dir { children, .. } => (
                FileType::Directory,
                0o555,
                self.owner.0,
                self.owner.1,
                0,
                2 + children.len() as u32,
            ),
            Node::File { spec, .. } => (
                FileType::RegularFile,
                spec.mode,
                spec.uid,
                spec.gid,
                self.cache.known_len(ino),
                1,
            ),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

fn current_uid() -> u32 {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    unsafe { libc::getuid() }
}

fn current_gid() -> u32 {
    // SAFETY: as above.
    unsafe { libc::getgid() }
}

impl Filesystem for CredFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = name
            .to_str()
            .and_then(|name| self.tree.child(parent.0, name));
        match found.and_then(|ino| self.attr(ino)) {
            Some(attr) => reply.entry(&NO_CACHE, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Some(attr) => reply.attr(&NO_CACHE, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(Node::File { spec, .. }) = self.tree.get(ino.0) else {
            return reply.error(Errno::EISDIR);
        };
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let caller = Caller::of(req);
        if !caller.allowed(spec) {
            log_open(spec, &caller, "refused: not in the allowed uids or groups");
            return reply.error(Errno::EACCES);
        }

        let spec = spec.clone();
        let cache = self.cache.clone();
        let handles = self.handles.clone();
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        thread::spawn(move || match cache.get(ino.0) {
            Ok(value) => {
                handles
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(fh, value);
                log_open(&spec, &caller, "served");
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(err) => {
                log_open(&spec, &caller, &format!("failed: {err}"));
                reply.error(errno_for(&err));
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let value = self
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fh.0)
            .cloned();
        let Some(value) = value else {
            return reply.error(Errno::EBADF);
        };
        value.with(|bytes| {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(size as usize).min(bytes.len());
            reply.data(&bytes[start..end]);
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&fh.0);
        reply.ok();
        self.evict_pages(ino);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.get(ino.0) {
            Some(Node::Dir { .. }) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(Node::File { .. }) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(Node::Dir { parent, children }) = self.tree.get(ino.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        let parent = if ino.0 == ROOT { ROOT } else { *parent };
        let dots = [
            (ino.0, FileType::Directory, "."),
            (parent, FileType::Directory, ".."),
        ];
        let entries = dots.into_iter().chain(children.iter().map(|(name, child)| {
            let kind = match self.tree.get(*child) {
                Some(Node::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            (*child, kind, name.as_str())
        }));
        for (index, (child, kind, name)) in entries.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }
}

/// Who opened a file, for the allow lists and the access log.
#[derive(Debug, Clone)]
struct Caller {
    uid: u32,
    gid: u32,
    pid: u32,
}

impl Caller {
    fn of(req: &Request) -> Self {
        Self {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
        }
    }

    fn allowed(&self, spec: &FileSpec) -> bool {
        if spec.allow_uids.is_empty() && spec.allow_gids.is_empty() {
            return true;
        }
        spec.allow_uids.contains(&self.uid)
            || spec.allow_gids.contains(&self.gid)
            || self
                .groups()
                .iter()
                .any(|gid| spec.allow_gids.contains(gid))
    }

    /// The caller's supplementary groups, from /proc.
    fn groups(&self) -> Vec<u32> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("Groups:"))
            .map(|groups| {
                groups
                    .split_whitespace()
                    .filter_map(|gid| gid.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn executable(&self) -> String {
        std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .map_or_else(|_| "?".to_owned(), |path| path.display().to_string())
    }
}

fn log_open(spec: &FileSpec, caller: &Caller, outcome: &str) {
    let exe = caller.executable();
    let (file, uid, pid) = (&spec.path, caller.uid, caller.pid);
    if outcome == "served" {
        info!(file, uid, pid, exe, outcome, "open");
    } else {
        warn!(file, uid, pid, exe, outcome, "open");
    }
}

/// Refusals are EACCES; a store that cannot answer is EIO.
fn errno_for(err: &FetchError) -> Errno {
    match err {
        FetchError::Denied => Errno::EACCES,
        FetchError::Locked | FetchError::Timeout | FetchError::Failed(_) => {
            debug!(error = %err, "fetch failed");
            Errno::EIO
        }
    }
}
