//! How the daemon starts, refuses to start, and speaks plain TCP in
//! development mode.

use std::fs;
use std::process::Command;

use crate::support::{Store, cred, run};

#[test]
fn start_up_errors_name_what_is_wrong() {
    let store = Store::start();
    let dir = store.dir.path();

    let missing = crate::support::credstore(&[dir.join("nope.toml").to_str().unwrap()]);
    assert!(
        missing.code != 0 && missing.stderr.contains("cannot read config"),
        "{missing:?}"
    );

    let write_config = |name: &str, body: &str| {
        let path = dir.join(name);
        fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let no_storage = write_config(
        "no-storage.toml",
        "storage_path = \"absent\"\nlisten_address = \"127.0.0.1:0\"\n",
    );
    let run = crate::support::credstore(&[&no_storage]).fails_with(1);
    assert!(run.stderr.contains("does not exist"), "{run:?}");

    let no_cert = write_config(
        "no-cert.toml",
        "storage_path = \"storage\"\nlisten_address = \"127.0.0.1:0\"\n\
         [tls]\ncert_file = \"gone.pem\"\nkey_file = \"tls/key.pem\"\n",
    );
    let run = crate::support::credstore(&[&no_cert]).fails_with(1);
    assert!(run.stderr.contains("gone.pem"), "{run:?}");

    let plain = write_config(
        "plain.toml",
        "storage_path = \"storage\"\nlisten_address = \"127.0.0.1:0\"\n",
    );
    let run = crate::support::credstore(&[&plain, "--production"]).fails_with(1);
    assert!(run.stderr.contains("production mode needs TLS"), "{run:?}");

    let typo = write_config(
        "typo.toml",
        "storage = \"storage\"\nlisten_address = \"127.0.0.1:0\"\n",
    );
    let run = crate::support::credstore(&[&typo]).fails_with(1);
    assert!(run.stderr.contains("not valid"), "{run:?}");
}

#[test]
fn second_daemon_on_the_same_storage_is_refused() {
    let store = Store::start();
    let config = store.config.to_str().unwrap();
    let run = crate::support::credstore(&[config]).fails_with(1);
    assert!(
        run.stderr.contains("in use by another credstore"),
        "{run:?}"
    );
    store.admin(&["store", "info"], b"").ok();
}

#[test]
fn development_store_without_tls_warns_and_serves() {
    let store = Store::start_with(false, &[]);
    assert!(store.log().contains("WITHOUT TLS"), "{}", store.log());
    store.unlock();
    let item = store.create_item("plain", b"over tcp");
    let (host, _, _) = store.host("host1");
    assert_eq!(
        cred(&host, &["item", "read", &item], b"").ok().stdout,
        b"over tcp"
    );
}

#[test]
fn tls_client_cannot_talk_to_a_plain_store_and_back() {
    let plain = Store::start_with(false, &[]);
    let tls = Store::start();

    let port = plain.port.to_string();
    let config = plain.dir.path().join("tls-to-plain");
    let args = [
        "configure",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--fingerprint",
        &tls.fingerprint,
    ];
    cred(&config, &args, b"").fails_with(3);

    let port = tls.port.to_string();
    let config = tls.dir.path().join("plain-to-tls");
    let args = [
        "configure",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--no-tls",
    ];
    let run = cred(&config, &args, b"").fails_with(3);
    assert!(run.stderr.contains("the store speaks TLS"), "{run:?}");
    assert!(!config.join("config.toml").exists());
    tls.admin(&["store", "info"], b"").ok();
}

#[test]
fn gen_cert_fingerprint_matches_openssl() {
    let store = Store::start();
    let cert = store.dir.path().join("tls/cert.pem");
    let openssl = run(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&cert),
        b"",
    )
    .ok();
    let printed = openssl.stdout_text();
    assert!(
        printed.trim().ends_with(&store.fingerprint),
        "{printed} vs {}",
        store.fingerprint
    );
    let key = store.dir.path().join("tls/key.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn restart_keeps_items_and_needs_a_new_unlock() {
    let mut store = Store::start();
    store.unlock();
    let item = store.create_item("durable", b"across restarts");
    store.restart();

    store.admin(&["item", "read", &item], b"").fails_with(5);
    store.unlock();
    assert_eq!(
        store.admin(&["item", "read", &item], b"").ok().stdout,
        b"across restarts"
    );
}

#[test]
fn the_daemon_is_not_dumpable_and_reports_its_memory_locking() {
    use std::os::unix::fs::MetadataExt;

    let store = Store::start();
    assert!(store.log().contains("process hardening"), "{}", store.log());
    assert!(store.log().contains("RLIMIT_MEMLOCK"), "{}", store.log());

    // Run a second daemon as nobody: a non-dumpable process's /proc files
    // belong to root, and another process of the same user cannot read
    // its memory or attach to it.
    let dir = tempfile::TempDir::new().unwrap();
    let storage = dir.path().join("storage");
    fs::create_dir(&storage).unwrap();
    let config = dir.path().join("credstore.toml");
    fs::write(
        &config,
        format!(
            "storage_path = \"{}\"\nlisten_address = \"127.0.0.1:0\"\n",
            storage.display()
        ),
    )
    .unwrap();
    for path in [dir.path(), &storage, &config] {
        rustix::fs::chown(path, Some(nobody_uid()), Some(nobody_gid())).unwrap();
    }
    fs::set_permissions(
        &storage,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let mut command = Command::new("setpriv");
    command.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"]);
    command.arg(crate::support::CREDSTORE).arg(&config);
    let (mut child, log, _) = crate::support::spawn_logged(command);
    let pid = child.id();

    let status = fs::metadata(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        status.uid(),
        0,
        "/proc of a dumpable process belongs to its user:\n{}",
        log.lock().unwrap()
    );
    let as_nobody = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args(args);
        run(&mut command, b"")
    };
    let mem = as_nobody(&[
        "dd",
        &format!("if=/proc/{pid}/mem"),
        "bs=1",
        "count=1",
        "status=none",
    ]);
    assert_ne!(
        mem.code, 0,
        "another process of the same user read the daemon's memory"
    );
    let environ = as_nobody(&["cat", &format!("/proc/{pid}/environ")]);
    assert_ne!(
        environ.code, 0,
        "another process of the same user read the daemon's environment"
    );
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|line| line.starts_with("Max core file size"))
        .unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");

    child.kill().unwrap();
    child.wait().unwrap();
}

