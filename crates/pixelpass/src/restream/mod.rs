//! `serve`'s streams: each a supervised FFmpeg producer with its own hub and
//! viewer token, reachable over HTTP through the [`Registry`] exactly like
//! `host`'s one stream. Created from the config file and the API; the API
//! and the metrics read them through here; [`reload`] applies a config file
//! read again.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::config::stream::{FieldError, StreamConfig};
use crate::egress::whep::{PeerReport, Whep};
use crate::ffmpeg::report::{ProcessReport, ProcessState};
use crate::ffmpeg::FfmpegProducer;
use crate::hub::Hub;
use crate::registry::{Registry, StreamEntry};
use crate::supervisor::{Event, Order, Policy, Producer, ProducerError, State, Status, Supervisor};
use crate::token;
use crate::whip::{PublisherView, Whip};

mod policy;
pub mod record;
pub mod reload;
#[cfg(test)]
mod tests;

pub use policy::{hub_config, policy, published_hub_config, published_policy};

/// A random token has 22 characters (128 bits); a chosen one shorter than
/// this is warned about (it is the only thing keeping the stream private).
const MIN_PRIVATE_TOKEN: usize = 22;

/// One stream.
#[derive(Clone)]
struct Stream {
    config: StreamConfig,
    token: String,
    supervisor: Supervisor,
    process: Arc<ProcessState>,
    /// Writing its files (`record`); dropped with the stream.
    _recorder: Option<Arc<crate::egress::hls::record::Recorder>>,
}

/// Why an API call on streams failed (mapped to HTTP codes by the API).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("no stream with id {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(FieldError),
    #[error("{0}")]
    Internal(String),
}

/// What `GET /api/v1/streams/{id}` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StreamView {
    pub id: String,
    pub token: String,
    pub state: State,
    /// The operator's order: `start` or `stop`.
    pub order: Order,
    pub urls: Urls,
    pub config: StreamConfig,
    /// What each layer is (layer 0 first; one for a one-layer stream). Size
    /// and fps `null` until the layer's first SPS said them (an FFmpeg run
    /// with WebRTC on; fps `null` too when the H.264 states no rate).
    pub layers: Vec<LayerView>,
}

/// One layer of a stream, as its producer made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LayerView {
    pub layer: usize,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<u32>,
    /// The encoder's target (for a copied layer 0: `video_bitrate_kbps`, not measured).
    pub bitrate_kbps: Option<u32>,
}

impl LayerView {
    /// `1280x720@30 2500 kbit/s`; a size not known yet is said relative to
    /// the input (`½ of the input`), a rate not known is left out.
    pub fn describe(&self) -> String {
        let size = match (self.width, self.height) {
            (Some(w), Some(h)) => format!("{w}x{h}"),
            _ => [
                "the input's size",
                "½ of the input's size",
                "¼ of the input's size",
            ]
            .get(self.layer)
            .unwrap_or(&"size to come")
            .to_string(),
        };
        let fps = self.fps.map(|f| format!("@{f}")).unwrap_or_default();
        let rate = self
            .bitrate_kbps
            .map(|k| format!(" {k} kbit/s"))
            .unwrap_or_default();
        format!("{size}{fps}{rate}")
    }
}

