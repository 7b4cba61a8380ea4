//! The item and client life cycle through the real `cred` binary, and how
//! the store answers wrong, missing and revoked credentials.

use std::process::Command;

use crate::support::{CRED, PASSPHRASE, Store, cred, gen_cert, run};

const NO_SUCH_ITEM: &str = "00000000-0000-4000-8000-000000000000";

#[test]
fn item_and_client_life_cycle() {
    let store = Store::start();
    let info = store.admin(&["store", "info", "--json"], b"").ok();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["initialised"], false);
    assert_eq!(info["locked"], true);

    let unlock = store.admin(&["store", "unlock"], b"").ok();
    assert!(unlock.stdout_text().contains("initialised"), "{unlock:?}");

    // Values come back byte for byte: a trailing newline and binary bytes.
    let with_newline = store.create_item("borg host1", b"repo passphrase\n");
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let binary_id = store.create_item("binary blob", &binary);
    let read = store.admin(&["item", "read", &with_newline], b"").ok();
    assert_eq!(read.stdout, b"repo passphrase\n");
    assert_eq!(
        store.admin(&["item", "read", &binary_id], b"").ok().stdout,
        binary
    );

    let listed = store.admin(&["item", "list", "-q"], b"").ok().stdout_text();
    assert_eq!(listed.lines().count(), 2);
    let found = store.admin(&["item", "list", "--json", "host1"], b"").ok();
    let found: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["id"], with_newline.as_str());
    assert_eq!(found[0]["description"], "borg host1");

    store
        .admin(
            &["item", "update", &with_newline, "--value-stdin"],
            b"rotated",
        )
        .ok();
    assert_eq!(
        store
            .admin(&["item", "read", &with_newline], b"")
            .ok()
            .stdout,
        b"rotated"
    );

    let (host, client_id, _) = store.host("host1");
    assert_eq!(
        cred(&host, &["item", "read", &with_newline], b"")
            .ok()
            .stdout,
        b"rotated"
    );
    let clients = store.admin(&["client", "list", "--json"], b"").ok();
    let clients: serde_json::Value = serde_json::from_slice(&clients.stdout).unwrap();
    assert_eq!(clients[0]["id"], client_id.as_str());

    store
        .admin(&["client", "delete", &client_id, "--yes"], b"")
        .ok();
    cred(&host, &["item", "read", &with_newline], b"").fails_with(4);

    store
        .admin(&["item", "delete", &with_newline, &binary_id, "--yes"], b"")
        .ok();
    store
        .admin(&["item", "read", &with_newline], b"")
        .fails_with(6);
    assert!(
        store
            .admin(&["item", "list", "-q"], b"")
            .ok()
            .stdout
            .is_empty()
    );
}

#[test]
fn every_client_failure_is_the_same_unauthorized() {
    let store = Store::start();
    store.unlock();
    let item = store.create_item("target", b"value");
    let (host, client_id, _) = store.host("host1");
    let (revoked, revoked_id, _) = store.host("host2");
    store
        .admin(&["client", "delete", &revoked_id, "--yes"], b"")
        .ok();

    // A wrong secret for a real client id.
    let wrong = store.dir.path().join("host-wrong");
    store.configure(&wrong, true);
    let login = ["login", "--client-id", &client_id, "--client-secret-stdin"];
    cred(&wrong, &login, b"not-the-secret").fails_with(4);
    let config = std::fs::read_to_string(host.join("config.toml")).unwrap();
    let forged = config.replace("secret = \"", "secret = \"x");
    std::fs::write(wrong.join("config.toml"), forged).unwrap();

    let failures = [
        cred(&wrong, &["item", "read", &item], b"").fails_with(4),
        cred(&revoked, &["item", "read", &item], b"").fails_with(4),
        cred(&host, &["item", "read", NO_SUCH_ITEM], b"").fails_with(4),
    ];
    for failure in &failures {
        assert_eq!(
            failure.stderr, failures[0].stderr,
            "clients must not tell failures apart"
        );
        assert!(failure.stdout.is_empty());
    }

    // The administrator is told plainly.
    store
        .admin(&["item", "read", NO_SUCH_ITEM], b"")
        .fails_with(6);
    let wrong_passphrase = store.dir.path().join("wrong-passphrase");
    std::fs::write(&wrong_passphrase, "not the passphrase").unwrap();
    let args = [
        "--passphrase-file",
        wrong_passphrase.to_str().unwrap(),
        "item",
        "list",
    ];
    let run = cred(&store.admin_dir(), &args, b"").fails_with(4);
    assert!(run.stderr.contains("wrong passphrase"), "{run:?}");
}

