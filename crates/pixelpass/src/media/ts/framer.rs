//! The one MPEG-TS framer: bytes in any split → whole 188-byte packets.
//!
//! Sans-IO. A packet split across two pushes is joined; bytes that do not
//! start a packet (lost sync, garbage) are skipped up to the next sync byte
//! and counted. The hub's chunker, the latency client's access-unit reader
//! and the tests' capture scanner all frame through this.

use super::packet::{PACKET_LEN, SYNC_BYTE};

#[derive(Default)]
pub struct Framer {
    /// Bytes of a packet split across two pushes.
    partial: Vec<u8>,
    /// Times sync was lost (a run of skipped bytes, or a joined packet
    /// that did not start with the sync byte).
    pub resyncs: u64,
    /// Bytes skipped to find sync again.
    pub skipped: u64,
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes in any split; `packet` gets every whole packet, in order.
    pub fn push(&mut self, mut input: &[u8], mut packet: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            let take = (PACKET_LEN - self.partial.len()).min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.partial.len() < PACKET_LEN {
                return;
            }
            let pkt = std::mem::take(&mut self.partial);
            if pkt[0] == SYNC_BYTE {
                packet(&pkt);
            } else {
                self.resyncs += 1;
                self.skipped += PACKET_LEN as u64;
            }
        }
        while !input.is_empty() {
            if input[0] != SYNC_BYTE {
                self.resyncs += 1;
                let skip = input
                    .iter()
                    .position(|&b| b == SYNC_BYTE)
                    .unwrap_or(input.len());
                self.skipped += skip as u64;
                input = &input[skip..];
                continue;
            }
            if input.len() < PACKET_LEN {
                self.partial.extend_from_slice(input);
                return;
            }
            let (pkt, rest) = input.split_at(PACKET_LEN);
            packet(pkt);
            input = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(tag: u8) -> Vec<u8> {
        let mut p = vec![tag; PACKET_LEN];
        p[0] = SYNC_BYTE;
        p
    }

    fn frame(pushes: &[&[u8]]) -> (Vec<u8>, Framer) {
        let mut f = Framer::new();
        let mut tags = Vec::new();
        for p in pushes {
            f.push(p, |pk| {
                assert_eq!(pk.len(), PACKET_LEN);
                tags.push(pk[1]);
            });
        }
        (tags, f)
    }

    #[test]
    fn joins_packets_split_anywhere() {
        let stream: Vec<u8> = [pkt(1), pkt(2), pkt(3)].concat();
        for cut in [1, 100, 187, 188, 189, 300, 563] {
            let (tags, f) = frame(&[&stream[..cut], &stream[cut..]]);
            assert_eq!(tags, [1, 2, 3], "cut at {cut}");
            assert_eq!(f.resyncs, 0);
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frame(&bytes).0, [1, 2, 3]);
    }

    #[test]
    fn skips_garbage_to_the_next_sync_byte_and_counts_it() {
        let stream: Vec<u8> = [vec![0u8; 5], pkt(1), vec![9, 9], pkt(2)].concat();
        let (tags, f) = frame(&[&stream]);
        assert_eq!(tags, [1, 2]);
        assert_eq!((f.resyncs, f.skipped), (2, 7));
    }

    #[test]
    fn a_joined_packet_without_sync_is_dropped() {
        let mut bad = pkt(1);
        bad[0] = 0;
        let (tags, f) = frame(&[&[SYNC_BYTE][..], &bad[1..], &pkt(2)]);
        // The first byte was a sync byte, so the rest joins it: kept.
        assert_eq!(tags, [1, 2]);
        assert_eq!(f.resyncs, 0);
    }
}
