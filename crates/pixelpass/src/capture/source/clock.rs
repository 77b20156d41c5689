//! The clock source (`--source clock`): a moving test pattern whose every
//! frame carries, in its top-left 960×40 pixels, the wall-clock time at
//! which it was produced (layout in [`crate::media::timecode`]). What
//! `pixelpass bench latency` and any other tool read back to tell how old a
//! frame is when a viewer decodes or shows it.
//!
//! ```text
//! videotestsrc(live, scrolling bars) ─► capsfilter(I420, W×H, fps)  ◄── pad probe: draw the time
//! ```
//!
//! The time drawn is `SystemTime::now()` read in a pad probe on the
//! capsfilter's src pad, i.e. the moment the frame leaves the source and
//! enters the pipeline, not a value derived from its PTS. It is the moment a
//! capture source would hand over a frame; the PTS route (running time + base
//! time → pipeline clock → wall clock) would add the source's own
//! scheduling (a live videotestsrc pushes on its clock schedule) and a
//! monotonic-to-wall conversion, and measure the same thing less directly.
//! The drawing happens in place on the source's buffer (a few 20-pixel row
//! fills), well under a millisecond.

use std::sync::Mutex;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::VideoParams;
use crate::capture::element::{build, builder, caps_int};
use crate::capture::error::PipelineError;
use crate::media::timecode as code;

pub const VIDEO_ELEMENTS: &[&str] = &["videotestsrc", "capsfilter"];

/// Size when the user gives none.
pub const DEFAULT_WIDTH: u32 = 1280;
pub const DEFAULT_HEIGHT: u32 = 720;

pub fn video(p: VideoParams) -> Result<Vec<gst::Element>, PipelineError> {
    let (width, height) = (
        p.width.unwrap_or(DEFAULT_WIDTH),
        p.height.unwrap_or(DEFAULT_HEIGHT),
    );
    if (width as usize) < code::WIDTH || (height as usize) < code::HEIGHT {
        return Err(PipelineError::Config(format!(
            "the clock source needs a picture of at least {}×{} (asked for {width}×{height})",
            code::WIDTH,
            code::HEIGHT
        )));
    }
    let src = build(
        builder("videotestsrc", "clock-videotestsrc")?
            .property("is-live", true)
            .property_from_str("pattern", "smpte")
            // Scroll: every frame differs, as on a real screen in motion.
            .property("horizontal-speed", 4i32),
        "videotestsrc",
    )?;
    // The raw format the probe draws into; the rest of the graph keeps it
    // (videoconvert/videoscale pass through at the same format and size).
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", caps_int(width, "width")?)
        .field("height", caps_int(height, "height")?)
        .field(
            "framerate",
            gst::Fraction::new(caps_int(p.framerate, "framerate")?, 1),
        )
        .build();
    let filter = build(
        builder("capsfilter", "clock-caps")?.property("caps", &caps),
        "capsfilter",
    )?;
    let pad = filter
        .static_pad("src")
        .ok_or_else(|| PipelineError::Create {
            element: "capsfilter".into(),
            message: "no src pad".into(),
        })?;
    let info: Mutex<Option<gst_video::VideoInfo>> = Mutex::new(None);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, probe| {
        let ms = code::now_ms();
        let mut cached = info.lock().unwrap_or_else(|e| e.into_inner());
        if cached.is_none() {
            *cached = pad
                .current_caps()
                .and_then(|c| gst_video::VideoInfo::from_caps(&c).ok());
        }
        if let (Some(info), Some(buffer)) = (cached.as_ref(), probe.buffer_mut()) {
            if let Err(e) = stamp(buffer.make_mut(), info, ms) {
                tracing::warn!("clock source: cannot draw the time code: {e}");
            }
        }
        gst::PadProbeReturn::Ok
    });
    Ok(vec![src, filter])
}

/// Draw `ms` into an I420 buffer: the squares in Y, neutral chroma under them.
fn stamp(buffer: &mut gst::BufferRef, info: &gst_video::VideoInfo, ms: u64) -> Result<(), String> {
    let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info)
        .map_err(|e| e.to_string())?;
    let strides: Vec<usize> = frame.plane_stride().iter().map(|&s| s as usize).collect();
    let (w, h) = (info.width() as usize, info.height() as usize);
    code::render(
        frame.plane_data_mut(0).map_err(|e| e.to_string())?,
        strides[0],
        w,
        h,
        ms,
    )
    .map_err(|e| e.to_string())?;
    for plane in 1..frame.n_planes() {
        let stride = strides[plane as usize];
        let data = frame.plane_data_mut(plane).map_err(|e| e.to_string())?;
        code::neutral_chroma(data, stride, 2, 2).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_too_small_for_the_code_is_refused() {
        crate::capture::init().unwrap();
        let e = video(VideoParams {
            framerate: 30,
            width: Some(640),
            height: Some(360),
        })
        .expect_err("refused");
        assert!(e.to_string().contains("960×40"), "{e}");
    }
}