/// What the layers of `hub` are.
pub fn layer_views(hub: &Hub) -> Vec<LayerView> {
    hub.layers()
        .enumerate()
        .map(|(layer, h)| {
            let info = h.layer_info();
            let known = |v: u32| Some(v).filter(|v| *v > 0);
            LayerView {
                layer,
                width: info.and_then(|i| known(i.width)),
                height: info.and_then(|i| known(i.height)),
                fps: info.and_then(|i| known(i.fps)),
                bitrate_kbps: info.and_then(|i| known(i.bitrate_kbps)),
            }
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Urls {
    pub player: String,
    pub stream_ts: Option<String>,
    pub whep: Option<String>,
    /// Where a publisher POSTs (a stream published over WHIP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whip: Option<String>,
    /// Where FFmpeg listens for an RTMP/SRT publisher (no path, key or
    /// passphrase): a stream whose input has `-listen 1` or `mode=listener`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// Viewers of a stream by kind.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Viewers {
    pub http: usize,
    pub whep: usize,
    /// LL-HLS client addresses (a cache in front is one).
    pub hls: usize,
    pub total: usize,
}

/// What `GET /api/v1/streams/{id}/report` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: String,
    pub state: State,
    pub order: Order,
    pub uptime_s: u64,
    /// Seconds the current run has been live (0 when not live).
    pub live_s: u64,
    pub restarts: u64,
    /// The last failure: `{"kind": "crashed", "message": "…"}`.
    pub last_error: Option<ProducerError>,
    pub viewers: Viewers,
    pub max_viewers: usize,
    pub bytes_out: BytesOut,
    /// Each WebRTC viewer: its layer, estimate, loss and RTT.
    pub webrtc_peers: Vec<PeerReport>,
    /// Who publishes a WHIP stream now (`null`: nobody, or an FFmpeg stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<PublisherView>,
    #[serde(flatten)]
    pub process: ProcessReport,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct BytesOut {
    pub http: u64,
    pub whep: u64,
    pub hls: u64,
}

/// Everything the metrics need of one stream.
pub struct Sample {
    pub id: String,
    pub status: Status,
    pub viewers: Viewers,
    pub bytes_out: BytesOut,
    pub process: Arc<ProcessState>,
    /// A stream published over WHIP, and who publishes it now.
    pub published: bool,
    pub publisher: Option<PublisherView>,
    pub webrtc_peers: Vec<PeerReport>,
}

#[derive(Clone)]
pub struct Streams {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    whep: Whep,
    /// WHIP ingest, when this server takes published streams.
    whip: Option<Whip>,
    streams: Mutex<BTreeMap<String, Stream>>,
}

impl Streams {
    /// The WebRTC engine's load and refusals (for `/metrics`).
    pub fn engine_load(&self) -> &crate::egress::whep::load::Load {
        self.inner.whep.load()
    }

    pub fn new(registry: Registry, whep: Whep, whip: Option<Whip>) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                whep,
                whip,
                streams: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Stream>> {
        self.inner.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a stream; it starts per its `autostart` / `on_demand`.
    pub fn create(&self, config: StreamConfig) -> Result<StreamView, StreamError> {
        config.validate().map_err(StreamError::Invalid)?;
        let mut streams = self.lock();
        if streams.contains_key(&config.id) {
            return Err(StreamError::Conflict(format!(
                "a stream with id {:?} exists already (PUT /api/v1/streams/{} replaces it)",
                config.id, config.id
            )));
        }
        let token = match &config.token {
            Some(t) => {
                if t.len() < MIN_PRIVATE_TOKEN {
                    tracing::warn!(
                        stream = %config.id,
                        "the viewer token is short enough to guess ({} characters): anyone who guesses it can watch; omit `token` for a random 128-bit one",
                        t.len()
                    );
                }
                t.clone()
            }
            None => token::generate().map_err(|e| StreamError::Internal(e.to_string()))?,
        };
        if let Some(other) = streams.values().find(|s| s.token == token) {
            return Err(StreamError::Conflict(format!(
                "stream {:?} already uses this token",
                other.config.id
            )));
        }
        let stream = self.spawn(config, token)?;
        let mut entry = StreamEntry::new(
            stream.config.id.clone(),
            stream.token.clone(),
            stream.supervisor.clone(),
        );
        entry.http_ts = stream.config.http_ts;
        entry.webrtc = stream.config.webrtc.enabled;
        entry.rtp_pts = Some(if stream.config.is_published() {
            (
                crate::whip::slot::HUB_VIDEO_PT,
                crate::whip::slot::HUB_AUDIO_PT,
            )
        } else {
            (
                stream.config.webrtc.video_pt(),
                stream.config.webrtc.audio_pt(),
            )
        });
        self.inner.registry.insert(entry);
        let view = view(&stream);
        streams.insert(stream.config.id.clone(), stream);
        Ok(view)
    }

    /// Replace a stream's config: the old one is torn down (its viewers go),
    /// the new one starts per its own settings. The token stays unless the
    /// new config names one.
    pub async fn replace(
        &self,
        id: &str,
        mut config: StreamConfig,
    ) -> Result<StreamView, StreamError> {
        config.validate().map_err(StreamError::Invalid)?;
        let (old_token, old_publish_token) = {
            let streams = self.lock();
            let old = streams
                .get(id)
                .ok_or_else(|| StreamError::NotFound(id.to_owned()))?;
            if let Some(t) = &config.token {
                if let Some(other) = streams
                    .values()
                    .find(|s| &s.token == t && s.config.id != id)
                {
                    return Err(StreamError::Conflict(format!(
                        "stream {:?} already uses this token",
                        other.config.id
                    )));
                }
            }
            (old.token.clone(), old.config.publish_token.clone())
        };
        config.token.get_or_insert(old_token);
        if config.input.is_empty() && config.publish_token.is_none() {
            config.publish_token = old_publish_token;
        }
        // Old out and new in, whole, even if the caller goes away between.
        let this = self.clone();
        let id = id.to_owned();
        to_the_end(async move {
            this.delete(&id).await?;
            this.create(config)
        })
        .await
    }

    /// Remove a stream: its WebRTC peers close, then FFmpeg stops, then its
    /// HTTP viewers' bodies end. The teardown runs to its end even if the
    /// caller is dropped half way (an API client that hangs up): a stream
    /// out of the map but still registered with WHIP, with peers, or with
    /// its supervisor running would be kept forever.
    pub async fn delete(&self, id: &str) -> Result<(), StreamError> {
        let stream = self
            .lock()
            .remove(id)
            .ok_or_else(|| StreamError::NotFound(id.to_owned()))?;
        self.inner.registry.remove(id);
        stream.supervisor.stop();
        let inner = self.inner.clone();
        let id = id.to_owned();
        to_the_end(async move {
            inner.whep.close_all(&id).await;
            if let Some(whip) = &inner.whip {
                whip.unregister(&id).await;
            }
            stream.supervisor.shutdown().await;
            Ok(())
        })
        .await
    }

    pub fn command(&self, id: &str, command: &str) -> Result<(), StreamError> {
        let sup = self.supervisor(id)?;
        match command {
            "start" => sup
                .start()
                .map_err(|e| StreamError::Conflict(e.to_string())),
            "stop" => {
                sup.stop();
                Ok(())
            }
            "restart" => {
                sup.restart();
                Ok(())
            }
            other => Err(StreamError::Invalid(FieldError {
                field: "command".into(),
                message: format!("{other:?} is not a command; use start, stop or restart"),
            })),
        }
    }

    fn supervisor(&self, id: &str) -> Result<Supervisor, StreamError> {
        self.lock()
            .get(id)
            .map(|s| s.supervisor.clone())
            .ok_or_else(|| StreamError::NotFound(id.to_owned()))
    }

    pub fn get(&self, id: &str) -> Option<StreamView> {
        self.lock().get(id).map(view)
    }

    pub fn list(&self) -> Vec<StreamView> {
        self.lock().values().map(view).collect()
    }

    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn report(&self, id: &str) -> Option<Report> {
        let stream = self.lock().get(id).cloned()?;
        let status = stream.supervisor.status();
        let viewers = self.viewers(&stream, &status);
        Some(Report {
            id: stream.config.id.clone(),
            state: status.state,
            order: status.order,
            uptime_s: status.uptime_s,
            live_s: status.live_s,
            restarts: status.restarts,
            last_error: status.last_error.clone(),
            viewers,
            max_viewers: status.max_viewers,
            bytes_out: bytes_out(stream.supervisor.hub()),
            webrtc_peers: self.inner.whep.peer_reports(&stream.config.id),
            publisher: self.publisher(&stream.config.id),
            process: stream
                .process
                .report(stream.supervisor.hub().stats().rtp_gop_ticks),
            events: stream.supervisor.events(),
        })
    }

    pub fn samples(&self) -> Vec<Sample> {
        let streams: Vec<Stream> = self.lock().values().cloned().collect();
        streams
            .into_iter()
            .map(|s| {
                let status = s.supervisor.status();
                Sample {
                    id: s.config.id.clone(),
                    viewers: self.viewers(&s, &status),
                    bytes_out: bytes_out(s.supervisor.hub()),
                    status,
                    process: s.process.clone(),
                    published: s.config.is_published(),
                    publisher: self.publisher(&s.config.id),
                    webrtc_peers: self.inner.whep.peer_reports(&s.config.id),
                }
            })
            .collect()
    }

    fn publisher(&self, id: &str) -> Option<PublisherView> {
        self.inner.whip.as_ref()?.publisher(id)
    }

    fn viewers(&self, s: &Stream, status: &Status) -> Viewers {
        let out = s.supervisor.hub().out();
        Viewers {
            http: s
                .supervisor
                .hub()
                .receivers()
                .saturating_sub(out.hls_feeders.load(Ordering::Relaxed)),
            hls: out.hls_clients.load(Ordering::Relaxed),
            whep: self.inner.whep.peers(Some(&s.config.id)),
            total: status.viewers,
        }
    }

    /// Stop every stream: WebRTC peers first, then the FFmpeg processes (in parallel).
    pub async fn shutdown(&self) {
        let streams: Vec<Stream> = std::mem::take(&mut *self.lock()).into_values().collect();
        for s in &streams {
            self.inner.registry.remove(&s.config.id);
            s.supervisor.stop();
        }
        self.inner.whep.shutdown().await;
        if let Some(whip) = &self.inner.whip {
            whip.shutdown().await;
        }
        let stops = streams.iter().map(|s| s.supervisor.shutdown());
        futures_util::future::join_all(stops).await;
    }
}

/// Run `work` as a task of its own and wait for it: dropping the waiter
/// (a request whose client hung up) leaves the work running to its end.
async fn to_the_end<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, StreamError>> + Send + 'static,
) -> Result<T, StreamError> {
    tokio::spawn(work)
        .await
        .map_err(|e| StreamError::Internal(format!("a stream change failed half way: {e}")))?
}

fn bytes_out(hub: &Hub) -> BytesOut {
    BytesOut {
        http: hub.out().http_bytes.load(Ordering::Relaxed),
        whep: hub.out().whep_bytes.load(Ordering::Relaxed),
        hls: hub.out().hls_bytes.load(Ordering::Relaxed),
    }
}

fn view(s: &Stream) -> StreamView {
    let status = s.supervisor.status();
    let t = &s.token;
    StreamView {
        id: s.config.id.clone(),
        token: t.clone(),
        state: status.state,
        order: status.order,
        urls: Urls {
            player: format!("/{t}/"),
            stream_ts: s.config.http_ts.then(|| format!("/{t}/stream.ts")),
            whep: s.config.webrtc.enabled.then(|| format!("/{t}/whep")),
            whip: s
                .config
                .is_published()
                .then(|| format!("/whip/{}", s.config.id)),
            listen: s
                .config
                .listening_input()
                .map(|u| crate::ffmpeg::log::endpoint(&u)),
        },
        config: s.config.clone(),
        layers: layer_views(s.supervisor.hub()),
    }
}

impl Streams {
    /// A stream's supervisor: an FFmpeg producer, or a WHIP slot for a published one.
    fn spawn(&self, config: StreamConfig, token: String) -> Result<Stream, StreamError> {
        let process = Arc::new(ProcessState::default());
        let (producer, policy, hub): (Arc<dyn Producer>, Policy, Hub) = if config.is_published() {
            let whip = self.inner.whip.as_ref().ok_or_else(|| {
                StreamError::Internal(
                    "this server takes no WHIP publishers (WHIP ingest is off)".into(),
                )
            })?;
            let hub = Hub::new(published_hub_config());
            let publish_token = config.publish_token.as_deref().unwrap_or_default();
            let producer = whip.register(
                &config.id,
                publish_token,
                &token,
                hub.clone(),
                config.http_ts,
            );
            (Arc::new(producer), published_policy(&config), hub)
        } else {
            let producer = FfmpegProducer::new(config.clone(), process.clone());
            (
                Arc::new(producer),
                policy(&config),
                Hub::with_layers(hub_config(&config), config.layers as usize),
            )
        };
        let recorder = record::start(&config, &hub)?;
        let supervisor = Supervisor::spawn(policy, hub, producer);
        Ok(Stream {
            config,
            token,
            supervisor,
            process,
            _recorder: recorder,
        })
    }
}
