//! The RTP sources of one FFmpeg run: two loopback UDP sockets (video on V,
//! audio on V+1), bound and draining BEFORE FFmpeg starts, feeding the hub.
//!
//! What arrives is checked before it reaches the hub ([`Gate`], sans-IO):
//! only loopback senders, and after the first packet only that sender (FFmpeg's
//! port), so nothing else on this machine can inject into a stream; RTCP
//! (FFmpeg sends its sender reports to the RTP port: `rtcpport=V`) is counted
//! and dropped; sequence gaps are counted as loss.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::hub::LayerInfo;
use crate::hub::{Hub, Track};
use crate::media::rtp::{h264_sps, RtpPacket};
use crate::media::sps::sps_info;

/// Counters of one track, shared with the report and the metrics.
#[derive(Debug, Default)]
pub struct TrackCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Sequence numbers skipped (packets lost between FFmpeg and us).
    pub lost: AtomicU64,
    pub rtcp: AtomicU64,
    /// Datagrams refused: not RTP, or from a sender that is not this run's FFmpeg.
    pub refused: AtomicU64,
    /// Video: the profile-level-id of the last SPS seen (0: none yet).
    pub profile_level_id: AtomicU32,
}

#[derive(Debug, Default)]
pub struct RtpCounters {
    pub video: TrackCounters,
    pub audio: TrackCounters,
}

impl RtpCounters {
    pub fn track(&self, track: Track) -> &TrackCounters {
        match track {
            Track::Video => &self.video,
            Track::Audio => &self.audio,
        }
    }
}

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Publish,
    Rtcp,
    Refuse,
}

/// Per-socket checks (sans-IO).
#[derive(Debug, Default)]
pub struct Gate {
    sender: Option<SocketAddr>,
    next_seq: Option<u16>,
}

/// Larger gaps are a new sequence (a sender restart), not loss.
const MAX_GAP: u16 = 3000;

impl Gate {
    /// Judge `datagram` from `from`; `lost` gets the packets skipped before it.
    pub fn judge(&mut self, from: SocketAddr, datagram: &[u8], lost: &mut u64) -> Verdict {
        if !from.ip().is_loopback() || datagram.len() < 12 || datagram[0] >> 6 != 2 {
            return Verdict::Refuse;
        }
        // RTCP packet types 200..=204 sit where RTP has marker + payload type.
        // FFmpeg sends RTCP from a socket of its own (another port): dropped
        // here whoever sends it, and it does not pick the RTP sender.
        if (200..=204).contains(&datagram[1]) {
            return Verdict::Rtcp;
        }
        if self.sender.is_some_and(|s| s != from) {
            return Verdict::Refuse;
        }
        self.sender.get_or_insert(from);
        let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
        if let Some(want) = self.next_seq {
            let gap = seq.wrapping_sub(want);
            if gap != 0 && gap < MAX_GAP {
                *lost += u64::from(gap);
            }
        }
        self.next_seq = Some(seq.wrapping_add(1));
        Verdict::Publish
    }
}

/// One leg's state between datagrams: its [`Gate`] and the last SPS seen.
#[derive(Debug)]
pub struct Leg {
    track: Track,
    learn_profile: bool,
    gate: Gate,
    last_sps: Vec<u8>,
}

impl Leg {
    pub fn new(track: Track, learn_profile: bool) -> Self {
        Self {
            track,
            learn_profile,
            gate: Gate::default(),
            last_sps: Vec::new(),
        }
    }

