//! One measured step ([`Row`]), its derived rates, the printed table,
//! stalls and the verdict against the targets.

use super::{STALL_GAP_MS, STALL_SHARE, TARGET_CORE_PER_GBPS, TARGET_RSS_PER_VIEWER};
use crate::rates;

/// One measured step.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub viewers: usize,
    pub connected: usize,
    pub window_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// Payload bytes all viewers received in the window.
    pub payload_bytes: u64,
    pub stalls: usize,
    pub rss_base: u64,
    pub rss_streaming: u64,
}

impl Row {
    pub fn cpu_per_s(&self) -> f64 {
        rates::cpu_per_s(self.cpu_user_s, self.cpu_sys_s, self.window_s)
    }

    pub fn gbps(&self) -> f64 {
        rates::gbps(self.payload_bytes, self.window_s)
    }

    pub fn core_per_gbps(&self) -> Option<f64> {
        rates::core_per_gbps(self.cpu_per_s(), self.gbps())
    }

    /// Signed: the heap may shrink between steps.
    pub fn rss_per_viewer(&self) -> f64 {
        rates::rss_per(self.rss_base, self.rss_streaming, self.viewers)
    }

    /// The table line's figures, for `--json`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "viewers": self.viewers,
            "connected": self.connected,
            "window_s": self.window_s,
            "cpu_per_s": self.cpu_per_s(),
            "cpu_user_per_s": self.cpu_user_s / self.window_s,
            "cpu_sys_per_s": self.cpu_sys_s / self.window_s,
            "gbps": self.gbps(),
            "core_per_gbps": self.core_per_gbps(),
            "stalls": self.stalls,
            "rss_per_viewer_kib": self.rss_per_viewer() / 1024.0,
        })
    }
}

pub fn table_header() -> String {
    format!(
        "{:>7} {:>9} {:>8} {:>7} {:>7} {:>8} {:>11} {:>7} {:>12}",
        "viewers",
        "connected",
        "cpu s/s",
        "user",
        "sys",
        "Gbit/s",
        "core/Gbit/s",
        "stalls",
        "RSS/viewer"
    )
}

pub fn table_row(r: &Row) -> String {
    let core = r
        .core_per_gbps()
        .map_or_else(|| "-".to_owned(), |c| format!("{c:.3}"));
    format!(
        "{:>7} {:>9} {:>8.3} {:>7.3} {:>7.3} {:>8.3} {:>11} {:>7} {:>8.1} KiB",
        r.viewers,
        r.connected,
        r.cpu_per_s(),
        r.cpu_user_s / r.window_s,
        r.cpu_sys_s / r.window_s,
        r.gbps(),
        core,
        r.stalls,
        r.rss_per_viewer() / 1024.0
    )
}

/// The verdict against the target, for the step with the most viewers.
pub fn verdict(rows: &[Row]) -> Option<String> {
    let r = rows.iter().max_by_key(|r| r.viewers)?;
    let core = r.core_per_gbps();
    let ok = |b: bool| if b { "met" } else { "MISSED" };
    Some(format!(
        "target at {} viewers: core/Gbit/s {} ≤ {TARGET_CORE_PER_GBPS} → {}; RSS/viewer {:.1} KiB ≤ {:.0} KiB → {}; stalls {} → {}",
        r.viewers,
        core.map_or_else(|| "-".to_owned(), |c| format!("{c:.3}")),
        ok(core.is_some_and(|c| c <= TARGET_CORE_PER_GBPS)),
        r.rss_per_viewer() / 1024.0,
        TARGET_RSS_PER_VIEWER / 1024.0,
        ok(r.rss_per_viewer() <= TARGET_RSS_PER_VIEWER),
        r.stalls,
        ok(r.stalls == 0),
    ))
}

/// Stalled viewers: a read gap over [`STALL_GAP_MS`] or less than
/// [`STALL_SHARE`] of `expected` bytes. The slices are per viewer.
pub fn count_stalls(payload: &[u64], max_gap_ms: &[u64], expected: f64) -> usize {
    let n = payload.len().max(max_gap_ms.len());
    (0..n)
        .filter(|&i| {
            let got = payload.get(i).copied().unwrap_or(0) as f64;
            let gap = max_gap_ms.get(i).copied().unwrap_or(u64::MAX);
            gap > STALL_GAP_MS || got < STALL_SHARE * expected
        })
        .count()
}

