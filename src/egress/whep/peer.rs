//! One WebRTC viewer: its str0m `Rtc` (ice-lite, RTP mode), made from the
//! browser's offer, and what it does with str0m's events and hub packets.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, IceConnectionState, Rtc, RtcConfig};

use super::forward::TrackOut;
use super::offer;
use crate::hub::{RtpPkt, Track};

/// H.264 as the encoder emits it: constrained baseline 3.1, FU-A/STAP-A.
pub const H264_PROFILE_LEVEL_ID: u32 = 0x42e01f;
/// Video packets kept per peer to answer NACKs (≈ 0.9 s at 4 Mbit/s, far more
/// than a round trip). The payloads are shared with the hub, but str0m keeps a
/// ~400-byte packet struct per slot: 384 slots ≈ 160 KiB of each peer's memory.
const NACK_HISTORY: usize = 384;

/// Why an offer gets no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferError {
    /// `400`: not SDP, or SDP str0m refuses.
    Malformed(String),
    /// `422`: well-formed, but nothing we can send.
    Unacceptable(String),
}

/// Builds each peer's `Rtc`; shared by all peers (one DTLS certificate).
pub struct RtcFactory {
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
    candidates: Vec<SocketAddr>,
}

impl RtcFactory {
    pub fn new(candidates: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| anyhow::anyhow!("the crypto provider cannot make a DTLS certificate"))?;
        Ok(Self { crypto, cert, candidates })
    }

    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    fn config(&self) -> RtcConfig {
        let mut cfg = RtcConfig::new()
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.cert.clone())
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .set_send_buffer_video(NACK_HISTORY);
        // Our payload type numbers do not matter: the answer uses the offer's.
        cfg.codec_config().add_h264(102.into(), Some(103.into()), true, H264_PROFILE_LEVEL_ID);
        cfg.codec_config().add_config(
            111.into(),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            FormatParams {
                min_p_time: Some(10),
                use_inband_fec: Some(true),
                stereo: Some(true),
                sprop_stereo: Some(true),
                ..FormatParams::default()
            },
        );
        cfg
    }

    /// A new `Rtc` that has accepted `offer`, and the SDP answer.
    pub fn answer(&self, offer_sdp: &str, now: Instant) -> Result<(Rtc, String), OfferError> {
        // str0m parses untrusted input here: a panic in it is a bad offer, not a dead server.
        let offer = catch_unwind(|| SdpOffer::from_sdp_string(offer_sdp))
            .unwrap_or_else(|_| Err(str0m::error::SdpError::ParseError("str0m panicked".into())))
            .map_err(|e| OfferError::Malformed(format!("the offer is not valid SDP: {}", one_line(&e.to_string()))))?;
        offer::check(offer_sdp).map_err(OfferError::Unacceptable)?;
        let res = catch_unwind(AssertUnwindSafe(|| {
            let mut rtc = self.config().build(now);
            for addr in &self.candidates {
                let c = Candidate::host(*addr, "udp")
                    .map_err(|e| OfferError::Malformed(format!("bad local candidate {addr}: {e}")))?;
                rtc.add_local_candidate(c);
            }
            let answer = rtc
                .sdp_api()
                .accept_offer(offer)
                .map_err(|e| OfferError::Malformed(format!("the offer was refused: {e}")))?;
            Ok((rtc, answer.to_sdp_string()))
        }));
        let (rtc, answer) = res.unwrap_or_else(|_| Err(OfferError::Malformed("the offer could not be negotiated".into())))?;
        // str0m's verdict on the codecs (offer::check only looked at names).
        let video = offer::sections(&answer)
            .iter()
            .filter(|s| s.kind == "video")
            .filter_map(|s| s.mid.as_deref())
            .find_map(|mid| negotiated_pt(&rtc, Mid::from(mid), Codec::H264));
        if video.is_none() {
            return Err(OfferError::Unacceptable(format!(
                "the offer has no H.264 this server can send (constrained baseline profile-level-id={H264_PROFILE_LEVEL_ID:06x}, packetization-mode=1)"
            )));
        }
        Ok((rtc, answer))
    }
}

/// The payload type the peer negotiated for `codec` on `mid`, if any.
pub fn negotiated_pt(rtc: &Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let remote = media.remote_pts();
    rtc.codec_config().iter().find(|p| p.spec().codec == codec && remote.contains(&p.pt())).map(|p| p.pt())
}

/// What the engine must do after a peer's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// ICE + DTLS are up: start media (and ask for a keyframe).
    Connected,
    /// PLI/FIR from the browser.
    Keyframe,
    Remove(String),
}

struct Out {
    mid: Mid,
    pt: Pt,
    track: TrackOut,
}

pub struct Peer {
    pub rtc: Rtc,
    pub resource: Arc<str>,
    pub stream: Arc<str>,
    pub created: Instant,
    /// Last datagram from the browser (consent, RTCP, DTLS).
    pub last_rx: Instant,
    pub connected_at: Option<Instant>,
    /// When the first keyframe packet went out (join time).
    pub first_key_at: Option<Instant>,
    /// Source addresses cached for this peer (to clean the cache up).
    pub addrs: Vec<SocketAddr>,
    /// When the peer next needs a timeout input (set by each drain).
    pub wake: Instant,
    /// The time its timer is filed under in the engine's timer set.
    pub filed: Option<Instant>,
    /// Set when media was written since the last drain.
    pub dirty: bool,
    video: Option<Out>,
    audio: Option<Out>,
    /// The producer's payload types: packets with others are not ours to send.
    producer_pts: (u8, u8),
}

