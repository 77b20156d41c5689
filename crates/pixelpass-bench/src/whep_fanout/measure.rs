//! One step: start the peers' process with N peers, follow its lines, and
//! measure this process (the server) over the peers' window.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::lines::{line_reader, next_line, ClientLine};
use super::procstat::{self, CpuTimes};
use super::server::Server;
use super::table::{min_median, Row};
use super::WhepFanoutArgs;
use pixelpass::egress::whep::Pacing;

struct Snap {
    at: Instant,
    cpu: CpuTimes,
    threads: BTreeMap<String, u64>,
    rss: u64,
    anon: u64,
}

impl Snap {
    fn take() -> anyhow::Result<Self> {
        let (rss, anon) = procstat::mem_bytes()?;
        Ok(Self {
            at: Instant::now(),
            cpu: procstat::process_cpu()?,
            threads: procstat::thread_ticks(),
            rss,
            anon,
        })
    }
}

pub(super) fn step(
    server: &Server,
    args: &WhepFanoutArgs,
    n: usize,
    bitrate_kbps: u32,
) -> anyhow::Result<(Row, String)> {
    let left = server.wait_idle(Duration::from_secs(20));
    if left > 0 {
        eprintln!("bench: {left} peers of the previous step are still there");
    }
    let rss_base = procstat::settled_rss()?;
    let (_, anon_base) = procstat::mem_bytes()?;
    let exe = if let Some(exe) = &args.client_exe {
        exe.clone()
    } else {
        crate::self_exe()?
    };
    let mut cmd = Command::new(exe);
    cmd.args([
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
    ]);
    let what = "the peers' process";
    let (row, detail) =
        crate::run_load_child(&mut cmd, what, |child| measure(server, args, n, child))?;
    Ok((
        Row {
            rss_base,
            anon_base,
            bitrate_kbps,
            receive_on_peers_cpu: args.in_netns,
            ..row
        },
        detail,
    ))
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
        refused,
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
    let counted = args
        .callgrind
        .then(crate::callgrind::Window::start)
        .transpose()?;
    let s0 = Snap::take()?;
    // Not under callgrind: its reads would be counted as the server's.
    let peak = (!args.callgrind)
        .then(procstat::MemPeak::start)
        .transpose()?;
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
    let (rss_peak, anon_peak) = peak.map(|p| p.stop()).transpose()?.unwrap_or((0, 0));
    let instructions = counted.map(|w| w.instructions()).transpose()?;
    let wall = s1.at.duration_since(s0.at).as_secs_f64();
    let cpu = s1.cpu.since(&s0.cpu);
    let udp: u64 = peers.iter().map(|p| p.udp_bytes).sum();
    let datagrams: u64 = peers.iter().map(|p| p.udp_datagrams).sum();
    let frames: Vec<u64> = peers.iter().map(|p| p.frames).collect();
    let (frames_min, frames_median) = min_median(&frames);
    let row = Row {
        bitrate_kbps: 0, // the caller's
        peers: n,
        connected,
        refused,
        window_s: wall,
        cpu_user_s: cpu.user.as_secs_f64(),
        cpu_sys_s: cpu.system.as_secs_f64(),
        // Counted over the peers' window, rated over the server's.
        udp_bytes: (udp as f64 * wall / window_s.max(1e-9)) as u64,
        udp_datagrams: (datagrams as f64 * wall / window_s.max(1e-9)) as u64,
        rss_base: 0,
        rss_streaming: s0.rss.max(s1.rss).max(rss_peak),
        anon_base: 0,
        anon_streaming: s0.anon.max(s1.anon).max(anon_peak),
        lost: peers.iter().map(|p| p.lost).sum(),
        nacks: peers.iter().map(|p| p.nacks).sum(),
        gaps: peers.iter().map(|p| p.gaps).sum(),
        frames_min,
        frames_median,
        instructions,
        peers_cpu_per_s: client_cpu_s / window_s.max(1e-9),
        receive_on_peers_cpu: false, // the caller's
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
        "      pacing {}; bwe {:?}; server CPU {} µs per packet-to-peer{}; connect {connect_s:.1} s; server threads s/s: {}; peers' cpu {:.2} s/s; audio pkts/peer/s {:.1}; replay late max {:.1} ms{}",
        if args.pacing == Pacing::On { "on" } else { "off" },
        args.bwe,
        row.us_per_packet().map_or_else(|| "-".to_owned(), |u| format!("{u:.2}")),
        row.instructions_per_packet()
            .map_or_else(String::new, |i| format!(" ({i:.0} instructions)")),
        threads.join(", "),
        client_cpu_s / window_s.max(1e-9),
        audio as f64 / peers.len().max(1) as f64 / window_s.max(1e-9),
        server.late_us.load(Ordering::Relaxed) as f64 / 1000.0,
        if closed_early > 0 { format!("; {closed_early} peers closed early") } else { String::new() },
    );
    Ok((row, detail))
}
