//! The viewers themselves: one current-thread runtime, one task per
//! viewer reading into one shared buffer, and the measurement window
//! ([`drive`]) that prints the `ready` and `result` lines.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use pixelpass_testkit::client::http::raw::parse_head;

use super::body::BodyCounter;
use super::{procstat, ClientEvent};

const READ_BUF: usize = 64 * 1024;
/// Errors quoted in the result (the rest are only counted).
const MAX_ERRORS: usize = 5;

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
pub(super) async fn drive(
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
