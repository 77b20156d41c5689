//! `pixelpass bench serve`: the restream server under load, as deployed.
//!
//! `pixelpass serve --json` (this binary) runs as a child process on
//! loopback; the bench creates `--streams` FFmpeg streams through its JSON
//! API (test pattern + sine, WebRTC only: `http_ts=false`), starts them one
//! after the other, then brings every stream to `--viewers` WHEP peers and
//! measures a window of `--seconds`.
//!
//! - *Join*: per stream, from just before `PUT …/command {"command":"start"}`
//!   to the first complete IDR access unit one [`WhepClient`] (in this
//!   process, POSTing as soon as the PUT is answered) depacketized: the first
//!   WHEP-playable keyframe. Streams start one at a time, so a time holds no
//!   queueing behind the other streams' starts (the encoders already running
//!   do share the CPUs with it).
//! - *Load*: the peers run in a child process (`bench whep-fanout-client`
//!   with one `--url` per stream), so their CPU is not the server's. Nothing
//!   is pinned: 10 encoders, the server and the peers share the 2 CPUs.
//! - *Server CPU*: utime + stime of the `serve` PID only (/proc/PID/stat:
//!   all its threads; the FFmpeg children are separate processes and are
//!   NOT counted; their CPU is printed apart, from their own /proc/PID/stat).
//! - *Delivered*: bytes the peers received on their UDP sockets (SRTP +
//!   SRTCP + STUN) in the window; the server's `bytes_out.whep` (RTP payload
//!   handed to the WebRTC engine, before headers and SRTP) is shown next to it.
//! - *RSS*: VmRSS of the `serve` PID before any stream, with the streams
//!   running and no peer, and with every peer streaming; RSS/peer is the
//!   last difference ÷ peers.
//!
//! At the end the server gets SIGTERM (SIGKILL after 5 s) and every FFmpeg
//! PID seen in the reports is checked: none may survive it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::join::percentile;
use super::procstat;
use super::whep_fanout::{self, min_median, ClientLine, PeerWindow};
use crate::client::http::{self, Url};
use crate::client::{WhepClient, WhepEvent};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const API_TOKEN: &str = "bench-serve-api-token";

#[derive(clap::Args, Debug, Clone)]
pub struct ServeBenchArgs {
    /// FFmpeg streams (test pattern + sine each).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub streams: u32,
    /// WHEP peers per stream during the measurement.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub viewers: u32,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Seconds between "every peer has its first keyframe" and the window.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Picture size of the test pattern, WxH.
    #[arg(long, default_value = "640x360", value_parser = parse_size)]
    pub size: (u32, u32),
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub fps: u32,
    /// Video bitrate, kbit/s.
    #[arg(long, default_value_t = 800)]
    pub bitrate: u32,
    /// x264 preset (`video_options = ["-preset", …]`).
    #[arg(long, default_value = "ultrafast")]
    pub preset: String,
    #[arg(long, default_value_t = 2.0)]
    pub keyframe_interval: f64,
    /// Peers connecting at the same time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// A stream that is not running, or has no keyframe, after this many seconds fails.
    #[arg(long, default_value_t = 20)]
    pub join_timeout_s: u64,
    /// Seconds measured with the streams running and no peer (server CPU of the ingest alone).
    #[arg(long, default_value_t = 5.0)]
    pub idle_seconds: f64,
}

/// `640x360` → (640, 360): even sides (4:2:0) from 16 to 7680.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?}: expected WxH, e.g. 640x360"))?;
    let side = |v: &str| -> Result<u32, String> {
        let n: u32 = v
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {v:?} is not a number"))?;
        if !(16..=7680).contains(&n) || !n.is_multiple_of(2) {
            return Err(format!("{s:?}: sides must be even, 16..=7680"));
        }
        Ok(n)
    };
    Ok((side(w)?, side(h)?))
}

/// The API body creating stream `i`.
pub fn stream_config(i: u32, a: &ServeBenchArgs) -> serde_json::Value {
    let (w, h) = a.size;
    serde_json::json!({
        "id": stream_id(i),
        "token": stream_token(i),
        "input": [
            "-re", "-f", "lavfi", "-i", format!("testsrc2=size={w}x{h}:rate={}", a.fps),
            "-f", "lavfi", "-i", "sine=frequency=440",
        ],
        "autostart": false,
        "http_ts": false,
        "video_bitrate_kbps": a.bitrate,
        "keyframe_interval_seconds": a.keyframe_interval,
        "video_options": ["-preset", a.preset],
        "max_viewers": (a.viewers + 8).max(1000),
    })
}

fn stream_id(i: u32) -> String {
    format!("s{i}")
}

fn stream_token(i: u32) -> String {
    format!("bench-token-s{i}")
}

