//! Elementary-stream units in, CMAF chunks, parts and segments out.
//!
//! Sans-IO: the caller feeds H.264 access units and AAC PES payloads with
//! the wall-clock time they arrived ([`Segmenter::push`]) and gets
//! [`Output`]s. Each video frame (with the audio that came with it) becomes
//! one CMAF chunk (`moof` + `mdat`) the moment the next frame shows how long
//! it lasts; chunks are grouped into parts of at most [`Config::part_target`],
//! parts into segments that start at a keyframe. Audio is muxed into the
//! video's fragments (one rendition): one request per part instead of two,
//! which halves what a cache and the origin see, and every HLS player takes
//! muxed fMP4.
//!
//! Timestamps: the 33-bit MPEG-TS clock is unwrapped; a jump (a producer
//! restart, a new run) keeps media time continuous and starts a new segment
//! at the next keyframe; new parameter sets give a new init segment.

use bytes::Bytes;

use super::mp4::{self, AudioConfig, Run, Sample, VideoConfig, AUDIO_TRACK, VIDEO_TRACK};
use crate::media::adts::{self, SAMPLES_PER_FRAME};
use crate::media::h264;
use crate::media::sps;
use crate::media::ts::pes::{Demux, EsKind, EsUnit};

const TICKS: u64 = mp4::VIDEO_TIMESCALE as u64;
const WRAP: u64 = 1 << 33;
/// A DTS step outside 0..this is a jump (a new run), not a frame interval.
const MAX_STEP: u64 = 5 * TICKS;
/// Video waits this long for the first audio frame before going video-only.
const AUDIO_WAIT: u64 = TICKS;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Parts last at most this (one frame longer only when a frame is).
    pub part_target_ms: u64,
    /// A keyframe is asked for once a segment is this long.
    pub segment_target_ms: u64,
    /// A segment is cut here even without a keyframe (the playlist's
    /// TARGETDURATION: no segment is longer).
    pub segment_max_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            part_target_ms: 200,
            segment_target_ms: 2000,
            segment_max_ms: 4000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A new init segment; segments from here on need it.
    Init(Bytes),
    /// One CMAF chunk (one video frame and the audio that came with it).
    Chunk {
        bytes: Bytes,
        /// It begins a part; `segment`: also a segment.
        part: bool,
        segment: bool,
        /// The chunk's video frame is a keyframe.
        key: bool,
        /// Its frame's media time (ms) and wall time (ms since the Unix
        /// epoch, as known when the chunk was written: see [`Output::Rebase`]).
        media_ms: f64,
        wall_ms: u64,
        /// Media time maps to wall time one way per timeline; a jump starts another.
        timeline: u32,
        /// The chunk's video duration, in ms.
        duration_ms: f64,
    },
    /// The part that the last chunk belongs to is complete; `segment`: so is its segment.
    PartEnd { segment: bool },
    /// The segment is long: a keyframe now would let the next one start.
    WantKeyframe,
    /// Frames of `timeline` came earlier than any before (the first came
    /// in a burst): wall time is media time plus `offset_ms` (at least 20 ms
    /// less than said before).
    Rebase { timeline: u32, offset_ms: f64 },
}

/// One frame waiting to learn its duration.
struct Frame {
    dts: u64,
    cts: i32,
    key: bool,
    avcc: Vec<u8>,
    media_ms: f64,
}

/// A hub's MPEG-TS chunks into a [`Segmenter`]: demultiplexed, and each
/// chunk's last video access unit ended with it (a hub chunk ends where the
/// next video access unit starts). The live service and the recorder both
/// feed their segmenter this way.
#[derive(Default)]
pub struct TsInput {
    demux: Demux,
    units: Vec<EsUnit>,
}

