//! H.264 encoder choice and tuning, the AAC encoder, and keyframes on demand.
//!
//! Order of preference: VA-API (`vah264enc`, then the older `vaapih264enc`)
//! → NVENC (`nvh264enc`) → `x264enc` → `openh264enc`. A candidate counts when
//! its factory exists AND an instance reaches READY (a hardware encoder
//! without a usable device fails there). Every encoder is set up the same
//! way: CBR at the configured bitrate, a keyframe every 2 s, no B-frames, no
//! lookahead, and constrained-baseline output (the same stream will feed
//! WebRTC, where Safari wants constrained baseline).

use std::fmt;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;

use super::element::{self, make, set_bool, set_num, set_str, soft};
use super::error::PipelineError;
use crate::hub::KeyframeSource;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderKind {
    /// VA-API through the `va` plugin (GStreamer ≥ 1.22 name).
    VaH264,
    /// VA-API through the older gstreamer-vaapi plugin.
    Vaapi,
    /// NVIDIA NVENC.
    Nvenc,
    X264,
    OpenH264,
}

impl EncoderKind {
    /// Candidates, best first.
    pub const PREFERENCE: [EncoderKind; 5] = [
        EncoderKind::VaH264,
        EncoderKind::Vaapi,
        EncoderKind::Nvenc,
        EncoderKind::X264,
        EncoderKind::OpenH264,
    ];

    pub fn element(self) -> &'static str {
        match self {
            EncoderKind::VaH264 => "vah264enc",
            EncoderKind::Vaapi => "vaapih264enc",
            EncoderKind::Nvenc => "nvh264enc",
            EncoderKind::X264 => "x264enc",
            EncoderKind::OpenH264 => "openh264enc",
        }
    }

    pub fn is_hardware(self) -> bool {
        matches!(
            self,
            EncoderKind::VaH264 | EncoderKind::Vaapi | EncoderKind::Nvenc
        )
    }

    fn label(self) -> &'static str {
        match self {
            EncoderKind::VaH264 | EncoderKind::Vaapi => "VA-API hardware",
            EncoderKind::Nvenc => "NVENC hardware",
            EncoderKind::X264 | EncoderKind::OpenH264 => "software",
        }
    }
}

/// The encoder a host runs, e.g. "x264enc (software)".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderChoice {
    pub kind: EncoderKind,
    pub element: &'static str,
}

impl EncoderChoice {
    pub fn new(kind: EncoderKind) -> Self {
        Self {
            kind,
            element: kind.element(),
        }
    }
}

impl fmt::Display for EncoderChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.element, self.kind.label())
    }
}

/// The first usable encoder of [`EncoderKind::PREFERENCE`].
pub fn choose() -> Result<EncoderChoice, PipelineError> {
    choose_from(&EncoderKind::PREFERENCE)
}

/// The first usable encoder of `candidates`.
pub fn choose_from(candidates: &[EncoderKind]) -> Result<EncoderChoice, PipelineError> {
    for &kind in candidates {
        if usable(kind) {
            return Ok(EncoderChoice::new(kind));
        }
        tracing::debug!(encoder = kind.element(), "H.264 encoder not usable here");
    }
    let tried = candidates
        .iter()
        .map(|k| k.element())
        .collect::<Vec<_>>()
        .join(", ");
    Err(PipelineError::NoEncoder { tried })
}

/// The factory exists and an instance reaches READY (opens its device).
fn usable(kind: EncoderKind) -> bool {
    let name = kind.element();
    if gst::ElementFactory::find(name).is_none() {
        return false;
    }
    let Ok(el) = gst::ElementFactory::make(name).build() else {
        return false;
    };
    let ok = el.set_state(gst::State::Ready).is_ok();
    if let Err(e) = el.set_state(gst::State::Null) {
        tracing::warn!(encoder = name, "could not return the probe to NULL: {e}");
    }
    ok
}

/// What the encoder needs to know.
#[derive(Clone, Copy, Debug)]
pub struct EncoderSettings {
    pub bitrate_kbps: u32,
    pub framerate: u32,
    /// Screen content (text, flat areas) rather than camera-like content.
    pub screen: bool,
}

impl EncoderSettings {
    /// One keyframe every two seconds.
    pub fn keyframe_interval(&self) -> u64 {
        2 * u64::from(self.framerate.max(1))
    }
}

/// What the encoder must output: byte-stream AUs in constrained baseline.
pub fn output_caps() -> gst::Caps {
    gst::Caps::builder("video/x-h264")
        .field("profile", "constrained-baseline")
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .build()
}

/// A configured encoder element, named after its factory.
pub fn make_encoder(
    choice: EncoderChoice,
    s: EncoderSettings,
) -> Result<gst::Element, PipelineError> {
    make_encoder_named(choice, s, choice.element)
}

