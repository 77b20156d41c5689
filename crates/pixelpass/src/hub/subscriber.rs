//! One viewer's view of the hub: where it joins, and how it skips ahead.
//!
//! Rules, all applied here and nowhere else:
//! - a viewer starts on a keyframe chunk, preceded by the stream's PAT/PMT;
//! - a viewer whose next chunk is older than `max_lag`, or that the ring
//!   overran, drops chunks until the next (fresh) keyframe: it never resumes
//!   mid-GOP, and never holds the producer or anyone else back;
//! - a new producer run (epoch) means a fresh resync on its first keyframe.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast::{self, error::TryRecvError};

use super::{Chunk, Hub};
use crate::media::ts;

/// The result of a non-blocking poll.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Data(Bytes),
    /// Nothing to send right now.
    Empty,
    /// The hub is gone.
    Closed,
}

/// Counters for one viewer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Times this viewer fell behind and skipped to a keyframe.
    pub lag_skips: u64,
    /// Chunks dropped while waiting for a keyframe.
    pub chunks_skipped: u64,
}

pub struct Subscriber {
    hub: Hub,
    rx: broadcast::Receiver<Chunk>,
    pending: VecDeque<Bytes>,
    synced: bool,
    epoch: u64,
    stats: SubscriberStats,
    /// How old the last live chunk handed on was when it was taken (how far
    /// behind the stream this viewer's sending is).
    behind: Duration,
    /// The PTS of the last video frame handed on.
    last_pts: Option<u64>,
    /// Sync only on a keyframe later than this PTS (a viewer moved here).
    start_after: Option<u64>,
}

/// A viewer moving between layers starts on a keyframe at least this much
/// later (90 kHz ticks: half a frame at 30 fps) than the last frame it got,
/// so never on another encode of the same picture.
pub const MOVE_MIN_PTS_STEP: u64 = 1500;

impl Subscriber {
    pub(super) fn new(
        hub: Hub,
        rx: broadcast::Receiver<Chunk>,
        backlog: Vec<Chunk>,
        psi: Option<Bytes>,
        epoch: u64,
    ) -> Self {
        let mut pending = VecDeque::with_capacity(backlog.len() + 1);
        let synced = !backlog.is_empty();
        if synced {
            pending.extend(psi);
            pending.extend(backlog.into_iter().map(|c| c.data));
        }
        Self {
            hub,
            rx,
            pending,
            synced,
            epoch,
            stats: SubscriberStats::default(),
            behind: Duration::ZERO,
            last_pts: None,
            start_after: None,
        }
    }

    /// Sync only on a keyframe whose PTS is later than `pts` (see
    /// [`MOVE_MIN_PTS_STEP`]).
    pub(super) fn starting_after(mut self, pts: Option<u64>) -> Self {
        self.start_after = pts;
        self
    }

    /// The PTS of the last video frame this viewer was handed (when the hub
    /// cut its chunks).
    pub fn last_pts(&self) -> Option<u64> {
        self.last_pts
    }

    /// How many viewers (this one included) share the stream right now.
    pub fn audience(&self) -> usize {
        self.hub.receivers()
    }

    pub fn stats(&self) -> SubscriberStats {
        self.stats
    }

    /// How far behind the stream this viewer was at its last live chunk:
    /// that chunk's age when it was taken (a viewer whose writes back up
    /// takes its chunks late).
    pub fn behind(&self) -> Duration {
        self.behind
    }

    /// The hub (layer) this viewer reads.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Is this viewer receiving (joined on a keyframe and not lagging)?
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The next bytes to send, without waiting. `now` is the send time.
    pub fn try_next(&mut self, now: Instant) -> Next {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Next::Data(b);
            }
            match self.rx.try_recv() {
                Ok(chunk) => {
                    if let Some(b) = self.accept(chunk, now) {
                        return Next::Data(b);
                    }
                }
                Err(TryRecvError::Empty) => return Next::Empty,
                Err(TryRecvError::Lagged(n)) => self.overrun(n),
                Err(TryRecvError::Closed) => return Next::Closed,
            }
        }
    }

    /// The next bytes to send, waiting for them. `None` when the hub is gone.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.try_next(Instant::now()) {
                Next::Data(b) => return Some(b),
                Next::Closed => return None,
                Next::Empty => {}
            }
            match self.rx.recv().await {
                Ok(chunk) => {
                    if let Some(b) = self.accept(chunk, Instant::now()) {
                        return Some(b);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => self.overrun(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Everything sendable right now, appended to `out` (one write for many chunks).
    pub fn drain_into(&mut self, now: Instant, out: &mut Vec<Bytes>, max: usize) {
        while out.len() < max {
            match self.try_next(now) {
                Next::Data(b) => out.push(b),
                Next::Empty | Next::Closed => break,
            }
        }
    }

    fn overrun(&mut self, missed: u64) {
        if self.synced {
            self.stats.lag_skips += 1;
        }
        self.stats.chunks_skipped += missed;
        self.synced = false;
    }

    fn accept(&mut self, chunk: Chunk, now: Instant) -> Option<Bytes> {
        if chunk.epoch != self.epoch {
            self.epoch = chunk.epoch;
            self.synced = false;
        }
        let age = now.saturating_duration_since(chunk.at);
        let too_old = age > self.hub.config().max_lag;
        if self.synced && too_old {
            self.stats.lag_skips += 1;
            self.synced = false;
        }
        if !self.synced {
            if !chunk.key || too_old {
                self.stats.chunks_skipped += 1;
                return None;
            }
            if let (Some(after), Some(pts)) = (self.start_after, chunk.pts) {
                if !ts::packet::pts_later(pts, after, MOVE_MIN_PTS_STEP) {
                    // Another encode of a picture this viewer already has:
                    // wait for the next keyframe, and ask for it.
                    self.stats.chunks_skipped += 1;
                    self.hub.request_keyframe(now);
                    return None;
                }
            }
            self.start_after = None;
            self.synced = true;
            self.behind = age;
            if chunk.pts.is_some() {
                self.last_pts = chunk.pts;
            }
            if let Some(psi) = self.hub.psi() {
                self.pending.push_back(chunk.data);
                return Some(psi);
            }
        }
        self.behind = age;
        if chunk.pts.is_some() {
            self.last_pts = chunk.pts;
        }
        Some(chunk.data)
    }
}
