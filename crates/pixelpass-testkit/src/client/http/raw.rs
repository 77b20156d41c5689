//! Below HTTP: a `std::net::TcpStream` with timeouts, for the tests that
//! send what no client would (garbage, oversized or never-finished
//! headers: [`raw_request`]), and the response-head parser ([`parse_head`])
//! it shares with the load generator, whose viewers count body bytes
//! straight off their sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::Response;

/// Largest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;

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

/// Send `raw` as is and read one response (its head only if `head_only`),
/// 15 s at most. The body is read to its `Content-Length`, or to the end of
/// the connection; a chunked one is returned with its framing.
pub fn raw_request(addr: SocketAddr, raw: &[u8], head_only: bool) -> Response {
    let mut s = connect(addr);
    // The server may answer and close before taking all of an oversized request.
    let _ = s.write_all(raw);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = Vec::new();
    let mut closed = false;
    let head = loop {
        match parse_head(&buf) {
            Ok(Some(head)) => break head,
            Ok(None) if closed => panic!(
                "no response to {:?}: the connection closed after {:?}",
                preview(raw),
                String::from_utf8_lossy(&buf)
            ),
            Ok(None) => {}
            Err(e) => panic!("no response to {:?}: {e}", preview(raw)),
        }
        assert!(
            Instant::now() < deadline,
            "no response head to {:?} within 15 s ({} bytes so far)",
            preview(raw),
            buf.len()
        );
        closed = !read_some(&mut s, &mut buf);
    };
    let no_body = head_only || head.status / 100 == 1 || head.status == 204 || head.status == 304;
    let want = match head.framing {
        _ if no_body => Some(0),
        Framing::Length(n) => Some(n as usize),
        Framing::Chunked | Framing::Close => None,
    };
    let body_len = |buf: &[u8]| buf.len() - head.len;
    let complete = |buf: &[u8]| match want {
        Some(n) => body_len(buf) >= n,
        None => head.framing == Framing::Chunked && buf.ends_with(b"0\r\n\r\n"),
    };
    while !closed && !complete(&buf) {
        assert!(
            Instant::now() < deadline,
            "response body to {:?} not complete within 15 s ({} bytes so far)",
            preview(raw),
            body_len(&buf)
        );
        closed = !read_some(&mut s, &mut buf);
    }
    let end = want.map_or(buf.len(), |n| buf.len().min(head.len + n));
    Response {
        status: head.status,
        body: buf[head.len..end].to_vec(),
        headers: head.headers,
    }
}

/// One read into `buf`; false once the connection ended (closed or reset).
fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 16 * 1024];
    match s.read(&mut tmp) {
        Ok(0) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
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

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Chunked,
    Length(u64),
    /// Until the connection closes.
    Close,
}

/// A response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes up to and including the blank line.
    pub len: usize,
    pub status: u16,
    pub reason: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
}

/// Parse a response head from the start of `buf`. `Ok(None)`: incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(format!("response head over {} KiB", MAX_HEAD / 1024))
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
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" {
            if value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("chunked"))
            {
                framing = Framing::Chunked;
            }
        } else if name == "content-length" && framing != Framing::Chunked {
            framing = Framing::Length(
                value
                    .parse()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        }
        headers.push((name, value.to_owned()));
    }
    Ok(Some(Head {
        len: end + 4,
        status,
        reason,
        headers,
        framing,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd";
        let h = parse_head(ok).unwrap().unwrap();
        assert_eq!(
            (h.status, h.reason.as_str(), h.framing),
            (200, "OK", Framing::Chunked)
        );
        assert_eq!(&ok[h.len..], b"4\r\nabcd");
        assert_eq!(
            super::super::header(&h.headers, "Content-Type"),
            Some("video/mp2t")
        );

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
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn raw_requests_read_to_the_length_or_the_end() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let answers: [&[u8]; 3] = [
                // More body than said: the rest is not taken.
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nbadXX",
                b"HTTP/1.1 200 OK\r\n\r\nto the end",
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
            ];
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                // Take the request first: closing on unread bytes would be a reset.
                let _ = s.read(&mut [0u8; 1024]).unwrap();
                s.write_all(answer).unwrap();
            }
        });
        let r = raw_request(addr, b"GARBAGE\r\n\r\n", false);
        assert_eq!((r.status, r.text().as_str()), (400, "bad"));
        let r = raw_request(addr, b"GET / HTTP/1.0\r\n\r\n", false);
        assert_eq!((r.status, r.text().as_str()), (200, "to the end"));
        let r = raw_request(addr, b"HEAD / HTTP/1.1\r\n\r\n", true);
        assert_eq!((r.status, r.body.len()), (200, 0));
        server.join().unwrap();
    }
}
