//! How busy the WebRTC engine is, and whether another viewer may join.
//!
//! The engine is one task: past about one core it falls behind every peer
//! at once (pacing late, hub packets dropped, DTLS handshakes starved), and
//! each new peer makes that worse for all. `bench whep-fanout` at 1000
//! peers and 4 Mbit/s on a 2-core machine: 753 peers connected in 90 s and
//! none of them got a frame. So past a limit (`--webrtc-max-load`, default
//! 90 %) new offers get `503` + `Retry-After` and the viewers already
//! watching keep their picture.
//!
//! Busy is CPU time, the engine thread's own ([`thread_cpu`] around each
//! wake-up), not wall time: on a machine shared with other work a
//! preempted engine is not a full one, and a starved test machine must
//! not refuse viewers for it. [`Meter`] is sans-IO: the engine passes in
//! what each wake-up cost and when it ended; the busy share of each
//! [`WINDOW`] is smoothed and published to a [`Load`] the HTTP side reads
//! without a lock.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Busy time is summed over windows this long.
pub const WINDOW: Duration = Duration::from_millis(500);
/// Weight of the newest window in the smoothed load (about 1 s to follow a
/// step: a connect storm's handshakes are seen, a single slow tick is not).
const NEWEST: f64 = 0.5;

/// The engine's busy share, in per mille, and the limit past which new
/// viewers are refused. Cheap to clone; read from any thread.
#[derive(Clone, Debug)]
pub struct Load {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    permille: AtomicU16,
    /// Per mille; 1000 never refuses.
    limit: u16,
    /// Viewers refused so far (`/metrics`).
    refused: AtomicU64,
    /// When a refusal was last logged, and the refused count then.
    logged: Mutex<Option<(Instant, u64)>>,
}

/// A refusal is logged at most this often (an overloaded server gets
/// offers by the hundred).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

impl Load {
    /// `limit_percent` in 1..=100; 100 never refuses.
    pub fn new(limit_percent: u8) -> Self {
        Self {
            inner: Arc::new(Shared {
                permille: AtomicU16::new(0),
                limit: u16::from(limit_percent.clamp(1, 100)) * 10,
                refused: AtomicU64::new(0),
                logged: Mutex::new(None),
            }),
        }
    }

    /// The smoothed busy share, 0.0..=1.0.
    pub fn share(&self) -> f64 {
        f64::from(self.inner.permille.load(Ordering::Relaxed)) / 1000.0
    }

    /// Why a new viewer is refused now, if it is: names the load, the limit
    /// and what to do.
    pub fn refusal(&self) -> Option<String> {
        let now = self.inner.permille.load(Ordering::Relaxed);
        let limit = self.inner.limit;
        (limit < 1000 && now >= limit).then(|| {
            format!(
                "the WebRTC engine is busy {:.0} % of the time (limit {} %, --webrtc-max-load): \
                 the viewers already watching keep their picture; try again in a few seconds, \
                 or play the HTTP stream",
                f64::from(now) / 10.0,
                limit / 10
            )
        })
    }

    /// Viewers refused so far.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Count a refusal at `now`; `Some(n)`, the refusals since the last
    /// one logged, when this one is to be logged (at most every
    /// [`LOG_EVERY`]).
    pub fn count_refusal(&self, now: Instant) -> Option<u64> {
        let total = self.inner.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = self.inner.logged.lock().unwrap_or_else(|e| e.into_inner());
        match *logged {
            Some((at, _)) if now.saturating_duration_since(at) < LOG_EVERY => None,
            prev => {
                *logged = Some((now, total));
                Some(total - prev.map_or(0, |(_, n)| n))
            }
        }
    }

    pub(crate) fn publish(&self, permille: u16) {
        self.inner
            .permille
            .store(permille.min(1000), Ordering::Relaxed);
    }
}

/// Busy time per window, smoothed (see the module doc).
#[derive(Debug)]
pub struct Meter {
    window_start: Instant,
    busy: Duration,
    /// Smoothed share, 0.0..=1.0.
    smoothed: f64,
}

impl Meter {
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            busy: Duration::ZERO,
            smoothed: 0.0,
        }
    }

    /// A wake-up of the engine cost `cpu` and ended at `now`. Returns the
    /// new smoothed share in per mille when a window closed.
    pub fn busy(&mut self, cpu: Duration, now: Instant) -> Option<u16> {
        self.busy += cpu;
        self.handle_timeout(now)
    }

    /// When the current window closes, while there is a load to follow:
    /// the engine wakes by then even when idle, so its load falls back to
    /// 0; `None` once it is 0 and nothing was counted since (an idle
    /// engine sleeps).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.busy.is_zero() && (self.smoothed * 1000.0).round() < 1.0;
        (!idle).then_some(self.window_start + WINDOW)
    }

    /// Close the window(s) that ended by `now`; the new smoothed share in
    /// per mille if one did.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<u16> {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return None;
        }
        let share = (self.busy.as_secs_f64() / elapsed.as_secs_f64()).min(1.0);
        // Windows missed while the engine slept idle count as idle ones.
        let windows = (elapsed.as_secs_f64() / WINDOW.as_secs_f64())
            .floor()
            .max(1.0);
        let keep = (1.0 - NEWEST).powf(windows);
        self.smoothed = self.smoothed * keep + share * (1.0 - keep);
        self.window_start = now;
        self.busy = Duration::ZERO;
        Some((self.smoothed * 1000.0).round() as u16)
    }
}

