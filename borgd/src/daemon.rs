//! The scheduler: starts each backup (and compaction) when its schedule
//! says, never a second run of one that is still going, and on shutdown
//! stops scheduling, gives running borgs a grace period, then interrupts
//! them so they can write a checkpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::run::Runner;
use crate::schedule::next_run;

/// How long after the interrupt a borg gets to write its checkpoint.
const CHECKPOINT_TIME: Duration = Duration::from_secs(60);
/// The scheduler wakes at least this often, so a clock change is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Job {
    Backup(usize),
    Compaction,
}

/// Runs the schedule until `shutdown` completes, then winds down.
pub async fn serve(config: Arc<Config>, runner: Arc<Runner>, shutdown: impl Future<Output = ()>) {
    let (interrupt, interrupted) = watch::channel(false);
    let mut running: HashMap<Job, JoinHandle<()>> = HashMap::new();
    let mut due = initial_due(&config, Local::now());
    tokio::pin!(shutdown);

    loop {
        let now = Local::now();
        let sleep = due
            .values()
            .min()
            .map_or(MAX_SLEEP, |next| {
                (*next - now).to_std().unwrap_or(Duration::ZERO)
            })
            .min(MAX_SLEEP);
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(sleep) => {}
        }

        let now = Local::now();
        let ready: Vec<Job> = due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(job, _)| job.clone())
            .collect();
        for job in ready {
            match next_time(&config, &job, now) {
                Some(next) => due.insert(job.clone(), next),
                None => due.remove(&job),
            };
            if running
                .get(&job)
                .is_some_and(|handle| !handle.is_finished())
            {
                warn!(job = %describe(&config, &job), "still running from its last start; skipped");
                continue;
            }
            let handle = start(&config, &runner, &job, interrupted.clone());
            running.insert(job, handle);
        }
    }

    wind_down(&config, running, &interrupt).await;
}

fn initial_due(config: &Config, now: DateTime<Local>) -> HashMap<Job, DateTime<Local>> {
    let jobs = (0..config.backups.len())
        .map(Job::Backup)
        .chain(config.compaction.iter().map(|_| Job::Compaction));
    jobs.filter_map(|job| next_time(config, &job, now).map(|at| (job, at)))
        .collect()
}

fn next_time(config: &Config, job: &Job, after: DateTime<Local>) -> Option<DateTime<Local>> {
    match job {
        Job::Backup(index) => next_run(&config.backups[*index].schedule, after),
        Job::Compaction => config
            .compaction
            .as_ref()
            .and_then(|cron| next_run(cron, after)),
    }
}

fn describe(config: &Config, job: &Job) -> String {
    match job {
        Job::Backup(index) => format!("backup {}", config.backups[*index].name),
        Job::Compaction => "compaction".into(),
    }
}

fn start(
    config: &Arc<Config>,
    runner: &Arc<Runner>,
    job: &Job,
    interrupt: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (config, runner, job) = (config.clone(), runner.clone(), job.clone());
    tokio::spawn(async move {
        match job {
            Job::Backup(index) => {
                runner.backup(&config.backups[index], interrupt).await;
            }
            Job::Compaction => {
                runner.compact(interrupt).await;
            }
        }
    })
}

/// Waits for running jobs for the grace period, then interrupts them and
/// waits for their checkpoints.
async fn wind_down(
    config: &Config,
    running: HashMap<Job, JoinHandle<()>>,
    interrupt: &watch::Sender<bool>,
) {
    let mut handles: Vec<JoinHandle<()>> = running
        .into_values()
        .filter(|handle| !handle.is_finished())
        .collect();
    if handles.is_empty() {
        info!("stopped");
        return;
    }
    let (running, grace) = (handles.len(), config.grace_period);
    info!(running, ?grace, "stopping; letting running backups finish");
    if tokio::time::timeout(config.grace_period, join_all(&mut handles))
        .await
        .is_ok()
    {
        info!("stopped");
        return;
    }

    warn!("grace period over; interrupting borg so it can write a checkpoint");
    let _ = interrupt.send(true);
    if tokio::time::timeout(CHECKPOINT_TIME, join_all(&mut handles))
        .await
        .is_err()
    {
        warn!("borg did not stop after the interrupt; abandoning it");
    }
    info!("stopped");
}

/// Awaits every handle, dropping each once done so that a timeout that
/// cuts this short never leaves a finished handle to be polled again.
async fn join_all(handles: &mut Vec<JoinHandle<()>>) {
    while let Some(handle) = handles.last_mut() {
        let _ = handle.await;
        handles.pop();
    }
}
