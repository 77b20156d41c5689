//! Viewers that stay through faults, for `tests/faults.rs` and
//! `pixelpass-bench faults`: HTTP-TS viewers that note the arrival of every
//! video frame (and whether it is a keyframe) as it comes, and WHEP viewers
//! that do the same and, like the player page, POST again at once when the
//! server closes their peer. Each runs on the watchers' own runtime until
//! [`Watchers::stop`]; what they saw is read at any time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pixelpass::media::h264;
use pixelpass::media::ts::packet::{self, Packet, PAT_PID};
use pixelpass::media::ts::Framer;

use crate::client::http::{connect, Stream};
use crate::client::{WhepClient, WhepEvent};

/// One video frame as a viewer got it.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub at: Instant,
    pub keyframe: bool,
}

/// What one viewer saw.
#[derive(Default)]
pub struct Seen {
    pub frames: Mutex<Vec<Frame>>,
    /// WHEP: new peers after the first (the server closed the last one).
    pub reconnects: AtomicU64,
    /// The last error the viewer hit (it goes on).
    pub last_error: Mutex<Option<String>>,
}

impl Seen {
    fn push(&self, keyframe: bool) {
        let mut f = self.frames.lock().unwrap_or_else(|p| p.into_inner());
        f.push(Frame {
            at: Instant::now(),
            keyframe,
        });
    }

