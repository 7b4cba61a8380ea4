//! Starts real credstore daemons in temporary directories and runs the real
//! `cred` binary against them.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const CRED: &str = env!("CARGO_BIN_EXE_cred");
pub const CREDSTORE: &str = env!("CARGO_BIN_EXE_credstore");

/// A long random-looking admin passphrase, the same for every test store.
/// Says why a test cannot run here and returns, so that it passes
/// vacuously; unless `BORG_COLLECTIVE_REQUIRE_ALL` is set (contrib/test.sh
/// sets it as root, where everything can run), which makes it fail.
pub fn skip(why: &str) {
    if std::env::var_os("BORG_COLLECTIVE_REQUIRE_ALL").is_some() {
        panic!("cannot run: {why} (BORG_COLLECTIVE_REQUIRE_ALL is set)");
    }
    eprintln!("skipping: {why}");
}

pub const PASSPHRASE: &str = "e2e-master-passphrase-Zq8v3L0x";

/// What a finished command produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics with the whole output unless the command succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code,
            0,
            "command failed: {self:#?} (stdout {:?})",
            self.stdout_text()
        );
        self
    }

    /// Panics unless the command failed with `code`.
    pub fn fails_with(self, code: i32) -> Self {
        assert_eq!(self.code, code, "wrong exit status: {self:#?}");
        self
    }
}

