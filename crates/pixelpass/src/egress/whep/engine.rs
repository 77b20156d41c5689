//! The socket driver of the WebRTC engine: one tokio task that owns the
//! shared UDP socket, the per-stream hub forwarders and the timer, reads the
//! clock, and only moves data between them and the sans-IO [`Core`]:
//!
//! - readable socket → up to [`RECV_BATCH`] datagrams into
//!   [`Core::handle_datagram`];
//! - hub packets (a small forwarder task per stream, started on
//!   [`Event::FeedOpened`], stopped on [`Event::FeedClosed`]) → batches of up
//!   to [`MEDIA_BATCH`] into [`Core::handle_media`];
//! - [`Core::poll_timeout`] → a sleep → [`Core::handle_timeout`] (which
//!   pauses at each send batch: what it queued is sent, and it is called
//!   again while work is due, up to [`DUE_ROUNDS`] times before the socket
//!   and the commands get a turn);
//! - commands from the HTTP side → add / remove / close;
//! - the CPU time from each wake-up to the end of its flush → [`Meter`], whose
//!   smoothed busy share the HTTP side reads from [`Load`] (new viewers are
//!   refused past `--webrtc-max-load`);
//! - [`Core::poll_output`] datagrams → [`SendBatch`]: up to 64 per
//!   `sendmmsg`, across peers, a video frame's packets to one peer as one UDP
//!   GSO message (see [`Udp::send_batch`]).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::core::{Core, EngineConfig, Event, FeedId, MediaMsg, NewPeer, Output, MEDIA_BATCH};
use super::index::Index;
use super::load::{thread_cpu, Load, Meter};
use crate::hub::{RtpSubscriber, Track};
use crate::net::udp::{SendBatch, Udp};

/// Datagrams handled per wake-up before other work gets a turn.
const RECV_BATCH: usize = 64;
/// Rounds of due work (each ends with a send batch) per wake-up. Going back
/// to the loop's `select!` after each batch cost a poll of every branch, a
/// new sleep in tokio's timer and an `epoll_wait` per 64 datagrams: with
/// pacing, two or three per pacing step (see `pacer::GRID`).
const DUE_ROUNDS: usize = 16;
/// Packets in flight from the per-stream forwarders to the engine.
const MEDIA_QUEUE: usize = 1024;

/// What woke the engine's loop.
enum Wake {
    Cmd(Option<Cmd>),
    Readable(io::Result<()>),
    Media(MediaMsg),
    /// The core's timer.
    Due,
    /// The load meter's window ended (see [`Meter::poll_timeout`]).
    Window,
}

