//! The stream lifecycle as a sans-IO state machine: inputs and time go in,
//! commands for the driver come out. No I/O, no clocks, no sleeps.
//!
//! Two kinds of demand: `on_demand` (host, and `serve` streams so marked)
//! runs while viewers watch; otherwise the stream runs while its operator
//! order is "start" ([`Machine::start`] / [`Machine::stop`]), viewers or not.
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

/// `start` was refused: the stream already runs (or, on demand, already waits for viewers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AlreadyRunning(pub &'static str);

/// A lease was refused: the stream is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("host is full ({viewers}/{max} viewers)")]
pub struct Full {
    pub viewers: usize,
    pub max: usize,
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// The stream's name in logs ("host", or a `serve` stream's id).
    pub name: String,
    pub max_viewers: usize,
    /// How long capture keeps running after the last viewer left.
    pub linger: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A run that stayed live this long resets the back-off.
    pub backoff_reset_after: Duration,
    /// Run only while viewers watch (plus `linger`). Otherwise run while the
    /// order is "start", whoever watches.
    pub on_demand: bool,
    /// The order at creation ("start" = true). `host` is always on order.
    pub enabled: bool,
    /// Restart after a failure (with back-off). Without it a failure is
    /// final until the next `start`.
    pub restart: bool,
    /// Run the teardown hooks on a failure too (`serve`: a new FFmpeg run
    /// is a new RTP session, so WebRTC peers are closed and reconnect).
    pub teardown_on_failure: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            name: "host".into(),
            max_viewers: 2,
            linger: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            backoff_reset_after: Duration::from_secs(10),
            on_demand: true,
            enabled: true,
            restart: true,
            teardown_on_failure: false,
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
    /// The operator's order: run (true) or not.
    enabled: bool,
    /// `restart` was ordered while running: stop, then start again.
    restart_pending: bool,
}

