//! `pixelpass bench join`: how long a WebRTC viewer waits for its picture.
//!
//! The server runs in this process as `pixelpass host` runs it: the real
//! GStreamer producer (test pattern, H.264 with its RTP branch, a 2 s GOP),
//! supervisor, HTTP server and WHEP, all on 127.0.0.1. Viewers are
//! [`WhepClient`]s (str0m, full ICE) in the same process.
//!
//! A join is timed from the moment its POST starts to the moment the client
//! has depacketized the first complete IDR access unit (SPS + PPS + IDR
//! slices, contiguous): the first frame a decoder can show.
//!
//! 1. *Cold start*: the first viewer joins an idle stream, so its join
//!    includes starting the pipeline. It then stays connected (keep-alive),
//!    so the following joins measure a live stream only.
//! 2. *Warm joins*: `--joins` viewers, one after the other, each after a
//!    random pause (`--min-gap-ms`..`--max-gap-ms`) so they land at different
//!    phases of the GOP and of the keyframe rate limit (one forced keyframe
//!    per 500 ms per stream). Each viewer leaves (DELETE) once it has its
//!    keyframe.
//!
//! A join is *rate-limited* when the keyframe it asked for was held back
//! because one went out less than 500 ms earlier; it *started on the cached
//! GOP* when the hub handed it the packets since that recent keyframe instead.

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use pixelpass::capture::source::SourceKind;
use pixelpass::capture::PipelineConfig;
use pixelpass::hub::{Hub, HubStats};
use pixelpass::supervisor::Policy;
use pixelpass_testkit::client::{WhepClient, WhepEvent, WhepOptions};

/// The goal from issue 2.
pub const TARGET_P50: Duration = Duration::from_millis(250);
const TOKEN: &str = "bench-join-0123456789abcdef";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(clap::Args, Debug, Clone)]
pub struct JoinArgs {
    /// One JSON object per step on stdout (the table's figures); prose goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Warm joins to time (after the cold-start one).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub joins: u32,
    /// Shortest pause before a join, ms.
    #[arg(long, default_value_t = 300)]
    pub min_gap_ms: u64,
    /// Longest pause before a join, ms.
    #[arg(long, default_value_t = 1500)]
    pub max_gap_ms: u64,
    /// Video bitrate, kbit/s.
    #[arg(long, default_value_t = 4000)]
    pub bitrate: u32,
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    #[arg(long, default_value_t = 720)]
    pub height: u32,
    #[arg(long, default_value_t = 30)]
    pub framerate: u32,
    /// Seed of the pauses (default: random); the same seed gives the same pauses.
    #[arg(long)]
    pub seed: Option<u64>,
    /// A join that has no keyframe after this many seconds fails the run.
    #[arg(long, default_value_t = 10)]
    pub timeout_s: u64,
    /// Print one line per join.
    #[arg(long, short)]
    pub verbose: bool,
}

/// One timed join.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Pause before this join.
    pub gap: Duration,
    /// POST → 201.
    pub answer: Duration,
    /// POST → ICE + DTLS up.
    pub connected: Duration,
    /// POST → first complete IDR access unit.
    pub keyframe: Duration,
    /// The last keyframe before the client connected was this old (None: none yet).
    pub since_key_at_connect: Option<Duration>,
    /// The keyframe request of this join was held back by the rate limit.
    pub rate_limited: bool,
    /// The hub started this viewer on its cached GOP.
    pub cached_gop: bool,
}

/// `p` in 0..=100, nearest rank (p50 of 20 values is the 10th smallest).
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// p50 / p95 / max of some durations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50: Duration,
    pub p95: Duration,
    pub max: Duration,
}

