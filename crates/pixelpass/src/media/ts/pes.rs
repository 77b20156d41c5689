//! Elementary-stream units out of MPEG-TS: the H.264 and AAC PES packets of
//! the first program, each with its PTS and DTS (90 kHz).
//!
//! Sans-IO, on top of the one [`Framer`]. A PES whose `PES_packet_length` is
//! set is handed on the moment its last byte came; one of unbounded length (0:
//! ffmpeg writes every video PES so, mpegtsmux a keyframe over 64 KiB) when
//! the next starts on its PID, or when the caller says the access unit ended
//! ([`Demux::end_video`]: the hub cuts its chunks where the next video access
//! unit starts, so the end of a hub chunk is the end of its frame).

use super::framer::Framer;
use super::packet::{self, Packet, PAT_PID};

/// AAC in ADTS (ISO/IEC 13818-7) as a PMT names it.
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsKind {
    H264,
    Aac,
}

/// One PES packet's payload: for H.264 one access unit (Annex-B), for AAC
/// one or more ADTS frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsUnit {
    pub kind: EsKind,
    pub pts: u64,
    /// The DTS when the PES has one, else the PTS.
    pub dts: u64,
    /// The adaptation field said random access (a keyframe) starts here.
    pub random_access: bool,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Gather {
    pid: Option<u16>,
    /// The PES being gathered (header included).
    buf: Vec<u8>,
    total: Option<usize>,
    random_access: bool,
    /// The last continuity_counter seen on the PID.
    cc: Option<u8>,
}

/// Demultiplexes the first H.264 and the first AAC stream of the first program.
#[derive(Default)]
pub struct Demux {
    framer: Framer,
    pmt_pid: Option<u16>,
    video: Gather,
    audio: Gather,
    /// PES packets dropped: no PTS, or a header that does not parse.
    pub malformed: u64,
}

impl Demux {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes in any split; complete units go to `out`, in stream order.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<EsUnit>) {
        let mut framer = std::mem::take(&mut self.framer);
        framer.push(input, |pkt| self.packet(pkt, out));
        self.framer = framer;
    }

    /// The video access unit being gathered is whole: hand it on now. (One
    /// whose PES says its length waits for that many bytes: a chunk cut
    /// early, when the muxer paused mid-frame, does not truncate it.)
    pub fn end_video(&mut self, out: &mut Vec<EsUnit>) {
        if self.video.total.is_some() {
            return;
        }
        if let Some(u) = take(&mut self.video, EsKind::H264, &mut self.malformed) {
            out.push(u);
        }
    }

    /// The program has an AAC stream (its PMT said so).
    pub fn has_audio(&self) -> bool {
        self.audio.pid.is_some()
    }

    /// A new producer run: forget half-gathered units and the program.
    pub fn reset(&mut self) {
        *self = Self {
            malformed: self.malformed,
            ..Self::default()
        };
    }

    fn packet(&mut self, bytes: &[u8], out: &mut Vec<EsUnit>) {
        let Some(p) = Packet::new(bytes) else {
            return;
        };
        let pid = p.pid();
        if pid == PAT_PID {
            if p.pusi() {
                if let Some(pmt) = packet::psi_section(p.payload()).and_then(packet::pat_pmt_pid) {
                    self.pmt_pid = Some(pmt);
                }
            }
            return;
        }
        if Some(pid) == self.pmt_pid {
            if let Some(section) = p.pusi().then(|| packet::psi_section(p.payload())).flatten() {
                for (t, es_pid) in packet::pmt_streams(section) {
                    if t == packet::STREAM_TYPE_H264 && self.video.pid.is_none() {
                        self.video.pid = Some(es_pid);
                    } else if t == STREAM_TYPE_AAC_ADTS && self.audio.pid.is_none() {
                        self.audio.pid = Some(es_pid);
                    }
                }
            }
            return;
        }
        let (g, kind) = if Some(pid) == self.video.pid {
            (&mut self.video, EsKind::H264)
        } else if Some(pid) == self.audio.pid {
            (&mut self.audio, EsKind::Aac)
        } else {
            return;
        };
        // A gap in the continuity counter (packets lost, or a viewer that
        // skipped ahead): the PES being gathered is missing bytes; drop it.
        if p.has_payload() {
            let cc = p.continuity_counter();
            let gap =
                g.cc.is_some_and(|last| cc != (last + 1) & 0x0f && cc != last);
            g.cc = Some(cc);
            if gap && !g.buf.is_empty() {
                g.buf.clear();
                g.total = None;
                self.malformed += 1;
            }
        }
        if p.pusi() {
            if let Some(u) = take(g, kind, &mut self.malformed) {
                out.push(u);
            }
            let payload = p.payload();
            if payload.len() >= 6 && payload[..3] == [0, 0, 1] {
                let len = usize::from(u16::from_be_bytes([payload[4], payload[5]]));
                g.total = (len > 0).then_some(6 + len);
                g.random_access = p.random_access();
                g.buf.extend_from_slice(payload);
            }
        } else if !g.buf.is_empty() {
            g.buf.extend_from_slice(p.payload());
        }
        if g.total.is_some_and(|t| g.buf.len() >= t) {
            if let Some(u) = take(g, kind, &mut self.malformed) {
                out.push(u);
            }
        }
    }
}

