//! `pixelpass bench fanout`: one 4 Mbit/s MPEG-TS stream to N loopback
//! HTTP viewers, through the same code as `pixelpass host` (hub, supervisor,
//! HTTP server with its limits, HTTP-TS egress) fed by a replay producer.
//!
//! The server runs in this process, pinned to one CPU; the viewers run in a
//! child process (`pixelpass-bench fanout-client`) pinned to another, so this process's
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
//!
//! Files: this one holds the targets, the arguments and [`run`] (the steps
//! and what is printed around them); [`server`] the server under test with
//! its replay producer, [`measure`] one step (the load generator child and
//! the server-side snapshots), [`table`] the measured rows, the printed
//! table, stalls and the verdict.

mod measure;
mod server;
mod table;

pub use table::{table_header, table_row, verdict};

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::procstat;
use super::replay::Sample;
use crate::http_load::MAX_VIEWERS;
use measure::step;
use server::Server;

/// The goal from issue 6.
pub const TARGET_CORE_PER_GBPS: f64 = 0.06;
pub const TARGET_RSS_PER_VIEWER: f64 = 64.0 * 1024.0;
/// A gap between two reads longer than this is a stall.
pub const STALL_GAP_MS: u64 = 1000;
/// A viewer that got less than this share of the published bytes stalled.
pub const STALL_SHARE: f64 = 0.9;

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// One JSON object per step on stdout (the table's figures); prose goes to stderr.
    #[arg(long)]
    pub json: bool,
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

use super::rates::mib;

pub fn run(args: FanoutArgs) -> anyhow::Result<ExitCode> {
    crate::output::set_json(args.json);
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

    pixelpass::heap::release_free();
    let rss_before_stream = procstat::rss_bytes()?;
    let server = Server::start(&args, sample.clone(), max_n)?;
    say!("pixelpass bench fanout");
    say!(
        "  stream: {} ({:.2} Mbit/s as replayed, {} bursts per {:.1} s lap)",
        sample.origin,
        sample.bitrate() / 1e6,
        sample.bursts.len(),
        sample.period.as_secs_f64()
    );
    say!(
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
    pixelpass::heap::release_free();
    let rss_stream = procstat::rss_bytes()?;
    say!(
        "  hub ring: {cap} chunks × {:.1} KiB avg = {:.2} MiB (GOP cache {:.2} MiB, same chunks); RSS {:.1} MiB with the stream running, {:+.1} MiB for it",
        avg_chunk / 1024.0,
        mib(ring),
        mib(server.hub.gop_bytes() as f64),
        mib(rss_stream as f64),
        mib(rss_stream as f64 - rss_before_stream as f64),
    );
    say!();
    say!("{}", table_header());

    let mut rows = Vec::new();
    let mut failed = false;
    for &n in &args.viewers {
        match step(&server, &args, n) {
            Ok(out) => {
                crate::output::step("fanout", &table_row(&out.row), out.row.json());
                say!("{}", out.detail);
                rows.push(out.row);
            }
            Err(e) => {
                say!("{n:>7}  step failed: {e:#}");
                failed = true;
            }
        }
    }
    if rows.len() > 1 {
        say!();
        say!("{}", table_header());
        for r in &rows {
            say!("{}", table_row(r));
        }
    }
    if let Some(v) = verdict(&rows) {
        say!("{v}");
    }
    server.stop();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
