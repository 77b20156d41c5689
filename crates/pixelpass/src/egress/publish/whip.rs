//! The WHIP HTTP exchange (RFC 9725), with hyper's client: one POST of the
//! SDP offer (`Authorization: Bearer`), `201` + `Location` + the answer;
//! `DELETE` of the resource on stop. Every failure is one line that names
//! the URL and says what to do; the token is never part of it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, LOCATION};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::endpoint::{parse_links, Endpoint, Link};

/// Largest answer body read (an SDP answer is a few KiB).
const MAX_BODY: usize = 256 * 1024;

/// What a relay answered to the offer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub sdp: String,
    /// The WHIP resource (`Location`, resolved): DELETE it to stop.
    pub resource: Endpoint,
    /// `Link: <…>; rel="alternate"; type="text/html"`: where viewers watch.
    pub player_page: Option<String>,
    /// `Link: <…>; rel="ice-server"` entries.
    pub ice_servers: Vec<Link>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhipError {
    #[error("cannot reach the relay at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("the relay at {url} answered {status}: {what}")]
    Status {
        url: String,
        status: u16,
        what: String,
    },
    #[error("the relay at {url} sent a bad answer: {why}")]
    BadAnswer { url: String, why: String },
}

/// POSTs offers and DELETEs resources for one publish token.
#[derive(Clone)]
pub struct WhipClient {
    token: Option<String>,
    tls: Option<TlsConnector>,
    timeout: Duration,
}

impl std::fmt::Debug for WhipClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("WhipClient")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl WhipClient {
    /// `tls` is needed for `https://` endpoints only.
    pub fn new(token: Option<String>, tls: Option<TlsConnector>, timeout: Duration) -> Self {
        Self {
            token,
            tls,
            timeout,
        }
    }

    /// POST `offer` to `endpoint`; `201` gives the answer.
    pub async fn post(&self, endpoint: &Endpoint, offer: &str) -> Result<Answer, WhipError> {
        let url = endpoint.to_string();
        let resp = self
            .exchange(
                endpoint,
                Method::POST,
                Some(("application/sdp", Bytes::from(offer.to_owned()))),
            )
            .await?;
        let (parts, body) = resp;
        if parts.status != StatusCode::CREATED {
            return Err(WhipError::Status {
                url,
                status: parts.status.as_u16(),
                what: explain(parts.status, self.token.is_some(), &body),
            });
        }
        let bad = |why: &str| WhipError::BadAnswer {
            url: url.clone(),
            why: why.to_owned(),
        };
        let ct = header(&parts.headers, CONTENT_TYPE).unwrap_or_default();
        if !ct.to_ascii_lowercase().starts_with("application/sdp") {
            return Err(bad(&format!(
                "201 with Content-Type {ct:?}, not application/sdp"
            )));
        }
        let location = header(&parts.headers, LOCATION)
            .ok_or_else(|| bad("201 without a Location (is it a WHIP endpoint?)"))?;
        let resource = endpoint
            .join(&location)
            .map_err(|e| bad(&format!("Location {location:?}: {e}")))?;
        let sdp = String::from_utf8(body.to_vec()).map_err(|_| bad("the answer is not text"))?;
        let links = parse_links(
            parts
                .headers
                .get_all(hyper::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let player_page = links
            .iter()
            .find(|l| l.is_player_page())
            .and_then(|l| endpoint.join(&l.target).ok())
            .map(|e| e.to_string());
        let ice_servers = links
            .into_iter()
            .filter(|l| l.has_rel("ice-server"))
            .collect();
        Ok(Answer {
            sdp,
            resource,
            player_page,
            ice_servers,
        })
    }

    /// DELETE the resource; its status (`200` expected, `404` when the relay forgot it already).
    pub async fn delete(&self, resource: &Endpoint) -> Result<u16, WhipError> {
        let (parts, _) = self.exchange(resource, Method::DELETE, None).await?;
        Ok(parts.status.as_u16())
    }

    async fn exchange(
        &self,
        endpoint: &Endpoint,
        method: Method,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(hyper::http::response::Parts, Bytes), WhipError> {
        let url = endpoint.to_string();
        let unreachable = |why: String| WhipError::Unreachable {
            url: url.clone(),
            why,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(endpoint.path.as_str())
            .header(HOST, endpoint.authority());
        if let Some(token) = &self.token {
            let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                unreachable("the publish token has characters a header cannot carry".into())
            })?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        let (ct, bytes) = body.unwrap_or(("", Bytes::new()));
        if !ct.is_empty() {
            req = req.header(CONTENT_TYPE, ct);
        }
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| unreachable(format!("cannot make the request: {e}")))?;
        let work = async {
            let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| unreachable(connect_why(&e)))?;
            let _ = tcp.set_nodelay(true);
            if !endpoint.https {
                return send(tcp, req).await.map_err(unreachable);
            }
            let tls = self.tls.as_ref().ok_or_else(|| {
                unreachable("https is not set up (a bug: no TLS connector)".into())
            })?;
            let name =
                rustls::pki_types::ServerName::try_from(endpoint.host.clone()).map_err(|e| {
                    unreachable(format!("{:?} is not a TLS server name: {e}", endpoint.host))
                })?;
            let stream = tls.connect(name, tcp).await.map_err(|e| {
                unreachable(format!(
                    "TLS: {e} (a relay with a private CA needs --publish-ca PEM)"
                ))
            })?;
            send(stream, req).await.map_err(unreachable)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| {
                unreachable(format!("no answer within {} s", self.timeout.as_secs_f32()))
            })?
    }
}

async fn send<S>(
    io: S,
    req: Request<Full<Bytes>>,
) -> Result<(hyper::http::response::Parts, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((parts, body))
    }
    .await;
    conn.abort();
    result
}

