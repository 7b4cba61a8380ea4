//! The tamper campaign: every file of a populated storage directory is in
//! turn flipped, truncated, swapped with a file of its kind and replaced by
//! an older version of itself. After each change the store is unlocked
//! again and every value read as the administrator and as a host: each
//! read must fail or answer the right value, never a wrong one, and once
//! the file is put back nothing else in the directory may have changed.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use credstore::client::{ClientError, Connection, ServerEntry, Trust};
use credstore::protocol::{Auth, ErrorKind, Operation, Request, Response};
use credstore::secret::SecretBytes;
use uuid::Uuid;

use crate::support::{PASSPHRASE, Store};

/// What one tampered file led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// The change made no difference to what the file means.
    Correct,
    /// At least one read was refused, and none answered wrongly.
    Refused,
    /// The unlock itself was refused.
    UnlockRefused,
    /// The daemon refused to start on the directory, saying why.
    StartRefused,
    /// A read answered a value, a grant or a listing that is not the stored one.
    Wrong,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Correct => "correct",
            Self::Refused => "refused",
            Self::UnlockRefused => "no unlock",
            Self::StartRefused => "no start",
            Self::Wrong => "WRONG",
        })
    }
}

const MUTATIONS: [&str; 6] = [
    "flip first",
    "flip middle",
    "flip last",
    "truncate",
    "swap",
    "replay",
];

/// A store whose every item has a known value (and history), with a host
/// granted some items but not others.
struct Fixture {
    store: Store,
    storage: PathBuf,
    /// Each item's generations and their values.
    items: BTreeMap<Uuid, Vec<(u64, String)>>,
    host_id: Uuid,
    host_secret: String,
    /// Both clients' ids, sorted.
    clients: Vec<Uuid>,
    granted: Vec<Uuid>,
    ungranted: Uuid,
    /// The storage as it was before the last round of changes, for replays.
    older: BTreeMap<PathBuf, Vec<u8>>,
    pristine: BTreeMap<PathBuf, Vec<u8>>,
    /// A readable name for each id, for the matrix.
    names: Vec<(String, &'static str)>,
}

#[test]
fn no_tampered_file_ever_yields_a_wrong_answer() {
    let mut fixture = Fixture::new();
    assert_eq!(
        fixture.check(),
        Outcome::Correct,
        "the untouched store reads wrongly"
    );

    let files: Vec<PathBuf> = fixture.pristine.keys().cloned().collect();
    let mut matrix = Vec::new();
    let (mut tried, mut wrong) = (0, 0);
    for file in &files {
        let mut row = Vec::new();
        for (n, mutation) in MUTATIONS.iter().enumerate() {
            let Some(changes) = fixture.mutation(file, n) else {
                row.push(None);
                continue;
            };
            for (path, bytes) in &changes {
                fs::write(fixture.storage.join(path), bytes).unwrap();
            }
            let outcome = if is_top_level(file) {
                fixture.check_after_restart()
            } else {
                fixture.check()
            };
            fixture.restore(&changes);
            fixture.assert_pristine(file, mutation);

            tried += 1;
            if outcome == Outcome::Wrong {
                wrong += 1;
            }
            row.push(Some(outcome));
        }
        matrix.push((fixture.label(file), row));
    }

    eprintln!("{}", render(&matrix));
    eprintln!(
        "tamper campaign: {tried} cases on {} files, {wrong} wrong",
        files.len()
    );
    assert_eq!(
        wrong,
        0,
        "a tampered file gave a wrong answer:\n{}",
        render(&matrix)
    );
    // VERSION, identity, manifest, recovery recipient; 3 item records and
    // 5 value files; 2 clients. Replays apply where an older version
    // differs: the 2 updated item records, the 3 re-encrypted value
    // files, the revoked client, the manifest and the recipient.
    assert_eq!(
        files.len(),
        14,
        "the storage holds other files than planned"
    );
    assert_eq!(tried, 14 * 5 + 8, "other cases applied than planned");
}

impl Fixture {
    fn new() -> Self {
        let store = Store::start();
        store.unlock();
        let storage = store.dir.path().join("storage");
        let mut fixture = Self {
            storage,
            items: BTreeMap::new(),
            host_id: Uuid::nil(),
            host_secret: String::new(),
            clients: Vec::new(),
            granted: Vec::new(),
            ungranted: Uuid::nil(),
            older: BTreeMap::new(),
            pristine: BTreeMap::new(),
            names: Vec::new(),
            store,
        };
        fixture.populate();
        fixture
    }