// ─────────────────────────────────── numbers ───────────────────────────────────

/// min / p50 / max (nearest rank) of some durations; `None` when empty.
pub fn spread(values: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    let mut v = values.to_vec();
    v.sort();
    Some((*v.first()?, percentile(&v, 50.0)?, *v.last()?))
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), ms)
}

/// The whole-server numbers of the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub peers: usize,
    pub connected: usize,
    pub window_s: f64,
    /// `serve` PID only, seconds.
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// Server CPU s/s with the streams running and no peer.
    pub idle_cpu_per_s: Option<f64>,
    /// Received by the peers on their UDP sockets.
    pub udp_bytes: u64,
    /// The server's `bytes_out.whep` delta (RTP payload).
    pub payload_bytes: u64,
    pub rss_base: u64,
    pub rss_streams: u64,
    pub rss_peers: u64,
    pub lost: u64,
    pub nacks: u64,
    pub gaps: u64,
}

impl Totals {
    pub fn cpu_per_s(&self) -> f64 {
        (self.cpu_user_s + self.cpu_sys_s) / self.window_s.max(1e-9)
    }

    pub fn gbps(&self) -> f64 {
        self.udp_bytes as f64 * 8.0 / self.window_s.max(1e-9) / 1e9
    }

    pub fn payload_gbps(&self) -> f64 {
        self.payload_bytes as f64 * 8.0 / self.window_s.max(1e-9) / 1e9
    }

    pub fn core_per_gbps(&self) -> Option<f64> {
        let g = self.gbps();
        (g > 0.0).then(|| self.cpu_per_s() / g)
    }

    /// Server CPU the peers added (over the no-peer ingest) per Gbit/s.
    pub fn marginal_core_per_gbps(&self) -> Option<f64> {
        let g = self.gbps();
        let idle = self.idle_cpu_per_s?;
        (g > 0.0).then(|| (self.cpu_per_s() - idle) / g)
    }

    /// Signed: the heap may shrink.
    pub fn rss_per_peer(&self) -> f64 {
        (self.rss_peers as f64 - self.rss_streams as f64) / self.peers.max(1) as f64
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
}

pub fn totals_header() -> String {
    format!(
        "{:>5} {:>9} {:>8} {:>6} {:>6} {:>7} {:>11} {:>24} {:>10} {:>6} {:>6} {:>5}",
        "peers",
        "connected",
        "cpu s/s",
        "user",
        "sys",
        "Gbit/s",
        "core/Gbit/s",
        "RSS MiB base/strm/peers",
        "RSS/peer",
        "lost",
        "NACKs",
        "gaps"
    )
}

pub fn totals_row(t: &Totals) -> String {
    let rss = format!(
        "{:.1}/{:.1}/{:.1}",
        mib(t.rss_base),
        mib(t.rss_streams),
        mib(t.rss_peers)
    );
    format!(
        "{:>5} {:>9} {:>8.3} {:>6.3} {:>6.3} {:>7.3} {:>11} {:>24} {:>6.1} KiB {:>6} {:>6} {:>5}",
        t.peers,
        t.connected,
        t.cpu_per_s(),
        t.cpu_user_s / t.window_s.max(1e-9),
        t.cpu_sys_s / t.window_s.max(1e-9),
        t.gbps(),
        fmt_opt(t.core_per_gbps(), 3),
        rss,
        t.rss_per_peer() / 1024.0,
        t.lost,
        t.nacks,
        t.gaps,
    )
}

/// One stream's line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamRow {
    pub id: String,
    /// Command start → first WHEP keyframe (None: none came).
    pub join: Option<Duration>,
    pub fps: f64,
    pub speed: f64,
    /// The stream's FFmpeg, CPU s/s in the window.
    pub ffmpeg_cpu: Option<f64>,
    pub peers: usize,
    /// Server RTP payload out, Mbit/s.
    pub out_mbps: f64,
    /// RTP from FFmpeg lost on the way in (window).
    pub rtp_in_lost: u64,
    pub silent_peers: usize,
    pub frames_min: u64,
    pub frames_median: u64,
    pub restarts: u64,
}

pub fn stream_header() -> String {
    format!(
        "{:<6} {:>7} {:>6} {:>6} {:>10} {:>5} {:>9} {:>8} {:>9} {:>16} {:>8}",
        "stream",
        "join ms",
        "fps",
        "speed",
        "ffmpeg s/s",
        "peers",
        "out Mb/s",
        "RTP lost",
        "no frames",
        "frames/peer min/med",
        "restarts"
    )
}

