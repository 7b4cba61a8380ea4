//! Many clients at once on persistent connections: readers and writers of
//! the same items, through the library client against the real daemon.

use std::collections::{HashMap, HashSet};
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
    let client_id: Uuid = client_id.parse().unwrap();

    let server = ServerEntry::new(
        "127.0.0.1".into(),
        store.port,
        &Trust::Fingerprint(store.fingerprint.parse().unwrap()),
    );
    let trust = server.trust().unwrap();
    // Every value each item has had, as acknowledged by the store.
    let written: Arc<Mutex<HashMap<Uuid, HashSet<String>>>> = Arc::new(Mutex::new(
        ids.iter()
            .map(|id| (*id, HashSet::from(["initial".to_owned()])))
            .collect(),
    ));

    let workers: Vec<_> = (0..THREADS)
        .map(|thread_no| {
            let (server, trust, ids, written, secret) = (
                server.clone(),
                trust.clone(),
                ids.clone(),
                written.clone(),
                client_secret.clone(),
            );
            thread::spawn(move || {
                let mut connection = Connection::open(&server, &trust).unwrap();
                let mut unexpected = Vec::new();
                for n in 0..OPERATIONS {
                    let id = ids[(thread_no + n) % ITEMS];
                    if thread_no % 2 == 0 {
                        let value = format!("t{thread_no}-{n}");
                        let request = Request {
                            auth: Auth::Admin {
                                passphrase: SecretBytes::copy_from(PASSPHRASE.as_bytes()),
                            },
                            operation: Operation::ItemUpdate {
                                id,
                                value: SecretBytes::copy_from(value.as_bytes()),
                            },
                        };
                        // Recorded before the call: a reader may see it
                        // the moment the store commits it.
                        written.lock().unwrap().get_mut(&id).unwrap().insert(value);
                        connection.call(&request).unwrap();
                    } else {
                        let request = Request {
                            auth: Auth::Client {
                                id: client_id,
                                secret: SecretBytes::copy_from(secret.as_bytes()),
                            },
                            operation: Operation::ItemRead { id },
                        };
                        let Response::Value { value } = connection.call(&request).unwrap() else {
                            panic!("a read answered something else");
                        };
                        let value = String::from_utf8(value.expose().to_vec()).unwrap();
                        if !written.lock().unwrap()[&id].contains(&value) {
                            unexpected.push(value);
                        }
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
    eprintln!(
        "concurrency: {THREADS} clients, {} operations, half of them updates, no errors",
        THREADS * OPERATIONS
    );

    // Last writer wins: each item ends at one of the values written to it,
    // and with the history the store keeps.
    let written = written.lock().unwrap();
    for id in &ids {
        let read = store.admin(&["item", "read", &id.to_string()], b"").ok();
        let value = String::from_utf8(read.stdout).unwrap();
        assert!(written[id].contains(&value), "{id} ended at {value:?}");
        let record = store.admin(&["item", "list", "--json"], b"").ok();
        let listed: serde_json::Value = serde_json::from_slice(&record.stdout).unwrap();
        let item = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|item| item["id"] == id.to_string())
            .unwrap();
        let updates = (0..THREADS)
            .step_by(2)
            .flat_map(|thread_no| (0..OPERATIONS).map(move |n| (thread_no + n) % ITEMS))
            .filter(|index| ids[*index] == *id)
            .count();
        assert_eq!(
            item["generation"],
            (1 + updates) as u64,
            "every update of {id} was committed"
        );
    }
}
