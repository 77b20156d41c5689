//! The async driver with a fake producer, on tokio's paused clock: time jumps
//! straight to the next timer, so linger and back-off cost no real time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::hub::{Hub, HubConfig};

#[derive(Default)]
struct Fake {
    starts: AtomicUsize,
    stops: Arc<AtomicUsize>,
    /// Errors for the next starts (consumed in order); empty = start fine.
    start_errors: Mutex<Vec<ProducerError>>,
    /// The failure sender of the current run, to crash it from the test.
    crash: Mutex<Option<mpsc::UnboundedSender<ProducerError>>>,
}

struct FakeRun {
    stops: Arc<AtomicUsize>,
}

impl RunHandle for FakeRun {
    fn stop(self: Box<Self>) -> BoxFuture<()> {
        self.stops.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

impl Producer for Fake {
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        let err = self.start_errors.lock().unwrap().pop();
        let (tx, rx) = mpsc::unbounded_channel();
        if err.is_none() {
            *self.crash.lock().unwrap() = Some(tx);
        }
        let stops = self.stops.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(e) = err {
                return Err(e);
            }
            hub.begin_run(None);
            Ok(Run {
                encoder: "fake264".into(),
                failures: rx,
                handle: Box::new(FakeRun { stops }),
            })
        })
    }
}

fn setup(max: usize, linger_ms: u64) -> (Supervisor, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let policy = Policy {
        max_viewers: max,
        linger: Duration::from_millis(linger_ms),
        ..Policy::default()
    };
    let sup = Supervisor::spawn(policy, Hub::new(HubConfig::default()), fake.clone());
    (sup, fake)
}

async fn wait_state(sup: &Supervisor, want: State) {
    let mut rx = sup.watch_status();
    let r = tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| s.state == want)).await;
    assert!(
        r.is_ok(),
        "state never became {want:?}; now {:?}",
        sup.status()
    );
}

