//! The load generator of `bench fanout`: N HTTP-TS viewers on loopback in
//! one process (the hidden `bench fanout-client` subcommand), pinned to its
//! own CPU so the server's CPU time is measured alone.
//!
//! One current-thread tokio runtime; every viewer sends a raw
//! `GET /TOKEN/stream.ts HTTP/1.1`, checks the status line, then reads with
//! one shared 64 KiB buffer and counts body payload bytes (chunked framing
//! removed) and the longest gap between two reads. It prints two JSON lines
//! on stdout: `{"event":"ready",…}` once every viewer got its response head
//! and the warm-up passed (the measurement window starts then), and
//! `{"event":"result",…}` when the window ends; then it exits, closing every
//! connection. It is bounded: at most [`MAX_VIEWERS`] viewers and a hard
//! deadline, and it dies with its parent.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::procstat;

/// More viewers than this is a typo, not a benchmark.
pub const MAX_VIEWERS: usize = 20_000;
const READ_BUF: usize = 64 * 1024;
const MAX_HEAD: usize = 16 * 1024;
/// Errors quoted in the result (the rest are only counted).
const MAX_ERRORS: usize = 5;

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Stream URL, e.g. http://127.0.0.1:PORT/TOKEN/stream.ts (loopback only).
    #[arg(long)]
    pub url: String,
    /// Concurrent viewers.
    #[arg(long, default_value_t = 1)]
    pub viewers: usize,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds between "every viewer connected" and the window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Give up waiting for response heads after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Pin this process to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
}

/// The lines the client prints (one JSON object per line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum ClientEvent {
    Ready {
        connected: usize,
        failed: usize,
        errors: Vec<String>,
    },
    Result {
        viewers: usize,
        connected: usize,
        failed: usize,
        /// Viewers whose connection ended before the window did.
        closed_early: usize,
        window_s: f64,
        /// Body payload bytes per viewer received in the window (chunk framing excluded).
        payload_bytes: Vec<u64>,
        /// Everything read in the window, framing included.
        raw_bytes_total: u64,
        /// Longest gap between two reads per viewer, in the window (ms).
        max_gap_ms: Vec<u64>,
        /// CPU the client used during the window (near 1.0 s/s: the client was the bottleneck).
        client_cpu_s: f64,
        errors: Vec<String>,
    },
}

// ---------------------------------------------------------------- pure parts

/// `http://127.0.0.1:PORT/path` → (address, path). Loopback addresses only:
/// this is a load generator, it must not point at someone else's host.
pub fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("the URL must start with http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("{authority:?} is not IP:PORT"))?;
    if !addr.ip().is_loopback() {
        bail!(
            "the load generator only connects to loopback addresses, not {}",
            addr.ip()
        );
    }
    Ok((addr, path.to_owned()))
}

/// How the response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Chunked,
    Length(u64),
    /// Until the connection closes.
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes up to and including the blank line.
    pub len: usize,
    pub status: u16,
    pub reason: String,
    pub framing: Framing,
}

/// Parse a response head from the start of `buf`. `Ok(None)`: incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err("response head too large".into())
        } else {
            Ok(None)
        };
    };
    let text =
        std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8".to_owned())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 response: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let reason = parts.next().unwrap_or("").to_owned();
    let mut framing = Framing::Close;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("chunked"))
            {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            framing = Framing::Length(
                value
                    .parse()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        }
    }
    Ok(Some(Head {
        len: end + 4,
        status,
        reason,
        framing,
    }))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size.
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last (zero) chunk: trailer lines until a blank one.
    Trailer {
        line_len: usize,
    },
    TrailerLf {
        line_len: usize,
    },
    Done,
}

/// Counts the payload of a chunked body as it streams by, without copying.
#[derive(Debug, Default)]
pub struct ChunkedCounter {
    state: ChunkState,
    size: u64,
    digits: u8,
    /// Payload bytes so far.
    pub payload: u64,
}

