//! The sans-IO core of WHIP ingest: every publisher's `Rtc`, its timers and
//! its media, with datagrams and time passed in and datagrams and events
//! out (the same shape as the WHEP core; [`super::engine`] drives it).
//!
//! - a datagram goes to the publisher whose `Rtc` accepts it;
//! - an RTP packet from a publisher is rewritten to the hub's payload types
//!   and published into its stream's hub through its [`Slot`];
//! - a keyframe request (a viewer joined or sent PLI, rate-limited by the
//!   hub) becomes a PLI to the stream's publisher;
//! - a publisher is dropped on DELETE, when it never connects or falls
//!   silent for the timeout (consent lost), when its DTLS closes, or when
//!   str0m errors or panics on it; its slot hears why.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, Mid, Pt};
use str0m::{Event as RtcEvent, IceConnectionState, Input, Rtc};

use super::answer::Negotiated;
use super::slot::{Slot, HUB_AUDIO_PT, HUB_VIDEO_PT};
use crate::hub::Track;
use crate::media::rtp::h264_no_picture;
use crate::net::rtc::{self, Polled};
use crate::supervisor::ProducerError;

type Id = u64;
const MAX_DRAIN: usize = 10_000;

pub struct NewPublisher {
    pub resource: Arc<str>,
    pub rtc: Rtc,
    pub neg: Negotiated,
    pub slot: Arc<Slot>,
}

pub enum Output {
    Transmit {
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    /// A publisher is gone (its slot was told); the tests read it.
    #[cfg_attr(not(test), allow(dead_code))]
    Gone { resource: Arc<str>, why: String },
}

struct Publisher {
    rtc: Rtc,
    resource: Arc<str>,
    slot: Arc<Slot>,
    video: (Mid, Pt),
    audio: Option<(Mid, Pt)>,
    created: Instant,
    last_rx: Instant,
    connected: bool,
    addrs: Vec<SocketAddr>,
    wake: Instant,
    filed: Option<Instant>,
    /// The packet being rewritten (kept for its allocation).
    buf: Vec<u8>,
}

impl Publisher {
    fn deadline(&self, timeout: Duration) -> Instant {
        self.last_rx + timeout
    }
}

pub struct Core {
    timeout: Duration,
    pubs: HashMap<Id, Publisher>,
    by_resource: HashMap<Arc<str>, Id>,
    by_addr: HashMap<SocketAddr, Id>,
    timers: BTreeSet<(Instant, Id)>,
    next_id: Id,
    out: VecDeque<Output>,
}

/// What a drain found that the core must act on.
enum Action {
    Connected(Option<SocketAddr>),
    Gone(ProducerError),
}

impl Core {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            pubs: HashMap::new(),
            by_resource: HashMap::new(),
            by_addr: HashMap::new(),
            timers: BTreeSet::new(),
            next_id: 1,
            out: VecDeque::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    #[cfg(test)]
    pub fn publishers(&self) -> usize {
        self.pubs.len()
    }

    pub fn add(&mut self, now: Instant, new: NewPublisher) {
        let id = self.next_id;
        self.next_id += 1;
        self.by_resource.insert(new.resource.clone(), id);
        self.pubs.insert(
            id,
            Publisher {
                rtc: new.rtc,
                resource: new.resource,
                slot: new.slot,
                video: (new.neg.video_mid, new.neg.video_pt),
                audio: new.neg.audio,
                created: now,
                last_rx: now,
                connected: false,
                addrs: Vec::new(),
                wake: now,
                filed: None,
                buf: Vec::with_capacity(1500),
            },
        );
        self.input(id, None, now);
    }

    /// DELETE of the publisher's resource.
    pub fn remove(&mut self, now: Instant, resource: &str) {
        if let Some(&id) = self.by_resource.get(resource) {
            let why = ProducerError::ended("the publisher stopped (DELETE of its WHIP resource)");
            self.drop_publisher(id, why, true, now);
        }
    }

    /// The stream or the server ends: close its publisher (goodbye queued).
    pub fn close_stream(&mut self, now: Instant, stream: &str) {
        let ids: Vec<Id> = self
            .pubs
            .iter()
            .filter(|(_, p)| p.slot.id == stream)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let why = ProducerError::ended("the stream was stopped");
            self.drop_publisher(id, why, true, now);
        }
    }

    pub fn close_all(&mut self, now: Instant) {
        let ids: Vec<Id> = self.pubs.keys().copied().collect();
        for id in ids {
            let why = ProducerError::ended("the server is shutting down");
            self.drop_publisher(id, why, true, now);
        }
    }

    /// A viewer needs a keyframe: PLI to the stream's publisher.
    pub fn request_keyframe(&mut self, now: Instant, stream: &str) {
        let Some((&id, p)) = self.pubs.iter_mut().find(|(_, p)| p.slot.id == stream) else {
            return;
        };
        let mid = p.video.0;
        let asked = catch_unwind(AssertUnwindSafe(|| {
            let mut api = p.rtc.direct_api();
            match api.stream_rx_by_mid(mid, None) {
                Some(rx) => {
                    rx.request_keyframe(KeyframeRequestKind::Pli);
                    true
                }
                None => false,
            }
        }));
        if matches!(asked, Ok(true)) {
            self.input(id, None, now);
        }
    }

    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        let Some(input) = rtc::receive(now, source, destination, contents) else {
            return;
        };
        let id = match self.by_addr.get(&source) {
            Some(&id) if self.pubs.get(&id).is_some_and(|p| p.rtc.accepts(&input)) => id,
            _ => {
                let Some(id) = self
                    .pubs
                    .iter()
                    .find(|(_, p)| p.rtc.accepts(&input))
                    .map(|(id, _)| *id)
                else {
                    return;
                };
                self.by_addr.insert(source, id);
                if let Some(p) = self.pubs.get_mut(&id) {
                    p.addrs.push(source);
                }
                id
            }
        };
        self.input(id, Some(input), now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<(Instant, Id)> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .copied()
            .collect();
        for (t, id) in due {
            self.timers.remove(&(t, id));
            let Some(p) = self.pubs.get_mut(&id) else {
                continue;
            };
            p.filed = None;
            if p.deadline(self.timeout) <= now {
                let secs = self.timeout.as_secs();
                let why = if p.connected {
                    ProducerError::crashed(format!(
                        "the publisher went silent for {secs} s (ICE consent lost: its network or its process is gone)"
                    ))
                } else {
                    ProducerError::start_failed(format!(
                        "the publisher did not connect within {secs} s of its answer (UDP to this relay blocked?)"
                    ))
                };
                self.drop_publisher(id, why, false, now);
                continue;
            }
            self.input(id, None, now);
        }
    }