pub fn summarize(values: &[Duration]) -> Option<Summary> {
    let mut v = values.to_vec();
    v.sort();
    Some(Summary {
        n: v.len(),
        p50: percentile(&v, 50.0)?,
        p95: percentile(&v, 95.0)?,
        max: *v.last()?,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// The table's rows: what was timed and its summary.
pub fn table_rows(cold: &Sample, warm: &[Sample]) -> Vec<(&'static str, Option<Summary>)> {
    let pick = |f: &dyn Fn(&Sample) -> bool, v: &dyn Fn(&Sample) -> Duration| {
        let d: Vec<Duration> = warm.iter().filter(|s| f(s)).map(v).collect();
        summarize(&d)
    };
    let key = |s: &Sample| s.keyframe;
    vec![
        ("warm joins (capture live)", pick(&|_| true, &key)),
        ("  of which rate-limited", pick(&|s| s.rate_limited, &key)),
        (
            "  of which started on cached GOP",
            pick(&|s| s.cached_gop, &key),
        ),
        (
            "  of which on a fresh keyframe",
            pick(&|s| !s.rate_limited && !s.cached_gop, &key),
        ),
        ("cold start (pipeline starts)", summarize(&[cold.keyframe])),
        (
            "warm: POST → ICE+DTLS connected",
            pick(&|_| true, &|s| s.connected),
        ),
        ("warm: POST → 201 answer", pick(&|_| true, &|s| s.answer)),
    ]
}

fn table_line(name: &str, s: Option<Summary>) -> String {
    match s {
        Some(s) => format!(
            "{name:<34} {:>4} {:>8} {:>8} {:>8}",
            s.n,
            ms(s.p50),
            ms(s.p95),
            ms(s.max)
        ),
        None => format!("{name:<34} {:>4} {:>8} {:>8} {:>8}", 0, "-", "-", "-"),
    }
}

/// A row's figures, for `--json`.
fn row_json(name: &str, s: Option<Summary>) -> serde_json::Value {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    serde_json::json!({
        "row": name.trim(),
        "n": s.map_or(0, |s| s.n),
        "p50_ms": s.map(|s| ms(s.p50)),
        "p95_ms": s.map(|s| ms(s.p95)),
        "max_ms": s.map(|s| ms(s.max)),
    })
}

pub fn table(cold: &Sample, warm: &[Sample]) -> String {
    let mut out = format!(
        "{:<34} {:>4} {:>8} {:>8} {:>8}\n",
        "POST → first decodable keyframe", "n", "p50 ms", "p95 ms", "max ms"
    );
    for (name, s) in table_rows(cold, warm) {
        out.push_str(&table_line(name, s));
        out.push('\n');
    }
    out
}

/// xorshift64*: reproducible pauses without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next() % (hi - lo + 1)
        }
    }
}

