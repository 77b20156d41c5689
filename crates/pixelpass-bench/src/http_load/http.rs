//! The pure HTTP parts of the load generator: the stream URL (loopback
//! only) and the response head (status and body framing).

use std::net::SocketAddr;

use anyhow::{bail, Context};

const MAX_HEAD: usize = 16 * 1024;

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
}
