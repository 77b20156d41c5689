//! `pixelpass-bench soak`: viewers come and go by the thousand against the
//! real `host` and `serve` (child processes on loopback), and the server
//! must end where it began.
//!
//! Per target: a warm-up (`--warmup`, by default as long as each load, so
//! lazily made things exist and the warm-up reaches the load's peak of live
//! peers: capture running, allocator arenas, str0m's crypto, maps grown to
//! that peak), every viewer gone, rest until the server gave freed heap back
//! ([`pixelpass::heap`]) → **before**; `--http-cycles` HTTP-TS connect / GET /
//! first body bytes / close in `--batches` batches, then `--whep-cycles`
//! WHEP joins (ICE, DTLS, first keyframe) that leave half with DELETE and
//! half by vanishing (freed by the consent timeout, `--webrtc-timeout`),
//! sampled after each batch → **during**; every viewer and peer gone, the
//! same rest → **after** (each the median RSS of eleven samples a second apart). Sampled: open descriptors (/proc/PID/fd), RSS, threads
//! (/proc/PID/task: tokio's tasks are not counted by the server), viewers and
//! WebRTC peers (`/TOKEN/status`), FFmpeg children. Printed: the samples, the
//! slope of RSS and descriptors over the cycles of each load (least squares,
//! per 1000 cycles), and whether the server came back: descriptors exactly,
//! RSS within `--rss-tolerance-kib`.

mod cycles;
pub mod target;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::output::{self, step};
use cycles::{Cycle, Done};
use target::{Kind, Sample, Target};

#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// One JSON object per sample and per summary on stdout; prose on stderr.
    #[arg(long)]
    pub json: bool,
    /// The servers to soak, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Kind::Host, Kind::Serve])]
    pub targets: Vec<Kind>,
    /// HTTP-TS connect/read/close cycles (the full run: 10000).
    #[arg(long, default_value_t = 1000)]
    pub http_cycles: u64,
    /// WHEP join/leave cycles, half leaving with DELETE (the full run: 2000).
    #[arg(long, default_value_t = 200)]
    pub whep_cycles: u64,
    /// HTTP-TS cycles at once.
    #[arg(long, default_value_t = 16)]
    pub http_concurrency: usize,
    /// WHEP cycles at once.
    #[arg(long, default_value_t = 4)]
    pub whep_concurrency: usize,
    /// Samples during each load.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batches: u64,
    /// Seconds a vanished WebRTC viewer keeps its peer (the server's --webrtc-timeout).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub webrtc_timeout: u32,
    /// The warm-up, as a fraction of each load (at least 20 HTTP-TS and 4
    /// WHEP cycles): what the server keeps after its first peak of peers
    /// (maps grown to it, heap pages it fragmented) is part of the baseline,
    /// not a leak. With a quarter, `serve` ended 5–11 MiB above a baseline
    /// taken before its peak, whether after 2 000, 4 000 or 8 000 WHEP
    /// cycles (no growth with cycles); with a whole load, −0.9 MiB.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// An environment variable for the server (`MALLOC_ARENA_MAX=2`), repeatable.
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub server_env: Vec<(String, String)>,
    /// How far RSS may end above where it began and still count as back.
    #[arg(long, default_value_t = 2048)]
    pub rss_tolerance_kib: u64,
}

/// One row: where in the run, and the sample.
struct Row {
    phase: String,
    cycles: u64,
    secs: f64,
    s: Sample,
}

