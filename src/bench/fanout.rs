//! `pixelpass bench fanout`: one 4 Mbit/s MPEG-TS stream to N loopback
//! HTTP viewers, through the same code as `pixelpass host` (hub, supervisor,
//! HTTP server with its limits, HTTP-TS egress) fed by a replay producer.
//!
//! The server runs in this process, pinned to one CPU; the viewers run in a
//! child process (`bench fanout-client`) pinned to another, so this process's
//! CPU time is the server's alone. Per N it prints: server CPU seconds per
//! second, throughput the viewers actually received, core per Gbit/s,
//! stalls, and RSS growth per viewer.
//!
//! Definitions:
//! - *CPU s/s*: getrusage(RUSAGE_SELF) user+system over the window ÷ window
//!   (every thread of this process: tokio workers, the replay thread, …).
//!   Loopback TCP makes the sender's kernel also run the receive path
//!   (softirq) — part of it is charged here, part shows as softirq on the
//!   server CPU (printed on the detail line).
//! - *Gbit/s*: HTTP body payload bytes the viewers counted in the window
//!   (chunked framing excluded) × 8 ÷ window.
//! - *stall*: a viewer with a gap > 1 s between two reads in the window, or
//!   that received < 90 % of what the hub published in the window (viewers
//!   that could not connect count as stalls too).
//! - *RSS/viewer*: (VmRSS with all N viewers streaming − VmRSS just before
//!   they connected, after returning freed heap to the OS) ÷ N.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::client::{ClientEvent, MAX_VIEWERS};
use super::procstat::{self, CpuLine, CpuTimes};
use super::replay::{ReplayProducer, ReplayStats, Sample};
use crate::hub::{Hub, HubConfig};
use crate::server::{self, Limits, Registry, StreamEntry};
use crate::supervisor::{Policy, Supervisor};

/// The goal from issue 6.
pub const TARGET_CORE_PER_GBPS: f64 = 0.06;
pub const TARGET_RSS_PER_VIEWER: f64 = 64.0 * 1024.0;
/// A gap between two reads longer than this is a stall.
pub const STALL_GAP_MS: u64 = 1000;
/// A viewer that got less than this share of the published bytes stalled.
pub const STALL_SHARE: f64 = 0.9;

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Viewer counts to measure, one step each.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,500,1000")]
    pub viewers: Vec<usize>,
    /// Length of each measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Stream bitrate in kbit/s.
    #[arg(long, default_value_t = 4000)]
    pub bitrate: u32,
    /// Tokio worker threads of the server (all on the server CPU). 1 is the
    /// better choice there: a second worker on the same core adds
    /// park/unpark futex calls and ~8× the context switches, for no parallelism.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Seconds between "all viewers connected" and the window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Use the synthetic TS even when ffmpeg is installed.
    #[arg(long)]
    pub synthetic: bool,
    /// CPU for the server (this process).
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// CPU for the load generator.
    #[arg(long, default_value_t = 1)]
    pub client_cpu: usize,
}

/// One measured step.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub viewers: usize,
    pub connected: usize,
    pub window_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// Payload bytes all viewers received in the window.
    pub payload_bytes: u64,
    pub stalls: usize,
    pub rss_base: u64,
    pub rss_streaming: u64,
}

impl Row {
    pub fn cpu_per_s(&self) -> f64 {
        (self.cpu_user_s + self.cpu_sys_s) / self.window_s
    }

    pub fn gbps(&self) -> f64 {
        self.payload_bytes as f64 * 8.0 / self.window_s / 1e9
    }

    pub fn core_per_gbps(&self) -> Option<f64> {
        let g = self.gbps();
        (g > 0.0).then(|| self.cpu_per_s() / g)
    }

    /// Signed: the heap may shrink between steps.
    pub fn rss_per_viewer(&self) -> f64 {
        (self.rss_streaming as f64 - self.rss_base as f64) / self.viewers.max(1) as f64
    }
}

