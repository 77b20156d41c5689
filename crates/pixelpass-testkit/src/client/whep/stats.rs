//! The client's counters: [`ClientStats`], and [`SeqCounter`] for the
//! H.264 sequence numbers seen on the wire.

/// Counters since the client was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Datagrams and their bytes as received on the UDP socket (SRTP, SRTCP,
    /// STUN, DTLS), including the ones the loss simulation dropped.
    pub udp_datagrams: u64,
    pub udp_bytes: u64,
    pub video_frames: u64,
    pub keyframes: u64,
    /// Frames after a gap in the packet sequence (loss not repaired in time).
    pub gaps: u64,
    pub audio_packets: u64,
    /// Video RTP packets dropped by [`WhepOptions::lose_video_every`](super::WhepOptions::lose_video_every).
    pub dropped: u64,
    /// As of str0m's last stats event: NACKs and PLIs sent, RTP packets received (all tracks).
    pub nacks_sent: u64,
    pub plis_sent: u64,
    pub rtp_packets: u64,
    /// Original H.264 RTP packets (not RTX) by sequence number: the span
    /// from the first to the highest seen, and how many arrived.
    pub video_rtp_expected: u64,
    pub video_rtp_received: u64,
    /// The most datagrams received within any [`WhepOptions::burst_window`](super::WhepOptions::burst_window)
    /// (kernel receive timestamps); 0 when not measured.
    pub max_burst: u64,
}

impl ClientStats {
    /// H.264 packets that did not arrive on the wire (repaired by RTX or not).
    pub fn video_rtp_lost(&self) -> u64 {
        self.video_rtp_expected
            .saturating_sub(self.video_rtp_received)
    }
}

/// RFC 3550-style counting of one stream's sequence numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqCounter {
    first: Option<u64>,
    max: u64,
    received: u64,
}

impl SeqCounter {
    pub fn record(&mut self, seq: u16) {
        self.received += 1;
        match self.first {
            None => {
                // Room below for reordered packets before the first one.
                let ext = (1u64 << 16) + u64::from(seq);
                self.first = Some(ext);
                self.max = ext;
            }
            Some(first) => {
                let delta = i64::from(seq.wrapping_sub(self.max as u16) as i16);
                let ext = (self.max as i64 + delta).max(0) as u64;
                if ext > self.max {
                    self.max = ext;
                } else if ext < first {
                    self.first = Some(ext);
                }
            }
        }
    }

    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.max - f + 1)
    }

    pub fn received(&self) -> u64 {
        self.received
    }
}

/// The most events within any window of a given length, from their times
/// (ns, in order; an earlier one counts as at the latest time seen).
#[derive(Debug, Clone, Default)]
pub struct BurstMeter {
    window_ns: u64,
    times: std::collections::VecDeque<u64>,
    max: u64,
    /// `counts[n]`: datagrams that arrived with n in the window (their own
    /// included; the last slot counts all above).
    counts: [u64; 32],
}

impl BurstMeter {
    pub fn new(window: std::time::Duration) -> Self {
        Self {
            window_ns: window.as_nanos() as u64,
            ..Self::default()
        }
    }

    pub fn record(&mut self, t_ns: u64) {
        let t = t_ns.max(self.times.back().copied().unwrap_or(0));
        while self
            .times
            .front()
            .is_some_and(|&f| t.saturating_sub(f) >= self.window_ns)
        {
            self.times.pop_front();
        }
        self.times.push_back(t);
        self.max = self.max.max(self.times.len() as u64);
        self.counts[self.times.len().min(31)] += 1;
    }

    /// How many datagrams arrived with n in their window, for n = 1…31 (31: or more).
    pub fn histogram(&self) -> &[u64] {
        &self.counts[1..]
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_meter_counts_the_fullest_window() {
        let ms = 1_000_000u64;
        let mut m = BurstMeter::new(std::time::Duration::from_millis(5));
        // 4 at 0 ms, 4 at 4 ms (8 within 5 ms), 4 at 9 ms (8 again: 4..9 is 5 ms).
        for t in [0, 4, 9] {
            for _ in 0..4 {
                m.record(t * ms);
            }
        }
        assert_eq!(m.max(), 8);
        // Ten at once is ten, whatever came before.
        for _ in 0..10 {
            m.record(100 * ms);
        }
        assert_eq!(m.max(), 10);
        // A stamp that goes back counts as now.
        m.record(50 * ms);
        assert_eq!(m.max(), 11);
    }

    #[test]
    fn sequence_numbers_count_losses_across_wrap_around() {
        let mut c = SeqCounter::default();
        for seq in [65533u16, 65534, 65535, 1, 2, 0, 4] {
            c.record(seq);
        }
        // 65533..=4 is 8 numbers; 3 never came (0 came late: not lost).
        assert_eq!((c.expected(), c.received()), (8, 7));
        let mut c = SeqCounter::default();
        c.record(10);
        c.record(9);
        assert_eq!(
            (c.expected(), c.received()),
            (2, 2),
            "a late packet before the first one"
        );
        assert_eq!(SeqCounter::default().expected(), 0);
    }
}
