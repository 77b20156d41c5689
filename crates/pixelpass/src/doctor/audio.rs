//! The audio rows of `pixelpass doctor`: does a PulseAudio-protocol server
//! answer, and which sink is the default (its monitor is "system audio").

use gstreamer as gst;

use super::{apt, row, Row, Status};
use crate::capture::source::audio;

pub(super) fn audio_rows() -> (Vec<Row>, bool) {
    if gst::ElementFactory::find("pulsesrc").is_none() {
        return (
            vec![row(
                "audio-server",
                "audio server",
                Status::No,
                "pulsesrc is missing",
                apt("gstreamer1.0-pulseaudio"),
            )],
            false,
        );
    }
    if !audio::server_reachable() {
        return (
            vec![row(
                "audio-server",
                "audio server",
                Status::No,
                "no PulseAudio or pipewire-pulse answers: host streams video only",
                Some("apt-get install pipewire-pulse wireplumber; systemctl --user start pipewire-pulse".into()),
            )],
            false,
        );
    }
    let mut rows = vec![row(
        "audio-server",
        "audio server",
        Status::Ok,
        "PulseAudio protocol answers",
        None,
    )];
    match audio::default_sink() {
        Some(sink) => rows.push(row(
            "default-sink",
            "default sink",
            Status::Ok,
            format!(
                "{sink} (system audio = its monitor, {})",
                audio::SYSTEM_MONITOR
            ),
            None,
        )),
        None => rows.push(row(
            "default-sink",
            "default sink",
            Status::Warn,
            "the audio server names no default sink: system audio may be silent",
            Some("pactl set-default-sink <sink> (pactl list sinks short)".into()),
        )),
    }
    (rows, true)
}
