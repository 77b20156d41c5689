//! WHEP against a real client: an in-process server (hub, supervisor with the
//! real GStreamer producer and its RTP branch, `server::serve`, WHEP) and a
//! str0m CLIENT peer doing the full exchange over loopback: HTTP POST of its
//! offer, ICE, DTLS, SRTP. What it receives is checked with ffmpeg.
//!
//! Everything binds 127.0.0.1; every wait has a deadline.

use pixelpass_testkit::whep_harness as whep_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pixelpass::hub::HubConfig;
use pixelpass::supervisor::ProducerError;
use pixelpass_testkit::client::{WhepClient, WhepEvent, WhepOptions};

use whep_support::{
    drive, ffmpeg_errors, gst_producer, http, join, join_losing, temp, Crashable, Got, Server,
    Watched, LOOPBACK, TOKEN,
};

// ───────────────────────────────── the tests ─────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_str0m_client_gets_decodable_h264_and_opus_over_whep() {
    let server = Server::start(2, 10, |_| Arc::new(gst_producer())).await;
    let posted = Instant::now();
    let (mut client, location) = join(&server).await;
    let mut got = Got::checked();
    drive(&mut client, &mut got, Duration::from_secs(20), |g| {
        g.video_frames >= 60 && g.audio_packets >= 25
    })
    .await;
    let join_ms = got
        .first_video_at
        .map(|t| t.duration_since(posted).as_millis())
        .unwrap_or_default();
    println!("join time (POST → first keyframe decoded by the client, capture cold-started): {join_ms} ms");

    // The first frame is a keyframe with its SPS/PPS: the file decodes from its first byte.
    let file = temp("video.h264");
    std::fs::write(&file, &got.annexb).unwrap();
    let errors = ffmpeg_errors(&file);
    let _ = std::fs::remove_file(&file);
    assert!(errors.is_empty(), "ffmpeg: {errors}");

    // A second viewer joins a running stream: it starts on a fresh keyframe.
    let posted = Instant::now();
    let (mut second, second_location) = join(&server).await;
    let mut got2 = Got::checked();
    drive(&mut second, &mut got2, Duration::from_secs(10), |g| {
        g.video_frames >= 1
    })
    .await;
    let join_ms = got2
        .first_video_at
        .map(|t| t.duration_since(posted).as_millis())
        .unwrap_or_default();
    println!("join time (POST → first keyframe decoded, capture running): {join_ms} ms");
    assert_eq!(server.sup.status().viewers, 2);

    // DELETE frees the slot at once.
    let r = http(server.http, "DELETE", &location, &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        server.sup.status().viewers,
        1,
        "freed before DELETE returned"
    );
    let r = http(server.http, "DELETE", &second_location, &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(server.sup.status().viewers, 0);
    assert_eq!(server.whep.peers(None), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_frees_its_slot_within_the_consent_timeout() {
    let timeout = Duration::from_secs(2);
    let server = Server::start(2, timeout.as_secs(), |_| Arc::new(gst_producer())).await;
    let (mut client, _location) = join(&server).await;
    let mut got = Got::checked();
    drive(&mut client, &mut got, Duration::from_secs(15), |g| {
        g.video_frames >= 5
    })
    .await;
    assert_eq!(server.sup.status().viewers, 1);
    // The browser vanishes: no DELETE, no DTLS close, no more ICE consent or RTCP.
    drop(client);
    let took = server
        .viewers_become(0, timeout + Duration::from_secs(3))
        .await;
    println!(
        "slot freed {} ms after the client went silent (timeout {timeout:?})",
        took.as_millis()
    );
    // The client's last datagram (RTCP, every ~1 s ± jitter) may precede the drop by up to ~1.5 s.
    assert!(
        took >= timeout - Duration::from_millis(1500),
        "not before the client could have been silent that long: {took:?}"
    );
    assert_eq!(server.whep.peers(None), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_teardown_peers_close_before_the_producer_stops() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    let server = Server::start(2, 10, move |whep| {
        Arc::new(Watched {
            inner: gst_producer(),
            whep,
            log: log2,
        })
    })
    .await;
    let (mut client, _location) = join(&server).await;
    let mut got = Got::checked();
    drive(&mut client, &mut got, Duration::from_secs(15), |g| {
        g.video_frames >= 5
    })
    .await;
    assert_eq!(server.whep.peers(None), 1);

    let sup = server.sup.clone();
    let stopping = tokio::spawn(async move { sup.shutdown().await });
    // The client hears the close (DTLS close_notify) while media was flowing.
    drive(&mut client, &mut got, Duration::from_secs(5), |g| g.closed).await;
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown ends")
        .unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        vec!["producer stops with 0 WHEP peers".to_owned()]
    );
    assert_eq!(server.sup.status().viewers, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_whep_requests_over_http_get_their_status_codes() {
    // One slot; the producer starts only for a lease, so most of this runs no pipeline.
    let server = Server::start(1, 10, |_| Arc::new(gst_producer())).await;
    let client = WhepClient::new(LOOPBACK, WhepOptions::default())
        .await
        .unwrap();
    let offer = client.offer_sdp().to_owned();
    let sdp = [("Content-Type", "application/sdp")];
    let path = format!("/{TOKEN}/whep");
    assert_eq!(
        http(server.http, "POST", "/nope/whep", &sdp, &offer)
            .await
            .status,
        404
    );
    assert_eq!(http(server.http, "GET", &path, &[], "").await.status, 405);
    assert_eq!(
        http(
            server.http,
            "POST",
            &path,
            &[("Content-Type", "text/plain")],
            &offer
        )
        .await
        .status,
        415
    );
    assert_eq!(
        http(server.http, "POST", &path, &sdp, "this is not SDP")
            .await
            .status,
        400
    );
    let vp8 = offer.replace("H264/90000", "X-NOPE/90000");
    let r = http(server.http, "POST", &path, &sdp, &vp8).await;
    assert_eq!(
        (r.status, r.text().lines().count()),
        (422, 1),
        "{}",
        r.text()
    );
    assert_eq!(
        http(
            server.http,
            "DELETE",
            &format!("{path}/no-such-id"),
            &[],
            ""
        )
        .await
        .status,
        404
    );
    let r = http(server.http, "OPTIONS", &path, &[], "").await;
    assert_eq!(
        (r.status, r.header("access-control-allow-origin")),
        (204, Some("*"))
    );
    assert_eq!(server.sup.status().viewers, 0);

    // Full: the one slot is taken by an HTTP-TS viewer.
    let lease = server.sup.acquire().expect("a slot");
    let r = http(server.http, "POST", &path, &sdp, &offer).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "host is full (1/1 viewers)\n");
    assert!(r.header("retry-after").is_some());
    drop(lease);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_packets_are_resent_on_nack() {
    let server = Server::start(2, 10, |_| Arc::new(gst_producer())).await;
    let (mut client, _location) = join_losing(&server, Some(25)).await;
    let mut got = Got::checked();
    // Got::checked() asserts every frame is complete (contiguous): each loss was repaired.
    drive(&mut client, &mut got, Duration::from_secs(20), |g| {
        g.video_frames >= 45
    })
    .await;
    let dropped = client.stats().dropped;
    assert!(dropped >= 3, "the test lost only {dropped} packets");
    let file = temp("nack.h264");
    std::fs::write(&file, &got.annexb).unwrap();
    let errors = ffmpeg_errors(&file);
    let _ = std::fs::remove_file(&file);
    assert!(errors.is_empty(), "ffmpeg: {errors}");
    println!("{dropped} video packets lost and recovered by NACK/RTX");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_capture_restart_the_peer_stays_and_resumes_on_a_keyframe() {
    let crash = Arc::new(Mutex::new(None));
    let crash2 = crash.clone();
    let server = Server::start(2, 10, move |_| {
        Arc::new(Crashable {
            inner: gst_producer(),
            crash: crash2,
        })
    })
    .await;
    let (mut client, _location) = join(&server).await;
    let mut got = Got::checked();
    drive(&mut client, &mut got, Duration::from_secs(15), |g| {
        g.video_frames >= 15
    })
    .await;
    let before = got.video_frames;
    let tx = crash.lock().unwrap().take().expect("a running producer");
    tx.send(ProducerError::crashed("x264enc0: injected crash"))
        .unwrap();
    let mut status = server.sup.watch_status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.restarts == 1 && s.state.as_str() == "live"),
    )
    .await
    .expect("the capture restarts")
    .unwrap();
    drive(&mut client, &mut got, Duration::from_secs(10), |g| {
        g.video_frames >= before + 30
    })
    .await;
    assert!(!got.closed, "the peer stayed connected through the restart");
    assert_eq!(
        (server.sup.status().viewers, server.whep.peers(None)),
        (1, 1)
    );
    // Frames from both runs, back to back: the new run's part starts on its keyframe.
    let file = temp("restart.h264");
    std::fs::write(&file, &got.annexb).unwrap();
    let errors = ffmpeg_errors(&file);
    let _ = std::fs::remove_file(&file);
    assert!(errors.is_empty(), "ffmpeg: {errors}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_within_the_keyframe_limit_starts_on_the_cached_gop() {
    // A limit longer than the 2 s GOP: every join finds a keyframe "too
    // recent" to ask for another, so each one must start on the cached GOP.
    let hub = HubConfig {
        min_keyframe_interval: Duration::from_secs(30),
        ..HubConfig::default()
    };
    let server = Server::start_with(hub, 2, 10, |_| Arc::new(gst_producer())).await;
    let (mut first, _) = join(&server).await;
    let mut got = Got::checked();
    drive(&mut first, &mut got, Duration::from_secs(15), |g| {
        g.video_frames >= 45
    })
    .await;
    let requests = server.sup.hub().stats().keyframe_requests;

    // The second viewer joins while the first keeps receiving: which
    // keyframes did the first see, and when?
    let (mut second, _) = join(&server).await;
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    let mut second_frames: Vec<pixelpass_testkit::client::VideoFrame> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while second_frames.len() < 30 {
        assert!(
            Instant::now() < deadline,
            "the second viewer got {} frames",
            second_frames.len()
        );
        tokio::select! {
            ev = first.next_event(deadline) => {
                if let Some(WhepEvent::Video(f)) = ev.expect("first client") {
                    if f.keyframe {
                        seen.push((f.rtp_time, f.arrived));
                    }
                }
            }
            ev = second.next_event(deadline) => {
                if let Some(WhepEvent::Video(f)) = ev.expect("second client") {
                    second_frames.push(f);
                }
            }
        }
    }
    let connected = second.connected_at().expect("the second viewer connected");
    let start = &second_frames[0];
    assert!(
        start.keyframe && start.contiguous,
        "it starts on a whole keyframe"
    );
    // Its keyframe is one the first viewer had before the second connected.
    let (_, first_had_it) = seen
        .iter()
        .chain(got.keyframes.iter())
        .find(|(t, _)| *t == start.rtp_time)
        .copied()
        .expect("the second viewer's first keyframe is one the first viewer got too");
    assert!(
        first_had_it < connected,
        "a keyframe from before the join: the cached GOP, not a fresh one"
    );
    assert_eq!(
        server.sup.hub().stats().keyframe_requests,
        requests,
        "no keyframe was asked for"
    );
    assert!(server.sup.hub().stats().rtp_gop_joins >= 1);
    // Cached and live packets meet without a gap or a repeat: it decodes.
    assert!(second_frames.iter().all(|f| f.contiguous));
    let annexb: Vec<u8> = second_frames
        .iter()
        .flat_map(|f| f.annexb.iter().copied())
        .collect();
    let file = temp("cached-gop.h264");
    std::fs::write(&file, &annexb).unwrap();
    let errors = ffmpeg_errors(&file);
    let _ = std::fs::remove_file(&file);
    assert!(errors.is_empty(), "ffmpeg: {errors}");
    server.shutdown().await;
}
