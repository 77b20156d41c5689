//! What `browser/sampler.mjs` prints once per second of Chromium's clock,
//! and the per-second figures made from two samples in a row: frames
//! decoded, the picture's height and layer, freezes, packets lost. Pure: the
//! tests and `pixelpass-bench adapt` judge and print these.

use serde::{Deserialize, Serialize};

/// Chromium's `inbound-rtp` video statistics (the fields the sampler reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VideoStats {
    pub frames_decoded: u64,
    pub frames_per_second: Option<f64>,
    pub frame_width: Option<u32>,
    pub frame_height: Option<u32>,
    pub freeze_count: u64,
    /// Seconds; a freeze is added when it ends (the next frame is shown).
    pub total_freezes_duration: f64,
    pub packets_lost: i64,
    pub packets_received: u64,
    pub jitter: f64,
    pub nack_count: u64,
    pub pli_count: u64,
    pub frames_dropped: u64,
    pub bytes_received: u64,
    pub key_frames_decoded: u64,
}

/// Chromium's `inbound-rtp` audio statistics.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AudioStats {
    pub packets_received: u64,
    pub packets_lost: i64,
}

/// The selected ICE candidate pair: which path the media took.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Pair {
    /// `ADDR:PORT` of the server's candidate.
    pub remote: Option<String>,
    /// Seconds (STUN consent round trips).
    pub rtt: Option<f64>,
    pub available_incoming_bitrate: Option<f64>,
}

/// `window.pixelpassState`, when the player page sets it (the per-peer layer
/// selector's view: the layer it sends, whether video is paused, its
/// bandwidth estimate, the loss and round trip it sees, the picture size).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct PixelpassState {
    pub layer: Option<u32>,
    pub paused: Option<bool>,
    pub estimate_bps: Option<f64>,
    pub loss: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// One line of the sampler.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Sample {
    /// Sample number: taken at the page's t0 + t seconds.
    pub t: u32,
    /// Milliseconds since t0 by the page's clock when it was taken.
    pub ms: f64,
    /// Peer connections the page has made so far (more than one: it reconnected).
    pub pcs: u32,
    /// The newest peer connection's `connectionState`.
    pub conn: Option<String>,
    /// The player page's own state line ("live", "reconnecting", …).
    pub page: Option<String>,
    pub video: Option<VideoStats>,
    pub audio: Option<AudioStats>,
    pub pair: Option<Pair>,
    pub pixelpass: Option<PixelpassState>,
}

impl Sample {
    pub fn height(&self) -> Option<u32> {
        self.video
            .as_ref()
            .and_then(|v| v.frame_height)
            .filter(|&h| h > 0)
    }
}

/// A freeze is at least this long in Chromium (a frame delay of at least
/// max(3 × the average, the average + 150 ms)); bounds the longest of
/// several freezes that ended in the same second.
pub const MIN_FREEZE_S: f64 = 0.15;

/// The second that ends with sample `t`: what changed since sample `t - 1`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Second {
    /// The sample that ends it.
    pub t: u32,
    /// Its length by the page's clock, seconds (≈ 1).
    pub secs: f64,
    /// Video frames decoded in it.
    pub frames: u64,
    pub fps: f64,
    /// The picture at its end (None: no video yet).
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The layer: the page's `pixelpassState.layer`, else inferred from the height.
    pub layer: Option<u32>,
    /// True when `layer` was inferred from the height.
    pub layer_inferred: bool,
    pub estimate_bps: Option<f64>,
    pub paused: Option<bool>,
    /// Freezes that ended in it and their total length (seconds).
    pub freezes: u64,
    pub freeze_s: f64,
    /// Video packets lost (Chromium's count: missing after NACKs).
    pub lost: i64,
    pub nacks: u64,
    pub audio_packets: u64,
    /// The page made a new peer connection in it (its counters restarted).
    pub reconnected: bool,
}

impl Second {
    /// The longest freeze that ended in this second, at most.
    pub fn longest_freeze_at_most(&self) -> f64 {
        if self.freezes == 0 {
            0.0
        } else {
            (self.freeze_s - MIN_FREEZE_S * (self.freezes - 1) as f64).max(0.0)
        }
    }
}

