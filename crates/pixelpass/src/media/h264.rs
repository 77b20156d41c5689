//! H.264 NAL units in Annex-B byte streams: the one scanner for start codes
//! ([`nal_types`]) and what a run of NAL units is (a decoder can start on it?).

/// The NAL unit types in an Annex-B buffer (start codes of 3 or 4 bytes).
pub fn nal_types(annexb: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0usize;
    std::iter::from_fn(move || {
        while i + 3 < annexb.len() {
            if annexb[i] == 0 && annexb[i + 1] == 0 && annexb[i + 2] == 1 {
                let t = annexb[i + 3] & 0x1f;
                i += 3;
                return Some(t);
            }
            i += 1;
        }
        None
    })
}

/// An IDR picture (NAL type 5) starts a decoder; with SPS (7) and PPS (8)
/// in the same access unit it needs nothing that came before. All slices of
/// a picture are of one kind, so the first slice NAL (types 1–5) decides:
/// the scan stops there instead of walking the whole frame.
pub fn is_idr(annexb: &[u8]) -> bool {
    nal_types(annexb).find(|t| (1..=5).contains(t)) == Some(5)
}

/// Nothing but SPS (7), PPS (8), SEI (6) or AUD (9): no picture in it.
pub fn only_parameter_sets(annexb: &[u8]) -> bool {
    let mut any = false;
    for t in nal_types(annexb) {
        if !(6..=9).contains(&t) {
            return false;
        }
        any = true;
    }
    any
}

/// SPS, PPS and an IDR slice in one access unit: decodable on its own.
pub fn is_self_contained_idr(annexb: &[u8]) -> bool {
    let (mut sps, mut pps, mut idr) = (false, false, false);
    for t in nal_types(annexb) {
        match t {
            7 => sps = true,
            8 => pps = true,
            5 => idr = true,
            _ => {}
        }
    }
    sps && pps && idr
}

/// The NAL units of an Annex-B buffer, each without its start code (header byte first).
pub fn nal_units(annexb: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let mut starts = Vec::new();
    let mut i = 0usize;
    while i + 3 <= annexb.len() {
        if annexb[i] == 0 && annexb[i + 1] == 0 && annexb[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    (0..starts.len()).map(move |k| {
        let begin = starts[k];
        let mut end = starts.get(k + 1).map_or(annexb.len(), |next| next - 3);
        // A 4-byte start code's leading zero (and trailing zeros) are not the NAL's.
        while end > begin && annexb[end - 1] == 0 {
            end -= 1;
        }
        &annexb[begin..end]
    })
}

/// `profile-level-id` (profile_idc, constraint flags, level_idc) of an SPS NAL unit.
pub fn sps_profile_level_id(sps: &[u8]) -> Option<u32> {
    match sps {
        [h, p, c, l, ..] if h & 0x1f == 7 => Some(u32::from_be_bytes([0, *p, *c, *l])),
        _ => None,
    }
}

/// Exp-Golomb reader over a NAL's payload with emulation prevention removed.
pub(crate) struct Bits {
    bytes: Vec<u8>,
    pos: usize,
}

impl Bits {
    /// The first `max` payload bytes after the NAL header, unescaped (00 00 03 → 00 00).
    pub(crate) fn new(nal: &[u8], max: usize) -> Bits {
        let mut bytes = Vec::with_capacity(max);
        let mut zeros = 0;
        for &b in nal.iter().skip(1) {
            if bytes.len() >= max {
                break;
            }
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            bytes.push(b);
        }
        Bits { bytes, pos: 0 }
    }

    pub(crate) fn bit(&mut self) -> Option<u32> {
        let byte = *self.bytes.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    /// ue(v): unsigned Exp-Golomb.
    pub(crate) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let mut v = 0u32;
        for _ in 0..zeros {
            v = (v << 1) | self.bit()?;
        }
        Some((1u32 << zeros) - 1 + v)
    }
}

/// A coded slice's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceKind {
    I,
    P,
    B,
    /// SP and SI (Extended profile only).
    Switching,
}

/// The slice of a slice NAL unit (types 1 and 5): whether it begins a picture
/// (first_mb_in_slice = 0) and its kind.
pub fn slice_header(nal: &[u8]) -> Option<(bool, SliceKind)> {
    let t = nal.first()? & 0x1f;
    if t != 1 && t != 5 {
        return None;
    }
    let mut bits = Bits::new(nal, 8);
    let first_mb = bits.ue()?;
    let kind = match bits.ue()? % 5 {
        0 => SliceKind::P,
        1 => SliceKind::B,
        2 => SliceKind::I,
        _ => SliceKind::Switching,
    };
    Some((first_mb == 0, kind))
}

/// What a stretch of H.264 says about itself: its profile, whether it has
/// B-frames (which WebRTC players cannot show in order), and its pictures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    /// From the first SPS seen.
    pub profile_level_id: Option<u32>,
    pub pictures: u32,
    pub idr_pictures: u32,
    pub b_pictures: u32,
}

