//! Deterministic hub tests: time is passed in, no sleeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::subscriber::Next;
use super::*;

#[derive(Default)]
struct FakeEncoder {
    requests: AtomicUsize,
}

impl KeyframeSource for FakeEncoder {
    fn request_keyframe(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }
}

fn chunk(tag: &str) -> Bytes {
    Bytes::from(tag.as_bytes().to_vec())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn drain(sub: &mut Subscriber, now: Instant) -> Vec<String> {
    let mut got = Vec::new();
    while let Next::Data(b) = sub.try_next(now) {
        got.push(String::from_utf8_lossy(&b).into_owned());
    }
    got
}

fn hub_with_encoder() -> (Hub, Arc<FakeEncoder>) {
    let hub = Hub::new(HubConfig::default());
    let enc = Arc::new(FakeEncoder::default());
    hub.begin_run(Some(enc.clone()));
    hub.set_psi(chunk("PSI"));
    (hub, enc)
}

#[test]
fn new_viewer_asks_for_a_keyframe_and_starts_on_it_without_backlog() {
    let (hub, enc) = hub_with_encoder();
    let t0 = Instant::now();
    hub.publish(chunk("K1"), true, t0);
    for i in 0..30 {
        hub.publish(chunk(&format!("d{i}")), false, t0 + ms(33 * (i + 1)));
    }
    let join = t0 + ms(1100);
    let mut sub = hub.subscribe(join);
    assert_eq!(
        enc.requests.load(Ordering::SeqCst),
        1,
        "a join asks the encoder once"
    );
    assert_eq!(
        drain(&mut sub, join),
        Vec::<String>::new(),
        "no backlog of old frames"
    );
    hub.publish(chunk("d-late"), false, join + ms(5));
    hub.publish(chunk("K2"), true, join + ms(20));
    hub.publish(chunk("d2"), false, join + ms(53));
    assert_eq!(drain(&mut sub, join + ms(60)), ["PSI", "K2", "d2"]);
}

#[test]
fn joiners_share_one_keyframe_request() {
    let (hub, enc) = hub_with_encoder();
    let t0 = Instant::now();
    let mut a = hub.subscribe(t0);
    let mut b = hub.subscribe(t0 + ms(10));
    let mut c = hub.subscribe(t0 + ms(20));
    assert_eq!(enc.requests.load(Ordering::SeqCst), 1);
    hub.publish(chunk("K"), true, t0 + ms(30));
    for s in [&mut a, &mut b, &mut c] {
        assert_eq!(drain(s, t0 + ms(31)), ["PSI", "K"]);
    }
    // Just after that keyframe, a joiner starts on its (fresh) GOP instead of asking again.
    hub.publish(chunk("d"), false, t0 + ms(63));
    let mut d = hub.subscribe(t0 + ms(100));
    assert_eq!(enc.requests.load(Ordering::SeqCst), 1);
    assert_eq!(drain(&mut d, t0 + ms(100)), ["PSI", "K", "d"]);
    // Later, the next joiner asks again.
    let _e = hub.subscribe(t0 + ms(700));
    assert_eq!(enc.requests.load(Ordering::SeqCst), 2);
}

#[test]
fn producer_without_keyframes_on_demand_hands_out_the_cached_gop() {
    let hub = Hub::new(HubConfig::default());
    hub.begin_run(None);
    hub.set_psi(chunk("PSI"));
    let t0 = Instant::now();
    hub.publish(chunk("K1"), true, t0);
    hub.publish(chunk("x"), false, t0 + ms(33));
    hub.publish(chunk("K2"), true, t0 + ms(66));
    hub.publish(chunk("a"), false, t0 + ms(99));
    hub.publish(chunk("b"), false, t0 + ms(132));
    let mut sub = hub.subscribe(t0 + ms(140));
    assert_eq!(drain(&mut sub, t0 + ms(140)), ["PSI", "K2", "a", "b"]);
    // And then it continues live, with nothing lost or repeated at the seam.
    hub.publish(chunk("c"), false, t0 + ms(165));
    assert_eq!(drain(&mut sub, t0 + ms(170)), ["c"]);
    assert_eq!(hub.stats().gop_joins, 1);
}

#[test]
fn a_lagging_viewer_skips_to_the_next_keyframe_and_others_are_untouched() {
    let (hub, _enc) = hub_with_encoder();
    let t0 = Instant::now();
    let mut slow = hub.subscribe(t0);
    let mut fast = hub.subscribe(t0);
    hub.publish(chunk("K1"), true, t0 + ms(10));
    assert_eq!(drain(&mut slow, t0 + ms(11)), ["PSI", "K1"]);
    let mut fast_got = drain(&mut fast, t0 + ms(11));
    // 60 frames at 30 fps = 2 s; the slow one reads nothing meanwhile.
    for i in 0..60u64 {
        let key = i == 45;
        let name = if key {
            "K2".to_string()
        } else {
            format!("d{i}")
        };
        hub.publish(chunk(&name), key, t0 + ms(10 + 33 * (i + 1)));
        fast_got.extend(drain(&mut fast, t0 + ms(11 + 33 * (i + 1))));
    }
    assert_eq!(fast_got.len(), 2 + 60, "the fast viewer got every chunk");
    // The slow viewer wakes at t≈2 s: d0.. are > max_lag (1.5 s) old -> skip to K2 (fresh).
    let now = t0 + ms(10 + 33 * 60 + 5);
    let got = drain(&mut slow, now);
    assert_eq!(got.first().map(String::as_str), Some("PSI"));
    assert_eq!(
        got.get(1).map(String::as_str),
        Some("K2"),
        "resumes on a keyframe, not mid-GOP: {got:?}"
    );
    assert_eq!(got.len(), 2 + 14);
    assert_eq!(slow.stats().lag_skips, 1);
}

#[test]
fn an_overrun_viewer_resyncs_on_a_keyframe() {
    let cfg = HubConfig {
        capacity: 8,
        ..HubConfig::default()
    };
    let hub = Hub::new(cfg);
    hub.begin_run(None);
    let t0 = Instant::now();
    let mut sub = hub.subscribe(t0);
    for i in 0..20u64 {
        let key = i % 10 == 0;
        hub.publish(
            chunk(&format!("{}{i}", if key { "K" } else { "d" })),
            key,
            t0 + ms(i),
        );
    }
    // The ring (8) was overrun: the viewer must not start on d12.
    let got = drain(&mut sub, t0 + ms(20));
    assert!(
        got.is_empty(),
        "K10 fell out of the ring; wait for the next keyframe: {got:?}"
    );
    hub.publish(chunk("K20"), true, t0 + ms(21));
    assert_eq!(drain(&mut sub, t0 + ms(21)), ["K20"]);
}

#[test]
fn memory_stays_bounded_whatever_viewers_do() {
    let cfg = HubConfig {
        capacity: 64,
        gop_max_bytes: 64 * 1024,
        ..HubConfig::default()
    };
    let hub = Hub::new(cfg);
    hub.begin_run(None);
    let t0 = Instant::now();
    // 100 viewers that never read.
    let subs: Vec<_> = (0..100).map(|_| hub.subscribe(t0)).collect();
    let payload = Bytes::from(vec![0u8; 4096]);
    hub.publish(payload.clone(), true, t0);
    // A GOP that never ends: 10 000 chunks of 4 KiB = 40 MiB published.
    for i in 0..10_000u64 {
        hub.publish(payload.clone(), false, t0 + ms(i));
    }
    assert!(
        hub.gop_bytes() <= 64 * 1024,
        "GOP cache bounded: {}",
        hub.gop_bytes()
    );
    // The ring holds `capacity` chunks; every one is the same shared allocation.
    assert_eq!(hub.inner.tx.len(), 64);
    drop(subs);
    assert_eq!(hub.stats().bytes, 4096 * 10_001);
}

#[test]
fn a_new_producer_run_resyncs_viewers_on_its_first_keyframe() {
    let (hub, _enc) = hub_with_encoder();
    let t0 = Instant::now();
    let mut sub = hub.subscribe(t0);
    hub.publish(chunk("K1"), true, t0);
    hub.publish(chunk("d1"), false, t0 + ms(33));
    assert_eq!(drain(&mut sub, t0 + ms(40)), ["PSI", "K1", "d1"]);
    // Encoder crashed; a new run begins. Its first chunks are not keyframes.
    hub.begin_run(Some(Arc::new(FakeEncoder::default())));
    hub.set_psi(chunk("PSI2"));
    hub.publish(chunk("junk"), false, t0 + ms(600));
    hub.publish(chunk("K-new"), true, t0 + ms(633));
    assert_eq!(drain(&mut sub, t0 + ms(640)), ["PSI2", "K-new"]);
}

#[test]
fn ts_bytes_pushed_in_pieces_become_keyed_chunks() {
    let hub = Hub::new(HubConfig::default());
    hub.begin_run(None);
    let t0 = Instant::now();
    let mut s = Vec::new();
    s.extend(crate::media::ts::chunker::tests_support::pat(0x1000));
    s.extend(crate::media::ts::chunker::tests_support::pmt(
        0x1000, 0x41, 0x42,
    ));
    s.extend(crate::media::ts::chunker::tests_support::ts_packet(
        0x41,
        true,
        true,
        &[],
    ));
    s.extend(crate::media::ts::chunker::tests_support::ts_packet(
        0x41,
        true,
        false,
        &[],
    ));
    for part in s.chunks(100) {
        hub.push_ts(part, t0);
    }
    hub.flush_ts(t0);
    let mut sub = hub.subscribe(t0);
    let got: Vec<usize> = std::iter::from_fn(|| match sub.try_next(t0) {
        Next::Data(b) => Some(b.len()),
        _ => None,
    })
    .collect();
    // PSI (2 packets), then the GOP: [PAT PMT K] [F]
    assert_eq!(got, vec![376, 3 * 188, 188]);
}

/// A video TS packet starting a PES with this PTS (keyframe: RAI set).
fn video_pes(pts: u64, key: bool) -> Vec<u8> {
    let b = [
        0x21 | ((pts >> 29) & 0x0e) as u8,
        (pts >> 22) as u8,
        ((pts >> 14) as u8) | 1,
        (pts >> 7) as u8,
        ((pts << 1) as u8) | 1,
    ];
    let mut pes = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5];
    pes.extend_from_slice(&b);
    crate::media::ts::chunker::tests_support::ts_packet(0x41, true, key, &pes)
}

