//! GStreamer's appsinks, where the graph's bytes leave GStreamer: the TS
//! appsink hands every buffer (mapped, no copy) to the ingest thread's
//! bounded channel; [`pull`] is the one way a streaming-thread callback
//! takes its sample (also used by the RTP appsinks). Callbacks run on a
//! GStreamer streaming thread: no async work, no locks beyond the channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer_app as gst_app;

/// The sample waiting at `sink`, or why there is none (end of stream, flushing).
pub(crate) fn pull(sink: &gst_app::AppSink) -> Result<gst::Sample, gst::FlowError> {
    sink.pull_sample().map_err(|_| {
        if sink.is_eos() {
            gst::FlowError::Eos
        } else {
            gst::FlowError::Flushing
        }
    })
}

/// What the appsink saw (how GStreamer hands us data).
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub samples: AtomicU64,
    pub buffers: AtomicU64,
    /// Samples that carried a buffer list rather than one buffer.
    pub lists: AtomicU64,
    pub bytes: AtomicU64,
}

/// A mapped buffer: the bytes without a copy.
pub type Packet = gst::MappedBuffer<gst::buffer::Readable>;

/// Hand every buffer reaching `appsink` to `tx`. Runs on the streaming
/// thread: no async work, no locks beyond the channel; if the channel is
/// full it waits for the ingest thread (a bounded, short wait that
/// back-pressures into the leaky pre-encoder queue).
pub(crate) fn attach(
    appsink: &gst_app::AppSink,
    tx: SyncSender<Packet>,
    counters: Arc<SinkCounters>,
) {
    let callbacks = gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = pull(sink)?;
            counters.samples.fetch_add(1, Ordering::Relaxed);
            if let Some(list) = sample.buffer_list() {
                counters.lists.fetch_add(1, Ordering::Relaxed);
                for buffer in list.iter_owned() {
                    forward(sink, buffer, &tx, &counters)?;
                }
            } else if let Some(buffer) = sample.buffer_owned() {
                forward(sink, buffer, &tx, &counters)?;
            }
            Ok(gst::FlowSuccess::Ok)
        })
        .build();
    appsink.set_callbacks(callbacks);
}

/// Stop handing buffers on: drops the sender, so the ingest thread ends once
/// it has drained the channel. Call with the pipeline stopped.
pub(crate) fn detach(appsink: &gst_app::AppSink) {
    appsink.set_callbacks(gst_app::AppSinkCallbacks::builder().build());
}

fn forward(
    sink: &gst_app::AppSink,
    buffer: gst::Buffer,
    tx: &SyncSender<Packet>,
    counters: &SinkCounters,
) -> Result<(), gst::FlowError> {
    let mapped = buffer.into_mapped_buffer_readable().map_err(|_| {
        gst::element_error!(
            sink,
            gst::StreamError::Failed,
            ("could not map a muxer buffer")
        );
        gst::FlowError::Error
    })?;
    counters.buffers.fetch_add(1, Ordering::Relaxed);
    counters
        .bytes
        .fetch_add(mapped.len() as u64, Ordering::Relaxed);
    tx.send(mapped).map_err(|_| {
        gst::element_error!(
            sink,
            gst::StreamError::Failed,
            ("the ingest thread is gone")
        );
        gst::FlowError::Error
    })
}
