//! `pixelpass doctor`: what works on this machine for `host`, and how to fix
//! what does not. Every check really tries the thing (connects to the bus and
//! the portal, opens the X display, connects to the audio server, encodes a
//! few frames with each H.264 encoder) rather than only looking for files.
//!
//! Exit status: 0 when `pixelpass host` (with its defaults) can run here,
//! 1 when it cannot.
//!
//! Files: this one holds the report ([`Report`], [`Row`], [`Status`]), the
//! order of the checks ([`examine`]) and the table ([`render`]);
//! [`capture`] the desktop rows (Wayland, D-Bus, portal, PipeWire, X11),
//! [`audio`] the audio server, [`encoders`] the H.264/AAC/Opus encode
//! probes, [`tools`] the GStreamer elements, viewers and ffmpeg on PATH.

mod audio;
mod capture;
mod encoders;
mod tools;

pub use tools::on_path;

use std::process::ExitCode;

use gstreamer as gst;
use serde::Serialize;

use crate::capture::source;

use audio::audio_rows;
use capture::{dbus_row, pipewire_row, portal_row, portal_version, wayland_row, x11_row};
use encoders::{codec_rows, encoder_rows};
use tools::{elements_row, ffmpeg_row, remux_row, viewer_rows};

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
    if let Err(e) = crate::capture::init() {
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
    rows.push(remux_row());

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
