//! The numbers of `bench serve` and their printed tables: min/p50/max of
//! the joins, the whole-server [`Totals`] and the per-stream [`StreamRow`].

use std::time::Duration;

use crate::join::percentile;
use crate::rates;

/// min / p50 / max (nearest rank) of some durations; `None` when empty.
pub(super) fn spread(values: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    let mut v = values.to_vec();
    v.sort();
    Some((*v.first()?, percentile(&v, 50.0)?, *v.last()?))
}

pub(super) fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

pub(super) fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), ms)
}

/// The whole-server numbers of the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Totals {
    pub(super) peers: usize,
    pub(super) connected: usize,
    pub(super) window_s: f64,
    /// `serve` PID only, seconds.
    pub(super) cpu_user_s: f64,
    pub(super) cpu_sys_s: f64,
    /// Server CPU s/s with the streams running and no peer.
    pub(super) idle_cpu_per_s: Option<f64>,
    /// Received by the peers on their UDP sockets.
    pub(super) udp_bytes: u64,
    /// The server's `bytes_out.whep` delta (RTP payload).
    pub(super) payload_bytes: u64,
    pub(super) rss_base: u64,
    pub(super) rss_streams: u64,
    pub(super) rss_peers: u64,
    pub(super) lost: u64,
    pub(super) nacks: u64,
    pub(super) gaps: u64,
}

impl Totals {
    /// The window, never zero (a report right after start).
    fn window(&self) -> f64 {
        self.window_s.max(1e-9)
    }

    pub(super) fn cpu_per_s(&self) -> f64 {
        rates::cpu_per_s(self.cpu_user_s, self.cpu_sys_s, self.window())
    }

    pub(super) fn gbps(&self) -> f64 {
        rates::gbps(self.udp_bytes, self.window())
    }

    pub(super) fn payload_gbps(&self) -> f64 {
        rates::gbps(self.payload_bytes, self.window())
    }

    pub(super) fn core_per_gbps(&self) -> Option<f64> {
        rates::core_per_gbps(self.cpu_per_s(), self.gbps())
    }

    /// Server CPU the peers added (over the no-peer ingest) per Gbit/s.
    pub(super) fn marginal_core_per_gbps(&self) -> Option<f64> {
        let idle = self.idle_cpu_per_s?;
        rates::core_per_gbps(self.cpu_per_s() - idle, self.gbps())
    }

    /// Signed: the heap may shrink.
    pub(super) fn rss_per_peer(&self) -> f64 {
        rates::rss_per(self.rss_streams, self.rss_peers, self.peers)
    }
}

impl Totals {
    /// The totals line's figures, for `--json`.
    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "step": "server",
            "peers": self.peers,
            "connected": self.connected,
            "window_s": self.window_s,
            "cpu_per_s": self.cpu_per_s(),
            "cpu_user_per_s": self.cpu_user_s / self.window(),
            "cpu_sys_per_s": self.cpu_sys_s / self.window(),
            "gbps": self.gbps(),
            "core_per_gbps": self.core_per_gbps(),
            "marginal_core_per_gbps": self.marginal_core_per_gbps(),
            "rss_base_mib": mib(self.rss_base),
            "rss_streams_mib": mib(self.rss_streams),
            "rss_peers_mib": mib(self.rss_peers),
            "rss_per_peer_kib": self.rss_per_peer() / 1024.0,
            "lost": self.lost,
            "nacks": self.nacks,
            "gaps": self.gaps,
        })
    }
}

pub(super) fn mib(b: u64) -> f64 {
    rates::mib(b as f64)
}

pub(super) fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
}

pub(super) fn totals_header() -> String {
    format!(
        "{:>5} {:>9} {:>8} {:>6} {:>6} {:>7} {:>11} {:>24} {:>10} {:>6} {:>6} {:>5}",
        "peers",
        "connected",
        "cpu s/s",
        "user",
        "sys",
        "Gbit/s",
        "core/Gbit/s",
        "RSS MiB base/strm/peers",
        "RSS/peer",
        "lost",
        "NACKs",
        "gaps"
    )
}

pub(super) fn totals_row(t: &Totals) -> String {
    let rss = format!(
        "{:.1}/{:.1}/{:.1}",
        mib(t.rss_base),
        mib(t.rss_streams),
        mib(t.rss_peers)
    );
    format!(
        "{:>5} {:>9} {:>8.3} {:>6.3} {:>6.3} {:>7.3} {:>11} {:>24} {:>6.1} KiB {:>6} {:>6} {:>5}",
        t.peers,
        t.connected,
        t.cpu_per_s(),
        t.cpu_user_s / t.window_s.max(1e-9),
        t.cpu_sys_s / t.window_s.max(1e-9),
        t.gbps(),
        fmt_opt(t.core_per_gbps(), 3),
        rss,
        t.rss_per_peer() / 1024.0,
        t.lost,
        t.nacks,
        t.gaps,
    )
}

