//! Support for the integration tests that run the real `pixelpass` binary:
//! spawning a host (never leaked), a small HTTP/1.1 client over
//! `std::net::TcpStream` (with timeouts everywhere), an MPEG-TS scanner to
//! find frames and keyframes in what a viewer received, and ffprobe/ffmpeg
//! runners.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Options the tests pass so that two pipelines fit on a 2-core machine.
pub const LIGHT: &[&str] = &[
    "--framerate",
    "30",
    "--width",
    "640",
    "--height",
    "360",
    "--bitrate",
    "1500",
];
pub const FPS: f64 = 30.0;
/// 90 kHz PTS ticks per second.
pub const PTS_HZ: i64 = 90_000;

/// Serializes the tests that measure frame rates, so two of them do not
/// compete for the CPU and measure each other.
pub fn timing_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ───────────────────────────── the host process ─────────────────────────────

pub struct HostBuilder {
    max_viewers: u32,
    linger: u32,
    token: Option<String>,
    env: Vec<(String, String)>,
    extra: Vec<String>,
    source: String,
    clear_env: bool,
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
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Start the host and wait for its JSON banner line.
    pub fn spawn(self) -> Host {
        let args = self.args();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pixelpass"));
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
        let mut child = cmd.spawn().expect("spawn pixelpass");
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let extra_stdout = Arc::new(Mutex::new(Vec::new()));

        let err = child.stderr.take().unwrap();
        let sink = stderr_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut v = sink.lock().unwrap();
                v.push(line);
                if v.len() > 400 {
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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pixelpass"));
    cmd.args(args).env_remove("PIXELPASS_TOKEN");
    run_tool(cmd, timeout)
}

// ───────────────────────────── HTTP/1.1 client ──────────────────────────────

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_nodelay(true).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Connect with a small receive buffer (set before connecting, so the
/// advertised window stays small): a stalled reader fills up quickly.
pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(rcvbuf).unwrap();
    sock.connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let s: TcpStream = sock.into();
    s.set_nodelay(true).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

pub fn request_bytes(method: &str, path: &str, addr: SocketAddr) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: pixelpass-tests\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// One request with a complete (finite) response, 15 s at most.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    raw_request(addr, &request_bytes(method, path, addr), method == "HEAD")
}

/// Send `raw` as is and read one response (headers only if `head_only`).
pub fn raw_request(addr: SocketAddr, raw: &[u8], head_only: bool) -> Response {
    let mut s = connect(addr);
    // The server may answer and close before taking all of an oversized request.
    let _ = s.write_all(raw);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (status, headers, rest) = read_head(&mut s, deadline)
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", preview(raw)));
    let mut body = Vec::new();
    let no_body = head_only || status / 100 == 1 || status == 204 || status == 304;
    if !no_body {
        let mut dec = BodyDecoder::for_headers(&headers);
        dec.feed(&rest, &mut body).unwrap();
        let mut buf = [0u8; 16 * 1024];
        while !dec.done() {
            if Instant::now() > deadline {
                panic!(
                    "response body to {:?} not complete within 15 s ({} bytes so far)",
                    preview(raw),
                    body.len()
                );
            }
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => dec.feed(&buf[..n], &mut body).unwrap(),
                Err(e) if is_timeout(&e) => continue,
                Err(_) => break, // reset after the body: keep what came
            }
        }
    }
    Response {
        status,
        headers,
        body,
    }
}

fn preview(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(&raw[..raw.len().min(60)]).into_owned();
    if raw.len() > 60 {
        format!("{s}… ({} bytes)", raw.len())
    } else {
        s
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A response head: status, headers, and the bytes read past them.
pub type Head = (u16, Vec<(String, String)>, Vec<u8>);

/// Read the status line and headers; returns the bytes read past them.
pub fn read_head(s: &mut TcpStream, deadline: Instant) -> Result<Head, String> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out waiting for the response head ({} bytes so far)",
                buf.len()
            ));
        }
        match s.read(&mut tmp) {
            Ok(0) => {
                return Err(format!(
                    "connection closed after {} bytes: {:?}",
                    buf.len(),
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(format!("read failed after {} bytes: {e}", buf.len())),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or(format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, buf[end + 4..].to_vec()))
}

/// Decodes an HTTP/1.1 body incrementally: Content-Length, chunked, or to EOF.
pub enum BodyDecoder {
    Length(usize),
    Chunked { state: ChunkState, line: Vec<u8> },
    ToEof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
    Done,
}

impl BodyDecoder {
    pub fn for_headers(headers: &[(String, String)]) -> Self {
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            BodyDecoder::Chunked {
                state: ChunkState::Size,
                line: Vec::new(),
            }
        } else if let Some(n) = get("content-length").and_then(|v| v.parse().ok()) {
            BodyDecoder::Length(n)
        } else {
            BodyDecoder::ToEof
        }
    }

    pub fn done(&self) -> bool {
        matches!(
            self,
            BodyDecoder::Length(0)
                | BodyDecoder::Chunked {
                    state: ChunkState::Done,
                    ..
                }
        )
    }

    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            BodyDecoder::ToEof => out.extend_from_slice(input),
            BodyDecoder::Length(left) => {
                let n = (*left).min(input.len());
                out.extend_from_slice(&input[..n]);
                *left -= n;
            }
            BodyDecoder::Chunked { state, line } => {
                while !input.is_empty() {
                    match *state {
                        ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailer => {
                            let nl = input.iter().position(|&b| b == b'\n');
                            let take = nl.map_or(input.len(), |i| i + 1);
                            line.extend_from_slice(&input[..take]);
                            input = &input[take..];
                            if nl.is_none() {
                                if line.len() > 4096 {
                                    return Err("chunk framing line too long".into());
                                }
                                continue;
                            }
                            let text = String::from_utf8_lossy(line)
                                .trim_end_matches(['\r', '\n'])
                                .to_string();
                            line.clear();
                            *state = match *state {
                                ChunkState::Size => {
                                    let hex = text.split(';').next().unwrap_or("").trim();
                                    let n = usize::from_str_radix(hex, 16)
                                        .map_err(|_| format!("bad chunk size line {text:?}"))?;
                                    if n == 0 {
                                        ChunkState::Trailer
                                    } else {
                                        ChunkState::Data(n)
                                    }
                                }
                                ChunkState::DataEnd if text.is_empty() => ChunkState::Size,
                                ChunkState::DataEnd => {
                                    return Err(format!("junk after chunk data: {text:?}"))
                                }
                                ChunkState::Trailer if text.is_empty() => ChunkState::Done,
                                s => s, // a trailer field
                            };
                        }
                        ChunkState::Data(left) => {
                            let n = left.min(input.len());
                            out.extend_from_slice(&input[..n]);
                            input = &input[n..];
                            *state = if n == left {
                                ChunkState::DataEnd
                            } else {
                                ChunkState::Data(left - n)
                            };
                        }
                        ChunkState::Done => break,
                    }
                }
            }
        }
        Ok(())
    }
}

