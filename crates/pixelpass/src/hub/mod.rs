//! Fan-out of one stream's MPEG-TS to many viewers.
//!
//! The producer `publish`es chunks (about one video frame each, marked when
//! a keyframe starts there); every viewer holds a [`Subscriber`]. Chunks are
//! `Bytes`, so N viewers share one copy. Memory per stream is bounded by the
//! broadcast ring (`capacity` chunks) plus the GOP cache (`gop_max_bytes`),
//! whatever the viewers do.
//!
//! Joining: when the producer can make keyframes on demand, a new viewer asks
//! for one (rate-limited; one keyframe serves everyone who joined meanwhile)
//! and starts on it, with no backlog. If a keyframe came recently enough that
//! the request limiter holds back, the viewer starts on that cached GOP (at
//! most `min_keyframe_interval` old). A producer that cannot make keyframes
//! (FFmpeg) always hands new viewers the cached last GOP.
//!
//! WebRTC peers join the same way on the RTP side ([`Hub::join_rtp`]), with
//! a GOP cache of video RTP packets bounded by `rtp_gop_max_bytes` /
//! `rtp_gop_max_packets`.

mod keyframe;
mod layers;
mod rtp;
mod subscriber;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast;

pub use keyframe::KeyframeLimiter;
pub use layers::{LayerInfo, MAX_LAYERS};
pub use rtp::{RtpJoin, RtpPkt, RtpSubscriber, Track};
pub use subscriber::Subscriber;

use crate::media::ts;

/// One run of whole TS packets, shared by every viewer.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub data: Bytes,
    /// A viewer may start here (the chunk begins a keyframe).
    pub key: bool,
    /// When the hub received it (lag is measured against this).
    pub at: Instant,
    /// Producer run this chunk belongs to; a new run restarts continuity.
    pub epoch: u64,
    /// The PTS (90 kHz) of the video frame the chunk carries, when the hub
    /// cut the chunk itself (a viewer moving between layers starts after it).
    pub pts: Option<u64>,
}

/// Something that can be asked for a keyframe (the encoder).
pub trait KeyframeSource: Send + Sync {
    fn request_keyframe(&self);
}

#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Chunks held in the broadcast ring (≈ frames + audio packets).
    pub capacity: usize,
    /// A viewer whose next chunk is older than this skips to the next keyframe.
    pub max_lag: Duration,
    /// Upper bound of the GOP cache; a longer GOP is not cached.
    pub gop_max_bytes: usize,
    /// At most one keyframe request per this interval.
    pub min_keyframe_interval: Duration,
    /// RTP packets held per track for peers that are a little behind.
    pub rtp_capacity: usize,
    /// Bounds of the cached video GOP in RTP (from its keyframe on); a GOP
    /// that outgrows either is dropped from the cache until the next keyframe.
    pub rtp_gop_max_bytes: usize,
    pub rtp_gop_max_packets: usize,
    /// A joining WebRTC peer starts on the cached GOP whenever there is one,
    /// before asking for a keyframe: for a producer that may never answer
    /// one (OBS over WHIP ignores PLI).
    pub rtp_join_cached_first: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            capacity: 512,
            max_lag: Duration::from_millis(1500),
            gop_max_bytes: 8 << 20,
            min_keyframe_interval: Duration::from_millis(500),
            rtp_capacity: 1024,
            // ≈ 1 s at 4 Mbit/s: joins use it only within the keyframe rate
            // limit (500 ms) when the producer makes keyframes on demand.
            rtp_gop_max_bytes: 1 << 20,
            rtp_gop_max_packets: 400,
            rtp_join_cached_first: false,
        }
    }
}

