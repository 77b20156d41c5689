//! The core driven by hand: in-process str0m client peers, datagrams moved
//! between them and the core in memory, a fake clock. No socket, no sleep.

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

use super::*;
use crate::egress::whep::peer::RtcFactory;
use crate::hub::{HubConfig, KeyframeSource};

const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;
const STREAM: &str = "s";
const TIMEOUT: Duration = Duration::from_secs(5);
const MS: Duration = Duration::from_millis(1);

fn server_addr() -> SocketAddr {
    "10.0.0.1:5000".parse().unwrap()
}

fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// The encoder: counts the keyframes it is asked for.
#[derive(Default)]
struct Encoder(AtomicUsize);

impl KeyframeSource for Encoder {
    fn request_keyframe(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A viewer: a str0m client `Rtc` (RTP mode, so it reports every packet).
struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    resource: Arc<str>,
    video: Mid,
    timeout: Instant,
    connected: bool,
    closed: bool,
    /// RTP packets received, in order (repairs included, as their original).
    rx: Vec<RtpPacket>,
    /// What it sends is lost (a browser gone away).
    silent: bool,
    /// When the core last got a datagram from it.
    last_heard: Option<Instant>,
}

/// What the core put out, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Datagram(SocketAddr),
    FeedOpened(FeedId),
    FeedClosed(FeedId),
    Removed(Arc<str>, String),
}

type DropRule = Box<dyn FnMut(SocketAddr, &[u8]) -> bool>;

/// The core, its hub and its viewers on a fake network with a fake clock.
struct Net {
    now: Instant,
    core: Core,
    hub: Hub,
    encoder: Arc<Encoder>,
    factory: RtcFactory,
    clients: Vec<Client>,
    feeds: Vec<(FeedId, RtpSubscriber)>,
    seen: Vec<Seen>,
    /// Loses a datagram from the core when it says so.
    drop_rule: Option<DropRule>,
    seq: u16,
    ts: u32,
}

impl Net {
    fn new() -> Self {
        init_crypto();
        let now = Instant::now();
        let hub = Hub::new(HubConfig::default());
        let encoder = Arc::new(Encoder::default());
        hub.begin_run(Some(encoder.clone()));
        let cfg = EngineConfig {
            timeout: TIMEOUT,
            producer_pts: (VIDEO_PT, AUDIO_PT),
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
        }
    }

    /// Keyframes the encoder was asked for.
    fn keyframes_asked(&self) -> usize {
        self.encoder.0.load(Ordering::SeqCst)
    }

