//! A WHEP viewer in Rust: what a browser does, minus the decoder.
//!
//! [`WhepClient::connect`] makes a receive-only offer (H.264 + Opus, full
//! ICE, str0m), POSTs it, takes the answer and drives ICE, DTLS and SRTP
//! over its own UDP socket. [`WhepClient::next_event`] yields what arrives:
//! whole H.264 access units as Annex-B (str0m depacketizes them), Opus
//! packets, connection state. [`WhepClient::delete`] ends the session.
//!
//! str0m is sans-IO; this type only adds the socket, the clock and the HTTP
//! exchange. Nothing from the network is trusted: malformed input is an
//! error value, never a panic.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::h264;
use super::http::{self, Url};

/// Receive buffer asked of the kernel for each client's socket.
const RECV_BUFFER: usize = 1 << 20;
/// Datagrams taken per `recvmmsg` call.
const RECV_BATCH: usize = 16;
/// Largest datagram accepted (WebRTC keeps them under ~1200 bytes).
const DATAGRAM_MAX: usize = 2048;

/// `recvmmsg` into `buf` (slots of [`DATAGRAM_MAX`] bytes): how many datagrams
/// came, with (length, source) in `meta`. Truncated ones are given as read.
fn recvmmsg(
    fd: libc::c_int,
    buf: &mut [u8],
    meta: &mut [(usize, SocketAddr)],
) -> std::io::Result<usize> {
    let n = meta.len().min(buf.len() / DATAGRAM_MAX);
    // SAFETY: sockaddr_storage and mmsghdr are plain data; all-zero is valid.
    let mut addrs: Vec<libc::sockaddr_storage> =
        (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut iovs: Vec<libc::iovec> = buf
        .chunks_exact_mut(DATAGRAM_MAX)
        .take(n)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (i, m) in msgs.iter_mut().enumerate() {
        m.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        m.msg_hdr.msg_iov = &mut iovs[i];
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every msghdr points at a live address buffer and a live iovec
    // over a live slice of `buf`; all outlive the call.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let got = got as usize;
    for i in 0..got {
        let len = (msgs[i].msg_len as usize).min(DATAGRAM_MAX);
        // SAFETY: the kernel wrote msg_namelen bytes of a sockaddr into addrs[i].
        let from =
            unsafe { socket2::SockAddr::new(addrs[i], msgs[i].msg_hdr.msg_namelen) }.as_socket();
        meta[i] = (len, from.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))));
    }
    Ok(got)
}

/// The crypto provider and DTLS certificate every client of this process
/// shares: making a certificate (a P-256 key) for each client would cost
/// more CPU than its handshake.
fn client_crypto() -> Result<(Arc<CryptoProvider>, DtlsCert), WhepError> {
    static SHARED: OnceLock<Option<(Arc<CryptoProvider>, DtlsCert)>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let crypto = Arc::new(str0m::crypto::from_feature_flags());
            let cert = crypto.dtls_provider.generate_certificate()?;
            Some((crypto, cert))
        })
        .clone()
        .ok_or_else(|| WhepError::Rtc("the crypto provider cannot make a DTLS certificate".into()))
}

/// One H.264 access unit, as a decoder takes it.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// Annex-B: start code + NAL unit, repeated (SPS/PPS included with IDRs).
    pub annexb: Vec<u8>,
    /// RTP timestamp (90 kHz), extended past wrap-around by str0m.
    pub rtp_time: u64,
    /// When the first datagram of this frame was received.
    pub first_packet_at: Instant,
    /// When the datagram that completed the frame was received.
    pub arrived: Instant,
    /// false: packets were missing between this frame and the previous one.
    pub contiguous: bool,
    /// The frame holds an IDR picture (a decoder can start here).
    pub keyframe: bool,
}

/// One Opus packet.
#[derive(Debug, Clone)]
pub struct AudioPacket {
    pub data: Vec<u8>,
    /// RTP timestamp (48 kHz), extended.
    pub rtp_time: u64,
    pub arrived: Instant,
}

#[derive(Debug, Clone)]
pub enum WhepEvent {
    /// ICE and DTLS are up; media may follow.
    Connected,
    IceState(IceConnectionState),
    Video(VideoFrame),
    Audio(AudioPacket),
    /// The server closed the connection (DTLS close_notify / RTCP BYE).
    Closed,
}

