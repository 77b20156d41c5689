//! The stream lifecycle as a sans-IO state machine: inputs and time go in,
//! commands for the driver come out. No I/O, no clocks, no sleeps.
//!
//! ```text
//!   idle ──first lease──► starting ──started──► live ──last lease gone + linger──► stopping ──stopped──► idle
//!                           │  ▲                  │
//!                 start err │  │ back-off elapsed │ runtime error
//!                           ▼  │ (viewers > 0)    ▼
//!                          failed ◄───────────────┘        failed + no viewers ──► idle
//! ```

use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Idle,
    Starting,
    Live,
    Stopping,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Starting => "starting",
            State::Live => "live",
            State::Stopping => "stopping",
            State::Failed => "failed",
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
}

/// A lease was refused: the stream is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("host is full ({viewers}/{max} viewers)")]
pub struct Full {
    pub viewers: usize,
    pub max: usize,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub max_viewers: usize,
    /// How long capture keeps running after the last viewer left.
    pub linger: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A run that stayed live this long resets the back-off.
    pub backoff_reset_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_viewers: 2,
            linger: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            backoff_reset_after: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
pub struct Machine {
    policy: Policy,
    state: State,
    viewers: usize,
    /// When the viewer count last dropped to zero while running.
    empty_since: Option<Instant>,
    live_since: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: Option<String>,
    /// Counts failed starts, so a waiting viewer can tell its start failed.
    start_failures: u64,
    restarts: u64,
}

impl Machine {
    pub fn new(policy: Policy) -> Self {
        let backoff = policy.backoff_min;
        Self {
            policy,
            state: State::Idle,
            viewers: 0,
            empty_since: None,
            live_since: None,
            retry_at: None,
            backoff,
            last_error: None,
            start_failures: 0,
            restarts: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn viewers(&self) -> usize {
        self.viewers
    }
    pub fn max_viewers(&self) -> usize {
        self.policy.max_viewers
    }
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
    pub fn start_failures(&self) -> u64 {
        self.start_failures
    }
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
    pub fn live_since(&self) -> Option<Instant> {
        self.live_since
    }

    /// A viewer wants in.
    pub fn acquire(&mut self, _now: Instant) -> Result<(), Full> {
        if self.viewers >= self.policy.max_viewers {
            return Err(Full {
                viewers: self.viewers,
                max: self.policy.max_viewers,
            });
        }
        self.viewers += 1;
        self.empty_since = None;
        Ok(())
    }

    /// A viewer left.
    pub fn release(&mut self, now: Instant) {
        self.viewers = self.viewers.saturating_sub(1);
        if self.viewers == 0 {
            self.empty_since = Some(now);
        }
    }

    /// The producer is running (media flows).
    pub fn on_started(&mut self, now: Instant) {
        if self.state == State::Starting {
            self.state = State::Live;
            self.live_since = Some(now);
            self.last_error = None;
            if self.viewers == 0 && self.empty_since.is_none() {
                self.empty_since = Some(now);
            }
        }
    }

    /// Starting the producer failed.
    pub fn on_start_failed(&mut self, now: Instant, error: String) {
        self.start_failures += 1;
        self.fail(now, error);
    }

    /// The running producer died.
    pub fn on_failed(&mut self, now: Instant, error: String) {
        if matches!(self.state, State::Live | State::Starting) {
            self.fail(now, error);
        }
    }

    fn fail(&mut self, now: Instant, error: String) {
        if let Some(since) = self.live_since {
            if now.saturating_duration_since(since) >= self.policy.backoff_reset_after {
                self.backoff = self.policy.backoff_min;
            }
        }
        self.state = State::Failed;
        self.live_since = None;
        self.last_error = Some(error);
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.policy.backoff_max);
    }

    /// The producer stopped as asked.
    pub fn on_stopped(&mut self, _now: Instant) {
        if self.state == State::Stopping {
            self.state = State::Idle;
            self.live_since = None;
        }
    }

    /// What to do now, and when to call `poll` again at the latest (if no input comes first).
    pub fn poll(&mut self, now: Instant) -> (Option<Command>, Option<Instant>) {
        match self.state {
            State::Idle if self.viewers > 0 => {
                self.state = State::Starting;
                (Some(Command::Start), None)
            }
            State::Idle | State::Starting | State::Stopping => (None, None),
            State::Live => match self.empty_since {
                Some(since) if self.viewers == 0 => {
                    let at = since + self.policy.linger;
                    if now >= at {
                        self.state = State::Stopping;
                        self.empty_since = None;
                        (Some(Command::Stop), None)
                    } else {
                        (None, Some(at))
                    }
                }
                _ => {
                    // Wake once the run is long enough to reset the back-off.
                    (None, None)
                }
            },
            State::Failed => {
                if self.viewers == 0 {
                    self.state = State::Idle;
                    self.retry_at = None;
                    return (None, None);
                }
                match self.retry_at {
                    Some(at) if now < at => (None, Some(at)),
                    _ => {
                        self.retry_at = None;
                        self.restarts += 1;
                        self.state = State::Starting;
                        (Some(Command::Start), None)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn machine(max: usize, linger_ms: u64) -> Machine {
        Machine::new(Policy {
            max_viewers: max,
            linger: ms(linger_ms),
            ..Policy::default()
        })
    }

    #[test]
    fn first_lease_starts_and_last_stops_after_linger() {
        let t0 = Instant::now();
        let mut m = machine(2, 5000);
        assert_eq!(m.poll(t0), (None, None));
        assert_eq!(m.state(), State::Idle);
        m.acquire(t0).unwrap();
        assert_eq!(m.poll(t0).0, Some(Command::Start));
        assert_eq!(m.state(), State::Starting);
        // A second viewer while starting does not start twice.
        m.acquire(t0).unwrap();
        assert_eq!(m.poll(t0).0, None);
        m.on_started(t0 + ms(100));
        assert_eq!(m.state(), State::Live);
        m.release(t0 + ms(1000));
        assert_eq!(
            m.poll(t0 + ms(1000)),
            (None, None),
            "one viewer still watching"
        );
        m.release(t0 + ms(2000));
        assert_eq!(m.poll(t0 + ms(2000)), (None, Some(t0 + ms(7000))), "linger");
        assert_eq!(m.poll(t0 + ms(6999)).0, None);
        assert_eq!(m.poll(t0 + ms(7000)).0, Some(Command::Stop));
        assert_eq!(m.state(), State::Stopping);
        m.on_stopped(t0 + ms(7100));
        assert_eq!(m.state(), State::Idle);
        assert_eq!(m.poll(t0 + ms(7100)).0, None);
    }

    #[test]
    fn a_viewer_returning_within_linger_keeps_capture_running() {
        let t0 = Instant::now();
        let mut m = machine(2, 5000);
        m.acquire(t0).unwrap();
        m.poll(t0);
        m.on_started(t0);
        m.release(t0 + ms(100));
        assert_eq!(m.poll(t0 + ms(100)).1, Some(t0 + ms(5100)));
        m.acquire(t0 + ms(3000)).unwrap();
        assert_eq!(m.poll(t0 + ms(6000)), (None, None));
        assert_eq!(m.state(), State::Live);
    }

    #[test]
    fn zero_linger_stops_at_once() {
        let t0 = Instant::now();
        let mut m = machine(1, 0);
        m.acquire(t0).unwrap();
        m.poll(t0);
        m.on_started(t0);
        m.release(t0 + ms(10));
        assert_eq!(m.poll(t0 + ms(10)).0, Some(Command::Stop));
    }

    #[test]
    fn leases_over_the_cap_are_refused() {
        let t0 = Instant::now();
        let mut m = machine(2, 0);
        m.acquire(t0).unwrap();
        m.acquire(t0).unwrap();
        let err = m.acquire(t0).unwrap_err();
        assert_eq!(err, Full { viewers: 2, max: 2 });
        assert_eq!(err.to_string(), "host is full (2/2 viewers)");
        m.release(t0);
        m.acquire(t0).unwrap();
    }

    #[test]
    fn runtime_errors_restart_with_growing_backoff() {
        let t0 = Instant::now();
        let mut m = machine(2, 5000);
        m.acquire(t0).unwrap();
        m.poll(t0);
        m.on_started(t0);
        m.on_failed(t0 + ms(1000), "x264enc: boom".into());
        assert_eq!(m.state(), State::Failed);
        assert_eq!(m.last_error(), Some("x264enc: boom"));
        assert_eq!(
            m.poll(t0 + ms(1000)),
            (None, Some(t0 + ms(1500))),
            "0.5 s back-off"
        );
        assert_eq!(m.poll(t0 + ms(1500)).0, Some(Command::Start));
        assert_eq!(m.restarts(), 1);
        m.on_start_failed(t0 + ms(1600), "still broken".into());
        assert_eq!(m.poll(t0 + ms(1600)).1, Some(t0 + ms(2600)), "1 s back-off");
        assert_eq!(m.poll(t0 + ms(2600)).0, Some(Command::Start));
        for _ in 0..10 {
            m.on_start_failed(t0, "x".into());
            let _ = m.poll(t0 + ms(100_000));
        }
        m.on_start_failed(t0, "x".into());
        assert_eq!(
            m.poll(t0).1,
            Some(t0 + ms(10_000)),
            "back-off capped at 10 s"
        );
    }

    #[test]
    fn a_long_healthy_run_resets_the_backoff() {
        let t0 = Instant::now();
        let mut m = machine(2, 5000);
        m.acquire(t0).unwrap();
        m.poll(t0);
        for i in 0..4 {
            m.on_start_failed(t0 + ms(i), "x".into());
            let _ = m.poll(t0 + ms(100_000));
        }
        m.on_started(t0 + ms(100_000));
        m.on_failed(t0 + ms(200_000), "y".into());
        assert_eq!(m.poll(t0 + ms(200_000)).1, Some(t0 + ms(200_500)));
    }

    #[test]
    fn a_failed_start_with_nobody_waiting_goes_idle_and_the_next_viewer_asks_again() {
        let t0 = Instant::now();
        let mut m = machine(2, 5000);
        m.acquire(t0).unwrap();
        m.poll(t0);
        m.on_start_failed(t0 + ms(50), "portal: the user cancelled the dialog".into());
        assert_eq!(m.start_failures(), 1);
        // The waiting viewer got its 503 and left.
        m.release(t0 + ms(51));
        assert_eq!(m.poll(t0 + ms(51)), (None, None));
        assert_eq!(m.state(), State::Idle);
        m.acquire(t0 + ms(5000)).unwrap();
        assert_eq!(m.poll(t0 + ms(5000)).0, Some(Command::Start));
    }

    #[test]
    fn viewers_leaving_during_start_still_linger_after_start() {
        let t0 = Instant::now();
        let mut m = machine(2, 1000);
        m.acquire(t0).unwrap();
        m.poll(t0);
        m.release(t0 + ms(10));
        m.on_started(t0 + ms(100));
        assert_eq!(m.poll(t0 + ms(100)).1, Some(t0 + ms(1010)));
        assert_eq!(m.poll(t0 + ms(1010)).0, Some(Command::Stop));
    }
}
