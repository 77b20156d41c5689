//! The WHIP core against an in-process str0m publisher (OBS-like: audio
//! first, H.264 High), datagrams moved in memory, a fake clock: no socket,
//! no sleep.

use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event as RtcEvent, Input, Output as RtcOutput, Rtc, RtcConfig};
use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::hub::{Hub, HubConfig, RtpSubscriber};
use crate::supervisor::FailureKind;
use crate::whip::answer::Answerer;
use crate::whip::slot::Slot;

const MS: Duration = Duration::from_millis(1);
const TIMEOUT: Duration = Duration::from_secs(5);
const OBS_HIGH: u32 = 0x640c1f;

fn server() -> SocketAddr {
    "198.51.100.1:8190".parse().unwrap()
}

fn publisher_addr() -> SocketAddr {
    "203.0.113.7:50000".parse().unwrap()
}

fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// The hub's keyframe source (the PLI path is driven by hand here).
struct NoEncoder;

impl crate::hub::KeyframeSource for NoEncoder {
    fn request_keyframe(&self) {}
}

struct Net {
    now: Instant,
    core: Core,
    hub: Hub,
    sub: RtpSubscriber,
    slot: Arc<Slot>,
    client: Rtc,
    client_timeout: Instant,
    connected: bool,
    video: Mid,
    audio: Mid,
    video_pt: Pt,
    audio_pt: Pt,
    plis: usize,
    gone: Vec<(Arc<str>, String)>,
    silent: bool,
    seq: u16,
}

impl Net {
    /// An OBS-like publisher offers; the core takes it.
    fn new() -> Self {
        init_crypto();
        let now = Instant::now();
        let hub = Hub::new(HubConfig {
            rtp_join_cached_first: true,
            ..HubConfig::default()
        });
        hub.begin_run(Some(Arc::new(NoEncoder)));
        let sub = hub.rtp_receivers();
        let slot = Arc::new(Slot::new(
            "desk".into(),
            "publish-secret-0123456789".into(),
            "viewer-token".into(),
            hub.clone(),
        ));
        let mut cfg = RtcConfig::new().set_rtp_mode(true).clear_codecs();
        cfg.codec_config()
            .add_h264(100.into(), None, true, OBS_HIGH);
        cfg.codec_config().add_config(
            109.into(),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            FormatParams::default(),
        );
        let mut client = cfg.build(now);
        client.add_local_candidate(Candidate::host(publisher_addr(), "udp").unwrap());
        let mut api = client.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let answerer = Answerer::new(vec![server()]).unwrap();
        let (rtc, answer, neg) = answerer.answer(&offer.to_sdp_string(), now).unwrap();
        assert_eq!(
            neg.h264_profile >> 8,
            OBS_HIGH >> 8,
            "the answer keeps High: {answer}"
        );
        assert_eq!(neg.video_pt, Pt::from(100), "the offer's payload type");
        assert_eq!(neg.audio.map(|a| a.1), Some(Pt::from(109)));
        client
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        let resource: Arc<str> = "pub-1".into();
        slot.claim(resource.clone(), "\"e\"".into(), neg.codecs.clone(), true)
            .unwrap();
        let mut core = Core::new(TIMEOUT);
        core.add(
            now,
            NewPublisher {
                resource,
                rtc,
                neg,
                slot: slot.clone(),
            },
        );
        let mut net = Self {
            now,
            core,
            hub,
            sub,
            slot,
            client,
            client_timeout: now,
            connected: false,
            video,
            audio,
            video_pt: 100.into(),
            audio_pt: 109.into(),
            plis: 0,
            gone: Vec::new(),
            silent: false,
            seq: 1,
        };
        net.settle();
        net
    }

    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(o) = self.core.poll_output() {
                moved = true;
                match o {
                    Output::Transmit {
                        destination,
                        contents,
                    } => {
                        if !self.client.is_alive() {
                            continue;
                        }
                        let r =
                            Receive::new(Protocol::Udp, server(), destination, &contents).unwrap();
                        self.client
                            .handle_input(Input::Receive(self.now, r))
                            .unwrap();
                    }
                    Output::Gone { resource, why } => self.gone.push((resource, why)),
                }
            }
            while self.client.is_alive() {
                match self.client.poll_output().unwrap() {
                    RtcOutput::Transmit(t) => {
                        moved = true;
                        if !self.silent {
                            self.core.handle_datagram(
                                self.now,
                                publisher_addr(),
                                t.destination,
                                &t.contents,
                            );
                        }
                    }
                    RtcOutput::Event(e) => {
                        moved = true;
                        match e {
                            RtcEvent::Connected => self.connected = true,
                            RtcEvent::KeyframeRequest(_) => self.plis += 1,
                            _ => {}
                        }
                    }
                    RtcOutput::Timeout(t) => {
                        self.client_timeout = t;
                        break;
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the core and the publisher never go quiet");
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let next = [Some(self.client_timeout), self.core.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end);
            self.now = next.max(self.now + MS).min(end);
            self.core.handle_timeout(self.now);
            if self.client.is_alive() {
                self.client.handle_input(Input::Timeout(self.now)).unwrap();
            }
            self.settle();
        }
    }

    fn connect(&mut self) {
        let start = self.now;
        while !self.connected {
            assert!(
                self.now < start + Duration::from_secs(2),
                "the publisher connects"
            );
            self.advance(10 * MS);
        }
    }

    /// The publisher sends one packet on `mid`.
    fn send(&mut self, video: bool, payload: Vec<u8>) {
        let (mid, pt) = if video {
            (self.video, self.video_pt)
        } else {
            (self.audio, self.audio_pt)
        };
        let seq = self.seq;
        self.seq += 1;
        let mut api = self.client.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).expect("a send stream");
        let w = RtpWrite::new(
            pt,
            u64::from(seq).into(),
            3000 * u32::from(seq),
            self.now,
            Arc::<[u8]>::from(payload),
        )
        .marker(true);
        tx.write_rtp(w);
        self.advance(MS);
    }
}

