//! When to (re)publish, and what to tell the operator: sans-IO, on the
//! clock it is given.
//!
//! - The first attempt is at once. After a failure (the POST failed, or a
//!   session that was up ended) the next waits the back-off: 0.5 s, doubling
//!   up to 10 s. A session that stayed connected for [`RetryPolicy::stable_after`]
//!   resets the back-off, so a relay restarted after a long run is retried at once-ish.
//! - The operator hears of an outage ONCE ([`Notice::Down`], a warn line),
//!   however many attempts fail, and once when it is over ([`Notice::Back`]).

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A session connected this long resets the back-off.
    pub stable_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            stable_after: Duration::from_secs(10),
        }
    }
}

/// What the operator should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The first session is up.
    Up,
    /// The relay is gone (said once per outage): why, and when the next attempt is.
    Down { why: String, retry_in: Duration },
    /// Publishing again after an outage that began `after` ago, `attempts` failures later.
    Back { after: Duration, attempts: u64 },
}

#[derive(Debug)]
pub struct Retry {
    policy: RetryPolicy,
    backoff: Duration,
    next_at: Option<Instant>,
    connected_at: Option<Instant>,
    /// Since when the relay is out of reach (`None`: not in an outage).
    down_since: Option<Instant>,
    /// Failures in this outage.
    failures: u64,
    ever_up: bool,
    publishes: u64,
}

impl Retry {
    /// The first attempt is due at `now`.
    pub fn new(policy: RetryPolicy, now: Instant) -> Self {
        Self {
            policy,
            backoff: policy.backoff_min,
            next_at: Some(now),
            connected_at: None,
            down_since: None,
            failures: 0,
            ever_up: false,
            publishes: 0,
        }
    }

    /// When the next attempt is due (`None` while a session runs).
    pub fn next_attempt(&self) -> Option<Instant> {
        self.next_at
    }

    /// An attempt starts (a POST goes out).
    pub fn on_attempt(&mut self, _now: Instant) {
        self.next_at = None;
    }

    /// The session is connected (ICE + DTLS up): media flows to the relay.
    pub fn on_connected(&mut self, now: Instant) -> Notice {
        self.connected_at = Some(now);
        self.publishes += 1;
        self.next_at = None;
        let notice = match self.down_since.take() {
            Some(since) if self.ever_up || self.failures > 0 => Notice::Back {
                after: now.saturating_duration_since(since),
                attempts: self.failures,
            },
            _ => Notice::Up,
        };
        self.ever_up = true;
        self.failures = 0;
        notice
    }

    /// The attempt failed or the session ended. Returns the notice to give
    /// (`Down`, only for the first failure of an outage).
    pub fn on_failure(&mut self, now: Instant, why: &str) -> Option<Notice> {
        if let Some(up) = self.connected_at.take() {
            if now.saturating_duration_since(up) >= self.policy.stable_after {
                self.backoff = self.policy.backoff_min;
            }
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.policy.backoff_max);
        self.next_at = Some(now + wait);
        self.failures += 1;
        if self.down_since.is_some() {
            return None;
        }
        self.down_since = Some(now);
        Some(Notice::Down {
            why: why.to_owned(),
            retry_in: wait,
        })
    }

    /// Sessions that connected so far (the first publish and every republish).
    pub fn publishes(&self) -> u64 {
        self.publishes
    }

    /// In an outage (the relay is out of reach).
    pub fn is_down(&self) -> bool {
        self.down_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Fail every attempt as soon as it is due; the waits between them.
    fn waits(r: &mut Retry, now: &mut Instant, n: usize) -> Vec<Duration> {
        let mut out = Vec::new();
        for _ in 0..n {
            let due = r.next_attempt().expect("an attempt is due");
            *now = due;
            r.on_attempt(*now);
            r.on_failure(*now, "refused");
            out.push(r.next_attempt().expect("next") - *now);
        }
        out
    }

    #[test]
    fn the_back_off_doubles_from_half_a_second_to_ten() {
        let mut now = Instant::now();
        let mut r = Retry::new(RetryPolicy::default(), now);
        assert_eq!(r.next_attempt(), Some(now), "the first attempt is at once");
        let w = waits(&mut r, &mut now, 8);
        let ms: Vec<u128> = w.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
    }

    #[test]
    fn an_outage_is_said_once_and_its_end_once() {
        let mut now = Instant::now();
        let mut r = Retry::new(RetryPolicy::default(), now);
        r.on_attempt(now);
        assert_eq!(r.on_connected(now), Notice::Up);
        now += 3 * Duration::from_secs(60);
        let first = r.on_failure(now, "ICE consent lost");
        assert_eq!(
            first,
            Some(Notice::Down {
                why: "ICE consent lost".into(),
                retry_in: 500 * MS
            })
        );
        // Every later failure of the same outage is silent.
        for _ in 0..5 {
            now = r.next_attempt().unwrap();
            r.on_attempt(now);
            assert_eq!(r.on_failure(now, "connection refused"), None);
        }
        assert!(r.is_down());
        let began = now - Duration::from_millis(500 + 1000 + 2000 + 4000 + 8000);
        now = r.next_attempt().unwrap();
        r.on_attempt(now);
        assert_eq!(
            r.on_connected(now),
            Notice::Back {
                after: now - began,
                attempts: 6
            }
        );
        assert!(!r.is_down());
        assert_eq!(r.publishes(), 2);
    }

    #[test]
    fn a_stable_run_resets_the_back_off_and_a_short_one_does_not() {
        let mut now = Instant::now();
        let p = RetryPolicy::default();
        let mut r = Retry::new(p, now);
        waits(&mut r, &mut now, 4); // back-off now 8 s
        now = r.next_attempt().unwrap();
        r.on_attempt(now);
        r.on_connected(now);
        // Lost after 2 s: not stable, the back-off goes on growing.
        now += 2 * Duration::from_secs(1);
        r.on_failure(now, "lost");
        assert_eq!(r.next_attempt().unwrap() - now, 8 * Duration::from_secs(1));
        now = r.next_attempt().unwrap();
        r.on_attempt(now);
        r.on_connected(now);
        // Lost after a stable run: at once-ish again.
        now += p.stable_after;
        r.on_failure(now, "lost");
        assert_eq!(r.next_attempt().unwrap() - now, p.backoff_min);
    }

    #[test]
    fn a_relay_down_at_start_is_said_back_when_it_comes() {
        let mut now = Instant::now();
        let mut r = Retry::new(RetryPolicy::default(), now);
        r.on_attempt(now);
        assert!(matches!(
            r.on_failure(now, "refused"),
            Some(Notice::Down { .. })
        ));
        now = r.next_attempt().unwrap();
        r.on_attempt(now);
        // It was said to be down: its coming is news.
        assert!(matches!(
            r.on_connected(now),
            Notice::Back { attempts: 1, .. }
        ));
    }
}
