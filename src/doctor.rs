//! `pixelpass doctor`: what works on this machine for `host`, and how to fix
//! what does not. Every check really tries the thing (connects to the bus and
//! the portal, opens the X display, connects to the audio server, encodes a
//! few frames with each H.264 encoder) rather than only looking for files.
//!
//! Exit status: 0 when `pixelpass host` (with its defaults) can run here,
//! 1 when it cannot.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;

use crate::pipeline::encoder::{self, EncoderChoice, EncoderKind, EncoderSettings};
use crate::pipeline::{self, debian_package_for, PipelineError};
use crate::source::{self, audio, portal, x11};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Ok,
    /// Works, with a limitation worth knowing.
    Warn,
    /// Not here (not necessarily a problem: another source or encoder may do).
    No,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::No => "no",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Stable key (for scripts and tests), e.g. `portal`, `h264:x264enc`.
    pub id: String,
    /// What was checked, for people.
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// The exact package or command that fixes a `no` / `warn`.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Can `pixelpass host` run with its defaults?
    pub host_can_run: bool,
    /// Why not, when it cannot.
    pub blocker: Option<String>,
    /// What `--source auto` picks here.
    pub auto_source: String,
    /// The H.264 encoder `host` would use.
    pub encoder: Option<String>,
}

impl Report {
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }
}

