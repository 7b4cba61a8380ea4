//! A full disk: writes fail with a clear error and nothing stored is lost.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{PASSPHRASE, run, skip, spawn_daemon};

/// A small tmpfs, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_fails_writes_clearly_and_loses_nothing() {
    let disk = SmallDisk(tempfile::TempDir::new().unwrap());
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs"])
        .arg(disk.0.path())
        .status();
    if !mounted.is_ok_and(|status| status.success()) {
        skip("cannot mount a tmpfs (needs root)");
        return;
    }
    let storage = disk.0.path().join("storage");
    fs::create_dir(&storage).unwrap();
    fs::set_permissions(&storage, fs::Permissions::from_mode(0o700)).unwrap();
    let work = tempfile::TempDir::new().unwrap();
    let config = work.path().join("credstore.toml");
    fs::write(
        &config,
        format!(
            "storage_path = \"{}\"\nlisten_address = \"127.0.0.1:0\"\n",
            storage.display()
        ),
    )
    .unwrap();
    let passphrase = work.path().join("passphrase");
    fs::write(&passphrase, PASSPHRASE).unwrap();
    let (mut child, log, port) = spawn_daemon(&config, &[]);

    let admin_dir = work.path().join("admin");
    let cred = |args: &[&str], stdin: &[u8]| {
        let mut command = Command::new(crate::support::CRED);
        command
            .arg("--config-dir")
            .arg(&admin_dir)
            .arg("--passphrase-file")
            .arg(&passphrase);
        command.args(args);
        run(&mut command, stdin)
    };
    let port = port.to_string();
    cred(
        &[
            "configure",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--no-tls",
        ],
        b"",
    )
    .ok();
    cred(&["store", "unlock"], b"").ok();

    // Fill the disk with 64 KiB values until a write fails.
    let value: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let mut stored = Vec::new();
    let failure = loop {
        let run = cred(&["item", "create", "-d", "filler", "--value-stdin"], &value);
        if run.code != 0 {
            break run;
        }
        stored.push(run.stdout_text().trim().to_owned());
        assert!(stored.len() < 64, "the disk never filled");
    };
    assert!(!stored.is_empty());
    assert!(failure.stderr.contains("storage is full"), "{failure:?}");
    let update = cred(
        &["item", "update", &stored[0], "--value-stdin"],
        b"new value",
    );
    assert_ne!(update.code, 0);

    // Everything stored before reads back, also after a restart.
    for id in &stored {
        assert_eq!(cred(&["item", "read", id], b"").ok().stdout, value);
    }
    let listed = cred(&["item", "list", "-q"], b"").ok().stdout_text();
    assert_eq!(listed.lines().count(), stored.len());
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, _, port) = spawn_daemon(&config, &[]);
    let port = port.to_string();
    cred(
        &[
            "configure",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--no-tls",
        ],
        b"",
    )
    .ok();
    cred(&["store", "unlock"], b"").ok();
    for id in &stored {
        assert_eq!(cred(&["item", "read", id], b"").ok().stdout, value);
    }
    assert!(
        log.lock().unwrap().contains("No space left"),
        "{}",
        log.lock().unwrap()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