/// [`make_encoder`] with an element name of its own (one encoder per layer).
pub fn make_encoder_named(
    choice: EncoderChoice,
    s: EncoderSettings,
    name: &str,
) -> Result<gst::Element, PipelineError> {
    if s.bitrate_kbps == 0 {
        return Err(PipelineError::Config(
            "the bitrate must be at least 1 kbit/s".into(),
        ));
    }
    let enc = make(choice.element, name)?;
    let kbps = u64::from(s.bitrate_kbps);
    let gop = s.keyframe_interval();
    match choice.kind {
        EncoderKind::X264 => {
            // Verified on this platform; every property has existed for a decade.
            set_num(&enc, "bitrate", kbps)?;
            set_str(&enc, "pass", "cbr")?;
            set_str(&enc, "tune", "zerolatency")?;
            set_str(&enc, "speed-preset", "ultrafast")?;
            set_num(&enc, "bframes", 0)?;
            set_bool(&enc, "b-adapt", false)?;
            set_num(&enc, "key-int-max", gop)?;
            // A small VBV (≈ 3 frames, ≥ 100 ms): steady packet sizes, low delay.
            set_num(
                &enc,
                "vbv-buf-capacity",
                (3000 / u64::from(s.framerate.max(1))).max(100),
            )?;
            set_bool(&enc, "byte-stream", true)?;
            set_num(&enc, "rc-lookahead", 0)?;
        }
        EncoderKind::OpenH264 => {
            set_str(&enc, "rate-control", "bitrate")?;
            set_num(&enc, "bitrate", kbps * 1000)?;
            set_num(&enc, "max-bitrate", kbps * 1000)?;
            set_num(&enc, "gop-size", gop)?;
            set_str(
                &enc,
                "usage-type",
                if s.screen { "screen" } else { "camera" },
            )?;
            set_str(&enc, "complexity", "low")?;
            // Skipped frames would stall the picture; the VBV of the muxer path copes.
            soft(set_bool(&enc, "enable-frame-skip", false));
        }
        // Hardware encoders differ between driver and GStreamer versions:
        // a knob that is missing is logged and skipped, never fatal.
        EncoderKind::VaH264 => {
            soft(set_str(&enc, "rate-control", "cbr"));
            soft(set_num(&enc, "bitrate", kbps));
            soft(set_num(&enc, "key-int-max", gop));
            soft(set_num(&enc, "b-frames", 0));
            // 7 = fastest / lowest latency.
            soft(set_num(&enc, "target-usage", 7));
        }
        EncoderKind::Vaapi => {
            soft(set_str(&enc, "rate-control", "cbr"));
            soft(set_num(&enc, "bitrate", kbps));
            soft(set_num(&enc, "keyframe-period", gop));
            soft(set_num(&enc, "max-bframes", 0));
        }
        EncoderKind::Nvenc => {
            soft(set_str(&enc, "rc-mode", "cbr"));
            soft(set_num(&enc, "bitrate", kbps));
            soft(set_num(&enc, "gop-size", gop));
            soft(set_num(&enc, "bframes", 0));
            soft(set_bool(&enc, "zerolatency", true));
            soft(set_num(&enc, "rc-lookahead", 0));
            soft(set_str(&enc, "preset", "low-latency-hq"));
        }
    }
    Ok(enc)
}

/// AAC encoders, best first. `voaacenc` first for latency: it hands each
/// 1024-sample frame on as it comes in, while `avenc_aac` holds one frame
/// back (its output lags its input by 21–26 ms). mpegtsmux emits a video
/// frame only once audio at least as late has arrived, so that lag delayed
/// every video frame of the HTTP-TS stream: `bench latency --path hub`
/// (720p30, 4 Mbit/s) measured p50 43 ms with avenc_aac, 17 ms with voaacenc.
/// voaacenc is in gstreamer1.0-plugins-bad, which mpegtsmux needs anyway.
pub const AAC_ENCODERS: [&str; 2] = ["voaacenc", "avenc_aac"];

/// The AAC encoder present here, else MissingElement for the preferred one.
pub fn aac_encoder() -> Result<&'static str, PipelineError> {
    AAC_ENCODERS
        .iter()
        .copied()
        .find(|name| gst::ElementFactory::find(name).is_some())
        .ok_or_else(|| PipelineError::missing(AAC_ENCODERS[0]))
}

/// A configured AAC encoder at `bitrate` bit/s.
pub(crate) fn make_aac(factory: &str, bitrate: u64) -> Result<gst::Element, PipelineError> {
    let enc = make(factory, factory)?;
    element::set_num(&enc, "bitrate", bitrate)?;
    Ok(enc)
}

/// Asks a running encoder for a keyframe. Holds the encoder's src pad weakly:
/// a stopped pipeline is freed even if the hub still holds this.
pub struct EncoderKeyframes {
    encoder: String,
    src: glib::WeakRef<gst::Pad>,
}

impl EncoderKeyframes {
    pub fn new(encoder: &gst::Element) -> Result<Self, PipelineError> {
        let src = encoder
            .static_pad("src")
            .ok_or_else(|| PipelineError::Create {
                element: encoder.name().to_string(),
                message: "the encoder has no src pad".into(),
            })?;
        Ok(Self {
            encoder: encoder.name().to_string(),
            src: src.downgrade(),
        })
    }

    pub fn into_source(self) -> Arc<dyn KeyframeSource> {
        Arc::new(self)
    }
}

impl KeyframeSource for EncoderKeyframes {
    /// Sends an upstream force-key-unit event into the encoder's src pad.
    /// Non-blocking: `gst_pad_send_event` on a src pad with a non-serialized
    /// upstream event takes no stream lock (unlike `gst_element_send_event`,
    /// which takes the element's state lock); the encoder only queues the
    /// request under its object lock and honours it on the next frame.
    fn request_keyframe(&self) {
        let Some(pad) = self.src.upgrade() else {
            return;
        };
        let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        if !pad.send_event(event) {
            tracing::debug!(encoder = %self.encoder, "keyframe request not handled (pipeline not running?)");
        }
    }
}
