//! MPEG-TS: the little of it the hub needs (packet headers, PAT/PMT, keyframe
//! marks) and the chunker that turns a muxer's byte stream into hub chunks.

pub mod chunker;
pub mod packet;

pub use chunker::{Chunker, Output};
