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
}