/// Per-viewer rates as "min / median / max" Mbit/s.
pub fn spread_mbps(payload: &[u64], window_s: f64) -> String {
    if payload.is_empty() || window_s <= 0.0 {
        return "-".into();
    }
    let mut v: Vec<u64> = payload.to_vec();
    v.sort_unstable();
    let m = |b: u64| b as f64 * 8.0 / window_s / 1e6;
    format!(
        "{:.2} / {:.2} / {:.2}",
        m(v[0]),
        m(v[v.len() / 2]),
        m(v[v.len() - 1])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(viewers: usize, gbytes_per_s: f64, cpu: f64) -> Row {
        Row {
            viewers,
            connected: viewers,
            window_s: 10.0,
            cpu_user_s: cpu * 10.0 * 0.25,
            cpu_sys_s: cpu * 10.0 * 0.75,
            payload_bytes: (gbytes_per_s * 1e9 / 8.0 * 10.0) as u64,
            stalls: 0,
            rss_base: 100 << 20,
            rss_streaming: (100 << 20) + viewers as u64 * 40 * 1024,
        }
    }

    #[test]
    fn derived_numbers() {
        let r = row(1000, 4.0, 0.2);
        assert!((r.cpu_per_s() - 0.2).abs() < 1e-9);
        assert!((r.gbps() - 4.0).abs() < 1e-6);
        assert!((r.core_per_gbps().unwrap() - 0.05).abs() < 1e-6);
        assert!((r.rss_per_viewer() - 40.0 * 1024.0).abs() < 1e-6);
        let idle = Row {
            payload_bytes: 0,
            ..row(1, 0.0, 0.0)
        };
        assert_eq!(idle.core_per_gbps(), None);
        let shrunk = Row {
            rss_streaming: 90 << 20,
            ..row(10, 0.04, 0.01)
        };
        assert!(
            shrunk.rss_per_viewer() < 0.0,
            "negative growth is shown, not hidden"
        );
    }

    #[test]
    fn table_lines_line_up() {
        let h = table_header();
        let r = table_row(&row(1000, 4.0, 0.2));
        assert_eq!(h.len(), r.len(), "\n{h}\n{r}");
        assert!(r.contains(" 0.050 "), "{r}");
        assert!(r.contains("40.0 KiB"), "{r}");
        assert!(r.trim_start().starts_with("1000"));
        let none = table_row(&Row {
            payload_bytes: 0,
            ..row(1, 0.0, 0.0)
        });
        assert!(none.contains(" - "), "{none}");
    }

    #[test]
    fn verdict_uses_the_largest_step() {
        let rows = vec![row(10, 0.04, 0.01), row(1000, 4.0, 0.3)];
        let v = verdict(&rows).unwrap();
        assert!(v.starts_with("target at 1000 viewers"), "{v}");
        assert!(v.contains("0.075 ≤ 0.06 → MISSED"), "{v}");
        assert!(v.contains("RSS/viewer 40.0 KiB ≤ 64 KiB → met"), "{v}");
        assert_eq!(verdict(&[]), None);
    }

    #[test]
    fn stalls_are_gaps_or_short_deliveries() {
        let expected = 5_000_000.0;
        let payload = [5_000_000, 4_600_000, 4_400_000, 5_100_000, 0];
        let gaps = [40, 40, 40, 1200, 10_000];
        // #2 got < 90 %, #3 paused > 1 s, #4 never connected.
        assert_eq!(count_stalls(&payload, &gaps, expected), 3);
        assert_eq!(count_stalls(&payload[..2], &gaps[..2], expected), 0);
        assert_eq!(
            count_stalls(&[5_000_000], &[], expected),
            1,
            "a missing gap counts as a stall"
        );
    }

    #[test]
    fn per_viewer_spread() {
        assert_eq!(
            spread_mbps(&[1_250_000, 5_000_000, 2_500_000], 10.0),
            "1.00 / 2.00 / 4.00"
        );
        assert_eq!(spread_mbps(&[], 10.0), "-");
    }
}