fn nobody_uid() -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(65534)
}

fn nobody_gid() -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(65534)
}

#[test]
fn production_refuses_memory_it_cannot_lock_unless_allowed() {
    // As root mlock ignores RLIMIT_MEMLOCK, so the daemon runs as nobody
    // with a lock limit of zero.
    let store = Store::start();
    let config = store.config.to_str().unwrap();
    let run_as_nobody = |extra: &[&str]| {
        let mut command = Command::new("setpriv");
        command.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"]);
        command.args([
            "prlimit",
            "--memlock=0:0",
            crate::support::CREDSTORE,
            config,
            "--production",
        ]);
        command.args(extra);
        run(&mut command, b"")
    };
    let refused = run_as_nobody(&[]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("--allow-unlocked-memory"),
        "{refused:?}"
    );
    // Allowed, it gets past the memory check (and then stops at the
    // storage directory nobody cannot open, which is a different error).
    let allowed = run_as_nobody(&["--allow-unlocked-memory"]);
    assert!(
        !allowed.stderr.contains("--allow-unlocked-memory"),
        "{allowed:?}"
    );
    assert!(allowed.stderr.contains("can NOT be locked"), "{allowed:?}");
}

#[test]
fn sighup_reloads_the_certificate_and_open_connections_go_on() {
    use credstore::protocol::Response;
    use std::io::Write;

    let store = Store::start();
    let mut open = crate::frames::connect_ours(&store);
    let seal = crate::frames::seal(&mut open);

    let out = store.dir.path().join("tls");
    let replaced = crate::support::credstore(&[
        "gen-cert",
        "--host",
        "127.0.0.1",
        "--out",
        out.to_str().unwrap(),
        "--force",
    ])
    .ok();
    let text = replaced.stdout_text();
    let new = text
        .lines()
        .find_map(|line| line.strip_prefix("SHA-256 fingerprint: "))
        .unwrap();
    let pid = rustix::process::Pid::from_raw(store.child_pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !store.log().contains("certificate reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", store.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // The connection made before the reload is still served.
    open.write_all(&crate::frames::info_frame(Some(&seal)))
        .unwrap();
    assert!(matches!(
        crate::frames::read_response(&mut open),
        Response::Info(_)
    ));

    // New connections present the new certificate.
    let stale = store.admin(&["store", "info"], b"").fails_with(3);
    assert!(stale.stderr.contains(new), "{stale:?}");
    let port = store.port.to_string();
    let args = [
        "configure",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--fingerprint",
        new,
    ];
    cred(&store.admin_dir(), &args, b"").ok();
    store.admin(&["store", "info"], b"").ok();
}
