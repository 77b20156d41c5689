//! `pixelpass-bench`: benchmarks that print numbers (a table, or one JSON
//! object per step with `--json`).
//!
//! - `bench fanout`: one MPEG-TS stream to N loopback HTTP viewers through
//!   the real hub, supervisor, server and egress; prints server CPU, delivered
//!   throughput, core per Gbit/s, stalls and RSS per viewer ([`fanout`]).
//! - `pixelpass-bench fanout-client` (hidden): the load generator `fanout` starts as
//!   its child process ([`client`]).
//! - `bench latency`: glass-to-glass latency with the clock source, one
//!   viewer per path (HTTP-TS, WHEP, headless Chromium) ([`latency`]).
//! - `bench capture`: capture + encode cost per source and size: CPU cores,
//!   frames dropped and repeated ([`capture`]).
//! - `bench join`: WebRTC join time, POST to the first decodable keyframe ([`join`]).
//! - `bench whep-fanout`: N WebRTC peers; server CPU per Gbit/s, RSS per
//!   peer, losses ([`whep_fanout`]); `pixelpass-bench whep-fanout-client` (hidden) runs
//!   the peers in a child process.
//! - `bench serve`: `pixelpass serve` as a child with N FFmpeg streams × M
//!   WHEP peers: time from `command start` to the first WHEP keyframe,
//!   server CPU (FFmpeg excluded) per Gbit/s, RSS per peer ([`serve`]).
//! - `bench adapt`: a WebRTC viewer (headless Chromium) on a link that turns
//!   thin, lossy and clean again in network namespaces; one row per second:
//!   link, estimate, layer, fps, height, loss, freezes ([`adapt`]).
//! - `bench soak`: HTTP-TS and WHEP viewers coming and going by the
//!   thousand against `host` and `serve`; fds, RSS, threads and peers before,
//!   during and after, and the slope ([`soak`]).
//! - `bench faults`: encoder errors in host and kill -9 of serve's FFmpeg,
//!   again and again, with viewers attached: each viewer's way back ([`faults`]).

#[macro_use]
mod output;

mod adapt;
mod callgrind;
mod capture;
mod fanout;
mod faults;
mod hls_cache;
mod hls_segment;
mod host;
mod http_load;
mod join;
mod latency;
mod procstat;
mod rates;
mod replay;
mod serve;
mod soak;
mod whep_fanout;

use std::process::ExitCode;

#[derive(clap::Parser, Debug)]
#[command(
    name = "pixelpass-bench",
    version,
    about = "pixelpass's benchmarks: they print numbers, never pass or fail on them"
)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Serve a 4 Mbit/s MPEG-TS stream to N loopback HTTP viewers and print
    /// server CPU, throughput, core per Gbit/s, stalls and RSS per viewer.
    Fanout(fanout::FanoutArgs),
    /// Glass-to-glass latency: a host with the clock source, one viewer
    /// (HTTP-TS, WHEP or headless Chromium) reading the time drawn into each
    /// frame; prints p50/p95/max latency, join time and unreadable frames.
    Latency(latency::LatencyArgs),
    /// LL-HLS behind nginx (caching, request collapsing): origin requests/s
    /// against 10, 100, 500 following clients.
    HlsCache(hls_cache::HlsCacheArgs),
    /// The LL-HLS segmenter's cost per stream: CPU per second of media and
    /// the memory its window holds (720p30 + AAC, encoded once by FFmpeg).
    HlsSegment(hls_segment::HlsSegmentArgs),
    /// The load generator of `fanout` (started by it as a child process).
    #[command(hide = true)]
    FanoutClient(http_load::ClientArgs),
    /// Time WebRTC (WHEP) joins: POST to the first decodable keyframe, p50/p95/max.
    Join(join::JoinArgs),
    /// Capture + encode cost per source and size: CPU cores, frames dropped
    /// and repeated (portal, X11, test pattern; --headless for the portal).
    Capture(capture::CaptureArgs),
    /// Serve a 4 Mbit/s stream to N WebRTC (WHEP) peers and print server CPU
    /// per Gbit/s delivered, RSS per peer, losses/NACKs and frames per peer.
    WhepFanout(whep_fanout::WhepFanoutArgs),
    /// The peers of `whep-fanout` (started by it as a child process).
    #[command(hide = true)]
    WhepFanoutClient(whep_fanout::WhepFanoutClientArgs),
    /// `pixelpass serve` with N FFmpeg streams × M WHEP peers: command start
    /// → first WHEP keyframe, server CPU (FFmpeg excluded) per Gbit/s, RSS.
    Serve(serve::ServeBenchArgs),
    /// A browser viewer on a link that turns thin (80 ms RTT, 2 % loss,
    /// 1.2 Mbit/s), is lifted, and takes 3 s of 10 % loss: one row per
    /// second of estimate, layer, fps, height, loss and freezes.
    Adapt(adapt::AdaptArgs),
    /// Viewers by the thousand against host and serve (HTTP-TS connect/read/
    /// close, WHEP join/leave with and without DELETE): fds, RSS, threads and
    /// peers before, during and after; the slope; back to baseline or not.
    Soak(soak::SoakArgs),
    /// Faults again and again with 5 HTTP-TS + 5 WHEP viewers: encoder
    /// errors in host, kill -9 of serve's FFmpeg; restart → every viewer back
    /// on a keyframe (ms), and no leaked fd, peer or child.
    Faults(faults::FaultsArgs),
}