#[test]
fn locked_store_answers_locked() {
    let store = Store::start();
    store.unlock();
    let item = store.create_item("kept", b"survives a lock");
    let (host, _, _) = store.host("host1");

    store.admin(&["store", "lock"], b"").ok();
    let run = cred(&host, &["item", "read", &item], b"").fails_with(5);
    assert!(run.stderr.contains("locked"), "{run:?}");
    store.admin(&["item", "list"], b"").fails_with(5);
    // Locking a locked store is already done.
    store.admin(&["store", "lock"], b"").ok();

    let wrong = store.dir.path().join("wrong-passphrase");
    std::fs::write(&wrong, "not the passphrase").unwrap();
    let unlock = [
        "--passphrase-file",
        wrong.to_str().unwrap(),
        "store",
        "unlock",
    ];
    cred(&store.admin_dir(), &unlock, b"").fails_with(4);
    store.admin(&["store", "info", "--json"], b"").ok();

    store.unlock();
    assert_eq!(
        cred(&host, &["item", "read", &item], b"").ok().stdout,
        b"survives a lock"
    );
}

#[test]
fn lock_needs_the_admin_passphrase() {
    let store = Store::start();
    store.unlock();
    let item = store.create_item("still readable", b"v");
    let (host, _, _) = store.host("host1");
    // A client cannot lock: cred only sends the admin passphrase for lock,
    // and without one there is nothing to send.
    let args = ["--passphrase-stdin", "store", "lock"];
    cred(&host, &args, b"guess").fails_with(4);
    cred(&host, &["item", "read", &item], b"").ok();
}

#[test]
fn mismatched_fingerprint_aborts_the_connection() {
    let store = Store::start();
    store.unlock();
    let item = store.create_item("pinned", b"v");
    let other = gen_cert(&store.dir.path().join("other-tls"));

    // configure refuses to save a pin the store does not match.
    let config = store.dir.path().join("mispinned");
    let port = store.port.to_string();
    let args = [
        "configure",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--fingerprint",
        &other,
    ];
    let configured = cred(&config, &args, b"").fails_with(3);
    assert!(
        configured.stderr.contains("does not match"),
        "{configured:?}"
    );
    assert!(!config.join("config.toml").exists());

    // A pin that stops matching later (the certificate was swapped).
    store.configure(&config, true);
    let saved = std::fs::read_to_string(config.join("config.toml")).unwrap();
    std::fs::write(
        config.join("config.toml"),
        saved.replace(&store.fingerprint, &other),
    )
    .unwrap();
    let passphrase = store.passphrase_file();
    let read = [
        "--passphrase-file",
        passphrase.to_str().unwrap(),
        "item",
        "read",
        &item,
    ];
    let run = cred(&config, &read, b"").fails_with(3);
    assert!(
        run.stderr.contains(&other) && run.stderr.contains(&store.fingerprint),
        "{run:?}"
    );
    assert!(run.stdout.is_empty());

    let bad = [
        "configure",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--fingerprint",
        "nothex",
    ];
    cred(&config, &bad, b"").fails_with(2);
}

