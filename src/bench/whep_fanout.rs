//! `pixelpass bench whep-fanout`: one 4 Mbit/s stream to N WebRTC peers
//! over loopback, through the real WHEP path (hub, supervisor, HTTP server,
//! WHEP endpoints, the one-socket str0m engine).
//!
//! Where the CPU is measured, and why: the server runs in this process,
//! pinned to one CPU (`--server-cpu`); the N peers are [`WhepClient`]s in a
//! child process (`bench whep-fanout-client`, the same binary) pinned to the
//! other CPU. So this process's CPU time (getrusage: every thread) is the
//! server's alone, kernel send path included, and the peers' decryption and
//! depacketization never compete with it. Per-thread time is printed too:
//! `whep-server` is the tokio worker that runs the engine (and the idle
//! HTTP server), `whep-replay` the producer.
//!
//! The producer is not the live encoder: encoding 720p on the server CPU
//! would dwarf what is measured. Instead a few seconds of the real pipeline's
//! RTP output (test source, 1280x720@30 at `--bitrate`, Opus) are recorded
//! first, cut to whole GOPs, and replayed in real time, lap after lap
//! (sequence numbers and timestamps continued). The replay cannot make
//! keyframes on demand, so peers start on the hub's cached GOP or the next
//! natural keyframe, as with an FFmpeg producer.
//!
//! Per N it prints:
//! - *Gbit/s*: bytes the peers received on their UDP sockets in the window
//!   (SRTP + SRTCP + STUN) × 8 ÷ window;
//! - *core/Gbit/s*: server CPU seconds per second ÷ that;
//! - *RSS/peer*: (server VmRSS with N peers streaming − VmRSS before they
//!   connected, after returning freed heap to the OS) ÷ N;
//! - *lost*: H.264 packets missing on the wire (sequence gaps, all peers),
//!   *NACKs* the peers sent, *gaps*: frames that were still incomplete;
//! - *frames/peer*: min / median video frames a peer assembled in the window.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::procstat::{self, CpuTimes};
use crate::client::{ClientStats, WhepClient, WhepEvent, WhepOptions};
use crate::egress::whep::{WebRtcArgs, Whep};
use crate::hub::{Hub, HubConfig, RtpPkt, Track};
use crate::pipeline::{self, GstProducer, PipelineConfig, RtpOutput};
use crate::server::{self, Limits, Registry, StreamEntry};
use crate::source::SourceKind;
use crate::supervisor::{BoxFuture, Policy, Producer, ProducerError, Run, RunHandle, Supervisor};

/// The goals from issue 2.
pub const TARGET_CORE_PER_GBPS: f64 = 0.5;
pub const TARGET_RSS_PER_PEER: f64 = 256.0 * 1024.0;

#[derive(clap::Args, Debug, Clone)]
pub struct WhepFanoutArgs {
    /// Peer counts to measure, one step each.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,200")]
    pub peers: Vec<usize>,
    /// Length of each measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds between "every peer has its first keyframe" and the window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Video bitrate of the recorded stream, kbit/s.
    #[arg(long, default_value_t = 4000)]
    pub bitrate: u32,
    /// Seconds of the real pipeline recorded for the replay (cut to whole GOPs).
    #[arg(long, default_value_t = 7)]
    pub record_seconds: u64,
    /// Replay a synthetic H.264/Opus packet stream (same packet sizes and
    /// rates, random payload) instead of recording the pipeline: no
    /// GStreamer in the process (e.g. under valgrind).
    #[arg(long)]
    pub synthetic: bool,
    /// Tokio worker threads of the server (all on the server CPU).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// CPU for the server (this process).
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// CPU for the peers' process.
    #[arg(long, default_value_t = 1)]
    pub client_cpu: usize,
    /// Peers connecting at the same time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The binary that runs the peers (default: this one). Needed under
    /// valgrind, where /proc/self/exe is valgrind itself.
    #[arg(long, value_name = "PATH")]
    pub client_exe: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct WhepFanoutClientArgs {
    /// The WHEP endpoint (http://127.0.0.1:PORT/TOKEN/whep); several
    /// (comma-separated or repeated): peer i joins the (i mod n)-th.
    #[arg(long, required = true, value_delimiter = ',')]
    pub url: Vec<String>,
    #[arg(long)]
    pub peers: usize,
    #[arg(long)]
    pub seconds: f64,
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// CPU to pin this process to (none: not pinned).
    #[arg(long)]
    pub cpu: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

// ─────────────────────────────── client ⇄ bench lines ───────────────────────────────

/// One JSON line from the peers' process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ClientLine {
    /// Every peer connected and has its first keyframe (or failed); the
    /// window starts after the warm-up.
    Ready {
        connected: usize,
        failed: usize,
        errors: Vec<String>,
        connect_s: f64,
    },
    /// The window started now.
    Window,
    Result {
        window_s: f64,
        client_cpu_s: f64,
        peers: Vec<PeerWindow>,
        closed_early: usize,
    },
}

/// What one peer got in the window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerWindow {
    /// Index of the peer's `--url`.
    #[serde(default)]
    pub url: usize,
    pub udp_bytes: u64,
    pub frames: u64,
    pub gaps: u64,
    pub nacks: u64,
    pub lost: u64,
    pub audio: u64,
}

