//! One 188-byte MPEG-TS packet: just the header fields the hub needs.

pub const PACKET_LEN: usize = 188;
pub const SYNC_BYTE: u8 = 0x47;
pub const PAT_PID: u16 = 0x0000;

/// A borrowed view of one TS packet.
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    bytes: &'a [u8],
}

impl<'a> Packet<'a> {
    /// `None` when `bytes` is not one whole packet starting with the sync byte.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() == PACKET_LEN && bytes[0] == SYNC_BYTE).then_some(Self { bytes })
    }

    pub fn pid(&self) -> u16 {
        (u16::from(self.bytes[1] & 0x1f) << 8) | u16::from(self.bytes[2])
    }

    /// payload_unit_start_indicator: a PES packet or a PSI section starts here.
    pub fn pusi(&self) -> bool {
        self.bytes[1] & 0x40 != 0
    }

    /// The 4-bit continuity_counter (counts packets with a payload, per PID).
    pub fn continuity_counter(&self) -> u8 {
        self.bytes[3] & 0x0f
    }

    /// adaptation_field_control says a payload follows.
    pub fn has_payload(&self) -> bool {
        self.adaptation_control() & 0b01 != 0
    }

    fn adaptation_control(&self) -> u8 {
        (self.bytes[3] >> 4) & 0b11
    }

    fn adaptation_len(&self) -> usize {
        if self.adaptation_control() & 0b10 != 0 {
            usize::from(self.bytes[4]) + 1
        } else {
            0
        }
    }

    /// The adaptation field's random_access_indicator (a keyframe starts here).
    pub fn random_access(&self) -> bool {
        self.adaptation_control() & 0b10 != 0 && self.bytes[4] > 0 && self.bytes[5] & 0x40 != 0
    }

    /// The payload after the header and adaptation field (empty when there is none).
    pub fn payload(&self) -> &'a [u8] {
        if self.adaptation_control() & 0b01 == 0 {
            return &[];
        }
        let start = 4 + self.adaptation_len();
        self.bytes.get(start..).unwrap_or(&[])
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// The payload of a PSI section starting in this packet (after the pointer field).
pub fn psi_section(payload: &[u8]) -> Option<&[u8]> {
    let pointer = usize::from(*payload.first()?);
    payload.get(1 + pointer..)
}

/// PMT PID of the first program in a PAT section.
pub fn pat_pmt_pid(section: &[u8]) -> Option<u16> {
    if *section.first()? != 0x00 {
        return None;
    }
    let section_len = (usize::from(section.get(1)? & 0x0f) << 8) | usize::from(*section.get(2)?);
    let end = (3 + section_len).checked_sub(4)?; // minus CRC
    let mut i = 8;
    while i + 4 <= end.min(section.len()) {
        let program = u16::from_be_bytes([section[i], section[i + 1]]);
        let pid = (u16::from(section[i + 2] & 0x1f) << 8) | u16::from(section[i + 3]);
        if program != 0 {
            return Some(pid);
        }
        i += 4;
    }
    None
}

/// Elementary streams `(stream_type, pid)` listed in a PMT section.
pub fn pmt_streams(section: &[u8]) -> Vec<(u8, u16)> {
    let mut out = Vec::new();
    if section.first() != Some(&0x02) || section.len() < 12 {
        return out;
    }
    let section_len = (usize::from(section[1] & 0x0f) << 8) | usize::from(section[2]);
    let end = (3 + section_len).saturating_sub(4).min(section.len());
    let program_info_len = (usize::from(section[10] & 0x0f) << 8) | usize::from(section[11]);
    let mut i = 12 + program_info_len;
    while i + 5 <= end {
        let stream_type = section[i];
        let pid = (u16::from(section[i + 1] & 0x1f) << 8) | u16::from(section[i + 2]);
        let es_info_len = (usize::from(section[i + 3] & 0x0f) << 8) | usize::from(section[i + 4]);
        out.push((stream_type, pid));
        i += 5 + es_info_len;
    }
    out
}

/// The PTS (90 kHz, 33 bits) of a PES whose header starts `payload`.
pub fn pes_pts(payload: &[u8]) -> Option<u64> {
    // 00 00 01 stream_id len(2) flags(2) header_len(1) PTS(5)…
    if payload.len() < 14 || payload[..3] != [0, 0, 1] || payload[7] & 0x80 == 0 {
        return None;
    }
    let b = &payload[9..14];
    Some(
        (u64::from(b[0] >> 1) & 0x07) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1),
    )
}

/// Is PTS `a` later than `b` by at least `min` ticks (33-bit wrap-around)?
pub fn pts_later(a: u64, b: u64, min: u64) -> bool {
    let d = a.wrapping_sub(b) & ((1 << 33) - 1);
    d >= min && d < (1 << 32)
}

/// H.264 stream types in a PMT.
pub const STREAM_TYPE_H264: u8 = 0x1b;

/// Does the start of this H.264 PES payload hold an IDR slice or an SPS?
/// Used when a muxer does not set random_access_indicator.
pub fn pes_starts_h264_keyframe(payload: &[u8]) -> bool {
    // PES header: 00 00 01 stream_id len(2) flags(2) header_len(1) ...
    if payload.len() < 9 || payload[..3] != [0, 0, 1] {
        return false;
    }
    let es = match payload.get(9 + usize::from(payload[8])..) {
        Some(es) => es,
        None => return false,
    };
    // The first IDR slice or SPS says keyframe; a non-IDR slice first says not.
    crate::media::h264::nal_types(es)
        .find(|t| matches!(t, 1 | 5 | 7))
        .is_some_and(|t| t != 1)
}
