//! The JSON lines the peers' process prints for the bench ([`ClientLine`],
//! [`PeerWindow`]) and reading them from its stdout.

use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use pixelpass_testkit::client::ClientStats;

/// One JSON line from the peers' process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ClientLine {
    /// Every peer connected and has its first keyframe (or failed); the
    /// window starts after the warm-up.
    Ready {
        connected: usize,
        /// Peers the server refused (`503`, its load limit) until the
        /// connect limit: not failures.
        #[serde(default)]
        refused: usize,
        failed: usize,
        errors: Vec<String>,
        connect_s: f64,
    },
    /// The window started now.
    Window,
    Result {
        window_s: f64,
        client_cpu_s: f64,
        peers: Vec<PeerWindow>,
        closed_early: usize,
    },
}

/// What one peer got in the window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerWindow {
    /// Index of the peer's `--url`.
    #[serde(default)]
    pub url: usize,
    pub udp_bytes: u64,
    /// Datagrams received (for the CPU per packet-to-peer).
    #[serde(default)]
    pub udp_datagrams: u64,
    pub frames: u64,
    pub gaps: u64,
    pub nacks: u64,
    pub lost: u64,
    pub audio: u64,
}

impl PeerWindow {
    pub fn between(a: &ClientStats, b: &ClientStats) -> Self {
        Self {
            url: 0,
            udp_bytes: b.udp_bytes.saturating_sub(a.udp_bytes),
            udp_datagrams: b.udp_datagrams.saturating_sub(a.udp_datagrams),
            frames: b.video_frames.saturating_sub(a.video_frames),
            gaps: b.gaps.saturating_sub(a.gaps),
            nacks: b.nacks_sent.saturating_sub(a.nacks_sent),
            lost: b.video_rtp_lost().saturating_sub(a.video_rtp_lost()),
            audio: b.audio_packets.saturating_sub(a.audio_packets),
        }
    }
}

pub(crate) fn line_reader(child: &mut Child) -> anyhow::Result<mpsc::Receiver<String>> {
    crate::child_lines(child, "the peers' process", "bench-peers-io")
}

pub(crate) fn next_line(
    rx: &mpsc::Receiver<String>,
    timeout: Duration,
) -> anyhow::Result<ClientLine> {
    crate::next_json(rx, timeout, "the peers' process", "peers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_deltas_per_peer() {
        let a = ClientStats {
            udp_bytes: 100,
            video_frames: 3,
            video_rtp_expected: 10,
            video_rtp_received: 10,
            ..ClientStats::default()
        };
        let b = ClientStats {
            udp_bytes: 600,
            video_frames: 33,
            video_rtp_expected: 50,
            video_rtp_received: 48,
            nacks_sent: 2,
            ..ClientStats::default()
        };
        let w = PeerWindow::between(&a, &b);
        assert_eq!((w.udp_bytes, w.frames, w.lost, w.nacks), (500, 30, 2, 2));
        let line = ClientLine::Result {
            window_s: 1.0,
            client_cpu_s: 0.5,
            peers: vec![w],
            closed_early: 0,
        };
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(serde_json::from_str::<ClientLine>(&json).unwrap(), line);
    }
}
