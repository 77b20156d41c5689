//! What one stream's FFmpeg process is doing, for the API report and the
//! metrics: its command (credentials masked), PID and ports, the last
//! `-progress` block, the log (head and tail of each run) and the RTP counters. Written by the run's tasks, read by anyone.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::log::{mask, RunLog};
use super::probe::VideoChoice;
use super::progress::Progress;
use crate::ingest::rtp::RtpCounters;

#[derive(Debug)]
pub struct ProcessState {
    pid: AtomicU32,
    ports: Mutex<Option<(u16, u16)>>,
    progress: Mutex<Option<Progress>>,
    log: Mutex<RunLog>,
    command: Mutex<Vec<String>>,
    /// The current run's video choice, and the keyframe interval the config asks for.
    video: Mutex<Option<(VideoChoice, f64)>>,
    /// Where the current run waits for its publisher, until media arrives.
    waiting: Mutex<Option<String>>,
    /// Counters of every run (they keep counting across restarts).
    pub rtp: Arc<RtpCounters>,
    /// Video RTP counters of layers 1.. (the current run's).
    layer_rtp: Mutex<Vec<Arc<RtpCounters>>>,
}

impl Default for ProcessState {
    fn default() -> Self {
        Self {
            pid: AtomicU32::new(0),
            ports: Mutex::new(None),
            progress: Mutex::new(None),
            log: Mutex::new(RunLog::default()),
            command: Mutex::new(Vec::new()),
            video: Mutex::new(None),
            waiting: Mutex::new(None),
            rtp: Arc::new(RtpCounters::default()),
            layer_rtp: Mutex::new(Vec::new()),
        }
    }
}

/// A snapshot of [`ProcessState`].
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    /// FFmpeg's argv of the current (or last) run, credentials masked.
    pub command: Vec<String>,
    /// The running FFmpeg's PID (absent when none runs).
    pub pid: Option<u32>,
    /// The RTP ports of the current run: video on the first, audio on the next.
    pub rtp_ports: Option<(u16, u16)>,
    pub progress: Option<Progress>,
    pub rtp: RtpReport,
    /// Video RTP of layers 1.. (absent with one layer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layer_rtp: Vec<LayerRtpReport>,
    /// Copy or encode, why, and what the video measured.
    pub video: Option<VideoReport>,
    /// Set while FFmpeg listens and no publisher has sent media yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_publisher: Option<String>,
    pub log: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VideoReport {
    /// `"copy"` or `"encode"`.
    pub mode: &'static str,
    pub why: String,
    /// The SPS's profile-level-id (hex, as SDP writes it), once seen.
    pub profile_level_id: Option<String>,
    /// The keyframe interval measured on the RTP video, once two were seen.
    pub gop_seconds: Option<f64>,
    /// A setting that has no effect in this mode, said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LayerRtpReport {
    pub layer: usize,
    pub video_packets: u64,
    pub lost: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RtpReport {
    pub video_packets: u64,
    pub audio_packets: u64,
    pub lost: u64,
    pub refused: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProcessState {
    /// A new run's FFmpeg is spawned: its log starts afresh (the previous
    /// run's is kept beside it) and its argv is recorded, masked.
    pub fn new_run(&self, program: &str, args: &[String]) {
        lock(&self.log).new_run();
        *lock(&self.command) = std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .map(mask)
            .collect();
    }

    pub fn set_running(&self, pid: u32, ports: (u16, u16)) {
        self.pid.store(pid, Ordering::Relaxed);
        *lock(&self.ports) = Some(ports);
    }

    pub fn set_ended(&self) {
        self.pid.store(0, Ordering::Relaxed);
        *lock(&self.ports) = None;
    }

    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::Relaxed)).filter(|p| *p != 0)
    }

    /// This run's video choice; `keyframe_interval` is the config's (it has no
    /// effect on a copy, which the report says).
    pub fn set_video(&self, choice: VideoChoice, keyframe_interval: f64) {
        *lock(&self.video) = Some((choice, keyframe_interval));
        self.rtp.video.profile_level_id.store(0, Ordering::Relaxed);
    }

    /// The last run's video choice (an `auto` decided from the input is kept for the next runs).
    pub fn video_choice(&self) -> Option<VideoChoice> {
        lock(&self.video).as_ref().map(|(c, _)| c.clone())
    }

    pub fn set_waiting(&self, at: Option<String>) {
        *lock(&self.waiting) = at;
    }

    /// `gop_ticks`: the hub's last keyframe interval (90 kHz; 0: not measured yet).
    fn video_report(&self, gop_ticks: u32) -> Option<VideoReport> {
        let (choice, keyframe_interval) = lock(&self.video).clone()?;
        let gop_seconds = (gop_ticks > 0).then(|| f64::from(gop_ticks / 90) / 1000.0);
        let profile = self.rtp.video.profile_level_id.load(Ordering::Relaxed);
        let note = choice.copy().then(|| {
            let gop = gop_seconds.map_or("not measured yet".to_owned(), |g| format!("{g} s"));
            format!(
                "keyframe_interval_seconds ({keyframe_interval} s) has no effect on copied video: \
                 keyframes come as often as the input's (GOP {gop})"
            )
        });
        Some(VideoReport {
            mode: choice.mode,
            why: choice.why,
            profile_level_id: (profile != 0).then(|| format!("{profile:06x}")),
            gop_seconds,
            note,
        })
    }

    /// The current run's counters of layers 1.. (in order).
    pub fn set_layer_rtp(&self, counters: Vec<Arc<RtpCounters>>) {
        *lock(&self.layer_rtp) = counters;
    }

    fn layer_rtp_report(&self) -> Vec<LayerRtpReport> {
        let r = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        (1..)
            .zip(lock(&self.layer_rtp).iter())
            .map(|(layer, c)| LayerRtpReport {
                layer,
                video_packets: r(&c.video.packets),
                lost: r(&c.video.lost),
            })
            .collect()
    }

    pub fn set_progress(&self, p: Progress) {
        *lock(&self.progress) = Some(p);
    }

    pub fn progress(&self) -> Option<Progress> {
        *lock(&self.progress)
    }

    pub fn log_line(&self, line: &str) {
        lock(&self.log).push(line);
    }

    pub fn log(&self) -> Vec<String> {
        lock(&self.log).lines()
    }

    /// The current run's lines (for the exit summary).
    pub fn run_log(&self) -> Vec<String> {
        lock(&self.log).current_run()
    }

    pub fn rtp_report(&self) -> RtpReport {
        let r = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let (v, a) = (&self.rtp.video, &self.rtp.audio);
        RtpReport {
            video_packets: r(&v.packets),
            audio_packets: r(&a.packets),
            lost: r(&v.lost) + r(&a.lost),
            refused: r(&v.refused) + r(&a.refused),
        }
    }

    /// A snapshot; `gop_ticks` is the stream hub's measured keyframe interval.
    pub fn report(&self, gop_ticks: u32) -> ProcessReport {
        ProcessReport {
            command: lock(&self.command).clone(),
            pid: self.pid(),
            rtp_ports: *lock(&self.ports),
            progress: self.progress(),
            rtp: self.rtp_report(),
            layer_rtp: self.layer_rtp_report(),
            video: self.video_report(gop_ticks),
            waiting_for_publisher: lock(&self.waiting).clone(),
            log: self.log(),
        }
    }
}
