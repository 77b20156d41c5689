//! The one HTTP client of the tests and the benchmarks: hyper's HTTP/1.1
//! client (`client::conn::http1`) over a tokio `TcpStream`, one request per
//! connection, a deadline on every wait. `http://` only (loopback or LAN).
//!
//! - [`request`]: one request, the response read whole (WHEP, the APIs);
//! - [`Stream`]: a response whose body is read as it comes (the endless
//!   MPEG-TS stream), chunked framing undone by hyper;
//! - [`blocking`]: the same for the synchronous tests ([`blocking::Viewer`]);
//! - [`raw`]: below HTTP, for the tests that send what no client would, and
//!   the response-head parser of the load generator's zero-copy viewers.

pub mod blocking;
pub mod raw;

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest response [`request`] reads whole (an SDP answer is a few KiB).
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

    /// `path` on the server at `addr`.
    pub fn at(addr: std::net::SocketAddr, path: &str) -> Self {
        Self {
            authority: addr.to_string(),
            path: path.to_owned(),
        }
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

/// A response read whole. Header names are lower case.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Connect to `authority` (`host:port`), `TCP_NODELAY` on.
pub async fn connect(authority: &str) -> anyhow::Result<TcpStream> {
    let addr = tokio::net::lookup_host(authority)
        .await?
        .next()
        .ok_or_else(|| anyhow!("{authority}: the name has no address"))?;
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One request on a connection of its own (`Connection: close`), the
/// response read whole (at most [`MAX_RESPONSE`] bytes of body), all of it
/// within `timeout`.
pub async fn request(
    url: &Url,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<Response> {
    let go = async {
        let tcp = connect(&url.authority).await?;
        let mut all = headers.to_vec();
        all.push(("Connection", "close"));
        let mut s = Stream::send(tcp, &url.authority, method, &url.path, &all, body).await?;
        let (body, error) = s.read_to_end(MAX_RESPONSE).await;
        match error {
            Some(e) => Err(e),
            None => Ok(s.into_response(body)),
        }
    };
    tokio::time::timeout(timeout, go).await.map_err(|_| {
        anyhow!(
            "{method} {url}: no answer within {} ms",
            timeout.as_millis()
        )
    })?
}

/// A response whose body is read as it comes. Dropping it closes the
/// connection.
pub struct Stream {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    body: Incoming,
    conn: tokio::task::JoinHandle<()>,
}

impl Stream {
    /// Send one request on `tcp` (a task of the current runtime drives the
    /// connection) and wait for the response head. `Host` is `host`;
    /// `Content-Length` is sent with a body, and for POST/PUT/PATCH always.
    /// No deadline of its own: callers put one around it.
    pub async fn send(
        tcp: TcpStream,
        host: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Stream> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            req = req.header(hyper::header::CONTENT_LENGTH, body.len());
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .with_context(|| format!("{method} {path}: not a valid request"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let resp = sender
            .send_request(req)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let (parts, body) = resp.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_owned(), v)
            })
            .collect();
        Ok(Stream {
            status: parts.status.as_u16(),
            headers,
            body,
            conn,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The next piece of body as it came off the connection; `None` at its
    /// end; an error when the connection broke before it.
    pub async fn next(&mut self) -> anyhow::Result<Option<Bytes>> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    } // trailers: skipped
                }
            }
        }
    }

    /// [`next`](Self::next) until `until`: `None` when it passed first.
    pub async fn next_until(&mut self, until: Instant) -> Option<anyhow::Result<Option<Bytes>>> {
        tokio::time::timeout_at(until.into(), self.next())
            .await
            .ok()
    }

    /// The rest of the body, and what cut it short if something did (the
    /// connection, or more than `limit` bytes).
    pub async fn read_to_end(&mut self, limit: usize) -> (Vec<u8>, Option<anyhow::Error>) {
        let mut body = Vec::new();
        loop {
            match self.next().await {
                Ok(None) => return (body, None),
                Err(e) => return (body, Some(e.context("the response body broke off"))),
                Ok(Some(b)) if body.len() + b.len() > limit => {
                    let e = anyhow!("the response is larger than {limit} bytes");
                    return (body, Some(e));
                }
                Ok(Some(b)) => body.extend_from_slice(&b),
            }
        }
    }

    pub fn into_response(self, body: Vec<u8>) -> Response {
        Response {
            status: self.status,
            headers: self.headers.clone(),
            body,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

#[cfg(test)]
mod tests;
