//! Pacing through the core, on the fake clock: a keyframe of 100 datagrams
//! (live, or in a joining peer's cached GOP) reaches a peer in small groups
//! at the pacing rate; without pacing it leaves as one burst; audio does not
//! wait behind it.

use std::time::{Duration, Instant};

use super::net::*;
use crate::egress::whep::pacer::{MAX_QUEUE_TIME, WINDOW_DATAGRAMS};
use crate::egress::whep::peer::HOLD_SEALED;

/// Video payload bytes per packet: only video datagrams are longer.
const PAYLOAD: usize = 1100;

/// When the client got each of its video packets, in arrival order, and their sequence numbers.
fn video_rx(net: &Net, c: usize) -> (Vec<Instant>, Vec<u64>) {
    net.clients[c]
        .rx
        .iter()
        .filter(|p| p.payload.len() >= PAYLOAD)
        .map(|p| (p.timestamp, *p.seq_no))
        .unzip()
}

/// Most of `times` within any window of `w`.
fn max_in_window(times: &[Instant], w: Duration) -> usize {
    let (mut best, mut lo) = (0, 0);
    for hi in 0..times.len() {
        while times[hi].duration_since(times[lo]) >= w {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

fn assert_in_order(seqs: &[u64], n: usize) {
    assert_eq!(seqs.len(), n, "every packet arrived");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, no gap: {seqs:?}"
    );
}

#[test]
fn a_keyframe_reaches_a_peer_in_small_groups_at_the_pacing_rate() {
    let mut net = Net::with_pacing(true);
    let c = net.connect();
    net.advance(30 * MS);
    net.publish_frame(true, 100, PAYLOAD);
    net.deliver_media();
    net.advance(400 * MS);
    let (times, seqs) = video_rx(&net, c);
    assert_in_order(&seqs, 100);
    let most = max_in_window(&times, 5 * MS);
    assert!(most <= WINDOW_DATAGRAMS, "{most} within 5 ms (the window)");
    // 114 KB at the 5 Mbit/s floor: about 180 ms from first to last.
    let spread = times[99] - times[0];
    assert!(spread >= 150 * MS, "spread over {spread:?}");
}

/// The most bytes any peer's pacer held sealed.
fn most_sealed(net: &Net) -> usize {
    net.core
        .peers
        .values()
        .filter_map(|p| p.pacer.as_ref())
        .map(|p| p.queued_bytes())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_keyframe_waits_unsealed_while_the_pacer_holds_a_group() {
    let mut net = Net::with_pacing(true);
    let c = net.connect();
    net.advance(30 * MS);
    net.publish_frame(true, 100, PAYLOAD);
    net.deliver_media();
    let mut most = most_sealed(&net);
    for _ in 0..400 {
        net.advance(MS);
        most = most.max(most_sealed(&net));
    }
    let (times, seqs) = video_rx(&net, c);
    assert_in_order(&seqs, 100);
    // One datagram of ~1150 bytes may cross the line.
    assert!(
        most <= HOLD_SEALED + 1300,
        "{most} bytes sealed at once (of a 114 KB keyframe)"
    );
    assert!(most >= HOLD_SEALED / 2, "{most}: the pacer was kept fed");
    let spread = times[99] - times[0];
    assert!(spread >= 150 * MS, "still paced: spread over {spread:?}");
}

#[test]
fn a_huge_keyframe_held_unsealed_still_leaves_within_the_max_queue_time() {
    let mut net = Net::with_pacing(true);
    let c = net.connect();
    net.advance(30 * MS);
    // 684 KB: 1.1 s at the 5 Mbit/s floor.
    net.publish_frame(true, 600, PAYLOAD);
    net.deliver_media();
    net.advance(1500 * MS);
    let (times, seqs) = video_rx(&net, c);
    assert_in_order(&seqs, 600);
    let took = times[599] - times[0];
    assert!(
        took <= MAX_QUEUE_TIME + 50 * MS,
        "took {took:?} of fake time"
    );
}

#[test]
fn without_pacing_a_keyframe_leaves_as_one_burst() {
    let mut net = Net::with_pacing(false);
    let c = net.connect();
    net.advance(30 * MS);
    net.publish_frame(true, 100, PAYLOAD);
    net.deliver_media();
    net.advance(400 * MS);
    let (times, seqs) = video_rx(&net, c);
    assert_in_order(&seqs, 100);
    // What the paced test above rules out.
    assert_eq!(max_in_window(&times, 5 * MS), 100);
}

#[test]
fn audio_does_not_wait_behind_a_keyframe() {
    let mut net = Net::with_pacing(true);
    let c = net.connect();
    net.advance(30 * MS);
    let t0 = net.now;
    net.publish_frame(true, 100, PAYLOAD);
    net.publish_audio();
    net.deliver_media();
    net.advance(400 * MS);
    let (video, _) = video_rx(&net, c);
    let audio: Vec<Instant> = net.clients[c]
        .rx
        .iter()
        .filter(|p| p.payload.len() < PAYLOAD && p.payload.first() == Some(&0xfc))
        .map(|p| p.timestamp)
        .collect();
    assert_eq!(audio.len(), 1, "the Opus packet arrived");
    assert!(
        audio[0] <= t0 + MS,
        "audio at once: {:?} after it was published",
        audio[0] - t0
    );
    assert!(audio[0] < video[99], "ahead of the keyframe's tail");
}

#[test]
fn a_joining_peer_gets_the_cached_gop_paced_and_then_the_live_frames_in_order() {
    let mut net = Net::with_pacing(true);
    net.publish_frame(true, 100, PAYLOAD);
    for _ in 0..3 {
        net.publish_frame(false, 10, PAYLOAD);
    }
    net.now += 100 * MS; // within the keyframe rate limit: the cached GOP
    let c = net.connect();
    assert_eq!(net.keyframes_asked(), 0, "it starts on the cached GOP");
    net.publish_frame(false, 10, PAYLOAD);
    net.deliver_media();
    net.advance(600 * MS);
    let (times, seqs) = video_rx(&net, c);
    assert_in_order(&seqs, 140);
    let most = max_in_window(&times, 5 * MS);
    assert!(most <= WINDOW_DATAGRAMS, "{most} within 5 ms (the window)");
}
