//! `cred mount` on real FUSE mounts against a real store.
//!
//! These tests need /dev/fuse and fusermount3 (and root for the uid test);
//! where /dev/fuse is absent they say so and skip.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{CRED, Run, Store, run, skip};

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    skip("/dev/fuse is absent, so no FUSE filesystem can be mounted here");
    false
}

/// A running `cred mount`, stopped with SIGTERM when dropped.
struct Mounted {
    child: Child,
    point: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Mounted {
    fn start(host: &Path, point: &Path, args: &[&str]) -> Self {
        // A dead mountpoint cannot be stat-ed, so "exists" is not checked.
        let _ = fs::create_dir_all(point);
        let mut child = Command::new(CRED)
            .arg("--config-dir")
            .arg(host)
            .arg("mount")
            .arg(point)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = log.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        let mounted = Self {
            child,
            point: point.to_owned(),
            log,
        };
        mounted.wait_for("mounted ");
        mounted
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} from cred mount:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.point.join(name)
    }

    /// Sends SIGTERM and waits; a mount that has not exited after 20 s is
    /// killed, so that a broken unmount fails the test instead of hanging it.
    fn terminate(&mut self) -> Result<std::process::ExitStatus, String> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.point)
            .status();
        Err(format!(
            "cred mount did not exit within 20 s of SIGTERM:\n{}",
            self.log()
        ))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.terminate();
        }
    }
}

fn is_mounted(point: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let point = fs::canonicalize(point).unwrap_or_else(|_| point.to_owned());
    mounts
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some(point.to_str().unwrap()))
}

fn reads(store: &Store) -> usize {
    store.log().matches("operation=\"item-read\"").count()
        + store.log().matches("operation=item-read").count()
}

/// Runs a Python snippet that prints what it finds; Python's `os` calls
/// are plain syscalls, so errno values come straight from the kernel.
fn python(script: &str) -> Run {
    run(Command::new("python3").arg("-c").arg(script), b"").ok()
}

struct Setup {
    store: Store,
    host: PathBuf,
    line: String,
    blob: String,
    blob_bytes: Vec<u8>,
}

fn setup() -> Setup {
    let store = Store::start();
    store.unlock();
    let line = store.create_item("with newline", b"borg passphrase\n");
    let blob_bytes: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + i / 251) as u8).collect();
    let blob = store.create_item("64 KiB binary", &blob_bytes);
    let (host, _, _) = store.host("host1");
    Setup {
        store,
        host,
        line,
        blob,
        blob_bytes,
    }
}

#[test]
fn files_read_back_byte_for_byte_and_listing_never_fetches() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let point = s.store.dir.path().join("mnt");
    let files = [format!("top={}", s.line), format!("borg/blob={}", s.blob)];
    let mount = Mounted::start(&s.host, &point, &["--file", &files[0], "--file", &files[1]]);

    let before = reads(&s.store);
    let listing = run(Command::new("ls").arg("-lR").arg(&point), b"")
        .ok()
        .stdout_text();
    assert!(
        listing.contains("top") && listing.contains("blob"),
        "{listing}"
    );
    let mode = fs::metadata(mount.path("top")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o400
    );
    assert_eq!(reads(&s.store), before, "ls -l and stat fetched a secret");

    let cat = run(Command::new("cat").arg(mount.path("top")), b"").ok();
    assert_eq!(cat.stdout, b"borg passphrase\n");
    let cat = run(Command::new("cat").arg(mount.path("borg/blob")), b"").ok();
    assert_eq!(cat.stdout, s.blob_bytes);

    // Open, fstat, read exactly st_size: the size is right once known.
    let script = format!(
        "import os\nfor name in ['top', 'borg/blob']:\n    \
         fd = os.open({:?} + '/' + name, os.O_RDONLY)\n    \
         size = os.fstat(fd).st_size\n    data = os.read(fd, size)\n    print(size, len(data), \
         data.hex()[:16])\n    os.close(fd)\n",
        point.to_str().unwrap()
    );
    let printed = python(&script).stdout_text();
    let blob_prefix: String = s.blob_bytes[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        printed,
        format!("16 16 626f726720706173\n65536 65536 {blob_prefix}\n")
    );

    let dd = run(
        Command::new("dd")
            .args(["bs=1", "status=none"])
            .arg(format!("if={}", mount.path("top").display())),
        b"",
    )
    .ok();
    assert_eq!(dd.stdout, b"borg passphrase\n");
    let head = run(
        Command::new("head")
            .args(["-c", "4"])
            .arg(mount.path("borg/blob")),
        b"",
    )
    .ok();
    assert_eq!(head.stdout, &s.blob_bytes[..4]);

    let log = mount.log();
    assert!(
        log.contains("file=\"top\"") && log.contains("exe=\"/usr/bin/cat\""),
        "{log}"
    );
    assert!(
        !log.contains("borg passphrase"),
        "the access log shows a value:\n{log}"
    );
}

