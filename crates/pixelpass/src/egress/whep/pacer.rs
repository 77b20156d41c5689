//! Pacing: a peer's datagrams leave at a rate, not as one burst per frame.
//!
//! Without it a frame goes to a peer as one `sendmmsg`/GSO burst: a 720p
//! keyframe of 50–150 datagrams reaches the receiver within a millisecond
//! or two and overflows a default 208 KB socket buffer or a router queue.
//! libwebrtc paces at 2.5× its target bitrate; so do we, per peer:
//!
//! - [`Pacer`]: a token bucket. Tokens (bytes) flow in at the pacing rate and
//!   hold at most [`BURST_BYTES`] (fifteen full-size datagrams), plus one
//!   [`GRID`] step of the rate while datagrams wait (what waiting for the
//!   next step would otherwise lose). A frame that fits leaves at once, as
//!   one GSO message; a larger one (a keyframe) waits in the peer's queue
//!   and leaves in groups ([`Pacer::next_due`] waits until the bucket is
//!   full again: a group is one GSO message and one wake-up, not one per
//!   datagram).
//! - [`window`]: however the bucket stands, at most [`WINDOW_DATAGRAMS`]
//!   (fifteen) and [`WINDOW_BYTES`] within any 5 ms of send times, audio
//!   included. Groups count from when they really LEFT ([`Pacer::sent`]:
//!   the driver says when its send call returned), not from when the pacer
//!   let them go: on a busy machine the driver is sometimes descheduled
//!   between the two, and counted from the release the next group followed
//!   a late one within a millisecond or two (a receiver saw 15 datagrams in
//!   5 ms from a three-datagram bucket).
//! - Why so deep: what pacing costs is mostly one more trip through the
//!   kernel's send path per GSO message. With a bucket of three datagrams a
//!   4 Mbit/s P-frame (13 datagrams) left as five messages instead of one,
//!   and pacing cost 22 % more CPU per packet; now a P-frame and the audio
//!   held for it leave whole, and only keyframes are spread (+7–9 %, see
//!   the README).
//! - The rate: [`PACING_FACTOR`] × the stream's measured media bitrate
//!   ([`RateMeter`], over [`RATE_WINDOW`]), at least [`MIN_RATE`] (so a
//!   low-bitrate stream's keyframe is not stretched over many frames), and
//!   at least what empties the queue within [`MAX_QUEUE_TIME`] (a huge
//!   frame cannot hold a peer back for long).
//! - [`lane`]: only video (and its retransmissions) goes through the bucket.
//!   Audio, RTCP, STUN and DTLS go ahead of any queued video, through the
//!   window only: they never wait behind a keyframe, at most (≤ 5 ms, and
//!   only right after a full P-frame) for room in the window. So nothing a
//!   peer gets escapes the window.
//! - The grid: a pacer sees time in [`GRID`] steps of 2 ms from one epoch
//!   that all pacers of a core share ([`Pacer::on_grid_of`]): the time
//!   passed in is rounded down to a step, and due times up to one. Peers
//!   fed the same frame in one wake-up (in whatever order, over however
//!   many microseconds) then hold the same tokens and fall due at the same
//!   step, so one wake-up (one `sendmmsg` batch) serves all of them:
//!   batching across peers stays. Without the rounding down, peers served
//!   a few hundred µs apart fell due on neighbouring steps: on a 1 ms grid,
//!   50 peers of one stream made 430 wake-ups a second; aligned on 2 ms
//!   steps, 305 (each peer's queue is served about 5 times per frame
//!   either way).
//!
//! Sans-IO: time is passed in, nothing here reads a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub mod window;
use window::Window;
pub use window::{WINDOW_BYTES, WINDOW_DATAGRAMS};