pub fn run(args: SoakArgs) -> anyhow::Result<ExitCode> {
    output::set_json(args.json);
    if let Err(e) = crate::procstat::raise_nofile_limit() {
        say!("cannot raise this process's open-file limit: {e}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut all_back = true;
    for &kind in &args.targets {
        all_back &= soak(&rt, kind, &args)?;
    }
    Ok(if all_back {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn soak(rt: &tokio::runtime::Runtime, kind: Kind, args: &SoakArgs) -> anyhow::Result<bool> {
    let max_viewers = 4000;
    let env: Vec<(&str, &str)> = args
        .server_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let target = Target::start(kind, max_viewers, args.webrtc_timeout, &env);
    let t0 = Instant::now();
    say!(
        "soak {kind} (pid {}): {} HTTP-TS cycles ×{}, {} WHEP cycles ×{}",
        target.pid,
        args.http_cycles,
        args.http_concurrency,
        args.whep_cycles,
        args.whep_concurrency
    );
    let free_within = Duration::from_secs(u64::from(args.webrtc_timeout) * 3 + 30);

    // Warm-up, then the baseline.
    let warm_http = ((args.http_cycles as f64 * args.warmup) as u64).max(20);
    let warm_whep = ((args.whep_cycles as f64 * args.warmup) as u64).max(4);
    let (d, why) = rt.block_on(cycles::run(
        Cycle::Http,
        target.addr,
        target.stream_path(),
        0,
        warm_http,
        args.http_concurrency,
    ));
    report_failures("warm-up HTTP-TS", &d, why);
    let whep_path = format!("/{}/whep", target.token);
    let (d, why) = rt.block_on(cycles::run(
        Cycle::Whep,
        target.addr,
        whep_path.clone(),
        0,
        warm_whep,
        args.whep_concurrency,
    ));
    report_failures("warm-up WHEP", &d, why);
    settle(&target, free_within, "warm-up");
    let kinds_before = target.fd_kinds();
    let before = steady(&target);
    let mut rows = vec![Row {
        phase: "before".into(),
        cycles: 0,
        secs: t0.elapsed().as_secs_f64(),
        s: before.clone(),
    }];
    header(kind);
    print_row(kind, rows.last().expect("a row"));

    let mut slopes = Vec::new();
    let mut totals = Vec::new();
    for (cycle, count, concurrency, path, name) in [
        (
            Cycle::Http,
            args.http_cycles,
            args.http_concurrency,
            target.stream_path(),
            "http",
        ),
        (
            Cycle::Whep,
            args.whep_cycles,
            args.whep_concurrency,
            whep_path.clone(),
            "whep",
        ),
    ] {
        let mut total = Done::default();
        let mut first_why = None;
        let mut points = Vec::new();
        let batch = count.div_ceil(args.batches).max(1);
        let started = Instant::now();
        let mut done_cycles = 0;
        while done_cycles < count {
            let n = batch.min(count - done_cycles);
            let (d, why) = rt.block_on(cycles::run(
                cycle,
                target.addr,
                path.clone(),
                done_cycles,
                n,
                concurrency,
            ));
            done_cycles += n;
            total.add(d, why, &mut first_why);
            let s = target.sample();
            points.push((done_cycles as f64, s.rss_kib as f64, s.fds as f64));
            rows.push(Row {
                phase: name.into(),
                cycles: done_cycles,
                secs: t0.elapsed().as_secs_f64(),
                s,
            });
            print_row(kind, rows.last().expect("a row"));
            if !target.alive() {
                anyhow::bail!("{kind} died during the {name} load");
            }
        }
        let rate = count as f64 / started.elapsed().as_secs_f64().max(1e-3);
        report_failures(name, &total, first_why);
        let rss_slope = slope(points.iter().map(|p| (p.0, p.1))) * 1000.0;
        let fd_slope = slope(points.iter().map(|p| (p.0, p.2))) * 1000.0;
        slopes.push((name, rss_slope, fd_slope, rate));
        totals.push((name, total));
    }

    settle(&target, free_within, "the load");
    let kinds_after = target.fd_kinds();
    let after = steady(&target);
    if kinds_after != kinds_before {
        say!("{kind}: descriptors by kind before {kinds_before:?}, after {kinds_after:?}");
    }
    rows.push(Row {
        phase: "after".into(),
        cycles: args.http_cycles + args.whep_cycles,
        secs: t0.elapsed().as_secs_f64(),
        s: after.clone(),
    });
    print_row(kind, rows.last().expect("a row"));

    let fd_delta = after.fds as i64 - before.fds as i64;
    let rss_delta = after.rss_kib as i64 - before.rss_kib as i64;
    let max_peers = rows.iter().map(|r| r.s.peers).max().unwrap_or(0);
    let back = fd_delta == 0 && rss_delta <= args.rss_tolerance_kib as i64;
    for (name, rss_slope, fd_slope, rate) in &slopes {
        let t = totals
            .iter()
            .find(|t| t.0 == *name)
            .map(|t| t.1)
            .unwrap_or_default();
        step(
            "soak",
            &format!(
                "{kind} {name}: {} ok, {} failed ({} DELETE, {} vanished), {rate:.1} cycles/s; slope RSS {rss_slope:+.1} KiB and fds {fd_slope:+.2} per 1000 cycles",
                t.ok, t.failed, t.deleted, t.vanished
            ),
            json!({"target": kind, "summary": name, "ok": t.ok, "failed": t.failed,
                   "deleted": t.deleted, "vanished": t.vanished, "cycles_per_s": rate,
                   "rss_kib_per_1000": rss_slope, "fds_per_1000": fd_slope}),
        );
    }
    step(
        "soak",
        &format!(
            "{kind}: fds {} → {} ({fd_delta:+}), RSS {} → {} KiB ({rss_delta:+}; anonymous {:+}), threads {} → {}, max peers {max_peers}: {}",
            before.fds,
            after.fds,
            before.rss_kib,
            after.rss_kib,
            after.anon_kib as i64 - before.anon_kib as i64,
            before.threads,
            after.threads,
            if back { "back to baseline" } else { "NOT back to baseline" }
        ),
        json!({"target": kind, "summary": "baseline", "fds_before": before.fds, "fds_after": after.fds,
               "rss_kib_before": before.rss_kib, "rss_kib_after": after.rss_kib,
               "anon_kib_before": before.anon_kib, "anon_kib_after": after.anon_kib,
               "threads_before": before.threads, "threads_after": after.threads,
               "max_peers": max_peers, "back": back}),
    );
    Ok(back)
}

/// Every viewer gone (bounded), then rest so closing work is done and the
/// server has given freed heap back (it does [`pixelpass::heap::QUIET`]
/// after its audience stopped changing, checked each [`pixelpass::heap::TICK`]).
fn settle(target: &Target, within: Duration, after: &str) {
    if !target.wait_freed(within) {
        let (v, p) = target.viewers_and_peers();
        say!("after {after}: still {v} viewers and {p} peers after {within:?}");
    }
    std::thread::sleep(Duration::from_secs(2) + pixelpass::heap::QUIET + 2 * pixelpass::heap::TICK);
}

/// Eleven samples a second apart: the median RSS (an encoder's buffers move
/// it by a megabyte from one moment to the next, and its heap grows back
/// for seconds after the server's trim), the most descriptors seen.
fn steady(target: &Target) -> Sample {
    let mut samples: Vec<Sample> = (0..STEADY_SAMPLES)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
            target.sample()
        })
        .collect();
    let fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    samples.sort_by_key(|s| s.rss_kib);
    let mut mid = samples.swap_remove(STEADY_SAMPLES / 2);
    mid.fds = fds;
    mid
}

/// Samples in a [`steady`] look (odd: the median is one of them).
const STEADY_SAMPLES: usize = 11;

fn report_failures(what: &str, d: &Done, why: Option<String>) {
    if d.failed > 0 {
        say!(
            "{what}: {} of {} cycles failed; the first: {}",
            d.failed,
            d.ok + d.failed,
            why.unwrap_or_default()
        );
    }
}

fn header(kind: Kind) {
    if !output::json() {
        say!(
            "{kind}: phase   cycles   secs    fds  RSS KiB anon KiB  threads viewers peers ffmpeg"
        );
    }
}

fn print_row(kind: Kind, r: &Row) {
    step(
        "soak",
        &format!(
            "{kind}: {:<7} {:>6} {:>6.0} {:>6} {:>8} {:>8} {:>8} {:>7} {:>5} {:>6}",
            r.phase,
            r.cycles,
            r.secs,
            r.s.fds,
            r.s.rss_kib,
            r.s.anon_kib,
            r.s.threads,
            r.s.viewers,
            r.s.peers,
            r.s.children
        ),
        json!({"target": kind, "phase": r.phase, "cycles": r.cycles, "secs": r.secs, "sample": r.s}),
    );
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Least-squares slope of y over x (0 with fewer than two points).
fn slope(points: impl Iterator<Item = (f64, f64)>) -> f64 {
    let pts: Vec<(f64, f64)> = points.collect();
    let n = pts.len() as f64;
    if pts.len() < 2 {
        return 0.0;
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_slope_of_a_line_and_of_a_flat_run() {
        let line = (0..10).map(|i| (i as f64 * 100.0, 5.0 + i as f64 * 2.0));
        assert!((super::slope(line) - 0.02).abs() < 1e-9);
        assert_eq!(super::slope((0..5).map(|i| (i as f64, 7.0))), 0.0);
        assert_eq!(super::slope(std::iter::once((1.0, 1.0))), 0.0);
    }
}
