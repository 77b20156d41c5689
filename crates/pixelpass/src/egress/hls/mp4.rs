//! The few ISO-BMFF boxes of CMAF: an init segment (`ftyp` + `moov` with one
//! H.264 and, when there is audio, one AAC track) and fragments (`moof` +
//! `mdat`) holding both tracks' samples.
//!
//! Our own writer, not `mp4-atom`: the set is small and fixed (about twenty
//! boxes, written once each), `mp4-atom` made sixteen breaking releases in a
//! year and would add five crates to a build that must work offline from the
//! lock file; what each field means is ISO/IEC 14496-12 and 14496-15 § 5.

/// A box under construction; its size is patched in when it is closed.
pub struct Writer {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl Writer {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(4096),
            open: Vec::new(),
        }
    }
    fn begin(&mut self, kind: &[u8; 4]) {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        self.buf.extend_from_slice(kind);
    }
    fn full(&mut self, kind: &[u8; 4], version: u8, flags: u32) {
        self.begin(kind);
        self.u32(u32::from(version) << 24 | flags);
    }
    fn end(&mut self) {
        if let Some(start) = self.open.pop() {
            let size = (self.buf.len() - start) as u32;
            self.buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
        }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
    fn matrix(&mut self) {
        for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.u32(v);
        }
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;
/// Video media time: the MPEG-TS clock, so timestamps carry over unscaled.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// What the init segment says about the video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    /// NAL units without start codes, emulation prevention kept.
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

impl VideoConfig {
    /// `avc1.PPCCLL` for the playlist's CODECS.
    pub fn codec(&self) -> String {
        match self.sps.get(1..4) {
            Some(p) => format!("avc1.{:02x}{:02x}{:02x}", p[0], p[1], p[2]),
            None => "avc1.42e01f".to_owned(),
        }
    }
}

/// What the init segment says about the audio (from the ADTS header).
pub use crate::media::adts::AacConfig as AudioConfig;

/// `ftyp` + `moov`: what a player needs before the first fragment.
pub fn init_segment(video: &VideoConfig, audio: Option<&AudioConfig>) -> Vec<u8> {
    let mut w = Writer::new();
    w.begin(b"ftyp");
    w.bytes(b"iso6");
    w.u32(0);
    for brand in [b"iso6", b"cmfc", b"mp41"] {
        w.bytes(brand);
    }
    w.end();
    w.begin(b"moov");
    w.full(b"mvhd", 0, 0);
    w.u32(0);
    w.u32(0);
    w.u32(1000);
    w.u32(0);
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(10);
    w.matrix();
    w.zeros(24);
    w.u32(if audio.is_some() { 3 } else { 2 }); // next_track_ID
    w.end();
    trak(&mut w, VIDEO_TRACK, VIDEO_TIMESCALE, Some(video), None);
    if let Some(a) = audio {
        trak(&mut w, AUDIO_TRACK, a.sample_rate, None, Some(a));
    }
    w.begin(b"mvex");
    for id in [VIDEO_TRACK].into_iter().chain(audio.map(|_| AUDIO_TRACK)) {
        w.full(b"trex", 0, 0);
        w.u32(id);
        w.u32(1);
        w.zeros(12);
        w.end();
    }
    w.end();
    w.end();
    w.finish()
}

fn trak(w: &mut Writer, id: u32, timescale: u32, v: Option<&VideoConfig>, a: Option<&AudioConfig>) {
    w.begin(b"trak");
    w.full(b"tkhd", 0, 3); // enabled, in movie
    w.zeros(8);
    w.u32(id);
    w.zeros(4 + 4 + 8);
    w.u16(0); // layer
    w.u16(0); // alternate_group
    w.u16(if a.is_some() { 0x0100 } else { 0 });
    w.u16(0);
    w.matrix();
    w.u32(v.map_or(0, |v| v.width << 16));
    w.u32(v.map_or(0, |v| v.height << 16));
    w.end();
    w.begin(b"mdia");
    w.full(b"mdhd", 0, 0);
    w.zeros(8);
    w.u32(timescale);
    w.u32(0);
    w.u16(0x55c4); // "und"
    w.u16(0);
    w.end();
    w.full(b"hdlr", 0, 0);
    w.u32(0);
    w.bytes(if v.is_some() { b"vide" } else { b"soun" });
    w.zeros(12);
    w.bytes(if v.is_some() { b"Video\0" } else { b"Audio\0" });
    w.end();
    w.begin(b"minf");
    if v.is_some() {
        w.full(b"vmhd", 0, 1);
        w.zeros(8);
    } else {
        w.full(b"smhd", 0, 0);
        w.zeros(4);
    }
    w.end();
    w.begin(b"dinf");
    w.full(b"dref", 0, 0);
    w.u32(1);
    w.full(b"url ", 0, 1); // media in this file
    w.end();
    w.end();
    w.end();
    w.begin(b"stbl");
    w.full(b"stsd", 0, 0);
    w.u32(1);
    if let Some(v) = v {
        avc1(w, v);
    }
    if let Some(a) = a {
        mp4a(w, a);
    }
    w.end();
    for kind in [b"stts", b"stsc", b"stco"] {
        w.full(kind, 0, 0);
        w.u32(0);
        w.end();
    }
    w.full(b"stsz", 0, 0);
    w.u32(0);
    w.u32(0);
    w.end();
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak
}

fn avc1(w: &mut Writer, v: &VideoConfig) {
    w.begin(b"avc1");
    w.zeros(6);
    w.u16(1); // data_reference_index
    w.zeros(16);
    w.u16(v.width as u16);
    w.u16(v.height as u16);
    w.u32(0x0048_0000);
    w.u32(0x0048_0000);
    w.u32(0);
    w.u16(1); // frame_count
    w.zeros(32); // compressorname
    w.u16(0x0018);
    w.u16(0xffff);
    w.begin(b"avcC");
    w.u8(1);
    w.bytes(v.sps.get(1..4).unwrap_or(&[0x42, 0xe0, 0x1f]));
    w.u8(0xff); // 4-byte NAL lengths
    w.u8(0xe1); // one SPS
    w.u16(v.sps.len() as u16);
    w.bytes(&v.sps);
    w.u8(1);
    w.u16(v.pps.len() as u16);
    w.bytes(&v.pps);
    w.end();
    w.end();
}

fn mp4a(w: &mut Writer, a: &AudioConfig) {
    w.begin(b"mp4a");
    w.zeros(6);
    w.u16(1);
    w.zeros(8);
    w.u16(u16::from(a.channels));
    w.u16(16);
    w.zeros(4);
    w.u32(a.sample_rate << 16);
    w.full(b"esds", 0, 0);
    let asc = a.audio_specific_config();
    // ES_Descriptor ⊃ DecoderConfigDescriptor ⊃ DecoderSpecificInfo, SLConfig.
    w.bytes(&[0x03, 25, 0, AUDIO_TRACK as u8, 0]);
    w.bytes(&[0x04, 17, 0x40, 0x15, 0, 0, 0]);
    w.u32(0);
    w.u32(0);
    w.bytes(&[0x05, 2, asc[0], asc[1]]);
    w.bytes(&[0x06, 1, 0x02]);
    w.end();
    w.end();
}

/// One sample of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub duration: u32,
    pub size: u32,
    pub key: bool,
    /// PTS − DTS, in the track's timescale.
    pub cts_offset: i32,
}

