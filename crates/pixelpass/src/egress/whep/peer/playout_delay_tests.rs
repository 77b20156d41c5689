//! playout-delay on the wire, through a real str0m client.
use std::net::SocketAddr;

use str0m::change::SdpAnswer;
use str0m::media::Direction;
use str0m::net::{Protocol, Receive};
use str0m::{Input, Output};

use super::*;

const URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

/// A receiving str0m client (offering playout-delay at id 6 when `ext`).
fn client(
    addr: SocketAddr,
    ext: bool,
    now: Instant,
) -> (Rtc, String, str0m::change::SdpPendingOffer) {
    let mut cfg =
        RtcConfig::new().set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()));
    if ext {
        cfg = cfg.set_extension(6, Extension::PlayoutDelay);
    }
    let mut rtc = cfg.build(now);
    rtc.add_local_candidate(str0m::Candidate::host(addr, "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    (rtc, offer.to_sdp_string(), pending)
}

/// Drain `from`'s output: datagrams to `to`, events returned; its next timeout.
fn pump(
    from: &mut Rtc,
    from_addr: SocketAddr,
    to: &mut Rtc,
    now: Instant,
    events: &mut Vec<Event>,
) -> Instant {
    loop {
        match from.poll_output().unwrap() {
            Output::Transmit(t) => {
                let r = Receive::new(Protocol::Udp, from_addr, t.destination, &t.contents).unwrap();
                to.handle_input(Input::Receive(now, r)).unwrap();
            }
            Output::Event(e) => events.push(e),
            Output::Timeout(t) => return t,
        }
    }
}

#[test]
fn video_goes_out_with_a_zero_playout_delay_when_the_offer_has_the_extension() {
    let (server_addr, client_addr): (SocketAddr, SocketAddr) = (
        "127.0.0.1:5000".parse().unwrap(),
        "127.0.0.1:6000".parse().unwrap(),
    );
    let mut now = Instant::now();
    let factory = RtcFactory::new(vec![server_addr]).unwrap();

    // Without the extension in the offer, the answer has none either.
    let (_, plain, _) = client(client_addr, false, now);
    assert!(!factory
        .answer(&plain, now, H264_PROFILE_LEVEL_ID, 1)
        .unwrap()
        .1
        .contains(URI));

    let (mut c, offer, pending) = client(client_addr, true, now);
    let (rtc, answer) = factory
        .answer(&offer, now, H264_PROFILE_LEVEL_ID, 1)
        .unwrap();
    assert!(answer.contains(&format!("a=extmap:6 {URI}")), "{answer}");
    c.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    let mut peer = Peer::new(rtc, "r".into(), "s".into(), (102, 111), now);

    let mut got = None;
    for _ in 0..2000 {
        let mut server_events = Vec::new();
        let mut client_events = Vec::new();
        let t1 = pump(&mut peer.rtc, server_addr, &mut c, now, &mut server_events);
        let t2 = pump(&mut c, client_addr, &mut peer.rtc, now, &mut client_events);
        for e in server_events {
            peer.on_event(e, now);
        }
        if peer.is_connected() {
            // One whole frame in one packet: an IDR slice, marker set.
            let pkt = RtpPkt {
                index: 1,
                payload: Arc::from(&[0x65u8, 0x88, 0x84, 0x00][..]),
                payload_type: 102,
                sequence: 1,
                timestamp: 90_000,
                marker: true,
                key: true,
                at: now,
                epoch: 0,
            };
            peer.write(Track::Video, &pkt, now);
        }
        if let Some(d) = client_events.into_iter().find_map(|e| match e {
            Event::MediaData(d) => Some(d),
            _ => None,
        }) {
            got = Some(d);
            break;
        }
        now = t1.min(t2).max(now + Duration::from_millis(1));
        peer.rtc.handle_input(Input::Timeout(now)).unwrap();
        c.handle_input(Input::Timeout(now)).unwrap();
    }
    let d = got.expect("the client gets the frame");
    assert_eq!(
        (d.ext_vals.play_delay_min, d.ext_vals.play_delay_max),
        (Some(MediaTime::ZERO), Some(MediaTime::ZERO))
    );
}
