//! H.264 access units out of an MPEG-TS byte stream, each handed on the
//! moment its last byte arrived — the client side of `bench latency --path http`.
//!
//! A video PES whose `PES_packet_length` is set (mpegtsmux sets it for every
//! frame under 64 KiB) is complete once that many bytes came, as ffmpeg's and
//! GStreamer's demuxers also see it. A PES of unbounded length (0: a large
//! keyframe) can only be known complete when the next one starts on the same
//! PID — every demuxer has to wait for that, and so does this one.

use pixelpass::media::ts::packet::{self, Packet, PAT_PID};
use pixelpass::media::ts::Framer;

/// Demultiplexes the first H.264 stream of the first program.
#[derive(Default)]
pub struct VideoAus {
    framer: Framer,
    pmt_pid: Option<u16>,
    video_pid: Option<u16>,
    /// The PES being gathered (header included).
    pes: Vec<u8>,
    /// Its whole size, when the header says so.
    pes_total: Option<usize>,
}

impl VideoAus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes in any split; complete access units (Annex-B) go to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<Vec<u8>>) {
        let mut framer = std::mem::take(&mut self.framer);
        framer.push(input, |pkt| self.packet(pkt, out));
        self.framer = framer;
    }

    /// Bytes skipped because they did not start a packet.
    pub fn skipped_bytes(&self) -> u64 {
        self.framer.skipped
    }

    fn packet(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        let Some(p) = Packet::new(bytes) else {
            return; // the framer hands on whole packets only
        };
        let pid = p.pid();
        if pid == PAT_PID && p.pusi() {
            if let Some(pmt) = packet::psi_section(p.payload()).and_then(packet::pat_pmt_pid) {
                self.pmt_pid = Some(pmt);
            }
        } else if Some(pid) == self.pmt_pid && p.pusi() {
            if let Some(section) = packet::psi_section(p.payload()) {
                let video = packet::pmt_streams(section)
                    .into_iter()
                    .find(|&(t, _)| t == packet::STREAM_TYPE_H264);
                if let Some((_, v)) = video {
                    self.video_pid = Some(v);
                }
            }
        } else if Some(pid) == self.video_pid {
            self.video(p, out);
        }
    }

    fn video(&mut self, p: Packet<'_>, out: &mut Vec<Vec<u8>>) {
        let payload = p.payload();
        if p.pusi() {
            // An unbounded PES ends where the next one starts.
            self.finish(out);
            if payload.len() >= 6 && payload[..3] == [0, 0, 1] {
                let len = usize::from(u16::from_be_bytes([payload[4], payload[5]]));
                self.pes_total = (len > 0).then_some(6 + len);
                self.pes.extend_from_slice(payload);
            }
        } else if !self.pes.is_empty() {
            self.pes.extend_from_slice(payload);
        }
        if self.pes_total.is_some_and(|total| self.pes.len() >= total) {
            self.finish(out);
        }
    }

    /// Hand on the PES gathered so far (its elementary stream part).
    fn finish(&mut self, out: &mut Vec<Vec<u8>>) {
        let pes = std::mem::take(&mut self.pes);
        let total = self.pes_total.take();
        if pes.len() < 9 {
            return;
        }
        let start = 9 + usize::from(pes[8]);
        let end = total.unwrap_or(pes.len()).min(pes.len());
        if start < end {
            out.push(pes[start..end].to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixelpass::media::ts::packet::{PACKET_LEN, SYNC_BYTE};

    const VIDEO_PID: u16 = 0x41;
    const PMT_PID: u16 = 0x20;

    fn ts_packet(pid: u16, pusi: bool, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() <= 184);
        let stuffing = 184 - payload.len();
        let mut p = vec![
            SYNC_BYTE,
            (u8::from(pusi) << 6) | (pid >> 8) as u8,
            pid as u8,
        ];
        if stuffing == 0 {
            p.push(0x10);
        } else {
            p.push(0x30);
            p.push((stuffing - 1) as u8);
            if stuffing > 1 {
                p.push(0);
                p.extend(std::iter::repeat_n(0xff, stuffing - 2));
            }
        }
        p.extend_from_slice(payload);
        assert_eq!(p.len(), PACKET_LEN);
        p
    }

    fn psi() -> Vec<u8> {
        let pat = [
            0,
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
            0xe0 | (PMT_PID >> 8) as u8,
            PMT_PID as u8,
            0,
            0,
            0,
            0,
        ];
        let pmt = [
            0,
            0x02,
            0xb0,
            18,
            0,
            1,
            0xc1,
            0,
            0,
            0xe0,
            VIDEO_PID as u8,
            0xf0,
            0,
            0x1b,
            0xe0,
            VIDEO_PID as u8,
            0xf0,
            0,
            0,
            0,
            0,
            0,
        ];
        [
            ts_packet(PAT_PID, true, &pat),
            ts_packet(PMT_PID, true, &pmt),
        ]
        .concat()
    }

    /// One PES (with or without its length) carrying `es`, cut into TS packets.
    fn pes(es: &[u8], bounded: bool) -> Vec<u8> {
        let len = if bounded {
            (3 + 5 + es.len()) as u16
        } else {
            0
        };
        let mut pes = vec![
            0,
            0,
            1,
            0xe0,
            (len >> 8) as u8,
            len as u8,
            0x80,
            0x80,
            5,
            0x21,
            0,
            1,
            0,
            1,
        ];
        pes.extend_from_slice(es);
        pes.chunks(184)
            .enumerate()
            .flat_map(|(i, c)| ts_packet(VIDEO_PID, i == 0, c))
            .collect()
    }

    fn au(n: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1, 0x41];
        v.extend(std::iter::repeat_n(n, len));
        v
    }

    #[test]
    fn a_bounded_pes_comes_out_with_its_last_packet() {
        let mut d = VideoAus::new();
        let mut out = Vec::new();
        d.push(&psi(), &mut out);
        let frame = au(7, 1000);
        let ts = pes(&frame, true);
        let (head, last) = ts.split_at(ts.len() - PACKET_LEN);
        d.push(head, &mut out);
        assert!(out.is_empty(), "not before its last byte");
        d.push(last, &mut out);
        assert_eq!(out, vec![frame]);
    }

    #[test]
    fn an_unbounded_pes_ends_where_the_next_starts() {
        let mut d = VideoAus::new();
        let mut out = Vec::new();
        let (a, b) = (au(1, 70_000), au(2, 300));
        d.push(&[psi(), pes(&a, false)].concat(), &mut out);
        assert!(out.is_empty());
        d.push(&pes(&b, true), &mut out);
        assert_eq!(out, vec![a, b]);
    }

    #[test]
    fn any_split_gives_the_same_units() {
        let frames: Vec<Vec<u8>> = (0..5).map(|i| au(i, 200 + 400 * usize::from(i))).collect();
        let mut stream = psi();
        for f in &frames {
            stream.extend(pes(f, true));
        }
        for step in [1, 7, 188, 1000] {
            let mut d = VideoAus::new();
            let mut out = Vec::new();
            for piece in stream.chunks(step) {
                d.push(piece, &mut out);
            }
            assert_eq!(out, frames, "split every {step} bytes");
        }
    }

    #[test]
    fn nothing_before_the_pmt_and_garbage_is_skipped() {
        let mut d = VideoAus::new();
        let mut out = Vec::new();
        d.push(&pes(&au(1, 10), true), &mut out);
        assert!(out.is_empty(), "no PMT yet: the video PID is unknown");
        d.push(
            &[vec![1, 2, 3], psi(), pes(&au(2, 10), true)].concat(),
            &mut out,
        );
        assert_eq!(out, vec![au(2, 10)]);
        assert_eq!(d.skipped_bytes(), 3);
    }
}
