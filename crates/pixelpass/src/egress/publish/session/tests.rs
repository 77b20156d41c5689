//! The session driven by hand against an in-process relay: a str0m ice-lite
//! answering peer (RTP mode, so it reports every packet), datagrams moved in
//! memory, a fake clock. No socket, no sleep.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use str0m::net::{Protocol, Receive};

use str0m::change::SdpOffer;
use str0m::media::KeyframeRequestKind;
use str0m::rtp::RtpPacket;
use str0m::{Event as RtcEvent, Output as RtcOutput};
use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::hub::{HubConfig, KeyframeSource};

const VIDEO_PT: u8 = 102;
const AUDIO_PT: u8 = 111;
const MS: Duration = Duration::from_millis(1);

fn host_addr() -> SocketAddr {
    "10.0.0.1:5000".parse().unwrap()
}

fn relay_addr() -> SocketAddr {
    "192.0.2.7:6000".parse().unwrap()
}

fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// The host's encoder: counts the keyframes it is asked for.
#[derive(Default)]
struct Encoder(AtomicUsize);

impl KeyframeSource for Encoder {
    fn request_keyframe(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The session, its hub and an ice-lite relay on a fake network and clock.
struct Net {
    now: Instant,
    session: Session,
    hub: Hub,
    encoder: Arc<Encoder>,
    relay: Rtc,
    relay_timeout: Instant,
    relay_connected: bool,
    relay_closed: bool,
    /// The relay's datagrams are lost (it went away).
    relay_gone: bool,
    /// RTP the relay received, in order.
    rx: Vec<RtpPacket>,
    sub: Option<RtpSubscriber>,
    ended: Vec<String>,
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
        let cfg = SessionConfig::default();
        let (mut session, offer) = Session::new(hub.clone(), cfg, &[host_addr()], now).unwrap();
        assert!(offer.contains("a=sendonly"), "{offer}");
        assert!(offer.contains("profile-level-id=42e01f"), "{offer}");
        assert!(offer.contains("packetization-mode=1"), "{offer}");
        assert!(offer.contains("opus/48000/2"), "{offer}");
        assert!(!offer.contains("ice-lite"), "a full-ICE client: {offer}");
        let mut relay = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .build(now);
        relay.add_local_candidate(Candidate::host(relay_addr(), "udp").unwrap());
        let answer = relay
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&offer).unwrap())
            .unwrap();
        session.accept_answer(&answer.to_sdp_string(), now).unwrap();
        Self {
            now,
            session,
            hub,
            encoder,
            relay,
            relay_timeout: now,
            relay_connected: false,
            relay_closed: false,
            relay_gone: false,
            rx: Vec::new(),
            sub: None,
            ended: Vec::new(),
            seq: 1000,
            ts: 90_000,
        }
    }

    fn keyframes_asked(&self) -> usize {
        self.encoder.0.load(Ordering::SeqCst)
    }

    /// Let ICE and DTLS run until both sides are up (the session's first
    /// checks are queued since the answer).
    fn connect(&mut self) {
        self.settle();
        let start = self.now;
        while !(self.session.is_connected() && self.relay_connected) {
            assert!(self.now < start + Duration::from_secs(2), "it connects");
            self.advance(10 * MS);
        }
        assert!(self.sub.is_some(), "the feed is open once connected");
    }

    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(o) = self.session.poll_output() {
                moved = true;
                match o {
                    Output::Transmit {
                        source,
                        destination,
                        contents,
                    } => {
                        assert_eq!(source, host_addr());
                        if destination != relay_addr() || !self.relay.is_alive() {
                            continue;
                        }
                        let r =
                            Receive::new(Protocol::Udp, source, destination, &contents).unwrap();
                        self.relay
                            .handle_input(Input::Receive(self.now, r))
                            .unwrap();
                        // str0m wants its output drained after every input.
                        self.drain_relay();
                    }
                    Output::Event(Event::Connected { sub }) => self.sub = Some(sub),
                    Output::Event(Event::KeyframeRequested) => {}
                    Output::Event(Event::Ended(why)) => self.ended.push(why),
                }
            }
            moved |= self.drain_relay();
            if !moved {
                return;
            }
        }
        panic!("the session and the relay never go quiet");
    }

    fn drain_relay(&mut self) -> bool {
        let mut moved = false;
        while self.relay.is_alive() {
            match self.relay.poll_output().unwrap() {
                RtcOutput::Transmit(t) => {
                    moved = true;
                    if !self.relay_gone {
                        self.session.handle_datagram(
                            self.now,
                            t.source,
                            t.destination,
                            &t.contents,
                        );
                    }
                }
                RtcOutput::Event(e) => {
                    moved = true;
                    match e {
                        RtcEvent::Connected => self.relay_connected = true,
                        RtcEvent::Closed => self.relay_closed = true,
                        RtcEvent::RtpPacket(p) => self.rx.push(p),
                        _ => {}
                    }
                }
                RtcOutput::Timeout(t) => {
                    self.relay_timeout = t;
                    break;
                }
            }
        }
        moved
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let mut next = self.session.poll_timeout().unwrap_or(end);
            if self.relay.is_alive() {
                next = next.min(self.relay_timeout);
            }
            self.now = next.max(self.now + MS).min(end);
            self.session.handle_timeout(self.now);
            if self.relay.is_alive() {
                self.relay.handle_input(Input::Timeout(self.now)).unwrap();
            }
            self.settle();
        }
    }

    /// The encoder's RTP: one video frame in one packet; `tag` marks it.
    fn publish_video(&mut self, key: bool, tag: u8) {
        let nal = if key { 0x65 } else { 0x41 }; // IDR slice / non-IDR slice
        self.publish(Track::Video, VIDEO_PT, &[nal, tag, 0xaa, 0xbb]);
        self.ts = self.ts.wrapping_add(3000);
    }

    fn publish_audio(&mut self, tag: u8) {
        self.publish(Track::Audio, AUDIO_PT, &[0xfc, tag]);
    }

    fn publish(&mut self, track: Track, pt: u8, payload: &[u8]) {
        let mut pkt = vec![0x80, 0x80 | pt];
        pkt.extend(self.seq.to_be_bytes());
        pkt.extend(self.ts.to_be_bytes());
        pkt.extend(0x1234_5678u32.to_be_bytes());
        pkt.extend(payload);
        self.hub.publish_rtp(track, &pkt, self.now).unwrap();
        self.seq = self.seq.wrapping_add(1);
    }

    /// What the hub sent the session's feed goes in (as the engine does).
    fn deliver_media(&mut self) {
        let Some(sub) = self.sub.as_mut() else {
            return;
        };
        let mut batch = Vec::new();
        for (track, rx) in [
            (Track::Video, &mut sub.video),
            (Track::Audio, &mut sub.audio),
        ] {
            loop {
                match rx.try_recv() {
                    Ok(p) => batch.push((track, Some(p))),
                    Err(TryRecvError::Lagged(_)) => batch.push((track, None)),
                    Err(_) => break,
                }
            }
        }
        self.session.handle_media(self.now, &batch);
        self.settle();
    }

    /// Video frame tags the relay received, in order.
    fn video_tags(&self) -> Vec<u8> {
        self.rx
            .iter()
            .filter(|p| p.header.payload_type == VIDEO_PT.into())
            .map(|p| p.payload[1])
            .collect()
    }

    fn audio_tags(&self) -> Vec<u8> {
        self.rx
            .iter()
            .filter(|p| p.header.payload_type == AUDIO_PT.into())
            .map(|p| p.payload[1])
            .collect()
    }
}

