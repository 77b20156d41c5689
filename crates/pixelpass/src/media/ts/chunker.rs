//! Cuts a muxer's MPEG-TS byte stream into chunks the hub can fan out.
//!
//! Sans-IO: bytes go in (`push`), whole chunks come out. A chunk ends where
//! the next video access unit starts (or where the caller `flush`es because
//! the muxer went quiet), so a chunk is about one video frame plus the audio
//! around it. A chunk whose first video packet starts a keyframe (the
//! adaptation field's random_access_indicator, or an IDR/SPS at the start of
//! the PES) is marked `key`: a viewer may join there. The last PAT and PMT are
//! remembered so a joining viewer can be handed them before its first chunk.

use bytes::{Bytes, BytesMut};

use super::framer::Framer;
use super::packet::{self, Packet, PACKET_LEN, PAT_PID};

/// What the chunker hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The latest PAT + PMT packets, sent first to every joining viewer.
    Psi(Bytes),
    /// A run of whole TS packets.
    Chunk {
        data: Bytes,
        key: bool,
        /// The PTS of the chunk's video frame (90 kHz), when it has one.
        pts: Option<u64>,
    },
}

#[derive(Default)]
pub struct Chunker {
    framer: Framer,
    current: BytesMut,
    current_has_video: bool,
    current_key: bool,
    current_pts: Option<u64>,
    pmt_pid: Option<u16>,
    video_pid: Option<u16>,
    pat: Option<Bytes>,
    pmt: Option<Bytes>,
}

impl Chunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The video PID, once a PMT naming an H.264 stream was seen.
    pub fn video_pid(&self) -> Option<u16> {
        self.video_pid
    }

    /// Feed bytes in any split; returns what became complete.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<Output>) {
        let mut framer = std::mem::take(&mut self.framer);
        framer.push(input, |pkt| self.packet(pkt, out));
        self.framer = framer;
    }

    /// Times the byte stream lost sync.
    pub fn resyncs(&self) -> u64 {
        self.framer.resyncs
    }

    /// End the current chunk now (the muxer went quiet: do not hold bytes back).
    pub fn flush(&mut self, out: &mut Vec<Output>) {
        if self.current.is_empty() {
            return;
        }
        out.push(Output::Chunk {
            data: self.current.split().freeze(),
            key: self.current_key,
            pts: self.current_pts.take(),
        });
        self.current_has_video = false;
        self.current_key = false;
    }

    fn packet(&mut self, bytes: &[u8], out: &mut Vec<Output>) {
        let Some(pkt) = Packet::new(bytes) else {
            return;
        };
        let pid = pkt.pid();
        let is_video = Some(pid) == self.video_pid;
        if pid == PAT_PID {
            // PSI goes with the keyframe that follows it: cut before it.
            if self.current_has_video {
                self.flush(out);
            }
            self.on_pat(pkt, out);
        } else if Some(pid) == self.pmt_pid {
            self.on_pmt(pkt, out);
        } else if is_video && pkt.pusi() {
            if self.current_has_video {
                self.flush(out);
            }
            if !self.current_has_video {
                self.current_key =
                    pkt.random_access() || packet::pes_starts_h264_keyframe(pkt.payload());
                self.current_pts = packet::pes_pts(pkt.payload());
            }
        }
        if is_video {
            self.current_has_video = true;
        }
        self.current.extend_from_slice(bytes);
    }

    fn on_pat(&mut self, pkt: Packet<'_>, out: &mut Vec<Output>) {
        if !pkt.pusi() {
            return;
        }
        let pmt_pid = packet::psi_section(pkt.payload()).and_then(packet::pat_pmt_pid);
        if pmt_pid.is_some() && pmt_pid != self.pmt_pid {
            self.pmt_pid = pmt_pid;
            self.pmt = None;
        }
        let changed = self.pat.as_deref() != Some(pkt.bytes());
        self.pat = Some(Bytes::copy_from_slice(pkt.bytes()));
        if changed {
            self.emit_psi(out);
        }
    }

    fn on_pmt(&mut self, pkt: Packet<'_>, out: &mut Vec<Output>) {
        if !pkt.pusi() {
            return;
        }
        if let Some(section) = packet::psi_section(pkt.payload()) {
            let video = packet::pmt_streams(section)
                .into_iter()
                .find(|(stream_type, _)| *stream_type == packet::STREAM_TYPE_H264)
                .map(|(_, pid)| pid);
            if video.is_some() {
                self.video_pid = video;
            }
        }
        let changed = self.pmt.as_deref() != Some(pkt.bytes());
        self.pmt = Some(Bytes::copy_from_slice(pkt.bytes()));
        if changed {
            self.emit_psi(out);
        }
    }

    fn emit_psi(&self, out: &mut Vec<Output>) {
        if let (Some(pat), Some(pmt)) = (&self.pat, &self.pmt) {
            let mut psi = BytesMut::with_capacity(2 * PACKET_LEN);
            psi.extend_from_slice(pat);
            psi.extend_from_slice(pmt);
            out.push(Output::Psi(psi.freeze()));
        }
    }
}

