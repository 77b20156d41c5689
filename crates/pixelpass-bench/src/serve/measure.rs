//! The load measurement: /proc readings of the server and its FFmpegs, the
//! phases (one start at a time, no peer, the peers' window) and what they print.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::join::start_and_join;
use super::server::{Report, ServeChild};
use super::table::{
    fmt_opt, mib, ms, opt_ms, spread, stream_header, stream_row, totals_header, totals_row,
    StreamRow, Totals,
};
use super::{stream_config, stream_id, ServeBenchArgs};
use crate::procstat;
use crate::whep_fanout::{self, min_median, ClientLine, PeerWindow};

// ─────────────────────────────────── /proc of other PIDs ───────────────────────────────────

/// utime + stime of a whole process (every thread), clock ticks; and its state letter.
pub(super) fn pid_ticks(pid: u32) -> Option<(u64, u64, String, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let s = procstat::parse_stat(&text)?;
    let state = text[text.rfind(')')? + 1..].trim_start().chars().next()?;
    Some((s.utime_ticks, s.stime_ticks, s.comm, state))
}

pub(super) fn pid_rss(pid: u32) -> Option<u64> {
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

pub(super) fn measure(
    server: &mut ServeChild,
    exe: &std::path::Path,
    args: &ServeBenchArgs,
    ts_ports: Option<&[u16]>,
    rss_base: u64,
    ffmpeg_pids: &mut BTreeSet<u32>,
) -> anyhow::Result<String> {
    let n = args.streams;
    let hz = procstat::clock_ticks_per_sec() as f64;
    for i in 0..n {
        let port = ts_ports.and_then(|p| p.get(i as usize).copied());
        let body = stream_config(i, args, port).to_string();
        let (status, resp) = server.api("POST", "/streams", &body)?;
        if status != 201 {
            bail!("POST /streams ({}): {status} {resp}", stream_id(i));
        }
    }

    // 1. Starts, one at a time.
    say!();
    say!(
        "command start → first WHEP keyframe, one stream at a time (ms from just before the PUT):"
    );
    say!(
        "{:<6} {:>6} {:>7} {:>9} {:>8}",
        "stream",
        "PUT",
        "answer",
        "connected",
        "keyframe"
    );
    let timeout = Duration::from_secs(args.join_timeout_s);
    let mut joins = Vec::new();
    for i in 0..n {
        let j = start_and_join(server, exe, args, i, timeout)?;
        let rep = server.report(&stream_id(i))?;
        ffmpeg_pids.extend(rep.pid);
        say!(
            "{:<6} {:>6} {:>7} {:>9} {:>8}  {}",
            stream_id(i),
            ms(j.put),
            opt_ms(j.answer),
            opt_ms(j.connected),
            opt_ms(j.keyframe),
            j.error.as_deref().unwrap_or("")
        );
        if rep.state != "live" {
            bail!(
                "stream {} did not start: state {:?}, last error {:?}",
                stream_id(i),
                rep.state,
                rep.last_error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.kind, e.message))
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
    say!("{join_line}");
    if let Some((lo, mid, hi)) = spread(&answers) {
        say!(
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
                say!("bench: {peers} probe peers still counted after 10 s");
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
    let mut cmd = Command::new(crate::self_exe()?);
    cmd.args(["whep-fanout-client", "--url", &urls.join(",")])
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
        ]);
    let what = "the peers' process";
    let ((mut t, w0, w1, peers, client_cpu_s, connect_s), status) =
        crate::with_child(&mut cmd, what, |child| window(server, args, child, total))?;
    // The numbers are in: a peers' process that ended badly is only reported.
    if let Err(e) = crate::exited_ok(status, what) {
        eprintln!("bench: {e}");
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
    say!();
    say!("per stream, over the {wall:.1} s window:");
    say!("{}", stream_header());
    for r in &rows {
        crate::output::step("serve", &stream_row(r), r.json());
    }

    // Whole server.
    say!();
    say!("server (`serve` PID only, FFmpeg excluded), over the window:");
    say!("{}", totals_header());
    crate::output::step("serve", &totals_row(&t), t.json());
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
    say!(
        "  delivered: peers' UDP (SRTP+SRTCP+STUN) {:.3} Gbit/s (used above); server RTP payload (bytes_out.whep) {:.3} Gbit/s",
        t.gbps(),
        t.payload_gbps()
    );
    say!(
        "  server CPU with the {n} streams and no peer: {} s/s; the peers added {} s/s → {} core/Gbit/s marginal",
        fmt_opt(t.idle_cpu_per_s, 3),
        fmt_opt(t.idle_cpu_per_s.map(|i| t.cpu_per_s() - i), 3),
        fmt_opt(t.marginal_core_per_gbps(), 3)
    );
    say!("  server threads s/s: {}", threads.join(", "));
    say!(
        "  not the server: {n} FFmpeg {ffmpeg_total:.2} s/s; peers' process {:.2} s/s; machine busy {machine_busy:.2} of {} CPUs",
        client_cpu_s / wall,
        procstat::online_cpus()
    );
    say!(
        "  peers connected in {connect_s:.1} s; peers with no frame in the window: {silent}; RTP from FFmpeg lost: {rtp_in_lost}; FFmpeg speed min {speed_min:.2}"
    );
    if speed_min < 0.95 && !args.published {
        say!("  NOTE: an encoder ran below real time (speed < 0.95): the machine did not keep up");
    }
    say!("{join_line}");
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
        refused: _,
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
