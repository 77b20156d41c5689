//! Clients of pixelpass's own egress, for tests and benchmarks.
//!
//! - [`whep`]: a WebRTC viewer (str0m, full ICE) that does the WHEP exchange
//!   and yields H.264 access units (Annex-B) and Opus packets;
//! - [`http`]: the one HTTP/1.1 client (hyper's) of the tests and the
//!   benchmarks, with a blocking face and the endless-stream [`http::blocking::Viewer`];

pub mod http;
pub mod whep;

pub use whep::{
    AudioPacket, ClientStats, VideoFrame, WhepClient, WhepError, WhepEvent, WhepOptions,
};