/// Pacing rate ÷ media bitrate (libwebrtc's `kDefaultPaceMultiplier`).
pub const PACING_FACTOR: f64 = 2.5;
/// The lowest pacing rate, bit/s. A 1 Mbit/s stream's 30–60 KB keyframe
/// leaves within 50–100 ms at this rate instead of 100–200 ms at 2.5×, and
/// in 5 ms a peer still gets no more than [`WINDOW_BYTES`].
pub const MIN_RATE: u64 = 5_000_000;
/// The bucket's depth: what may leave back to back. Fifteen datagrams of
/// ~1250 bytes (a 1200-byte RTP packet plus SRTP and header extensions), as
/// much as the [`window`] lets through in 5 ms: a 4 Mbit/s P-frame is one
/// group, one GSO message.
pub const BURST_BYTES: usize = WINDOW_BYTES;
/// With datagrams waiting, the bucket also holds this much of the rate:
/// a group falls due when the bucket is full, and waits for the next
/// [`GRID`] step, up to this long; without it what fills meanwhile is lost
/// (and a queue of a huge frame drains slower than [`MAX_QUEUE_TIME`]).
pub const LATE_SLACK: Duration = GRID;
/// The queue is emptied at least this fast, whatever the measured bitrate.
pub const MAX_QUEUE_TIME: Duration = Duration::from_millis(500);
/// The media bitrate is measured over windows this long.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Due times are rounded up to this grid, and the time a pacer is told down
/// to it (see the module doc).
pub const GRID: Duration = Duration::from_millis(2);
/// Bytes a datagram carries besides the RTP payload (RTP header, header
/// extensions, SRTP tag), for the media bitrate measured from hub packets.
pub const RTP_OVERHEAD: usize = 40;
/// Bytes of rounding forgiven when the bucket is compared with a need
/// (time is whole nanoseconds, tokens are not).
const SLACK: f64 = 1.0;

/// How a datagram leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Video and its retransmissions: through the bucket and the window.
    Paced,
    /// Audio, RTCP, STUN, DTLS: ahead of queued video, through the window only.
    Window,
}

/// The lane of an outgoing datagram (SRTP leaves the RTP header in the
/// clear): RTP whose payload type is not `audio_pt` is paced; the rest
/// (audio, RTCP, STUN, DTLS, anything unknown) is not.
pub fn lane(datagram: &[u8], audio_pt: Option<u8>) -> Lane {
    let [b0, b1, ..] = datagram else {
        return Lane::Window;
    };
    let rtp_version = b0 >> 6 == 2;
    // RFC 5761: payload types 64–95 (with the marker bit: 192–223) are RTCP.
    let rtcp = (192..=223).contains(b1);
    if !rtp_version || rtcp || datagram.len() < 12 || Some(b1 & 0x7f) == audio_pt {
        Lane::Window
    } else {
        Lane::Paced
    }
}

/// The media bitrate of a stream, from the bytes it publishes.
#[derive(Debug, Default)]
pub struct RateMeter {
    start: Option<Instant>,
    bytes: u64,
    bps: u64,
}

impl RateMeter {
    /// `bytes` were published at `now`.
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let start = *self.start.get_or_insert(now);
        self.bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            self.bps = (self.bytes as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
            self.start = Some(now);
            self.bytes = 0;
        }
    }

    /// Bit/s over the last whole window (0 before the first one ends).
    pub fn bps(&self) -> u64 {
        self.bps
    }
}

/// One peer's token bucket and queue of paced items (datagrams here; the
/// item type is the caller's, so a later send path may queue something
/// cheaper than a sealed datagram).
///
/// Time inside is whole nanoseconds since the grid's epoch, on the grid:
/// one conversion per call, no `Instant`/`Duration` arithmetic per item
/// (which cost as much as the bucket itself, per datagram).
#[derive(Debug)]
pub struct Pacer<T> {
    queue: VecDeque<(usize, T)>,
    /// Audio and control datagrams waiting for room in the window (they go
    /// before `queue`).
    urgent: VecDeque<(usize, T)>,
    /// Bytes in `queue`.
    queued: usize,
    /// Bytes that may leave now (at most [`BURST_BYTES`]), as of `at`.
    tokens: f64,
    /// When `tokens` was last brought up to date (ns since `epoch`).
    at: Option<u64>,
    /// Pacing rate from the media bitrate, bit/s.
    rate: u64,
    /// Bytes per second that empty the queue within [`MAX_QUEUE_TIME`]
    /// of its largest size since it was last empty.
    drain: f64,
    /// The grid's origin (see the module doc; `None`: the first time seen).
    epoch: Option<Instant>,
    /// Queued items went out since the driver last said when they left
    /// ([`Pacer::sent`]).
    unsent: bool,
    /// What left within the last [`window::WINDOW`].
    window: Window,
}