    /// Three items, two hosts and a recovery recipient; then a round of
    /// updates, a revoked grant and a new recipient, so that every kind of
    /// file has an authentic older version to replay.
    fn populate(&mut self) {
        let mut session = self.admin_session();
        let mut ids = Vec::new();
        for name in ["alpha", "bravo", "charlie"] {
            let value = format!("{name}-1");
            let id = match session.call(Operation::ItemCreate {
                description: name.into(),
                value: SecretBytes::copy_from(value.as_bytes()),
            }) {
                Ok(Response::ItemCreated { id }) => id,
                other => panic!("cannot create an item: {other:?}"),
            };
            self.items.insert(id, vec![(1, value)]);
            self.names.push((id.to_string(), name));
            ids.push(id);
        }
        session.set_recipient();
        let (_, host_id, host_secret) = self.store.host("reader");
        let (_, other_id, _) = self.store.host("other");
        self.names.push((host_id.clone(), "reader"));
        self.clients = vec![host_id.parse().unwrap(), other_id.parse().unwrap()];
        self.clients.sort();
        self.names.push((other_id, "other"));
        (self.host_id, self.host_secret) = (host_id.parse().unwrap(), host_secret);

        self.older = snapshot(&self.storage);
        for id in &ids[..2] {
            let history = self.items.get_mut(id).unwrap();
            let value = history[0].1.replace("-1", "-2");
            let updated = session.call(Operation::ItemUpdate {
                id: *id,
                value: SecretBytes::copy_from(value.as_bytes()),
            });
            assert!(
                matches!(updated, Ok(Response::ItemUpdated { generation: 2 })),
                "{updated:?}"
            );
            history.push((2, value));
        }
        session.expect_done(Operation::ClientRevoke {
            id: self.host_id,
            items: vec![ids[2]],
        });
        session.set_recipient();
        (self.granted, self.ungranted) = (ids[..2].to_vec(), ids[2]);
        self.pristine = snapshot(&self.storage);
    }

    /// The file's path with the ids in it replaced by names.
    fn label(&self, file: &Path) -> String {
        let mut label = file.display().to_string();
        for (id, name) in &self.names {
            label = label.replace(id, name);
        }
        label
    }

    fn server(&self) -> (ServerEntry, Trust) {
        let trust = Trust::Fingerprint(self.store.fingerprint.parse().unwrap());
        let server = ServerEntry::new("127.0.0.1".into(), self.store.port, &trust);
        (server, trust)
    }

    fn admin_session(&self) -> Session {
        let (server, trust) = self.server();
        Session {
            connection: Connection::open(&server, &trust).unwrap(),
            auth: Auth::Admin {
                passphrase: SecretBytes::copy_from(PASSPHRASE.as_bytes()),
            },
        }
    }

    fn host_session(&self) -> Session {
        let (server, trust) = self.server();
        Session {
            connection: Connection::open(&server, &trust).unwrap(),
            auth: Auth::Client {
                id: self.host_id,
                secret: SecretBytes::copy_from(self.host_secret.as_bytes()),
            },
        }
    }

    /// The files to write for mutation `n` of `file`, or none where it does
    /// not apply (an empty file to flip, no peer to swap with, no older
    /// version that differs).
    fn mutation(&self, file: &Path, n: usize) -> Option<Vec<(PathBuf, Vec<u8>)>> {
        let bytes = &self.pristine[file];
        let flipped = |at: usize| {
            let mut bytes = bytes.clone();
            bytes[at] ^= 0xff;
            Some(vec![(file.to_owned(), bytes)])
        };
        match n {
            _ if bytes.is_empty() => None,
            0 => flipped(0),
            1 => flipped(bytes.len() / 2),
            2 => flipped(bytes.len() - 1),
            3 => Some(vec![(file.to_owned(), bytes[..bytes.len() / 2].to_vec())]),
            4 => {
                let peer = self.peer_of(file)?;
                Some(vec![
                    (file.to_owned(), self.pristine[&peer].clone()),
                    (peer.clone(), bytes.clone()),
                ])
            }
            _ => {
                let old = self.older.get(file).filter(|old| *old != bytes)?;
                Some(vec![(file.to_owned(), old.clone())])
            }
        }
    }

    /// A file of the same kind that belongs to another item or client: an
    /// item's record for an item's record, a value file for a value file,
    /// a client for a client, and
    /// for the files there is one of, the manifest or the identity.
    fn peer_of(&self, file: &Path) -> Option<PathBuf> {
        let kind = |path: &Path| {
            let dir = path.parent().map(Path::to_owned).unwrap_or_default();
            let ext = path.extension().map(|ext| ext.to_owned());
            (dir, ext)
        };
        if is_top_level(file) {
            let peer = if file == Path::new("manifest.json") {
                "identity.json"
            } else {
                "manifest.json"
            };
            return Some(PathBuf::from(peer));
        }
        let owner = |path: &Path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.split('.').next().unwrap().to_owned()
        };
        self.pristine
            .keys()
            .find(|other| owner(other) != owner(file) && kind(other) == kind(file))
            .cloned()
    }

