//! The lifecycle rules, driven with plain `Instant`s: no clock, no sleeps.
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
    m.on_failed(t0 + ms(1000), ProducerError::crashed("x264enc: boom"));
    assert_eq!(m.state(), State::Failed);
    assert_eq!(
        m.last_error(),
        Some(&ProducerError::crashed("x264enc: boom")),
        "the failure keeps its kind"
    );
    assert_eq!(
        m.poll(t0 + ms(1000)),
        (None, Some(t0 + ms(1500))),
        "0.5 s back-off"
    );
    assert_eq!(m.poll(t0 + ms(1500)).0, Some(Command::Start));
    assert_eq!(m.restarts(), 1);
    m.on_start_failed(t0 + ms(1600), ProducerError::start_failed("still broken"));
    assert_eq!(m.poll(t0 + ms(1600)).1, Some(t0 + ms(2600)), "1 s back-off");
    assert_eq!(m.poll(t0 + ms(2600)).0, Some(Command::Start));
    for _ in 0..10 {
        m.on_start_failed(t0, ProducerError::start_failed("x"));
        let _ = m.poll(t0 + ms(100_000));
    }
    m.on_start_failed(t0, ProducerError::start_failed("x"));
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
        m.on_start_failed(t0 + ms(i), ProducerError::start_failed("x"));
        let _ = m.poll(t0 + ms(100_000));
    }
    m.on_started(t0 + ms(100_000));
    m.on_failed(t0 + ms(200_000), ProducerError::crashed("y"));
    assert_eq!(m.poll(t0 + ms(200_000)).1, Some(t0 + ms(200_500)));
}

#[test]
fn a_failed_start_with_nobody_waiting_goes_idle_and_the_next_viewer_asks_again() {
    let t0 = Instant::now();
    let mut m = machine(2, 5000);
    m.acquire(t0).unwrap();
    m.poll(t0);
    m.on_start_failed(
        t0 + ms(50),
        ProducerError::cancelled("the screen-share dialog was cancelled"),
    );
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
    m.on_failed(t0 + ms(500), ProducerError::crashed("ffmpeg exited"));
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
    m.on_failed(
        t0 + ms(10),
        ProducerError::crashed("ffmpeg exited with status 1"),
    );
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
    // Stop of a failed stream: idle.
    m.on_start_failed(t0 + ms(1_000_001), ProducerError::start_failed("again"));
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
