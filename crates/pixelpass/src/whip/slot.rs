//! One published stream's place for a publisher: who publishes now, where
//! its packets go (the stream's hub), and the producer run waiting on it.
//! Shared by the HTTP side (POST/DELETE), the engine (media, departure) and
//! the supervisor's [`WhipProducer`](super::producer::WhipProducer).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::hub::{Hub, Track};
use crate::media::rtp::h264_starts_keyframe;
use crate::supervisor::ProducerError;
use crate::token;

/// The payload types a published stream's hub carries, whatever the
/// publisher negotiated (viewers are rewritten per peer anyway).
pub const HUB_VIDEO_PT: u8 = 102;
pub const HUB_AUDIO_PT: u8 = 111;

/// What the API and the report show of the publisher.
#[derive(Debug, Clone, Serialize)]
pub struct PublisherView {
    /// The address its media comes from (`null` until ICE connects).
    pub address: Option<SocketAddr>,
    /// `H264 profile-level-id=640c1f`, `opus/48000/2`.
    pub codecs: Vec<String>,
    /// Unix time (s) of its POST.
    pub since_unix_s: u64,
    pub connected: bool,
    /// Payload bits per second since it connected.
    pub bitrate_bps: u64,
    pub packets: u64,
    pub bytes: u64,
}

struct Publisher {
    resource: Arc<str>,
    etag: String,
    address: Option<SocketAddr>,
    codecs: Vec<String>,
    audio: bool,
    since: SystemTime,
    connected_at: Option<Instant>,
}

/// The producer run waiting on this slot.
struct RunLink {
    first_media: Option<oneshot::Sender<()>>,
    failures: mpsc::UnboundedSender<ProducerError>,
}

#[derive(Default)]
struct State {
    publisher: Option<Publisher>,
    run: Option<RunLink>,
    /// When the last PLI went to the publisher (not answered yet).
    pli_at: Option<Instant>,
}

/// A keyframe this soon after a PLI answers it.
const PLI_ANSWER: std::time::Duration = std::time::Duration::from_millis(1500);

pub struct Slot {
    pub id: String,
    publish_token: String,
    /// The stream's viewer token (its player page goes in the answer's `Link`).
    pub viewer_token: String,
    hub: Hub,
    state: Mutex<State>,
    packets: AtomicU64,
    bytes: AtomicU64,
    /// `true` once the stream is deleted or the server stops: a start
    /// waiting for a publisher gives up.
    closed: watch::Sender<bool>,
    /// Bumped on every claim (a new publisher's offer was answered).
    claims: watch::Sender<u64>,
}

/// Why POST cannot take a publisher now.
#[derive(Debug)]
pub enum Refused {
    /// Someone publishes already (`409`).
    Busy,
}

