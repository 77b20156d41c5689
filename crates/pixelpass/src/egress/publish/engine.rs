//! The driver of one `--publish` target: a tokio task that reads the clock,
//! owns the UDP socket and the HTTP client, and moves data between them, the
//! hub and the sans-IO parts ([`Session`], [`Retry`]). It decides nothing:
//!
//! - when [`Retry`] says an attempt is due: bind a socket, make the offer,
//!   POST it ([`WhipClient`]), hand the answer to the session;
//! - while the session runs: datagrams, hub packets (from [`Event::Connected`]
//!   on) and timeouts into it, its datagrams out (`sendmmsg`);
//! - when it ends: DELETE the resource (so the relay does not keep a ghost
//!   publisher that would refuse the next POST with `409`), tell [`Retry`];
//! - on stop: close the session (DTLS close), DELETE, return.

use std::io;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use super::endpoint::Endpoint;
use super::retry::{Notice, Retry, RetryPolicy};
use super::session::{Event, Output, Session, SessionConfig};
use super::whip::WhipClient;
use super::{PublishState, PublishStatus};
use crate::hub::{Hub, RtpPkt, RtpSubscriber, Track};
use crate::net::udp::{self, SendBatch, Udp};

/// Hub packets written per batch before the session sends them.
const MEDIA_BATCH: usize = 32;
/// How long a DELETE may take (on stop, and before a republish).
const DELETE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Target {
    pub endpoint: Endpoint,
    pub client: WhipClient,
    pub hub: Hub,
    pub session: SessionConfig,
    pub retry: RetryPolicy,
    /// Where the session's UDP socket binds (port 0: any).
    pub bind: std::net::SocketAddr,
    pub status: watch::Sender<PublishStatus>,
}

enum Outcome {
    Stopped,
    Failed(String),
}

/// Publish until `stop` turns true; republish whenever the relay goes away.
pub async fn run(t: Target, mut stop: watch::Receiver<bool>) {
    let url = crate::token::mask(&t.endpoint.to_string());
    let mut retry = Retry::new(t.retry, Instant::now());
    let mut attempts = 0u64;
    loop {
        if let Some(at) = retry.next_attempt() {
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = stopped(&mut stop) => return,
            }
        }
        if *stop.borrow() {
            return;
        }
        attempts += 1;
        retry.on_attempt(Instant::now());
        t.status.send_modify(|s| s.attempts = attempts);
        match attempt(&t, &mut retry, &mut stop).await {
            Outcome::Stopped => return,
            Outcome::Failed(why) => {
                let notice = retry.on_failure(Instant::now(), &why);
                t.status.send_modify(|s| {
                    s.state = PublishState::Retrying;
                    s.last_error = Some(why.clone());
                });
                let what = if retry.publishes() == 0 {
                    "cannot publish"
                } else {
                    "publishing stopped"
                };
                match notice {
                    Some(Notice::Down { why, retry_in }) => tracing::warn!(
                        "{what}: {why}; retrying (first in {} ms, backing off to {} s) until the relay is back",
                        retry_in.as_millis(),
                        t.retry.backoff_max.as_secs()
                    ),
                    _ => tracing::debug!("publish attempt {attempts} to {url} failed: {why}"),
                }
            }
        }
    }
}

async fn attempt(t: &Target, retry: &mut Retry, stop: &mut watch::Receiver<bool>) -> Outcome {
    let url = crate::token::mask(&t.endpoint.to_string());
    let udp = match Udp::bind(t.bind) {
        Ok(u) => u,
        Err(e) => return Outcome::Failed(format!("{url}: {e:#}")),
    };
    let candidates = udp::candidate_addrs(udp.local_addr(), &[]);
    let made = Session::new(
        t.hub.clone(),
        t.session.clone(),
        &candidates,
        Instant::now(),
    );
    let (mut session, offer) = match made {
        Ok(x) => x,
        Err(e) => return Outcome::Failed(e),
    };
    let posted = Instant::now();
    let answer = tokio::select! {
        r = t.client.post(&t.endpoint, &offer) => r,
        _ = stopped(stop) => return Outcome::Stopped,
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let answer_ms = posted.elapsed().as_millis() as u64;
    tracing::debug!(answer_ms, "WHIP answer from {url}");
    if !answer.ice_servers.is_empty() {
        tracing::debug!(
            servers = answer.ice_servers.len(),
            "the relay offered ICE servers; not used (str0m gathers no server-reflexive or relay candidates)"
        );
    }
    t.status.send_modify(|s| {
        s.state = PublishState::Answered;
        s.player_page = answer.player_page.clone();
    });
    let resource = answer.resource.clone();
    if let Err(e) = session.accept_answer(&answer.sdp, Instant::now()) {
        delete(t, &resource).await;
        return Outcome::Failed(format!(
            "the relay at {url} sent an answer we cannot use: {e}"
        ));
    }
    let mut drive = Drive {
        udp,
        out: SendBatch::default(),
        feed: None,
        buf: vec![0; 2048],
    };
    let outcome = loop {
        if let Some(why) = drive.collect(t, &mut session, retry, posted).await {
            break Outcome::Failed(format!("{url}: {why}"));
        }
        let next = session.poll_timeout();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stopped(stop) => {
                session.close(Instant::now());
                let _ = drive.collect(t, &mut session, retry, posted).await;
                break Outcome::Stopped;
            }
            r = drive.udp.readable() => match r {
                Ok(()) => drive.receive(&mut session),
                Err(e) => break Outcome::Failed(format!("{url}: the publish UDP socket failed: {e}")),
            },
            batch = recv_media(&mut drive.feed) => session.handle_media(Instant::now(), &batch),
            _ = sleep => session.handle_timeout(Instant::now()),
        }
    };
    let (video, audio) = session.sent();
    let (connect, first_key) = session.timings();
    tracing::debug!(
        video,
        audio,
        plis = session.keyframe_requests(),
        connect_ms = connect.map(|d| d.as_millis() as u64),
        first_keyframe_ms = first_key.map(|d| d.as_millis() as u64),
        "publish session to {url} over"
    );
    delete(t, &resource).await;
    outcome
}