#[test]
fn value_expires_and_a_locked_store_fails_the_open_not_the_mount() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let point = s.store.dir.path().join("mnt");
    let file = format!("secret={}", s.line);
    let mount = Mounted::start(
        &s.host,
        &point,
        &["--file", &file, "--ttl", "1", "--timeout", "3"],
    );
    let path = mount.path("secret");

    let first = reads(&s.store);
    fs::read(&path).unwrap();
    fs::read(&path).unwrap();
    assert_eq!(
        reads(&s.store),
        first + 1,
        "two opens within the TTL fetch once"
    );

    thread::sleep(Duration::from_millis(1600));
    fs::read(&path).unwrap();
    assert_eq!(
        reads(&s.store),
        first + 2,
        "an open after the TTL fetches again"
    );

    s.store.admin(&["store", "lock"], b"").ok();
    thread::sleep(Duration::from_millis(1600));
    let started = Instant::now();
    let err = fs::read(&path).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_errno("EIO")), "{err}");
    // A hang would stop the test; this only proves the open returned.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        fs::read_dir(&point).unwrap().count() == 1,
        "the mount still lists after the failure"
    );

    s.store.unlock();
    assert_eq!(fs::read(&path).unwrap(), b"borg passphrase\n");
}

#[test]
fn writes_and_mmap_fail_and_a_disallowed_uid_gets_eacces() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let point = s.store.dir.path().join("mnt");
    let map = s.store.dir.path().join("map.toml");
    fs::write(
        &map,
        format!(
            "[[file]]\nname = \"shared\"\nitem = \"{}\"\nmode = 0o444\nallow_uids = [0]\n",
            s.line
        ),
    )
    .unwrap();
    let map = map.to_str().unwrap();
    let mount = Mounted::start(&s.host, &point, &["--map", map, "--allow-other"]);
    let path = mount.path("shared");
    let path = path.to_str().unwrap();

    let script = format!(
        r#"
import errno, mmap, os
path = {path:?}
def attempt(name, call):
    try:
        call()
        print(name, "ok")
    except OSError as err:
        print(name, errno.errorcode[err.errno])
attempt("write", lambda: os.open(path, os.O_WRONLY))
attempt("create", lambda: os.open(path + "-new", os.O_CREAT | os.O_WRONLY))
attempt("unlink", lambda: os.unlink(path))
attempt("rename", lambda: os.rename(path, path + "-moved"))
attempt("chmod", lambda: os.chmod(path, 0o777))
attempt("setxattr", lambda: os.setxattr(path, "user.x", b"1"))
fd = os.open(path, os.O_RDONLY)
attempt("mmap", lambda: mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ))
os.close(fd)
"#
    );
    let printed = python(&script).stdout_text();
    let expected = "write EROFS\ncreate EROFS\nunlink EROFS\nrename EROFS\nchmod EROFS\n\
                    setxattr EROFS\nmmap ENODEV\n";
    assert_eq!(printed, expected);

    let nobody = run(
        Command::new("setpriv").args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "cat",
            path,
        ]),
        b"",
    );
    assert_ne!(nobody.code, 0);
    assert!(nobody.stderr.contains("Permission denied"), "{nobody:?}");
    assert!(nobody.stdout.is_empty());
    mount.wait_for("refused: not in the allowed uids or groups");
    assert_eq!(
        fs::read(path).unwrap(),
        b"borg passphrase\n",
        "root is allowed"
    );
}

