//! The remux's input: the hub's RTP tracks, as the publisher sent them,
//! pushed into the graph's appsrcs by one tokio task per stream.
//!
//! The hub keeps a packet's payload and header values, not its bytes: each
//! packet is written back with a plain header (the track's payload type, the
//! publisher's sequence number, timestamp and marker; a fixed SSRC per
//! track, since one remux serves one publisher run). Packets of another
//! payload type (RTX, FEC, a second codec) are not this track's media and
//! are counted and left out. A lagging receiver (the graph could not keep
//! up) counts what it missed and goes on: the jitter buffer sees the gap as
//! loss and the depayloader waits for the next keyframe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer_app as gst_app;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::hub::{RtpPkt, RtpSubscriber};
use crate::media::rtp::RtpPacket;

/// SSRCs written into the rebuilt packets (any constant does: one sender per track).
const VIDEO_SSRC: u32 = 0x7069_7876; // "pixv"
const AUDIO_SSRC: u32 = 0x7069_7861; // "pixa"

/// What the feed saw, shared with [`super::Remux::stats`].
#[derive(Debug, Default)]
pub(super) struct FeedCounters {
    pub video_packets: AtomicU64,
    pub audio_packets: AtomicU64,
    /// Packets the feed missed because it fell behind the hub's ring.
    pub lagged: AtomicU64,
    /// Packets of another payload type than the track's.
    pub ignored: AtomicU64,
    /// Packets the appsrc refused (the graph is stopping or failed).
    pub refused: AtomicU64,
}

/// One track's way into the graph.
pub(super) struct Input {
    pub src: gst_app::AppSrc,
    pub payload_type: u8,
}

/// Feed `video` (and `audio`, when the stream has it) from `sub` until the
/// graph stops taking packets or the task is aborted.
pub(super) async fn run(
    sub: RtpSubscriber,
    video: Input,
    audio: Option<Input>,
    counters: Arc<FeedCounters>,
) {
    let RtpSubscriber {
        video: mut video_rx,
        audio: audio_rx,
    } = sub;
    // Without audio the audio receiver is dropped: nothing to lag behind.
    let mut audio_rx = audio.as_ref().map(|_| audio_rx);
    loop {
        let go_on = tokio::select! {
            r = video_rx.recv() => {
                deliver(r, &video, VIDEO_SSRC, &counters.video_packets, &counters)
            }
            r = recv_opt(audio_rx.as_mut()) => match &audio {
                Some(input) => deliver(r, input, AUDIO_SSRC, &counters.audio_packets, &counters),
                None => true,
            },
        };
        if !go_on {
            return;
        }
    }
}

/// `rx.recv()`, or never when there is no receiver.
async fn recv_opt(rx: Option<&mut broadcast::Receiver<RtpPkt>>) -> Result<RtpPkt, RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Push one received packet; `false` when the feed should end.
fn deliver(
    received: Result<RtpPkt, RecvError>,
    input: &Input,
    ssrc: u32,
    packets: &AtomicU64,
    counters: &FeedCounters,
) -> bool {
    let pkt = match received {
        Ok(pkt) => pkt,
        Err(RecvError::Lagged(n)) => {
            counters.lagged.fetch_add(n, Ordering::Relaxed);
            return true;
        }
        Err(RecvError::Closed) => return false,
    };
    if pkt.payload_type != input.payload_type {
        counters.ignored.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    let bytes = rebuild(&pkt, ssrc);
    match input.src.push_buffer(gst::Buffer::from_mut_slice(bytes)) {
        Ok(_) => {
            packets.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            // Flushing / EOS: the graph is stopping. Anything else is an
            // error the element also posted on the bus (reported there).
            tracing::debug!("remux appsrc refused a packet: {e:?}");
            !matches!(e, gst::FlowError::Flushing | gst::FlowError::Eos)
        }
    }
}

/// The packet's bytes as the publisher's RTP elements would read them.
fn rebuild(pkt: &RtpPkt, ssrc: u32) -> Vec<u8> {
    RtpPacket {
        payload_type: pkt.payload_type,
        marker: pkt.marker,
        sequence: pkt.sequence,
        timestamp: pkt.timestamp,
        ssrc,
        payload: &pkt.payload,
    }
    .to_vec()
}
