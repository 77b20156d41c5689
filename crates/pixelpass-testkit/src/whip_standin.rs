//! A stand-in WHIP relay (RFC 9725) for the `host --publish` tests: a small
//! hyper server on loopback that answers an offer with an ice-lite str0m
//! `Rtc` on one UDP socket, and counts and keeps what publishers send (H.264
//! access units as Annex-B, for ffmpeg; Opus packets).
//!
//! It runs on a thread of its own; [`WhipStandin::kill`] drops it at once,
//! sockets and all, with no goodbye (a relay that crashed), and
//! [`WhipStandin::start`] on the same address brings a fresh one back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use str0m::change::SdpOffer;
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;

use pixelpass::media::h264;

/// What one publisher's session brought.
#[derive(Debug, Clone)]
pub struct PublishedSession {
    /// The resource path (`/whip/{id}/{n}`).
    pub resource: String,
    pub posted_at: Instant,
    pub connected_at: Option<Instant>,
    pub first_frame_at: Option<Instant>,
    /// Whether the first video frame was a keyframe (IDR).
    pub first_is_key: Option<bool>,
    pub video_frames: u64,
    pub keyframes: u64,
    /// Frames with packets missing before them.
    pub gaps: u64,
    pub audio_packets: u64,
    /// Every access unit, SPS/PPS with their IDR, in order (Annex-B).
    pub annexb: Vec<u8>,
    pub deleted: bool,
}

/// Everything the stand-in saw (across its restarts when shared).
#[derive(Debug, Clone, Default)]
pub struct StandinLog {
    pub posts: u64,
    /// POSTs refused (status).
    pub refused: Vec<u16>,
    pub sessions: Vec<PublishedSession>,
    /// DELETE request paths.
    pub deletes: Vec<String>,
    /// `Authorization` values seen (to check the token went as a bearer).
    pub auth: Vec<String>,
}

pub type SharedLog = Arc<Mutex<StandinLog>>;

struct Live {
    resource: String,
    rtc: Rtc,
    video: Option<Mid>,
    held_params: Vec<u8>,
    timeout: Instant,
}

struct State {
    token: String,
    link: Option<String>,
    udp_addr: SocketAddr,
    log: SharedLog,
    live: Vec<Live>,
    next: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct WhipStandin {
    pub addr: SocketAddr,
    pub log: SharedLog,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WhipStandin {
    /// Serve `POST /whip/{id}` on `bind` (port 0: any) with bearer `token`;
    /// answers carry `Link: <link>; rel="alternate"; type="text/html"` when
    /// given. `log` is shared so a restarted stand-in goes on counting.
    pub fn start(bind: SocketAddr, token: &str, link: Option<&str>, log: SharedLog) -> Self {
        let std_listener = std::net::TcpListener::bind(bind)
            .unwrap_or_else(|e| panic!("the WHIP stand-in cannot bind {bind}: {e}"));
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            link: link.map(str::to_owned),
            udp_addr: udp.local_addr().unwrap(),
            log: log.clone(),
            live: Vec::new(),
            next: rand_start(),
        }));
        let (stop, stop_rx) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                let udp = UdpSocket::from_std(udp).unwrap();
                tokio::select! {
                    _ = stop_rx => {}
                    _ = serve_http(listener, state.clone()) => {}
                    _ = serve_udp(udp, state) => {}
                }
            });
            // The runtime goes with its sockets: no goodbye to anyone.
        });
        Self {
            addr,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self, id: &str) -> String {
        format!("http://{}/whip/{id}", self.addr)
    }

    /// A copy of the log.
    pub fn snapshot(&self) -> StandinLog {
        lock(&self.log).clone()
    }

    /// Gone at once (no DTLS close, no answer), as a crashed relay.
    pub fn kill(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WhipStandin {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Resource numbers differ between restarts (a DELETE names one run's resource).
fn rand_start() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(t % 1_000_000) * 1000
}

async fn serve_http(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let mut st = lock(&state);
    let log = st.log.clone();
    let mut log = lock(&log);
    if parts.method == hyper::Method::DELETE {
        log.deletes.push(path.clone());
        let before = st.live.len();
        st.live.retain(|l| l.resource != path);
        if let Some(s) = log.sessions.iter_mut().find(|s| s.resource == path) {
            s.deleted = true;
        }
        let status = if st.live.len() < before {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        return Ok(reply(status, ""));
    }
    if parts.method != hyper::Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "POST or DELETE"));
    }
    log.posts += 1;
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    log.auth.push(auth.clone());
    let Some(id) = path.strip_prefix("/whip/").filter(|id| !id.contains('/')) else {
        log.refused.push(404);
        return Ok(reply(StatusCode::NOT_FOUND, "no such stream"));
    };
    if auth != format!("Bearer {}", st.token) {
        log.refused.push(401);
        return Ok(reply(
            StatusCode::UNAUTHORIZED,
            "wrong or missing bearer token",
        ));
    }
    let ct = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.starts_with("application/sdp") {
        log.refused.push(415);
        return Ok(reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/sdp only",
        ));
    }
    let offer = match SdpOffer::from_sdp_string(&String::from_utf8_lossy(&body)) {
        Ok(o) => o,
        Err(e) => {
            log.refused.push(400);
            return Ok(reply(StatusCode::BAD_REQUEST, &format!("bad SDP: {e}")));
        }
    };
    let now = Instant::now();
    let mut rtc = RtcConfig::new().set_ice_lite(true).build(now);
    rtc.add_local_candidate(Candidate::host(st.udp_addr, "udp").unwrap());
    let answer = match rtc.sdp_api().accept_offer(offer) {
        Ok(a) => a,
        Err(e) => {
            log.refused.push(422);
            return Ok(reply(StatusCode::UNPROCESSABLE_ENTITY, &format!("{e}")));
        }
    };
    st.next += 1;
    let resource = format!("/whip/{id}/{}", st.next);
    log.sessions.push(PublishedSession {
        resource: resource.clone(),
        posted_at: now,
        connected_at: None,
        first_frame_at: None,
        first_is_key: None,
        video_frames: 0,
        keyframes: 0,
        gaps: 0,
        audio_packets: 0,
        annexb: Vec::new(),
        deleted: false,
    });
    st.live.push(Live {
        resource: resource.clone(),
        rtc,
        video: None,
        held_params: Vec::new(),
        timeout: now,
    });
    let mut r = reply(StatusCode::CREATED, &answer.to_sdp_string());
    let h = r.headers_mut();
    h.insert("content-type", "application/sdp".parse().unwrap());
    // Relative, as OBS and RFC 9725 allow: the client resolves it.
    let relative = resource.rsplit('/').next().unwrap_or_default();
    h.insert("location", format!("{id}/{relative}").parse().unwrap());
    if let Some(link) = &st.link {
        let v = format!(r#"<{link}>; rel="alternate"; type="text/html""#);
        h.append("link", v.parse().unwrap());
    }
    h.append(
        "link",
        r#"<stun:stun.invalid:3478>; rel="ice-server""#.parse().unwrap(),
    );
    Ok(r)
}

