//! A real Borg backup whose repository passphrase comes only from the store.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{CRED, Run, Store, run};

/// Runs borg with its state in `base` and the passphrase from `passcommand`.
fn borg(base: &Path, passcommand: &str, args: &[&str]) -> Run {
    let mut command = Command::new("borg");
    command
        .args(args)
        .env_remove("BORG_PASSPHRASE")
        .env_remove("BORG_PASSPHRASE_FD")
        .env("BORG_PASSCOMMAND", passcommand)
        .env("BORG_BASE_DIR", base)
        .env("BORG_DISPLAY_PASSPHRASE", "no");
    run(&mut command, b"")
}

fn require_borg() {
    let found = Command::new("borg").arg("--version").output();
    assert!(
        found.is_ok_and(|output| output.status.success()),
        "borg is not installed; contrib/test.sh installs it (apt-get install borgbackup)"
    );
}

#[test]
fn borg_takes_its_passphrase_from_the_store() {
    require_borg();
    let store = Store::start();
    store.unlock();
    let item = store.create_item("borg repo of host1", b"borg-repository-passphrase-7e1\n");
    let (host, _, _) = store.host("host1");

    let work = store.dir.path().join("borg");
    let sample = work.join("sample");
    fs::create_dir_all(sample.join("etc")).unwrap();
    fs::write(sample.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let repo = work.join("repo");
    let repo = repo.to_str().unwrap();
    let passcommand = format!("{CRED} --config-dir {} item read {item}", host.display());

    borg(&work, &passcommand, &["init", "-e", "repokey", repo]).ok();
    let archive = format!("{repo}::first");
    borg(
        &work,
        &passcommand,
        &["create", &archive, sample.to_str().unwrap()],
    )
    .ok();
    let listed = borg(&work, &passcommand, &["list", "--short", repo]).ok();
    assert_eq!(listed.stdout_text().trim(), "first");

    // The repository really is keyed by the stored passphrase.
    let wrong = "echo not-the-passphrase";
    assert_ne!(borg(&work, wrong, &["list", repo]).code, 0);

    // Locked store: the passcommand fails, so borg does and makes nothing.
    store.admin(&["store", "lock"], b"").ok();
    let locked = borg(
        &work,
        &passcommand,
        &["create", &format!("{repo}::second"), "."],
    );
    assert_ne!(locked.code, 0, "{locked:?}");
    store.unlock();
    let listed = borg(&work, &passcommand, &["list", "--short", repo]).ok();
    assert_eq!(listed.stdout_text().trim(), "first");
}
