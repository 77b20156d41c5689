//! The encoder rows of `pixelpass doctor`: each H.264 encoder, the AAC and
//! the Opus encoder, really encoding a few frames in a throwaway pipeline.

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{apt, row, Row, Status};
use crate::capture::debian_package_for;
use crate::capture::encoder::{self, EncoderChoice, EncoderKind, EncoderSettings};

fn encoder_fix(kind: EncoderKind) -> Option<String> {
    match kind {
        EncoderKind::VaH264 => Some(
            "needs a VA-API GPU and driver: apt-get install gstreamer1.0-plugins-bad intel-media-va-driver (Intel) or mesa-va-drivers (AMD)"
                .into(),
        ),
        EncoderKind::Vaapi => apt("gstreamer1.0-vaapi (and a VA-API driver: intel-media-va-driver or mesa-va-drivers)"),
        EncoderKind::Nvenc => Some("needs an NVIDIA GPU with its proprietary driver (nvh264enc is in gstreamer1.0-plugins-bad)".into()),
        EncoderKind::X264 => apt("gstreamer1.0-plugins-ugly"),
        EncoderKind::OpenH264 => apt(debian_package_for("openh264enc").unwrap_or("gstreamer1.0-plugins-bad")),
    }
}

/// Each H.264 encoder, really encoding a few frames; the first that works is
/// the one `host` uses.
pub(super) fn encoder_rows() -> (Vec<Row>, Option<EncoderChoice>) {
    let mut rows = Vec::new();
    let mut chosen = None;
    for kind in EncoderKind::PREFERENCE {
        let name = kind.element();
        let id = format!("h264:{name}");
        let check = format!("H.264 encoder {name}");
        if gst::ElementFactory::find(name).is_none() {
            rows.push(row(
                id,
                check,
                Status::No,
                "element not present",
                encoder_fix(kind),
            ));
            continue;
        }
        match encode_probe(kind) {
            Ok(()) => {
                let detail = if chosen.is_none() {
                    chosen = Some(EncoderChoice::new(kind));
                    "encodes (host uses this one)".to_owned()
                } else {
                    "encodes".to_owned()
                };
                rows.push(row(id, check, Status::Ok, detail, None));
            }
            Err(e) => rows.push(row(
                id,
                check,
                Status::No,
                format!("present but cannot encode: {e}"),
                encoder_fix(kind),
            )),
        }
    }
    (rows, chosen)
}

/// videotestsrc → the encoder as `host` configures it → fakesink, 10 frames.
fn encode_probe(kind: EncoderKind) -> Result<(), String> {
    let settings = EncoderSettings {
        bitrate_kbps: 1000,
        framerate: 30,
        screen: true,
    };
    let enc =
        encoder::make_encoder(EncoderChoice::new(kind), settings).map_err(|e| e.to_string())?;
    let src = gst::ElementFactory::make("videotestsrc")
        .property("num-buffers", 10i32)
        .build()
        .map_err(|e| e.to_string())?;
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", 320i32)
        .field("height", 240i32)
        .field("framerate", gst::Fraction::new(30, 1))
        .build();
    let filter = gst::ElementFactory::make("capsfilter")
        .property("caps", caps)
        .build()
        .map_err(|e| e.to_string())?;
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
        .map_err(|e| e.to_string())?;
    run_to_eos(&[src, filter, enc, sink])
}

/// Play `chain` until EOS (Ok) or the first ERROR, at most 10 s.
fn run_to_eos(chain: &[gst::Element]) -> Result<(), String> {
    let pipeline = gst::Pipeline::new();
    pipeline.add_many(chain).map_err(|e| e.to_string())?;
    gst::Element::link_many(chain).map_err(|e| e.to_string())?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let result = match pipeline.set_state(gst::State::Playing) {
        Err(_) => {
            // The reason is on the bus.
            match bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(500),
                &[gst::MessageType::Error],
            ) {
                Some(m) => Err(describe(&m)),
                None => Err("could not start".into()),
            }
        }
        Ok(_) => match bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            Some(m) if m.type_() == gst::MessageType::Eos => Ok(()),
            Some(m) => Err(describe(&m)),
            None => Err("no result within 10 s".into()),
        },
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn describe(m: &gst::Message) -> String {
    match m.view() {
        gst::MessageView::Error(e) => {
            let src = m.src().map(|s| s.name().to_string()).unwrap_or_default();
            format!("{src}: {}", e.error())
        }
        _ => format!("{:?}", m.type_()),
    }
}

/// AAC (TS branch) and Opus (WebRTC branch), each encoding a little audio.
pub(super) fn codec_rows() -> (Vec<Row>, bool) {
    let mut rows = Vec::new();
    let aac = encoder::AAC_ENCODERS
        .iter()
        .copied()
        .find(|n| gst::ElementFactory::find(n).is_some());
    let aac_ok = match aac {
        Some(name) => match audio_probe(name) {
            Ok(()) => {
                rows.push(row(
                    "aac",
                    "AAC encoder",
                    Status::Ok,
                    format!("{name} encodes"),
                    None,
                ));
                true
            }
            Err(e) => {
                rows.push(row(
                    "aac",
                    "AAC encoder",
                    Status::No,
                    format!("{name}: {e}"),
                    apt("gstreamer1.0-libav"),
                ));
                false
            }
        },
        None => {
            rows.push(row(
                "aac",
                "AAC encoder",
                Status::No,
                format!("none of {} present", encoder::AAC_ENCODERS.join(", ")),
                apt("gstreamer1.0-libav"),
            ));
            false
        }
    };
    if gst::ElementFactory::find("opusenc").is_some() {
        match audio_probe("opusenc") {
            Ok(()) => rows.push(row(
                "opus",
                "Opus encoder",
                Status::Ok,
                "opusenc encodes",
                None,
            )),
            Err(e) => rows.push(row(
                "opus",
                "Opus encoder",
                Status::No,
                format!("opusenc: {e}"),
                apt("gstreamer1.0-plugins-base"),
            )),
        }
    } else {
        rows.push(row(
            "opus",
            "Opus encoder",
            Status::No,
            "opusenc missing: WebRTC viewers get no sound",
            apt("gstreamer1.0-plugins-base"),
        ));
    }
    (rows, aac_ok)
}

fn audio_probe(factory: &str) -> Result<(), String> {
    let src = gst::ElementFactory::make("audiotestsrc")
        .property("num-buffers", 20i32)
        .build()
        .map_err(|e| e.to_string())?;
    let conv = gst::ElementFactory::make("audioconvert")
        .build()
        .map_err(|e| e.to_string())?;
    let res = gst::ElementFactory::make("audioresample")
        .build()
        .map_err(|e| e.to_string())?;
    let caps = gst::Caps::builder("audio/x-raw")
        .field("rate", 48_000i32)
        .field("channels", 2i32)
        .build();
    let filter = gst::ElementFactory::make("capsfilter")
        .property("caps", caps)
        .build()
        .map_err(|e| e.to_string())?;
    let enc = gst::ElementFactory::make(factory)
        .build()
        .map_err(|e| e.to_string())?;
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
        .map_err(|e| e.to_string())?;
    run_to_eos(&[src, conv, res, filter, enc, sink])
}
