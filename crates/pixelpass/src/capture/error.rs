//! What can go wrong in a GStreamer graph, and which Debian package brings a
//! missing element.
//!
//! Every error names the element it is about, so the message in the log and
//! in `/status` says what to look at (and, for a missing element, what to
//! install).

use std::fmt;

use crate::supervisor::{FailureKind, ProducerError};

/// Debian 12 packages that ship each element pixelpass uses (or will use).
/// Checked with `gst-inspect-1.0 <element>` + `dpkg -S <plugin .so>`.
const PACKAGES: &[(&str, &str)] = &[
    // core elements
    ("capsfilter", "libgstreamer1.0-0"),
    ("queue", "libgstreamer1.0-0"),
    ("tee", "libgstreamer1.0-0"),
    ("identity", "libgstreamer1.0-0"),
    ("fdsrc", "libgstreamer1.0-0"),
    // -base
    ("videotestsrc", "gstreamer1.0-plugins-base"),
    ("audiotestsrc", "gstreamer1.0-plugins-base"),
    ("videorate", "gstreamer1.0-plugins-base"),
    ("videoconvert", "gstreamer1.0-plugins-base"),
    ("videoscale", "gstreamer1.0-plugins-base"),
    ("audioconvert", "gstreamer1.0-plugins-base"),
    ("audioresample", "gstreamer1.0-plugins-base"),
    ("appsink", "gstreamer1.0-plugins-base"),
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("opusenc", "gstreamer1.0-plugins-base"),
    ("opusdec", "gstreamer1.0-plugins-base"),
    ("uridecodebin", "gstreamer1.0-plugins-base"),
    // the pango plugin is packaged with the X bits on Debian
    ("timeoverlay", "gstreamer1.0-x"),
    ("clockoverlay", "gstreamer1.0-x"),
    ("textoverlay", "gstreamer1.0-x"),
    // -good
    ("aacparse", "gstreamer1.0-plugins-good"),
    ("rtph264pay", "gstreamer1.0-plugins-good"),
    ("rtpopuspay", "gstreamer1.0-plugins-good"),
    ("rtph264depay", "gstreamer1.0-plugins-good"),
    ("rtpopusdepay", "gstreamer1.0-plugins-good"),
    ("rtpjitterbuffer", "gstreamer1.0-plugins-good"),
    ("ximagesrc", "gstreamer1.0-plugins-good"),
    ("pulsesrc", "gstreamer1.0-pulseaudio"),
    // -bad
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("mpegtsmux", "gstreamer1.0-plugins-bad"),
    ("openh264enc", "gstreamer1.0-plugins-bad"),
    ("vah264enc", "gstreamer1.0-plugins-bad"),
    ("nvh264enc", "gstreamer1.0-plugins-bad"),
    ("voaacenc", "gstreamer1.0-plugins-bad"),
    ("webrtcbin", "gstreamer1.0-plugins-bad"),
    ("srtsrc", "gstreamer1.0-plugins-bad"),
    // -ugly
    ("x264enc", "gstreamer1.0-plugins-ugly"),
    // elsewhere
    ("vaapih264enc", "gstreamer1.0-vaapi"),
    ("avenc_aac", "gstreamer1.0-libav"),
    ("pipewiresrc", "gstreamer1.0-pipewire"),
];

/// The Debian package that ships `element`, when we know it.
pub fn debian_package_for(element: &str) -> Option<&'static str> {
    PACKAGES
        .iter()
        .find(|(e, _)| *e == element)
        .map(|(_, p)| *p)
}

/// The install hint after a missing element's name.
struct InstallHint(Option<&'static str>);

impl fmt::Display for InstallHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pkg) => write!(f, ": apt-get install {pkg}"),
            None => f.write_str(" (no known Debian package; check `gst-inspect-1.0`)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),

    #[error("invalid pipeline setting: {0}")]
    Config(String),

    #[error("missing GStreamer element {element}{}", InstallHint(*.package))]
    MissingElement {
        element: String,
        package: Option<&'static str>,
    },

    #[error(
        "no usable H.264 encoder (tried {tried}): apt-get install gstreamer1.0-plugins-ugly for x264enc"
    )]
    NoEncoder { tried: String },

    #[error("could not create GStreamer element {element}: {message}")]
    Create { element: String, message: String },

    #[error("could not set {element}.{property}: {message}")]
    Property {
        element: String,
        property: String,
        message: String,
    },

    #[error("could not link {from} to {to}: {message}")]
    Link {
        from: String,
        to: String,
        message: String,
    },

    #[error("pipeline could not go to {state}: {message}")]
    StateChange { state: String, message: String },

    /// An ERROR message on the pipeline's bus.
    #[error("{element}: {message}")]
    Bus {
        element: String,
        message: String,
        debug: Option<String>,
    },

    #[error("the pipeline ended (end of stream)")]
    EndOfStream,

    #[error("no media from the pipeline within {0} s")]
    NoMedia(u64),

    #[error("could not start the {what} thread: {message}")]
    Thread { what: &'static str, message: String },
}

impl PipelineError {
    /// `element` is absent: say which package has it.
    pub fn missing(element: &str) -> Self {
        Self::MissingElement {
            element: element.to_owned(),
            package: debian_package_for(element),
        }
    }
}

impl PipelineError {
    /// The kind of failure this is for a run: an end of stream is the
    /// pipeline ending by itself, no media in time is a start that failed,
    /// anything else broke the pipeline. (Seen during a start, the
    /// supervisor counts every kind but a cancel as a failed start.)
    pub fn kind(&self) -> FailureKind {
        match self {
            PipelineError::EndOfStream => FailureKind::Ended,
            PipelineError::Bus { .. } => FailureKind::Crashed,
            _ => FailureKind::StartFailed,
        }
    }
}

impl From<PipelineError> for ProducerError {
    fn from(e: PipelineError) -> Self {
        ProducerError::new(e.kind(), e.to_string())
    }
}

/// `Ok` when every element in `names` can be made here, else the first missing one.
pub fn check_elements<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), PipelineError> {
    for name in names {
        if gstreamer::ElementFactory::find(name).is_none() {
            return Err(PipelineError::missing(name));
        }
    }
    Ok(())
}