/// CPU time of the calling thread so far (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (r == 0).then(|| {
        Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// `share` busy in every millisecond for `windows` windows.
    fn run(m: &mut Meter, t: &mut Instant, busy_per_ms: f64, windows: u32) -> Option<u16> {
        let mut last = None;
        for _ in 0..windows * WINDOW.as_millis() as u32 {
            let woke = *t;
            *t += MS;
            let done = woke + MS.mul_f64(busy_per_ms);
            last = m.busy(MS.mul_f64(busy_per_ms), done).or(last);
            if let Some(p) = m.handle_timeout(*t) {
                last = Some(p);
            }
        }
        last
    }

    #[test]
    fn a_saturated_engine_crosses_the_limit_within_a_few_windows_and_falls_back_when_idle() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut m = Meter::new(t0);
        let load = Load::new(90);
        assert_eq!(run(&mut m, &mut t, 0.5, 4).map(|p| p / 10), Some(46));
        assert_eq!(run(&mut m, &mut t, 0.5, 10), Some(500));
        load.publish(500);
        assert!(load.refusal().is_none());
        // Saturated: over 90 % after a few windows (about 1.5 s).
        let p = run(&mut m, &mut t, 1.0, 3).unwrap_or(0);
        assert!(p > 900 && p < 1000, "{p}");
        load.publish(p);
        let why = load.refusal().unwrap_or_default();
        assert!(
            why.contains("limit 90 %") && why.contains("--webrtc-max-load"),
            "{why}"
        );
        // Idle: the engine only wakes for the window's end.
        t += WINDOW;
        let p = m.handle_timeout(t).unwrap_or(1000);
        assert!(p < 500, "{p}");
        for _ in 0..4 {
            t += WINDOW;
            load.publish(m.handle_timeout(t).unwrap_or(1000));
        }
        assert!(load.share() < 0.05 && load.refusal().is_none());
    }

    #[test]
    fn a_long_idle_sleep_counts_as_idle_windows() {
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        // 400 ms of CPU, then the window closes at 500 ms: 80 % busy.
        assert_eq!(m.busy(400 * MS, t0 + 400 * MS), None);
        assert_eq!(m.handle_timeout(t0 + WINDOW), Some(400));
        // More CPU than wall time (a tick measured across threads): 100 %.
        assert_eq!(m.busy(700 * MS, t0 + 1000 * MS), Some(700));
        // Ten windows asleep: the load is all but gone.
        assert_eq!(m.handle_timeout(t0 + 6000 * MS), Some(1));
        // Nothing to follow any more: no timer.
        assert_eq!(m.poll_timeout(), Some(t0 + 6500 * MS));
        assert_eq!(m.handle_timeout(t0 + 6500 * MS), Some(0));
        assert_eq!(m.poll_timeout(), None);
        // Work starts a window again, from the last one closed.
        assert_eq!(m.busy(MS, t0 + 9000 * MS), Some(0));
        assert_eq!(m.poll_timeout(), None);
        assert_eq!(m.busy(300 * MS, t0 + 9100 * MS), None);
        assert_eq!(m.poll_timeout(), Some(t0 + 9500 * MS));
    }

    #[test]
    fn the_threads_cpu_time_counts_work_not_sleep() {
        let (Some(a), _, Some(b)) = (thread_cpu(), std::thread::sleep(50 * MS), thread_cpu())
        else {
            panic!("CLOCK_THREAD_CPUTIME_ID is not readable");
        };
        assert!(b >= a && b - a < 40 * MS, "{a:?} {b:?}");
        // Spinning is counted (bounded: 10 s of wall time at most).
        let (spin_from, wall_from) = (thread_cpu().unwrap_or_default(), Instant::now());
        let mut x = 0u64;
        while thread_cpu().unwrap_or_default() - spin_from < 20 * MS
            && wall_from.elapsed() < 10_000 * MS
        {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spun = thread_cpu().unwrap_or_default() - spin_from;
        assert!(
            spun >= 20 * MS,
            "{spun:?} of CPU in {:?} spinning",
            wall_from.elapsed()
        );
        assert!(x > 0);
    }

    #[test]
    fn refusals_are_counted_and_logged_at_most_every_10_s() {
        let load = Load::new(90);
        let t0 = Instant::now();
        assert_eq!(load.count_refusal(t0), Some(1));
        for i in 1..100u32 {
            assert_eq!(load.count_refusal(t0 + i * 50 * MS), None);
        }
        assert_eq!(load.count_refusal(t0 + LOG_EVERY), Some(100));
        assert_eq!(load.refused(), 101);
    }

    #[test]
    fn a_limit_of_100_never_refuses() {
        let load = Load::new(100);
        load.publish(1000);
        assert!(load.refusal().is_none());
        assert!((load.share() - 1.0).abs() < 1e-9);
        let load = Load::new(0);
        load.publish(20);
        assert!(load.refusal().is_some(), "clamped to 1 %");
    }
}
