//! Spawning the `pixelpass host` process ([`HostBuilder`], [`Host`]: never
//! leaked, killed on drop) and running the binary to completion.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::http::blocking::request;
use crate::client::http::Response;
use crate::prelude::LIGHT;
use crate::tools::{run_tool, ToolOutput};

pub struct HostBuilder {
    max_viewers: u32,
    linger: u32,
    token: Option<String>,
    env: Vec<(String, String)>,
    extra: Vec<String>,
    source: String,
    clear_env: bool,
    nofile: Option<u64>,
    keep_stderr: bool,
}

impl Default for HostBuilder {
    fn default() -> Self {
        Self {
            max_viewers: 2,
            linger: 1,
            token: None,
            env: Vec::new(),
            extra: Vec::new(),
            source: "test".into(),
            clear_env: false,
            nofile: None,
            keep_stderr: false,
        }
    }
}

impl HostBuilder {
    pub fn max_viewers(mut self, n: u32) -> Self {
        self.max_viewers = n;
        self
    }
    pub fn linger(mut self, s: u32) -> Self {
        self.linger = s;
        self
    }
    pub fn token(mut self, t: &str) -> Self {
        self.token = Some(t.to_string());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }
    /// `--source` (default `test`).
    pub fn source(mut self, s: &str) -> Self {
        self.source = s.to_string();
        self
    }
    /// Start from an empty environment: only what `env` sets (e.g. a whole
    /// headless session's environment).
    pub fn clear_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Start the host with this `RLIMIT_NOFILE` (soft and hard), so a
    /// descriptor flood is cheap to make.
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    /// Keep every stderr line (not only the last few hundred): for tests
    /// that count or grep the whole log.
    pub fn keep_stderr(mut self) -> Self {
        self.keep_stderr = true;
        self
    }

    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "host",
            "--source",
            &self.source,
            "--listen",
            "127.0.0.1:0",
            "--webrtc-udp",
            "127.0.0.1:0",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend([
            "--max-viewers".into(),
            self.max_viewers.to_string(),
            "--linger".into(),
            self.linger.to_string(),
        ]);
        if let Some(t) = &self.token {
            a.extend(["--token".into(), t.clone()]);
        }
        a.extend(LIGHT.iter().map(|s| s.to_string()));
        // One encode unless the test asks for layers: two pipelines of two
        // encodes each do not fit a loaded 2-core machine, and a WebRTC
        // viewer of a stream with layers may be moved to a smaller one when
        // the machine's own delays look like a queue to the estimator.
        if !self.extra.iter().any(|x| x == "--layers") {
            a.extend(["--layers".into(), "1".into()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Start the host and wait for its JSON banner line.
    pub fn spawn(self) -> Host {
        let args = self.args();
        let mut cmd = Command::new(crate::bin::pixelpass());
        if self.clear_env {
            cmd.env_clear();
        }
        cmd.args(&args)
            .env_remove("PIXELPASS_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(n) = self.nofile {
            crate::tools::limit_nofile(&mut cmd, n);
        }
        let keep_all = self.keep_stderr;
        let mut child = cmd.spawn().expect("spawn pixelpass");
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let extra_stdout = Arc::new(Mutex::new(Vec::new()));

        let err = child.stderr.take().unwrap();
        let sink = stderr_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut v = sink.lock().unwrap();
                v.push(line);
                if !keep_all && v.len() > 400 {
                    v.drain(..100);
                }
            }
        });

        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let extra = extra_stdout.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines().map_while(Result::ok);
            if let Some(first) = lines.next() {
                let _ = tx.send(first);
            }
            for line in lines {
                extra.lock().unwrap().push(line);
            }
        });

        let mut host = Host {
            child: Some(child),
            banner: Value::Null,
            addr: "127.0.0.1:0".parse().unwrap(),
            token: String::new(),
            stderr_lines,
            extra_stdout,
            args,
        };
        // A fresh machine's first GStreamer start scans the plugin registry: be patient.
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(e) => {
                let status = host.child.as_mut().unwrap().try_wait().ok().flatten();
                panic!(
                    "no JSON banner line on stdout ({e}); exit status {status:?}; args {:?}\nstderr:\n{}",
                    host.args,
                    host.stderr_text()
                );
            }
        };
        let banner: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "banner is not JSON ({e}): {line:?}\nstderr:\n{}",
                host.stderr_text()
            )
        });
        let listen = banner["listen"]
            .as_str()
            .unwrap_or_else(|| panic!("banner lacks \"listen\": {line}"));
        host.addr = listen
            .parse()
            .unwrap_or_else(|e| panic!("banner listen {listen:?}: {e}"));
        host.token = banner["token"]
            .as_str()
            .unwrap_or_else(|| panic!("banner lacks \"token\": {line}"))
            .to_string();
        host.banner = banner;
        host
    }
}

pub struct Host {
    child: Option<Child>,
    pub banner: Value,
    pub addr: SocketAddr,
    pub token: String,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    extra_stdout: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
}

impl Host {
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    pub fn spawn_default() -> Host {
        HostBuilder::default().spawn()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("host already reaped").id() as i32
    }

    pub fn stream_path(&self) -> String {
        format!("/{}/stream.ts", self.token)
    }

    pub fn status_path(&self) -> String {
        format!("/{}/status", self.token)
    }

    /// The last lines the host wrote to stderr.
    pub fn stderr_text(&self) -> String {
        let v = self.stderr_lines.lock().unwrap();
        let start = v.len().saturating_sub(60);
        v[start..].join("\n")
    }

    /// Every stderr line so far (all of them with `keep_stderr`, else the last few hundred).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr_lines.lock().unwrap().clone()
    }

    /// Lines printed on stdout after the banner (there should be none).
    pub fn extra_stdout(&self) -> Vec<String> {
        self.extra_stdout.lock().unwrap().clone()
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path)
    }

    /// `GET /{token}/status` as JSON.
    pub fn status(&self) -> Value {
        let r = self.get(&self.status_path());
        assert_eq!(r.status, 200, "status endpoint: {r:?}");
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("status is not JSON ({e}): {:?}", r.text()))
    }

    /// Poll the status until `state` is `want`; returns it and how long it took.
    pub fn wait_state(&self, want: &str, within: Duration) -> (Value, Duration) {
        let t0 = Instant::now();
        let mut last;
        loop {
            last = self.status();
            if last["state"] == want {
                return (last, t0.elapsed());
            }
            if t0.elapsed() > within {
                panic!("state did not become {want:?} within {within:?}; last status {last}\nstderr:\n{}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait up to `within`; returns the exit status and the time it took
    /// (`None` if it did not exit in time; Drop kills it then).
    pub fn terminate(&mut self, within: Duration) -> (Option<ExitStatus>, Duration) {
        let pid = self.pid();
        let t0 = Instant::now();
        // SAFETY: plain kill(2) of our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill({pid}, SIGTERM) failed");
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return (Some(st), t0.elapsed());
            }
            if t0.elapsed() > within {
                return (None, t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                // Child::kill signals this child's PID only.
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- pixelpass {:?} stderr (last lines) ---\n{}\n---",
                self.args,
                self.stderr_text()
            );
        }
    }
}

/// Run the binary with `args` to completion (for --help and start errors).
pub fn run_binary(args: &[&str], timeout: Duration) -> ToolOutput {
    let mut cmd = Command::new(crate::bin::pixelpass());
    cmd.args(args).env_remove("PIXELPASS_TOKEN");
    run_tool(cmd, timeout)
}
