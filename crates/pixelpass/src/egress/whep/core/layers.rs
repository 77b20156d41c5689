//! Layers in the core: a stream's feeds (one hub subscription per layer,
//! open while the stream has a connected peer), which layer's packets each
//! peer is written, and the layer choice made from its link
//! ([`crate::egress::whep::layer`], [`crate::egress::whep::select`]).

use std::sync::Arc;
use std::time::Instant;

use str0m::bwe::Bitrate;

use super::{Core, Event, Feed, MediaMsg, Output, PeerId, StreamFeeds};
use crate::egress::whep::layer::Route;
use crate::egress::whep::pacer::RateMeter;
use crate::egress::whep::peer::Peer;
use crate::egress::whep::select::Mode;
use crate::hub::{Hub, Track};

/// Write one hub packet of `layer`'s feed to `peer`, as its layer says:
/// audio from layer 0 only; video from the layer it is on, or from the
/// layer it switches to once that layer's keyframe comes. True when the
/// peer switched layer on this packet.
pub(super) fn deliver(peer: &mut Peer, layer: u8, m: &MediaMsg, now: Instant) -> bool {
    let mut switched = false;
    match (m.track, &m.pkt) {
        (Track::Audio, Some(pkt)) if layer == 0 => peer.write(Track::Audio, pkt, now),
        (Track::Audio, _) => {}
        (Track::Video, Some(pkt)) => match peer.layer.route(layer, pkt.key) {
            Route::Skip => {}
            Route::Write => peer.write(Track::Video, pkt, now),
            Route::SwitchAndWrite => {
                tracing::info!(resource = %crate::token::short(&peer.resource), layer, "WebRTC viewer switched layer");
                peer.switch_video();
                peer.write(Track::Video, pkt, now);
                switched = true;
            }
        },
        (Track::Video, None) if peer.layer.on() == Some(layer) => peer.lagged(Track::Video),
        (Track::Video, None) => {}
    }
    switched
}

impl Core {
    /// `id` joins `stream`'s feeds; the stream's first peer opens one per layer.
    pub(super) fn join_feeds(&mut self, stream: &Arc<str>, hub: &Hub, id: PeerId) {
        if let Some(sf) = self.feeds.get_mut(stream) {
            sf.peers.push(id);
            return;
        }
        let mut layers = Vec::new();
        for layer in hub.layers() {
            let feed = self.next_id;
            self.next_id += 1;
            let sub = layer.rtp_receivers();
            self.out
                .push_back(Output::Event(Event::FeedOpened { feed, sub }));
            layers.push(Feed {
                id: feed,
                rate: RateMeter::default(),
            });
        }
        self.feeds.insert(
            stream.clone(),
            StreamFeeds {
                peers: vec![id],
                layers,
            },
        );
    }

    /// `id` leaves `stream`'s feeds; the last one out closes them.
    pub(super) fn leave_feeds(&mut self, stream: &Arc<str>, id: PeerId) {
        let Some(sf) = self.feeds.get_mut(stream) else {
            return;
        };
        sf.peers.retain(|p| *p != id);
        if !sf.peers.is_empty() {
            return;
        }
        if let Some(sf) = self.feeds.remove(stream) {
            for f in sf.layers {
                self.out
                    .push_back(Output::Event(Event::FeedClosed { feed: f.id }));
            }
        }
    }

    /// Each layer's bitrate (bit/s): as measured on its feed, else what its
    /// producer said it aims for, else 0 (unknown).
    pub(super) fn layer_rates(&self, stream: &str, hub: &Hub) -> Vec<u64> {
        let measured = self.feeds.get(stream);
        hub.layers()
            .enumerate()
            .map(|(i, h)| {
                let m = measured
                    .and_then(|sf| sf.layers.get(i))
                    .map_or(0, |f| f.rate.bps());
                if m > 0 {
                    m
                } else {
                    h.layer_info()
                        .map_or(0, |info| u64::from(info.bitrate_kbps) * 1000)
                }
            })
            .collect()
    }

    /// A PLI/FIR from the peer: asked of the layer it is on (or moving to).
    pub(super) fn request_keyframe(&mut self, id: PeerId, now: Instant) {
        #[cfg(test)]
        {
            self.keyframe_requests += 1;
        }
        let (Some(peer), Some(hub)) = (self.peers.get(&id), self.hubs.get(&id)) else {
            return;
        };
        let l = peer.layer.wanted().unwrap_or(0);
        if let Some(h) = hub.layer(usize::from(l)) {
            h.request_keyframe(now);
        }
    }

    /// New word on a peer's link: choose its layer, tell str0m what to
    /// probe for, show it in the index.
    pub(super) fn after_link(&mut self, id: PeerId, now: Instant) {
        let Some(hub) = self.hubs.get(&id).cloned() else {
            return;
        };
        let Some(stream) = self.peers.get(&id).map(|p| p.stream.clone()) else {
            return;
        };
        let rates = self.layer_rates(&stream, &hub);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let Some(target) = peer.layer.on_link(now, &peer.link, &rates) {
            tracing::info!(
                resource = %crate::token::short(&peer.resource),
                target = ?target,
                estimate_bps = ?peer.link.estimate,
                loss = ?peer.link.loss,
                "WebRTC viewer's layer changes"
            );
            if let Some(h) = target.and_then(|l| hub.layer(usize::from(l))) {
                h.request_keyframe(now);
            }
        }
        if let Some(from) = peer
            .layer
            .restart_estimator(now, peer.link.estimate, &rates)
        {
            tracing::debug!(resource = %crate::token::short(&peer.resource), from, "bandwidth estimate stuck below the next layer: estimating anew");
            peer.rtc.bwe().reset(Bitrate::bps(from));
        }
        if let Some((minimum, desired)) = peer.layer.probe(now, peer.link.estimate, &rates) {
            peer.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
        }
        self.index
            .set_view(&peer.resource, peer.layer.view(&peer.link));
    }

    /// The viewer chose a layer (or auto) on the player page. `false` when
    /// there is no such peer.
    pub fn set_layer(&mut self, now: Instant, resource: &str, mode: Mode) -> bool {
        let Some(&id) = self.by_resource.get(resource) else {
            return false;
        };
        let (Some(peer), Some(hub)) = (self.peers.get_mut(&id), self.hubs.get(&id)) else {
            return false;
        };
        if let Some(Some(l)) = peer.layer.set_mode(mode) {
            if let Some(h) = hub.layer(usize::from(l)) {
                h.request_keyframe(now);
            }
        }
        tracing::info!(resource = %crate::token::short(&peer.resource), ?mode, "WebRTC viewer chose a layer");
        self.index
            .set_view(&peer.resource, peer.layer.view(&peer.link));
        true
    }
}
