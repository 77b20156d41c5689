//! What a [`WhepClient`](super::WhepClient) yields (video frames, Opus
//! packets, connection events), how it fails, and its options.

use std::time::{Duration, Instant};

use str0m::IceConnectionState;

/// One H.264 access unit, as a decoder takes it.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// Annex-B: start code + NAL unit, repeated (SPS/PPS included with IDRs).
    pub annexb: Vec<u8>,
    /// RTP timestamp (90 kHz), extended past wrap-around by str0m.
    pub rtp_time: u64,
    /// When the first datagram of this frame was received.
    pub first_packet_at: Instant,
    /// When the datagram that completed the frame was received.
    pub arrived: Instant,
    /// false: packets were missing between this frame and the previous one.
    pub contiguous: bool,
    /// The frame holds an IDR picture (a decoder can start here).
    pub keyframe: bool,
}

/// One Opus packet.
#[derive(Debug, Clone)]
pub struct AudioPacket {
    pub data: Vec<u8>,
    /// RTP timestamp (48 kHz), extended.
    pub rtp_time: u64,
    pub arrived: Instant,
}

#[derive(Debug, Clone)]
pub enum WhepEvent {
    /// ICE and DTLS are up; media may follow.
    Connected,
    IceState(IceConnectionState),
    Video(VideoFrame),
    Audio(AudioPacket),
    /// The server closed the connection (DTLS close_notify / RTCP BYE).
    Closed,
}

/// What went wrong; `Status` carries the server's answer (e.g. `503` when full).
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error("the WHEP server answered {status}: {}", body.trim())]
    Status {
        status: u16,
        body: String,
        retry_after: Option<String>,
    },
    #[error("WHEP HTTP exchange failed: {0}")]
    Http(String),
    #[error("SDP: {0}")]
    Sdp(String),
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("UDP: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct WhepOptions {
    /// Drop every Nth H.264 RTP packet before str0m sees it (not RTX: that
    /// has its own payload type), to exercise NACK/RTX.
    pub lose_video_every: Option<usize>,
    /// Deadline of each HTTP exchange.
    pub http_timeout: Duration,
    /// How often str0m refreshes the NACK/PLI counters in [`ClientStats`](super::ClientStats).
    pub stats_interval: Duration,
    /// The socket's receive buffer asked of the kernel; `None` leaves the
    /// kernel's default (`net.core.rmem_default`), as an ordinary receiver does.
    pub recv_buffer: Option<usize>,
    /// Count the most datagrams received within any window this long, by
    /// the kernel's receive timestamps ([`ClientStats::max_burst`](super::ClientStats::max_burst)).
    pub burst_window: Option<Duration>,
}

impl Default for WhepOptions {
    fn default() -> Self {
        Self {
            lose_video_every: None,
            http_timeout: Duration::from_secs(30),
            stats_interval: Duration::from_secs(1),
            recv_buffer: Some(super::recv::RECV_BUFFER),
            burst_window: None,
        }
    }
}
