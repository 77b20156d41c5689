//! Test-only fault injection (hidden; for `pixelpass-bench faults` and the
//! fault tests, never for operators): with `PIXELPASS_TEST_FAULTS=1` in
//! `host`'s environment, SIGUSR1 makes the running pipeline's layer-0 H.264
//! encoder post an ERROR on the bus, exactly as a crashing encoder would:
//! the bus watch reports it with the element's name and the supervisor
//! restarts the pipeline with its back-off. Without the variable nothing is
//! installed and SIGUSR1 keeps its default meaning.

use std::sync::Mutex;

use gstreamer as gst;
use gstreamer::prelude::*;

/// The environment variable that arms the trigger.
pub const ENV: &str = "PIXELPASS_TEST_FAULTS";

/// The message the injected error carries.
pub const MESSAGE: &str = "injected encoder fault (PIXELPASS_TEST_FAULTS)";

static ENCODER: Mutex<Option<gst::glib::WeakRef<gst::Element>>> = Mutex::new(None);

/// Is the trigger armed in this process?
pub fn enabled() -> bool {
    std::env::var(ENV).is_ok_and(|v| v == "1")
}

/// The encoder a fault is posted from (the current run's layer 0).
pub(crate) fn set_encoder(enc: &gst::Element) {
    if enabled() {
        *ENCODER.lock().unwrap_or_else(|p| p.into_inner()) = Some(enc.downgrade());
    }
}

/// Post the error now; false when no pipeline runs.
pub fn inject() -> bool {
    let enc = ENCODER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|w| w.upgrade());
    let Some(enc) = enc else {
        return false;
    };
    let msg = gst::message::Error::builder(gst::CoreError::Failed, MESSAGE)
        .src(&enc)
        .build();
    enc.post_message(msg).is_ok()
}

/// With the variable set: every SIGUSR1 injects one fault, until the
/// runtime ends. Call from inside a tokio runtime.
pub fn arm_on_sigusr1() {
    if !enabled() {
        return;
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = match signal(SignalKind::user_defined1()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("{ENV}: cannot watch SIGUSR1: {e}");
            return;
        }
    };
    tracing::warn!("{ENV}=1: SIGUSR1 makes the encoder fail (a test setting)");
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            if !inject() {
                tracing::warn!("{ENV}: SIGUSR1 but no pipeline runs: no fault injected");
            }
        }
    });
}