fn row(
    id: impl Into<String>,
    check: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Row {
    Row {
        id: id.into(),
        check: check.into(),
        status,
        detail: detail.into(),
        fix,
    }
}

fn apt(pkgs: &str) -> Option<String> {
    Some(format!("apt-get install {pkgs}"))
}

/// `pixelpass doctor [--json]`.
pub fn run(json: bool) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(examine());
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.host_can_run {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Run every check.
pub async fn examine() -> Report {
    let mut rows = Vec::new();
    if let Err(e) = pipeline::init() {
        rows.push(row(
            "gstreamer",
            "GStreamer",
            Status::No,
            e.to_string(),
            apt("gstreamer1.0-plugins-base"),
        ));
        return Report {
            rows,
            host_can_run: false,
            blocker: Some(e.to_string()),
            auto_source: "none".into(),
            encoder: None,
        };
    }
    rows.push(row(
        "gstreamer",
        "GStreamer",
        Status::Ok,
        gst::version_string().to_string(),
        None,
    ));

    // ── capture ──
    let wayland = wayland_row();
    let wayland_ok = wayland.status == Status::Ok;
    rows.push(wayland);
    rows.push(dbus_row().await);
    let portal_row = portal_row().await;
    let portal_version = portal_version(&portal_row);
    rows.push(portal_row);
    rows.push(pipewire_row());
    let x11_row = tokio::task::spawn_blocking(x11_row)
        .await
        .unwrap_or_else(|e| {
            row(
                "x11",
                "X display",
                Status::No,
                format!("probe panicked: {e}"),
                None,
            )
        });
    let x11_display = (x11_row.status == Status::Ok).then(|| x11_row.detail.clone());
    rows.push(x11_row);
    let (auto_kind, why) = source::resolve_with(source::Found {
        wayland: if wayland_ok {
            std::env::var("WAYLAND_DISPLAY").ok()
        } else {
            None
        },
        portal: portal_version.ok_or_else(|| "no usable portal".to_owned()),
        x11: x11_display.ok_or_else(|| "no X display".to_owned()),
    });
    rows.push(row(
        "auto-source",
        "--source auto picks",
        Status::Ok,
        format!("{}: {}", auto_kind.label(), why.unwrap_or_default()),
        None,
    ));

    // ── audio ──
    let (audio_rows, _) = tokio::task::spawn_blocking(audio_rows)
        .await
        .unwrap_or_else(|e| {
            (
                vec![row(
                    "audio-server",
                    "audio server",
                    Status::No,
                    format!("probe panicked: {e}"),
                    None,
                )],
                false,
            )
        });
    rows.extend(audio_rows);

    // ── encoding and muxing ──
    let (enc_rows, encoder) = tokio::task::spawn_blocking(encoder_rows)
        .await
        .unwrap_or_else(|e| {
            (
                vec![row(
                    "h264",
                    "H.264 encoders",
                    Status::No,
                    format!("probe panicked: {e}"),
                    None,
                )],
                None,
            )
        });
    rows.extend(enc_rows);
    let (codec_rows, aac_ok) = tokio::task::spawn_blocking(codec_rows)
        .await
        .unwrap_or_else(|e| {
            (
                vec![row(
                    "aac",
                    "AAC encoder",
                    Status::No,
                    format!("probe panicked: {e}"),
                    None,
                )],
                false,
            )
        });
    rows.extend(codec_rows);
    let elements = elements_row();
    let elements_ok = elements.status == Status::Ok;
    rows.push(elements);

    // ── viewing ──
    rows.extend(viewer_rows());
    rows.push(ffmpeg_row());

    let blocker = if encoder.is_none() {
        Some(
            "no H.264 encoder works: apt-get install gstreamer1.0-plugins-ugly (x264enc)"
                .to_owned(),
        )
    } else if !aac_ok {
        Some("no AAC encoder works: apt-get install gstreamer1.0-libav (avenc_aac)".to_owned())
    } else if !elements_ok {
        rows.iter()
            .find(|r| r.id == "elements")
            .map(|r| r.detail.clone())
    } else {
        None
    };
    Report {
        rows,
        host_can_run: blocker.is_none(),
        blocker,
        auto_source: auto_kind.label().to_owned(),
        encoder: encoder.map(|e| e.to_string()),
    }
}

fn runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn wayland_row() -> Row {
    let check = "Wayland session";
    let fix = Some("log in to a Wayland session (or use --source x11 / --source test)".to_owned());
    let Some(name) = std::env::var_os("WAYLAND_DISPLAY").filter(|v| !v.is_empty()) else {
        return row(
            "wayland",
            check,
            Status::No,
            "WAYLAND_DISPLAY is not set",
            fix,
        );
    };
    let name = PathBuf::from(name);
    let socket = if name.is_absolute() {
        Some(name.clone())
    } else {
        runtime_dir().map(|d| d.join(&name))
    };
    match socket {
        Some(s) if std::os::unix::net::UnixStream::connect(&s).is_ok() => row(
            "wayland",
            check,
            Status::Ok,
            name.display().to_string(),
            None,
        ),
        Some(s) => row(
            "wayland",
            check,
            Status::No,
            format!("cannot connect to {}", s.display()),
            fix,
        ),
        None => row(
            "wayland",
            check,
            Status::No,
            "XDG_RUNTIME_DIR is not set",
            fix,
        ),
    }
}

async fn dbus_row() -> Row {
    let check = "D-Bus session bus";
    match tokio::time::timeout(Duration::from_secs(5), ashpd::zbus::Connection::session()).await {
        Ok(Ok(_)) => row("dbus", check, Status::Ok, "connected", None),
        Ok(Err(e)) => row(
            "dbus",
            check,
            Status::No,
            e.to_string(),
            Some("run inside a desktop session (dbus-user-session)".into()),
        ),
        Err(_) => row(
            "dbus",
            check,
            Status::No,
            "connecting timed out",
            Some("run inside a desktop session".into()),
        ),
    }
}

async fn portal_row() -> Row {
    let check = "ScreenCast portal";
    let fix = apt("xdg-desktop-portal plus the backend of this desktop: xdg-desktop-portal-gnome, -kde or -wlr (sway)");
    match portal::probe().await {
        Ok(info) => {
            let kinds = [(info.monitor, "monitor"), (info.window, "window")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, k)| *k)
                .collect::<Vec<_>>()
                .join(", ");
            let detail = format!("version {} ({kinds})", info.version);
            if info.version < 4 {
                row(
                    "portal",
                    check,
                    Status::Warn,
                    format!(
                        "{detail}: cannot remember the selection, the dialog shows at every start"
                    ),
                    apt("a newer xdg-desktop-portal (≥ 1.12)"),
                )
            } else if !info.monitor {
                row(
                    "portal",
                    check,
                    Status::Warn,
                    format!("{detail}: no monitor capture"),
                    fix,
                )
            } else {
                row("portal", check, Status::Ok, detail, None)
            }
        }
        Err(e) => row("portal", check, Status::No, e.to_string(), fix),
    }
}

/// The version in an `ok`/`warn` portal row.
fn portal_version(r: &Row) -> Option<u32> {
    if r.status == Status::No {
        return None;
    }
    r.detail
        .strip_prefix("version ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn pipewire_row() -> Row {
    let check = "PipeWire";
    if gst::ElementFactory::find("pipewiresrc").is_none() {
        return row(
            "pipewire",
            check,
            Status::No,
            "pipewiresrc is missing",
            apt("gstreamer1.0-pipewire"),
        );
    }
    let dir = std::env::var_os("PIPEWIRE_RUNTIME_DIR")
        .map(PathBuf::from)
        .or_else(runtime_dir);
    let name = std::env::var("PIPEWIRE_REMOTE").unwrap_or_else(|_| "pipewire-0".into());
    let Some(dir) = dir else {
        return row(
            "pipewire",
            check,
            Status::No,
            "XDG_RUNTIME_DIR is not set",
            Some("run inside a desktop session".into()),
        );
    };
    let socket = dir.join(&name);
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => row(
            "pipewire",
            check,
            Status::Ok,
            format!("{} answers", socket.display()),
            None,
        ),
        Err(e) => row(
            "pipewire",
            check,
            Status::No,
            format!("{}: {e}", socket.display()),
            Some("apt-get install pipewire wireplumber; systemctl --user start pipewire".into()),
        ),
    }
}

fn x11_row() -> Row {
    match x11::probe(None) {
        Ok(display) => row("x11", "X display", Status::Ok, display, None),
        Err(e) if e.contains("ximagesrc") => row(
            "x11",
            "X display",
            Status::No,
            e,
            apt("gstreamer1.0-plugins-good"),
        ),
        Err(e) => row(
            "x11",
            "X display",
            Status::No,
            e,
            Some("run inside an X session, or set DISPLAY (Xvfb for a virtual one)".into()),
        ),
    }
}

fn audio_rows() -> (Vec<Row>, bool) {
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
fn encoder_rows() -> (Vec<Row>, Option<EncoderChoice>) {
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
fn codec_rows() -> (Vec<Row>, bool) {
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

/// The muxing and WebRTC elements every host run needs.
fn elements_row() -> Row {
    let needed = [
        "videotestsrc",
        "videorate",
        "videoconvert",
        "h264parse",
        "mpegtsmux",
        "appsink",
        "rtph264pay",
        "rtpopuspay",
        "tee",
    ];
    match pipeline::check_elements(needed) {
        Ok(()) => row(
            "elements",
            "muxing + WebRTC elements",
            Status::Ok,
            "mpegtsmux, h264parse, rtph264pay, rtpopuspay, …",
            None,
        ),
        Err(PipelineError::MissingElement { element, package }) => row(
            "elements",
            "muxing + WebRTC elements",
            Status::No,
            format!("missing GStreamer element {element}"),
            package.map(|p| format!("apt-get install {p}")),
        ),
        Err(e) => row(
            "elements",
            "muxing + WebRTC elements",
            Status::No,
            e.to_string(),
            None,
        ),
    }
}

pub(crate) fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
                return Some(p);
            }
        }
    }
    None
}

