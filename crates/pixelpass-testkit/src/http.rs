//! A small HTTP/1.1 client over `std::net::TcpStream`, with timeouts
//! everywhere: one-shot requests, incremental body decoding, and a
//! [`Viewer`] of the endless stream.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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
}
