//! The replay as a supervisor [`Producer`]: a thread pushing a
//! [`Sample`]'s bursts into the hub at their due times, lap after lap.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::sample::Sample;
use pixelpass::hub::Hub;
use pixelpass::supervisor::{BoxFuture, Producer, ProducerError, Run, RunHandle};

/// Replays a [`Sample`] into the hub (a [`Producer`] for the supervisor).
pub struct ReplayProducer {
    sample: Arc<Sample>,
    stats: Arc<ReplayStats>,
}

/// How well the replay kept its pace.
#[derive(Debug, Default)]
pub struct ReplayStats {
    pub bursts: AtomicU64,
    /// Latest a burst went out after its due time (µs): a starved replay thread.
    pub max_late_us: AtomicU64,
}

impl ReplayProducer {
    pub fn new(sample: Arc<Sample>) -> Self {
        Self {
            sample,
            stats: Arc::new(ReplayStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<ReplayStats> {
        self.stats.clone()
    }
}

impl Producer for ReplayProducer {
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        let sample = self.sample.clone();
        let stats = self.stats.clone();
        Box::pin(async move {
            // No keyframes on demand: joins start on the cached GOP.
            hub.begin_run(None);
            let stop = Arc::new(AtomicBool::new(false));
            let (failures_tx, failures) = mpsc::unbounded_channel();
            let flag = stop.clone();
            let thread = std::thread::Builder::new()
                .name("pixelpass-replay".into())
                .spawn(move || {
                    replay(&hub, &sample, &flag, &stats);
                    drop(failures_tx);
                })
                .map_err(|e| {
                    ProducerError::start_failed(format!("cannot start the replay thread: {e}"))
                })?;
            Ok(Run {
                encoder: "replay".into(),
                failures,
                handle: Box::new(ReplayRun {
                    stop,
                    thread: Some(thread),
                }),
            })
        })
    }
}

/// A replay thread as a producer run: stop raises the flag and joins it.
/// Shared by the TS replay here and the RTP replay of `whep-fanout`.
pub(crate) struct ReplayRun {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

impl RunHandle for ReplayRun {
    fn stop(mut self: Box<Self>) -> BoxFuture<()> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take();
        Box::pin(async move {
            if let Some(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        })
    }
}

/// Push bursts at their due times, lap after lap, until `stop`.
fn replay(hub: &Hub, sample: &Sample, stop: &AtomicBool, stats: &ReplayStats) {
    paced_laps(
        &sample.bursts,
        |b| b.at,
        sample.period,
        stop,
        |b, _lap, now, late_us| {
            stats.max_late_us.fetch_max(late_us, Ordering::Relaxed);
            stats.bursts.fetch_add(1, Ordering::Relaxed);
            hub.push_ts(&sample.data[b.range.clone()], now);
            hub.flush_ts(now);
        },
    );
}

/// Hand each item to `emit` at its offset in a lap of `period`, lap after
/// lap, until `stop` (checked at least every 50 ms): with the lap number,
/// the time it went out and how late that was (µs). The one real-time pacer
/// of the TS replay and the RTP replay.
pub fn paced_laps<T>(
    items: &[T],
    offset: impl Fn(&T) -> Duration,
    period: Duration,
    stop: &AtomicBool,
    mut emit: impl FnMut(&T, u32, Instant, u64),
) {
    let start = Instant::now();
    for lap in 0u32.. {
        let lap_start = start + period * lap;
        for item in items {
            let due = lap_start + offset(item);
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                if now >= due {
                    break;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
            }
            let now = Instant::now();
            emit(
                item,
                lap,
                now,
                now.saturating_duration_since(due).as_micros() as u64,
            );
        }
    }
}
