//! A WHEP viewer in Rust: what a browser does, minus the decoder.
//!
//! [`WhepClient::connect`] makes a receive-only offer (H.264 + Opus, full
//! ICE, str0m), POSTs it, takes the answer and drives ICE, DTLS and SRTP
//! over its own UDP socket. [`WhepClient::next_event`] yields what arrives:
//! whole H.264 access units as Annex-B (str0m depacketizes them), Opus
//! packets, connection state. [`WhepClient::delete`] ends the session.
//!
//! str0m is sans-IO; this type only adds the socket, the clock and the HTTP
//! exchange. Nothing from the network is trusted: malformed input is an
//! error value, never a panic.
//!
//! Files: `client` the client itself (offer, HTTP exchange, event loop),
//! `events` what it yields and how it is configured, `stats` its counters,
//! `recv` the batched socket reads, [`session`] the tests' session helper.

mod client;
mod events;
mod recv;
pub mod session;
mod stats;

pub use client::{h264_payload_type, WhepClient};
pub use events::{AudioPacket, VideoFrame, WhepError, WhepEvent, WhepOptions};
pub use stats::{BurstMeter, ClientStats, SeqCounter};
