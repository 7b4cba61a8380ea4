//! Production mode across real network paths: the store in one network
//! namespace, clients in others, joined by veth pairs. Addresses are
//! 10.x ones that exist only inside the namespaces this test makes; the
//! namespaces are removed when the test ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tempfile::TempDir;

use crate::support::{CRED, CREDSTORE, PASSPHRASE, Run, gen_cert, run, skip, spawn_logged};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace, removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> Self {
        let name = format!(
            "bc-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    /// A command that runs `program` inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins `a` and `b` with a veth pair on the /24 of `subnet` (such as
/// "10.77.1"): `a` gets .1, `b` gets .2.
fn link(a: &Netns, b: &Netns, subnet: &str) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (end_a, end_b) = (
        format!("bcv{}a{n}", std::process::id() % 10000),
        format!("bcv{}b{n}", std::process::id() % 10000),
    );
    ip(&[
        "link", "add", &end_a, "type", "veth", "peer", "name", &end_b,
    ]);
    ip(&["link", "set", &end_a, "netns", &a.name]);
    ip(&["link", "set", &end_b, "netns", &b.name]);
    for (ns, end, host) in [(a, &end_a, 1), (b, &end_b, 2)] {
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{subnet}.{host}/24"),
            "dev",
            end,
        ]);
        ip(&["-n", &ns.name, "link", "set", end, "up"]);
    }
}

fn netns_available() -> bool {
    let probe = Command::new("ip").args(["netns", "list"]).output();
    if probe.is_ok_and(|output| output.status.success()) {
        return true;
    }
    skip("ip netns is not available (needs root and iproute2)");
    false
}

/// A production credstore listening on every address of its namespace.
struct ProductionStore {
    dir: TempDir,
    ns: Netns,
    child: Child,
    log: Arc<Mutex<String>>,
    port: u16,
    fingerprint: String,
}

