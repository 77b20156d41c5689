//! The one task that drives every WebRTC peer (sans-IO str0m):
//!
//! - the shared UDP socket: each datagram goes to the `Rtc` that `accepts` it
//!   (source address → peer cached), then that `Rtc` is drained;
//! - timers: one ordered set of (deadline, peer), so a wake-up costs log N;
//! - media: ONE hub subscription per stream (not per peer), opened when the
//!   stream's first peer connects; a small forwarder task per stream moves
//!   its packets into this task, which writes each packet to every peer of
//!   the stream (payload shared) and drains each touched peer once a batch
//!   (audio on its own waits up to [`AUDIO_HOLD`] for the next video frame);
//! - output: the datagrams of all drained peers go out together, up to 64
//!   per `sendmmsg`, a video frame's packets to one peer as one UDP GSO
//!   message (see [`Udp::send_batch`]);
//! - commands from the HTTP side: add a peer, remove one, close a stream.
//!
//! A peer is dropped (and its lease freed through the index) on DELETE, on
//! ICE consent loss or silence for the configured timeout, when it never
//! connects, on DTLS failure/close, or when str0m errors or panics on it.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive};
use str0m::{Input, Output, Rtc};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::index::Index;
use super::peer::{Action, Peer, BURST_CHUNK};
use super::udp::{SendBatch, Udp, SEND_BATCH};
use crate::hub::{Hub, RtpJoin, RtpPkt, RtpSubscriber, Track};

type PeerId = u64;

/// Datagrams handled per wake-up before other work gets a turn.
const RECV_BATCH: usize = 64;
/// Hub packets handled per batch before the touched peers are drained. Small
/// enough that str0m's per-peer send queue (whose capacity stays allocated)
/// stays short when a keyframe arrives as one burst.
const MEDIA_BATCH: usize = 32;
/// Audio written on its own waits up to this long for the next video frame,
/// so that one drain of each peer sends both: a drain has a fixed cost in
/// str0m (its timeout bookkeeping) about that of a packet, and 20 ms Opus
/// packets would otherwise cost a drain each.
const AUDIO_HOLD: Duration = Duration::from_millis(20);
/// Packets in flight from the per-stream forwarders to the engine.
const MEDIA_QUEUE: usize = 1024;
/// Outputs drained from one `Rtc` at most in one go (a guard, never reached in practice).
const MAX_DRAIN: usize = 10_000;

pub struct NewPeer {
    pub resource: Arc<str>,
    pub stream: Arc<str>,
    pub hub: Hub,
    pub rtc: Rtc,
    /// The stream's producer payload types, if not the engine's defaults.
    pub producer_pts: Option<(u8, u8)>,
    pub created: Instant,
}

pub enum Cmd {
    Add(Box<NewPeer>),
    Remove(Arc<str>),
    CloseStream(Arc<str>, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// A silent (or never connected) peer is dropped after this.
    pub timeout: Duration,
    /// The producer's payload types (video, audio).
    pub producer_pts: (u8, u8),
}

struct MediaMsg {
    feed: u64,
    track: Track,
    /// `None`: the hub dropped packets (this stream's peers lagged).
    pkt: Option<RtpPkt>,
}

/// One stream's hub subscription and the peers it feeds.
struct Feed {
    id: u64,
    peers: Vec<PeerId>,
    forwarder: JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

pub struct Engine {
    udp: Arc<Udp>,
    index: Arc<Index>,
    cfg: EngineConfig,
    peers: HashMap<PeerId, Peer>,
    hubs: HashMap<PeerId, Hub>,
    by_resource: HashMap<Arc<str>, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    feeds: HashMap<Arc<str>, Feed>,
    timers: BTreeSet<(Instant, PeerId)>,
    media_tx: mpsc::Sender<MediaMsg>,
    next_id: u64,
    buf: Vec<u8>,
    /// Datagrams drained from peers, sent in batches (`sendmmsg`).
    out: SendBatch,
    /// Peers with audio written but not drained yet (see [`AUDIO_HOLD`]), and until when.
    held: Vec<PeerId>,
    held_until: Option<Instant>,
    /// The media batch being handled (kept for its allocation).
    media_batch: Vec<MediaMsg>,
}

impl Engine {
    pub fn spawn(
        udp: Arc<Udp>,
        index: Arc<Index>,
        cfg: EngineConfig,
        cmds: mpsc::UnboundedReceiver<Cmd>,
    ) -> JoinHandle<()> {
        let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
        let engine = Engine {
            udp,
            index,
            cfg,
            peers: HashMap::new(),
            hubs: HashMap::new(),
            by_resource: HashMap::new(),
            by_addr: HashMap::new(),
            feeds: HashMap::new(),
            timers: BTreeSet::new(),
            media_tx,
            next_id: 1,
            buf: vec![0; 2048],
            out: SendBatch::default(),
            held: Vec::new(),
            held_until: None,
            media_batch: Vec::with_capacity(MEDIA_BATCH),
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
            let next = match (self.timers.first().map(|(t, _)| *t), self.held_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(Cmd::Shutdown(done)) => {
                        self.remove_all().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.on_cmd(cmd).await,
                },
                r = udp.readable() => match r {
                    Ok(()) => self.on_readable().await,
                    Err(e) => {
                        tracing::error!("WebRTC UDP socket failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(m) = media.recv() => self.on_media(m, &mut media).await,
                _ = sleep => self.on_timers().await,
            }
            self.flush().await;
        }
        self.remove_all().await;
    }

    async fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Add(new) => self.add(*new).await,
            Cmd::Remove(resource) => {
                if let Some(&id) = self.by_resource.get(&resource) {
                    self.remove(id, "the viewer hung up (DELETE)", true).await;
                }
            }
            Cmd::CloseStream(stream, done) => {
                let ids: Vec<PeerId> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.stream == stream)
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.remove(id, "the stream ended", true).await;
                }
                self.index.remove_stream(&stream);
                let _ = done.send(());
            }
            Cmd::Shutdown(_) => {}
        }
    }