/// The layer a picture of `height` belongs to when layer 0 is `full` high:
/// 0 at ≥ 90 % of it, 1 at ≥ 40 % (layer 1 is half size), 2 below; None
/// without a picture.
pub fn infer_layer(height: Option<u32>, full: u32) -> Option<u32> {
    let h = u64::from(height?);
    let full = u64::from(full.max(1));
    Some(if h * 10 >= full * 9 {
        0
    } else if h * 10 >= full * 4 {
        1
    } else {
        2
    })
}

/// The seconds between consecutive samples (one fewer than the samples).
pub fn seconds(samples: &[Sample], full_height: u32) -> Vec<Second> {
    samples
        .windows(2)
        .map(|w| second(&w[0], &w[1], full_height))
        .collect()
}

fn second(a: &Sample, b: &Sample, full_height: u32) -> Second {
    let reconnected = b.pcs != a.pcs;
    let zero_v = VideoStats::default();
    let zero_a = AudioStats::default();
    // After a reconnect the new connection's counters count from zero.
    let va = if reconnected {
        &zero_v
    } else {
        a.video.as_ref().unwrap_or(&zero_v)
    };
    // No video stats now (the page closed its connection to make a new
    // one): nothing counted in this second rather than counters at zero.
    let vb = b.video.as_ref().unwrap_or(va);
    let aa = if reconnected {
        &zero_a
    } else {
        a.audio.as_ref().unwrap_or(&zero_a)
    };
    let ab = b.audio.as_ref().unwrap_or(&zero_a);
    let secs = ((b.ms - a.ms) / 1000.0).max(1e-3);
    let frames = vb.frames_decoded.saturating_sub(va.frames_decoded);
    let state = b.pixelpass.as_ref();
    let reported = state.and_then(|s| s.layer);
    Second {
        t: b.t,
        secs,
        frames,
        fps: frames as f64 / secs,
        width: vb.frame_width.filter(|&w| w > 0),
        height: b.height(),
        layer: reported.or_else(|| infer_layer(b.height(), full_height)),
        layer_inferred: reported.is_none(),
        estimate_bps: state.and_then(|s| s.estimate_bps),
        paused: state.and_then(|s| s.paused),
        freezes: vb.freeze_count.saturating_sub(va.freeze_count),
        freeze_s: (vb.total_freezes_duration - va.total_freezes_duration).max(0.0),
        lost: vb.packets_lost - va.packets_lost,
        nacks: vb.nack_count.saturating_sub(va.nack_count),
        audio_packets: ab.packets_received.saturating_sub(aa.packets_received),
        reconnected,
    }
}

/// Totals over some seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub secs: f64,
    pub frames: u64,
    /// Frames decoded per second of the window.
    pub fps: f64,
    pub freezes: u64,
    /// Freezes that ended in the window (Chromium's totalFreezesDuration).
    pub freeze_s: f64,
    /// Seconds without a decoded frame: a freeze that has not ended (the
    /// picture never came back, or not yet) is in these, not in `freeze_s`.
    pub stalled_s: f64,
    /// Frozen time as a fraction of the window: the larger of `freeze_s`
    /// and `stalled_s` (the two overlap, so they are not added).
    pub freeze_fraction: f64,
    pub lost: i64,
    pub audio_packets: u64,
    pub reconnects: usize,
}

pub fn window(secs: &[Second]) -> Window {
    let total = secs.iter().fold(0.0, |a, s| a + s.secs);
    let frames = secs.iter().map(|s| s.frames).sum();
    // fold from +0.0: an empty f64 `sum` is -0.0, printed "-0".
    let freeze_s = secs.iter().fold(0.0, |a, s| a + s.freeze_s);
    let stalled_s = secs
        .iter()
        .filter(|s| s.frames == 0)
        .fold(0.0, |a, s| a + s.secs);
    let t = total.max(1e-3);
    Window {
        secs: total,
        frames,
        fps: frames as f64 / t,
        freezes: secs.iter().map(|s| s.freezes).sum(),
        freeze_s,
        stalled_s,
        freeze_fraction: freeze_s.max(stalled_s) / t,
        lost: secs.iter().map(|s| s.lost).sum(),
        audio_packets: secs.iter().map(|s| s.audio_packets).sum(),
        reconnects: secs.iter().filter(|s| s.reconnected).count(),
    }
}

