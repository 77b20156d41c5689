//! One WebRTC viewer: its str0m `Rtc` (ice-lite, RTP mode), made from the
//! browser's offer, and what it does with str0m's events and hub packets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::format::Codec;
use str0m::media::{MediaKind, MediaTime, Mid};
use str0m::rtp::{Extension, ExtensionValues};
use str0m::{Event, IceConnectionState, Rtc, RtcConfig};

use super::config::Bwe;
use super::forward::Out;
use super::layer::Link;
use super::layer::PeerLayer;
use super::pacer::{Pacer, RTP_OVERHEAD};
use crate::hub::{RtpPkt, Track};
use crate::net::rtc::{add_opus, negotiated_pt, parse_offer, sdp as offer, Identity};

/// H.264 as the encoder emits it: constrained baseline 3.1, FU-A/STAP-A.
pub const H264_PROFILE_LEVEL_ID: u32 = 0x42e01f;
/// Video packets kept per peer to answer NACKs: ≈ 0.6 s at 4 Mbit/s, several
/// round trips even on a poor network. The payloads are shared with the hub;
/// str0m keeps an ~80-byte slot per packet (see PIXELPASS.md): 20 KiB a peer.
const NACK_HISTORY: usize = 256;
/// …and no packet older than this (a lower bitrate keeps fewer slots).
const NACK_MAX_AGE: Duration = Duration::from_secs(1);
/// str0m's default cap of retransmitted bytes per transmitted bytes.
const RTX_RATIO_CAP: f32 = 0.15;
/// Cached-GOP packets written to a peer between two drains (keeps str0m's
/// send queue, whose capacity stays allocated, short).
pub const BURST_CHUNK: usize = 32;
/// A paced peer's video waits unsealed in its burst queue (a hub packet: a
/// shared payload and a few header fields, ~64 bytes) while its pacer holds
/// this much sealed, or written to be: a full group (the bucket,
/// [`BURST_BYTES`](super::pacer::BURST_BYTES)) and two datagrams, so the
/// pacer has the next whole group when it falls due (it is refilled right
/// after each release), and str0m's send queue needs no more than 32 slots
/// of ~400 bytes to seal it. Sealed, a 4 Mbit/s keyframe (100–200 KB) sat
/// whole in every peer's queue at once: 200 peers, 20–40 MB, most of it
/// left resident as free heap after the keyframe had gone.
pub const HOLD_SEALED: usize = super::pacer::BURST_BYTES + 2 * 1250;

/// Our id for the playout-delay header extension (the answer takes the offer's).
const PLAYOUT_DELAY_EXT_ID: u8 = 12;
/// Our id for transport-wide sequence numbers (TWCC), likewise.
const TWCC_EXT_ID: u8 = 3;
/// Where a viewer's bandwidth estimate starts: a viewer starts on the
/// highest layer this allows, so it is above layer 0 of the default
/// 4 Mbit/s stream — a viewer on a good link gets the full picture from its
/// first frame, one on a thin link is moved down within about 2 s (GCC
/// drops its estimate as soon as the queue on the path grows). Started
/// lower (1.5 Mbit/s), a LAN viewer watched half the picture for 5–20 s
/// while GCC, sending only the lower layer, climbed.
pub const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(5000);
/// How often str0m reports a peer's RTT, loss and estimate.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// `playout-delay` min = max = 0 on every video packet
/// (<http://www.webrtc.org/experiments/rtp-hdrext/playout-delay>): tells a
/// browser to render each frame as soon as it is decoded instead of
/// smoothing through its jitter buffer. This is a screen share, live: a
/// frame shown late is worth less than a frame shown unevenly. The extension
/// is written only when the viewer's offer had it (Chrome's does).
fn playout_delay_zero() -> ExtensionValues {
    ExtensionValues {
        play_delay_min: Some(MediaTime::ZERO),
        play_delay_max: Some(MediaTime::ZERO),
        ..ExtensionValues::default()
    }
}

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
    id: Identity,
    /// Where viewers' bandwidth is estimated (TWCC).
    bwe: Bwe,
}

impl RtcFactory {
    pub fn new(candidates: Vec<SocketAddr>) -> anyhow::Result<Self> {
        Ok(Self {
            id: Identity::new(candidates)?,
            bwe: Bwe::default(),
        })
    }

