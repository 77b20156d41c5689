//! The bus watch: a dedicated thread that turns every ERROR (and an
//! unexpected end of stream) into a typed [`PipelineError`], logs it and
//! sends it on the run's `failures` channel; warnings are logged; latency
//! changes are applied. Never on a streaming thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::mpsc::UnboundedSender;

use super::error::PipelineError;
use crate::supervisor::ProducerError;

/// Name of the application message that ends the watch.
const STOP: &str = "pixelpass-bus-stop";

/// How long one wait for a message lasts before the stop flag is checked
/// again (the stop message normally ends the wait at once).
const POLL: gst::ClockTime = gst::ClockTime::from_mseconds(200);

pub(crate) struct BusWatch {
    bus: gst::Bus,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BusWatch {
    pub fn spawn(
        pipeline: &gst::Pipeline,
        failures: UnboundedSender<ProducerError>,
    ) -> Result<Self, PipelineError> {
        let bus = pipeline.bus().ok_or_else(|| PipelineError::Create {
            element: pipeline.name().to_string(),
            message: "the pipeline has no bus".into(),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let bus = bus.clone();
            let stop = stop.clone();
            let pipeline = pipeline.downgrade();
            std::thread::Builder::new()
                .name("pixelpass-bus".into())
                .spawn(move || watch(&bus, &pipeline, &stop, &failures))
                .map_err(|e| PipelineError::Thread {
                    what: "bus watch",
                    message: e.to_string(),
                })?
        };
        Ok(Self {
            bus,
            stop,
            thread: Some(thread),
        })
    }

    /// Handle what is already on the bus, then end the thread.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        let msg = gst::message::Application::new(gst::Structure::new_empty(STOP));
        if self.bus.post(msg).is_err() {
            tracing::debug!("bus is flushing; the watch ends at its next poll");
        }
        if thread.join().is_err() {
            tracing::error!("the bus watch thread panicked");
        }
    }
}

impl Drop for BusWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch(
    bus: &gst::Bus,
    pipeline: &gst::glib::WeakRef<gst::Pipeline>,
    stop: &AtomicBool,
    failures: &UnboundedSender<ProducerError>,
) {
    loop {
        let Some(msg) = bus.timed_pop(POLL) else {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            continue;
        };
        match msg.view() {
            gst::MessageView::Application(a) if a.structure().is_some_and(|s| s.name() == STOP) => {
                return
            }
            gst::MessageView::Warning(w) => {
                let element = source_name(&msg);
                tracing::warn!(element = %element, debug = ?w.debug(), "GStreamer warning: {}", w.error());
            }
            gst::MessageView::Latency(_) => {
                if let Some(p) = pipeline.upgrade() {
                    if let Err(e) = p.recalculate_latency() {
                        tracing::debug!("latency recalculation failed: {e}");
                    }
                }
            }
            _ => {}
        }
        if let Some(err) = classify(&msg) {
            if let PipelineError::Bus {
                element,
                message,
                debug: details,
            } = &err
            {
                tracing::error!(element = %element, details = ?details, "pipeline error: {message}");
            } else {
                tracing::error!("pipeline: {err}");
            }
            // The receiver may be gone (run being torn down): nothing to tell.
            let _ = failures.send(err.into());
        }
    }
}

/// What a bus message means for the run: `Some` for an ERROR or an end of
/// stream (a live source never ends by itself).
pub(crate) fn classify(msg: &gst::MessageRef) -> Option<PipelineError> {
    match msg.view() {
        gst::MessageView::Error(e) => Some(PipelineError::Bus {
            element: source_name(msg),
            message: e.error().to_string(),
            debug: e.debug().map(|d| d.to_string()),
        }),
        gst::MessageView::Eos(_) => Some(PipelineError::EndOfStream),
        _ => None,
    }
}

fn source_name(msg: &gst::MessageRef) -> String {
    msg.src()
        .map_or_else(|| "pipeline".to_owned(), |s| s.name().to_string())
}