impl ChunkedCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The terminating zero-size chunk (and trailers) went by.
    pub fn finished(&self) -> bool {
        self.state == ChunkState::Done
    }

    pub fn feed(&mut self, mut buf: &[u8]) -> Result<(), String> {
        while !buf.is_empty() {
            if self.state == ChunkState::Data {
                let n = (self.size).min(buf.len() as u64) as usize;
                self.payload += n as u64;
                self.size -= n as u64;
                buf = &buf[n..];
                if self.size == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let b = buf[0];
            buf = &buf[1..];
            self.state = match (self.state, b) {
                (ChunkState::Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits >= 15 {
                        return Err("chunk size too large".into());
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                    ChunkState::Size
                }
                (ChunkState::Size, b';' | b' ' | b'\t') if self.digits > 0 => ChunkState::Extension,
                (ChunkState::Size, b'\r') if self.digits > 0 => ChunkState::SizeLf,
                (ChunkState::Extension, b'\r') => ChunkState::SizeLf,
                (ChunkState::Extension, _) => ChunkState::Extension,
                (ChunkState::SizeLf, b'\n') if self.size == 0 => {
                    ChunkState::Trailer { line_len: 0 }
                }
                (ChunkState::SizeLf, b'\n') => ChunkState::Data,
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataLf, b'\n') => {
                    self.digits = 0;
                    self.size = 0;
                    ChunkState::Size
                }
                (ChunkState::Trailer { line_len }, b'\r') => ChunkState::TrailerLf { line_len },
                (ChunkState::Trailer { line_len }, _) => ChunkState::Trailer {
                    line_len: line_len + 1,
                },
                (ChunkState::TrailerLf { line_len: 0 }, b'\n') => ChunkState::Done,
                (ChunkState::TrailerLf { .. }, b'\n') => ChunkState::Trailer { line_len: 0 },
                (ChunkState::Done, _) => return Err("bytes after the end of a chunked body".into()),
                (state, b) => {
                    return Err(format!(
                        "bad chunked framing: byte {b:#04x} in state {state:?}"
                    ))
                }
            };
        }
        Ok(())
    }
}

/// Counts body payload bytes for any framing.
#[derive(Debug)]
pub enum BodyCounter {
    Chunked(ChunkedCounter),
    Length { left: u64, payload: u64 },
    Close { payload: u64 },
}

impl BodyCounter {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Chunked => BodyCounter::Chunked(ChunkedCounter::new()),
            Framing::Length(n) => BodyCounter::Length {
                left: n,
                payload: 0,
            },
            Framing::Close => BodyCounter::Close { payload: 0 },
        }
    }

    pub fn feed(&mut self, buf: &[u8]) -> Result<(), String> {
        match self {
            BodyCounter::Chunked(c) => c.feed(buf),
            BodyCounter::Length { left, payload } => {
                let n = (buf.len() as u64).min(*left);
                *left -= n;
                *payload += n;
                if n < buf.len() as u64 {
                    return Err("more bytes than content-length".into());
                }
                Ok(())
            }
            BodyCounter::Close { payload } => {
                *payload += buf.len() as u64;
                Ok(())
            }
        }
    }

    pub fn payload(&self) -> u64 {
        match self {
            BodyCounter::Chunked(c) => c.payload,
            BodyCounter::Length { payload, .. } | BodyCounter::Close { payload } => *payload,
        }
    }
}

// ---------------------------------------------------------------- the client

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Streaming,
    Failed,
    Closed,
}

/// One viewer as the main task sees it.
struct Conn {
    phase: Cell<Phase>,
    payload: Cell<u64>,
    raw: Cell<u64>,
    last_read: Cell<Instant>,
    max_gap: Cell<Duration>,
}

struct Shared {
    conns: Vec<Conn>,
    measuring: Cell<bool>,
    errors: RefCell<Vec<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        let mut errors = self.errors.borrow_mut();
        if errors.len() < MAX_ERRORS {
            errors.push(e);
        }
    }
}

thread_local! {
    /// One read buffer for every viewer: reads happen one at a time on this thread.
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
}

