//! Freed heap back to the system once a crowd of viewers has left.
//!
//! glibc keeps what a thread frees in that thread's arena, resident, and
//! returns it to the system only from the top of an arena: the buffers of
//! hundreds of viewers that came and went stay in the process's RSS,
//! scattered between live allocations. Measured with `pixelpass-bench soak`
//! (10 000 HTTP-TS viewers, then 2 000 WHEP joins and leaves; debug build):
//! `host` stayed 4.1 MiB above its baseline and `serve` 2.2 MiB, every
//! viewer gone.
//!
//! So once the audience has shrunk and then held still for [`QUIET`], the
//! free pages of every arena go back (`malloc_trim`): once per departure,
//! not on a timer, and never while viewers come and go (a trim takes each
//! arena's lock for a moment). [`Trim`] decides when (sans-IO, time passed
//! in); [`spawn`] asks it each second.
//!
//! A trim cannot return what lies between live allocations, so large buffers
//! (encoder frames, socket batches) are kept out of the arenas altogether:
//! [`fix_mmap_threshold`] gives every buffer of 128 KiB or more its own
//! mapping, returned the moment it is freed, unless the operator chose a
//! threshold through glibc's `MALLOC_MMAP_THRESHOLD_`.

use std::time::{Duration, Instant};

/// The audience must not have changed for this long after it shrank.
pub const QUIET: Duration = Duration::from_secs(2);
/// How often the audience is counted.
pub const TICK: Duration = Duration::from_secs(1);

/// When to give freed heap back: after the viewer count fell below the
/// most it reached since the last trim and then stayed the same for
/// [`QUIET`].
#[derive(Debug, Default)]
pub struct Trim {
    /// The most viewers since the last trim.
    peak: usize,
    /// The count last seen and when it became that.
    last: Option<(usize, Instant)>,
}

impl Trim {
    /// The viewer count at `now`; `true`: trim now.
    pub fn observe(&mut self, now: Instant, viewers: usize) -> bool {
        self.peak = self.peak.max(viewers);
        let since = match self.last {
            Some((n, at)) if n == viewers => at,
            _ => {
                self.last = Some((viewers, now));
                now
            }
        };
        if viewers < self.peak && now.saturating_duration_since(since) >= QUIET {
            self.peak = viewers;
            return true;
        }
        false
    }
}

/// Buffers this large and larger get their own mapping, given back the
/// moment they are freed.
const MMAP_THRESHOLD: usize = 128 * 1024;

/// glibc's own setting for the threshold; an operator who sets it wins.
const MMAP_THRESHOLD_ENV: &str = "MALLOC_MMAP_THRESHOLD_";

/// Keep large buffers (encoder frames, socket batches) out of the arenas:
/// fix glibc's mmap threshold at [`MMAP_THRESHOLD`]. Left dynamic, the
/// threshold climbs after the first large free, and later frames land in the
/// arenas between small live allocations, where no trim can return them.
/// Measured with `pixelpass-bench soak` on `host` (release, 10 000 HTTP-TS +
/// 2 000 WHEP cycles): fixed, +172, +36 and +192 KiB after the run; dynamic,
/// +2 888 KiB (and +1.6 to +10.5 MiB in earlier runs). Call once at start.
/// Leaves the threshold alone when `MALLOC_MMAP_THRESHOLD_` is set.
pub fn fix_mmap_threshold() {
    let Some(bytes) = threshold_to_set(std::env::var_os(MMAP_THRESHOLD_ENV).is_some()) else {
        tracing::debug!(
            "{MMAP_THRESHOLD_ENV} is set: the allocator keeps the operator's threshold"
        );
        return;
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting, under the main
    // arena's lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, bytes as libc::c_int);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = bytes;
}

/// The threshold to set, or none when the operator set their own.
fn threshold_to_set(operator_set: bool) -> Option<usize> {
    (!operator_set).then_some(MMAP_THRESHOLD)
}

/// Give the free pages of every arena back to the system.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory that is free; it takes each
    // arena's lock like malloc does.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Count the audience with `viewers` each [`TICK`] and trim when [`Trim`]
/// says so, until the runtime shuts down.
pub fn spawn(viewers: impl Fn() -> usize + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut trim = Trim::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let n = viewers();
            if trim.observe(Instant::now(), n) {
                tracing::debug!(
                    viewers = n,
                    "the audience shrank: freed heap goes back to the system"
                );
                release_free();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn trims_once_after_the_crowd_left_and_things_held_still() {
        let t0 = Instant::now();
        let mut trim = Trim::default();
        // 0 → 200 viewers, then they leave over 3 s.
        assert!(!trim.observe(at(t0, 0), 0));
        assert!(!trim.observe(at(t0, 1), 200));
        assert!(!trim.observe(at(t0, 2), 120));
        assert!(!trim.observe(at(t0, 3), 10));
        assert!(!trim.observe(at(t0, 4), 0));
        // Quiet for QUIET (2 s) from the last change: one trim, then none.
        assert!(!trim.observe(at(t0, 5), 0));
        assert!(trim.observe(at(t0, 6), 0));
        for s in 10..60 {
            assert!(!trim.observe(at(t0, s), 0), "again at {s} s");
        }
    }

    #[test]
    fn no_trim_while_viewers_come_and_go_or_only_grow() {
        let t0 = Instant::now();
        let mut trim = Trim::default();
        for s in 0..30 {
            // Churn: the count changes every second.
            assert!(!trim.observe(at(t0, s), 50 + (s as usize % 3)), "{s}");
        }
        let mut grow = Trim::default();
        for s in 0..30 {
            assert!(!grow.observe(at(t0, s), s as usize), "{s}");
        }
        assert!(
            !grow.observe(at(t0, 100), 29),
            "a steady audience is not trimmed"
        );
    }

    #[test]
    fn the_threshold_is_fixed_unless_the_operator_chose_one() {
        assert_eq!(threshold_to_set(false), Some(128 * 1024));
        assert_eq!(threshold_to_set(true), None);
    }

    #[test]
    fn a_second_departure_trims_again() {
        let t0 = Instant::now();
        let mut trim = Trim::default();
        trim.observe(at(t0, 0), 100);
        trim.observe(at(t0, 1), 40);
        assert!(trim.observe(at(t0, 3), 40));
        trim.observe(at(t0, 4), 90);
        trim.observe(at(t0, 5), 5);
        assert!(!trim.observe(at(t0, 6), 5));
        assert!(trim.observe(at(t0, 7), 5));
    }
}
