//! One WHIP publish session, sans-IO: a str0m `Rtc` as a full-ICE client
//! (not ice-lite: the host is the side behind NAT, it makes the checks),
//! RTP mode, sending audio (mid 0) and video (mid 1) as OBS does, fed the
//! hub's packets — the same ones the host's WHEP viewers get, written the
//! same way ([`Out`]: our own sequence numbers, video from a keyframe).
//!
//! Datagrams, hub packets and the time go in; datagrams, the next timeout and
//! [`Event`]s come out. The relay's PLI/FIR becomes a keyframe request to the
//! hub (the host's encoder makes a real one). [`super::engine`] drives it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::rtp::Extension;
use str0m::RtcConfig;
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Input, Rtc};

use crate::egress::whep::forward::Out;
use crate::egress::whep::H264_PROFILE_LEVEL_ID;
use crate::hub::{Hub, RtpJoin, RtpPkt, RtpSubscriber, Track};
use crate::net::rtc::{self, add_opus, negotiated_pt, Polled};

/// Video packets kept to answer the relay's NACKs (≈ 0.6 s at 4 Mbit/s).
const NACK_HISTORY: usize = 256;
/// Outputs drained from the `Rtc` at most in one go (a guard).
const MAX_DRAIN: usize = 10_000;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The producer's payload types (video, audio) in the hub.
    pub producer_pts: (u8, u8),
    /// ICE + DTLS must be up this long after the answer.
    pub connect_timeout: Duration,
    /// Connected, the relay is given up after this long without a datagram.
    pub silence_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            producer_pts: (102, 111),
            connect_timeout: Duration::from_secs(10),
            silence_timeout: Duration::from_secs(5),
        }
    }
}

/// What the session asks of its driver, in order.
pub enum Output {
    /// A datagram to send. `source` is the local candidate str0m chose; a
    /// socket bound to 0.0.0.0 lets the kernel pick by route, which is the
    /// candidate whose checks succeed.
    Transmit {
        #[cfg_attr(not(test), allow(dead_code))]
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    Event(Event),
}

pub enum Event {
    /// ICE + DTLS are up: move these receivers' packets into
    /// [`Session::handle_media`] (they exist before the join, so none is missed).
    Connected { sub: RtpSubscriber },
    /// The relay asked for a keyframe (passed to the hub already).
    KeyframeRequested,
    /// The session is over (it sends nothing more): why.
    Ended(String),
}

pub struct Session {
    rtc: Rtc,
    hub: Hub,
    cfg: SessionConfig,
    audio_mid: Mid,
    video_mid: Mid,
    pending: Option<SdpPendingOffer>,
    video: Option<Out>,
    audio: Option<Out>,
    /// Cached-GOP packets still to write (a join within the keyframe rate limit).
    burst: VecDeque<RtpPkt>,
    created: Instant,
    answered_at: Option<Instant>,
    last_rx: Instant,
    connected_at: Option<Instant>,
    first_key_at: Option<Instant>,
    /// str0m's next timeout.
    wake: Instant,
    ended: bool,
    out: VecDeque<Output>,
    keyframe_requests: u64,
}

impl Session {
    /// A session with its offer made (the SDP to POST): host candidates of
    /// `candidates`, sendonly audio (mid 0) and video (mid 1).
    pub fn new(
        hub: Hub,
        cfg: SessionConfig,
        candidates: &[SocketAddr],
        now: Instant,
    ) -> Result<(Self, String), String> {
        let mut config = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .set_send_buffer_video(NACK_HISTORY)
            .clear_extension_map()
            .set_extension(4, Extension::RtpMid);
        config
            .codec_config()
            .add_h264(102.into(), Some(103.into()), true, H264_PROFILE_LEVEL_ID);
        add_opus(&mut config);
        let mut rtc = config.build(now);
        for addr in candidates {
            let c = Candidate::host(*addr, "udp")
                .map_err(|e| format!("bad local candidate {addr}: {e}"))?;
            rtc.add_local_candidate(c);
        }
        let mut api = rtc.sdp_api();
        let audio_mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video_mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().ok_or("str0m made no offer")?;
        let session = Self {
            rtc,
            hub,
            cfg,
            audio_mid,
            video_mid,
            pending: Some(pending),
            video: None,
            audio: None,
            burst: VecDeque::new(),
            created: now,
            answered_at: None,
            last_rx: now,
            connected_at: None,
            first_key_at: None,
            wake: now,
            ended: false,
            out: VecDeque::new(),
            keyframe_requests: 0,
        };
        Ok((session, offer.to_sdp_string()))
    }

