//! Layers (issue 16): the raw picture encoded up to three times, each encode
//! feeding a hub layer of its own ([`crate::hub::Hub::layer`]).
//!
//! ```text
//!                      ┌► queue(leaky) ─► ENCODER ─► … ─► [RTP tee] ─► mpegtsmux ─► appsink   layer 0 (as before)
//! raw ─► tee(raw-tee) ─┼► queue(leaky) ─► videoscale ─► capsfilter(½ size) ─► ENCODER ─► …     layer 1 (¼ bitrate)
//!                      └► queue(leaky) ─► videorate ─► videoscale ─► capsfilter(¼ size, 10 fps) ─► ENCODER ─► … layer 2
//! AAC (encoded once) ─► tee(aac-tee) ─► queue ─► every layer's mpegtsmux
//! ```
//!
//! Each layer's encoder is the same element (the host's choice) and its own
//! keyframe source; each layer's muxer uses the same PIDs and each layer's
//! RTP payloader the same timestamp offset, so a viewer can move between
//! layers at a keyframe (HTTP: PSI, then the keyframe; WebRTC: timestamps
//! that continue). The sizes of layers 1.. are halvings of what reaches the
//! tee: set when the raw caps are known (a pad probe on the tee's sink pad),
//! so a desktop of any size works.

use gstreamer as gst;
use gstreamer::prelude::*;

use super::element::{add_and_link, h264_au_filter, h264parse_named};
use super::element::{build, builder, caps_int, make};
use super::encoder::{self, EncoderChoice, EncoderSettings};
use super::error::PipelineError;
use super::PipelineConfig;
use crate::hub::{Hub, LayerInfo, MAX_LAYERS};

/// The frame rate cap of the lowest layer (layer 2).
pub const LOW_FPS: u32 = 10;
/// The lowest layer's bitrate, kbit/s (a link that barely carries video).
pub const LOW_KBPS: u32 = 150;
/// No layer is encoded below this, kbit/s.
const MIN_KBPS: u32 = 50;
/// Nor smaller than this (x264 and friends want a few macroblocks).
const MIN_SIDE: u32 = 16;

/// One layer's encode, planned from the host's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    pub index: usize,
    /// Width and height are layer 0's divided by this (1, 2, 4).
    pub divisor: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// At a lower frame rate than layer 0 (its frames restamped on its own grid).
    pub lower_rate: bool,
}

impl LayerPlan {
    /// This layer's size from layer 0's: divided, rounded down to even.
    pub fn size(&self, width: u32, height: u32) -> (u32, u32) {
        (scaled(width, self.divisor), scaled(height, self.divisor))
    }

    /// The suffix of this layer's element names ("" for layer 0, whose
    /// elements keep the names they had before layers).
    pub fn suffix(&self) -> String {
        match self.index {
            0 => String::new(),
            i => format!("-l{i}"),
        }
    }
}

fn scaled(side: u32, divisor: u32) -> u32 {
    ((side / divisor.max(1)) & !1).max(MIN_SIDE)
}

/// The layers `cfg` asks for: layer 0 as configured; layer 1 at half the
/// size and a quarter of the bitrate; layer 2 at a quarter of the size,
/// [`LOW_FPS`] and [`LOW_KBPS`].
pub fn plan(cfg: &PipelineConfig) -> Vec<LayerPlan> {
    let n = cfg.layers.clamp(1, MAX_LAYERS);
    let base = LayerPlan {
        index: 0,
        divisor: 1,
        fps: cfg.framerate,
        bitrate_kbps: cfg.bitrate_kbps,
        lower_rate: false,
    };
    let mid = LayerPlan {
        index: 1,
        divisor: 2,
        fps: cfg.framerate,
        bitrate_kbps: (cfg.bitrate_kbps / 4).max(MIN_KBPS),
        lower_rate: false,
    };
    let low = LayerPlan {
        index: 2,
        divisor: 4,
        fps: cfg.framerate.min(LOW_FPS),
        bitrate_kbps: LOW_KBPS.min(mid.bitrate_kbps).max(MIN_KBPS),
        lower_rate: cfg.framerate > LOW_FPS,
    };
    [base, mid, low].into_iter().take(n).collect()
}

/// Layer 0's size when it is known before capture starts (asked for, or
/// the pattern sources' default); a desktop's is known once it runs.
pub fn known_size(cfg: &PipelineConfig) -> Option<(u32, u32)> {
    use super::source::{test, SourceKind};
    match (cfg.width, cfg.height, cfg.source) {
        (Some(w), Some(h), _) => Some((w, h)),
        (w, h, SourceKind::Test | SourceKind::Clock) => Some((
            w.unwrap_or(test::DEFAULT_WIDTH),
            h.unwrap_or(test::DEFAULT_HEIGHT),
        )),
        _ => None,
    }
}