impl Peer {
    pub fn new(rtc: Rtc, resource: Arc<str>, stream: Arc<str>, producer_pts: (u8, u8), now: Instant) -> Self {
        Self {
            rtc,
            resource,
            stream,
            created: now,
            last_rx: now,
            connected_at: None,
            first_key_at: None,
            addrs: Vec::new(),
            wake: now,
            filed: None,
            dirty: false,
            video: None,
            audio: None,
            producer_pts,
        }
    }

    /// When this peer is given up: not connected within `timeout` of its
    /// answer, or silent for `timeout` (no ICE consent, no RTCP).
    pub fn deadline(&self, timeout: Duration) -> Instant {
        match self.connected_at {
            None => self.created + timeout,
            Some(_) => self.last_rx + timeout,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected_at.is_some()
    }

    pub fn on_event(&mut self, ev: Event, now: Instant) -> Option<Action> {
        match ev {
            Event::Connected => {
                self.connected_at = Some(now);
                Some(Action::Connected)
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                Some(Action::Remove("ICE consent lost".into()))
            }
            Event::MediaAdded(m) => {
                self.map_media(m.mid, m.kind);
                None
            }
            Event::KeyframeRequest(_) => Some(Action::Keyframe),
            Event::Closed => Some(Action::Remove("the browser closed the connection".into())),
            _ => None,
        }
    }

    /// Which payload type this peer wants per track: picked once str0m says the media is there.
    fn map_media(&mut self, mid: Mid, kind: MediaKind) {
        let (slot, codec, track) = match kind {
            MediaKind::Video => (&mut self.video, Codec::H264, Track::Video),
            MediaKind::Audio => (&mut self.audio, Codec::Opus, Track::Audio),
        };
        if slot.is_some() {
            return; // a second m-line of the same kind gets nothing
        }
        let Some(pt) = negotiated_pt(&self.rtc, mid, codec) else {
            tracing::debug!(resource = %self.resource, ?kind, "no common codec on this m-line");
            return;
        };
        let first_seq = (u64::from(self.created.elapsed().subsec_nanos()) ^ fastrand_seed(&self.resource)) as u16;
        *slot = Some(Out { mid, pt, track: TrackOut::new(track, first_seq) });
    }

    pub fn lagged(&mut self, track: Track) {
        let out = match track {
            Track::Video => self.video.as_mut(),
            Track::Audio => self.audio.as_mut(),
        };
        if let Some(out) = out {
            out.track.lagged();
        }
    }

    /// Hand one hub packet to str0m (header values rewritten, payload shared).
    pub fn write(&mut self, track: Track, pkt: &RtpPkt, now: Instant) {
        if self.connected_at.is_none() {
            return;
        }
        let (out, want_pt) = match track {
            Track::Video => (self.video.as_mut(), self.producer_pts.0),
            Track::Audio => (self.audio.as_mut(), self.producer_pts.1),
        };
        let Some(out) = out else { return };
        if pkt.payload_type != want_pt {
            return;
        }
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(out.mid, None) else { return };
        let Some((seq, ts)) = out.track.admit(pkt) else { return };
        let write = RtpWrite::new(out.pt, seq.into(), ts, pkt.at, pkt.payload.clone())
            .marker(pkt.marker)
            .nackable(track == Track::Video);
        tx.write_rtp(write);
        if track == Track::Video && pkt.key && self.first_key_at.is_none() {
            self.first_key_at = Some(now);
        }
        self.dirty = true;
    }

    /// Video can be written (connected, and the video m-line is mapped).
    pub fn video_ready(&self) -> bool {
        self.connected_at.is_some() && self.video.is_some()
    }

    /// Start video on the hub's cached GOP (keyframe first): write it all
    /// now and skip the live feed's copies of these packets.
    pub fn start_on_gop(&mut self, gop: &[RtpPkt], now: Instant) {
        for p in gop {
            self.write(Track::Video, p, now);
        }
        if let (Some(last), Some(out)) = (gop.last(), self.video.as_mut()) {
            out.track.skip_through(last.index);
        }
    }

    /// Packets sent per track (video, audio).
    pub fn sent(&self) -> (u64, u64) {
        (self.video.as_ref().map_or(0, |o| o.track.sent()), self.audio.as_ref().map_or(0, |o| o.track.sent()))
    }
}

/// A per-peer seed for the first sequence number (not security relevant:
/// SRTP protects the stream; this only avoids every peer starting alike).
fn fastrand_seed(resource: &str) -> u64 {
    resource.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A parser's multi-line message as one line (status bodies are one line).
fn one_line(msg: &str) -> String {
    let joined = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    // The parser quotes a pointer address that says nothing to the sender.
    let cleaned = match (joined.find(" at PointerOffset("), joined.find(')')) {
        (Some(a), Some(b)) if b > a => format!("{}{}", &joined[..a], &joined[b + 1..]),
        _ => joined,
    };
    cleaned.chars().take(200).collect()
}

#[cfg(test)]
mod one_line_tests {
    #[test]
    fn parser_messages_become_one_short_line() {
        let m = super::one_line("SDP parse: Parse error at PointerOffset(0x7f86)\nUnexpected `g`\nExpected `v`\nsdp line\n");
        assert_eq!(m, "SDP parse: Parse error Unexpected `g` Expected `v` sdp line");
    }
}
