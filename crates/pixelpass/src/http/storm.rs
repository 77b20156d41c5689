//! One log line per interval for an event that can come thousands of times a
//! second (an accept error, a refused or shed connection): the first one is
//! said at once, the rest are counted and said with their count when the
//! interval is over, instead of a line each.

use std::time::{Duration, Instant};

/// How often a storm is said at most.
pub const STORM_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Storm {
    interval: Duration,
    /// When the last line was written; `None` before the first event.
    said_at: Option<Instant>,
    /// Events since that line.
    pending: u64,
    /// What the latest pending event said.
    last: String,
}

/// A line to log: the message and how many events it stands for.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    pub count: u64,
    pub message: String,
    /// Over how long the events were counted (zero for the first).
    pub over: Duration,
}

impl Storm {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            said_at: None,
            pending: 0,
            last: String::new(),
        }
    }

    /// An event at `now`: a line when one is due.
    pub fn event(&mut self, now: Instant, message: impl Into<String>) -> Option<Line> {
        self.pending += 1;
        self.last = message.into();
        match self.said_at {
            Some(at) if now.duration_since(at) < self.interval => None,
            _ => self.take(now),
        }
    }

    /// Called now and then (a tick): the pending count once the interval is over.
    pub fn flush(&mut self, now: Instant) -> Option<Line> {
        match self.said_at {
            Some(at) if self.pending > 0 && now.duration_since(at) >= self.interval => {
                self.take(now)
            }
            _ => None,
        }
    }

    fn take(&mut self, now: Instant) -> Option<Line> {
        if self.pending == 0 {
            return None;
        }
        let over = self
            .said_at
            .map_or(Duration::ZERO, |at| now.duration_since(at));
        self.said_at = Some(now);
        let count = std::mem::take(&mut self.pending);
        Some(Line {
            count,
            message: std::mem::take(&mut self.last),
            over,
        })
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 1 {
            f.write_str(&self.message)
        } else {
            write!(
                f,
                "{} ({} times in the last {:.0} s)",
                self.message,
                self.count,
                self.over.as_secs_f64()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_one_line_per_interval_with_its_count() {
        let t0 = Instant::now();
        let mut s = Storm::new(Duration::from_secs(10));
        let first = s
            .event(t0, "accept failed: EMFILE")
            .expect("the first is said");
        assert_eq!(first.count, 1);
        let mut lines = 0;
        // 200 events 50 ms apart: 10 s worth.
        for i in 1..200u64 {
            let now = t0 + Duration::from_millis(50 * i);
            lines += s.event(now, "accept failed: EMFILE").is_some() as usize;
        }
        assert_eq!(lines, 0, "nothing more within the interval");
        assert!(s.flush(t0 + Duration::from_secs(9)).is_none());
        let l = s
            .flush(t0 + Duration::from_secs(10))
            .expect("the count is said");
        assert_eq!(l.count, 199);
        assert_eq!(
            l.to_string(),
            "accept failed: EMFILE (199 times in the last 10 s)"
        );
        assert!(
            s.flush(t0 + Duration::from_secs(30)).is_none(),
            "nothing pending"
        );
        // Quiet, then one more: said at once.
        assert!(s.event(t0 + Duration::from_secs(41), "x").is_some());
    }
}