#[tokio::test(start_paused = true)]
async fn lazy_start_linger_stop() {
    let (sup, fake) = setup(2, 5000);
    assert_eq!(sup.status().state, State::Idle);
    assert_eq!(
        fake.starts.load(Ordering::SeqCst),
        0,
        "nothing runs before a viewer"
    );
    let lease = sup.acquire().unwrap();
    lease.ready(Duration::from_secs(5)).await.unwrap();
    let st = sup.status();
    assert_eq!(
        (st.state, st.viewers, st.encoder.as_deref()),
        (State::Live, 1, Some("fake264"))
    );
    let left_at = tokio::time::Instant::now();
    drop(lease);
    wait_state(&sup, State::Idle).await;
    let lingered = left_at.elapsed();
    assert!(
        lingered >= Duration::from_millis(5000) && lingered < Duration::from_millis(5100),
        "{lingered:?}"
    );
    assert_eq!(fake.stops.load(Ordering::SeqCst), 1);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cap_refuses_the_extra_viewer() {
    let (sup, _fake) = setup(2, 0);
    let _a = sup.acquire().unwrap();
    let _b = sup.acquire().unwrap();
    let full = sup.acquire().err().unwrap();
    assert_eq!(full.to_string(), "host is full (2/2 viewers)");
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_restarts_with_backoff_while_the_viewer_stays() {
    let (sup, fake) = setup(2, 5000);
    let lease = sup.acquire().unwrap();
    lease.ready(Duration::from_secs(5)).await.unwrap();
    let crashed_at = tokio::time::Instant::now();
    let tx = fake.crash.lock().unwrap().take().unwrap();
    tx.send(ProducerError::crashed(
        "x264enc0: internal data stream error",
    ))
    .unwrap();
    wait_state(&sup, State::Failed).await;
    assert_eq!(
        sup.status().last_error,
        Some(ProducerError::crashed(
            "x264enc0: internal data stream error"
        )),
        "the failure keeps its kind through the supervisor"
    );
    wait_state(&sup, State::Live).await;
    // 0.5 s back-off + 0.1 s start.
    let took = crashed_at.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(700),
        "{took:?}"
    );
    assert_eq!(fake.starts.load(Ordering::SeqCst), 2);
    assert_eq!(
        fake.stops.load(Ordering::SeqCst),
        1,
        "the dead run was cleaned up"
    );
    assert_eq!(sup.status().restarts, 1);
    drop(lease);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_is_told_to_the_waiting_viewer_and_the_next_one_retries() {
    let (sup, fake) = setup(2, 0);
    fake.start_errors
        .lock()
        .unwrap()
        .push(ProducerError::cancelled(
            "the screen-share dialog was cancelled",
        ));
    let lease = sup.acquire().unwrap();
    let err = lease.ready(Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "capture could not start: the screen-share dialog was cancelled",
        "the viewer's text is the message alone"
    );
    assert_eq!(
        sup.status().last_error.map(|e| e.kind),
        Some(FailureKind::Cancelled),
        "a cancel stays a cancel, not a failed start"
    );
    drop(lease);
    wait_state(&sup, State::Idle).await;
    let lease = sup.acquire().unwrap();
    lease.ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(fake.starts.load(Ordering::SeqCst), 2);
    drop(lease);
    sup.shutdown().await;
    assert_eq!(
        fake.stops.load(Ordering::SeqCst),
        1,
        "shutdown stops the live run"
    );
}

/// Records what the teardown hook saw: how many producer stops had happened when it ran.
fn order_hook(fake: &Arc<Fake>, log: &Arc<Mutex<Vec<String>>>) -> TeardownHook {
    let stops = fake.stops.clone();
    let log = log.clone();
    Arc::new(move || {
        let stops = stops.clone();
        let log = log.clone();
        Box::pin(async move {
            // The hook may await (closing peers); the producer must still be running meanwhile.
            tokio::time::sleep(Duration::from_millis(10)).await;
            log.lock().unwrap().push(format!(
                "hook (stops so far: {})",
                stops.load(Ordering::SeqCst)
            ));
        })
    })
}

#[tokio::test(start_paused = true)]
async fn teardown_hooks_run_before_the_producer_stops_for_good_and_not_on_a_crash() {
    let (sup, fake) = setup(2, 1000);
    let log = Arc::new(Mutex::new(Vec::new()));
    sup.on_teardown("test", order_hook(&fake, &log));
    // Registering again under the same name replaces, not adds.
    sup.on_teardown("test", order_hook(&fake, &log));
    let lease = sup.acquire().unwrap();
    lease.ready(Duration::from_secs(5)).await.unwrap();

    // A crash-restart is not "for good": no hook.
    let tx = fake.crash.lock().unwrap().take().unwrap();
    tx.send(ProducerError::crashed("x264enc0: boom")).unwrap();
    wait_state(&sup, State::Failed).await;
    wait_state(&sup, State::Live).await;
    assert_eq!(
        fake.stops.load(Ordering::SeqCst),
        1,
        "the crashed run was stopped"
    );
    assert!(
        log.lock().unwrap().is_empty(),
        "no teardown on a crash-restart: {:?}",
        log.lock().unwrap()
    );

    // Linger stop: the hook runs once, while the run is still up.
    drop(lease);
    wait_state(&sup, State::Idle).await;
    assert_eq!(fake.stops.load(Ordering::SeqCst), 2);
    assert_eq!(
        *log.lock().unwrap(),
        vec!["hook (stops so far: 1)".to_owned()]
    );

    // Shutdown with a live run: hook first, then the producer's stop.
    let lease = sup.acquire().unwrap();
    lease.ready(Duration::from_secs(5)).await.unwrap();
    sup.shutdown().await;
    assert_eq!(fake.stops.load(Ordering::SeqCst), 3);
    assert_eq!(
        log.lock().unwrap().last().map(String::as_str),
        Some("hook (stops so far: 2)")
    );
    drop(lease);
}

#[tokio::test(start_paused = true)]
async fn an_always_on_stream_tears_down_on_a_crash_and_obeys_orders() {
    let fake = Arc::new(Fake::default());
    let policy = Policy {
        on_demand: false,
        enabled: false,
        teardown_on_failure: true,
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(1),
        ..Policy::default()
    };
    let sup = Supervisor::spawn(policy, Hub::new(HubConfig::default()), fake.clone());
    let log = Arc::new(Mutex::new(Vec::new()));
    sup.on_teardown("test", order_hook(&fake, &log));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fake.starts.load(Ordering::SeqCst), 0, "order is stop");

    sup.start().unwrap();
    wait_state(&sup, State::Live).await;
    assert!(sup.start().is_err(), "double start refused");
    assert_eq!(
        fake.starts.load(Ordering::SeqCst),
        1,
        "and it started nothing"
    );
    assert_eq!(
        sup.events().last().map(|e| e.what.as_str()),
        Some("order: start refused: the stream is already running"),
        "the event log tells a refused order from a taken one"
    );

    // A crash: consumers first (the hook sees no stop yet), then the run stops, then a restart.
    let tx = fake.crash.lock().unwrap().take().unwrap();
    tx.send(ProducerError::crashed("ffmpeg was killed by signal 9"))
        .unwrap();
    wait_state(&sup, State::Failed).await;
    wait_state(&sup, State::Live).await;
    assert_eq!(
        *log.lock().unwrap(),
        vec!["hook (stops so far: 0)".to_owned()]
    );
    assert_eq!(sup.status().restarts, 1);
    let events: Vec<String> = sup.events().into_iter().map(|e| e.what).collect();
    let at = |what: &str| events.iter().position(|e| e.starts_with(what));
    let (failed, hook, stopped) = (
        at("failed:"),
        at("teardown: test done"),
        at("producer stopped"),
    );
    assert!(
        failed < hook && hook < stopped && failed.is_some(),
        "failure, then teardown, then the producer: {events:?}"
    );

    // Stop: at once, with no viewers and no linger.
    sup.stop();
    wait_state(&sup, State::Idle).await;
    assert_eq!(fake.stops.load(Ordering::SeqCst), 2);
    assert_eq!(sup.status().order, Order::Stop);
    // A viewer of a stopped stream is told so at once.
    let lease = sup.acquire().unwrap();
    let err = lease.ready(Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(err, NotReady::Stopped), "{err}");
    drop(lease);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_on_order_from_its_creation_is_starting_at_once() {
    let fake = Arc::new(Fake::default());
    let policy = Policy {
        on_demand: false,
        enabled: true,
        ..Policy::default()
    };
    let sup = Supervisor::spawn(policy, Hub::new(HubConfig::default()), fake.clone());
    // Before the driver task ran at all: not "idle" (it never was), but starting.
    let st = sup.status();
    assert_eq!((st.state, st.order), (State::Starting, Order::Start));
    wait_state(&sup, State::Live).await;
    assert_eq!(fake.starts.load(Ordering::SeqCst), 1, "started once");
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_status_says_the_state_the_order_and_the_kind_of_the_last_error() {
    let (sup, fake) = setup(2, 0);
    let idle = serde_json::to_value(sup.status()).unwrap();
    assert_eq!(
        (&idle["state"], &idle["order"], &idle["last_error"]),
        (
            &serde_json::json!("idle"),
            &serde_json::json!("start"),
            &serde_json::Value::Null
        ),
        "{idle}"
    );
    let lease = sup.acquire().unwrap();
    lease.ready(Duration::from_secs(5)).await.unwrap();
    let tx = fake.crash.lock().unwrap().take().unwrap();
    tx.send(ProducerError::stalled("no media for 10 s"))
        .unwrap();
    wait_state(&sup, State::Failed).await;
    let failed = serde_json::to_value(sup.status()).unwrap();
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(
        failed["last_error"],
        serde_json::json!({"kind": "stalled", "message": "no media for 10 s"}),
    );
    assert!(
        sup.events()
            .iter()
            .any(|e| e.what == "failed: no media for 10 s"),
        "{:?}",
        sup.events()
    );
    // The restart's producer dies before its first media: a failed start,
    // whatever kind the producer gave it.
    fake.start_errors
        .lock()
        .unwrap()
        .push(ProducerError::crashed(
            "ffmpeg exited before its first media",
        ));
    let mut rx = sup.watch_status();
    let failed_start = tokio::time::timeout(
        Duration::from_secs(60),
        rx.wait_for(|s| s.start_failures == 1),
    )
    .await
    .expect("the restart failed within 60 s")
    .expect("the supervisor runs")
    .clone();
    assert_eq!(
        failed_start.last_error.map(|e| e.kind),
        Some(FailureKind::StartFailed)
    );
    drop(lease);
    sup.shutdown().await;
}