/// What went wrong; `Status` carries the server's answer (e.g. `503` when full).
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error("the WHEP server answered {status}: {}", body.trim())]
    Status {
        status: u16,
        body: String,
        retry_after: Option<String>,
    },
    #[error("WHEP HTTP exchange failed: {0}")]
    Http(String),
    #[error("SDP: {0}")]
    Sdp(String),
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("UDP: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct WhepOptions {
    /// Drop every Nth H.264 RTP packet before str0m sees it (not RTX: that
    /// has its own payload type), to exercise NACK/RTX.
    pub lose_video_every: Option<usize>,
    /// Deadline of each HTTP exchange.
    pub http_timeout: Duration,
    /// How often str0m refreshes the NACK/PLI counters in [`ClientStats`].
    pub stats_interval: Duration,
}

impl Default for WhepOptions {
    fn default() -> Self {
        Self {
            lose_video_every: None,
            http_timeout: Duration::from_secs(30),
            stats_interval: Duration::from_secs(1),
        }
    }
}

/// Counters since the client was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Datagrams and their bytes as received on the UDP socket (SRTP, SRTCP,
    /// STUN, DTLS), including the ones the loss simulation dropped.
    pub udp_datagrams: u64,
    pub udp_bytes: u64,
    pub video_frames: u64,
    pub keyframes: u64,
    /// Frames after a gap in the packet sequence (loss not repaired in time).
    pub gaps: u64,
    pub audio_packets: u64,
    /// Video RTP packets dropped by [`WhepOptions::lose_video_every`].
    pub dropped: u64,
    /// As of str0m's last stats event: NACKs and PLIs sent, RTP packets received (all tracks).
    pub nacks_sent: u64,
    pub plis_sent: u64,
    pub rtp_packets: u64,
    /// Original H.264 RTP packets (not RTX) by sequence number: the span
    /// from the first to the highest seen, and how many arrived.
    pub video_rtp_expected: u64,
    pub video_rtp_received: u64,
}

impl ClientStats {
    /// H.264 packets that did not arrive on the wire (repaired by RTX or not).
    pub fn video_rtp_lost(&self) -> u64 {
        self.video_rtp_expected
            .saturating_sub(self.video_rtp_received)
    }
}

/// RFC 3550-style counting of one stream's sequence numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqCounter {
    first: Option<u64>,
    max: u64,
    received: u64,
}

impl SeqCounter {
    pub fn record(&mut self, seq: u16) {
        self.received += 1;
        match self.first {
            None => {
                // Room below for reordered packets before the first one.
                let ext = (1u64 << 16) + u64::from(seq);
                self.first = Some(ext);
                self.max = ext;
            }
            Some(first) => {
                let delta = i64::from(seq.wrapping_sub(self.max as u16) as i16);
                let ext = (self.max as i64 + delta).max(0) as u64;
                if ext > self.max {
                    self.max = ext;
                } else if ext < first {
                    self.first = Some(ext);
                }
            }
        }
    }

    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.max - f + 1)
    }

    pub fn received(&self) -> u64 {
        self.received
    }
}

pub struct WhepClient {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    video: Mid,
    audio: Mid,
    offer: String,
    pending: Option<SdpPendingOffer>,
    opts: WhepOptions,
    endpoint: Option<Url>,
    resource: Option<Url>,
    posted_at: Option<Instant>,
    answered_at: Option<Instant>,
    connected_at: Option<Instant>,
    lose: Option<(u8, usize)>,
    video_seen: u64,
    /// H.264 payload type of the answer, and its sequence numbers on the wire.
    video_pt: Option<u8>,
    video_seq: SeqCounter,
    /// [`RECV_BATCH`] slots of [`DATAGRAM_MAX`] bytes, and per slot (length, source).
    buf: Vec<u8>,
    meta: Vec<(usize, SocketAddr)>,
    queue: VecDeque<WhepEvent>,
    /// When the input that is being processed arrived.
    input_at: Instant,
    stats: ClientStats,
    /// Per-mid counters of str0m's last stats events (video, audio).
    ingress: [(u64, u64, u64); 2],
    /// SPS/PPS waiting for their picture: (Annex-B, first packet at, contiguous).
    held_params: Option<(Vec<u8>, Instant, bool)>,
    closed: bool,
}