pub fn table_header() -> String {
    format!(
        "{:>7} {:>9} {:>8} {:>7} {:>7} {:>8} {:>11} {:>7} {:>12}",
        "viewers",
        "connected",
        "cpu s/s",
        "user",
        "sys",
        "Gbit/s",
        "core/Gbit/s",
        "stalls",
        "RSS/viewer"
    )
}

pub fn table_row(r: &Row) -> String {
    let core = r
        .core_per_gbps()
        .map_or_else(|| "-".to_owned(), |c| format!("{c:.3}"));
    format!(
        "{:>7} {:>9} {:>8.3} {:>7.3} {:>7.3} {:>8.3} {:>11} {:>7} {:>8.1} KiB",
        r.viewers,
        r.connected,
        r.cpu_per_s(),
        r.cpu_user_s / r.window_s,
        r.cpu_sys_s / r.window_s,
        r.gbps(),
        core,
        r.stalls,
        r.rss_per_viewer() / 1024.0
    )
}

/// The verdict against the target, for the step with the most viewers.
pub fn verdict(rows: &[Row]) -> Option<String> {
    let r = rows.iter().max_by_key(|r| r.viewers)?;
    let core = r.core_per_gbps();
    let ok = |b: bool| if b { "met" } else { "MISSED" };
    Some(format!(
        "target at {} viewers: core/Gbit/s {} ≤ {TARGET_CORE_PER_GBPS} → {}; RSS/viewer {:.1} KiB ≤ {:.0} KiB → {}; stalls {} → {}",
        r.viewers,
        core.map_or_else(|| "-".to_owned(), |c| format!("{c:.3}")),
        ok(core.is_some_and(|c| c <= TARGET_CORE_PER_GBPS)),
        r.rss_per_viewer() / 1024.0,
        TARGET_RSS_PER_VIEWER / 1024.0,
        ok(r.rss_per_viewer() <= TARGET_RSS_PER_VIEWER),
        r.stalls,
        ok(r.stalls == 0),
    ))
}

/// Stalled viewers: a read gap over [`STALL_GAP_MS`] or less than
/// [`STALL_SHARE`] of `expected` bytes. The slices are per viewer.
pub fn count_stalls(payload: &[u64], max_gap_ms: &[u64], expected: f64) -> usize {
    let n = payload.len().max(max_gap_ms.len());
    (0..n)
        .filter(|&i| {
            let got = payload.get(i).copied().unwrap_or(0) as f64;
            let gap = max_gap_ms.get(i).copied().unwrap_or(u64::MAX);
            gap > STALL_GAP_MS || got < STALL_SHARE * expected
        })
        .count()
}

/// Per-viewer rates as "min / median / max" Mbit/s.
pub fn spread_mbps(payload: &[u64], window_s: f64) -> String {
    if payload.is_empty() || window_s <= 0.0 {
        return "-".into();
    }
    let mut v: Vec<u64> = payload.to_vec();
    v.sort_unstable();
    let m = |b: u64| b as f64 * 8.0 / window_s / 1e6;
    format!(
        "{:.2} / {:.2} / {:.2}",
        m(v[0]),
        m(v[v.len() / 2]),
        m(v[v.len() - 1])
    )
}

fn mib(b: f64) -> f64 {
    b / (1024.0 * 1024.0)
}

struct Server {
    rt: tokio::runtime::Runtime,
    supervisor: Supervisor,
    hub: Hub,
    url: String,
    shutdown: tokio::sync::watch::Sender<bool>,
    replay: Arc<ReplayStats>,
}

