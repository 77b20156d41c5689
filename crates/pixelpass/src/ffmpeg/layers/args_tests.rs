//! The layers' FFmpeg arguments, as text.

use super::super::layers::*;
use super::super::legs::Legs;
use crate::config::StreamConfig;

/// `expr:gte(t,n_forced*K)`: the same on every layer (see the module docs).
fn keyframes(cfg: &StreamConfig) -> String {
    let k = super::super::legs::seconds(cfg.keyframe_interval_seconds);
    format!("expr:gte(t,n_forced*{k})")
}

fn cfg(extra: &str) -> StreamConfig {
    serde_json::from_str(&format!(
        r#"{{"id":"a","input":["-re","-i","in.ts"],"layers":3{extra}}}"#
    ))
    .unwrap()
}

fn legs(rtp: bool, ts: bool, count: usize) -> Legs {
    let mut l = Legs::for_stream(&cfg(""), 40000);
    l.rtp = rtp;
    l.ts = ts;
    l.layer_ports = [50000, 50002];
    l.layer_ports[count.saturating_sub(1).min(2)..].fill(0);
    l
}

#[test]
fn three_layers_split_once_scale_by_halves_and_keep_keyframes_together() {
    let c = cfg("");
    let args = super::super::command::ffmpeg_args(&c, &legs(true, true, 3)).join(" ");
    let graph = "-filter_complex [0:v:0]scale=trunc(iw/4)*2:trunc(ih/4)*2,split=2[pp1][half];\
                 [half]fps='min(15,source_fps)',scale=trunc(iw/4)*2:trunc(ih/4)*2[pp2]";
    assert!(args.contains(graph), "{args}");
    // Layer 0 as before (one encode, tee) and first, then layer 1, then 2.
    let at = |s: &str| args.find(s).unwrap_or_else(|| panic!("{s} in {args}"));
    assert!(at("-b:v 2500k") < at(graph) && at(graph) < at("-b:v 625k"));
    assert!(at("-b:v 625k") < at("-b:v 150k"));
    assert_eq!(args.matches(&keyframes(&c)).count(), 3, "{args}");
    assert_eq!(
        args.matches("-preset veryfast -tune zerolatency").count(),
        3
    );
    assert!(
        args.contains("-map [pp1] -map 0:a:0 -c:v libx264"),
        "{args}"
    );
    assert!(
        args.ends_with(
            "-c:a aac -b:a 128k -ar 48000 -ac 2 -f tee [select=v:f=rtp:payload_type=102]\
         rtp://127.0.0.1:50002?rtcpport=50002&pkt_size=1200|\
         [select=\\'v,a\\':f=mpegts:max_delay=0:flush_packets=1]pipe:5"
        ),
        "{args}"
    );
    assert!(args.contains("rtp://127.0.0.1:50000?rtcpport=50000&pkt_size=1200|[select=\\'v,a\\':f=mpegts:max_delay=0:flush_packets=1]pipe:4"), "{args}");
    // Opus is layer 0's only.
    assert_eq!(args.matches("libopus").count(), 1);
}

#[test]
fn copy_keeps_layer_0_and_encodes_the_others_and_aac_is_copied_where_it_can_be() {
    let c = StreamConfig {
        layers: 2,
        ..cfg(r#","video":"copy""#)
    };
    let l = Legs {
        copy_video: true,
        copy_aac: true,
        ..legs(true, true, 2)
    };
    let args = super::super::command::ffmpeg_args(&c, &l).join(" ");
    assert!(args.contains("-c:v copy -bsf:v h264_mp4toannexb"), "{args}");
    assert!(args.contains("-filter_complex [0:v:0]scale=trunc(iw/4)*2:trunc(ih/4)*2[pp1] -map [pp1] -map 0:a:0 -c:v libx264"), "{args}");
    assert_eq!(args.matches("libx264").count(), 1, "{args}");
    assert!(args.contains("-c:a copy -f tee [select=v:f=rtp"), "{args}");
    assert!(!args.contains("pipe:5"), "{args}");
}

#[test]
fn one_leg_outputs_and_no_audio() {
    let mut c = cfg("");
    c.audio = false;
    let mut l = legs(true, false, 2);
    l.audio = false;
    let rtp_only = super::super::command::ffmpeg_args(&c, &l).join(" ");
    assert!(
        rtp_only.ends_with(
            "-f rtp -payload_type 102 rtp://127.0.0.1:50000?rtcpport=50000&pkt_size=1200"
        ),
        "{rtp_only}"
    );
    assert!(
        !rtp_only.contains("pipe:4") && !rtp_only.contains("0:a:0"),
        "{rtp_only}"
    );
    let ts_only = super::super::command::ffmpeg_args(&cfg(""), &legs(false, true, 2)).join(" ");
    assert!(ts_only.ends_with("-c:a aac -b:a 128k -ar 48000 -ac 2 -f mpegts -muxdelay 0 -muxpreload 0 -flush_packets 1 pipe:4"), "{ts_only}");
    assert!(!ts_only.contains("50000"), "{ts_only}");
    // One layer: nothing added.
    let one = super::super::command::ffmpeg_args(&cfg(""), &legs(true, true, 1)).join(" ");
    assert!(
        !one.contains("filter_complex") && !one.contains("pipe:4"),
        "{one}"
    );
}

#[test]
fn maps_name_the_layers_source_and_nominal_rates_follow_the_config() {
    let mut c = cfg("");
    c.input = ["-i", "a.ts", "-i", "b.wav"].map(String::from).into();
    c.video_map = Some("0:v:1?".into());
    c.audio_map = Some("1:a:0".into());
    let args = super::super::command::ffmpeg_args(&c, &legs(true, true, 2)).join(" ");
    assert!(args.contains("-filter_complex [0:v:1]scale="), "{args}");
    assert!(args.contains("-map [pp1] -map 1:a:0 "), "{args}");
    c.video_bitrate_kbps = 300;
    assert_eq!(nominal(&c, 1).bitrate_kbps, 100);
    assert_eq!((nominal(&c, 2).fps, nominal(&c, 2).bitrate_kbps), (15, 100));
    assert_eq!(nominal(&c, 0).bitrate_kbps, 300);
    let infos = [
        LayerInfo {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 2500,
        },
        nominal(&c, 2),
    ];
    assert_eq!(
        describe(&infos),
        "1280x720@30 2500 kbit/s, size to come@15 100 kbit/s"
    );
}
