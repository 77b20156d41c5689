//! `pixelpass host --source test` against real clients: the test kit's HTTP
//! client (a raw socket for malformed requests), ffprobe/ffmpeg to decode
//! what each viewer received.
//!
//! Every test starts its own host on a free loopback port and bounds every
//! wait; the host is killed (by PID) when the test ends, pass or fail.

use pixelpass_testkit::prelude as common;

use std::time::{Duration, Instant};

use common::*;

const STREAM_TYPE: &str = "video/mp2t";

fn assert_stream_headers(v: &Viewer, who: &str) {
    assert_eq!(
        v.status, 200,
        "{who}: status {} headers {:?}",
        v.status, v.headers
    );
    assert_eq!(
        v.header("content-type"),
        Some(STREAM_TYPE),
        "{who}: {:?}",
        v.headers
    );
    assert_eq!(
        v.header("cache-control"),
        Some("no-store"),
        "{who}: {:?}",
        v.headers
    );
}

/// The first video frame a viewer gets must be a keyframe, right after a PAT.
fn assert_starts_on_keyframe(scan: &TsScan, who: &str) {
    let first = scan
        .video
        .first()
        .unwrap_or_else(|| panic!("{who}: no video PES at all"));
    assert!(
        first.rai || first.sps_or_idr,
        "{who}: first video frame is not a keyframe: {first:?}"
    );
    assert_eq!(
        scan.pat_offsets.first(),
        Some(&0),
        "{who}: stream does not start with a PAT"
    );
}

/// (a) Two concurrent viewers for 6 s each get H.264 + AAC that decode cleanly.
#[test]
fn two_concurrent_viewers_each_get_six_seconds_of_decodable_h264_and_aac() {
    let host = Host::spawn_default();
    let dir = TempDir::new("two-viewers");
    let addr = host.addr;
    let path = host.stream_path();
    let viewers: Vec<_> = (0..2)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut v = Viewer::open(addr, &path);
                if v.status == 200 {
                    v.read_for(Duration::from_secs(6));
                }
                v
            })
        })
        .collect();
    let viewers: Vec<Viewer> = viewers.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, v) in viewers.iter().enumerate() {
        let who = format!("viewer {i}");
        assert_stream_headers(v, &who);
        assert!(
            !v.eof,
            "{who}: the stream ended after {} bytes",
            v.body.len()
        );
        let c = check_capture(&dir, &format!("viewer{i}.ts"), &v.body, 120);
        assert_starts_on_keyframe(&c.scan, &who);
        eprintln!("{who}: {} bytes, {} frames decoded", v.body.len(), c.frames);
    }
}

/// (b) Over --max-viewers a request gets 503 with the reason and Retry-After;
/// a slot frees when a viewer leaves.
#[test]
fn a_viewer_over_the_cap_gets_503_host_is_full() {
    let host = Host::spawn_default();
    let mut a = Viewer::open(host.addr, &host.stream_path());
    let mut b = Viewer::open(host.addr, &host.stream_path());
    assert_stream_headers(&a, "viewer 1");
    assert_stream_headers(&b, "viewer 2");
    a.read_for(Duration::from_millis(300));
    b.read_for(Duration::from_millis(300));

    let third = host.get(&host.stream_path());
    assert_eq!(third.status, 503, "third viewer: {third:?}");
    // The body is the one-line reason (a trailing newline is fine).
    assert_eq!(
        third.text().trim_end_matches(['\r', '\n']),
        "host is full (2/2 viewers)"
    );
    let retry = third
        .header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {:?}", third.headers));
    assert!(
        retry.parse::<u64>().is_ok(),
        "Retry-After {retry:?} is not a number of seconds"
    );
    let st = host.status();
    assert_eq!(st["viewers"], 2, "{st}");

    // Viewer 1 leaves: its slot frees (the server notices on its next write).
    drop(a);
    let t0 = Instant::now();
    let mut c = loop {
        b.read_for(Duration::from_millis(100));
        let v = Viewer::open(host.addr, &host.stream_path());
        if v.status == 200 {
            break v;
        }
        assert_eq!(v.status, 503);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the slot of a closed viewer was not freed within 5 s"
        );
    };
    assert!(
        c.read_for(Duration::from_millis(500)) > 0,
        "the new viewer got no bytes"
    );
}