/// The layers in one line, e.g. "1280×720 4000k, 640×360 1000k" (for the
/// banner); "source size 4000k, ½ size 1000k" when the size is not known yet.
pub fn describe(cfg: &PipelineConfig) -> String {
    let size = known_size(cfg);
    plan(cfg)
        .iter()
        .map(|p| {
            let fps = if p.fps == cfg.framerate {
                String::new()
            } else {
                format!(" {} fps", p.fps)
            };
            let dims = match (size, p.divisor) {
                (Some((w, h)), _) => {
                    let (w, h) = p.size(w, h);
                    format!("{w}×{h}")
                }
                (None, 1) => "source size".to_owned(),
                (None, d) => format!("1/{d} size"),
            };
            format!("{dims} {}k{fps}", p.bitrate_kbps)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One layer's encode chain, linked and in the pipeline.
pub(crate) struct EncodeChain {
    pub plan: LayerPlan,
    /// The leaky queue the raw picture enters by.
    pub input: gst::Element,
    pub encoder: gst::Element,
    /// Encoded H.264 (byte-stream, AU-aligned, SPS/PPS at every keyframe).
    pub output: gst::Element,
    /// The capsfilter fixing this layer's size and rate (layers 1..).
    pub scale_caps: Option<gst::Element>,
}

/// queue(leaky) → [videorate] → [videoscale → capsfilter] → encoder →
/// capsfilter(constrained-baseline) → h264parse → capsfilter(byte-stream, au).
pub(crate) fn encode_chain(
    pipeline: &gst::Pipeline,
    plan: LayerPlan,
    choice: EncoderChoice,
    screen: bool,
) -> Result<EncodeChain, PipelineError> {
    let sfx = plan.suffix();
    let mut chain = vec![build(
        builder("queue", &format!("encoder-queue{sfx}"))?
            .property_from_str("leaky", "downstream")
            .property("max-size-buffers", 3u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64),
        "queue",
    )?];
    let scale_caps = if plan.index == 0 {
        None
    } else {
        if plan.lower_rate {
            // Down to this layer's rate. Not drop-only: that keeps the kept
            // frames' own times (0, 66, 166 ms… for 30 → 10 fps), which a
            // player at 10 fps rounds onto the same tick; here every frame
            // is stamped on the layer's own grid. A layer at layer 0's rate
            // has no videorate: its frames keep layer 0's timestamps.
            chain.push(make("videorate", &format!("videorate{sfx}"))?);
        }
        chain.push(make("videoscale", &format!("videoscale{sfx}"))?);
        // The size comes with the raw caps (see `size_layers_from_raw_caps`);
        // the branch keeps its renegotiation to itself: a reconfigure
        // reaching the portal's PipeWire source froze the picture on its
        // first frame.
        if let Some(pad) = chain[0].static_pad("sink") {
            pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Event(ev))
                        if ev.type_() == gst::EventType::Reconfigure =>
                    {
                        gst::PadProbeReturn::Drop
                    }
                    _ => gst::PadProbeReturn::Ok,
                }
            });
        }
        let caps = gst::Caps::builder("video/x-raw")
            .field(
                "framerate",
                gst::Fraction::new(caps_int(plan.fps, "framerate")?, 1),
            )
            .build();
        let filter = build(
            builder("capsfilter", &format!("layer-caps{sfx}"))?.property("caps", caps),
            "capsfilter",
        )?;
        chain.push(filter.clone());
        Some(filter)
    };
    let settings = EncoderSettings {
        bitrate_kbps: plan.bitrate_kbps,
        framerate: plan.fps,
        screen,
    };
    let encoder =
        encoder::make_encoder_named(choice, settings, &format!("{}{sfx}", choice.element))?;
    chain.push(encoder.clone());
    chain.push(build(
        builder("capsfilter", &format!("encoder-caps{sfx}"))?
            .property("caps", encoder::output_caps()),
        "capsfilter",
    )?);
    chain.push(h264parse_named(&format!("h264parse{sfx}"))?);
    let output = h264_au_filter(&format!("h264-caps{sfx}"))?;
    chain.push(output.clone());
    add_and_link(pipeline, &chain)?;
    Ok(EncodeChain {
        plan,
        input: chain[0].clone(),
        encoder,
        output,
        scale_caps,
    })
}

