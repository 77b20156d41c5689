//! The host's GStreamer graph, built from typed elements (no launch strings):
//!
//! ```text
//! source ─► videorate ─► videoconvert ─► [videoscale] ─► capsfilter(I420, fps, size)
//!        ─► queue(leaky) ─► ENCODER ─► capsfilter(constrained-baseline)
//!        ─► h264parse(config-interval=-1) ─► capsfilter(byte-stream, au)   ◄── `video_encoded`
//!        ─► queue ─► mpegtsmux ─► appsink
//! audio  ─► audioconvert ─► audioresample ─► capsfilter(48 kHz stereo)     ◄── `audio_raw`
//!        ─► AAC encoder ─► aacparse ─► queue ─► mpegtsmux
//! ```
//!
//! `video_encoded` and `audio_raw` are the two points a later WebRTC branch
//! taps (a `tee` after the first feeding an RTP payloader, a `tee` after the
//! second feeding Opus): [`Graph`] keeps them, and the TS branch is linked
//! from them by [`link_ts_branch`], so adding a branch means inserting a
//! `tee` there rather than rebuilding the graph.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::element::{build, builder, caps_int, link_chain, make};
use super::encoder::{self, EncoderChoice, EncoderSettings};
use super::error::PipelineError;
use super::rtp::{self, RtpOutput, RtpSinks};
use super::PipelineConfig;
use crate::capture::source::portal::PortalStream;
use crate::capture::source::{self, Desktop, SourceKind, VideoParams};

/// AAC bitrate in the TS branch.
pub const AAC_BITRATE: u64 = 128_000;

/// Elements needed whatever the source and encoder.
const COMMON: &[&str] = &[
    "videorate",
    "videoconvert",
    "capsfilter",
    "queue",
    "h264parse",
    "mpegtsmux",
    "appsink",
];
const AUDIO: &[&str] = &["audioconvert", "audioresample", "aacparse"];

pub(crate) struct Graph {
    pub pipeline: gst::Pipeline,
    pub encoder: gst::Element,
    /// Encoded H.264 (byte-stream, AU-aligned, SPS/PPS at every keyframe).
    #[allow(dead_code)] // the tap point of the WebRTC branch (later issue)
    pub video_encoded: gst::Element,
    /// Raw audio, 48 kHz stereo; `None` when video-only.
    #[allow(dead_code)] // the tap point of the Opus branch (later issue)
    pub audio_raw: Option<gst::Element>,
    pub appsink: gst_app::AppSink,
    /// The WebRTC branch's appsinks, when asked for.
    pub rtp: Option<RtpSinks>,
}

/// Every element `cfg` needs, for the preflight check (the encoders are
/// checked by the encoder choice, the AAC encoder by its own fallback).
pub(crate) fn required_elements(cfg: &PipelineConfig) -> Vec<&'static str> {
    let mut v = source::required_elements(cfg.source, cfg.audio);
    v.extend_from_slice(COMMON);
    if cfg.width.is_some() || cfg.height.is_some() {
        v.push("videoscale");
    }
    if cfg.audio {
        v.extend_from_slice(AUDIO);
    }
    v
}

pub(crate) fn build_graph(
    cfg: &PipelineConfig,
    choice: EncoderChoice,
    rtp: Option<RtpOutput>,
    portal: Option<PortalStream>,
) -> Result<Graph, PipelineError> {
    if cfg.framerate == 0 {
        return Err(PipelineError::Config(
            "the framerate must be at least 1".into(),
        ));
    }
    let pipeline = gst::Pipeline::with_name("pixelpass");
    // Keep bus messages across the state change to NULL: the bus watch
    // drains them all, so an ERROR posted while stopping is never lost.
    pipeline.set_auto_flush_bus(false);
    let params = VideoParams {
        framerate: cfg.framerate,
        width: cfg.width,
        height: cfg.height,
    };

    // Video: raw.
    let desktop = Desktop {
        display: cfg.display.as_deref(),
        portal,
    };
    let mut raw = source::video(cfg.source, params, desktop)?;
    raw.extend(raw_video_tail(cfg)?);
    add_and_link(&pipeline, &raw)?;
    let raw_out = last(&raw)?;

    // Video: encode.
    let settings = EncoderSettings {
        bitrate_kbps: cfg.bitrate_kbps,
        framerate: cfg.framerate,
        screen: !matches!(
            cfg.source,
            SourceKind::Test | SourceKind::Auto | SourceKind::Clock
        ),
    };
    let enc_queue = build(
        builder("queue", "encoder-queue")?
            .property_from_str("leaky", "downstream")
            .property("max-size-buffers", 3u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64),
        "queue",
    )?;
    let encoder = encoder::make_encoder(choice, settings)?;
    let enc_caps = build(
        builder("capsfilter", "encoder-caps")?.property("caps", encoder::output_caps()),
        "capsfilter",
    )?;
    let parse = h264parse()?;
    let video_encoded = h264_au_filter("h264-caps")?;
    let encode = [
        enc_queue,
        encoder.clone(),
        enc_caps,
        parse,
        video_encoded.clone(),
    ];
    add_and_link(&pipeline, &encode)?;
    link_chain(&[&raw_out, &encode[0]])?;

    // Audio: raw, then AAC.
    let audio_raw = if cfg.audio {
        match source::audio(cfg.source, &cfg.audio_source)? {
            Some(mut chain) => {
                chain.extend(raw_audio_tail()?);
                add_and_link(&pipeline, &chain)?;
                Some(last(&chain)?)
            }
            // The source said why, once.
            None => None,
        }
    } else {
        None
    };

    // The WebRTC branch tees off both tap points; the TS branch then hangs off the tees.
    let (video_tap, audio_tap, rtp) = match rtp {
        Some(out) => {
            let taps = rtp::link_branch(&pipeline, &video_encoded, audio_raw.as_ref(), out)?;
            (taps.video, taps.audio, Some(taps.sinks))
        }
        None => (video_encoded.clone(), audio_raw.clone(), None),
    };
    let appsink = link_ts_branch(&pipeline, &video_tap, audio_tap.as_ref())?;
    Ok(Graph {
        pipeline,
        encoder,
        video_encoded,
        audio_raw,
        appsink,
        rtp,
    })
}

