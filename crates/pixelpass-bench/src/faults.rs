//! `pixelpass-bench faults`: faults again and again with viewers attached.
//! `host` (with the hidden, test-only `PIXELPASS_TEST_FAULTS=1`) gets
//! SIGUSR1, on which its H.264 encoder posts an ERROR on the bus; `serve`'s
//! FFmpeg gets `kill -9`. `--viewers-http` HTTP-TS and `--viewers-whep`
//! WHEP viewers (the testkit's, which POST again when a peer is closed, as
//! the player page does) stay through `--rounds` faults, each `--spacing`
//! seconds after the previous restart (more than 10 s, so each restart
//! comes after the supervisor's first back-off of 0.5 s / serve's
//! reconnect delay of 1 s).
//! Per round: fault → restart (the stream's `restarts` went up), and per
//! viewer restart → the frame that ended its outage, which must be a
//! keyframe. At the end: descriptors before and after (the same viewers
//! attached), WebRTC peers, children, and that every killed FFmpeg was reaped.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::output::{self, step};
use crate::soak::target::{Kind, Target};
use pixelpass_testkit::faults::{round, Watchers};
use pixelpass_testkit::serve::{children_of, wait_gone};

#[derive(clap::Args, Debug, Clone)]
pub struct FaultsArgs {
    /// One JSON object per round and per summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Kind::Host, Kind::Serve])]
    pub targets: Vec<Kind>,
    /// Faults per target.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    #[arg(long, default_value_t = 5)]
    pub viewers_http: usize,
    #[arg(long, default_value_t = 5)]
    pub viewers_whep: usize,
    /// Seconds from one restart to the next fault.
    #[arg(long, default_value_t = 11.0)]
    pub spacing: f64,
    /// A viewer back later than this after the restart counts as late.
    #[arg(long, default_value_t = 3.0)]
    pub target_s: f64,
}

pub fn run(args: FaultsArgs) -> anyhow::Result<ExitCode> {
    output::set_json(args.json);
    let mut ok = true;
    for &kind in &args.targets {
        ok &= faults(kind, &args)?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn faults(kind: Kind, args: &FaultsArgs) -> anyhow::Result<bool> {
    let env: &[(&str, &str)] = match kind {
        Kind::Host => &[("PIXELPASS_TEST_FAULTS", "1")],
        Kind::Serve => &[],
    };
    let target = Target::start(kind, 100, 15, env);
    let w = Watchers::start(
        target.addr,
        &target.stream_path(),
        &target.whep_url(),
        args.viewers_http,
        args.viewers_whep,
    );
    if !w.wait_keyframe_after(Instant::now(), Duration::from_secs(30)) {
        anyhow::bail!(
            "{kind}: the viewers got no first keyframe within 30 s; its log:\n{}",
            target.log()
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let before = target.sample();
    say!(
        "{kind} (pid {}): {} faults with {} HTTP-TS + {} WHEP viewers, {} s apart",
        target.pid,
        args.rounds,
        args.viewers_http,
        args.viewers_whep,
        args.spacing
    );
    if !output::json() {
        say!(
            "{kind}: round  restart after fault  worst viewer back  on keyframes  WHEP reconnects"
        );
    }
    let mut worst_all = Vec::new();
    let mut killed = Vec::new();
    let mut all_on_key = true;
    for i in 0..args.rounds {
        let started = Instant::now();
        let reconnects0: u64 = w
            .whep
            .iter()
            .map(|s| s.reconnects.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        let r = match kind {
            Kind::Host => round(
                &w,
                || {
                    // SAFETY: kill(2) of our own child by its PID.
                    unsafe { libc::kill(target.pid as i32, libc::SIGUSR1) };
                },
                || target.restarts(),
                Duration::from_secs(20),
            ),
            Kind::Serve => {
                let ffmpeg = target
                    .ffmpeg_pid()
                    .ok_or_else(|| anyhow::anyhow!("serve's stream has no FFmpeg running"))?;
                killed.push(ffmpeg);
                round(
                    &w,
                    || {
                        // SAFETY: kill(2) of serve's FFmpeg child by its PID.
                        unsafe { libc::kill(ffmpeg as i32, libc::SIGKILL) };
                    },
                    || target.restarts(),
                    Duration::from_secs(20),
                )
            }
        };
        let reconnects: u64 = w
            .whep
            .iter()
            .map(|s| s.reconnects.load(std::sync::atomic::Ordering::Relaxed))
            .sum::<u64>()
            - reconnects0;
        let worst = r.worst();
        let on_key = r.all_back_on_keyframes();
        all_on_key &= on_key;
        worst_all.push(worst.map_or(f64::INFINITY, |d| d.as_secs_f64()));
        step(
            "faults",
            &format!(
                "{kind}: {:>5}  {:>17.0} ms  {:>14} ms  {:>12}  {:>15}",
                i + 1,
                r.restart_after.as_secs_f64() * 1000.0,
                worst.map_or("never".into(), |d| format!(
                    "{:.0}",
                    d.as_secs_f64() * 1000.0
                )),
                if on_key { "all" } else { "NOT all" },
                reconnects
            ),
            json!({"target": kind, "round": i + 1, "restart_after_ms": r.restart_after.as_secs_f64() * 1000.0,
                   "worst_back_ms": worst.map(|d| d.as_secs_f64() * 1000.0), "on_keyframes": on_key,
                   "whep_reconnects": reconnects,
                   "viewers_back_ms": r.viewers.iter().map(|v| v.1.map(|d| d.as_secs_f64() * 1000.0)).collect::<Vec<_>>()}),
        );
        // Spaced from the restart: a run that lives `spacing` (> 10 s) resets
        // the restart back-off, so every round restarts after the first delay.
        let left = Duration::from_secs_f64(args.spacing)
            .saturating_sub(started.elapsed().saturating_sub(r.restart_after));
        std::thread::sleep(left);
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = target.sample();
    let reaped = killed
        .iter()
        .all(|&p| wait_gone(u64::from(p), Duration::from_secs(5)));
    let children = children_of(target.pid).len();
    let mut sorted = worst_all.clone();
    sorted.sort_by(f64::total_cmp);
    let p50 = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let max = sorted.last().copied().unwrap_or(0.0);
    let late = worst_all.iter().filter(|&&s| s > args.target_s).count();
    let expect_children = usize::from(kind == Kind::Serve);
    let clean = after.fds == before.fds
        && after.peers == args.viewers_whep as u64
        && children == expect_children
        && reaped;
    step(
        "faults",
        &format!(
            "{kind}: {} rounds; worst viewer back after the restart p50 {:.0} ms, max {:.0} ms, {late} over {} s; on keyframes every time: {}; fds {} → {}, peers {} → {}, children {children}, killed FFmpegs reaped: {reaped}: {}",
            args.rounds,
            p50 * 1000.0,
            max * 1000.0,
            args.target_s,
            if all_on_key { "yes" } else { "NO" },
            before.fds,
            after.fds,
            before.peers,
            after.peers,
            if clean { "nothing leaked" } else { "LEAKED" }
        ),
        json!({"target": kind, "summary": true, "rounds": args.rounds, "worst_back_p50_ms": p50 * 1000.0,
               "worst_back_max_ms": max * 1000.0, "late": late, "on_keyframes": all_on_key,
               "fds_before": before.fds, "fds_after": after.fds, "peers_before": before.peers,
               "peers_after": after.peers, "children": children, "reaped": reaped, "clean": clean}),
    );
    w.stop();
    Ok(all_on_key && late == 0 && clean)
}
