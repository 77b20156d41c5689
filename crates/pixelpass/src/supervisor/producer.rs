//! What the supervisor runs: a producer that feeds a hub. `host` has a
//! GStreamer pipeline; `serve` will have FFmpeg processes. The supervisor
//! knows only this trait.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;

use crate::hub::Hub;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why a producer could not start or stopped running. The message names what
/// failed and, where we know it, what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ProducerError(pub String);

impl ProducerError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

pub trait Producer: Send + Sync + 'static {
    /// Start one run that feeds `hub` (calling `hub.begin_run` first).
    /// Resolves once media flows, or with the reason it could not start.
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>>;
}

/// A running producer.
pub struct Run {
    /// What runs, for the banner and the status (e.g. "x264enc").
    pub encoder: String,
    /// Runtime failures (a pipeline ERROR, a crashed child). The run is
    /// considered dead after the first one.
    pub failures: mpsc::UnboundedReceiver<ProducerError>,
    pub handle: Box<dyn RunHandle>,
}

pub trait RunHandle: Send {
    /// Stop and release everything this run holds.
    fn stop(self: Box<Self>) -> BoxFuture<()>;
}