enum Read {
    Bytes,
    Eof,
    WouldBlock,
}

/// Read once from `s` into the shared buffer and hand the bytes to `f`.
fn read_once(s: &TcpStream, f: impl FnOnce(&[u8]) -> Result<(), String>) -> Result<Read, String> {
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        match s.try_read(&mut b[..]) {
            Ok(0) => Ok(Read::Eof),
            Ok(n) => f(&b[..n]).map(|()| Read::Bytes),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(Read::WouldBlock),
            Err(e) => Err(format!("read: {e}")),
        }
    })
}

async fn viewer(addr: SocketAddr, request: Rc<Vec<u8>>, shared: Rc<Shared>, i: usize) {
    let conn = &shared.conns[i];
    let r = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(&request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut head_buf = Vec::new();
        let head = loop {
            s.readable().await.map_err(|e| format!("read: {e}"))?;
            match read_once(&s, |b| {
                head_buf.extend_from_slice(b);
                Ok(())
            })? {
                Read::Bytes => {}
                Read::WouldBlock => continue,
                Read::Eof => return Err("closed before the response head".to_owned()),
            }
            if let Some(head) = parse_head(&head_buf)? {
                break head;
            }
        };
        if head.status != 200 {
            let body = String::from_utf8_lossy(&head_buf[head.len..]);
            let first = body.lines().next().unwrap_or("").trim().to_owned();
            return Err(format!("HTTP {} {}: {first}", head.status, head.reason));
        }
        let mut body = BodyCounter::new(head.framing);
        body.feed(&head_buf[head.len..])?;
        conn.raw.set((head_buf.len() - head.len) as u64);
        drop(head_buf);
        conn.payload.set(body.payload());
        conn.last_read.set(Instant::now());
        conn.phase.set(Phase::Streaming);
        loop {
            s.readable().await.map_err(|e| format!("read: {e}"))?;
            let mut n = 0;
            match read_once(&s, |b| {
                n = b.len();
                body.feed(b)
            })? {
                Read::WouldBlock => continue,
                Read::Eof => return Err("the server closed the stream".to_owned()),
                Read::Bytes => {}
            }
            let now = Instant::now();
            if shared.measuring.get() {
                let gap = now.saturating_duration_since(conn.last_read.get());
                if gap > conn.max_gap.get() {
                    conn.max_gap.set(gap);
                }
            }
            conn.last_read.set(now);
            conn.raw.set(conn.raw.get() + n as u64);
            conn.payload.set(body.payload());
        }
    };
    let r: Result<(), String> = r.await;
    if let Err(e) = r {
        let was = conn.phase.get();
        conn.phase.set(if was == Phase::Connecting {
            Phase::Failed
        } else {
            Phase::Closed
        });
        shared.error(format!("viewer {i}: {e}"));
    }
}

fn print_event(ev: &ClientEvent) -> anyhow::Result<()> {
    let line = serde_json::to_string(ev)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// The hidden `bench fanout-client` subcommand.
pub fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    if args.viewers == 0 || args.viewers > MAX_VIEWERS {
        bail!("--viewers must be 1..={MAX_VIEWERS}");
    }
    let finite = |x: f64, what: &str, max: f64| {
        if x.is_finite() && (0.0..=max).contains(&x) {
            Ok(Duration::from_secs_f64(x))
        } else {
            Err(anyhow::anyhow!("{what} must be 0..={max} seconds"))
        }
    };
    let window = finite(args.seconds, "--seconds", 3600.0)?;
    let warmup = finite(args.warmup, "--warmup", 600.0)?;
    let connect_timeout = finite(args.connect_timeout, "--connect-timeout", 600.0)?;
    let (addr, path) = parse_url(&args.url)?;
    // Die with the parent: a benchmark that lost its server has nothing to measure.
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a signal number for this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
    if std::os::unix::process::parent_id() == 1 {
        bail!("the parent is gone");
    }
    if let Some(cpu) = args.cpu {
        procstat::pin_to_cpu(cpu).with_context(|| format!("cannot pin the client to CPU {cpu}"))?;
    }
    procstat::raise_nofile_limit().context("cannot raise the open-file limit")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    // A hard bound whatever happens (a server that never answers, a stuck window).
    let deadline = connect_timeout + warmup + window + Duration::from_secs(10);
    let result = local.block_on(&rt, async move {
        tokio::time::timeout(
            deadline,
            drive(addr, path, args.viewers, window, warmup, connect_timeout),
        )
        .await
    });
    match result {
        Ok(r) => r?,
        Err(_) => bail!("the client passed its deadline of {deadline:?}"),
    }
    // Exit without tearing the tasks down one by one: the kernel closes the sockets.
    std::process::exit(0)
}

