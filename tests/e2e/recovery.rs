//! The recovery recipient, checked against the real age CLI, and export.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{Store, run};

fn age_decrypt(identity: &std::path::Path, file: &std::path::Path) -> Vec<u8> {
    let mut command = Command::new("age");
    command.arg("-d").arg("-i").arg(identity).arg(file);
    run(&mut command, b"").ok().stdout
}

#[test]
fn the_age_cli_recovers_values_with_the_recovery_identity() {
    let store = Store::start();
    store.unlock();
    let before = store.create_item("before", b"value from before\n");
    store
        .admin(&["item", "update", &before, "--value-stdin"], b"rotated")
        .ok();

    let identity = store.dir.path().join("recovery-identity.txt");
    let args = [
        "store",
        "recovery-recipient",
        "--identity-out",
        identity.to_str().unwrap(),
        "--yes",
    ];
    let set = store.admin(&args, b"").ok();
    assert!(
        set.stderr.contains("2 value file(s) re-encrypted"),
        "{set:?}"
    );
    let mode = fs::metadata(&identity).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let after = store.create_item("after", b"value from after");

    let items = store.dir.path().join("storage/items");
    assert_eq!(
        age_decrypt(&identity, &items.join(format!("{before}.2.age"))),
        b"rotated"
    );
    assert_eq!(
        age_decrypt(&identity, &items.join(format!("{before}.1.age"))),
        b"value from before\n"
    );
    assert_eq!(
        age_decrypt(&identity, &items.join(format!("{after}.1.age"))),
        b"value from after"
    );
    // The store still reads them with its own identity.
    assert_eq!(
        store.admin(&["item", "read", &before], b"").ok().stdout,
        b"rotated"
    );
}

#[test]
fn an_edited_or_swapped_recipient_is_refused_and_receives_nothing() {
    let store = Store::start();
    store.unlock();
    let identity = store.dir.path().join("id.txt");
    let args = [
        "store",
        "recovery-recipient",
        "--identity-out",
        identity.to_str().unwrap(),
        "--yes",
    ];
    store.admin(&args, b"").ok();
    let recovery = store.dir.path().join("storage/recovery.json");
    let original = fs::read_to_string(&recovery).unwrap();

    // An attacker's own recipient written in, keeping the JSON valid.
    let attacker = Store::start();
    attacker.unlock();
    let their_identity = attacker.dir.path().join("their.txt");
    let args = [
        "store",
        "recovery-recipient",
        "--identity-out",
        their_identity.to_str().unwrap(),
        "--yes",
    ];
    attacker.admin(&args, b"").ok();
    let theirs = fs::read_to_string(attacker.dir.path().join("storage/recovery.json")).unwrap();
    let their_recipient = theirs
        .split('"')
        .find(|part| part.starts_with("age1"))
        .unwrap()
        .to_owned();
    let ours = original
        .split('"')
        .find(|part| part.starts_with("age1"))
        .unwrap()
        .to_owned();

    for tampered in [original.replace(&ours, &their_recipient), theirs] {
        fs::write(&recovery, tampered).unwrap();
        let refused = store
            .admin(&["item", "create", "-d", "x", "--value-stdin"], b"secret")
            .fails_with(7);
        assert!(refused.stderr.contains("recovery recipient"), "{refused:?}");
        assert!(
            store
                .log()
                .contains("the recovery recipient failed its check"),
            "{}",
            store.log()
        );
    }
    let items = fs::read_dir(store.dir.path().join("storage/items"))
        .unwrap()
        .count();
    assert_eq!(
        items, 0,
        "a value was written while the recipient was refused"
    );

    fs::write(&recovery, original).unwrap();
    store
        .admin(&["item", "create", "-d", "x", "--value-stdin"], b"secret")
        .ok();
}

#[test]
fn export_writes_every_value_to_a_private_file() {
    let store = Store::start();
    store.unlock();
    let text = store.create_item("text", b"borg passphrase");
    let binary = store.create_item("binary", &[0, 159, 146, 150]);
    let out = store.dir.path().join("export.json");
    let path = out.to_str().unwrap();

    // Without --yes and without a terminal (setsid drops it), nothing is written.
    let passphrase = store.passphrase_file();
    let config = store.admin_dir();
    let mut command = Command::new("setsid");
    command
        .args(["--wait", crate::support::CRED, "--config-dir"])
        .arg(&config);
    command.args([
        "--passphrase-file",
        passphrase.to_str().unwrap(),
        "store",
        "export",
        "-o",
        path,
    ]);
    let unconfirmed = run(&mut command, b"");
    assert_eq!(unconfirmed.code, 2, "{unconfirmed:?}");
    assert!(!out.exists());

    store
        .admin(&["store", "export", "-o", path, "--pretty", "--yes"], b"")
        .ok();
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let exported: serde_json::Value = serde_json::from_slice(&fs::read(&out).unwrap()).unwrap();
    let find = |id: &str| {
        exported
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(find(&text)["value"], "borg passphrase");
    assert_eq!(find(&binary)["value_base64"], "AJ+Slg==");
    store
        .admin(&["store", "export", "-o", path, "--yes"], b"")
        .fails_with(1);
}
