//! Pure codecs, no I/O: MPEG-TS ([`ts`]), RTP ([`rtp`]), and
//! the time code the clock source draws ([`timecode`]).

pub mod adts;
pub mod h264;
pub mod rtp;
pub mod sps;
pub mod timecode;
pub mod ts;