/// The gathered PES as a unit (and the gatherer emptied).
fn take(g: &mut Gather, kind: EsKind, malformed: &mut u64) -> Option<EsUnit> {
    if g.buf.is_empty() {
        return None;
    }
    let mut pes = std::mem::take(&mut g.buf);
    if let Some(t) = g.total.take() {
        pes.truncate(t);
    }
    let unit = parse(&pes, kind, g.random_access);
    if unit.is_none() {
        *malformed += 1;
    }
    unit
}

fn parse(pes: &[u8], kind: EsKind, random_access: bool) -> Option<EsUnit> {
    let pts = packet::pes_pts(pes)?;
    let header_len = usize::from(*pes.get(8)?);
    let dts = if pes[7] & 0xc0 == 0xc0 {
        pes.get(14..19).map(timestamp).unwrap_or(pts)
    } else {
        pts
    };
    let data = pes.get(9 + header_len..)?.to_vec();
    Some(EsUnit {
        kind,
        pts,
        dts,
        random_access,
        data,
    })
}

/// A 33-bit PES timestamp from its 5 bytes.
fn timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1) & 0x07) << 30
        | u64::from(b[1]) << 22
        | u64::from(b[2] >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4] >> 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ts::packet::{PACKET_LEN, SYNC_BYTE};

    fn ts_packet(pid: u16, pusi: bool, payload: &[u8]) -> Vec<u8> {
        ts_packet_cc(pid, pusi, payload, next_cc(pid))
    }

    /// Continuity counters per PID, as a muxer keeps them (per test thread).
    fn next_cc(pid: u16) -> u8 {
        thread_local! {
            static CC: std::cell::RefCell<std::collections::HashMap<u16, u8>> = Default::default();
        }
        CC.with(|m| {
            let mut m = m.borrow_mut();
            let c = m.entry(pid).or_insert(15);
            *c = (*c + 1) & 0x0f;
            *c
        })
    }

    fn ts_packet_cc(pid: u16, pusi: bool, payload: &[u8], cc: u8) -> Vec<u8> {
        assert!(payload.len() <= PACKET_LEN - 4);
        let mut p = vec![
            SYNC_BYTE,
            (pid >> 8) as u8 | if pusi { 0x40 } else { 0 },
            pid as u8,
        ];
        let stuff = PACKET_LEN - 4 - payload.len();
        if stuff == 0 {
            p.push(0x10 | cc);
        } else {
            p.push(0x30 | cc);
            p.push((stuff - 1) as u8);
            if stuff > 1 {
                p.push(0);
                p.extend(std::iter::repeat_n(0xff, stuff - 2));
            }
        }
        p.extend_from_slice(payload);
        p
    }

    fn psi(table: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8];
        p.extend_from_slice(table);
        p.extend_from_slice(&[0, 0, 0, 0]); // CRC (not checked)
        p
    }

    fn program() -> Vec<u8> {
        // PAT: program 1 → PMT 0x1000. PMT: H.264 on 0x100, AAC on 0x101.
        let pat = psi(&[0x00, 0xb0, 13, 0, 1, 0xc1, 0, 0, 0, 1, 0xf0, 0x00]);
        let pmt = psi(&[
            0x02, 0xb0, 23, 0, 1, 0xc1, 0, 0, 0xe1, 0x00, 0xf0, 0, 0x1b, 0xe1, 0x00, 0xf0, 0, 0x0f,
            0xe1, 0x01, 0xf0, 0,
        ]);
        [ts_packet(0, true, &pat), ts_packet(0x1000, true, &pmt)].concat()
    }

    fn ts_bytes(t: u64, marker: u8) -> [u8; 5] {
        [
            marker << 4 | ((t >> 29) & 0x0e) as u8 | 1,
            (t >> 22) as u8,
            ((t >> 14) & 0xfe) as u8 | 1,
            (t >> 7) as u8,
            ((t << 1) & 0xfe) as u8 | 1,
        ]
    }

    fn pes(stream_id: u8, pts: u64, dts: Option<u64>, es: &[u8], bounded: bool) -> Vec<u8> {
        let mut h = vec![0, 0, 1, stream_id, 0, 0, 0x80];
        match dts {
            Some(d) => {
                h.extend_from_slice(&[0xc0, 10]);
                h.extend_from_slice(&ts_bytes(pts, 3));
                h.extend_from_slice(&ts_bytes(d, 1));
            }
            None => {
                h.extend_from_slice(&[0x80, 5]);
                h.extend_from_slice(&ts_bytes(pts, 2));
            }
        }
        h.extend_from_slice(es);
        if bounded {
            let len = (h.len() - 6) as u16;
            h[4..6].copy_from_slice(&len.to_be_bytes());
        }
        h
    }

    fn packets(pid: u16, pes: &[u8]) -> Vec<u8> {
        pes.chunks(184)
            .enumerate()
            .flat_map(|(i, c)| ts_packet(pid, i == 0, c))
            .collect()
    }

    #[test]
    fn video_and_audio_units_with_their_timestamps() {
        let frame: Vec<u8> = [&[0, 0, 0, 1, 0x65][..], &[7u8; 400]].concat();
        let stream = [
            program(),
            packets(0x100, &pes(0xe0, 9000, Some(6000), &frame, false)),
            packets(0x101, &pes(0xc0, 7000, None, &[0xff, 0xf1, 1, 2], true)),
            packets(
                0x100,
                &pes(0xe0, 12000, Some(9000), &[0, 0, 1, 0x41, 1], false),
            ),
        ]
        .concat();
        let mut d = Demux::new();
        let mut out = Vec::new();
        for split in stream.chunks(100) {
            d.push(split, &mut out);
        }
        // The bounded audio PES came whole at once; the first video when the second began.
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].kind, out[0].pts, out[0].dts),
            (EsKind::Aac, 7000, 7000)
        );
        assert_eq!(out[0].data, [0xff, 0xf1, 1, 2]);
        assert_eq!(
            (out[1].kind, out[1].pts, out[1].dts),
            (EsKind::H264, 9000, 6000)
        );
        assert_eq!(out[1].data, frame);
        d.end_video(&mut out);
        assert_eq!((out[2].pts, out[2].dts), (12000, 9000));
        assert_eq!(out[2].data, [0, 0, 1, 0x41, 1]);
        assert_eq!(d.malformed, 0);
    }

    #[test]
    fn a_pes_with_a_continuity_gap_is_dropped_not_handed_on_corrupt() {
        let frame: Vec<u8> = [&[0, 0, 0, 1, 0x65][..], &[7u8; 600]].concat();
        let pes_bytes = pes(0xe0, 9000, None, &frame, false);
        let mut pkts: Vec<Vec<u8>> = pes_bytes
            .chunks(184)
            .enumerate()
            .map(|(i, c)| ts_packet(0x100, i == 0, c))
            .collect();
        pkts.remove(1); // one packet lost mid-PES
        let next = packets(0x100, &pes(0xe0, 12000, None, &[0, 0, 1, 0x41, 1], false));
        let stream = [program(), pkts.concat(), next].concat();
        let mut d = Demux::new();
        let mut out = Vec::new();
        d.push(&stream, &mut out);
        d.end_video(&mut out);
        // Only the whole second frame comes out.
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].pts, 12000);
        assert_eq!(d.malformed, 1);
    }

    #[test]
    fn a_pes_without_pts_is_counted_not_handed_on() {
        let mut bad = pes(0xe0, 0, None, &[0, 0, 1, 0x65], false);
        bad[7] = 0; // no PTS flag
        let stream = [program(), packets(0x100, &bad)].concat();
        let mut d = Demux::new();
        let mut out = Vec::new();
        d.push(&stream, &mut out);
        d.end_video(&mut out);
        assert!(out.is_empty());
        assert_eq!(d.malformed, 1);
    }
}