pub fn stream_row(r: &StreamRow) -> String {
    format!(
        "{:<6} {:>7} {:>6.1} {:>6.2} {:>10} {:>5} {:>9.2} {:>8} {:>9} {:>9} / {:<6} {:>8}",
        r.id,
        opt_ms(r.join),
        r.fps,
        r.speed,
        fmt_opt(r.ffmpeg_cpu, 3),
        r.peers,
        r.out_mbps,
        r.rtp_in_lost,
        r.silent_peers,
        r.frames_min,
        r.frames_median,
        r.restarts,
    )
}

// ─────────────────────────────────── /proc of other PIDs ───────────────────────────────────

/// utime + stime of a whole process (every thread), clock ticks; and its state letter.
fn pid_ticks(pid: u32) -> Option<(u64, u64, String, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let s = procstat::parse_stat(&text)?;
    let state = text[text.rfind(')')? + 1..].trim_start().chars().next()?;
    Some((s.utime_ticks, s.stime_ticks, s.comm, state))
}

fn pid_rss(pid: u32) -> Option<u64> {
    procstat::parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn pid_thread_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(s) = procstat::parse_stat(&text) {
            *out.entry(s.comm).or_insert(0) += s.utime_ticks + s.stime_ticks;
        }
    }
    out
}

/// Busy and idle ticks of every CPU together.
fn machine_cpu() -> (u64, u64) {
    (0..procstat::online_cpus())
        .filter_map(procstat::cpu_line)
        .fold((0, 0), |(b, i), l| (b + l.busy, i + l.idle))
}

