//! WHEP against a real client: an in-process server (hub, supervisor with the
//! real GStreamer producer and its RTP branch, `server::serve`, WHEP) and a
//! str0m CLIENT peer doing the full exchange over loopback: HTTP POST of its
//! offer, ICE, DTLS, SRTP. What it receives is checked with ffmpeg.
//!
//! Everything binds 127.0.0.1; every wait has a deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use pixelpass::client::{WhepClient, WhepEvent, WhepOptions};

use pixelpass::egress::whep::{WebRtcArgs, Whep};
use pixelpass::hub::{Hub, HubConfig};
use pixelpass::pipeline::{self, GstProducer, PipelineConfig, RtpOutput};
use pixelpass::server::{self, Limits, Registry, StreamEntry};
use pixelpass::source::SourceKind;
use pixelpass::supervisor::{
    BoxFuture, Policy, Producer, ProducerError, Run, RunHandle, Supervisor,
};

const TOKEN: &str = "whep-test-token";
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

// ─────────────────────────────── the server ───────────────────────────────

struct Server {
    http: SocketAddr,
    sup: Supervisor,
    whep: Whep,
    stop: watch::Sender<bool>,
}

impl Server {
    async fn start(
        max_viewers: usize,
        peer_timeout_s: u64,
        producer: impl FnOnce(Whep) -> Arc<dyn Producer>,
    ) -> Self {
        Self::start_with(HubConfig::default(), max_viewers, peer_timeout_s, producer).await
    }

    async fn start_with(
        hub: HubConfig,
        max_viewers: usize,
        peer_timeout_s: u64,
        producer: impl FnOnce(Whep) -> Arc<dyn Producer>,
    ) -> Self {
        let args = WebRtcArgs {
            webrtc_udp: "127.0.0.1:0".parse().unwrap(),
            webrtc_timeout: peer_timeout_s,
            ..WebRtcArgs::default()
        };
        let whep = Whep::start(&args).await.expect("WHEP starts");
        let policy = Policy {
            max_viewers,
            linger: Duration::from_millis(200),
            ..Policy::default()
        };
        let sup = Supervisor::spawn(policy, Hub::new(hub), producer(whep.clone()));
        let registry = Registry::new();
        registry.insert(StreamEntry::new("host", TOKEN, sup.clone()));
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let http = listener.local_addr().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let router = server::router_with(registry, Some(whep.clone()));
        tokio::spawn(server::serve(listener, router, Limits::default(), stop_rx));
        Self {
            http,
            sup,
            whep,
            stop,
        }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), self.sup.shutdown())
            .await
            .expect("supervisor stops");
        tokio::time::timeout(Duration::from_secs(5), self.whep.shutdown())
            .await
            .expect("WHEP stops");
    }

    async fn viewers_become(&self, n: usize, within: Duration) -> Duration {
        let t0 = Instant::now();
        let mut rx = self.sup.watch_status();
        let r = tokio::time::timeout(within, rx.wait_for(|s| s.viewers == n)).await;
        assert!(
            r.is_ok(),
            "viewers never became {n} within {within:?}; status {:?}",
            self.sup.status()
        );
        t0.elapsed()
    }
}

/// The host's real producer (test pattern, light settings) with its RTP branch.
fn gst_producer() -> GstProducer {
    pipeline::init().expect("GStreamer");
    let cfg = PipelineConfig {
        source: SourceKind::Test,
        framerate: 30,
        bitrate_kbps: 600,
        width: Some(320),
        height: Some(240),
        ..PipelineConfig::default()
    };
    let encoder = pipeline::preflight(&cfg).expect("GStreamer elements and an H.264 encoder");
    GstProducer::new(cfg, encoder)
        .with_rtp(RtpOutput::default())
        .expect("the RTP branch's elements")
}

// ───────────────────────────── a tiny HTTP client ─────────────────────────────

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let go = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(70), go)
        .await
        .expect("HTTP answer in time");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a full response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_owned(),
    }
}

// ───────────────────────────── the str0m client ─────────────────────────────
//
// The client lives in the library (`pixelpass::client::WhepClient`): the
// benchmarks use the same one.

/// What the client got.
#[derive(Default)]
struct Got {
    annexb: Vec<u8>,
    /// (RTP time, arrival) of each keyframe.
    keyframes: Vec<(u64, Instant)>,
    video_frames: usize,
    audio_packets: usize,
    first_video_at: Option<Instant>,
    connected: bool,
    closed: bool,
}

impl Got {
    fn take(&mut self, ev: WhepEvent) {
        match ev {
            WhepEvent::Connected => self.connected = true,
            WhepEvent::Closed => self.closed = true,
            WhepEvent::Video(f) => {
                assert!(
                    f.contiguous,
                    "every frame arrives whole and in order on loopback"
                );
                if self.video_frames == 0 {
                    assert!(
                        f.keyframe,
                        "the first frame is a keyframe (with its SPS/PPS)"
                    );
                }
                self.first_video_at.get_or_insert(f.arrived);
                if f.keyframe {
                    self.keyframes.push((f.rtp_time, f.arrived));
                }
                self.annexb.extend_from_slice(&f.annexb);
                self.video_frames += 1;
            }
            WhepEvent::Audio(a) => {
                assert!(!a.data.is_empty());
                self.audio_packets += 1;
            }
            WhepEvent::IceState(_) => {}
        }
    }
}

