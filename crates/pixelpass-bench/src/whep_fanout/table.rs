//! One measured step ([`Row`]), its derived rates, and the printed table
//! and verdict against the targets.

use super::{TARGET_CORE_PER_GBPS, TARGET_RSS_PER_PEER, TARGET_US_PER_PACKET};
use crate::rates;

/// One measured step.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The stream's video bitrate, kbit/s.
    pub bitrate_kbps: u32,
    pub peers: usize,
    pub connected: usize,
    /// Peers the server refused (`503` past `--max-load`) until the
    /// bench's connect limit.
    pub refused: usize,
    pub window_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub udp_bytes: u64,
    /// Datagrams the peers received (SRTP, SRTCP, STUN).
    pub udp_datagrams: u64,
    pub rss_base: u64,
    pub rss_streaming: u64,
    /// The same as `rss_*`, anonymous memory only (`RssAnon`).
    pub anon_base: u64,
    pub anon_streaming: u64,
    pub lost: u64,
    pub nacks: u64,
    pub gaps: u64,
    pub frames_min: u64,
    pub frames_median: u64,
    /// Instructions this process executed in the window (`--callgrind`).
    pub instructions: Option<u64>,
    /// CPU seconds per second of the peers' process (the load generator).
    pub peers_cpu_per_s: f64,
    /// The peers' receive path ran on their CPU (`--own-netns`), not in
    /// the server's sends.
    pub receive_on_peers_cpu: bool,
}

/// A process this busy (CPU seconds per second) had no CPU to spare.
const SATURATED: f64 = 0.9;

impl Row {
    pub fn cpu_per_s(&self) -> f64 {
        rates::cpu_per_s(self.cpu_user_s, self.cpu_sys_s, self.window_s)
    }

    pub fn gbps(&self) -> f64 {
        rates::gbps(self.udp_bytes, self.window_s)
    }

    /// Server CPU µs per datagram received by a peer.
    pub fn us_per_packet(&self) -> Option<f64> {
        (self.udp_datagrams > 0)
            .then(|| (self.cpu_user_s + self.cpu_sys_s) * 1e6 / self.udp_datagrams as f64)
    }

    /// Instructions per datagram received by a peer (`--callgrind`).
    pub fn instructions_per_packet(&self) -> Option<f64> {
        let i = self.instructions?;
        (self.udp_datagrams > 0).then(|| i as f64 / self.udp_datagrams as f64)
    }

    pub fn core_per_gbps(&self) -> Option<f64> {
        rates::core_per_gbps(self.cpu_per_s(), self.gbps())
    }

    /// Signed: the heap may shrink between steps. Per peer that connected
    /// (on a saturated server some give up: see `connected`).
    pub fn rss_per_peer(&self) -> f64 {
        rates::rss_per(self.rss_base, self.rss_streaming, self.connected)
    }

    /// Anonymous RSS per peer: what the target is judged on. VmRSS also
    /// grows by the binary's code pages that the first peers touch (DTLS,
    /// SRTP, str0m's send path: ~6 MB, once), which is no peer's cost.
    pub fn anon_per_peer(&self) -> f64 {
        rates::rss_per(self.anon_base, self.anon_streaming, self.connected)
    }

    /// Which side ran out of CPU, if one did: `server` (its figures are then
    /// a ceiling: it could not keep up), `peers` (the load generator: the
    /// server was not pushed; losses may be the peers' own).
    pub fn bottleneck(&self) -> Option<&'static str> {
        if self.cpu_per_s() >= SATURATED {
            Some("server")
        } else if self.peers_cpu_per_s >= SATURATED {
            Some("peers")
        } else {
            None
        }
    }

    /// The table line's figures, for `--json`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "bitrate_kbps": self.bitrate_kbps,
            "peers": self.peers,
            "connected": self.connected,
            "refused": self.refused,
            "window_s": self.window_s,
            "cpu_per_s": self.cpu_per_s(),
            "gbps": self.gbps(),
            "core_per_gbps": self.core_per_gbps(),
            "udp_datagrams": self.udp_datagrams,
            "us_per_packet": self.us_per_packet(),
            "instructions_per_packet": self.instructions_per_packet(),
            "rss_per_peer_kib": self.rss_per_peer() / 1024.0,
            "anon_per_peer_kib": self.anon_per_peer() / 1024.0,
            "lost": self.lost,
            "nacks": self.nacks,
            "gaps": self.gaps,
            "frames_min": self.frames_min,
            "frames_median": self.frames_median,
            "peers_cpu_per_s": self.peers_cpu_per_s,
            "bottleneck": self.bottleneck(),
            "receive_on_peers_cpu": self.receive_on_peers_cpu,
        })
    }

    #[cfg(test)]
    /// Frames per second of the median peer.
    pub fn fps_median(&self) -> f64 {
        self.frames_median as f64 / self.window_s
    }
}