impl Server {
    fn start(args: &FanoutArgs, sample: Arc<Sample>, max_viewers: usize) -> anyhow::Result<Server> {
        let rt = if args.workers == 0 {
            bail!("--workers must be at least 1");
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.workers)
                .enable_all()
                .build()?
        };
        let producer = ReplayProducer::new(sample);
        let replay = producer.stats();
        let hub = Hub::new(HubConfig::default());
        let token = crate::token::generate()?;
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let (supervisor, addr) = rt.block_on(async {
            let policy = Policy {
                max_viewers,
                // Capture stays up between steps: every step sees the same warm hub.
                linger: Duration::from_secs(24 * 3600),
                ..Policy::default()
            };
            let supervisor = Supervisor::spawn(policy, hub.clone(), Arc::new(producer));
            let registry = Registry::new();
            registry.insert(StreamEntry::new("bench", token.clone(), supervisor.clone()));
            let listener = server::bind("127.0.0.1:0".parse().expect("literal address")).await?;
            let addr = listener.local_addr()?;
            tokio::spawn(server::serve(
                listener,
                server::router(registry),
                Limits::default(),
                shutdown_rx,
            ));
            anyhow::Ok((supervisor, addr))
        })?;
        Ok(Server {
            rt,
            supervisor,
            hub,
            url: format!("http://{addr}/{token}/stream.ts"),
            shutdown,
            replay,
        })
    }

    /// Start the producer and let the hub's ring fill, so the first step's
    /// RSS baseline already holds a full ring like every later one.
    fn warm_up(&self) -> anyhow::Result<()> {
        let _guard = self.rt.enter();
        let lease = self
            .supervisor
            .acquire()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.rt
            .block_on(lease.ready(Duration::from_secs(30)))
            .context("the replay producer did not start")?;
        let capacity = self.hub.config().capacity as u64;
        let until = Instant::now() + Duration::from_secs(40);
        while self.hub.stats().chunks < capacity + 8 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(lease);
        Ok(())
    }

    /// Wait until the last step's viewers are gone (their leases released).
    fn wait_idle(&self, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        loop {
            let v = self.supervisor.status().viewers;
            if v == 0 || Instant::now() >= until {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(self) {
        let _ = self.shutdown.send(true);
        let sup = self.supervisor.clone();
        let _ = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), sup.shutdown()).await });
        self.rt.shutdown_timeout(Duration::from_secs(2));
    }
}

/// Snapshot of everything measured on the server side.
struct Snap {
    at: Instant,
    cpu: CpuTimes,
    threads: BTreeMap<String, u64>,
    core: Option<CpuLine>,
    hub_bytes: u64,
    rss: u64,
}

impl Snap {
    fn take(server: &Server, cpu_index: usize) -> anyhow::Result<Snap> {
        Ok(Snap {
            at: Instant::now(),
            cpu: procstat::process_cpu()?,
            threads: procstat::thread_ticks(),
            core: procstat::cpu_line(cpu_index),
            hub_bytes: server.hub.stats().bytes,
            rss: procstat::rss_bytes()?,
        })
    }
}

/// Reads the child's JSON lines on a thread; the orchestrator waits on the channel with timeouts.
fn spawn_line_reader(child: &mut Child) -> anyhow::Result<mpsc::Receiver<String>> {
    let stdout = child
        .stdout
        .take()
        .context("the client has no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("bench-client-io".into())
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

fn next_event(rx: &mpsc::Receiver<String>, timeout: Duration) -> anyhow::Result<ClientEvent> {
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("the client said nothing for {timeout:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the client exited early"),
        };
        if let Ok(ev) = serde_json::from_str::<ClientEvent>(&line) {
            return Ok(ev);
        }
        eprintln!("bench: client: {line}");
    }
}

struct StepOutcome {
    row: Row,
    detail: String,
}

