//! pixelpass: share a live screen with many viewers at once.
//!
//! Data flows one way, and so do the imports between these modules:
//!
//! ```text
//! media ─► hub ─► supervisor ─► capture (host's GStreamer producer) ─┐
//!                              ingest  (TS bytes / RTP → hub)         ├─► registry ─► egress ─► restream ─► http ─► host
//!                              ffmpeg  (serve's child processes) ─────┘   (http_ts, whep)
//! ```
//!
//! - [`media`]: MPEG-TS, RTP, H.264 and the clock source's time code: pure codecs;
//! - [`hub`]: the fan-out of one stream (TS chunks with keyframe marks, RTP per track);
//! - [`supervisor`]: a stream's lifecycle, viewer leases, producer restarts;
//! - [`capture`]: `host`'s producer: sources (portal, X11, test, clock) and the GStreamer graph;
//! - [`ingest`]: bytes from a producer into the hub (TS from GStreamer or FFmpeg, RTP legs);
//! - [`ffmpeg`]: `serve`'s producers, FFmpeg child processes; [`config`]: their settings;
//! - [`registry`]: the streams reachable over HTTP, by token;
//! - [`egress`]: the viewer paths (HTTP-TS, WHEP);
//! - [`restream`]: `serve`'s set of streams; [`http`]: the server, routes, API, metrics, player page;
//! - [`host`]: `host`'s wiring; [`doctor`]: what works here; [`view`]: local players.

pub mod capture;
pub mod config;
pub mod doctor;
pub mod egress;
pub(crate) mod ffmpeg;
/// The fuzz targets' way in (`fuzz/`); built only with the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod heap;
pub mod host;
pub mod http;
pub mod hub;
pub(crate) mod ingest;
pub mod logging;
pub mod media;
pub mod net;
pub mod registry;
pub mod restream;
pub mod supervisor;
pub mod token;
pub mod view;
pub mod whip;