/// (min, median) of per-peer frame counts.
pub fn min_median(v: &[u64]) -> (u64, u64) {
    if v.is_empty() {
        return (0, 0);
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    (s[0], s[s.len() / 2])
}

pub fn table_header() -> String {
    format!(
        "{:>6} {:>5} {:>9} {:>7} {:>8} {:>6} {:>6} {:>7} {:>11} {:>12} {:>12} {:>6} {:>6} {:>5} {:>16} {:>7} {:>6}",
        "kbit/s",
        "peers",
        "connected",
        "refused",
        "cpu s/s",
        "user",
        "sys",
        "Gbit/s",
        "core/Gbit/s",
        "RSS/peer",
        "anon/peer",
        "lost",
        "NACKs",
        "gaps",
        "frames/peer min/med",
        "µs/pkt",
        "limit"
    )
}

pub fn table_row(r: &Row) -> String {
    let core = r
        .core_per_gbps()
        .map_or_else(|| "-".to_owned(), |c| format!("{c:.3}"));
    format!(
        "{:>6} {:>5} {:>9} {:>7} {:>8.3} {:>6.3} {:>6.3} {:>7.3} {:>11} {:>8.1} KiB {:>8.1} KiB {:>6} {:>6} {:>5} {:>9} / {:<5} {:>7} {:>6}",
        r.bitrate_kbps,
        r.peers,
        r.connected,
        r.refused,
        r.cpu_per_s(),
        r.cpu_user_s / r.window_s,
        r.cpu_sys_s / r.window_s,
        r.gbps(),
        core,
        r.rss_per_peer() / 1024.0,
        r.anon_per_peer() / 1024.0,
        r.lost,
        r.nacks,
        r.gaps,
        r.frames_min,
        r.frames_median,
        r.us_per_packet()
            .map_or_else(|| "-".to_owned(), |u| format!("{u:.2}")),
        r.bottleneck().unwrap_or("-"),
    )
}

/// The verdict against the targets, for the step with the most peers.
pub fn verdict(rows: &[Row]) -> Option<String> {
    let r = rows.iter().max_by_key(|r| r.peers)?;
    let core = r.core_per_gbps();
    let us = r.us_per_packet();
    let ok = |b: bool| if b { "met" } else { "MISSED" };
    Some(format!(
        "targets at {} peers, {} kbit/s: {} µs per packet-to-peer ≤ {TARGET_US_PER_PACKET} → {}; {} core/Gbit/s ≤ {TARGET_CORE_PER_GBPS} → {}; anonymous RSS/peer {:.1} KiB ≤ {:.0} KiB → {} (VmRSS/peer {:.1} KiB){}",
        r.peers,
        r.bitrate_kbps,
        us.map_or_else(|| "-".to_owned(), |u| format!("{u:.2}")),
        ok(us.is_some_and(|u| u <= TARGET_US_PER_PACKET)),
        core.map_or_else(|| "-".to_owned(), |c| format!("{c:.3}")),
        ok(core.is_some_and(|c| c <= TARGET_CORE_PER_GBPS)),
        r.anon_per_peer() / 1024.0,
        TARGET_RSS_PER_PEER / 1024.0,
        ok(r.anon_per_peer() <= TARGET_RSS_PER_PEER),
        r.rss_per_peer() / 1024.0,
        match r.bottleneck() {
            Some(b) => format!(" (the {b} ran out of CPU: not a clean measurement)"),
            None => String::new(),
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(peers: usize, cpu: f64, bytes: u64, base: u64, streaming: u64) -> Row {
        Row {
            bitrate_kbps: 4000,
            peers,
            connected: peers,
            refused: 0,
            window_s: 10.0,
            cpu_user_s: cpu * 0.5,
            cpu_sys_s: cpu * 0.5,
            udp_bytes: bytes,
            udp_datagrams: bytes / 1000,
            rss_base: base,
            rss_streaming: streaming,
            anon_base: base,
            anon_streaming: streaming,
            lost: 0,
            nacks: 0,
            gaps: 0,
            frames_min: 299,
            frames_median: 300,
            instructions: None,
            peers_cpu_per_s: 0.2,
            receive_on_peers_cpu: false,
        }
    }

    #[test]
    fn rates_and_verdict() {
        // 200 peers × 4.1 Mbit/s for 10 s; 3 CPU seconds.
        let r = row(
            200,
            3.0,
            200 * 4_100_000 / 8 * 10,
            100 << 20,
            (100 << 20) + 200 * 100 * 1024,
        );
        // VmRSS also grew by code pages: the target is judged on anon.
        let r = Row {
            rss_streaming: (100 << 20) + 200 * 150 * 1024,
            ..r
        };
        assert!((r.gbps() - 0.82).abs() < 1e-9);
        assert!((r.cpu_per_s() - 0.3).abs() < 1e-9);
        assert!((r.core_per_gbps().unwrap() - 0.3 / 0.82).abs() < 1e-9);
        assert!((r.rss_per_peer() - 150.0 * 1024.0).abs() < 1e-6);
        assert!((r.anon_per_peer() - 100.0 * 1024.0).abs() < 1e-6);
        assert_eq!(r.json()["anon_per_peer_kib"], 100.0);
        assert!((r.fps_median() - 30.0).abs() < 1e-9);
        let v = verdict(&[row(1, 0.1, 0, 0, 0), r.clone()]).unwrap();
        assert!(
            v.starts_with("targets at 200 peers, 4000 kbit/s")
                && v.contains(
                    "→ met; anonymous RSS/peer 100.0 KiB ≤ 128 KiB → met (VmRSS/peer 150.0 KiB)"
                )
                && !v.contains("ran out"),
            "{v}"
        );
        assert_eq!(r.bottleneck(), None);
        let bad = Row {
            cpu_user_s: 5.0,
            cpu_sys_s: 5.0,
            ..r.clone()
        };
        let v = verdict(std::slice::from_ref(&bad)).unwrap();
        assert!(
            v.contains("→ MISSED; anonymous RSS") && v.contains("the server ran out of CPU"),
            "{v}"
        );
        assert_eq!(bad.bottleneck(), Some("server"));
        let generator = Row {
            peers_cpu_per_s: 0.97,
            ..r.clone()
        };
        assert_eq!(generator.bottleneck(), Some("peers"));
        assert_eq!(generator.json()["bottleneck"], "peers");
        // A saturated step: half of the peers gave up connecting; memory
        // is per peer that streamed.
        let partial = Row { peers: 400, ..r };
        assert!((partial.anon_per_peer() - 100.0 * 1024.0).abs() < 1e-6);
        assert_eq!(row(1, 1.0, 0, 0, 0).core_per_gbps(), None);
        assert!(
            row(2, 0.1, 0, 1000, 0).rss_per_peer() < 0.0,
            "a shrinking heap reads negative, not wrapped"
        );
    }

    #[test]
    fn the_table_has_one_column_per_header() {
        let r = row(50, 1.0, 1 << 30, 0, 1 << 20);
        let cells = |s: &str| s.split_whitespace().count();
        // Two headers are two words ("cpu s/s", "frames/peer min/med"); in a
        // row "RSS/peer" and "anon/peer" are "<n> KiB" and the frames are
        // "<a> / <b>".
        assert_eq!(
            cells(&table_header()) - 2,
            cells(&table_row(&r)) - 4,
            "16 columns"
        );
        assert_eq!(min_median(&[5, 1, 9, 3]), (1, 5));
        assert_eq!(min_median(&[]), (0, 0));
    }
}