    fn input(&mut self, id: Id, input: Option<Input<'_>>, now: Instant) {
        let Some(p) = self.pubs.get_mut(&id) else {
            return;
        };
        if input.is_some() {
            p.last_rx = now;
        }
        let input = input.unwrap_or(Input::Timeout(now));
        let actions = match rtc::feed(&mut p.rtc, input) {
            Ok(()) => drain(&mut self.out, p, now, self.timeout),
            Err(why) => vec![Action::Gone(ProducerError::crashed(format!(
                "the publisher: {why}"
            )))],
        };
        for a in actions {
            match a {
                Action::Connected(addr) => {
                    if let Some(p) = self.pubs.get(&id) {
                        tracing::info!(
                            stream = %p.slot.id,
                            publisher = ?addr,
                            connect_ms = now.saturating_duration_since(p.created).as_millis() as u64,
                            "WHIP publisher connected"
                        );
                        p.slot.connected(&p.resource, addr, now);
                    }
                }
                Action::Gone(why) => {
                    self.drop_publisher(id, why, false, now);
                    return;
                }
            }
        }
        let Some(p) = self.pubs.get_mut(&id) else {
            return;
        };
        if !p.rtc.is_alive() {
            let why = ProducerError::ended("the publisher closed the connection");
            self.drop_publisher(id, why, false, now);
            return;
        }
        if let Some(f) = p.filed.take() {
            self.timers.remove(&(f, id));
        }
        self.timers.insert((p.wake, id));
        p.filed = Some(p.wake);
    }

    fn drop_publisher(&mut self, id: Id, why: ProducerError, close: bool, now: Instant) {
        let Some(mut p) = self.pubs.remove(&id) else {
            return;
        };
        if let Some(f) = p.filed.take() {
            self.timers.remove(&(f, id));
        }
        self.by_resource.remove(&p.resource);
        for a in &p.addrs {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        if close && rtc::close(&mut p.rtc) {
            let _ = drain(&mut self.out, &mut p, now, self.timeout);
        }
        tracing::info!(stream = %p.slot.id, "WHIP publisher gone: {why}");
        p.slot.gone(&p.resource, why.clone());
        self.out.push_back(Output::Gone {
            resource: p.resource.clone(),
            why: why.message,
        });
    }
}

fn drain(
    out: &mut VecDeque<Output>,
    p: &mut Publisher,
    now: Instant,
    timeout: Duration,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for _ in 0..MAX_DRAIN {
        match rtc::poll(&mut p.rtc) {
            Polled::Transmit(t) => out.push_back(Output::Transmit {
                destination: t.destination,
                contents: t.contents.into(),
            }),
            Polled::Event(ev) => match ev {
                RtcEvent::Connected => {
                    p.connected = true;
                    actions.push(Action::Connected(p.addrs.last().copied()));
                }
                RtcEvent::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                    actions.push(Action::Gone(ProducerError::crashed(
                        "the publisher's ICE connection was lost",
                    )));
                }
                RtcEvent::RtpPacket(pkt) => forward(p, &pkt, now),
                _ => {}
            },
            Polled::Timeout(t) => {
                p.wake = t.min(p.deadline(timeout)).max(now);
                return actions;
            }
            Polled::Failed(why) => {
                actions.push(Action::Gone(ProducerError::crashed(format!(
                    "the publisher: {why}"
                ))));
                return actions;
            }
        }
    }
    p.wake = now;
    actions
}

/// One received RTP packet into the hub: a plain 12-byte header with the
/// hub's payload type (extensions are the publisher's business, not the
/// viewers'), the publisher's sequence number, timestamp and SSRC.
fn forward(p: &mut Publisher, pkt: &str0m::rtp::RtpPacket, now: Instant) {
    let pt = pkt.header.payload_type;
    let (track, hub_pt) = if pt == p.video.1 {
        (Track::Video, HUB_VIDEO_PT)
    } else if p.audio.is_some_and(|(_, a)| a == pt) {
        (Track::Audio, HUB_AUDIO_PT)
    } else {
        return; // RTX the str0m side did not repair, or a codec we do not carry
    };
    let seq = *pkt.seq_no as u16;
    let ts = pkt.header.timestamp;
    let b = &mut p.buf;
    b.clear();
    b.push(0x80);
    // Parameter sets with the marker set (some publishers, the host's own
    // payloader among them, do so) would end the access unit before its picture.
    let marker = pkt.header.marker && !(track == Track::Video && h264_no_picture(&pkt.payload));
    b.push(hub_pt | if marker { 0x80 } else { 0 });
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&(*pkt.header.ssrc).to_be_bytes());
    b.extend_from_slice(&pkt.payload);
    p.slot.media(track, b, now);
}

#[cfg(test)]
mod tests;
