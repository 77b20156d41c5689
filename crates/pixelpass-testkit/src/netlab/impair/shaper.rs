//! One direction of an impaired link, without I/O: packets and the time go
//! in ([`Shaper::push`]), packets that are due come out ([`Shaper::poll`]),
//! and [`Shaper::next_due`] says when to look again. The forwarder in
//! `link.rs` feeds it from a TUN device; the unit tests feed it a fake clock.
//!
//! A packet goes through three stages, like on a real path:
//!
//! 1. **loss**: dropped with probability `loss`, by a seeded PRNG that is
//!    drawn once per packet whatever the setting, so packet *n* of a run
//!    meets the same number on every run;
//! 2. **rate** (optional): a FIFO of at most `queue_limit` packets (drop-tail)
//!    in front of a token bucket of `rate.bits_per_sec` and `rate.burst_bytes`;
//! 3. **propagation**: `delay` ± a uniform `jitter`, from the moment the
//!    packet left the bucket (exact, not from when the shaper was polled).
//!    Unless `reorder` is set, a packet never overtakes the one before it
//!    (its due time is raised to the previous one's instead).
//!
//! [`Shaper::set`] changes the settings at once: packets already in flight
//! keep the time they were given; queued packets meet the new rate (and all
//! leave at once when the rate is lifted).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use super::prng::SplitMix64;

/// At most this many packets in propagation (a bound on memory; a link of
/// 1 Gbit/s and 1 s of delay holds ~85 000 full-size packets). Beyond it
/// packets are dropped and counted as queue drops.
pub const MAX_IN_FLIGHT: usize = 100_000;

/// What one direction of a link does to its packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Each packet's delay is `delay` plus a uniform offset in
    /// `[-jitter, +jitter]` (floored at zero).
    pub jitter: Duration,
    /// Let jitter reorder packets (off: a packet waits for the one before it).
    pub reorder: bool,
    /// Probability of losing a packet, 0.0..=1.0.
    pub loss: f64,
    /// A token bucket in front of the delay, if any.
    pub rate: Option<Rate>,
    /// Packets that may wait for the token bucket (drop-tail beyond).
    pub queue_limit: usize,
}

/// A token bucket: `bits_per_sec` sustained, `burst_bytes` back-to-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub bits_per_sec: u64,
    pub burst_bytes: u32,
}

impl Rate {
    /// A bucket of two full-size packets at `bits_per_sec`.
    pub fn bits_per_sec(bits_per_sec: u64) -> Rate {
        Rate {
            bits_per_sec,
            burst_bytes: 3000,
        }
    }
}

impl Default for Impairment {
    fn default() -> Impairment {
        Impairment::NONE
    }
}

impl Impairment {
    /// A clean link: no delay, no loss, no rate limit.
    pub const NONE: Impairment = Impairment {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        reorder: false,
        loss: 0.0,
        rate: None,
        queue_limit: 1000,
    };

    /// Only a fixed delay.
    pub fn delay(delay: Duration) -> Impairment {
        Impairment {
            delay,
            ..Impairment::NONE
        }
    }

    pub fn with_loss(self, loss: f64) -> Impairment {
        Impairment { loss, ..self }
    }

    pub fn with_jitter(self, jitter: Duration) -> Impairment {
        Impairment { jitter, ..self }
    }

    pub fn with_rate(self, rate: Rate) -> Impairment {
        Impairment {
            rate: Some(rate),
            ..self
        }
    }

    pub fn with_queue_limit(self, queue_limit: usize) -> Impairment {
        Impairment {
            queue_limit,
            ..self
        }
    }

