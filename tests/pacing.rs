//! Pacing on a real path (issue 16): `pixelpass serve` in the lab's `public`
//! namespace (FFmpeg libx264 `ultrafast`, 4 Mbit/s, 1280x720@30, keyframes of
//! ~90 KB every 2 s: `ipratio=10` and a large VBV buffer) and ONE str0m WHEP
//! viewer in `viewer`, whose socket keeps the kernel's DEFAULT receive buffer
//! (~208 KB), for 60 s across a veth pair and a bridge:
//!
//! - 0 datagrams dropped for a full receive buffer (`RcvbufErrors` of
//!   /proc/net/snmp, read inside the viewer's namespace, before and after);
//! - 0 H.264 sequence gaps on the wire (originals, not repaired by RTX);
//! - at most [`MAX_BURST`] datagrams within any 5 ms, by the kernel's
//!   receive timestamps (SO_TIMESTAMPNS), so a viewer process that is slow
//!   to read on this busy 2-core machine does not bunch them up.
//!
//! The pacer lets at most its window through within 5 ms of send times:
//! 15 datagrams, audio included (a P-frame of ~13 and the audio held for
//! it), counted from when the server's send call returned, so a server
//! descheduled between releasing a group and sending it does not let the
//! next group follow on its heels. RTCP, STUN and DTLS pass the window
//! too, so 15 is a bound by construction (measured: 15; 16–18 while audio
//! and RTCP went around the window; 14 with the earlier five-datagram
//! bucket). The bar of 16 is the issue's. The same test across a plain veth
//! instead of the lab's bridge gave the same tail, so what bunches is the
//! sender, not the lab's network. Without pacing a keyframe arrives as 70+
//! datagrams within a millisecond or two: run with
//! `PIXELPASS_WEBRTC_PACING=off` (passed on to serve) to see this test fail.
//!
//! Only documentation addresses, no route out of the lab; no netem (this
//! kernel has none) and no shaping: the link is the veth's full speed. Every
//! wait is bounded, serve and FFmpeg are ended by PID and reaped, the
//! namespaces deleted.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pixelpass_testkit::client::whep::session::Collect;
use pixelpass_testkit::client::whep::{ClientStats, WhepClient, WhepEvent, WhepOptions};
use pixelpass_testkit::netlab::{Lab, Node};
use pixelpass_testkit::prelude::*;

const TOKEN: &str = "pacing-viewer-token-0123456789";
const SERVER: &str = "203.0.113.10";
const PORT: u16 = 8080;
const SECONDS: u64 = 60;
const MAX_BURST: u64 = 16;
const BURST_WINDOW: Duration = Duration::from_millis(5);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pixelpass")
}

/// What the viewer got, counted (not kept: 60 s of 4 Mbit/s).
#[derive(Default)]
struct Counted {
    frames: u64,
    keyframes: u64,
    broken: u64,
    audio: u64,
    closed: bool,
}

impl Collect for Counted {
    fn take(&mut self, ev: WhepEvent) {
        match ev {
            WhepEvent::Video(f) => {
                self.frames += 1;
                self.keyframes += u64::from(f.keyframe);
                self.broken += u64::from(!f.contiguous);
            }
            WhepEvent::Audio(_) => self.audio += 1,
            WhepEvent::Closed => self.closed = true,
            WhepEvent::Connected | WhepEvent::IceState(_) => {}
        }
    }

    fn progress(&self) -> String {
        format!(
            "frames={} keyframes={} audio={}",
            self.frames, self.keyframes, self.audio
        )
    }
}

fn config() -> String {
    format!(
        "listen = \"{SERVER}:{PORT}\"\nwebrtc_udp = \"{SERVER}:0\"\napi_token = \"pacing-api-token\"\n\n\
         [[stream]]\nid = \"pace\"\ntoken = \"{TOKEN}\"\nautostart = true\nhttp_ts = false\n\
         input = [\"-re\", \"-f\", \"lavfi\", \"-i\", \"testsrc2=size=1280x720:rate=30\", \"-f\", \"lavfi\", \"-i\", \"sine=frequency=440\"]\n\
         video_map = \"0:v:0\"\naudio_map = \"1:a:0\"\n\
         video_bitrate_kbps = 4000\nkeyframe_interval_seconds = 2\n\
         video_options = [\"-preset\", \"ultrafast\", \"-bufsize\", \"8000k\", \"-x264-params\", \"ipratio=10\"]\n"
    )
}

