//! The Boojum: one 32-byte key kept as two guarded partitions, x and
//! y = H(x) XOR k, both re-randomised every few milliseconds by a
//! background thread.
//!
//! Threat addressed: reading the key out of memory. An attacker must take
//! both partitions at the same instant: a copy of x from one moment and of
//! y from another yields nothing, and neither partition alone says
//! anything about k. The key itself exists only inside [`Boojum::with_key`],
//! in a guarded buffer that is wiped on return.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread;
use std::time::Duration;

use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

use crate::guarded::{AllocError, GuardedBuf};

pub const KEY_LEN: usize = 32;

/// How often the partitions are re-randomised.
pub const REKEY_INTERVAL: Duration = Duration::from_millis(5);

/// One key in two re-randomised partitions.
pub struct Boojum {
    partitions: Arc<Mutex<Partitions>>,
    /// Where the key is rebuilt for each use, wiped after it; kept
    /// rather than allocated per use, which would cost a dozen syscalls.
    scratch: Mutex<GuardedBuf>,
}

struct Partitions {
    x: GuardedBuf,
    y: GuardedBuf,
}

impl Boojum {
    /// Takes `key` into a new Boojum and starts its re-randomising thread,
    /// which ends when the Boojum is dropped.
    pub fn new(key: &[u8; KEY_LEN]) -> Result<Self, AllocError> {
        let x = GuardedBuf::zeroed(KEY_LEN)?;
        x.with_mut(|x| OsRng.fill_bytes(x));
        let y = GuardedBuf::zeroed(KEY_LEN)?;
        let hx = x.with(hash);
        y.with_mut(|y| {
            for (i, byte) in y.iter_mut().enumerate() {
                *byte = hx[i] ^ key[i];
            }
        });
        let partitions = Arc::new(Mutex::new(Partitions { x, y }));
        spawn_rekeying(Arc::downgrade(&partitions));
        let scratch = Mutex::new(GuardedBuf::zeroed(KEY_LEN)?);
        Ok(Self {
            partitions,
            scratch,
        })
    }

    /// Rebuilds the key for the duration of `use_key`, in a guarded buffer
    /// wiped on return.
    pub fn with_key<R>(&self, use_key: impl FnOnce(&[u8; KEY_LEN]) -> R) -> Result<R, AllocError> {
        let scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        // One open window of the scratch buffer for both the rebuild and
        // the use: each window costs two mprotect calls.
        Ok(scratch.with_mut(|k| {
            {
                let partitions = self
                    .partitions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let hx = partitions.x.with(hash);
                partitions.y.with(|y| {
                    for i in 0..KEY_LEN {
                        k[i] = hx[i] ^ y[i];
                    }
                });
            }
            let result = use_key((&*k).try_into().expect("the key buffer is 32 bytes"));
            k.fill(0);
            result
        }))
    }

    /// Copies of both partitions, for tests that watch them change.
    #[cfg(test)]
    fn snapshot(&self) -> (Vec<u8>, Vec<u8>) {
        let partitions = self.partitions.lock().unwrap();
        (
            partitions.x.with(<[u8]>::to_vec),
            partitions.y.with(<[u8]>::to_vec),
        )
    }
}

impl Partitions {
    /// x' = x XOR r and y' = y XOR H(x) XOR H(x'), which keeps
    /// H(x') XOR y' = k.
    fn rerandomise(&self) {
        let mut r = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut r);
        let old = self.x.with(hash);
        self.x
            .with_mut(|x| x.iter_mut().zip(r).for_each(|(byte, pad)| *byte ^= pad));
        let new = self.x.with(hash);
        self.y.with_mut(|y| {
            for i in 0..KEY_LEN {
                y[i] ^= old[i] ^ new[i];
            }
        });
        r.fill(0);
        std::hint::black_box(&r);
    }
}

fn hash(bytes: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(bytes).into()
}

fn spawn_rekeying(partitions: Weak<Mutex<Partitions>>) {
    let spawned = thread::Builder::new().name("boojum".into()).spawn(move || {
        while let Some(partitions) = partitions.upgrade() {
            partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .rerandomise();
            drop(partitions);
            thread::sleep(REKEY_INTERVAL);
        }
    });
    // Without the thread the key is still split, only not moving; a
    // process that cannot start threads has bigger problems to report.
    drop(spawned);
}

impl fmt::Debug for Boojum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Boojum").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips() {
        let key = [42u8; KEY_LEN];
        let boojum = Boojum::new(&key).unwrap();
        assert_eq!(boojum.with_key(|k| *k).unwrap(), key);
    }

    #[test]
    fn rerandomising_moves_both_partitions_and_keeps_the_key() {
        let key: [u8; KEY_LEN] = std::array::from_fn(|i| i as u8);
        let boojum = Boojum::new(&key).unwrap();
        let (x1, y1) = boojum.snapshot();
        thread::sleep(REKEY_INTERVAL * 10);
        let (x2, y2) = boojum.snapshot();
        assert_ne!(x1, x2);
        assert_ne!(y1, y2);
        assert_ne!(x1.as_slice(), key.as_slice());
        assert_ne!(y1.as_slice(), key.as_slice());
        assert_eq!(boojum.with_key(|k| *k).unwrap(), key);
    }

    #[test]
    fn concurrent_users_all_get_the_key() {
        let key = [7u8; KEY_LEN];
        let boojum = Arc::new(Boojum::new(&key).unwrap());
        let users: Vec<_> = (0..8)
            .map(|_| {
                let boojum = boojum.clone();
                thread::spawn(move || (0..500).all(|_| boojum.with_key(|k| *k == key).unwrap()))
            })
            .collect();
        assert!(users.into_iter().all(|user| user.join().unwrap()));
    }

    #[test]
    fn the_thread_ends_with_the_boojum() {
        let boojum = Boojum::new(&[1u8; KEY_LEN]).unwrap();
        let weak = Arc::downgrade(&boojum.partitions);
        drop(boojum);
        thread::sleep(REKEY_INTERVAL * 4);
        assert!(weak.upgrade().is_none());
    }
}
