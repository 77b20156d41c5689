//! The tests' network: the core, its hub and in-process str0m client peers,
//! datagrams moved between them in memory, a fake clock. No socket, no sleep.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpPacket;
use str0m::{Candidate, Event as RtcEvent, Input, Output as RtcOutput, Rtc, RtcConfig};
use tokio::sync::broadcast::error::TryRecvError;

use crate::egress::whep::peer::RtcFactory;
use crate::hub::{HubConfig, KeyframeSource};

pub(super) use super::super::*;

pub(super) const VIDEO_PT: u8 = 96;
pub(super) const AUDIO_PT: u8 = 111;
pub(super) const STREAM: &str = "s";
pub(super) const TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const MS: Duration = Duration::from_millis(1);

pub(super) fn server_addr() -> SocketAddr {
    "10.0.0.1:5000".parse().unwrap()
}

pub(super) fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// The encoder: counts the keyframes it is asked for.
#[derive(Default)]
pub(super) struct Encoder(pub(super) AtomicUsize);

impl KeyframeSource for Encoder {
    fn request_keyframe(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A viewer: a str0m client `Rtc` (RTP mode, so it reports every packet).
pub(super) struct Client {
    pub(super) rtc: Rtc,
    pub(super) addr: SocketAddr,
    pub(super) resource: Arc<str>,
    pub(super) video: Mid,
    pub(super) timeout: Instant,
    pub(super) connected: bool,
    pub(super) closed: bool,
    /// RTP packets received, in order (repairs included, as their original).
    pub(super) rx: Vec<RtpPacket>,
    /// What it sends is lost (a browser gone away).
    pub(super) silent: bool,
    /// When the core last got a datagram from it.
    pub(super) last_heard: Option<Instant>,
}

/// What the core put out, in order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seen {
    Datagram(SocketAddr),
    FeedOpened(FeedId),
    FeedClosed(FeedId),
    Removed(Arc<str>, String),
}

pub(super) type DropRule = Box<dyn FnMut(SocketAddr, &[u8]) -> bool>;

/// The core, its hub and its viewers on a fake network with a fake clock.
pub(super) struct Net {
    pub(super) now: Instant,
    pub(super) core: Core,
    pub(super) hub: Hub,
    pub(super) encoder: Arc<Encoder>,
    pub(super) factory: RtcFactory,
    pub(super) clients: Vec<Client>,
    pub(super) feeds: Vec<(FeedId, RtpSubscriber)>,
    pub(super) seen: Vec<Seen>,
    /// Loses a datagram from the core when it says so.
    pub(super) drop_rule: Option<DropRule>,
    pub(super) seq: u16,
    pub(super) ts: u32,
    /// Every datagram the core put out: (fake time, destination, length, 2nd byte).
    pub(super) sent: Vec<(Instant, SocketAddr, usize, u8)>,
}

impl Net {
    pub(super) fn new() -> Self {
        Self::with_pacing(true)
    }

    pub(super) fn with_pacing(pacing: bool) -> Self {
        Self::build(pacing, 1)
    }

    /// A stream of `layers` layers; each layer's encoder counts its keyframe
    /// requests (`layer_encoders`, layer 1 first).
    pub(super) fn with_layers(layers: usize) -> (Self, Vec<Arc<Encoder>>) {
        let net = Self::build(true, layers);
        let encoders = (1..layers)
            .filter_map(|i| {
                let e = Arc::new(Encoder::default());
                net.hub.layer(i)?.set_keyframe_source(Some(e.clone()));
                Some(e)
            })
            .collect();
        (net, encoders)
    }

    fn build(pacing: bool, layers: usize) -> Self {
        init_crypto();
        let now = Instant::now();
        let hub = Hub::with_layers(HubConfig::default(), layers);
        let encoder = Arc::new(Encoder::default());
        hub.begin_run(Some(encoder.clone()));
        let cfg = EngineConfig {
            timeout: TIMEOUT,
            producer_pts: (VIDEO_PT, AUDIO_PT),
            pacing,
        };
        Self {
            now,
            core: Core::new(Arc::new(Index::default()), cfg),
            hub,
            encoder,
            factory: RtcFactory::new(vec![server_addr()]).unwrap(),
            clients: Vec::new(),
            feeds: Vec::new(),
            seen: Vec::new(),
            drop_rule: None,
            seq: 1000,
            ts: 90_000,
            sent: Vec::new(),
        }
    }

    /// Keyframes the encoder was asked for.
    pub(super) fn keyframes_asked(&self) -> usize {
        self.encoder.0.load(Ordering::SeqCst)
    }

    /// A viewer offers, the server answers, the core takes its peer.
    pub(super) fn add_client(&mut self) -> usize {
        let n = self.clients.len();
        let addr: SocketAddr = format!("10.0.0.{}:6000", n + 2).parse().unwrap();
        self.add_client_at(addr)
    }