    async fn add(&mut self, new: NewPeer) {
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        let peer = Peer::new(
            new.rtc,
            new.resource.clone(),
            new.stream,
            new.producer_pts.unwrap_or(self.cfg.producer_pts),
            new.created,
        )
        .count_into(new.hub.out().clone());
        self.by_resource.insert(new.resource, id);
        self.hubs.insert(id, new.hub);
        self.peers.insert(id, peer);
        self.input(id, None, now).await;
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
            let now = Instant::now();
            let Ok(recv) = Receive::new(Protocol::Udp, addrs.source, addrs.destination, &buf[..n])
            else {
                continue; // not STUN/DTLS/RTP/RTCP
            };
            let input = Input::Receive(now, recv);
            let Some(id) = self.route(addrs.source, &input) else {
                continue;
            };
            self.input(id, Some(input), now).await;
            self.flush_if_full().await;
        }
        self.buf = buf;
    }

    /// The peer this datagram belongs to (cached by source address).
    fn route(&mut self, source: SocketAddr, input: &Input<'_>) -> Option<PeerId> {
        if let Some(&id) = self.by_addr.get(&source) {
            if self.peers.get(&id).is_some_and(|p| p.rtc.accepts(input)) {
                return Some(id);
            }
        }
        let id = self
            .peers
            .iter()
            .find(|(_, p)| p.rtc.accepts(input))
            .map(|(id, _)| *id)?;
        if let Some(old) = self.by_addr.insert(source, id) {
            if let Some(p) = self.peers.get_mut(&old) {
                p.addrs.retain(|a| *a != source);
            }
        }
        if let Some(p) = self.peers.get_mut(&id) {
            p.addrs.push(source);
        }
        Some(id)
    }