#[test]
fn media_reaches_the_hub_with_the_hubs_payload_types() {
    let mut net = Net::new();
    net.connect();
    net.send(true, vec![0x65, 1, 2, 3]); // an IDR slice
    net.send(false, vec![0xfc, 9, 9]);
    net.send(true, vec![0x41, 4, 5, 6]);
    let mut video = Vec::new();
    loop {
        match net.sub.video.try_recv() {
            Ok(p) => video.push(p),
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(video.len(), 2, "both video packets");
    assert!(video.iter().all(|p| p.payload_type == HUB_VIDEO_PT));
    assert!(video[0].key, "the IDR starts a keyframe");
    assert_eq!(&video[1].payload[..], &[0x41, 4, 5, 6]);
    let audio = net.sub.audio.try_recv().expect("the audio packet");
    assert_eq!(audio.payload_type, HUB_AUDIO_PT);
    let view = net.slot.view(net.now).expect("a publisher");
    assert!(view.connected);
    assert_eq!(view.address, Some(publisher_addr()));
    assert_eq!(view.packets, 3);
}

#[test]
fn a_keyframe_request_becomes_one_pli_to_the_publisher() {
    let mut net = Net::new();
    net.connect();
    net.send(true, vec![0x65, 1]);
    assert_eq!(net.plis, 0);
    net.core.request_keyframe(net.now, "desk");
    net.settle();
    net.advance(50 * MS);
    assert_eq!(net.plis, 1, "one PLI reached the publisher");
    net.core.request_keyframe(net.now, "other-stream");
    net.advance(50 * MS);
    assert_eq!(net.plis, 1, "another stream's request is not ours");
}

#[test]
fn delete_and_silence_end_the_run_with_their_reason() {
    let mut net = Net::new();
    let (_first, mut failures) = net.slot.attach_run();
    net.connect();
    net.core.remove(net.now, "pub-1");
    net.settle();
    let e = failures.try_recv().expect("the run heard it");
    assert_eq!(e.kind, FailureKind::Ended);
    assert!(e.message.contains("DELETE"), "{e}");
    assert!(net.slot.resource().is_none(), "the slot is free again");
    assert_eq!(net.core.publishers(), 0);

    let mut net = Net::new();
    let (_first, mut failures) = net.slot.attach_run();
    net.connect();
    net.silent = true;
    net.advance(TIMEOUT + Duration::from_secs(1));
    let e = failures.try_recv().expect("the run heard it");
    assert_eq!(e.kind, FailureKind::Crashed);
    assert!(e.message.contains("consent"), "{e}");
    assert_eq!(net.core.publishers(), 0);
    assert_eq!(net.gone.len(), 1);
    assert_eq!(&*net.gone[0].0, "pub-1");
}

#[test]
fn the_first_packet_wakes_the_waiting_run() {
    let mut net = Net::new();
    let (mut first, _failures) = net.slot.attach_run();
    net.connect();
    assert!(first.try_recv().is_err(), "no media yet");
    net.send(true, vec![0x65, 1]);
    assert!(
        first.try_recv().is_ok(),
        "the run goes live on the first packet"
    );
}

#[test]
fn viewers_join_on_the_cached_gop_until_the_publisher_answers_a_pli() {
    let mut net = Net::new();
    net.connect();
    net.send(true, vec![0x65, 1]); // its first keyframe
    net.send(true, vec![0x41, 2]);
    let join = net.hub.join_rtp(net.now);
    assert!(
        matches!(join, crate::hub::RtpJoin::Cached(ref g) if g.len() == 2),
        "{join:?}"
    );
    // A delta frame after a PLI answers nothing; a keyframe does.
    net.slot.pli_sent(net.now);
    net.send(true, vec![0x41, 3]);
    assert!(matches!(
        net.hub.join_rtp(net.now),
        crate::hub::RtpJoin::Cached(_)
    ));
    net.send(true, vec![0x65, 4]);
    net.advance(Duration::from_secs(1)); // past the keyframe rate limit
    let join = net.hub.join_rtp(net.now);
    assert!(
        matches!(join, crate::hub::RtpJoin::Live),
        "a fresh keyframe is asked for: {join:?}"
    );
}