fn whep_url(server: &Server) -> String {
    format!("http://{}/{TOKEN}/whep", server.http)
}

/// POST the client's offer; 201 with a Location.
async fn join(server: &Server) -> (WhepClient, String) {
    join_losing(server, None).await
}

async fn join_losing(server: &Server, lose_every: Option<usize>) -> (WhepClient, String) {
    let opts = WhepOptions {
        lose_video_every: lose_every,
        ..WhepOptions::default()
    };
    let client = WhepClient::connect_with(&whep_url(server), LOOPBACK, opts)
        .await
        .expect("WHEP POST answered 201");
    let location = client.resource_path().expect("Location").to_owned();
    (client, location)
}

/// Drive `client` until `done` says so, or panic at `deadline`.
async fn drive(
    client: &mut WhepClient,
    got: &mut Got,
    within: Duration,
    done: impl Fn(&Got) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(got) {
        assert!(
            Instant::now() < deadline,
            "gave up after {within:?}: connected={} video={} audio={}",
            got.connected,
            got.video_frames,
            got.audio_packets
        );
        if let Some(ev) = client.next_event(deadline).await.expect("the client runs") {
            got.take(ev);
        }
    }
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pixelpass-whep-{}-{name}", std::process::id()))
}

/// `ffmpeg -v error -i FILE -f null -`: its stderr (empty when it decoded cleanly).
fn ffmpeg_errors(file: &PathBuf) -> String {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait ffmpeg") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            if !status.success() && err.is_empty() {
                err = format!("ffmpeg exited with {status}");
            }
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return "ffmpeg did not finish in 30 s".into();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ───────────────────────────────── the tests ─────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_str0m_client_gets_decodable_h264_and_opus_over_whep() {
    let server = Server::start(2, 10, |_| Arc::new(gst_producer())).await;
    let posted = Instant::now();
    let (mut client, location) = join(&server).await;
    let mut got = Got::default();
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
    let mut got2 = Got::default();
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
    let mut got = Got::default();
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

/// Wraps the real producer: its stop records how many WHEP peers were left.
struct Watched {
    inner: GstProducer,
    whep: Whep,
    log: Arc<Mutex<Vec<String>>>,
}

struct WatchedRun {
    inner: Box<dyn RunHandle>,
    whep: Whep,
    log: Arc<Mutex<Vec<String>>>,
}

impl Producer for Watched {
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        let start = self.inner.start(hub);
        let (whep, log) = (self.whep.clone(), self.log.clone());
        Box::pin(async move {
            let mut run = start.await?;
            run.handle = Box::new(WatchedRun {
                inner: run.handle,
                whep,
                log,
            });
            Ok(run)
        })
    }
}

impl RunHandle for WatchedRun {
    fn stop(self: Box<Self>) -> BoxFuture<()> {
        self.log.lock().unwrap().push(format!(
            "producer stops with {} WHEP peers",
            self.whep.peers(None)
        ));
        self.inner.stop()
    }
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
    let mut got = Got::default();
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
    assert_eq!((r.status, r.body.lines().count()), (422, 1), "{}", r.body);
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
    assert_eq!(r.body, "host is full (1/1 viewers)\n");
    assert!(r.header("retry-after").is_some());
    drop(lease);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_packets_are_resent_on_nack() {
    let server = Server::start(2, 10, |_| Arc::new(gst_producer())).await;
    let (mut client, _location) = join_losing(&server, Some(25)).await;
    let mut got = Got::default();
    // Got::take asserts every frame is complete (contiguous): each loss was repaired.
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

/// The real producer, with a way to make its run fail as a crash would.
struct Crashable {
    inner: GstProducer,
    crash: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedSender<ProducerError>>>>,
}

impl Producer for Crashable {
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        let start = self.inner.start(hub);
        let crash = self.crash.clone();
        Box::pin(async move {
            let mut run = start.await?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let mut inner = std::mem::replace(&mut run.failures, rx);
            let forward = tx.clone();
            tokio::spawn(async move {
                while let Some(e) = inner.recv().await {
                    let _ = forward.send(e);
                }
            });
            *crash.lock().unwrap() = Some(tx);
            Ok(run)
        })
    }
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
    let mut got = Got::default();
    drive(&mut client, &mut got, Duration::from_secs(15), |g| {
        g.video_frames >= 15
    })
    .await;
    let before = got.video_frames;
    let tx = crash.lock().unwrap().take().expect("a running producer");
    tx.send(ProducerError::new("x264enc0: injected crash"))
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
    let mut got = Got::default();
    drive(&mut first, &mut got, Duration::from_secs(15), |g| {
        g.video_frames >= 45
    })
    .await;
    let requests = server.sup.hub().stats().keyframe_requests;

    // The second viewer joins while the first keeps receiving: which
    // keyframes did the first see, and when?
    let (mut second, _) = join(&server).await;
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    let mut second_frames: Vec<pixelpass::client::VideoFrame> = Vec::new();
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
