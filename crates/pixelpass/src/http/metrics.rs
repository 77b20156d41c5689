//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of every
//! stream. Written by hand: a dozen families, no registry needed. Stream ids
//! are `[A-Za-z0-9_-]` (validated), so labels need no escaping.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::restream::Sample;
use crate::supervisor::State;
use crate::whip::PublisherView;

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
    }
}

/// `engine`: the WebRTC engine's load (see [`crate::egress::whep::load`]).
pub fn render(samples: &[Sample], engine: &crate::egress::whep::load::Load) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    f.head(
        "pixelpass_webrtc_engine_load",
        "gauge",
        "Share of the time the WebRTC engine is busy (smoothed over about 1 s); new WebRTC viewers are refused past --webrtc-max-load.",
    );
    let _ = writeln!(f.out, "pixelpass_webrtc_engine_load {:.3}", engine.share());
    f.head(
        "pixelpass_webrtc_refused_total",
        "counter",
        "WebRTC viewers refused (503) because the engine was past --webrtc-max-load.",
    );
    let _ = writeln!(f.out, "pixelpass_webrtc_refused_total {}", engine.refused());

    f.head(
        "pixelpass_stream_state",
        "gauge",
        "1 for the stream's current state (idle, starting, live, stopping, failed).",
    );
    for s in samples {
        for st in State::ALL {
            let v = u8::from(s.status.state == st);
            f.line(
                "pixelpass_stream_state",
                &format!("stream=\"{}\",state=\"{st}\"", s.id),
                v,
            );
        }
    }
    f.head(
        "pixelpass_stream_restarts_total",
        "counter",
        "Restarts of the stream's FFmpeg process (reconnects and restart orders).",
    );
    for s in samples {
        f.line(
            "pixelpass_stream_restarts_total",
            &format!("stream=\"{}\"", s.id),
            s.status.restarts,
        );
    }
    f.head(
        "pixelpass_stream_viewers",
        "gauge",
        "Viewers watching now, by kind (http = MPEG-TS, whep = WebRTC, hls = LL-HLS client addresses: a cache is one).",
    );
    for s in samples {
        for (kind, n) in [
            ("http", s.viewers.http),
            ("whep", s.viewers.whep),
            ("hls", s.viewers.hls),
        ] {
            f.line(
                "pixelpass_stream_viewers",
                &format!("stream=\"{}\",kind=\"{kind}\"", s.id),
                n,
            );
        }
    }
    f.head(
        "pixelpass_stream_bytes_out_total",
        "counter",
        "Media bytes sent to viewers, by kind (TS bytes; RTP payload bytes; LL-HLS media served).",
    );
    for s in samples {
        for (kind, n) in [
            ("http", s.bytes_out.http),
            ("whep", s.bytes_out.whep),
            ("hls", s.bytes_out.hls),
        ] {
            f.line(
                "pixelpass_stream_bytes_out_total",
                &format!("stream=\"{}\",kind=\"{kind}\"", s.id),
                n,
            );
        }
    }
    f.head(
        "pixelpass_stream_rtp_packets_in_total",
        "counter",
        "RTP packets received from FFmpeg, by track.",
    );
    for s in samples {
        let rtp = &s.process.rtp;
        for (track, c) in [("video", &rtp.video), ("audio", &rtp.audio)] {
            f.line(
                "pixelpass_stream_rtp_packets_in_total",
                &format!("stream=\"{}\",track=\"{track}\"", s.id),
                c.packets.load(Ordering::Relaxed),
            );
        }
    }
    f.head(
        "pixelpass_stream_rtp_packets_lost_total",
        "counter",
        "RTP packets FFmpeg sent that never arrived (sequence gaps), by track.",
    );
    for s in samples {
        let rtp = &s.process.rtp;
        for (track, c) in [("video", &rtp.video), ("audio", &rtp.audio)] {
            f.line(
                "pixelpass_stream_rtp_packets_lost_total",
                &format!("stream=\"{}\",track=\"{track}\"", s.id),
                c.lost.load(Ordering::Relaxed),
            );
        }
    }
    let progress: Vec<_> = samples
        .iter()
        .filter_map(|s| Some((s, s.process.progress()?)))
        .collect();
    f.head(
        "pixelpass_ffmpeg_fps",
        "gauge",
        "Frames per second FFmpeg encodes (its last -progress report).",
    );
    for (s, p) in &progress {
        f.line(
            "pixelpass_ffmpeg_fps",
            &format!("stream=\"{}\"", s.id),
            p.fps,
        );
    }
    f.head(
        "pixelpass_ffmpeg_speed",
        "gauge",
        "FFmpeg's speed relative to real time (1 = real time).",
    );
    for (s, p) in &progress {
        f.line(
            "pixelpass_ffmpeg_speed",
            &format!("stream=\"{}\"", s.id),
            p.speed,
        );
    }
    f.head(
        "pixelpass_ffmpeg_bitrate_kbps",
        "gauge",
        "FFmpeg's output bitrate in kbit/s.",
    );
    for (s, p) in &progress {
        f.line(
            "pixelpass_ffmpeg_bitrate_kbps",
            &format!("stream=\"{}\"", s.id),
            p.bitrate_kbps,
        );
    }
    f.head(
        "pixelpass_ffmpeg_dropped_frames",
        "gauge",
        "Frames FFmpeg dropped in its current run.",
    );
    for (s, p) in &progress {
        f.line(
            "pixelpass_ffmpeg_dropped_frames",
            &format!("stream=\"{}\"", s.id),
            p.drop_frames,
        );
    }
    let published: Vec<(&Sample, Option<&PublisherView>)> = samples
        .iter()
        .filter(|s| s.published)
        .map(|s| (s, s.publisher.as_ref()))
        .collect();
    f.head(
        "pixelpass_publisher_connected",
        "gauge",
        "1 while a WHIP publisher's media flows into a published stream.",
    );
    for (s, p) in &published {
        let v = u8::from(p.is_some_and(|p| p.connected));
        f.line(
            "pixelpass_publisher_connected",
            &format!("stream=\"{}\"", s.id),
            v,
        );
    }
    f.head(
        "pixelpass_publisher_bitrate_bps",
        "gauge",
        "Payload bits per second the current WHIP publisher sends (0 without one).",
    );
    for (s, p) in &published {
        let v = p.map_or(0, |p| p.bitrate_bps);
        f.line(
            "pixelpass_publisher_bitrate_bps",
            &format!("stream=\"{}\"", s.id),
            v,
        );
    }
    peers(&mut f, samples);
    out
}

