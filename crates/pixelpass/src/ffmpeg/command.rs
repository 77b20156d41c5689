//! The FFmpeg command line for one stream: the operator's input arguments, then the output
//! legs pixelpass reads back (H.264 + Opus RTP on loopback for WebRTC, MPEG-TS on stdout
//! for HTTP viewers).
//!
//! H.264 is encoded ONCE when the streams to use are known: explicit `video_map` /
//! `audio_map`, or a single input (its first video and audio). Then one output
//! through the `tee` muxer feeds every leg: video RTP, Opus RTP (`a:0`) and the TS
//! (video + AAC on `a:1`). Otherwise (several inputs, no maps) each leg is its own
//! output with FFmpeg's default stream selection, which picks the best video and
//! audio across all inputs ("video from input 0, sound from input 1") but encodes
//! H.264 once per leg that carries video.

pub use super::legs::Legs;
use super::legs::{h264_args, push, rtp_url};
use crate::config::StreamConfig;

/// The video arguments of a leg: a copy, or our encode.
fn video_args(cfg: &StreamConfig, legs: &Legs) -> Vec<String> {
    if legs.copy_video {
        // Annex B with SPS/PPS in front of every IDR whatever the input's
        // container (FLV and MP4 keep them out of band): a viewer joining at
        // a keyframe of the RTP or the TS can start there.
        return ["-c:v", "copy", "-bsf:v", "h264_mp4toannexb"]
            .map(String::from)
            .into();
    }
    h264_args(cfg, cfg.video_bitrate_kbps)
}

/// The `-map`s for one shared encode, when the streams to use are known.
pub(super) fn maps(cfg: &StreamConfig, legs: &Legs) -> Option<(String, Option<String>)> {
    let single_input = cfg.input.iter().filter(|a| *a == "-i").count() == 1;
    let video = cfg
        .video_map
        .clone()
        .or_else(|| single_input.then(|| "0:v:0".to_owned()))?;
    if !legs.audio {
        return Some((video, None));
    }
    let audio = cfg
        .audio_map
        .clone()
        .or_else(|| single_input.then(|| "0:a:0".to_owned()))?;
    Some((video, Some(audio)))
}

/// One output, one H.264 encode, every leg a `tee` slave (see the module docs).
fn tee_outputs(
    args: &mut Vec<String>,
    cfg: &StreamConfig,
    legs: &Legs,
    video: String,
    audio: Option<String>,
) {
    args.extend(["-map".to_owned(), video]);
    if let Some(a) = &audio {
        args.extend(["-map".to_owned(), a.clone(), "-map".to_owned(), a.clone()]);
    }
    args.extend(video_args(cfg, legs));
    let mut slaves = Vec::new();
    let rtp = |pt: u8, port: u16, select: &str| {
        format!("[select={select}:f=rtp:payload_type={pt}]{}", rtp_url(port))
    };
    if legs.rtp {
        slaves.push(rtp(legs.video_pt, legs.video_port, "v"));
    }
    if audio.is_some() {
        args.push("-c:a:0".into());
        args.push("libopus".into());
        args.push("-b:a:0".into());
        args.push(format!("{}k", cfg.audio_bitrate_kbps));
        push(
            args,
            &[
                "-ar:a:0",
                "48000",
                "-ac:a:0",
                "2",
                "-application:a:0",
                "lowdelay",
                "-frame_duration:a:0",
                "20",
            ],
        );
        if legs.copy_aac {
            push(args, &["-c:a:1", "copy"]);
        } else {
            push(
                args,
                &[
                    "-c:a:1", "aac", "-b:a:1", "128k", "-ar:a:1", "48000", "-ac:a:1", "2",
                ],
            );
        }
        if legs.rtp {
            slaves.push(rtp(
                legs.audio_pt,
                legs.video_port.saturating_add(1),
                "\\'a:0\\'",
            ));
        }
    }
    if legs.ts {
        let select = if audio.is_some() {
            "select=\\'v,a:1\\':"
        } else {
            ""
        };
        slaves.push(format!(
            "[{select}f=mpegts:max_delay=0:flush_packets=1]pipe:1"
        ));
    }
    args.extend(["-f".to_owned(), "tee".to_owned(), slaves.join("|")]);
}

/// The full argv (without the program name) for one stream: layer 0's legs,
/// then those of layers 1.. ([`super::layers`]).
pub fn ffmpeg_args(cfg: &StreamConfig, legs: &Legs) -> Vec<String> {
    let mut args = layer0_args(cfg, legs);
    super::layers::append(&mut args, cfg, legs);
    args
}

