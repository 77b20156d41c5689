//! The RTP side of the hub: per-track packets, packetized once by the
//! producer, fanned out to every WebRTC peer. The payload is an `Arc<[u8]>`
//! that every peer's `str0m` writer shares; only the header values (payload
//! type, sequence number, SSRC) differ per peer and are set at write time.
//!
//! Joining: a peer starts on a keyframe. [`Hub::join_rtp`] asks the encoder
//! for one (rate-limited: at most one per `min_keyframe_interval`). When a
//! keyframe went out less than that interval ago, the request would be held
//! back until the interval ends — up to 500 ms of black screen — so the peer
//! starts on the *cached GOP* instead: the video packets since that keyframe
//! (bounded by `rtp_gop_max_bytes` / `rtp_gop_max_packets`), replayed to it
//! at once, then the live packets after them. A producer that cannot make
//! keyframes on demand (FFmpeg) always starts peers on the cached GOP.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast;

use super::{keyframe, Hub, HubConfig};
use crate::media::rtp::{h264_starts_keyframe, RtpError, RtpPacket};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Track {
    /// H.264, 90 kHz clock.
    Video,
    /// Opus, 48 kHz clock.
    Audio,
}

/// One producer RTP packet, parsed once.
#[derive(Clone, Debug)]
pub struct RtpPkt {
    pub payload: Arc<[u8]>,
    /// The producer's payload type (rewritten per peer to what it negotiated).
    pub payload_type: u8,
    /// The producer's sequence number (peers renumber: see `SeqRewriter`).
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    /// Video: a keyframe access unit starts in this packet (the first packet
    /// of the access unit holding SPS or an IDR slice); a new peer starts here.
    pub key: bool,
    pub at: Instant,
    pub epoch: u64,
    /// Position in the hub's publish order (never reused, across runs too):
    /// a peer started on the cached GOP skips live packets it already has.
    pub index: u64,
}

/// What a peer receives: both tracks of one stream.
pub struct RtpSubscriber {
    pub video: broadcast::Receiver<RtpPkt>,
    pub audio: broadcast::Receiver<RtpPkt>,
}

/// How a new peer starts its video.
#[derive(Debug)]
pub enum RtpJoin {
    /// On the next keyframe that comes live (requested, or on its way).
    Live,
    /// On these packets (the cached GOP, keyframe first), at once; then on
    /// the live packets whose `index` is greater than the last one's.
    Cached(Vec<RtpPkt>),
}

pub(super) struct RtpTracks {
    pub video: broadcast::Sender<RtpPkt>,
    pub audio: broadcast::Sender<RtpPkt>,
}

impl RtpTracks {
    pub fn new(capacity: usize) -> Self {
        Self {
            video: broadcast::channel(capacity).0,
            audio: broadcast::channel(capacity).0,
        }
    }
}

/// RTP bookkeeping under the hub lock: packet order, keyframe starts, the GOP cache.
#[derive(Default)]
pub(super) struct RtpState {
    next_index: u64,
    /// The timestamp of the last keyframe access unit (its later packets are not starts).
    last_key_ts: Option<u32>,
    gop: Vec<RtpPkt>,
    gop_bytes: usize,
    /// The cache holds a whole GOP from its keyframe (false until one comes,
    /// and after the GOP outgrew the bounds).
    gop_complete: bool,
}

impl RtpState {
    pub fn begin_run(&mut self) {
        self.last_key_ts = None;
        self.clear_gop();
    }

    fn clear_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
        self.gop_complete = false;
    }

    /// Keep `pkt` (a video packet) in the GOP cache, within `cfg`'s bounds.
    fn cache(&mut self, pkt: &RtpPkt, cfg: &HubConfig) {
        if pkt.key {
            self.clear_gop();
            self.gop_complete = true;
        }
        if !self.gop_complete {
            return;
        }
        let len = pkt.payload.len();
        if self.gop.len() >= cfg.rtp_gop_max_packets || self.gop_bytes + len > cfg.rtp_gop_max_bytes
        {
            self.clear_gop();
            return;
        }
        self.gop_bytes += len;
        self.gop.push(pkt.clone());
    }

    /// The cached GOP, if whole and (with `max_age`) its keyframe is that recent.
    fn snapshot(&self, now: Instant, max_age: Option<std::time::Duration>) -> Option<Vec<RtpPkt>> {
        let first = self.gop.first().filter(|_| self.gop_complete)?;
        if max_age.is_some_and(|age| now.saturating_duration_since(first.at) >= age) {
            return None;
        }
        Some(self.gop.clone())
    }
}

