//! One step of the benchmark: start the load generator child with N
//! viewers, wait for its `ready` line, snapshot the server side (CPU, per
//! thread and per core, hub bytes, RSS) around its window, and turn its
//! `result` line into a [`Row`] and a detail line.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::server::Server;
use super::table::{count_stalls, spread_mbps, Row};
use super::FanoutArgs;
use crate::http_load::ClientEvent;
use crate::procstat::{self, CpuLine, CpuTimes};

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
    crate::child_lines(child, "the client", "bench-client-io")
}

fn next_event(rx: &mpsc::Receiver<String>, timeout: Duration) -> anyhow::Result<ClientEvent> {
    crate::next_json(rx, timeout, "the client", "client")
}

pub(super) struct StepOutcome {
    pub(super) row: Row,
    pub(super) detail: String,
}

pub(super) fn step(server: &Server, args: &FanoutArgs, n: usize) -> anyhow::Result<StepOutcome> {
    let left = server.wait_idle(Duration::from_secs(15));
    if left > 0 {
        eprintln!("bench: {left} viewers of the previous step are still connected");
    }
    let rss_base = procstat::settled_rss()?;

    let mut cmd = Command::new(crate::self_exe()?);
    cmd.args(["fanout-client", "--url", &server.url])
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
        ]);
    let what = "the load generator";
    let (row, detail) =
        crate::run_load_child(&mut cmd, what, |child| measure(server, args, n, child))?;
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