impl Survey {
    /// Take in an Annex-B buffer (any cut: NAL units are counted whole within it).
    pub fn push(&mut self, annexb: &[u8]) {
        for nal in nal_units(annexb) {
            let Some(&h) = nal.first() else { continue };
            match h & 0x1f {
                7 if self.profile_level_id.is_none() => {
                    self.profile_level_id = sps_profile_level_id(nal);
                }
                1 | 5 => {
                    if let Some((true, kind)) = slice_header(nal) {
                        self.pictures += 1;
                        if h & 0x1f == 5 {
                            self.idr_pictures += 1;
                        }
                        if kind == SliceKind::B {
                            self.b_pictures += 1;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The H.264 profile's name, as FFmpeg and the issue tracker say it.
    pub fn profile_name(&self) -> &'static str {
        match self.profile_level_id.map(|p| (p >> 16, (p >> 8) & 0xff)) {
            Some((66, c)) if c & 0x40 != 0 => "Constrained Baseline",
            Some((66, _)) => "Baseline",
            Some((77, _)) => "Main",
            Some((88, _)) => "Extended",
            Some((100, _)) => "High",
            Some((110, _)) => "High 10",
            Some((122, _)) => "High 4:2:2",
            Some((244, _)) => "High 4:4:4",
            Some(_) => "an unusual profile",
            None => "no SPS seen",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nal_types_after_3_and_4_byte_start_codes() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 0x88, 0x84,
        ];
        assert_eq!(nal_types(&au).collect::<Vec<_>>(), vec![7, 8, 5]);
        assert!(is_idr(&au));
        assert!(is_self_contained_idr(&au));
        assert!(!only_parameter_sets(&au));
        assert!(only_parameter_sets(&au[..14]), "SPS + PPS");
        assert!(!only_parameter_sets(&[]));
        let p = [0, 0, 0, 1, 0x41, 0x9a, 0, 0, 1];
        assert_eq!(nal_types(&p).collect::<Vec<_>>(), vec![1]);
        assert!(!is_idr(&p));
        // The first slice decides (a stray 5 after a P slice is no IDR).
        assert!(!is_idr(&[0, 0, 1, 0x41, 0x9a, 0, 0, 1, 0x65, 0x88]));
        assert!(
            !is_idr(&[0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xce]),
            "parameter sets alone"
        );
        let idr_only = [0, 0, 1, 0x65, 0x88];
        assert!(is_idr(&idr_only) && !is_self_contained_idr(&idr_only));
        assert_eq!(nal_types(&[]).count(), 0);
        assert_eq!(
            nal_types(&[0, 0, 1]).count(),
            0,
            "a start code with nothing after it"
        );
    }

    /// x264 `-bf 2` style access units: I, P, B (first_mb 0, slice_type 6 = B all slices).
    #[test]
    fn survey_finds_profile_idr_and_b_pictures() {
        // SPS High (100), constraint 0, level 3.1; PPS; IDR slice: first_mb=0 (1), type I=7 (0001000).
        let idr = [
            0,
            0,
            0,
            1,
            0x67,
            100,
            0,
            31,
            0xac,
            0,
            0,
            0,
            1,
            0x68,
            0xee,
            0,
            0,
            1,
            0x65,
            0b1000_1000,
            0x80,
        ];
        // P: first_mb=0 "1", slice_type 5 = "00110" → 1 00110 00 = 0x98
        let p = [0, 0, 1, 0x41, 0b1001_1000];
        // B: slice_type 6 = "00111" → 1 00111 00 = 0x9c
        let b = [0, 0, 1, 0x01, 0b1001_1100];
        // A second slice of the same B picture (first_mb = 5 = "00110") is no new picture.
        let b2 = [0, 0, 1, 0x01, 0b0011_0001, 0b1100_0000];
        let mut s = Survey::default();
        for au in [&idr[..], &p, &b, &b2] {
            s.push(au);
        }
        assert_eq!(s.profile_level_id, Some(0x64001f));
        assert_eq!(s.profile_name(), "High");
        assert_eq!((s.pictures, s.idr_pictures, s.b_pictures), (3, 1, 1));
        assert_eq!(slice_header(&b[3..]), Some((true, SliceKind::B)));
        assert_eq!(slice_header(&b2[3..]), Some((false, SliceKind::B)));
        assert_eq!(slice_header(&idr[18..]), Some((true, SliceKind::I)));
        assert_eq!(slice_header(&[0x67, 1]), None, "not a slice");
        let mut cb = Survey::default();
        cb.push(&[0, 0, 1, 0x67, 66, 0xc0, 30]);
        assert_eq!(cb.profile_name(), "Constrained Baseline");
        assert_eq!(Survey::default().profile_name(), "no SPS seen");
    }

    #[test]
    fn nal_units_drop_start_codes_and_escapes_do_not_confuse_the_reader() {
        let units: Vec<&[u8]> =
            nal_units(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65]).collect();
        assert_eq!(units, vec![&[0x67, 1][..], &[0x68, 2][..], &[0x65][..]]);
        // 00 00 03 is an escape: the reader sees 00 00 and what follows.
        let bits = Bits::new(&[0x41, 0, 0, 3, 1], 8);
        assert_eq!(bits.bytes, vec![0, 0, 1]);
        // 15 zeros, a one, then 15 bits "000…01": ue = 2^15 - 1 + 1.
        let mut bits = Bits::new(&[0x41, 0, 1, 0, 3, 1], 8);
        assert_eq!(bits.ue(), Some(1 << 15));
        assert_eq!(Bits::new(&[0x41, 0b0100_0000], 8).ue(), Some(1));
        assert_eq!(Bits::new(&[0x41, 0, 0, 0, 0], 8).ue(), None, "runs out");
    }
}
