//! An MPEG-TS scanner: finds the video PES (frames, keyframes, PTS,
//! continuity jumps) and PATs in what a viewer received.

use pixelpass::media::h264;
use pixelpass::media::ts::packet::{self, Packet, PAT_PID};
use pixelpass::media::ts::Framer;

use crate::prelude::PTS_HZ;

pub const TS_PACKET: usize = packet::PACKET_LEN;

#[derive(Debug, Clone)]
pub struct VideoPes {
    /// Byte offset of the TS packet that starts this PES.
    pub offset: usize,
    pub pts: Option<u64>,
    /// random_access_indicator set in the adaptation field.
    pub rai: bool,
    /// An SPS or IDR NAL unit starts in the first packet's payload.
    pub sps_or_idr: bool,
    /// The video continuity counter jumped since the previous video packet.
    pub cc_jump: bool,
}

#[derive(Debug, Default)]
pub struct TsScan {
    pub packets: usize,
    /// Bytes skipped because they were not at a sync byte.
    pub sync_errors: usize,
    pub video_pid: Option<u16>,
    pub audio_pids: Vec<u16>,
    pub pat_offsets: Vec<usize>,
    pub video: Vec<VideoPes>,
}

impl TsScan {
    /// Video PES that start in `[from, to)`.
    pub fn frames_between(&self, from: usize, to: usize) -> usize {
        self.video
            .iter()
            .filter(|p| p.offset >= from && p.offset < to)
            .count()
    }

    /// Indexes of video PES where the stream jumps: a continuity-counter
    /// break, or a PTS step over 3 frame durations.
    pub fn discontinuities(&self, fps: f64) -> Vec<usize> {
        let max_step = (3.0 * PTS_HZ as f64 / fps) as i64;
        (1..self.video.len())
            .filter(|&i| {
                let step = match (self.video[i - 1].pts, self.video[i].pts) {
                    (Some(a), Some(b)) => pts_diff(b, a),
                    _ => 0,
                };
                self.video[i].cc_jump || step > max_step || step < 0
            })
            .collect()
    }

    /// Is there a PAT between the previous video PES and video PES `i`?
    pub fn pat_before(&self, i: usize) -> Option<usize> {
        let lo = if i == 0 { 0 } else { self.video[i - 1].offset };
        let hi = self.video[i].offset;
        self.pat_offsets
            .iter()
            .copied()
            .rfind(|&o| o >= lo && o < hi)
    }

    pub fn last_pts(&self) -> Option<u64> {
        self.video.iter().rev().find_map(|p| p.pts)
    }
}

/// `a - b` for 33-bit PTS values, wrapping.
pub fn pts_diff(a: u64, b: u64) -> i64 {
    let m = 1i64 << 33;
    let d = (a as i64 - b as i64).rem_euclid(m);
    if d > m / 2 {
        d - m
    } else {
        d
    }
}

pub fn scan_ts(data: &[u8]) -> TsScan {
    let mut s = TsScan::default();
    let mut pmt_pid: Option<u16> = None;
    let mut last_video_cc: Option<u8> = None;
    let mut pending_jump = false;
    let mut framer = Framer::new();
    // One push of the whole capture: every packet is a slice of `data`.
    framer.push(data, |bytes| {
        let Some(p) = Packet::new(bytes) else { return };
        let i = bytes.as_ptr() as usize - data.as_ptr() as usize;
        s.packets += 1;
        let pid = p.pid();
        let payload = p.payload();
        if pid == PAT_PID && p.pusi() {
            s.pat_offsets.push(i);
            if let Some(pmt) = packet::psi_section(payload).and_then(packet::pat_pmt_pid) {
                pmt_pid = Some(pmt);
            }
        } else if Some(pid) == pmt_pid && p.pusi() {
            if let Some(sec) = packet::psi_section(payload) {
                s.audio_pids.clear();
                for (stream_type, epid) in packet::pmt_streams(sec) {
                    match stream_type {
                        packet::STREAM_TYPE_H264 => s.video_pid = Some(epid),
                        0x0f | 0x11 => s.audio_pids.push(epid),
                        _ => {}
                    }
                }
            }
        } else if Some(pid) == s.video_pid {
            if p.has_payload() {
                let cc = p.continuity_counter();
                if let Some(last) = last_video_cc {
                    if cc != (last + 1) & 0x0f && cc != last {
                        pending_jump = true;
                    }
                }
                last_video_cc = Some(cc);
            }
            if p.pusi() && payload.len() >= 9 && payload[..3] == [0, 0, 1] {
                let flags = payload[7] >> 6;
                let hdr_len = payload[8] as usize;
                let pts = if flags & 2 != 0 && payload.len() >= 14 {
                    Some(read_pts(&payload[9..14]))
                } else {
                    None
                };
                let es = payload.get(9 + hdr_len..).unwrap_or(&[]);
                let sps_or_idr = h264::nal_types(es).any(|t| matches!(t, 5 | 7));
                s.video.push(VideoPes {
                    offset: i,
                    pts,
                    rai: p.random_access(),
                    sps_or_idr,
                    cc_jump: pending_jump,
                });
                pending_jump = false;
            }
        }
    });
    s.sync_errors = framer.skipped as usize;
    s
}

fn read_pts(b: &[u8]) -> u64 {
    (u64::from(b[0] & 0x0e) << 29)
        | (u64::from(b[1]) << 22)
        | (u64::from(b[2] & 0xfe) << 14)
        | (u64::from(b[3]) << 7)
        | (u64::from(b[4]) >> 1)
}

/// Cut a capture before its last video PES: we stopped reading mid-frame,
/// and a truncated last frame would be a decode error of the test's making.
pub fn trim_capture(data: &[u8]) -> &[u8] {
    let scan = scan_ts(data);
    match scan.video.last() {
        Some(last) if scan.video.len() > 1 => &data[..last.offset],
        _ => &data[..data.len() - data.len() % TS_PACKET],
    }
}

#[cfg(test)]
mod self_tests {
    use super::*;

    #[test]
    fn pts_wraps() {
        assert_eq!(pts_diff(5, (1 << 33) - 5), 10);
        assert_eq!(pts_diff(100, 40), 60);
        assert_eq!(pts_diff(40, 100), -60);
        let b = [0x21, 0x00, 0x01, 0x00, 0x01]; // PTS 0 with marker bits
        assert_eq!(read_pts(&b), 0);
    }
}
