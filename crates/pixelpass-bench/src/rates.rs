//! The arithmetic every benchmark table shares: CPU seconds per second,
//! Gbit/s, core per Gbit/s, memory per client, MiB.

/// CPU seconds used per wall-clock second over `window_s`.
pub fn cpu_per_s(user_s: f64, sys_s: f64, window_s: f64) -> f64 {
    (user_s + sys_s) / window_s
}

/// `bytes` over `window_s`, in Gbit/s.
pub fn gbps(bytes: u64, window_s: f64) -> f64 {
    bytes as f64 * 8.0 / window_s / 1e9
}

/// CPU per Gbit/s delivered; `None` when nothing was delivered.
pub fn core_per_gbps(cpu_per_s: f64, gbps: f64) -> Option<f64> {
    (gbps > 0.0).then(|| cpu_per_s / gbps)
}

/// Resident memory added per client, from `base` to `now`. Signed: the heap
/// may shrink between steps.
pub fn rss_per(base: u64, now: u64, clients: usize) -> f64 {
    (now as f64 - base as f64) / clients.max(1) as f64
}

pub fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert!((cpu_per_s(0.2, 0.1, 2.0) - 0.15).abs() < 1e-12);
        assert!((gbps(125_000_000, 2.0) - 0.5).abs() < 1e-12);
        assert_eq!(core_per_gbps(0.3, 0.0), None);
        assert!((core_per_gbps(0.3, 0.5).unwrap() - 0.6).abs() < 1e-12);
        assert_eq!(rss_per(10 << 20, 9 << 20, 4), -(256.0 * 1024.0));
        assert_eq!(rss_per(0, 100, 0), 100.0, "no clients: per one");
        assert_eq!(mib(3.0 * 1024.0 * 1024.0), 3.0);
    }
}
