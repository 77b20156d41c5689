//! Stream lifecycle: viewer leases, lazy start / stop, restarts with back-off.
//!
//! The rules live in [`machine`] (sans-IO, unit-tested without sleeps); this
//! file is the thin async driver that carries out the machine's commands on a
//! real [`Producer`] and publishes a [`Status`].

pub(crate) mod machine;
mod producer;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use machine::{AlreadyRunning, Command, Full, Machine, Order, Policy, State};
pub use producer::{BoxFuture, FailureKind, Producer, ProducerError, Run, RunHandle};

/// Called when a stream's producer stops for good: see [`Supervisor::on_teardown`].
pub type TeardownHook = Arc<dyn Fn() -> BoxFuture<()> + Send + Sync>;

/// How long one teardown hook may take before the producer is stopped anyway.
const TEARDOWN_HOOK_TIMEOUT: Duration = Duration::from_secs(1);

use crate::hub::Hub;

/// What `GET /{token}/status` shows (and what `serve`'s API reads).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub state: State,
    /// The operator's order: `start` (run), or `stop` (after `stop`, or a
    /// final failure).
    pub order: Order,
    pub viewers: usize,
    pub max_viewers: usize,
    /// The encoder of the current (or last) run.
    pub encoder: Option<String>,
    /// Seconds since the host started.
    pub uptime_s: u64,
    /// Seconds the current capture has been live (0 when not live).
    pub live_s: u64,
    pub restarts: u64,
    /// The last failure, with its kind; cleared when a run goes live.
    pub last_error: Option<ProducerError>,
    #[serde(skip)]
    pub start_failures: u64,
}

impl Status {
    /// The order is `start`.
    pub fn enabled(&self) -> bool {
        self.order == Order::Start
    }
}

/// One line of a stream's recent history (starts, failures, teardown order).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub what: String,
}

/// Events kept per stream.
const EVENTS_KEPT: usize = 64;

struct Shared {
    machine: Mutex<Machine>,
    notify: Notify,
    status: watch::Sender<Status>,
    encoder: Mutex<Option<String>>,
    hub: Hub,
    born: Instant,
    teardown: Mutex<Vec<(&'static str, TeardownHook)>>,
    events: Mutex<std::collections::VecDeque<Event>>,
}

impl Shared {
    fn event(&self, what: impl Into<String>) {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() >= EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(Event {
            unix_ms,
            what: what.into(),
        });
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, m: &Machine, now: Instant) {
        let encoder = self
            .encoder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let status = Status {
            state: m.state(),
            order: m.order(),
            viewers: m.viewers(),
            max_viewers: m.max_viewers(),
            encoder,
            uptime_s: now.saturating_duration_since(self.born).as_secs(),
            live_s: m
                .live_since()
                .map_or(0, |t| now.saturating_duration_since(t).as_secs()),
            restarts: m.restarts(),
            last_error: m.last_error().cloned(),
            start_failures: m.start_failures(),
        };
        self.status.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
    }
}

/// Why a waiting viewer will not get media.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotReady {
    #[error("capture could not start: {0}")]
    StartFailed(String),
    #[error("capture did not start within {0} s")]
    Timeout(u64),
    #[error("the host is shutting down")]
    ShuttingDown,
    #[error("the stream is stopped")]
    Stopped,
}

/// The supervisor of one stream. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
    driver: Arc<Mutex<Option<JoinHandle<()>>>>,
    shutdown: watch::Sender<bool>,
}

