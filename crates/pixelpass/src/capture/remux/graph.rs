//! The remux's GStreamer graph, built from typed elements:
//!
//! ```text
//! appsrc(RTP H264) ─► rtpjitterbuffer ─► rtph264depay(wait for a keyframe; AUs) ─► h264parse(config-interval=-1) ─┐
//! appsrc(RTP OPUS) ─► rtpjitterbuffer ─► rtpopusdepay ─► opusdec ─► audioconvert ─► audioresample ─► 48 kHz stereo ─┤
//!                                                                       the host's TS branch (AAC, mpegtsmux) ◄─┘─► appsink
//! ```
//!
//! Timestamps: the appsrcs stamp each packet with the pipeline's running
//! time as it arrives (live, `do-timestamp`); each jitter buffer maps its
//! track's RTP timestamps onto that clock (skew-corrected, reordered within
//! [`JITTER_LATENCY_MS`]), so frames keep the publisher's spacing and both
//! tracks share one time line: A/V stay as in sync as they arrived (a WHIP
//! publisher's RTCP sender reports do not reach the hub). The video is the
//! publisher's H.264 as is (any profile); no frame is decoded.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::super::element::{
    add_and_link, build, builder, h264_au_filter, h264parse, make, set_bool, set_num, set_str, soft,
};
use super::super::error::PipelineError;
use super::super::graph::{link_ts_branch, raw_audio_tail};

/// What the jitter buffers hold back to reorder packets and smooth arrival
/// jitter (added to the HTTP-TS latency of a published stream).
pub const JITTER_LATENCY_MS: u32 = 50;

/// Bytes an appsrc queues before it drops the oldest (≈ 1 s at 16 Mbit/s).
const APPSRC_MAX_BYTES: u64 = 2 << 20;

/// Elements a remux with video only needs (the TS tail included).
pub const VIDEO_ELEMENTS: &[&str] = &[
    "appsrc",
    "rtpjitterbuffer",
    "rtph264depay",
    "capsfilter",
    "h264parse",
    "queue",
    "mpegtsmux",
    "appsink",
];
/// Elements the audio track adds (the AAC encoder is checked by its own fallback).
pub const AUDIO_ELEMENTS: &[&str] = &[
    "rtpopusdepay",
    "opusdec",
    "audioconvert",
    "audioresample",
    "aacparse",
];

pub(super) struct RemuxGraph {
    pub pipeline: gst::Pipeline,
    pub video: gst_app::AppSrc,
    pub audio: Option<gst_app::AppSrc>,
    pub appsink: gst_app::AppSink,
}

pub(super) fn build_graph(video_pt: u8, audio_pt: Option<u8>) -> Result<RemuxGraph, PipelineError> {
    let pipeline = gst::Pipeline::with_name("pixelpass-remux");
    // As the host's graph: the bus watch drains what is posted while stopping.
    pipeline.set_auto_flush_bus(false);

    let (vsrc, video) = appsrc("video-rtp-src", rtp_caps("video", "H264", 90_000, video_pt))?;
    let depay = make("rtph264depay", "rtph264depay")?;
    // A publisher's first packets may be mid-GOP: hand on nothing before a
    // keyframe (and after a loss, nothing until the next one).
    set_bool(&depay, "wait-for-keyframe", true)?;
    // Whole access units: `wait-for-keyframe` works only on them, and
    // h264parse assembling AUs from single NALs split every keyframe in two
    // (the SPS/PPS/IDR and a second, untimed PES: ffmpeg "missing picture").
    let depay_caps = h264_au_filter("depay-caps")?;
    let parse = h264parse()?;
    let vchain = [
        vsrc,
        jitterbuffer("video-jitterbuffer")?,
        depay,
        depay_caps,
        parse.clone(),
    ];
    add_and_link(&pipeline, &vchain)?;

    let (audio, audio_out) = match audio_pt {
        Some(pt) => {
            let (asrc, audio) = appsrc("audio-rtp-src", rtp_caps("audio", "OPUS", 48_000, pt))?;
            let mut achain = vec![
                asrc,
                jitterbuffer("audio-jitterbuffer")?,
                make("rtpopusdepay", "rtpopusdepay")?,
                make("opusdec", "opusdec")?,
            ];
            achain.extend(raw_audio_tail()?);
            add_and_link(&pipeline, &achain)?;
            (Some(audio), achain.last().cloned())
        }
        None => (None, None),
    };

    let appsink = link_ts_branch(&pipeline, &parse, audio_out.as_ref())?;
    Ok(RemuxGraph {
        pipeline,
        video,
        audio,
        appsink,
    })
}

fn rtp_caps(media: &str, encoding: &str, clock_rate: i32, pt: u8) -> gst::Caps {
    gst::Caps::builder("application/x-rtp")
        .field("media", media)
        .field("encoding-name", encoding)
        .field("clock-rate", clock_rate)
        .field("payload", i32::from(pt))
        .build()
}

/// A live appsrc stamping packets on arrival; it never blocks the feed
/// (when full, it drops its oldest packets: the jitter buffer sees loss).
fn appsrc(name: &str, caps: gst::Caps) -> Result<(gst::Element, gst_app::AppSrc), PipelineError> {
    let el = build(
        builder("appsrc", name)?
            .property("caps", caps)
            .property("is-live", true)
            .property("do-timestamp", true)
            .property("block", false)
            .property("max-bytes", APPSRC_MAX_BYTES)
            .property_from_str("format", "time"),
        "appsrc",
    )?;
    // GStreamer ≥ 1.20; without it the appsrc keeps queueing past max-bytes.
    soft(set_str(&el, "leaky-type", "downstream"));
    let src = el
        .clone()
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| PipelineError::Create {
            element: "appsrc".into(),
            message: "the appsrc element is not a GstAppSrc".into(),
        })?;
    Ok((el, src))
}

fn jitterbuffer(name: &str) -> Result<gst::Element, PipelineError> {
    let jb = make("rtpjitterbuffer", name)?;
    set_num(&jb, "latency", u64::from(JITTER_LATENCY_MS))?;
    // Timestamps from the RTP clock alone, from the first packet's arrival
    // on: a burst (a publisher starting on its cached GOP) keeps its frames'
    // spacing instead of the skew estimator squeezing them onto one instant.
    jb.set_property_from_str("mode", "none");
    Ok(jb)
}