/// When the raw caps reach the tee (`tee_sink`), fix each lower layer's
/// size: a halving of the raw picture, square pixels kept as they are.
pub(crate) fn size_layers_from_raw_caps(tee_sink: &gst::Pad, chains: &[EncodeChain]) {
    let targets: Vec<(LayerPlan, gst::Element)> = chains
        .iter()
        .filter_map(|c| c.scale_caps.clone().map(|f| (c.plan, f)))
        .collect();
    if targets.is_empty() {
        return;
    }
    // The portal's source sends the same caps again and again (PipeWire
    // renegotiates on its own); setting a capsfilter's caps makes it ask
    // upstream to reconfigure, which renegotiates PipeWire again: the
    // picture froze on its first frame. So only a new size is set.
    let last: std::sync::Mutex<Option<(i32, i32, gst::Fraction)>> = std::sync::Mutex::new(None);
    tee_sink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(ev)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(c) = ev.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(s) = c.caps().structure(0) else {
            return gst::PadProbeReturn::Ok;
        };
        let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) else {
            return gst::PadProbeReturn::Ok;
        };
        let par = s
            .get::<gst::Fraction>("pixel-aspect-ratio")
            .unwrap_or_else(|_| gst::Fraction::new(1, 1));
        {
            let mut seen = last.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == Some((w, h, par)) {
                return gst::PadProbeReturn::Ok;
            }
            *seen = Some((w, h, par));
        }
        for (plan, filter) in &targets {
            let (lw, lh) = plan.size(w.unsigned_abs(), h.unsigned_abs());
            let caps = gst::Caps::builder("video/x-raw")
                .field("width", i32::try_from(lw).unwrap_or(i32::MAX))
                .field("height", i32::try_from(lh).unwrap_or(i32::MAX))
                .field("pixel-aspect-ratio", par)
                .field(
                    "framerate",
                    gst::Fraction::new(i32::try_from(plan.fps).unwrap_or(30), 1),
                )
                .build();
            filter.set_property("caps", caps);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Tell each layer hub what it carries, from the caps its encoder takes.
pub(crate) fn report_layer_info(chains: &[EncodeChain], hub: &Hub) {
    for chain in chains {
        let (Some(layer), Some(pad)) = (
            hub.layer(chain.plan.index),
            chain.encoder.static_pad("sink"),
        ) else {
            continue;
        };
        let plan = chain.plan;
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(ev)) = &info.data {
                if let gst::EventView::Caps(c) = ev.view() {
                    if let Some(s) = c.caps().structure(0) {
                        let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) else {
                            return gst::PadProbeReturn::Ok;
                        };
                        layer.set_layer_info(LayerInfo {
                            width: w.unsigned_abs(),
                            height: h.unsigned_abs(),
                            fps: plan.fps,
                            bitrate_kbps: plan.bitrate_kbps,
                        });
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::source::SourceKind;

    fn cfg(layers: usize, bitrate: u32) -> PipelineConfig {
        PipelineConfig {
            source: SourceKind::Test,
            bitrate_kbps: bitrate,
            width: Some(1280),
            height: Some(720),
            layers,
            ..PipelineConfig::default()
        }
    }

    #[test]
    fn layers_halve_the_size_quarter_the_bitrate_and_end_very_low() {
        let p = plan(&cfg(3, 4000));
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].bitrate_kbps, p[0].fps, p[0].size(1280, 720)),
            (4000, 30, (1280, 720))
        );
        assert_eq!(
            (p[1].bitrate_kbps, p[1].fps, p[1].size(1280, 720)),
            (1000, 30, (640, 360))
        );
        assert_eq!(
            (p[2].bitrate_kbps, p[2].fps, p[2].size(1280, 720)),
            (150, 10, (320, 180))
        );
        assert_eq!(plan(&cfg(1, 4000)).len(), 1);
        assert_eq!(plan(&cfg(9, 4000)).len(), MAX_LAYERS);
        // Odd halves round down to even sizes.
        assert_eq!(p[1].size(1366, 770), (682, 384));
        assert_eq!(p[2].size(1366, 770), (340, 192));
        // A tiny bitrate does not go below the floor.
        assert_eq!(plan(&cfg(3, 100))[1].bitrate_kbps, MIN_KBPS);
        assert_eq!(
            describe(&cfg(3, 4000)),
            "1280×720 4000k, 640×360 1000k, 320×180 150k 10 fps"
        );
        let desktop = PipelineConfig {
            source: SourceKind::X11,
            layers: 2,
            ..PipelineConfig::default()
        };
        assert_eq!(describe(&desktop), "source size 2500k, 1/2 size 625k");
    }
}