fn layer0_args(cfg: &StreamConfig, legs: &Legs) -> Vec<String> {
    let mut args = Vec::new();
    // Progress goes to fd 3 (see child.rs); only warnings and errors on stderr, tagged
    // with their level so the log tail can pick out errors.
    push(
        &mut args,
        &[
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "level+warning",
        ],
    );
    push(&mut args, &["-progress", "pipe:3", "-stats_period", "1"]);
    args.extend(cfg.input.iter().cloned());
    if legs.rtp && legs.ts {
        if let Some((video, audio)) = maps(cfg, legs) {
            tee_outputs(&mut args, cfg, legs, video, audio);
            return args;
        }
    }

    if legs.rtp {
        push(&mut args, &["-an", "-sn", "-dn"]);
        args.extend(video_args(cfg, legs));
        push(&mut args, &["-f", "rtp", "-payload_type"]);
        args.extend([legs.video_pt.to_string(), rtp_url(legs.video_port)]);
    }
    if legs.rtp && legs.audio {
        push(&mut args, &["-vn", "-sn", "-dn", "-c:a", "libopus", "-b:a"]);
        args.push(format!("{}k", cfg.audio_bitrate_kbps));
        push(
            &mut args,
            &[
                "-ar",
                "48000",
                "-ac",
                "2",
                "-application",
                "lowdelay",
                "-frame_duration",
                "20",
            ],
        );
        push(&mut args, &["-f", "rtp", "-payload_type"]);
        args.extend([
            legs.audio_pt.to_string(),
            rtp_url(legs.video_port.saturating_add(1)),
        ]);
    }
    if legs.ts {
        args.extend(video_args(cfg, legs));
        if legs.audio && legs.copy_aac {
            push(&mut args, &["-c:a", "copy"]);
        } else if legs.audio {
            push(
                &mut args,
                &["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"],
            );
        } else {
            push(&mut args, &["-an"]);
        }
        push(
            &mut args,
            &[
                "-sn",
                "-dn",
                "-f",
                "mpegts",
                "-muxdelay",
                "0",
                "-muxpreload",
                "0",
            ],
        );
        push(&mut args, &["-flush_packets", "1", "pipe:1"]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StreamConfig {
        serde_json::from_str(r#"{"id":"a","input":["-re","-i","in.mp4"]}"#).unwrap()
    }

    /// Two inputs and no maps: FFmpeg's default selection, one output per leg.
    fn two_inputs() -> StreamConfig {
        serde_json::from_str(r#"{"id":"a","input":["-re","-i","in.mp4","-i","tone.wav"]}"#).unwrap()
    }

    fn legs(rtp: bool, audio: bool, ts: bool) -> Legs {
        Legs {
            video_port: 40000,
            rtp,
            audio,
            ts,
            video_pt: 102,
            audio_pt: 111,
            copy_video: false,
            copy_aac: false,
            layer_ports: [0; 2],
        }
    }

    #[test]
    fn copy_sends_the_input_h264_and_aac_to_every_leg_as_annex_b() {
        let copy = Legs {
            copy_video: true,
            copy_aac: true,
            ..legs(true, true, true)
        };
        let args = ffmpeg_args(&cfg(), &copy).join(" ");
        assert!(
            args.starts_with(&format!("{HEAD} -map 0:v:0 -map 0:a:0 -map 0:a:0 -c:v copy -bsf:v h264_mp4toannexb -c:a:0 libopus")),
            "{args}"
        );
        assert!(
            args.contains("-frame_duration:a:0 20 -c:a:1 copy -f tee"),
            "{args}"
        );
        assert!(!args.contains("libx264") && !args.contains("aac"), "{args}");
        // Several outputs: each leg copies.
        let args = ffmpeg_args(&two_inputs(), &copy).join(" ");
        assert_eq!(
            args.matches("-c:v copy -bsf:v h264_mp4toannexb").count(),
            2,
            "{args}"
        );
        assert!(args.contains("-c:a copy -sn -dn -f mpegts"), "{args}");
        // Copied video with audio to encode: AAC as before.
        let enc_audio = Legs {
            copy_aac: false,
            ..copy
        };
        let args = ffmpeg_args(&cfg(), &enc_audio).join(" ");
        assert!(args.contains("-c:a:1 aac -b:a:1 128k"), "{args}");
    }

    const H264: &str = "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -pix_fmt yuv420p \
        -bf 0 -b:v 2500k -maxrate 2500k -bufsize 1250k -force_key_frames expr:gte(t,n_forced*2) -sc_threshold 0";
    const HEAD: &str =
        "-hide_banner -nostdin -nostats -loglevel level+warning -progress pipe:3 -stats_period 1 -re -i in.mp4";
    const HEAD2: &str =
        "-hide_banner -nostdin -nostats -loglevel level+warning -progress pipe:3 -stats_period 1 -re -i in.mp4 -i tone.wav";

    #[test]
    fn one_input_is_encoded_once_for_every_leg() {
        let want = format!(
            "{HEAD} -map 0:v:0 -map 0:a:0 -map 0:a:0 {H264} -c:a:0 libopus -b:a:0 96k -ar:a:0 48000 -ac:a:0 2 \
             -application:a:0 lowdelay -frame_duration:a:0 20 -c:a:1 aac -b:a:1 128k -ar:a:1 48000 -ac:a:1 2 -f tee \
             [select=v:f=rtp:payload_type=102]rtp://127.0.0.1:40000?rtcpport=40000&pkt_size=1200|\
             [select=\\'a:0\\':f=rtp:payload_type=111]rtp://127.0.0.1:40001?rtcpport=40001&pkt_size=1200|\
             [select=\\'v,a:1\\':f=mpegts:max_delay=0:flush_packets=1]pipe:1"
        );
        assert_eq!(ffmpeg_args(&cfg(), &legs(true, true, true)).join(" "), want);
        let silent = ffmpeg_args(&cfg(), &legs(true, false, true)).join(" ");
        assert!(
            silent.ends_with("-f tee [select=v:f=rtp:payload_type=102]rtp://127.0.0.1:40000?rtcpport=40000&pkt_size=1200|\
                [f=mpegts:max_delay=0:flush_packets=1]pipe:1")
                && !silent.contains("0:a:0"),
            "{silent}"
        );
    }

    #[test]
    fn explicit_maps_make_several_inputs_one_encode() {
        let mut c = two_inputs();
        c.video_map = Some("0:v:0".into());
        c.audio_map = Some("1:a:0".into());
        let args = ffmpeg_args(&c, &legs(true, true, true)).join(" ");
        assert!(
            args.starts_with(&format!("{HEAD2} -map 0:v:0 -map 1:a:0 -map 1:a:0 ")),
            "{args}"
        );
        assert_eq!(args.matches("libx264").count(), 1, "{args}");
        // A map for video alone is not enough while there is sound: default selection.
        c.audio_map = None;
        let args = ffmpeg_args(&c, &legs(true, true, true)).join(" ");
        assert_eq!(args.matches("libx264").count(), 2, "{args}");
    }

    #[test]
    fn all_legs() {
        let want = format!(
            "{HEAD2} -an -sn -dn {H264} -f rtp -payload_type 102 rtp://127.0.0.1:40000?rtcpport=40000&pkt_size=1200 \
             -vn -sn -dn -c:a libopus -b:a 96k -ar 48000 -ac 2 -application lowdelay -frame_duration 20 \
             -f rtp -payload_type 111 rtp://127.0.0.1:40001?rtcpport=40001&pkt_size=1200 \
             {H264} -c:a aac -b:a 128k -ar 48000 -ac 2 -sn -dn -f mpegts -muxdelay 0 -muxpreload 0 -flush_packets 1 pipe:1"
        );
        assert_eq!(
            ffmpeg_args(&two_inputs(), &legs(true, true, true)).join(" "),
            want
        );
    }

    #[test]
    fn without_audio_there_is_no_opus_leg_and_no_aac() {
        let args = ffmpeg_args(&two_inputs(), &legs(true, false, true)).join(" ");
        assert!(
            !args.contains("libopus") && !args.contains("40001") && !args.contains("aac"),
            "{args}"
        );
        assert!(args.ends_with("-sc_threshold 0 -an -sn -dn -f mpegts -muxdelay 0 -muxpreload 0 -flush_packets 1 pipe:1"), "{args}");
    }

    #[test]
    fn without_ts_there_is_no_stdout_output() {
        let args = ffmpeg_args(&cfg(), &legs(true, true, false));
        assert_eq!(
            args.last().unwrap(),
            "rtp://127.0.0.1:40001?rtcpport=40001&pkt_size=1200"
        );
        assert!(!args.iter().any(|a| a == "pipe:1" || a == "aac"));
        assert_eq!(args.iter().filter(|a| *a == "libx264").count(), 1);
    }

    #[test]
    fn ts_only() {
        let args = ffmpeg_args(&cfg(), &legs(false, true, true)).join(" ");
        assert!(!args.contains("rtp"), "{args}");
        assert!(
            args.starts_with(&format!("{HEAD} {H264} -c:a aac")),
            "{args}"
        );
    }

    #[test]
    fn options_are_applied_and_video_options_come_last() {
        let mut c = cfg();
        c.video_bitrate_kbps = 1001;
        c.audio_bitrate_kbps = 64;
        c.keyframe_interval_seconds = 0.5;
        c.video_options = vec!["-preset".into(), "ultrafast".into()];
        let l = Legs {
            video_pt: 100,
            audio_pt: 101,
            ..legs(true, true, false)
        };
        let args = ffmpeg_args(&c, &l).join(" ");
        assert!(args.contains("-b:v 1001k -maxrate 1001k -bufsize 500k -force_key_frames expr:gte(t,n_forced*0.5)"), "{args}");
        assert!(
            args.contains("-sc_threshold 0 -preset ultrafast -f rtp -payload_type 100 "),
            "{args}"
        );
        assert!(
            args.contains("-b:a 64k") && args.contains("-payload_type 101 "),
            "{args}"
        );
    }

    #[test]
    fn legs_follow_the_config() {
        let mut c = cfg();
        c.audio = false;
        c.http_ts = false;
        c.webrtc.video_pt = 100;
        assert_eq!(
            Legs::for_stream(&c, 5000),
            Legs {
                video_port: 5000,
                rtp: true,
                audio: false,
                ts: false,
                video_pt: 100,
                audio_pt: 111,
                copy_video: false,
                copy_aac: false,
                layer_ports: [0; 2],
            }
        );
    }
}