/// Runs `command` to completion, feeding it `stdin`.
pub fn run(command: &mut Command, stdin: &[u8]) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A running credstore with its own storage, certificate and log.
pub struct Store {
    pub dir: TempDir,
    pub port: u16,
    pub fingerprint: String,
    pub config: PathBuf,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Store {
    /// Starts a development-mode store with a certificate from gen-cert.
    pub fn start() -> Self {
        Self::start_with(true, &[])
    }

    /// Starts a store; `tls` false gives a plain TCP development store.
    pub fn start_with(tls: bool, extra_args: &[&str]) -> Self {
        Self::launch(tls, extra_args, "")
    }

    /// Starts a TLS store whose config also holds `extra_config` (keys
    /// that go before the [tls] table).
    pub fn start_with_config(extra_config: &str) -> Self {
        Self::launch(true, &[], extra_config)
    }

    fn launch(tls: bool, extra_args: &[&str], extra_config: &str) -> Self {
        let dir = TempDir::new().unwrap();
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).unwrap();
        fs::set_permissions(&storage, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(dir.path().join("passphrase"), PASSPHRASE).unwrap();

        let fingerprint = if tls {
            gen_cert(&dir.path().join("tls"))
        } else {
            String::new()
        };
        let mut config = format!(
            "storage_path = \"{}\"\nlisten_address = \"127.0.0.1:0\"\n{extra_config}\n",
            storage.display()
        );
        if tls {
            config.push_str("[tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"tls/key.pem\"\n");
        }
        let config_path = dir.path().join("credstore.toml");
        fs::write(&config_path, config).unwrap();

        let (child, log, port) = spawn_daemon(&config_path, extra_args);
        let store = Self {
            dir,
            port,
            fingerprint,
            config: config_path,
            child,
            log,
        };
        store.configure(&store.admin_dir(), tls);
        store
    }

    pub fn passphrase_file(&self) -> PathBuf {
        self.dir.path().join("passphrase")
    }

    /// The administrator's cred config directory.
    pub fn admin_dir(&self) -> PathBuf {
        self.dir.path().join("admin")
    }

    /// Writes a cred config for this store into `config_dir`.
    pub fn configure(&self, config_dir: &Path, tls: bool) {
        let port = self.port.to_string();
        let mut args = vec!["configure", "--host", "127.0.0.1", "--port", &port];
        if tls {
            args.extend(["--fingerprint", &self.fingerprint]);
        } else {
            args.push("--no-tls");
        }
        cred(config_dir, &args, b"").ok();
    }

    /// Runs cred as the administrator, with the passphrase file.
    pub fn admin(&self, args: &[&str], stdin: &[u8]) -> Run {
        let passphrase = self.passphrase_file();
        let mut full = vec!["--passphrase-file", passphrase.to_str().unwrap()];
        full.extend(args);
        cred(&self.admin_dir(), &full, stdin)
    }

    pub fn unlock(&self) {
        self.admin(&["store", "unlock"], b"").ok();
    }

    /// Stores `value` and answers the new item's id.
    pub fn create_item(&self, description: &str, value: &[u8]) -> String {
        let run = self
            .admin(
                &["item", "create", "-d", description, "--value-stdin"],
                value,
            )
            .ok();
        run.stdout_text().trim().to_owned()
    }

    /// Creates a client granted every item there is now, and logs a new
    /// host config directory in with it; answers the directory, the client
    /// id and its secret.
    pub fn host(&self, name: &str) -> (PathBuf, String, String) {
        let items = self.admin(&["item", "list", "-q"], b"").stdout_text();
        let mut args = vec!["client", "create", "-d", name, "--json"];
        for item in items.lines() {
            args.extend(["--grant", item]);
        }
        let run = self.admin(&args, b"").ok();
        let created: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        let secret = created["secret"].as_str().unwrap().to_owned();

        let host_dir = self.dir.path().join(format!("host-{name}"));
        self.configure(&host_dir, !self.fingerprint.is_empty());
        let login = ["login", "--client-id", &id, "--client-secret-stdin"];
        cred(&host_dir, &login, secret.as_bytes()).ok();
        (host_dir, id, secret)
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the daemon is still running (it may have refused to start).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn child_pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the daemon with SIGTERM and starts it again on the same
    /// storage; it comes back locked, on a new port the admin config follows.
    pub fn restart(&mut self) {
        self.try_restart().unwrap_or_else(|why| panic!("{why}"));
    }

    /// Like [`Store::restart`], answering why when the daemon refuses to
    /// start again; call it again once the cause is gone.
    pub fn try_restart(&mut self) -> Result<(), String> {
        if self.child.try_wait().unwrap().is_none() {
            let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
            let status = self.child.wait().unwrap();
            assert!(
                status.success(),
                "credstore exited with {status} on SIGTERM:\n{}",
                self.log()
            );
        }
        self.try_respawn()
    }

    /// Kills the daemon with SIGKILL, as a crash would, and starts it again.
    pub fn crash_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.respawn();
    }

    fn respawn(&mut self) {
        self.try_respawn().unwrap_or_else(|why| panic!("{why}"));
    }

    fn try_respawn(&mut self) -> Result<(), String> {
        let mut command = Command::new(CREDSTORE);
        command.arg(&self.config);
        let (child, log, port) = try_spawn_logged(command)?;
        (self.child, self.log, self.port) = (child, log, port);
        self.configure(&self.admin_dir(), !self.fingerprint.is_empty());
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cred --config-dir DIR ARGS...` with `stdin`.
pub fn cred(config_dir: &Path, args: &[&str], stdin: &[u8]) -> Run {
    let mut command = Command::new(CRED);
    command
        .arg("--config-dir")
        .arg(config_dir)
        .args(args)
        .env_remove("CRED_PASSPHRASE_FILE");
    run(&mut command, stdin)
}

/// Writes a certificate for 127.0.0.1 into `dir` and answers its fingerprint.
pub fn gen_cert(dir: &Path) -> String {
    let out = dir.to_str().unwrap();
    let run = run(
        Command::new(CREDSTORE).args([
            "gen-cert",
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
            "--out",
            out,
        ]),
        b"",
    )
    .ok();
    let text = run.stdout_text();
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("SHA-256 fingerprint: "));
    line.expect("gen-cert prints the fingerprint")
        .trim()
        .to_owned()
}

/// Starts `credstore CONFIG`, collects its log, and waits for the port it
/// listens on.
pub fn spawn_daemon(config: &Path, extra_args: &[&str]) -> (Child, Arc<Mutex<String>>, u16) {
    let mut command = Command::new(CREDSTORE);
    command.arg(config).args(extra_args);
    spawn_logged(command)
}

/// Starts `command` (a credstore, perhaps behind setpriv), collects its
/// log, and waits for the port it listens on.
pub fn spawn_logged(command: Command) -> (Child, Arc<Mutex<String>>, u16) {
    try_spawn_logged(command).unwrap_or_else(|why| panic!("{why}"))
}

/// Like [`spawn_logged`], answering why when the daemon exits instead of
/// listening.
pub fn try_spawn_logged(mut command: Command) -> Result<(Child, Arc<Mutex<String>>, u16), String> {
    let mut child = command
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let reader = BufReader::new(child.stderr.take().unwrap());
    let sink = log.clone();
    thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let port = listening_port(&log.lock().unwrap());
        if let Some(port) = port {
            return Ok((child, log, port));
        }
        if let Some(status) = child.try_wait().unwrap() {
            thread::sleep(Duration::from_millis(100));
            return Err(format!(
                "credstore exited with {status} before listening:\n{}",
                log.lock().unwrap()
            ));
        }
        assert!(
            Instant::now() < deadline,
            "credstore did not start:\n{}",
            log.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn listening_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|line| line.contains("listening"))?;
    let address = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address="))?;
    address.rsplit_once(':')?.1.parse().ok()
}

/// Runs credstore to completion, for start-up errors.
pub fn credstore(args: &[&str]) -> Run {
    run(Command::new(CREDSTORE).args(args).stdin(Stdio::null()), b"")
}