    pub fn snapshot(&self) -> Vec<Frame> {
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Video frames out of an MPEG-TS byte stream as it comes.
#[derive(Default)]
pub struct LiveTs {
    framer: Framer,
    pmt_pid: Option<u16>,
    video_pid: Option<u16>,
}

impl LiveTs {
    /// Feed bytes; `frame(keyframe)` for each video PES that starts in them.
    pub fn push(&mut self, bytes: &[u8], mut frame: impl FnMut(bool)) {
        let (pmt_pid, video_pid) = (&mut self.pmt_pid, &mut self.video_pid);
        self.framer.push(bytes, |b| {
            let Some(p) = Packet::new(b) else { return };
            let pid = p.pid();
            let payload = p.payload();
            if pid == PAT_PID && p.pusi() {
                if let Some(pmt) = packet::psi_section(payload).and_then(packet::pat_pmt_pid) {
                    *pmt_pid = Some(pmt);
                }
            } else if Some(pid) == *pmt_pid && p.pusi() {
                if let Some(sec) = packet::psi_section(payload) {
                    for (stream_type, epid) in packet::pmt_streams(sec) {
                        if stream_type == packet::STREAM_TYPE_H264 {
                            *video_pid = Some(epid);
                        }
                    }
                }
            } else if Some(pid) == *video_pid
                && p.pusi()
                && payload.len() >= 9
                && payload[..3] == [0, 0, 1]
            {
                let es = payload.get(9 + payload[8] as usize..).unwrap_or(&[]);
                frame(p.random_access() || h264::nal_types(es).any(|t| t == 5));
            }
        });
    }
}

/// The viewers, on a runtime of their own.
pub struct Watchers {
    rt: Option<tokio::runtime::Runtime>,
    stop: Arc<AtomicBool>,
    pub http: Vec<Arc<Seen>>,
    pub whep: Vec<Arc<Seen>>,
}

impl Watchers {
    /// `http` viewers of `http://addr{ts_path}` and `whep` of `whep_url`.
    pub fn start(
        addr: SocketAddr,
        ts_path: &str,
        whep_url: &str,
        http: usize,
        whep: usize,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the viewers");
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = Watchers {
            rt: None,
            stop: stop.clone(),
            http: Vec::new(),
            whep: Vec::new(),
        };
        for _ in 0..http {
            let seen = Arc::new(Seen::default());
            rt.spawn(watch_http(
                addr,
                ts_path.to_owned(),
                seen.clone(),
                stop.clone(),
            ));
            w.http.push(seen);
        }
        for _ in 0..whep {
            let seen = Arc::new(Seen::default());
            rt.spawn(watch_whep(whep_url.to_owned(), seen.clone(), stop.clone()));
            w.whep.push(seen);
        }
        w.rt = Some(rt);
        w
    }

    /// Every viewer, HTTP-TS first, with its name.
    pub fn all(&self) -> impl Iterator<Item = (String, &Arc<Seen>)> {
        let h = self
            .http
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("http-ts {i}"), s));
        let w = self
            .whep
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("whep {i}"), s));
        h.chain(w)
    }

    /// Wait (≤ `within`) until every viewer has a keyframe at or after `t`.
    pub fn wait_keyframe_after(&self, t: Instant, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            if self
                .all()
                .all(|(_, s)| first_keyframe_after(&s.snapshot(), t).is_some())
            {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// When the first keyframe at or after `t` came.
pub fn first_keyframe_after(frames: &[Frame], t: Instant) -> Option<Instant> {
    frames
        .iter()
        .find(|f| f.at >= t && f.keyframe)
        .map(|f| f.at)
}

/// The longest pause between two frames after `t` (the last frame before
/// `t` counts as its start) and the frame that ended it: a viewer is back
/// "on a keyframe" when that frame is one.
pub fn outage_after(frames: &[Frame], t: Instant) -> Option<(Duration, Frame)> {
    let mut prev = frames.iter().rfind(|f| f.at < t);
    let mut best: Option<(Duration, Frame)> = None;
    for f in frames.iter().filter(|f| f.at >= t) {
        if let Some(p) = prev {
            let gap = f.at.duration_since(p.at);
            if best.is_none_or(|(g, _)| gap > g) {
                best = Some((gap, *f));
            }
        }
        prev = Some(f);
    }
    best
}

async fn watch_http(addr: SocketAddr, path: String, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        let r: anyhow::Result<()> = async {
            let tcp = connect(&addr.to_string()).await?;
            let mut s = Stream::send(tcp, &addr.to_string(), "GET", &path, &[], b"").await?;
            anyhow::ensure!(s.status == 200, "GET {path}: {}", s.status);
            let mut ts = LiveTs::default();
            while !stop.load(Ordering::Acquire) {
                let until = Instant::now() + Duration::from_millis(200);
                match s.next_until(until).await {
                    None => continue,
                    Some(Ok(Some(b))) => ts.push(&b, |k| seen.push(k)),
                    Some(Ok(None)) => anyhow::bail!("the stream ended"),
                    Some(Err(e)) => return Err(e),
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            *seen.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn watch_whep(url: String, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    let mut peers = 0u64;
    while !stop.load(Ordering::Acquire) {
        let r: anyhow::Result<()> = async {
            let mut c = WhepClient::connect(&url, IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
            peers += 1;
            if peers > 1 {
                seen.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            while !stop.load(Ordering::Acquire) {
                let until = Instant::now() + Duration::from_millis(200);
                match c.next_event(until).await? {
                    Some(WhepEvent::Video(f)) => seen.push(f.keyframe),
                    Some(WhepEvent::Closed) => anyhow::bail!("the server closed the peer"),
                    _ => {}
                }
            }
            let _ = c.delete().await;
            Ok(())
        }
        .await;
        if let Err(e) = r {
            *seen.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One fault and what every viewer made of it.
#[derive(Debug, Clone)]
pub struct Round {
    /// Fault → the server's restart count went up.
    pub restart_after: Duration,
    /// Per viewer: name, restart → the frame that ended its outage
    /// (`None`: no frame since the fault within the wait), and whether that
    /// frame was a keyframe.
    pub viewers: Vec<(String, Option<Duration>, bool)>,
}

impl Round {
    /// Every viewer back, each on a keyframe.
    pub fn all_back_on_keyframes(&self) -> bool {
        self.viewers.iter().all(|(_, d, k)| d.is_some() && *k)
    }

    pub fn worst(&self) -> Option<Duration> {
        self.viewers.iter().filter_map(|v| v.1).max()
    }
}

/// Inject one fault and measure: `restarts` reads the server's restart
/// count; waits at most `within` for the restart and for the viewers.
pub fn round(
    w: &Watchers,
    inject: impl FnOnce(),
    restarts: impl Fn() -> u64,
    within: Duration,
) -> Round {
    let r0 = restarts();
    let fault = Instant::now();
    inject();
    let mut restart = None;
    while fault.elapsed() < within {
        if restarts() > r0 {
            restart = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let restart = restart.unwrap_or_else(Instant::now);
    w.wait_keyframe_after(restart, within);
    // A frame's worth more so the outage's end is in every list.
    std::thread::sleep(Duration::from_millis(100));
    let viewers = w
        .all()
        .map(|(name, s)| {
            let frames = s.snapshot();
            match outage_after(&frames, fault) {
                Some((_, back)) => (
                    name,
                    Some(back.at.saturating_duration_since(restart)),
                    back.keyframe,
                ),
                None => (name, None, false),
            }
        })
        .collect();
    Round {
        restart_after: restart.duration_since(fault),
        viewers,
    }
}
