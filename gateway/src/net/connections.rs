//! Connection limits for a listener: so many at once in all, so many from one IP address.
//!
//! The policy when a limit is reached: the connection that has been idle longest (one that
//! has not logged in yet, or has no request in progress, as its owner says with
//! [`Ticket::set_idle`]) is told to close, and the new one takes its place; when none is
//! idle, the new one is refused. So a flood of idle connections cannot keep out a client
//! that has something to say, and one that is working is never cut off. A connection told
//! to close still holds its descriptor until its owner drops the [`Ticket`] (its owner gives
//! it a second at most); while as many are closing as `total`, no more are evicted (new ones
//! are refused), so the descriptors in use stay under twice `total`.
//!
//! IPv6 addresses count per /64 (one host usually has a whole /64).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// How many connections a listener takes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// In all.
    pub total: usize,
    /// From one IP address.
    pub per_address: usize,
}

/// The connections a listener holds, counted in all and per address.
#[derive(Clone)]
pub struct Connections {
    limits: ConnectionLimits,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// The connections counted against the limits.
    open: BTreeMap<u64, Entry>,
    by_address: HashMap<IpAddr, usize>,
    /// Connections told to close whose owners have not yet let them go.
    closing: usize,
}

struct Entry {
    ip: IpAddr,
    /// Since when it is idle; `None` while it works.
    idle_since: Option<Instant>,
    close: Arc<Notify>,
}

/// The address a connection counts under: IPv6 per /64.
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("mapped")),
        v4 => v4,
    }
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `total` connections are open, none idle.
    Total,
    /// `per_address` connections from this address are open, none idle.
    Address,
}

/// What [`Connections::admit`] did to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// There was room.
    Room,
    /// An idle connection was told to close (the limit it was over).
    Evicted(Full),
}

impl Connections {
    /// No connections yet, within `limits` (each at least 1).
    pub fn new(limits: ConnectionLimits) -> Connections {
        let limits = ConnectionLimits {
            total: limits.total.max(1),
            per_address: limits.per_address.max(1),
        };
        Connections {
            limits,
            state: Arc::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Counts a new, idle connection from `ip`, closing the longest-idle one when a limit is
    /// reached; refused when no connection in the way is idle.
    pub fn admit(&self, ip: IpAddr) -> Result<(Ticket, Admitted), Full> {
        let ip = counted_as(ip);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut admitted = Admitted::Room;
        let full = s.by_address.get(&ip).copied().unwrap_or(0) >= self.limits.per_address
            || s.open.len() >= self.limits.total;
        if full && s.closing >= self.limits.total {
            // As many are still closing as may be open: evict no more until they are gone.
            return Err(Full::Total);
        }
        if s.by_address.get(&ip).copied().unwrap_or(0) >= self.limits.per_address {
            s.evict(Some(ip)).ok_or(Full::Address)?;
            admitted = Admitted::Evicted(Full::Address);
        }
        if s.open.len() >= self.limits.total {
            s.evict(None).ok_or(Full::Total)?;
            admitted = Admitted::Evicted(Full::Total);
        }
        let id = s.next_id;
        s.next_id += 1;
        let close = Arc::new(Notify::new());
        let entry = Entry {
            ip,
            idle_since: Some(Instant::now()),
            close: close.clone(),
        };
        s.open.insert(id, entry);
        *s.by_address.entry(ip).or_default() += 1;
        let ticket = Ticket {
            state: self.state.clone(),
            id,
            close,
        };
        Ok((ticket, admitted))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .len()
    }
}

impl State {
    /// Tells the longest-idle connection (from `ip`, if given) to close and stops counting
    /// it; `None` if none is idle.
    fn evict(&mut self, ip: Option<IpAddr>) -> Option<()> {
        let (&id, _) = self
            .open
            .iter()
            .filter(|(_, e)| ip.is_none_or(|ip| e.ip == ip))
            .filter_map(|(id, e)| e.idle_since.map(|t| (id, t)))
            .min_by_key(|&(id, t)| (t, *id))?;
        let entry = self.remove(id)?;
        self.closing += 1;
        entry.close.notify_one();
        Some(())
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(n) = self.by_address.get_mut(&entry.ip) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&entry.ip);
            }
        }
        Some(entry)
    }
}

/// One open connection, counted until dropped (or evicted: then counted as closing until
/// dropped).
pub struct Ticket {
    state: Arc<Mutex<State>>,
    id: u64,
    close: Arc<Notify>,
}

impl Ticket {
    /// Marks the connection idle (it may then be closed to make room) or working; `false`
    /// if it was already told to close (the owner then closes it).
    pub fn set_idle(&self, idle: bool) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.open.get_mut(&self.id) {
            Some(e) => {
                e.idle_since = idle.then(Instant::now);
                true
            }
            None => false,
        }
    }

    /// Resolves when the connection is told to close to make room for another.
    pub async fn evicted(&self) {
        self.close.notified().await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.remove(self.id).is_none() {
            // Evicted: it was counted as closing since.
            s.closing = s.closing.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn idle_connections_make_room_and_working_ones_are_kept() {
        let c = Connections::new(ConnectionLimits {
            total: 3,
            per_address: 2,
        });
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let (a1, _) = c.admit(a).unwrap();
        let (a2, _) = c.admit(a).unwrap();
        a2.set_idle(false);
        // A third from `a` closes a1, the idle one, not a2, which works.
        let (a3, how) = c.admit(a).unwrap();
        assert_eq!(how, Admitted::Evicted(Full::Address));
        tokio::time::timeout(std::time::Duration::from_secs(1), a1.evicted())
            .await
            .expect("the idle connection is told to close");
        drop(a1);
        assert_eq!(c.open(), 2);
        a3.set_idle(false);
        assert_eq!(c.admit(a).err(), Some(Full::Address), "none idle from a");
        let (b1, how) = c.admit(b).unwrap();
        assert_eq!(how, Admitted::Room);
        b1.set_idle(false);
        assert_eq!(c.admit(b).err(), Some(Full::Total), "none idle at all");
        drop(a2);
        assert!(c.admit(b).is_ok(), "room again once one ends");
    }

    #[test]
    fn connections_still_closing_bound_the_evictions() {
        let c = Connections::new(ConnectionLimits {
            total: 2,
            per_address: 2,
        });
        let a = ip("10.0.0.1");
        // Two idle ones, then two newcomers evict them; their owners hold on to them.
        let held: Vec<Ticket> = (0..4).map(|_| c.admit(a).unwrap().0).collect();
        assert_eq!(c.open(), 2);
        assert_eq!(
            c.admit(a).err(),
            Some(Full::Total),
            "two closing: no more evictions"
        );
        drop(held);
        assert!(c.admit(a).is_ok());
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let c = Connections::new(ConnectionLimits {
            total: 10,
            per_address: 1,
        });
        let (first, _) = c.admit(ip("2001:db8::1")).unwrap();
        first.set_idle(false);
        assert_eq!(c.admit(ip("2001:db8::2")).err(), Some(Full::Address));
        assert!(c.admit(ip("2001:db8:0:1::1")).is_ok(), "another /64");
        assert!(c.admit(ip("::ffff:10.0.0.1")).is_ok());
    }
}
