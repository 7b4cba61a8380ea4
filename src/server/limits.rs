//! Per-peer limits: failed authentications, and connections at once.
//!
//! Both tables are keyed by the peer's IP address (not its port) and are
//! bounded, so that a flood of addresses cannot exhaust memory: when full,
//! the stalest entries make room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failed authentications an address may make within [`FAILURE_WINDOW`]
/// before its requests with credentials are refused unchecked.
pub const FREE_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How many addresses each table remembers.
const TABLE_CAPACITY: usize = 4096;

/// Counts failed authentications per address.
#[derive(Debug, Default)]
pub struct AuthLimiter {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// What recording a failure means for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The first failure in this window: worth a warning.
    First,
    /// This failure reached the limit: worth a warning that it now holds.
    LimitReached,
    /// Any other: counted quietly.
    Counted,
}

impl AuthLimiter {
    /// `Err(wait)` when `peer` has used up its failures for now.
    pub fn check(&self, peer: IpAddr, now: Instant) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match failures.get(&peer) {
            Some(entry) if entry.count >= FREE_FAILURES => {
                let ends = entry.since + FAILURE_WINDOW;
                if now < ends { Err(ends - now) } else { Ok(()) }
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, peer: IpAddr, now: Instant) -> Recorded {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= TABLE_CAPACITY && !failures.contains_key(&peer) {
            make_room(&mut failures, now);
        }
        let entry = failures.entry(peer).or_insert(Failures {
            count: 0,
            since: now,
        });
        if now >= entry.since + FAILURE_WINDOW {
            *entry = Failures {
                count: 0,
                since: now,
            };
        }
        entry.count += 1;
        match entry.count {
            1 => Recorded::First,
            count if count == FREE_FAILURES => Recorded::LimitReached,
            _ => Recorded::Counted,
        }
    }
}

/// Drops expired windows, or else the oldest quarter of the table.
fn make_room(failures: &mut HashMap<IpAddr, Failures>, now: Instant) {
    failures.retain(|_, entry| now < entry.since + FAILURE_WINDOW);
    if failures.len() < TABLE_CAPACITY {
        return;
    }
    let mut ages: Vec<(Instant, IpAddr)> = failures.iter().map(|(ip, e)| (e.since, *ip)).collect();
    ages.sort();
    for (_, ip) in ages.iter().take(TABLE_CAPACITY / 4) {
        failures.remove(ip);
    }
}

/// Counts open connections per address.
#[derive(Debug)]
pub struct ConnectionLimiter {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_peer: usize,
}

/// Held for as long as a connection is open; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    peer: IpAddr,
}

impl ConnectionLimiter {
    pub fn new(per_peer: usize) -> Self {
        Self {
            open: Arc::default(),
            per_peer,
        }
    }

    /// A slot for one more connection from `peer`, or `None` when it has
    /// as many open as it may.
    pub fn admit(&self, peer: IpAddr) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(peer).or_insert(0);
        if *count >= self.per_peer {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            open: self.open.clone(),
            peer,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn failures_beyond_the_limit_are_refused_until_the_window_ends() {
        let limiter = AuthLimiter::default();
        let start = Instant::now();
        assert_eq!(limiter.failed(ip(1), start), Recorded::First);
        for _ in 2..FREE_FAILURES {
            assert_eq!(limiter.failed(ip(1), start), Recorded::Counted);
            assert!(limiter.check(ip(1), start).is_ok());
        }
        assert_eq!(limiter.failed(ip(1), start), Recorded::LimitReached);
        assert!(limiter.check(ip(1), start).is_err());
        assert!(
            limiter.check(ip(2), start).is_ok(),
            "other addresses are not affected"
        );
        assert!(limiter.check(ip(1), start + FAILURE_WINDOW).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = AuthLimiter::default();
        let now = Instant::now();
        for n in 0..(TABLE_CAPACITY as u32 * 2) {
            limiter.failed(IpAddr::from(n.to_be_bytes()), now);
        }
        assert!(limiter.failures.lock().unwrap().len() <= TABLE_CAPACITY);
    }

    #[test]
    fn connection_slots_are_per_peer_and_freed_on_drop() {
        let limiter = ConnectionLimiter::new(2);
        let first = limiter.admit(ip(1)).unwrap();
        let _second = limiter.admit(ip(1)).unwrap();
        assert!(limiter.admit(ip(1)).is_none());
        assert!(limiter.admit(ip(2)).is_some());
        drop(first);
        assert!(limiter.admit(ip(1)).is_some());
    }
}

/// Remembers when each address was last logged, so that a peer refused
/// over and over is logged once a minute, not once a connection.
#[derive(Debug, Default)]
pub struct LogLimiter {
    last: Mutex<HashMap<IpAddr, Instant>>,
}

impl LogLimiter {
    pub const INTERVAL: Duration = Duration::from_secs(60);

    /// Whether `peer` should be logged now.
    pub fn should_log(&self, peer: IpAddr, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.get(&peer).is_some_and(|at| now < *at + Self::INTERVAL) {
            return false;
        }
        if last.len() >= TABLE_CAPACITY {
            last.retain(|_, at| now < *at + Self::INTERVAL);
            if last.len() >= TABLE_CAPACITY {
                last.clear();
            }
        }
        last.insert(peer, now);
        true
    }
}