    /// An error for settings that mean nothing (loss outside 0..=1, a rate
    /// of 0, no room in the queue).
    pub fn check(&self) -> Result<(), BadImpairment> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(BadImpairment(format!(
                "loss {} is not a probability in 0..=1",
                self.loss
            )));
        }
        if let Some(r) = self.rate {
            if r.bits_per_sec == 0 || r.burst_bytes == 0 {
                return Err(BadImpairment(format!(
                    "a rate limit needs bits_per_sec > 0 and burst_bytes > 0: {r:?}"
                )));
            }
        }
        if self.queue_limit == 0 {
            return Err(BadImpairment("queue_limit must be at least 1".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad impairment: {0}")]
pub struct BadImpairment(String);

/// What happened to the packets of one direction so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets pushed in.
    pub received: u64,
    /// Packets handed out by `poll` (delivered).
    pub forwarded: u64,
    pub forwarded_bytes: u64,
    /// Dropped by the random loss.
    pub lost: u64,
    /// Dropped because the rate queue (or the propagation bound) was full.
    pub queue_dropped: u64,
}

struct InFlight {
    due: Instant,
    seq: u64,
    packet: Vec<u8>,
}

impl InFlight {
    fn key(&self) -> (Instant, u64) {
        (self.due, self.seq)
    }
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The token bucket's state: `tokens` bytes at time `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One direction of an impaired link (see the module's documentation).
pub struct Shaper {
    cfg: Impairment,
    loss_rng: SplitMix64,
    jitter_rng: SplitMix64,
    /// Waiting for the token bucket.
    queue: VecDeque<Vec<u8>>,
    bucket: Option<Bucket>,
    /// In propagation, earliest due first (ties in arrival order).
    line: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    last_due: Option<Instant>,
    stats: Stats,
}

impl Shaper {
    /// A shaper with `cfg`, its random streams seeded from `seed`.
    pub fn new(cfg: Impairment, seed: u64) -> Result<Shaper, BadImpairment> {
        cfg.check()?;
        Ok(Shaper {
            cfg,
            loss_rng: SplitMix64::new(seed),
            // Its own stream, so the delays do not shift the losses.
            jitter_rng: SplitMix64::new(seed ^ 0x6A09_E667_F3BC_C908),
            queue: VecDeque::new(),
            bucket: None,
            line: BinaryHeap::new(),
            seq: 0,
            last_due: None,
            stats: Stats::default(),
        })
    }

    pub fn settings(&self) -> Impairment {
        self.cfg
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Packets waiting for the token bucket.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Packets in propagation.
    pub fn in_flight(&self) -> usize {
        self.line.len()
    }

    /// New settings from `now` on (packets in flight keep their due time).
    pub fn set(&mut self, now: Instant, cfg: Impairment) -> Result<(), BadImpairment> {
        cfg.check()?;
        self.advance(now);
        self.cfg = cfg;
        match cfg.rate {
            None => {
                self.bucket = None;
                while let Some(p) = self.queue.pop_front() {
                    self.propagate(now, p);
                }
            }
            Some(rate) => {
                if let Some(b) = &mut self.bucket {
                    b.tokens = b.tokens.min(f64::from(rate.burst_bytes));
                }
                while self.queue.len() > cfg.queue_limit {
                    self.queue.pop_back();
                    self.stats.queue_dropped += 1;
                }
            }
        }
        Ok(())
    }

    /// A packet arrives at `now` (times must not go backwards).
    pub fn push(&mut self, now: Instant, packet: Vec<u8>) {
        self.stats.received += 1;
        self.advance(now);
        // Always drawn, so the stream stays in step with the packets.
        let draw = self.loss_rng.next_f64();
        if draw < self.cfg.loss {
            self.stats.lost += 1;
            return;
        }
        let Some(rate) = self.cfg.rate else {
            self.propagate(now, packet);
            return;
        };
        if self.queue.len() >= self.cfg.queue_limit {
            self.stats.queue_dropped += 1;
            return;
        }
        if self.queue.is_empty() {
            // The bucket filled up while nothing waited.
            let burst = f64::from(rate.burst_bytes);
            self.bucket = Some(match self.bucket {
                None => Bucket {
                    tokens: burst,
                    at: now,
                },
                Some(b) => Bucket {
                    tokens: (b.tokens + bytes_in(rate, now.saturating_duration_since(b.at)))
                        .min(burst),
                    at: now,
                },
            });
        }
        self.queue.push_back(packet);
    }

    /// The next packet due at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.advance(now);
        if self.line.peek().is_some_and(|Reverse(f)| f.due <= now) {
            let Reverse(f) = self.line.pop()?;
            self.stats.forwarded += 1;
            self.stats.forwarded_bytes += f.packet.len() as u64;
            return Some(f.packet);
        }
        None
    }

    /// When `poll` will next have something to do.
    pub fn next_due(&self) -> Option<Instant> {
        let line = self.line.peek().map(|Reverse(f)| f.due);
        let queue = self.head_departure();
        match (line, queue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the head of the rate queue leaves the bucket.
    fn head_departure(&self) -> Option<Instant> {
        let rate = self.cfg.rate?;
        let head = self.queue.front()?;
        let b = self.bucket?;
        let need = (head.len() as f64).min(f64::from(rate.burst_bytes));
        if b.tokens >= need {
            return Some(b.at);
        }
        let bytes_per_sec = rate.bits_per_sec as f64 / 8.0;
        Some(b.at + Duration::from_secs_f64((need - b.tokens) / bytes_per_sec))
    }

    /// Move the packets that left the bucket by `now` into propagation, each
    /// at the time it left.
    fn advance(&mut self, now: Instant) {
        while let (Some(rate), Some(left)) = (self.cfg.rate, self.head_departure()) {
            if left > now {
                break;
            }
            let Some(packet) = self.queue.pop_front() else {
                break;
            };
            if let Some(b) = &mut self.bucket {
                let burst = f64::from(rate.burst_bytes);
                let filled =
                    (b.tokens + bytes_in(rate, left.saturating_duration_since(b.at))).min(burst);
                // A packet larger than the bucket leaves a debt.
                b.tokens = filled - packet.len() as f64;
                b.at = left;
            }
            self.propagate(left, packet);
        }
    }

    /// The packet starts its delay at `left`.
    fn propagate(&mut self, left: Instant, packet: Vec<u8>) {
        if self.line.len() >= MAX_IN_FLIGHT {
            self.stats.queue_dropped += 1;
            return;
        }
        let mut due = left + self.one_delay();
        if !self.cfg.reorder {
            if let Some(last) = self.last_due {
                due = due.max(last);
            }
        }
        self.last_due = Some(self.last_due.map_or(due, |l| l.max(due)));
        self.seq += 1;
        self.line.push(Reverse(InFlight {
            due,
            seq: self.seq,
            packet,
        }));
    }

    fn one_delay(&mut self) -> Duration {
        // Always drawn, like the loss.
        let u = self.jitter_rng.next_f64();
        let jitter = self.cfg.jitter.as_nanos() as f64;
        let delay = self.cfg.delay.as_nanos() as f64 + (2.0 * u - 1.0) * jitter;
        Duration::from_nanos(delay.max(0.0) as u64)
    }
}

fn bytes_in(rate: Rate, d: Duration) -> f64 {
    d.as_secs_f64() * rate.bits_per_sec as f64 / 8.0
}