fn header(h: &hyper::HeaderMap, name: hyper::header::HeaderName) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_owned)
}

fn connect_why(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is the relay running? check the host and port)".into()
        }
        _ => e.to_string(),
    }
}

/// One line: what a refused POST means and what to do about it.
pub fn explain(status: StatusCode, has_token: bool, body: &[u8]) -> String {
    let said: String = String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(" (it said: {said})")
    };
    let what = match status.as_u16() {
        401 | 403 if has_token => {
            "the relay refused the publish token (check --publish-token)".to_owned()
        }
        401 | 403 => {
            "the relay wants a publish token (give --publish-token or PIXELPASS_PUBLISH_TOKEN)"
                .to_owned()
        }
        404 => "no such WHIP endpoint (check the stream id in the --publish URL)".to_owned(),
        409 => "another publisher is live on this stream (stop it, or publish to another stream)"
            .to_owned(),
        415 => "the relay does not take an SDP offer here (is the --publish URL a WHIP endpoint?)"
            .to_owned(),
        400 | 422 => "the relay refused our offer (H.264 constrained baseline + Opus)".to_owned(),
        301 | 302 | 303 | 307 | 308 => {
            "the endpoint moved (give the new URL as --publish)".to_owned()
        }
        s if s >= 500 => "the relay has a problem; retrying".to_owned(),
        _ => "unexpected for a WHIP POST".to_owned(),
    };
    format!("{what}{said}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_to_do() {
        let s = |code: u16, token: bool| {
            explain(
                StatusCode::from_u16(code).unwrap(),
                token,
                b"  no\n such  stream ",
            )
        };
        assert_eq!(
            s(401, true),
            "the relay refused the publish token (check --publish-token) (it said: no such stream)"
        );
        assert!(s(401, false).contains("PIXELPASS_PUBLISH_TOKEN"));
        assert!(s(404, true).starts_with("no such WHIP endpoint"));
        assert!(s(409, true).starts_with("another publisher"));
        assert!(s(415, true).contains("WHIP endpoint"));
        assert!(s(422, true).contains("H.264"));
        assert!(s(503, true).contains("retrying"));
        let long = explain(StatusCode::BAD_REQUEST, true, &[b'x'; 1000]);
        assert!(long.len() < 300, "{long}");
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let c = WhipClient::new(Some("s3cret".into()), None, Duration::from_secs(1));
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