async fn serve_udp(udp: UdpSocket, state: Arc<Mutex<State>>) {
    let local = udp.local_addr().unwrap();
    let mut buf = vec![0u8; 2048];
    loop {
        let mut sends = Vec::new();
        let next = {
            let mut st = lock(&state);
            let log = st.log.clone();
            let mut log = lock(&log);
            let now = Instant::now();
            for l in st.live.iter_mut() {
                // str0m wants its output drained after every input.
                drain(l, &mut log, &mut sends);
                if l.timeout <= now {
                    let _ = l.rtc.handle_input(Input::Timeout(now));
                    drain(l, &mut log, &mut sends);
                }
            }
            st.live.retain(|l| l.rtc.is_alive());
            st.live.iter().map(|l| l.timeout).min()
        };
        for (to, data) in sends {
            let _ = udp.send_to(&data, to).await;
        }
        let wait = next
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(20))
            .min(Duration::from_millis(20));
        tokio::select! {
            r = udp.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let mut st = lock(&state);
                let Ok(recv) = Receive::new(Protocol::Udp, from, local, &buf[..n]) else { continue };
                let input = Input::Receive(Instant::now(), recv);
                if let Some(l) = st.live.iter_mut().find(|l| l.rtc.accepts(&input)) {
                    let _ = l.rtc.handle_input(input);
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Take a session's output: datagrams to send, media into the log.
fn drain(l: &mut Live, log: &mut StandinLog, sends: &mut Vec<(SocketAddr, Vec<u8>)>) {
    let Some(s) = log.sessions.iter_mut().find(|s| s.resource == l.resource) else {
        return;
    };
    while l.rtc.is_alive() {
        match l.rtc.poll_output() {
            Ok(Output::Transmit(t)) => sends.push((t.destination, t.contents.into())),
            Ok(Output::Timeout(t)) => {
                l.timeout = t;
                return;
            }
            Ok(Output::Event(e)) => match e {
                Event::Connected => s.connected_at = Some(Instant::now()),
                Event::MediaAdded(m) if m.kind == MediaKind::Video => l.video = Some(m.mid),
                Event::MediaData(d) if Some(d.mid) == l.video => {
                    if h264::only_parameter_sets(&d.data) {
                        l.held_params.extend_from_slice(&d.data);
                        continue;
                    }
                    let mut au = std::mem::take(&mut l.held_params);
                    au.extend_from_slice(&d.data);
                    let key = h264::is_idr(&au);
                    s.first_is_key.get_or_insert(key);
                    s.first_frame_at.get_or_insert_with(Instant::now);
                    s.video_frames += 1;
                    s.keyframes += u64::from(key);
                    s.gaps += u64::from(!d.contiguous);
                    s.annexb.extend_from_slice(&au);
                }
                Event::MediaData(_) => s.audio_packets += 1,
                _ => {}
            },
            Err(_) => return,
        }
    }
}
