//! Many clients at once on persistent connections, each mixing updates and
//! host reads of the same items, through the library client against the
//! real daemon: no request fails, no read answers a value never written,
//! and every item ends at the value of its last committed update.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread;

use credstore::client::{Connection, ServerEntry, Trust};
use credstore::protocol::{Auth, Operation, Request, Response};
use credstore::secret::SecretBytes;
use uuid::Uuid;

use crate::support::{PASSPHRASE, Store};

const THREADS: usize = 32;
const OPERATIONS: usize = 1000;
const ITEMS: usize = 8;

/// What the workers learn of each item: every value sent in an update
/// (recorded before the call, since a reader may see it the moment the
/// store commits it), and each committed generation with its value.
#[derive(Default)]
struct Ledger {
    sent: HashMap<Uuid, HashSet<String>>,
    committed: HashMap<Uuid, BTreeMap<u64, String>>,
    /// Generations the store answered twice.
    repeated: Vec<(Uuid, u64)>,
}

#[test]
fn thirty_two_clients_read_and_update_without_errors_or_lost_writes() {
    let store = Store::start_with_config("max_connections_per_peer = 64");
    store.unlock();
    let ids: Vec<Uuid> = (0..ITEMS)
        .map(|n| {
            store
                .create_item(&format!("shared {n}"), b"initial")
                .parse()
                .unwrap()
        })
        .collect();
    let (_, client_id, client_secret) = store.host("readers");
    let client = Auth::Client {
        id: client_id.parse().unwrap(),
        secret: SecretBytes::copy_from(client_secret.as_bytes()),
    };
    let admin = Auth::Admin {
        passphrase: SecretBytes::copy_from(PASSPHRASE.as_bytes()),
    };
    let trust = Trust::Fingerprint(store.fingerprint.parse().unwrap());
    let server = ServerEntry::new("127.0.0.1".into(), store.port, &trust);

    let mut ledger = Ledger::default();
    for id in &ids {
        ledger
            .sent
            .insert(*id, HashSet::from(["initial".to_owned()]));
        ledger
            .committed
            .insert(*id, BTreeMap::from([(1, "initial".to_owned())]));
    }
    let ledger = Arc::new(Mutex::new(ledger));

    let workers: Vec<_> = (0..THREADS)
        .map(|thread_no| {
            let mut connection = Connection::open(&server, &trust).unwrap();
            let (ids, ledger) = (ids.clone(), ledger.clone());
            let (admin, client) = (admin.duplicate(), client.duplicate());
            thread::spawn(move || {
                let mut unexpected = Vec::new();
                for n in 0..OPERATIONS {
                    // Each client alternates between an update and a
                    // read of the same item, then moves to the next item;
                    // half of them start on the read.
                    let id = ids[(thread_no + n / 2) % ITEMS];
                    if (thread_no + n) % 2 == 0 {
                        update(
                            &mut connection,
                            &admin,
                            id,
                            format!("t{thread_no}-{n}"),
                            &ledger,
                        );
                    } else if let Some(value) = read(&mut connection, &client, id, &ledger) {
                        unexpected.push(value);
                    }
                }
                unexpected
            })
        })
        .collect();
    let unexpected: Vec<String> = workers
        .into_iter()
        .flat_map(|worker| worker.join().unwrap())
        .collect();
    assert!(
        unexpected.is_empty(),
        "reads returned values never written: {unexpected:?}"
    );

    let ledger = ledger.lock().unwrap();
    assert!(
        ledger.repeated.is_empty(),
        "generations answered twice: {:?}",
        ledger.repeated
    );
    let updates = THREADS * OPERATIONS / 2;
    let committed: usize = ledger.committed.values().map(|gens| gens.len() - 1).sum();
    assert_eq!(committed, updates, "every update was acknowledged once");
    for id in &ids {
        check_final_state(&store, *id, &ledger.committed[id]);
    }
    eprintln!(
        "concurrency: {THREADS} clients, {} operations each, {updates} updates and as many \
         reads, no errors",
        OPERATIONS
    );
}

fn update(
    connection: &mut Connection,
    admin: &Auth,
    id: Uuid,
    value: String,
    ledger: &Mutex<Ledger>,
) {
    ledger
        .lock()
        .unwrap()
        .sent
        .get_mut(&id)
        .unwrap()
        .insert(value.clone());
    let request = Request {
        auth: admin.duplicate(),
        operation: Operation::ItemUpdate {
            id,
            value: SecretBytes::copy_from(value.as_bytes()),
        },
    };
    let Response::ItemUpdated { generation } = connection.call(&request).unwrap() else {
        panic!("an update answered something else");
    };
    let mut ledger = ledger.lock().unwrap();
    if ledger
        .committed
        .get_mut(&id)
        .unwrap()
        .insert(generation, value)
        .is_some()
    {
        ledger.repeated.push((id, generation));
    }
}

/// Reads the item as the host; answers the value if it was never sent.
fn read(
    connection: &mut Connection,
    client: &Auth,
    id: Uuid,
    ledger: &Mutex<Ledger>,
) -> Option<String> {
    let request = Request {
        auth: client.duplicate(),
        operation: Operation::ItemRead { id },
    };
    let Response::Value { value } = connection.call(&request).unwrap() else {
        panic!("a read answered something else");
    };
    let value = String::from_utf8(value.expose().to_vec()).unwrap();
    let known = ledger.lock().unwrap().sent[&id].contains(&value);
    (!known).then_some(value)
}

/// Last writer wins: the item holds the value of its highest committed
/// generation, and the generations committed are 1 to that one, each once.
fn check_final_state(store: &Store, id: Uuid, committed: &BTreeMap<u64, String>) {
    let (last, expected) = committed.last_key_value().unwrap();
    let generations: Vec<u64> = committed.keys().copied().collect();
    assert_eq!(
        generations,
        (1..=*last).collect::<Vec<_>>(),
        "{id}: generations skipped"
    );

    let read = store.admin(&["item", "read", &id.to_string()], b"").ok();
    assert_eq!(
        read.stdout_text(),
        *expected,
        "{id} is not at its last write"
    );
    let listed = store.admin(&["item", "list", "--json"], b"").ok();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let item = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["id"] == id.to_string())
        .unwrap();
    assert_eq!(
        item["generation"], *last,
        "{id}: listed at another generation"
    );
}