#[test]
fn sigterm_unmounts_and_leaves_an_empty_directory() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let point = s.store.dir.path().join("mnt");
    let file = format!("secret={}", s.line);
    let mut mount = Mounted::start(&s.host, &point, &["--file", &file]);
    fs::read(mount.path("secret")).unwrap();
    assert!(is_mounted(&point));

    let status = mount.terminate().unwrap();
    assert!(
        status.success(),
        "cred mount exited with {status}:\n{}",
        mount.log()
    );
    assert!(!is_mounted(&point), "still mounted after SIGTERM");
    assert!(fs::metadata(&point).unwrap().is_dir());
    assert_eq!(fs::read_dir(&point).unwrap().count(), 0);
}

#[test]
fn borg_reads_its_passphrase_from_the_mount() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let point = s.store.dir.path().join("mnt");
    let file = format!("borg/passphrase={}", s.line);
    let mount = Mounted::start(&s.host, &point, &["--file", &file]);

    let work = s.store.dir.path().join("borg");
    fs::create_dir_all(work.join("data")).unwrap();
    fs::write(work.join("data/file"), "contents\n").unwrap();
    let repo = work.join("repo");
    let passcommand = format!("cat {}", mount.path("borg/passphrase").display());
    let borg = |args: &[&str]| {
        let mut command = Command::new("borg");
        command
            .args(args)
            .env_remove("BORG_PASSPHRASE")
            .env("BORG_PASSCOMMAND", &passcommand)
            .env("BORG_BASE_DIR", &work);
        run(&mut command, b"")
    };
    let repo = repo.to_str().unwrap();
    borg(&["init", "-e", "repokey", repo]).ok();
    borg(&[
        "create",
        &format!("{repo}::from-mount"),
        work.join("data").to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        borg(&["list", "--short", repo]).ok().stdout_text().trim(),
        "from-mount"
    );
}

#[test]
fn stale_mountpoint_is_cleared_at_start() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let point = s.store.dir.path().join("mnt");
    let file = format!("secret={}", s.line);
    let mut crashed = Mounted::start(&s.host, &point, &["--file", &file]);
    crashed.child.kill().unwrap();
    crashed.child.wait().unwrap();
    assert!(
        fs::metadata(&point).is_err(),
        "a killed mount leaves a dead mountpoint"
    );

    let mount = Mounted::start(&s.host, &point, &["--file", &file]);
    assert!(
        mount.log().contains("cleared a stale mount"),
        "{}",
        mount.log()
    );
    assert_eq!(
        fs::read(mount.path("secret")).unwrap(),
        b"borg passphrase\n"
    );
}

fn libc_errno(name: &str) -> i32 {
    match name {
        "EIO" => rustix::io::Errno::IO.raw_os_error(),
        other => panic!("unknown errno {other}"),
    }
}

#[test]
fn no_value_is_left_in_the_mount_after_its_ttl() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let value = format!("mount-scan-{}", hex::encode(rand::random::<[u8; 12]>()));
    let item = s.store.create_item("scanned", value.as_bytes());
    let clients = s
        .store
        .admin(&["client", "list", "-q"], b"")
        .ok()
        .stdout_text();
    let client = clients.lines().next().unwrap().to_owned();
    s.store
        .admin(&["client", "grant", &client, &item], b"")
        .ok();
    let point = s.store.dir.path().join("mnt");
    let file = format!("secret={item}");
    let mount = Mounted::start(&s.host, &point, &["--file", &file, "--ttl", "6"]);
    for _ in 0..5 {
        assert_eq!(fs::read(mount.path("secret")).unwrap(), value.as_bytes());
    }
    let pid = mount.child.id();
    let started = std::time::Instant::now();
    assert_eq!(
        crate::memory::occurrences(pid, &[value.as_bytes()]),
        [1],
        "the cached value sits in the mount while its TTL runs (in a guarded buffer, \
         which the scan can read as root)"
    );

    // The TTL of 6 s leaves the scan above ample time; after it, and the
    // sweeper's quarter second, the value must be gone.
    thread::sleep(Duration::from_millis(6800).saturating_sub(started.elapsed()));
    let secret = fs::read_to_string(s.host.join("config.toml")).unwrap();
    let secret = secret
        .lines()
        .find_map(|line| line.strip_prefix("secret = \""))
        .unwrap();
    let secret = secret.trim_end_matches('"').to_owned();
    let counts = crate::memory::occurrences(pid, &[value.as_bytes(), secret.as_bytes()]);
    assert_eq!(
        counts,
        [0, 0],
        "value, client secret in the mount after the TTL"
    );
}
