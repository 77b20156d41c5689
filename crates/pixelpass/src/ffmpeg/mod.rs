//! `serve`'s producers: supervised FFmpeg child processes.
//!
//! (A stream's settings and the config file are in [`crate::config`].)
//!
//! - [`command`]: the FFmpeg argv: the operator's input plus our output legs;
//! - [`layers`]: layers 1.. (`layers = 2 | 3`): one filtergraph, an encode, a video
//!   RTP port and a TS pipe each;
//! - [`ports`]: the adjacent loopback UDP pair for the RTP legs;
//! - [`child`]: spawning FFmpeg in its own process group with a parent-death
//!   signal, and ending it (SIGTERM, then SIGKILL, always reaped);
//! - [`progress`]: `-progress` parsing; [`log`]: the log (head and tail of each
//!   run, repeats counted), the exit summary in FFmpeg's words, credentials masked;
//!   ([`crate::ingest::rtp`] drains the pair into the hub);
//! - [`probe`]: `video = "auto"`: copy the input's H.264 or encode it, and why;
//! - [`producer`]: one run = one FFmpeg child (the supervisor's `Producer`);
//! - [`report`]: what a stream's process is doing, for the API and metrics.

pub(crate) mod child;
pub(crate) mod command;
pub(crate) mod layers;
pub(crate) mod legs;
pub(crate) mod log;
pub(crate) mod ports;
pub(crate) mod probe;
pub(crate) mod producer;
pub(crate) mod progress;
pub(crate) mod report;

pub use producer::FfmpegProducer;

#[cfg(test)]
mod ffmpeg_tests;
#[cfg(test)]
mod layers_tests;