#[test]
fn it_connects_and_video_starts_on_a_fresh_keyframe() {
    let mut net = Net::new();
    net.publish_video(true, 1);
    net.publish_video(false, 2);
    net.now += Duration::from_secs(2);
    net.connect();
    assert_eq!(
        net.keyframes_asked(),
        1,
        "the join asks the encoder for one"
    );
    net.publish_video(false, 3); // the encoder is not there yet
    net.publish_audio(7);
    net.deliver_media();
    net.advance(30 * MS);
    net.publish_video(true, 4);
    net.publish_video(false, 5);
    net.publish_audio(8);
    net.deliver_media();
    net.advance(30 * MS);
    assert_eq!(net.video_tags(), vec![4, 5], "from the keyframe on");
    assert_eq!(
        net.rx
            .iter()
            .find(|p| p.header.payload_type == VIDEO_PT.into())
            .unwrap()
            .payload[0]
            & 0x1f,
        5
    );
    assert_eq!(net.audio_tags(), vec![7, 8], "audio needs no keyframe");
    assert_eq!(net.session.sent(), (2, 2));
    assert!(net.ended.is_empty(), "{:?}", net.ended);
    let (connect, key) = net.session.timings();
    assert!(connect.is_some() && key.is_some());
}

#[test]
fn a_join_right_after_a_keyframe_starts_on_the_cached_gop() {
    let mut net = Net::new();
    net.publish_video(true, 1);
    net.publish_video(false, 2);
    net.connect(); // within the keyframe rate limit of frame 1
    assert_eq!(net.keyframes_asked(), 0, "a keyframe just came: none asked");
    net.publish_video(false, 3);
    net.deliver_media();
    net.advance(30 * MS);
    assert_eq!(net.video_tags(), vec![1, 2, 3], "the cached GOP, then live");
}

