//! The sans-IO core of the WebRTC engine, built the way str0m itself is:
//! datagrams, hub packets, commands and the time go in; datagrams to send,
//! the next timeout and events come out. It never reads a clock, opens a
//! socket or spawns a task: [`super::engine`] (the socket driver) does that.
//!
//! - datagrams: a STUN request to the peer whose ufrag it names, anything
//!   else to the `Rtc` that `accepts` it (source address → peer cached;
//!   [`route`](self::route)), then that `Rtc` is drained;
//! - timers: one ordered set of (deadline, peer), so a wake-up costs log N;
//! - media: ONE hub subscription per stream (not per peer), opened when the
//!   stream's first peer connects ([`Event::FeedOpened`]: the driver moves
//!   its packets into [`Core::handle_media`]); each packet is written to
//!   every peer of the stream (payload shared) and each touched peer is
//!   drained once a batch (audio on its own waits up to [`AUDIO_HOLD`] for
//!   the next video frame);
//! - output: the datagrams of all drained peers, in order, from
//!   [`Core::poll_output`]; the driver sends them together (`sendmmsg`, GSO);
//! - pacing ([`super::pacer`], [`pace`]): a peer's video datagrams pass its
//!   token bucket; what must wait is queued per peer and released from
//!   [`Core::handle_timeout`] when its due time (a second, ordered timer
//!   set, on a 1 ms grid) comes, together with every other peer due then;
//!   a joining peer's cached GOP is written as its queue empties;
//!   str0m sends the media written to a peer on its next timeout, so a frame
//!   for many peers leaves from [`Core::handle_timeout`], which pauses at each
//!   [`OUT_BATCH`] so the first peers' datagrams go out while the rest wait;
//! - commands from the HTTP side: add a peer, remove one, close a stream.
//!
//! A peer is dropped (and its lease freed through the index) on DELETE, on
//! ICE consent loss or silence for the configured timeout, when it never
//! connects, on DTLS failure/close, or when str0m errors or panics on it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::{Input, Rtc};

use super::index::Index;
use super::pacer::{Pacer, RateMeter, RTP_OVERHEAD};
use super::peer::{Action, Peer};
use crate::hub::{Hub, RtpJoin, RtpPkt, RtpSubscriber, Track};
use crate::net::rtc;
use pace::drain;

type PeerId = u64;
/// Tables keyed by our own peer numbers: hashed with Fx (a multiply), not
/// SipHash. The keys come from a counter, never from the network, so they
/// need no flooding defence, and these tables are looked up several times
/// per packet (callgrind, 10 peers at 1 Mbit/s: SipHash was 3 % of all
/// instructions). Tables keyed by what a client sends keep SipHash.
type PeerMap<V> = rustc_hash::FxHashMap<PeerId, V>;
/// A stream's hub subscription, as named in [`Event::FeedOpened`] and [`MediaMsg`].
pub type FeedId = u64;

/// Hub packets handled per batch before the touched peers are drained. Small
/// enough that str0m's per-peer send queue (whose capacity stays allocated)
/// stays short when a keyframe arrives as one burst.
pub const MEDIA_BATCH: usize = 32;
/// Audio written on its own waits up to this long for the next video frame,
/// so that one drain of each peer sends both: a drain has a fixed cost in
/// str0m (its timeout bookkeeping) about that of a packet, and 20 ms Opus
/// packets would otherwise cost a drain each.
pub const AUDIO_HOLD: Duration = Duration::from_millis(20);
/// [`Core::handle_timeout`] pauses once this many outputs are queued (one
/// `sendmmsg`), so its datagrams go out while it serves the other peers.
pub const OUT_BATCH: usize = 64;
/// [`Core::handle_timeout`] also pauses after serving this many peers' str0m
/// timers: paced, their datagrams go to their queues, not to the output, so
/// the batch above would not fill, and the pacers due meanwhile (whose
/// buckets hold only a few datagrams) would wait for all peers' timers.
pub const PEER_TURN: usize = 16;
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

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// A silent (or never connected) peer is dropped after this.
    pub timeout: Duration,
    /// The producer's payload types (video, audio).
    pub producer_pts: (u8, u8),
    /// Pace each peer's video (see [`super::pacer`]).
    pub pacing: bool,
}

