//! Looks for secrets in the live daemon's memory (root: /proc/PID/mem).

use std::fs;
use std::io::{Read, Seek, SeekFrom};

use rand::RngCore;

use crate::support::{Store, cred};

/// Counts the occurrences of each needle in every mapping of process
/// `pid`. /proc/PID/mem reads like a debugger, so mappings closed with
/// mprotect (guarded buffers between uses) are read too.
pub(crate) fn occurrences(pid: u32, needles: &[&[u8]]) -> Vec<usize> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut counts = vec![0; needles.len()];
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let range = fields.next().unwrap();
        if line.contains("[vvar") || line.contains("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut region = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut region).is_err() {
            continue;
        }
        for (needle, count) in needles.iter().zip(&mut counts) {
            *count += memchr::memmem::find_iter(&region, needle).count();
        }
    }
    counts
}

fn random_text(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[test]
fn no_passphrase_while_unlocked_and_no_secret_after_lock() {
    let store = Store::start();
    let passphrase = random_text(24);
    fs::write(store.passphrase_file(), &passphrase).unwrap();
    store.unlock();
    let values: Vec<String> = (0..3).map(|_| random_text(20)).collect();
    let ids: Vec<String> = values
        .iter()
        .map(|value| store.create_item("scan", value.as_bytes()))
        .collect();
    let (host, _, _) = store.host("host1");
    for _ in 0..5 {
        for id in &ids {
            cred(&host, &["item", "read", id], b"").ok();
            store.admin(&["item", "read", id], b"").ok();
        }
    }

    let pid = store.child_pid();
    let unlocked = occurrences(pid, &[passphrase.as_bytes()]);
    assert_eq!(
        unlocked,
        [0],
        "the passphrase is in the unlocked daemon's memory"
    );

    store.admin(&["store", "lock"], b"").ok();
    let derived = derived_key(&store, &passphrase);
    let mut needles: Vec<&[u8]> = vec![passphrase.as_bytes(), &derived];
    needles.extend(values.iter().map(|value| value.as_bytes()));
    let locked = occurrences(pid, &needles);
    assert_eq!(
        locked,
        vec![0; needles.len()],
        "passphrase, derived key, values after lock"
    );
}

/// The vault's derived master key, recomputed from identity.json.
fn derived_key(store: &Store, passphrase: &str) -> [u8; 32] {
    use base64::Engine;

    let identity = fs::read(store.dir.path().join("storage/identity.json")).unwrap();
    let identity: serde_json::Value = serde_json::from_slice(&identity).unwrap();
    let kdf = &identity["sealed"]["kdf"];
    let salt = base64::engine::general_purpose::STANDARD
        .decode(kdf["salt"].as_str().unwrap())
        .unwrap();
    let number = |name: &str| kdf[name].as_u64().unwrap() as u32;
    let params = argon2::Params::new(
        number("memory_kib"),
        number("iterations"),
        number("parallelism"),
        Some(32),
    )
    .unwrap();
    let mut key = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), &salt, &mut key)
        .unwrap();
    key
}