impl PeerWindow {
    pub fn between(a: &ClientStats, b: &ClientStats) -> Self {
        Self {
            url: 0,
            udp_bytes: b.udp_bytes.saturating_sub(a.udp_bytes),
            frames: b.video_frames.saturating_sub(a.video_frames),
            gaps: b.gaps.saturating_sub(a.gaps),
            nacks: b.nacks_sent.saturating_sub(a.nacks_sent),
            lost: b.video_rtp_lost().saturating_sub(a.video_rtp_lost()),
            audio: b.audio_packets.saturating_sub(a.audio_packets),
        }
    }
}

// ─────────────────────────────────── the table ───────────────────────────────────

/// One measured step.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub peers: usize,
    pub connected: usize,
    pub window_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub udp_bytes: u64,
    pub rss_base: u64,
    pub rss_streaming: u64,
    pub lost: u64,
    pub nacks: u64,
    pub gaps: u64,
    pub frames_min: u64,
    pub frames_median: u64,
}

impl Row {
    pub fn cpu_per_s(&self) -> f64 {
        (self.cpu_user_s + self.cpu_sys_s) / self.window_s
    }

    pub fn gbps(&self) -> f64 {
        self.udp_bytes as f64 * 8.0 / self.window_s / 1e9
    }

    pub fn core_per_gbps(&self) -> Option<f64> {
        let g = self.gbps();
        (g > 0.0).then(|| self.cpu_per_s() / g)
    }

    /// Signed: the heap may shrink between steps.
    pub fn rss_per_peer(&self) -> f64 {
        (self.rss_streaming as f64 - self.rss_base as f64) / self.peers.max(1) as f64
    }

    /// Frames per second of the median peer.
    pub fn fps_median(&self) -> f64 {
        self.frames_median as f64 / self.window_s
    }
}