/// One hub packet of a feed, for [`Core::handle_media`].
pub struct MediaMsg {
    pub feed: FeedId,
    pub track: Track,
    /// `None`: the hub dropped packets (this stream's peers lagged).
    pub pkt: Option<RtpPkt>,
}

/// What the core asks of its driver, in the order it happened.
pub enum Output {
    /// A datagram to send from our socket.
    Transmit {
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    Event(Event),
}

pub enum Event {
    /// A stream's first peer connected: move these receivers' packets into
    /// [`Core::handle_media`] under `feed` (they exist already, so no packet
    /// after a joining peer's cached GOP can be missed).
    FeedOpened { feed: FeedId, sub: RtpSubscriber },
    /// The stream's last peer left: stop moving its packets.
    FeedClosed { feed: FeedId },
    /// A peer is gone (its lease is freed already). The driver has nothing
    /// to do (the core logs it); tests read it.
    #[cfg_attr(not(test), allow(dead_code))]
    PeerRemoved { resource: Arc<str>, why: String },
}

/// One stream's hub subscriptions (one per layer) and the peers they feed.
struct StreamFeeds {
    peers: Vec<PeerId>,
    /// Layer 0 first.
    layers: Vec<Feed>,
}

/// One layer's hub subscription.
struct Feed {
    id: FeedId,
    /// The layer's media bitrate (its peers' pacing rate follows it; the
    /// layer choice weighs it).
    rate: RateMeter,
}

pub struct Core {
    index: Arc<Index>,
    cfg: EngineConfig,
    /// Boxed: a `Peer` (its `Rtc` alone is 10 KB) would make the table's
    /// slots that big, and a table grown for a crowd keeps its capacity:
    /// 256 empty slots of 11 KB each are 2.8 MB the heap cannot give back.
    peers: PeerMap<Box<Peer>>,
    hubs: PeerMap<Hub>,
    by_resource: HashMap<Arc<str>, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    /// Each peer's local ICE ufrag: a STUN request names its peer by it.
    by_ufrag: HashMap<String, PeerId>,
    feeds: HashMap<Arc<str>, StreamFeeds>,
    timers: BTreeSet<(Instant, PeerId)>,
    /// When each peer with paced datagrams waiting may send the next group.
    pace_timers: BTreeSet<(Instant, PeerId)>,
    /// The origin of the pacing grid (when the first peer came).
    epoch: Option<Instant>,
    /// Peers whose pacer let datagrams go since the last
    /// [`handle_sent`](Self::handle_sent), and when the first of them did.
    released: Vec<PeerId>,
    released_at: Option<Instant>,
    next_id: u64,
    /// Datagrams and events waiting for [`poll_output`](Self::poll_output).
    out: VecDeque<Output>,
    /// Peers with audio written but not drained yet (see [`AUDIO_HOLD`]), and until when.
    held: Vec<PeerId>,
    held_until: Option<Instant>,
    /// PLI/FIR received from peers (what the tests check reached the core).
    #[cfg(test)]
    keyframe_requests: u64,
}

impl Core {
    pub fn new(index: Arc<Index>, cfg: EngineConfig) -> Self {
        Self {
            index,
            cfg,
            peers: PeerMap::default(),
            hubs: PeerMap::default(),
            by_resource: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            feeds: HashMap::new(),
            timers: BTreeSet::new(),
            pace_timers: BTreeSet::new(),
            epoch: None,
            released: Vec::new(),
            released_at: None,
            next_id: 1,
            out: VecDeque::new(),
            held: Vec::new(),
            held_until: None,
            #[cfg(test)]
            keyframe_requests: 0,
        }
    }

