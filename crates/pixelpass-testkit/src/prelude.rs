//! What the integration tests that run the real `pixelpass` binary use most,
//! in one glob: a host process ([`crate::host`], never leaked), the HTTP
//! client, its stream viewer and raw-socket helpers
//! ([`crate::client::http::blocking`], [`crate::client::http::raw`]), the MPEG-TS scanner
//! ([`crate::ts_scan`]), ffprobe/ffmpeg runners and temporary directories
//! ([`crate::tools`]), and the light encoding settings below.

pub use crate::client::http::blocking::*;
pub use crate::client::http::raw::{connect, connect_small_rcvbuf, raw_request};
pub use crate::client::http::Response;
pub use crate::host::*;
pub use crate::tools::*;
pub use crate::ts_scan::*;

use std::sync::{Mutex, MutexGuard};

/// Options the tests pass so that two pipelines fit on a 2-core machine.
pub const LIGHT: &[&str] = &[
    "--framerate",
    "30",
    "--width",
    "640",
    "--height",
    "360",
    "--bitrate",
    "1500",
];
pub const FPS: f64 = 30.0;
/// 90 kHz PTS ticks per second.
pub const PTS_HZ: i64 = 90_000;

/// Serializes the tests that measure frame rates, so two of them do not
/// compete for the CPU and measure each other.
pub fn timing_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