/// (min, median) of per-peer frame counts.
pub fn min_median(v: &[u64]) -> (u64, u64) {
    if v.is_empty() {
        return (0, 0);
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    (s[0], s[s.len() / 2])
}

pub fn table_header() -> String {
    format!(
        "{:>5} {:>9} {:>8} {:>6} {:>6} {:>7} {:>11} {:>12} {:>6} {:>6} {:>5} {:>16}",
        "peers",
        "connected",
        "cpu s/s",
        "user",
        "sys",
        "Gbit/s",
        "core/Gbit/s",
        "RSS/peer",
        "lost",
        "NACKs",
        "gaps",
        "frames/peer min/med"
    )
}

pub fn table_row(r: &Row) -> String {
    let core = r
        .core_per_gbps()
        .map_or_else(|| "-".to_owned(), |c| format!("{c:.3}"));
    format!(
        "{:>5} {:>9} {:>8.3} {:>6.3} {:>6.3} {:>7.3} {:>11} {:>8.1} KiB {:>6} {:>6} {:>5} {:>9} / {:<5}",
        r.peers,
        r.connected,
        r.cpu_per_s(),
        r.cpu_user_s / r.window_s,
        r.cpu_sys_s / r.window_s,
        r.gbps(),
        core,
        r.rss_per_peer() / 1024.0,
        r.lost,
        r.nacks,
        r.gaps,
        r.frames_min,
        r.frames_median,
    )
}

/// The verdict against the targets, for the step with the most peers.
pub fn verdict(rows: &[Row]) -> Option<String> {
    let r = rows.iter().max_by_key(|r| r.peers)?;
    let core = r.core_per_gbps();
    let ok = |b: bool| if b { "met" } else { "MISSED" };
    Some(format!(
        "targets at {} peers: {} core/Gbit/s ≤ {TARGET_CORE_PER_GBPS} → {}; RSS/peer {:.1} KiB ≤ {:.0} KiB → {}",
        r.peers,
        core.map_or_else(|| "-".to_owned(), |c| format!("{c:.3}")),
        ok(core.is_some_and(|c| c <= TARGET_CORE_PER_GBPS)),
        r.rss_per_peer() / 1024.0,
        TARGET_RSS_PER_PEER / 1024.0,
        ok(r.rss_per_peer() <= TARGET_RSS_PER_PEER),
    ))
}

// ─────────────────────────────── the recorded stream ───────────────────────────────

/// One recorded RTP packet, with its offset from the start of the lap.
#[derive(Debug, Clone)]
pub struct RecPkt {
    pub track: Track,
    pub offset: Duration,
    pub payload_type: u8,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Arc<[u8]>,
}

/// Whole GOPs of RTP, replayable in a loop.
#[derive(Debug, Clone)]
pub struct RtpSample {
    /// In publish order (both tracks).
    pub packets: Vec<RecPkt>,
    /// One lap's length.
    pub period: Duration,
    /// RTP timestamp advance per lap (video 90 kHz, audio 48 kHz).
    pub video_ts_lap: u32,
    pub audio_ts_lap: u32,
}

impl RtpSample {
    /// Cut `pkts` (as the hub published them) from the first keyframe start
    /// to the last one (exclusive): a loop of whole GOPs.
    pub fn from_recording(pkts: &[RtpPkt]) -> anyhow::Result<Self> {
        let keys: Vec<&RtpPkt> = pkts.iter().filter(|p| p.key).collect();
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
            bail!("the recording has no keyframe")
        };
        if keys.len() < 2 {
            bail!("the recording holds less than one whole GOP (record longer)");
        }
        let (t0, t1) = (first.at, last.at);
        let lap: Vec<&RtpPkt> = pkts.iter().filter(|p| p.at >= t0 && p.at < t1).collect();
        // The lap starts with the keyframe itself (audio published in the same instant goes after it).
        let start = lap.iter().position(|p| p.key).unwrap_or(0);
        let mut packets: Vec<RecPkt> = lap[start..]
            .iter()
            .chain(lap[..start].iter())
            .map(|p| RecPkt {
                track: if p.payload_type == first.payload_type {
                    Track::Video
                } else {
                    Track::Audio
                },
                offset: p.at.saturating_duration_since(t0),
                payload_type: p.payload_type,
                timestamp: p.timestamp,
                marker: p.marker,
                payload: p.payload.clone(),
            })
            .collect();
        packets.sort_by_key(|p| p.offset);
        let audio: Vec<u32> = packets
            .iter()
            .filter(|p| p.track == Track::Audio)
            .map(|p| p.timestamp)
            .collect();
        let audio_ts_lap = match (audio.first(), audio.last()) {
            (Some(a), Some(b)) if audio.len() > 1 => {
                let step = b.wrapping_sub(*a) / (audio.len() as u32 - 1);
                b.wrapping_sub(*a).wrapping_add(step)
            }
            _ => 0,
        };
        Ok(Self {
            packets,
            period: t1.duration_since(t0),
            video_ts_lap: last.timestamp.wrapping_sub(first.timestamp),
            audio_ts_lap,
        })
    }

    /// Three 2 s GOPs of H.264 as rtph264pay cuts it (SPS/PPS in a STAP-A
    /// before each IDR, FU-A fragments of at most `MTU - 12` bytes, marker on
    /// the last packet of each frame; the IDR 8× a P frame), 30 fps, averaging
    /// `bitrate_kbps`; plus 20 ms Opus packets at 96 kbit/s. Payload bytes are
    /// random: nothing decodes them.
    pub fn synthetic(bitrate_kbps: u32) -> Self {
        const FPS: u32 = 30;
        const GOP: u32 = 60;
        const GOPS: u32 = 3;
        const KEY_WEIGHT: u32 = 8;
        let max = crate::pipeline::rtp::MTU as usize - 12;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect()
        };
        let gop_bytes = u64::from(bitrate_kbps) * 1000 / 8 * u64::from(GOP / FPS);
        let p_bytes = (gop_bytes / u64::from(GOP - 1 + KEY_WEIGHT)) as usize;
        let mut packets = Vec::new();
        for f in 0..GOP * GOPS {
            let offset = Duration::from_nanos(u64::from(f) * 1_000_000_000 / u64::from(FPS));
            let ts = f * (90_000 / FPS);
            let key = f % GOP == 0;
            let video = |payload: Vec<u8>, marker: bool| RecPkt {
                track: Track::Video,
                offset,
                payload_type: 102,
                timestamp: ts,
                marker,
                payload: Arc::from(payload),
            };
            let (nal_type, size) = if key {
                (5u8, p_bytes * KEY_WEIGHT as usize)
            } else {
                (1u8, p_bytes)
            };
            if key {
                let stap = [
                    0x78, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 0, 4, 0x68, 0xce, 0x3c, 0x80,
                ];
                packets.push(video(stap.to_vec(), false));
            }
            let body = noise(size);
            let chunks: Vec<&[u8]> = body.chunks(max - 2).collect();
            for (i, c) in chunks.iter().enumerate() {
                let (first, last) = (i == 0, i + 1 == chunks.len());
                let mut p = vec![
                    0x60 | 28,
                    (u8::from(first) << 7) | (u8::from(last) << 6) | nal_type,
                ];
                p.extend_from_slice(c);
                packets.push(video(p, last));
            }
        }
        let audio_packets = GOP * GOPS * 50 / FPS;
        for a in 0..audio_packets {
            let mut p = vec![0xfc];
            p.extend(noise(239));
            packets.push(RecPkt {
                track: Track::Audio,
                offset: Duration::from_millis(20) * a,
                payload_type: 111,
                timestamp: a * 960,
                marker: false,
                payload: Arc::from(p),
            });
        }
        packets.sort_by_key(|p| p.offset);
        Self {
            packets,
            period: Duration::from_secs(u64::from(GOP * GOPS / FPS)),
            video_ts_lap: GOP * GOPS * (90_000 / FPS),
            audio_ts_lap: audio_packets * 960,
        }
    }

    pub fn bitrate(&self) -> f64 {
        let bytes: usize = self.packets.iter().map(|p| p.payload.len() + 12).sum();
        bytes as f64 * 8.0 / self.period.as_secs_f64().max(1e-9)
    }

    /// The RTP packet `p` of lap `lap`, with sequence number `seq`.
    pub fn packet(&self, p: &RecPkt, lap: u32, seq: u16) -> Vec<u8> {
        let ts_lap = match p.track {
            Track::Video => self.video_ts_lap,
            Track::Audio => self.audio_ts_lap,
        };
        let ts = p.timestamp.wrapping_add(ts_lap.wrapping_mul(lap));
        let ssrc: u32 = match p.track {
            Track::Video => 0x5049_5856,
            Track::Audio => 0x5049_5841,
        };
        let mut out = Vec::with_capacity(12 + p.payload.len());
        out.push(0x80);
        out.push((u8::from(p.marker) << 7) | (p.payload_type & 0x7f));
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(&ssrc.to_be_bytes());
        out.extend_from_slice(&p.payload);
        out
    }
}

