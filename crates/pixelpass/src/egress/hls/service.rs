//! One HLS output per stream: the feeder task (hub layer 0 → demux →
//! segmenter → window) while anyone asks, the clients' leases, and the wait
//! that blocking requests and preload-hinted parts do.
//!
//! Counting: an HLS client is a client address. Each address that asked
//! within [`HlsConfig::quiet`] holds one supervisor lease — so it counts in
//! `viewers` and against `--max-viewers`, and the first one starts capture —
//! and gives it back after that quiet period. A cache in front is one
//! address: however many people watch through it, it is one viewer here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::playlist::Timing;
use super::segmenter::{self, Output, Segmenter, TsInput};
use super::window::{Served, Window};
use crate::registry::StreamEntry;
use crate::supervisor::{Lease, Supervisor};

#[derive(Debug, Clone, Copy)]
pub struct HlsConfig {
    pub segmenter: segmenter::Config,
    /// Segments in the window (and in the playlist).
    pub window_segments: usize,
    /// A client that asked nothing for this long no longer holds a lease.
    pub quiet: Duration,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            segmenter: segmenter::Config::default(),
            // ≈ 12 s at the 2 s segment target: enough for a player or cache
            // a little behind, small in memory (≈ 12 s of the stream's bitrate).
            window_segments: 6,
            quiet: Duration::from_secs(30),
        }
    }
}

impl HlsConfig {
    pub fn timing(&self) -> Timing {
        Timing {
            target_duration: self.segmenter.segment_max_ms.div_ceil(1000),
            part_target_ms: self.segmenter.part_target_ms,
        }
    }
}

/// Every stream's HLS output, made on its first request.
#[derive(Clone, Default)]
pub struct Hls {
    cfg: HlsConfig,
    streams: Arc<Mutex<HashMap<String, Arc<HlsStream>>>>,
}

impl Hls {
    pub fn new(cfg: HlsConfig) -> Self {
        Self {
            cfg,
            streams: Arc::default(),
        }
    }

    pub fn stream(&self, entry: &StreamEntry) -> Arc<HlsStream> {
        let mut map = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(entry.id.clone())
            .or_insert_with(|| HlsStream::new(entry.supervisor.clone(), self.cfg))
            .clone()
    }

    /// What status says about a stream's HLS output (`None`: never asked for).
    pub fn report(&self, id: &str) -> Option<Report> {
        let map = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).map(|s| s.report())
    }
}

/// Requests served, by kind (the origin's load).
#[derive(Default)]
pub struct Requests {
    pub playlist: AtomicU64,
    pub blocking_playlist: AtomicU64,
    pub init: AtomicU64,
    pub part: AtomicU64,
    pub segment: AtomicU64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Client addresses that asked within the quiet period (each holds a viewer slot).
    pub clients: usize,
    pub segments: usize,
    pub bytes_held: usize,
    pub requests: HashMap<&'static str, u64>,
    /// The most requests one part / one segment got here.
    pub served: Served,
}

pub struct State {
    pub window: Window,
    clients: HashMap<IpAddr, (Lease, Instant)>,
    feeding: bool,
    /// The next window starts its sequence numbers here (URLs never repeat).
    next_msn: u64,
}

pub struct HlsStream {
    supervisor: Supervisor,
    pub cfg: HlsConfig,
    state: Mutex<State>,
    version: watch::Sender<u64>,
    pub requests: Requests,
}

/// While the feeder runs: its hub subscription is counted as no viewer.
struct Feeding(crate::hub::Hub);