    /// Take the relay's answer: ICE starts (checks to its candidates).
    pub fn accept_answer(&mut self, sdp: &str, now: Instant) -> Result<(), String> {
        let pending = self
            .pending
            .take()
            .ok_or("the offer was answered already")?;
        let answer = catch_unwind(|| SdpAnswer::from_sdp_string(sdp))
            .map_err(|_| "the answer made str0m panic".to_owned())?
            .map_err(|e| format!("the answer is not valid SDP: {e}"))?;
        catch_unwind(AssertUnwindSafe(|| {
            self.rtc.sdp_api().accept_answer(pending, answer)
        }))
        .map_err(|_| "the answer made str0m panic".to_owned())?
        .map_err(|e| format!("the answer was refused: {e}"))?;
        let video_pt = negotiated_pt(&self.rtc, self.video_mid, Codec::H264).ok_or(
            "the answer has no H.264 for our video (constrained baseline, packetization-mode 1)",
        )?;
        self.video = Some(Out::new(
            self.video_mid,
            video_pt,
            Track::Video,
            random_seq(),
        ));
        // Audio is optional: a relay that takes video only still gets it.
        self.audio = negotiated_pt(&self.rtc, self.audio_mid, Codec::Opus)
            .map(|pt| Out::new(self.audio_mid, pt, Track::Audio, random_seq()));
        self.answered_at = Some(now);
        self.input(None, now);
        Ok(())
    }

