//! MPEG-TS: the little of it the hub needs (packet headers, PAT/PMT, keyframe
//! marks), the one framer (bytes → packets) and the chunker that turns a
//! muxer's byte stream into hub chunks.

pub(crate) mod chunker;
pub(crate) mod framer;
pub mod packet;
pub mod pes;

pub use chunker::{Chunker, Output};
pub use framer::Framer;