    /// Feed one input (or a timeout at `now`) to a peer, drain it, act on what it said.
    async fn input(&mut self, id: PeerId, input: Option<Input<'_>>, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if input.is_some() {
            peer.last_rx = now;
        }
        let input = input.unwrap_or(Input::Timeout(now));
        let fed = catch_unwind(AssertUnwindSafe(|| peer.rtc.handle_input(input)));
        let actions = match fed {
            Ok(Ok(())) => drain(&mut self.out, peer, now, self.cfg.timeout),
            Ok(Err(e)) => vec![Action::Remove(format!("WebRTC error: {e}"))],
            Err(_) => vec![Action::Remove("str0m panicked on this peer's input".into())],
        };
        self.after_drain(id, actions, now).await;
    }

    async fn after_drain(&mut self, id: PeerId, mut actions: Vec<Action>, now: Instant) {
        loop {
            for a in actions {
                match a {
                    Action::Connected => self.attach(id, now),
                    Action::Keyframe => {
                        if let Some(hub) = self.hubs.get(&id) {
                            hub.request_keyframe(now);
                        }
                    }
                    Action::Remove(why) => {
                        self.remove(id, &why, false).await;
                        return;
                    }
                }
            }
            let Some(peer) = self.peers.get_mut(&id) else {
                return;
            };
            // The cached GOP of a new peer goes out now, a chunk per drain.
            if !peer.dirty && !peer.write_burst(BURST_CHUNK, now) {
                break;
            }
            peer.dirty = false;
            actions = drain(&mut self.out, peer, now, self.cfg.timeout);
            self.flush_if_full().await;
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.rtc.is_alive() {
            self.remove(id, "the connection closed", false).await;
            return;
        }
        if let Some(f) = peer.filed.take() {
            self.timers.remove(&(f, id));
        }
        self.timers.insert((peer.wake, id));
        peer.filed = Some(peer.wake);
    }

    /// The peer is connected: it joins its stream's feed (the first one opens
    /// the hub subscription) and starts on a keyframe: a fresh one (asked for
    /// now) or, within the keyframe rate limit, the hub's cached GOP.
    fn attach(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let Some(hub) = self.hubs.get(&id) else {
            return;
        };
        tracing::info!(
            resource = %peer.resource,
            stream = %peer.stream,
            connect_ms = now.saturating_duration_since(peer.created).as_millis() as u64,
            "WebRTC viewer connected"
        );
        // The feed's receivers exist before the join: no packet after the
        // cached GOP's snapshot can miss this peer.
        match self.feeds.get_mut(&peer.stream) {
            Some(feed) => feed.peers.push(id),
            None => {
                let feed_id = self.next_id;
                self.next_id += 1;
                let sub = hub.rtp_receivers();
                let forwarder = tokio::spawn(forward(feed_id, sub, self.media_tx.clone()));
                let feed = Feed {
                    id: feed_id,
                    peers: vec![id],
                    forwarder,
                };
                self.feeds.insert(peer.stream.clone(), feed);
            }
        }
        if !peer.video_ready() {
            // No video m-line mapped yet: it starts on the next live keyframe.
            hub.request_keyframe(now);
            return;
        }
        let join = hub.join_rtp(now);
        if let (RtpJoin::Cached(gop), Some(peer)) = (join, self.peers.get_mut(&id)) {
            tracing::debug!(resource = %peer.resource, packets = gop.len(), "WebRTC viewer starts on the cached GOP");
            peer.start_on_gop(gop);
        }
    }

    /// A batch of hub packets: each peer of their stream gets all of them
    /// and is drained right after (peer by peer, so its state stays in the
    /// cache for both), unless the batch is audio only (see [`AUDIO_HOLD`]).
    async fn on_media(&mut self, first: MediaMsg, rx: &mut mpsc::Receiver<MediaMsg>) {
        let now = Instant::now();
        let mut batch = std::mem::take(&mut self.media_batch);
        batch.push(first);
        while batch.len() < MEDIA_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let video = batch.iter().any(|m| m.track == Track::Video);
        let mut feed_ids: Vec<u64> = batch.iter().map(|m| m.feed).collect();
        feed_ids.sort_unstable();
        feed_ids.dedup();
        for fid in feed_ids {
            let Some(feed) = self.feeds.values().find(|f| f.id == fid) else {
                continue;
            };
            let peers = feed.peers.clone();
            for id in peers {
                let Some(peer) = self.peers.get_mut(&id) else {
                    continue;
                };
                let (was, had_key) = (peer.dirty, peer.first_key_at.is_some());
                for m in batch.iter().filter(|m| m.feed == fid) {
                    match &m.pkt {
                        Some(pkt) => peer.write(m.track, pkt, now),
                        None => peer.lagged(m.track),
                    }
                }
                if !had_key && peer.first_key_at.is_some() {
                    tracing::debug!(
                        resource = %peer.resource,
                        join_ms = now.saturating_duration_since(peer.created).as_millis() as u64,
                        "first keyframe sent to a WebRTC viewer"
                    );
                }
                if !peer.dirty {
                    continue;
                }
                if video {
                    peer.dirty = false;
                    let actions = drain(&mut self.out, peer, now, self.cfg.timeout);
                    self.after_drain(id, actions, now).await;
                    self.flush_if_full().await;
                } else if !was {
                    // Audio alone: held for the next video frame (or AUDIO_HOLD).
                    self.held.push(id);
                }
            }
        }
        batch.clear();
        self.media_batch = batch;
        if video {
            // Held peers of other streams (this stream's were drained above).
            self.held_until = None;
            let held = std::mem::take(&mut self.held);
            self.drain_written(held, now).await;
        } else if !self.held.is_empty() {
            self.held_until.get_or_insert(now + AUDIO_HOLD);
        }
    }

    /// Drain the peers media was written to.
    async fn drain_written(&mut self, ids: Vec<PeerId>, now: Instant) {
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if !peer.dirty {
                continue; // drained meanwhile (its own input)
            }
            peer.dirty = false;
            let actions = drain(&mut self.out, peer, now, self.cfg.timeout);
            self.after_drain(id, actions, now).await;
            self.flush_if_full().await;
        }
    }

    async fn on_timers(&mut self) {
        let now = Instant::now();
        if self.held_until.is_some_and(|t| t <= now) {
            self.held_until = None;
            let held = std::mem::take(&mut self.held);
            self.drain_written(held, now).await;
        }
        let due: Vec<(Instant, PeerId)> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .copied()
            .collect();
        for (t, id) in due {
            let Some(peer) = self.peers.get(&id) else {
                self.timers.remove(&(t, id));
                continue;
            };
            if peer.deadline(self.cfg.timeout) <= now {
                let why = if peer.is_connected() {
                    format!(
                        "no word from the browser for {} s (consent timeout)",
                        self.cfg.timeout.as_secs()
                    )
                } else {
                    format!("did not connect within {} s", self.cfg.timeout.as_secs())
                };
                self.remove(id, &why, false).await;
                continue;
            }
            self.input(id, None, now).await;
            self.flush_if_full().await;
        }
    }

    async fn remove(&mut self, id: PeerId, why: &str, close: bool) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        if let Some(f) = peer.filed.take() {
            self.timers.remove(&(f, id));
        }
        self.hubs.remove(&id);
        self.by_resource.remove(&peer.resource);
        for a in &peer.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        if let Some(feed) = self.feeds.get_mut(&peer.stream) {
            feed.peers.retain(|p| *p != id);
            if feed.peers.is_empty() {
                self.feeds.remove(&peer.stream);
            }
        }
        // The lease goes with the index entry: the slot is free from here on.
        self.index.remove(&peer.resource);
        let (video, audio) = peer.sent();
        tracing::info!(resource = %peer.resource, stream = %peer.stream, video, audio, "WebRTC viewer removed: {why}");
        if close && peer.rtc.is_alive() {
            // RTCP BYE and DTLS close_notify, so the browser knows at once.
            if catch_unwind(AssertUnwindSafe(|| peer.rtc.close())).is_ok_and(|r| r.is_ok()) {
                let _ = drain(&mut self.out, &mut peer, Instant::now(), self.cfg.timeout);
                self.flush().await;
            }
        }
    }

    /// Send what the peers' drains queued.
    async fn flush(&mut self) {
        if !self.out.is_empty() {
            self.udp.send_batch(&mut self.out).await;
        }
    }

    /// Send once a whole `sendmmsg` batch is queued (inside long loops).
    async fn flush_if_full(&mut self) {
        if self.out.len() >= SEND_BATCH {
            self.flush().await;
        }
    }

    async fn remove_all(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove(id, "the server is shutting down", true).await;
        }
    }
}