/// Each WebRTC viewer's link and layer, labelled by stream and the peer's
/// short id (the report's `webrtc_peers[].peer`). A value not known yet is
/// left out rather than written as 0.
fn peers(f: &mut Family<'_>, samples: &[Sample]) {
    type Get = fn(&crate::egress::whep::PeerView) -> Option<f64>;
    let families: [(&str, &str, Get); 4] = [
        (
            "pixelpass_webrtc_peer_estimate_bps",
            "The viewer's bandwidth estimate in bit/s (TWCC, else the browser's REMB).",
            |v| v.estimate_bps.map(|b| b as f64),
        ),
        (
            "pixelpass_webrtc_peer_loss_ratio",
            "Fraction of video packets the viewer lost (its receiver reports).",
            |v| v.loss.map(f64::from),
        ),
        (
            "pixelpass_webrtc_peer_rtt_seconds",
            "Round-trip time to the viewer.",
            |v| v.rtt_ms.map(|ms| ms as f64 / 1000.0),
        ),
        (
            "pixelpass_webrtc_peer_layer",
            "The layer the viewer's video is on (-1: paused, below the lowest layer).",
            |v| Some(v.layer.map_or(-1.0, f64::from)),
        ),
    ];
    for (name, help, get) in families {
        f.head(name, "gauge", help);
        for s in samples {
            for p in &s.webrtc_peers {
                if let Some(v) = get(&p.view) {
                    f.line(name, &format!("stream=\"{}\",peer=\"{}\"", s.id, p.peer), v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ffmpeg::report::ProcessState;
    use crate::restream::{BytesOut, Viewers};
    use crate::supervisor::{Order, Status};

    #[test]
    fn the_state_gauge_uses_the_one_vocabulary() {
        let status = Status {
            state: State::Live,
            order: Order::Start,
            viewers: 0,
            max_viewers: 1,
            encoder: None,
            uptime_s: 0,
            live_s: 0,
            restarts: 0,
            last_error: None,
            start_failures: 0,
        };
        let sample = Sample {
            id: "lobby".into(),
            status,
            viewers: Viewers {
                http: 0,
                whep: 0,
                hls: 0,
                total: 0,
            },
            bytes_out: BytesOut {
                http: 0,
                whep: 0,
                hls: 0,
            },
            process: Arc::new(ProcessState::default()),
            published: false,
            publisher: None,
            webrtc_peers: vec![crate::egress::whep::PeerReport::new(
                "0123456789abcdef",
                crate::egress::whep::PeerView {
                    layer: None,
                    estimate_bps: Some(1_150_000),
                    rtt_ms: Some(81),
                    ..Default::default()
                },
            )],
        };
        let engine = crate::egress::whep::load::Load::new(90);
        engine.publish(250);
        let _ = engine.count_refusal(std::time::Instant::now());
        let text = render(&[sample], &engine);
        assert!(
            text.contains("\npixelpass_webrtc_engine_load 0.250\n")
                && text.contains("\npixelpass_webrtc_refused_total 1\n"),
            "{text}"
        );
        let states: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("pixelpass_stream_state{"))
            .collect();
        assert_eq!(
            states,
            [
                "pixelpass_stream_state{stream=\"lobby\",state=\"idle\"} 0",
                "pixelpass_stream_state{stream=\"lobby\",state=\"starting\"} 0",
                "pixelpass_stream_state{stream=\"lobby\",state=\"live\"} 1",
                "pixelpass_stream_state{stream=\"lobby\",state=\"stopping\"} 0",
                "pixelpass_stream_state{stream=\"lobby\",state=\"failed\"} 0",
            ]
        );
        let peers: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("pixelpass_webrtc_peer_"))
            .collect();
        assert_eq!(
            peers,
            [
                "pixelpass_webrtc_peer_estimate_bps{stream=\"lobby\",peer=\"01234567\"} 1150000",
                "pixelpass_webrtc_peer_rtt_seconds{stream=\"lobby\",peer=\"01234567\"} 0.081",
                "pixelpass_webrtc_peer_layer{stream=\"lobby\",peer=\"01234567\"} -1",
            ],
            "unknown loss is left out; a paused viewer is layer -1"
        );
    }
}