#[test]
fn prompts_without_a_terminal_fail_at_once_naming_the_flag() {
    let store = Store::start();
    store.unlock();
    let item = store.create_item("d", b"v");
    let config = store.admin_dir();
    let config = config.to_str().unwrap();

    // setsid detaches cred from any controlling terminal the test runner has.
    let without_terminal = |args: &[&str]| {
        let mut command = Command::new("setsid");
        command
            .args(["--wait", CRED, "--config-dir", config])
            .args(args);
        command.env_remove("CRED_PASSPHRASE_FILE");
        run(&mut command, b"")
    };
    let lock = without_terminal(&["store", "lock"]).fails_with(2);
    assert!(lock.stderr.contains("--passphrase-file"), "{lock:?}");
    let passphrase = store.passphrase_file();
    let passphrase = passphrase.to_str().unwrap();
    let delete = without_terminal(&["--passphrase-file", passphrase, "item", "delete", &item]);
    assert!(delete.fails_with(2).stderr.contains("--yes"));
    let create = without_terminal(&["--passphrase-file", passphrase, "item", "create", "-d", "x"]);
    assert!(create.fails_with(2).stderr.contains("--value-stdin"));
    store.admin(&["item", "read", &item], b"").ok();
}

#[test]
fn secrets_never_reach_the_log_or_errors() {
    let store = Store::start();
    store.unlock();
    let value = "value-that-must-stay-secret-9f2c";
    let item = store.create_item("logged?", value.as_bytes());
    let (host, _, secret) = store.host("host1");
    let mut outputs = Vec::new();
    outputs.push(cred(&host, &["item", "read", &item], b"").ok().stderr);
    outputs.push(cred(&host, &["item", "read", NO_SUCH_ITEM], b"").stderr);
    outputs.push(store.admin(&["item", "list"], b"").ok().stdout_text());
    store.admin(&["store", "lock"], b"").ok();
    outputs.push(cred(&host, &["item", "read", &item], b"").stderr);

    let log = store.log();
    assert!(
        log.contains("item-read"),
        "the log is at debug level and saw the reads:\n{log}"
    );
    for text in outputs.iter().chain([&log]) {
        for secret in [PASSPHRASE, value, &secret] {
            assert!(!text.contains(secret), "a secret leaked into:\n{text}");
        }
    }
}

