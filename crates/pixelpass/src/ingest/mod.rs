//! From a producer's bytes to the hub, the same for every producer.
//!
//! TS: a dedicated ingest thread feeds the hub from a bounded channel (filled
//! by GStreamer's appsink, [`crate::capture::appsink`], or by FFmpeg's stdout
//! reader) and, when the muxer has been quiet for [`IDLE_FLUSH`] with data
//! pending, flushes the hub's chunker so the last frame goes out at once
//! instead of waiting for the next one. The loop ([`run`]) is generic over
//! what the bytes are and where they go. RTP legs: [`rtp`].

use std::io;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::hub::Hub;

pub(crate) mod rtp;

/// Quiet time after which pending TS is flushed out.
pub const IDLE_FLUSH: Duration = Duration::from_millis(2);

/// Buffers (TS packets) the channel holds before the streaming thread waits:
/// ≈ 0.75 MB, several frames at any sane bitrate.
pub const CHANNEL_CAPACITY: usize = 4096;

/// Where ingested TS goes (the hub; a fake in tests).
pub trait TsSink {
    fn push_ts(&self, bytes: &[u8], now: Instant);
    fn flush_ts(&self, now: Instant);
}

impl TsSink for Hub {
    fn push_ts(&self, bytes: &[u8], now: Instant) {
        Hub::push_ts(self, bytes, now);
    }

    fn flush_ts(&self, now: Instant) {
        Hub::flush_ts(self, now);
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    pub messages: u64,
    pub bytes: u64,
    /// Idle flushes (≈ one per video frame when the muxer runs in bursts).
    pub idle_flushes: u64,
}

/// Feed `sink` from `rx` until every sender is gone; then flush what is pending.
pub fn run<B: AsRef<[u8]>, S: TsSink + ?Sized>(
    rx: &Receiver<B>,
    sink: &S,
    idle: Duration,
) -> IngestStats {
    let mut stats = IngestStats::default();
    let mut pending = false;
    loop {
        let msg = if pending {
            match rx.recv_timeout(idle) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    sink.flush_ts(Instant::now());
                    stats.idle_flushes += 1;
                    pending = false;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            }
        };
        let bytes = msg.as_ref();
        stats.messages += 1;
        stats.bytes += bytes.len() as u64;
        sink.push_ts(bytes, Instant::now());
        pending = true;
    }
    if pending {
        sink.flush_ts(Instant::now());
    }
    stats
}

/// [`run`] on its own thread.
pub fn spawn<B, S>(rx: Receiver<B>, sink: S, name: &str) -> io::Result<JoinHandle<IngestStats>>
where
    B: AsRef<[u8]> + Send + 'static,
    S: TsSink + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || run(&rx, &sink, IDLE_FLUSH))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Ev {
        Push(usize),
        Flush,
    }

    /// Records calls and reports flushes on a channel the test can wait on.
    struct Fake {
        log: Mutex<Vec<Ev>>,
        flushed: Mutex<mpsc::Sender<()>>,
    }

    impl TsSink for Fake {
        fn push_ts(&self, bytes: &[u8], _now: Instant) {
            self.log.lock().unwrap().push(Ev::Push(bytes.len()));
        }

        fn flush_ts(&self, _now: Instant) {
            self.log.lock().unwrap().push(Ev::Flush);
            let _ = self.flushed.lock().unwrap().send(());
        }
    }

    #[test]
    fn idle_flush_after_a_burst_and_final_flush_on_close() {
        let (flushed_tx, flushed_rx) = mpsc::channel();
        let sink = Arc::new(Fake {
            log: Mutex::new(Vec::new()),
            flushed: Mutex::new(flushed_tx),
        });
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(16);
        // A burst of three packets (queued before the loop runs, so no gap
        // inside it), then quiet: exactly one idle flush follows.
        for _ in 0..3 {
            tx.send(vec![0x47; 188]).unwrap();
        }
        let worker = {
            let sink = sink.clone();
            std::thread::spawn(move || run(&rx, &*sink, IDLE_FLUSH))
        };
        flushed_rx
            .recv_timeout(Duration::from_secs(2))
            .expect("an idle flush after the burst");
        // Another packet, then the channel closes: the pending data is flushed on exit.
        tx.send(vec![0x47; 188]).unwrap();
        drop(tx);
        let stats = worker.join().unwrap();
        assert_eq!(stats.messages, 4);
        assert_eq!(stats.bytes, 4 * 188);
        let log = sink.log.lock().unwrap();
        assert_eq!(
            &log[..4],
            &[Ev::Push(188), Ev::Push(188), Ev::Push(188), Ev::Flush]
        );
        assert_eq!(log.last(), Some(&Ev::Flush));
        assert_eq!(log.iter().filter(|e| **e == Ev::Push(188)).count(), 4);
        // Never a flush with nothing pending.
        assert!(!log
            .windows(2)
            .any(|w| w[0] == Ev::Flush && w[1] == Ev::Flush));
    }
}