impl Drop for Feeding {
    fn drop(&mut self) {
        self.0.out().hls_feeders.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl HlsStream {
    fn new(supervisor: Supervisor, cfg: HlsConfig) -> Arc<Self> {
        Arc::new(Self {
            supervisor,
            cfg,
            state: Mutex::new(State {
                window: Window::new(cfg.window_segments, 0),
                clients: HashMap::new(),
                feeding: false,
                next_msn: 0,
            }),
            version: watch::channel(0).0,
            requests: Requests::default(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request from `client`: it holds (or takes) a viewer slot, and the
    /// feeder runs. `Err`: the stream is full (the reason for a 503).
    pub fn visit(self: &Arc<Self>, client: IpAddr) -> Result<(), String> {
        let now = Instant::now();
        let mut st = self.lock();
        if let Some((_, seen)) = st.clients.get_mut(&client) {
            *seen = now;
        } else {
            let lease = self.supervisor.acquire().map_err(|full| full.to_string())?;
            st.clients.insert(client, (lease, now));
            self.count_clients(st.clients.len());
        }
        if !st.feeding {
            st.feeding = true;
            // Sequence numbers go on from the last window, and never below the
            // Unix time in seconds: a restarted server (segments ≥ 1 s) does not
            // reuse a URL a cache may still hold.
            let first = st.next_msn.max(unix_ms() / 1000);
            st.window = Window::new(self.cfg.window_segments, first);
            tokio::spawn(self.clone().feed());
        }
        Ok(())
    }

    /// Wait (at most `limit`) until `ready` says yes about the window.
    pub async fn wait_for(&self, limit: Duration, mut ready: impl FnMut(&Window) -> bool) -> bool {
        let mut rx = self.version.subscribe();
        let wait = async {
            loop {
                if ready(&self.lock().window) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }

    /// A receiver that changes whenever the window does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn report(&self) -> Report {
        let st = self.lock();
        let r = &self.requests;
        let requests = [
            ("playlist", &r.playlist),
            ("blocking_playlist", &r.blocking_playlist),
            ("init", &r.init),
            ("part", &r.part),
            ("segment", &r.segment),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
        .collect();
        Report {
            clients: st.clients.len(),
            segments: st.window.segments.len(),
            bytes_held: st.window.bytes_held(),
            requests,
            served: st.window.served(),
        }
    }

    /// Drop the clients quiet for too long; with none left, stop feeding.
    /// Returns whether the feeder should stop.
    fn reap(&self) -> bool {
        let now = Instant::now();
        let mut st = self.lock();
        let quiet = self.cfg.quiet;
        st.clients
            .retain(|_, (_, seen)| now.duration_since(*seen) < quiet);
        self.count_clients(st.clients.len());
        if st.clients.is_empty() {
            st.feeding = false;
            st.next_msn = st.window.next_msn();
            st.window = Window::new(self.cfg.window_segments, st.next_msn);
            true
        } else {
            false
        }
    }

    /// Status and metrics: client addresses holding a slot now.
    fn count_clients(&self, n: usize) {
        self.supervisor
            .hub()
            .out()
            .hls_clients
            .store(n, Ordering::Relaxed);
    }

    /// Media bytes served (metrics: `bytes_out{kind="hls"}`).
    pub fn served_bytes(&self, n: usize) {
        let out = self.supervisor.hub().out();
        out.hls_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    async fn feed(self: Arc<Self>) {
        let hub = self.supervisor.hub().clone();
        // Counted in the hub's receivers, but no HTTP-TS viewer.
        hub.out().hls_feeders.fetch_add(1, Ordering::Relaxed);
        let _feeding = Feeding(hub.clone());
        // From a fresh keyframe, not the cached GOP: frames that arrive in
        // real time give the program date-time its true wall clock.
        let mut sub = hub.subscribe_next_keyframe(Instant::now(), None);
        let mut input = TsInput::default();
        let mut seg = Segmenter::new(self.cfg.segmenter);
        let mut outs = Vec::new();
        let mut reap = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                bytes = sub.next() => {
                    let Some(bytes) = bytes else { break };
                    input.push(&bytes, unix_ms(), &mut seg, &mut outs);
                    if !outs.is_empty() {
                        self.apply(&mut outs, &hub);
                    }
                }
                _ = reap.tick() => {
                    if self.reap() {
                        self.version.send_modify(|v| *v += 1);
                        return;
                    }
                }
            }
        }
        // The hub is gone (the server shuts down).
        let mut st = self.lock();
        st.feeding = false;
        st.clients.clear();
        self.count_clients(0);
    }

    fn apply(&self, outs: &mut Vec<Output>, hub: &crate::hub::Hub) {
        let mut want_key = false;
        {
            let mut st = self.lock();
            for o in outs.drain(..) {
                match o {
                    Output::WantKeyframe => want_key = true,
                    o => st.window.apply(o),
                }
            }
        }
        if want_key {
            hub.request_keyframe(Instant::now());
        }
        self.version.send_modify(|v| *v += 1);
    }
}