    /// Restarts the daemon, since some files (VERSION) are read only when
    /// it starts, then checks as [`Fixture::check`] does.
    fn check_after_restart(&mut self) -> Outcome {
        match self.store.try_restart() {
            Ok(()) => self.check(),
            Err(why) => {
                assert!(why.contains("restore it from a backup"), "{why}");
                Outcome::StartRefused
            }
        }
    }

    /// Locks and unlocks the store, so that the files are read afresh, and
    /// reads everything there is to read.
    fn check(&self) -> Outcome {
        let mut admin = self.admin_session();
        admin.expect_done(Operation::Lock);
        match admin.call(Operation::Unlock {
            passphrase: SecretBytes::copy_from(PASSPHRASE.as_bytes()),
        }) {
            Ok(Response::Unlocked { initialised: false }) => {}
            Ok(other) => panic!("an unlock answered {other:?}"),
            Err(err) => {
                expect_refusal(&err, ErrorKind::Integrity);
                return Outcome::UnlockRefused;
            }
        }

        let mut outcomes = Vec::new();
        for (id, history) in &self.items {
            for (generation, value) in history {
                let read = admin.reads(*id, Some(*generation), value);
                outcomes.push(classify(read, ErrorKind::Integrity));
            }
        }
        let items = admin.lists_items(&self.expected_items());
        outcomes.push(classify(items, ErrorKind::Integrity));
        let clients = admin.lists_clients(&self.expected_clients());
        outcomes.push(classify(clients, ErrorKind::Integrity));

        let mut host = self.host_session();
        for id in &self.granted {
            let value = &self.items[id].last().unwrap().1;
            outcomes.push(classify(
                host.reads(*id, None, value),
                ErrorKind::Unauthorized,
            ));
        }
        // The host must be refused the item it lost: being refused is the
        // right answer here, and a value the wrong one.
        let ungranted = match host.read(self.ungranted, None) {
            Ok(_) => Ok(false),
            Err(err) => {
                expect_refusal(&err, ErrorKind::Unauthorized);
                Ok(true)
            }
        };
        outcomes.push(classify(ungranted, ErrorKind::Unauthorized));
        outcomes.into_iter().max().unwrap_or(Outcome::Correct)
    }

    /// Each item's id, description and current generation, sorted by id.
    fn expected_items(&self) -> Vec<(Uuid, String, u64)> {
        self.items
            .iter()
            .map(|(id, history)| (*id, self.name(id), history.last().unwrap().0))
            .collect()
    }

    /// Each client's id, description and grants, sorted by id.
    fn expected_clients(&self) -> Vec<(Uuid, String, Vec<Uuid>)> {
        let mut all: Vec<Uuid> = self.items.keys().copied().collect();
        all.sort();
        let mut clients: Vec<_> = self
            .clients
            .iter()
            .map(|id| {
                let mut grants = if *id == self.host_id {
                    self.granted.clone()
                } else {
                    all.clone()
                };
                grants.sort();
                (*id, self.name(id), grants)
            })
            .collect();
        clients.sort();
        clients
    }

    fn name(&self, id: &Uuid) -> String {
        let id = id.to_string();
        let (_, name) = self.names.iter().find(|(known, _)| *known == id).unwrap();
        (*name).to_owned()
    }

    /// Puts the original files back, and the daemon if it refused to start.
    fn restore(&mut self, changes: &[(PathBuf, Vec<u8>)]) {
        for (path, _) in changes {
            fs::write(self.storage.join(path), &self.pristine[path]).unwrap();
        }
        if !self.store.is_running() {
            self.store.restart();
        }
    }

    /// Checks that putting the tampered files back restored the directory
    /// exactly: no file lost, added or rewritten by a read.
    fn assert_pristine(&self, file: &Path, mutation: &str) {
        let now = snapshot(&self.storage);
        assert!(
            now == self.pristine,
            "after {mutation} of {}, the storage differs from before",
            file.display()
        );
    }
}

/// One connection with the credentials it sends on every request.
struct Session {
    connection: Connection,
    auth: Auth,
}

impl Session {
    fn call(&mut self, operation: Operation) -> Result<Response, ClientError> {
        let auth = self.auth.duplicate();
        self.connection.call(&Request { auth, operation })
    }

