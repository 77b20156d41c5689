//! Faults, again and again, with 5 HTTP-TS and 5 WHEP viewers attached:
//! encoder errors injected into `host`'s GStreamer pipeline (the hidden,
//! test-only `PIXELPASS_TEST_FAULTS=1` + SIGUSR1: the encoder posts an ERROR
//! on the bus) and `kill -9` of `serve`'s FFmpeg. After every restart every
//! viewer is back, and the first frame after its outage is a keyframe
//! (counted in frames, not timed: the 3 s figure is `pixelpass-bench
//! faults`'); at the end nothing leaked: descriptors, peers, children.

use std::time::Duration;

use pixelpass_testkit::faults::{round, Round, Watchers};
use pixelpass_testkit::prelude::*;
use pixelpass_testkit::serve::{children_of, lavfi_input, wait_gone, Serve};

const ROUNDS: usize = 3;
const HTTP: usize = 5;
const WHEP: usize = 5;
/// A hang guard per round (restart back-off included), not a figure.
const WITHIN: Duration = Duration::from_secs(20);

fn check_round(what: &str, i: usize, r: &Round, log: impl Fn() -> String) {
    eprintln!(
        "{what} round {i}: restart {:?} after the fault; worst viewer back {:?} after it",
        r.restart_after,
        r.worst()
    );
    assert!(
        r.all_back_on_keyframes(),
        "{what} round {i}: not every viewer came back on a keyframe: {:?}\n{}",
        r.viewers,
        log()
    );
}

#[test]
fn encoder_errors_in_host_restart_the_pipeline_and_every_viewer_resumes_on_a_keyframe() {
    let _lock = timing_lock();
    let host = HostBuilder::default()
        .max_viewers(20)
        .env("PIXELPASS_TEST_FAULTS", "1")
        .keep_stderr()
        .spawn();
    let pid = host.pid() as u32;
    let whep_url = format!("http://{}/{}/whep", host.addr, host.token);
    let w = Watchers::start(host.addr, &host.stream_path(), &whep_url, HTTP, WHEP);
    let t0 = std::time::Instant::now();
    assert!(
        w.wait_keyframe_after(t0, Duration::from_secs(30)),
        "the viewers never got a first keyframe\n{}",
        host.stderr_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    let fds_before = open_fds(pid).expect("the host's /proc/PID/fd");
    let restarts = || host.status()["restarts"].as_u64().unwrap_or(0);
    for i in 0..ROUNDS {
        let r = round(
            &w,
            // SAFETY: kill(2) of our own child, not yet reaped.
            || assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0),
            restarts,
            WITHIN,
        );
        check_round("host", i, &r, || host.stderr_text());
    }
    // Still playing after the last round: frames keep coming to everyone.
    let counts: Vec<usize> = w.all().map(|(_, s)| s.snapshot().len()).collect();
    std::thread::sleep(Duration::from_secs(1));
    let more: Vec<usize> = w
        .all()
        .zip(&counts)
        .map(|((_, s), n)| s.snapshot().len() - n)
        .collect();
    assert!(
        more.iter().all(|&n| n >= 10),
        "frames in the last second per viewer: {more:?}"
    );
    let st = host.status();
    assert_eq!(st["restarts"].as_u64(), Some(ROUNDS as u64), "{st}");
    assert_eq!(
        st["webrtc_peers"].as_array().map(Vec::len),
        Some(WHEP),
        "a peer leaked or was lost: {st}"
    );
    let fds_after = open_fds(pid).expect("the host is alive");
    assert!(
        fds_after <= fds_before + 1,
        "descriptors {fds_before} before the faults, {fds_after} after"
    );
    let log = host.stderr_lines();
    let said = log
        .iter()
        .filter(|l| l.contains("pipeline error") && l.contains(pixelpass::capture::fault::MESSAGE))
        .count();
    assert_eq!(
        said,
        ROUNDS,
        "each fault logged once with its element:\n{}",
        log.join("\n")
    );
    w.stop();
}

#[test]
fn kill_9_of_serves_ffmpeg_restarts_it_and_every_viewer_resumes_on_a_keyframe() {
    let _lock = timing_lock();
    let token = "faults-stream-token-0123456789";
    let serve = Serve::start(
        "faults",
        &format!(
            "[[stream]]\nid = \"f\"\ntoken = \"{token}\"\nautostart = true\nreconnect = true\nreconnect_delay_seconds = 1\n{}",
            lavfi_input(440)
        ),
    );
    serve.wait_live("f");
    let whep_url = format!("http://{}/{token}/whep", serve.addr);
    let w = Watchers::start(
        serve.addr,
        &format!("/{token}/stream.ts"),
        &whep_url,
        HTTP,
        WHEP,
    );
    let t0 = std::time::Instant::now();
    assert!(
        w.wait_keyframe_after(t0, Duration::from_secs(30)),
        "the viewers never got a first keyframe\n{}",
        serve.stderr_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    let fds_before = open_fds(serve.pid()).expect("serve's /proc/PID/fd");
    let mut killed = Vec::new();
    for i in 0..ROUNDS {
        let report = serve.wait_live("f");
        let ffmpeg = report["pid"].as_u64().expect("a running FFmpeg's pid");
        let r = round(
            &w,
            || {
                // SAFETY: kill(2) of serve's FFmpeg child by its PID.
                assert_eq!(unsafe { libc::kill(ffmpeg as i32, libc::SIGKILL) }, 0);
            },
            || serve.report("f")["restarts"].as_u64().unwrap_or(0),
            WITHIN,
        );
        killed.push(ffmpeg);
        check_round("serve", i, &r, || serve.stderr_text());
    }
    let report = serve.wait_live("f");
    for pid in &killed {
        assert!(
            wait_gone(*pid, Duration::from_secs(5)),
            "FFmpeg {pid} was not reaped"
        );
    }
    let children = children_of(serve.pid());
    assert_eq!(
        children.len(),
        1,
        "serve's children after the faults: {children:?}"
    );
    // The peers the viewers hold now, and no more (the killed runs' were closed).
    let mut peers = 0;
    for _ in 0..50 {
        peers = serve.report("f")["webrtc_peers"]
            .as_array()
            .map_or(0, Vec::len);
        if peers == WHEP {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(peers, WHEP, "peers after the faults: {report}");
    let fds_after = open_fds(serve.pid()).expect("serve is alive");
    assert!(
        fds_after <= fds_before + 1,
        "descriptors {fds_before} before the faults, {fds_after} after"
    );
    w.stop();
}
