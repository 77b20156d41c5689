//! The host's GStreamer graph, built from typed elements (no launch strings):
//!
//! ```text
//! source ─► videorate ─► videoconvert ─► [videoscale] ─► capsfilter(I420, fps, size)
//!        ─► [tee: one branch per layer, see `layers`]
//!        ─► queue(leaky) ─► ENCODER ─► capsfilter(constrained-baseline)
//!        ─► h264parse(config-interval=-1) ─► capsfilter(byte-stream, au)   ◄── a layer's H.264
//!        ─► [tee ─► RTP branch] ─► queue ─► mpegtsmux ─► appsink            (one per layer)
//! audio  ─► audioconvert ─► audioresample ─► capsfilter(48 kHz stereo)     ◄── `audio_raw`
//!        ─► [tee ─► Opus branch] ─► AAC encoder ─► aacparse ─► [tee] ─► queue ─► every mpegtsmux
//! ```
//!
//! Every muxer puts video on PID [`VIDEO_PID`] and audio on [`AUDIO_PID`]
//! so the layers' streams differ only in their video.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::element::{add_and_link, build, builder, caps_int, link_chain, make};
use super::encoder::{self, EncoderChoice};
use super::error::PipelineError;
use super::layers;
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
    /// One encoder per layer, 0 first.
    pub encoders: Vec<gst::Element>,
    /// The TS appsink of each layer, 0 first.
    pub appsinks: Vec<gst_app::AppSink>,
    /// The WebRTC branch's appsinks, when asked for.
    pub rtp: Option<RtpSinks>,
    /// Each layer's encode chain (for the layer-info probes).
    pub chains: Vec<layers::EncodeChain>,
}