/// Record `seconds` of the real pipeline's RTP output.
async fn record(bitrate: u32, seconds: u64) -> anyhow::Result<RtpSample> {
    pipeline::init()?;
    let cfg = PipelineConfig {
        source: SourceKind::Test,
        framerate: 30,
        bitrate_kbps: bitrate,
        width: Some(1280),
        height: Some(720),
        ..PipelineConfig::default()
    };
    let encoder = pipeline::preflight(&cfg)?;
    let producer = GstProducer::new(cfg, encoder).with_rtp(RtpOutput::default())?;
    let hub = Hub::new(HubConfig::default());
    let mut rx = hub.rtp_receivers();
    let run = producer
        .start(hub.clone())
        .await
        .map_err(|e| anyhow::anyhow!("the pipeline did not start: {e}"))?;
    let mut pkts = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let r = tokio::select! {
            r = rx.video.recv() => r,
            r = rx.audio.recv() => r,
            _ = tokio::time::sleep_until(until) => break,
        };
        match r {
            Ok(p) => pkts.push(p),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                bail!("the recorder fell {n} packets behind")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    run.handle.stop().await;
    eprintln!(
        "recorded {seconds} s of {encoder} RTP ({} packets)",
        pkts.len()
    );
    RtpSample::from_recording(&pkts)
}

/// Replays an [`RtpSample`] into the hub in real time (a [`Producer`]).
pub struct RtpReplay {
    sample: Arc<RtpSample>,
    late_us: Arc<AtomicU64>,
}

struct RtpReplayRun {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producer for RtpReplay {
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        let sample = self.sample.clone();
        let late = self.late_us.clone();
        Box::pin(async move {
            // No keyframes on demand: peers start on the cached GOP.
            hub.begin_run(None);
            let stop = Arc::new(AtomicBool::new(false));
            let (failures_tx, failures) = tokio::sync::mpsc::unbounded_channel();
            let flag = stop.clone();
            let thread = std::thread::Builder::new()
                .name("whep-replay".into())
                .spawn(move || {
                    replay(&hub, &sample, &flag, &late);
                    drop(failures_tx);
                })
                .map_err(|e| ProducerError::new(format!("cannot start the replay thread: {e}")))?;
            Ok(Run {
                encoder: "rtp-replay".into(),
                failures,
                handle: Box::new(RtpReplayRun {
                    stop,
                    thread: Some(thread),
                }),
            })
        })
    }
}

impl RunHandle for RtpReplayRun {
    fn stop(mut self: Box<Self>) -> BoxFuture<()> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take();
        Box::pin(async move {
            if let Some(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        })
    }
}

fn replay(hub: &Hub, sample: &RtpSample, stop: &AtomicBool, late_us: &AtomicU64) {
    let start = Instant::now();
    let (mut vseq, mut aseq) = (0u16, 0u16);
    for lap in 0u32.. {
        let lap_start = start + sample.period * lap;
        for p in &sample.packets {
            let due = lap_start + p.offset;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                if now >= due {
                    break;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
            }
            let now = Instant::now();
            late_us.fetch_max(
                now.saturating_duration_since(due).as_micros() as u64,
                Ordering::Relaxed,
            );
            let seq = match p.track {
                Track::Video => {
                    vseq = vseq.wrapping_add(1);
                    vseq
                }
                Track::Audio => {
                    aseq = aseq.wrapping_add(1);
                    aseq
                }
            };
            let _ = hub.publish_rtp(p.track, &sample.packet(p, lap, seq), now);
        }
    }
}

// ───────────────────────────────────── the server ─────────────────────────────────────

struct Server {
    rt: tokio::runtime::Runtime,
    sup: Supervisor,
    whep: Whep,
    url: String,
    stop: tokio::sync::watch::Sender<bool>,
    late_us: Arc<AtomicU64>,
}

impl Server {
    fn start(args: &WhepFanoutArgs, max_peers: usize) -> anyhow::Result<Self> {
        if args.workers == 0 {
            bail!("--workers must be at least 1");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .thread_name("whep-server")
            .enable_all()
            .build()?;
        let sample = if args.synthetic {
            RtpSample::synthetic(args.bitrate)
        } else {
            rt.block_on(record(args.bitrate, args.record_seconds))?
        };
        eprintln!(
            "replaying {:.1} s laps at {:.2} Mbit/s (RTP incl. headers, video + audio)",
            sample.period.as_secs_f64(),
            sample.bitrate() / 1e6
        );
        let late_us = Arc::new(AtomicU64::new(0));
        let producer = RtpReplay {
            sample: Arc::new(sample),
            late_us: late_us.clone(),
        };
        let token = crate::token::generate()?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (sup, whep, addr) = rt.block_on(async {
            let webrtc = WebRtcArgs {
                webrtc_udp: "127.0.0.1:0".parse()?,
                ..WebRtcArgs::default()
            };
            let whep = Whep::start(&webrtc).await?;
            let policy = Policy {
                max_viewers: max_peers,
                // The producer stays up between steps: every step sees the same warm hub.
                linger: Duration::from_secs(24 * 3600),
                ..Policy::default()
            };
            let sup = Supervisor::spawn(policy, Hub::new(HubConfig::default()), Arc::new(producer));
            let registry = Registry::new();
            registry.insert(StreamEntry::new("bench", token.clone(), sup.clone()));
            let listener = server::bind("127.0.0.1:0".parse()?).await?;
            let addr = listener.local_addr()?;
            tokio::spawn(server::serve(
                listener,
                server::router_with(registry, Some(whep.clone())),
                Limits::default(),
                stop_rx,
            ));
            anyhow::Ok((sup, whep, addr))
        })?;
        Ok(Self {
            rt,
            sup,
            whep,
            url: format!("http://{addr}/{token}/whep"),
            stop,
            late_us,
        })
    }

    /// Start the producer, so every step's RSS baseline holds a warm hub.
    fn warm_up(&self) -> anyhow::Result<()> {
        let _guard = self.rt.enter();
        let lease = self.sup.acquire().map_err(|e| anyhow::anyhow!("{e}"))?;
        self.rt
            .block_on(lease.ready(Duration::from_secs(30)))
            .context("the replay did not start")?;
        std::thread::sleep(Duration::from_secs(3));
        drop(lease);
        Ok(())
    }

    fn wait_idle(&self, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        loop {
            let n = self.whep.peers(None);
            if n == 0 || Instant::now() >= until {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(self) {
        let _ = self.stop.send(true);
        let (whep, sup) = (self.whep.clone(), self.sup.clone());
        self.rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(3), whep.shutdown()).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), sup.shutdown()).await;
        });
        self.rt.shutdown_timeout(Duration::from_secs(2));
    }
}

