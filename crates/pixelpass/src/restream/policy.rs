//! What a stream's settings mean to its supervisor (start, restart and
//! linger rules) and to its hub (how much GOP the cache holds), for FFmpeg
//! streams, FFmpeg streams that listen for a publisher, and WHIP streams.

use std::time::Duration;

use crate::config::stream::StreamConfig;
use crate::hub::HubConfig;
use crate::supervisor::Policy;

/// The supervisor policy of a stream's settings.
pub fn policy(c: &StreamConfig) -> Policy {
    if c.listening_input().is_some() {
        return listening_policy(c);
    }
    let delay = Duration::from_secs_f64(c.reconnect_delay_seconds).max(Duration::from_millis(100));
    Policy {
        name: c.id.clone(),
        max_viewers: c.max_viewers as usize,
        linger: Duration::from_secs_f64(c.linger),
        on_demand: c.on_demand,
        enabled: c.autostart || c.on_demand,
        restart: c.reconnect,
        teardown_on_failure: true,
        backoff_min: delay,
        // A stream that keeps failing right after its start backs off, doubling up to this.
        backoff_max: delay.max(Duration::from_secs(10)),
        ..Policy::default()
    }
}

/// The supervisor policy of a stream whose FFmpeg listens for an RTMP/SRT
/// publisher: a run ends when the publisher leaves, which is no crash, so it
/// listens again at once (after 100 ms, at most 1 s while runs keep failing
/// right away, e.g. a port in use) whatever `reconnect` says.
fn listening_policy(c: &StreamConfig) -> Policy {
    Policy {
        enabled: c.autostart,
        ..published_policy(c)
    }
}

/// The supervisor policy of a published stream: it waits for a publisher
/// from its creation; a publisher that leaves is a failed run, after which
/// it waits again at once (its viewers are closed first).
pub fn published_policy(c: &StreamConfig) -> Policy {
    Policy {
        name: c.id.clone(),
        max_viewers: c.max_viewers as usize,
        linger: Duration::from_secs_f64(c.linger),
        on_demand: false,
        enabled: true,
        restart: true,
        teardown_on_failure: true,
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        ..Policy::default()
    }
}

/// The hub of a published stream: joins start on the cached GOP first (OBS
/// ignores PLI), so the cache holds long GOPs (OBS's default is seconds).
pub fn published_hub_config() -> HubConfig {
    let d = HubConfig::default();
    HubConfig {
        rtp_gop_max_bytes: 8 << 20,
        rtp_gop_max_packets: 8000,
        gop_max_bytes: 16 << 20,
        rtp_join_cached_first: true,
        ..d
    }
}

/// The hub of a stream: FFmpeg cannot make keyframes on request, so a new
/// WebRTC peer starts on the cached GOP; size it for a whole GOP: ours
/// (bitrate × keyframe interval), or, when the input's H.264 may be copied,
/// whatever GOP the input has (the cache holds from its last keyframe, up to
/// a published stream's bounds; the report shows the GOP measured).
pub fn hub_config(c: &StreamConfig) -> HubConfig {
    if c.video != crate::config::VideoMode::Encode {
        return HubConfig {
            rtp_join_cached_first: false,
            ..published_hub_config()
        };
    }
    let gop_bytes = (f64::from(c.video_bitrate_kbps) * 1000.0 / 8.0
        * c.keyframe_interval_seconds
        * 2.0) as usize;
    let d = HubConfig::default();
    HubConfig {
        rtp_gop_max_bytes: gop_bytes.max(d.rtp_gop_max_bytes),
        rtp_gop_max_packets: (gop_bytes / 1000).max(d.rtp_gop_max_packets),
        gop_max_bytes: (gop_bytes * 2).max(d.gop_max_bytes),
        ..d
    }
}