#[test]
fn a_viewer_moving_here_starts_on_a_keyframe_later_than_what_it_has() {
    use crate::media::ts::chunker::tests_support::{pat, pmt};
    let hub = Hub::new(HubConfig::default());
    let enc = Arc::new(FakeEncoder::default());
    hub.begin_run(Some(enc.clone()));
    let t0 = Instant::now();
    let mut psi = pat(0x1000);
    psi.extend(pmt(0x1000, 0x41, 0x42));
    hub.push_ts(&psi, t0);
    hub.push_ts(&video_pes(3000, true), t0);
    hub.push_ts(&video_pes(6000, false), t0);
    hub.flush_ts(t0);
    // The viewer had the picture at PTS 9000 from another layer: this
    // layer's encode of that same picture is not where it starts…
    let mut sub = hub.subscribe_next_keyframe(t0 + ms(600), Some(9000));
    assert_eq!(
        enc.requests.load(Ordering::SeqCst),
        1,
        "a keyframe is asked for"
    );
    assert!(drain(&mut sub, t0 + ms(600)).is_empty(), "no cached GOP");
    hub.push_ts(&video_pes(9000, true), t0 + ms(610));
    hub.push_ts(&video_pes(12000, false), t0 + ms(640));
    hub.flush_ts(t0 + ms(640));
    assert!(
        drain(&mut sub, t0 + ms(640)).is_empty(),
        "{:?}",
        sub.stats()
    );
    assert_eq!(sub.last_pts(), None);
    // …the next keyframe after it is (PSI first), and another was asked for
    // (the rate limit lets it out 500 ms after the last keyframe).
    hub.push_ts(&video_pes(15000, true), t0 + ms(1200));
    hub.flush_ts(t0 + ms(1200));
    let got: Vec<usize> = std::iter::from_fn(|| match sub.try_next(t0 + ms(1200)) {
        Next::Data(b) => Some(b.len()),
        _ => None,
    })
    .collect();
    assert_eq!(got, vec![376, 188]);
    assert_eq!(sub.last_pts(), Some(15000));
    assert_eq!(enc.requests.load(Ordering::SeqCst), 2);
}

