//! Rate limit for keyframe requests: at most one per interval, and none while
//! one is still on its way. Sans-IO: time is passed in.

use std::time::{Duration, Instant};

/// What a joining viewer should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Ask the encoder for a keyframe now and wait for it.
    Request,
    /// A request is on its way: wait for the keyframe it brings.
    Pending,
    /// A keyframe came less than an interval ago: start on the cached GOP.
    Recent,
}

#[derive(Debug)]
pub struct KeyframeLimiter {
    interval: Duration,
    requested_at: Option<Instant>,
    pending: bool,
    last_keyframe: Option<Instant>,
    /// Someone needs a keyframe but the limit held the request back.
    deferred: bool,
}

impl KeyframeLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            requested_at: None,
            pending: false,
            last_keyframe: None,
            deferred: false,
        }
    }

    pub fn reset(&mut self) {
        self.requested_at = None;
        self.pending = false;
        self.last_keyframe = None;
        self.deferred = false;
    }

    /// Ask for a keyframe as soon as the limit allows (a peer that cannot use
    /// a cached GOP). `Request`: it may go out now; `Recent`: it is held back
    /// and [`poll`](Self::poll) lets it out once the interval has passed.
    pub fn want_fresh(&mut self, now: Instant) -> Decision {
        let d = self.want(now);
        if d == Decision::Recent {
            self.deferred = true;
        }
        d
    }

    /// Someone needs a fresh keyframe that the limit holds back (after
    /// [`want`](Self::want) said `Recent`): [`poll`](Self::poll) lets it out.
    pub fn defer(&mut self) {
        self.deferred = true;
    }

    /// Called on every publish: true when a deferred request may go out now.
    pub fn poll(&mut self, now: Instant) -> bool {
        if !self.deferred {
            return false;
        }
        if self
            .last_keyframe
            .is_some_and(|t| now.saturating_duration_since(t) < self.interval)
        {
            return false;
        }
        self.deferred = false;
        self.requested_at = Some(now);
        self.pending = true;
        true
    }

    pub fn on_keyframe_at(&mut self, now: Instant) {
        self.pending = false;
        self.last_keyframe = Some(now);
    }

    pub fn want(&mut self, now: Instant) -> Decision {
        let within = |t: Option<Instant>| {
            t.is_some_and(|t| now.saturating_duration_since(t) < self.interval)
        };
        if self.pending && within(self.requested_at) {
            return Decision::Pending;
        }
        if within(self.last_keyframe) {
            return Decision::Recent;
        }
        // A request older than the interval that brought nothing is presumed lost.
        self.requested_at = Some(now);
        self.pending = true;
        Decision::Request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_serves_every_joiner_until_the_keyframe() {
        let t0 = Instant::now();
        let mut l = KeyframeLimiter::new(Duration::from_millis(500));
        assert_eq!(l.want(t0), Decision::Request);
        assert_eq!(l.want(t0 + Duration::from_millis(10)), Decision::Pending);
        assert_eq!(l.want(t0 + Duration::from_millis(40)), Decision::Pending);
        l.on_keyframe_at(t0 + Duration::from_millis(50));
        // Fresh keyframe: new joiners take the cached GOP rather than ask again.
        assert_eq!(l.want(t0 + Duration::from_millis(300)), Decision::Recent);
        // Once it is older than the interval, a joiner asks again.
        assert_eq!(l.want(t0 + Duration::from_millis(600)), Decision::Request);
    }

    #[test]
    fn a_held_back_request_goes_out_once_the_interval_passed() {
        let t0 = Instant::now();
        let mut l = KeyframeLimiter::new(Duration::from_millis(500));
        l.on_keyframe_at(t0);
        assert_eq!(
            l.want_fresh(t0 + Duration::from_millis(100)),
            Decision::Recent,
            "a keyframe just came: held back"
        );
        assert!(!l.poll(t0 + Duration::from_millis(499)));
        assert!(l.poll(t0 + Duration::from_millis(500)));
        assert!(!l.poll(t0 + Duration::from_millis(501)), "once");
    }

    #[test]
    fn lost_request_is_retried_after_the_interval() {
        let t0 = Instant::now();
        let mut l = KeyframeLimiter::new(Duration::from_millis(500));
        assert_eq!(l.want(t0), Decision::Request);
        assert_eq!(l.want(t0 + Duration::from_millis(499)), Decision::Pending);
        assert_eq!(l.want(t0 + Duration::from_millis(500)), Decision::Request);
    }
}