    /// A client on `addr` (which an earlier, vanished client may have had).
    pub(super) fn add_client_at(&mut self, addr: SocketAddr) -> usize {
        let n = self.clients.len();
        let mut rtc = RtcConfig::new().set_rtp_mode(true).build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let (server, answer) = self
            .factory
            .answer(
                &offer.to_sdp_string(),
                self.now,
                crate::egress::whep::H264_PROFILE_LEVEL_ID,
                self.hub.layer_count(),
            )
            .unwrap();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        let resource: Arc<str> = format!("r{n}").into();
        let new = NewPeer {
            resource: resource.clone(),
            stream: STREAM.into(),
            hub: self.hub.clone(),
            rtc: server,
            producer_pts: None,
            created: self.now,
        };
        self.core.add_peer(self.now, new);
        self.clients.push(Client {
            rtc,
            addr,
            resource,
            video,
            timeout: self.now,
            connected: false,
            closed: false,
            rx: Vec::new(),
            silent: false,
            last_heard: None,
        });
        self.settle();
        n
    }

    /// A viewer that is connected and joined its stream's feed.
    pub(super) fn connect(&mut self) -> usize {
        let c = self.add_client();
        self.wait_connected(c)
    }

    /// [`connect`](Self::connect) from `addr`.
    pub(super) fn connect_at(&mut self, addr: SocketAddr) -> usize {
        let c = self.add_client_at(addr);
        self.wait_connected(c)
    }

    fn wait_connected(&mut self, c: usize) -> usize {
        let start = self.now;
        while !self.clients[c].connected || !self.seen.contains(&Seen::FeedOpened(self.feed())) {
            assert!(
                self.now < start + Duration::from_secs(2),
                "the client connects"
            );
            self.advance(10 * MS);
        }
        c
    }

    pub(super) fn feed(&self) -> FeedId {
        self.feeds.first().map_or(0, |(f, _)| *f)
    }

