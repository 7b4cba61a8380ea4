//! The storage directory: its exclusive lock and the atomic, durable file
//! writes every vault change goes through.
//!
//! A write goes to a temporary file in the same directory, is synced, renamed
//! over the target and followed by a sync of the directory, so that a crash
//! at any instant leaves either the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;
use rustix::fs::FlockOperation;

use super::VaultError;

const LOCK_FILE: &str = ".lock";
const TEMP_MARKER: &str = ".tmp-";

/// An open storage directory, held exclusively by this process until dropped.
#[derive(Debug)]
pub struct StorageDir {
    path: PathBuf,
    // Holding the file keeps the flock; the kernel releases it with the fd.
    _lock: File,
}

impl StorageDir {
    /// Opens `path`, which must be an existing directory closed to group and
    /// others, and takes its lock.
    pub fn open(path: &Path) -> Result<Self, VaultError> {
        check_directory(path)?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| VaultError::io("open the lock file", &lock_path, source))?;
        rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).map_err(|_| {
            VaultError::InUse {
                path: path.to_owned(),
            }
        })?;
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the subdirectory `name` (mode 0700) if it is missing.
    pub fn ensure_subdir(&self, name: &str) -> Result<PathBuf, VaultError> {
        let dir = self.path.join(name);
        if fs::symlink_metadata(&dir).is_ok_and(|meta| !meta.is_dir()) {
            return Err(VaultError::Setup(format!(
                "{} is not a real directory (a symlink or a file); the vault's directories must \
                 be its own",
                dir.display()
            )));
        }
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => sync_dir(&self.path)?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let closed = fs::Permissions::from_mode(0o700);
                fs::set_permissions(&dir, closed)
                    .map_err(|source| VaultError::io("restrict", &dir, source))?;
            }
            Err(source) => return Err(VaultError::io("create directory", &dir, source)),
        }
        Ok(dir)
    }
}

/// Refuses a missing path, a non-directory, or one that others can enter.
fn check_directory(path: &Path) -> Result<(), VaultError> {
    let meta = fs::metadata(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => VaultError::Setup(format!(
            "storage directory {} does not exist; create it with mode 0700 or fix storage_path",
            path.display()
        )),
        _ => VaultError::io("inspect the storage directory", path, source),
    })?;
    if !meta.is_dir() {
        return Err(VaultError::Setup(format!(
            "storage path {} is not a directory",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(VaultError::Setup(format!(
            "storage directory {} has mode {mode:03o}; run chmod 700 on it",
            path.display()
        )));
    }
    Ok(())
}

/// Replaces `dir/name` with `bytes` atomically and durably, mode 0600.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), VaultError> {
    let target = dir.join(name);
    let temp = dir.join(format!(
        ".{name}{TEMP_MARKER}{:016x}",
        rand::thread_rng().r#gen::<u64>()
    ));

    let written = write_new_file(&temp, bytes).and_then(|()| fs::rename(&temp, &target));
    if let Err(source) = written {
        let _ = fs::remove_file(&temp);
        return Err(VaultError::io("write", &target, source));
    }

    sync_dir(dir)
}

fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Removes `dir/name` durably; a file that is already gone is no error.
pub fn remove_durable(dir: &Path, name: &str) -> Result<(), VaultError> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(VaultError::io("remove", &path, source)),
    }
}

/// Reads `dir/name`, answering `None` when it does not exist. Anything
/// but a regular file (a symlink, a FIFO that would block the daemon, a
/// device) is refused as damage.
pub fn read_optional(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, VaultError> {
    let path = dir.join(name);
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::NOFOLLOW | libc_flags::NONBLOCK)
        .open(&path);
    let mut file = match opened {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.raw_os_error() == Some(libc_flags::ELOOP) => {
            return Err(VaultError::integrity(
                path.display().to_string(),
                "it is a symlink",
            ));
        }
        Err(source) => return Err(VaultError::io("read", &path, source)),
    };
    let meta = file
        .metadata()
        .map_err(|source| VaultError::io("inspect", &path, source))?;
    if !meta.is_file() {
        return Err(VaultError::integrity(
            path.display().to_string(),
            "it is not a regular file",
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|source| VaultError::io("read", &path, source))?;
    Ok(Some(bytes))
}

/// Open flags and errno values, from rustix so that no unsafe libc is needed.
mod libc_flags {
    pub const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    pub const NONBLOCK: i32 = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    pub const ELOOP: i32 = rustix::io::Errno::LOOP.raw_os_error();
}

/// The names of the regular files in `dir`, skipping temporary files.
pub fn file_names(dir: &Path) -> Result<Vec<String>, VaultError> {
    let entries = fs::read_dir(dir).map_err(|source| VaultError::io("list", dir, source))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| VaultError::io("list", dir, source))?;
        if let Some(name) = entry.file_name().to_str()
            && !is_temp_name(name)
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Deletes the temporary files an interrupted write left in `dir`; they
/// never hold committed data. Answers how many were removed.
pub fn remove_temp_files(dir: &Path) -> Result<usize, VaultError> {
    let entries = fs::read_dir(dir).map_err(|source| VaultError::io("list", dir, source))?;
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|source| VaultError::io("list", dir, source))?;
        if entry.file_name().to_str().is_some_and(is_temp_name) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|source| VaultError::io("remove", &path, source))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

fn sync_dir(dir: &Path) -> Result<(), VaultError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| VaultError::io("sync directory", dir, source))
}