/// (c) Wrong token and unknown paths are plain 404s; /healthz is 200; HEAD
/// answers the stream's headers without taking a slot or starting capture.
#[test]
fn wrong_token_and_unknown_paths_are_404_and_head_takes_no_slot() {
    let host = Host::spawn_default();
    let t = host.token.clone();
    // Same length, last character changed.
    let mut wrong: Vec<char> = t.chars().collect();
    let last = wrong.len() - 1;
    wrong[last] = if wrong[last] == 'A' { 'B' } else { 'A' };
    let wrong: String = wrong.into_iter().collect();

    for path in [
        format!("/{wrong}/stream.ts"),
        format!("/{wrong}/status"),
        format!("/{}/stream.ts", &t[..t.len() - 1]),
        "/".to_string(),
        "/stream.ts".to_string(),
        format!("/{t}"),
        format!("/{t}/nope"),
        format!("/{t}/stream.ts/x"),
        "/healthz/x".to_string(),
    ] {
        let r = host.get(&path);
        assert_eq!(r.status, 404, "GET {path}: {r:?}");
        assert!(!r.text().contains(&t), "a 404 body reveals the token");
    }
    assert_eq!(host.get("/healthz").status, 200);

    let head = request(host.addr, "HEAD", &host.stream_path());
    assert_eq!(head.status, 200, "HEAD: {head:?}");
    assert_eq!(
        head.header("content-type"),
        Some(STREAM_TYPE),
        "HEAD: {head:?}"
    );
    let wrong_head = request(host.addr, "HEAD", &format!("/{wrong}/stream.ts"));
    assert_eq!(wrong_head.status, 404);
    for _ in 0..3 {
        let st = host.status();
        assert_eq!(st["viewers"], 0, "HEAD took a slot: {st}");
        assert_eq!(st["state"], "idle", "HEAD started capture: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        host.extra_stdout(),
        Vec::<String>::new(),
        "more than one line on stdout"
    );
}

/// (d) idle → live with a viewer → idle within linger + 3 s after it leaves.
#[test]
fn status_is_idle_then_live_then_idle_after_linger() {
    let linger = 1;
    let host = Host::builder().linger(linger).spawn();
    let st = host.status();
    assert_eq!(st["state"], "idle", "{st}");
    assert_eq!(st["viewers"], 0, "{st}");
    assert_eq!(st["max_viewers"], 2, "{st}");
    assert!(st["uptime_s"].is_number(), "no uptime_s: {st}");
    assert!(st.get("encoder").is_some(), "no encoder: {st}");

    let mut v = Viewer::open(host.addr, &host.stream_path());
    assert_stream_headers(&v, "viewer");
    assert!(
        v.read_for(Duration::from_secs(1)) > 0,
        "viewer got no bytes in 1 s"
    );
    let st = host.status();
    assert_eq!(st["state"], "live", "{st}");
    assert_eq!(st["viewers"], 1, "{st}");
    assert!(
        st["encoder"].as_str().is_some_and(|e| !e.is_empty()),
        "no encoder while live: {st}"
    );

    drop(v);
    let (st, took) = host.wait_state("idle", Duration::from_secs(linger as u64 + 3));
    assert_eq!(st["viewers"], 0, "{st}");
    eprintln!("idle again {took:?} after the viewer left (linger {linger} s)");
}

/// (e) A viewer that stops reading for 5 s does not slow the other one, and
/// what it gets after resuming decodes cleanly from a keyframe.
#[test]
fn a_stalled_viewer_does_not_slow_the_other_and_resumes_on_a_keyframe() {
    let _cpu = timing_lock();
    let host = Host::builder().linger(0).spawn();
    let dir = TempDir::new("stall");

    let mut fast = Viewer::open(host.addr, &host.stream_path());
    assert_stream_headers(&fast, "fast viewer");
    // A small receive window, so the stall backs up into the server quickly.
    let mut slow = Viewer::open_on(
        connect_small_rcvbuf(host.addr, 16 * 1024),
        host.addr,
        &host.stream_path(),
    );
    assert_stream_headers(&slow, "slow viewer");

    let start = Instant::now();
    let end = start + Duration::from_secs(11);
    let fast_thread = std::thread::spawn(move || {
        fast.read_until(end);
        fast
    });

    slow.read_until(start + Duration::from_secs(1));
    let paused_at = slow.body.len();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let t1 = Instant::now();
    slow.read_until(end);
    let fast = fast_thread.join().unwrap();
    assert!(!fast.eof, "the fast viewer's stream ended");
    assert!(
        !slow.eof,
        "the slow viewer was disconnected (a 5 s stall is within the write timeout)"
    );

    // The other viewer kept its frame rate while the slow one stalled:
    // measured against its own frames after the stall, not against 30 fps
    // of wall time (a starved machine encodes fewer frames for everyone).
    let fast_check = check_capture(&dir, "fast.ts", &fast.body, 200);
    let during = frame_rate(&fast_check.scan, &fast, t0, t1);
    let after = frame_rate(&fast_check.scan, &fast, t1, end);
    eprintln!(
        "fast viewer: {during:.1} frames/s during the stall, {after:.1} after; {} in all",
        fast_check.frames
    );
    assert!(
        during >= 0.9 * after,
        "the fast viewer got {during:.1} frames/s while the other stalled, \
         want ≥ 90% of the {after:.1} it got afterwards"
    );
    assert_no_skip(
        &fast_check.scan,
        fast.offset_at(t0),
        fast.offset_at(t1),
        "fast viewer during the stall",
    );

    // The slow viewer's whole capture decodes cleanly, and it skipped ahead
    // onto a keyframe (with a PAT before it) instead of resuming mid-GOP.
    let slow_check = check_capture(&dir, "slow.ts", &slow.body, 60);
    let scan = &slow_check.scan;
    let jumps = scan.discontinuities(FPS);
    for &i in &jumps {
        let p = &scan.video[i];
        assert!(
            p.rai || p.sps_or_idr,
            "the slow viewer resumed mid-GOP at byte {}: {p:?}",
            p.offset
        );
        assert!(
            scan.pat_before(i).is_some(),
            "no PAT before the keyframe the slow viewer resumed on (byte {})",
            p.offset
        );
    }
    let skip = jumps
        .iter()
        .copied()
        .find(|&i| scan.video[i].offset >= paused_at)
        .unwrap_or_else(|| panic!("after a 5 s stall the slow viewer's stream shows no skip: it was not caught up to live"));
    let skipped_s = pts_diff(
        scan.video[skip].pts.unwrap_or(0),
        scan.video[skip - 1].pts.unwrap_or(0),
    ) as f64
        / PTS_HZ as f64;
    eprintln!(
        "slow viewer: skipped {skipped_s:.2} s at byte {} ({} bytes before the stall)",
        scan.video[skip].offset, paused_at
    );

    // A fresh capture of what came after the skip decodes on its own.
    let from = scan.pat_before(skip).unwrap();
    let resumed = check_capture(&dir, "slow-resumed.ts", &slow.body[from..], 45);
    assert_starts_on_keyframe(&resumed.scan, "slow viewer after resuming");

    // And it is live again: its newest frame is close to the fast viewer's.
    let behind = pts_diff(
        fast_check.scan.last_pts().unwrap(),
        scan.last_pts().unwrap(),
    ) as f64
        / PTS_HZ as f64;
    eprintln!("slow viewer ends {behind:.2} s behind the fast one");
    assert!(
        behind < 1.5,
        "the slow viewer is still {behind:.2} s behind after resuming"
    );
}

/// (f) Malformed requests get 400 and oversized headers 431, and neither
/// disturbs a viewer that is watching meanwhile.
#[test]
fn malformed_and_oversized_requests_get_400_and_431_without_disturbing_a_viewer() {
    let _cpu = timing_lock();
    let host = Host::spawn_default();
    let dir = TempDir::new("bad-requests");
    let mut v = Viewer::open(host.addr, &host.stream_path());
    assert_stream_headers(&v, "viewer");
    let start = Instant::now();
    let end = start + Duration::from_secs(6);
    let viewer = std::thread::spawn(move || {
        v.read_until(end);
        v
    });

    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let addr = host.addr;
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"NOT A REQUEST\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon in this header\r\n\r\n",
    ] {
        let r = raw_request(addr, raw, false);
        assert_eq!(r.status, 400, "{:?} → {r:?}", String::from_utf8_lossy(raw));
    }
    let mut big =
        format!("GET /{}/stream.ts HTTP/1.1\r\nHost: {addr}\r\n", host.token).into_bytes();
    for i in 0..10 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(2000)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    assert!(big.len() > 16 * 1024);
    let r = raw_request(addr, &big, false);
    assert_eq!(r.status, 431, "{} bytes of headers → {r:?}", big.len());
    let one_huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Huge: {}\r\n\r\n",
        "b".repeat(40 * 1024)
    );
    let r = raw_request(addr, one_huge.as_bytes(), false);
    assert_eq!(r.status, 431, "a 40 KiB header → {r:?}");
    // Still serving.
    assert_eq!(host.get("/healthz").status, 200);
    assert_eq!(host.status()["viewers"], 1);
    std::thread::sleep(Duration::from_secs(2));
    let t1 = Instant::now();

    let v = viewer.join().unwrap();
    assert!(!v.eof, "the viewer's stream ended");
    let c = check_capture(&dir, "viewer.ts", &v.body, 120);
    // Its frame rate during the bad requests against its own afterwards (not
    // 30 fps of wall time, which a starved machine may not encode).
    let during = frame_rate(&c.scan, &v, t0, t1);
    let after = frame_rate(&c.scan, &v, t1, end);
    eprintln!("viewer: {during:.1} frames/s during the bad requests, {after:.1} after");
    assert!(
        during >= 0.9 * after,
        "the viewer got {during:.1} frames/s during the bad requests, \
         want ≥ 90% of the {after:.1} it got afterwards"
    );
    assert_no_skip(
        &c.scan,
        v.offset_at(t0),
        v.offset_at(t1),
        "viewer during the bad requests",
    );
}