fn rtp(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x80,
        pt,
        (seq >> 8) as u8,
        seq as u8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
    ];
    p.extend_from_slice(payload);
    p
}

#[test]
fn rtp_peers_share_one_payload_and_joins_request_keyframes_within_the_limit() {
    let (hub, enc) = hub_with_encoder();
    let t0 = Instant::now();
    let mut a = hub.subscribe_rtp(t0);
    let mut b = hub.subscribe_rtp(t0);
    assert_eq!(
        enc.requests.load(Ordering::SeqCst),
        1,
        "both joiners share one request"
    );
    hub.publish_rtp(Track::Video, &rtp(102, 7, &[0x7c, 0x85, 1]), t0 + ms(20))
        .unwrap();
    hub.publish_rtp(Track::Audio, &rtp(111, 9, &[0xfc]), t0 + ms(21))
        .unwrap();
    let (va, vb) = (a.video.try_recv().unwrap(), b.video.try_recv().unwrap());
    assert!(va.key && va.sequence == 7 && va.payload_type == 102);
    assert!(
        Arc::ptr_eq(&va.payload, &vb.payload),
        "one payload allocation for every peer"
    );
    assert_eq!(a.audio.try_recv().unwrap().payload.as_ref(), &[0xfc]);
    // A peer connecting just after that keyframe: its request is held back...
    let _c = hub.subscribe_rtp(t0 + ms(100));
    assert_eq!(enc.requests.load(Ordering::SeqCst), 1);
    hub.publish_rtp(Track::Video, &rtp(102, 8, &[0x41]), t0 + ms(300))
        .unwrap();
    assert_eq!(enc.requests.load(Ordering::SeqCst), 1);
    // ...and goes out with the first packet published once 500 ms have passed.
    hub.publish_rtp(Track::Video, &rtp(102, 9, &[0x41]), t0 + ms(520))
        .unwrap();
    assert_eq!(enc.requests.load(Ordering::SeqCst), 2);
    assert!(
        hub.publish_rtp(Track::Video, &[1, 2, 3], t0).is_err(),
        "garbage is refused, not published"
    );
}