/// Counters for status and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    pub chunks: u64,
    pub bytes: u64,
    pub keyframes: u64,
    pub keyframe_requests: u64,
    pub gop_joins: u64,
    /// Video RTP packets that start a keyframe.
    pub keyframes_rtp: u64,
    /// Keyframe requests (WebRTC joins, PLI/FIR) held back by the rate limit.
    pub keyframe_requests_deferred: u64,
    /// WebRTC peers started on the cached GOP of RTP packets.
    pub rtp_gop_joins: u64,
    /// The last interval between two video keyframes of this run, in RTP
    /// ticks (90 kHz); 0 until a run has had two.
    pub rtp_gop_ticks: u32,
}

/// Bytes delivered to viewers, by kind (payload bytes: TS for HTTP, RTP
/// payloads for WebRTC). Lock-free: counted on every write.
#[derive(Debug, Default)]
pub struct OutCounters {
    pub http_bytes: std::sync::atomic::AtomicU64,
    pub whep_bytes: std::sync::atomic::AtomicU64,
    /// LL-HLS media bytes served (parts, segments, init segments).
    pub hls_bytes: std::sync::atomic::AtomicU64,
    /// LL-HLS client addresses holding a viewer slot now.
    pub hls_clients: std::sync::atomic::AtomicUsize,
    /// The LL-HLS segmenter's subscriptions to this hub (0 or 1): counted in
    /// the hub's receivers, they are no HTTP-TS viewer.
    pub hls_feeders: std::sync::atomic::AtomicUsize,
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: HubConfig,
    out: Arc<OutCounters>,
    tx: broadcast::Sender<Chunk>,
    rtp: rtp::RtpTracks,
    state: Mutex<State>,
    /// Layers 1.. of this stream (empty for a one-layer stream, and in
    /// every layer hub itself): see [`layers`].
    layers: Vec<Hub>,
}

struct State {
    psi: Option<Bytes>,
    gop: VecDeque<Chunk>,
    gop_bytes: usize,
    /// false once the GOP outgrew `gop_max_bytes` (until the next keyframe).
    gop_complete: bool,
    last_key_at: Option<Instant>,
    epoch: u64,
    chunker: ts::Chunker,
    keyframes: KeyframeLimiter,
    source: Option<Arc<dyn KeyframeSource>>,
    stats: HubStats,
    rtp: rtp::RtpState,
    /// The H.264 profile-level-id of the RTP video, when not the host
    /// encoder's (a WHIP publisher's): WebRTC viewers are answered with it.
    h264_profile: Option<u32>,
    /// Joins start on the cached GOP first (see [`HubConfig::rtp_join_cached_first`];
    /// a producer may prove it answers keyframe requests and turn it off).
    rtp_join_cached_first: bool,
    /// What this layer is (size, rate), as its producer said.
    layer_info: Option<LayerInfo>,
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Self {
        Self::build(cfg, Vec::new(), Arc::default())
    }

    /// Whether this hub is still alive somewhere, asked later without
    /// keeping it alive (a test's leak check).
    #[cfg(test)]
    pub(crate) fn alive_probe(&self) -> impl Fn() -> bool {
        let weak = Arc::downgrade(&self.inner);
        move || weak.strong_count() > 0
    }

