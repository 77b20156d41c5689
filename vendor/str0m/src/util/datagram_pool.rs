//! (pixelpass) Buffers for sealed RTP packets, reused on the thread that
//! sends them.
//!
//! Every RTP packet sent is sealed into a buffer of its own, which leaves
//! str0m as the `Transmit`'s contents and is freed once the datagram is on
//! the wire: a `malloc` and a `free` per packet, and, with hundreds of
//! peers, freed chunks scattered between long-lived allocations. A caller
//! that hands the sent buffers back ([`crate::recycle_datagram`]) has
//! later packets sealed into them; one that does not gets fresh buffers as
//! before. The pool is per thread (a sans-IO `Rtc` is polled on one thread
//! at a time, and the buffers go back on the thread that sent them), holds
//! at most [`POOL_MAX`] buffers, serves only packets near full size
//! ([`POOL_MIN`]), and takes back only buffers that were made for it
//! (capacity [`POOL_BUF`]), so it never grows a buffer or keeps a large
//! one.

use std::cell::RefCell;

/// A pooled buffer's capacity: any RTP packet within the MTU the WebRTC
/// stacks warn at (`DATAGRAM_MTU_WARN`), sealed.
pub(crate) const POOL_BUF: usize = crate::io::DATAGRAM_MTU_WARN;

/// Only packets this long and longer are sealed into a pooled buffer:
/// full-size video packets, most of what is sent. Shorter ones (audio, a
/// frame's last packet) get a buffer of their own length, as before: a
/// packet may wait in a pacing queue, where a pooled buffer's unused tail
/// would be held too (tried: every packet pooled read ~4 KiB more RSS a
/// peer at 1 Mbit/s and 200 peers).
const POOL_MIN: usize = POOL_BUF - 256;

/// Buffers kept, at most, per thread (~320 KiB).
const POOL_MAX: usize = 256;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` zeroes: a pooled one when `len` is in
/// `POOL_MIN..=POOL_BUF`.
pub(crate) fn zeroed(len: usize) -> Vec<u8> {
    if !(POOL_MIN..=POOL_BUF).contains(&len) {
        return vec![0; len];
    }
    let reused = POOL
        .try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten();
    let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(POOL_BUF));
    buf.clear();
    buf.resize(len, 0);
    buf
}

/// Keep `buf` for a later packet, if it was made by [`zeroed`] and the
/// pool has room; otherwise it is freed.
pub(crate) fn recycle(buf: Vec<u8>) {
    if buf.capacity() != POOL_BUF {
        return;
    }
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    });
}

/// Buffers in this thread's pool.
#[cfg(test)]
pub(crate) fn pooled() -> usize {
    POOL.with(|p| p.borrow().len())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_recycled_buffer_is_reused_zeroed_and_the_pool_is_bounded() {
        // Short: a buffer of its own length, not kept.
        let short = zeroed(POOL_MIN - 1);
        assert_eq!(short.capacity(), POOL_MIN - 1);
        let before = pooled();
        recycle(short);
        assert_eq!(pooled(), before);

        let mut a = zeroed(POOL_MIN);
        assert_eq!(a.len(), POOL_MIN);
        assert_eq!(a.capacity(), POOL_BUF);
        a.iter_mut().for_each(|b| *b = 0xAA);
        let ptr = a.as_ptr();
        recycle(a);
        assert_eq!(pooled(), before + 1);

        // The same buffer comes back, with no byte of the old packet in it.
        let b = zeroed(POOL_BUF);
        assert_eq!(b.as_ptr(), ptr);
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(pooled(), before);

        // Larger than a pooled buffer: a buffer of its own, never kept.
        let big = zeroed(POOL_BUF + 1);
        assert_eq!(big.len(), POOL_BUF + 1);
        recycle(big);
        // A buffer not made here (another capacity) is not kept either.
        recycle(Vec::with_capacity(64));
        assert_eq!(pooled(), before);

        // At most POOL_MAX are kept.
        for _ in 0..POOL_MAX + 10 {
            recycle(Vec::with_capacity(POOL_BUF));
        }
        assert_eq!(pooled(), POOL_MAX);
    }
}
