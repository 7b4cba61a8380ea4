//! One run of one backup: pre hooks, `borg create`, post hooks, prune,
//! and finally hooks, with the result recorded in the state file.
//!
//! Hook semantics: pre hooks run in order and any failure skips the
//! backup; post hooks run only after a successful create; finally hooks
//! always run, with BORGD_OUTCOME set to "success" or "failure".

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;
use chrono::{DateTime, Local};
use serde::Deserialize;
use tokio::process::Command;
use tokio::sync::{Mutex, watch};
use tracing::{error, info, warn};

use crate::borg::{Borg, Failure, Outcome};
use crate::config::{Backup, Keep, Source};
use crate::passphrase::PassphraseSource;
use crate::state::{self, RunResult, Sizes, State};

/// Runs backups and compaction against one repository and records them.
#[derive(Debug)]
pub struct Runner {
    borg: Borg,
    encrypted: bool,
    state: Mutex<State>,
    state_file: PathBuf,
    /// Set once the repository is known to exist, so it is checked once.
    repository_ready: Mutex<bool>,
}

/// A failed step: what to report.
type StepResult<T> = Result<T, String>;

/// What a successful create produced.
struct Created {
    archive: String,
    sizes: Option<Sizes>,
    warning: bool,
}

#[derive(Deserialize)]
struct CreateJson {
    archive: ArchiveJson,
}

#[derive(Deserialize)]
struct ArchiveJson {
    name: String,
    stats: StatsJson,
}

#[derive(Deserialize)]
struct StatsJson {
    original_size: u64,
    compressed_size: u64,
    deduplicated_size: u64,
    nfiles: u64,
}

impl Runner {
    pub fn new(
        borg: Borg,
        passphrase: &PassphraseSource,
        state: State,
        state_file: PathBuf,
    ) -> Self {
        Self {
            borg,
            encrypted: *passphrase != PassphraseSource::None,
            state: Mutex::new(state),
            state_file,
            repository_ready: Mutex::new(false),
        }
    }

    /// Runs `backup` once and records the result.
    pub async fn backup(&self, backup: &Backup, mut interrupt: watch::Receiver<bool>) -> RunResult {
        let started = Local::now();
        info!(backup = %backup.name, "backup starting");
        let outcome = self.backup_steps(backup, started, &mut interrupt).await;

        let label = if outcome.is_ok() {
            "success"
        } else {
            "failure"
        };
        let env = [
            ("BORGD_BACKUP", backup.name.as_str()),
            ("BORGD_OUTCOME", label),
        ];
        if let Err(err) = run_hooks("finally", &backup.finally, &env).await {
            warn!(backup = %backup.name, error = %err, "a finally hook failed");
        }

        let result = match outcome {
            Ok(created) => RunResult {
                started,
                finished: Local::now(),
                outcome: if created.warning {
                    state::Outcome::Warning
                } else {
                    state::Outcome::Success
                },
                error: None,
                archive: Some(created.archive),
                sizes: created.sizes,
            },
            Err(message) => RunResult {
                started,
                finished: Local::now(),
                outcome: state::Outcome::Failure,
                error: Some(message),
                archive: None,
                sizes: None,
            },
        };
        match &result.error {
            None => info!(backup = %backup.name, archive = ?result.archive, "backup finished"),
            Some(err) => error!(backup = %backup.name, error = %err, "backup failed"),
        }
        self.record(|state| {
            state.backups.insert(backup.name.clone(), result.clone());
        })
        .await;
        result
    }

    async fn backup_steps(
        &self,
        backup: &Backup,
        started: DateTime<Local>,
        interrupt: &mut watch::Receiver<bool>,
    ) -> StepResult<Created> {
        // Pre hooks come first: one may be what makes the repository
        // reachable (mounting a disk, waking a host).
        let env = [("BORGD_BACKUP", backup.name.as_str())];
        run_hooks("pre", &backup.pre, &env).await?;
        self.ensure_repository(interrupt).await?;

        let archive = format!("{}-{}", backup.name, started.format("%Y-%m-%dT%H:%M:%S"));
        let created = self.create(backup, &archive, interrupt).await?;

        let env = [
            ("BORGD_BACKUP", backup.name.as_str()),
            ("BORGD_ARCHIVE", archive.as_str()),
        ];
        run_hooks("post", &backup.post, &env).await?;
        if let Some(keep) = &backup.keep {
            self.prune(backup, keep, interrupt).await?;
        }
        Ok(created)
    }