#[test]
fn a_pli_from_the_relay_becomes_a_keyframe_request() {
    let mut net = Net::new();
    net.connect();
    let joined = net.keyframes_asked();
    net.publish_video(true, 1);
    net.deliver_media();
    net.advance(600 * MS); // past the keyframe rate limit
    let mid = net
        .rx
        .first()
        .expect("the keyframe arrived")
        .header
        .ext_vals
        .mid
        .unwrap();
    net.relay
        .direct_api()
        .stream_rx_by_mid(mid, None)
        .expect("the relay receives video")
        .request_keyframe(KeyframeRequestKind::Pli);
    net.settle();
    net.advance(10 * MS);
    assert_eq!(net.session.keyframe_requests(), 1);
    assert_eq!(
        net.keyframes_asked(),
        joined + 1,
        "the encoder is asked for one"
    );
}

#[test]
fn close_says_goodbye_to_the_relay() {
    let mut net = Net::new();
    net.connect();
    net.publish_video(true, 1);
    net.deliver_media();
    net.advance(30 * MS);
    let now = net.now;
    net.session.close(now);
    net.settle();
    net.advance(10 * MS);
    assert!(net.session.is_ended());
    assert!(
        net.relay_closed || !net.relay.is_alive(),
        "the relay knows at once"
    );
    assert_eq!(net.session.poll_timeout(), None, "nothing more to do");
    // Media after the close goes nowhere.
    let before = net.rx.len();
    net.publish_video(true, 2);
    net.deliver_media();
    assert_eq!(net.rx.len(), before);
}

#[test]
fn a_relay_gone_silent_ends_the_session_at_the_timeout() {
    let mut net = Net::new();
    net.connect();
    net.relay_gone = true;
    let silence = SessionConfig::default().silence_timeout;
    net.advance(silence - 100 * MS);
    assert!(
        net.ended.is_empty(),
        "not before the timeout: {:?}",
        net.ended
    );
    net.advance(200 * MS);
    assert_eq!(net.ended.len(), 1, "said once: {:?}", net.ended);
    assert!(net.ended[0].contains("ICE consent lost"), "{:?}", net.ended);
    assert_eq!(net.session.poll_timeout(), None);
}

#[test]
fn a_relay_that_closes_ends_the_session() {
    let mut net = Net::new();
    net.connect();
    net.relay.close().unwrap();
    net.drain_relay();
    net.settle();
    net.advance(100 * MS);
    assert_eq!(net.ended.len(), 1, "{:?}", net.ended);
    assert!(net.ended[0].contains("closed"), "{:?}", net.ended);
}

#[test]
fn no_answer_reaching_us_is_a_connect_timeout() {
    let mut net = Net::new();
    net.relay_gone = true;
    net.advance(SessionConfig::default().connect_timeout + MS);
    assert_eq!(net.ended.len(), 1, "{:?}", net.ended);
    assert!(net.ended[0].contains("did not connect"), "{:?}", net.ended);
}
