//! Support for the integration tests that run the real `pixelpass` binary:
//! spawning a host (never leaked), a small HTTP/1.1 client over
//! `std::net::TcpStream` (with timeouts everywhere), an MPEG-TS scanner to
//! find frames and keyframes in what a viewer received, and ffprobe/ffmpeg
//! runners.
//!
//! Files: [`host`] the host process, [`http`] the HTTP/1.1 client and the
//! stream viewer, [`ts_scan`] the MPEG-TS scanner, [`tools`] ffprobe/ffmpeg
//! runners and temporary directories. Everything is re-exported here, so
//! tests use `common::…` paths.
#![allow(dead_code)]

mod host;
mod http;
mod tools;
mod ts_scan;

// Each test binary uses a subset of these, as of the items (`dead_code`).
#[allow(unused_imports)]
pub use host::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use tools::*;
#[allow(unused_imports)]
pub use ts_scan::*;

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
