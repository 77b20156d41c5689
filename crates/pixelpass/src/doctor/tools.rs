//! The tool rows of `pixelpass doctor`: the GStreamer elements every host
//! run needs (and those of `serve`'s WHIP → HTTP-TS remux), the viewers (a browser, mpv) and ffmpeg for `pixelpass serve`,
//! and [`on_path`], the PATH lookup `serve` shares.

use std::path::PathBuf;

use super::{apt, row, Row, Status};
use crate::capture::{remux, PipelineError};

/// The muxing and WebRTC elements every host run needs.
pub(super) fn elements_row() -> Row {
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
        // `--layers` 2 and 3 (2 is the default) scale the picture down.
        "videoscale",
    ];
    elements_check(
        "elements",
        "muxing + WebRTC + layer elements",
        &needed,
        "mpegtsmux, h264parse, rtph264pay, rtpopuspay, …",
    )
}

/// What `serve` needs to give HTTP-TS viewers a published (WHIP) stream.
pub(super) fn remux_row() -> Row {
    let needed: Vec<&str> = remux::VIDEO_ELEMENTS
        .iter()
        .chain(remux::AUDIO_ELEMENTS)
        .copied()
        .collect();
    elements_check(
        "remux",
        "WHIP → HTTP-TS elements",
        &needed,
        "rtpjitterbuffer, rtph264depay, rtpopusdepay, opusdec, …",
    )
}

fn elements_check(id: &str, check: &str, needed: &[&str], present: &str) -> Row {
    match crate::capture::check_elements(needed.iter().copied()) {
        Ok(()) => row(id, check, Status::Ok, present, None),
        Err(PipelineError::MissingElement { element, package }) => row(
            id,
            check,
            Status::No,
            format!("missing GStreamer element {element}"),
            package.map(|p| format!("apt-get install {p}")),
        ),
        Err(e) => row(id, check, Status::No, e.to_string(), None),
    }
}

pub fn on_path(names: &[&str]) -> Option<PathBuf> {
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
pub(super) fn ffmpeg_row() -> Row {
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

pub(super) fn viewer_rows() -> Vec<Row> {
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