    /// A datagram our socket received from `source`, sent to our `destination`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        let Some(input) = rtc::receive(now, source, destination, contents) else {
            return;
        };
        if self.ended || !self.rtc.accepts(&input) {
            return;
        }
        self.last_rx = now;
        self.input(Some(input), now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due (`None`: ended).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.ended).then(|| self.wake.min(self.deadline()))
    }

    /// Time has come to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        if now >= self.deadline() {
            let why = match self.connected_at {
                Some(_) => format!(
                    "no word from the relay for {} s (ICE consent lost)",
                    self.cfg.silence_timeout.as_secs()
                ),
                None => format!(
                    "ICE/DTLS did not connect within {} s (is UDP to the relay blocked?)",
                    self.cfg.connect_timeout.as_secs()
                ),
            };
            self.end(why);
            return;
        }
        self.input(None, now);
    }

    /// Hub packets (`None`: this session's receiver lagged), written and sent.
    pub fn handle_media(&mut self, now: Instant, batch: &[(Track, Option<RtpPkt>)]) {
        if self.ended || self.connected_at.is_none() {
            return;
        }
        for (track, pkt) in batch {
            match pkt {
                Some(p) => self.write(*track, p, now, false),
                None => {
                    if let Some(o) = self.slot(*track) {
                        o.track.lagged();
                    }
                }
            }
        }
        self.input(None, now);
    }

    /// The next datagram or event.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Stop: say goodbye to the relay (DTLS close), queue those datagrams.
    pub fn close(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        if rtc::close(&mut self.rtc) {
            self.drain(now);
        }
        self.ended = true;
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_connected(&self) -> bool {
        self.connected_at.is_some() && !self.ended
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Packets sent (video, audio).
    pub fn sent(&self) -> (u64, u64) {
        (
            self.video.as_ref().map_or(0, |o| o.track.sent()),
            self.audio.as_ref().map_or(0, |o| o.track.sent()),
        )
    }

    /// PLI/FIR from the relay so far.
    pub fn keyframe_requests(&self) -> u64 {
        self.keyframe_requests
    }

    /// Answer → connected, and connected → first keyframe packet written.
    pub fn timings(&self) -> (Option<Duration>, Option<Duration>) {
        let conn = self
            .connected_at
            .zip(self.answered_at)
            .map(|(c, a)| c.saturating_duration_since(a));
        let key = self
            .first_key_at
            .zip(self.connected_at)
            .map(|(k, c)| k.saturating_duration_since(c));
        (conn, key)
    }

    fn deadline(&self) -> Instant {
        match self.connected_at {
            Some(_) => self.last_rx + self.cfg.silence_timeout,
            None => self.answered_at.unwrap_or(self.created) + self.cfg.connect_timeout,
        }
    }

    fn slot(&mut self, track: Track) -> Option<&mut Out> {
        match track {
            Track::Video => self.video.as_mut(),
            Track::Audio => self.audio.as_mut(),
        }
    }

    fn end(&mut self, why: String) {
        if !self.ended {
            self.ended = true;
            self.out.push_back(Output::Event(Event::Ended(why)));
        }
    }

    /// Feed str0m one input (or a timeout at `now`), then drain it.
    fn input(&mut self, input: Option<Input<'_>>, now: Instant) {
        if self.ended {
            return;
        }
        let input = input.unwrap_or(Input::Timeout(now));
        match rtc::feed(&mut self.rtc, input) {
            Ok(()) => self.drain(now),
            Err(why) => self.end(why),
        }
    }

    fn drain(&mut self, now: Instant) {
        for _ in 0..MAX_DRAIN {
            match rtc::poll(&mut self.rtc) {
                Polled::Transmit(t) => self.out.push_back(Output::Transmit {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Polled::Event(ev) => self.on_event(ev, now),
                Polled::Timeout(t) => {
                    self.wake = t.max(now);
                    if !self.ended && !self.rtc.is_alive() {
                        self.end("the connection closed".into());
                    }
                    return;
                }
                Polled::Failed(why) => return self.end(why),
            }
        }
        self.wake = now;
    }

    fn on_event(&mut self, ev: RtcEvent, now: Instant) {
        match ev {
            RtcEvent::Connected => self.on_connected(now),
            RtcEvent::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.end("ICE consent lost (the relay stopped answering)".into())
            }
            RtcEvent::KeyframeRequest(_) => {
                self.keyframe_requests += 1;
                self.hub.request_keyframe(now);
                self.out.push_back(Output::Event(Event::KeyframeRequested));
            }
            RtcEvent::Closed => self.end("the relay closed the connection".into()),
            _ => {}
        }
    }

    /// Up: the receivers first, then the join (a keyframe asked for, or the
    /// hub's cached GOP written at once), as a WHEP viewer joins.
    fn on_connected(&mut self, now: Instant) {
        if self.connected_at.is_some() {
            return;
        }
        self.connected_at = Some(now);
        self.last_rx = now;
        let sub = self.hub.rtp_receivers();
        if let RtpJoin::Cached(gop) = self.hub.join_rtp(now) {
            if let (Some(last), Some(v)) = (gop.last(), self.video.as_mut()) {
                v.track.skip_through(last.index);
            }
            self.burst = gop.into();
        }
        self.out.push_back(Output::Event(Event::Connected { sub }));
        let burst = std::mem::take(&mut self.burst);
        for p in &burst {
            self.write(Track::Video, p, now, true);
        }
    }

    /// Hand one hub packet to str0m (header values rewritten, payload shared).
    fn write(&mut self, track: Track, pkt: &RtpPkt, now: Instant, cached: bool) {
        let want_pt = match track {
            Track::Video => self.cfg.producer_pts.0,
            Track::Audio => self.cfg.producer_pts.1,
        };
        if pkt.payload_type != want_pt {
            return;
        }
        let Some(out) = (match track {
            Track::Video => self.video.as_mut(),
            Track::Audio => self.audio.as_mut(),
        }) else {
            return;
        };
        if !out.write(&mut self.rtc, pkt, cached, None) {
            return;
        }
        if track == Track::Video && pkt.key && self.first_key_at.is_none() {
            self.first_key_at = Some(now);
        }
    }
}

/// A first sequence number (TrackOut keeps it below 2^15; not security
/// relevant: SRTP protects the stream).
fn random_seq() -> u16 {
    getrandom::u32().unwrap_or(0x1234) as u16
}

#[cfg(test)]
mod tests;