fn step(server: &Server, args: &FanoutArgs, n: usize) -> anyhow::Result<StepOutcome> {
    let left = server.wait_idle(Duration::from_secs(15));
    if left > 0 {
        eprintln!("bench: {left} viewers of the previous step are still connected");
    }
    std::thread::sleep(Duration::from_millis(300));
    procstat::trim_heap();
    let rss_base = procstat::rss_bytes()?;

    // /proc/self/exe still runs this very binary when a rebuild replaced the file.
    let exe = if std::path::Path::new("/proc/self/exe").exists() {
        std::path::PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe()
            .context("cannot find this executable to start the load generator")?
    };
    let mut child = Command::new(exe)
        .args(["bench", "fanout-client", "--url", &server.url])
        .args([
            "--viewers",
            &n.to_string(),
            "--seconds",
            &args.seconds.to_string(),
        ])
        .args([
            "--warmup",
            &args.warmup.to_string(),
            "--cpu",
            &args.client_cpu.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the load generator")?;
    let result = measure(server, args, n, &mut child);
    if result.is_err() {
        // Only our own child, by its PID.
        let _ = child.kill();
    }
    let status = child.wait();
    let out = result?;
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => bail!("the load generator exited with {s}"),
        Err(e) => bail!("cannot reap the load generator: {e}"),
    }
    let (row, detail) = out;
    Ok(StepOutcome {
        row: Row { rss_base, ..row },
        detail,
    })
}

fn measure(
    server: &Server,
    args: &FanoutArgs,
    n: usize,
    child: &mut Child,
) -> anyhow::Result<(Row, String)> {
    let lines = spawn_line_reader(child)?;
    let connect_budget = Duration::from_secs(30 + 5) + Duration::from_secs_f64(args.warmup);
    let ready = next_event(&lines, connect_budget)?;
    let ClientEvent::Ready {
        connected,
        failed,
        errors,
    } = ready
    else {
        bail!("expected the ready line first")
    };
    let s0 = Snap::take(server, args.server_cpu)?;
    if failed > 0 {
        eprintln!(
            "bench: {failed} of {n} viewers could not connect: {}",
            errors.join("; ")
        );
    }
    let ev = next_event(
        &lines,
        Duration::from_secs_f64(args.seconds) + Duration::from_secs(10),
    )?;
    let s1 = Snap::take(server, args.server_cpu)?;
    let ClientEvent::Result {
        payload_bytes,
        max_gap_ms,
        window_s,
        client_cpu_s,
        raw_bytes_total,
        closed_early,
        ..
    } = ev
    else {
        bail!("expected the result line");
    };
    let wall = s1.at.duration_since(s0.at).as_secs_f64();
    let cpu = s1.cpu.since(&s0.cpu);
    // The hub's publish rate, scaled to the client's window: what each viewer should have got.
    let published = (s1.hub_bytes - s0.hub_bytes) as f64;
    let expected = published / wall * window_s;
    let stalls = count_stalls(&payload_bytes, &max_gap_ms, expected);
    let total: u64 = payload_bytes.iter().sum();
    let row = Row {
        viewers: n,
        connected,
        window_s: wall,
        cpu_user_s: cpu.user.as_secs_f64(),
        cpu_sys_s: cpu.system.as_secs_f64(),
        // Bytes counted in the client's window, rated over the server's: the two differ by the pipe latency.
        payload_bytes: (total as f64 * wall / window_s) as u64,
        stalls,
        rss_base: 0,
        rss_streaming: s0.rss.max(s1.rss),
    };

    let hz = procstat::clock_ticks_per_sec() as f64;
    let mut threads: Vec<(String, f64)> = s1
        .threads
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                (t - s0.threads.get(name).copied().unwrap_or(0)) as f64 / hz / wall,
            )
        })
        .filter(|(_, v)| *v >= 0.0005)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    let threads: Vec<String> = threads.iter().map(|(n, v)| format!("{n} {v:.3}")).collect();
    let core = match (s0.core, s1.core) {
        (Some(a), Some(b)) => {
            let d = b.since(&a);
            format!(
                "cpu{} busy {:.3} s/s (softirq {:.3})",
                args.server_cpu,
                d.busy as f64 / hz / wall,
                d.softirq as f64 / hz / wall
            )
        }
        _ => String::new(),
    };
    let detail = format!(
        "        per viewer Mbit/s min/median/max {}; framing {:.2}%; published {:.2} Mbit/s; client cpu {:.2} s/s; threads s/s: {}; {}; replay late max {:.1} ms{}",
        spread_mbps(&payload_bytes, window_s),
        if total > 0 { (raw_bytes_total as f64 / total as f64 - 1.0) * 100.0 } else { 0.0 },
        published * 8.0 / wall / 1e6,
        client_cpu_s / window_s.max(1e-9),
        threads.join(", "),
        core,
        server.replay.max_late_us.swap(0, std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0,
        if closed_early > 0 { format!("; {closed_early} viewers closed early") } else { String::new() },
    );
    Ok((row, detail))
}

