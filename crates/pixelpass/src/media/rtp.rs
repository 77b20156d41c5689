//! RTP fixed header (RFC 3550 §5.1): parse what the fan-out needs, borrow the payload.

/// A borrowed, validated RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// The payload after CSRCs, extension and before padding.
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("RTP packet shorter than its header")]
    Short,
    #[error("not RTP version 2")]
    Version,
    #[error("RTP padding longer than the packet")]
    Padding,
}

impl<'a> RtpPacket<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Self, RtpError> {
        if b.len() < 12 {
            return Err(RtpError::Short);
        }
        if b[0] >> 6 != 2 {
            return Err(RtpError::Version);
        }
        let padding = b[0] & 0x20 != 0;
        let extension = b[0] & 0x10 != 0;
        let csrc_count = usize::from(b[0] & 0x0f);
        let mut start = 12 + 4 * csrc_count;
        if extension {
            let ext = b.get(start..start + 4).ok_or(RtpError::Short)?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            start += 4 + 4 * words;
        }
        let mut end = b.len();
        if padding {
            let pad = usize::from(*b.last().ok_or(RtpError::Short)?);
            end = end.checked_sub(pad).ok_or(RtpError::Padding)?;
        }
        if start > end {
            return Err(RtpError::Short);
        }
        Ok(Self {
            payload_type: b[1] & 0x7f,
            marker: b[1] & 0x80 != 0,
            sequence: u16::from_be_bytes([b[2], b[3]]),
            timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            payload: &b[start..end],
        })
    }

    /// The packet as bytes with a plain fixed header (no CSRCs, extension
    /// or padding): how a packet the hub parsed goes back into an RTP element.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(12 + self.payload.len());
        v.push(0x80);
        v.push(u8::from(self.marker) << 7 | (self.payload_type & 0x7f));
        v.extend_from_slice(&self.sequence.to_be_bytes());
        v.extend_from_slice(&self.timestamp.to_be_bytes());
        v.extend_from_slice(&self.ssrc.to_be_bytes());
        v.extend_from_slice(self.payload);
        v
    }
}

/// Does this RTP/H.264 payload carry only SPS, PPS, SEI or access unit
/// delimiters (alone or in a STAP-A)? Such a packet never ends an access
/// unit, whatever its marker bit says (a depacketizer that trusts the marker
/// would cut the parameter sets off their picture).
pub fn h264_no_picture(payload: &[u8]) -> bool {
    let not_picture = |nal: u8| matches!(nal & 0x1f, 6..=9);
    let Some(&first) = payload.first() else {
        return false;
    };
    if first & 0x1f != 24 {
        return not_picture(first);
    }
    let mut rest = &payload[1..];
    let mut any = false;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if len == 0 || rest.len() < 2 + len {
            return false;
        }
        if !not_picture(rest[2]) {
            return false;
        }
        any = true;
        rest = &rest[2 + len..];
    }
    any && rest.is_empty()
}

/// The profile-level-id of the SPS this RTP/H.264 payload carries, alone or
/// in a STAP-A (FFmpeg puts an AUD before it there).
pub fn h264_sps_profile_level_id(payload: &[u8]) -> Option<u32> {
    h264_sps(payload).and_then(crate::media::h264::sps_profile_level_id)
}

/// The SPS NAL unit this RTP/H.264 payload carries, alone or in a STAP-A.
pub fn h264_sps(payload: &[u8]) -> Option<&[u8]> {
    match payload.first()? & 0x1f {
        7 => Some(payload),
        24 => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let unit = rest.get(2..2 + n)?;
                if unit.first().is_some_and(|h| h & 0x1f == 7) {
                    return Some(unit);
                }
                rest = &rest[2 + n..];
            }
            None
        }
        _ => None,
    }
}