/// One stream's line.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct StreamRow {
    pub(super) id: String,
    /// Command start → first WHEP keyframe (None: none came).
    pub(super) join: Option<Duration>,
    pub(super) fps: f64,
    pub(super) speed: f64,
    /// The stream's FFmpeg, CPU s/s in the window.
    pub(super) ffmpeg_cpu: Option<f64>,
    pub(super) peers: usize,
    /// Server RTP payload out, Mbit/s.
    pub(super) out_mbps: f64,
    /// RTP from FFmpeg lost on the way in (window).
    pub(super) rtp_in_lost: u64,
    pub(super) silent_peers: usize,
    pub(super) frames_min: u64,
    pub(super) frames_median: u64,
    pub(super) restarts: u64,
}

impl StreamRow {
    /// The table line's figures, for `--json`.
    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "step": "stream",
            "stream": self.id,
            "join_ms": self.join.map(|d| d.as_secs_f64() * 1000.0),
            "fps": self.fps,
            "speed": self.speed,
            "ffmpeg_cpu_per_s": self.ffmpeg_cpu,
            "peers": self.peers,
            "out_mbps": self.out_mbps,
            "rtp_in_lost": self.rtp_in_lost,
            "silent_peers": self.silent_peers,
            "frames_min": self.frames_min,
            "frames_median": self.frames_median,
            "restarts": self.restarts,
        })
    }
}

pub(super) fn stream_header() -> String {
    format!(
        "{:<6} {:>7} {:>6} {:>6} {:>10} {:>5} {:>9} {:>8} {:>9} {:>16} {:>8}",
        "stream",
        "join ms",
        "fps",
        "speed",
        "ffmpeg s/s",
        "peers",
        "out Mb/s",
        "RTP lost",
        "no frames",
        "frames/peer min/med",
        "restarts"
    )
}

pub(super) fn stream_row(r: &StreamRow) -> String {
    format!(
        "{:<6} {:>7} {:>6.1} {:>6.2} {:>10} {:>5} {:>9.2} {:>8} {:>9} {:>9} / {:<6} {:>8}",
        r.id,
        opt_ms(r.join),
        r.fps,
        r.speed,
        fmt_opt(r.ffmpeg_cpu, 3),
        r.peers,
        r.out_mbps,
        r.rtp_in_lost,
        r.silent_peers,
        r.frames_min,
        r.frames_median,
        r.restarts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_min_nearest_rank_median_max() {
        let d = |v: u64| Duration::from_millis(v);
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[d(5)]), Some((d(5), d(5), d(5))));
        assert_eq!(
            spread(&[d(900), d(100), d(300), d(200)]),
            Some((d(100), d(200), d(900)))
        );
    }

    fn totals() -> Totals {
        Totals {
            peers: 200,
            connected: 200,
            window_s: 20.0,
            cpu_user_s: 2.0,
            cpu_sys_s: 4.0,
            idle_cpu_per_s: Some(0.1),
            // 0.2 Gbit/s for 20 s.
            udp_bytes: 500_000_000,
            payload_bytes: 450_000_000,
            rss_base: 10 << 20,
            rss_streams: 20 << 20,
            rss_peers: (20 << 20) + 200 * 64 * 1024,
            lost: 0,
            nacks: 0,
            gaps: 0,
        }
    }

    #[test]
    fn rates_per_gbit_and_per_peer() {
        let t = totals();
        assert!((t.cpu_per_s() - 0.3).abs() < 1e-9);
        assert!((t.gbps() - 0.2).abs() < 1e-9);
        assert!((t.payload_gbps() - 0.18).abs() < 1e-9);
        assert!((t.core_per_gbps().unwrap() - 1.5).abs() < 1e-9);
        assert!((t.marginal_core_per_gbps().unwrap() - 1.0).abs() < 1e-9);
        assert!((t.rss_per_peer() - 64.0 * 1024.0).abs() < 1e-6);
        let none = Totals {
            udp_bytes: 0,
            ..totals()
        };
        assert_eq!(none.core_per_gbps(), None);
        assert_eq!(none.marginal_core_per_gbps(), None);
        let shrunk = Totals {
            rss_peers: 1 << 20,
            ..totals()
        };
        assert!(shrunk.rss_per_peer() < 0.0, "negative, not wrapped");
    }

    #[test]
    fn tables_have_one_cell_per_header() {
        let cells = |s: &str| s.split_whitespace().count();
        // "cpu s/s" and "RSS MiB base/strm/peers" are two and three words;
        // "RSS/peer" is "<n> KiB" in a row.
        assert_eq!(
            cells(&totals_header()) - 3,
            cells(&totals_row(&totals())) - 1
        );
        let r = StreamRow {
            id: "s0".into(),
            join: Some(Duration::from_millis(812)),
            fps: 30.0,
            speed: 1.0,
            ffmpeg_cpu: Some(0.12),
            peers: 20,
            out_mbps: 17.2,
            rtp_in_lost: 0,
            silent_peers: 0,
            frames_min: 598,
            frames_median: 600,
            restarts: 0,
        };
        // "join ms", "ffmpeg s/s", "out Mb/s", "RTP lost", "no frames",
        // "frames/peer min/med": one extra word each; a row's frames are
        // "<a> / <b>". 11 columns.
        assert_eq!(cells(&stream_header()) - 6, 11);
        assert_eq!(cells(&stream_row(&r)) - 2, 11);
        assert!(stream_row(&r).contains("812"));
        let missing = stream_row(&StreamRow { join: None, ..r });
        assert_eq!(missing.split_whitespace().nth(1), Some("-"), "{missing}");
    }
}
