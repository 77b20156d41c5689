//! p50 / p95 / max of a set of measurements (latencies, join times).

/// p50 / p95 / max of a set of latencies (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Summary {
    /// `None` when there is nothing to summarise. Percentiles by nearest rank.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Self {
            count: v.len(),
            p50: rank(0.50),
            p95: rank(0.95),
            max: v[v.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            Summary::of(&v),
            Some(Summary {
                count: 100,
                p50: 50.0,
                p95: 95.0,
                max: 100.0
            })
        );
        assert_eq!(
            Summary::of(&[7.0]),
            Some(Summary {
                count: 1,
                p50: 7.0,
                p95: 7.0,
                max: 7.0
            })
        );
        let s = Summary::of(&[3.0, f64::NAN, 1.0, 2.0]).unwrap();
        assert_eq!((s.count, s.p50, s.max), (3, 2.0, 3.0));
        assert_eq!(Summary::of(&[]), None);
    }
}
