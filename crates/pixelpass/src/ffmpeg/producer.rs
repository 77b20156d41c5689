//! [`FfmpegProducer`]: one run = one FFmpeg child feeding the hub.
//!
//! Start: bind the adjacent RTP port pair and start draining it, tell the hub
//! a run begins (with no keyframe source: FFmpeg cannot make keyframes on
//! request, so joins use the cached GOP), spawn FFmpeg with our output legs,
//! read its stdout TS into the hub through the ingest loop, its stderr into
//! the log tail and its `-progress` into the report; resolve once media
//! arrives, or with FFmpeg's own last error if it exits first.
//!
//! A run fails when FFmpeg exits (whatever the status: a restream never ends
//! by itself) or when no media came for `stale_timeout_seconds`. Stop: FFmpeg
//! first (SIGTERM to its process group, SIGKILL after a grace period, reaped),
//! then the RTP sources close. The supervisor runs the teardown hooks (WHEP
//! peers) before it calls stop, so peers go before sources.
//!
//! Layers ([`super::layers`]): each layer 1.. has a video RTP port of its own
//! feeding `hub.layer(i)`, and its TS comes on an extra pipe into the same
//! layer's hub; each layer's info starts as asked for and takes its real size
//! and rate from its first SPS. No layer has a keyframe source.

use std::ffi::OsString;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::command::{self, Legs};
use super::log::{endpoint, mask, summarize_exit};
use super::progress::ProgressParser;
use super::report::ProcessState;
use super::{child, layers, ports, probe};
use crate::config::StreamConfig;
use crate::hub::{Hub, Track};
use crate::ingest;
use crate::ingest::rtp as rtp_in;
use crate::supervisor::{BoxFuture, FailureKind, Producer, ProducerError, Run, RunHandle};

/// How long FFmpeg may take to send its first media.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long FFmpeg gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_millis(1000);
/// Bytes per read from FFmpeg's stdout.
const TS_READ: usize = 64 * 1024;

pub struct FfmpegProducer {
    cfg: StreamConfig,
    program: OsString,
    state: Arc<ProcessState>,
}

impl FfmpegProducer {
    /// `program`: the FFmpeg binary (`ffmpeg` from PATH unless
    /// `PIXELPASS_FFMPEG` says otherwise).
    pub fn new(cfg: StreamConfig, state: Arc<ProcessState>) -> Self {
        let program = std::env::var_os("PIXELPASS_FFMPEG").unwrap_or_else(|| "ffmpeg".into());
        Self {
            cfg,
            program,
            state,
        }
    }
}

impl Producer for FfmpegProducer {
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        Box::pin(start(
            self.cfg.clone(),
            self.program.clone(),
            self.state.clone(),
            hub,
        ))
    }
}

/// A start step that failed: `what` it was, and why.
fn err(what: &str, e: impl std::fmt::Display) -> ProducerError {
    ProducerError::start_failed(format!("{what}: {e}"))
}

