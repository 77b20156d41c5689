//! AAC in ADTS (ISO/IEC 13818-7 § 6.2): the frames of an MPEG-TS audio PES,
//! each as its raw payload and what its header says about the stream.

/// What an ADTS header says about the stream (an MP4 `esds` needs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// MPEG-4 audio object type (2: AAC-LC).
    pub object_type: u8,
    pub freq_index: u8,
    pub sample_rate: u32,
    pub channels: u8,
}

/// Samples per channel in one AAC frame.
pub const SAMPLES_PER_FRAME: u32 = 1024;

const RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

impl AacConfig {
    /// `mp4a.40.N` for a playlist's CODECS.
    pub fn codec(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// The two-byte AudioSpecificConfig (ISO/IEC 14496-3 § 1.6.2.1).
    pub fn audio_specific_config(&self) -> [u8; 2] {
        let v: u16 = u16::from(self.object_type) << 11
            | u16::from(self.freq_index) << 7
            | u16::from(self.channels & 0x0f) << 3;
        v.to_be_bytes()
    }
}

/// The ADTS frames in `data`: (config, raw AAC payload). Stops at the first
/// byte run that is not a whole frame (a truncated or foreign tail).
pub fn frames(mut data: &[u8]) -> impl Iterator<Item = (AacConfig, &[u8])> + '_ {
    std::iter::from_fn(move || {
        let h = data.get(..7)?;
        if h[0] != 0xff || h[1] & 0xf6 != 0xf0 {
            return None;
        }
        let protection_absent = h[1] & 1 == 1;
        let freq_index = (h[2] >> 2) & 0x0f;
        let sample_rate = *RATES.get(usize::from(freq_index))?;
        let cfg = AacConfig {
            object_type: (h[2] >> 6) + 1,
            freq_index,
            sample_rate,
            channels: ((h[2] & 1) << 2) | (h[3] >> 6),
        };
        let len =
            (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        let header = if protection_absent { 7 } else { 9 };
        if len < header || len > data.len() {
            return None;
        }
        let payload = &data[header..len];
        data = &data[len..];
        Some((cfg, payload))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ADTS frame: AAC-LC, 48 kHz, stereo, no CRC.
    pub fn adts(payload: &[u8]) -> Vec<u8> {
        let len = payload.len() + 7;
        let mut f = vec![
            0xff,
            0xf1,
            (1 << 6) | (3 << 2),
            (2 << 6) | ((len >> 11) as u8 & 3),
            (len >> 3) as u8,
            ((len as u8 & 7) << 5) | 0x1f,
            0xfc,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_and_their_config() {
        let data = [adts(b"one"), adts(b"three"), vec![0xff]].concat();
        let got: Vec<_> = frames(&data).collect();
        assert_eq!(got.len(), 2);
        let cfg = AacConfig {
            object_type: 2,
            freq_index: 3,
            sample_rate: 48_000,
            channels: 2,
        };
        assert_eq!(got[0], (cfg, &b"one"[..]));
        assert_eq!(got[1].1, b"three");
        assert_eq!(cfg.audio_specific_config(), [0x11, 0x90]);
        assert_eq!(cfg.codec(), "mp4a.40.2");
    }
}
