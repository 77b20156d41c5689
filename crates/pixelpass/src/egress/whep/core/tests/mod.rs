//! The core driven by hand: in-process str0m client peers, datagrams moved
//! between them and the core in memory, a fake clock ([`net`]). No socket,
//! no sleep.

mod layers;
mod net;
mod pace;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use net::*;

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
    let ts = first.header.timestamp;
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
    // The sender keeps its history compact and puts a packet back together
    // to resend it: what arrives is the packet that was lost, field by field.
    let again = &net.clients[c].rx[2];
    assert_eq!(again.header.sequence_number, seq.wrapping_add(1));
    assert_eq!(again.header.timestamp, ts.wrapping_add(3000));
    assert!(again.header.marker);
    assert_eq!(&again.payload[..], &[0x41, 2, 0xaa, 0xbb]);
    assert_eq!(net.clients[c].rx[1].header.timestamp, ts.wrapping_add(6000));
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

#[test]
fn a_new_viewer_from_the_address_of_a_vanished_one_connects_before_its_timeout() {
    // The kernel hands a closed UDP port out again (a reloaded page, a NAT
    // keeping its mapping): the vanished viewer's peer still lives until its
    // consent timeout, and str0m's `accepts` says yes to anything from that
    // peer's address, the new viewer's STUN too.
    let mut net = Net::new();
    let old = net.connect();
    net.publish_video(true, 1);
    net.deliver_media();
    net.advance(100 * MS);
    net.clients[old].silent = true;
    let addr = net.clients[old].addr;
    let new = net.connect_at(addr);
    assert!(net.clients[new].connected);
    let resource = net.clients[old].resource.clone();
    assert!(
        net.core.has_peer(&resource),
        "connected while the vanished viewer's peer still waited for its timeout"
    );
    assert_eq!(net.core.peer_count(), 2);
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
    // Unpaced, so the whole frame is due at once (paced, each peer's window
    // lets 15 of these tiny datagrams go per 5 ms).
    let mut net = Net::with_pacing(false);
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
        net.core.handle_sent(now);
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
