//! borgd against Debian's real borg, in temporary directories.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const BORGD: &str = env!("CARGO_BIN_EXE_borgd");
const PASSPHRASE: &str = "borgd-test-passphrase-41c7";

/// A scratch directory with a passphrase file, sample data and a place
/// for the repository, borg's own state and borgd's state file.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Self {
        let borg = Command::new("borg").arg("--version").output();
        assert!(
            borg.is_ok_and(|output| output.status.success()),
            "borg is not installed; contrib/test.sh installs it (apt-get install borgbackup)"
        );
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("passphrase"), format!("{PASSPHRASE}\n")).unwrap();
        fs::create_dir_all(dir.path().join("data/sub")).unwrap();
        fs::write(dir.path().join("data/sub/file.bin"), sample_bytes()).unwrap();
        fs::write(dir.path().join("data/skip.log"), "excluded\n").unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn repo(&self) -> String {
        self.path("repo").display().to_string()
    }

    /// Writes a config: `encryption` and `backups` are TOML fragments.
    fn config(&self, encryption: &str, backups: &str) -> PathBuf {
        let text = format!(
            "state_file = \"{}\"\nlock_wait = 2\ngrace_period = 2\n\n\
             [repository]\nlocation = \"{}\"\n\n\
             {encryption}\n\n{backups}",
            self.path("state.json").display(),
            self.repo(),
        );
        let path = self.path("borgd.toml");
        fs::write(&path, text).unwrap();
        path
    }

    fn file_encryption(&self) -> String {
        format!(
            "[encryption]\npassphrase_file = \"{}\"",
            self.path("passphrase").display()
        )
    }

    /// Runs `borgd ARGS` to completion.
    fn borgd(&self, args: &[&str]) -> Output {
        self.borgd_command(args).output().unwrap()
    }

    fn borgd_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BORGD);
        command
            .args(args)
            .env("BORG_BASE_DIR", self.path("borg-base"))
            .env("NO_COLOR", "1")
            .env_remove("BORG_PASSPHRASE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::null());
        command
    }

    /// Runs borg directly, as the test's own check, with the passphrase.
    fn borg(&self, args: &[&str]) -> Output {
        Command::new("borg")
            .args(args)
            .env("BORG_PASSPHRASE", PASSPHRASE)
            .env("BORG_BASE_DIR", self.path("borg-base"))
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    fn archives(&self) -> Vec<String> {
        let output = self.borg(&["list", "--json", &self.repo()]);
        if !output.status.success() {
            return Vec::new();
        }
        let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let archives = listing["archives"].as_array().unwrap();
        archives
            .iter()
            .map(|archive| archive["name"].as_str().unwrap().to_owned())
            .collect()
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.path("state.json")).unwrap()).unwrap()
    }

    fn init_repo(&self) {
        let output = self.borg(&["init", "--encryption", "repokey", &self.repo()]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn sample_bytes() -> Vec<u8> {
    (0..20_000u32).map(|i| (i % 251) as u8).collect()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn paths_and_command_backups(scratch: &Scratch) -> String {
    format!(
        "[[backup]]\nname = \"files\"\nschedule = \"0 2 * * *\"\npaths = [\"{}\"]\n\
         exclude = [\"*.log\"]\n\n\
         [[backup]]\nname = \"dump\"\nschedule = \"0 3 * * *\"\n\
         command = [\"sh\", \"-c\", \"printf dumped-contents\"]\n",
        scratch.path("data").display()
    )
}

/// Runs both backups once with `encryption` and checks what borg stored.
fn once_stores_both_backups(scratch: &Scratch, encryption: &str, env: &[(&str, &Path)]) {
    let config = scratch.config(encryption, &paths_and_command_backups(scratch));
    let mut command = scratch.borgd_command(&[config.to_str().unwrap(), "--once"]);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", text(&output));

    let archives = scratch.archives();
    assert_eq!(archives.len(), 2, "{archives:?}");
    let files = archives
        .iter()
        .find(|name| name.starts_with("files-"))
        .unwrap();
    let stamp = files.strip_prefix("files-").unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S").is_ok(),
        "{files}"
    );

    let extract = scratch.path("extract");
    fs::create_dir_all(&extract).unwrap();
    let archive = format!("{}::{files}", scratch.repo());
    let output = Command::new("borg")
        .args(["extract", &archive])
        .env("BORG_PASSPHRASE", PASSPHRASE)
        .env("BORG_BASE_DIR", scratch.path("borg-base"))
        .current_dir(&extract)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let inside = scratch.path("data").strip_prefix("/").unwrap().to_owned();
    assert_eq!(
        fs::read(extract.join(&inside).join("sub/file.bin")).unwrap(),
        sample_bytes()
    );
    assert!(
        !extract.join(&inside).join("skip.log").exists(),
        "the exclude was ignored"
    );

    let dump = archives
        .iter()
        .find(|name| name.starts_with("dump-"))
        .unwrap();
    let output = scratch.borg(&[
        "extract",
        "--stdout",
        &format!("{}::{dump}", scratch.repo()),
    ]);
    assert_eq!(output.stdout, b"dumped-contents");

    let state = scratch.state();
    assert_eq!(state["backups"]["files"]["outcome"], "success");
    assert_eq!(state["backups"]["files"]["archive"], files.as_str());
    assert!(
        state["backups"]["files"]["sizes"]["original"]
            .as_u64()
            .unwrap()
            >= 20_000
    );
}

#[test]
fn once_with_a_passphrase_file_initialises_and_backs_up() {
    let scratch = Scratch::new();
    once_stores_both_backups(&scratch, &scratch.file_encryption(), &[]);
    let status = scratch.borgd(&["status", scratch.path("borgd.toml").to_str().unwrap()]);
    let status = text(&status);
    assert!(
        status.contains("files: success") && status.contains("dump: success"),
        "{status}"
    );
}

#[test]
fn once_with_a_passcommand() {
    let scratch = Scratch::new();
    let encryption = format!(
        "[encryption]\npasscommand = \"cat {}\"",
        scratch.path("passphrase").display()
    );
    once_stores_both_backups(&scratch, &encryption, &[]);
}

#[test]
fn once_with_a_systemd_credential() {
    let scratch = Scratch::new();
    let credentials = scratch.path("credentials");
    fs::create_dir_all(&credentials).unwrap();
    fs::copy(
        scratch.path("passphrase"),
        credentials.join("borg-passphrase"),
    )
    .unwrap();
    let encryption = "[encryption]\nsystemd_credential = \"borg-passphrase\"";
    once_stores_both_backups(
        &scratch,
        encryption,
        &[("CREDENTIALS_DIRECTORY", &credentials)],
    );
}

/// Starts `borgd CONFIG --once` and collects its log.
fn spawn_borgd(scratch: &Scratch, args: &[&str]) -> (Child, Arc<Mutex<String>>) {
    let mut child = scratch
        .borgd_command(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    (child, log)
}

fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after_name = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or_default();
            let ppid = after_name
                .split_whitespace()
                .nth(1)
                .and_then(|field| field.parse().ok());
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains(name)
        })
        .collect()
}

