//! The test source: a colour-bar pattern that scrolls (so every frame
//! differs) with the running time burnt in when the pango plugin is present,
//! and a 440 Hz tone. Both live, so they run at clock speed like a capture.

use super::VideoParams;
use crate::capture::element::{build, builder, caps_int, set_bool, set_str, soft};
use crate::capture::error::PipelineError;
use gstreamer as gst;

/// Required for the video chain (`timeoverlay` is used when present).
pub const VIDEO_ELEMENTS: &[&str] = &["videotestsrc", "capsfilter"];
pub const AUDIO_ELEMENTS: &[&str] = &["audiotestsrc"];

/// Size when the user gives none.
pub const DEFAULT_WIDTH: u32 = 1280;
pub const DEFAULT_HEIGHT: u32 = 720;

pub(crate) fn video(p: VideoParams) -> Result<Vec<gst::Element>, PipelineError> {
    let src = build(
        builder("videotestsrc", "videotestsrc")?
            .property("is-live", true)
            .property_from_str("pattern", "smpte")
            // Scroll one pixel per frame: motion without a plugin beyond -base.
            .property("horizontal-speed", 1i32),
        "videotestsrc",
    )?;
    let caps = gst::Caps::builder("video/x-raw")
        .field(
            "width",
            caps_int(p.width.unwrap_or(DEFAULT_WIDTH), "width")?,
        )
        .field(
            "height",
            caps_int(p.height.unwrap_or(DEFAULT_HEIGHT), "height")?,
        )
        .field(
            "framerate",
            gst::Fraction::new(caps_int(p.framerate, "framerate")?, 1),
        )
        .build();
    let filter = build(
        builder("capsfilter", "test-caps")?.property("caps", &caps),
        "capsfilter",
    )?;
    let mut chain = vec![src, filter];
    if gst::ElementFactory::find("timeoverlay").is_some() {
        let overlay = build(builder("timeoverlay", "timeoverlay")?, "timeoverlay")?;
        soft(set_str(&overlay, "text", "pixelpass test"));
        soft(set_str(&overlay, "font-desc", "Sans, 32"));
        soft(set_str(&overlay, "halignment", "center"));
        soft(set_str(&overlay, "valignment", "center"));
        soft(set_bool(&overlay, "shaded-background", true));
        chain.push(overlay);
    } else {
        tracing::info!(
            "timeoverlay not found (apt-get install gstreamer1.0-x): test pattern without clock"
        );
    }
    Ok(chain)
}

pub(crate) fn audio() -> Result<Vec<gst::Element>, PipelineError> {
    let src = build(
        builder("audiotestsrc", "audiotestsrc")?
            .property("is-live", true)
            .property_from_str("wave", "sine")
            .property("freq", 440.0f64)
            .property("volume", 0.3f64),
        "audiotestsrc",
    )?;
    Ok(vec![src])
}
