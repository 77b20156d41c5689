//! A published stream's producer, as the supervisor sees it: a run starts
//! when its publisher's first packet arrives and fails when the publisher
//! goes (DELETE, consent lost, DTLS closed), so the supervisor closes the
//! stream's viewers before its sources and starts waiting again — a
//! republish continues the stream.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::engine::Cmd;
use super::slot::{Slot, HUB_AUDIO_PT, HUB_VIDEO_PT};
use crate::capture::remux::Remux;
use crate::hub::{Hub, KeyframeSource};
use crate::supervisor::{BoxFuture, Producer, ProducerError, Run, RunHandle};

/// When the probing PLIs go out after a run's first packet: past a keyframe
/// rate limit of 500 ms on the publisher's side (the host's), and once more
/// in case the first one was lost or held back.
const PLI_PROBES: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(600),
    std::time::Duration::from_millis(2500),
];

pub struct WhipProducer {
    slot: Arc<Slot>,
    cmds: mpsc::UnboundedSender<Cmd>,
    /// HTTP-TS viewers are served (H.264 remuxed, Opus → AAC, once).
    http_ts: bool,
}

impl WhipProducer {
    pub(crate) fn new(slot: Arc<Slot>, cmds: mpsc::UnboundedSender<Cmd>, http_ts: bool) -> Self {
        Self {
            slot,
            cmds,
            http_ts,
        }
    }
}

/// Keyframe requests of the hub (rate-limited there) → PLI to the publisher:
/// the hub's keyframe source while a publisher runs. It holds the slot
/// weakly: the slot holds the hub, and a hub that held its slot would keep
/// both alive for ever once the stream is deleted (a cycle of `Arc`s).
struct Pli {
    slot: Weak<Slot>,
    stream: Arc<str>,
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl KeyframeSource for Pli {
    fn request_keyframe(&self) {
        let Some(slot) = self.slot.upgrade() else {
            return; // the stream is gone
        };
        slot.pli_sent(std::time::Instant::now());
        let _ = self.cmds.send(Cmd::Keyframe(self.stream.clone()));
    }
}

impl Producer for WhipProducer {
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        let slot = self.slot.clone();
        let cmds = self.cmds.clone();
        let http_ts = self.http_ts;
        Box::pin(async move {
            let stream: Arc<str> = slot.id.as_str().into();
            hub.begin_run(Some(Arc::new(Pli {
                slot: Arc::downgrade(&slot),
                stream: stream.clone(),
                cmds: cmds.clone(),
            })));
            let (first, failures) = slot.attach_run();
            let mut closed = slot.closed();
            let deleted = || {
                ProducerError::cancelled("the stream was deleted while it waited for a publisher")
            };
            tokio::select! {
                _ = slot.claimed() => {}
                _ = closed.wait_for(|c| *c) => {
                    slot.detach_run();
                    return Err(deleted());
                }
            }
            // A publisher's offer was answered: the remux listens before its
            // first packet, so it starts on the publisher's first keyframe
            // (OBS sends the next one only seconds later and ignores PLI).
            let remux = if http_ts {
                let audio = slot.has_audio().then_some(HUB_AUDIO_PT);
                remux_start(&hub, HUB_VIDEO_PT, audio, &slot.id)
            } else {
                None
            };
            let waited = tokio::select! {
                r = first => r.map_err(|_| ProducerError::start_failed("the publisher left before its first packet (its ICE or DTLS did not connect?)")),
                _ = closed.wait_for(|c| *c) => Err(deleted()),
            };
            if let Err(e) = waited {
                slot.detach_run();
                if let Some(r) = remux {
                    r.stop().await;
                }
                return Err(e);
            }
            // A PLI shortly after the first packet (past the publisher's
            // first keyframe) tells whether it answers them: if it does,
            // viewers join on a fresh keyframe rather than the cached GOP.
            {
                let (slot, cmds, stream) = (slot.clone(), cmds.clone(), stream.clone());
                let t0 = tokio::time::Instant::now();
                tokio::spawn(async move {
                    for after in PLI_PROBES {
                        tokio::time::sleep_until(t0 + after).await;
                        if slot.resource().is_none() || !slot.join_cached_first() {
                            return; // gone, or answered already
                        }
                        slot.pli_sent(std::time::Instant::now());
                        let _ = cmds.send(Cmd::Keyframe(stream.clone()));
                    }
                });
            }
            Ok(Run {
                encoder: "WHIP publisher (its H.264 as sent)".into(),
                failures,
                handle: Box::new(Handle {
                    slot,
                    cmds,
                    stream,
                    remux,
                }),
            })
        })
    }
}

struct Handle {
    slot: Arc<Slot>,
    cmds: mpsc::UnboundedSender<Cmd>,
    stream: Arc<str>,
    remux: Option<RemuxTask>,
}

/// HTTP-TS of a published stream: its RTP depacketized once, Opus → AAC
/// once, muxed into the hub's TS side, in a task of its own that restarts
/// the remux after a GStreamer error (WebRTC viewers are not affected by
/// one). Without it WebRTC still works.
fn remux_start(hub: &Hub, video_pt: u8, audio_pt: Option<u8>, id: &str) -> Option<RemuxTask> {
    let first = match Remux::start(hub.clone(), video_pt, audio_pt) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(stream = %id, "HTTP-TS of this published stream is off: {e}");
            return None;
        }
    };
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (hub, id) = (hub.clone(), id.to_owned());
    let task = tokio::spawn(async move {
        let mut remux = first;
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                failed = remux.failure() => {
                    let why = failed.map_or_else(|| "it stopped".to_owned(), |e| e.to_string());
                    tracing::warn!(stream = %id, "HTTP-TS remux failed ({why}); starting it again");
                    remux.stop().await;
                    tokio::select! {
                        _ = &mut stop_rx => return,
                        _ = tokio::time::sleep(REMUX_RETRY) => {}
                    }
                    match Remux::start(hub.clone(), video_pt, audio_pt) {
                        Ok(r) => remux = r,
                        Err(e) => {
                            tracing::warn!(stream = %id, "HTTP-TS of this published stream is off: {e}");
                            return;
                        }
                    }
                }
            }
        }
        remux.stop().await;
    });
    Some(RemuxTask {
        stop: stop_tx,
        task,
    })
}

/// A failed remux is started again after this.
const REMUX_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

struct RemuxTask {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RemuxTask {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

impl RunHandle for Handle {
    /// The run stops (the publisher left, or the operator stopped the
    /// stream): the remux stops, and a publisher still connected is closed.
    fn stop(self: Box<Self>) -> BoxFuture<()> {
        Box::pin(async move {
            self.slot.detach_run();
            if let Some(remux) = self.remux {
                remux.stop().await;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            if self.cmds.send(Cmd::CloseStream(self.stream, tx)).is_ok() {
                let _ = rx.await;
            }
        })
    }
}