#[test]
fn the_passphrase_is_in_no_environment_and_no_argv() {
    let scratch = Scratch::new();
    scratch.init_repo();
    let backups = "[[backup]]\nname = \"slow\"\nschedule = \"0 2 * * *\"\n\
                   command = [\"sh\", \"-c\", \"sleep 3; echo late\"]\n";
    let config = scratch.config(&scratch.file_encryption(), backups);
    let (mut child, log) = spawn_borgd(&scratch, &[config.to_str().unwrap(), "--once"]);

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut inspected = 0;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        for pid in children_named(child.id(), "create") {
            let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if environ.is_empty() {
                continue;
            }
            for (what, bytes) in [("environ", &environ), ("cmdline", &cmdline)] {
                let text = String::from_utf8_lossy(bytes);
                assert!(
                    !text.contains(PASSPHRASE),
                    "the passphrase is in borg's {what}"
                );
            }
            assert!(String::from_utf8_lossy(&environ).contains("BORG_PASSPHRASE_FD="));
            inspected += 1;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", log.lock().unwrap());
    assert!(inspected > 0, "never saw the borg child running");

    let own = fs::read(format!("/proc/{}/environ", std::process::id())).unwrap();
    assert!(!String::from_utf8_lossy(&own).contains(PASSPHRASE));
    assert!(
        !log.lock().unwrap().contains(PASSPHRASE),
        "the passphrase is in borgd's log"
    );
}

/// Runs `--once` expecting failure; answers its log and the error saved.
fn failing_once(scratch: &Scratch, encryption: &str, backups: &str) -> (String, String) {
    let config = scratch.config(encryption, backups);
    let output = scratch.borgd(&[config.to_str().unwrap(), "--once"]);
    assert!(
        !output.status.success(),
        "borgd succeeded:\n{}",
        text(&output)
    );
    let state = scratch.state();
    let result = state["backups"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(result["outcome"], "failure", "{result}");
    assert!(result.get("archive").is_none(), "{result}");
    (text(&output), result["error"].as_str().unwrap().to_owned())
}

fn one_paths_backup(scratch: &Scratch) -> String {
    format!(
        "[[backup]]\nname = \"files\"\nschedule = \"0 2 * * *\"\npaths = [\"{}\"]\n",
        scratch.path("data").display()
    )
}

#[test]
fn failures_are_named_and_leave_no_archive() {
    let scratch = Scratch::new();
    scratch.init_repo();
    let backups = one_paths_backup(&scratch);

    fs::write(scratch.path("wrong"), "not-the-passphrase").unwrap();
    let wrong = format!(
        "[encryption]\npassphrase_file = \"{}\"",
        scratch.path("wrong").display()
    );
    let (log, error) = failing_once(&scratch, &wrong, &backups);
    assert!(error.contains("wrong passphrase"), "{error}\n{log}");
    assert!(log.contains("backup failed"), "{log}");

    let failing = "[encryption]\npasscommand = \"false\"";
    let (_, error) = failing_once(&scratch, failing, &backups);
    assert!(error.contains("passcommand failed"), "{error}");

    let missing = format!(
        "[encryption]\npassphrase_file = \"{}\"",
        scratch.path("absent").display()
    );
    let (_, error) = failing_once(&scratch, &missing, &backups);
    assert!(error.contains("cannot read the passphrase file"), "{error}");

    let pre = format!("{backups}pre = [[\"false\"]]\n");
    let (_, error) = failing_once(&scratch, &scratch.file_encryption(), &pre);
    assert!(error.contains("pre hook"), "{error}");

    let failing_command = "[[backup]]\nname = \"dump\"\nschedule = \"0 2 * * *\"\n\
                           command = [\"sh\", \"-c\", \"echo partial; exit 3\"]\n";
    let (_, error) = failing_once(&scratch, &scratch.file_encryption(), failing_command);
    assert!(
        error.contains("backup command") && error.contains("deleted"),
        "{error}"
    );

    assert!(scratch.archives().is_empty(), "{:?}", scratch.archives());
}

#[test]
fn unreachable_repository_is_a_clear_failure() {
    let scratch = Scratch::new();
    let backups = one_paths_backup(&scratch);
    let config = scratch.config(&scratch.file_encryption(), &backups);
    let text_config = fs::read_to_string(&config).unwrap();
    let unreachable = text_config.replace(&scratch.repo(), "ssh://borg@127.0.0.1:1/./repo");
    fs::write(&config, unreachable).unwrap();

    let output = scratch.borgd(&[config.to_str().unwrap(), "--once"]);
    assert!(!output.status.success());
    let state = scratch.state();
    assert_eq!(state["backups"]["files"]["outcome"], "failure");
    let error = state["backups"]["files"]["error"].as_str().unwrap();
    assert!(
        !error.is_empty() && text(&output).contains("backup failed"),
        "{error}"
    );
}

#[test]
fn hooks_run_in_order_with_their_semantics() {
    let scratch = Scratch::new();
    let trace = scratch.path("trace");
    let hook = |word: &str| {
        format!(
            "[\"sh\", \"-c\", \"echo {word}-$BORGD_OUTCOME >> {}\"]",
            trace.display()
        )
    };
    let backups = format!(
        "{}pre = [{}, {}]\npost = [{}]\nfinally = [{}]\n",
        one_paths_backup(&scratch),
        hook("pre1"),
        hook("pre2"),
        hook("post"),
        hook("finally")
    );
    let config = scratch.config(&scratch.file_encryption(), &backups);
    let output = scratch.borgd(&[config.to_str().unwrap(), "--once"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        fs::read_to_string(&trace).unwrap(),
        "pre1-\npre2-\npost-\nfinally-success\n"
    );

    // A failing create: post is skipped, finally still runs.
    fs::remove_file(&trace).unwrap();
    let broken = backups.replace(
        &scratch.path("data").display().to_string(),
        "/nonexistent/path",
    );
    let broken = broken.replace("schedule", "exclude = []\nschedule");
    let config = scratch.config(&scratch.file_encryption(), &broken);
    let output = scratch.borgd(&[config.to_str().unwrap(), "--once"]);
    let trace_text = fs::read_to_string(&trace).unwrap();
    if output.status.success() {
        // borg 1.2 treats a missing path as a warning and still creates.
        assert_eq!(trace_text, "pre1-\npre2-\npost-\nfinally-success\n");
    } else {
        assert_eq!(trace_text, "pre1-\npre2-\nfinally-failure\n");
    }
}

#[test]
fn prune_keeps_what_keep_says() {
    let scratch = Scratch::new();
    scratch.init_repo();
    let data = scratch.path("data").display().to_string();
    for day in 1..=5 {
        let archive = format!("{}::files-2026-01-0{day}T12:00:00", scratch.repo());
        let timestamp = format!("2026-01-0{day}T12:00:00");
        let output = scratch.borg(&["create", "--timestamp", &timestamp, &archive, &data]);
        assert!(output.status.success(), "{}", text(&output));
    }
    let other = format!("{}::other-2026-01-01T12:00:00", scratch.repo());
    assert!(
        scratch
            .borg(&[
                "create",
                "--timestamp",
                "2026-01-01T12:00:00",
                &other,
                &data
            ])
            .status
            .success()
    );

    let backups = format!("{}keep = {{ daily = 3 }}\n", one_paths_backup(&scratch));
    let config = scratch.config(&scratch.file_encryption(), &backups);
    let output = scratch.borgd(&[config.to_str().unwrap(), "--once"]);
    assert!(output.status.success(), "{}", text(&output));

    let mut archives = scratch.archives();
    archives.sort();
    let today: Vec<&String> = archives
        .iter()
        .filter(|name| !name.contains("2026-01-0"))
        .collect();
    assert_eq!(today.len(), 1, "{archives:?}");
    let kept: Vec<&str> = archives
        .iter()
        .filter(|name| name.contains("2026-01-0"))
        .map(String::as_str)
        .collect();
    // Three daily slots: today's new archive, then Jan 5 and Jan 4; the
    // archive of another backup name is not touched.
    assert_eq!(
        kept,
        [
            "files-2026-01-04T12:00:00",
            "files-2026-01-05T12:00:00",
            "other-2026-01-01T12:00:00"
        ]
    );
}

#[test]
fn check_names_the_offending_backup_and_refuses_inline_passphrases() {
    let scratch = Scratch::new();
    let bad_cron =
        "[[backup]]\nname = \"nightly\"\nschedule = \"0 25 * * *\"\npaths = [\"/etc\"]\n";
    let config = scratch.config(&scratch.file_encryption(), bad_cron);
    let output = scratch.borgd(&["check", config.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("\"nightly\"") && text(&output).contains("0 25 * * *"),
        "{}",
        text(&output)
    );

    let config = scratch.config(
        "[encryption]\npassphrase = \"hunter2\"",
        &one_paths_backup(&scratch),
    );
    let output = scratch.borgd(&["check", config.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(text(&output).contains("passphrase_file") && !text(&output).contains("hunter2"));

    let shell = "[encryption]\npasscommand = \"cat ~/.borg-passphrase\"";
    let config = scratch.config(shell, &one_paths_backup(&scratch));
    let output = scratch.borgd(&["check", config.to_str().unwrap()]);
    assert!(
        !output.status.success() && text(&output).contains("without a shell"),
        "{}",
        text(&output)
    );

    let config = scratch.config(&scratch.file_encryption(), &one_paths_backup(&scratch));
    let output = scratch.borgd(&["check", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("next "), "{}", text(&output));
}

fn wait_for(log: &Mutex<String>, text: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !log.lock().unwrap().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in:\n{}",
            log.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(child: &Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

#[test]
fn the_schedule_runs_backups_and_never_overlaps_one() {
    let scratch = Scratch::new();
    // Every second (croner's optional seconds field), a backup lasting 3 s.
    let backups = "[[backup]]\nname = \"often\"\nschedule = \"* * * * * *\"\n\
                   command = [\"sh\", \"-c\", \"sleep 3; echo data\"]\n";
    let config = scratch.config(&scratch.file_encryption(), backups);
    let (mut child, log) = spawn_borgd(&scratch, &[config.to_str().unwrap()]);

    wait_for(&log, "backup finished", Duration::from_secs(60));
    wait_for(
        &log,
        "still running from its last start; skipped",
        Duration::from_secs(10),
    );
    terminate(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", log.lock().unwrap());
    assert!(!scratch.archives().is_empty());
    assert_eq!(scratch.state()["backups"]["often"]["outcome"], "success");
}

#[test]
fn sigterm_during_a_long_create_ends_within_the_grace_period() {
    let scratch = Scratch::new();
    scratch.init_repo();
    let backups = "[[backup]]\nname = \"long\"\nschedule = \"* * * * * *\"\n\
                   command = [\"sh\", \"-c\", \"echo start; sleep 120\"]\n";
    let config = scratch.config(&scratch.file_encryption(), backups);
    let (mut child, log) = spawn_borgd(&scratch, &[config.to_str().unwrap()]);
    wait_for(&log, "backup starting", Duration::from_secs(30));
    thread::sleep(Duration::from_millis(1500));

    terminate(&child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "borgd did not stop:\n{}",
            log.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", log.lock().unwrap());
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("grace period over") && log.contains("stopped"),
        "{log}"
    );
    assert_eq!(scratch.state()["backups"]["long"]["outcome"], "failure");
    let error = scratch.state()["backups"]["long"]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("interrupted"), "{error}");
}

#[test]
fn a_stale_lock_is_its_own_failure_and_broken_only_when_allowed() {
    let scratch = Scratch::new();
    scratch.init_repo();
    // A borg killed mid-create leaves its lock behind, held by a dead pid.
    let archive = format!("{}::killed", scratch.repo());
    let mut killed = Command::new("borg")
        .args(["create", &archive, "-"])
        .env("BORG_PASSPHRASE", PASSPHRASE)
        .env("BORG_BASE_DIR", scratch.path("borg-base"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = scratch.path("repo/lock.exclusive");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lock.exists() {
        assert!(Instant::now() < deadline, "borg never took its lock");
        thread::sleep(Duration::from_millis(50));
    }
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(lock.exists());

    let backups = one_paths_backup(&scratch);
    let (_, error) = failing_once(&scratch, &scratch.file_encryption(), &backups);
    assert!(
        error.contains("repository locked") && error.contains("break_stale_lock"),
        "{error}"
    );
    assert!(lock.exists(), "the lock was broken without permission");

    let config = scratch.config(&scratch.file_encryption(), &backups);
    let allowed = fs::read_to_string(&config)
        .unwrap()
        .replace("[repository]\n", "[repository]\nbreak_stale_lock = true\n");
    fs::write(&config, allowed).unwrap();
    let output = scratch.borgd(&[config.to_str().unwrap(), "--once"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(scratch.state()["backups"]["files"]["outcome"], "success");
}

#[test]
fn a_failed_run_does_not_stop_the_schedule() {
    let scratch = Scratch::new();
    let missing = format!(
        "[encryption]\npassphrase_file = \"{}\"",
        scratch.path("absent").display()
    );
    let backups = "[[backup]]\nname = \"often\"\nschedule = \"* * * * * *\"\n\
                   command = [\"sh\", \"-c\", \"echo data\"]\n";
    let config = scratch.config(&missing, backups);
    let (mut child, log) = spawn_borgd(&scratch, &[config.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.lock().unwrap().matches("backup failed").count() < 2 {
        assert!(Instant::now() < deadline, "{}", log.lock().unwrap());
        thread::sleep(Duration::from_millis(50));
    }
    terminate(&child);
    assert!(child.wait().unwrap().success());
    let error = scratch.state()["backups"]["often"]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("cannot read the passphrase file"), "{error}");
}

#[test]
fn once_compacts_when_compaction_is_scheduled() {
    let scratch = Scratch::new();
    let config = scratch.config(&scratch.file_encryption(), &one_paths_backup(&scratch));
    let scheduled = fs::read_to_string(&config).unwrap().replace(
        "[repository]\n",
        "[repository]\ncompaction_schedule = \"0 4 * * 0\"\n",
    );
    fs::write(&config, scheduled).unwrap();
    let output = scratch.borgd(&[config.to_str().unwrap(), "--once"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(scratch.state()["compaction"]["outcome"], "success");
    assert!(
        text(&output).contains("compaction finished"),
        "{}",
        text(&output)
    );
}