struct Snap {
    at: Instant,
    cpu: CpuTimes,
    threads: BTreeMap<String, u64>,
    rss: u64,
}

impl Snap {
    fn take() -> anyhow::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            cpu: procstat::process_cpu()?,
            threads: procstat::thread_ticks(),
            rss: procstat::rss_bytes()?,
        })
    }
}

pub(crate) fn line_reader(child: &mut Child) -> anyhow::Result<mpsc::Receiver<String>> {
    let stdout = child
        .stdout
        .take()
        .context("the peers' process has no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("bench-peers-io".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

pub(crate) fn next_line(
    rx: &mpsc::Receiver<String>,
    timeout: Duration,
) -> anyhow::Result<ClientLine> {
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("the peers' process said nothing for {timeout:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the peers' process exited early"),
        };
        match serde_json::from_str::<ClientLine>(&line) {
            Ok(l) => return Ok(l),
            Err(_) => eprintln!("bench: peers: {line}"),
        }
    }
}

fn step(server: &Server, args: &WhepFanoutArgs, n: usize) -> anyhow::Result<(Row, String)> {
    let left = server.wait_idle(Duration::from_secs(20));
    if left > 0 {
        eprintln!("bench: {left} peers of the previous step are still there");
    }
    std::thread::sleep(Duration::from_millis(300));
    procstat::trim_heap();
    let rss_base = procstat::rss_bytes()?;
    let exe = if let Some(exe) = &args.client_exe {
        exe.clone()
    } else if std::path::Path::new("/proc/self/exe").exists() {
        std::path::PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe().context("cannot find this executable to start the peers")?
    };
    let mut child = Command::new(exe)
        .args([
            "bench",
            "whep-fanout-client",
            "--url",
            &server.url,
            "--peers",
            &n.to_string(),
        ])
        .args([
            "--seconds",
            &args.seconds.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .args([
            "--cpu",
            &args.client_cpu.to_string(),
            "--concurrency",
            &args.concurrency.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the peers' process")?;
    let r = measure(server, args, n, &mut child);
    if r.is_err() {
        // Only our own child, by its PID.
        let _ = child.kill();
    }
    let status = child.wait();
    let (row, detail) = r?;
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => bail!("the peers' process exited with {s}"),
        Err(e) => bail!("cannot reap the peers' process: {e}"),
    }
    Ok((Row { rss_base, ..row }, detail))
}

fn measure(
    server: &Server,
    args: &WhepFanoutArgs,
    n: usize,
    child: &mut Child,
) -> anyhow::Result<(Row, String)> {
    let lines = line_reader(child)?;
    let ClientLine::Ready {
        connected,
        failed,
        errors,
        connect_s,
    } = next_line(&lines, Duration::from_secs(120))?
    else {
        bail!("expected the ready line first");
    };
    if failed > 0 {
        eprintln!("bench: {failed} of {n} peers failed: {}", errors.join("; "));
    }
    let ClientLine::Window = next_line(
        &lines,
        Duration::from_secs_f64(args.warmup) + Duration::from_secs(10),
    )?
    else {
        bail!("expected the window line");
    };
    server.late_us.store(0, Ordering::Relaxed);
    let s0 = Snap::take()?;
    let ClientLine::Result {
        window_s,
        client_cpu_s,
        peers,
        closed_early,
    } = next_line(
        &lines,
        Duration::from_secs_f64(args.seconds) + Duration::from_secs(20),
    )?
    else {
        bail!("expected the result line");
    };
    let s1 = Snap::take()?;
    let wall = s1.at.duration_since(s0.at).as_secs_f64();
    let cpu = s1.cpu.since(&s0.cpu);
    let udp: u64 = peers.iter().map(|p| p.udp_bytes).sum();
    let frames: Vec<u64> = peers.iter().map(|p| p.frames).collect();
    let (frames_min, frames_median) = min_median(&frames);
    let row = Row {
        peers: n,
        connected,
        window_s: wall,
        cpu_user_s: cpu.user.as_secs_f64(),
        cpu_sys_s: cpu.system.as_secs_f64(),
        // Counted over the peers' window, rated over the server's.
        udp_bytes: (udp as f64 * wall / window_s.max(1e-9)) as u64,
        rss_base: 0,
        rss_streaming: s0.rss.max(s1.rss),
        lost: peers.iter().map(|p| p.lost).sum(),
        nacks: peers.iter().map(|p| p.nacks).sum(),
        gaps: peers.iter().map(|p| p.gaps).sum(),
        frames_min,
        frames_median,
    };
    let hz = procstat::clock_ticks_per_sec() as f64;
    let mut threads: Vec<(String, f64)> = s1
        .threads
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                t.saturating_sub(s0.threads.get(name).copied().unwrap_or(0)) as f64 / hz / wall,
            )
        })
        .filter(|(_, v)| *v >= 0.005)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    let threads: Vec<String> = threads.iter().map(|(n, v)| format!("{n} {v:.2}")).collect();
    let audio: u64 = peers.iter().map(|p| p.audio).sum();
    let detail = format!(
        "      connect {connect_s:.1} s; server threads s/s: {}; peers' cpu {:.2} s/s; audio pkts/peer/s {:.1}; replay late max {:.1} ms{}",
        threads.join(", "),
        client_cpu_s / window_s.max(1e-9),
        audio as f64 / peers.len().max(1) as f64 / window_s.max(1e-9),
        server.late_us.load(Ordering::Relaxed) as f64 / 1000.0,
        if closed_early > 0 { format!("; {closed_early} peers closed early") } else { String::new() },
    );
    Ok((row, detail))
}

