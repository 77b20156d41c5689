//! Which connections the listener keeps: at most `max` open, and of those at
//! most `idle_cap` that have not yet sent a whole request head (a slowloris
//! flood is nothing but such connections). A connection over the idle cap,
//! or at `max`, makes room by shedding the oldest idle one; when every open
//! connection is a request (viewers, the API), a new one is refused. So the
//! `max - idle_cap` slots always left for requests are the reserve that
//! keeps a viewer's join and the API reachable during a flood, and viewers
//! already admitted are never closed to make room.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The connection limit and its idle share.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    idle_cap: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Connections counted (admitted, not yet closed or shed).
    open: usize,
    /// Shed, but their task has not closed the socket yet: descriptors still held.
    closing: usize,
    next: u64,
    /// Connections without a request yet, oldest first.
    idle: BTreeMap<u64, Arc<Slot>>,
}

/// One admitted connection's link to the admission.
#[derive(Debug, Default)]
pub struct Slot {
    /// Told when the connection is shed: close it.
    pub shed: Notify,
    /// Still counted in `open` (false once shed or dropped).
    counted: AtomicBool,
}

/// What [`Admission::admit`] decided.
#[derive(Debug)]
pub struct Verdict {
    /// `None`: refused (every open connection is a request).
    pub ticket: Option<Ticket>,
    /// Idle connections shed to make room.
    pub shed: usize,
}

/// An admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    pub slot: Arc<Slot>,
}

impl Admission {
    /// `max` connections at most, a quarter of them (at least one) kept for
    /// connections that have sent a request.
    pub fn new(max: usize) -> Arc<Self> {
        let max = max.max(2);
        let reserve = (max / 4).max(1);
        Arc::new(Self {
            max,
            idle_cap: max - reserve,
            state: Mutex::new(State::default()),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn idle_cap(&self) -> usize {
        self.idle_cap
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding it leaves counts that are still sound.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (open, idle) now.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.open, s.idle.len())
    }

    /// Are shed connections still holding so many descriptors that another
    /// accept would go over the limit? The accept loop waits while so (their
    /// tasks close them within microseconds).
    pub fn must_wait(&self) -> bool {
        let s = self.lock();
        s.closing > 0 && s.open + s.closing >= self.max
    }

    /// A new connection: admitted as idle (shedding the oldest idle ones when
    /// over the idle cap or at the limit), or refused.
    pub fn admit(self: &Arc<Self>) -> Verdict {
        let mut s = self.lock();
        let mut shed = 0;
        while s.idle.len() >= self.idle_cap || s.open >= self.max {
            let Some((_, oldest)) = s.idle.pop_first() else {
                break;
            };
            if oldest.counted.swap(false, Ordering::AcqRel) {
                s.open -= 1;
                s.closing += 1;
            }
            oldest.shed.notify_one();
            shed += 1;
        }
        if s.open >= self.max {
            return Verdict { ticket: None, shed };
        }
        let id = s.next;
        s.next += 1;
        s.open += 1;
        let slot = Arc::new(Slot {
            shed: Notify::new(),
            counted: AtomicBool::new(true),
        });
        s.idle.insert(id, slot.clone());
        Verdict {
            ticket: Some(Ticket {
                admission: self.clone(),
                id,
                slot,
            }),
            shed,
        }
    }

    /// Shed the oldest idle connection (the descriptors ran out anyway):
    /// true when there was one.
    pub fn shed_oldest(&self) -> bool {
        let mut s = self.lock();
        let Some((_, oldest)) = s.idle.pop_first() else {
            return false;
        };
        if oldest.counted.swap(false, Ordering::AcqRel) {
            s.open -= 1;
            s.closing += 1;
        }
        oldest.shed.notify_one();
        true
    }
}

impl Ticket {
    /// The connection sent a request head: it is no longer sheddable.
    pub fn active(&self) {
        self.admission.lock().idle.remove(&self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.admission.lock();
        s.idle.remove(&self.id);
        if self.slot.counted.swap(false, Ordering::AcqRel) {
            s.open -= 1;
        } else {
            // Shed earlier: its socket closes as this ticket goes.
            s.closing = s.closing.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_idle_connections_sheds_the_oldest_and_keeps_the_reserve() {
        let a = Admission::new(8); // idle cap 6, reserve 2
        assert_eq!(a.idle_cap(), 6);
        let viewer = a.admit().ticket.expect("admitted");
        viewer.active();
        let mut flood: Vec<Ticket> = Vec::new();
        let mut shed = 0;
        for _ in 0..100 {
            let v = a.admit();
            shed += v.shed;
            flood.push(
                v.ticket
                    .expect("an idle one is always admitted by shedding another"),
            );
            let (open, idle) = a.counts();
            assert!(idle <= 6 && open <= 8, "open {open}, idle {idle}");
        }
        assert_eq!(shed, 100 - 6, "every one over the idle cap shed one");
        // The oldest were told to close; the newest 6 were not.
        let told: Vec<bool> = flood
            .iter()
            .map(|t| !t.slot.counted.load(Ordering::Acquire))
            .collect();
        assert!(told[..94].iter().all(|&x| x) && told[94..].iter().all(|&x| !x));
        // A new viewer during the flood: admitted, becomes a request.
        let second = a.admit().ticket.expect("the reserve admits a new viewer");
        second.active();
        assert_eq!(a.counts(), (7, 5));
        assert!(a.must_wait(), "94 shed sockets are still held");
        drop(flood);
        assert!(!a.must_wait());
        assert_eq!(a.counts(), (2, 0));
        drop((viewer, second));
        assert_eq!(a.counts(), (0, 0));
    }

    #[test]
    fn when_every_connection_is_a_request_a_new_one_is_refused() {
        let a = Admission::new(4);
        let held: Vec<Ticket> = (0..4)
            .map(|_| {
                let t = a.admit().ticket.expect("room");
                t.active();
                t
            })
            .collect();
        let v = a.admit();
        assert!(v.ticket.is_none() && v.shed == 0, "{v:?}");
        drop(held);
        assert!(a.admit().ticket.is_some());
    }

    #[tokio::test]
    async fn a_shed_connection_is_told() {
        let a = Admission::new(4); // idle cap 3
        let first = a.admit().ticket.expect("room");
        let slot = first.slot.clone();
        let waiter = tokio::spawn(async move { slot.shed.notified().await });
        for _ in 0..3 {
            std::mem::forget(a.admit().ticket);
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the oldest idle connection is told to close")
            .expect("join");
        drop(first);
        assert!(a.shed_oldest(), "the forgotten ones are still idle");
    }
}
