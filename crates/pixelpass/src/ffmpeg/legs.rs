//! What pixelpass asks of one FFmpeg child's outputs ([`Legs`]) and the
//! argument pieces every output leg is made of: the RTP URL, the H.264
//! encode. Shared by layer 0's legs ([`super::command`]) and the further
//! layers' ([`super::layers`]).

use crate::config::StreamConfig;

/// Which outputs to produce and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Legs {
    /// V: video RTP goes here, audio RTP to V+1 (both bound by pixelpass on 127.0.0.1).
    pub video_port: u16,
    /// `webrtc.enabled`: produce the RTP legs.
    pub rtp: bool,
    /// The input has sound: produce the Opus leg and put AAC in the TS.
    pub audio: bool,
    /// `http_ts`: MPEG-TS on stdout.
    pub ts: bool,
    pub video_pt: u8,
    pub audio_pt: u8,
    /// Copy the input's H.264 (`video = "copy"`, or `auto` that chose it).
    pub copy_video: bool,
    /// The input's audio is AAC: the TS carries it as it is.
    pub copy_aac: bool,
    /// Video RTP ports of layers 1 and 2 (see [`super::layers`]); 0: no such layer.
    pub layer_ports: [u16; 2],
}

impl Legs {
    /// The legs a stream's config asks for, with RTP to `video_port` and `video_port + 1`.
    pub fn for_stream(cfg: &StreamConfig, video_port: u16) -> Legs {
        Legs {
            video_port,
            rtp: cfg.webrtc.enabled,
            audio: cfg.audio,
            ts: cfg.http_ts,
            video_pt: cfg.webrtc.video_pt(),
            audio_pt: cfg.webrtc.audio_pt(),
            copy_video: false,
            copy_aac: false,
            layer_ports: [0; 2],
        }
    }

    /// Layers 1.. with their video RTP ports.
    pub fn extra_layers(&self) -> impl Iterator<Item = (usize, u16)> + '_ {
        (1..).zip(self.layer_ports).take_while(|(_, p)| *p != 0)
    }
}

/// Largest RTP datagram: leaves room for SRTP, UDP/IP and TURN/VPN overhead under a
/// typical 1280–1500 byte path MTU, so WebRTC viewers never see IP fragmentation.
pub const RTP_PACKET_SIZE: u16 = 1200;

/// Seconds as FFmpeg expects them, without float noise: 2.0 → "2", 0.5 → "0.5".
pub(crate) fn seconds(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `rtcpport=` equal to the RTP port keeps each leg's RTCP on its own port: FFmpeg's
/// default (RTP port + 1) would send video RTCP into the audio port.
pub(crate) fn rtp_url(port: u16) -> String {
    format!("rtp://127.0.0.1:{port}?rtcpport={port}&pkt_size={RTP_PACKET_SIZE}")
}

/// Browser-friendly low-latency H.264 at `k` kbit/s: baseline (no B-frames) and a
/// keyframe every `keyframe_interval_seconds` so late joiners start quickly. The
/// operator's `video_options` come last so they override ours.
pub(crate) fn h264_args(cfg: &StreamConfig, k: u32) -> Vec<String> {
    let mut args: Vec<String> = [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-profile:v",
        "baseline",
        "-pix_fmt",
        "yuv420p",
        "-bf",
        "0",
    ]
    .map(String::from)
    .into();
    args.extend([
        "-b:v".into(),
        format!("{k}k"),
        "-maxrate".into(),
        format!("{k}k"),
        "-bufsize".into(),
        format!("{}k", k / 2),
        "-force_key_frames".into(),
        format!(
            "expr:gte(t,n_forced*{})",
            seconds(cfg.keyframe_interval_seconds)
        ),
        "-sc_threshold".into(),
        "0".into(),
    ]);
    args.extend(cfg.video_options.iter().cloned());
    args
}

pub(crate) fn push(args: &mut Vec<String>, items: &[&str]) {
    args.extend(items.iter().map(|s| s.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_have_no_float_noise() {
        assert_eq!(seconds(2.0), "2");
        assert_eq!(seconds(0.5), "0.5");
        assert_eq!(seconds(0.1 + 0.2), "0.3");
        assert_eq!(seconds(10.0), "10");
        assert_eq!(seconds(60.0), "60");
    }
}
