//! A host capturing the headless session through the portal, an HTTP-TS
//! viewer reading it until enough frames came, and what the portal
//! remembers between starts (the restore token).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::session::Session;
use crate::prelude::{check_capture, scan_ts, Checked, Host, TempDir, Viewer};

/// A host with `--source portal` inside `session`, its state (restore token) in `state`.
pub fn portal_host(session: &Session, state: &Path, extra: &[&str]) -> Host {
    let mut b = Host::builder().source("portal").clear_env().linger(1);
    for (k, v) in session.env() {
        b = b.env(k, v);
    }
    b = b.env("XDG_STATE_HOME", state.to_str().unwrap());
    // The portal's picture once froze behind the layers' tee (a reconfigure
    // reaching PipeWire): portal captures run with the host's default two.
    if !extra.contains(&"--layers") {
        b = b.arg("--layers").arg("2");
    }
    for a in extra {
        b = b.arg(a);
    }
    b.spawn()
}

pub fn token_file(state: &Path) -> PathBuf {
    state.join("pixelpass").join("screencast-monitor.token")
}

/// Read until the viewer has `frames` video frames (and at least `d`), at
/// most 30 s: counts, not wall time, so a loaded machine only makes it slower.
pub fn read_frames(v: &mut Viewer, frames: usize, d: Duration) {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(30);
    loop {
        v.read_for(Duration::from_millis(200));
        // +1: the last frame may be cut short when we stop reading.
        if (t0.elapsed() >= d && scan_ts(&v.body).video.len() > frames) || v.eof {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} frames within 30 s",
            scan_ts(&v.body).video.len()
        );
    }
}

/// Read the stream (≥ `d`, ≥ `min_frames`); the capture, checked (H.264 +
/// AAC, clean decode, ≥ `min_frames`).
pub fn watch(host: &Host, dir: &TempDir, name: &str, d: Duration, min_frames: u64) -> Checked {
    let mut v = Viewer::open(host.addr, &host.stream_path());
    assert_eq!(
        v.status,
        200,
        "{name}: status {} body {:?}",
        v.status,
        String::from_utf8_lossy(&v.body)
    );
    read_frames(&mut v, min_frames as usize, d);
    check_capture(dir, name, &v.body, min_frames)
}

pub fn restore_count(session: &Session) -> usize {
    session
        .log("xdpw")
        .matches("restore data available")
        .count()
}

pub fn wait_idle(host: &Host) {
    host.wait_state("idle", Duration::from_secs(10));
}
