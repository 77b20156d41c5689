//! The hard bound on one peer's bursts: at most [`WINDOW_DATAGRAMS`] and
//! [`WINDOW_BYTES`] within any [`WINDOW`] of send times.
//!
//! The token bucket alone bounds a window `w` by its depth plus `rate × w`;
//! a bucket deep enough to let a whole P-frame go as one GSO message (the
//! cheap case, see the module doc of [`super`]) would let a few more
//! datagrams follow within the same 5 ms. This window closes that gap. It
//! counts each group at the time its send call returned ([`Window::sent`]),
//! which is never before the group reached the wire, and compares with the
//! time the pacer is told, rounded down to the grid: both err towards
//! "too recent", so a receiver's 5 ms never hold more than the window,
//! however late the driver woke or sent.
//!
//! Sans-IO, times in ns since the pacer's epoch.

use std::collections::VecDeque;
use std::time::Duration;

/// The window a receiver (or a router's queue) sees bursts in.
pub const WINDOW: Duration = Duration::from_millis(5);
/// What one peer may get within any [`WINDOW`]: fifteen datagrams, audio
/// included, and no more bytes than fifteen full-size ones (~1250 bytes).
/// A 4 Mbit/s P-frame (12–13 datagrams) and the one or two audio packets
/// held for it leave whole. Counting bytes alone let 18 through (an encoder
/// that cuts frames into slices makes many short datagrams), and leaving
/// audio and RTCP outside let 16–18 through (they came on top of a full
/// window).
pub const WINDOW_DATAGRAMS: usize = 15;
pub const WINDOW_BYTES: usize = 18_750;

const WINDOW_NS: u64 = WINDOW.as_nanos() as u64;

/// Datagrams and bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Load {
    datagrams: usize,
    bytes: usize,
}

impl std::ops::AddAssign for Load {
    fn add_assign(&mut self, o: Load) {
        self.datagrams += o.datagrams;
        self.bytes += o.bytes;
    }
}

impl std::ops::SubAssign for Load {
    fn sub_assign(&mut self, o: Load) {
        self.datagrams -= o.datagrams;
        self.bytes -= o.bytes;
    }
}

impl Load {
    fn fits(self, more: Load) -> bool {
        self.datagrams + more.datagrams <= WINDOW_DATAGRAMS
            && self.bytes + more.bytes <= WINDOW_BYTES
    }
}

#[derive(Debug, Default)]
pub struct Window {
    /// Groups sent within the last [`WINDOW`] (send time, load), oldest first.
    recent: VecDeque<(u64, Load)>,
    /// The sum of `recent`.
    total: Load,
    /// Let go, send time not known yet.
    pending: Load,
}

impl Window {
    fn held(&self) -> Load {
        let mut held = self.total;
        held += self.pending;
        held
    }

    /// Whether a datagram of `bytes` may be let go at `now` (a grid step):
    /// it fits beside what left within the last [`WINDOW`], or nothing did
    /// (a datagram larger than the window goes alone).
    pub fn fits(&mut self, now: u64, bytes: usize) -> bool {
        self.forget(now);
        let held = self.held();
        held == Load::default()
            || held.fits(Load {
                datagrams: 1,
                bytes,
            })
    }

    /// Drop the groups that left [`WINDOW`] or more before `now`.
    fn forget(&mut self, now: u64) {
        while let Some(&(t, load)) = self.recent.front() {
            if t.saturating_add(WINDOW_NS) > now {
                break;
            }
            self.recent.pop_front();
            self.total -= load;
        }
    }

    /// A datagram of `bytes` was let go (its send time follows in [`sent`](Self::sent)).
    pub fn let_go(&mut self, bytes: usize) {
        self.pending += Load {
            datagrams: 1,
            bytes,
        };
    }

    /// Something was let go whose send time is not known yet.
    pub fn has_pending(&self) -> bool {
        self.pending != Load::default()
    }

    /// What was let go left at `at`.
    pub fn sent(&mut self, at: u64) {
        let pending = std::mem::take(&mut self.pending);
        if pending != Load::default() {
            self.recent.push_back((at, pending));
            self.total += pending;
        }
    }

    /// The earliest time at which `datagrams` of `bytes` in all (at most
    /// the window) fit: `None` if they fit now.
    pub fn due(&self, datagrams: usize, bytes: usize) -> Option<u64> {
        let need = Load {
            datagrams: datagrams.min(WINDOW_DATAGRAMS),
            bytes: bytes.min(WINDOW_BYTES),
        };
        let mut held = self.held();
        if held.fits(need) {
            return None;
        }
        for &(t, load) in &self.recent {
            held -= load;
            if held.fits(need) {
                return Some(t.saturating_add(WINDOW_NS));
            }
        }
        // Only what is still unsent is in the way: its send time comes first.
        self.recent
            .back()
            .map(|&(t, _)| t.saturating_add(WINDOW_NS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn let_go(w: &mut Window, datagrams: usize, each: usize) {
        for _ in 0..datagrams {
            w.let_go(each);
        }
    }

    #[test]
    fn a_group_holds_the_window_until_five_ms_after_it_left() {
        let mut w = Window::default();
        assert!(w.fits(0, 1250));
        let_go(&mut w, WINDOW_DATAGRAMS - 1, 1200);
        assert!(w.fits(0, 1250));
        let_go(&mut w, 1, 1200);
        assert!(!w.fits(0, 100), "the window's datagrams");
        // Sent 3 ms after it was let go (the driver was late).
        w.sent(3 * MS);
        assert!(!w.fits(7 * MS, 100), "still within 5 ms of its send");
        assert_eq!(w.due(12, 12 * 1200), Some(8 * MS));
        assert!(w.fits(8 * MS, 1250), "gone from the window");
        assert_eq!(w.due(12, 12 * 1200), None);
    }

    #[test]
    fn many_short_datagrams_are_counted_not_only_their_bytes() {
        let mut w = Window::default();
        let_go(&mut w, WINDOW_DATAGRAMS, 300);
        assert!(!w.fits(0, 300), "4.2 KB, but the window's datagrams");
        w.sent(0);
        assert_eq!(w.due(1, 300), Some(5 * MS));
    }

    #[test]
    fn the_oldest_groups_make_room_first() {
        let mut w = Window::default();
        for at in [0, 2 * MS, 4 * MS] {
            let_go(&mut w, 4, 1250);
            w.sent(at);
        }
        assert!(w.fits(4 * MS, 1250), "twelve of fifteen");
        // Five datagrams need the first group gone; nine the second too.
        assert_eq!(w.due(5, 5 * 1250), Some(5 * MS));
        assert_eq!(w.due(9, 9 * 1250), Some(7 * MS));
        assert_eq!(
            w.due(100, 100 * 1250),
            Some(9 * MS),
            "at most the whole window"
        );
        // A datagram larger than the window goes alone, once it is empty.
        assert!(!w.fits(8 * MS, 20_000));
        assert!(w.fits(9 * MS, 20_000));
    }
}
