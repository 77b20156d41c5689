//! X11 screen capture with `ximagesrc`: the whole screen of `--display` (or
//! `$DISPLAY`), grabbed at the frame rate (damage tracking off: XDamage gives
//! partial frames and nothing at all on a static screen), pointer included.

use gstreamer as gst;
use gstreamer::prelude::*;

use super::VideoParams;
use crate::capture::element::{build, builder, caps_int, set_bool, set_str};
use crate::capture::error::PipelineError;

pub const VIDEO_ELEMENTS: &[&str] = &["ximagesrc", "capsfilter"];

pub(crate) fn video(
    p: VideoParams,
    display: Option<&str>,
) -> Result<Vec<gst::Element>, PipelineError> {
    let src = build(builder("ximagesrc", "ximagesrc")?, "ximagesrc")?;
    set_bool(&src, "use-damage", false)?;
    set_bool(&src, "show-pointer", true)?;
    if let Some(d) = display {
        set_str(&src, "display-name", d)?;
    }
    // ximagesrc grabs at whatever rate its caps say: ask for ours.
    let caps = gst::Caps::builder("video/x-raw")
        .field(
            "framerate",
            gst::Fraction::new(caps_int(p.framerate, "framerate")?, 1),
        )
        .build();
    let filter = build(
        builder("capsfilter", "x11-caps")?.property("caps", caps),
        "capsfilter",
    )?;
    Ok(vec![src, filter])
}

/// The display `--display` names, else `$DISPLAY`.
pub fn display_name(explicit: Option<&str>) -> Option<String> {
    explicit
        .map(str::to_owned)
        .or_else(|| std::env::var("DISPLAY").ok())
        .filter(|d| !d.trim().is_empty())
}

/// Can `ximagesrc` open the display? (It connects when it starts.) Returns
/// the display's name, or why not, in one line. GStreamer must be initialised.
pub fn probe(explicit: Option<&str>) -> Result<String, String> {
    let Some(display) = display_name(explicit) else {
        return Err("DISPLAY is not set".into());
    };
    if gst::ElementFactory::find("ximagesrc").is_none() {
        return Err("ximagesrc is missing: apt-get install gstreamer1.0-plugins-good".into());
    }
    let src = gst::ElementFactory::make("ximagesrc")
        .property("display-name", &display)
        .build()
        .map_err(|e| format!("ximagesrc: {e}"))?;
    let opened = src.set_state(gst::State::Paused).is_ok();
    let _ = src.set_state(gst::State::Null);
    if opened {
        Ok(display)
    } else {
        Err(format!("cannot open X display {display}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_display_that_is_not_there_is_one_clear_line() {
        crate::capture::init().expect("gst init");
        let e = probe(Some(":4711")).expect_err("no X server on :4711");
        assert_eq!(e, "cannot open X display :4711");
    }
}