    /// Where viewers get bandwidth estimation (and TWCC).
    pub fn with_bwe(mut self, bwe: Bwe) -> Self {
        self.bwe = bwe;
        self
    }

    pub fn candidates(&self) -> &[SocketAddr] {
        self.id.candidates()
    }

    /// A viewer's config; H.264 of `h264_profile` (the stream's: the host
    /// encoder's, or a WHIP publisher's).
    fn config(&self, h264_profile: u32, layers: usize) -> RtcConfig {
        let mut cfg = self
            .id
            .config()
            .set_send_buffer_video(NACK_HISTORY)
            .set_stats_interval(Some(STATS_INTERVAL))
            // Header extensions: the MID (BUNDLE demux until the browser
            // knows our SSRCs), playout-delay (offered by Chrome; the answer
            // keeps it, with the offer's id, when offered) and, for a stream
            // with layers to choose from, transport-wide sequence numbers:
            // the browser's TWCC feedback is what our estimate is made from
            // (str0m's GCC, which also paces to it). Nothing else: every
            // extension costs bytes and CPU on each packet to every peer
            // (TWCC also a stream of feedback back from each one), so a
            // one-layer stream does without; its viewers' browsers send
            // REMB where they estimate themselves (goog-remb is offered).
            .clear_extension_map()
            .set_extension(4, Extension::RtpMid)
            .set_extension(PLAYOUT_DELAY_EXT_ID, Extension::PlayoutDelay);
        if self.bwe.applies(layers) {
            cfg = cfg
                .set_extension(TWCC_EXT_ID, Extension::TransportSequenceNumber)
                .enable_bwe(Some(INITIAL_ESTIMATE));
        }
        // Our payload type numbers do not matter: the answer uses the offer's.
        cfg.codec_config()
            .add_h264(102.into(), Some(103.into()), true, h264_profile);
        add_opus(&mut cfg);
        cfg
    }

    /// A new `Rtc` that has accepted `offer`, and the SDP answer; `layers`:
    /// how many the stream has (with more than one, the peer's bandwidth is
    /// estimated to choose among them).
    pub fn answer(
        &self,
        offer_sdp: &str,
        now: Instant,
        h264_profile: u32,
        layers: usize,
    ) -> Result<(Rtc, String), OfferError> {
        let offer = parse_offer(offer_sdp).map_err(OfferError::Malformed)?;
        offer::check(offer_sdp).map_err(OfferError::Unacceptable)?;
        let (rtc, answer) = self
            .id
            .accept(self.config(h264_profile, layers), offer, now)
            .map_err(OfferError::Malformed)?;
        // str0m's verdict on the codecs (offer::check only looked at names).
        let video = offer::sections(&answer)
            .iter()
            .filter(|s| s.kind == "video")
            .filter_map(|s| s.mid.as_deref())
            .find_map(|mid| negotiated_pt(&rtc, Mid::from(mid), Codec::H264));
        if video.is_none() {
            return Err(OfferError::Unacceptable(format!(
                "the offer has no H.264 this server can send (profile-level-id={h264_profile:06x} or another level of that profile, packetization-mode=1)"
            )));
        }
        Ok((rtc, answer))
    }
}

/// What the engine must do after a peer's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// ICE + DTLS are up: start media (and ask for a keyframe).
    Connected,
    /// PLI/FIR from the browser.
    Keyframe,
    /// New word on the link (estimate, loss, RTT): time to choose a layer.
    Link,
    Remove(String),
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
    /// Its paced datagrams (`None`: pacing is off).
    pub pacer: Option<Pacer<(SocketAddr, Vec<u8>)>>,
    /// The time its pacer is filed under in the engine's pacing timers.
    pub pace_filed: Option<Instant>,
    /// Its pacer let datagrams go: it is filed again once the driver says
    /// when they left ([`super::core::Core::handle_sent`]).
    pub pace_awaiting: bool,
    video: Option<Out>,
    audio: Option<Out>,
    /// Cached-GOP packets still to write (a peer that joined on the cache),
    /// then the live video that came meanwhile or waits for room in its
    /// pacer ([`HOLD_SEALED`]) (`false`: not cached).
    burst: VecDeque<(RtpPkt, bool)>,
    /// Live video bytes in `burst` (RTP overhead included).
    held: usize,
    /// Paced video bytes written to str0m since its output was last drained
    /// (sealed by then, and in the pacer's queue).
    pub unsealed: usize,
    /// The producer's payload types: packets with others are not ours to send.
    producer_pts: (u8, u8),
    /// The stream's delivered-bytes counter (payload bytes written).
    out: Option<Arc<crate::hub::OutCounters>>,
    pub link: Link,
    /// Which layer's video this peer gets, and which it waits to switch to.
    pub layer: PeerLayer,
}

