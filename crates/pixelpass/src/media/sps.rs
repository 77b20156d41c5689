//! What an H.264 sequence parameter set says about the pictures: their size
//! (after cropping) and, when the encoder wrote VUI timing (x264 does), the
//! frame rate. `serve` reads it from each layer's RTP to say what the layer
//! is, whatever FFmpeg made of the input (ITU-T H.264 § 7.3.2.1.1, E.1.1).

use super::h264::Bits;

/// Size and rate of the pictures an SPS describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    pub width: u32,
    pub height: u32,
    /// Frames per second from the VUI timing (rounded); `None` without it.
    pub fps: Option<u32>,
}

impl Bits {
    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |v, _| Some((v << 1) | self.bit()?))
    }

    /// se(v): signed Exp-Golomb.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Profiles whose SPS carries chroma format, bit depths and scaling lists.
const HIGH_PROFILES: [u32; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// Parse an SPS NAL unit (header byte first, emulation prevention still in).
pub fn sps_info(nal: &[u8]) -> Option<SpsInfo> {
    if nal.first()? & 0x1f != 7 {
        return None;
    }
    let mut b = Bits::new(nal, 512);
    let profile = b.bits(8)?;
    b.bits(16)?; // constraint flags, level
    b.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if HIGH_PROFILES.contains(&profile) {
        chroma_format = b.ue()?;
        if chroma_format == 3 && b.bit()? == 1 {
            chroma_format = 0; // separate colour planes: cropped like monochrome
        }
        b.ue()?; // bit_depth_luma_minus8
        b.ue()?; // bit_depth_chroma_minus8
        b.bit()?; // qpprime_y_zero_transform_bypass_flag
        if b.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if b.bit()? == 1 {
                    skip_scaling_list(&mut b, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    b.ue()?; // log2_max_frame_num_minus4
    match b.ue()? {
        0 => {
            b.ue()?;
        }
        1 => {
            b.bit()?;
            b.se()?;
            b.se()?;
            for _ in 0..b.ue()?.min(255) {
                b.se()?;
            }
        }
        _ => {}
    }
    b.ue()?; // max_num_ref_frames
    b.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = b.ue()?.checked_add(1)?;
    let height_units = b.ue()?.checked_add(1)?;
    let frame_mbs_only = b.bit()?;
    if frame_mbs_only == 0 {
        b.bit()?; // mb_adaptive_frame_field_flag
    }
    b.bit()?; // direct_8x8_inference_flag
    let (crop_x, crop_y) = match chroma_format {
        1 => (2, 2 * (2 - frame_mbs_only)),
        2 => (2, 2 - frame_mbs_only),
        _ => (1, 2 - frame_mbs_only),
    };
    let (mut cx, mut cy) = (0, 0);
    if b.bit()? == 1 {
        cx = b.ue()?.checked_add(b.ue()?)?;
        cy = b.ue()?.checked_add(b.ue()?)?;
    }
    // Untrusted numbers (a WHIP publisher's SPS): a crop too large for the
    // picture, or for u32, is a broken SPS, not an overflow.
    let width = (width_mbs.checked_mul(16)?).checked_sub(cx.checked_mul(crop_x)?)?;
    let height = (height_units.checked_mul(16 * (2 - frame_mbs_only))?)
        .checked_sub(cy.checked_mul(crop_y)?)?;
    let fps = if b.bit()? == 1 { vui_fps(&mut b) } else { None };
    Some(SpsInfo { width, height, fps })
}

fn skip_scaling_list(b: &mut Bits, size: u32) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + b.se()? + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// The VUI up to its timing info: time_scale / (2 × num_units_in_tick).
fn vui_fps(b: &mut Bits) -> Option<u32> {
    if b.bit()? == 1 && b.bits(8)? == 255 {
        b.bits(32)?; // sar_width, sar_height
    }
    if b.bit()? == 1 {
        b.bit()?; // overscan_appropriate_flag
    }
    if b.bit()? == 1 {
        b.bits(4)?; // video_format, video_full_range_flag
        if b.bit()? == 1 {
            b.bits(24)?; // colour primaries, transfer, matrix
        }
    }
    if b.bit()? == 1 {
        b.ue()?;
        b.ue()?;
    }
    if b.bit()? == 0 {
        return None;
    }
    let units = u64::from(b.bits(32)?);
    let scale = u64::from(b.bits(32)?);
    if units == 0 {
        return None;
    }
    u32::try_from((scale + units) / (2 * units))
        .ok()
        .filter(|f| *f > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPS that FFmpeg's libx264 wrote (`-f lavfi -i testsrc2=size=WxH:rate=R`).
    const BASELINE_320X180_15: [u8; 25] = [
        0x67, 0x42, 0xc0, 0x0c, 0xd9, 0x01, 0x41, 0x9f, 0x9f, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
        0x10, 0x00, 0x00, 0x03, 0x01, 0xe0, 0xf1, 0x42, 0xa4, 0x80,
    ];
    const HIGH_1280X720_30: [u8; 26] = [
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];
    const MAIN_642X362_25: [u8; 26] = [
        0x67, 0x4d, 0x40, 0x1e, 0xec, 0xa0, 0x52, 0x17, 0xf1, 0x12, 0x60, 0x22, 0x00, 0x00, 0x03,
        0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x64, 0x1e, 0x2c, 0x5b, 0x2c,
    ];

    #[test]
    fn x264_parameter_sets_give_size_after_cropping_and_rate() {
        let info = |w, h, f| {
            Some(SpsInfo {
                width: w,
                height: h,
                fps: Some(f),
            })
        };
        assert_eq!(sps_info(&BASELINE_320X180_15), info(320, 180, 15));
        assert_eq!(sps_info(&HIGH_1280X720_30), info(1280, 720, 30));
        assert_eq!(sps_info(&MAIN_642X362_25), info(642, 362, 25));
    }

    /// Found by the `h264` fuzz target: a frame crop of 2 × 0x8000_0000 wrapped.
    #[test]
    fn a_crop_beyond_u32_is_none_not_an_overflow() {
        const HUGE_CROP: [u8; 23] = [
            0x67, 0x0a, 0x08, 0x40, 0x4d, 0xf6, 0xf2, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20,
            0x00, 0x00, 0x03, 0x02, 0x81, 0xe2, 0x44, 0xa2, 0x40,
        ];
        assert_eq!(sps_info(&HUGE_CROP), None);
    }

    #[test]
    fn not_an_sps_or_cut_short_is_none() {
        assert_eq!(sps_info(&[0x68, 0xce, 0x3c, 0x80]), None);
        assert_eq!(sps_info(&HIGH_1280X720_30[..6]), None);
        assert_eq!(sps_info(&[]), None);
        // Cut inside the VUI: the size is known, the rate is not.
        let cut = sps_info(&BASELINE_320X180_15[..12]);
        assert_eq!(
            cut.map(|i| (i.width, i.height, i.fps)),
            Some((320, 180, None))
        );
    }
}