// ─────────────────────────────────── the server ───────────────────────────────────

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Report {
    state: String,
    pid: Option<u32>,
    restarts: u64,
    last_error: Option<String>,
    viewers: ReportViewers,
    bytes_out: ReportBytes,
    rtp: ReportRtp,
    progress: Option<ReportProgress>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
struct ReportViewers {
    whep: usize,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
struct ReportBytes {
    whep: u64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
struct ReportRtp {
    lost: u64,
    refused: u64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
struct ReportProgress {
    fps: f64,
    speed: f64,
}

#[derive(Deserialize)]
struct Banner {
    listen: String,
}

struct ServeChild {
    child: Option<Child>,
    pid: u32,
    base: String,
    log: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl ServeChild {
    fn start(exe: &std::path::Path) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let log =
            std::env::temp_dir().join(format!("pixelpass-bench-serve-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--json",
                "--listen",
                "127.0.0.1:0",
                "--webrtc-udp",
                "127.0.0.1:0",
            ])
            .args(["--api-token", API_TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("cannot start `pixelpass serve`")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("bench-serve-out".into())
            .spawn(move || {
                // The banner first; whatever follows is drained.
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            })?;
        let mut me = Self {
            child: Some(child),
            pid,
            base: String::new(),
            log,
            rt,
        };
        let line = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(l) => l,
            Err(_) => bail!(
                "`pixelpass serve` printed no banner within 15 s (log: {})",
                me.log.display()
            ),
        };
        let banner: Banner = serde_json::from_str(&line)
            .with_context(|| format!("`pixelpass serve --json` printed {line:?}"))?;
        me.base = format!("http://{}", banner.listen);
        Ok(me)
    }

    fn api(&self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        let url = Url::parse(&format!("{}/api/v1{path}", self.base)).map_err(anyhow::Error::msg)?;
        let auth = format!("Bearer {API_TOKEN}");
        let r = self.rt.block_on(http::request(
            &url,
            method,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
            Duration::from_secs(10),
        ))?;
        Ok((r.status, r.body))
    }

    fn report(&self, id: &str) -> anyhow::Result<Report> {
        let (status, body) = self.api("GET", &format!("/streams/{id}/report"), "")?;
        if status != 200 {
            bail!("report of {id}: {status} {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("report of {id}: {body}"))
    }

    fn whep_url(&self, i: u32) -> String {
        format!("{}/{}/whep", self.base, stream_token(i))
    }

    /// SIGTERM, up to 5 s, SIGKILL; returns how it ended and how long it took.
    fn stop(&mut self) -> Option<(String, Duration)> {
        let mut child = self.child.take()?;
        let t = Instant::now();
        // SAFETY: a signal to our own child, by its PID (not reaped yet, so not reused).
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let until = t + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return Some((format!("exited ({s}) after SIGTERM"), t.elapsed())),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => break,
            }
        }
        let _ = child.kill();
        let s = child.wait();
        Some((
            format!("did not exit within 5 s of SIGTERM: SIGKILLed ({s:?})"),
            t.elapsed(),
        ))
    }

    /// Log lines at WARN or ERROR level.
    fn log_problems(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        self.stop();
    }
}

// ─────────────────────────────────── phases ───────────────────────────────────

/// One timed start.
#[derive(Debug, Clone, Default)]
struct Join {
    put: Duration,
    answer: Option<Duration>,
    connected: Option<Duration>,
    keyframe: Option<Duration>,
    error: Option<String>,
}

/// Start stream `i` and time its first WHEP keyframe.
fn start_and_join(server: &ServeChild, i: u32, timeout: Duration) -> anyhow::Result<Join> {
    let id = stream_id(i);
    let url = server.whep_url(i);
    let t0 = Instant::now();
    let (status, body) = server.api(
        "PUT",
        &format!("/streams/{id}/command"),
        r#"{"command":"start"}"#,
    )?;
    if status != 200 {
        bail!("PUT /streams/{id}/command start: {status} {body}");
    }
    let mut join = Join {
        put: t0.elapsed(),
        ..Join::default()
    };
    let deadline = t0 + timeout;
    let r: anyhow::Result<()> = server.rt.block_on(async {
        let mut c = WhepClient::connect(&url, LOOPBACK).await?;
        join.answer = c.answered_at().map(|a| a.saturating_duration_since(t0));
        let r = loop {
            match c.next_event(deadline).await? {
                None => break Err(anyhow::anyhow!("no keyframe within {timeout:?}")),
                Some(WhepEvent::Connected) => {
                    join.connected = c.connected_at().map(|a| a.saturating_duration_since(t0));
                }
                Some(WhepEvent::Video(f)) if f.keyframe => {
                    join.keyframe = Some(f.arrived.saturating_duration_since(t0));
                    break Ok(());
                }
                Some(WhepEvent::Closed) => break Err(anyhow::anyhow!("closed by the server")),
                Some(_) => {}
            }
        };
        let _ = c.delete().await;
        r
    });
    if let Err(e) = r {
        join.error = Some(format!("{e:#}"));
    }
    Ok(join)
}

/// What is read at each edge of the window.
struct Snap {
    at: Instant,
    server: (u64, u64),
    threads: BTreeMap<String, u64>,
    ffmpeg: BTreeMap<u32, u64>,
    machine: (u64, u64),
    rss: u64,
    reports: Vec<Report>,
}

fn snap(server: &ServeChild, n: u32) -> anyhow::Result<Snap> {
    let at = Instant::now();
    let (u, s, _, _) = pid_ticks(server.pid).context("the server's /proc/PID/stat is gone")?;
    let threads = pid_thread_ticks(server.pid);
    let machine = machine_cpu();
    let rss = pid_rss(server.pid).unwrap_or(0);
    let mut reports = Vec::new();
    for i in 0..n {
        reports.push(server.report(&stream_id(i))?);
    }
    let ffmpeg = reports
        .iter()
        .filter_map(|r| r.pid)
        .filter_map(|p| pid_ticks(p).map(|(u, s, _, _)| (p, u + s)))
        .collect();
    Ok(Snap {
        at,
        server: (u, s),
        threads,
        ffmpeg,
        machine,
        rss,
        reports,
    })
}

fn exe() -> anyhow::Result<PathBuf> {
    if std::path::Path::new("/proc/self/exe").exists() {
        Ok(PathBuf::from("/proc/self/exe"))
    } else {
        std::env::current_exe().context("cannot find this executable")
    }
}

pub fn run(args: ServeBenchArgs) -> anyhow::Result<ExitCode> {
    if !(args.seconds > 0.0 && args.warmup >= 0.0 && args.idle_seconds >= 0.0) {
        bail!("--seconds must be positive, --warmup and --idle-seconds not negative");
    }
    let _ = procstat::raise_nofile_limit();
    let n = args.streams;
    let (w, h) = args.size;
    println!(
        "bench serve: {n} streams × {} WHEP peers; testsrc2 {w}x{h}@{} + sine, x264 {} {} kbit/s, GOP {} s; WebRTC only (http_ts=false); {} CPUs, nothing pinned",
        args.viewers, args.fps, args.preset, args.bitrate, args.keyframe_interval, procstat::online_cpus()
    );
    let exe = exe()?;
    let mut server = ServeChild::start(&exe)?;
    println!(
        "server: pid {} on {} (log {})",
        server.pid,
        server.base,
        server.log.display()
    );
    std::thread::sleep(Duration::from_millis(500));
    let rss_base = pid_rss(server.pid).unwrap_or(0);
    let mut ffmpeg_pids = BTreeSet::new();
    let r = measure(&server, &args, rss_base, &mut ffmpeg_pids);
    // Whatever happened: stop the server and check its FFmpegs are gone.
    if let Ok(reports) = (0..n)
        .map(|i| server.report(&stream_id(i)))
        .collect::<anyhow::Result<Vec<_>>>()
    {
        ffmpeg_pids.extend(reports.iter().filter_map(|r| r.pid));
    }
    let problems = server.log_problems();
    let stopped = server.stop();
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<u32> = ffmpeg_pids
        .iter()
        .copied()
        .filter(|&p| {
            pid_ticks(p).is_some_and(|(_, _, comm, state)| comm.contains("ffmpeg") && state != 'Z')
        })
        .collect();
    if let Some((how, took)) = stopped {
        println!("server stop: {how}, {:.0} ms", took.as_secs_f64() * 1000.0);
    }
    println!(
        "ffmpeg left behind: {} (of {} FFmpeg PIDs seen{})",
        left.len(),
        ffmpeg_pids.len(),
        if left.is_empty() {
            String::new()
        } else {
            format!(": {left:?}")
        }
    );
    for p in &left {
        // Started by our server: ours to end, by PID.
        // SAFETY: a signal to one PID just checked to be an FFmpeg of ours.
        unsafe {
            libc::kill(*p as libc::pid_t, libc::SIGKILL);
        }
    }
    if !problems.is_empty() {
        println!(
            "server log: {} WARN/ERROR lines; the first ones:",
            problems.len()
        );
        for l in problems.iter().take(8) {
            println!("  {l}");
        }
    }
    let summary = r?;
    println!("{summary}");
    Ok(if left.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn measure(
    server: &ServeChild,
    args: &ServeBenchArgs,
    rss_base: u64,
    ffmpeg_pids: &mut BTreeSet<u32>,
) -> anyhow::Result<String> {
    let n = args.streams;
    let hz = procstat::clock_ticks_per_sec() as f64;
    for i in 0..n {
        let body = stream_config(i, args).to_string();
        let (status, resp) = server.api("POST", "/streams", &body)?;
        if status != 201 {
            bail!("POST /streams ({}): {status} {resp}", stream_id(i));
        }
    }

    // 1. Starts, one at a time.
    println!();
    println!(
        "command start → first WHEP keyframe, one stream at a time (ms from just before the PUT):"
    );
    println!(
        "{:<6} {:>6} {:>7} {:>9} {:>8}",
        "stream", "PUT", "answer", "connected", "keyframe"
    );
    let timeout = Duration::from_secs(args.join_timeout_s);
    let mut joins = Vec::new();
    for i in 0..n {
        let j = start_and_join(server, i, timeout)?;
        let rep = server.report(&stream_id(i))?;
        ffmpeg_pids.extend(rep.pid);
        println!(
            "{:<6} {:>6} {:>7} {:>9} {:>8}  {}",
            stream_id(i),
            ms(j.put),
            opt_ms(j.answer),
            opt_ms(j.connected),
            opt_ms(j.keyframe),
            j.error.as_deref().unwrap_or("")
        );
        if rep.state != "running" {
            bail!(
                "stream {} did not start: state {:?}, last error {:?}",
                stream_id(i),
                rep.state,
                rep.last_error
            );
        }
        joins.push(j);
    }
    let keys: Vec<Duration> = joins.iter().filter_map(|j| j.keyframe).collect();
    let answers: Vec<Duration> = joins.iter().filter_map(|j| j.answer).collect();
    let join_line = match spread(&keys) {
        Some((lo, mid, hi)) => format!(
            "join (command start → first WHEP keyframe): min {} / p50 {} / max {} ms over {} streams{}",
            ms(lo),
            ms(mid),
            ms(hi),
            keys.len(),
            if keys.len() < joins.len() { format!("; {} had NO keyframe", joins.len() - keys.len()) } else { String::new() }
        ),
        None => "join: no stream delivered a keyframe".to_owned(),
    };
    println!("{join_line}");
    if let Some((lo, mid, hi)) = spread(&answers) {
        println!(
            "  of which start → WHEP answer (the POST waits for the stream to run): min {} / p50 {} / max {} ms",
            ms(lo),
            ms(mid),
            ms(hi)
        );
    }

    // 2. Streams running, no peer.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let peers: usize = (0..n)
            .map(|i| server.report(&stream_id(i)).map(|r| r.viewers.whep))
            .sum::<anyhow::Result<usize>>()?;
        if peers == 0 || Instant::now() >= until {
            if peers > 0 {
                println!("bench: {peers} probe peers still counted after 10 s");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let i0 = snap(server, n)?;
    std::thread::sleep(Duration::from_secs_f64(args.idle_seconds));
    let i1 = snap(server, n)?;
    let rss_streams = i0.rss.max(i1.rss);
    let idle_wall = i1.at.duration_since(i0.at).as_secs_f64();
    let idle_cpu = (args.idle_seconds > 0.0).then(|| {
        ((i1.server.0 + i1.server.1).saturating_sub(i0.server.0 + i0.server.1)) as f64
            / hz
            / idle_wall
    });

    // 3. The peers.
    let total = (n * args.viewers) as usize;
    let urls: Vec<String> = (0..n).map(|i| server.whep_url(i)).collect();
    let mut child = Command::new(exe()?)
        .args(["bench", "whep-fanout-client", "--url", &urls.join(",")])
        .args([
            "--peers",
            &total.to_string(),
            "--seconds",
            &args.seconds.to_string(),
        ])
        .args([
            "--warmup",
            &args.warmup.to_string(),
            "--concurrency",
            &args.concurrency.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the peers' process")?;
    let r = window(server, args, &mut child, total);
    if r.is_err() {
        // Only our own child, by its PID.
        let _ = child.kill();
    }
    let status = child.wait();
    let (mut t, w0, w1, peers, client_cpu_s, connect_s) = r?;
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("bench: the peers' process exited with {s}"),
        Err(e) => eprintln!("bench: cannot reap the peers' process: {e}"),
    }
    for r in w0.reports.iter().chain(&w1.reports) {
        ffmpeg_pids.extend(r.pid);
    }
    t.rss_base = rss_base;
    t.rss_streams = rss_streams;
    t.idle_cpu_per_s = idle_cpu;
    let wall = t.window_s;

    // Per stream.
    let mut rows = Vec::new();
    for (i, join) in joins.iter().enumerate() {
        let (a, b) = (&w0.reports[i], &w1.reports[i]);
        let mine: Vec<&PeerWindow> = peers.iter().filter(|p| p.url == i).collect();
        let frames: Vec<u64> = mine.iter().map(|p| p.frames).collect();
        let (frames_min, frames_median) = min_median(&frames);
        let ffmpeg_cpu = match (a.pid, b.pid) {
            (Some(pa), Some(pb)) if pa == pb => match (w0.ffmpeg.get(&pa), w1.ffmpeg.get(&pb)) {
                (Some(x), Some(y)) => Some(y.saturating_sub(*x) as f64 / hz / wall),
                _ => None,
            },
            _ => None,
        };
        let p = b.progress.unwrap_or_default();
        rows.push(StreamRow {
            id: stream_id(i as u32),
            join: join.keyframe,
            fps: p.fps,
            speed: p.speed,
            ffmpeg_cpu,
            // At the window's start: the end snapshot races with the peers' DELETEs.
            peers: a.viewers.whep,
            out_mbps: b.bytes_out.whep.saturating_sub(a.bytes_out.whep) as f64 * 8.0 / wall / 1e6,
            rtp_in_lost: b.rtp.lost.saturating_sub(a.rtp.lost)
                + b.rtp.refused.saturating_sub(a.rtp.refused),
            // Peers that failed to connect are not in the list: counted in `connected`.
            silent_peers: mine.iter().filter(|p| p.frames == 0).count(),
            frames_min,
            frames_median,
            restarts: b.restarts,
        });
    }
    println!();
    println!("per stream, over the {wall:.1} s window:");
    println!("{}", stream_header());
    for r in &rows {
        println!("{}", stream_row(r));
    }

    // Whole server.
    println!();
    println!("server (`serve` PID only, FFmpeg excluded), over the window:");
    println!("{}", totals_header());
    println!("{}", totals_row(&t));
    let threads: Vec<String> = {
        let mut v: Vec<(String, f64)> = w1
            .threads
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(w0.threads.get(k).copied().unwrap_or(0)) as f64 / hz / wall,
                )
            })
            .filter(|(_, v)| *v >= 0.005)
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.iter().map(|(k, v)| format!("{k} {v:.2}")).collect()
    };
    let ffmpeg_total: f64 = rows.iter().filter_map(|r| r.ffmpeg_cpu).sum();
    let machine_busy = {
        let (b, i) = (
            w1.machine.0.saturating_sub(w0.machine.0),
            w1.machine.1.saturating_sub(w0.machine.1),
        );
        b as f64 / (b + i).max(1) as f64 * procstat::online_cpus() as f64
    };
    let speeds: Vec<f64> = rows.iter().map(|r| r.speed).collect();
    let speed_min = speeds.iter().copied().fold(f64::INFINITY, f64::min);
    let silent: usize = rows.iter().map(|r| r.silent_peers).sum();
    let rtp_in_lost: u64 = rows.iter().map(|r| r.rtp_in_lost).sum();
    println!(
        "  delivered: peers' UDP (SRTP+SRTCP+STUN) {:.3} Gbit/s (used above); server RTP payload (bytes_out.whep) {:.3} Gbit/s",
        t.gbps(),
        t.payload_gbps()
    );
    println!(
        "  server CPU with the {n} streams and no peer: {} s/s; the peers added {} s/s → {} core/Gbit/s marginal",
        fmt_opt(t.idle_cpu_per_s, 3),
        fmt_opt(t.idle_cpu_per_s.map(|i| t.cpu_per_s() - i), 3),
        fmt_opt(t.marginal_core_per_gbps(), 3)
    );
    println!("  server threads s/s: {}", threads.join(", "));
    println!(
        "  not the server: {n} FFmpeg {ffmpeg_total:.2} s/s; peers' process {:.2} s/s; machine busy {machine_busy:.2} of {} CPUs",
        client_cpu_s / wall,
        procstat::online_cpus()
    );
    println!(
        "  peers connected in {connect_s:.1} s; peers with no frame in the window: {silent}; RTP from FFmpeg lost: {rtp_in_lost}; FFmpeg speed min {speed_min:.2}"
    );
    if speed_min < 0.95 {
        println!(
            "  NOTE: an encoder ran below real time (speed < 0.95): the machine did not keep up"
        );
    }
    println!("{join_line}");
    let (w, h) = args.size;
    Ok(format!(
        "SUMMARY serve {n}×{} {w}x{h}@{} {}k {}: server {:.3} core (FFmpeg excluded) for {:.3} Gbit/s → {} core/Gbit/s ({} marginal); RSS {:.1} → {:.1} → {:.1} MiB, {:.1} KiB/peer; join p50 {} ms (max {}); FFmpeg speed min {speed_min:.2}; peers connected {}/{}, silent {silent}; lost {}",
        args.viewers,
        args.fps,
        args.bitrate,
        args.preset,
        t.cpu_per_s(),
        t.gbps(),
        fmt_opt(t.core_per_gbps(), 3),
        fmt_opt(t.marginal_core_per_gbps(), 3),
        mib(t.rss_base),
        mib(t.rss_streams),
        mib(t.rss_peers),
        t.rss_per_peer() / 1024.0,
        opt_ms(spread(&keys).map(|s| s.1)),
        opt_ms(spread(&keys).map(|s| s.2)),
        t.connected,
        t.peers,
        t.lost,
    ))
}

type Window = (Totals, Snap, Snap, Vec<PeerWindow>, f64, f64);

fn window(
    server: &ServeChild,
    args: &ServeBenchArgs,
    child: &mut Child,
    total: usize,
) -> anyhow::Result<Window> {
    let n = args.streams;
    let hz = procstat::clock_ticks_per_sec() as f64;
    let lines = whep_fanout::line_reader(child)?;
    let ClientLine::Ready {
        connected,
        failed,
        errors,
        connect_s,
    } = whep_fanout::next_line(&lines, Duration::from_secs(180))?
    else {
        bail!("expected the ready line first");
    };
    if failed > 0 {
        eprintln!(
            "bench: {failed} of {total} peers failed: {}",
            errors.join("; ")
        );
    }
    let ClientLine::Window = whep_fanout::next_line(
        &lines,
        Duration::from_secs_f64(args.warmup) + Duration::from_secs(10),
    )?
    else {
        bail!("expected the window line");
    };
    let s0 = snap(server, n)?;
    let ClientLine::Result {
        window_s,
        client_cpu_s,
        peers,
        closed_early,
    } = whep_fanout::next_line(
        &lines,
        Duration::from_secs_f64(args.seconds) + Duration::from_secs(20),
    )?
    else {
        bail!("expected the result line");
    };
    let s1 = snap(server, n)?;
    if closed_early > 0 {
        eprintln!("bench: {closed_early} peers were closed during the window");
    }
    let wall = s1.at.duration_since(s0.at).as_secs_f64();
    let udp: u64 = peers.iter().map(|p| p.udp_bytes).sum();
    let payload: u64 = s0
        .reports
        .iter()
        .zip(&s1.reports)
        .map(|(a, b)| b.bytes_out.whep.saturating_sub(a.bytes_out.whep))
        .sum();
    let t = Totals {
        peers: total,
        connected,
        window_s: wall,
        cpu_user_s: s1.server.0.saturating_sub(s0.server.0) as f64 / hz,
        cpu_sys_s: s1.server.1.saturating_sub(s0.server.1) as f64 / hz,
        idle_cpu_per_s: None,
        // Counted over the peers' window, rated over the server's.
        udp_bytes: (udp as f64 * wall / window_s.max(1e-9)) as u64,
        payload_bytes: payload,
        rss_base: 0,
        rss_streams: 0,
        rss_peers: s0.rss.max(s1.rss),
        lost: peers.iter().map(|p| p.lost).sum(),
        nacks: peers.iter().map(|p| p.nacks).sum(),
        gaps: peers.iter().map(|p| p.gaps).sum(),
    };
    Ok((t, s0, s1, peers, client_cpu_s, connect_s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeBenchArgs,
    }

    fn defaults() -> ServeBenchArgs {
        Cli::parse_from(["x"]).args
    }

    #[test]
    fn sizes_parse_and_odd_ones_are_refused() {
        assert_eq!(parse_size("640x360"), Ok((640, 360)));
        assert_eq!(parse_size("426X240"), Ok((426, 240)));
        assert!(parse_size("641x360").is_err());
        assert!(parse_size("640").is_err());
        assert!(parse_size("0x0").is_err());
        assert!(parse_size("axb").is_err());
    }

    #[test]
    fn the_stream_body_is_a_valid_webrtc_only_stream() {
        let a = ServeBenchArgs {
            size: (426, 240),
            ..defaults()
        };
        assert_eq!((a.streams, a.viewers, a.bitrate), (10, 20, 800));
        let v = stream_config(3, &a);
        let c: crate::process::config::StreamConfig = serde_json::from_value(v).unwrap();
        c.validate().unwrap();
        assert_eq!(c.id, "s3");
        assert_eq!(c.token.as_deref(), Some("bench-token-s3"));
        assert!(!c.http_ts && !c.autostart && c.webrtc.enabled);
        assert!(c
            .input
            .contains(&"testsrc2=size=426x240:rate=30".to_owned()));
        assert_eq!(c.video_options, ["-preset", "ultrafast"]);
        assert!(c.max_viewers >= 28);
    }

    #[test]
    fn spread_is_min_nearest_rank_median_max() {
        let d = |v: u64| Duration::from_millis(v);
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[d(5)]), Some((d(5), d(5), d(5))));
        assert_eq!(
            spread(&[d(900), d(100), d(300), d(200)]),
            Some((d(100), d(200), d(900)))
        );
    }

    fn totals() -> Totals {
        Totals {
            peers: 200,
            connected: 200,
            window_s: 20.0,
            cpu_user_s: 2.0,
            cpu_sys_s: 4.0,
            idle_cpu_per_s: Some(0.1),
            // 0.2 Gbit/s for 20 s.
            udp_bytes: 500_000_000,
            payload_bytes: 450_000_000,
            rss_base: 10 << 20,
            rss_streams: 20 << 20,
            rss_peers: (20 << 20) + 200 * 64 * 1024,
            lost: 0,
            nacks: 0,
            gaps: 0,
        }
    }

    #[test]
    fn rates_per_gbit_and_per_peer() {
        let t = totals();
        assert!((t.cpu_per_s() - 0.3).abs() < 1e-9);
        assert!((t.gbps() - 0.2).abs() < 1e-9);
        assert!((t.payload_gbps() - 0.18).abs() < 1e-9);
        assert!((t.core_per_gbps().unwrap() - 1.5).abs() < 1e-9);
        assert!((t.marginal_core_per_gbps().unwrap() - 1.0).abs() < 1e-9);
        assert!((t.rss_per_peer() - 64.0 * 1024.0).abs() < 1e-6);
        let none = Totals {
            udp_bytes: 0,
            ..totals()
        };
        assert_eq!(none.core_per_gbps(), None);
        assert_eq!(none.marginal_core_per_gbps(), None);
        let shrunk = Totals {
            rss_peers: 1 << 20,
            ..totals()
        };
        assert!(shrunk.rss_per_peer() < 0.0, "negative, not wrapped");
    }

    #[test]
    fn tables_have_one_cell_per_header() {
        let cells = |s: &str| s.split_whitespace().count();
        // "cpu s/s" and "RSS MiB base/strm/peers" are two and three words;
        // "RSS/peer" is "<n> KiB" in a row.
        assert_eq!(
            cells(&totals_header()) - 3,
            cells(&totals_row(&totals())) - 1
        );
        let r = StreamRow {
            id: "s0".into(),
            join: Some(Duration::from_millis(812)),
            fps: 30.0,
            speed: 1.0,
            ffmpeg_cpu: Some(0.12),
            peers: 20,
            out_mbps: 17.2,
            rtp_in_lost: 0,
            silent_peers: 0,
            frames_min: 598,
            frames_median: 600,
            restarts: 0,
        };
        // "join ms", "ffmpeg s/s", "out Mb/s", "RTP lost", "no frames",
        // "frames/peer min/med": one extra word each; a row's frames are
        // "<a> / <b>". 11 columns.
        assert_eq!(cells(&stream_header()) - 6, 11);
        assert_eq!(cells(&stream_row(&r)) - 2, 11);
        assert!(stream_row(&r).contains("812"));
        let missing = stream_row(&StreamRow { join: None, ..r });
        assert_eq!(missing.split_whitespace().nth(1), Some("-"), "{missing}");
    }
}