    /// Makes sure the repository exists, initialising a missing one:
    /// repokey when a passphrase is configured, unencrypted otherwise.
    async fn ensure_repository(&self, interrupt: &mut watch::Receiver<bool>) -> StepResult<()> {
        let mut ready = self.repository_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let repository = self.borg.repository().to_owned();
        let info = self
            .borg_probe(&["info".into(), repository.clone()], interrupt)
            .await;
        match info {
            Ok(_) => {}
            Err(Failure::NoRepository) => {
                let encryption = if self.encrypted { "repokey" } else { "none" };
                info!(repository = %repository, encryption, "initialising a new repository");
                let args = [
                    "init".into(),
                    "--encryption".into(),
                    encryption.into(),
                    repository,
                ];
                self.borg_step(&args, None, interrupt)
                    .await
                    .map_err(|failure| format!("cannot initialise the repository: {failure}"))?;
            }
            Err(failure) => return Err(failure.to_string()),
        }
        *ready = true;
        Ok(())
    }

    async fn create(
        &self,
        backup: &Backup,
        archive: &str,
        interrupt: &mut watch::Receiver<bool>,
    ) -> StepResult<Created> {
        let mut args = vec!["create".to_owned(), "--json".to_owned()];
        for pattern in &backup.exclude {
            args.extend(["--exclude".to_owned(), pattern.clone()]);
        }
        let outcome = match &backup.source {
            Source::Paths(paths) => {
                args.push(self.borg.archive(archive));
                args.extend(paths.iter().cloned());
                self.borg_step(&args, None, interrupt).await
            }
            Source::Command(command) => {
                args.extend(["--stdin-name".to_owned(), backup.name.clone()]);
                args.extend([self.borg.archive(archive), "-".to_owned()]);
                return self
                    .create_from_command(command, &args, archive, interrupt)
                    .await;
            }
        };
        let outcome = outcome.map_err(|failure| failure.to_string())?;
        Ok(created(archive, &outcome))
    }

