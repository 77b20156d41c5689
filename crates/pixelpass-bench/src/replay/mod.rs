//! The benchmark's producer: replays an MPEG-TS sample into the hub in real
//! time, looping, the way the GStreamer ingest feeds it (one muxer burst per
//! video frame, then a flush).
//!
//! The sample is a real H.264 + AAC stream made by ffmpeg when it is
//! installed (x264 CBR at the requested bitrate, keyframe every 2 s), else a
//! synthetic TS (PAT/PMT + one video PID, random_access_indicator and PCR on
//! each frame's first packet, a keyframe every 2 s) at the requested bitrate.
//! Bursts are timed from the PCRs (interpolated by byte position), so the
//! replay runs at the sample's own pace.
//!
//! - `sample`: the sample (ffmpeg's or the synthetic one) cut into
//!   PCR-timed bursts;
//! - `synthetic`: the synthetic TS made when ffmpeg is missing;
//! - `producer`: the producer that replays the bursts into the hub.

mod producer;
mod sample;
mod synthetic;

pub(crate) use producer::{paced_laps, ReplayRun};
pub use producer::{ReplayProducer, ReplayStats};
pub use sample::{ffmpeg_ts_with, Sample, TsSpec};
pub use synthetic::synthetic_ts;