/// One track's run in a fragment.
pub struct Run<'a> {
    pub track: u32,
    /// Decode time of the first sample, in the track's timescale.
    pub base_time: u64,
    pub samples: &'a [Sample],
    /// The samples' bytes, back to back.
    pub data: &'a [u8],
}

/// `moof` + `mdat` for the runs (each run's data follows the last in `mdat`).
pub fn fragment(sequence: u32, runs: &[Run<'_>]) -> Vec<u8> {
    let runs: Vec<&Run<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let mut w = Writer::new();
    w.begin(b"moof");
    w.full(b"mfhd", 0, 0);
    w.u32(sequence);
    w.end();
    let mut offset_at = Vec::new();
    for r in &runs {
        w.begin(b"traf");
        w.full(b"tfhd", 0, 0x02_0000); // default-base-is-moof
        w.u32(r.track);
        w.end();
        w.full(b"tfdt", 1, 0);
        w.u64(r.base_time);
        w.end();
        // data offset, duration, size, flags, composition offset (signed: v1).
        w.full(b"trun", 1, 0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800);
        w.u32(r.samples.len() as u32);
        offset_at.push(w.buf.len());
        w.u32(0);
        for s in r.samples {
            w.u32(s.duration);
            w.u32(s.size);
            w.u32(if s.key { 0x0200_0000 } else { 0x0101_0000 });
            w.u32(s.cts_offset as u32);
        }
        w.end();
        w.end();
    }
    w.end();
    let moof_len = w.buf.len();
    let mut data_at = moof_len + 8;
    for (r, at) in runs.iter().zip(offset_at) {
        w.buf[at..at + 4].copy_from_slice(&(data_at as u32).to_be_bytes());
        data_at += r.data.len();
    }
    w.begin(b"mdat");
    for r in &runs {
        w.bytes(r.data);
    }
    w.end();
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (kind, offset, size) of the top-level boxes.
    fn boxes(b: &[u8]) -> Vec<(String, usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 8 <= b.len() {
            let size = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
            out.push((
                String::from_utf8_lossy(&b[i + 4..i + 8]).into_owned(),
                i,
                size,
            ));
            assert!(size >= 8, "box at {i} has size {size}");
            i += size;
        }
        assert_eq!(i, b.len(), "boxes fill the buffer exactly");
        out
    }

    #[test]
    fn a_fragment_points_each_run_at_its_bytes_in_mdat() {
        let v = [Sample {
            duration: 3000,
            size: 3,
            key: true,
            cts_offset: 0,
        }];
        let a = [Sample {
            duration: 1024,
            size: 2,
            key: true,
            cts_offset: 0,
        }; 2];
        let f = fragment(
            7,
            &[
                Run {
                    track: VIDEO_TRACK,
                    base_time: 90_000,
                    samples: &v,
                    data: b"VVV",
                },
                Run {
                    track: AUDIO_TRACK,
                    base_time: 48_000,
                    samples: &a,
                    data: b"AAaa",
                },
            ],
        );
        let top = boxes(&f);
        assert_eq!(
            top.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["moof", "mdat"]
        );
        let mdat = top[1].1 + 8;
        assert_eq!(&f[mdat..], b"VVVAAaa");
        // Each trun's data_offset (from the moof's start) finds its run.
        let offsets: Vec<usize> = f
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == b"trun")
            .map(|(i, _)| u32::from_be_bytes(f[i + 12..i + 16].try_into().unwrap()) as usize)
            .collect();
        assert_eq!(offsets, [mdat, mdat + 3]);
    }

    #[test]
    fn the_init_segment_is_ftyp_then_moov_with_both_tracks() {
        let v = VideoConfig {
            sps: vec![0x67, 0x64, 0x00, 0x1f, 0xac],
            pps: vec![0x68, 0xee],
            width: 1280,
            height: 720,
        };
        let a = AudioConfig {
            object_type: 2,
            freq_index: 3,
            sample_rate: 48_000,
            channels: 2,
        };
        let init = init_segment(&v, Some(&a));
        let top = boxes(&init);
        assert_eq!(
            top.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["ftyp", "moov"]
        );
        let count = |kind: &[u8]| init.windows(4).filter(|w| *w == kind).count();
        assert_eq!(
            (
                count(b"trak"),
                count(b"trex"),
                count(b"avcC"),
                count(b"esds")
            ),
            (2, 2, 1, 1)
        );
        assert_eq!(v.codec(), "avc1.64001f");
    }
}