async fn start(
    cfg: StreamConfig,
    program: OsString,
    state: Arc<ProcessState>,
    hub: Hub,
) -> Result<Run, ProducerError> {
    // Copy or encode: decided (and said) before anything is bound.
    let probe_start = Instant::now();
    let earlier = state.video_choice();
    let choice = probe::choose(&program, &cfg, earlier.clone()).await;
    let how = if earlier.as_ref() == Some(&choice) {
        "as the input was found at an earlier run of this config".to_owned()
    } else {
        format!("decided in {} ms", probe_start.elapsed().as_millis())
    };
    state.log_line(&format!(
        "pixelpass: video: {} ({}), {how}",
        choice.mode, choice.why
    ));
    tracing::info!(stream = %cfg.id, mode = choice.mode, why = %choice.why, "video");
    state.set_video(choice.clone(), cfg.keyframe_interval_seconds);
    let listening = cfg.listening_input().map(|u| endpoint(&u));
    // Sources first: bound and draining before FFmpeg sends a packet.
    let (video, audio) = ports::bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .map_err(|e| ProducerError::start_failed(e.to_string()))?;
    let video_port = video
        .local_addr()
        .map_err(|e| err("cannot read the RTP port", e))?
        .port();
    let video = UdpSocket::from_std(video).map_err(|e| err("cannot use the RTP socket", e))?;
    let audio = UdpSocket::from_std(audio).map_err(|e| err("cannot use the RTP socket", e))?;
    // Layers 1..: a video port each (layer 0's pair stays adjacent).
    let extra = hub.layer_count().saturating_sub(1).min(2);
    let mut layer_sockets = Vec::new();
    let mut layer_ports = [0u16; 2];
    for port in layer_ports.iter_mut().take(extra) {
        let s = ports::bind_one(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .map_err(|e| ProducerError::start_failed(e.to_string()))?;
        *port = s
            .local_addr()
            .map_err(|e| err("cannot read a layer's RTP port", e))?
            .port();
        layer_sockets
            .push(UdpSocket::from_std(s).map_err(|e| err("cannot use a layer's RTP socket", e))?);
    }
    hub.begin_run(None);
    for (i, layer) in hub.layers().enumerate() {
        // Said before the first SPS tells the real size (kept from the last run till then).
        let said = layers::nominal(&cfg, i);
        let known = layer.layer_info().filter(|l| l.width > 0);
        layer.set_layer_info(match known {
            Some(k) => crate::hub::LayerInfo {
                width: k.width,
                height: k.height,
                fps: if said.fps > 0 { said.fps } else { k.fps },
                ..said
            },
            None => said,
        });
    }
    // The WHEP answer states the profile the copied H.264 really has (learned
    // from its SPS); an encode is ours (Constrained Baseline).
    hub.set_h264_profile(None);
    let (seen_tx, mut seen) = watch::channel(None::<Instant>);
    let mut sources = vec![
        tokio::spawn(rtp_in::run(
            video,
            Track::Video,
            hub.clone(),
            state.rtp.clone(),
            seen_tx.clone(),
            choice.copy(),
        )),
        tokio::spawn(rtp_in::run(
            audio,
            Track::Audio,
            hub.clone(),
            state.rtp.clone(),
            seen_tx.clone(),
            false,
        )),
    ];
    let layer_rtp: Vec<Arc<rtp_in::RtpCounters>> =
        layer_sockets.iter().map(|_| Arc::default()).collect();
    for ((i, sock), counters) in (1..).zip(layer_sockets).zip(&layer_rtp) {
        let Some(layer) = hub.layer(i) else { break };
        sources.push(tokio::spawn(rtp_in::run(
            sock,
            Track::Video,
            layer,
            counters.clone(),
            seen_tx.clone(),
            false,
        )));
    }
    state.set_layer_rtp(layer_rtp);

    let legs = Legs {
        copy_video: choice.copy(),
        copy_aac: choice.copy_aac,
        layer_ports,
        ..Legs::for_stream(&cfg, video_port)
    };
    let args = command::ffmpeg_args(&cfg, &legs);
    let shown: Vec<String> = args.iter().map(|a| mask(a)).collect();
    tracing::debug!(stream = %cfg.id, args = ?shown, "spawning ffmpeg");
    state.new_run(&program.to_string_lossy(), &args);
    // Spawned on this tokio worker thread (long-lived: see `child::spawn` on PDEATHSIG).
    let extra_ts = if cfg.http_ts { extra } else { 0 };
    let mut spawned = match child::spawn_with(&program, &args, cfg.http_ts, extra_ts) {
        Ok(s) => s,
        Err(e) => {
            close(&mut sources).await;
            return Err(ProducerError::start_failed(e.to_string()));
        }
    };
    let pid = spawned.pid;
    state.set_running(pid, (video_port, video_port + 1));
    state.log_line(&format!(
        "pixelpass: started ffmpeg (pid {pid}), RTP on 127.0.0.1:{video_port} and :{}{}",
        video_port + 1,
        legs.extra_layers()
            .map(|(i, p)| format!(", layer {i}'s video on :{p}"))
            .collect::<String>()
    ));
    if extra > 0 {
        let said: Vec<_> = hub.layers().filter_map(|l| l.layer_info()).collect();
        state.log_line(&format!(
            "pixelpass: {} layers: {}",
            said.len(),
            layers::describe(&said)
        ));
    }

    let readers = vec![
        tokio::spawn(log_lines(spawned.stderr, state.clone(), cfg.id.clone())),
        tokio::spawn(progress_lines(spawned.progress, state.clone())),
    ];
    let mut ts_error = spawned.stdout.and_then(|stdout| {
        // Media freshness is RTP's when there is RTP (stale = "no RTP"), else the TS's.
        let seen = (!cfg.webrtc.enabled).then(|| seen_tx.clone());
        let fd = stdout.into_owned_fd();
        fd.and_then(|fd| read_ts(fd, hub.clone(), seen, &cfg.id))
            .err()
    });
    for (i, fd) in (1..).zip(spawned.extra_ts.drain(..)) {
        let (Some(layer), None) = (hub.layer(i), &ts_error) else {
            break;
        };
        ts_error = read_ts(fd, layer, None, &format!("{}-l{i}", cfg.id)).err();
    }
    drop(seen_tx);

    let (fail_tx, mut failures) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let stale = (cfg.stale_timeout_seconds > 0.0)
        .then(|| Duration::from_secs_f64(cfg.stale_timeout_seconds));
    tokio::spawn(monitor(
        spawned.child,
        pid,
        listening.clone(),
        state.clone(),
        seen.clone(),
        stale,
        fail_tx,
        stop_rx,
        done_tx,
    ));
    let run = FfmpegRun {
        stop: Some(stop_tx),
        done: Some(done_rx),
        sources,
        readers,
        state: state.clone(),
    };
    if let Some(e) = ts_error {
        Box::new(run).stop().await;
        return Err(err("cannot read ffmpeg's MPEG-TS output", e));
    }

    let timeout = stale.map_or(START_TIMEOUT, |s| s.max(START_TIMEOUT));
    if let Some(at) = &listening {
        state.log_line(&format!("pixelpass: waiting for a publisher at {at}"));
    }
    state.set_waiting(listening.clone());
    // A listening input waits for its publisher as long as it takes.
    let no_media_yet = async {
        match listening {
            Some(_) => std::future::pending().await,
            None => tokio::time::sleep(timeout).await,
        }
    };
    let first = tokio::select! {
        r = seen.wait_for(|t| t.is_some()) => r.map(|_| ()).map_err(|_| ProducerError::start_failed("ffmpeg sent no media")),
        f = failures.recv() => Err(f.unwrap_or_else(|| ProducerError::start_failed("ffmpeg ended"))),
        _ = no_media_yet => Err(ProducerError::start_failed(format!(
            "ffmpeg sent no media within {} s{}",
            timeout.as_secs(),
            ffmpeg_summary(&state).map(|s| format!(": {s}")).unwrap_or_default()
        ))),
    };
    state.set_waiting(None);
    if let Err(e) = first {
        Box::new(run).stop().await;
        // FFmpeg exited (or stalled) before its first media: a failed start.
        return Err(e.while_starting().context("ffmpeg could not start"));
    }
    let layered = match extra {
        0 => String::new(),
        n => format!(", {} more layers encoded", n),
    };
    Ok(Run {
        encoder: if choice.copy() {
            format!("ffmpeg (H.264 copied{layered})")
        } else {
            format!("ffmpeg (libx264{layered})")
        },
        failures,
        handle: Box::new(run),
    })
}

/// Close RTP sources: abort their tasks and wait, so the sockets are closed on return.
async fn close(tasks: &mut Vec<JoinHandle<()>>) {
    for t in tasks.iter() {
        t.abort();
    }
    for t in tasks.drain(..) {
        let _ = t.await;
    }
}

/// Watch the child: its exit (a failure), media going stale (a failure), or
/// the order to stop (terminate it). Always reaps it before returning.
#[allow(clippy::too_many_arguments)]
async fn monitor(
    mut child: tokio::process::Child,
    pid: u32,
    listening: Option<String>,
    state: Arc<ProcessState>,
    seen: watch::Receiver<Option<Instant>>,
    stale: Option<Duration>,
    failures: mpsc::UnboundedSender<ProducerError>,
    mut stop: oneshot::Receiver<()>,
    done: oneshot::Sender<()>,
) {
    let mut stale_reported = false;
    // Media freshness is sampled, not awaited per packet (hundreds a second).
    let period = stale.map_or(Duration::from_secs(3600), |s| {
        (s / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    });
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            status = child.wait() => {
                let failure = match status {
                    // A listening input ends when its publisher leaves: the
                    // stream listens again at once (no back-off to grow).
                    Ok(s) if listening.is_some() && seen.borrow().is_some() => ProducerError::new(
                        FailureKind::Ended,
                        format!(
                            "the publisher left {}: {}",
                            listening.as_deref().unwrap_or_default(),
                            describe_exit(pid, s, ffmpeg_summary(&state))
                        ),
                    ),
                    Ok(s) => ProducerError::new(
                        exit_kind(s),
                        describe_exit(pid, s, ffmpeg_summary(&state)),
                    ),
                    Err(e) => ProducerError::crashed(format!("cannot wait for ffmpeg (pid {pid}): {e}")),
                };
                state.log_line(&format!("pixelpass: {failure}"));
                let _ = failures.send(failure);
                // Reaped by wait(): nothing is signalled (FFmpeg does not fork).
                let _ = child::terminate(&mut child, pid, Duration::ZERO).await;
                break;
            }
            _ = &mut stop => {
                let _ = child::terminate(&mut child, pid, STOP_GRACE).await;
                state.log_line(&format!("pixelpass: stopped ffmpeg (pid {pid})"));
                break;
            }
            _ = tick.tick() => {
                let last = *seen.borrow();
                let Some((stale, last)) = stale.zip(last) else { continue };
                if stale_reported || last.elapsed() < stale {
                    continue;
                }
                stale_reported = true;
                let msg = format!(
                    "no media from ffmpeg (pid {pid}) for {} s (stale_timeout_seconds)",
                    stale.as_secs_f64()
                );
                state.log_line(&format!("pixelpass: {msg}"));
                let _ = failures.send(ProducerError::stalled(msg));
            }
        }
    }
    state.set_ended();
    let _ = done.send(());
}