pub fn run(args: WhepFanoutArgs) -> anyhow::Result<ExitCode> {
    if args.peers.is_empty() || args.peers.contains(&0) {
        bail!("--peers needs counts above 0");
    }
    if !(args.seconds > 0.0 && args.warmup >= 0.0) {
        bail!("--seconds must be positive and --warmup not negative");
    }
    let cpus = procstat::online_cpus();
    if args.server_cpu == args.client_cpu || args.server_cpu.max(args.client_cpu) >= cpus.max(1) {
        eprintln!(
            "bench: CPUs {} and {} are not two distinct CPUs of {cpus}: not pinning",
            args.server_cpu, args.client_cpu
        );
    } else if let Err(e) = procstat::pin_to_cpu(args.server_cpu) {
        eprintln!(
            "bench: cannot pin the server to CPU {}: {e}",
            args.server_cpu
        );
    }
    let _ = procstat::raise_nofile_limit();
    let max = *args.peers.iter().max().unwrap_or(&1);
    let server = Server::start(&args, max + 8)?;
    server.warm_up()?;
    println!("{}", table_header());
    let mut rows = Vec::new();
    for &n in &args.peers {
        match step(&server, &args, n) {
            Ok((row, detail)) => {
                println!("{}", table_row(&row));
                println!("{detail}");
                let _ = std::io::stdout().flush();
                rows.push(row);
            }
            Err(e) => {
                eprintln!("bench: step with {n} peers failed: {e:#}");
                break;
            }
        }
    }
    server.stop();
    if let Some(v) = verdict(&rows) {
        println!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}

// ─────────────────────────────────── the peers ───────────────────────────────────

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Shared between the peer tasks and the conductor of the child process.
struct Shared {
    /// 0 warm-up, 1 window, 2 window over, 3 quit.
    phase: tokio::sync::watch::Sender<u8>,
    /// Per peer: stats at the window start and end.
    snaps: Mutex<Vec<[Option<ClientStats>; 2]>>,
    closed_early: AtomicU64,
}

fn emit(line: &ClientLine) {
    if let Ok(s) = serde_json::to_string(line) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    }
}