#[test]
fn config_files_are_private() {
    use std::os::unix::fs::PermissionsExt;

    let store = Store::start();
    store.unlock();
    let (host, _, _) = store.host("host1");
    let mode = std::fs::metadata(host.join("config.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(&host).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0);
}

#[test]
fn history_many_deletes_and_quiet_client_list() {
    let store = Store::start();
    store.unlock();
    let item = store.create_item("rotated", b"first");
    store
        .admin(&["item", "update", &item, "--value-stdin"], b"second")
        .ok();
    let old = store
        .admin(&["item", "read", &item, "--generation", "1"], b"")
        .ok();
    assert_eq!(old.stdout, b"first");
    store
        .admin(&["item", "read", &item, "--generation", "9"], b"")
        .fails_with(1);
    let (host, first, _) = store.host("host1");
    // History is for the administrator only.
    cred(
        &host,
        &[
            "--passphrase-stdin",
            "item",
            "read",
            &item,
            "--generation",
            "1",
        ],
        b"x",
    )
    .fails_with(4);

    let (_, second, _) = store.host("host2");
    let listed = store
        .admin(&["client", "list", "-q"], b"")
        .ok()
        .stdout_text();
    assert_eq!(listed.lines().count(), 2);
    store
        .admin(&["client", "delete", &first, &second, "--yes"], b"")
        .ok();
    assert!(
        store
            .admin(&["client", "list", "-q"], b"")
            .ok()
            .stdout
            .is_empty()
    );
}

#[test]
fn tampered_files_fail_reads_and_listings_with_integrity_errors() {
    let store = Store::start();
    store.unlock();
    let damaged = store.create_item("damaged", b"true value");
    let intact = store.create_item("intact", b"other value");
    let (host, _, _) = store.host("host1");
    let items = store.dir.path().join("storage/items");

    let value_file = items.join(format!("{damaged}.1.age"));
    let mut bytes = std::fs::read(&value_file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&value_file, bytes).unwrap();
    let run = store.admin(&["item", "read", &damaged], b"").fails_with(7);
    assert!(
        run.stdout.is_empty() && run.stderr.contains("integrity"),
        "{run:?}"
    );
    cred(&host, &["item", "read", &damaged], b"").fails_with(4);

    let record = items.join(format!("{damaged}.json"));
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, text.replace("\"damaged\"", "\"renamed\"")).unwrap();
    let listed = store.admin(&["item", "list", "-q"], b"").fails_with(7);
    assert_eq!(listed.stdout_text().trim(), intact);
    assert!(
        listed.stderr.contains(&format!("{damaged}.json")),
        "{listed:?}"
    );
    assert_eq!(
        cred(&host, &["item", "read", &intact], b"").ok().stdout,
        b"other value"
    );
}

#[test]
fn a_config_open_to_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;

    let store = Store::start();
    let config = store.admin_dir().join("config.toml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = store.admin(&["store", "info"], b"").fails_with(1);
    assert!(run.stderr.contains("chmod 600"), "{run:?}");
}

#[test]
fn failed_authentications_are_rate_limited_per_address() {
    let store = Store::start();
    store.unlock();
    let item = store.create_item("guarded", b"v");
    let (host, _, _) = store.host("host1");
    let wrong = store.dir.path().join("wrong-passphrase");
    std::fs::write(&wrong, "not the passphrase").unwrap();
    let guess = ["--passphrase-file", wrong.to_str().unwrap(), "item", "list"];
    for _ in 0..10 {
        let run = cred(&store.admin_dir(), &guess, b"").fails_with(4);
        assert!(run.stderr.contains("wrong passphrase"), "{run:?}");
    }

    // Now even right credentials from this address are refused unchecked.
    let refused = cred(&host, &["item", "read", &item], b"").fails_with(4);
    assert!(
        refused.stderr.contains("too many failed authentications"),
        "{refused:?}"
    );
    store.admin(&["item", "list"], b"").fails_with(4);
    store.admin(&["store", "info"], b"").ok();

    let log = store.log();
    let failures = log
        .lines()
        .filter(|line| line.contains("authentication failed"))
        .count();
    let warned = log
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("authentication failed"))
        .count();
    // One warning when failures start and one when the limit is reached.
    assert!(
        failures >= 10 && warned == 2,
        "{warned} warnings of {failures} failures:\n{log}"
    );
}

#[test]
fn one_address_cannot_hold_every_connection() {
    let store = Store::start_with_config("max_connections_per_peer = 4");
    let idle: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", store.port)).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    store.admin(&["store", "info"], b"").fails_with(3);
    drop(idle);
    std::thread::sleep(std::time::Duration::from_millis(200));
    store.admin(&["store", "info"], b"").ok();
}

#[test]
fn a_client_reads_only_what_it_was_granted() {
    let store = Store::start();
    store.unlock();
    let granted = store.create_item("granted", b"yes");
    let (host, client, _) = store.host("host1");
    let other = store.create_item("not granted", b"no");

    assert_eq!(
        cred(&host, &["item", "read", &granted], b"").ok().stdout,
        b"yes"
    );
    let refused = cred(&host, &["item", "read", &other], b"").fails_with(4);
    let missing = cred(&host, &["item", "read", NO_SUCH_ITEM], b"").fails_with(4);
    assert_eq!(
        refused.stderr, missing.stderr,
        "a grant must not reveal that an item exists"
    );

    store.admin(&["client", "grant", &client, &other], b"").ok();
    assert_eq!(
        cred(&host, &["item", "read", &other], b"").ok().stdout,
        b"no"
    );
    store
        .admin(&["client", "revoke", &client, &granted], b"")
        .ok();
    cred(&host, &["item", "read", &granted], b"").fails_with(4);
    let listed = store.admin(&["client", "list", "--json"], b"").ok();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["grants"], serde_json::json!([other]));
    store
        .admin(&["client", "grant", &client, NO_SUCH_ITEM], b"")
        .fails_with(6);
}
