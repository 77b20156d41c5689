use std::ops::Deref;
use std::panic::RefUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use crate::io::DATAGRAM_MAX_PACKET_SIZE;
use crate::packet::Vp8Patch;
use crate::rtp_::{MediaTime, RtpHeader, SeqNo};

use super::RtpPacket;
use super::rtx_cache_buf::EvictingBuffer;

const RTX_CACHE_SIZE_QUANTIZER: usize = 25;
const RTX_CACHE_QUANTIZE_SLOTS: usize = DATAGRAM_MAX_PACKET_SIZE / RTX_CACHE_SIZE_QUANTIZER;

#[derive(Debug)]
pub(crate) struct RtxCache {
    // Data, new additions here probably need to be cleared in [`clear`].
    packet_by_seq_no: EvictingBuffer<Cached>,

    // Technically we want [Option<SeqNo>; X] to indicate the absence of
    // a SeqNo. However We can half the storage space by using the sentinel
    // values SeqNo::MAX to indicate None
    seq_no_by_quantized_size: [SeqNo; RTX_CACHE_QUANTIZE_SLOTS],

    /// The header most recently cached, without its per-packet fields: the
    /// next packet whose header is the same apart from those shares it.
    last_header: Option<Arc<SharedHeader>>,

    /// A cached packet put back together, lent out by the getters.
    scratch: RtpPacket,
}

/// A sent packet as the cache keeps it.
///
/// An `RtpPacket` is ~400 bytes, ~290 of them its header, mostly extension
/// values and CSRC slots that are the same from one packet of a stream to the
/// next. A cache of a few hundred packets per stream, per peer, was mostly
/// copies of that. Here the header's per-packet fields (RTP timestamp,
/// marker) are kept inline and the rest is shared with the packets around it;
/// the sequence number is the entry's position. ~80 bytes a slot, with the
/// buffer's own. Not kept: when the packet was queued (`RtpPacket::timestamp`),
/// which nothing reads for a resend.
#[derive(Debug)]
struct Cached {
    time: MediaTime,
    payload: Arc<[u8]>,
    header: Arc<SharedHeader>,
    rtp_timestamp: u32,
    vp8_patch: Option<Vp8Patch>,
    marker: bool,
}

/// A header as the cached packets that have it share it, read-only.
#[derive(Debug)]
struct SharedHeader(RtpHeader);

// Nothing mutates a shared header: a panic cannot leave one half-changed.
// (Without this `Arc` asks for `RefUnwindSafe`, which the user extension
// values' `dyn Any` does not promise, and `Rtc` would lose `UnwindSafe`.)
impl RefUnwindSafe for SharedHeader {}

impl Deref for SharedHeader {
    type Target = RtpHeader;

    fn deref(&self) -> &RtpHeader {
        &self.0
    }
}

impl RtxCache {
    pub fn new(max_packet_count: usize, max_packet_age: Duration) -> Self {
        Self {
            packet_by_seq_no: EvictingBuffer::new(10, max_packet_age, max_packet_count),
            seq_no_by_quantized_size: [SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS],
            last_header: None,
            scratch: RtpPacket::blank(),
        }
    }

    pub fn cache_sent_packet(&mut self, packet: RtpPacket, now: Instant) {
        assert!(packet.nackable);
        let seq_no = packet.seq_no;
        let quantized_size = packet.payload.len() / RTX_CACHE_SIZE_QUANTIZER;
        let cached = self.compact(packet);
        self.packet_by_seq_no.push(*seq_no, now, cached);
        self.seq_no_by_quantized_size[quantized_size] = seq_no;
        self.remove_old_packets(now);
    }

    fn compact(&mut self, packet: RtpPacket) -> Cached {
        let RtpPacket {
            seq_no: _,
            time,
            mut header,
            payload,
            vp8_patch,
            timestamp: _,
            last_sender_info: _,
            nackable: _,
        } = packet;
        let rtp_timestamp = header.timestamp;
        let marker = header.marker;
        header.sequence_number = 0;
        header.timestamp = 0;
        header.marker = false;
        let header = match &self.last_header {
            Some(last) if ***last == header => last.clone(),
            _ => {
                let shared = Arc::new(SharedHeader(header));
                self.last_header = Some(shared.clone());
                shared
            }
        };
        Cached {
            time,
            payload,
            header,
            rtp_timestamp,
            vp8_patch,
            marker,
        }
    }

