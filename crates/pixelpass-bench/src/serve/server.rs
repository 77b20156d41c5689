//! The `pixelpass serve --json` child process: start, its JSON API
//! (stream reports), its WHEP URLs, SIGTERM/SIGKILL and its log.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::stream_token;
use pixelpass_testkit::client::http::{self, Url};

const API_TOKEN: &str = "bench-serve-api-token";

/// The report's `last_error`: what kind of failure, and its message.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct ReportError {
    pub(super) kind: String,
    pub(super) message: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct Report {
    pub(super) state: String,
    pub(super) pid: Option<u32>,
    pub(super) restarts: u64,
    pub(super) last_error: Option<ReportError>,
    pub(super) viewers: ReportViewers,
    pub(super) bytes_out: ReportBytes,
    pub(super) rtp: ReportRtp,
    pub(super) progress: Option<ReportProgress>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub(super) struct ReportViewers {
    pub(super) whep: usize,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub(super) struct ReportBytes {
    pub(super) whep: u64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub(super) struct ReportRtp {
    pub(super) lost: u64,
    pub(super) refused: u64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub(super) struct ReportProgress {
    pub(super) fps: f64,
    pub(super) speed: f64,
}

#[derive(Deserialize)]
struct Banner {
    listen: String,
}

pub(super) struct ServeChild {
    child: Option<Child>,
    pub(super) pid: u32,
    pub(super) base: String,
    pub(super) log: PathBuf,
    pub(super) rt: tokio::runtime::Runtime,
    /// `--published`: the `pixelpass host --publish` children, one per stream.
    publishers: Vec<Child>,
}

impl ServeChild {
    pub(super) fn start(exe: &std::path::Path) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let log =
            std::env::temp_dir().join(format!("pixelpass-bench-serve-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(exe)
            .args(["serve", "--json"])
            .args(pixelpass_testkit::serve::ON_LOOPBACK)
            .args(["--api-token", API_TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("cannot start `pixelpass serve`")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("bench-serve-out".into())
            .spawn(move || {
                // The banner first; whatever follows is drained.
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            })?;
        let mut me = Self {
            child: Some(child),
            pid,
            base: String::new(),
            log,
            rt,
            publishers: Vec::new(),
        };
        let line = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(l) => l,
            Err(_) => bail!(
                "`pixelpass serve` printed no banner within 15 s (log: {})",
                me.log.display()
            ),
        };
        let banner: Banner = serde_json::from_str(&line)
            .with_context(|| format!("`pixelpass serve --json` printed {line:?}"))?;
        me.base = format!("http://{}", banner.listen);
        Ok(me)
    }

    pub(super) fn api(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let url = Url::parse(&format!("{}/api/v1{path}", self.base)).map_err(anyhow::Error::msg)?;
        let auth = format!("Bearer {API_TOKEN}");
        let r = self.rt.block_on(http::request(
            &url,
            method,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
            Duration::from_secs(10),
        ))?;
        Ok((r.status, r.text()))
    }

    pub(super) fn report(&self, id: &str) -> anyhow::Result<Report> {
        let (status, body) = self.api("GET", &format!("/streams/{id}/report"), "")?;
        if status != 200 {
            bail!("report of {id}: {status} {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("report of {id}: {body}"))
    }

    pub(super) fn whep_url(&self, i: u32) -> String {
        format!("{}/{}/whep", self.base, stream_token(i))
    }

    pub(super) fn whip_url(&self, i: u32) -> String {
        format!("{}/whip/{}", self.base, super::stream_id(i))
    }

    /// Start a publisher of stream `i`: `pixelpass host --source test
    /// --publish` at the stream's size, rate and bitrate (its CPU is its own
    /// process's, not the server's).
    pub(super) fn publish(
        &mut self,
        exe: &std::path::Path,
        i: u32,
        a: &super::ServeBenchArgs,
    ) -> anyhow::Result<()> {
        let (w, h) = a.size;
        let child = Command::new(exe)
            .args([
                "host",
                "--source",
                "test",
                "--json",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--webrtc-udp", "127.0.0.1:0"])
            .args(["--width", &w.to_string(), "--height", &h.to_string()])
            .args([
                "--framerate",
                &a.fps.to_string(),
                "--bitrate",
                &a.bitrate.to_string(),
            ])
            .args(["--publish", &self.whip_url(i)])
            .env("PIXELPASS_PUBLISH_TOKEN", super::publish_token(i))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `pixelpass host --publish`")?;
        self.publishers.push(child);
        Ok(())
    }

    /// SIGTERM, up to 5 s, SIGKILL; returns how it ended and how long it took.
    pub(super) fn stop(&mut self) -> Option<(String, Duration)> {
        for mut p in std::mem::take(&mut self.publishers) {
            // SAFETY: a signal to our own child, by its PID (not reaped yet).
            unsafe {
                libc::kill(p.id() as libc::pid_t, libc::SIGTERM);
            }
            let until = Instant::now() + Duration::from_secs(3);
            while matches!(p.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.kill();
            let _ = p.wait();
        }
        let mut child = self.child.take()?;
        let t = Instant::now();
        // SAFETY: a signal to our own child, by its PID (not reaped yet, so not reused).
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let until = t + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return Some((format!("exited ({s}) after SIGTERM"), t.elapsed())),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => break,
            }
        }
        let _ = child.kill();
        let s = child.wait();
        Some((
            format!("did not exit within 5 s of SIGTERM: SIGKILLed ({s:?})"),
            t.elapsed(),
        ))
    }

    /// Log lines at WARN or ERROR level.
    pub(super) fn log_problems(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        self.stop();
    }
}
