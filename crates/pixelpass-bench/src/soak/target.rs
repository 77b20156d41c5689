//! The server under test as a child process (`pixelpass host --source test`
//! or `pixelpass serve` with one lavfi stream, both on loopback, both from
//! the testkit, so they are killed and reaped on drop), and what is sampled
//! from outside it: open descriptors, RSS and threads from /proc, viewers
//! and WebRTC peers from its `/TOKEN/status`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pixelpass_testkit::client::http::blocking::request;
use pixelpass_testkit::host::{Host, HostBuilder};
use pixelpass_testkit::serve::{lavfi_input, Serve};
use serde::Serialize;

use crate::procstat;

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Host,
    Serve,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Host => "host",
            Kind::Serve => "serve",
        })
    }
}

/// The serve stream's viewer token.
const SERVE_TOKEN: &str = "soak-stream-token-0123456789";

pub enum Child {
    Host(Host),
    Serve(Serve),
}

/// A running server and how to reach its one stream.
pub struct Target {
    pub child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub token: String,
}

/// One look at the server from outside.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    pub fds: usize,
    pub rss_kib: u64,
    /// Of `rss_kib`, anonymous memory (the heap, stacks): not the binary's
    /// and libraries' pages, which RSS counts once they were touched.
    pub anon_kib: u64,
    pub threads: usize,
    pub viewers: u64,
    pub peers: u64,
    /// FFmpeg children (serve) or 0.
    pub children: usize,
}

impl Target {
    /// Start `kind` with room for `max_viewers` and WebRTC viewers that
    /// vanish freed after `webrtc_timeout` seconds; `extra` goes to its argv
    /// (host) or its stream's config table (serve).
    pub fn start(kind: Kind, max_viewers: u32, webrtc_timeout: u32, env: &[(&str, &str)]) -> Self {
        match kind {
            Kind::Host => {
                let mut b = HostBuilder::default()
                    .max_viewers(max_viewers)
                    // Capture stays up between cycles: the baseline is a live stream.
                    .linger(86_400)
                    .arg("--webrtc-timeout")
                    .arg(&webrtc_timeout.to_string());
                for (k, v) in env {
                    b = b.env(k, v);
                }
                let host = b.spawn();
                Target {
                    pid: host.pid() as u32,
                    addr: host.addr,
                    token: host.token.clone(),
                    child: Child::Host(host),
                }
            }
            Kind::Serve => {
                let stream = format!(
                    "[[stream]]\nid = \"soak\"\ntoken = \"{SERVE_TOKEN}\"\nautostart = true\nreconnect = true\nreconnect_delay_seconds = 1\nmax_viewers = {max_viewers}\n{}",
                    lavfi_input(440)
                );
                let timeout = webrtc_timeout.to_string();
                let serve =
                    Serve::start_env("bench-soak", &stream, &["--webrtc-timeout", &timeout], env);
                serve.wait_live("soak");
                Target {
                    pid: serve.pid(),
                    addr: serve.addr,
                    token: SERVE_TOKEN.to_owned(),
                    child: Child::Serve(serve),
                }
            }
        }
    }

    pub fn stream_path(&self) -> String {
        format!("/{}/stream.ts", self.token)
    }

    pub fn whep_url(&self) -> String {
        // (also for the fault bench's viewers)
        format!("http://{}/{}/whep", self.addr, self.token)
    }

    /// `viewers` and the number of `webrtc_peers` from `/TOKEN/status`.
    pub fn viewers_and_peers(&self) -> (u64, u64) {
        let r = request(self.addr, "GET", &format!("/{}/status", self.token));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        (
            v["viewers"].as_u64().unwrap_or(0),
            v["webrtc_peers"].as_array().map_or(0, |a| a.len() as u64),
        )
    }

    /// Descriptors first: the status request's own connection is not yet open.
    /// The stream's restart count (`/TOKEN/status`).
    pub fn restarts(&self) -> u64 {
        let r = request(self.addr, "GET", &format!("/{}/status", self.token));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        v["restarts"].as_u64().unwrap_or(0)
    }

    /// serve: the running FFmpeg's PID (waiting ≤ 30 s for the stream to be live).
    pub fn ffmpeg_pid(&self) -> Option<u32> {
        match &self.child {
            Child::Serve(s) => s.wait_live("soak")["pid"].as_u64().map(|p| p as u32),
            Child::Host(_) => None,
        }
    }

    pub fn sample(&self) -> Sample {
        let fds = pixelpass_testkit::tools::open_fds(self.pid).unwrap_or(0);
        let (viewers, peers) = self.viewers_and_peers();
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let kib = |field| procstat::parse_status_bytes(&status, field).map_or(0, |b| b / 1024);
        Sample {
            fds,
            rss_kib: kib("VmRSS"),
            anon_kib: kib("RssAnon"),
            threads: std::fs::read_dir(format!("/proc/{}/task", self.pid)).map_or(0, |d| d.count()),
            viewers,
            peers,
            children: pixelpass_testkit::serve::children_of(self.pid).len(),
        }
    }

    /// Wait (≤ `within`) until no viewer and no peer is left; true if so.
    pub fn wait_freed(&self, within: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            if self.viewers_and_peers() == (0, 0) {
                return true;
            }
            if t0.elapsed() > within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What each open descriptor is (`socket:[…]`, `pipe:[…]`, `anon_inode:…`,
    /// a path), by kind: to say which one a difference is.
    pub fn fd_kinds(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid)) else {
            return out;
        };
        for e in dir.flatten() {
            let what = std::fs::read_link(e.path())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let kind = what.split(":[").next().unwrap_or("").to_owned();
            *out.entry(kind).or_insert(0) += 1;
        }
        out
    }

    /// The last lines the server wrote to stderr.
    pub fn log(&self) -> String {
        match &self.child {
            Child::Host(h) => h.stderr_text(),
            Child::Serve(s) => s.stderr_text(),
        }
    }

    /// Is the server still running?
    pub fn alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}
