//! What the supervisor runs: a producer that feeds a hub. `host` has a
//! GStreamer pipeline; `serve` will have FFmpeg processes. The supervisor
//! knows only this trait.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::hub::Hub;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What kind of failure a [`ProducerError`] is: the API's `last_error.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The run never got going: a missing element or binary, FFmpeg exited
    /// before its first media, no media within the start timeout.
    StartFailed,
    /// A running producer died: FFmpeg exited with an error or a signal, a
    /// GStreamer element posted an ERROR.
    Crashed,
    /// The producer runs but sent no media for the stale timeout.
    Stalled,
    /// The producer ended by itself without an error (end of stream, FFmpeg
    /// exited with status 0): a live stream should not end.
    Ended,
    /// Someone said no: the screen-share dialog was cancelled, or the
    /// desktop ended the share.
    Cancelled,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::StartFailed => "start_failed",
            FailureKind::Crashed => "crashed",
            FailureKind::Stalled => "stalled",
            FailureKind::Ended => "ended",
            FailureKind::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a producer could not start or stopped running: what kind of failure
/// it was, and a message that names what failed and, where we know it, what
/// to do. Serialized as `{"kind": "crashed", "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ProducerError {
    pub kind: FailureKind,
    pub message: String,
}

impl ProducerError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn start_failed(message: impl Into<String>) -> Self {
        Self::new(FailureKind::StartFailed, message)
    }

    pub fn crashed(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Crashed, message)
    }

    pub fn stalled(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Stalled, message)
    }

    pub fn ended(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Ended, message)
    }

    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Cancelled, message)
    }

    /// The same failure, seen before the run's first media: a run that
    /// crashed, stalled or ended then never started. A cancel stays one.
    pub fn while_starting(self) -> Self {
        match self.kind {
            FailureKind::Cancelled | FailureKind::StartFailed => self,
            _ => Self {
                kind: FailureKind::StartFailed,
                ..self
            },
        }
    }

    /// The message with `prefix` in front (the kind is kept).
    pub fn context(self, prefix: &str) -> Self {
        Self {
            message: format!("{prefix}: {}", self.message),
            ..self
        }
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