async fn drive(
    addr: SocketAddr,
    path: String,
    viewers: usize,
    window: Duration,
    warmup: Duration,
    connect_timeout: Duration,
) -> anyhow::Result<()> {
    let request = Rc::new(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: pixelpass-bench\r\nAccept: */*\r\n\r\n")
            .into_bytes(),
    );
    let now = Instant::now();
    let shared = Rc::new(Shared {
        conns: (0..viewers)
            .map(|_| Conn {
                phase: Cell::new(Phase::Connecting),
                payload: Cell::new(0),
                raw: Cell::new(0),
                last_read: Cell::new(now),
                max_gap: Cell::new(Duration::ZERO),
            })
            .collect(),
        measuring: Cell::new(false),
        errors: RefCell::new(Vec::new()),
    });
    for i in 0..viewers {
        tokio::task::spawn_local(viewer(addr, request.clone(), shared.clone(), i));
    }
    let count = |p: Phase| shared.conns.iter().filter(|c| c.phase.get() == p).count();
    let give_up = tokio::time::Instant::now() + connect_timeout;
    while count(Phase::Connecting) > 0 && tokio::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(warmup).await;

    let connected = viewers - count(Phase::Connecting) - count(Phase::Failed);
    print_event(&ClientEvent::Ready {
        connected,
        failed: viewers - connected,
        errors: shared.errors.borrow().clone(),
    })?;
    let cpu0 = procstat::process_cpu()?;
    let start_payload: Vec<u64> = shared.conns.iter().map(|c| c.payload.get()).collect();
    let start_raw: u64 = shared.conns.iter().map(|c| c.raw.get()).sum();
    for c in &shared.conns {
        c.max_gap.set(Duration::ZERO);
    }
    shared.measuring.set(true);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let end = Instant::now();
    shared.measuring.set(false);
    let cpu = procstat::process_cpu()?.since(&cpu0).total();

    let payload_bytes: Vec<u64> = shared
        .conns
        .iter()
        .zip(&start_payload)
        .map(|(c, s)| c.payload.get() - s)
        .collect();
    let raw_bytes_total = shared.conns.iter().map(|c| c.raw.get()).sum::<u64>() - start_raw;
    let max_gap_ms = shared
        .conns
        .iter()
        .map(|c| {
            // A viewer that went silent has its gap running until the end.
            let open = end.saturating_duration_since(c.last_read.get().max(t0));
            c.max_gap.get().max(open).as_millis() as u64
        })
        .collect();
    print_event(&ClientEvent::Result {
        viewers,
        connected,
        failed: viewers - connected,
        closed_early: count(Phase::Closed),
        window_s: end.duration_since(t0).as_secs_f64(),
        payload_bytes,
        raw_bytes_total,
        max_gap_ms,
        client_cpu_s: cpu.as_secs_f64(),
        errors: shared.errors.borrow().clone(),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_loopback_only() {
        let (addr, path) = parse_url("http://127.0.0.1:8080/abc/stream.ts").unwrap();
        assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(path, "/abc/stream.ts");
        assert_eq!(parse_url("http://[::1]:9").unwrap().1, "/");
        assert!(parse_url("http://10.0.0.1:80/x").is_err());
        assert!(parse_url("https://127.0.0.1:80/x").is_err());
        assert!(
            parse_url("http://localhost:80/x").is_err(),
            "names are not resolved"
        );
    }

    #[test]
    fn response_heads() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd";
        let h = parse_head(ok).unwrap().unwrap();
        assert_eq!(
            (h.status, h.reason.as_str(), h.framing),
            (200, "OK", Framing::Chunked)
        );
        assert_eq!(&ok[h.len..], b"4\r\nabcd");

        let full = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 27\r\n\r\nhost is full (2/2 viewers)\n";
        let h = parse_head(full).unwrap().unwrap();
        assert_eq!((h.status, h.framing), (503, Framing::Length(27)));

        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-ty").unwrap(), None);
        assert_eq!(
            parse_head(b"HTTP/1.0 200 OK\r\n\r\n")
                .unwrap()
                .unwrap()
                .framing,
            Framing::Close
        );
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    fn chunked(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn chunked_payload_is_counted_in_any_split() {
        let big = vec![0x47u8; 3000];
        let mut body = chunked(&[b"hello", &big, b"\r\n0\r\n"]);
        let want = 5 + 3000 + 5;
        // Split the stream at every possible point: the count must not change.
        for split in 0..body.len() {
            let mut c = ChunkedCounter::new();
            c.feed(&body[..split]).unwrap();
            c.feed(&body[split..]).unwrap();
            assert_eq!(c.payload, want, "split at {split}");
            assert!(!c.finished());
        }
        // Byte by byte, then the last chunk and a trailer.
        body.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
        let mut c = ChunkedCounter::new();
        for b in &body {
            c.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(c.payload, want);
        assert!(c.finished());
        assert!(c.feed(b"x").is_err());
    }

    #[test]
    fn chunk_extensions_and_upper_case_hex() {
        let mut c = ChunkedCounter::new();
        c.feed(b"A;name=value\r\n0123456789\r\n1F\r\n").unwrap();
        c.feed(&[7u8; 31]).unwrap();
        c.feed(b"\r\n").unwrap();
        assert_eq!(c.payload, 10 + 31);
    }

    #[test]
    fn broken_chunked_framing_is_an_error() {
        assert!(ChunkedCounter::new().feed(b"zz\r\n").is_err());
        assert!(
            ChunkedCounter::new().feed(b"\r\n").is_err(),
            "no size digits"
        );
        assert!(
            ChunkedCounter::new().feed(b"2\r\nabX").is_err(),
            "data not followed by CRLF"
        );
        assert!(ChunkedCounter::new().feed(b"2\rX").is_err());
        assert!(
            ChunkedCounter::new().feed(b"ffffffffffffffff\r\n").is_err(),
            "size overflow"
        );
    }

    #[test]
    fn length_and_close_framing() {
        let mut b = BodyCounter::new(Framing::Length(5));
        b.feed(b"abc").unwrap();
        b.feed(b"de").unwrap();
        assert_eq!(b.payload(), 5);
        assert!(b.feed(b"f").is_err());
        let mut b = BodyCounter::new(Framing::Close);
        b.feed(b"abcdef").unwrap();
        assert_eq!(b.payload(), 6);
    }

    #[test]
    fn events_round_trip_as_single_json_lines() {
        let ev = ClientEvent::Result {
            viewers: 2,
            connected: 2,
            failed: 0,
            closed_early: 0,
            window_s: 10.0,
            payload_bytes: vec![5_000_000, 4_999_812],
            raw_bytes_total: 10_001_000,
            max_gap_ms: vec![40, 41],
            client_cpu_s: 0.2,
            errors: vec![],
        };
        let line = serde_json::to_string(&ev).unwrap();
        assert!(
            line.starts_with("{\"event\":\"result\"") && !line.contains('\n'),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<ClientEvent>(&line).unwrap(), ev);
        let ready: ClientEvent =
            serde_json::from_str(r#"{"event":"ready","connected":3,"failed":0,"errors":[]}"#)
                .unwrap();
        assert_eq!(
            ready,
            ClientEvent::Ready {
                connected: 3,
                failed: 0,
                errors: vec![]
            }
        );
    }
}
