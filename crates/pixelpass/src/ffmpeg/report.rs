//! What one stream's FFmpeg process is doing, for the API report and the
//! metrics: its command (credentials masked), PID and ports, the last
//! `-progress` block, the log (head and tail of each run) and the RTP counters. Written by the run's tasks, read by anyone.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::log::{mask, RunLog};
use super::progress::Progress;
use crate::ingest::rtp::RtpCounters;

#[derive(Debug)]
pub struct ProcessState {
    pid: AtomicU32,
    ports: Mutex<Option<(u16, u16)>>,
    progress: Mutex<Option<Progress>>,
    log: Mutex<RunLog>,
    command: Mutex<Vec<String>>,
    /// Counters of every run (they keep counting across restarts).
    pub rtp: Arc<RtpCounters>,
}

impl Default for ProcessState {
    fn default() -> Self {
        Self {
            pid: AtomicU32::new(0),
            ports: Mutex::new(None),
            progress: Mutex::new(None),
            log: Mutex::new(RunLog::default()),
            command: Mutex::new(Vec::new()),
            rtp: Arc::new(RtpCounters::default()),
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
    pub log: Vec<String>,
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

    pub fn report(&self) -> ProcessReport {
        ProcessReport {
            command: lock(&self.command).clone(),
            pid: self.pid(),
            rtp_ports: *lock(&self.ports),
            progress: self.progress(),
            rtp: self.rtp_report(),
            log: self.log(),
        }
    }
}
