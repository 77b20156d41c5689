//! `pixelpass host --publish URL` against a stand-in WHIP relay (the test
//! kit's [`WhipStandin`]: hyper + an ice-lite str0m peer on loopback): the
//! real binary POSTs its offer with the bearer token, connects over ICE/DTLS
//! and sends its one encode; the stand-in keeps the H.264 it gets and ffmpeg
//! decodes it. The relay is killed and started again on the same port (the
//! host republishes), and the host's stop DELETEs the resource. Local
//! viewers keep working meanwhile.
//!
//! Every wait is bounded (hang guards, not timing assertions); the host is
//! killed by PID when the test ends, pass or fail; the stand-in's thread is
//! joined.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pixelpass_testkit::prelude::*;
use pixelpass_testkit::whip_standin::{StandinLog, WhipStandin};

const PUBLISH_TOKEN: &str = "publish-secret-4b1d9e";
const PAGE: &str = "https://relay.example/viewer-token/";

/// Wait (≤ `within`, a hang guard) until `cond` holds on the stand-in's log.
fn wait_log(
    log: &Arc<Mutex<StandinLog>>,
    host: &Host,
    within: Duration,
    what: &str,
    cond: impl Fn(&StandinLog) -> bool,
) -> StandinLog {
    let t0 = Instant::now();
    loop {
        let snap = log.lock().unwrap().clone();
        if cond(&snap) {
            return snap;
        }
        assert!(
            t0.elapsed() < within,
            "{what}: not within {within:?}; stand-in saw posts={} sessions={:?}\nhost stderr:\n{}",
            snap.posts,
            snap.sessions
                .iter()
                .map(|s| (s.resource.clone(), s.connected_at.is_some(), s.video_frames))
                .collect::<Vec<_>>(),
            host.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn host_publishes_to_a_whip_relay_republishes_after_it_restarts_and_deletes_on_stop() {
    let _timing = timing_lock();
    let log: Arc<Mutex<StandinLog>> = Arc::default();
    let relay = WhipStandin::start(
        "127.0.0.1:0".parse().unwrap(),
        PUBLISH_TOKEN,
        Some(PAGE),
        log.clone(),
    );
    let addr = relay.addr;
    let url = relay.url("desk");
    let mut host = Host::builder()
        .arg("--publish")
        .arg(&url)
        .arg("--publish-token")
        .arg(PUBLISH_TOKEN)
        .spawn();

    // The banner names the relay's page for viewers (from its Link header).
    assert_eq!(host.banner["watch_url"], PAGE, "{}", host.banner);
    assert_eq!(host.banner["publish"][0]["url"], url.as_str());
    assert_eq!(host.banner["publish"][0]["player_page"], PAGE);
    assert!(!host.banner.to_string().contains(PUBLISH_TOKEN));
    // The token went as a bearer, in the POST only.
    assert_eq!(
        log.lock().unwrap().auth[0],
        format!("Bearer {PUBLISH_TOKEN}")
    );

    // ≥ 90 frames arrive, from a keyframe on.
    let snap = wait_log(
        &log,
        &host,
        Duration::from_secs(60),
        "90 frames at the relay",
        |l| l.sessions.first().is_some_and(|s| s.video_frames >= 90),
    );
    let first = &snap.sessions[0];
    assert_eq!(
        first.first_is_key,
        Some(true),
        "the first frame is a keyframe"
    );
    assert!(first.audio_packets > 0, "Opus arrives too");
    let first_frame_ms = first
        .first_frame_at
        .map(|t| t.duration_since(first.posted_at).as_millis());
    eprintln!(
        "publish: POST → first frame at the relay {first_frame_ms:?} ms; {} frames, {} keyframes, {} gaps, {} Opus packets",
        first.video_frames, first.keyframes, first.gaps, first.audio_packets
    );
    let dir = TempDir::new("publish");
    let h264 = dir.write("relay.h264", &first.annexb);
    let errors = decode_errors(&h264);
    assert!(errors.is_empty(), "ffmpeg decode errors:\n{errors}");
    let frames = count_video_frames(&h264);
    assert!(
        frames >= 90,
        "{frames} frames decoded from what the relay got"
    );

    // Local viewers of the host keep working while it publishes (and take their slots only).
    let mut viewer = Viewer::open(host.addr, &host.stream_path());
    assert_eq!(viewer.status, 200);
    viewer.read_for(Duration::from_secs(2));
    assert_eq!(
        host.status()["viewers"],
        1,
        "the publisher holds no viewer slot"
    );
    let checked = check_capture(&dir, "local.ts", &viewer.body, 10);
    drop(viewer);
    assert!(checked.frames >= 10);

    // The relay crashes and comes back on the same port: the host says so once and republishes.
    let sessions_before = snap.sessions.len();
    relay.kill();
    let t0 = Instant::now();
    while count(&host.stderr_text(), "stopped:") == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the host never said the relay was gone:\n{}",
            host.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let a few republish attempts fail (connection refused) before it returns.
    std::thread::sleep(Duration::from_millis(1500));
    let relay = WhipStandin::start(addr, PUBLISH_TOKEN, Some(PAGE), log.clone());
    let snap = wait_log(&log, &host, Duration::from_secs(60), "a republish", |l| {
        l.sessions.len() > sessions_before
            && l.sessions.last().is_some_and(|s| s.video_frames >= 30)
    });
    let again = snap.sessions.last().unwrap();
    assert_eq!(
        again.first_is_key,
        Some(true),
        "the republish starts on a keyframe"
    );
    let connected = snap
        .sessions
        .iter()
        .filter(|s| s.connected_at.is_some())
        .count();
    let stderr = host.stderr_text();
    eprintln!(
        "publish: {} POSTs, {connected} sessions connected (1 publish + {} republish)",
        snap.posts,
        connected - 1
    );
    assert_eq!(count(&stderr, "stopped:"), 1, "said once:\n{stderr}");
    assert_eq!(
        count(&stderr, " again, after "),
        1,
        "back, said once:\n{stderr}"
    );
    assert!(
        !stderr.contains(PUBLISH_TOKEN),
        "the token leaked into the log"
    );

    // Stopping the host DELETEs the live resource.
    let (status, _) = host.terminate(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{:?}", status);
    let snap = log.lock().unwrap().clone();
    assert!(
        snap.deletes.contains(&again.resource),
        "DELETE {} expected, saw {:?}",
        again.resource,
        snap.deletes
    );
    drop(relay);
}

#[test]
fn a_wrong_publish_token_is_one_clear_line_and_local_viewing_goes_on() {
    let log: Arc<Mutex<StandinLog>> = Arc::default();
    let relay = WhipStandin::start(
        "127.0.0.1:0".parse().unwrap(),
        PUBLISH_TOKEN,
        Some(PAGE),
        log.clone(),
    );
    let host = Host::builder()
        .arg("--publish")
        .arg(&relay.url("desk"))
        .env("PIXELPASS_PUBLISH_TOKEN", "not-the-token")
        .spawn();
    let p = &host.banner["publish"][0];
    assert_eq!(p["state"], "retrying", "{}", host.banner);
    let err = p["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&relay.url("desk")) && err.contains("--publish-token"),
        "{err}"
    );
    assert!(!host.banner.to_string().contains("not-the-token"));
    wait_log(
        &log,
        &host,
        Duration::from_secs(30),
        "a few refused POSTs",
        |l| l.refused.len() >= 3,
    );
    let stderr = host.stderr_text();
    assert_eq!(
        count(&stderr, "refused the publish token"),
        1,
        "said once:\n{stderr}"
    );
    assert!(!stderr.contains("not-the-token"));
    // Capture runs for the relay; a local viewer is served as ever.
    let mut viewer = Viewer::open(host.addr, &host.stream_path());
    assert_eq!(viewer.status, 200);
    assert!(viewer.read_for(Duration::from_secs(1)) > 0);
}
