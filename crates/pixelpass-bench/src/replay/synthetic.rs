//! The synthetic TS used when ffmpeg is missing: PAT/PMT and one H.264
//! PID, PCR on each frame's first packet, a keyframe every 2 s.

use pixelpass::media::ts::packet::{self, PACKET_LEN, PAT_PID, SYNC_BYTE};
use pixelpass_testkit::crc::crc32_mpeg2;

const SYN_PMT_PID: u16 = 0x1000;
const SYN_VIDEO_PID: u16 = 0x100;

fn psi_packet(pid: u16, mut section: Vec<u8>, cc: u8) -> Vec<u8> {
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    let mut p = vec![0xffu8; PACKET_LEN];
    p[..4].copy_from_slice(&[
        SYNC_BYTE,
        0x40 | (pid >> 8) as u8,
        pid as u8,
        0x10 | (cc & 0x0f),
    ]);
    p[4] = 0; // pointer field
    p[5..5 + section.len()].copy_from_slice(&section);
    p
}

fn pat(cc: u8) -> Vec<u8> {
    let len = 5 + 4 + 4; // header rest + one program + CRC
    let section = vec![
        0x00,
        0xb0,
        len as u8,
        0x00,
        0x01, // transport_stream_id
        0xc1, // version 0, current
        0x00,
        0x00,
        0x00,
        0x01, // program 1
        0xe0 | (SYN_PMT_PID >> 8) as u8,
        SYN_PMT_PID as u8,
    ];
    psi_packet(PAT_PID, section, cc)
}

fn pmt(cc: u8) -> Vec<u8> {
    let len = 9 + 5 + 4; // header rest + one stream + CRC
    let section = vec![
        0x02,
        0xb0,
        len as u8,
        0x00,
        0x01, // program 1
        0xc1,
        0x00,
        0x00,
        0xe0 | (SYN_VIDEO_PID >> 8) as u8,
        SYN_VIDEO_PID as u8, // PCR PID
        0xf0,
        0x00, // program_info_length 0
        packet::STREAM_TYPE_H264,
        0xe0 | (SYN_VIDEO_PID >> 8) as u8,
        SYN_VIDEO_PID as u8,
        0xf0,
        0x00,
    ];
    psi_packet(SYN_PMT_PID, section, cc)
}

fn pts_bytes(pts: u64, marker: u8) -> [u8; 5] {
    [
        (marker << 4) | (((pts >> 30) as u8 & 0x07) << 1) | 1,
        (pts >> 22) as u8,
        (((pts >> 15) as u8) << 1) | 1,
        (pts >> 7) as u8,
        ((pts as u8) << 1) | 1,
    ]
}

/// A synthetic TS: `fps` video frames per second of about `bitrate_kbps`
/// each (whole packets), PAT+PMT and a keyframe every 2 s.
pub fn synthetic_ts(bitrate_kbps: u32, seconds: u32, fps: u32) -> Vec<u8> {
    let fps = fps.max(1);
    let per_frame = ((f64::from(bitrate_kbps) * 1000.0 / 8.0 / f64::from(fps) / PACKET_LEN as f64)
        .round() as usize)
        .max(1);
    let frames = seconds * fps;
    let gop = 2 * fps;
    let mut out = Vec::with_capacity(frames as usize * (per_frame + 2) * PACKET_LEN);
    let (mut cc_pat, mut cc_pmt, mut cc_v) = (0u8, 0u8, 0u8);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut fill = |buf: &mut [u8]| {
        for b in buf {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *b = (rng as u8) | 1; // never 0: no accidental start codes
        }
    };
    for f in 0..frames {
        let key = f % gop == 0;
        if key {
            out.extend_from_slice(&pat(cc_pat));
            out.extend_from_slice(&pmt(cc_pmt));
            cc_pat = (cc_pat + 1) & 0x0f;
            cc_pmt = (cc_pmt + 1) & 0x0f;
        }
        let pcr_base = u64::from(f) * 90_000 / u64::from(fps);
        for k in 0..per_frame {
            let mut p = [0u8; PACKET_LEN];
            p[0] = SYNC_BYTE;
            p[1] = (if k == 0 { 0x40 } else { 0 }) | (SYN_VIDEO_PID >> 8) as u8;
            p[2] = SYN_VIDEO_PID as u8;
            let mut at = 4;
            if k == 0 {
                p[3] = 0x30 | cc_v; // adaptation + payload
                p[4] = 7;
                p[5] = 0x10 | if key { 0x40 } else { 0 }; // PCR (+ random access)
                p[6] = (pcr_base >> 25) as u8;
                p[7] = (pcr_base >> 17) as u8;
                p[8] = (pcr_base >> 9) as u8;
                p[9] = (pcr_base >> 1) as u8;
                p[10] = ((pcr_base as u8 & 1) << 7) | 0x7e;
                p[11] = 0;
                at = 12;
                let pts = pcr_base + 9000; // 100 ms ahead of the PCR
                let mut pes = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5];
                pes.extend_from_slice(&pts_bytes(pts, 0x2));
                // An access unit delimiter-free H.264 start: IDR (5) or non-IDR slice (1).
                pes.extend_from_slice(&[0, 0, 0, 1, if key { 0x65 } else { 0x41 }]);
                p[at..at + pes.len()].copy_from_slice(&pes);
                at += pes.len();
            } else {
                p[3] = 0x10 | cc_v;
            }
            fill(&mut p[at..]);
            cc_v = (cc_v + 1) & 0x0f;
            out.extend_from_slice(&p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixelpass::media::ts::{Chunker, Output};

    #[test]
    fn psi_sections_end_in_their_crc() {
        // CRC-32/MPEG-2 over a section and its CRC is zero.
        for p in [pat(0), pmt(0)] {
            let len = 3 + (usize::from(p[6] & 0x0f) << 8 | usize::from(p[7]));
            assert_eq!(crc32_mpeg2(&p[5..5 + len]), 0);
        }
    }

    #[test]
    fn synthetic_ts_is_what_the_chunker_expects() {
        let ts = synthetic_ts(4000, 4, 30);
        assert_eq!(ts.len() % PACKET_LEN, 0);
        let mut chunker = Chunker::new();
        let mut out = Vec::new();
        chunker.push(&ts, &mut out);
        chunker.flush(&mut out);
        assert_eq!(chunker.video_pid(), Some(SYN_VIDEO_PID));
        let chunks: Vec<bool> = out
            .iter()
            .filter_map(|o| {
                if let Output::Chunk { key, .. } = o {
                    Some(*key)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(chunks.len(), 120, "one chunk per frame");
        let keys: Vec<usize> = chunks
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, vec![0, 60], "a keyframe every 2 s");
        assert!(out.iter().any(|o| matches!(o, Output::Psi(_))));
        // The bitrate is what was asked for, within a packet per frame.
        let bps = ts.len() as f64 * 8.0 / 4.0;
        assert!(
            (bps - 4_000_000.0).abs() < 30.0 * 8.0 * PACKET_LEN as f64,
            "{bps}"
        );
    }
}
