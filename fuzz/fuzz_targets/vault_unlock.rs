//! Any bytes in place of a file the unlock reads: VERSION, the sealed
//! identity or the manifest. Opening and unlocking must then fail, or
//! succeed with every read answering what was stored.
//!
//! An identity that parses costs a full key derivation, so this target
//! runs far fewer inputs a second than the others.

#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::LazyLock;

use borg_collective_fuzz::{PASSPHRASE, Populated, original};
use credstore::secret::SecretBytes;
use credstore::vault::Vault;
use libfuzzer_sys::fuzz_target;

struct Fixture {
    populated: Populated,
    files: Vec<(PathBuf, Vec<u8>)>,
}

/// The fixture's own handle is dropped, so that every run opens the
/// storage directory afresh and unlocks it from the files.
static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let (populated, vault) = Populated::new();
    drop(vault);
    let files = ["VERSION", "identity.json", "manifest.json"]
        .into_iter()
        .map(|name| original(populated.storage.join(name)))
        .collect();
    Fixture { populated, files }
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, contents)) = data.split_first() else {
        return;
    };
    let fixture = &*FIXTURE;
    let (path, bytes) = &fixture.files[usize::from(selector) % fixture.files.len()];

    fs::write(path, contents).unwrap();
    if let Ok(mut vault) = Vault::open(&fixture.populated.storage)
        && vault.unlock(&SecretBytes::copy_from(PASSPHRASE)).is_ok()
    {
        fixture.populated.check_reads(&vault);
    }
    fs::write(path, bytes).unwrap();
});
