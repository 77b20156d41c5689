//! [`super`]'s rules, field by field.

use super::*;

fn base() -> StreamConfig {
    serde_json::from_str(r#"{"id":"cam-1","input":["-i","x.mp4"]}"#).unwrap()
}

fn input(args: &[&str]) -> StreamConfig {
    StreamConfig {
        input: args.iter().map(|a| a.to_string()).collect(),
        ..base()
    }
}

#[test]
fn listening_inputs_are_recognised_and_cannot_be_on_demand() {
    let rtmp = input(&["-listen", "1", "-i", "rtmp://0.0.0.0:1935/live/key"]);
    assert_eq!(
        rtmp.listening_input().as_deref(),
        Some("rtmp://0.0.0.0:1935/live/key")
    );
    let srt = input(&[
        "-i",
        "srt://0.0.0.0:9000?mode=listener&passphrase=0123456789",
    ]);
    assert!(srt.listening_input().is_some());
    assert!(input(&["-i", "tcp://0.0.0.0:9000?listen"])
        .listening_input()
        .is_some());
    for pulls in [
        &["-i", "rtmp://example.org/live/key"][..],
        &["-listen", "0", "-i", "rtmp://0.0.0.0/live/key"],
        &["-i", "srt://example.org:9000?mode=caller"],
        &["-listen", "1", "-i", "a.mp4", "-i", "b.wav"][..2],
    ] {
        assert_eq!(input(pulls).listening_input(), None, "{pulls:?}");
    }
    // `-listen` belongs to the input after it only.
    let second = input(&["-listen", "1", "-i", "rtmp://0.0.0.0/l/k", "-i", "tone.wav"]);
    assert_eq!(
        second.listening_input().as_deref(),
        Some("rtmp://0.0.0.0/l/k")
    );
    assert_eq!(base().video, VideoMode::Auto);
    let mut on_demand = rtmp.clone();
    on_demand.on_demand = true;
    let e = on_demand.validate().unwrap_err();
    assert_eq!(e.field, "on_demand");
    assert!(e.message.contains("waits for a publisher"), "{e}");
    assert!(rtmp.validate().is_ok());
    let bad: Result<StreamConfig, _> =
        serde_json::from_str(r#"{"id":"a","input":["-i","x"],"video":"passthrough"}"#);
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("unknown variant `passthrough`"));
}

#[test]
fn json_defaults_are_filled_in() {
    let s = base();
    assert_eq!(s.linger, 5.0);
    assert_eq!(s.reconnect_delay_seconds, 1.0);
    assert_eq!(s.stale_timeout_seconds, 10.0);
    assert!(s.http_ts && s.audio && s.webrtc.enabled);
    assert_eq!((s.webrtc.video_pt(), s.webrtc.audio_pt()), (102, 111));
    assert_eq!(
        (
            s.keyframe_interval_seconds,
            s.video_bitrate_kbps,
            s.audio_bitrate_kbps
        ),
        (2.0, 2500, 96)
    );
    assert_eq!(s.max_viewers, 100);
    assert_eq!(s.token, None);
    s.validate().unwrap();
}

#[test]
fn json_accepts_integers_and_fractions_for_seconds() {
    let s: StreamConfig = serde_json::from_str(
        r#"{"id":"a","input":["-i","x"],"linger":1,"reconnect_delay_seconds":1.5}"#,
    )
    .unwrap();
    assert_eq!((s.linger, s.reconnect_delay_seconds), (1.0, 1.5));
}

#[test]
fn toml_accepts_integers_for_every_float_field() {
    let text = "id = \"a\"\ninput = [\"-i\", \"x\"]\nlinger = 3\nreconnect_delay_seconds = 1\n\
                stale_timeout_seconds = 0\nkeyframe_interval_seconds = 4\n";
    let s: StreamConfig = toml::from_str(text).unwrap();
    assert_eq!(
        (
            s.linger,
            s.reconnect_delay_seconds,
            s.stale_timeout_seconds,
            s.keyframe_interval_seconds
        ),
        (3.0, 1.0, 0.0, 4.0)
    );
}

#[test]
fn json_rejects_unknown_fields() {
    let err = serde_json::from_str::<StreamConfig>(r#"{"id":"a","input":["-i","x"],"lingr":1}"#)
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `lingr`"), "{err}");
}

#[test]
fn serialization_round_trips_and_omits_missing_token() {
    let s = base();
    let json = serde_json::to_string(&s).unwrap();
    assert!(!json.contains("token"), "{json}");
    assert_eq!(serde_json::from_str::<StreamConfig>(&json).unwrap(), s);
}

fn field_of(edit: impl FnOnce(&mut StreamConfig)) -> String {
    let mut s = base();
    edit(&mut s);
    s.validate().unwrap_err().field
}

#[test]
fn each_rule_reports_its_field() {
    assert_eq!(field_of(|s| s.id = "bad id".into()), "id");
    assert_eq!(field_of(|s| s.id = "x".repeat(65)), "id");
    assert_eq!(field_of(|s| s.token = Some("short".into())), "token");
    assert_eq!(
        field_of(|s| s.token = Some("has space in it".into())),
        "token"
    );
    assert_eq!(field_of(|s| s.input.clear()), "input");
    assert_eq!(field_of(|s| s.input = vec!["x.mp4".into()]), "input");
    assert_eq!(field_of(|s| s.input.push("-y".into())), "input");
    assert_eq!(field_of(|s| s.linger = -1.0), "linger");
    assert_eq!(field_of(|s| s.linger = f64::NAN), "linger");
    assert_eq!(
        field_of(|s| s.reconnect_delay_seconds = 3601.0),
        "reconnect_delay_seconds"
    );
    assert_eq!(
        field_of(|s| s.stale_timeout_seconds = 0.5),
        "stale_timeout_seconds"
    );
    assert_eq!(field_of(|s| s.webrtc.video_pt = 95), "webrtc.video_pt");
    assert_eq!(field_of(|s| s.webrtc.audio_pt = 128), "webrtc.audio_pt");
    assert_eq!(field_of(|s| s.webrtc.audio_pt = 102), "webrtc.audio_pt");
    assert_eq!(
        field_of(|s| (s.webrtc.enabled, s.http_ts) = (false, false)),
        "http_ts"
    );
    assert_eq!(
        field_of(|s| s.keyframe_interval_seconds = 0.05),
        "keyframe_interval_seconds"
    );
    assert_eq!(
        field_of(|s| s.video_bitrate_kbps = 99),
        "video_bitrate_kbps"
    );
    assert_eq!(
        field_of(|s| s.audio_bitrate_kbps = 513),
        "audio_bitrate_kbps"
    );
    assert_eq!(field_of(|s| s.max_viewers = 0), "max_viewers");
}

#[test]
fn accepted_edge_values() {
    let mut s = base();
    s.token = Some("watch-lobby".into());
    s.stale_timeout_seconds = 0.0;
    s.webrtc = WebRtcStream {
        enabled: false,
        video_pt: 96,
        audio_pt: 127,
    };
    s.keyframe_interval_seconds = 0.1;
    s.validate().unwrap();
    assert_eq!((s.webrtc.video_pt(), s.webrtc.audio_pt()), (96, 127));
}

#[test]
fn layers_are_1_to_3_and_only_for_ffmpeg_streams() {
    assert_eq!(base().layers, 1, "an operator opts in");
    let toml: StreamConfig =
        toml::from_str("id = \"a\"\ninput = [\"-i\", \"x\"]\nlayers = 3\n").unwrap();
    assert_eq!(toml.layers, 3);
    toml.validate().unwrap();
    for bad in [0, 4] {
        let mut s = base();
        s.layers = bad;
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("`layers`: must be 1..=3 (1: the video as it is;")
                && e.ends_with(&format!("got {bad}"))
                && !e.contains('\n'),
            "{e}"
        );
    }
    let published: StreamConfig =
        serde_json::from_str(r#"{"id":"w","publish_token":"a-publisher-secret-0123","layers":2}"#)
            .unwrap();
    assert_eq!(
        published.validate().unwrap_err().to_string(),
        "`layers`: must be 1 for a stream published over WHIP (it carries what its publisher sends: \
         pixelpass does not transcode WHIP), got 2; remove `layers`"
    );
    let mut two = input(&["-i", "a.mp4", "-i", "b.wav"]);
    two.layers = 2;
    let e = two.validate().unwrap_err();
    assert!(
        e.field == "layers" && e.message.contains("video_map"),
        "{e}"
    );
    two.video_map = Some("0:v:0".into());
    assert_eq!(two.validate().unwrap_err().field, "layers");
    two.audio_map = Some("1:a:0".into());
    two.validate().unwrap();
    let json = serde_json::to_string(&two).unwrap();
    assert!(json.contains("\"layers\":2"), "{json}");
}

#[test]
fn messages_say_what_is_allowed() {
    let mut s = base();
    s.webrtc.video_pt = 5;
    assert_eq!(
        s.validate().unwrap_err().to_string(),
        "`webrtc.video_pt`: must be 96..=127 (or 0 for the default 102), got 5"
    );
    s.webrtc.video_pt = 0;
    s.input.push("-progress".into());
    assert!(s.validate().unwrap_err().message.contains("\"-progress\""));
}
