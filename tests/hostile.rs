//! Hostile clients against the real `pixelpass host` with few descriptors
//! (its RLIMIT_NOFILE set to 256 by the test, so the flood is cheap): 400
//! idle connections that never send a request and 40 that send their
//! headers one byte a second. A viewer that was watching keeps getting
//! frames, a new viewer and the status API get through during the flood,
//! the server's descriptors stay under its limit, the idle connections are
//! closed (shed to make room, the rest by the header timeout), and the log
//! says so in a bounded number of lines.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pixelpass_testkit::prelude::*;

const NOFILE: u64 = 256;
const IDLE: usize = 400;
const TRICKLE: usize = 40;
const HEADER_TIMEOUT_S: u64 = 4;

/// A viewer read on its own thread until told to stop.
fn watch_in_background(
    addr: std::net::SocketAddr,
    path: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Viewer> {
    std::thread::spawn(move || {
        let mut v = Viewer::open(addr, &path);
        assert_eq!(v.status, 200, "the first viewer: {:?}", v.headers);
        while !stop.load(Ordering::Acquire) && !v.eof {
            v.read_for(Duration::from_millis(100));
        }
        v
    })
}

/// Connect without sending anything (retrying a refused connect a few times:
/// the listen backlog may be full for a moment).
fn idle_connection(addr: std::net::SocketAddr) -> TcpStream {
    for _ in 0..50 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("cannot connect to {addr} at all");
}

/// Has the server closed this connection (EOF or reset)? Reads nothing else.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => true, // a 503 or 408 head: the server answered and closes
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

#[test]
fn a_connection_flood_leaves_viewers_playing_and_descriptors_bounded() {
    let _lock = timing_lock();
    let ours = pixelpass::http::fds::raise_nofile();
    assert!(
        ours.soft >= 2 * (IDLE + TRICKLE) as u64,
        "the test itself needs about {} descriptors; its limit is {}",
        2 * (IDLE + TRICKLE),
        ours.soft
    );
    let host = HostBuilder::default()
        .max_viewers(4)
        .nofile(NOFILE)
        .keep_stderr()
        .arg("--header-timeout")
        .arg(&HEADER_TIMEOUT_S.to_string())
        .spawn();
    let pid = host.pid() as u32;
    let addr = host.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let first = watch_in_background(addr, host.stream_path(), stop.clone());
    host.wait_state("live", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let base_fds = open_fds(pid).expect("the host's /proc/PID/fd");

    // The flood: idle connections, then the one-byte-a-second senders.
    let flood_start = Instant::now();
    let mut max_fds = base_fds;
    let mut idle: Vec<TcpStream> = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        idle.push(idle_connection(addr));
        if i % 20 == 0 {
            max_fds = max_fds.max(open_fds(pid).unwrap_or(0));
        }
    }
    let trickle_stop = Arc::new(AtomicBool::new(false));
    let trickle: Vec<_> = (0..TRICKLE)
        .map(|_| {
            let mut s = idle_connection(addr);
            let stop = trickle_stop.clone();
            std::thread::spawn(move || {
                let opened = Instant::now();
                let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                let mut sent = 0;
                for byte in head.iter() {
                    if stop.load(Ordering::Acquire) || s.write_all(&[*byte]).is_err() {
                        break;
                    }
                    sent += 1;
                    std::thread::sleep(Duration::from_secs(1));
                }
                // Written until the server closed it (or the test gave up).
                (sent, opened.elapsed())
            })
        })
        .collect();

    // A new viewer and the API during the flood.
    let status = host.get(&host.status_path());
    assert_eq!(status.status, 200, "the API during the flood: {status:?}");
    let asked = Instant::now();
    let mut second = Viewer::open(addr, &host.stream_path());
    assert_eq!(
        second.status, 200,
        "a new viewer during the flood: {:?}",
        second.headers
    );
    while second.body.is_empty() && !second.eof && asked.elapsed() < Duration::from_secs(30) {
        second.read_for(Duration::from_millis(50));
    }
    assert!(
        !second.body.is_empty(),
        "the new viewer got no byte during the flood"
    );
    let first_byte = second.marks[1].0;
    for _ in 0..10 {
        max_fds = max_fds.max(open_fds(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100));
    }
    second.read_for(Duration::from_secs(2));

    // Every idle connection is closed by the server: shed, or timed out.
    let mut open: Vec<usize> = (0..idle.len()).collect();
    let guard = Instant::now() + Duration::from_secs(HEADER_TIMEOUT_S * 5 + 10);
    while !open.is_empty() && Instant::now() < guard {
        open.retain(|&i| !closed_by_server(&mut idle[i]));
        max_fds = max_fds.max(open_fds(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        open.is_empty(),
        "{} of {IDLE} idle connections still open {:?} after the flood began (header timeout {HEADER_TIMEOUT_S} s)",
        open.len(),
        flood_start.elapsed()
    );
    trickle_stop.store(true, Ordering::Release);
    let mut closed_late = 0;
    for t in trickle {
        let (sent, lasted) = t.join().expect("a trickle thread");
        assert!(
            sent < 60,
            "a one-byte-a-second sender was allowed {sent} bytes ({lasted:?})"
        );
        // Lower bound only: the header timeout, not something sooner, closed most.
        if lasted >= Duration::from_secs(HEADER_TIMEOUT_S - 1) {
            closed_late += 1;
        }
    }
    stop.store(true, Ordering::Release);
    let first = first.join().expect("the first viewer's thread");
    let flood_end = Instant::now();
    let after_fds = open_fds(pid).expect("the host is alive");

    // The first viewer played through the flood: frames, no jump.
    let scan_a = scan_ts(&first.body);
    let during = scan_a.frames_between(first.offset_at(flood_start), first.offset_at(flood_end));
    let jumps = scan_a.discontinuities(FPS);
    // The new viewer's first byte came within 2 s of the first viewer's frames.
    let waited = scan_a.frames_between(first.offset_at(asked), first.offset_at(first_byte));
    let scan_b = scan_ts(&second.body);
    let lines = host.stderr_lines();
    let storm_lines = lines
        .iter()
        .filter(|l| l.contains("closed idle connections"))
        .count();
    let accept_failed = lines.iter().filter(|l| l.contains("accept failed")).count();
    eprintln!(
        "flood {:?}: fds {base_fds} before, max {max_fds}, {after_fds} after (limit {NOFILE}); \
         first viewer {during} frames during it, {} jumps; the new viewer waited {waited} of its frames, got {} frames; \
         {closed_late}/{TRICKLE} slow senders closed by the timeout; {storm_lines} shedding lines, {accept_failed} accept errors",
        flood_end - flood_start,
        jumps.len(),
        scan_b.video.len()
    );
    assert!(
        waited <= 60,
        "the new viewer waited {waited} frames of the first viewer for its first byte"
    );
    assert!(
        scan_b.video.len() >= 10,
        "the new viewer got {} frames",
        scan_b.video.len()
    );
    assert!(
        scan_b.video[0].sps_or_idr,
        "the new viewer did not start on a keyframe"
    );
    let seconds = (flood_end - flood_start).as_secs_f64();
    assert!(
        during as f64 >= seconds * FPS * 0.5,
        "the first viewer got {during} frames in {seconds:.1} s of flood"
    );
    assert!(
        jumps.is_empty(),
        "the first viewer's stream jumped at {jumps:?}"
    );
    assert!(
        max_fds < NOFILE as usize - 16,
        "the host's descriptors reached {max_fds} of {NOFILE}"
    );
    assert!(
        after_fds <= base_fds + 2,
        "descriptors {base_fds} before, {after_fds} after"
    );
    assert_eq!(
        accept_failed,
        0,
        "the host ran out of descriptors:\n{}",
        lines.join("\n")
    );
    assert!(
        storm_lines >= 1,
        "no line said idle connections were closed"
    );
    let bound = 2 + (seconds / 10.0).ceil() as usize;
    assert!(
        storm_lines <= bound,
        "{storm_lines} lines about closed idle connections in {seconds:.0} s (at most {bound})"
    );
    assert!(
        closed_late * 2 >= TRICKLE,
        "only {closed_late}/{TRICKLE} slow senders lasted until the header timeout"
    );
}

#[test]
fn over_max_connections_with_every_one_a_request_is_a_503() {
    let host = HostBuilder::default()
        .max_viewers(4)
        .arg("--max-connections")
        .arg("3")
        .spawn();
    // Three viewers hold all three connections, each a request.
    let mut viewers: Vec<Viewer> = (0..3)
        .map(|_| Viewer::open(host.addr, &host.stream_path()))
        .collect();
    for v in &mut viewers {
        assert_eq!(v.status, 200);
        v.read_for(Duration::from_millis(200));
    }
    let r = raw_request(
        host.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.text().contains("too many connections (3/3)"),
        "{:?}",
        r.text()
    );
    assert!(r.header("retry-after").is_some(), "{r:?}");
    drop(viewers.pop());
    // The slot is free again once a viewer leaves.
    let mut ok = false;
    for _ in 0..50 {
        if host.get("/healthz").status == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "no connection admitted after a viewer left");
}
