//! What to capture. Each source hands the pipeline a chain of raw-video
//! elements (and optionally raw-audio elements) to link in order; the
//! pipeline does the rest (rate cap, convert, scale, encode, mux).
//!
//! Sources: the Wayland ScreenCast portal ([`portal`]), X11 ([`x11`]), the
//! test pattern ([`test`]) and the clock pattern ([`clock`]); `auto` picks
//! the first that works here ([`resolve`]). Audio: [`audio`].

pub mod audio;
pub mod clock;
pub mod portal;
pub(crate) mod test;
pub(crate) mod x11;

use gstreamer as gst;

use crate::capture::error::PipelineError;

/// `--source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// The portal in a Wayland session whose portal answers, else X11 when
    /// the display opens, else the test pattern.
    Auto,
    /// A moving test pattern with a tone.
    Test,
    /// The Wayland ScreenCast portal (monitor, or a window with `--window`).
    Portal,
    /// X11 screen capture of `--display` (or `$DISPLAY`).
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

/// Resolve `Auto` to a concrete source, probing the portal and the X
/// display. The notice (if any) is one line for the caller to print, saying
/// which source was chosen and why. Explicit kinds are returned unchanged
/// (they fail at start, with a clear error, when unusable). GStreamer must be
/// initialised.
pub async fn resolve(kind: SourceKind, display: Option<&str>) -> (SourceKind, Option<String>) {
    if kind != SourceKind::Auto {
        return (kind, None);
    }
    let wayland = std::env::var_os("WAYLAND_DISPLAY")
        .filter(|v| !v.is_empty())
        .map(|v| v.to_string_lossy().into_owned());
    let portal = match &wayland {
        Some(_) => portal::probe()
            .await
            .map(|i| i.version)
            .map_err(|e| e.to_string()),
        None => Err("not a Wayland session".to_owned()),
    };
    let x11 = match &portal {
        Ok(_) => Err(String::new()), // not needed
        Err(_) => {
            let display = display.map(str::to_owned);
            tokio::task::spawn_blocking(move || x11::probe(display.as_deref()))
                .await
                .unwrap_or_else(|e| Err(format!("probe panicked: {e}")))
        }
    };
    resolve_with(Found {
        wayland,
        portal,
        x11,
    })
}

/// What [`resolve`] found out about this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `WAYLAND_DISPLAY`, when set.
    pub wayland: Option<String>,
    /// The ScreenCast portal's version, or why there is none.
    pub portal: Result<u32, String>,
    /// The X display that opened, or why none did.
    pub x11: Result<String, String>,
}

/// `Auto`'s choice from what was found (pure, for tests).
pub fn resolve_with(found: Found) -> (SourceKind, Option<String>) {
    match (&found.wayland, &found.portal, &found.x11) {
        (Some(w), Ok(v), _) => (
            SourceKind::Portal,
            Some(format!("Wayland session ({w}) with a ScreenCast portal (version {v}): capturing through the portal")),
        ),
        (_, Err(why_not), Ok(display)) => (
            SourceKind::X11,
            Some(format!("no screen-cast portal ({why_not}): capturing X display {display}")),
        ),
        (_, Err(portal), Err(x11)) => (
            SourceKind::Test,
            Some(format!("no desktop to capture (portal: {portal}; X11: {x11}): streaming a test pattern")),
        ),
        (None, Ok(_), _) => (SourceKind::Test, Some("not a Wayland session: streaming a test pattern".into())),
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
        SourceKind::Portal | SourceKind::X11 => {
            let mut v = match kind {
                SourceKind::Portal => portal::VIDEO_ELEMENTS.to_vec(),
                _ => x11::VIDEO_ELEMENTS.to_vec(),
            };
            if audio {
                v.extend_from_slice(audio::ELEMENTS);
            }
            v
        }
    }
}

/// What the source needs from the pipeline configuration.
#[derive(Clone, Copy, Debug)]
pub struct VideoParams {
    pub framerate: u32,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// What a desktop source needs beyond [`VideoParams`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Desktop<'a> {
    /// `--display` (X11; `None`: `$DISPLAY`).
    pub display: Option<&'a str>,
    /// The portal's stream for this run.
    pub portal: Option<portal::PortalStream>,
}

/// The raw-video chain of `kind`, in link order (not yet in a bin).
pub(crate) fn video(
    kind: SourceKind,
    p: VideoParams,
    desktop: Desktop<'_>,
) -> Result<Vec<gst::Element>, PipelineError> {
    match kind {
        SourceKind::Auto | SourceKind::Test => test::video(p),
        SourceKind::Clock => clock::video(p),
        SourceKind::Portal => match desktop.portal {
            Some(stream) => portal::video(stream, p),
            None => Err(PipelineError::Config(
                "the portal source needs a started screencast".into(),
            )),
        },
        SourceKind::X11 => x11::video(p, desktop.display),
    }
}

/// Does `kind` deliver frames only when the picture changes (so the graph
/// must repeat frames to keep a steady rate)?
pub(crate) fn needs_frame_repeat(kind: SourceKind) -> bool {
    kind == SourceKind::Portal
}

/// The raw-audio chain of `kind`, in link order. `Ok(None)`: no audio device
/// (not an error: the stream goes on video-only). The pattern sources keep their own tone unless a device is named.
pub(crate) fn audio(
    kind: SourceKind,
    from: &audio::AudioSource,
) -> Result<Option<Vec<gst::Element>>, PipelineError> {
    match (kind, from) {
        (SourceKind::Auto | SourceKind::Test | SourceKind::Clock, audio::AudioSource::System) => {
            test::audio().map(Some)
        }
        _ => audio::pulse(from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(wayland: bool, portal: bool, x11: bool) -> Found {
        Found {
            wayland: wayland.then(|| "wayland-1".to_owned()),
            portal: if portal {
                Ok(4)
            } else {
                Err("no portal".into())
            },
            x11: if x11 {
                Ok(":0".into())
            } else {
                Err("DISPLAY is not set".into())
            },
        }
    }

    #[test]
    fn auto_prefers_the_portal_in_a_wayland_session() {
        for x in [false, true] {
            let (kind, notice) = resolve_with(found(true, true, x));
            assert_eq!(kind, SourceKind::Portal);
            let n = notice.unwrap();
            assert!(
                n.contains("Wayland session (wayland-1)") && n.contains("version 4"),
                "{n}"
            );
        }
    }

    #[test]
    fn auto_falls_back_to_x11_then_to_the_test_pattern_saying_why() {
        for w in [false, true] {
            let (kind, notice) = resolve_with(found(w, false, true));
            assert_eq!(kind, SourceKind::X11);
            assert!(notice
                .unwrap()
                .contains("no screen-cast portal (no portal): capturing X display :0"));
            let (kind, notice) = resolve_with(found(w, false, false));
            assert_eq!(kind, SourceKind::Test);
            let n = notice.unwrap();
            assert!(
                n.contains("portal: no portal") && n.contains("X11: DISPLAY is not set"),
                "{n}"
            );
        }
    }

    #[tokio::test]
    async fn explicit_kinds_are_kept_without_notice() {
        for k in [
            SourceKind::Test,
            SourceKind::Portal,
            SourceKind::X11,
            SourceKind::Clock,
        ] {
            assert_eq!(resolve(k, None).await, (k, None));
        }
    }

    #[test]
    fn only_the_portal_needs_frames_repeated() {
        assert!(needs_frame_repeat(SourceKind::Portal));
        assert!(!needs_frame_repeat(SourceKind::X11) && !needs_frame_repeat(SourceKind::Test));
    }
}