    /// A viewer offers, the server answers, the core takes its peer.
    fn add_client(&mut self) -> usize {
        let n = self.clients.len();
        let addr: SocketAddr = format!("10.0.0.{}:6000", n + 2).parse().unwrap();
        let mut rtc = RtcConfig::new().set_rtp_mode(true).build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let video = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let (server, answer) = self
            .factory
            .answer(&offer.to_sdp_string(), self.now)
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
    fn connect(&mut self) -> usize {
        let c = self.add_client();
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

    fn feed(&self) -> FeedId {
        self.feeds.first().map_or(0, |(f, _)| *f)
    }

    /// Move datagrams and events until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(o) = self.core.poll_output() {
                moved = true;
                self.on_core_output(o);
            }
            for i in 0..self.clients.len() {
                moved |= self.drain_client(i);
            }
            if !moved {
                return;
            }
        }
        panic!("the core and its clients never go quiet");
    }

    fn on_core_output(&mut self, o: Output) {
        match o {
            Output::Transmit {
                destination,
                contents,
            } => {
                self.seen.push(Seen::Datagram(destination));
                if let Some(rule) = &mut self.drop_rule {
                    if rule(destination, &contents) {
                        return;
                    }
                }
                let Some(i) = self.clients.iter().position(|c| c.addr == destination) else {
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
    fn drain_client(&mut self, i: usize) -> bool {
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
    fn advance(&mut self, d: Duration) {
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
    fn publish_video(&mut self, key: bool, tag: u8) {
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

    /// What the hub sent the feeds goes into the core (as the driver does).
    fn deliver_media(&mut self) {
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
    fn tags(&self, c: usize) -> Vec<u8> {
        self.clients[c].rx.iter().map(|p| p.payload[1]).collect()
    }

    /// The client sends a PLI for the video it receives.
    fn send_pli(&mut self, c: usize) {
        let c = &mut self.clients[c];
        c.rtc
            .direct_api()
            .stream_rx_by_mid(c.video, None)
            .expect("the client receives video")
            .request_keyframe(KeyframeRequestKind::Pli);
        self.settle();
    }

    fn removed(&self, resource: &str) -> Option<&str> {
        self.seen.iter().find_map(|s| match s {
            Seen::Removed(r, why) if &**r == resource => Some(why.as_str()),
            _ => None,
        })
    }
}

#[test]
fn a_join_starts_on_a_fresh_keyframe_and_skips_what_comes_before_it() {
    let mut net = Net::new();
    // The stream has run a while: its last keyframe is older than the rate limit.
    net.publish_video(true, 1);
    net.publish_video(false, 2);
    net.now += Duration::from_secs(2);
    let c = net.connect();
    assert_eq!(
        net.keyframes_asked(),
        1,
        "the join asks the encoder for one"
    );
    net.publish_video(false, 3); // the encoder is not there yet
    net.deliver_media();
    net.advance(30 * MS);
    net.publish_video(true, 4);
    net.publish_video(false, 5);
    net.deliver_media();
    net.advance(30 * MS);
    assert_eq!(net.tags(c), vec![4, 5]);
    assert_eq!(
        net.clients[c].rx[0].payload[0] & 0x1f,
        5,
        "an IDR slice first"
    );
}

#[test]
fn a_join_within_the_rate_limit_starts_on_the_cached_gop() {
    let mut net = Net::new();
    net.publish_video(true, 1);
    net.publish_video(false, 2);
    net.now += 100 * MS;
    let c = net.connect();
    assert_eq!(net.keyframes_asked(), 0, "a keyframe just came: none asked");
    net.publish_video(false, 3);
    net.deliver_media();
    net.advance(30 * MS);
    assert_eq!(
        net.tags(c),
        vec![1, 2, 3],
        "the cached GOP, keyframe first, then live"
    );
    assert_eq!(net.clients[c].rx[0].payload[0] & 0x1f, 5);
}

#[test]
fn plis_close_together_become_one_rate_limited_keyframe_request() {
    let mut net = Net::new();
    let c = net.connect();
    assert_eq!(net.keyframes_asked(), 1, "the join's");
    net.publish_video(true, 1);
    net.deliver_media();
    net.advance(600 * MS); // past the rate limit
    assert_eq!(net.tags(c), vec![1]);
    let before = net.core.keyframe_requests();

    net.send_pli(c);
    net.advance(10 * MS);
    net.send_pli(c);
    net.advance(10 * MS);
    assert_eq!(
        net.core.keyframe_requests(),
        before + 2,
        "both PLIs reached the core"
    );
    assert_eq!(net.keyframes_asked(), 2, "one request for both");

    // A keyframe came: a PLI right after it is held back, not lost…
    net.publish_video(true, 2);
    net.deliver_media();
    net.advance(100 * MS);
    net.send_pli(c);
    net.advance(10 * MS);
    assert_eq!(net.core.keyframe_requests(), before + 3);
    assert_eq!(net.keyframes_asked(), 2, "held back by the rate limit");
    assert_eq!(net.hub.stats().keyframe_requests_deferred, 1);
    // …and goes out with the first packet after the limit.
    net.advance(400 * MS);
    net.publish_video(false, 3);
    assert_eq!(net.keyframes_asked(), 3);
}

#[test]
fn a_lost_packet_is_sent_again_from_history_on_nack() {
    let mut net = Net::new();
    let c = net.connect();
    net.publish_video(true, 1);
    net.deliver_media();
    net.advance(30 * MS);
    let first = net.clients[c].rx.first().expect("the keyframe arrives");
    let (pt, seq) = (first.header.payload_type, first.header.sequence_number);
    // The next video datagram is lost on the way.
    let lost = Arc::new(AtomicUsize::new(0));
    let counter = lost.clone();
    net.drop_rule = Some(Box::new(move |_, d: &[u8]| {
        let is_video = d.len() > 12 && d[0] >> 6 == 2 && d[1] & 0x7f == *pt;
        let lose = is_video && counter.load(Ordering::SeqCst) == 0;
        if lose {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        lose
    }));
    net.publish_video(false, 2);
    net.deliver_media();
    net.advance(30 * MS);
    net.publish_video(false, 3);
    net.deliver_media();
    assert_eq!(lost.load(Ordering::SeqCst), 1, "frame 2 was lost");
    // The client NACKs the gap; the core answers from the peer's history.
    net.advance(100 * MS);
    assert_eq!(net.tags(c), vec![1, 3, 2], "frame 2 comes again, after 3");
    let again = &net.clients[c].rx[2];
    assert_eq!(again.header.sequence_number, seq.wrapping_add(1));
    assert_eq!(lost.load(Ordering::SeqCst), 1);
}

#[test]
fn a_silent_peer_is_removed_at_the_consent_timeout() {
    let mut net = Net::new();
    let c = net.connect();
    net.publish_video(true, 1);
    net.deliver_media();
    net.advance(100 * MS);
    net.clients[c].silent = true;
    net.advance(MS);
    let last = net.clients[c].last_heard.expect("the client spoke");
    let deadline = last + TIMEOUT;
    net.advance(deadline - net.now - MS);
    let resource = net.clients[c].resource.clone();
    assert!(net.core.has_peer(&resource), "not before the timeout");
    assert_eq!(net.removed(&resource), None);
    net.advance(MS);
    assert_eq!(net.now, deadline);
    assert!(!net.core.has_peer(&resource), "gone at the timeout");
    let why = net.removed(&resource).expect("reported").to_owned();
    assert!(why.contains("consent timeout"), "{why}");
    assert_eq!(net.core.peer_count(), 0);
    assert!(net.seen.iter().any(|s| matches!(s, Seen::FeedClosed(_))));
    assert!(net.core.poll_timeout().is_none(), "no timer left for it");
}

/// The goodbye datagrams of every client come before the feed is released.
fn assert_peers_close_before_the_feed(net: &mut Net, why: &str) {
    let closed_at = net
        .seen
        .iter()
        .position(|s| matches!(s, Seen::FeedClosed(_)))
        .expect("the feed is released");
    for c in &net.clients {
        let last_goodbye = net
            .seen
            .iter()
            .rposition(|s| *s == Seen::Datagram(c.addr))
            .expect("a goodbye to each client");
        assert!(
            last_goodbye < closed_at,
            "{}'s goodbye before the feed closes: {:?}",
            c.addr,
            net.seen
        );
        assert!(c.closed || !c.rtc.is_alive(), "{} knows at once", c.addr);
        assert_eq!(net.removed(&c.resource), Some(why));
    }
    assert_eq!(net.core.peer_count(), 0);
    // The producer goes on; nothing more reaches the peers.
    net.seen.clear();
    net.publish_video(true, 9);
    net.deliver_media();
    assert!(net.seen.is_empty(), "{:?}", net.seen);
}

#[test]
fn a_stream_teardown_closes_its_peers_before_their_feed() {
    let mut net = Net::new();
    let (a, b) = (net.connect(), net.connect());
    net.publish_video(true, 1);
    net.deliver_media();
    net.advance(30 * MS);
    assert_eq!((net.tags(a), net.tags(b)), (vec![1], vec![1]));
    net.seen.clear();
    let now = net.now;
    net.core.close_stream(now, STREAM);
    net.settle();
    assert_peers_close_before_the_feed(&mut net, "the stream ended");
}

#[test]
fn shutdown_closes_every_peer_before_their_feed() {
    let mut net = Net::new();
    net.connect();
    net.connect();
    net.seen.clear();
    let now = net.now;
    net.core.close_all(now);
    net.settle();
    assert_peers_close_before_the_feed(&mut net, "the server is shutting down");
}

#[test]
fn a_frame_to_many_peers_goes_out_a_send_batch_at_a_time() {
    let mut net = Net::new();
    let clients: Vec<usize> = (0..4).map(|_| net.connect()).collect();
    net.advance(30 * MS);
    net.publish_video(true, 0);
    for tag in 1..MEDIA_BATCH as u8 {
        net.publish_video(false, tag);
    }
    let (feed, sub) = &mut net.feeds[0];
    let batch: Vec<MediaMsg> = std::iter::from_fn(|| sub.video.try_recv().ok())
        .map(|pkt| MediaMsg {
            feed: *feed,
            track: Track::Video,
            pkt: Some(pkt),
        })
        .collect();
    assert_eq!(batch.len(), MEDIA_BATCH);
    let now = net.now;
    net.core.handle_media(now, &batch);
    let mut rounds = Vec::new();
    loop {
        let mut n = 0;
        while let Some(o) = net.core.poll_output() {
            n += usize::from(matches!(o, Output::Transmit { .. }));
            net.on_core_output(o);
        }
        rounds.push(n);
        let due = net.core.poll_timeout().is_some_and(|t| t <= now);
        if !due || rounds.len() > 100 {
            break;
        }
        net.core.handle_timeout(now);
    }
    // str0m sends what was written on the peer's next timeout, where the
    // core pauses at each send batch (a peer's frame is never split).
    assert_eq!(rounds[0], 0, "{rounds:?}");
    let sent = &rounds[1..];
    assert!(sent.len() > 1, "it paused: {rounds:?}");
    assert!(
        sent[..sent.len() - 1]
            .iter()
            .all(|n| (OUT_BATCH..OUT_BATCH + MEDIA_BATCH).contains(n)),
        "{rounds:?}"
    );
    assert!(sent.iter().sum::<usize>() >= 4 * MEDIA_BATCH, "{rounds:?}");
    net.settle();
    net.advance(30 * MS);
    for c in clients {
        assert_eq!(net.tags(c), (0..MEDIA_BATCH as u8).collect::<Vec<_>>());
    }
}