impl Supervisor {
    /// Spawns the driver task on the current tokio runtime. A stream that
    /// runs on order from the start (`serve`'s `autostart`) is `starting`
    /// from this call on, not `idle` until the driver first runs.
    pub fn spawn(policy: Policy, hub: Hub, producer: Arc<dyn Producer>) -> Self {
        let now = clock_now();
        let policy_name = policy.name.clone();
        let mut machine = Machine::new(policy);
        let (first, _) = machine.poll(now);
        let (status, _) = watch::channel(Status {
            state: machine.state(),
            order: machine.order(),
            viewers: 0,
            max_viewers: machine.max_viewers(),
            encoder: None,
            uptime_s: 0,
            live_s: 0,
            restarts: 0,
            last_error: None,
            start_failures: 0,
        });
        let shared = Arc::new(Shared {
            machine: Mutex::new(machine),
            notify: Notify::new(),
            status,
            encoder: Mutex::new(None),
            hub,
            born: now,
            teardown: Mutex::new(Vec::new()),
            events: Mutex::new(std::collections::VecDeque::new()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let span = tracing::info_span!("stream", id = %policy_name);
        let driver = tokio::spawn(tracing::Instrument::instrument(
            drive(shared.clone(), producer, shutdown_rx, first),
            span,
        ));
        Self {
            shared,
            driver: Arc::new(Mutex::new(Some(driver))),
            shutdown,
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    /// Take a viewer slot; refused when the stream is full.
    pub fn acquire(&self) -> Result<Lease, Full> {
        let now = clock_now();
        let mut m = self.shared.lock();
        m.acquire(now)?;
        let base = m.start_failures();
        self.shared.publish(&m, now);
        drop(m);
        self.shared.notify.notify_one();
        Ok(Lease {
            shared: self.shared.clone(),
            start_failures_at_acquire: base,
        })
    }

    pub fn status(&self) -> Status {
        let now = clock_now();
        let m = self.shared.lock();
        self.shared.publish(&m, now);
        drop(m);
        self.shared.status.borrow().clone()
    }

    /// The operator orders "start" (see [`Machine::start`]).
    pub fn start(&self) -> Result<(), AlreadyRunning> {
        self.order("start", |m, now| m.start(now))
    }

    /// The operator orders "stop": the run stops now, its consumers first.
    pub fn stop(&self) {
        let _ = self.order("stop", |m, now| {
            m.stop(now);
            Ok(())
        });
    }

    /// The operator orders "restart" (a start when not running).
    pub fn restart(&self) {
        let _ = self.order("restart", |m, now| {
            m.restart(now);
            Ok(())
        });
    }

    /// Apply an order to the machine; the event log says whether it was taken.
    fn order(
        &self,
        name: &str,
        f: impl FnOnce(&mut Machine, Instant) -> Result<(), AlreadyRunning>,
    ) -> Result<(), AlreadyRunning> {
        let now = clock_now();
        let mut m = self.shared.lock();
        let r = f(&mut m, now);
        self.shared.publish(&m, now);
        drop(m);
        match &r {
            Ok(()) => self.shared.event(format!("order: {name}")),
            Err(e) => self.shared.event(format!("order: {name} refused: {e}")),
        }
        self.shared.notify.notify_one();
        r
    }

    /// Recent lifecycle events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.shared
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// Run `hook` whenever this stream's producer stops for good (the last
    /// viewer's linger ran out, or shutdown), BEFORE the producer is told to
    /// stop, so no consumer is left fanning out of a closed source. Not run on
    /// a crash-restart: consumers stay and resume on the new run's keyframe.
    /// A hook registered under the same `name` replaces the previous one, so
    /// registering on every viewer is harmless. Each hook gets at most 1 s.
    pub fn on_teardown(&self, name: &'static str, hook: TeardownHook) {
        let mut hooks = self
            .shared
            .teardown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match hooks.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = hook,
            None => hooks.push((name, hook)),
        }
    }

    /// Stop the producer and the driver; returns when the run is stopped.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let handle = self.driver.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

/// A viewer's slot. Dropping it releases the slot.
pub struct Lease {
    shared: Arc<Shared>,
    start_failures_at_acquire: u64,
}

impl Lease {
    /// Wait until media flows, or until the start this viewer waits for failed.
    pub async fn ready(&self, timeout: Duration) -> Result<(), NotReady> {
        let mut rx = self.shared.status.subscribe();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.state == State::Live {
                        return Ok(());
                    }
                    if !s.enabled() {
                        return Err(NotReady::Stopped);
                    }
                    if s.start_failures > self.start_failures_at_acquire {
                        return Err(NotReady::StartFailed(
                            s.last_error
                                .as_ref()
                                .map(|e| e.message.clone())
                                .unwrap_or_default(),
                        ));
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(NotReady::ShuttingDown);
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(NotReady::Timeout(timeout.as_secs())),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let now = clock_now();
        let mut m = self.shared.lock();
        m.release(now);
        self.shared.publish(&m, now);
        drop(m);
        self.shared.notify.notify_one();
    }
}

/// The driver's clock: tokio's, so tests can run it on paused (virtual) time.
fn clock_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn drive(
    shared: Arc<Shared>,
    producer: Arc<dyn Producer>,
    mut shutdown: watch::Receiver<bool>,
    mut first: Option<Command>,
) {
    let mut running: Option<Run> = None;
    let mut starting: Option<JoinHandle<Result<Run, ProducerError>>> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let now = clock_now();
        let (cmd, wake) = {
            let mut m = shared.lock();
            let (cmd, wake) = m.poll(now);
            shared.publish(&m, now);
            // The command `spawn` already took from the machine goes first.
            (first.take().or(cmd), wake)
        };
        match cmd {
            Some(Command::Start) => {
                tracing::info!("starting");
                shared.event("starting");
                starting = Some(tokio::spawn(producer.start(shared.hub.clone())));
            }
            Some(Command::Stop) => {
                tracing::info!("stopping");
                stop_for_good(&shared, running.take()).await;
                continue;
            }
            None => {}
        }
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.notify.notified() => {}
            _ = sleep => {}
            _ = shutdown.changed() => {}
            res = async { starting.as_mut().expect("guarded by the select condition").await }, if starting.is_some() => {
                starting = None;
                let now = clock_now();
                match res {
                    Ok(Ok(run)) => {
                        tracing::info!(encoder = %run.encoder, "live");
                        shared.event("live");
                        *shared.encoder.lock().unwrap_or_else(|e| e.into_inner()) = Some(run.encoder.clone());
                        running = Some(run);
                        shared.lock().on_started(now);
                    }
                    Ok(Err(e)) => {
                        let e = e.while_starting();
                        tracing::error!(kind = %e.kind, "could not start: {e}");
                        shared.event(format!("start failed: {e}"));
                        shared.lock().on_start_failed(now, e);
                    }
                    Err(join) => {
                        tracing::error!("start panicked: {join}");
                        shared.lock().on_start_failed(now, ProducerError::start_failed(format!("capture start panicked: {join}")));
                    }
                }
            }
            err = async { running.as_mut().expect("guarded by the select condition").failures.recv().await }, if running.is_some() => {
                let err = err.unwrap_or_else(|| ProducerError::crashed("the producer ended without saying why"));
                tracing::error!(kind = %err.kind, "failed: {err}");
                shared.event(format!("failed: {err}"));
                let teardown = shared.lock().policy().teardown_on_failure;
                if teardown {
                    run_teardown(&shared).await;
                }
                stop_run(&shared, running.take()).await;
                shared.lock().on_failed(clock_now(), err);
            }
        }
    }
    // Shutdown: a start under way is awaited so whatever it opened is closed.
    if let Some(start) = starting.take() {
        if let Ok(Ok(run)) = start.await {
            running = Some(run);
        }
    }
    stop_for_good(&shared, running.take()).await;
}

/// The producer stops for good (not a crash-restart): consumers first (the
/// teardown hooks), then the producer, then the machine hears it stopped.
async fn stop_for_good(shared: &Shared, run: Option<Run>) {
    run_teardown(shared).await;
    stop_run(shared, run).await;
    let now = clock_now();
    let mut m = shared.lock();
    m.on_stopped(now);
    shared.publish(&m, now);
}

/// The teardown hooks, in registration order (cloned out: no lock across an await).
async fn run_teardown(shared: &Shared) {
    let hooks: Vec<(&'static str, TeardownHook)> = shared
        .teardown
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (name, hook) in hooks {
        if tokio::time::timeout(TEARDOWN_HOOK_TIMEOUT, hook())
            .await
            .is_err()
        {
            tracing::warn!("teardown hook {name} took over {TEARDOWN_HOOK_TIMEOUT:?}; stopping the producer anyway");
            shared.event(format!("teardown: {name} timed out"));
        } else {
            shared.event(format!("teardown: {name} done"));
        }
    }
}

async fn stop_run(shared: &Shared, run: Option<Run>) {
    if let Some(run) = run {
        shared.hub.end_run();
        run.handle.stop().await;
        shared.event("producer stopped");
    }
}

#[cfg(test)]
mod tests;
