//! Fetched values, each held in a guarded buffer until its time-to-live
//! ends. Concurrent opens of one file share a single fetch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use protect::GuardedBuf;

use crate::{FetchError, SecretSource};

pub type Value = Arc<GuardedBuf>;
type Outcome = Result<Value, FetchError>;

/// The cache of every file of a mount, keyed by inode.
pub struct Cache {
    slots: HashMap<u64, Slot>,
    source: Arc<dyn SecretSource>,
    fetch_timeout: Duration,
}

struct Slot {
    item: String,
    ttl: Duration,
    state: Mutex<SlotState>,
    /// The size of the last value fetched, so that stat can tell it.
    known_len: AtomicU64,
}

#[derive(Default)]
struct SlotState {
    value: Option<(Value, Instant)>,
    pending: Option<Arc<Pending>>,
}

/// A fetch under way, which later opens wait for instead of fetching again.
#[derive(Default)]
struct Pending {
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cache {
    pub fn new(
        files: impl Iterator<Item = (u64, String, Duration)>,
        source: Arc<dyn SecretSource>,
        fetch_timeout: Duration,
    ) -> Self {
        let slots = files
            .map(|(ino, item, ttl)| {
                let state = Mutex::new(SlotState::default());
                (
                    ino,
                    Slot {
                        item,
                        ttl,
                        state,
                        known_len: AtomicU64::new(0),
                    },
                )
            })
            .collect();
        Self {
            slots,
            source,
            fetch_timeout,
        }
    }

    /// The size of the file as last fetched, zero before the first open.
    pub fn known_len(&self, ino: u64) -> u64 {
        self.slots
            .get(&ino)
            .map_or(0, |slot| slot.known_len.load(Ordering::Relaxed))
    }

    /// The value of `ino`: cached, from a fetch under way, or fetched now.
    /// Blocks the calling thread for at most the fetch timeout.
    pub fn get(&self, ino: u64) -> Outcome {
        let slot = self
            .slots
            .get(&ino)
            .ok_or_else(|| FetchError::Failed("no such file".into()))?;
        let mut state = lock(&slot.state);
        if let Some((value, expires)) = &state.value
            && Instant::now() < *expires
        {
            return Ok(value.clone());
        }
        if let Some(pending) = state.pending.clone() {
            drop(state);
            return self.wait(&pending);
        }
        let pending = Arc::new(Pending::default());
        state.pending = Some(pending.clone());
        drop(state);

        let outcome = self.fetch(&slot.item);
        let mut state = lock(&slot.state);
        state.pending = None;
        if let Ok(value) = &outcome {
            state.value = Some((value.clone(), Instant::now() + slot.ttl));
            slot.known_len.store(value.len() as u64, Ordering::Relaxed);
        }
        drop(state);

        *lock(&pending.outcome) = Some(outcome.clone());
        pending.done.notify_all();
        outcome
    }

    fn wait(&self, pending: &Pending) -> Outcome {
        let deadline = Instant::now() + self.fetch_timeout;
        let mut outcome = lock(&pending.outcome);
        while outcome.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FetchError::Timeout);
            }
            outcome = pending
                .done
                .wait_timeout(outcome, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        outcome.clone().expect("checked above")
    }

    /// Runs the source on its own thread, so that a source that ignores
    /// its deadline still cannot hold the open past it.
    fn fetch(&self, item: &str) -> Outcome {
        let deadline = Instant::now() + self.fetch_timeout;
        let (sender, receiver) = mpsc::channel();
        let source = self.source.clone();
        let item = item.to_owned();
        thread::spawn(move || {
            let fetched = source.fetch(&item, deadline);
            let _ = sender.send(fetched);
        });

        let bytes = match receiver.recv_timeout(self.fetch_timeout) {
            Ok(fetched) => fetched?,
            Err(_) => return Err(FetchError::Timeout),
        };
        let value =
            GuardedBuf::copy_from(&bytes).map_err(|err| FetchError::Failed(err.to_string()))?;
        Ok(Arc::new(value))
    }

    /// Drops every value whose time-to-live has ended; answers how many.
    /// A value still open by a reader is wiped when that reader closes.
    pub fn expire(&self) -> usize {
        let now = Instant::now();
        let mut expired = 0;
        for slot in self.slots.values() {
            let mut state = lock(&slot.state);
            if state
                .value
                .as_ref()
                .is_some_and(|(_, expires)| now >= *expires)
            {
                state.value = None;
                expired += 1;
            }
        }
        expired
    }

    /// Drops every value at once, as on unmount.
    pub fn clear(&self) {
        for slot in self.slots.values() {
            lock(&slot.state).value = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use zeroize::Zeroizing;

    use super::*;

    /// Answers "value" after `delay`, counting fetches.
    struct Slow {
        delay: Duration,
        fetches: AtomicUsize,
    }

    impl SecretSource for Slow {
        fn fetch(&self, _item: &str, _deadline: Instant) -> Result<Zeroizing<Vec<u8>>, FetchError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            thread::sleep(self.delay);
            Ok(Zeroizing::new(b"value".to_vec()))
        }
    }

    fn cache(delay: Duration, ttl: Duration, timeout: Duration) -> (Arc<Cache>, Arc<Slow>) {
        let source = Arc::new(Slow {
            delay,
            fetches: AtomicUsize::new(0),
        });
        let files = std::iter::once((2, "item".to_owned(), ttl));
        (Arc::new(Cache::new(files, source.clone(), timeout)), source)
    }

    #[test]
    fn concurrent_opens_share_one_fetch() {
        let (cache, source) = cache(
            Duration::from_millis(200),
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                thread::spawn(move || cache.get(2).unwrap().with(<[u8]>::to_vec))
            })
            .collect();
        for open in opens {
            assert_eq!(open.join().unwrap(), b"value");
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        assert_eq!(cache.known_len(2), 5);
    }

    #[test]
    fn expired_values_are_dropped_and_fetched_again() {
        let (cache, source) = cache(
            Duration::ZERO,
            Duration::from_millis(50),
            Duration::from_secs(5),
        );
        let value = cache.get(2).unwrap();
        thread::sleep(Duration::from_millis(80));
        assert_eq!(cache.expire(), 1);
        // The open handle keeps its copy until it is closed.
        assert_eq!(value.with(<[u8]>::to_vec), b"value");
        cache.get(2).unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_source_that_hangs_times_out() {
        let (cache, _) = cache(
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_millis(100),
        );
        let started = Instant::now();
        assert_eq!(cache.get(2).unwrap_err(), FetchError::Timeout);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            cache.get(99).unwrap_err(),
            FetchError::Failed("no such file".into())
        );
    }
}
