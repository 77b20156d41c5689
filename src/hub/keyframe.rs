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
}

impl KeyframeLimiter {
    pub fn new(interval: Duration) -> Self {
        Self { interval, requested_at: None, pending: false, last_keyframe: None }
    }

    pub fn reset(&mut self) {
        self.requested_at = None;
        self.pending = false;
        self.last_keyframe = None;
    }

    pub fn on_keyframe_at(&mut self, now: Instant) {
        self.pending = false;
        self.last_keyframe = Some(now);
    }

    pub fn want(&mut self, now: Instant) -> Decision {
        let within = |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < self.interval);
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
    fn lost_request_is_retried_after_the_interval() {
        let t0 = Instant::now();
        let mut l = KeyframeLimiter::new(Duration::from_millis(500));
        assert_eq!(l.want(t0), Decision::Request);
        assert_eq!(l.want(t0 + Duration::from_millis(499)), Decision::Pending);
        assert_eq!(l.want(t0 + Duration::from_millis(500)), Decision::Request);
    }
}
