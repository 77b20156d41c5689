//! What to capture. Each source hands the pipeline a chain of raw-video
//! elements (and optionally raw-audio elements) to link in order; the
//! pipeline does the rest (rate cap, convert, scale, encode, mux).
//!
//! Today only the test source exists; the portal (Wayland) and X11 sources
//! are a later issue and fail to start with a clear message.

pub mod clock;
pub mod test;

use gstreamer as gst;

use crate::pipeline::PipelineError;

/// `--source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// Pick the best available (today: always the test pattern).
    Auto,
    /// A moving test pattern with a tone.
    Test,
    /// The Wayland ScreenCast portal (not built yet).
    Portal,
    /// X11 screen capture (not built yet).
    X11,
    /// A moving test pattern stamped with the wall-clock time of each frame
    /// (for latency measurements: `pixelpass bench latency`).
    Clock,
}

impl SourceKind {
    /// The name used in messages.
    pub fn label(self) -> &'static str {
        match self {
            SourceKind::Auto => "auto",
            SourceKind::Test => "test",
            SourceKind::Portal => "portal",
            SourceKind::X11 => "x11",
            SourceKind::Clock => "clock",
        }
    }
}

/// Resolve `Auto` to a concrete source. The notice (if any) is one line for
/// the caller to print. Explicit kinds are returned unchanged (an explicit
/// `Portal`/`X11` fails later, at start, with a clear error).
pub fn resolve(kind: SourceKind) -> (SourceKind, Option<String>) {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    resolve_with(kind, set("WAYLAND_DISPLAY"), set("DISPLAY"))
}

/// [`resolve`] with the environment passed in (for tests).
pub fn resolve_with(kind: SourceKind, wayland: bool, x11: bool) -> (SourceKind, Option<String>) {
    match kind {
        SourceKind::Auto if !wayland && !x11 => (
            SourceKind::Test,
            Some("no display found (neither WAYLAND_DISPLAY nor DISPLAY is set): streaming a test pattern".into()),
        ),
        SourceKind::Auto => (
            SourceKind::Test,
            Some("desktop capture is not built yet: streaming a test pattern (--source test)".into()),
        ),
        other => (other, None),
    }
}

/// Elements a source needs (for the preflight check). Empty for sources that
/// are not built yet: they fail at start instead.
pub(crate) fn required_elements(kind: SourceKind, audio: bool) -> Vec<&'static str> {
    match kind {
        SourceKind::Auto | SourceKind::Test => {
            let mut v = test::VIDEO_ELEMENTS.to_vec();
            if audio {
                v.extend_from_slice(test::AUDIO_ELEMENTS);
            }
            v
        }
        SourceKind::Clock => {
            let mut v = clock::VIDEO_ELEMENTS.to_vec();
            if audio {
                v.extend_from_slice(test::AUDIO_ELEMENTS);
            }
            v
        }
        SourceKind::Portal | SourceKind::X11 => Vec::new(),
    }
}

/// What the source needs from the pipeline configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VideoParams {
    pub framerate: u32,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// The raw-video chain of `kind`, in link order (not yet in a bin).
pub(crate) fn video(kind: SourceKind, p: VideoParams) -> Result<Vec<gst::Element>, PipelineError> {
    match kind {
        SourceKind::Auto | SourceKind::Test => test::video(p),
        SourceKind::Clock => clock::video(p),
        SourceKind::Portal => Err(PipelineError::SourceUnavailable("portal (Wayland)")),
        SourceKind::X11 => Err(PipelineError::SourceUnavailable("X11")),
    }
}

/// The raw-audio chain of `kind`, in link order. `Ok(None)`: no audio device
/// (not an error: the stream goes on video-only).
pub(crate) fn audio(kind: SourceKind) -> Result<Option<Vec<gst::Element>>, PipelineError> {
    match kind {
        SourceKind::Auto | SourceKind::Test | SourceKind::Clock => test::audio().map(Some),
        SourceKind::Portal => Err(PipelineError::SourceUnavailable("portal (Wayland)")),
        SourceKind::X11 => Err(PipelineError::SourceUnavailable("X11")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_without_display_is_test_with_notice() {
        let (kind, notice) = resolve_with(SourceKind::Auto, false, false);
        assert_eq!(kind, SourceKind::Test);
        assert!(notice.is_some_and(|n| n.contains("no display")));
    }

    #[test]
    fn auto_with_display_is_test_until_capture_is_built() {
        for (w, x) in [(true, false), (false, true), (true, true)] {
            let (kind, notice) = resolve_with(SourceKind::Auto, w, x);
            assert_eq!(kind, SourceKind::Test);
            assert!(notice.is_some_and(|n| n.contains("not built yet")));
        }
    }

    #[test]
    fn explicit_kinds_are_kept_without_notice() {
        for k in [SourceKind::Test, SourceKind::Portal, SourceKind::X11] {
            assert_eq!(resolve_with(k, false, false), (k, None));
        }
    }
}
