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

use super::producer::ProducerError;

/// A stream's lifecycle: the one set of words every surface uses (host's
/// `/status`, `serve`'s API and report, the metrics' `state` label, the logs
/// and the README). A stream that never ran is `idle`, never "finished".
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

    /// Every state, in lifecycle order (for the metrics' one-hot gauge).
    pub const ALL: [State; 5] = [
        State::Idle,
        State::Starting,
        State::Live,
        State::Stopping,
        State::Failed,
    ];
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operator's order: run (`start`) or stay stopped (`stop`, also after a
/// final failure). `host`'s one stream is always on order `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Start,
    Stop,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Start => "start",
            Order::Stop => "stop",
        }
    }
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    last_error: Option<ProducerError>,
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
    pub fn last_error(&self) -> Option<&ProducerError> {
        self.last_error.as_ref()
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
    pub fn order(&self) -> Order {
        if self.enabled {
            Order::Start
        } else {
            Order::Stop
        }
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
    /// a failed one goes idle. Stopping a stopped stream is no error.
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
    pub fn on_start_failed(&mut self, now: Instant, error: ProducerError) {
        self.start_failures += 1;
        self.fail(now, error);
    }

    /// The running producer died.
    pub fn on_failed(&mut self, now: Instant, error: ProducerError) {
        if matches!(self.state, State::Live | State::Starting) {
            self.fail(now, error);
        }
    }

    fn fail(&mut self, now: Instant, error: ProducerError) {
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
mod tests;
