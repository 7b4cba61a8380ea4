use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::items::value_file;
use super::*;

fn passphrase() -> SecretBytes {
    SecretBytes::copy_from(b"correct horse battery staple")
}

fn value(bytes: &[u8]) -> SecretBytes {
    SecretBytes::copy_from(bytes)
}

fn private_dir() -> TempDir {
    let dir = TempDir::new().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn unlocked_vault() -> (TempDir, Vault) {
    let dir = private_dir();
    let mut vault = Vault::open(dir.path()).unwrap();
    assert_eq!(vault.unlock(&passphrase()).unwrap(), Unlocked::Initialised);
    (dir, vault)
}

/// Reopens the vault in `dir` after dropping the previous handle.
fn reopen(dir: &Path, vault: Vault) -> Vault {
    drop(vault);
    let mut vault = Vault::open(dir).unwrap();
    vault.unlock(&passphrase()).unwrap();
    vault
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    let at = at % bytes.len();
    bytes[at] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

fn item_files(dir: &Path, id: Uuid) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir.join(ITEMS_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&id.to_string())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn round_trip_survives_reopen() {
    let (dir, mut vault) = unlocked_vault();
    let id = vault
        .create_item("borg passphrase", &value(b"s3cret\n"))
        .unwrap();
    assert_eq!(vault.read_item(id).unwrap().expose(), b"s3cret\n");

    let vault = reopen(dir.path(), vault);
    assert_eq!(vault.read_item(id).unwrap().expose(), b"s3cret\n");
    let listing = vault.list_items(Some("BORG")).unwrap();
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(listing.entries[0].description, "borg passphrase");
    assert!(
        vault
            .list_items(Some("nothing like it"))
            .unwrap()
            .entries
            .is_empty()
    );
}

#[test]
fn wrong_passphrase_is_refused() {
    let (dir, vault) = unlocked_vault();
    drop(vault);
    let mut vault = Vault::open(dir.path()).unwrap();
    let err = vault.unlock(&value(b"not the passphrase")).unwrap_err();
    assert!(matches!(err, VaultError::WrongPassphrase), "{err}");
    assert!(vault.is_locked());
    assert!(matches!(
        vault.list_items(None).unwrap_err(),
        VaultError::Locked
    ));
}

#[test]
fn admin_check_and_lock() {
    let (_dir, mut vault) = unlocked_vault();
    vault.verify_admin(&passphrase()).unwrap();
    assert!(matches!(
        vault.verify_admin(&value(b"nope")),
        Err(VaultError::WrongPassphrase)
    ));
    assert_eq!(
        vault.unlock(&passphrase()).unwrap(),
        Unlocked::AlreadyUnlocked
    );
    assert!(matches!(
        vault.unlock(&value(b"nope")),
        Err(VaultError::WrongPassphrase)
    ));

    vault.lock();
    assert!(matches!(
        vault.verify_admin(&passphrase()),
        Err(VaultError::Locked)
    ));
    assert_eq!(vault.unlock(&passphrase()).unwrap(), Unlocked::Unlocked);
}

#[test]
fn update_keeps_bounded_history() {
    let (dir, mut vault) = unlocked_vault();
    let id = vault.create_item("rotating", &value(b"v1")).unwrap();
    for n in 2..=HISTORY_LEN + 3 {
        vault
            .update_item(id, &value(format!("v{n}").as_bytes()))
            .unwrap();
    }
    let last = HISTORY_LEN as u64 + 3;
    assert_eq!(
        vault.read_item(id).unwrap().expose(),
        format!("v{last}").as_bytes()
    );

    let record = vault.item(id).unwrap();
    assert_eq!(record.history.len(), HISTORY_LEN);
    let previous = vault.read_item_generation(id, last - 1).unwrap();
    assert_eq!(previous.expose(), format!("v{}", last - 1).as_bytes());
    assert!(vault.read_item_generation(id, 1).is_err());
    // One record file plus the current and HISTORY_LEN previous values.
    assert_eq!(item_files(dir.path(), id).len(), 1 + 1 + HISTORY_LEN);
}

#[test]
fn delete_removes_every_file_or_nothing() {
    let (dir, mut vault) = unlocked_vault();
    let kept = vault.create_item("kept", &value(b"a")).unwrap();
    let gone = vault.create_item("gone", &value(b"b")).unwrap();
    vault.update_item(gone, &value(b"c")).unwrap();

    let missing = Uuid::new_v4();
    assert!(matches!(
        vault.delete_items(&[gone, missing]),
        Err(VaultError::NotFound { .. })
    ));
    assert_eq!(vault.read_item(gone).unwrap().expose(), b"c");

    vault.delete_items(&[gone]).unwrap();
    assert!(item_files(dir.path(), gone).is_empty());
    assert!(matches!(
        vault.read_item(gone),
        Err(VaultError::NotFound { .. })
    ));
    assert_eq!(vault.read_item(kept).unwrap().expose(), b"a");
}

#[test]
fn flipped_byte_in_any_item_file_fails_integrity() {
    let (dir, mut vault) = unlocked_vault();
    let id = vault
        .create_item("target", &value(b"the real value"))
        .unwrap();
    let files = item_files(dir.path(), id);
    assert_eq!(files.len(), 2);

    for file in files {
        let original = fs::read(&file).unwrap();
        for at in [0, 17, original.len() / 2, original.len() - 2] {
            flip_byte(&file, at);
            match vault.read_item(id) {
                Err(VaultError::Integrity { .. }) => {}
                other => panic!("flip at {at} of {} gave {other:?}", file.display()),
            }
            fs::write(&file, &original).unwrap();
        }
    }
    assert_eq!(vault.read_item(id).unwrap().expose(), b"the real value");
}

#[test]
fn flipped_byte_in_identity_file_fails_integrity() {
    let (dir, vault) = unlocked_vault();
    drop(vault);
    let identity = dir.path().join(IDENTITY_FILE);
    let original = fs::read(&identity).unwrap();
    for at in (0..original.len()).step_by(7) {
        flip_byte(&identity, at);
        let mut vault = Vault::open(dir.path()).unwrap();
        let err = vault.unlock(&passphrase()).unwrap_err();
        assert!(
            matches!(err, VaultError::Integrity { .. }),
            "flip at {at}: {err}"
        );
        fs::write(&identity, &original).unwrap();
    }
    let mut vault = Vault::open(dir.path()).unwrap();
    vault.unlock(&passphrase()).unwrap();
}

#[test]
fn record_under_another_name_is_rejected() {
    let (dir, mut vault) = unlocked_vault();
    let first = vault.create_item("first", &value(b"one")).unwrap();
    let second = vault.create_item("second", &value(b"two")).unwrap();
    let items = dir.path().join(ITEMS_DIR);
    fs::copy(
        items.join(record_file(first)),
        items.join(record_file(second)),
    )
    .unwrap();

    let err = vault.read_item(second).unwrap_err();
    assert!(matches!(err, VaultError::Integrity { .. }), "{err}");
    assert_eq!(
        vault.list_items(None).unwrap().damaged,
        vec![record_file(second)]
    );
}

#[test]
fn value_swapped_from_another_item_is_rejected() {
    let (dir, mut vault) = unlocked_vault();
    let first = vault.create_item("first", &value(b"one")).unwrap();
    let second = vault.create_item("second", &value(b"two")).unwrap();
    let items = dir.path().join(ITEMS_DIR);
    fs::copy(
        items.join(value_file(first, 1)),
        items.join(value_file(second, 1)),
    )
    .unwrap();

    assert!(matches!(
        vault.read_item(second),
        Err(VaultError::Integrity { .. })
    ));
}

#[test]
fn replayed_older_record_is_refused() {
    let (dir, mut vault) = unlocked_vault();
    let id = vault.create_item("replayed", &value(b"old")).unwrap();
    let record_path = dir.path().join(ITEMS_DIR).join(record_file(id));
    let old_record = fs::read(&record_path).unwrap();
    vault.update_item(id, &value(b"new")).unwrap();

    // An old but authentic record points at the old, still kept generation;
    // the manifest knows it is stale, while running and after a restart.
    fs::write(&record_path, &old_record).unwrap();
    assert!(matches!(
        vault.read_item(id),
        Err(VaultError::Integrity { .. })
    ));
    let vault = reopen(dir.path(), vault);
    assert!(matches!(
        vault.read_item(id),
        Err(VaultError::Integrity { .. })
    ));
    assert_eq!(
        vault.list_items(None).unwrap().damaged,
        vec![record_file(id)]
    );
    // Nothing newer was thrown away as an orphan: the new value is intact.
    assert!(dir.path().join(ITEMS_DIR).join(value_file(id, 2)).exists());
}

#[test]
fn a_deleted_clients_record_put_back_stays_revoked() {
    let (dir, mut vault) = unlocked_vault();
    let (id, secret) = vault.create_client("revoked", &[]).unwrap();
    let record_path = dir.path().join(CLIENTS_DIR).join(record_file(id));
    let saved = fs::read(&record_path).unwrap();
    vault.delete_clients(&[id]).unwrap();
    fs::write(&record_path, saved).unwrap();

    assert!(matches!(
        vault.verify_client(id, &secret),
        Err(VaultError::BadClientCredentials)
    ));
    let vault = reopen(dir.path(), vault);
    assert!(matches!(
        vault.verify_client(id, &secret),
        Err(VaultError::BadClientCredentials)
    ));
    assert!(vault.list_clients().unwrap().entries.is_empty());
}

#[test]
fn a_vault_that_lost_its_identity_or_version_is_never_initialised_again() {
    let (dir, mut vault) = unlocked_vault();
    vault.create_item("precious", &value(b"v")).unwrap();
    drop(vault);

    let identity = dir.path().join(IDENTITY_FILE);
    let saved = fs::read(&identity).unwrap();
    fs::remove_file(&identity).unwrap();
    let mut vault = Vault::open(dir.path()).unwrap();
    assert!(vault.is_initialised());
    let err = vault
        .unlock(&value(b"an attacker's passphrase"))
        .unwrap_err();
    assert!(matches!(err, VaultError::Integrity { .. }), "{err}");
    drop(vault);
    fs::write(&identity, saved).unwrap();

    fs::remove_file(dir.path().join(VERSION_FILE)).unwrap();
    let err = Vault::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("VERSION is missing"), "{err}");
    fs::write(dir.path().join(VERSION_FILE), "0\n").unwrap();
    assert!(Vault::open(dir.path()).is_err());
}

#[test]
fn a_directory_with_foreign_files_is_not_made_a_vault() {
    let dir = private_dir();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = Vault::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn special_files_are_refused_without_blocking() {
    let (dir, mut vault) = unlocked_vault();
    let fifo = vault.create_item("fifo", &value(b"a")).unwrap();
    let link = vault.create_item("link", &value(b"b")).unwrap();
    let items = dir.path().join(ITEMS_DIR);

    fs::remove_file(items.join(record_file(fifo))).unwrap();
    rustix::fs::mkfifoat(rustix::fs::CWD, items.join(record_file(fifo)), 0o600.into()).unwrap();
    assert!(matches!(
        vault.read_item(fifo),
        Err(VaultError::Integrity { .. })
    ));

    fs::remove_file(items.join(record_file(link))).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", items.join(record_file(link))).unwrap();
    assert!(matches!(
        vault.read_item(link),
        Err(VaultError::Integrity { .. })
    ));

    // Damaged items can still be deleted, every file of theirs with them.
    vault.delete_items(&[fifo, link]).unwrap();
    assert!(item_files(dir.path(), fifo).is_empty() && item_files(dir.path(), link).is_empty());
}

#[test]
fn a_missing_manifest_is_an_integrity_error() {
    let (dir, vault) = unlocked_vault();
    drop(vault);
    fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
    let mut vault = Vault::open(dir.path()).unwrap();
    assert!(matches!(
        vault.unlock(&passphrase()),
        Err(VaultError::Integrity { .. })
    ));
}

#[test]
fn second_open_of_the_directory_is_refused() {
    let (dir, vault) = unlocked_vault();
    let err = Vault::open(dir.path()).unwrap_err();
    assert!(matches!(err, VaultError::InUse { .. }), "{err}");
    drop(vault);
    Vault::open(dir.path()).unwrap();
}

#[test]
fn interrupted_write_leaves_items_intact() {
    let (dir, mut vault) = unlocked_vault();
    let id = vault.create_item("steady", &value(b"committed")).unwrap();
    let items = dir.path().join(ITEMS_DIR);
    // What a crash between write and rename leaves: a temporary file with a
    // half-written replacement, and a value file of a generation never
    // committed.
    let temp = items.join(format!(".{}.tmp-0123456789abcdef", record_file(id)));
    fs::write(&temp, b"{\"record\": {\"id\"").unwrap();
    let orphan = items.join(value_file(id, 2));
    fs::write(&orphan, b"half an age file").unwrap();

    assert_eq!(vault.read_item(id).unwrap().expose(), b"committed");
    let vault = reopen(dir.path(), vault);
    assert_eq!(vault.read_item(id).unwrap().expose(), b"committed");
    assert!(!temp.exists());

    let mut vault = vault;
    vault.update_item(id, &value(b"next")).unwrap();
    assert_eq!(vault.read_item(id).unwrap().expose(), b"next");
}

#[test]
fn clients_verify_and_revoke() {
    let (_dir, mut vault) = unlocked_vault();
    let (id, secret) = vault.create_client("host1", &[]).unwrap();
    vault.verify_client(id, &secret).unwrap();
    let wrong = value(b"guess");
    assert!(matches!(
        vault.verify_client(id, &wrong),
        Err(VaultError::BadClientCredentials)
    ));
    assert!(matches!(
        vault.verify_client(Uuid::new_v4(), &secret),
        Err(VaultError::BadClientCredentials)
    ));
    assert_eq!(vault.list_clients().unwrap().entries.len(), 1);

    let missing = Uuid::new_v4();
    assert!(matches!(
        vault.delete_clients(&[id, missing]),
        Err(VaultError::NotFound { .. })
    ));
    vault.verify_client(id, &secret).unwrap();
    vault.delete_clients(&[id]).unwrap();
    assert!(matches!(
        vault.verify_client(id, &secret),
        Err(VaultError::BadClientCredentials)
    ));
    assert!(vault.list_clients().unwrap().entries.is_empty());
}

#[test]
fn client_secret_is_not_stored() {
    let (dir, mut vault) = unlocked_vault();
    let (id, secret) = vault.create_client("host1", &[]).unwrap();
    let stored = fs::read(dir.path().join(CLIENTS_DIR).join(record_file(id))).unwrap();
    let text = String::from_utf8(stored).unwrap();
    assert!(!text.contains(std::str::from_utf8(secret.expose()).unwrap()));
}

#[test]
fn value_is_stored_encrypted() {
    let (dir, mut vault) = unlocked_vault();
    let plain = b"a very recognisable plaintext value";
    let id = vault.create_item("enc", &value(plain)).unwrap();
    for file in item_files(dir.path(), id) {
        let bytes = fs::read(file).unwrap();
        assert!(!bytes.windows(plain.len()).any(|window| window == plain));
    }
}

#[test]
fn newer_format_version_is_refused() {
    let (dir, vault) = unlocked_vault();
    drop(vault);
    fs::write(dir.path().join(VERSION_FILE), "2\n").unwrap();
    let err = Vault::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("upgrade credstore"), "{err}");
}

#[test]
fn open_directory_is_refused() {
    let dir = private_dir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let err = Vault::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("chmod 700"), "{err}");
    let err = Vault::open(&dir.path().join("missing")).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn oversized_value_is_refused() {
    let (_dir, mut vault) = unlocked_vault();
    let big = SecretBytes::new(vec![0; MAX_VALUE_LEN + 1]);
    assert!(matches!(
        vault.create_item("big", &big),
        Err(VaultError::Invalid(_))
    ));
}

#[test]
fn binding_is_kept_refused_elsewhere_cleared_by_unbind_and_not_undone_by_replay() {
    let (dir, mut vault) = unlocked_vault();
    let id = vault.create_item("bound", &value(b"v")).unwrap();
    let record_path = dir.path().join(ITEMS_DIR).join(record_file(id));
    let unbound_record = fs::read(&record_path).unwrap();
    let first: std::net::IpAddr = "10.1.0.2".parse().unwrap();
    let second: std::net::IpAddr = "10.2.0.2".parse().unwrap();

    vault.bind_item(id, first).unwrap();
    vault.bind_item(id, first).unwrap();
    assert!(matches!(
        vault.bind_item(id, second),
        Err(VaultError::PeerMismatch)
    ));
    let vault = reopen(dir.path(), vault);
    assert_eq!(vault.item(id).unwrap().bound_peer, Some(first));

    // Putting back the record from before the binding does not unbind.
    fs::write(&record_path, unbound_record).unwrap();
    assert!(matches!(vault.item(id), Err(VaultError::Integrity { .. })));
    drop(vault);
    let mut vault = Vault::open(dir.path()).unwrap();
    vault.unlock(&passphrase()).unwrap();
    vault.delete_items(&[id]).unwrap();

    let id = vault.create_item("rebound", &value(b"v")).unwrap();
    vault.bind_item(id, first).unwrap();
    vault.unbind_item(id).unwrap();
    vault.bind_item(id, second).unwrap();
    assert_eq!(vault.item(id).unwrap().bound_peer, Some(second));
}

#[test]
fn grants_are_checked_added_and_revoked() {
    let (_dir, mut vault) = unlocked_vault();
    let item = vault.create_item("granted", &value(b"v")).unwrap();
    let other = vault.create_item("other", &value(b"w")).unwrap();
    assert!(matches!(
        vault.create_client("bad", &[Uuid::new_v4()]),
        Err(VaultError::NotFound { .. })
    ));
    let (client, _) = vault.create_client("host", &[item]).unwrap();
    assert!(vault.is_granted(client, item).unwrap());
    assert!(!vault.is_granted(client, other).unwrap());

    vault.set_grants(client, &[other], true).unwrap();
    assert!(vault.is_granted(client, other).unwrap());
    vault.set_grants(client, &[item], false).unwrap();
    assert!(!vault.is_granted(client, item).unwrap());
    assert_eq!(vault.list_clients().unwrap().entries[0].grants, vec![other]);
}

#[test]
fn an_older_client_record_put_back_does_not_restore_revoked_grants() {
    let (dir, mut vault) = unlocked_vault();
    let item = vault.create_item("granted", &value(b"v")).unwrap();
    let (client, _) = vault.create_client("host", &[item]).unwrap();
    let path = dir.path().join(CLIENTS_DIR).join(record_file(client));
    let with_grant = fs::read(&path).unwrap();
    vault.set_grants(client, &[item], false).unwrap();
    fs::write(&path, with_grant).unwrap();
    assert!(matches!(
        vault.is_granted(client, item),
        Err(VaultError::Integrity { .. })
    ));
}

#[test]
fn the_recovery_recipient_cannot_be_rolled_back_or_removed() {
    let (dir, mut vault) = unlocked_vault();
    let first = age::x25519::Identity::generate().to_public().to_string();
    let second = age::x25519::Identity::generate().to_public().to_string();
    vault.set_recovery_recipient(&first).unwrap();
    let path = dir.path().join(RECOVERY_FILE);
    let old = fs::read(&path).unwrap();
    vault.set_recovery_recipient(&second).unwrap();
    assert_eq!(
        vault.recovery_recipient().unwrap().unwrap().to_string(),
        second
    );

    fs::write(&path, &old).unwrap();
    assert!(matches!(
        vault.create_item("x", &value(b"v")),
        Err(VaultError::Integrity { .. })
    ));
    fs::remove_file(&path).unwrap();
    assert!(matches!(
        vault.create_item("x", &value(b"v")),
        Err(VaultError::Integrity { .. })
    ));
}

#[test]
fn a_symlinked_items_directory_is_refused() {
    let (dir, vault) = unlocked_vault();
    drop(vault);
    let elsewhere = private_dir();
    let items = dir.path().join(ITEMS_DIR);
    fs::remove_dir_all(&items).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), &items).unwrap();
    let err = Vault::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("not a real directory"), "{err}");
}