pub fn run_client(args: WhepFanoutClientArgs) -> anyhow::Result<ExitCode> {
    if args.url.is_empty() {
        bail!("--url is required");
    }
    if let Some(cpu) = args.cpu {
        if let Err(e) = procstat::pin_to_cpu(cpu) {
            eprintln!("peers: cannot pin to CPU {cpu}: {e}");
        }
    }
    let _ = procstat::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(client_main(args));
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

async fn client_main(args: WhepFanoutClientArgs) -> anyhow::Result<ExitCode> {
    let n = args.peers;
    let (phase, _) = tokio::sync::watch::channel(0u8);
    let shared = Arc::new(Shared {
        phase,
        snaps: Mutex::new(vec![[None, None]; n]),
        closed_early: AtomicU64::new(0),
    });
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (url, shared, sem, ready) = (
            args.url[i % args.url.len()].clone(),
            shared.clone(),
            sem.clone(),
            ready_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            peer(i, url, shared, sem, ready).await
        }));
    }
    drop(ready_tx);
    let (mut connected, mut errors) = (0usize, Vec::new());
    while let Some(r) = ready_rx.recv().await {
        match r {
            Ok(()) => connected += 1,
            Err(e) => errors.push(e),
        }
    }
    let failed = errors.len();
    errors.truncate(5);
    emit(&ClientLine::Ready {
        connected,
        failed,
        errors,
        connect_s: t0.elapsed().as_secs_f64(),
    });
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;

    let cpu0 = procstat::process_cpu()?;
    let w0 = Instant::now();
    shared.phase.send_replace(1);
    emit(&ClientLine::Window);
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    shared.phase.send_replace(2);
    let window_s = w0.elapsed().as_secs_f64();
    let cpu = procstat::process_cpu()?.since(&cpu0);
    // Every live peer records its end-of-window stats within a few ms.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let done = {
            let snaps = shared.snaps.lock().unwrap_or_else(|e| e.into_inner());
            snaps
                .iter()
                .filter(|s| s[0].is_some() && s[1].is_none())
                .count()
                == 0
        };
        if done || Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let peers: Vec<PeerWindow> = {
        let snaps = shared.snaps.lock().unwrap_or_else(|e| e.into_inner());
        let url = |i: usize| i % args.url.len();
        snaps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                [Some(a), Some(b)] => Some(PeerWindow {
                    url: url(i),
                    ..PeerWindow::between(a, b)
                }),
                [Some(_), None] => Some(PeerWindow {
                    url: url(i),
                    ..PeerWindow::default()
                }),
                _ => None,
            })
            .collect()
    };
    emit(&ClientLine::Result {
        window_s,
        client_cpu_s: cpu.total().as_secs_f64(),
        peers,
        closed_early: shared.closed_early.load(Ordering::Relaxed) as usize,
    });
    shared.phase.send_replace(3);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// One peer: connect (a few at a time), wait for the first keyframe, then
