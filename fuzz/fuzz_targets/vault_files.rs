//! Any bytes in place of one file of an unlocked vault: an item record, a
//! value file, a client record or the recovery recipient. Every read must
//! then fail or answer exactly what the vault held before; a forged file
//! that changes a value, a grant or the recipient is a finding.

#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use borg_collective_fuzz::{Populated, original};
use credstore::vault::Vault;
use libfuzzer_sys::fuzz_target;

struct Fixture {
    populated: Populated,
    vault: Vault,
    /// The files reads open, with their original bytes.
    files: Vec<(PathBuf, Vec<u8>)>,
}

static FIXTURE: LazyLock<Mutex<Fixture>> = LazyLock::new(|| {
    let (populated, vault) = Populated::new();
    let mut paths = vec![populated.storage.join("recovery.json")];
    for dir in ["items", "clients"] {
        for entry in fs::read_dir(populated.storage.join(dir)).unwrap() {
            paths.push(entry.unwrap().path());
        }
    }
    paths.sort();
    let files = paths.into_iter().map(original).collect();
    Mutex::new(Fixture {
        populated,
        vault,
        files,
    })
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, contents)) = data.split_first() else {
        return;
    };
    let fixture = FIXTURE.lock().unwrap();
    let (path, bytes) = &fixture.files[usize::from(selector) % fixture.files.len()];

    fs::write(path, contents).unwrap();
    fixture.populated.check_reads(&fixture.vault);
    fs::write(path, bytes).unwrap();
});