impl Slot {
    pub fn new(id: String, publish_token: String, viewer_token: String, hub: Hub) -> Self {
        Self {
            id,
            publish_token,
            viewer_token,
            hub,
            state: Mutex::new(State::default()),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            closed: watch::channel(false).0,
            claims: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bearer token matches (constant time).
    pub fn authorizes(&self, given: &str) -> bool {
        token::matches(&self.publish_token, given)
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Take the slot for a new publisher (its resource id and ETag).
    pub fn claim(
        &self,
        resource: Arc<str>,
        etag: String,
        codecs: Vec<String>,
        audio: bool,
    ) -> Result<(), Refused> {
        let mut st = self.lock();
        if st.publisher.is_some() {
            return Err(Refused::Busy);
        }
        st.publisher = Some(Publisher {
            resource,
            etag,
            address: None,
            codecs,
            audio,
            since: SystemTime::now(),
            connected_at: None,
        });
        st.pli_at = None;
        self.packets.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        drop(st);
        // Until this publisher answers a PLI, viewers join on the cached GOP
        // (OBS never answers one).
        self.hub.set_rtp_join_cached_first(true);
        self.claims.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The publisher whose resource is `resource`, with its ETag.
    pub fn etag_of(&self, resource: &str) -> Option<String> {
        let st = self.lock();
        st.publisher
            .as_ref()
            .filter(|p| &*p.resource == resource)
            .map(|p| p.etag.clone())
    }

    /// The publisher sends Opus too.
    pub fn has_audio(&self) -> bool {
        self.lock().publisher.as_ref().is_some_and(|p| p.audio)
    }

    pub fn resource(&self) -> Option<Arc<str>> {
        self.lock().publisher.as_ref().map(|p| p.resource.clone())
    }

    /// ICE and DTLS are up; media comes from `address`.
    pub fn connected(&self, resource: &str, address: Option<SocketAddr>, now: Instant) {
        let mut st = self.lock();
        if let Some(p) = st.publisher.as_mut().filter(|p| &*p.resource == resource) {
            p.address = address;
            p.connected_at = Some(now);
        }
    }

    /// One RTP packet of the publisher (header already rewritten to the
    /// hub's payload types), into the stream's hub.
    pub fn media(&self, track: Track, packet: &[u8], now: Instant) {
        if self.hub.publish_rtp(track, packet, now).is_err() {
            return;
        }
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(packet.len().saturating_sub(12) as u64, Ordering::Relaxed);
        let mut st = self.lock();
        if let Some(first) = st.run.as_mut().and_then(|r| r.first_media.take()) {
            let _ = first.send(());
        }
        if let Some(asked) = st.pli_at {
            if now.saturating_duration_since(asked) > PLI_ANSWER {
                st.pli_at = None;
            } else if track == Track::Video && h264_starts_keyframe(&packet[12.min(packet.len())..])
            {
                // It answers PLI: a fresh keyframe beats any cached GOP.
                st.pli_at = None;
                drop(st);
                self.hub.set_rtp_join_cached_first(false);
            }
        }
    }

    /// Viewers still join on the cached GOP (the publisher has not answered a PLI).
    pub fn join_cached_first(&self) -> bool {
        self.hub.rtp_join_cached_first()
    }

    /// A PLI went to the publisher now.
    pub fn pli_sent(&self, now: Instant) {
        let mut st = self.lock();
        if st.pli_at.is_none() {
            st.pli_at = Some(now);
        }
    }

    /// The publisher `resource` is gone: the run waiting on it fails with
    /// `why` (the supervisor closes the stream's viewers, then waits for the
    /// next publisher).
    pub fn gone(&self, resource: &str, why: ProducerError) {
        let mut st = self.lock();
        if st
            .publisher
            .as_ref()
            .is_some_and(|p| &*p.resource == resource)
        {
            st.publisher = None;
            if let Some(run) = st.run.take() {
                let _ = run.failures.send(why);
            }
        }
    }

    /// A producer run starts waiting for media: resolved on the first packet.
    pub fn attach_run(
        &self,
    ) -> (
        oneshot::Receiver<()>,
        mpsc::UnboundedReceiver<ProducerError>,
    ) {
        let (first_tx, first_rx) = oneshot::channel();
        let (fail_tx, fail_rx) = mpsc::unbounded_channel();
        self.lock().run = Some(RunLink {
            first_media: Some(first_tx),
            failures: fail_tx,
        });
        (first_rx, fail_rx)
    }

    /// The run stopped: packets still go to the hub, nobody waits on them.
    pub fn detach_run(&self) {
        self.lock().run = None;
    }

    /// The stream is deleted or the server stops.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves once a publisher holds the slot (at once if one does).
    pub async fn claimed(&self) {
        let mut claims = self.claims.subscribe();
        let _ = claims.wait_for(|_| self.resource().is_some()).await;
    }

    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    pub fn view(&self, now: Instant) -> Option<PublisherView> {
        let st = self.lock();
        let p = st.publisher.as_ref()?;
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = p
            .connected_at
            .map(|t| now.saturating_duration_since(t).as_secs_f64())
            .unwrap_or(0.0);
        Some(PublisherView {
            address: p.address,
            codecs: p.codecs.clone(),
            since_unix_s: p
                .since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            connected: p.connected_at.is_some(),
            bitrate_bps: if secs >= 1.0 {
                (bytes as f64 * 8.0 / secs) as u64
            } else {
                0
            },
            packets: self.packets.load(Ordering::Relaxed),
            bytes,
        })
    }
}
