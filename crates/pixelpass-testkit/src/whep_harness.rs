//! The harness of `tests/whep.rs`: an in-process server (hub, supervisor,
//! `server::serve`, WHEP) on loopback, requests through the tests' HTTP
//! client, the str0m client's join helpers and what it got (driven by the
//! one WHEP session helper, [`drive`]), ffmpeg as the decoder check, and the
//! producer wrappers some tests watch or crash.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::client::http::{Response, Url};
pub use crate::client::whep::session::{drive, Got};
use crate::client::{self, WhepClient, WhepOptions};

use pixelpass::capture::source::SourceKind;
use pixelpass::capture::{self as pipeline, GstProducer, PipelineConfig, RtpOutput};
use pixelpass::egress::whep::{WebRtcArgs, Whep};
use pixelpass::http::{self as server, Limits};
use pixelpass::hub::{Hub, HubConfig};
use pixelpass::registry::{Registry, StreamEntry};
use pixelpass::supervisor::{
    BoxFuture, Policy, Producer, ProducerError, Run, RunHandle, Supervisor,
};

pub const TOKEN: &str = "whep-test-token";
pub const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

// ─────────────────────────────── the server ───────────────────────────────

pub struct Server {
    pub http: SocketAddr,
    pub sup: Supervisor,
    pub whep: Whep,
    stop: watch::Sender<bool>,
}

impl Server {
    pub async fn start(
        max_viewers: usize,
        peer_timeout_s: u64,
        producer: impl FnOnce(Whep) -> Arc<dyn Producer>,
    ) -> Self {
        Self::start_with(HubConfig::default(), max_viewers, peer_timeout_s, producer).await
    }

    pub async fn start_with(
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

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), self.sup.shutdown())
            .await
            .expect("supervisor stops");
        tokio::time::timeout(Duration::from_secs(5), self.whep.shutdown())
            .await
            .expect("WHEP stops");
    }

    pub async fn viewers_become(&self, n: usize, within: Duration) -> Duration {
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
pub fn gst_producer() -> GstProducer {
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

// ───────────────────────────── HTTP ─────────────────────────────

/// One request to the server (the tests' HTTP client), 70 s at most.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let url = Url::at(addr, path);
    let timeout = Duration::from_secs(70);
    client::http::request(&url, method, headers, body.as_bytes(), timeout)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:#}"))
}

// ───────────────────────────── the str0m client ─────────────────────────────
//
// The client lives in the library (`crate::client::WhepClient`): the
// benchmarks use the same one.

fn whep_url(server: &Server) -> String {
    format!("http://{}/{TOKEN}/whep", server.http)
}

/// POST the client's offer; 201 with a Location.
pub async fn join(server: &Server) -> (WhepClient, String) {
    join_losing(server, None).await
}

pub async fn join_losing(server: &Server, lose_every: Option<usize>) -> (WhepClient, String) {
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

pub fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pixelpass-whep-{}-{name}", std::process::id()))
}

/// `ffmpeg -v error -i FILE -f null -`: its stderr (empty when it decoded cleanly).
pub fn ffmpeg_errors(file: &PathBuf) -> String {
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

// ─────────────────────────── wrapped producers ───────────────────────────

/// Wraps the real producer: its stop records how many WHEP peers were left.
pub struct Watched {
    pub inner: GstProducer,
    pub whep: Whep,
    pub log: Arc<Mutex<Vec<String>>>,
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

/// The real producer, with a way to make its run fail as a crash would.
pub struct Crashable {
    pub inner: GstProducer,
    pub crash: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedSender<ProducerError>>>>,
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