    /// Move datagrams and events until nothing moves.
    pub(super) fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(o) = self.core.poll_output() {
                moved = true;
                self.on_core_output(o);
            }
            self.core.handle_sent(self.now);
            for i in 0..self.clients.len() {
                moved |= self.drain_client(i);
            }
            if !moved {
                return;
            }
        }
        panic!("the core and its clients never go quiet");
    }

    pub(super) fn on_core_output(&mut self, o: Output) {
        match o {
            Output::Transmit {
                destination,
                contents,
            } => {
                self.seen.push(Seen::Datagram(destination));
                let b1 = contents.get(1).copied().unwrap_or(0);
                self.sent.push((self.now, destination, contents.len(), b1));
                if let Some(rule) = &mut self.drop_rule {
                    if rule(destination, &contents) {
                        return;
                    }
                }
                // The newest client at an address owns its socket now.
                let Some(i) = self.clients.iter().rposition(|c| c.addr == destination) else {
                    return;
                };
                let c = &mut self.clients[i];
                if !c.rtc.is_alive() {
                    return;
                }
                let r = Receive::new(Protocol::Udp, server_addr(), destination, &contents).unwrap();
                c.rtc.handle_input(Input::Receive(self.now, r)).unwrap();
                // str0m wants its output drained after every input.
                self.drain_client(i);
            }
            Output::Event(Event::FeedOpened { feed, sub }) => {
                self.seen.push(Seen::FeedOpened(feed));
                self.feeds.push((feed, sub));
            }
            Output::Event(Event::FeedClosed { feed }) => {
                self.seen.push(Seen::FeedClosed(feed));
                self.feeds.retain(|(f, _)| *f != feed);
            }
            Output::Event(Event::PeerRemoved { resource, why }) => {
                self.seen.push(Seen::Removed(resource, why));
            }
        }
    }

    /// Drain client `i`: its datagrams to the core. Whether anything came out.
    pub(super) fn drain_client(&mut self, i: usize) -> bool {
        let c = &mut self.clients[i];
        let mut moved = false;
        while c.rtc.is_alive() {
            match c.rtc.poll_output().unwrap() {
                RtcOutput::Transmit(t) => {
                    moved = true;
                    if !c.silent {
                        c.last_heard = Some(self.now);
                        self.core
                            .handle_datagram(self.now, c.addr, t.destination, &t.contents);
                    }
                }
                RtcOutput::Event(e) => {
                    moved = true;
                    match e {
                        RtcEvent::Connected => c.connected = true,
                        RtcEvent::Closed => c.closed = true,
                        RtcEvent::RtpPacket(p) => c.rx.push(p),
                        _ => {}
                    }
                }
                RtcOutput::Timeout(t) => {
                    c.timeout = t;
                    break;
                }
            }
        }
        moved
    }

    /// Let `d` pass, waking the core and the clients when they asked to.
    pub(super) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let next = self
                .clients
                .iter()
                .filter(|c| c.rtc.is_alive())
                .map(|c| c.timeout)
                .chain(self.core.poll_timeout())
                .min()
                .unwrap_or(end);
            self.now = next.max(self.now + MS).min(end);
            self.core.handle_timeout(self.now);
            for c in &mut self.clients {
                if c.rtc.is_alive() {
                    c.rtc.handle_input(Input::Timeout(self.now)).unwrap();
                }
            }
            self.settle();
        }
    }

    /// The producer sends one video frame in one packet; `tag` marks it.
    pub(super) fn publish_video(&mut self, key: bool, tag: u8) {
        let nal = if key { 0x65 } else { 0x41 }; // IDR slice / non-IDR slice
        let mut pkt = vec![0x80, 0x80 | VIDEO_PT];
        pkt.extend(self.seq.to_be_bytes());
        pkt.extend(self.ts.to_be_bytes());
        pkt.extend(0x1234_5678u32.to_be_bytes());
        pkt.extend([nal, tag, 0xaa, 0xbb]);
        self.hub.publish_rtp(Track::Video, &pkt, self.now).unwrap();
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(3000);
    }

    /// Like [`publish_video`](Self::publish_video), on another layer (its
    /// own sequence numbers and timestamp base, as another encoder's).
    pub(super) fn publish_video_on(&mut self, layer: usize, key: bool, tag: u8) {
        let nal = if key { 0x65 } else { 0x41 };
        let seq = self.seq.wrapping_add(20_000);
        let ts = self.ts.wrapping_mul(7);
        let mut pkt = vec![0x80, 0x80 | VIDEO_PT];
        pkt.extend(seq.to_be_bytes());
        pkt.extend(ts.to_be_bytes());
        pkt.extend(0x1111_2222u32.to_be_bytes());
        pkt.extend([nal, tag, 0xaa, 0xbb]);
        let hub = self.hub.layer(layer).expect("the stream has this layer");
        hub.publish_rtp(Track::Video, &pkt, self.now).unwrap();
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(3000);
    }

    /// The producer sends one video frame of `packets` packets of about
    /// `size` bytes (IDR slices when `key`), marker on the last.
    pub(super) fn publish_frame(&mut self, key: bool, packets: usize, size: usize) {
        let nal = if key { 0x65 } else { 0x41 };
        for i in 0..packets {
            let marker = if i + 1 == packets { 0x80 } else { 0 };
            let mut pkt = vec![0x80, marker | VIDEO_PT];
            pkt.extend(self.seq.to_be_bytes());
            pkt.extend(self.ts.to_be_bytes());
            pkt.extend(0x1234_5678u32.to_be_bytes());
            pkt.extend([nal, i as u8]);
            pkt.resize(12 + size, 0xaa);
            self.hub.publish_rtp(Track::Video, &pkt, self.now).unwrap();
            self.seq = self.seq.wrapping_add(1);
        }
        self.ts = self.ts.wrapping_add(3000);
    }

    /// The producer sends one 20 ms Opus packet.
    pub(super) fn publish_audio(&mut self) {
        let mut pkt = vec![0x80, 0x80 | AUDIO_PT];
        pkt.extend(self.seq.to_be_bytes());
        pkt.extend(self.ts.to_be_bytes());
        pkt.extend(0x8765_4321u32.to_be_bytes());
        pkt.extend([0xfc; 80]);
        self.hub.publish_rtp(Track::Audio, &pkt, self.now).unwrap();
    }

    /// What the hub sent the feeds goes into the core (as the driver does).
    pub(super) fn deliver_media(&mut self) {
        let mut batch = Vec::new();
        for (feed, sub) in &mut self.feeds {
            for (track, rx) in [
                (Track::Video, &mut sub.video),
                (Track::Audio, &mut sub.audio),
            ] {
                loop {
                    let pkt = match rx.try_recv() {
                        Ok(p) => Some(p),
                        Err(TryRecvError::Lagged(_)) => None,
                        Err(_) => break,
                    };
                    let feed = *feed;
                    batch.push(MediaMsg { feed, track, pkt });
                }
            }
        }
        for chunk in batch.chunks(MEDIA_BATCH) {
            self.core.handle_media(self.now, chunk);
        }
        self.settle();
    }

    /// Frame tags the client received, in order.
    pub(super) fn tags(&self, c: usize) -> Vec<u8> {
        self.clients[c].rx.iter().map(|p| p.payload[1]).collect()
    }

    /// The client sends a PLI for the video it receives.
    pub(super) fn send_pli(&mut self, c: usize) {
        let c = &mut self.clients[c];
        c.rtc
            .direct_api()
            .stream_rx_by_mid(c.video, None)
            .expect("the client receives video")
            .request_keyframe(KeyframeRequestKind::Pli);
        self.settle();
    }

    pub(super) fn removed(&self, resource: &str) -> Option<&str> {
        self.seen.iter().find_map(|s| match s {
            Seen::Removed(r, why) if &**r == resource => Some(why.as_str()),
            _ => None,
        })
    }
}