impl Hub {
    /// Publish one RTP packet as the producer wrote it (header included).
    pub fn publish_rtp(&self, track: Track, packet: &[u8], now: Instant) -> Result<(), RtpError> {
        let p = RtpPacket::parse(packet)?;
        let starts_key = track == Track::Video && h264_starts_keyframe(p.payload);
        let payload: Arc<[u8]> = Arc::from(p.payload);
        let pkt = {
            let mut st = self.lock();
            // Every packet of a keyframe with several slices starts with an
            // IDR NAL: only the first one of the access unit is a start.
            let key = starts_key && st.rtp.last_key_ts != Some(p.timestamp);
            if key {
                if let Some(prev) = st.rtp.last_key_ts {
                    st.stats.rtp_gop_ticks = p.timestamp.wrapping_sub(prev);
                }
                st.rtp.last_key_ts = Some(p.timestamp);
                st.stats.keyframes_rtp += 1;
                st.keyframes.on_keyframe_at(now);
            }
            self.poll_deferred_keyframe(&mut st, now);
            let pkt = RtpPkt {
                payload,
                payload_type: p.payload_type,
                sequence: p.sequence,
                timestamp: p.timestamp,
                marker: p.marker,
                key,
                at: now,
                epoch: st.epoch,
                index: st.rtp.next_index,
            };
            st.rtp.next_index += 1;
            if track == Track::Video {
                st.rtp.cache(&pkt, &self.inner.cfg);
            }
            pkt
        };
        let tx = match track {
            Track::Video => &self.inner.rtp.video,
            Track::Audio => &self.inner.rtp.audio,
        };
        let _ = tx.send(pkt);
        Ok(())
    }

    /// Receivers of both tracks, with no keyframe request (a stream's shared
    /// feed; each peer that starts on it calls [`join_rtp`](Self::join_rtp)).
    pub fn rtp_receivers(&self) -> RtpSubscriber {
        RtpSubscriber {
            video: self.inner.rtp.video.subscribe(),
            audio: self.inner.rtp.audio.subscribe(),
        }
    }

    /// A new WebRTC peer: its receivers, and a keyframe request (rate-limited:
    /// held back and sent on a later publish if a keyframe just went out).
    /// Call it when the peer can receive media (connected), not at offer time,
    /// or the keyframe may pass before the peer is ready.
    pub fn subscribe_rtp(&self, now: Instant) -> RtpSubscriber {
        let sub = self.rtp_receivers();
        self.request_keyframe(now);
        sub
    }

    /// A peer that can receive media (connected) needs a keyframe: ask the
    /// encoder for one, or — when the rate limit would hold the request back,
    /// or the producer cannot make keyframes — start it on the cached GOP.
    ///
    /// The peer's live receiver must exist before this call (so every packet
    /// after the snapshot reaches it); it skips live packets whose `index` is
    /// not greater than the last cached one it was given.
    pub fn join_rtp(&self, now: Instant) -> RtpJoin {
        let mut st = self.lock();
        let interval = self.inner.cfg.min_keyframe_interval;
        if st.source.is_none() || st.rtp_join_cached_first {
            if let Some(gop) = st.rtp.snapshot(now, None) {
                st.stats.rtp_gop_joins += 1;
                return RtpJoin::Cached(gop);
            }
            if st.source.is_none() {
                return RtpJoin::Live; // the next natural keyframe
            }
        }
        match st.keyframes.want(now) {
            keyframe::Decision::Request => {
                st.stats.keyframe_requests += 1;
                if let Some(source) = &st.source {
                    source.request_keyframe();
                }
                RtpJoin::Live
            }
            keyframe::Decision::Pending => RtpJoin::Live,
            // The limiter's last keyframe may be the TS path's copy of it, a
            // little later than the RTP one: allow the cache some slack.
            keyframe::Decision::Recent => match st.rtp.snapshot(now, Some(interval * 2)) {
                Some(gop) => {
                    st.stats.rtp_gop_joins += 1;
                    RtpJoin::Cached(gop)
                }
                None => {
                    // Not cached (the GOP outgrew the bounds): wait out the
                    // limit for a fresh keyframe.
                    st.keyframes.defer();
                    st.stats.keyframe_requests_deferred += 1;
                    RtpJoin::Live
                }
            },
        }
    }

    /// A peer asked for a keyframe (PLI/FIR): rate-limited request.
    pub fn request_keyframe(&self, now: Instant) {
        let mut st = self.lock();
        if st.source.is_none() {
            return;
        }
        match st.keyframes.want_fresh(now) {
            keyframe::Decision::Request => {
                st.stats.keyframe_requests += 1;
                if let Some(source) = &st.source {
                    source.request_keyframe();
                }
            }
            keyframe::Decision::Recent => st.stats.keyframe_requests_deferred += 1,
            keyframe::Decision::Pending => {}
        }
    }

    /// Video packets and bytes in the RTP GOP cache (0 when it holds no whole GOP).
    pub fn rtp_gop_cached(&self) -> (usize, usize) {
        let st = self.lock();
        if st.rtp.gop_complete {
            (st.rtp.gop.len(), st.rtp.gop_bytes)
        } else {
            (0, 0)
        }
    }
}