impl<T> Default for Pacer<T> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            urgent: VecDeque::new(),
            queued: 0,
            tokens: BURST_BYTES as f64,
            at: None,
            rate: MIN_RATE,
            drain: 0.0,
            epoch: None,
            unsent: false,
            window: Window::default(),
        }
    }
}

/// [`GRID`] in nanoseconds.
const GRID_NS: u64 = GRID.as_nanos() as u64;

impl<T> Pacer<T> {
    /// A pacer on the grid that starts at `epoch` (the core's: every pacer
    /// of a core shares one, so peers fall due together).
    pub fn on_grid_of(epoch: Instant) -> Self {
        Self {
            epoch: Some(epoch),
            ..Self::default()
        }
    }

    /// `now` in ns since the epoch (0 before it).
    fn ns(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.checked_duration_since(epoch)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// `now` rounded down to the grid, in ns since the epoch (0 before it).
    fn step(&mut self, now: Instant) -> u64 {
        let ns = self.ns(now);
        ns - ns % GRID_NS
    }

    /// The stream's measured media bitrate (bit/s; 0: not known yet).
    pub fn set_media_rate(&mut self, now: Instant, media_bps: u64) {
        let rate = ((media_bps as f64 * PACING_FACTOR) as u64).max(MIN_RATE);
        if rate != self.rate {
            let now = self.step(now);
            self.refill(now); // the time before this at the old rate
            self.rate = rate;
        }
    }

    /// The rate in effect, bytes per second.
    fn bytes_per_s(&self) -> f64 {
        (self.rate as f64 / 8.0).max(self.drain)
    }

    /// The pacing rate in effect, bit/s.
    #[cfg(test)]
    pub fn rate_bps(&self) -> u64 {
        (self.bytes_per_s() * 8.0) as u64
    }

    fn refill(&mut self, now: u64) {
        let Some(at) = self.at else {
            self.at = Some(now);
            return;
        };
        let per_s = self.bytes_per_s();
        let dt = now.saturating_sub(at) as f64 * 1e-9;
        // However late the driver wakes, at most one group (and the slack
        // for the grid): what a wake-up later than that loses, the rate's
        // headroom (PACING_FACTOR) and the drain rate (MAX_QUEUE_TIME)
        // make up.
        let cap = if self.queue.is_empty() {
            BURST_BYTES as f64
        } else {
            BURST_BYTES as f64 + per_s * LATE_SLACK.as_secs_f64()
        };
        self.tokens = (self.tokens + dt * per_s).min(cap);
        self.at = Some(now.max(at));
    }

    /// What was let go since the last call left at `at` (the driver's send
    /// call returned then): tokens flow again from there, not from the
    /// release (see the module doc). Nothing let go: nothing changes.
    pub fn sent(&mut self, at: Instant) {
        if !self.unsent() {
            return;
        }
        let at = self.ns(at);
        self.window.sent(at);
        if std::mem::take(&mut self.unsent) {
            self.at = Some(self.at.map_or(at, |a| a.max(at)));
        }
    }

    /// Datagrams were let go that [`sent`](Self::sent) has not been told of.
    pub fn unsent(&self) -> bool {
        self.unsent || self.window.has_pending()
    }

    /// Queue an item of `bytes` (it leaves through [`release`](Self::release)).
    pub fn push(&mut self, now: Instant, bytes: usize, item: T) {
        if self.queue.is_empty() {
            // The idle time until now counts at the idle cap; from here on
            // the queued one applies (the next refill).
            let now = self.step(now);
            self.refill(now);
        }
        self.queue.push_back((bytes, item));
        self.queued += bytes;
        self.expect(0);
    }

    /// `bytes` more wait upstream for room in the queue (unsealed): the
    /// queue is emptied within [`MAX_QUEUE_TIME`] of them too (and, with 0,
    /// of what it holds).
    pub fn expect(&mut self, bytes: usize) {
        self.drain = self
            .drain
            .max((self.queued + bytes) as f64 * (1.0 / MAX_QUEUE_TIME.as_secs_f64()));
    }

    /// Queue an audio or control item of `bytes`: it leaves before any
    /// queued video, as soon as the window has room (usually at once).
    pub fn push_urgent(&mut self, bytes: usize, item: T) {
        self.urgent.push_back((bytes, item));
    }

    /// Hand every item the window and the bucket let go at `now` to
    /// `send`: audio first, then video, each in order.
    pub fn release(&mut self, now: Instant, mut send: impl FnMut(T)) {
        if self.queue.is_empty() && self.urgent.is_empty() {
            return;
        }
        let now = self.step(now);
        self.refill(now);
        while let Some(item) = self.take(now) {
            send(item);
        }
    }

    /// The next item, if the window and the bucket let it go at `now`.
    #[cfg(test)]
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        let now = self.step(now);
        self.refill(now);
        self.take(now)
    }

