//! The client for the synchronous tests: each call runs the async client
//! ([`super`]) on a current-thread runtime of its own, so nothing happens
//! on a connection between two calls (a [`Viewer`] that is not reading
//! stalls as a real one would). Failures panic with what was asked.
//!
//! An async test may call these too: they block its thread then, as a
//! `std::net` client would.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};

use super::{Response, Stream, Url, MAX_RESPONSE};

const USER_AGENT: &str = "pixelpass-tests";

/// A current-thread runtime that synchronous code and async tests alike
/// can block on.
struct Rt(Option<Runtime>);

impl Rt {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Self(Some(rt))
    }

    /// Run `f` to its end. Inside another runtime (an async test), where
    /// tokio refuses to block, on a thread of its own while this one waits.
    fn block_on<F: Future + Send>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        let rt = self.0.as_ref().expect("a runtime until dropped");
        if Handle::try_current().is_err() {
            return rt.block_on(f);
        }
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        // Its tasks (and their sockets) are dropped here; it has no blocking
        // threads to wait for, and waiting would panic inside another runtime.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// One request with a complete (finite) response, 15 s at most.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    request_with(addr, method, path, &[], b"")
}

/// One request with these headers and body; the response read whole within
/// 15 s. A connection that breaks during the body leaves what came (so does
/// a body past [`MAX_RESPONSE`]).
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let url = Url::at(addr, path);
    let mut all = vec![("User-Agent", USER_AGENT), ("Accept", "*/*")];
    all.extend_from_slice(headers);
    all.push(("Connection", "close"));
    let timeout = Duration::from_secs(15);
    let go = async {
        let tcp = super::connect(&url.authority).await?;
        let mut s = Stream::send(tcp, &url.authority, method, path, &all, body).await?;
        let (body, _broke_off) = s.read_to_end(MAX_RESPONSE).await;
        anyhow::Ok(s.into_response(body))
    };
    Rt::new()
        .block_on(async { tokio::time::timeout(timeout, go).await })
        .unwrap_or_else(|_| panic!("{method} {url}: no complete response within {timeout:?}"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e:#}"))
}

/// A viewer of the endless stream: reads only when told to, and remembers
/// when each byte of the body arrived.
pub struct Viewer {
    // Before `rt`: the connection closes with the viewer.
    stream: Stream,
    rt: Rt,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The de-chunked body so far.
    pub body: Vec<u8>,
    /// (time, body length) after every piece of body.
    pub marks: Vec<(Instant, usize)>,
    /// The body ended, or the connection did.
    pub eof: bool,
}

impl Viewer {
    /// GET the stream and wait (≤ 30 s: capture may be starting) for the response head.
    pub fn open(addr: SocketAddr, path: &str) -> Viewer {
        Self::open_on(super::raw::connect(addr), addr, path)
    }

    /// The same on a connection made by the caller (e.g. a small receive buffer).
    pub fn open_on(sock: std::net::TcpStream, addr: SocketAddr, path: &str) -> Viewer {
        let rt = Rt::new();
        let headers = [("User-Agent", USER_AGENT), ("Accept", "*/*")];
        let host = addr.to_string();
        let go = async {
            sock.set_nonblocking(true)?;
            let tcp = tokio::net::TcpStream::from_std(sock)?;
            Stream::send(tcp, &host, "GET", path, &headers, b"").await
        };
        let stream = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), go).await })
            .unwrap_or_else(|_| panic!("GET {path}: no response head within 30 s"))
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
        Viewer {
            status: stream.status,
            headers: stream.headers.clone(),
            stream,
            rt,
            body: Vec::new(),
            marks: vec![(Instant::now(), 0)],
            eof: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        super::header(&self.headers, name)
    }

    /// Read until `until` (or the end / a reset). Returns the body bytes read.
    pub fn read_until(&mut self, until: Instant) -> usize {
        let before = self.body.len();
        let Viewer {
            stream,
            rt,
            body,
            marks,
            eof,
            ..
        } = self;
        rt.block_on(async {
            while !*eof && Instant::now() < until {
                match stream.next_until(until).await {
                    None => break, // `until` passed
                    Some(Ok(Some(bytes))) => {
                        body.extend_from_slice(&bytes);
                        marks.push((Instant::now(), body.len()));
                    }
                    Some(Ok(None) | Err(_)) => *eof = true,
                }
            }
        });
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
