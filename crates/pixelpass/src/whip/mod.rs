//! WHIP ingest (RFC 9725): `serve` as a relay that publishers (OBS, a
//! browser, `pixelpass host --publish`) send their one encode to, with no
//! FFmpeg and no transcoding on the WebRTC path.
//!
//! - [`answer`]: a publisher's `Rtc` from its offer (any H.264 profile, Opus);
//! - [`core`]: every publisher, sans-IO: datagrams and time in, datagrams out,
//!   its RTP into the stream's hub, PLI upstream;
//! - [`engine`]: the task driving the core (its own UDP socket, the clock);
//! - [`slot`]: one published stream's place for a publisher, shared by all;
//! - [`producer`]: the supervisor's view: a run is a publisher's session;
//! - [`http`]: `POST /whip/{id}`, `DELETE`/`PATCH`/`OPTIONS` of its resource.

pub(crate) mod answer;
pub(crate) mod core;
pub(crate) mod engine;
pub mod http;
pub(crate) mod producer;
pub(crate) mod slot;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use slot::PublisherView;

use crate::hub::Hub;
use crate::net::udp::{self, Udp};
use answer::Answerer;
use engine::Cmd;
use producer::WhipProducer;
use slot::Slot;

/// How the relay is reached, for the `Location` and `Link` headers.
#[derive(Clone, Debug)]
pub struct WhipConfig {
    /// The UDP address publishers' media comes to.
    pub udp: SocketAddr,
    /// Addresses publishers reach this relay at that it does not see itself.
    pub public_host: Vec<String>,
    /// A publisher silent this long (no ICE consent, no RTCP) is gone.
    pub timeout: Duration,
    /// `https://example.org/pixelpass`: the base of URLs handed out (behind
    /// a reverse proxy); `None`: the request's `Host` and this server's scheme.
    pub public_url: Option<String>,
    /// This server speaks HTTPS (for URLs made from the `Host` header).
    pub https: bool,
}

#[cfg(any(test, feature = "fuzzing"))]
impl WhipConfig {
    /// A relay on an ephemeral loopback port that names itself by the
    /// request's `Host` (tests and the fuzz targets).
    pub fn loopback() -> Self {
        Self {
            udp: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            public_host: Vec::new(),
            timeout: Duration::from_secs(5),
            public_url: None,
            https: false,
        }
    }
}

/// The WHIP service: the UDP socket, the engine task, the published streams.
#[derive(Clone)]
pub struct Whip {
    inner: Arc<Inner>,
}

struct Inner {
    cmds: mpsc::UnboundedSender<Cmd>,
    answerer: Answerer,
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    local: SocketAddr,
    cfg: WhipConfig,
    engine: Mutex<Option<JoinHandle<()>>>,
}

impl Whip {
    pub async fn start(cfg: WhipConfig) -> anyhow::Result<Self> {
        let udp = Udp::bind(cfg.udp)?;
        let local = udp.local_addr();
        let public = udp::resolve_public_hosts(&cfg.public_host, local.port()).await?;
        let answerer = Answerer::new(udp::candidate_addrs(local, &public))?;
        let (cmds, rx) = mpsc::unbounded_channel();
        let engine = engine::spawn(Arc::new(udp), cfg.timeout, rx);
        tracing::info!(udp = %local, candidates = ?answerer.candidates(), "WHIP ingest ready");
        Ok(Self {
            inner: Arc::new(Inner {
                cmds,
                answerer,
                slots: RwLock::new(HashMap::new()),
                local,
                cfg,
                engine: Mutex::new(Some(engine)),
            }),
        })
    }

    /// The UDP address publishers send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// A published stream: its slot, and the producer its supervisor runs.
    pub(crate) fn register(
        &self,
        id: &str,
        publish_token: &str,
        viewer_token: &str,
        hub: Hub,
        http_ts: bool,
    ) -> WhipProducer {
        let slot = Arc::new(Slot::new(
            id.to_owned(),
            publish_token.to_owned(),
            viewer_token.to_owned(),
            hub,
        ));
        self.inner
            .slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), slot.clone());
        WhipProducer::new(slot, self.inner.cmds.clone(), http_ts)
    }

    /// The stream is deleted: its publisher is closed, a start waiting gives up.
    pub(crate) async fn unregister(&self, id: &str) {
        let slot = self
            .inner
            .slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(slot) = slot {
            slot.close();
            let (tx, rx) = oneshot::channel();
            if self
                .inner
                .cmds
                .send(Cmd::CloseStream(id.into(), tx))
                .is_ok()
            {
                let _ = rx.await;
            }
        }
    }

    pub(crate) fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.inner
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Who publishes `id` now.
    pub fn publisher(&self, id: &str) -> Option<PublisherView> {
        self.slot(id)?.view(Instant::now())
    }

    pub(crate) fn answerer(&self) -> &Answerer {
        &self.inner.answerer
    }

    pub(crate) fn config(&self) -> &WhipConfig {
        &self.inner.cfg
    }

    pub(crate) fn send(&self, cmd: Cmd) -> bool {
        self.inner.cmds.send(cmd).is_ok()
    }

    /// Close every publisher and stop the engine (at most ~1 s).
    pub async fn shutdown(&self) {
        for slot in self
            .inner
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            slot.close();
        }
        let (tx, rx) = oneshot::channel();
        let answered = self
            .inner
            .cmds
            .send(Cmd::Shutdown(tx))
            .is_ok()
            .then_some(rx);
        udp::stop_driver(answered, &self.inner.engine).await;
    }
}
