//! Audio for `host`: `--audio system|none|DEVICE`.
//!
//! System audio is what the default output plays: the default sink's monitor,
//! which PulseAudio and pipewire-pulse both call `@DEFAULT_MONITOR@` (no
//! `pactl` needed). A DEVICE is any PulseAudio source name (`pactl list
//! sources short`). No audio server is not an error: the stream goes on
//! video-only and says so once.

use std::sync::atomic::{AtomicBool, Ordering};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::capture::element::{build, builder, set_bool};
use crate::capture::error::PipelineError;

/// The default sink's monitor, in PulseAudio's (and pipewire-pulse's) words.
pub const SYSTEM_MONITOR: &str = "@DEFAULT_MONITOR@";

pub const ELEMENTS: &[&str] = &["pulsesrc"];

/// Where audio comes from (when there is audio at all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AudioSource {
    /// The default sink's monitor; for the test source, its own tone.
    #[default]
    System,
    /// A PulseAudio source by name.
    Device(String),
}

/// `--audio`: `system`, `none` or a device name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioArg {
    System,
    None,
    Device(String),
}

impl AudioArg {
    /// `(with audio?, from where)`.
    pub fn split(&self) -> (bool, AudioSource) {
        match self {
            AudioArg::System => (true, AudioSource::System),
            AudioArg::None => (false, AudioSource::System),
            AudioArg::Device(d) => (true, AudioSource::Device(d.clone())),
        }
    }
}

impl std::str::FromStr for AudioArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Err("--audio needs system, none or a device name".into()),
            "system" | "default" => Ok(AudioArg::System),
            "none" | "off" => Ok(AudioArg::None),
            d if d.chars().any(char::is_control) => {
                Err("a device name has no control characters".into())
            }
            d => Ok(AudioArg::Device(d.to_owned())),
        }
    }
}

impl std::fmt::Display for AudioArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AudioArg::System => f.write_str("system"),
            AudioArg::None => f.write_str("none"),
            AudioArg::Device(d) => f.write_str(d),
        }
    }
}

impl AudioSource {
    pub fn device(&self) -> &str {
        match self {
            AudioSource::System => SYSTEM_MONITOR,
            AudioSource::Device(d) => d,
        }
    }
}

/// Is a PulseAudio-protocol server (PulseAudio or pipewire-pulse) reachable?
/// `pulsesrc` connects to it when it goes to READY.
pub fn server_reachable() -> bool {
    let Ok(src) = gst::ElementFactory::make("pulsesrc").build() else {
        return false;
    };
    let ok = src.set_state(gst::State::Ready).is_ok();
    let _ = src.set_state(gst::State::Null);
    ok
}

/// The default sink's name (its monitor is "system audio"), when a PulseAudio
/// server says which one it is. Asks the pulse device provider alone: a
/// `DeviceMonitor` would also start PipeWire's provider, which corrupts the
/// heap when stopped soon after starting (PipeWire 0.3.65).
pub fn default_sink() -> Option<String> {
    let provider = gst::DeviceProviderFactory::by_name("pulsedeviceprovider")?;
    // Only a started provider asks the server which sink is the default.
    provider.start().ok()?;
    let found = provider.devices().iter().find_map(|d| {
        if !d.has_classes("Audio/Sink") {
            return None;
        }
        let props = d.properties()?;
        props.get::<bool>("is-default").unwrap_or(false).then(|| {
            props
                .get::<String>("node.name")
                .or_else(|_| props.get::<String>("device.name"))
                .unwrap_or_else(|_| d.display_name().to_string())
        })
    });
    provider.stop();
    found
}

/// Said once per process, then only in the debug log.
static NO_SERVER_TOLD: AtomicBool = AtomicBool::new(false);

/// `pulsesrc` on `from`; `Ok(None)` (video-only, with one notice) when no
/// audio server answers.
pub(crate) fn pulse(from: &AudioSource) -> Result<Option<Vec<gst::Element>>, PipelineError> {
    if gst::ElementFactory::find("pulsesrc").is_none() {
        return Err(PipelineError::missing("pulsesrc"));
    }
    if !server_reachable() {
        if !NO_SERVER_TOLD.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "no audio server (PulseAudio or pipewire-pulse) answers: streaming video only \
                 (--audio none silences this notice)"
            );
        } else {
            tracing::debug!("still no audio server: video only");
        }
        return Ok(None);
    }
    let src = build(
        builder("pulsesrc", "pulsesrc")?.property("device", from.device()),
        "pulsesrc",
    )?;
    // The system clock paces the pipeline (as with the other sources); pulsesrc follows it.
    let _ = set_bool(&src, "provide-clock", false);
    tracing::info!(
        device = from.device(),
        "audio: capturing from the audio server"
    );
    Ok(Some(vec![src]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_args_parse() {
        assert_eq!("system".parse::<AudioArg>(), Ok(AudioArg::System));
        assert_eq!("none".parse::<AudioArg>(), Ok(AudioArg::None));
        assert_eq!(
            "alsa_output.pci.monitor".parse::<AudioArg>(),
            Ok(AudioArg::Device("alsa_output.pci.monitor".into()))
        );
        assert!("".parse::<AudioArg>().is_err());
        assert_eq!(AudioArg::None.split(), (false, AudioSource::System));
        assert_eq!(AudioArg::System.split().1.device(), SYSTEM_MONITOR);
        assert_eq!(
            AudioArg::Device("x".into()).split(),
            (true, AudioSource::Device("x".into()))
        );
    }
}
