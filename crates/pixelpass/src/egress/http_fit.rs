//! When an HTTP-TS viewer on automatic layers (no `?layer=`) moves down.
//!
//! Sans-IO: the viewer reports, each time it hands chunks on, how far behind
//! the stream its sending is ([`Subscriber::behind`](crate::hub::Subscriber::behind):
//! the age of the chunk it just took; a viewer whose socket backs up takes
//! its chunks late) and how many times it has skipped to a keyframe so far
//! (the hub's lag rule: a chunk older than `max_lag`, or the ring overran).
//! [`Fit`] says when to move to the next lower layer:
//!
//! - at once when the viewer skipped (it already lost a GOP at this layer);
//! - when it stayed more than [`BEHIND_LIMIT`] behind for [`BEHIND_FOR`]
//!   (a socket backing up for longer than a burst: a keyframe or a hiccup
//!   is shorter than that).
//!
//! After a move nothing is judged for [`SETTLE`]: what the socket still
//! holds of the old layer drains first (it keeps the new layer's chunks
//! late for a while), so judging at once would push it down again for the
//! old layer's backlog.
//!
//! It never moves back up by itself: an HTTP viewer gives no estimate of
//! its link (no receiver reports; TCP hides the loss and the rate), so the
//! only way to learn whether the higher layer fits again would be to try
//! it — and a failed try costs the viewer a stall of seconds and a GOP
//! skipped. A viewer that wants the higher layer back reconnects (or pins
//! it with `?layer=0`).

use std::fmt;
use std::time::{Duration, Instant};

/// Sending more than this behind the stream…
pub const BEHIND_LIMIT: Duration = Duration::from_millis(600);
/// …for this long moves the viewer down.
pub const BEHIND_FOR: Duration = Duration::from_secs(1);
/// Nothing is judged this long after a move.
pub const SETTLE: Duration = Duration::from_secs(4);

/// Why a viewer moves down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// It skipped to a keyframe (lost a GOP) this many times on this layer.
    Skipped(u64),
    /// It has been sending this far behind the stream for [`BEHIND_FOR`].
    Behind(Duration),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Skipped(n) => write!(f, "it fell behind and skipped {n} GOP(s)"),
            Reason::Behind(d) => write!(
                f,
                "its writes stayed {} ms behind the stream for {} ms",
                d.as_millis(),
                BEHIND_FOR.as_millis()
            ),
        }
    }
}

#[derive(Debug, Default)]
pub struct Fit {
    /// The viewer's skip count when this layer began.
    skips_at_start: u64,
    /// Since when every report was above [`BEHIND_LIMIT`].
    behind_since: Option<Instant>,
    /// No judging before this (after a move).
    settle_until: Option<Instant>,
}

impl Fit {
    pub fn new() -> Self {
        Self::default()
    }

    /// One report; `Some` when the viewer should move down now.
    pub fn observe(&mut self, now: Instant, behind: Duration, lag_skips: u64) -> Option<Reason> {
        if let Some(until) = self.settle_until {
            if now < until {
                self.skips_at_start = lag_skips;
                self.behind_since = None;
                return None;
            }
            self.settle_until = None;
        }
        let skipped = lag_skips.saturating_sub(self.skips_at_start);
        if skipped > 0 {
            return Some(Reason::Skipped(skipped));
        }
        if behind <= BEHIND_LIMIT {
            self.behind_since = None;
            return None;
        }
        let since = *self.behind_since.get_or_insert(now);
        (now.saturating_duration_since(since) >= BEHIND_FOR).then_some(Reason::Behind(behind))
    }

    /// The viewer moved to another layer (a fresh subscriber: its skips
    /// count from 0) at `now`.
    pub fn moved(&mut self, now: Instant) {
        self.skips_at_start = 0;
        self.behind_since = None;
        self.settle_until = Some(now + SETTLE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_skip_moves_at_once_a_short_backlog_does_not() {
        let t0 = Instant::now();
        let mut f = Fit::new();
        // A keyframe burst: 900 ms behind for half a second, then caught up.
        assert_eq!(f.observe(t0, 900 * MS, 0), None);
        assert_eq!(f.observe(t0 + 500 * MS, 900 * MS, 0), None);
        assert_eq!(f.observe(t0 + 600 * MS, 100 * MS, 0), None);
        assert_eq!(
            f.observe(t0 + 1200 * MS, 900 * MS, 0),
            None,
            "the clock restarted"
        );
        assert_eq!(f.observe(t0 + 2100 * MS, 900 * MS, 0), None);
        // A skip is a move.
        assert_eq!(
            f.observe(t0 + 2200 * MS, Duration::ZERO, 1),
            Some(Reason::Skipped(1))
        );
    }

    #[test]
    fn a_viewer_behind_for_a_second_moves() {
        let t0 = Instant::now();
        let mut f = Fit::new();
        for i in 0..10 {
            assert_eq!(f.observe(t0 + i * 100 * MS, 700 * MS, 0), None, "at {i}");
        }
        assert_eq!(
            f.observe(t0 + 1000 * MS, 800 * MS, 0),
            Some(Reason::Behind(800 * MS))
        );
    }

    #[test]
    fn after_a_move_the_old_backlog_is_not_held_against_the_new_layer() {
        let t0 = Instant::now();
        let mut f = Fit::new();
        f.moved(t0);
        // The socket still drains the old layer: late, even a skip.
        assert_eq!(f.observe(t0 + 1000 * MS, 3000 * MS, 0), None);
        assert_eq!(f.observe(t0 + 3900 * MS, 3000 * MS, 1), None);
        // Settled: that skip was the old backlog's; the new layer keeps up.
        assert_eq!(f.observe(t0 + 4100 * MS, 50 * MS, 1), None);
        // A new skip on this layer counts.
        assert_eq!(
            f.observe(t0 + 5000 * MS, 50 * MS, 2),
            Some(Reason::Skipped(1))
        );
    }
}