/// Synthetic TS packets for tests in this crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::super::packet::{PACKET_LEN, PAT_PID, SYNC_BYTE};

    /// A TS packet with the given pid/flags; payload filled with `fill`.
    pub fn ts_packet(pid: u16, pusi: bool, rai: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0xffu8; PACKET_LEN];
        p[0] = SYNC_BYTE;
        p[1] = (if pusi { 0x40 } else { 0 }) | ((pid >> 8) as u8 & 0x1f);
        p[2] = pid as u8;
        let mut at = 4;
        if rai {
            p[3] = 0x30; // adaptation + payload
            p[4] = 1;
            p[5] = 0x40;
            at = 6;
        } else {
            p[3] = 0x10;
        }
        p[at..at + payload.len()].copy_from_slice(payload);
        p
    }

    pub fn pat(pmt_pid: u16) -> Vec<u8> {
        // pointer, table 0, len 13, tsid, ver, sec, last, program 1 -> pmt_pid, crc
        let sec = [
            0u8,
            0x00,
            0xb0,
            13,
            0,
            1,
            0xc1,
            0,
            0,
            0,
            1,
            0xe0 | (pmt_pid >> 8) as u8,
            pmt_pid as u8,
            1,
            2,
            3,
            4,
        ];
        ts_packet(PAT_PID, true, false, &sec)
    }

    pub fn pmt(pmt_pid: u16, video_pid: u16, audio_pid: u16) -> Vec<u8> {
        let sec = [
            0u8,
            0x02,
            0xb0,
            23,
            0,
            1,
            0xc1,
            0,
            0,
            0xe0 | (video_pid >> 8) as u8,
            video_pid as u8,
            0xf0,
            0,
            0x1b,
            0xe0 | (video_pid >> 8) as u8,
            video_pid as u8,
            0xf0,
            0,
            0x0f,
            0xe0 | (audio_pid >> 8) as u8,
            audio_pid as u8,
            0xf0,
            0,
            1,
            2,
            3,
            4,
        ];
        ts_packet(pmt_pid, true, false, &sec)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    fn chunks(out: &[Output]) -> Vec<(usize, bool)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Chunk { data, key, .. } => Some((data.len() / PACKET_LEN, *key)),
                Output::Psi(_) => None,
            })
            .collect()
    }

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(pat(0x1000));
        s.extend(pmt(0x1000, 0x41, 0x42));
        s.extend(ts_packet(0x41, true, true, &[])); // keyframe start
        s.extend(ts_packet(0x41, false, false, &[]));
        s.extend(ts_packet(0x42, true, false, &[])); // audio
        s.extend(ts_packet(0x41, true, false, &[])); // next frame
        s.extend(ts_packet(0x41, false, false, &[]));
        s.extend(pat(0x1000));
        s.extend(pmt(0x1000, 0x41, 0x42));
        s.extend(ts_packet(0x41, true, true, &[])); // keyframe again
        s
    }

    #[test]
    fn cuts_at_frames_and_marks_keyframes() {
        let mut c = Chunker::new();
        let mut out = Vec::new();
        c.push(&stream(), &mut out);
        c.flush(&mut out);
        assert_eq!(c.video_pid(), Some(0x41));
        // [PAT PMT K K A] [F F] [PAT PMT K]
        assert_eq!(chunks(&out), vec![(5, true), (2, false), (3, true)]);
        let psi = out.iter().filter(|o| matches!(o, Output::Psi(_))).count();
        assert_eq!(psi, 1, "unchanged PSI is announced once");
    }

    #[test]
    fn any_split_gives_the_same_chunks() {
        let s = stream();
        for split in [1usize, 7, 100, 187, 189, 500] {
            let mut c = Chunker::new();
            let mut out = Vec::new();
            for part in s.chunks(split) {
                c.push(part, &mut out);
            }
            c.flush(&mut out);
            assert_eq!(
                chunks(&out),
                vec![(5, true), (2, false), (3, true)],
                "split {split}"
            );
        }
    }

    #[test]
    fn garbage_is_skipped_and_counted() {
        let mut c = Chunker::new();
        let mut out = Vec::new();
        c.push(&[1, 2, 3], &mut out);
        c.push(&stream(), &mut out);
        c.flush(&mut out);
        assert!(c.resyncs() >= 1);
        assert_eq!(chunks(&out).len(), 3);
    }

    #[test]
    fn idr_in_pes_marks_key_without_rai() {
        let pes = [
            0u8, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 0, 0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67,
        ];
        let mut s = Vec::new();
        s.extend(pat(0x1000));
        s.extend(pmt(0x1000, 0x41, 0x42));
        s.extend(ts_packet(0x41, true, false, &pes));
        let mut c = Chunker::new();
        let mut out = Vec::new();
        c.push(&s, &mut out);
        c.flush(&mut out);
        assert_eq!(chunks(&out), vec![(3, true)]);
    }
}
