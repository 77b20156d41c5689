//! The harness of `tests/serve.rs`: the real `pixelpass serve` binary on
//! loopback (ended by PID, reaped), its JSON API, processes in /proc, and a
//! WHEP viewer whose H.264 and Opus are checked with ffmpeg.

pub mod feeder;
pub mod whep;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::http::blocking::request_with;
use crate::client::http::Response;
use crate::prelude::TempDir;

pub const API_TOKEN: &str = "serve-test-api-token";

/// `serve`'s three listening addresses on loopback, kernel-chosen ports.
pub const ON_LOOPBACK: [&str; 6] = [
    "--listen",
    "127.0.0.1:0",
    "--webrtc-udp",
    "127.0.0.1:0",
    "--whip-udp",
    "127.0.0.1:0",
];

// ───────────────────────────────── the server ─────────────────────────────────

/// A small lavfi stream: cheap enough that several tests run side by side.
pub fn lavfi_input(tone: u32) -> String {
    format!(
        "input = [\"-re\", \"-f\", \"lavfi\", \"-i\", \"testsrc2=size=320x240:rate=30\", \"-f\", \"lavfi\", \"-i\", \"sine=frequency={tone}\"]\n\
         video_bitrate_kbps = 600\nkeyframe_interval_seconds = 1\n"
    )
}

/// The test server's config: loopback, kernel-chosen ports, the test API token, then `streams`.
fn config_text(streams: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nwebrtc_udp = \"127.0.0.1:0\"\napi_token = \"{API_TOKEN}\"\n\n{streams}"
    )
}

pub struct Serve {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub banner: Value,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The config file it was started with (a test may rewrite it and SIGHUP).
    pub config: std::path::PathBuf,
    _dir: TempDir,
}

impl Serve {
    /// `pixelpass serve --config <streams>` on loopback with kernel-chosen ports.
    pub fn start(name: &str, streams: &str) -> Serve {
        Self::start_with(name, streams, &[])
    }

    /// [`Serve::start`] with more command-line arguments (`--tls-cert …`).
    pub fn start_with(name: &str, streams: &str, extra: &[&str]) -> Serve {
        Self::start_env(name, streams, extra, &[])
    }

    /// [`Serve::start_with`] with environment variables for the server
    /// (`PIXELPASS_LOG=debug`).
    pub fn start_env(name: &str, streams: &str, extra: &[&str], env: &[(&str, &str)]) -> Serve {
        let dir = TempDir::new(name);
        let config = dir.0.join("pixelpass.toml");
        let text = config_text(streams);
        std::fs::write(&config, text).expect("write the config");
        let mut child = Command::new(crate::bin::pixelpass())
            .args(["serve", "--json", "--config"])
            .arg(&config)
            .args(if extra.contains(&"--whip-udp") {
                &[][..]
            } else {
                &["--whip-udp", "127.0.0.1:0"][..]
            })
            .args(extra)
            .env_remove("PIXELPASS_API_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pixelpass serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let out = child.stdout.take().expect("stdout");
        let first = crate::tools::first_line(out, Duration::from_secs(30));
        let mut serve = Serve {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            banner: Value::Null,
            stderr,
            config: config.clone(),
            _dir: dir,
        };
        let line = first.unwrap_or_else(|| {
            panic!(
                "no JSON banner within 30 s; stderr:\n{}",
                serve.stderr_text()
            )
        });
        serve.banner = serde_json::from_str(&line).expect("the banner is JSON");
        serve.addr = serve.banner["listen"].as_str().unwrap().parse().unwrap();
        serve
    }

    /// The server's config file as `text` would write it (same preamble as at start).
    pub fn write_config(&self, streams: &str) {
        let text = config_text(streams);
        std::fs::write(&self.config, text).expect("rewrite the config");
    }

    /// Send SIGHUP (reload the config).
    pub fn hangup(&self) {
        // SAFETY: kill(2) of our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, libc::SIGHUP) }, 0);
    }

    /// Wait (≤ `within`) for a line of the server's stderr that contains `needle`.
    pub fn wait_stderr(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no stderr line with {needle:?} within {within:?}:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        self.api_as(
            Some(API_TOKEN),
            method,
            path,
            body.map(|b| b.to_string()).as_deref(),
        )
    }

    pub fn api_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method == "POST" || method == "PUT" {
            // (Content-Length goes with it: the client sends it for these.)
            headers.push(("Content-Type", "application/json"));
        }
        request_with(self.addr, method, path, &headers, body.as_bytes())
    }

    pub fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let r = self.api(method, path, body);
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, v)
    }

    pub fn report(&self, id: &str) -> Value {
        let (status, v) = self.json("GET", &format!("/api/v1/streams/{id}/report"), None);
        assert_eq!(status, 200, "report of {id}: {v}");
        v
    }

    /// Poll the report until `pred` holds (or panic after `within`).
    pub fn wait_report(
        &self,
        id: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let r = self.report(id);
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: {what} not within {within:?}; report: {r:#}\nstderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait (≤ 30 s) until the stream is `live` with an FFmpeg running.
    pub fn wait_live(&self, id: &str) -> Value {
        self.wait_report(id, Duration::from_secs(30), "live", |r| {
            r["state"] == "live" && r["pid"].is_u64()
        })
    }

    /// SIGTERM by PID and wait for the exit.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) of our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let child = self.child.as_mut().unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                t0.elapsed() < within,
                "serve did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill signals this PID only; its FFmpeg children die with
            // it (parent-death signal).
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- serve stderr ---\n{}\n---", self.stderr_text());
        }
    }
}

// ─────────────────────────────── HTTP-TS viewing ───────────────────────────────

/// Watch `/{token}/stream.ts` for `read`: its streams are H.264 + AAC and
/// ffmpeg decodes it without an error. Returns the bytes.
pub fn assert_http_ts_decodes(
    serve: &Serve,
    dir: &TempDir,
    token: &str,
    read: Duration,
) -> Vec<u8> {
    let mut viewer =
        crate::client::http::blocking::Viewer::open(serve.addr, &format!("/{token}/stream.ts"));
    assert_eq!(viewer.status, 200, "GET /{token}/stream.ts");
    viewer.read_for(read);
    let ts = dir.write(&format!("{token}.ts"), &viewer.body);
    let mut kinds = crate::tools::ffprobe_streams(&ts);
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        vec![
            ("audio".into(), "aac".into()),
            ("video".into(), "h264".into())
        ],
        "HTTP-TS of {token}"
    );
    let errors = crate::tools::decode_errors(&ts);
    assert!(errors.is_empty(), "HTTP-TS of {token}: {errors}");
    std::mem::take(&mut viewer.body)
}

// ─────────────────────────────── processes ───────────────────────────────

/// Gone, or a zombie waiting for a reaper (this sandbox's PID 1 is slow at it).
pub fn process_gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

pub fn wait_gone(pid: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if process_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    process_gone(pid)
}

/// Live (not zombie) children of `parent`, from /proc.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent && state != "Z" {
            out.push(pid);
        }
    }
    out
}
