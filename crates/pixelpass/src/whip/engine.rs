//! The socket driver of WHIP ingest: one tokio task owning the publishers'
//! UDP socket and the timer, reading the clock, and moving data between
//! them, the HTTP side's commands and the sans-IO [`Core`].

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::core::{Core, NewPublisher, Output};
use crate::net::udp::{SendBatch, Udp};

/// Datagrams handled per wake-up before other work gets a turn.
const RECV_BATCH: usize = 64;

pub enum Cmd {
    Add(Box<NewPublisher>),
    /// DELETE: answered once the publisher is gone.
    Remove(Arc<str>, oneshot::Sender<()>),
    /// A viewer of this stream needs a keyframe.
    Keyframe(Arc<str>),
    CloseStream(Arc<str>, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

pub fn spawn(
    udp: Arc<Udp>,
    timeout: Duration,
    cmds: mpsc::UnboundedReceiver<Cmd>,
) -> JoinHandle<()> {
    tokio::spawn(run(udp, Core::new(timeout), cmds))
}

async fn run(udp: Arc<Udp>, mut core: Core, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let mut buf = vec![0u8; 2048];
    let mut out = SendBatch::default();
    loop {
        let next = core.poll_timeout();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = cmds.recv() => {
                let now = Instant::now();
                match cmd {
                    None => break,
                    Some(Cmd::Add(new)) => core.add(now, *new),
                    Some(Cmd::Remove(resource, done)) => {
                        core.remove(now, &resource);
                        flush(&udp, &mut core, &mut out).await;
                        let _ = done.send(());
                    }
                    Some(Cmd::Keyframe(stream)) => core.request_keyframe(now, &stream),
                    Some(Cmd::CloseStream(stream, done)) => {
                        core.close_stream(now, &stream);
                        flush(&udp, &mut core, &mut out).await;
                        let _ = done.send(());
                    }
                    Some(Cmd::Shutdown(done)) => {
                        core.close_all(now);
                        flush(&udp, &mut core, &mut out).await;
                        let _ = done.send(());
                        return;
                    }
                }
            }
            r = udp.readable() => match r {
                Ok(()) => {
                    for _ in 0..RECV_BATCH {
                        let (n, addrs) = match udp.try_recv(&mut buf) {
                            Ok(x) => x,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::debug!("WHIP UDP receive: {e}");
                                continue;
                            }
                        };
                        core.handle_datagram(Instant::now(), addrs.source, addrs.destination, &buf[..n]);
                    }
                }
                Err(e) => {
                    tracing::error!("WHIP UDP socket failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = sleep => core.handle_timeout(Instant::now()),
        }
        flush(&udp, &mut core, &mut out).await;
    }
    core.close_all(Instant::now());
    flush(&udp, &mut core, &mut out).await;
}

async fn flush(udp: &Udp, core: &mut Core, out: &mut SendBatch) {
    while let Some(o) = core.poll_output() {
        match o {
            Output::Transmit {
                destination,
                contents,
            } => {
                udp.queue(out, contents, destination).await;
            }
            Output::Gone { .. } => {} // the slot heard it; the core logged it
        }
    }
    if !out.is_empty() {
        udp.send_batch(out).await;
    }
}