/// videorate → videoconvert → [videoscale] → capsfilter(I420, fps, size).
fn raw_video_tail(cfg: &PipelineConfig) -> Result<Vec<gst::Element>, PipelineError> {
    // Cap the rate: drop frames above it. A source that sends frames only on
    // change also gets the gaps filled with repeats, for a steady rate.
    let repeat = source::needs_frame_repeat(cfg.source);
    let rate = build(
        builder("videorate", "videorate")?.property("drop-only", !repeat),
        "videorate",
    )?;
    let mut v = vec![rate, make("videoconvert", "videoconvert")?];
    let mut caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field(
            "framerate",
            gst::Fraction::new(caps_int(cfg.framerate, "framerate")?, 1),
        );
    if cfg.width.is_some() || cfg.height.is_some() {
        v.push(make("videoscale", "videoscale")?);
        if let Some(w) = cfg.width {
            caps = caps.field("width", caps_int(w, "width")?);
        }
        if let Some(h) = cfg.height {
            caps = caps.field("height", caps_int(h, "height")?);
        }
        // Square pixels: videoscale letterboxes instead of stretching.
        caps = caps.field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    }
    v.push(build(
        builder("capsfilter", "video-caps")?.property("caps", caps.build()),
        "capsfilter",
    )?);
    Ok(v)
}

/// h264parse with SPS/PPS before every IDR (a viewer can start at any keyframe).
pub(crate) fn h264parse() -> Result<gst::Element, PipelineError> {
    build(
        builder("h264parse", "h264parse")?.property("config-interval", -1i32),
        "h264parse",
    )
}

/// A capsfilter for H.264 byte-stream in whole access units.
pub(crate) fn h264_au_filter(name: &str) -> Result<gst::Element, PipelineError> {
    let caps = gst::Caps::builder("video/x-h264")
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .build();
    build(
        builder("capsfilter", name)?.property("caps", caps),
        "capsfilter",
    )
}

/// audioconvert → audioresample → capsfilter(48 kHz stereo): raw audio as
/// the TS branch's AAC encoder (and the Opus branch) take it.
pub(crate) fn raw_audio_tail() -> Result<Vec<gst::Element>, PipelineError> {
    let caps = gst::Caps::builder("audio/x-raw")
        .field("rate", 48_000i32)
        .field("channels", 2i32)
        .build();
    Ok(vec![
        make("audioconvert", "audioconvert")?,
        make("audioresample", "audioresample")?,
        build(
            builder("capsfilter", "audio-caps")?.property("caps", caps),
            "capsfilter",
        )?,
    ])
}

/// The MPEG-TS branch: `video` (encoded H.264) and `audio_raw` (48 kHz
/// stereo) into mpegtsmux, out through the appsink it returns. Also the
/// tail of the WHIP remux ([`super::remux`]).
pub(crate) fn link_ts_branch(
    pipeline: &gst::Pipeline,
    video: &gst::Element,
    audio_raw: Option<&gst::Element>,
) -> Result<gst_app::AppSink, PipelineError> {
    // Default alignment: one 188-byte packet per buffer, each pushed as soon as it is muxed.
    let mux = make("mpegtsmux", "mpegtsmux")?;
    let sink_el = build(
        builder("appsink", "appsink")?
            .property("sync", false)
            .property("max-buffers", 256u32)
            .property("drop", false)
            .property("enable-last-sample", false)
            .property("emit-signals", false),
        "appsink",
    )?;
    let appsink = sink_el
        .clone()
        .downcast::<gst_app::AppSink>()
        .map_err(|_| PipelineError::Create {
            element: "appsink".into(),
            message: "the appsink element is not a GstAppSink".into(),
        })?;
    pipeline
        .add_many([&mux, &sink_el])
        .map_err(|e| PipelineError::Create {
            element: "mpegtsmux".into(),
            message: e.to_string(),
        })?;
    link_chain(&[&mux, &sink_el])?;

    let vq = make("queue", "video-mux-queue")?;
    add_and_link(pipeline, std::slice::from_ref(&vq))?;
    link_chain(&[video, &vq, &mux])?;

    if let Some(audio_raw) = audio_raw {
        let aac = encoder::make_aac(encoder::aac_encoder()?, AAC_BITRATE)?;
        let chain = [
            aac,
            make("aacparse", "aacparse")?,
            make("queue", "audio-mux-queue")?,
        ];
        add_and_link(pipeline, &chain)?;
        link_chain(&[audio_raw, &chain[0]])?;
        link_chain(&[&chain[2], &mux])?;
    }
    Ok(appsink)
}

pub(crate) fn add_and_link(
    pipeline: &gst::Pipeline,
    chain: &[gst::Element],
) -> Result<(), PipelineError> {
    for el in chain {
        pipeline.add(el).map_err(|e| PipelineError::Create {
            element: el.name().to_string(),
            message: e.to_string(),
        })?;
    }
    let refs: Vec<&gst::Element> = chain.iter().collect();
    link_chain(&refs)
}

fn last(chain: &[gst::Element]) -> Result<gst::Element, PipelineError> {
    chain
        .last()
        .cloned()
        .ok_or_else(|| PipelineError::Config("the source produced no elements".into()))
}