struct Drive {
    udp: Udp,
    out: SendBatch,
    feed: Option<RtpSubscriber>,
    buf: Vec<u8>,
}

impl Drive {
    /// Send the session's datagrams, act on its events; `Some(why)` once it ended.
    async fn collect(
        &mut self,
        t: &Target,
        session: &mut Session,
        retry: &mut Retry,
        posted: Instant,
    ) -> Option<String> {
        let mut ended = None;
        while let Some(o) = session.poll_output() {
            match o {
                Output::Transmit {
                    destination,
                    contents,
                    ..
                } => {
                    self.udp.queue(&mut self.out, contents, destination).await;
                }
                Output::Event(Event::Connected { sub }) => {
                    self.feed = Some(sub);
                    let url = crate::token::mask(&t.endpoint.to_string());
                    let ms = posted.elapsed().as_millis() as u64;
                    let page = t.status.borrow().player_page.clone();
                    match retry.on_connected(Instant::now()) {
                        Notice::Back { after, attempts } => tracing::info!(
                            connect_ms = ms,
                            "publishing to {url} again, after {:.1} s and {attempts} failed attempt(s)",
                            after.as_secs_f32()
                        ),
                        _ => tracing::info!(
                            connect_ms = ms,
                            "publishing to {url}{}",
                            page.map(|p| format!("; viewers watch at {}", crate::token::short_in_url(&p))).unwrap_or_default()
                        ),
                    }
                    let publishes = retry.publishes();
                    t.status.send_modify(|s| {
                        s.state = PublishState::Live;
                        s.publishes = publishes;
                        s.last_error = None;
                    });
                }
                Output::Event(Event::KeyframeRequested) => {
                    tracing::debug!("the relay asked for a keyframe");
                }
                Output::Event(Event::Ended(why)) => ended = Some(why),
            }
        }
        if !self.out.is_empty() {
            self.udp.send_batch(&mut self.out).await;
        }
        ended
    }

    fn receive(&mut self, session: &mut Session) {
        for _ in 0..64 {
            match self.udp.try_recv(&mut self.buf) {
                Ok((n, a)) => {
                    session.handle_datagram(Instant::now(), a.source, a.destination, &self.buf[..n])
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => tracing::debug!("publish UDP receive: {e}"),
            }
        }
    }
}

/// The next hub packets (up to [`MEDIA_BATCH`]); pending while there is no feed.
async fn recv_media(feed: &mut Option<RtpSubscriber>) -> Vec<(Track, Option<RtpPkt>)> {
    let Some(sub) = feed.as_mut() else {
        return std::future::pending().await;
    };
    let first = tokio::select! {
        r = sub.video.recv() => (Track::Video, r),
        r = sub.audio.recv() => (Track::Audio, r),
    };
    let mut batch = Vec::with_capacity(MEDIA_BATCH);
    let mut push = |track, r: Result<RtpPkt, broadcast::error::RecvError>| match r {
        Ok(p) => batch.push((track, Some(p))),
        Err(broadcast::error::RecvError::Lagged(_)) => batch.push((track, None)),
        Err(broadcast::error::RecvError::Closed) => {}
    };
    push(first.0, first.1);
    for _ in 0..MEDIA_BATCH {
        let (v, a) = (sub.video.try_recv(), sub.audio.try_recv());
        let mut any = false;
        for (track, r) in [(Track::Video, v), (Track::Audio, a)] {
            match r {
                Ok(p) => {
                    any = true;
                    push(track, Ok(p));
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    any = true;
                    push(track, Err(broadcast::error::RecvError::Lagged(n)));
                }
                Err(_) => {}
            }
        }
        if !any {
            break;
        }
    }
    if batch.is_empty() {
        // The hub is gone (shutdown): nothing more will come.
        return std::future::pending().await;
    }
    batch
}

/// DELETE the resource, best effort, bounded.
async fn delete(t: &Target, resource: &Endpoint) {
    let r = tokio::time::timeout(DELETE_TIMEOUT, t.client.delete(resource)).await;
    match r {
        Ok(Ok(status)) => tracing::debug!(status, "DELETE {resource}"),
        Ok(Err(e)) => tracing::debug!("DELETE {resource}: {e}"),
        Err(_) => tracing::debug!("DELETE {resource}: no answer in time"),
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
