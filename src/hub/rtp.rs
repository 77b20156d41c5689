//! The RTP side of the hub: per-track packets, packetized once by the
//! producer, fanned out to every WebRTC peer. The payload is an `Arc<[u8]>`
//! that every peer's `str0m` writer shares; only the header values (payload
//! type, sequence number, SSRC) differ per peer and are set at write time.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast;

use super::Hub;
use crate::rtp::{h264_starts_keyframe, RtpError, RtpPacket};

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
    /// Video: a keyframe starts in this packet; a new peer starts here.
    pub key: bool,
    pub at: Instant,
    pub epoch: u64,
}

/// What a peer receives: both tracks of one stream.
pub struct RtpSubscriber {
    pub video: broadcast::Receiver<RtpPkt>,
    pub audio: broadcast::Receiver<RtpPkt>,
}

pub(super) struct RtpTracks {
    pub video: broadcast::Sender<RtpPkt>,
    pub audio: broadcast::Sender<RtpPkt>,
}

impl RtpTracks {
    pub fn new(capacity: usize) -> Self {
        Self { video: broadcast::channel(capacity).0, audio: broadcast::channel(capacity).0 }
    }
}

impl Hub {
    /// Publish one RTP packet as the producer wrote it (header included).
    pub fn publish_rtp(&self, track: Track, packet: &[u8], now: Instant) -> Result<(), RtpError> {
        let p = RtpPacket::parse(packet)?;
        let key = track == Track::Video && h264_starts_keyframe(p.payload);
        let epoch = {
            let mut st = self.lock();
            if key {
                st.stats.keyframes_rtp += 1;
                st.keyframes.on_keyframe_at(now);
            }
            self.poll_deferred_keyframe(&mut st, now);
            st.epoch
        };
        let pkt = RtpPkt {
            payload: Arc::from(p.payload),
            payload_type: p.payload_type,
            sequence: p.sequence,
            timestamp: p.timestamp,
            marker: p.marker,
            key,
            at: now,
            epoch,
        };
        let tx = match track {
            Track::Video => &self.inner.rtp.video,
            Track::Audio => &self.inner.rtp.audio,
        };
        let _ = tx.send(pkt);
        Ok(())
    }

    /// A new WebRTC peer: its receivers, and a keyframe request (rate-limited:
    /// held back and sent on a later publish if a keyframe just went out).
    /// Call it when the peer can receive media (connected), not at offer time,
    /// or the keyframe may pass before the peer is ready.
    pub fn subscribe_rtp(&self, now: Instant) -> RtpSubscriber {
        let sub = RtpSubscriber { video: self.inner.rtp.video.subscribe(), audio: self.inner.rtp.audio.subscribe() };
        self.request_keyframe(now);
        sub
    }

    /// A peer asked for a keyframe (PLI/FIR) or joined: rate-limited request.
    pub fn request_keyframe(&self, now: Instant) {
        let mut st = self.lock();
        if st.source.is_some() && st.keyframes.want_fresh(now) {
            st.stats.keyframe_requests += 1;
            if let Some(source) = &st.source {
                source.request_keyframe();
            }
        }
    }
}