    /// The next datagram to send or event, in order; `None` when all were taken.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due (`None`: no peer).
    /// (A driver that never calls [`handle_sent`](Self::handle_sent) is
    /// woken at once after datagrams were let go, and they count as sent then.)
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.first().map(|(t, _)| *t),
            self.pace_timers.first().map(|(t, _)| *t),
            self.held_until,
            self.released_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn add_peer(&mut self, now: Instant, new: NewPeer) {
        let id = self.next_id;
        self.next_id += 1;
        let mut rtc = new.rtc;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        self.by_ufrag.insert(ufrag, id);
        let peer = Peer::new(
            rtc,
            new.resource.clone(),
            new.stream,
            new.producer_pts.unwrap_or(self.cfg.producer_pts),
            new.created,
        )
        .count_into(new.hub.out().clone());
        let peer = if self.cfg.pacing {
            peer.paced(Pacer::on_grid_of(*self.epoch.get_or_insert(now)))
        } else {
            peer
        };
        self.by_resource.insert(new.resource, id);
        self.hubs.insert(id, new.hub);
        self.peers.insert(id, Box::new(peer));
        self.input(id, None, now);
    }

    /// The viewer hung up (DELETE): close its connection and forget it.
    pub fn remove_peer(&mut self, now: Instant, resource: &str) {
        if let Some(&id) = self.by_resource.get(resource) {
            self.remove(id, "the viewer hung up (DELETE)", true, now);
        }
    }