#[test]
fn a_viewer_with_a_default_receive_buffer_gets_every_packet_in_small_bursts() {
    let lab = Lab::new().expect("the network lab (root, iproute2, nftables)");
    let dir = TempDir::new("pacing");
    let path = dir.0.join("pacing.toml");
    std::fs::write(&path, config()).unwrap();
    let pacing = std::env::var("PIXELPASS_WEBRTC_PACING").unwrap_or_else(|_| "on".into());
    let mut cmd = lab.command(Node::Public, bin());
    cmd.args(["serve", "--json", "--config"])
        .arg(&path)
        .args(["--whip-udp", &format!("{SERVER}:0")])
        .env("PIXELPASS_WEBRTC_PACING", &pacing)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let serve = lab.spawn(cmd).expect("start serve");
    let banner = first_line(serve.stdout.expect("stdout piped"), Duration::from_secs(30))
        .expect("serve's banner within 30 s");
    assert!(banner.starts_with('{'), "{banner}");

    let url = format!("http://{SERVER}:{PORT}/{TOKEN}/whep");
    let viewer: IpAddr = lab.addr(Node::Viewer);
    let drops_before = lab.udp_rcvbuf_errors(Node::Viewer).expect("snmp before");
    let (got, stats, rcvbuf) = lab
        .block_on(Node::Viewer, move || async move {
            let opts = WhepOptions {
                recv_buffer: None,
                burst_window: Some(BURST_WINDOW),
                ..WhepOptions::default()
            };
            // The stream may still be starting: a few tries, bounded.
            let mut client = None;
            for _ in 0..30 {
                match WhepClient::connect_with(&url, viewer, opts.clone()).await {
                    Ok(c) => {
                        client = Some(c);
                        break;
                    }
                    Err(e) => {
                        eprintln!("WHEP POST: {e}; again in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            let mut client = client.expect("a WHEP session within 30 tries");
            let rcvbuf = client.recv_buffer_size();
            let mut got = Counted::default();
            let end = Instant::now() + Duration::from_secs(SECONDS);
            while Instant::now() < end && !got.closed {
                match client.next_event(end).await {
                    Ok(Some(ev)) => got.take(ev),
                    Ok(None) => {}
                    Err(e) => panic!("the WHEP client failed: {e}"),
                }
            }
            let stats = client.stats();
            if let Some(h) = client.burst_histogram() {
                let tail: Vec<String> = (1..=h.len())
                    .zip(&h)
                    .filter(|(n, c)| *n > 8 && **c > 0)
                    .map(|(n, c)| format!("{n}:{c}"))
                    .collect();
                eprintln!(
                    "datagrams that arrived with more than 8 in their {BURST_WINDOW:?} window (n:count): {}",
                    tail.join(" ")
                );
            }
            let _ = client.delete().await;
            (got, stats, rcvbuf)
        })
        .expect("the viewer namespace");
    let drops_after = lab.udp_rcvbuf_errors(Node::Viewer).expect("snmp after");
    lab.stop(serve.pid).expect("stop serve");
    lab.close().expect("tear the lab down");

    let drops = drops_after.saturating_sub(drops_before);
    report(&pacing, rcvbuf, &got, &stats, drops);
    // The stream flowed the whole time (a stalled stream has no bursts).
    assert!(!got.closed, "the server closed the session");
    assert!(
        got.frames >= SECONDS * 30 * 8 / 10 && got.keyframes >= SECONDS / 2 - 2,
        "{} frames, {} keyframes in {SECONDS} s",
        got.frames,
        got.keyframes
    );
    assert_eq!(drops, 0, "datagrams dropped for a full receive buffer");
    assert_eq!(stats.video_rtp_lost(), 0, "H.264 sequence gaps on the wire");
    assert!(
        stats.max_burst <= MAX_BURST,
        "{} datagrams within {BURST_WINDOW:?}",
        stats.max_burst
    );
}

fn report(pacing: &str, rcvbuf: Option<usize>, got: &Counted, s: &ClientStats, drops: u64) {
    eprintln!(
        "pacing {pacing}: receive buffer {} B (kernel default), {} s: {} frames ({} keyframes, {} after a gap), \
         {} audio; {} datagrams ({:.2} Mbit/s); RcvbufErrors +{drops}; H.264 lost on the wire {} of {}; \
         NACKs {}; most datagrams within {BURST_WINDOW:?}: {}",
        rcvbuf.map_or_else(|| "?".to_owned(), |b| b.to_string()),
        SECONDS,
        got.frames,
        got.keyframes,
        got.broken,
        got.audio,
        s.udp_datagrams,
        s.udp_bytes as f64 * 8.0 / SECONDS as f64 / 1e6,
        s.video_rtp_lost(),
        s.video_rtp_expected,
        s.nacks_sent,
        s.max_burst,
    );
}