/// The most telling of FFmpeg's own log lines (not the notes pixelpass adds).
fn ffmpeg_summary(state: &ProcessState) -> Option<String> {
    summarize_exit(&state.run_log())
}

/// A restream never ends by itself: status 0 is an input that ended, any
/// other status or a signal is a crash.
fn exit_kind(status: ExitStatus) -> FailureKind {
    if status.success() {
        FailureKind::Ended
    } else {
        FailureKind::Crashed
    }
}

fn describe_exit(pid: u32, status: ExitStatus, why: Option<String>) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("ffmpeg (pid {pid}) exited with status {code}"),
        (None, Some(sig)) => format!("ffmpeg (pid {pid}) was killed by signal {sig}"),
        (None, None) => format!("ffmpeg (pid {pid}) ended"),
    };
    match why {
        Some(why) => format!("{how}: {why}"),
        None => how,
    }
}

async fn log_lines<R: AsyncRead + Unpin>(stderr: R, state: Arc<ProcessState>, id: String) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(stream = %id, "ffmpeg: {}", mask(&line));
        state.log_line(&line);
    }
}

async fn progress_lines<R: AsyncRead + Unpin>(progress: R, state: Arc<ProcessState>) {
    let mut parser = ProgressParser::default();
    let mut lines = BufReader::new(progress).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(p) = parser.push_line(&line) {
            state.set_progress(p);
        }
    }
}

