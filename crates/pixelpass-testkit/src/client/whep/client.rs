//! [`WhepClient`]: the offer, the WHEP HTTP exchange, and the loop that
//! feeds str0m the socket and the clock and turns its output into events.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::events::{AudioPacket, VideoFrame, WhepError, WhepEvent, WhepOptions};
use super::recv::{enable_timestamps, recvmmsg, DATAGRAM_MAX, RECV_BATCH};
use super::stats::{BurstMeter, ClientStats, SeqCounter};
use crate::client::http::{self, Url};
use pixelpass::media::h264;

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

pub struct WhepClient {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    video: Mid,
    audio: Mid,
    offer: String,
    /// The server's answer, as it came.
    answer: Option<String>,
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
    /// Kernel receive times of the datagrams in `buf` (with a burst meter).
    stamps: Vec<u64>,
    burst: Option<BurstMeter>,
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
        if let Some(size) = opts.recv_buffer {
            let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(size);
        }
        let burst = match opts.burst_window {
            Some(w) => {
                enable_timestamps(sock.as_raw_fd())?;
                Some(BurstMeter::new(w))
            }
            None => None,
        };
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
            answer: None,
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
            stamps: vec![0; RECV_BATCH],
            burst,
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
            self.offer.as_bytes(),
            self.opts.http_timeout,
        )
        .await
        .map_err(|e| WhepError::Http(format!("{e:#}")))?;
        self.answered_at = Some(Instant::now());
        let answer = resp.text();
        if resp.status != 201 {
            return Err(WhepError::Status {
                status: resp.status,
                retry_after: resp.header("retry-after").map(str::to_owned),
                body: answer,
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
        let pt = h264_payload_type(&answer)
            .ok_or_else(|| WhepError::Sdp("no H.264 in the answer".into()))?;
        self.video_pt = Some(pt);
        if let Some(n) = self.opts.lose_video_every.filter(|n| *n > 0) {
            self.lose = Some((pt, n));
        }
        self.accept(&answer)?;
        self.answer = Some(answer);
        Ok(())
    }

    /// The SDP answer the server sent (after a successful [`post`](Self::post)).
    pub fn answer_sdp(&self) -> Option<&str> {
        self.answer.as_deref()
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
        let resp = http::request(&url, "DELETE", &[], b"", self.opts.http_timeout)
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

    /// Of the burst meter ([`WhepOptions::burst_window`]): how many datagrams
    /// arrived with n in their window, n = 1…31 (31: or more).
    pub fn burst_histogram(&self) -> Option<Vec<u64>> {
        self.burst.as_ref().map(|b| b.histogram().to_vec())
    }

    /// The socket's receive buffer as the kernel has it (`None`: unknown).
    pub fn recv_buffer_size(&self) -> Option<usize> {
        socket2::SockRef::from(&self.sock).recv_buffer_size().ok()
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
        s.max_burst = self.burst.as_ref().map_or(0, BurstMeter::max);
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
            let stamps = self.burst.is_some().then_some(&mut self.stamps[..]);
            let got = match self.sock.try_io(Interest::READABLE, || {
                recvmmsg(fd, &mut self.buf, &mut self.meta, stamps)
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
                if let Some(b) = &mut self.burst {
                    b.record(self.stamps[i]);
                }
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
    fn finds_the_h264_payload_type() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 H264/90000\r\n";
        assert_eq!(h264_payload_type(sdp), Some(97));
        assert_eq!(h264_payload_type("v=0\r\n"), None);
    }
}