impl WhepClient {
    /// POST a receive-only offer to `whep_url` (`http://host:port/TOKEN/whep`)
    /// from a UDP socket on `bind` (any free port); returns once the server
    /// answered (media follows through [`next_event`](Self::next_event)).
    pub async fn connect(whep_url: &str, bind: IpAddr) -> Result<Self, WhepError> {
        Self::connect_with(whep_url, bind, WhepOptions::default()).await
    }

    pub async fn connect_with(
        whep_url: &str,
        bind: IpAddr,
        opts: WhepOptions,
    ) -> Result<Self, WhepError> {
        let mut c = Self::new(bind, opts).await?;
        c.post(whep_url).await?;
        Ok(c)
    }

    /// A client with its offer made, not yet sent ([`post`](Self::post) sends it).
    pub async fn new(bind: IpAddr, opts: WhepOptions) -> Result<Self, WhepError> {
        let sock = UdpSocket::bind(SocketAddr::new(bind, 0)).await?;
        // A keyframe arrives as one burst (100+ datagrams at once on
        // loopback): the default ~200 KiB buffer can overflow before a busy
        // client reads it. The kernel caps this at net.core.rmem_max.
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(RECV_BUFFER);
        let local = sock.local_addr()?;
        let now = Instant::now();
        let (crypto, cert) = client_crypto()?;
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(crypto)
            .set_dtls_cert(cert)
            .set_stats_interval(Some(opts.stats_interval))
            .build(now);
        let cand = Candidate::host(local, "udp")
            .map_err(|e| WhepError::Rtc(format!("local candidate {local}: {e}")))?;
        rtc.add_local_candidate(cand);
        let mut api = rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let audio = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| WhepError::Sdp("str0m made no offer".into()))?;
        Ok(Self {
            rtc,
            sock,
            local,
            video,
            audio,
            offer: offer.to_sdp_string(),
            pending: Some(pending),
            opts,
            endpoint: None,
            resource: None,
            posted_at: None,
            answered_at: None,
            connected_at: None,
            lose: None,
            video_seen: 0,
            video_pt: None,
            video_seq: SeqCounter::default(),
            buf: vec![0; DATAGRAM_MAX * RECV_BATCH],
            meta: vec![(0, SocketAddr::from(([0, 0, 0, 0], 0))); RECV_BATCH],
            queue: VecDeque::new(),
            input_at: now,
            stats: ClientStats::default(),
            ingress: [(0, 0, 0); 2],
            held_params: None,
            closed: false,
        })
    }

    /// The SDP offer this client sends.
    pub fn offer_sdp(&self) -> &str {
        &self.offer
    }

    /// POST the offer; on `201` accept the answer and remember the resource.
    pub async fn post(&mut self, whep_url: &str) -> Result<(), WhepError> {
        let url = Url::parse(whep_url).map_err(WhepError::Http)?;
        if self.pending.is_none() {
            return Err(WhepError::Sdp("the offer was already answered".into()));
        }
        self.posted_at = Some(Instant::now());
        let resp = http::request(
            &url,
            "POST",
            &[("Content-Type", "application/sdp")],
            &self.offer,
            self.opts.http_timeout,
        )
        .await
        .map_err(|e| WhepError::Http(format!("{e:#}")))?;
        self.answered_at = Some(Instant::now());
        if resp.status != 201 {
            return Err(WhepError::Status {
                status: resp.status,
                retry_after: resp.header("retry-after").map(str::to_owned),
                body: resp.body,
            });
        }
        let ct = resp.header("content-type").unwrap_or_default();
        if !ct.to_ascii_lowercase().starts_with("application/sdp") {
            return Err(WhepError::Http(format!(
                "the answer came as {ct:?}, not application/sdp"
            )));
        }
        let location = resp
            .header("location")
            .ok_or_else(|| WhepError::Http("201 without a Location".into()))?;
        self.resource = Some(url.join(location).map_err(WhepError::Http)?);
        self.endpoint = Some(url);
        let pt = h264_payload_type(&resp.body)
            .ok_or_else(|| WhepError::Sdp("no H.264 in the answer".into()))?;
        self.video_pt = Some(pt);
        if let Some(n) = self.opts.lose_video_every.filter(|n| *n > 0) {
            self.lose = Some((pt, n));
        }
        self.accept(&resp.body)
    }

    /// Take an SDP answer obtained some other way.
    pub fn accept(&mut self, answer: &str) -> Result<(), WhepError> {
        let answer = SdpAnswer::from_sdp_string(answer)
            .map_err(|e| WhepError::Sdp(format!("the answer does not parse: {e}")))?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| WhepError::Sdp("the offer was already answered".into()))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| WhepError::Sdp(format!("the answer was refused: {e}")))
    }

    /// DELETE the WHEP resource; returns the status (`200` expected).
    pub async fn delete(&mut self) -> Result<u16, WhepError> {
        let url = self
            .resource
            .clone()
            .ok_or_else(|| WhepError::Http("no resource: the offer was not answered".into()))?;
        let resp = http::request(&url, "DELETE", &[], "", self.opts.http_timeout)
            .await
            .map_err(|e| WhepError::Http(format!("{e:#}")))?;
        self.rtc.disconnect();
        Ok(resp.status)
    }

    /// The resource URL from `Location`.
    pub fn resource_url(&self) -> Option<String> {
        self.resource.as_ref().map(Url::to_string)
    }

    /// The resource path from `Location` (as the server wrote it, resolved).
    pub fn resource_path(&self) -> Option<&str> {
        self.resource.as_ref().map(|u| u.path.as_str())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// When the POST started / was answered; when ICE+DTLS came up.
    pub fn posted_at(&self) -> Option<Instant> {
        self.posted_at
    }

    pub fn answered_at(&self) -> Option<Instant> {
        self.answered_at
    }

    pub fn connected_at(&self) -> Option<Instant> {
        self.connected_at
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn stats(&self) -> ClientStats {
        let mut s = self.stats;
        s.nacks_sent = self.ingress[0].0 + self.ingress[1].0;
        s.plis_sent = self.ingress[0].1 + self.ingress[1].1;
        s.rtp_packets = self.ingress[0].2 + self.ingress[1].2;
        s.video_rtp_expected = self.video_seq.expected();
        s.video_rtp_received = self.video_seq.received();
        s
    }

    /// Drive the connection until an event comes (`Some`) or `until` passes (`None`).
    pub async fn next_event(&mut self, until: Instant) -> Result<Option<WhepEvent>, WhepError> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            let timeout = self.drain().await?;
            if !self.queue.is_empty() {
                continue;
            }
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            let wait = timeout.min(until).max(now);
            tokio::select! {
                r = self.sock.readable() => {
                    r?;
                    self.receive_waiting().await?;
                }
                _ = tokio::time::sleep_until(wait.into()) => {
                    let now = Instant::now();
                    self.input_at = now;
                    self.rtc.handle_input(Input::Timeout(now)).map_err(|e| WhepError::Rtc(e.to_string()))?;
                }
            }
        }
    }

    /// Take the datagrams waiting on the socket, up to [`RECV_BATCH`] per
    /// system call (`recvmmsg`), a few calls at most before events get a turn.
    async fn receive_waiting(&mut self) -> Result<(), WhepError> {
        let fd = self.sock.as_raw_fd();
        for _ in 0..4 {
            let got = match self.sock.try_io(Interest::READABLE, || {
                recvmmsg(fd, &mut self.buf, &mut self.meta)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            for i in 0..got {
                if i > 0 {
                    self.drain().await?;
                }
                let (n, from) = self.meta[i];
                self.on_datagram(i * DATAGRAM_MAX, n, from)?;
            }
            if got < RECV_BATCH {
                break;
            }
        }
        Ok(())
    }

    /// The datagram at `at` in the receive buffer, `n` bytes from `from`.
    fn on_datagram(&mut self, at: usize, n: usize, from: SocketAddr) -> Result<(), WhepError> {
        let now = Instant::now();
        self.input_at = now;
        self.stats.udp_datagrams += 1;
        self.stats.udp_bytes += n as u64;
        let data = &self.buf[at..at + n];
        // RTP (not RTCP: its second byte is 200..=206, never a dynamic payload
        // type once masked) of the H.264 payload type: the header is in clear.
        if n > 12 && data[0] >> 6 == 2 && Some(data[1] & 0x7f) == self.video_pt {
            if let Some((_, every)) = self.lose {
                self.video_seen += 1;
                if self.video_seen.is_multiple_of(every as u64) {
                    self.stats.dropped += 1;
                    return Ok(());
                }
            }
            self.video_seq
                .record(u16::from_be_bytes([data[2], data[3]]));
        }
        let Ok(recv) = Receive::new(Protocol::Udp, from, self.local, data) else {
            return Ok(()); // not STUN/DTLS/RTP/RTCP: ignore, as a browser would
        };
        self.rtc
            .handle_input(Input::Receive(now, recv))
            .map_err(|e| WhepError::Rtc(e.to_string()))
    }

    /// Send what str0m wants sent, queue its events; returns its next timeout.
    async fn drain(&mut self) -> Result<Instant, WhepError> {
        loop {
            match self
                .rtc
                .poll_output()
                .map_err(|e| WhepError::Rtc(e.to_string()))?
            {
                Output::Transmit(t) => {
                    // A send error (e.g. the server's port gone) is what a lossy network does.
                    let _ = self.sock.send_to(&t.contents, t.destination).await;
                }
                Output::Event(e) => self.on_event(e),
                Output::Timeout(t) => return Ok(t),
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Connected => {
                self.connected_at.get_or_insert(self.input_at);
                self.queue.push_back(WhepEvent::Connected);
            }
            Event::IceConnectionStateChange(s) => self.queue.push_back(WhepEvent::IceState(s)),
            Event::MediaData(d) if d.mid == self.video => {
                // str0m hands SPS/PPS (their own STAP-A) over as a "frame" of
                // their own: hold them and prepend them to the picture they
                // belong to, so one event is one access unit.
                if h264::only_parameter_sets(&d.data) {
                    let held = self
                        .held_params
                        .get_or_insert_with(|| (Vec::new(), d.network_time, true));
                    held.0.extend_from_slice(&d.data);
                    held.2 &= d.contiguous;
                    return;
                }
                let (annexb, first_packet_at, contiguous) = match self.held_params.take() {
                    Some((mut params, at, contiguous)) => {
                        params.extend_from_slice(&d.data);
                        (params, at, contiguous && d.contiguous)
                    }
                    None => (d.data.to_vec(), d.network_time, d.contiguous),
                };
                let keyframe = h264::is_idr(&annexb);
                self.stats.video_frames += 1;
                self.stats.keyframes += u64::from(keyframe);
                self.stats.gaps += u64::from(!contiguous);
                self.queue.push_back(WhepEvent::Video(VideoFrame {
                    annexb,
                    rtp_time: d.time.numer(),
                    first_packet_at,
                    arrived: self.input_at,
                    contiguous,
                    keyframe,
                }));
            }
            Event::MediaData(d) if d.mid == self.audio => {
                self.stats.audio_packets += 1;
                self.queue.push_back(WhepEvent::Audio(AudioPacket {
                    data: d.data.to_vec(),
                    rtp_time: d.time.numer(),
                    arrived: self.input_at,
                }));
            }
            Event::MediaIngressStats(s) => {
                let i = if s.mid == self.video { 0 } else { 1 };
                self.ingress[i] = (s.nacks, s.plis, s.packets);
            }
            Event::Closed => {
                self.closed = true;
                self.queue.push_back(WhepEvent::Closed);
            }
            _ => {}
        }
    }
}

/// The payload type of H.264 in an SDP (the first `a=rtpmap:PT H264/90000`).
pub fn h264_payload_type(sdp: &str) -> Option<u8> {
    sdp.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("a=rtpmap:")
                .filter(|l| l.contains("H264/90000"))
        })
        .and_then(|l| l.split(' ').next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_count_losses_across_wrap_around() {
        let mut c = SeqCounter::default();
        for seq in [65533u16, 65534, 65535, 1, 2, 0, 4] {
            c.record(seq);
        }
        // 65533..=4 is 8 numbers; 3 never came (0 came late: not lost).
        assert_eq!((c.expected(), c.received()), (8, 7));
        let mut c = SeqCounter::default();
        c.record(10);
        c.record(9);
        assert_eq!(
            (c.expected(), c.received()),
            (2, 2),
            "a late packet before the first one"
        );
        assert_eq!(SeqCounter::default().expected(), 0);
    }

    #[test]
    fn finds_the_h264_payload_type() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 H264/90000\r\n";
        assert_eq!(h264_payload_type(sdp), Some(97));
        assert_eq!(h264_payload_type("v=0\r\n"), None);
    }
}