/// This very binary, to start a benchmark's load child: `/proc/self/exe`
/// still runs it when a rebuild replaced the file on disk.
pub(crate) fn self_exe() -> anyhow::Result<std::path::PathBuf> {
    if std::path::Path::new("/proc/self/exe").exists() {
        Ok(std::path::PathBuf::from("/proc/self/exe"))
    } else {
        std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("cannot find this executable to start a load child: {e}"))
    }
}

/// Start `cmd` (a load child whose stdout the benchmark reads), run `f` with
/// it, and reap it: killed first, by its own PID, when `f` failed. Returns
/// `f`'s result and how the child ended (see [`exited_ok`]).
pub(crate) fn with_child<T>(
    cmd: &mut std::process::Command,
    what: &str,
    f: impl FnOnce(&mut std::process::Child) -> anyhow::Result<T>,
) -> anyhow::Result<(T, std::io::Result<std::process::ExitStatus>)> {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {what}: {e}"))?;
    let r = f(&mut child);
    if r.is_err() {
        let _ = child.kill();
    }
    let status = child.wait();
    Ok((r?, status))
}

/// [`with_child`], then [`exited_ok`]: `f`'s result only if the child also
/// exited successfully.
pub(crate) fn run_load_child<T>(
    cmd: &mut std::process::Command,
    what: &str,
    f: impl FnOnce(&mut std::process::Child) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let (r, status) = with_child(cmd, what, f)?;
    exited_ok(status, what)?;
    Ok(r)
}

/// A load child's end as an error unless it exited successfully.
pub(crate) fn exited_ok(
    status: std::io::Result<std::process::ExitStatus>,
    what: &str,
) -> anyhow::Result<()> {
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => anyhow::bail!("{what} exited with {s}"),
        Err(e) => anyhow::bail!("cannot reap {what}: {e}"),
    }
}

/// Read a child's stdout lines on a thread (`name`); the orchestrator waits
/// on the channel with timeouts. `what` names the child in the error.
pub(crate) fn child_lines(
    child: &mut std::process::Child,
    what: &str,
    name: &str,
) -> anyhow::Result<std::sync::mpsc::Receiver<String>> {
    use std::io::BufRead;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("{what} has no stdout pipe"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// The next line of a load child's stdout that parses as `T`, within
/// `timeout`; other lines are its prose, shown on stderr prefixed `who`.
pub(crate) fn next_json<T: serde::de::DeserializeOwned>(
    rx: &std::sync::mpsc::Receiver<String>,
    timeout: std::time::Duration,
    what: &str,
    who: &str,
) -> anyhow::Result<T> {
    use std::sync::mpsc::RecvTimeoutError;
    let until = std::time::Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => anyhow::bail!("{what} said nothing for {timeout:?}"),
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("{what} exited early"),
        };
        match serde_json::from_str::<T>(&line) {
            Ok(v) => return Ok(v),
            Err(_) => eprintln!("bench: {who}: {line}"),
        }
    }
}

fn main() -> ExitCode {
    let args = <BenchArgs as clap::Parser>::parse();
    pixelpass::logging::init();
    // The servers measured here run in this process: give them the
    // allocator setting `pixelpass host`/`serve` start with (src/main.rs),
    // or their RSS is not the product's.
    pixelpass::heap::fix_mmap_threshold();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pixelpass-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BenchCommand::Fanout(a) => fanout::run(a),
        BenchCommand::Latency(a) => latency::run(a),
        BenchCommand::HlsCache(a) => hls_cache::run(a),
        BenchCommand::HlsSegment(a) => hls_segment::run(a),
        BenchCommand::FanoutClient(a) => http_load::run(a),
        BenchCommand::Join(a) => join::run(a),
        BenchCommand::Capture(a) => capture::run(a),
        BenchCommand::WhepFanout(a) => whep_fanout::run(a),
        BenchCommand::WhepFanoutClient(a) => whep_fanout::run_client(a),
        BenchCommand::Serve(a) => serve::run(a),
        BenchCommand::Adapt(a) => adapt::run(a),
        BenchCommand::Soak(a) => soak::run(a),
        BenchCommand::Faults(a) => faults::run(a),
    }
}
