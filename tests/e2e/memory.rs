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

    // The derived key and the identity are computed here by the test; the
    // daemon holds the one split in a Boojum and decrypts the other only
    // inside a guarded buffer, for one read at a time.
    let derived = derived_key(&store, &passphrase);
    let identity = identity(&store, &derived);
    let pid = store.child_pid();
    let needles: [&[u8]; 3] = [passphrase.as_bytes(), &derived, identity.as_bytes()];
    let unlocked = occurrences(pid, &needles);
    assert_eq!(
        unlocked,
        [0, 0, 0],
        "passphrase, derived key, identity while unlocked"
    );

    store.admin(&["store", "lock"], b"").ok();
    let mut needles: Vec<&[u8]> = vec![passphrase.as_bytes(), &derived, identity.as_bytes()];
    needles.extend(values.iter().map(|value| value.as_bytes()));
    let locked = occurrences(pid, &needles);
    assert_eq!(
        locked,
        vec![0; needles.len()],
        "passphrase, derived key, identity, values after lock"
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

/// The vault's age identity, decrypted from identity.json with `master`.
fn identity(store: &Store, master: &[u8; 32]) -> String {
    use base64::Engine;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};

    let file = fs::read(store.dir.path().join("storage/identity.json")).unwrap();
    let file: serde_json::Value = serde_json::from_slice(&file).unwrap();
    let sealed = &file["sealed"];
    let decode = |field: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(sealed[field].as_str().unwrap())
            .unwrap()
    };
    // The associated data is the KDF table serialised in its field order.
    let kdf = &sealed["kdf"];
    let aad = format!(
        "{{\"algorithm\":{},\"version\":{},\"memory_kib\":{},\"iterations\":{},\
         \"parallelism\":{},\"salt\":{}}}",
        kdf["algorithm"],
        kdf["version"],
        kdf["memory_kib"],
        kdf["iterations"],
        kdf["parallelism"],
        kdf["salt"]
    );
    let aad = aad.into_bytes();
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(master.into());
    let nonce = decode("nonce");
    let payload = Payload {
        msg: &decode("ciphertext"),
        aad: &aad,
    };
    let plain = cipher.decrypt(nonce.as_slice().into(), payload).unwrap();
    let text = String::from_utf8(plain).unwrap();
    assert!(
        text.starts_with("AGE-SECRET-KEY-1"),
        "the test decrypted the identity"
    );
    text
}