    fn expect_done(&mut self, operation: Operation) {
        match self.call(operation) {
            Ok(Response::Done) => {}
            other => panic!("expected done, got {other:?}"),
        }
    }

    fn set_recipient(&mut self) {
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        match self.call(Operation::SetRecoveryRecipient { recipient }) {
            Ok(Response::Reencrypted { .. }) => {}
            other => panic!("cannot set a recovery recipient: {other:?}"),
        }
    }

    fn read(&mut self, id: Uuid, generation: Option<u64>) -> Result<SecretBytes, ClientError> {
        let operation = match generation {
            Some(generation) => Operation::ItemReadGeneration { id, generation },
            None => Operation::ItemRead { id },
        };
        match self.call(operation)? {
            Response::Value { value } => Ok(value),
            other => panic!("a read answered {other:?}"),
        }
    }

    /// Whether a read of the item answers `expected`.
    fn reads(
        &mut self,
        id: Uuid,
        generation: Option<u64>,
        expected: &str,
    ) -> Result<bool, ClientError> {
        self.read(id, generation)
            .map(|value| value.expose() == expected.as_bytes())
    }

    /// Whether the item listing holds exactly `expected` (id, description,
    /// generation) and reports no damage.
    fn lists_items(&mut self, expected: &[(Uuid, String, u64)]) -> Result<bool, ClientError> {
        let Response::Items { items, damaged } = self.call(Operation::ItemList { search: None })?
        else {
            panic!("an item listing answered something else");
        };
        let mut listed: Vec<_> = items
            .into_iter()
            .map(|item| (item.id, item.description, item.generation))
            .collect();
        listed.sort();
        undamaged(damaged).map(|()| listed == expected)
    }

    /// Whether the client listing holds exactly `expected` (id,
    /// description, sorted grants) and reports no damage.
    fn lists_clients(
        &mut self,
        expected: &[(Uuid, String, Vec<Uuid>)],
    ) -> Result<bool, ClientError> {
        let Response::Clients { clients, damaged } = self.call(Operation::ClientList)? else {
            panic!("a client listing answered something else");
        };
        let mut listed: Vec<_> = clients
            .into_iter()
            .map(|client| {
                let mut grants = client.grants;
                grants.sort();
                (client.id, client.description, grants)
            })
            .collect();
        listed.sort();
        undamaged(damaged).map(|()| listed == expected)
    }
}

/// A listing that names damaged entries is a refusal of those entries.
fn undamaged(damaged: Vec<String>) -> Result<(), ClientError> {
    if damaged.is_empty() {
        return Ok(());
    }
    Err(ClientError::Server {
        kind: ErrorKind::Integrity,
        message: damaged.join("; "),
    })
}

/// What one read tells: the right answer, a refusal of the `refusal`
/// kind, or a wrong answer.
fn classify(read: Result<bool, ClientError>, refusal: ErrorKind) -> Outcome {
    match read {
        Ok(true) => Outcome::Correct,
        Ok(false) => Outcome::Wrong,
        Err(err) => {
            expect_refusal(&err, refusal);
            Outcome::Refused
        }
    }
}

/// A refusal must say what it is: an integrity error for the
/// administrator (never "not found", "wrong passphrase" or an internal
/// error, which would send them looking in the wrong place), and for a
/// host the one "unauthorized" it gets for everything.
fn expect_refusal(err: &ClientError, expected: ErrorKind) {
    assert_eq!(
        err.kind(),
        Some(expected),
        "a tampered file was refused with the wrong kind of error: {err}"
    );
}

/// The files at the top of the storage directory: one of each per vault.
fn is_top_level(file: &Path) -> bool {
    file.parent() == Some(Path::new(""))
}

/// Every regular file under `dir` but the lock, by its relative path.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name() != Some(".lock".as_ref()) {
                let relative = path.strip_prefix(dir).unwrap().to_owned();
                files.insert(relative, fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn render(matrix: &[(String, Vec<Option<Outcome>>)]) -> String {
    let width = matrix.iter().map(|(name, _)| name.len()).max().unwrap_or(4);
    let mut out = format!("{:width$}", "file");
    for mutation in MUTATIONS {
        out.push_str(&format!(" | {mutation:>11}"));
    }
    for (name, row) in matrix {
        out.push_str(&format!("\n{name:width$}"));
        for cell in row {
            let text = cell.map_or("n/a".to_owned(), |outcome| outcome.to_string());
            out.push_str(&format!(" | {text:>11}"));
        }
    }
    out
}