    /// Streams a command's stdout into `borg create -`. A command that
    /// fails makes the run fail, and the archive it half filled is deleted.
    async fn create_from_command(
        &self,
        command: &[String],
        args: &[String],
        archive: &str,
        interrupt: &mut watch::Receiver<bool>,
    ) -> StepResult<Created> {
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that stopping it reaches every
            // process it started that may hold borg's stdin open.
            .process_group(0)
            .spawn()
            .map_err(|err| format!("cannot run the backup command {:?}: {err}", command[0]))?;
        let stdout: Stdio = child
            .stdout
            .take()
            .expect("stdout is piped")
            .try_into()
            .map_err(|err| format!("cannot connect the backup command to borg: {err}"))?;

        // borg blocks in a read of its stdin and only acts on SIGINT once
        // the read returns, so an interrupt also stops the command, shortly
        // after borg has its SIGINT pending.
        let mut stopping = interrupt.clone();
        let command_pid = child.id();
        let stop_command = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if let Some(pid) =
                command_pid.and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
            {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
            }
            std::future::pending::<()>().await;
        };
        let outcome = tokio::select! {
            outcome = self.borg_step(args, Some(stdout), interrupt) => outcome,
            () = stop_command => unreachable!("stop_command never completes"),
        };
        let status = child
            .wait()
            .await
            .map_err(|err| format!("backup command: {err}"))?;
        let outcome = outcome.map_err(|failure| failure.to_string())?;
        if !status.success() {
            self.delete_archive(archive, interrupt).await;
            return Err(format!(
                "the backup command {:?} failed ({status}); its partial archive was deleted",
                command[0]
            ));
        }
        Ok(created(archive, &outcome))
    }

    async fn delete_archive(&self, archive: &str, interrupt: &mut watch::Receiver<bool>) {
        let args = ["delete".to_owned(), self.borg.archive(archive)];
        if let Err(failure) = self.borg_step(&args, None, interrupt).await {
            error!(archive, error = %failure, "cannot delete a partial archive");
        }
    }

    async fn prune(
        &self,
        backup: &Backup,
        keep: &Keep,
        interrupt: &mut watch::Receiver<bool>,
    ) -> StepResult<()> {
        let mut args = vec![
            "prune".to_owned(),
            "--glob-archives".to_owned(),
            format!("{}-*", backup.name),
        ];
        args.extend(keep.args());
        args.push(self.borg.repository().to_owned());
        self.borg_step(&args, None, interrupt)
            .await
            .map(|_| ())
            .map_err(|failure| format!("prune failed: {failure}"))
    }

    /// Compacts the repository and records the result.
    pub async fn compact(&self, mut interrupt: watch::Receiver<bool>) -> RunResult {
        let started = Local::now();
        let args = ["compact".to_owned(), self.borg.repository().to_owned()];
        let outcome = self.borg_step(&args, None, &mut interrupt).await;
        let result = RunResult {
            started,
            finished: Local::now(),
            outcome: if outcome.is_ok() {
                state::Outcome::Success
            } else {
                state::Outcome::Failure
            },
            error: outcome.as_ref().err().map(ToString::to_string),
            archive: None,
            sizes: None,
        };
        match &result.error {
            None => info!("compaction finished"),
            Some(err) => error!(error = %err, "compaction failed"),
        }
        self.record(|state| state.compaction = Some(result.clone()))
            .await;
        result
    }

    async fn borg_step(
        &self,
        args: &[String],
        stdin: Option<Stdio>,
        interrupt: &mut watch::Receiver<bool>,
    ) -> Result<Outcome, Failure> {
        self.borg_run(args, stdin, false, interrupt).await
    }

    /// A borg run whose failure is expected and handled by the caller.
    async fn borg_probe(
        &self,
        args: &[String],
        interrupt: &mut watch::Receiver<bool>,
    ) -> Result<Outcome, Failure> {
        self.borg_run(args, None, true, interrupt).await
    }

    async fn borg_run(
        &self,
        args: &[String],
        stdin: Option<Stdio>,
        probe: bool,
        interrupt: &mut watch::Receiver<bool>,
    ) -> Result<Outcome, Failure> {
        let outcome = self
            .borg
            .run(args, stdin, probe, interrupt)
            .await
            .map_err(|err| Failure::Other(format!("{err:#}")))?;
        match outcome.failure.clone() {
            Some(failure) => Err(failure),
            None => Ok(outcome),
        }
    }

    async fn record(&self, update: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().await;
        update(&mut state);
        if let Err(err) = state
            .save(&self.state_file)
            .context("cannot save the run result")
        {
            error!(error = %format!("{err:#}"), "state file not updated");
        }
    }
}

fn created(archive: &str, outcome: &Outcome) -> Created {
    let parsed = serde_json::from_slice::<CreateJson>(&outcome.stdout).ok();
    let sizes = parsed.as_ref().map(|json| Sizes {
        original: json.archive.stats.original_size,
        compressed: json.archive.stats.compressed_size,
        deduplicated: json.archive.stats.deduplicated_size,
        files: json.archive.stats.nfiles,
    });
    let archive = parsed.map_or_else(|| archive.to_owned(), |json| json.archive.name);
    Created {
        archive,
        sizes,
        warning: outcome.warning,
    }
}

/// Runs `hooks` in order with `env`; the first failure stops them.
async fn run_hooks(stage: &str, hooks: &[Vec<String>], env: &[(&str, &str)]) -> StepResult<()> {
    for hook in hooks {
        let status = Command::new(&hook[0])
            .args(&hook[1..])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .status()
            .await
            .map_err(|err| format!("cannot run the {stage} hook {:?}: {err}", hook[0]))?;
        if !status.success() {
            return Err(format!("the {stage} hook {:?} failed ({status})", hook[0]));
        }
    }
    Ok(())
}