impl Machine {
    pub fn new(policy: Policy) -> Self {
        let backoff = policy.backoff_min;
        Self {
            enabled: policy.enabled,
            restart_pending: false,
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
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The operator orders "start". Refused when it already runs (or, on
    /// demand, already waits for viewers); a failed stream retries at once.
    pub fn start(&mut self, _now: Instant) -> Result<(), AlreadyRunning> {
        if self.enabled {
            if self.policy.on_demand && self.state != State::Failed {
                return Err(AlreadyRunning(
                    "the stream is already started (on demand: it runs while viewers watch)",
                ));
            }
            if matches!(self.state, State::Starting | State::Live | State::Stopping) {
                return Err(AlreadyRunning("the stream is already running"));
            }
        }
        self.enabled = true;
        if self.state == State::Failed {
            self.retry_at = None;
            self.backoff = self.policy.backoff_min;
        }
        Ok(())
    }

    /// The operator orders "stop": a running stream stops now (no linger);
    /// a failed one is finished. Stopping a stopped stream is no error.
    pub fn stop(&mut self, _now: Instant) {
        self.enabled = false;
        self.restart_pending = false;
        if self.state == State::Failed {
            self.state = State::Idle;
            self.retry_at = None;
        }
    }

    /// The operator orders "restart": a running stream stops and starts
    /// again; anything else starts.
    pub fn restart(&mut self, now: Instant) {
        if matches!(self.state, State::Starting | State::Live) {
            self.enabled = true;
            self.restart_pending = true;
        } else {
            self.enabled = false;
            let _ = self.start(now);
        }
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
        self.restart_pending = false;
        if !self.policy.restart {
            // Final until the next order to start.
            self.enabled = false;
            self.retry_at = None;
            return;
        }
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.policy.backoff_max);
    }

    /// The producer stopped as asked.
    pub fn on_stopped(&mut self, _now: Instant) {
        if self.state == State::Stopping {
            self.state = State::Idle;
            self.live_since = None;
            if self.restart_pending {
                self.restart_pending = false;
                self.restarts += 1;
            }
        }
    }

    /// What to do now, and when to call `poll` again at the latest (if no input comes first).
    pub fn poll(&mut self, now: Instant) -> (Option<Command>, Option<Instant>) {
        let wanted = self.enabled && (!self.policy.on_demand || self.viewers > 0);
        match self.state {
            State::Idle if wanted => {
                self.state = State::Starting;
                (Some(Command::Start), None)
            }
            State::Idle | State::Starting | State::Stopping => (None, None),
            State::Live if !self.enabled || self.restart_pending => {
                self.state = State::Stopping;
                self.empty_since = None;
                (Some(Command::Stop), None)
            }
            State::Live if !self.policy.on_demand => (None, None),
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
                _ => (None, None),
            },
            // Failed for good (no restart): stays failed until an order.
            State::Failed if !self.enabled => (None, None),
            State::Failed => {
                if !wanted {
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

    fn always_on(restart: bool) -> Machine {
        Machine::new(Policy {
            max_viewers: 10,
            on_demand: false,
            enabled: false,
            restart,
            backoff_min: ms(1000),
            backoff_max: ms(1000),
            ..Policy::default()
        })
    }

    #[test]
    fn an_always_on_stream_runs_on_order_without_viewers() {
        let t0 = Instant::now();
        let mut m = always_on(true);
        assert_eq!(m.poll(t0), (None, None), "order is stop: nothing runs");
        m.acquire(t0).unwrap();
        assert_eq!(
            m.poll(t0),
            (None, None),
            "a viewer does not start a stopped stream"
        );
        m.release(t0);
        m.start(t0).unwrap();
        assert_eq!(m.poll(t0).0, Some(Command::Start));
        assert_eq!(
            m.start(t0),
            Err(AlreadyRunning("the stream is already running")),
            "double start while starting"
        );
        m.on_started(t0 + ms(10));
        assert!(m.start(t0).is_err(), "double start while live");
        // No viewers, no linger: it keeps running.
        assert_eq!(m.poll(t0 + ms(100_000)), (None, None));
        assert_eq!(m.state(), State::Live);
        m.stop(t0 + ms(100_000));
        assert_eq!(m.poll(t0 + ms(100_000)).0, Some(Command::Stop));
        m.on_stopped(t0 + ms(100_001));
        assert_eq!(m.state(), State::Idle);
        assert_eq!(m.poll(t0 + ms(100_002)), (None, None));
        m.stop(t0 + ms(100_002));
        assert_eq!(
            m.state(),
            State::Idle,
            "stopping a stopped stream is no error"
        );
    }

    #[test]
    fn an_always_on_stream_reconnects_after_its_delay_with_no_viewers() {
        let t0 = Instant::now();
        let mut m = always_on(true);
        m.start(t0).unwrap();
        m.poll(t0);
        m.on_started(t0);
        m.on_failed(t0 + ms(500), "ffmpeg exited".into());
        assert_eq!(m.poll(t0 + ms(500)), (None, Some(t0 + ms(1500))));
        assert_eq!(m.poll(t0 + ms(1500)).0, Some(Command::Start));
        assert_eq!(m.restarts(), 1);
    }

    #[test]
    fn without_restart_a_failure_is_final_until_the_next_start() {
        let t0 = Instant::now();
        let mut m = always_on(false);
        m.start(t0).unwrap();
        m.poll(t0);
        m.on_started(t0);
        m.on_failed(t0 + ms(10), "ffmpeg exited with status 1".into());
        assert_eq!(m.state(), State::Failed);
        assert!(!m.enabled());
        assert_eq!(m.poll(t0 + ms(1_000_000)), (None, None));
        assert_eq!(
            m.state(),
            State::Failed,
            "stays failed, visible to the operator"
        );
        m.start(t0 + ms(1_000_000)).unwrap();
        assert_eq!(
            m.poll(t0 + ms(1_000_000)).0,
            Some(Command::Start),
            "at once"
        );
        // Stop of a failed stream: finished.
        m.on_start_failed(t0 + ms(1_000_001), "again".into());
        m.stop(t0 + ms(1_000_002));
        assert_eq!(m.state(), State::Idle);
    }

    #[test]
    fn restart_stops_then_starts_again() {
        let t0 = Instant::now();
        let mut m = always_on(true);
        m.start(t0).unwrap();
        m.poll(t0);
        m.on_started(t0);
        m.restart(t0 + ms(5));
        assert_eq!(m.poll(t0 + ms(5)).0, Some(Command::Stop));
        m.on_stopped(t0 + ms(6));
        assert_eq!(m.poll(t0 + ms(6)).0, Some(Command::Start));
        assert_eq!(m.restarts(), 1);
        // Restart of a stopped stream is a start.
        m.on_started(t0 + ms(7));
        m.stop(t0 + ms(8));
        m.poll(t0 + ms(8));
        m.on_stopped(t0 + ms(9));
        m.restart(t0 + ms(10));
        assert_eq!(m.poll(t0 + ms(10)).0, Some(Command::Start));
    }

    #[test]
    fn an_on_demand_stream_refuses_a_second_start_and_stop_turns_viewers_away() {
        let t0 = Instant::now();
        let mut m = machine(5, 1000);
        assert!(m.start(t0).is_err(), "on demand and already on order");
        m.acquire(t0).unwrap();
        m.poll(t0);
        m.on_started(t0);
        m.stop(t0 + ms(1));
        assert_eq!(
            m.poll(t0 + ms(1)).0,
            Some(Command::Stop),
            "no linger on an order"
        );
        m.on_stopped(t0 + ms(2));
        assert_eq!(
            m.poll(t0 + ms(2)),
            (None, None),
            "the viewer does not restart it"
        );
        m.start(t0 + ms(3)).unwrap();
        assert_eq!(m.poll(t0 + ms(3)).0, Some(Command::Start));
    }
}