pub fn run(args: FanoutArgs) -> anyhow::Result<ExitCode> {
    if args.viewers.is_empty() || args.viewers.iter().any(|&n| n == 0 || n > MAX_VIEWERS) {
        bail!("--viewers takes counts in 1..={MAX_VIEWERS}, e.g. 1,10,100");
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        bail!("--seconds must be in (0, 3600]");
    }
    if args.bitrate == 0 || args.bitrate > 1_000_000 {
        bail!("--bitrate is in kbit/s, 1..=1000000");
    }
    let cpus = procstat::online_cpus();
    let pinned = args.server_cpu != args.client_cpu && args.server_cpu.max(args.client_cpu) < cpus;
    let sample = Arc::new(if args.synthetic {
        let data = super::replay::synthetic_ts(args.bitrate, 10, 30);
        let mut s = Sample::from_ts(data, f64::from(args.bitrate) * 1000.0)?;
        s.origin = format!("synthetic TS {} kbit/s", args.bitrate);
        s
    } else {
        Sample::make(args.bitrate, 10)
    });
    // Pin before any thread starts: the runtime's threads inherit it.
    if pinned {
        procstat::pin_to_cpu(args.server_cpu)
            .with_context(|| format!("cannot pin the server to CPU {}", args.server_cpu))?;
    } else {
        eprintln!(
            "bench: {cpus} CPU(s): server and load generator NOT pinned apart; the CPU numbers include contention"
        );
    }
    procstat::raise_nofile_limit().context("cannot raise the open-file limit")?;
    let max_n = *args.viewers.iter().max().expect("checked non-empty");

    procstat::trim_heap();
    let rss_before_stream = procstat::rss_bytes()?;
    let server = Server::start(&args, sample.clone(), max_n)?;
    println!("pixelpass bench fanout");
    println!(
        "  stream: {} ({:.2} Mbit/s as replayed, {} bursts per {:.1} s lap)",
        sample.origin,
        sample.bitrate() / 1e6,
        sample.bursts.len(),
        sample.period.as_secs_f64()
    );
    println!(
        "  server: pid {} on CPU {}, tokio multi-thread runtime with {} worker(s); load generator on CPU {}; window {} s after {} s warm-up",
        std::process::id(),
        if pinned { args.server_cpu.to_string() } else { "any".into() },
        args.workers,
        if pinned { args.client_cpu.to_string() } else { "any".into() },
        args.seconds,
        args.warmup
    );
    server.warm_up()?;
    let stats = server.hub.stats();
    let cap = server.hub.config().capacity;
    let avg_chunk = stats.bytes as f64 / stats.chunks.max(1) as f64;
    let ring = avg_chunk * cap.min(stats.chunks as usize) as f64;
    procstat::trim_heap();
    let rss_stream = procstat::rss_bytes()?;
    println!(
        "  hub ring: {cap} chunks × {:.1} KiB avg = {:.2} MiB (GOP cache {:.2} MiB, same chunks); RSS {:.1} MiB with the stream running, {:+.1} MiB for it",
        avg_chunk / 1024.0,
        mib(ring),
        mib(server.hub.gop_bytes() as f64),
        mib(rss_stream as f64),
        mib(rss_stream as f64 - rss_before_stream as f64),
    );
    println!();
    println!("{}", table_header());

    let mut rows = Vec::new();
    let mut failed = false;
    for &n in &args.viewers {
        match step(&server, &args, n) {
            Ok(out) => {
                println!("{}", table_row(&out.row));
                println!("{}", out.detail);
                rows.push(out.row);
            }
            Err(e) => {
                println!("{n:>7}  step failed: {e:#}");
                failed = true;
            }
        }
    }
    if rows.len() > 1 {
        println!();
        println!("{}", table_header());
        for r in &rows {
            println!("{}", table_row(r));
        }
    }
    if let Some(v) = verdict(&rows) {
        println!("{v}");
    }
    server.stop();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(viewers: usize, gbytes_per_s: f64, cpu: f64) -> Row {
        Row {
            viewers,
            connected: viewers,
            window_s: 10.0,
            cpu_user_s: cpu * 10.0 * 0.25,
            cpu_sys_s: cpu * 10.0 * 0.75,
            payload_bytes: (gbytes_per_s * 1e9 / 8.0 * 10.0) as u64,
            stalls: 0,
            rss_base: 100 << 20,
            rss_streaming: (100 << 20) + viewers as u64 * 40 * 1024,
        }
    }

    #[test]
    fn derived_numbers() {
        let r = row(1000, 4.0, 0.2);
        assert!((r.cpu_per_s() - 0.2).abs() < 1e-9);
        assert!((r.gbps() - 4.0).abs() < 1e-6);
        assert!((r.core_per_gbps().unwrap() - 0.05).abs() < 1e-6);
        assert!((r.rss_per_viewer() - 40.0 * 1024.0).abs() < 1e-6);
        let idle = Row {
            payload_bytes: 0,
            ..row(1, 0.0, 0.0)
        };
        assert_eq!(idle.core_per_gbps(), None);
        let shrunk = Row {
            rss_streaming: 90 << 20,
            ..row(10, 0.04, 0.01)
        };
        assert!(
            shrunk.rss_per_viewer() < 0.0,
            "negative growth is shown, not hidden"
        );
    }

    #[test]
    fn table_lines_line_up() {
        let h = table_header();
        let r = table_row(&row(1000, 4.0, 0.2));
        assert_eq!(h.len(), r.len(), "\n{h}\n{r}");
        assert!(r.contains(" 0.050 "), "{r}");
        assert!(r.contains("40.0 KiB"), "{r}");
        assert!(r.trim_start().starts_with("1000"));
        let none = table_row(&Row {
            payload_bytes: 0,
            ..row(1, 0.0, 0.0)
        });
        assert!(none.contains(" - "), "{none}");
    }

    #[test]
    fn verdict_uses_the_largest_step() {
        let rows = vec![row(10, 0.04, 0.01), row(1000, 4.0, 0.3)];
        let v = verdict(&rows).unwrap();
        assert!(v.starts_with("target at 1000 viewers"), "{v}");
        assert!(v.contains("0.075 ≤ 0.06 → MISSED"), "{v}");
        assert!(v.contains("RSS/viewer 40.0 KiB ≤ 64 KiB → met"), "{v}");
        assert_eq!(verdict(&[]), None);
    }

    #[test]
    fn stalls_are_gaps_or_short_deliveries() {
        let expected = 5_000_000.0;
        let payload = [5_000_000, 4_600_000, 4_400_000, 5_100_000, 0];
        let gaps = [40, 40, 40, 1200, 10_000];
        // #2 got < 90 %, #3 paused > 1 s, #4 never connected.
        assert_eq!(count_stalls(&payload, &gaps, expected), 3);
        assert_eq!(count_stalls(&payload[..2], &gaps[..2], expected), 0);
        assert_eq!(
            count_stalls(&[5_000_000], &[], expected),
            1,
            "a missing gap counts as a stall"
        );
    }

    #[test]
    fn per_viewer_spread() {
        assert_eq!(
            spread_mbps(&[1_250_000, 5_000_000, 2_500_000], 10.0),
            "1.00 / 2.00 / 4.00"
        );
        assert_eq!(spread_mbps(&[], 10.0), "-");
    }
}
