//! Just enough HTTP/1.1 for WHEP: one request per connection
//! (`Connection: close`), a bounded response, a deadline on the whole
//! exchange. `http://` only (the WHEP clients here talk to loopback or LAN).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted (an SDP answer is a few KiB).
pub const MAX_RESPONSE: usize = 1 << 20;

/// `http://host[:port]/path`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host:port` as written (for the `Host` header and the lookup).
    pub authority: String,
    /// Starts with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let authority = if has_port(authority) {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            path: path.to_owned(),
        })
    }

    /// `location` (absolute or a path) resolved against this URL.
    pub fn join(&self, location: &str) -> Result<Self, String> {
        if location.starts_with("http://") {
            Self::parse(location)
        } else if location.starts_with('/') {
            Ok(Self {
                authority: self.authority.clone(),
                path: location.to_owned(),
            })
        } else {
            let dir = self.path.rsplit_once('/').map_or("", |(d, _)| d);
            Ok(Self {
                authority: self.authority.clone(),
                path: format!("{dir}/{location}"),
            })
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        // [v6]:port has its colon after the bracket; bare [v6] has none there.
        Some(i) => !authority[i..].contains(']') && authority[i + 1..].parse::<u16>().is_ok(),
        None => false,
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request; the response is read to its `Content-Length` (or to EOF).
pub async fn request(
    url: &Url,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let go = async {
        let addr: SocketAddr = tokio::net::lookup_host(&url.authority)
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{}: the name has no address", url.authority))?;
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut req = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            url.path,
            url.authority,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(resp) = parse_response(&buf)? {
                return Ok(resp);
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return parse_complete(&buf);
            }
            if buf.len() + n > MAX_RESPONSE {
                anyhow::bail!("the response is larger than {MAX_RESPONSE} bytes");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, go).await.map_err(|_| {
        anyhow::anyhow!(
            "{method} {url}: no answer within {} ms",
            timeout.as_millis()
        )
    })?
}

/// A response once its head and `Content-Length` bytes of body are there.
pub fn parse_response(buf: &[u8]) -> anyhow::Result<Option<Response>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let (status, headers) = parse_head(&buf[..end])?;
    let body = &buf[end + 4..];
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>());
    match len {
        Some(Ok(len)) if body.len() >= len => Ok(Some(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body[..len]).into_owned(),
        })),
        Some(Ok(_)) => Ok(None),
        Some(Err(_)) => anyhow::bail!("bad Content-Length in the response"),
        None if status == 204 || status == 304 => Ok(Some(Response {
            status,
            headers,
            body: String::new(),
        })),
        None => Ok(None), // read to EOF
    }
}

fn parse_complete(buf: &[u8]) -> anyhow::Result<Response> {
    if let Some(r) = parse_response(buf)? {
        return Ok(r);
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("the connection closed before a full response head"))?;
    let (status, headers) = parse_head(&buf[..end])?;
    if headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        anyhow::bail!("the connection closed before the full body");
    }
    if headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    }) {
        anyhow::bail!("chunked responses are not supported");
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&buf[end + 4..]).into_owned(),
    })
}

fn parse_head(head: &[u8]) -> anyhow::Result<(u16, Vec<(String, String)>)> {
    let head =
        std::str::from_utf8(head).map_err(|_| anyhow::anyhow!("the response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        anyhow::bail!("not an HTTP/1.x response: {status_line:?}");
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_locations() {
        let u = Url::parse("http://127.0.0.1:8860/tok/whep").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:8860", "/tok/whep")
        );
        assert_eq!(
            Url::parse("http://example.org").unwrap().authority,
            "example.org:80"
        );
        assert_eq!(Url::parse("http://[::1]:9/x").unwrap().authority, "[::1]:9");
        assert_eq!(Url::parse("http://[::1]/x").unwrap().authority, "[::1]:80");
        assert!(Url::parse("https://x/").is_err());
        assert!(Url::parse("http:///x").is_err());
        assert_eq!(
            u.join("/tok/whep/abc").unwrap().to_string(),
            "http://127.0.0.1:8860/tok/whep/abc"
        );
        assert_eq!(u.join("whep/abc").unwrap().path, "/tok/whep/abc");
        assert_eq!(u.join("http://h:1/r").unwrap().authority, "h:1");
    }

    #[test]
    fn responses_complete_at_their_content_length() {
        let head = b"HTTP/1.1 201 Created\r\nLocation: /t/whep/1\r\nContent-Length: 5\r\n\r\n";
        let mut buf = head.to_vec();
        buf.extend_from_slice(b"v=");
        assert!(parse_response(&buf).unwrap().is_none(), "body incomplete");
        buf.extend_from_slice(b"0\r\n");
        let r = parse_response(&buf).unwrap().unwrap();
        assert_eq!(
            (r.status, r.header("location"), r.body.as_str()),
            (201, Some("/t/whep/1"), "v=0\r\n")
        );
        let r = parse_complete(b"HTTP/1.1 200 OK\r\n\r\nrest").unwrap();
        assert_eq!(r.body, "rest");
        assert!(parse_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }
}