impl Peer {
    pub fn new(
        rtc: Rtc,
        resource: Arc<str>,
        stream: Arc<str>,
        producer_pts: (u8, u8),
        now: Instant,
    ) -> Self {
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
            pacer: None,
            pace_filed: None,
            pace_awaiting: false,
            video: None,
            audio: None,
            burst: VecDeque::new(),
            held: 0,
            unsealed: 0,
            producer_pts,
            out: None,
            link: Link::default(),
            layer: PeerLayer::default(),
        }
    }

    /// Count what this peer is sent into the stream's counters.
    pub fn count_into(mut self, out: Arc<crate::hub::OutCounters>) -> Self {
        self.out = Some(out);
        self
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
                self.map_media(m.mid, m.kind, now);
                None
            }
            Event::KeyframeRequest(_) => Some(Action::Keyframe),
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                self.link.estimate = Some(estimate.as_u64());
                self.link.remb = false;
                Some(Action::Link)
            }
            Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                // TWCC, when negotiated, is the better word.
                if self.link.estimate.is_some() && !self.link.remb {
                    return None;
                }
                self.link.estimate = Some(estimate.as_u64());
                self.link.remb = true;
                Some(Action::Link)
            }
            Event::MediaEgressStats(m) if self.video.as_ref().is_some_and(|v| v.mid == m.mid) => {
                if m.loss.is_some() {
                    self.link.loss = m.loss;
                    self.link.loss_at = Some(now);
                }
                if m.rtt.is_some() {
                    self.link.rtt = m.rtt;
                }
                Some(Action::Link)
            }
            Event::PeerStats(p) => {
                if self.link.rtt.is_none() {
                    self.link.rtt = p.rtt;
                }
                None
            }
            Event::Closed => Some(Action::Remove("the browser closed the connection".into())),
            _ => None,
        }
    }

    /// Which payload type this peer wants per track: picked once str0m says the media is there.
    fn map_media(&mut self, mid: Mid, kind: MediaKind, now: Instant) {
        let (slot, codec, track) = match kind {
            MediaKind::Video => (&mut self.video, Codec::H264, Track::Video),
            MediaKind::Audio => (&mut self.audio, Codec::Opus, Track::Audio),
        };
        if slot.is_some() {
            return; // a second m-line of the same kind gets nothing
        }
        let Some(pt) = negotiated_pt(&self.rtc, mid, codec) else {
            tracing::debug!(resource = %crate::token::short(&self.resource), ?kind, "no common codec on this m-line");
            return;
        };
        let first_seq = (u64::from(now.saturating_duration_since(self.created).subsec_nanos())
            ^ fastrand_seed(&self.resource)) as u16;
        *slot = Some(Out::new(mid, pt, track, first_seq));
        if let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(mid, None) {
            match kind {
                MediaKind::Video => {
                    tx.set_rtx_cache(NACK_HISTORY, NACK_MAX_AGE, Some(RTX_RATIO_CAP))
                }
                // Browsers do not NACK Opus (it conceals a loss; its offer
                // has no `nack` for it): str0m's default history of 3 s
                // (~150 slots, 13 KiB a peer) answered nobody. (Its 10 initial
                // slots stay: a zero age makes the cache inert.)
                MediaKind::Audio => tx.set_rtx_cache(0, Duration::ZERO, None),
            }
        }
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

    /// Its video moves to another layer with the packet written next (a
    /// keyframe of that layer): what was queued of the old one is dropped.
    pub fn switch_video(&mut self) {
        self.burst = VecDeque::new();
        self.held = 0;
        if let Some(out) = self.video.as_mut() {
            out.track.switch_source();
        }
    }

    /// Pace this peer's video through `pacer`.
    pub fn paced(mut self, pacer: Pacer<(SocketAddr, Vec<u8>)>) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// The payload type its audio goes out with (what is not paced).
    pub fn audio_pt(&self) -> Option<u8> {
        self.audio.as_ref().map(|o| *o.pt)
    }

    /// Hand one hub packet to str0m (header values rewritten, payload
    /// shared). Live video waits behind cached-GOP packets not written yet,
    /// and while the pacer holds enough sealed ([`HOLD_SEALED`]).
    pub fn write(&mut self, track: Track, pkt: &RtpPkt, now: Instant) {
        if track == Track::Video && (!self.burst.is_empty() || self.pacer_full()) {
            self.held += paced_bytes(pkt);
            if let Some(p) = &mut self.pacer {
                // The pacer empties within MAX_QUEUE_TIME what waits here too.
                p.expect(self.held);
            }
            self.burst.push_back((pkt.clone(), false));
            return;
        }
        self.write_as(track, pkt, now, false);
    }

    /// Its pacer holds [`HOLD_SEALED`] or more, sealed or being sealed.
    pub fn pacer_full(&self) -> bool {
        self.pacer
            .as_ref()
            .is_some_and(|p| p.queued_bytes() + self.unsealed >= HOLD_SEALED)
    }

    /// `cached`: a packet of the cached GOP (see [`super::forward::TrackOut::admit_cached`]).
    fn write_as(&mut self, track: Track, pkt: &RtpPkt, now: Instant, cached: bool) {
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
        let ext = (track == Track::Video).then(playout_delay_zero);
        if !out.write(&mut self.rtc, pkt, cached, ext) {
            return;
        }
        if track == Track::Video && self.pacer.is_some() {
            self.unsealed += paced_bytes(pkt);
        }
        if let Some(out) = &self.out {
            out.whep_bytes.fetch_add(
                pkt.payload.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        if track == Track::Video && pkt.key && self.first_key_at.is_none() {
            self.first_key_at = Some(now);
        }
        self.dirty = true;
    }

    /// Video can be written (connected, and the video m-line is mapped).
    pub fn video_ready(&self) -> bool {
        self.connected_at.is_some() && self.video.is_some()
    }

    /// Start video on the hub's cached GOP (keyframe first): the live
    /// feed's copies of these packets are skipped from now on, and the
    /// packets themselves go out through [`write_burst`](Self::write_burst).
    pub fn start_on_gop(&mut self, gop: Vec<RtpPkt>) {
        if let (Some(last), Some(out)) = (gop.last(), self.video.as_mut()) {
            out.track.skip_through(last.index);
        }
        self.burst = gop.into_iter().map(|p| (p, true)).collect();
    }

    /// Cached-GOP packets (or live video behind them) not written yet.
    pub fn has_burst(&self) -> bool {
        !self.burst.is_empty()
    }

    /// Write up to `max` packets of the cached GOP and the live video
    /// queued behind it (paced: until its pacer is full); false when none
    /// was left.
    pub fn write_burst(&mut self, max: usize, now: Instant) -> bool {
        if self.burst.is_empty() {
            return false;
        }
        for _ in 0..max {
            if self.pacer_full() {
                break;
            }
            let Some((p, cached)) = self.burst.pop_front() else {
                break;
            };
            if !cached {
                self.held = self.held.saturating_sub(paced_bytes(&p));
            }
            self.write_as(Track::Video, &p, now, cached);
        }
        if self.burst.is_empty() {
            self.burst = VecDeque::new(); // give the memory back
            self.held = 0;
        } else if let Some(p) = &mut self.pacer {
            p.expect(self.held);
        }
        true
    }

    /// Packets sent per track (video, audio).
    pub fn sent(&self) -> (u64, u64) {
        (
            self.video.as_ref().map_or(0, |o| o.track.sent()),
            self.audio.as_ref().map_or(0, |o| o.track.sent()),
        )
    }
}

/// What a hub packet weighs in a pacer: its payload and [`RTP_OVERHEAD`].
/// `held` and `unsealed` add and take away the same figure.
fn paced_bytes(pkt: &RtpPkt) -> usize {
    pkt.payload.len() + RTP_OVERHEAD
}

/// A per-peer seed for the first sequence number (not security relevant:
/// SRTP protects the stream; this only avoids every peer starting alike).
fn fastrand_seed(resource: &str) -> u64 {
    resource.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod playout_delay_tests;