pub fn run(args: JoinArgs) -> anyhow::Result<ExitCode> {
    crate::output::set_json(args.json);
    if args.min_gap_ms > args.max_gap_ms {
        anyhow::bail!("--min-gap-ms must not exceed --max-gap-ms");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("pixelpass-bench")
        .build()
        .context("cannot start the async runtime")?;
    let r = rt.block_on(bench(args));
    rt.shutdown_timeout(Duration::from_millis(500));
    r
}

/// Join once: POST, drive the client until its first complete IDR.
async fn join(url: &str, hub: &Hub, timeout: Duration) -> anyhow::Result<(WhepClient, Sample)> {
    let before: HubStats = hub.stats();
    let mut client = WhepClient::connect_with(url, LOOPBACK, WhepOptions::default()).await?;
    let posted = client.posted_at().context("the client never posted")?;
    let answered = client.answered_at().context("no answer time")?;
    let deadline = posted + timeout;
    let mut since_key = None;
    let key_at = loop {
        let ev = client.next_event(deadline).await?;
        match ev {
            None => anyhow::bail!(
                "no keyframe within {timeout:?} (connected: {})",
                client.connected_at().is_some()
            ),
            Some(WhepEvent::Connected) => {
                since_key = hub
                    .last_keyframe_at()
                    .map(|k| Instant::now().saturating_duration_since(k));
            }
            Some(WhepEvent::Video(f))
                if f.keyframe
                    && f.contiguous
                    && pixelpass::media::h264::is_self_contained_idr(&f.annexb) =>
            {
                break f.arrived;
            }
            Some(WhepEvent::Video(_)) => anyhow::bail!(
                "a frame before the first keyframe: the server must start on a keyframe"
            ),
            Some(WhepEvent::Closed) => anyhow::bail!("the server closed the connection"),
            Some(_) => {}
        }
    };
    let after = hub.stats();
    let connected = client
        .connected_at()
        .context("a keyframe before the connection?")?;
    let sample = Sample {
        gap: Duration::ZERO,
        answer: answered - posted,
        connected: connected.saturating_duration_since(posted),
        keyframe: key_at.saturating_duration_since(posted),
        since_key_at_connect: since_key,
        rate_limited: after.keyframe_requests_deferred > before.keyframe_requests_deferred,
        cached_gop: after.rtp_gop_joins > before.rtp_gop_joins,
    };
    Ok((client, sample))
}

fn describe(i: usize, s: &Sample) -> String {
    let phase = s
        .since_key_at_connect
        .map_or_else(|| "-".to_owned(), |d| format!("{} ms", d.as_millis()));
    let how = match (s.rate_limited, s.cached_gop) {
        (_, true) => "cached GOP",
        (true, false) => "RATE-LIMITED",
        (false, false) => "fresh keyframe",
    };
    format!(
        "join {i:>3}: pause {:>5} ms  answer {:>6} ms  connected {:>6} ms  keyframe {:>7} ms  (last keyframe {phase} before connect: {how})",
        s.gap.as_millis(),
        ms(s.answer),
        ms(s.connected),
        ms(s.keyframe),
    )
}

async fn bench(args: JoinArgs) -> anyhow::Result<ExitCode> {
    let cfg = PipelineConfig {
        source: SourceKind::Test,
        framerate: args.framerate,
        bitrate_kbps: args.bitrate,
        width: Some(args.width),
        height: Some(args.height),
        ..PipelineConfig::default()
    };
    let policy = Policy {
        max_viewers: 64,
        linger: Duration::from_secs(2),
        ..Policy::default()
    };
    let server = super::host::start(cfg, policy, TOKEN).await?;
    eprintln!(
        "encoder: {}; {}x{}@{} at {} kbit/s, 2 s GOP",
        server.encoder, args.width, args.height, args.framerate, args.bitrate
    );
    let url = server.whep_url();
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let seed = match args.seed {
        Some(s) => s,
        None => {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
            u64::from_le_bytes(b)
        }
    };
    let mut rng = Rng::new(seed);
    eprintln!("pauses seeded with --seed {seed}");

    // 1. Cold start; this viewer then keeps the capture live.
    let (keepalive, cold) = join(&url, server.hub(), timeout + Duration::from_secs(10))
        .await
        .context("cold-start join")?;
    if args.verbose {
        eprintln!("{}  [cold start]", describe(0, &cold));
    }
    let (stop_keepalive, mut stopped) = watch::channel(false);
    let keepalive = tokio::spawn(async move {
        let mut c = keepalive;
        loop {
            if *stopped.borrow() {
                break;
            }
            let until = Instant::now() + Duration::from_millis(200);
            tokio::select! {
                r = c.next_event(until) => match r {
                    Ok(Some(WhepEvent::Closed)) | Err(_) => break,
                    Ok(_) => {}
                },
                _ = stopped.changed() => {}
            }
        }
        let _ = c.delete().await;
        c.stats()
    });

    // 2. Warm joins at random phases.
    let mut warm = Vec::new();
    for i in 1..=args.joins as usize {
        let gap = Duration::from_millis(rng.between(args.min_gap_ms, args.max_gap_ms));
        tokio::time::sleep(gap).await;
        let (mut client, mut s) = join(&url, server.hub(), timeout)
            .await
            .with_context(|| format!("join {i}"))?;
        s.gap = gap;
        if args.verbose {
            eprintln!("{}", describe(i, &s));
        }
        warm.push(s);
        match client.delete().await {
            Ok(200) => {}
            Ok(status) => anyhow::bail!("DELETE of join {i} answered {status}"),
            Err(e) => anyhow::bail!("DELETE of join {i}: {e}"),
        }
    }
    let _ = stop_keepalive.send(true);
    let ka = keepalive.await.ok();
    let stats = server.hub().stats();
    super::host::stop(server).await;

    say!();
    if crate::output::json() {
        for (name, s) in table_rows(&cold, &warm) {
            crate::output::step("join", &table_line(name, s), row_json(name, s));
        }
    } else {
        say!("{}", table(&cold, &warm).trim_end());
    }
    let limited = warm.iter().filter(|s| s.rate_limited).count();
    let cached = warm.iter().filter(|s| s.cached_gop).count();
    say!(
        "rate-limited joins: {limited} of {} (a keyframe had gone out < 500 ms earlier: the request waited); started on the cached GOP: {cached}",
        warm.len()
    );
    say!(
        "hub: {} keyframes in RTP, {} keyframe requests sent, {} held back by the rate limit",
        stats.keyframes_rtp,
        stats.keyframe_requests,
        stats.keyframe_requests_deferred
    );
    if let Some(ka) = ka {
        say!(
            "keep-alive viewer: {} frames, {} keyframes, {} gaps, {} NACKs sent",
            ka.video_frames,
            ka.keyframes,
            ka.gaps,
            ka.nacks_sent
        );
    }
    let key: Vec<Duration> = warm.iter().map(|s| s.keyframe).collect();
    let p50 = summarize(&key).map(|s| s.p50).unwrap_or_default();
    let verdict = if p50 <= TARGET_P50 { "meets" } else { "MISSES" };
    say!(
        "target p50 ≤ {} ms: {verdict} ({} ms)",
        TARGET_P50.as_millis(),
        ms(p50)
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=20).map(|i| d(i * 10)).collect();
        assert_eq!(percentile(&v, 50.0), Some(d(100)));
        assert_eq!(percentile(&v, 95.0), Some(d(190)));
        assert_eq!(percentile(&v, 100.0), Some(d(200)));
        assert_eq!(percentile(&v, 0.0), Some(d(10)));
        assert_eq!(percentile(&[d(7)], 95.0), Some(d(7)));
        assert_eq!(percentile(&[], 50.0), None);
        let s = summarize(&[d(30), d(10), d(20)]).unwrap();
        assert_eq!((s.n, s.p50, s.p95, s.max), (3, d(20), d(30), d(30)));
    }

    #[test]
    fn the_table_splits_joins_by_how_they_started() {
        let s = |key: u64, limited: bool, cached: bool| Sample {
            gap: d(500),
            answer: d(2),
            connected: d(10),
            keyframe: d(key),
            since_key_at_connect: Some(d(100)),
            rate_limited: limited,
            cached_gop: cached,
        };
        let warm = vec![s(60, false, false), s(540, true, false), s(20, false, true)];
        let t = table(&s(900, false, false), &warm);
        let line = |name: &str| {
            t.lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .split_whitespace()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
        };
        assert_eq!(line("warm joins"), vec!["540.0", "540.0", "60.0", "3"]);
        assert_eq!(
            line("  of which rate-limited"),
            vec!["540.0", "540.0", "540.0", "1"]
        );
        assert_eq!(
            line("  of which started on cached GOP"),
            vec!["20.0", "20.0", "20.0", "1"]
        );
        assert_eq!(line("cold start"), vec!["900.0", "900.0", "900.0", "1"]);
    }

    #[test]
    fn pauses_stay_in_range_and_repeat_with_the_seed() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..1000 {
            let x = a.between(300, 1500);
            assert!((300..=1500).contains(&x));
            assert_eq!(x, b.between(300, 1500));
        }
        assert_eq!(Rng::new(1).between(5, 5), 5);
    }
}