impl TsInput {
    /// One hub chunk, arrived at `wall_ms` (Unix ms): what it completes goes to `out`.
    pub fn push(&mut self, bytes: &[u8], wall_ms: u64, seg: &mut Segmenter, out: &mut Vec<Output>) {
        self.demux.push(bytes, &mut self.units);
        self.demux.end_video(&mut self.units);
        seg.expect_audio(self.demux.has_audio());
        for u in self.units.drain(..) {
            seg.push(u, wall_ms, out);
        }
    }
}

pub struct Segmenter {
    cfg: Config,
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    /// Init segment written for these configs.
    inited: bool,
    /// Raw DTS of the last frame and where it lies on the media timeline.
    last_raw: Option<u64>,
    last_time: u64,
    last_step: u64,
    frame: Option<Frame>,
    /// Frames held before the init segment (waiting for audio).
    held: Vec<Frame>,
    /// Audio frames not yet in a chunk: (time in the audio timescale, payload).
    audio_frames: Vec<(u64, Vec<u8>)>,
    audio_next: Option<u64>,
    expect_audio: bool,
    sequence: u32,
    /// Media time where the current part and segment began.
    part_start: Option<u64>,
    segment_start: u64,
    /// A jump or a new init: the next keyframe must start a segment.
    cut_at_key: bool,
    wanted_key: bool,
    /// Wall time minus media time (ms), the least seen (see [`Segmenter::wall_ms`]).
    wall_offset: Option<f64>,
    /// The offset last said in a chunk or a rebase.
    said_offset: f64,
    timeline: u32,
}