/// A TS pipe of FFmpeg's (stdout: layer 0; fd 4, 5: layers 1, 2): a reader
/// thread (blocking reads of the pipe) hands buffers to the ingest loop
/// (`pipeline::ingest`), which feeds the layer's hub and flushes after a
/// quiet moment. Both threads end at EOF (FFmpeg gone).
fn read_ts(
    fd: std::os::fd::OwnedFd,
    hub: Hub,
    seen: Option<watch::Sender<Option<Instant>>>,
    id: &str,
) -> std::io::Result<()> {
    set_blocking(&fd)?;
    let mut pipe = std::fs::File::from(fd);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(ingest::CHANNEL_CAPACITY / 16);
    ingest::spawn(rx, hub, &format!("ts-ingest-{id}"))?;
    std::thread::Builder::new()
        .name(format!("ts-read-{id}"))
        .spawn(move || loop {
            let mut buf = vec![0u8; TS_READ];
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(buf).is_err() {
                        break;
                    }
                    if let Some(seen) = &seen {
                        seen.send_replace(Some(Instant::now()));
                    }
                }
            }
        })?;
    Ok(())
}

fn set_blocking(fd: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a file descriptor we own; no memory is touched.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

struct FfmpegRun {
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
    /// The RTP receivers (they own the sockets).
    sources: Vec<JoinHandle<()>>,
    /// stderr and progress readers (they end at EOF).
    readers: Vec<JoinHandle<()>>,
    state: Arc<ProcessState>,
}

impl RunHandle for FfmpegRun {
    fn stop(mut self: Box<Self>) -> BoxFuture<()> {
        Box::pin(async move {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(done) = self.done.take() {
                // terminate() escalates to SIGKILL after the grace period.
                let _ = tokio::time::timeout(STOP_GRACE * 3, done).await;
            }
            close(&mut self.sources).await;
            self.state.log_line("pixelpass: RTP sources closed");
            for r in self.readers.drain(..) {
                let _ = tokio::time::timeout(Duration::from_millis(200), r).await;
            }
        })
    }
}

impl Drop for FfmpegRun {
    fn drop(&mut self) {
        // Dropped without stop (a cancelled start): the monitor sees the
        // stop sender go and terminates FFmpeg; the sources close now.
        for t in &self.sources {
            t.abort();
        }
        for t in &self.readers {
            t.abort();
        }
    }
}
