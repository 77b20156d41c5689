//! LL-HLS in CMAF: the hub's MPEG-TS (layer 0) demultiplexed, cut into
//! fMP4 parts and segments, served with blocking playlist reload.
//!
//! `segmenter` (sans-IO: units in, CMAF chunks/parts/segments out) →
//! `window` (the bounded sliding window) → `playlist` (the text) and `http`
//! (the handlers); `service` runs the feeder while clients ask and holds
//! their leases; `mp4` writes the boxes; `record` writes the same CMAF to
//! files, `recordings` lists and prunes them.

pub mod http;
pub mod mp4;
pub mod playlist;
pub mod record;
pub mod recordings;
pub mod segmenter;
pub mod service;
pub mod window;

pub use http::ClientAddr;
pub use service::{Hls, HlsConfig, Report};