    /// The stream ends: close each of its peers (their goodbyes are queued
    /// before this returns) and free their slots.
    pub fn close_stream(&mut self, now: Instant, stream: &str) {
        let ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| &*p.stream == stream)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove(id, "the stream ended", true, now);
        }
        self.index.remove_stream(stream);
    }

    /// The server shuts down: close every peer.
    pub fn close_all(&mut self, now: Instant) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove(id, "the server is shutting down", true, now);
        }
    }

    /// A datagram our socket received from `source`, sent to our `destination`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        let Some(input) = rtc::receive(now, source, destination, contents) else {
            return; // not STUN/DTLS/RTP/RTCP
        };
        let Some(id) = self.route(source, &input, contents) else {
            return;
        };
        self.input(id, Some(input), now);
    }

    /// Feed one input (or a timeout at `now`) to a peer, drain it, act on what it said.
    fn input(&mut self, id: PeerId, input: Option<Input<'_>>, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if input.is_some() {
            peer.last_rx = now;
        }
        let input = input.unwrap_or(Input::Timeout(now));
        let actions = match rtc::feed(&mut peer.rtc, input) {
            Ok(()) => drain(&mut self.out, peer, now, self.cfg.timeout),
            Err(why) => vec![Action::Remove(why)],
        };
        self.after_drain(id, actions, now);
    }

    fn after_drain(&mut self, id: PeerId, mut actions: Vec<Action>, now: Instant) {
        loop {
            for a in actions {
                match a {
                    Action::Connected => self.attach(id, now),
                    Action::Keyframe => self.request_keyframe(id, now),
                    Action::Link => self.after_link(id, now),
                    Action::Remove(why) => {
                        self.remove(id, &why, false, now);
                        return;
                    }
                }
            }
            let Some(peer) = self.peers.get_mut(&id) else {
                return;
            };
            // The cached GOP of a new peer goes out now, a chunk per drain
            // (paced: as its queue empties, see `pace::write_burst`).
            if !peer.dirty {
                match pace::write_burst(peer, now) {
                    Some(Ok(())) => {}
                    Some(Err(why)) => {
                        actions = vec![Action::Remove(why)];
                        continue;
                    }
                    None => break,
                }
            }
            peer.dirty = false;
            actions = drain(&mut self.out, peer, now, self.cfg.timeout);
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.rtc.is_alive() {
            self.remove(id, "the connection closed", false, now);
            return;
        }
        if let Some(f) = peer.filed.take() {
            self.timers.remove(&(f, id));
        }
        self.timers.insert((peer.wake, id));
        peer.filed = Some(peer.wake);
        self.file_pace(id, now);
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
            resource = %crate::token::short(&peer.resource),
            stream = %peer.stream,
            connect_ms = now.saturating_duration_since(peer.created).as_millis() as u64,
            "WebRTC viewer connected"
        );
        // The feeds' receivers exist before the join: no packet after the
        // cached GOP's snapshot can miss this peer.
        let stream = peer.stream.clone();
        let hub = hub.clone();
        self.join_feeds(&stream, &hub, id);
        let rates = self.layer_rates(&stream, &hub);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let first = peer.layer.start(peer.link.estimate, &rates);
        let Some(hub) = hub.layer(usize::from(first)) else {
            return;
        };
        if !peer.video_ready() {
            // No video m-line mapped yet: it starts on the next live keyframe.
            hub.request_keyframe(now);
            return;
        }
        let join = hub.join_rtp(now);
        if let RtpJoin::Cached(gop) = join {
            tracing::debug!(resource = %crate::token::short(&peer.resource), packets = gop.len(), layer = first, "WebRTC viewer starts on the cached GOP");
            peer.start_on_gop(gop);
        }
        self.after_link(id, now);
    }

    /// A batch of hub packets (at most [`MEDIA_BATCH`] is best): each peer of
    /// their stream gets all of them and is drained right after (peer by
    /// peer, so its state stays in the cache for both), unless the batch is
    /// audio only (see [`AUDIO_HOLD`]).
    pub fn handle_media(&mut self, now: Instant, batch: &[MediaMsg]) {
        let video = batch.iter().any(|m| m.track == Track::Video);
        let mut feed_ids: Vec<FeedId> = batch.iter().map(|m| m.feed).collect();
        feed_ids.sort_unstable();
        feed_ids.dedup();
        for fid in feed_ids {
            let Some((sf, layer)) = self.feeds.values_mut().find_map(|sf| {
                let layer = sf.layers.iter().position(|f| f.id == fid)?;
                Some((sf, layer))
            }) else {
                continue; // closed meanwhile: its last packets go nowhere
            };
            let feed = &mut sf.layers[layer];
            for m in batch.iter().filter(|m| m.feed == fid) {
                if let Some(p) = &m.pkt {
                    feed.rate.add(now, p.payload.len() + RTP_OVERHEAD);
                }
            }
            let media_bps = feed.rate.bps();
            let layer = layer as u8;
            let peers = sf.peers.clone();
            for id in peers {
                let Some(peer) = self.peers.get_mut(&id) else {
                    continue;
                };
                if peer.layer.on() == Some(layer) {
                    if let Some(p) = &mut peer.pacer {
                        p.set_media_rate(now, media_bps);
                    }
                }
                let (was, had_key) = (peer.dirty, peer.first_key_at.is_some());
                let mut switched = false;
                for m in batch.iter().filter(|m| m.feed == fid) {
                    switched |= layers::deliver(peer, layer, m, now);
                }
                if switched {
                    self.index
                        .set_view(&peer.resource, peer.layer.view(&peer.link));
                }
                if !had_key && peer.first_key_at.is_some() {
                    tracing::debug!(
                        resource = %crate::token::short(&peer.resource),
                        join_ms = now.saturating_duration_since(peer.created).as_millis() as u64,
                        "first keyframe sent to a WebRTC viewer"
                    );
                }
                if !peer.dirty {
                    continue;
                }
                if video {
                    self.drain_written(id, now);
                } else if !was {
                    // Audio alone: held for the next video frame (or AUDIO_HOLD).
                    self.held.push(id);
                }
            }
        }
        if video {
            // Held peers of other streams (this stream's were drained above).
            self.drain_held(now);
        } else if !self.held.is_empty() {
            self.held_until.get_or_insert(now + AUDIO_HOLD);
        }
    }

    /// Drain a peer media was written to (unless it was drained meanwhile,
    /// by its own input).
    fn drain_written(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.dirty {
            return;
        }
        peer.dirty = false;
        let actions = drain(&mut self.out, peer, now, self.cfg.timeout);
        self.after_drain(id, actions, now);
    }

    /// Drain the peers whose audio was held for the next video frame.
    fn drain_held(&mut self, now: Instant) {
        self.held_until = None;
        for id in std::mem::take(&mut self.held) {
            self.drain_written(id, now);
        }
    }

    /// Time has come to `now`: held audio goes out, peers whose timer is due
    /// get their timeout input, and peers past their deadline are dropped.
    ///
    /// It pauses once [`OUT_BATCH`] outputs are queued or [`PEER_TURN`] peers served (str0m sends the
    /// media written to a peer on its next timeout, so this is where a frame
    /// fanned out to many peers leaves): the peers not served yet stay due,
    /// [`poll_timeout`](Self::poll_timeout) says so, and the driver sends
    /// what is queued before it calls again.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_sent(now);
        if !self.release_paced(now) {
            return; // a send batch is full: the rest stays due
        }
        if self.held_until.is_some_and(|t| t <= now) {
            self.drain_held(now);
        }
        let due: Vec<(Instant, PeerId)> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .copied()
            .collect();
        for (served, (t, id)) in due.into_iter().enumerate() {
            if self.out.len() >= OUT_BATCH || served >= PEER_TURN {
                return;
            }
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
                self.remove(id, &why, false, now);
                continue;
            }
            self.input(id, None, now);
        }
    }

    /// Forget a peer and free its lease; with `close`, say goodbye first
    /// (RTCP BYE and DTLS close_notify, so the browser knows at once). Its
    /// goodbye is queued before its feed is released: peers before sources.
    fn remove(&mut self, id: PeerId, why: &str, close: bool, now: Instant) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        if let Some(f) = peer.filed.take() {
            self.timers.remove(&(f, id));
        }
        if let Some(f) = peer.pace_filed.take() {
            self.pace_timers.remove(&(f, id));
        }
        self.hubs.remove(&id);
        self.by_resource.remove(&peer.resource);
        self.by_ufrag.retain(|_, p| *p != id);
        for a in &peer.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        // The lease goes with the index entry: the slot is free from here on.
        self.index.remove(&peer.resource);
        let (video, audio) = peer.sent();
        tracing::info!(resource = %crate::token::short(&peer.resource), stream = %peer.stream, video, audio, "WebRTC viewer removed: {why}");
        if close && rtc::close(&mut peer.rtc) {
            // Its goodbye goes at once, not through a pacer that would
            // hold it for room in its window (and be gone by then).
            peer.pacer = None;
            let _ = drain(&mut self.out, &mut peer, now, self.cfg.timeout);
        }
        self.leave_feeds(&peer.stream, id);
        self.out.push_back(Output::Event(Event::PeerRemoved {
            resource: peer.resource.clone(),
            why: why.to_owned(),
        }));
    }
}

#[cfg(test)]
impl Core {
    /// Peers (connected or not).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn has_peer(&self, resource: &str) -> bool {
        self.by_resource.contains_key(resource)
    }

    /// What the core would tell the index of a peer.
    pub fn index_view(&self, resource: &str) -> crate::egress::whep::PeerView {
        self.by_resource
            .get(resource)
            .and_then(|id| self.peers.get(id))
            .map(|p| p.layer.view(&p.link))
            .unwrap_or_default()
    }

    /// PLI/FIR received from peers so far (each went to the hub's rate limit).
    pub fn keyframe_requests(&self) -> u64 {
        self.keyframe_requests
    }
}

mod layers;
mod pace;
mod route;
#[cfg(test)]
mod tests;
