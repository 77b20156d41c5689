//! WebRTC viewers over WHEP (draft-ietf-wish-whep), with str0m.
//!
//! - [`config`]: `--webrtc-udp`, `--public-host`, `--ice-server`, payload types;
//! - [`crate::net::udp`]: the ONE UDP socket all peers share, and our host candidates;
//! - [`crate::net::rtc`]: the DTLS identity and a first look at offers (shared with WHIP);
//! - [`peer`]: one viewer's `Rtc` (ice-lite, RTP mode) and its events;
//! - [`forward`]: per-peer sequence numbers, keyframe starts, timestamps;
//! - [`pacer`]: per-peer pacing (a token bucket at 2.5× the stream's bitrate);
//! - [`core`]: every peer, its timers and media, sans-IO (time passed in);
//! - [`engine`]: the task driving the core: socket, hub feeds, clock;
//! - [`load`]: how busy the engine is; new viewers are refused past a limit;
//! - [`index`]: WHEP resources and the leases they hold;
//! - [`http`]: POST / PATCH / DELETE / OPTIONS under the stream token.
//!
//! ICE restart (PATCH with `If-Match: "*"`) is answered `422`: a viewer
//! whose network changed POSTs a new offer instead, which is as fast here
//! (ice-lite, one round trip) and keeps the server simple.

pub(crate) mod config;
mod core;
mod engine;
pub(crate) mod forward;
pub(crate) mod http;
pub(crate) mod index;
pub(crate) mod layer;
pub mod load;
pub(crate) mod pacer;
pub(crate) mod peer;
pub(crate) mod select;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use config::{Bwe, IceServer, Pacing, WebRtcArgs, DEFAULT_MAX_LOAD, MAX_LOAD_ENV};
pub use layer::{PeerReport, PeerView};
pub use peer::{OfferError, H264_PROFILE_LEVEL_ID};
pub use select::{Choice, Mode};

use self::core::{EngineConfig, NewPeer};
use crate::net::udp::{self, Udp};
use engine::{Cmd, Engine};
use index::Index;
use peer::RtcFactory;

use crate::hub::Hub;

/// The WHEP service: the UDP socket, the engine task, the resource index.
/// Cheap to clone.
#[derive(Clone)]
pub struct Whep {
    inner: Arc<Inner>,
}

struct Inner {
    cmds: mpsc::UnboundedSender<Cmd>,
    index: Arc<Index>,
    factory: RtcFactory,
    ice_servers: Vec<IceServer>,
    /// In front of `Location` (see [`WebRtcArgs::base_path`]).
    base_path: String,
    local: SocketAddr,
    engine: Mutex<Option<JoinHandle<()>>>,
    load: load::Load,
}

impl Whep {
    /// Bind the UDP socket, work out our candidates and start the engine.
    pub async fn start(args: &WebRtcArgs) -> anyhow::Result<Self> {
        let udp = Udp::bind(args.webrtc_udp)?;
        let local = udp.local_addr();
        let public = udp::resolve_public_hosts(&args.public_host, local.port()).await?;
        let candidates = udp::candidate_addrs(local, &public);
        let factory = RtcFactory::new(candidates)?.with_bwe(args.webrtc_bwe);
        let index = Arc::new(Index::default());
        let (cmds, rx) = mpsc::unbounded_channel();
        let cfg = EngineConfig {
            timeout: args.peer_timeout(),
            producer_pts: (args.video_pt, args.audio_pt),
            pacing: args.webrtc_pacing == Pacing::On,
        };
        let load = load::Load::new(args.webrtc_max_load);
        let engine = Engine::spawn(Arc::new(udp), index.clone(), cfg, rx, load.clone());
        tracing::info!(udp = %local, candidates = ?factory.candidates(), pacing = ?args.webrtc_pacing, bwe = ?args.webrtc_bwe, "WebRTC (WHEP) ready");
        Ok(Self {
            inner: Arc::new(Inner {
                cmds,
                index,
                factory,
                ice_servers: args.ice_server.clone(),
                base_path: args.base_path.trim_end_matches('/').to_owned(),
                local,
                engine: Mutex::new(Some(engine)),
                load,
            }),
        })
    }

    /// The UDP address the socket is bound to (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// The addresses offered to browsers as host candidates.
    pub fn candidates(&self) -> &[SocketAddr] {
        self.inner.factory.candidates()
    }

    pub(crate) fn base_path(&self) -> &str {
        &self.inner.base_path
    }

    pub fn ice_servers(&self) -> &[IceServer] {
        &self.inner.ice_servers
    }

    /// WHEP resources of `stream` (or of all streams), connected or not.
    pub fn peers(&self, stream: Option<&str>) -> usize {
        self.inner.index.count(stream)
    }

    /// Every WebRTC viewer of `stream` (all streams: `None`): resource id,
    /// stream, and what the engine says of its layer and link.
    pub fn peer_views(&self, stream: Option<&str>) -> Vec<(Arc<str>, Arc<str>, PeerView)> {
        self.inner.index.views(stream)
    }

    /// The WebRTC viewers of `stream` for its report and metrics (sorted).
    pub fn peer_reports(&self, stream: &str) -> Vec<PeerReport> {
        let mut v: Vec<PeerReport> = self
            .peer_views(Some(stream))
            .into_iter()
            .map(|(r, _, view)| PeerReport::new(&r, view))
            .collect();
        v.sort_by(|a, b| a.peer.cmp(&b.peer));
        v
    }

    /// One viewer's view, if `resource` is a peer of `stream`.
    pub fn peer_view(&self, resource: &str, stream: &str) -> Option<PeerView> {
        self.inner.index.view(resource, stream)
    }

    /// The viewer pins a layer or gives the choice back to its estimate.
    pub fn set_layer(&self, resource: &str, mode: Mode) {
        let _ = self.inner.cmds.send(Cmd::SetLayer(resource.into(), mode));
    }

    /// Close every peer of `stream` and free their slots; returns once the
    /// engine writes no more media to them. The supervisor's teardown hook.
    pub async fn close_all(&self, stream: &str) {
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .cmds
            .send(Cmd::CloseStream(stream.into(), tx))
            .is_ok()
        {
            let _ = rx.await;
        }
        // Whatever the engine did, no resource of the stream survives.
        self.inner.index.remove_stream(stream);
    }

    /// Close every peer and stop the engine (at most ~1 s).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        let answered = self
            .inner
            .cmds
            .send(Cmd::Shutdown(tx))
            .is_ok()
            .then_some(rx);
        udp::stop_driver(answered, &self.inner.engine).await;
    }

    /// How busy the engine is (also what refuses new viewers past the limit).
    pub fn load(&self) -> &load::Load {
        &self.inner.load
    }

    pub(crate) fn index(&self) -> &Index {
        &self.inner.index
    }

    pub(crate) fn factory(&self) -> &RtcFactory {
        &self.inner.factory
    }

    /// Hand a negotiated peer to the engine.
    pub(crate) fn add_peer(
        &self,
        resource: Arc<str>,
        stream: Arc<str>,
        hub: Hub,
        rtc: str0m::Rtc,
        producer_pts: Option<(u8, u8)>,
        created: Instant,
    ) -> bool {
        let new = NewPeer {
            resource,
            stream,
            hub,
            rtc,
            producer_pts,
            created,
        };
        self.inner.cmds.send(Cmd::Add(Box::new(new))).is_ok()
    }

    /// Tell the engine a resource was deleted (its lease is already gone).
    pub(crate) fn remove_peer(&self, resource: Arc<str>) {
        let _ = self.inner.cmds.send(Cmd::Remove(resource));
    }
}
