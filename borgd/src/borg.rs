//! Running borg: the command line, the passphrase hand-over, its JSON log
//! on stderr, and what its failures mean.
//!
//! Failures are told apart by the `msgid` of borg's JSON log messages,
//! which borg 1.2 and 1.4 both emit, rather than by exit codes, which
//! differ between the two (1.2 exits 2 for every error; 1.4 has codes per
//! error when BORG_EXIT_CODES=modern).

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::passphrase::PassphraseSource;

/// The borg versions borgd drives: the 1.x line from 1.2 on. 2.x changed
/// the command line (repo-create, -r) and is not supported yet.
pub const SUPPORTED: &str = ">= 1.2, < 2.0";

/// Everything needed to start borg against one repository.
#[derive(Debug, Clone)]
pub struct Borg {
    binary: PathBuf,
    repository: String,
    ssh_identity: Option<PathBuf>,
    lock_wait: Duration,
    passphrase: PassphraseSource,
    break_stale_lock: bool,
}

/// What a borg failure was, as far as borgd can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    WrongPassphrase,
    PasscommandFailed,
    NoRepository,
    /// Another borg holds the repository lock, or a killed one left it.
    Locked,
    /// A borg on this host that no longer runs left the lock, and the
    /// config does not allow breaking it.
    StaleLock {
        pid: u32,
    },
    Interrupted,
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WrongPassphrase => f.write_str("wrong passphrase for the repository"),
            Self::PasscommandFailed => f.write_str("the passcommand failed"),
            Self::NoRepository => f.write_str("the repository does not exist"),
            Self::Locked => f.write_str("repository locked by another borg, or by a killed one"),
            Self::StaleLock { pid } => write!(
                f,
                "repository locked by borg pid {pid}, which is gone; set break_stale_lock = true \
                 to let borg remove the lock, or run borg break-lock"
            ),
            Self::Interrupted => f.write_str("interrupted by shutdown"),
            Self::Other(message) => f.write_str(message),
        }
    }
}

/// The outcome of one borg run.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    /// The failure, when borg reported one (or exited non-zero).
    pub failure: Option<Failure>,
    /// Whether borg exited with a warning (rc 1): done, with files skipped.
    pub warning: bool,
}

#[derive(Debug, Deserialize)]
struct LogLine {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    levelname: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    msgid: Option<String>,
}

impl Borg {
    pub fn new(config: &Config) -> Self {
        Self {
            binary: config.borg.clone(),
            repository: config.repository.location.clone(),
            ssh_identity: config.repository.ssh_identity_file.clone(),
            lock_wait: config.lock_wait,
            passphrase: config.passphrase.clone(),
            break_stale_lock: config.repository.break_stale_lock,
        }
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Checks that the borg binary runs and is a supported version.
    pub async fn check_version(&self) -> Result<String> {
        let output = Command::new(&self.binary)
            .arg("--version")
            .output()
            .await
            .with_context(|| format!("cannot run {}; install borgbackup", self.binary.display()))?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let version = text.rsplit(' ').next().unwrap_or_default().to_owned();
        let mut parts = version
            .split('.')
            .map(|part| part.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if !output.status.success() || major != 1 || minor < 2 {
            bail!("borg {version:?} is not supported; borgd needs borg {SUPPORTED}");
        }
        Ok(version)
    }

    /// A borg command with the repository's environment and the
    /// passphrase hand-over in place; `args` follow the global options.
    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--log-json")
            .arg("--lock-wait")
            .arg(self.lock_wait.as_secs().to_string());
        command.args(args);
        command
            .env("BORG_EXIT_CODES", "modern")
            .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "no");
        command.env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "no");
        if let Some(identity) = &self.ssh_identity {
            let rsh = format!("ssh -i '{}' -o BatchMode=yes", identity.display());
            command.env("BORG_RSH", rsh);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.kill_on_drop(true);
        command
    }

    /// Runs borg with `args` and `stdin`, logging its messages, until it
    /// ends or `interrupt` turns true (then SIGINT lets it checkpoint). A
    /// `probe` expects it may fail and logs borg's errors at debug only.
    pub async fn run(
        &self,
        args: &[String],
        stdin: Option<Stdio>,
        probe: bool,
        interrupt: &mut watch::Receiver<bool>,
    ) -> Result<Outcome> {
        let mut command = self.command(args);
        if let Some(stdin) = stdin {
            command.stdin(stdin);
        }
        // borg itself removes a lock left by a dead process on this host;
        // unless the config allows that, such a run stops here.
        if !self.break_stale_lock
            && let Some(pid) = stale_lock_holder(&self.repository)
        {
            return Ok(Outcome {
                stdout: Vec::new(),
                failure: Some(Failure::StaleLock { pid }),
                warning: false,
            });
        }
        let passphrase_fd = self.passphrase.apply(&mut command)?;
        debug!(args = ?args, "running borg");
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        drop(passphrase_fd);

        let stderr = child.stderr.take().expect("stderr is piped");
        let logger = tokio::spawn(log_messages(stderr, probe));
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let reader = tokio::spawn(async move {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes).await;
            bytes
        });

