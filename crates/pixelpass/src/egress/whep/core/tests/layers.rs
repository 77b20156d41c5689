//! Layers in the core: a viewer's video moves between layers at a keyframe
//! of the target layer, with no sequence gap, audio untouched; and a link
//! that cannot carry a layer moves the viewer down by itself (str0m's real
//! estimator, fed by the client's real TWCC feedback, on the fake clock).

use std::sync::atomic::Ordering;

use super::net::*;
use crate::egress::whep::select::{Choice, Mode};
use crate::hub::LayerInfo;

/// The client's video packets: (tag, sequence number, RTP timestamp).
fn video(net: &Net, c: usize) -> Vec<(u8, u64, u32)> {
    net.clients[c]
        .rx
        .iter()
        .filter(|p| p.payload.len() == 4)
        .map(|p| (p.payload[1], *p.seq_no, p.header.timestamp))
        .collect()
}

fn frame_gap(net: &mut Net) {
    net.deliver_media();
    net.advance(33 * MS);
}

#[test]
fn a_chosen_layer_starts_at_its_keyframe_with_no_sequence_gap() {
    let (mut net, encoders) = Net::with_layers(2);
    let c = net.connect();
    net.advance(30 * MS);
    net.publish_video(true, 1);
    net.publish_video_on(1, true, 101); // not this viewer's layer
    frame_gap(&mut net);
    net.publish_video(false, 2);
    net.publish_video_on(1, false, 102);
    frame_gap(&mut net);
    // Past the keyframe rate limit of layer 1 (its keyframe above was recent).
    net.advance(600 * MS);
    let before = encoders[0].0.load(Ordering::SeqCst);
    let now = net.now;
    assert!(net
        .core
        .set_layer(now, "r0", Mode::Pinned(Choice::Layer(1))));
    assert_eq!(
        encoders[0].0.load(Ordering::SeqCst),
        before + 1,
        "layer 1's encoder is asked for a keyframe"
    );
    // Until it comes, layer 0 goes on and layer 1's delta frames wait.
    net.publish_video(false, 3);
    net.publish_video_on(1, false, 103);
    frame_gap(&mut net);
    net.publish_audio();
    net.publish_video(false, 4);
    frame_gap(&mut net);
    net.publish_video_on(1, true, 104);
    frame_gap(&mut net);
    // From here layer 0 is not this viewer's (the harness hands the core
    // layer 0's packets first in a tick: 5 comes before 105, and is skipped).
    net.publish_video_on(1, false, 105);
    net.publish_video(false, 5);
    frame_gap(&mut net);
    net.advance(100 * MS);
    let got = video(&net, c);
    let tags: Vec<u8> = got.iter().map(|g| g.0).collect();
    assert_eq!(tags, [1, 2, 3, 4, 104, 105]);
    let audio = net.clients[c]
        .rx
        .iter()
        .filter(|p| p.payload.len() == 80)
        .count();
    assert_eq!(audio, 1, "audio goes on, from layer 0");
    assert!(
        got.windows(2).all(|w| w[1].1 == w[0].1 + 1),
        "no sequence gap across the switch: {got:?}"
    );
    assert!(
        got.windows(2).all(|w| w[1].2.wrapping_sub(w[0].2) < 90_000),
        "timestamps run on (rebased): {got:?}"
    );
    // Back to auto on an unknown link: it stays where it is.
    let now = net.now;
    net.core.set_layer(now, "r0", Mode::Auto);
    let view = net.core.index_view("r0");
    assert_eq!((view.layer, view.mode), (Some(1), "auto"));
}

#[test]
fn a_link_that_cannot_carry_layer_0_moves_the_viewer_down_by_itself() {
    let (mut net, _encoders) = Net::with_layers(2);
    // Layer 0 far above the estimator's start (1.5 Mbit/s); layer 1 well under it.
    for (i, kbps) in [(0, 50_000), (1, 300)] {
        net.hub.layer(i).unwrap().set_layer_info(LayerInfo {
            width: 1280 >> i,
            height: 720 >> i,
            fps: 30,
            bitrate_kbps: kbps,
        });
    }
    let c = net.connect();
    let mut tags = Vec::new();
    for i in 0..120u8 {
        // A frame a tick on each layer, a keyframe every 30.
        let key = i % 30 == 0;
        net.publish_video(key, i % 100);
        net.publish_video_on(1, key, 100 + i % 100);
        frame_gap(&mut net);
        tags = video(&net, c).iter().map(|g| g.0).collect::<Vec<u8>>();
        if tags.last().is_some_and(|t| *t >= 100) {
            break;
        }
    }
    let view = net.core.index_view("r0");
    assert_eq!(view.layer, Some(1), "{view:?} after {tags:?}");
    assert_eq!(view.estimate_from, Some("twcc"), "{view:?}");
    assert!(
        view.estimate_bps.is_some_and(|e| e < 50_000_000),
        "{view:?}"
    );
    let first_on_1 = tags.iter().position(|t| *t >= 100).unwrap_or(usize::MAX);
    assert!(
        first_on_1 <= 95,
        "down within ~3 s of frames (1 s of congestion + the next keyframe): {tags:?}"
    );
    assert!(tags[first_on_1..].iter().all(|t| *t >= 100), "{tags:?}");
}