    fn build(cfg: HubConfig, layers: Vec<Hub>, out: Arc<OutCounters>) -> Self {
        let (tx, _) = broadcast::channel(cfg.capacity.max(2));
        let keyframes = KeyframeLimiter::new(cfg.min_keyframe_interval);
        let cached_first = cfg.rtp_join_cached_first;
        Self {
            inner: Arc::new(Inner {
                out,
                rtp: rtp::RtpTracks::new(cfg.rtp_capacity.max(2)),
                cfg,
                tx,
                state: Mutex::new(State {
                    psi: None,
                    gop: VecDeque::new(),
                    gop_bytes: 0,
                    gop_complete: false,
                    last_key_at: None,
                    epoch: 0,
                    chunker: ts::Chunker::new(),
                    keyframes,
                    source: None,
                    stats: HubStats::default(),
                    rtp: rtp::RtpState::default(),
                    h264_profile: None,
                    rtp_join_cached_first: cached_first,
                    layer_info: None,
                }),
                layers,
            }),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.inner.cfg
    }

    /// What viewers were sent (shared: egress counts into it).
    pub fn out(&self) -> &Arc<OutCounters> {
        &self.inner.out
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep going.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new producer run starts: forget the old PSI/GOP; viewers resync on
    /// the new run's first keyframe. `source` is how to ask it for keyframes
    /// (`None`: it cannot, so joins use the cached GOP).
    pub fn begin_run(&self, source: Option<Arc<dyn KeyframeSource>>) {
        let mut st = self.lock();
        st.epoch += 1;
        st.psi = None;
        st.gop.clear();
        st.gop_bytes = 0;
        st.gop_complete = false;
        st.last_key_at = None;
        st.chunker = ts::Chunker::new();
        st.keyframes.reset();
        st.source = source;
        st.rtp.begin_run();
        st.stats.rtp_gop_ticks = 0;
        drop(st);
        // The other layers start over too; their producer hands each its
        // keyframe source ([`set_keyframe_source`](Self::set_keyframe_source)).
        for layer in &self.inner.layers {
            layer.begin_run(None);
        }
    }

    /// How this run's producer is asked for keyframes, when it was not known
    /// at [`begin_run`](Self::begin_run) (the encoders of layers 1..).
    pub fn set_keyframe_source(&self, source: Option<Arc<dyn KeyframeSource>>) {
        self.lock().source = source;
    }

    /// The H.264 profile-level-id this run's RTP video has (a WHIP
    /// publisher's); `None`: the host encoder's.
    pub fn set_h264_profile(&self, profile: Option<u32>) {
        self.lock().h264_profile = profile;
    }

    /// Whether joining WebRTC peers start on the cached GOP before asking
    /// for a keyframe (a WHIP publisher that answers PLI turns this off: a
    /// fresh keyframe is newer than any cached one).
    pub fn set_rtp_join_cached_first(&self, on: bool) {
        self.lock().rtp_join_cached_first = on;
    }

    pub fn rtp_join_cached_first(&self) -> bool {
        self.lock().rtp_join_cached_first
    }

    pub fn h264_profile(&self) -> Option<u32> {
        self.lock().h264_profile
    }

    /// The producer run ended: no more keyframe requests go to it.
    pub fn end_run(&self) {
        let mut st = self.lock();
        st.source = None;
        st.keyframes.reset();
        drop(st);
        for layer in &self.inner.layers {
            layer.end_run();
        }
    }

    /// Feed raw MPEG-TS from a muxer (any split); chunks are published as they complete.
    pub fn push_ts(&self, bytes: &[u8], now: Instant) {
        let mut out = Vec::new();
        let mut st = self.lock();
        st.chunker.push(bytes, &mut out);
        self.publish_locked(&mut st, out, now);
    }

    /// The muxer went quiet: publish what is pending now (keeps latency low).
    pub fn flush_ts(&self, now: Instant) {
        let mut out = Vec::new();
        let mut st = self.lock();
        st.chunker.flush(&mut out);
        self.publish_locked(&mut st, out, now);
    }

    fn publish_locked(&self, st: &mut State, out: Vec<ts::Output>, now: Instant) {
        for o in out {
            match o {
                ts::Output::Psi(psi) => st.psi = Some(psi),
                ts::Output::Chunk { data, key, pts } => {
                    let chunk = Chunk {
                        data,
                        key,
                        at: now,
                        epoch: st.epoch,
                        pts,
                    };
                    self.publish_chunk(st, chunk);
                }
            }
        }
    }

    /// Publish one chunk (for producers that cut chunks themselves).
    pub fn publish(&self, data: Bytes, key: bool, now: Instant) {
        let mut st = self.lock();
        let chunk = Chunk {
            data,
            key,
            at: now,
            epoch: st.epoch,
            pts: None,
        };
        self.publish_chunk(&mut st, chunk);
    }

    /// Set the PSI (PAT+PMT) handed to joining viewers (for producers that cut chunks themselves).
    pub fn set_psi(&self, psi: Bytes) {
        self.lock().psi = Some(psi);
    }

    /// A keyframe request held back by the rate limit goes out once allowed.
    fn poll_deferred_keyframe(&self, st: &mut State, now: Instant) {
        if st.source.is_some() && st.keyframes.poll(now) {
            st.stats.keyframe_requests += 1;
            if let Some(source) = &st.source {
                source.request_keyframe();
            }
        }
    }

    fn publish_chunk(&self, st: &mut State, chunk: Chunk) {
        self.poll_deferred_keyframe(st, chunk.at);
        st.stats.chunks += 1;
        st.stats.bytes += chunk.data.len() as u64;
        if chunk.key {
            st.stats.keyframes += 1;
            st.gop.clear();
            st.gop_bytes = 0;
            st.gop_complete = true;
            st.last_key_at = Some(chunk.at);
            st.keyframes.on_keyframe_at(chunk.at);
        }
        if st.gop_complete {
            if st.gop_bytes + chunk.data.len() <= self.inner.cfg.gop_max_bytes {
                st.gop_bytes += chunk.data.len();
                st.gop.push_back(chunk.clone());
            } else {
                st.gop.clear();
                st.gop_bytes = 0;
                st.gop_complete = false;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.inner.tx.send(chunk);
    }

    /// A new viewer. Starts on a fresh keyframe (requested now) or on the
    /// cached GOP, as described in the module docs.
    pub fn subscribe(&self, now: Instant) -> Subscriber {
        let mut st = self.lock();
        // Subscribe under the lock so the GOP snapshot and the live feed meet exactly.
        let rx = self.inner.tx.subscribe();
        let can_request = st.source.is_some();
        let use_gop = if can_request {
            match st.keyframes.want(now) {
                keyframe::Decision::Request => {
                    st.stats.keyframe_requests += 1;
                    if let Some(source) = &st.source {
                        source.request_keyframe();
                    }
                    false
                }
                keyframe::Decision::Pending => false,
                // A keyframe came less than min_keyframe_interval ago: its GOP is fresh.
                keyframe::Decision::Recent => true,
            }
        } else {
            true
        };
        let backlog: Vec<Chunk> = if use_gop && st.gop_complete {
            st.gop.iter().cloned().collect()
        } else {
            Vec::new()
        };
        if !backlog.is_empty() {
            st.stats.gop_joins += 1;
        }
        Subscriber::new(self.clone(), rx, backlog, st.psi.clone(), st.epoch)
    }

    /// A viewer that starts on this hub's NEXT keyframe (PSI first), never
    /// on the cached GOP, and only on one whose video is later than `after`
    /// (a PTS): for a viewer moving here from another layer, whose timeline
    /// must go on forward. Asks the encoder for that keyframe now, or as soon
    /// as the rate limit lets the request out (and again if the one that
    /// comes is not later: another layer's encoder may be a frame behind).
    pub fn subscribe_next_keyframe(&self, now: Instant, after: Option<u64>) -> Subscriber {
        let (rx, epoch) = {
            let st = self.lock();
            (self.inner.tx.subscribe(), st.epoch)
        };
        self.request_keyframe(now);
        Subscriber::new(self.clone(), rx, Vec::new(), None, epoch).starting_after(after)
    }

    pub(crate) fn psi(&self) -> Option<Bytes> {
        self.lock().psi.clone()
    }

    /// How many viewers are subscribed to the TS fan-out right now.
    pub fn receivers(&self) -> usize {
        self.inner.tx.receiver_count()
    }

    pub fn stats(&self) -> HubStats {
        self.lock().stats
    }

    /// Bytes held by the GOP cache (the ring's size is bounded by `capacity`).
    pub fn gop_bytes(&self) -> usize {
        self.lock().gop_bytes
    }

    pub fn last_keyframe_at(&self) -> Option<Instant> {
        self.lock().last_key_at
    }
}

#[cfg(test)]
mod tests;