/// A viewer of the endless stream: reads only when told to, and remembers
/// when each byte of the body arrived.
pub struct Viewer {
    sock: TcpStream,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    decoder: BodyDecoder,
    /// The de-chunked body so far.
    pub body: Vec<u8>,
    /// (time, body length) after every read.
    pub marks: Vec<(Instant, usize)>,
    pub eof: bool,
}

impl Viewer {
    /// GET the stream and wait (≤ 30 s: capture may be starting) for the response head.
    pub fn open(addr: SocketAddr, path: &str) -> Viewer {
        Self::open_on(connect(addr), addr, path)
    }

    pub fn open_on(mut sock: TcpStream, addr: SocketAddr, path: &str) -> Viewer {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: pixelpass-tests\r\nAccept: */*\r\n\r\n");
        sock.write_all(req.as_bytes()).expect("send GET");
        let (status, headers, rest) =
            read_head(&mut sock, Instant::now() + Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let mut decoder = BodyDecoder::for_headers(&headers);
        let mut body = Vec::new();
        decoder.feed(&rest, &mut body).expect("body framing");
        let marks = vec![(Instant::now(), body.len())];
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        Viewer {
            sock,
            status,
            headers,
            decoder,
            body,
            marks,
            eof: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Read until `until` (or EOF / a reset). Returns the body bytes read.
    pub fn read_until(&mut self, until: Instant) -> usize {
        let before = self.body.len();
        let mut buf = vec![0u8; 64 * 1024];
        while !self.eof && Instant::now() < until {
            match self.sock.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.decoder
                        .feed(&buf[..n], &mut self.body)
                        .expect("body framing");
                    self.marks.push((Instant::now(), self.body.len()));
                    if self.decoder.done() {
                        self.eof = true;
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => self.eof = true,
            }
        }
        self.body.len() - before
    }

    pub fn read_for(&mut self, d: Duration) -> usize {
        self.read_until(Instant::now() + d)
    }

    /// Body length at the last read at or before `t`.
    pub fn offset_at(&self, t: Instant) -> usize {
        self.marks
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, n)| *n)
    }
}

// ───────────────────────────── MPEG-TS scanning ─────────────────────────────

pub const TS_PACKET: usize = 188;

#[derive(Debug, Clone)]
pub struct VideoPes {
    /// Byte offset of the TS packet that starts this PES.
    pub offset: usize,
    pub pts: Option<u64>,
    /// random_access_indicator set in the adaptation field.
    pub rai: bool,
    /// An SPS or IDR NAL unit starts in the first packet's payload.
    pub sps_or_idr: bool,
    /// The video continuity counter jumped since the previous video packet.
    pub cc_jump: bool,
}

#[derive(Debug, Default)]
pub struct TsScan {
    pub packets: usize,
    /// Bytes skipped because they were not at a sync byte.
    pub sync_errors: usize,
    pub video_pid: Option<u16>,
    pub audio_pids: Vec<u16>,
    pub pat_offsets: Vec<usize>,
    pub video: Vec<VideoPes>,
}

impl TsScan {
    /// Video PES that start in `[from, to)`.
    pub fn frames_between(&self, from: usize, to: usize) -> usize {
        self.video
            .iter()
            .filter(|p| p.offset >= from && p.offset < to)
            .count()
    }

    /// Indexes of video PES where the stream jumps: a continuity-counter
    /// break, or a PTS step over 3 frame durations.
    pub fn discontinuities(&self, fps: f64) -> Vec<usize> {
        let max_step = (3.0 * PTS_HZ as f64 / fps) as i64;
        (1..self.video.len())
            .filter(|&i| {
                let step = match (self.video[i - 1].pts, self.video[i].pts) {
                    (Some(a), Some(b)) => pts_diff(b, a),
                    _ => 0,
                };
                self.video[i].cc_jump || step > max_step || step < 0
            })
            .collect()
    }

    /// Is there a PAT between the previous video PES and video PES `i`?
    pub fn pat_before(&self, i: usize) -> Option<usize> {
        let lo = if i == 0 { 0 } else { self.video[i - 1].offset };
        let hi = self.video[i].offset;
        self.pat_offsets
            .iter()
            .copied()
            .rfind(|&o| o >= lo && o < hi)
    }

    pub fn last_pts(&self) -> Option<u64> {
        self.video.iter().rev().find_map(|p| p.pts)
    }
}

/// `a - b` for 33-bit PTS values, wrapping.
pub fn pts_diff(a: u64, b: u64) -> i64 {
    let m = 1i64 << 33;
    let d = (a as i64 - b as i64).rem_euclid(m);
    if d > m / 2 {
        d - m
    } else {
        d
    }
}

pub fn scan_ts(data: &[u8]) -> TsScan {
    let mut s = TsScan::default();
    let mut pmt_pid: Option<u16> = None;
    let mut last_video_cc: Option<u8> = None;
    let mut pending_jump = false;
    let mut i = 0;
    while i + TS_PACKET <= data.len() {
        let p = &data[i..i + TS_PACKET];
        if p[0] != 0x47 {
            s.sync_errors += 1;
            i += 1;
            continue;
        }
        s.packets += 1;
        let pusi = p[1] & 0x40 != 0;
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0f;
        let mut payload_at = 4;
        let mut rai = false;
        if afc & 2 != 0 {
            let len = p[4] as usize;
            if len > 0 {
                rai = p[5] & 0x40 != 0;
            }
            payload_at = 5 + len;
        }
        let payload: &[u8] = if afc & 1 != 0 && payload_at < TS_PACKET {
            &p[payload_at..]
        } else {
            &[]
        };

        if pid == 0 && pusi {
            s.pat_offsets.push(i);
            if let Some(sec) = psi_section(payload) {
                // PAT: program_number(2) + PID(2) entries after an 8-byte header.
                let mut j = 8;
                while j + 4 <= sec.len() {
                    let program = u16::from_be_bytes([sec[j], sec[j + 1]]);
                    let ppid = u16::from_be_bytes([sec[j + 2], sec[j + 3]]) & 0x1fff;
                    if program != 0 {
                        pmt_pid = Some(ppid);
                        break;
                    }
                    j += 4;
                }
            }
        } else if Some(pid) == pmt_pid && pusi {
            if let Some(sec) = psi_section(payload) {
                if sec.len() >= 12 && sec[0] == 0x02 {
                    let info_len = (usize::from(sec[10] & 0x0f) << 8) | usize::from(sec[11]);
                    let mut j = 12 + info_len;
                    s.audio_pids.clear();
                    while j + 5 <= sec.len() {
                        let st = sec[j];
                        let epid = u16::from_be_bytes([sec[j + 1], sec[j + 2]]) & 0x1fff;
                        let es_len =
                            (usize::from(sec[j + 3] & 0x0f) << 8) | usize::from(sec[j + 4]);
                        match st {
                            0x1b => s.video_pid = Some(epid),
                            0x0f | 0x11 => s.audio_pids.push(epid),
                            _ => {}
                        }
                        j += 5 + es_len;
                    }
                }
            }
        } else if Some(pid) == s.video_pid {
            if afc & 1 != 0 {
                if let Some(last) = last_video_cc {
                    if cc != (last + 1) & 0x0f && cc != last {
                        pending_jump = true;
                    }
                }
                last_video_cc = Some(cc);
            }
            if pusi && payload.len() >= 9 && payload[..3] == [0, 0, 1] {
                let flags = payload[7] >> 6;
                let hdr_len = payload[8] as usize;
                let pts = if flags & 2 != 0 && payload.len() >= 14 {
                    Some(read_pts(&payload[9..14]))
                } else {
                    None
                };
                let es = payload.get(9 + hdr_len..).unwrap_or(&[]);
                let sps_or_idr = es
                    .windows(4)
                    .any(|w| w[..3] == [0, 0, 1] && matches!(w[3] & 0x1f, 5 | 7));
                s.video.push(VideoPes {
                    offset: i,
                    pts,
                    rai,
                    sps_or_idr,
                    cc_jump: pending_jump,
                });
                pending_jump = false;
            }
        }
        i += TS_PACKET;
    }
    s
}

/// The section after the pointer field, cut to section_length (CRC included).
fn psi_section(payload: &[u8]) -> Option<&[u8]> {
    let ptr = *payload.first()? as usize;
    let sec = payload.get(1 + ptr..)?;
    if sec.len() < 3 {
        return None;
    }
    let len = (usize::from(sec[1] & 0x0f) << 8) | usize::from(sec[2]);
    let end = (3 + len).saturating_sub(4); // drop the CRC
    sec.get(..end)
}

fn read_pts(b: &[u8]) -> u64 {
    (u64::from(b[0] & 0x0e) << 29)
        | (u64::from(b[1]) << 22)
        | (u64::from(b[2] & 0xfe) << 14)
        | (u64::from(b[3]) << 7)
        | (u64::from(b[4]) >> 1)
}

/// Cut a capture before its last video PES: we stopped reading mid-frame,
/// and a truncated last frame would be a decode error of the test's making.
pub fn trim_capture(data: &[u8]) -> &[u8] {
    let scan = scan_ts(data);
    match scan.video.last() {
        Some(last) if scan.video.len() > 1 => &data[..last.offset],
        _ => &data[..data.len() - data.len() % TS_PACKET],
    }
}

// ───────────────────────────── tools and files ──────────────────────────────

#[derive(Debug)]
pub struct ToolOutput {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl ToolOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Run `cmd` with a time limit (killed, by its own PID, when over it).
pub fn run_tool(mut cmd: Command, timeout: Duration) -> ToolOutput {
    let t0 = Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    ToolOutput {
        status,
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
        elapsed: t0.elapsed(),
    }
}

/// A directory for captures, removed on drop unless the test failed.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "pixelpass-it-{}-{}-{}",
            name,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("captures kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// (codec_type, codec_name) of each stream, per `ffprobe -show_streams`.
pub fn ffprobe_streams(file: &Path) -> Vec<(String, String)> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(file);
    let out = run_tool(cmd, Duration::from_secs(60));
    assert!(
        out.success(),
        "ffprobe failed on {}: {}",
        file.display(),
        out.stderr
    );
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("ffprobe JSON ({e}): {}", out.stdout));
    v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["codec_type"].as_str().unwrap_or("").to_string(),
                        s["codec_name"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Video frames ffprobe decodes from the first video stream.
pub fn count_video_frames(file: &Path) -> u64 {
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "csv=p=0",
    ])
    .arg(file);
    let out = run_tool(cmd, Duration::from_secs(120));
    assert!(
        out.success(),
        "ffprobe -count_frames failed on {}: {}",
        file.display(),
        out.stderr
    );
    // MPEG-TS streams are listed twice (under the program and on their own).
    out.stdout
        .lines()
        .map(|l| l.trim().trim_end_matches(','))
        .find(|l| !l.is_empty())
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("frame count {:?}", out.stdout))
}

/// What `ffmpeg -v error` says while decoding the whole file (empty = clean).
pub fn decode_errors(file: &Path) -> String {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"]);
    let out = run_tool(cmd, Duration::from_secs(120));
    let mut msg = out.stderr.trim().to_string();
    if !out.success() {
        msg.push_str(&format!("\n(ffmpeg exit status {:?})", out.status));
    }
    msg
}

/// Everything a test asserts about a capture: H.264 + AAC, clean decode, frames.
pub struct Checked {
    pub frames: u64,
    pub scan: TsScan,
    pub path: PathBuf,
}

pub fn check_capture(dir: &TempDir, name: &str, data: &[u8], min_frames: u64) -> Checked {
    let trimmed = trim_capture(data);
    assert!(
        !trimmed.is_empty(),
        "{name}: nothing to decode ({} bytes received)",
        data.len()
    );
    let path = dir.write(name, trimmed);
    let streams = ffprobe_streams(&path);
    assert!(
        streams.iter().any(|(t, c)| t == "video" && c == "h264"),
        "{name}: no H.264 video stream: {streams:?}"
    );
    assert!(
        streams.iter().any(|(t, c)| t == "audio" && c == "aac"),
        "{name}: no AAC audio stream: {streams:?}"
    );
    let errors = decode_errors(&path);
    assert!(
        errors.is_empty(),
        "{name}: ffmpeg reported decode errors:\n{errors}"
    );
    let frames = count_video_frames(&path);
    assert!(
        frames >= min_frames,
        "{name}: {frames} video frames decoded, want ≥ {min_frames} ({} bytes)",
        trimmed.len()
    );
    Checked {
        frames,
        scan: scan_ts(trimmed),
        path,
    }
}

#[cfg(test)]
mod self_tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let wire =
            b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        for split in 1..wire.len() {
            let mut d = BodyDecoder::Chunked {
                state: ChunkState::Size,
                line: Vec::new(),
            };
            let mut out = Vec::new();
            for part in wire.chunks(split) {
                d.feed(part, &mut out).unwrap();
            }
            assert_eq!(out, b"Wikipedia in \r\n\r\nchunks.", "split {split}");
            assert!(d.done());
        }
        let mut bad = BodyDecoder::Chunked {
            state: ChunkState::Size,
            line: Vec::new(),
        };
        assert!(bad.feed(b"zz\r\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn pts_wraps() {
        assert_eq!(pts_diff(5, (1 << 33) - 5), 10);
        assert_eq!(pts_diff(100, 40), 60);
        assert_eq!(pts_diff(40, 100), -60);
        let b = [0x21, 0x00, 0x01, 0x00, 0x01]; // PTS 0 with marker bits
        assert_eq!(read_pts(&b), 0);
    }
}