/// Frames per second (of wall time) a viewer got between `from` and `to`.
fn frame_rate(scan: &TsScan, v: &Viewer, from: Instant, to: Instant) -> f64 {
    let frames = scan.frames_between(v.offset_at(from), v.offset_at(to));
    frames as f64 / to.saturating_duration_since(from).as_secs_f64().max(0.001)
}

/// The viewer's frames between two body offsets are contiguous: the server
/// never skipped it ahead (what it does to a viewer that fell behind).
fn assert_no_skip(scan: &TsScan, from: usize, to: usize, who: &str) {
    let skips: Vec<usize> = scan
        .discontinuities(FPS)
        .into_iter()
        .filter(|&i| (from..to).contains(&scan.video[i].offset))
        .collect();
    assert!(
        skips.is_empty(),
        "{who}: the stream jumps at {:?}",
        skips.iter().map(|&i| &scan.video[i]).collect::<Vec<_>>()
    );
}

/// Headers that never finish are cut off by the header read timeout.
#[test]
fn a_request_whose_headers_never_finish_is_closed() {
    use std::io::{Read, Write};
    let host = Host::spawn_default();
    let mut s = connect(host.addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(_) => break, // closed (0) or an error response: either way it stopped waiting
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "a connection with unfinished headers was kept open for 20 s"
        );
    }
    eprintln!("unfinished headers cut off after {:?}", t0.elapsed());
    assert_eq!(host.get("/healthz").status, 200);
}

/// (g) SIGTERM with a viewer connected: exit status 0 within 2 s.
#[test]
fn sigterm_with_a_viewer_connected_exits_zero_within_two_seconds() {
    let mut host = Host::spawn_default();
    let mut v = Viewer::open(host.addr, &host.stream_path());
    assert_stream_headers(&v, "viewer");
    assert!(
        v.read_for(Duration::from_secs(1)) > 0,
        "viewer got no bytes in 1 s"
    );
    assert_eq!(host.status()["state"], "live");

    let (status, took) = host.terminate(Duration::from_secs(2));
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status:?}"
    );
    eprintln!("exited {took:?} after SIGTERM");
    // The viewer's connection is closed, not left hanging.
    v.read_for(Duration::from_secs(2));
    assert!(
        v.eof,
        "the viewer's connection stayed open after the host exited"
    );
}