impl ProductionStore {
    fn start() -> Self {
        let dir = TempDir::new().unwrap();
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).unwrap();
        fs::set_permissions(
            &storage,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        fs::write(dir.path().join("passphrase"), PASSPHRASE).unwrap();
        let fingerprint = gen_cert(&dir.path().join("tls"));
        let config = dir.path().join("credstore.toml");
        let text = format!(
            "storage_path = \"{}\"\nlisten_address = \"0.0.0.0:0\"\n\
             [tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"tls/key.pem\"\n",
            storage.display()
        );
        fs::write(&config, text).unwrap();

        let ns = Netns::new("store");
        let mut command = ns.command(CREDSTORE);
        command.arg(&config).arg("--production");
        let (child, log, port) = spawn_logged(command);
        Self {
            dir,
            ns,
            child,
            log,
            port,
            fingerprint,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Runs cred inside `ns` against the store at `host`, with config `dir`.
    fn cred(&self, ns: &Netns, dir: &Path, args: &[&str], stdin: &[u8]) -> Run {
        let mut command = ns.command(CRED);
        command
            .arg("--config-dir")
            .arg(dir)
            .args(args)
            .env_remove("CRED_PASSPHRASE_FILE");
        run(&mut command, stdin)
    }

    fn configure(&self, ns: &Netns, dir: &Path, host: &str) -> Run {
        let port = self.port.to_string();
        let args = [
            "configure",
            "--host",
            host,
            "--port",
            &port,
            "--fingerprint",
            &self.fingerprint,
        ];
        self.cred(ns, dir, &args, b"")
    }

    fn passphrase_args(&self) -> Vec<String> {
        vec![
            "--passphrase-file".into(),
            self.dir.path().join("passphrase").display().to_string(),
        ]
    }

    fn config_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for ProductionStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin(store: &ProductionStore, ns: &Netns, dir: &Path, args: &[&str], stdin: &[u8]) -> Run {
    let passphrase = store.passphrase_args();
    let mut full: Vec<&str> = passphrase.iter().map(String::as_str).collect();
    full.extend(args);
    store.cred(ns, dir, &full, stdin)
}

#[test]
fn production_refuses_this_host_and_serves_another() {
    if !netns_available() {
        return;
    }
    let store = ProductionStore::start();
    let client = Netns::new("client");
    link(&store.ns, &client, "10.77.1");

    // From the store's own namespace, loopback and its interface address:
    // dropped before the handshake, so configure saves nothing.
    for host in ["127.0.0.1", "10.77.1.1"] {
        let dir = store.config_dir(&format!("same-host-{host}"));
        let refused = store.configure(&store.ns, &dir, host).fails_with(3);
        assert!(refused.stderr.contains("nothing saved"), "{refused:?}");
    }
    let log = store.log();
    assert!(log.contains("refused a connection from this host"), "{log}");

    // From another namespace: served.
    let dir = store.config_dir("remote");
    let configured = store.configure(&client, &dir, "10.77.1.1").ok();
    assert!(
        configured.stdout_text().contains("production mode"),
        "{configured:?}"
    );
    admin(&store, &client, &dir, &["store", "unlock"], b"").ok();
}

#[test]
fn items_bind_to_their_first_reader_until_unbound() {
    if !netns_available() {
        return;
    }
    let store = ProductionStore::start();
    let first = Netns::new("first");
    let second = Netns::new("second");
    link(&store.ns, &first, "10.78.1");
    link(&store.ns, &second, "10.78.2");

    let admin_dir = store.config_dir("admin");
    store.configure(&first, &admin_dir, "10.78.1.1").ok();
    admin(&store, &first, &admin_dir, &["store", "unlock"], b"").ok();
    let created = admin(
        &store,
        &first,
        &admin_dir,
        &["item", "create", "-d", "bound", "--value-stdin"],
        b"v1",
    );
    let item = created.ok().stdout_text().trim().to_owned();
    let create = [
        "client", "create", "-d", "hosts", "--json", "--grant", &item,
    ];
    let client = admin(&store, &first, &admin_dir, &create, b"").ok();
    let client: serde_json::Value = serde_json::from_slice(&client.stdout).unwrap();
    let (id, secret) = (
        client["id"].as_str().unwrap(),
        client["secret"].as_str().unwrap(),
    );

    let login = |ns: &Netns, name: &str, host: &str| {
        let dir = store.config_dir(name);
        store.configure(ns, &dir, host).ok();
        let args = ["login", "--client-id", id, "--client-secret-stdin"];
        store.cred(ns, &dir, &args, secret.as_bytes()).ok();
        dir
    };
    let first_dir = login(&first, "host-first", "10.78.1.1");
    let second_dir = login(&second, "host-second", "10.78.2.1");

    // The first reader binds the item; the other address is refused.
    assert_eq!(
        store
            .cred(&first, &first_dir, &["item", "read", &item], b"")
            .ok()
            .stdout,
        b"v1"
    );
    let refused = store
        .cred(&second, &second_dir, &["item", "read", &item], b"")
        .fails_with(4);
    assert!(refused.stderr.contains("peer mismatch"), "{refused:?}");
    let listed = admin(&store, &first, &admin_dir, &["item", "list", "--json"], b"").ok();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["bound_peer"], "10.78.1.2");

    // Admin reads are not bound, from any address.
    let admin_second = store.config_dir("admin-second");
    store.configure(&second, &admin_second, "10.78.2.1").ok();
    assert_eq!(
        admin(
            &store,
            &second,
            &admin_second,
            &["item", "read", &item],
            b""
        )
        .ok()
        .stdout,
        b"v1"
    );

    // After unbind the second host's read binds it.
    admin(&store, &first, &admin_dir, &["item", "unbind", &item], b"").ok();
    assert_eq!(
        store
            .cred(&second, &second_dir, &["item", "read", &item], b"")
            .ok()
            .stdout,
        b"v1"
    );
    store
        .cred(&first, &first_dir, &["item", "read", &item], b"")
        .fails_with(4);
    let listed = admin(&store, &first, &admin_dir, &["item", "list", "--json"], b"").ok();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["bound_peer"], "10.78.2.2");
    assert_eq!(
        admin(&store, &first, &admin_dir, &["item", "read", &item], b"")
            .ok()
            .stdout,
        b"v1"
    );
}

#[test]
fn plain_tcp_to_a_production_store_fails() {
    if !netns_available() {
        return;
    }
    let store = ProductionStore::start();
    let client = Netns::new("plain");
    link(&store.ns, &client, "10.79.1");
    let dir = store.config_dir("plain");
    let port = store.port.to_string();
    let args = [
        "configure",
        "--host",
        "10.79.1.1",
        "--port",
        &port,
        "--no-tls",
    ];
    let run = store.cred(&client, &dir, &args, b"").fails_with(3);
    assert!(run.stderr.contains("speaks TLS"), "{run:?}");
}

/// Median of `durations` in milliseconds.
fn median_ms(mut durations: Vec<std::time::Duration>) -> f64 {
    durations.sort();
    durations[durations.len() / 2].as_secs_f64() * 1000.0
}

#[test]
fn a_slow_loris_and_a_password_flood_do_not_stop_legitimate_reads() {
    use std::time::{Duration, Instant};

    if !netns_available() {
        return;
    }
    let store = ProductionStore::start();
    let attacker = Netns::new("attacker");
    let legit = Netns::new("legit");
    link(&store.ns, &attacker, "10.80.1");
    link(&store.ns, &legit, "10.80.2");

    let admin_dir = store.config_dir("admin");
    store.configure(&legit, &admin_dir, "10.80.2.1").ok();
    admin(&store, &legit, &admin_dir, &["store", "unlock"], b"").ok();
    let item = admin(
        &store,
        &legit,
        &admin_dir,
        &["item", "create", "-d", "x", "--value-stdin"],
        b"v",
    )
    .ok()
    .stdout_text()
    .trim()
    .to_owned();
    let read_args = ["item", "read", item.as_str()];
    let read = |dir: &Path| {
        let started = Instant::now();
        admin(&store, &legit, dir, &read_args, b"").ok();
        started.elapsed()
    };
    let quiet: Vec<Duration> = (0..10).map(|_| read(&admin_dir)).collect();

    // Slow loris: 40 connections from the attacker, one byte a second.
    let port = store.port;
    let loris = format!(
        "import socket, time\nsocks = []\nfor _ in range(40):\n    try:\n        \
         socks.append(socket.create_connection(('10.80.1.1', {port}), timeout=2))\n    \
         except OSError:\n        pass\nfor _ in range(6):\n    for s in socks:\n        \
         try:\n            s.send(b'\\x16')\n        except OSError:\n            pass\n    \
         time.sleep(1)\n"
    );
    let mut slow = attacker.command("python3");
    let mut slow = slow.arg("-c").arg(loris).spawn().unwrap();

    // A flood of wrong admin passphrases from the same attacker address.
    let wrong = store.dir.path().join("wrong");
    fs::write(&wrong, "guess").unwrap();
    let flood_dir = store.config_dir("flood");
    store.configure(&attacker, &flood_dir, "10.80.1.1").ok();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attempts = std::sync::Arc::new(AtomicU32::new(0));
    let flood = {
        let (stop, attempts) = (stop.clone(), attempts.clone());
        let mut base = attacker.command(CRED);
        base.arg("--config-dir").arg(&flood_dir);
        let program: Vec<String> = base
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut command = Command::new("ip");
                command
                    .args(&program)
                    .arg("--passphrase-file")
                    .arg(&wrong)
                    .args(["item", "list"]);
                let _ = command.output();
                attempts.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    std::thread::sleep(Duration::from_millis(500));
    let attacked: Vec<Duration> = (0..10).map(|_| read(&admin_dir)).collect();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let _ = slow.kill();
    let _ = slow.wait();

    eprintln!(
        "legitimate admin read median: {:.1} ms quiet, {:.1} ms during a 40-connection slow \
         loris and {} wrong passphrases",
        median_ms(quiet),
        median_ms(attacked),
        attempts.load(Ordering::Relaxed)
    );
    assert!(
        store
            .log()
            .contains("this address is refused until its window ends"),
        "{}",
        store.log()
    );
}
