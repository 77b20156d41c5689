//! RTP as the WebRTC egress needs it: header parsing and H.264 keyframe marks.

pub mod packet;

pub use packet::{h264_starts_keyframe, RtpError, RtpPacket};