    /// Puts the cached packet back together in `scratch`.
    fn expand<'a>(scratch: &'a mut RtpPacket, seq_no: SeqNo, cached: &Cached) -> &'a mut RtpPacket {
        scratch.seq_no = seq_no;
        scratch.time = cached.time;
        scratch.header.clone_from(&**cached.header);
        scratch.header.sequence_number = *seq_no as u16;
        scratch.header.timestamp = cached.rtp_timestamp;
        scratch.header.marker = cached.marker;
        scratch.payload = cached.payload.clone();
        scratch.vp8_patch = cached.vp8_patch;
        scratch.last_sender_info = None;
        // Only nackable packets are cached.
        scratch.nackable = true;
        scratch
    }

    pub fn last_cached_seq_no(&self) -> Option<SeqNo> {
        Some(self.packet_by_seq_no.last_position()?.into())
    }

    /// The payload size of a cached packet, without putting it back together.
    pub fn cached_payload_len(&self, seq_no: SeqNo) -> Option<usize> {
        Some(self.packet_by_seq_no.get(*seq_no)?.payload.len())
    }

    pub fn get_cached_packet_by_seq_no(&mut self, seq_no: SeqNo) -> Option<&mut RtpPacket> {
        let cached = self.packet_by_seq_no.get(*seq_no)?;
        Some(Self::expand(&mut self.scratch, seq_no, cached))
    }

    pub fn get_cached_packet_smaller_than(&mut self, max_size: usize) -> Option<&mut RtpPacket> {
        let quantized_size = max_size / RTX_CACHE_SIZE_QUANTIZER;

        let seq_no = self.seq_no_by_quantized_size[..quantized_size]
            .iter()
            .rev()
            .filter(|seq_no| !seq_no.is_max())
            .find(|seq_no| self.packet_by_seq_no.contains(***seq_no))?;

        self.get_cached_packet_by_seq_no(*seq_no)
    }

    fn remove_old_packets(&mut self, now: Instant) {
        self.packet_by_seq_no.maybe_evict(now);
    }

    pub(crate) fn last_packet(&self) -> Option<&[u8]> {
        let packet = self.packet_by_seq_no.last()?;
        Some(packet.payload.as_ref())
    }

    pub(crate) fn clear(&mut self) {
        self.packet_by_seq_no.clear();
        self.seq_no_by_quantized_size = [SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS];
        self.last_header = None;
    }
}

#[cfg(test)]
mod test {
    use crate::rtp_::MediaTime;
    use crate::rtp_::RtpHeader;

    use super::*;

    fn after(now: Instant, millis: u64) -> Instant {
        now + Duration::from_millis(millis)
    }

    fn packet(now: Instant, seq_no: u64, millis: u64) -> RtpPacket {
        // As sent: the header's sequence number is the low 16 bits of
        // seq_no. The cache does not keep when a packet was queued.
        let _ = after(now, millis);
        RtpPacket {
            header: RtpHeader {
                sequence_number: seq_no as u16,
                ..Default::default()
            },
            seq_no: seq_no.into(),
            time: MediaTime::from_90khz(0),
            payload: millis.to_be_bytes().into(),
            vp8_patch: None,
            timestamp: crate::util::already_happened(),
            last_sender_info: None,
            nackable: true,
        }
    }

    #[test]
    fn rtx_cache_0_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(0, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_by_seq_no(1.into())
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(1000)
        );
    }

    #[test]
    fn rtx_cache_0_duration() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(10, Duration::from_secs(0));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(1.into()));
        assert_eq!(None, rtx_cache.get_cached_packet_smaller_than(1000));
    }

    #[test]
    fn rtx_cache_1_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(1, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_by_seq_no(1.into())
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(1000)
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(25)
        );
        assert_eq!(None, rtx_cache.get_cached_packet_smaller_than(24));
        rtx_cache.cache_sent_packet(packet(now, 2, 20), after(now, 20));
        assert_eq!(
            Some(&mut packet(now, 2, 20)),
            rtx_cache.get_cached_packet_by_seq_no(2.into())
        );
    }

    #[test]
    fn rtx_cache_100_sized_backwards() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(100, Duration::from_secs(3));

        for i in 1..=200 {
            let seq_no = 201 - i;
            let pkt = packet(now, seq_no, (201 - i) * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, now);
        }

        assert_eq!(
            Some(&mut packet(now, 200, 2000)),
            rtx_cache.get_cached_packet_by_seq_no(200.into())
        );
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(100.into()));
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(101.into()));
    }

    #[test]
    fn rtx_cache_eviction() {
        let now = Instant::now();
        // Cache can take all entries
        let mut rtx_cache = RtxCache::new(400, Duration::from_secs(1));
        for i in 1..=200 {
            let seq_no = i;
            let pkt = packet(now, seq_no, i * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, now);
        }

        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(99.into()));

        assert_eq!(
            Some(&mut packet(now, 100, 1000)),
            rtx_cache.get_cached_packet_by_seq_no(100.into())
        );
        assert_eq!(
            Some(&mut packet(now, 200, 2000)),
            rtx_cache.get_cached_packet_by_seq_no(200.into())
        );
    }
}
