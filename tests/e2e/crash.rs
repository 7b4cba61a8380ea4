//! Crash safety: SIGKILL the daemon at random moments while items are
//! being updated; after each restart every item reads back as the value
//! it had before the interrupted update or as the new one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rand::Rng;

use crate::support::{Store, cred};

const ITEMS: usize = 4;
const KILLS: usize = 12;

/// What the writer knows of one item: the value last acknowledged, and the
/// one being written when the daemon died, if any.
#[derive(Clone, Default)]
struct Known {
    acknowledged: String,
    in_flight: Option<String>,
}

#[test]
fn every_item_is_old_or_new_after_kills_at_random_moments() {
    let mut store = Store::start();
    store.unlock();
    let ids: Vec<String> = (0..ITEMS)
        .map(|n| store.create_item(&format!("crash {n}"), b"initial"))
        .collect();
    let known = Arc::new(Mutex::new(vec![
        Known {
            acknowledged: "initial".into(),
            in_flight: None
        };
        ITEMS
    ]));

    let (mut checked, mut violations, mut acknowledged) = (0, 0, 0);
    for round in 0..KILLS {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, known, ids) = (stop.clone(), known.clone(), ids.clone());
            let config = store.admin_dir();
            let passphrase = store.passphrase_file();
            thread::spawn(move || {
                let mut written = 0;
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    let n = seq % ITEMS;
                    let value = format!("round-{round}-write-{seq}");
                    known.lock().unwrap()[n].in_flight = Some(value.clone());
                    let args = [
                        "--passphrase-file",
                        passphrase.to_str().unwrap(),
                        "item",
                        "update",
                        &ids[n],
                        "--value-stdin",
                    ];
                    let run = cred(&config, &args, value.as_bytes());
                    if run.code != 0 {
                        // The daemon died under this update: its outcome is unknown.
                        break;
                    }
                    let mut known = known.lock().unwrap();
                    known[n] = Known {
                        acknowledged: value,
                        in_flight: None,
                    };
                    written += 1;
                    seq += 1;
                }
                written
            })
        };

        thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(30..400)));
        store.crash_and_restart();
        stop.store(true, Ordering::Relaxed);
        acknowledged += writer.join().unwrap();
        store.unlock();

        let mut known = known.lock().unwrap();
        for (n, id) in ids.iter().enumerate() {
            let read = store.admin(&["item", "read", id], b"").ok();
            let value = String::from_utf8(read.stdout).unwrap();
            checked += 1;
            let state = &mut known[n];
            if value != state.acknowledged && Some(&value) != state.in_flight.as_ref() {
                violations += 1;
                eprintln!(
                    "item {n}: read {value:?}, expected {:?} or {:?}",
                    state.acknowledged, state.in_flight
                );
            }
            *state = Known {
                acknowledged: value,
                in_flight: None,
            };
        }
    }
    eprintln!(
        "crash safety: {KILLS} kills, {acknowledged} acknowledged updates, \
         {checked} items checked, {violations} violations"
    );
    assert_eq!(violations, 0);
    assert!(acknowledged > 0, "the writer never got an update through");
}
