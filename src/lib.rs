//! pixelpass: share a live screen with many viewers at once.
//!
//! Data flows one way: `source` → `pipeline` → `hub` → `egress`, with the
//! `supervisor` beside it starting and stopping producers for viewer leases.
//! `host`'s producer is a GStreamer `pipeline`; `serve`'s are FFmpeg
//! child processes (`process`), managed through `server::streams`.

pub mod bench;
pub mod cli;
pub mod client;
pub mod doctor;
pub mod egress;
pub mod hub;
pub mod latency;
pub mod net;
pub mod pipeline;
pub mod process;
pub mod rtp;
pub mod server;
pub mod source;
pub mod supervisor;
pub mod token;
pub mod ts;
pub mod web;