/// Is this RTP/H.264 payload (RFC 6184) the start of a keyframe: an SPS, or
/// an IDR slice, alone, in a STAP-A, or in the first fragment of an FU-A?
pub fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let is_key = |nal_type: u8| nal_type == 5 || nal_type == 7;
    match first & 0x1f {
        24 => {
            // STAP-A: [size(2) NAL]...
            let mut i = 1;
            while i + 2 < payload.len() {
                let size = usize::from(u16::from_be_bytes([payload[i], payload[i + 1]]));
                if let Some(&nal) = payload.get(i + 2) {
                    if is_key(nal & 0x1f) {
                        return true;
                    }
                }
                i += 2 + size;
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        t => is_key(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sps_profile_is_read_alone_or_behind_an_aud_in_a_stap_a() {
        let sps = [0x67, 0x64, 0x00, 0x1f, 0xac];
        assert_eq!(h264_sps_profile_level_id(&sps), Some(0x64001f));
        let mut stap = vec![0x78, 0, 2, 0x09, 0xf0, 0, 5];
        stap.extend_from_slice(&sps);
        stap.extend_from_slice(&[0, 2, 0x68, 0xee]);
        assert_eq!(h264_sps_profile_level_id(&stap), Some(0x64001f));
        assert_eq!(h264_sps_profile_level_id(&[0x68, 0xee]), None, "PPS");
        assert_eq!(h264_sps_profile_level_id(&[0x7c, 0x85, 1]), None, "FU-A");
        assert_eq!(
            h264_sps_profile_level_id(&[0x78, 0, 9, 0x67]),
            None,
            "cut short"
        );
        assert_eq!(h264_sps_profile_level_id(&[]), None);
    }

    #[test]
    fn parameter_sets_are_no_picture() {
        // STAP-A: SPS (4 bytes) + PPS (2 bytes).
        let stap = [24 | 0x60, 0, 4, 0x67, 1, 2, 3, 0, 2, 0x68, 9];
        assert!(h264_no_picture(&stap));
        assert!(h264_no_picture(&[0x09, 0x30]), "an AUD");
        let with_idr = [24 | 0x60, 0, 2, 0x67, 1, 0, 2, 0x65, 9];
        assert!(!h264_no_picture(&with_idr));
        assert!(
            !h264_no_picture(&[0x7c, 0x85, 1]),
            "an FU-A of an IDR slice"
        );
        assert!(!h264_no_picture(&[24, 0, 9, 0x67]), "a truncated STAP-A");
        assert!(!h264_no_picture(&[]));
    }

    fn packet(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x80,
            pt | 0x80,
            (seq >> 8) as u8,
            seq as u8,
            0,
            0,
            0x0b,
            0xb8,
            1,
            2,
            3,
            4,
        ];
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn parses_the_header() {
        let b = packet(102, 65535, &[0x65, 1, 2]);
        let p = RtpPacket::parse(&b).unwrap();
        assert_eq!(
            (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc),
            (102, true, 65535, 3000, 0x01020304)
        );
        assert_eq!(p.payload, &[0x65, 1, 2]);
    }

    #[test]
    fn writes_what_it_parses_without_extension_and_padding() {
        let mut b = packet(111, 1, &[]);
        b[0] |= 0x10 | 0x20;
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]);
        b.extend_from_slice(&[7, 7, 0, 2]);
        let p = RtpPacket::parse(&b).unwrap();
        let written = p.to_vec();
        assert_eq!(written.len(), 12 + 2);
        assert_eq!(&written[..12], &packet(111, 1, &[])[..]);
        assert_eq!(RtpPacket::parse(&written).unwrap(), p);
        let unmarked = RtpPacket { marker: false, ..p }.to_vec();
        assert_eq!(unmarked[1], 111);
    }

    #[test]
    fn skips_extension_and_padding() {
        let mut b = packet(111, 1, &[]);
        b[0] |= 0x10 | 0x20;
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // one-word extension
        b.extend_from_slice(&[7, 7, 0, 2]); // payload 7 7 + 2 bytes padding
        assert_eq!(RtpPacket::parse(&b).unwrap().payload, &[7, 7]);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(RtpPacket::parse(&[0x80; 5]), Err(RtpError::Short));
        assert_eq!(RtpPacket::parse(&[0x40; 12]), Err(RtpError::Version));
    }

    #[test]
    fn finds_h264_keyframe_starts() {
        assert!(h264_starts_keyframe(&[0x65])); // IDR
        assert!(h264_starts_keyframe(&[0x67])); // SPS
        assert!(!h264_starts_keyframe(&[0x41])); // non-IDR slice
        assert!(h264_starts_keyframe(&[0x78, 0, 2, 0x67, 0, 0, 2, 0x68, 0])); // STAP-A SPS+PPS
        assert!(h264_starts_keyframe(&[0x7c, 0x85])); // FU-A start of IDR
        assert!(!h264_starts_keyframe(&[0x7c, 0x05])); // FU-A continuation
        assert!(!h264_starts_keyframe(&[]));
    }
}
