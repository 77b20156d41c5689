//! Per peer and track: which hub packets go out, and under which sequence
//! number and timestamp. Sans-IO; the payload is never touched.
//!
//! - Sequence numbers are the peer's own, counted from a random start below
//!   2^15 (SRTP's rollover counter starts at 0 for a fresh receiver), one per
//!   packet sent: packets skipped here leave no gap for the receiver to NACK.
//! - Video starts on a keyframe, and waits for the next one after the peer
//!   fell behind or the producer restarted.
//! - A peer started on the hub's cached GOP got those packets at once; the
//!   live ones it already has (same hub `index` or older) are skipped.
//! - Timestamps pass through, except across a producer restart (a new
//!   epoch): they are rebased so they continue from where the peer was, by
//!   the wall-clock time that passed.

use std::time::Instant;

use str0m::media::{Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::Rtc;

use crate::hub::{RtpPkt, Track};

/// One negotiated outgoing track of a peer (a WHEP viewer, a WHIP session
/// of `host --publish`): its m-line, its payload type, its rewriting.
#[derive(Debug)]
pub struct Out {
    pub mid: Mid,
    pub pt: Pt,
    pub track: TrackOut,
}

impl Out {
    pub fn new(mid: Mid, pt: Pt, track: Track, first_seq: u16) -> Self {
        Self {
            mid,
            pt,
            track: TrackOut::new(track, first_seq),
        }
    }

    /// Hand one hub packet to `rtc` on this track: header values rewritten,
    /// payload shared; `ext` on the packet when given. `false` when nothing
    /// was written (no send stream yet, or the packet is not this peer's).
    /// `cached`: a packet of the cached GOP (see [`TrackOut::admit_cached`]).
    pub fn write(
        &mut self,
        rtc: &mut Rtc,
        pkt: &RtpPkt,
        cached: bool,
        ext: Option<ExtensionValues>,
    ) -> bool {
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.mid, None) else {
            return false;
        };
        let admitted = if cached {
            self.track.admit_cached(pkt)
        } else {
            self.track.admit(pkt)
        };
        let Some((seq, ts)) = admitted else {
            return false;
        };
        let video = self.track.kind() == Track::Video;
        let mut write = RtpWrite::new(self.pt, seq.into(), ts, pkt.at, pkt.payload.clone())
            .marker(pkt.marker)
            .nackable(video);
        if let Some(ext) = ext {
            write = write.ext_vals(ext);
        }
        tx.write_rtp(write);
        true
    }
}

#[derive(Debug)]
pub struct TrackOut {
    track: Track,
    next_seq: u64,
    waiting_key: bool,
    epoch: Option<u64>,
    rebase: bool,
    ts_offset: u32,
    /// The last timestamp sent and the wall-clock time of its packet.
    last: Option<(u32, Instant)>,
    sent: u64,
    /// Skip packets up to this hub index (already sent from the cached GOP).
    skip_through: Option<u64>,
}

impl TrackOut {
    pub fn new(track: Track, first_seq: u16) -> Self {
        Self {
            track,
            next_seq: u64::from(first_seq & 0x7fff),
            waiting_key: track == Track::Video,
            epoch: None,
            rebase: false,
            ts_offset: 0,
            last: None,
            sent: 0,
            skip_through: None,
        }
    }

    fn clock_rate(&self) -> u64 {
        match self.track {
            Track::Video => 90_000,
            Track::Audio => 48_000,
        }
    }

    /// Packets sent so far.
    pub fn kind(&self) -> Track {
        self.track
    }

    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The hub dropped packets for this peer: video resyncs on the next keyframe.
    pub fn lagged(&mut self) {
        if self.track == Track::Video {
            self.waiting_key = true;
        }
    }

    /// The video moves to another layer (another hub) on this keyframe
    /// packet: sequence numbers run on, timestamps are rebased by the
    /// wall-clock time since the last packet sent (the layers' timestamp
    /// bases need not agree), and the old layer's skip mark is void.
    pub fn switch_source(&mut self) {
        self.rebase = self.last.is_some();
        self.waiting_key = false;
        self.skip_through = None;
    }

    /// Packets up to hub index `index` were sent already (the cached GOP):
    /// the live feed's copies of them are not sent again.
    pub fn skip_through(&mut self, index: u64) {
        self.skip_through = Some(index);
    }

    /// Should live `pkt` go out, and as which (extended sequence number, timestamp)?
    pub fn admit(&mut self, pkt: &RtpPkt) -> Option<(u64, u32)> {
        if let Some(last) = self.skip_through {
            if pkt.index <= last {
                return None;
            }
            self.skip_through = None;
        }
        self.admit_cached(pkt)
    }

