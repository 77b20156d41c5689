//! LL-HLS in CMAF: the hub's MPEG-TS (layer 0) demultiplexed, cut into
//! fMP4 parts and segments, served with blocking playlist reload.

pub mod mp4;
pub mod segmenter;
pub mod playlist;
pub mod window;