/// Every element `cfg` needs, for the preflight check (the encoders are
/// checked by the encoder choice, the AAC encoder by its own fallback).
pub(crate) fn required_elements(cfg: &PipelineConfig) -> Vec<&'static str> {
    let mut v = source::required_elements(cfg.source, cfg.audio);
    v.extend_from_slice(COMMON);
    if cfg.width.is_some() || cfg.height.is_some() {
        v.push("videoscale");
    }
    if cfg.layers > 1 {
        v.extend_from_slice(&["tee", "videoscale"]);
    }
    if cfg.audio {
        v.extend_from_slice(AUDIO);
    }
    v.sort_unstable();
    v.dedup();
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

    // Video: one encode per layer; with several, a tee hands each the raw picture.
    let screen = !matches!(
        cfg.source,
        SourceKind::Test | SourceKind::Auto | SourceKind::Clock
    );
    let chains = layers::plan(cfg)
        .into_iter()
        .map(|plan| layers::encode_chain(&pipeline, plan, choice, screen))
        .collect::<Result<Vec<_>, _>>()?;
    if let [only] = chains.as_slice() {
        link_chain(&[&raw_out, &only.input])?;
    } else {
        let tee = make("tee", "raw-tee")?;
        add_and_link(&pipeline, std::slice::from_ref(&tee))?;
        link_chain(&[&raw_out, &tee])?;
        for c in &chains {
            link_chain(&[&tee, &c.input])?;
        }
        if let Some(sink) = tee.static_pad("sink") {
            layers::size_layers_from_raw_caps(&sink, &chains);
        }
    }

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

    // The WebRTC branch tees off the tap points (each layer's H.264, the raw
    // audio for Opus); the TS branches then hang off the tees.
    let (audio_tap, rtp_audio) = match (rtp, &audio_raw) {
        (Some(out), Some(raw)) => {
            let (tap, sink) = rtp::link_audio(&pipeline, raw, out)?;
            (Some(tap), Some(sink))
        }
        _ => (audio_raw.clone(), None),
    };
    let aac = match &audio_tap {
        Some(tap) => Some(aac_chain(&pipeline, tap)?),
        None => None,
    };
    // Several muxers take the one AAC encode through a tee.
    let aac_out = match (&aac, chains.len()) {
        (Some(aac), n) if n > 1 => {
            let tee = make("tee", "aac-tee")?;
            add_and_link(&pipeline, std::slice::from_ref(&tee))?;
            link_chain(&[aac, &tee])?;
            Some(tee)
        }
        (aac, _) => aac.clone(),
    };
    let ts_offset = rtp::shared_timestamp_offset();
    let mut appsinks = Vec::with_capacity(chains.len());
    let mut rtp_video = Vec::new();
    for c in &chains {
        let sfx = c.plan.suffix();
        let video_tap = match rtp {
            Some(out) => {
                let (tee, sink) = rtp::link_video(&pipeline, &c.output, out, &sfx, ts_offset)?;
                rtp_video.push(sink);
                tee
            }
            None => c.output.clone(),
        };
        appsinks.push(link_mux(&pipeline, &video_tap, aac_out.as_ref(), &sfx)?);
    }
    let rtp = rtp.map(|_| RtpSinks {
        video: rtp_video,
        audio: rtp_audio,
    });
    Ok(Graph {
        pipeline,
        encoders: chains.iter().map(|c| c.encoder.clone()).collect(),
        appsinks,
        rtp,
        chains,
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
/// stereo) into mpegtsmux, out through the appsink it returns. The tail of
/// the WHIP remux ([`super::remux`]).
pub(crate) fn link_ts_branch(
    pipeline: &gst::Pipeline,
    video: &gst::Element,
    audio_raw: Option<&gst::Element>,
) -> Result<gst_app::AppSink, PipelineError> {
    let aac = match audio_raw {
        Some(raw) => Some(aac_chain(pipeline, raw)?),
        None => None,
    };
    link_mux(pipeline, video, aac.as_ref(), "")
}

/// raw audio → AAC encoder → aacparse (returned: the AAC every muxer takes).
fn aac_chain(
    pipeline: &gst::Pipeline,
    audio_raw: &gst::Element,
) -> Result<gst::Element, PipelineError> {
    let aac = encoder::make_aac(encoder::aac_encoder()?, AAC_BITRATE)?;
    let chain = [aac, make("aacparse", "aacparse")?];
    add_and_link(pipeline, &chain)?;
    link_chain(&[audio_raw, &chain[0]])?;
    Ok(chain[1].clone())
}

/// The video and audio PIDs of every muxer: the same in every layer, so a
/// viewer that moves between layers keeps its PIDs (and its PMT).
pub const VIDEO_PID: u16 = 65;
pub const AUDIO_PID: u16 = 66;

/// `video` and `aac` (when there is audio) through a queue each into an
/// mpegtsmux, out through the appsink it returns. `sfx` names the layer.
fn link_mux(
    pipeline: &gst::Pipeline,
    video: &gst::Element,
    aac: Option<&gst::Element>,
    sfx: &str,
) -> Result<gst_app::AppSink, PipelineError> {
    // Default alignment: one 188-byte packet per buffer, each pushed as soon as it is muxed.
    let mux = make("mpegtsmux", &format!("mpegtsmux{sfx}"))?;
    let sink_el = build(
        builder("appsink", &format!("appsink{sfx}"))?
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

    let vq = make("queue", &format!("video-mux-queue{sfx}"))?;
    add_and_link(pipeline, std::slice::from_ref(&vq))?;
    link_chain(&[video, &vq])?;
    link_to_pid(&vq, &mux, VIDEO_PID)?;

    if let Some(aac) = aac {
        let aq = make("queue", &format!("audio-mux-queue{sfx}"))?;
        add_and_link(pipeline, std::slice::from_ref(&aq))?;
        link_chain(&[aac, &aq])?;
        link_to_pid(&aq, &mux, AUDIO_PID)?;
    }
    Ok(appsink)
}

/// Link `from`'s src pad to the muxer's sink pad for `pid`.
fn link_to_pid(from: &gst::Element, mux: &gst::Element, pid: u16) -> Result<(), PipelineError> {
    let err = |message: String| PipelineError::Link {
        from: from.name().to_string(),
        to: mux.name().to_string(),
        message,
    };
    let sink = mux
        .request_pad_simple(&format!("sink_{pid}"))
        .ok_or_else(|| err(format!("mpegtsmux gave no sink pad for PID {pid}")))?;
    let src = from
        .static_pad("src")
        .ok_or_else(|| err("no src pad".into()))?;
    src.link(&sink).map(drop).map_err(|e| err(format!("{e:?}")))
}

fn last(chain: &[gst::Element]) -> Result<gst::Element, PipelineError> {
    chain
        .last()
        .cloned()
        .ok_or_else(|| PipelineError::Config("the source produced no elements".into()))
}