pub enum Cmd {
    Add(Box<NewPeer>),
    Remove(Arc<str>),
    SetLayer(Arc<str>, super::select::Mode),
    CloseStream(Arc<str>, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// A stream's forwarder task, stopped when dropped.
struct Forwarder(JoinHandle<()>);

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct Engine {
    udp: Arc<Udp>,
    core: Core,
    forwarders: HashMap<FeedId, Forwarder>,
    media_tx: mpsc::Sender<MediaMsg>,
    buf: Vec<u8>,
    /// Datagrams from the core, sent in batches (`sendmmsg`).
    out: SendBatch,
    /// The media batch being handled (kept for its allocation).
    media_batch: Vec<MediaMsg>,
    /// Busy time per window, published to `load` (new viewers are refused
    /// past its limit).
    meter: Meter,
    load: Load,
}

impl Engine {
    pub fn spawn(
        udp: Arc<Udp>,
        index: Arc<Index>,
        cfg: EngineConfig,
        cmds: mpsc::UnboundedReceiver<Cmd>,
        load: Load,
    ) -> JoinHandle<()> {
        let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
        let engine = Engine {
            udp,
            core: Core::new(index, cfg),
            forwarders: HashMap::new(),
            media_tx,
            buf: vec![0; 2048],
            out: SendBatch::default(),
            media_batch: Vec::with_capacity(MEDIA_BATCH),
            meter: Meter::new(Instant::now()),
            load,
        };
        tokio::spawn(engine.run(cmds, media_rx))
    }

    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut media: mpsc::Receiver<MediaMsg>,
    ) {
        let udp = self.udp.clone();
        loop {
            let next = self.core.poll_timeout();
            let window = self.meter.poll_timeout();
            let sleep = async {
                match (next, window) {
                    (Some(t), Some(w)) if w < t => {
                        tokio::time::sleep_until(w.into()).await;
                        Wake::Window
                    }
                    (Some(t), _) => {
                        tokio::time::sleep_until(t.into()).await;
                        Wake::Due
                    }
                    (None, Some(w)) => {
                        tokio::time::sleep_until(w.into()).await;
                        Wake::Window
                    }
                    (None, None) => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                cmd = cmds.recv() => Wake::Cmd(cmd),
                r = udp.readable() => Wake::Readable(r),
                Some(m) = media.recv() => Wake::Media(m),
                w = sleep => w,
            };
            let woke = Instant::now();
            let (thread, cpu0) = (std::thread::current().id(), thread_cpu());
            let is_window = matches!(wake, Wake::Window);
            match wake {
                Wake::Cmd(None) => break,
                Wake::Cmd(Some(Cmd::Shutdown(done))) => {
                    self.core.close_all(woke);
                    self.flush().await;
                    let _ = done.send(());
                    return;
                }
                Wake::Cmd(Some(cmd)) => self.on_cmd(cmd).await,
                Wake::Readable(Ok(())) => self.on_readable().await,
                Wake::Readable(Err(e)) => {
                    tracing::error!("WebRTC UDP socket failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Wake::Media(m) => self.on_media(m, &mut media),
                Wake::Due => self.on_due().await,
                Wake::Window => {}
            }
            self.flush().await;
            let done = Instant::now();
            let published = if is_window {
                // Only the window to close: not work to count (an idle
                // engine's load falls to 0, and then it sleeps for good).
                self.meter.handle_timeout(done)
            } else {
                // The task may have moved to another worker at an await:
                // then its wall time stands in (an upper bound).
                let cpu = match (cpu0, thread_cpu()) {
                    (Some(a), Some(b)) if std::thread::current().id() == thread => {
                        b.saturating_sub(a)
                    }
                    _ => done.saturating_duration_since(woke),
                };
                self.meter.busy(cpu, done)
            };
            if let Some(permille) = published {
                self.load.publish(permille);
            }
        }
        self.core.close_all(Instant::now());
        self.flush().await;
    }

    async fn on_cmd(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Add(new) => self.core.add_peer(now, *new),
            Cmd::Remove(resource) => self.core.remove_peer(now, &resource),
            Cmd::SetLayer(resource, mode) => {
                self.core.set_layer(now, &resource, mode);
            }
            Cmd::CloseStream(stream, done) => {
                self.core.close_stream(now, &stream);
                // The peers' goodbyes are out before the producer may stop.
                self.flush().await;
                let _ = done.send(());
            }
            Cmd::Shutdown(_) => {}
        }
    }

    async fn on_readable(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..RECV_BATCH {
            let (n, addrs) = match self.udp.try_recv(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("WebRTC UDP receive: {e}");
                    continue;
                }
            };
            self.core
                .handle_datagram(Instant::now(), addrs.source, addrs.destination, &buf[..n]);
            self.collect().await;
        }
        self.buf = buf;
    }

    /// A batch of hub packets (what is queued, up to [`MEDIA_BATCH`]).
    fn on_media(&mut self, first: MediaMsg, rx: &mut mpsc::Receiver<MediaMsg>) {
        let mut batch = std::mem::take(&mut self.media_batch);
        batch.push(first);
        while batch.len() < MEDIA_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        self.core.handle_media(Instant::now(), &batch);
        batch.clear();
        self.media_batch = batch;
    }

    /// Time is due: the core works (pausing at each full send batch, which
    /// goes out here) until nothing more is due, or [`DUE_ROUNDS`] times.
    async fn on_due(&mut self) {
        for _ in 0..DUE_ROUNDS {
            let now = Instant::now();
            self.core.handle_timeout(now);
            self.flush().await;
            if self.core.poll_timeout().is_none_or(|t| t > now) {
                break;
            }
        }
    }

    /// Take the core's output: datagrams into the send batch (sent whenever
    /// a whole `sendmmsg` batch is queued), feeds started and stopped.
    async fn collect(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Transmit {
                    destination,
                    contents,
                } => {
                    self.udp.queue(&mut self.out, contents, destination).await;
                }
                Output::Event(Event::FeedOpened { feed, sub }) => {
                    let task = tokio::spawn(forward(feed, sub, self.media_tx.clone()));
                    self.forwarders.insert(feed, Forwarder(task));
                }
                Output::Event(Event::FeedClosed { feed }) => {
                    self.forwarders.remove(&feed);
                }
                Output::Event(Event::PeerRemoved { .. }) => {} // logged by the core
            }
        }
    }

    /// Send everything the core queued, and tell it when that was done
    /// (its pacers count from there).
    async fn flush(&mut self) {
        self.collect().await;
        if !self.out.is_empty() {
            self.udp.send_batch(&mut self.out).await;
        }
        self.core.handle_sent(Instant::now());
    }
}

/// One stream's hub packets into the engine. Ends when the engine drops the
/// feed (aborted) or goes away.
async fn forward(feed: FeedId, mut sub: RtpSubscriber, tx: mpsc::Sender<MediaMsg>) {
    loop {
        let (track, r) = tokio::select! {
            r = sub.video.recv() => (Track::Video, r),
            r = sub.audio.recv() => (Track::Audio, r),
        };
        let pkt = match r {
            Ok(p) => Some(p),
            Err(broadcast::error::RecvError::Lagged(_)) => None,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(MediaMsg { feed, track, pkt }).await.is_err() {
            return;
        }
    }
}
