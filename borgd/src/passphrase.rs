//! How borg gets the repository passphrase. borgd never keeps it: a
//! passcommand is handed to borg to run, and a file or systemd credential
//! is read fresh for each borg run and written into a pipe whose read end
//! borg inherits as BORG_PASSPHRASE_FD, so the value is in no environment
//! and no argument list.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use rustix::io::FdFlags;
use thiserror::Error;
use tokio::process::Command;
use zeroize::Zeroizing;

/// Where the passphrase comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassphraseSource {
    /// An unencrypted repository.
    None,
    Passcommand(String),
    File(PathBuf),
    /// A name under $CREDENTIALS_DIRECTORY (systemd's LoadCredential=).
    SystemdCredential(String),
}

/// Pipes can hold this much without a reader; a passphrase is far smaller.
const PIPE_CAPACITY: usize = 64 * 1024;

/// Why the passphrase could not be handed over; never holds it.
#[derive(Debug, Error)]
pub enum PassphraseError {
    #[error("cannot read the passphrase file {}: {source}", .path.display())]
    Missing { path: PathBuf, source: io::Error },
    #[error(
        "systemd credential {name:?} wanted but CREDENTIALS_DIRECTORY is not set; run borgd \
         from a unit with LoadCredential={name}:FILE"
    )]
    NoCredentialsDirectory { name: String },
    #[error("the passphrase file {} is larger than 64 KiB", .path.display())]
    TooLong { path: PathBuf },
    #[error("cannot make a pipe for the passphrase: {0}")]
    Pipe(io::Error),
}

impl PassphraseSource {
    /// Where the passphrase comes from, for the plan `borgd check` prints.
    pub fn describe(&self) -> String {
        match self {
            Self::None => "none (unencrypted repository)".into(),
            Self::Passcommand(command) => format!("passcommand {command}"),
            Self::File(path) => format!("file {}, read for each borg run", path.display()),
            Self::SystemdCredential(name) => format!("systemd credential {name}"),
        }
    }

    /// Sets up `command` (a borg invocation) to find the passphrase. The
    /// returned descriptor must stay open until borg has started.
    pub fn apply(&self, command: &mut Command) -> Result<Option<OwnedFd>, PassphraseError> {
        command
            .env_remove("BORG_PASSPHRASE")
            .env_remove("BORG_PASSCOMMAND");
        command.env_remove("BORG_PASSPHRASE_FD");
        let path = match self {
            Self::None => return Ok(None),
            Self::Passcommand(passcommand) => {
                command.env("BORG_PASSCOMMAND", passcommand);
                return Ok(None);
            }
            Self::File(path) => path.clone(),
            Self::SystemdCredential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    PassphraseError::NoCredentialsDirectory { name: name.clone() }
                })?;
                PathBuf::from(dir).join(name)
            }
        };

        let passphrase =
            fs::read(&path)
                .map(Zeroizing::new)
                .map_err(|source| PassphraseError::Missing {
                    path: path.clone(),
                    source,
                })?;
        if passphrase.len() >= PIPE_CAPACITY {
            return Err(PassphraseError::TooLong { path });
        }
        let read_end = pipe_holding(&passphrase).map_err(PassphraseError::Pipe)?;
        inherit(command, &read_end);
        Ok(Some(read_end))
    }
}

/// A pipe already holding `bytes`, its write end closed; the read end is
/// close-on-exec until [`inherit`] clears that for one child only.
fn pipe_holding(bytes: &[u8]) -> io::Result<OwnedFd> {
    let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let mut written = 0;
    while written < bytes.len() {
        written += rustix::io::write(&write_end, &bytes[written..])?;
    }
    drop(write_end);
    Ok(read_end)
}

/// Lets the child started by `command`, and no other process, inherit
/// `fd`, and tells borg where to read.
fn inherit(command: &mut Command, fd: &OwnedFd) {
    let raw = fd.as_raw_fd();
    command.env("BORG_PASSPHRASE_FD", raw.to_string());
    // SAFETY: the closure runs in the child between fork and exec and
    // only calls fcntl, which is async-signal-safe; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let fd = rustix::fd::BorrowedFd::borrow_raw(raw);
            rustix::io::fcntl_setfd(fd, FdFlags::empty()).map_err(io::Error::from)
        });
    }
}