fn rtp_at(seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 102, (seq >> 8) as u8, seq as u8];
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1]);
    p.extend_from_slice(payload);
    p
}

/// One keyframe access unit as rtph264pay sends it: SPS/PPS in a STAP-A, then
/// two IDR slices in FU-A (each slice's first packet carries an IDR NAL start).
fn publish_keyframe(hub: &Hub, seq: u16, ts: u32, at: Instant) -> u16 {
    let stap = [0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
    hub.publish_rtp(Track::Video, &rtp_at(seq, ts, &stap), at)
        .unwrap();
    hub.publish_rtp(Track::Video, &rtp_at(seq + 1, ts, &[0x7c, 0x85, 1]), at)
        .unwrap();
    hub.publish_rtp(Track::Video, &rtp_at(seq + 2, ts, &[0x7c, 0x45, 2]), at)
        .unwrap();
    hub.publish_rtp(Track::Video, &rtp_at(seq + 3, ts, &[0x7c, 0x85, 3]), at)
        .unwrap();
    hub.publish_rtp(Track::Video, &rtp_at(seq + 4, ts, &[0x7c, 0x45, 4]), at)
        .unwrap();
    seq + 5
}

#[test]
fn rtp_keyframe_starts_are_the_first_packet_of_the_access_unit() {
    let (hub, _enc) = hub_with_encoder();
    let t0 = Instant::now();
    let mut rx = hub.rtp_receivers();
    publish_keyframe(&hub, 1, 3000, t0);
    let keys: Vec<bool> = std::iter::from_fn(|| rx.video.try_recv().ok())
        .map(|p| p.key)
        .collect();
    assert_eq!(
        keys,
        vec![true, false, false, false, false],
        "the second slice's IDR start is no new start"
    );
    assert_eq!(hub.stats().keyframes_rtp, 1);
    assert_eq!(
        hub.stats().rtp_gop_ticks,
        0,
        "one keyframe: no interval yet"
    );
    // The next keyframe two seconds later (90 kHz), a P slice between.
    hub.publish_rtp(Track::Video, &rtp_at(6, 6000, &[0x41, 0x9a]), t0)
        .unwrap();
    publish_keyframe(&hub, 7, 3000 + 180_000, t0);
    assert_eq!(hub.stats().rtp_gop_ticks, 180_000);
    hub.begin_run(None);
    assert_eq!(hub.stats().rtp_gop_ticks, 0, "a new run measures afresh");
}

#[test]
fn a_peer_joining_within_the_rate_limit_starts_on_the_cached_rtp_gop() {
    let (hub, enc) = hub_with_encoder();
    let t0 = Instant::now();
    let requests = || enc.requests.load(Ordering::SeqCst);
    // Nothing cached yet: the first peer asks for a keyframe and waits for it.
    let mut feed = hub.rtp_receivers();
    assert!(matches!(hub.join_rtp(t0), RtpJoin::Live));
    assert_eq!(requests(), 1);
    let seq = publish_keyframe(&hub, 100, 9000, t0 + ms(30));
    hub.publish_rtp(Track::Audio, &rtp(111, 1, &[0xfc]), t0 + ms(40))
        .unwrap();
    hub.publish_rtp(Track::Video, &rtp_at(seq, 12000, &[0x41, 9]), t0 + ms(63))
        .unwrap();
    let live: Vec<RtpPkt> = std::iter::from_fn(|| feed.video.try_recv().ok()).collect();
    assert_eq!(live.len(), 6);

    // 200 ms after that keyframe a second peer connects: no request (it would
    // be held back until 530 ms), it gets the GOP so far, keyframe first.
    let RtpJoin::Cached(gop) = hub.join_rtp(t0 + ms(230)) else {
        panic!("expected the cached GOP")
    };
    assert_eq!(requests(), 1);
    assert_eq!(
        gop.iter().map(|p| p.sequence).collect::<Vec<_>>(),
        vec![100, 101, 102, 103, 104, 105]
    );
    assert!(gop[0].key && gop[1..].iter().all(|p| !p.key));
    assert!(
        Arc::ptr_eq(&gop[5].payload, &live[5].payload),
        "cached packets share the live payloads"
    );
    assert_eq!(
        gop.last().map(|p| p.index),
        live.last().map(|p| p.index),
        "the snapshot ends where the live feed is"
    );
    let st = hub.stats();
    assert_eq!((st.rtp_gop_joins, st.keyframe_requests_deferred), (1, 0));
    assert_eq!(hub.rtp_gop_cached(), (6, 14 + 9));

    // Once the keyframe is older than the interval, a peer asks for a fresh one.
    assert!(matches!(hub.join_rtp(t0 + ms(530)), RtpJoin::Live));
    assert_eq!(requests(), 2);
    // A request on its way serves the next joiner too.
    assert!(matches!(hub.join_rtp(t0 + ms(540)), RtpJoin::Live));
    assert_eq!(requests(), 2);
}

#[test]
fn a_gop_beyond_the_cache_bounds_is_not_served_and_the_join_waits_out_the_limit() {
    let cfg = HubConfig {
        rtp_gop_max_packets: 8,
        ..HubConfig::default()
    };
    let hub = Hub::new(cfg);
    let enc = Arc::new(FakeEncoder::default());
    hub.begin_run(Some(enc.clone()));
    let t0 = Instant::now();
    let mut seq = publish_keyframe(&hub, 1, 0, t0);
    for i in 0..4u32 {
        hub.publish_rtp(
            Track::Video,
            &rtp_at(seq, 3000 * (i + 1), &[0x41]),
            t0 + ms(10),
        )
        .unwrap();
        seq += 1;
    }
    assert_eq!(hub.rtp_gop_cached(), (0, 0), "9 packets > 8: dropped");
    assert!(matches!(hub.join_rtp(t0 + ms(100)), RtpJoin::Live));
    assert_eq!(
        enc.requests.load(Ordering::SeqCst),
        0,
        "held back by the limit"
    );
    assert_eq!(hub.stats().keyframe_requests_deferred, 1);
    hub.publish_rtp(Track::Video, &rtp_at(seq, 90_000, &[0x41]), t0 + ms(499))
        .unwrap();
    assert_eq!(enc.requests.load(Ordering::SeqCst), 0);
    hub.publish_rtp(
        Track::Video,
        &rtp_at(seq + 1, 93_000, &[0x41]),
        t0 + ms(500),
    )
    .unwrap();
    assert_eq!(
        enc.requests.load(Ordering::SeqCst),
        1,
        "the deferred request goes out once allowed"
    );
    // The next keyframe starts a new cache.
    publish_keyframe(&hub, seq + 2, 96_000, t0 + ms(530));
    assert_eq!(hub.rtp_gop_cached().0, 5);
}

#[test]
fn without_keyframes_on_demand_rtp_peers_always_start_on_the_cached_gop() {
    let hub = Hub::new(HubConfig::default());
    hub.begin_run(None);
    let t0 = Instant::now();
    hub.publish_rtp(Track::Video, &rtp_at(1, 0, &[0x41]), t0)
        .unwrap();
    assert!(
        matches!(hub.join_rtp(t0), RtpJoin::Live),
        "mid-GOP, nothing cached: wait for the next keyframe"
    );
    publish_keyframe(&hub, 2, 3000, t0);
    hub.publish_rtp(Track::Video, &rtp_at(7, 6000, &[0x41]), t0 + ms(33))
        .unwrap();
    // However old the keyframe is.
    let RtpJoin::Cached(gop) = hub.join_rtp(t0 + ms(1900)) else {
        panic!("expected the cached GOP")
    };
    assert_eq!(gop.len(), 6);
    // A new run forgets the old run's GOP.
    hub.begin_run(None);
    assert!(matches!(hub.join_rtp(t0 + ms(2000)), RtpJoin::Live));
    assert_eq!(hub.stats().rtp_gop_joins, 1);
}