/// keep receiving; record stats at the window's edges; DELETE at the end.
async fn peer(
    i: usize,
    url: String,
    shared: Arc<Shared>,
    sem: Arc<tokio::sync::Semaphore>,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
) {
    let connect = async {
        // A few handshakes at a time; the wait for the first keyframe (up
        // to a GOP: the replay makes none on demand) holds no permit.
        let permit = sem.acquire().await.map_err(|e| e.to_string())?;
        let mut c = WhepClient::connect_with(&url, LOOPBACK, WhepOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut permit = Some(permit);
        loop {
            match c.next_event(deadline).await.map_err(|e| e.to_string())? {
                None => return Err("no keyframe within 30 s".to_owned()),
                Some(WhepEvent::Connected) => drop(permit.take()),
                Some(WhepEvent::Video(f)) if f.keyframe => return Ok(c),
                Some(WhepEvent::Closed) => return Err("closed by the server".to_owned()),
                Some(_) => {}
            }
        }
    };
    let mut c = match connect.await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("peer {i}: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let mut phase = shared.phase.subscribe();
    let mut seen = 0u8;
    loop {
        let now_phase = *phase.borrow_and_update();
        if now_phase != seen {
            if (1..=2).contains(&now_phase) {
                let mut snaps = shared.snaps.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(slot) = snaps.get_mut(i) {
                    let k = usize::from(now_phase - 1);
                    if k == 1 && slot[0].is_none() {
                        // Closed before the window: nothing to report.
                    } else {
                        slot[k] = Some(c.stats());
                    }
                }
            }
            seen = now_phase;
            if now_phase >= 3 {
                break;
            }
        }
        match c
            .next_event(Instant::now() + Duration::from_millis(50))
            .await
        {
            Ok(Some(WhepEvent::Closed)) | Err(_) => {
                shared.closed_early.fetch_add(1, Ordering::Relaxed);
                // Its window ends here.
                let mut snaps = shared.snaps.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(slot) = snaps.get_mut(i) {
                    if slot[0].is_some() && slot[1].is_none() {
                        slot[1] = Some(c.stats());
                    }
                }
                return;
            }
            Ok(_) => {}
        }
    }
    let _ = c.delete().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(peers: usize, cpu: f64, bytes: u64, base: u64, streaming: u64) -> Row {
        Row {
            peers,
            connected: peers,
            window_s: 10.0,
            cpu_user_s: cpu * 0.5,
            cpu_sys_s: cpu * 0.5,
            udp_bytes: bytes,
            rss_base: base,
            rss_streaming: streaming,
            lost: 0,
            nacks: 0,
            gaps: 0,
            frames_min: 299,
            frames_median: 300,
        }
    }

    #[test]
    fn rates_and_verdict() {
        // 200 peers × 4.1 Mbit/s for 10 s; 3 CPU seconds.
        let r = row(
            200,
            3.0,
            200 * 4_100_000 / 8 * 10,
            100 << 20,
            (100 << 20) + 200 * 100 * 1024,
        );
        assert!((r.gbps() - 0.82).abs() < 1e-9);
        assert!((r.cpu_per_s() - 0.3).abs() < 1e-9);
        assert!((r.core_per_gbps().unwrap() - 0.3 / 0.82).abs() < 1e-9);
        assert!((r.rss_per_peer() - 100.0 * 1024.0).abs() < 1e-6);
        assert!((r.fps_median() - 30.0).abs() < 1e-9);
        let v = verdict(&[row(1, 0.1, 0, 0, 0), r.clone()]).unwrap();
        assert!(
            v.starts_with("targets at 200 peers")
                && v.contains("→ met; RSS/peer 100.0 KiB ≤ 256 KiB → met"),
            "{v}"
        );
        let bad = Row {
            cpu_user_s: 5.0,
            cpu_sys_s: 5.0,
            ..r
        };
        assert!(verdict(&[bad]).unwrap().contains("→ MISSED; RSS"));
        assert_eq!(row(1, 1.0, 0, 0, 0).core_per_gbps(), None);
        assert!(
            row(2, 0.1, 0, 1000, 0).rss_per_peer() < 0.0,
            "a shrinking heap reads negative, not wrapped"
        );
    }

    #[test]
    fn the_table_has_one_column_per_header() {
        let r = row(50, 1.0, 1 << 30, 0, 1 << 20);
        let cells = |s: &str| s.split_whitespace().count();
        // Two headers are two words ("cpu s/s", "frames/peer min/med"); in a
        // row "RSS/peer" is "<n> KiB" and the frames are "<a> / <b>".
        assert_eq!(
            cells(&table_header()) - 2,
            cells(&table_row(&r)) - 3,
            "12 columns"
        );
        assert_eq!(min_median(&[5, 1, 9, 3]), (1, 5));
        assert_eq!(min_median(&[]), (0, 0));
    }

    #[test]
    fn window_deltas_per_peer() {
        let a = ClientStats {
            udp_bytes: 100,
            video_frames: 3,
            video_rtp_expected: 10,
            video_rtp_received: 10,
            ..ClientStats::default()
        };
        let b = ClientStats {
            udp_bytes: 600,
            video_frames: 33,
            video_rtp_expected: 50,
            video_rtp_received: 48,
            nacks_sent: 2,
            ..ClientStats::default()
        };
        let w = PeerWindow::between(&a, &b);
        assert_eq!((w.udp_bytes, w.frames, w.lost, w.nacks), (500, 30, 2, 2));
        let line = ClientLine::Result {
            window_s: 1.0,
            client_cpu_s: 0.5,
            peers: vec![w],
            closed_early: 0,
        };
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(serde_json::from_str::<ClientLine>(&json).unwrap(), line);
    }

    fn rec(key: bool, pt: u8, ts: u32, at: Instant) -> RtpPkt {
        RtpPkt {
            payload: Arc::from(&[0u8; 100][..]),
            payload_type: pt,
            sequence: 0,
            timestamp: ts,
            marker: false,
            key,
            at,
            epoch: 1,
            index: 0,
        }
    }

    #[test]
    fn the_synthetic_stream_has_the_bitrate_and_shape_of_the_real_one() {
        let s = RtpSample::synthetic(4000);
        assert_eq!(s.period, Duration::from_secs(6));
        let video: Vec<&RecPkt> = s
            .packets
            .iter()
            .filter(|p| p.track == Track::Video)
            .collect();
        let bytes: usize = video.iter().map(|p| p.payload.len()).sum();
        let kbps = bytes as f64 * 8.0 / 6.0 / 1000.0;
        assert!((3900.0..4100.0).contains(&kbps), "{kbps}");
        assert!(video.iter().all(|p| p.payload.len() <= 1188));
        assert_eq!(
            video.iter().filter(|p| p.marker).count(),
            180,
            "one marker per frame"
        );
        assert!(
            crate::rtp::h264_starts_keyframe(&video[0].payload),
            "starts with SPS/PPS"
        );
        assert_eq!(
            s.packets.iter().filter(|p| p.track == Track::Audio).count(),
            300
        );
        assert_eq!((s.video_ts_lap, s.audio_ts_lap), (540_000, 288_000));
    }

    #[test]
    fn a_recording_is_cut_to_whole_gops_and_laps_continue_the_timestamps() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let pkts = vec![
            rec(false, 102, 0, ms(0)), // before the first keyframe: cut
            rec(false, 111, 0, ms(5)),
            rec(true, 102, 9000, ms(100)),
            rec(false, 111, 4800, ms(100)),
            rec(false, 102, 12000, ms(133)),
            rec(false, 111, 5760, ms(120)),
            rec(true, 102, 189_000, ms(2100)), // the next GOP: the lap ends before it
            rec(false, 111, 100_800, ms(2105)),
        ];
        let s = RtpSample::from_recording(&pkts).unwrap();
        assert_eq!(s.period, Duration::from_millis(2000));
        assert_eq!(s.packets.len(), 4);
        assert_eq!(
            (s.packets[0].track, s.packets[0].timestamp),
            (Track::Video, 9000),
            "the lap starts on the keyframe"
        );
        assert_eq!(s.video_ts_lap, 180_000);
        assert_eq!(s.audio_ts_lap, 960 + 960);
        let p = s.packet(&s.packets[0], 2, 7);
        assert_eq!(p.len(), 12 + 100);
        assert_eq!(
            (p[0], p[1], u16::from_be_bytes([p[2], p[3]])),
            (0x80, 102, 7)
        );
        assert_eq!(
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            9000 + 2 * 180_000
        );
        assert!(
            RtpSample::from_recording(&pkts[..3]).is_err(),
            "one keyframe is not a whole GOP"
        );
    }
}