/// `pixelpass serve` runs FFmpeg for every stream.
fn ffmpeg_row() -> Row {
    let check = "ffmpeg (pixelpass serve)";
    if let Some(p) = std::env::var_os("PIXELPASS_FFMPEG") {
        return row(
            "ffmpeg",
            check,
            Status::Ok,
            format!("{} (PIXELPASS_FFMPEG)", p.to_string_lossy()),
            None,
        );
    }
    match on_path(&["ffmpeg"]) {
        Some(p) => row("ffmpeg", check, Status::Ok, p.display().to_string(), None),
        None => row(
            "ffmpeg",
            check,
            Status::No,
            "not found on PATH: serve's streams cannot start (host does not need it)",
            apt("ffmpeg"),
        ),
    }
}

fn viewer_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    match on_path(&[
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]) {
        Some(p) => rows.push(row(
            "chromium",
            "browser (WebRTC player page)",
            Status::Ok,
            p.display().to_string(),
            None,
        )),
        None => rows.push(row(
            "chromium",
            "browser (WebRTC player page)",
            Status::No,
            "no Chromium or Chrome on PATH (any WebRTC browser on another machine works too)",
            apt("chromium"),
        )),
    }
    match on_path(&["mpv"]) {
        Some(p) => rows.push(row(
            "mpv",
            "mpv (HTTP-TS player)",
            Status::Ok,
            p.display().to_string(),
            None,
        )),
        None => {
            let other = on_path(&["ffplay", "vlc"])
                .map(|p| format!("not found; {} can play the stream", p.display()));
            rows.push(row(
                "mpv",
                "mpv (HTTP-TS player)",
                Status::No,
                other.unwrap_or_else(|| "not found".into()),
                apt("mpv"),
            ))
        }
    }
    rows
}

