//! The in-process GStreamer producer of `pixelpass host`.
//!
//! - [`error`]: [`PipelineError`] and which Debian package has a missing element;
//! - [`encoder`]: H.264 encoder choice (VA-API → NVENC → x264 → openh264) and
//!   tuning, the AAC encoder, keyframes on demand;
//! - [`graph`]: the element graph (source → encoder → MPEG-TS → appsink);
//! - [`layers`]: one encode per layer (sizes, bitrates, the per-layer chain);
//! - [`source`]: what to capture (portal, X11, test pattern, clock) and audio;
//! - [`appsink`]: where bytes leave GStreamer (TS to the ingest thread, RTP to the hub);
//! - [`bus`]: the bus watch turning every ERROR into a typed failure;
//! - [`fault`]: a hidden, test-only trigger that makes the encoder post an ERROR;
//! - [`producer`]: [`GstProducer`], the supervisor's [`Producer`](crate::supervisor::Producer);
//! - [`rtp`]: the WebRTC branch (RTP H.264 from the same encoder, Opus), on request;
//! - [`remux`]: the other way round, for `serve`'s published (WHIP) streams:
//!   the hub's RTP tracks depacketized once into the hub's MPEG-TS.

pub(crate) mod appsink;
pub(crate) mod bus;
pub mod element;
pub mod encoder;
pub(crate) mod error;
pub mod fault;
pub(crate) mod graph;
pub mod layers;
pub(crate) mod producer;
pub mod remux;
pub mod rtp;
pub mod source;

pub use encoder::{EncoderChoice, EncoderKind};
pub use error::{check_elements, debian_package_for, PipelineError};
pub use producer::{GstProducer, RunProbe};
pub use remux::{Remux, RemuxStats};
pub use rtp::RtpOutput;

use gstreamer as gst;

use crate::capture::source::audio::AudioSource;
use crate::capture::source::SourceKind;

/// What `pixelpass host` asks of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    pub source: SourceKind,
    /// Capture one window rather than a whole monitor (portal).
    pub window: bool,
    /// The X display (X11 source; `None`: `$DISPLAY`).
    pub display: Option<String>,
    pub framerate: u32,
    pub bitrate_kbps: u32,
    /// Scale to this size (keeping the aspect ratio); `None`: source size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub audio: bool,
    /// Where audio comes from when `audio` is on.
    pub audio_source: AudioSource,
    /// Encodes of the picture, 1..=3 (see [`layers`]): layer 0 as above,
    /// then half the size at a quarter of the bitrate, then a very low one.
    pub layers: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            source: SourceKind::Test,
            window: false,
            display: None,
            framerate: 30,
            bitrate_kbps: 2500,
            width: None,
            height: None,
            audio: true,
            audio_source: AudioSource::System,
            layers: 1,
        }
    }
}

/// Environment variable with a GStreamer debug spec ("3", "x264enc:5,mpegtsmux:4").
pub const DEBUG_ENV: &str = "PIXELPASS_GST_DEBUG";

/// Initialise GStreamer (idempotent) and apply `PIXELPASS_GST_DEBUG`.
pub fn init() -> Result<(), PipelineError> {
    gst::init().map_err(|e| PipelineError::Init(e.to_string()))?;
    if let Some(spec) = std::env::var_os(DEBUG_ENV) {
        let spec = spec.to_string_lossy();
        let spec = spec.trim();
        if !spec.is_empty() {
            gst::log::set_active(true);
            match spec.parse::<i32>() {
                Ok(level) => gst::log::set_default_threshold(debug_level(level)),
                Err(_) => gst::log::set_threshold_from_string(spec, true),
            }
        }
    }
    Ok(())
}

fn debug_level(level: i32) -> gst::DebugLevel {
    match level {
        i32::MIN..=0 => gst::DebugLevel::None,
        1 => gst::DebugLevel::Error,
        2 => gst::DebugLevel::Warning,
        3 => gst::DebugLevel::Fixme,
        4 => gst::DebugLevel::Info,
        5 => gst::DebugLevel::Debug,
        6 => gst::DebugLevel::Log,
        7 => gst::DebugLevel::Trace,
        _ => gst::DebugLevel::Memdump,
    }
}

/// Called at host start: every element the graph needs exists, and the
/// best usable H.264 encoder.
pub fn preflight(cfg: &PipelineConfig) -> Result<EncoderChoice, PipelineError> {
    init()?;
    check_elements(graph::required_elements(cfg))?;
    if cfg.audio {
        encoder::aac_encoder()?;
    }
    encoder::choose()
}

#[cfg(test)]
mod layer_tests;
#[cfg(test)]
mod tests;