    /// The front item (audio first), if the window at step `now` and, for
    /// video, the bucket (brought up to date) let it go.
    fn take(&mut self, now: u64) -> Option<T> {
        if let Some(&(bytes, _)) = self.urgent.front() {
            if !self.window.fits(now, bytes) {
                return None; // and no video overtakes it
            }
            self.window.let_go(bytes);
            return self.urgent.pop_front().map(|(_, item)| item);
        }
        let &(bytes, _) = self.queue.front()?;
        // (An item larger than the bucket leaves when the bucket is full,
        // one larger than the window when the window is empty.)
        if self.tokens + SLACK < bytes.min(BURST_BYTES) as f64 {
            return None;
        }
        if !self.window.fits(now, bytes) {
            return None;
        }
        self.window.let_go(bytes);
        self.tokens -= bytes as f64;
        self.queued -= bytes;
        self.unsent = true;
        if self.queued == 0 {
            self.drain = 0.0;
        }
        self.queue.pop_front().map(|(_, item)| item)
    }

    /// When the next group can leave, on the grid: once the bucket is full
    /// ([`BURST_BYTES`]), or holds all that is queued if less, but at least
    /// the next item, and the [`window`] has room for as much. Rounding up
    /// to the grid loses no tokens: with items queued the bucket holds
    /// [`LATE_SLACK`] (one [`GRID`] step) of the rate more. Audio and
    /// control items wait for the window only. `None`: nothing queued.
    pub fn next_due(&self) -> Option<Instant> {
        let epoch = self.epoch?;
        let due = match self.urgent.front() {
            // Audio waits for the window only.
            Some(&(front, _)) => self.window.due(1, front).unwrap_or(self.at.unwrap_or(0)),
            None => self.video_due()?,
        };
        Some(epoch + Duration::from_nanos(due.div_ceil(GRID_NS) * GRID_NS))
    }

    /// When the next video group can leave (ns since the epoch, before
    /// rounding to the grid).
    fn video_due(&self) -> Option<u64> {
        let at = self.at?;
        let &(front, _) = self.queue.front()?;
        let per_s = self.bytes_per_s();
        let need = (self.queued.min(BURST_BYTES) as f64).max(front.min(BURST_BYTES) as f64);
        let due = if self.tokens + SLACK >= need {
            at
        } else {
            at + ((need - self.tokens) / per_s * 1e9).ceil() as u64
        };
        let datagrams = if need as usize >= self.queued {
            self.queue.len()
        } else {
            WINDOW_DATAGRAMS
        };
        Some(due.max(self.window.due(datagrams, need as usize).unwrap_or(0)))
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }
}

#[cfg(test)]
mod tests;