/// The table people read.
pub fn render(r: &Report) -> String {
    let w = r
        .rows
        .iter()
        .map(|x| x.check.chars().count())
        .max()
        .unwrap_or(10)
        .max(10);
    let mut s = String::new();
    s.push_str(&format!("{:<w$}  {:<4}  {}\n", "CHECK", "", "DETAIL"));
    for x in &r.rows {
        s.push_str(&format!(
            "{:<w$}  {:<4}  {}\n",
            x.check,
            x.status.label(),
            x.detail
        ));
        if let (Some(fix), Status::No | Status::Warn) = (&x.fix, x.status) {
            s.push_str(&format!("{:<w$}        fix: {fix}\n", ""));
        }
    }
    s.push('\n');
    match (&r.blocker, &r.encoder) {
        (None, Some(enc)) => {
            s.push_str(&format!(
                "pixelpass host can run here: --source auto → {}, encoder {enc}\n",
                r.auto_source
            ));
        }
        (Some(b), _) => s.push_str(&format!("pixelpass host cannot run here: {b}\n")),
        (None, None) => s.push_str("pixelpass host cannot run here\n"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_portal_version_is_read_back_from_its_row() {
        let ok = row(
            "portal",
            "p",
            Status::Ok,
            "version 4 (monitor, window)",
            None,
        );
        assert_eq!(portal_version(&ok), Some(4));
        let warn = row(
            "portal",
            "p",
            Status::Warn,
            "version 3 (monitor): cannot remember",
            None,
        );
        assert_eq!(portal_version(&warn), Some(3));
        let no = row("portal", "p", Status::No, "no D-Bus", None);
        assert_eq!(portal_version(&no), None);
    }

    #[test]
    fn the_table_shows_a_fix_under_each_failed_row() {
        let r = Report {
            rows: vec![
                row("a", "first", Status::Ok, "fine", None),
                row("b", "second", Status::No, "missing", apt("thing")),
            ],
            host_can_run: true,
            blocker: None,
            auto_source: "test".into(),
            encoder: Some("x264enc (software)".into()),
        };
        let t = render(&r);
        assert!(t.contains("second      no    missing\n"), "{t}");
        assert!(t.contains("fix: apt-get install thing"), "{t}");
        assert!(
            t.contains("host can run here: --source auto → test, encoder x264enc (software)"),
            "{t}"
        );
    }
}