impl Segmenter {
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            video: None,
            audio: None,
            inited: false,
            last_raw: None,
            last_time: 0,
            last_step: TICKS / 30,
            frame: None,
            held: Vec::new(),
            audio_frames: Vec::new(),
            audio_next: None,
            expect_audio: false,
            sequence: 0,
            part_start: None,
            segment_start: 0,
            cut_at_key: false,
            wanted_key: false,
            wall_offset: None,
            said_offset: 0.0,
            timeline: 0,
        }
    }

    /// The stream has an audio track (its PMT says so): wait for its first frame.
    pub fn expect_audio(&mut self, yes: bool) {
        self.expect_audio = yes;
    }

    pub fn push(&mut self, unit: EsUnit, wall_ms: u64, out: &mut Vec<Output>) {
        match unit.kind {
            EsKind::H264 => self.video_unit(unit, wall_ms, out),
            EsKind::Aac => self.audio_unit(unit),
        }
    }

    fn video_unit(&mut self, unit: EsUnit, wall_ms: u64, out: &mut Vec<Output>) {
        let (mut sps_nal, mut pps_nal) = (None, None);
        let mut avcc = Vec::with_capacity(unit.data.len());
        let mut key = false;
        for nal in h264::nal_units(&unit.data) {
            match nal.first().map(|h| h & 0x1f) {
                Some(7) => sps_nal = Some(nal),
                Some(8) => pps_nal = Some(nal),
                Some(9) | None => {}
                Some(t) => {
                    key |= t == 5;
                    avcc.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    avcc.extend_from_slice(nal);
                }
            }
        }
        if avcc.is_empty() {
            return;
        }
        if let (Some(s), Some(p)) = (sps_nal, pps_nal) {
            let info = sps::sps_info(s);
            let cfg = VideoConfig {
                sps: s.to_vec(),
                pps: p.to_vec(),
                width: info.map_or(0, |i| i.width),
                height: info.map_or(0, |i| i.height),
            };
            if self.video.as_ref() != Some(&cfg) {
                if self.inited {
                    self.finish_frame(None, out);
                    self.inited = false;
                }
                self.video = Some(cfg);
            }
        }
        // Where this frame lies on the media timeline.
        let time = match self.last_raw {
            None => 0,
            Some(last) => {
                let step = unit.dts.wrapping_sub(last) % WRAP;
                if step == 0 || step > MAX_STEP {
                    self.cut_at_key = true;
                    self.wall_offset = None;
                    self.timeline += 1;
                    self.last_time + self.last_step
                } else {
                    self.last_step = step;
                    self.last_time + step
                }
            }
        };
        self.last_raw = Some(unit.dts);
        self.last_time = time;
        let cts = (unit.pts.wrapping_sub(unit.dts) % WRAP) as i64;
        let cts = if cts > (WRAP / 2) as i64 {
            cts - WRAP as i64
        } else {
            cts
        };
        self.observe_arrival(time, wall_ms, out);
        let frame = Frame {
            dts: time,
            cts: cts as i32,
            key,
            avcc,
            media_ms: time as f64 / 90.0,
        };
        if !self.inited {
            self.before_init(frame, out);
            return;
        }
        self.finish_frame(Some(frame), out);
    }

    /// Wall time is media time plus the least (arrival − media) seen, so
    /// frames that arrive in a burst or late get the time the steady ones
    /// say, not the time they happened to come. The least creeps up 1 ms per
    /// second, for a media clock slower than the wall clock; a jump starts it afresh.
    fn observe_arrival(&mut self, time: u64, arrival_ms: u64, out: &mut Vec<Output>) {
        let now = arrival_ms as f64 - time as f64 / 90.0;
        let off = match self.wall_offset {
            Some(o) => (o + self.last_step as f64 / 90_000.0).min(now),
            None => {
                self.said_offset = now;
                now
            }
        };
        self.wall_offset = Some(off);
        if off < self.said_offset - 20.0 {
            self.said_offset = off;
            out.push(Output::Rebase {
                timeline: self.timeline,
                offset_ms: off,
            });
        }
    }

    /// Before the init segment: from the first keyframe on, hold frames until
    /// audio (if any) said what it is, then write the init and the held frames.
    fn before_init(&mut self, frame: Frame, out: &mut Vec<Output>) {
        if self.held.is_empty() && !frame.key {
            return;
        }
        let Some(video) = self.video.clone() else {
            return;
        };
        let first = self.held.first().map_or(frame.dts, |f| f.dts);
        self.held.push(frame);
        let waited = self.held.last().map_or(0, |f| f.dts.saturating_sub(first));
        if self.expect_audio && self.audio.is_none() && waited < AUDIO_WAIT {
            return;
        }
        out.push(Output::Init(Bytes::from(mp4::init_segment(
            &video,
            self.audio.as_ref(),
        ))));
        self.inited = true;
        self.cut_at_key = true;
        // Audio from before the first held frame cannot be placed: drop it.
        if let Some(a) = &self.audio {
            let from = first * u64::from(a.sample_rate) / TICKS;
            self.audio_frames.retain(|(t, _)| *t >= from);
        }
        for f in std::mem::take(&mut self.held) {
            self.finish_frame(Some(f), out);
        }
    }

    /// `next` arrived (or the run ends): the waiting frame's duration is
    /// known, so it becomes a chunk; then decide where `next` goes.
    fn finish_frame(&mut self, next: Option<Frame>, out: &mut Vec<Output>) {
        let next_dts = next.as_ref().map(|n| n.dts);
        if let Some(f) = self.frame.take() {
            let dur = next_dts
                .map_or(self.last_step, |d| d.saturating_sub(f.dts))
                .max(1);
            self.chunk(f, dur, out);
        }
        let Some(n) = next else {
            if self.part_start.take().is_some() {
                out.push(Output::PartEnd { segment: true });
            }
            return;
        };
        self.frame = Some(n);
    }

    /// Write frame `f` (lasting `dur`) and the waiting audio as one chunk.
    fn chunk(&mut self, f: Frame, dur: u64, out: &mut Vec<Output>) {
        let seg_len = f.dts.saturating_sub(self.segment_start);
        let new_segment = self.part_start.is_none()
            || (f.key && (self.cut_at_key || seg_len * 2 >= self.cfg.segment_target_ms * 90))
            || seg_len >= self.cfg.segment_max_ms * 90;
        let new_part = new_segment
            || self
                .part_start
                .is_some_and(|p| f.dts + dur > p + self.cfg.part_target_ms * 90);
        if new_part && self.part_start.is_some() {
            out.push(Output::PartEnd {
                segment: new_segment,
            });
        }
        if new_segment {
            self.segment_start = f.dts;
            self.cut_at_key = false;
            self.wanted_key = false;
        }
        if new_part {
            self.part_start = Some(f.dts);
        }
        if !self.wanted_key && f.dts + dur >= self.segment_start + self.cfg.segment_target_ms * 90 {
            self.wanted_key = true;
            out.push(Output::WantKeyframe);
        }
        let video = [Sample {
            duration: dur as u32,
            size: f.avcc.len() as u32,
            key: f.key,
            cts_offset: f.cts,
        }];
        let mut runs = vec![Run {
            track: VIDEO_TRACK,
            base_time: f.dts,
            samples: &video,
            data: &f.avcc,
        }];
        let (audio_samples, audio_data, audio_base);
        if let Some(first) = self.audio_frames.first() {
            audio_base = first.0;
            audio_samples = self
                .audio_frames
                .iter()
                .map(|(_, d)| Sample {
                    duration: SAMPLES_PER_FRAME,
                    size: d.len() as u32,
                    key: true,
                    cts_offset: 0,
                })
                .collect::<Vec<_>>();
            audio_data = self
                .audio_frames
                .iter()
                .flat_map(|(_, d)| d.iter().copied())
                .collect::<Vec<_>>();
            if self.audio.is_some() {
                runs.push(Run {
                    track: AUDIO_TRACK,
                    base_time: audio_base,
                    samples: &audio_samples,
                    data: &audio_data,
                });
            }
        }
        self.sequence = self.sequence.wrapping_add(1);
        let bytes = Bytes::from(mp4::fragment(self.sequence, &runs));
        self.audio_frames.clear();
        out.push(Output::Chunk {
            bytes,
            part: new_part,
            segment: new_segment,
            key: f.key,
            media_ms: f.media_ms,
            wall_ms: (f.media_ms + self.wall_offset.unwrap_or(self.said_offset))
                .max(0.0)
                .round() as u64,
            timeline: self.timeline,
            duration_ms: dur as f64 / 90.0,
        });
    }

    fn audio_unit(&mut self, unit: EsUnit) {
        // Audio sits on the video's timeline: its offset from the last video DTS.
        let Some(last_raw) = self.last_raw else {
            return;
        };
        let d = unit.pts.wrapping_sub(last_raw) % WRAP;
        let d = if d > WRAP / 2 {
            d as i64 - WRAP as i64
        } else {
            d as i64
        };
        let Some(at) = (self.last_time as i64).checked_add(d).filter(|t| *t >= 0) else {
            return;
        };
        for (i, (cfg, payload)) in adts::frames(&unit.data).enumerate() {
            if self.audio.is_some_and(|a| a != cfg) {
                continue; // a change of audio format mid-stream is not followed
            }
            if self.audio.is_none() && self.inited {
                continue; // the init went out without audio
            }
            self.audio = Some(cfg);
            let rate = u64::from(cfg.sample_rate);
            let mut t = at as u64 * rate / TICKS + i as u64 * u64::from(SAMPLES_PER_FRAME);
            // Keep audio time gapless unless it really jumped.
            if let Some(next) = self.audio_next {
                if t.abs_diff(next) < u64::from(SAMPLES_PER_FRAME) {
                    t = next;
                } else if t < next {
                    continue; // overlaps what was written
                }
            }
            self.audio_next = Some(t + u64::from(SAMPLES_PER_FRAME));
            self.audio_frames.push((t, payload.to_vec()));
        }
    }

    /// The run ended: the last frame goes out (with a guessed duration) and
    /// its part and segment close.
    pub fn end_run(&mut self, out: &mut Vec<Output>) {
        if self.inited {
            self.finish_frame(None, out);
        }
        self.held.clear();
    }
}

#[cfg(test)]
#[path = "segmenter_tests.rs"]
mod tests;
