//! An MPEG-TS scanner: finds the video PES (frames, keyframes, PTS,
//! continuity jumps) and PATs in what a viewer received.

use super::PTS_HZ;

pub const TS_PACKET: usize = 188;

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
    let mut i = 0;
    while i + TS_PACKET <= data.len() {
        let p = &data[i..i + TS_PACKET];
        if p[0] != 0x47 {
            s.sync_errors += 1;
            i += 1;
            continue;
        }
        s.packets += 1;
        let pusi = p[1] & 0x40 != 0;
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0f;
        let mut payload_at = 4;
        let mut rai = false;
        if afc & 2 != 0 {
            let len = p[4] as usize;
            if len > 0 {
                rai = p[5] & 0x40 != 0;
            }
            payload_at = 5 + len;
        }
        let payload: &[u8] = if afc & 1 != 0 && payload_at < TS_PACKET {
            &p[payload_at..]
        } else {
            &[]
        };

        if pid == 0 && pusi {
            s.pat_offsets.push(i);
            if let Some(sec) = psi_section(payload) {
                // PAT: program_number(2) + PID(2) entries after an 8-byte header.
                let mut j = 8;
                while j + 4 <= sec.len() {
                    let program = u16::from_be_bytes([sec[j], sec[j + 1]]);
                    let ppid = u16::from_be_bytes([sec[j + 2], sec[j + 3]]) & 0x1fff;
                    if program != 0 {
                        pmt_pid = Some(ppid);
                        break;
                    }
                    j += 4;
                }
            }
        } else if Some(pid) == pmt_pid && pusi {
            if let Some(sec) = psi_section(payload) {
                if sec.len() >= 12 && sec[0] == 0x02 {
                    let info_len = (usize::from(sec[10] & 0x0f) << 8) | usize::from(sec[11]);
                    let mut j = 12 + info_len;
                    s.audio_pids.clear();
                    while j + 5 <= sec.len() {
                        let st = sec[j];
                        let epid = u16::from_be_bytes([sec[j + 1], sec[j + 2]]) & 0x1fff;
                        let es_len =
                            (usize::from(sec[j + 3] & 0x0f) << 8) | usize::from(sec[j + 4]);
                        match st {
                            0x1b => s.video_pid = Some(epid),
                            0x0f | 0x11 => s.audio_pids.push(epid),
                            _ => {}
                        }
                        j += 5 + es_len;
                    }
                }
            }
        } else if Some(pid) == s.video_pid {
            if afc & 1 != 0 {
                if let Some(last) = last_video_cc {
                    if cc != (last + 1) & 0x0f && cc != last {
                        pending_jump = true;
                    }
                }
                last_video_cc = Some(cc);
            }
            if pusi && payload.len() >= 9 && payload[..3] == [0, 0, 1] {
                let flags = payload[7] >> 6;
                let hdr_len = payload[8] as usize;
                let pts = if flags & 2 != 0 && payload.len() >= 14 {
                    Some(read_pts(&payload[9..14]))
                } else {
                    None
                };
                let es = payload.get(9 + hdr_len..).unwrap_or(&[]);
                let sps_or_idr = es
                    .windows(4)
                    .any(|w| w[..3] == [0, 0, 1] && matches!(w[3] & 0x1f, 5 | 7));
                s.video.push(VideoPes {
                    offset: i,
                    pts,
                    rai,
                    sps_or_idr,
                    cc_jump: pending_jump,
                });
                pending_jump = false;
            }
        }
        i += TS_PACKET;
    }
    s
}

/// The section after the pointer field, cut to section_length (CRC included).
fn psi_section(payload: &[u8]) -> Option<&[u8]> {
    let ptr = *payload.first()? as usize;
    let sec = payload.get(1 + ptr..)?;
    if sec.len() < 3 {
        return None;
    }
    let len = (usize::from(sec[1] & 0x0f) << 8) | usize::from(sec[2]);
    let end = (3 + len).saturating_sub(4); // drop the CRC
    sec.get(..end)
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