        let (status, interrupted) = wait_or_interrupt(&mut child, interrupt).await?;
        let failure_ids = logger.await.unwrap_or_default();
        let stdout = reader.await.unwrap_or_default();
        let failure = if interrupted {
            Some(Failure::Interrupted)
        } else {
            classify(status, &failure_ids)
        };
        Ok(Outcome {
            stdout,
            failure,
            warning: status.code() == Some(1),
        })
    }

    pub fn archive(&self, name: &str) -> String {
        format!("{}::{name}", self.repository)
    }
}

/// The pid of a dead process on this host that holds the exclusive lock of
/// the local repository at `location`, if there is one. borg 1.x names
/// each holder `HOST@NODE.PID-THREAD` in `lock.exclusive/`.
fn stale_lock_holder(location: &str) -> Option<u32> {
    if location.contains("://") {
        return None;
    }
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let holders = std::fs::read_dir(std::path::Path::new(location).join("lock.exclusive")).ok()?;
    holders
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .find_map(|name| {
            let (holder_host, rest) = name.split_once('@')?;
            let pid: u32 = rest.rsplit_once('.')?.1.split('-').next()?.parse().ok()?;
            let alive = rustix::process::Pid::from_raw(pid as i32)
                .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
            (holder_host == host && !alive).then_some(pid)
        })
}

/// Waits for borg; on interrupt sends SIGINT, which makes borg write a
/// checkpoint and exit, and waits for that.
async fn wait_or_interrupt(
    child: &mut Child,
    interrupt: &mut watch::Receiver<bool>,
) -> Result<(ExitStatus, bool)> {
    if !*interrupt.borrow() {
        tokio::select! {
            status = child.wait() => return Ok((status?, false)),
            _ = interrupt.wait_for(|stop| *stop) => {}
        }
    }
    if let Some(pid) = child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
    {
        info!(
            pid = pid.as_raw_nonzero().get(),
            "interrupting borg so it can write a checkpoint"
        );
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    }
    Ok((child.wait().await?, true))
}

/// Logs borg's JSON messages and answers the msgids of its errors.
async fn log_messages(stderr: tokio::process::ChildStderr, probe: bool) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(message) = serde_json::from_str::<LogLine>(&line) else {
            info!(borg = %line, "borg");
            continue;
        };
        if message.kind != "log_message" {
            debug!(kind = %message.kind, "borg progress");
            continue;
        }
        let msgid = message.msgid.clone().unwrap_or_default();
        match message.levelname.as_str() {
            "ERROR" | "CRITICAL" if probe => {
                debug!(msgid = %msgid, "borg: {}", message.message);
                errors.push((msgid, message.message));
            }
            "ERROR" | "CRITICAL" => {
                error!(msgid = %msgid, "borg: {}", message.message);
                errors.push((msgid, message.message));
            }
            "WARNING" => warn!(msgid = %msgid, "borg: {}", message.message),
            "INFO" => info!("borg: {}", message.message),
            _ => debug!("borg: {}", message.message),
        }
    }
    errors
}

fn classify(status: ExitStatus, errors: &[(String, String)]) -> Option<Failure> {
    if status.success() || status.code() == Some(1) {
        return None;
    }
    let known = errors.iter().find_map(|(msgid, _)| match msgid.as_str() {
        "PassphraseWrong" => Some(Failure::WrongPassphrase),
        "PasscommandFailure" => Some(Failure::PasscommandFailed),
        "Repository.DoesNotExist" | "Repository.InvalidRepository" => Some(Failure::NoRepository),
        "LockTimeout" | "LockFailed" | "LockError" | "LockErrorT" => Some(Failure::Locked),
        _ => None,
    });
    known.or_else(|| {
        let message = errors.last().map(|(_, message)| message.clone());
        Some(Failure::Other(
            message.unwrap_or_else(|| format!("borg exited with {status}")),
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn error(msgid: &str) -> Vec<(String, String)> {
        vec![(msgid.to_owned(), format!("{msgid} happened"))]
    }

    #[test]
    fn failures_are_told_apart_by_msgid_in_both_exit_code_styles() {
        // borg 1.2 exits 2 for every error; 1.4 with BORG_EXIT_CODES=modern
        // uses a code per error. The msgid is what both share.
        let cases = [
            ("PassphraseWrong", 52, Failure::WrongPassphrase),
            ("PasscommandFailure", 51, Failure::PasscommandFailed),
            ("Repository.DoesNotExist", 13, Failure::NoRepository),
            ("LockTimeout", 73, Failure::Locked),
        ];
        for (msgid, modern, expected) in cases {
            assert_eq!(
                classify(exited(2), &error(msgid)),
                Some(expected.clone()),
                "{msgid}"
            );
            assert_eq!(
                classify(exited(modern), &error(msgid)),
                Some(expected),
                "{msgid}"
            );
        }
    }

    #[test]
    fn success_and_warnings_are_no_failure() {
        assert_eq!(classify(exited(0), &[]), None);
        assert_eq!(classify(exited(1), &error("FileChangedWarning")), None);
        let other = classify(exited(2), &error("Something.Else"));
        assert_eq!(
            other,
            Some(Failure::Other("Something.Else happened".into()))
        );
        assert!(matches!(classify(exited(2), &[]), Some(Failure::Other(_))));
    }
}