    /// One datagram from `from` (sans-IO: what [`run`] does with each one it
    /// receives): judged, published to `hub` and counted in `c`. Video: each
    /// new SPS's profile goes to the counters (and to the hub when
    /// `learn_profile`: copied H.264), its size and rate to the hub's layer
    /// info once the producer has said what the layer is ([`learn_layer`]).
    /// True when it was published.
    pub fn datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        hub: &Hub,
        c: &TrackCounters,
    ) -> bool {
        let (track, learn_profile) = (self.track, self.learn_profile);
        let mut lost = 0;
        match self.gate.judge(from, datagram, &mut lost) {
            Verdict::Publish => {
                if hub.publish_rtp(track, datagram, now).is_err() {
                    c.refused.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                c.packets.fetch_add(1, Ordering::Relaxed);
                c.bytes.fetch_add(datagram.len() as u64, Ordering::Relaxed);
                if lost > 0 {
                    c.lost.fetch_add(lost, Ordering::Relaxed);
                }
                if track == Track::Video {
                    let packet = RtpPacket::parse(datagram).ok();
                    let sps = packet.and_then(|p| h264_sps(p.payload));
                    if let Some(sps) = sps.filter(|s| **s != self.last_sps[..]) {
                        self.last_sps = sps.to_vec();
                        if let Some(p) = crate::media::h264::sps_profile_level_id(sps) {
                            c.profile_level_id.store(p, Ordering::Relaxed);
                            if learn_profile {
                                hub.set_h264_profile(Some(p));
                            }
                        }
                        learn_layer(hub, sps);
                    }
                }
                true
            }
            Verdict::Rtcp => {
                c.rtcp.fetch_add(1, Ordering::Relaxed);
                false
            }
            Verdict::Refuse => {
                c.refused.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Drain `sock` into `hub` until the task is aborted, one [`Leg::datagram`]
/// each. `seen` is told the time of every published packet (media flows;
/// the stale watchdog reads it).
pub async fn run(
    sock: UdpSocket,
    track: Track,
    hub: Hub,
    counters: Arc<RtpCounters>,
    seen: watch::Sender<Option<Instant>>,
    learn_profile: bool,
) {
    let mut leg = Leg::new(track, learn_profile);
    let mut buf = vec![0u8; 2048];
    let c = counters.track(track);
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors and the like: nothing to do but keep reading.
                tracing::debug!(?track, "RTP receive: {e}");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let now = Instant::now();
        if leg.datagram(from, &buf[..n], now, &hub, c) {
            seen.send_replace(Some(now));
        }
    }
}

/// The size and rate an SPS states go into the hub's layer info (its
/// bitrate stays the producer's); nothing before the producer said what the
/// layer is, and a rate the SPS does not state stays what was said.
pub fn learn_layer(hub: &Hub, sps: &[u8]) {
    let (Some(said), Some(got)) = (hub.layer_info(), sps_info(sps)) else {
        return;
    };
    hub.set_layer_info(LayerInfo {
        width: got.width,
        height: got.height,
        fps: got.fps.unwrap_or(said.fps),
        ..said
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 102, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0x65];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p
    }

    #[test]
    fn counts_gaps_as_loss_and_drops_rtcp_and_strangers() {
        let ffmpeg: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let mut g = Gate::default();
        let mut lost = 0;
        // FFmpeg's first datagram is a sender report from its RTCP port.
        let sr0 = [0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(g.judge(other, &sr0, &mut lost), Verdict::Rtcp);
        assert_eq!(g.judge(remote, &rtp(1), &mut lost), Verdict::Refuse);
        assert_eq!(g.judge(ffmpeg, &rtp(65534), &mut lost), Verdict::Publish);
        assert_eq!(g.judge(ffmpeg, &rtp(65535), &mut lost), Verdict::Publish);
        assert_eq!(g.judge(ffmpeg, &rtp(2), &mut lost), Verdict::Publish);
        assert_eq!(lost, 2, "0 and 1 missing across the wrap");
        // Another local sender cannot inject once FFmpeg's port is known.
        assert_eq!(g.judge(other, &rtp(3), &mut lost), Verdict::Refuse);
        let sr = [0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(g.judge(ffmpeg, &sr, &mut lost), Verdict::Rtcp);
        assert_eq!(
            g.judge(other, &sr, &mut lost),
            Verdict::Rtcp,
            "FFmpeg's RTCP socket"
        );
        assert_eq!(g.judge(ffmpeg, &[0x80, 102], &mut lost), Verdict::Refuse);
        assert_eq!(g.judge(ffmpeg, &rtp(3), &mut lost), Verdict::Publish);
        assert_eq!(lost, 2, "a packet after RTCP is no loss");
        // A jump far ahead is a new sequence, not thousands lost.
        assert_eq!(g.judge(ffmpeg, &rtp(30_000), &mut lost), Verdict::Publish);
        assert_eq!(lost, 2);
    }
}
