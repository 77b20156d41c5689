//! The desktop rows of `pixelpass doctor`: the Wayland socket, the D-Bus
//! session bus, the ScreenCast portal, PipeWire and the X display.

use std::path::PathBuf;
use std::time::Duration;

use gstreamer as gst;

use super::{apt, row, Row, Status};
use crate::capture::source::{portal, x11};

fn runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

pub(super) fn wayland_row() -> Row {
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

pub(super) async fn dbus_row() -> Row {
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

pub(super) async fn portal_row() -> Row {
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
pub(super) fn portal_version(r: &Row) -> Option<u32> {
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

pub(super) fn pipewire_row() -> Row {
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

pub(super) fn x11_row() -> Row {
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
}