    /// Like [`admit`](Self::admit), for a packet of the cached GOP: those
    /// are exactly the packets [`skip_through`](Self::skip_through) keeps
    /// out of the live feed, so it does not apply to them.
    pub fn admit_cached(&mut self, pkt: &RtpPkt) -> Option<(u64, u32)> {
        match self.epoch {
            Some(e) if e != pkt.epoch => {
                self.epoch = Some(pkt.epoch);
                self.rebase = self.last.is_some();
                self.lagged();
            }
            Some(_) => {}
            None => self.epoch = Some(pkt.epoch),
        }
        if self.waiting_key {
            if !pkt.key {
                return None;
            }
            self.waiting_key = false;
        }
        if self.rebase {
            self.rebase = false;
            if let Some((last_ts, last_at)) = self.last {
                let elapsed = pkt.at.saturating_duration_since(last_at);
                let ticks = (elapsed.as_micros() as u64 * self.clock_rate() / 1_000_000).max(1);
                let expected = last_ts.wrapping_add(ticks as u32);
                self.ts_offset = expected.wrapping_sub(pkt.timestamp);
            }
        }
        let ts = pkt.timestamp.wrapping_add(self.ts_offset);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sent += 1;
        self.last = Some((ts, pkt.at));
        Some((seq, ts))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn pkt(seq: u16, ts: u32, key: bool, epoch: u64, at: Instant) -> RtpPkt {
        RtpPkt {
            index: u64::from(seq) + (epoch << 32),
            payload: Arc::from(&[0u8][..]),
            payload_type: 102,
            sequence: seq,
            timestamp: ts,
            marker: false,
            key,
            at,
            epoch,
        }
    }

    #[test]
    fn video_starts_on_a_keyframe_with_fresh_sequence_numbers() {
        let t = Instant::now();
        let mut v = TrackOut::new(Track::Video, 40_000);
        assert_eq!(
            v.admit(&pkt(5000, 100, false, 1, t)),
            None,
            "mid-GOP: not yet"
        );
        assert_eq!(
            v.admit(&pkt(5001, 3100, true, 1, t)),
            Some((40_000 & 0x7fff, 3100))
        );
        assert_eq!(
            v.admit(&pkt(5002, 3100, false, 1, t)),
            Some(((40_000 & 0x7fff) + 1, 3100))
        );
        // The producer's own numbers jump: ours do not.
        assert_eq!(
            v.admit(&pkt(9, 6100, false, 1, t)).map(|x| x.0),
            Some((40_000 & 0x7fff) + 2)
        );
        assert_eq!(v.sent(), 3);
    }

    #[test]
    fn a_lagging_peer_waits_for_the_next_keyframe_without_a_sequence_gap() {
        let t = Instant::now();
        let mut v = TrackOut::new(Track::Video, 10);
        assert!(v.admit(&pkt(1, 0, true, 1, t)).is_some());
        v.lagged();
        assert!(v.waiting_key);
        assert_eq!(v.admit(&pkt(50, 9000, false, 1, t)), None);
        assert_eq!(v.admit(&pkt(51, 12000, true, 1, t)), Some((11, 12000)));
        // Audio has no keyframes: it just goes on.
        let mut a = TrackOut::new(Track::Audio, 0);
        a.lagged();
        assert_eq!(a.admit(&pkt(7, 960, false, 1, t)), Some((0, 960)));
    }

    #[test]
    fn after_the_cached_gop_the_live_copies_are_skipped_without_a_gap() {
        let t = Instant::now();
        let mut v = TrackOut::new(Track::Video, 0);
        // The cached GOP, keyframe first: its last index is known before
        // it is written (in chunks, between which live packets may queue).
        v.skip_through(pkt(11, 0, false, 1, t).index);
        assert_eq!(v.admit_cached(&pkt(10, 900, true, 1, t)), Some((0, 900)));
        assert_eq!(v.admit_cached(&pkt(11, 900, false, 1, t)), Some((1, 900)));
        // The live feed had them queued too; then new packets follow on.
        assert_eq!(v.admit(&pkt(10, 900, true, 1, t)), None);
        assert_eq!(v.admit(&pkt(11, 900, false, 1, t)), None);
        assert_eq!(v.admit(&pkt(12, 3900, false, 1, t)), Some((2, 3900)));
        assert_eq!(v.admit(&pkt(13, 3900, false, 1, t)), Some((3, 3900)));
    }

    #[test]
    fn a_layer_switch_runs_on_sequence_numbers_and_rebases_timestamps() {
        let t = Instant::now();
        let mut v = TrackOut::new(Track::Video, 7);
        assert_eq!(v.admit(&pkt(1, 500_000, true, 1, t)), Some((7, 500_000)));
        // Layer 1 has its own timestamp base and hub indexes (lower ones).
        v.skip_through(1_000);
        v.switch_source();
        let t2 = t + Duration::from_millis(100);
        assert_eq!(v.admit(&pkt(3, 9, true, 1, t2)), Some((8, 509_000)));
        assert_eq!(v.admit(&pkt(4, 3009, false, 1, t2)), Some((9, 512_000)));
    }

    #[test]
    fn a_producer_restart_resyncs_video_and_rebases_timestamps() {
        let t = Instant::now();
        let mut v = TrackOut::new(Track::Video, 100);
        assert_eq!(
            v.admit(&pkt(1, 1_000_000, true, 1, t)),
            Some((100, 1_000_000))
        );
        // New run, 0.5 s later, with an unrelated timestamp base.
        let t2 = t + Duration::from_millis(500);
        assert_eq!(
            v.admit(&pkt(77, 42, false, 2, t2)),
            None,
            "waits for the new run's keyframe"
        );
        assert_eq!(
            v.admit(&pkt(78, 42, true, 2, t2)),
            Some((101, 1_000_000 + 45_000))
        );
        assert_eq!(
            v.admit(&pkt(79, 42 + 3000, false, 2, t2)),
            Some((102, 1_048_000))
        );
        // Audio rebases too, at 48 kHz.
        let mut a = TrackOut::new(Track::Audio, 0);
        a.admit(&pkt(1, u32::MAX - 10, false, 1, t));
        assert_eq!(
            a.admit(&pkt(1, 5, false, 2, t + Duration::from_millis(20))),
            Some((1, (u32::MAX - 10).wrapping_add(960)))
        );
    }
}
