//! The stream the server fans out: whole GOPs of RTP ([`RtpSample`]), cut
//! from a recording of the real pipeline or synthesized, and its packets.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use pixelpass::hub::{RtpPkt, Track};

/// One recorded RTP packet, with its offset from the start of the lap.
#[derive(Debug, Clone)]
pub struct RecPkt {
    pub track: Track,
    pub offset: Duration,
    pub payload_type: u8,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Arc<[u8]>,
}

/// Whole GOPs of RTP, replayable in a loop.
#[derive(Debug, Clone)]
pub struct RtpSample {
    /// In publish order (both tracks).
    pub packets: Vec<RecPkt>,
    /// One lap's length.
    pub period: Duration,
    /// RTP timestamp advance per lap (video 90 kHz, audio 48 kHz).
    pub video_ts_lap: u32,
    pub audio_ts_lap: u32,
}

impl RtpSample {
    /// Cut `pkts` (as the hub published them) from the first keyframe start
    /// to the last one (exclusive): a loop of whole GOPs.
    pub fn from_recording(pkts: &[RtpPkt]) -> anyhow::Result<Self> {
        let keys: Vec<&RtpPkt> = pkts.iter().filter(|p| p.key).collect();
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
            bail!("the recording has no keyframe")
        };
        if keys.len() < 2 {
            bail!("the recording holds less than one whole GOP (record longer)");
        }
        let (t0, t1) = (first.at, last.at);
        let lap: Vec<&RtpPkt> = pkts.iter().filter(|p| p.at >= t0 && p.at < t1).collect();
        // The lap starts with the keyframe itself (audio published in the same instant goes after it).
        let start = lap.iter().position(|p| p.key).unwrap_or(0);
        let mut packets: Vec<RecPkt> = lap[start..]
            .iter()
            .chain(lap[..start].iter())
            .map(|p| RecPkt {
                track: if p.payload_type == first.payload_type {
                    Track::Video
                } else {
                    Track::Audio
                },
                offset: p.at.saturating_duration_since(t0),
                payload_type: p.payload_type,
                timestamp: p.timestamp,
                marker: p.marker,
                payload: p.payload.clone(),
            })
            .collect();
        packets.sort_by_key(|p| p.offset);
        let audio: Vec<u32> = packets
            .iter()
            .filter(|p| p.track == Track::Audio)
            .map(|p| p.timestamp)
            .collect();
        let audio_ts_lap = match (audio.first(), audio.last()) {
            (Some(a), Some(b)) if audio.len() > 1 => {
                let step = b.wrapping_sub(*a) / (audio.len() as u32 - 1);
                b.wrapping_sub(*a).wrapping_add(step)
            }
            _ => 0,
        };
        Ok(Self {
            packets,
            period: t1.duration_since(t0),
            video_ts_lap: last.timestamp.wrapping_sub(first.timestamp),
            audio_ts_lap,
        })
    }

    /// Three 2 s GOPs of H.264 as rtph264pay cuts it (SPS/PPS in a STAP-A
    /// before each IDR, FU-A fragments of at most `MTU - 12` bytes, marker on
    /// the last packet of each frame; the IDR 8× a P frame), 30 fps, averaging
    /// `bitrate_kbps`; plus 20 ms Opus packets at 96 kbit/s. Payload bytes are
    /// random: nothing decodes them.
    pub fn synthetic(bitrate_kbps: u32) -> Self {
        const FPS: u32 = 30;
        const GOP: u32 = 60;
        const GOPS: u32 = 3;
        const KEY_WEIGHT: u32 = 8;
        let max = pixelpass::capture::rtp::MTU as usize - 12;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect()
        };
        let gop_bytes = u64::from(bitrate_kbps) * 1000 / 8 * u64::from(GOP / FPS);
        let p_bytes = (gop_bytes / u64::from(GOP - 1 + KEY_WEIGHT)) as usize;
        let mut packets = Vec::new();
        for f in 0..GOP * GOPS {
            let offset = Duration::from_nanos(u64::from(f) * 1_000_000_000 / u64::from(FPS));
            let ts = f * (90_000 / FPS);
            let key = f % GOP == 0;
            let video = |payload: Vec<u8>, marker: bool| RecPkt {
                track: Track::Video,
                offset,
                payload_type: 102,
                timestamp: ts,
                marker,
                payload: Arc::from(payload),
            };
            let (nal_type, size) = if key {
                (5u8, p_bytes * KEY_WEIGHT as usize)
            } else {
                (1u8, p_bytes)
            };
            if key {
                let stap = [
                    0x78, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 0, 4, 0x68, 0xce, 0x3c, 0x80,
                ];
                packets.push(video(stap.to_vec(), false));
            }
            let body = noise(size);
            let chunks: Vec<&[u8]> = body.chunks(max - 2).collect();
            for (i, c) in chunks.iter().enumerate() {
                let (first, last) = (i == 0, i + 1 == chunks.len());
                let mut p = vec![
                    0x60 | 28,
                    (u8::from(first) << 7) | (u8::from(last) << 6) | nal_type,
                ];
                p.extend_from_slice(c);
                packets.push(video(p, last));
            }
        }
        let audio_packets = GOP * GOPS * 50 / FPS;
        for a in 0..audio_packets {
            let mut p = vec![0xfc];
            p.extend(noise(239));
            packets.push(RecPkt {
                track: Track::Audio,
                offset: Duration::from_millis(20) * a,
                payload_type: 111,
                timestamp: a * 960,
                marker: false,
                payload: Arc::from(p),
            });
        }
        packets.sort_by_key(|p| p.offset);
        Self {
            packets,
            period: Duration::from_secs(u64::from(GOP * GOPS / FPS)),
            video_ts_lap: GOP * GOPS * (90_000 / FPS),
            audio_ts_lap: audio_packets * 960,
        }
    }

    pub fn bitrate(&self) -> f64 {
        let bytes: usize = self.packets.iter().map(|p| p.payload.len() + 12).sum();
        bytes as f64 * 8.0 / self.period.as_secs_f64().max(1e-9)
    }

    /// The RTP packet `p` of lap `lap`, with sequence number `seq`.
    pub fn packet(&self, p: &RecPkt, lap: u32, seq: u16) -> Vec<u8> {
        let ts_lap = match p.track {
            Track::Video => self.video_ts_lap,
            Track::Audio => self.audio_ts_lap,
        };
        let ts = p.timestamp.wrapping_add(ts_lap.wrapping_mul(lap));
        let ssrc: u32 = match p.track {
            Track::Video => 0x5049_5856,
            Track::Audio => 0x5049_5841,
        };
        let mut out = Vec::with_capacity(12 + p.payload.len());
        out.push(0x80);
        out.push((u8::from(p.marker) << 7) | (p.payload_type & 0x7f));
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(&ssrc.to_be_bytes());
        out.extend_from_slice(&p.payload);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn rec(key: bool, pt: u8, ts: u32, at: Instant) -> RtpPkt {
        RtpPkt {
            payload: Arc::from(&[0u8; 100][..]),
            payload_type: pt,
            sequence: 0,
            timestamp: ts,
            marker: false,
            key,
            at,
            epoch: 1,
            index: 0,
        }
    }

    #[test]
    fn the_synthetic_stream_has_the_bitrate_and_shape_of_the_real_one() {
        let s = RtpSample::synthetic(4000);
        assert_eq!(s.period, Duration::from_secs(6));
        let video: Vec<&RecPkt> = s
            .packets
            .iter()
            .filter(|p| p.track == Track::Video)
            .collect();
        let bytes: usize = video.iter().map(|p| p.payload.len()).sum();
        let kbps = bytes as f64 * 8.0 / 6.0 / 1000.0;
        assert!((3900.0..4100.0).contains(&kbps), "{kbps}");
        assert!(video.iter().all(|p| p.payload.len() <= 1188));
        assert_eq!(
            video.iter().filter(|p| p.marker).count(),
            180,
            "one marker per frame"
        );
        assert!(
            pixelpass::media::rtp::h264_starts_keyframe(&video[0].payload),
            "starts with SPS/PPS"
        );
        assert_eq!(
            s.packets.iter().filter(|p| p.track == Track::Audio).count(),
            300
        );
        assert_eq!((s.video_ts_lap, s.audio_ts_lap), (540_000, 288_000));
    }

    #[test]
    fn a_recording_is_cut_to_whole_gops_and_laps_continue_the_timestamps() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let pkts = vec![
            rec(false, 102, 0, ms(0)), // before the first keyframe: cut
            rec(false, 111, 0, ms(5)),
            rec(true, 102, 9000, ms(100)),
            rec(false, 111, 4800, ms(100)),
            rec(false, 102, 12000, ms(133)),
            rec(false, 111, 5760, ms(120)),
            rec(true, 102, 189_000, ms(2100)), // the next GOP: the lap ends before it
            rec(false, 111, 100_800, ms(2105)),
        ];
        let s = RtpSample::from_recording(&pkts).unwrap();
        assert_eq!(s.period, Duration::from_millis(2000));
        assert_eq!(s.packets.len(), 4);
        assert_eq!(
            (s.packets[0].track, s.packets[0].timestamp),
            (Track::Video, 9000),
            "the lap starts on the keyframe"
        );
        assert_eq!(s.video_ts_lap, 180_000);
        assert_eq!(s.audio_ts_lap, 960 + 960);
        let p = s.packet(&s.packets[0], 2, 7);
        assert_eq!(p.len(), 12 + 100);
        assert_eq!(
            (p[0], p[1], u16::from_be_bytes([p[2], p[3]])),
            (0x80, 102, 7)
        );
        assert_eq!(
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            9000 + 2 * 180_000
        );
        assert!(
            RtpSample::from_recording(&pkts[..3]).is_err(),
            "one keyframe is not a whole GOP"
        );
    }
}