/// `t:height` per second, e.g. `11:540 12:270 13:-` (for failure messages).
pub fn heights(secs: &[Second]) -> String {
    secs.iter()
        .map(|s| match s.height {
            Some(h) => format!("{}:{h}", s.t),
            None => format!("{}:-", s.t),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `t:fps` per second, rounded (for failure messages).
pub fn fps_list(secs: &[Second]) -> String {
    secs.iter()
        .map(|s| format!("{}:{:.0}", s.t, s.fps))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: u32, frames: u64, height: u32, freezes: u64, frozen: f64) -> Sample {
        Sample {
            t,
            ms: f64::from(t) * 1000.0,
            pcs: 1,
            video: Some(VideoStats {
                frames_decoded: frames,
                frame_height: Some(height),
                freeze_count: freezes,
                total_freezes_duration: frozen,
                ..VideoStats::default()
            }),
            ..Sample::default()
        }
    }

    #[test]
    fn a_sampler_line_parses_with_missing_fields() {
        let line = r#"{"t":3,"ms":3000.4,"pcs":1,"conn":"connected","page":"live",
            "video":{"framesDecoded":90,"frameHeight":540,"freezeCount":0,"totalFreezesDuration":0,"packetsLost":2},
            "audio":null,"pair":{"remote":"198.51.100.1:8861","rtt":0.08},
            "pixelpass":{"layer":1,"estimate_bps":900000}}"#;
        let s: Sample = serde_json::from_str(line).unwrap();
        assert_eq!(s.height(), Some(540));
        assert_eq!(s.pixelpass.as_ref().unwrap().layer, Some(1));
        assert_eq!(s.pair.unwrap().remote.as_deref(), Some("198.51.100.1:8861"));
        let none: Sample =
            serde_json::from_str(r#"{"t":0,"ms":0,"pcs":0,"video":null,"pixelpass":null}"#)
                .unwrap();
        assert_eq!(none.height(), None);
    }

    #[test]
    fn seconds_are_deltas_and_the_layer_is_inferred_from_the_height() {
        let s = [
            sample(0, 0, 540, 0, 0.0),
            sample(1, 30, 540, 0, 0.0),
            sample(2, 55, 270, 1, 0.4),
            sample(3, 56, 100, 3, 1.5),
        ];
        let secs = seconds(&s, 540);
        assert_eq!(secs.len(), 3);
        assert_eq!((secs[0].frames, secs[0].layer), (30, Some(0)));
        assert_eq!(
            (secs[1].frames, secs[1].layer, secs[1].freezes),
            (25, Some(1), 1)
        );
        assert!((secs[1].longest_freeze_at_most() - 0.4).abs() < 1e-9);
        assert_eq!(secs[2].layer, Some(2));
        // Two freezes, 1.1 s together: the longer one is at most 0.95 s.
        assert!((secs[2].longest_freeze_at_most() - 0.95).abs() < 1e-9);
        let w = window(&secs);
        assert_eq!(w.frames, 56);
        assert!((w.freeze_fraction - 1.5 / 3.0).abs() < 1e-9);
        // A picture that stopped and never came back has no freeze yet.
        let stuck = [
            sample(0, 30, 540, 0, 0.0),
            sample(1, 30, 540, 0, 0.0),
            sample(2, 30, 540, 0, 0.0),
        ];
        let w = window(&seconds(&stuck, 540));
        assert_eq!(
            (w.freeze_s, w.stalled_s, w.freeze_fraction),
            (0.0, 2.0, 1.0)
        );
        assert_eq!(heights(&secs), "1:540 2:270 3:100");
    }

    #[test]
    fn a_reported_layer_wins_and_a_reconnect_restarts_the_counters() {
        let mut a = sample(0, 300, 540, 2, 1.0);
        let mut b = sample(1, 20, 270, 0, 0.0);
        b.pcs = 2;
        b.pixelpass = Some(PixelpassState {
            layer: Some(2),
            ..PixelpassState::default()
        });
        a.pcs = 1;
        let s = second(&a, &b, 540);
        assert!(s.reconnected);
        assert_eq!(
            (s.frames, s.freezes, s.layer, s.layer_inferred),
            (20, 0, Some(2), false)
        );
        // The old connection closed before the new one came: no stats, no negative counts.
        let mut gone = sample(2, 0, 0, 0, 0.0);
        gone.video = None;
        let s = second(&sample(1, 300, 540, 2, 1.0), &gone, 540);
        assert_eq!((s.frames, s.lost, s.freezes, s.height), (0, 0, 0, None));
    }
}