/// Drain a peer's output: queue its datagrams in `out`, collect what its
/// events mean, and set `peer.wake` to its next timeout (or its deadline, if
/// sooner).
fn drain(out: &mut SendBatch, peer: &mut Peer, now: Instant, timeout: Duration) -> Vec<Action> {
    let mut actions = Vec::new();
    for _ in 0..MAX_DRAIN {
        match catch_unwind(AssertUnwindSafe(|| peer.rtc.poll_output())) {
            Ok(Ok(Output::Transmit(t))) => out.push(t.contents.into(), t.destination),
            Ok(Ok(Output::Event(ev))) => actions.extend(peer.on_event(ev, now)),
            Ok(Ok(Output::Timeout(t))) => {
                peer.wake = t.min(peer.deadline(timeout)).max(now);
                return actions;
            }
            Ok(Err(e)) => {
                actions.push(Action::Remove(format!("WebRTC error: {e}")));
                return actions;
            }
            Err(_) => {
                actions.push(Action::Remove(
                    "str0m panicked while polling this peer".into(),
                ));
                return actions;
            }
        }
    }
    peer.wake = now;
    actions
}

/// One stream's hub packets into the engine. Ends when the engine drops the
/// feed (aborted) or goes away.
async fn forward(feed: u64, mut sub: RtpSubscriber, tx: mpsc::Sender<MediaMsg>) {
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
