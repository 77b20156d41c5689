//! Layers: the same stream encoded a few times (full size; a quarter of the
//! bitrate at half the size; a very low one), each ONCE, each with a hub of
//! its own — its own TS fan-out, RTP tracks, GOP caches and keyframe source
//! — so a viewer moves between layers by taking another layer's receiver.
//!
//! Layer 0 is the stream's hub itself (what every one-layer stream has and
//! every producer feeds); layers 1.. hang off it and are reached through
//! [`Hub::layer`]. A run begins and ends for all layers at once (see
//! [`Hub::begin_run`]). Audio RTP goes to layer 0 only (a WebRTC viewer takes
//! its audio from there, whatever its video layer); each layer's TS carries
//! the audio too, so an HTTP viewer of any layer hears it.

use serde::Serialize;

use super::{Hub, HubConfig, OutCounters};

/// At most this many layers per stream (0, 1, 2).
pub const MAX_LAYERS: usize = 3;

/// What one layer is, as its producer made it: for the selector (its
/// nominal bitrate before one is measured), the player page and the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LayerInfo {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// The encoder's target (video only), kbit/s.
    pub bitrate_kbps: u32,
}

impl Hub {
    /// A hub with `count` layers (clamped to 1..=[`MAX_LAYERS`]): this hub is
    /// layer 0, the others share its config and its byte counters.
    pub fn with_layers(cfg: HubConfig, count: usize) -> Self {
        let out = std::sync::Arc::new(OutCounters::default());
        let extra = (1..count.clamp(1, MAX_LAYERS))
            .map(|_| Self::build(cfg.clone(), Vec::new(), out.clone()))
            .collect();
        Self::build(cfg, extra, out)
    }

    /// How many layers this stream has (1 when it has none but itself).
    pub fn layer_count(&self) -> usize {
        1 + self.inner.layers.len()
    }

    /// Layer `i`: 0 is this hub; `None` past the last.
    pub fn layer(&self, i: usize) -> Option<Hub> {
        match i {
            0 => Some(self.clone()),
            _ => self.inner.layers.get(i - 1).cloned(),
        }
    }

    /// Every layer, 0 first.
    pub fn layers(&self) -> impl Iterator<Item = Hub> + '_ {
        std::iter::once(self.clone()).chain(self.inner.layers.iter().cloned())
    }

    /// The producer says what this layer is (kept across runs).
    pub fn set_layer_info(&self, info: LayerInfo) {
        self.lock().layer_info = Some(info);
    }

    /// What this layer is; `None` until its producer said.
    pub fn layer_info(&self) -> Option<LayerInfo> {
        self.lock().layer_info
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::hub::Track;

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x80,
            102,
            (seq >> 8) as u8,
            seq as u8,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            7,
        ];
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn layers_are_separate_fan_outs_that_begin_and_end_runs_together() {
        let hub = Hub::with_layers(HubConfig::default(), 3);
        assert_eq!(hub.layer_count(), 3);
        assert!(hub.layer(3).is_none());
        assert_eq!(
            Hub::with_layers(HubConfig::default(), 9).layer_count(),
            MAX_LAYERS
        );
        assert_eq!(Hub::with_layers(HubConfig::default(), 0).layer_count(), 1);
        let (Some(l1), Some(l2)) = (hub.layer(1), hub.layer(2)) else {
            panic!("three layers were asked for");
        };
        let mut sub1 = l1.rtp_receivers();
        let mut sub0 = hub.rtp_receivers();
        hub.begin_run(None);
        let now = Instant::now();
        // An IDR (NAL type 5) on layer 1 reaches layer 1's receivers only.
        l1.publish_rtp(Track::Video, &rtp(1, &[0x65, 1, 2]), now)
            .unwrap_or_else(|e| panic!("a valid packet: {e}"));
        let got = sub1
            .video
            .try_recv()
            .unwrap_or_else(|e| panic!("layer 1 packet: {e}"));
        assert!(got.key);
        assert_eq!(got.epoch, 1, "layer 1 began the run with layer 0");
        assert!(sub0.video.try_recv().is_err(), "layer 0 got nothing");
        assert_eq!(l1.stats().keyframes_rtp, 1);
        assert_eq!(hub.stats().keyframes_rtp, 0);
        // A new run: every layer's epoch moves on.
        hub.begin_run(None);
        l2.publish_rtp(Track::Video, &rtp(2, &[0x41, 1]), now)
            .unwrap_or_else(|e| panic!("a valid packet: {e}"));
        l1.publish_rtp(Track::Video, &rtp(2, &[0x41, 1]), now)
            .unwrap_or_else(|e| panic!("a valid packet: {e}"));
        let got = sub1
            .video
            .try_recv()
            .unwrap_or_else(|e| panic!("layer 1 packet: {e}"));
        assert_eq!(got.epoch, 2);
        // Counters are shared: the stream's bytes are counted once, in any layer.
        l2.out()
            .whep_bytes
            .fetch_add(5, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            hub.out()
                .whep_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            5
        );
        let info = LayerInfo {
            width: 640,
            height: 360,
            fps: 30,
            bitrate_kbps: 1000,
        };
        l1.set_layer_info(info);
        assert_eq!(hub.layer(1).and_then(|h| h.layer_info()), Some(info));
        assert_eq!(hub.layer_info(), None);
    }
}
