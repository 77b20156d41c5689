//! `host --publish URL`: the host's ONE encode sent to a WHIP endpoint
//! (RFC 9725) as a full-ICE client, the way past NAT: the same H.264 and
//! Opus packets the host's WHEP viewers get, so a relay hop adds no encode.
//!
//! - [`endpoint`]: URLs, `Location` resolution, `Link` headers;
//! - [`whip`]: the HTTP exchange (POST offer → `201` + answer, DELETE);
//! - [`tls`]: `https://` endpoints (system roots + `--publish-ca`);
//! - [`session`]: the str0m session, sans-IO (time passed in);
//! - [`retry`]: when to republish and what to tell the operator, sans-IO;
//! - [`engine`]: the task driving one target (socket, HTTP, clock).
//!
//! While publishing, capture runs whoever watches locally (the relay does
//! not tell the host who watches): the host's policy is not on-demand, and
//! the publisher holds no viewer slot.

mod endpoint;
mod engine;
mod retry;
mod session;
mod tls;
mod whip;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use endpoint::{parse_links, Endpoint, Link};
pub use retry::{Notice, Retry, RetryPolicy};
pub use session::SessionConfig;
pub use whip::{Answer, WhipClient, WhipError};

use crate::hub::Hub;

/// What `--publish` is given.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// WHIP endpoints (each gets its own session).
    pub urls: Vec<String>,
    /// `Authorization: Bearer` (never logged).
    pub token: Option<String>,
    /// A private CA for `https://` endpoints (PEM).
    pub ca: Option<PathBuf>,
    /// The producer's payload types (video, audio) in the hub.
    pub producer_pts: (u8, u8),
    /// The sessions' UDP sockets bind here (port 0: any; 0.0.0.0: every
    /// interface address is a candidate).
    pub bind: SocketAddr,
    pub retry: RetryPolicy,
    /// Deadline of each HTTP exchange.
    pub http_timeout: Duration,
}

impl PublishOptions {
    pub fn new(urls: Vec<String>, token: Option<String>, ca: Option<PathBuf>) -> Self {
        Self {
            urls,
            token,
            ca,
            producer_pts: (102, 111),
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            retry: RetryPolicy::default(),
            http_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishState {
    /// The first POST is on its way.
    Connecting,
    /// The relay answered; ICE/DTLS are coming up.
    Answered,
    /// Media flows to the relay.
    Live,
    /// The relay is out of reach; republishing with back-off.
    Retrying,
}

/// One target's state (the banner, logs and tests read it).
#[derive(Debug, Clone, Serialize)]
pub struct PublishStatus {
    pub url: String,
    pub state: PublishState,
    /// The relay's page for viewers (`Link: rel="alternate"; type="text/html"`).
    pub player_page: Option<String>,
    /// Sessions that connected (the first publish and every republish).
    pub publishes: u64,
    /// POSTs made.
    pub attempts: u64,
    pub last_error: Option<String>,
}

/// The publishing tasks, one per URL.
pub struct Publisher {
    targets: Vec<(watch::Receiver<PublishStatus>, JoinHandle<()>)>,
    stop: watch::Sender<bool>,
}

impl Publisher {
    /// Check the URLs and TLS set-up, and start publishing `hub`'s packets.
    pub fn start(opts: PublishOptions, hub: Hub) -> anyhow::Result<Self> {
        let mut endpoints = Vec::new();
        for u in &opts.urls {
            endpoints.push(Endpoint::parse(u).map_err(|e| anyhow::anyhow!("--publish {e}"))?);
        }
        let tls = if endpoints.iter().any(|e| e.https) || opts.ca.is_some() {
            Some(tls::connector(opts.ca.as_deref())?)
        } else {
            None
        };
        let client = WhipClient::new(opts.token.clone(), tls, opts.http_timeout);
        let (stop, stop_rx) = watch::channel(false);
        let session = SessionConfig {
            producer_pts: opts.producer_pts,
            ..SessionConfig::default()
        };
        let mut targets = Vec::new();
        for endpoint in endpoints {
            let (status, rx) = watch::channel(PublishStatus {
                url: endpoint.to_string(),
                state: PublishState::Connecting,
                player_page: None,
                publishes: 0,
                attempts: 0,
                last_error: None,
            });
            let target = engine::Target {
                endpoint,
                client: client.clone(),
                hub: hub.clone(),
                session: session.clone(),
                retry: opts.retry,
                bind: opts.bind,
                status,
            };
            let task = tokio::spawn(engine::run(target, stop_rx.clone()));
            targets.push((rx, task));
        }
        Ok(Self { targets, stop })
    }

    /// Every target's state now.
    pub fn status(&self) -> Vec<PublishStatus> {
        self.targets
            .iter()
            .map(|(rx, _)| rx.borrow().clone())
            .collect()
    }

    /// Wait (at most `within`) until every target's first POST was answered
    /// or failed: the banner then knows the relays' pages.
    pub async fn first_answers(&self, within: Duration) -> Vec<PublishStatus> {
        let wait = async {
            for (rx, _) in &self.targets {
                let mut rx = rx.clone();
                let _ = rx.wait_for(|s| s.state != PublishState::Connecting).await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
        self.status()
    }

    /// Close the sessions and DELETE their resources (each within ~2 s).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for (_, task) in self.targets {
            let _ = task.await;
        }
    }
}
