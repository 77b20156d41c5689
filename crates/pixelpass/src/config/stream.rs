//! One stream's settings, shared by the TOML file (`[[stream]]` tables) and the JSON API.
//!
//! Deserializing only checks shapes and types; [`StreamConfig::validate`] checks ranges and
//! combinations so both front ends report the same problems with the same wording. The file
//! loader (`serve_config.rs`) adds the file name and line in front of a [`FieldError`].

use serde::{Deserialize, Serialize};

/// Payload type used for H.264 when `webrtc.video_pt` is absent or 0.
pub const DEFAULT_VIDEO_PT: u8 = 102;
/// Payload type used for Opus when `webrtc.audio_pt` is absent or 0.
pub const DEFAULT_AUDIO_PT: u8 = 111;

/// Arguments pixelpass appends itself (or that would break supervision), refused in `input`.
const RESERVED_INPUT_ARGS: [&str; 3] = ["-progress", "-y", "-n"];

/// A stream as the operator describes it: the FFmpeg input arguments plus delivery options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Name used in the API and logs: 1..=64 chars of `[A-Za-z0-9_-]`.
    pub id: String,
    /// Viewer token used in viewer URLs; `None` means one is generated later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// FFmpeg input arguments, passed verbatim before the outputs pixelpass
    /// appends. Empty for a stream published over WHIP (`publish_token`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input: Vec<String>,
    /// The publisher's secret: a stream with it and no `input` is published
    /// over WHIP (`POST /whip/{id}` with `Authorization: Bearer <it>`).
    /// Never shown by the API (a PUT without it keeps the old one).
    #[serde(default, skip_serializing)]
    pub publish_token: Option<String>,
    #[serde(default)]
    pub autostart: bool,
    #[serde(default)]
    pub on_demand: bool,
    /// Seconds an on-demand stream keeps running after its last viewer leaves.
    #[serde(default = "default_linger")]
    pub linger: f64,
    #[serde(default)]
    pub reconnect: bool,
    #[serde(default = "default_reconnect_delay")]
    pub reconnect_delay_seconds: f64,
    /// Restart FFmpeg when its progress stalls this long; 0 turns the check off.
    #[serde(default = "default_stale_timeout")]
    pub stale_timeout_seconds: f64,
    #[serde(default)]
    pub webrtc: WebRtcStream,
    #[serde(default = "default_true")]
    pub http_ts: bool,
    /// `false` when the input has no sound: no audio legs are added at all.
    #[serde(default = "default_true")]
    pub audio: bool,
    #[serde(default = "default_keyframe_interval")]
    pub keyframe_interval_seconds: f64,
    #[serde(default = "default_video_bitrate")]
    pub video_bitrate_kbps: u32,
    #[serde(default = "default_audio_bitrate")]
    pub audio_bitrate_kbps: u32,
    /// Extra H.264 encoder arguments, appended after pixelpass's own so they override them.
    #[serde(default)]
    pub video_options: Vec<String>,
    /// Which input streams to use, as FFmpeg `-map` specifiers (`"1:a:0"`).
    /// Absent: the first video and audio of a single input, or FFmpeg's own
    /// choice across several inputs (which then costs a second H.264 encode
    /// when both WebRTC and HTTP-TS are on: see `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_map: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_map: Option<String>,
    #[serde(default = "default_max_viewers")]
    pub max_viewers: u32,
    /// Copy the input's H.264 or encode it (see `ffmpeg::probe`).
    #[serde(default)]
    pub video: VideoMode,
    /// Encodes (layers) of the video, 1..=[`MAX_LAYERS`]: layer 0 as `video`
    /// says; each further layer encoded once by the same FFmpeg at half the
    /// size of the one before (see `ffmpeg::layers`). FFmpeg streams only:
    /// a stream published over WHIP carries what its publisher sends.
    #[serde(default = "default_layers")]
    pub layers: u32,
}

/// `layers` at most: the full size, half the size, a quarter at a low rate.
pub const MAX_LAYERS: u32 = crate::hub::MAX_LAYERS as u32;

/// `video = "auto" | "copy" | "encode"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoMode {
    /// Copy H.264 that browsers play over WebRTC (no B-frames), else encode.
    #[default]
    Auto,
    /// Never encode video: the input's H.264 goes to every leg as it is.
    Copy,
    /// Always encode (libx264, Constrained Baseline, `keyframe_interval_seconds`).
    Encode,
}

/// WebRTC (WHEP) delivery of one stream. A payload type of 0 means "use the default".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebRtcStream {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub video_pt: u8,
    #[serde(default)]
    pub audio_pt: u8,
}

impl Default for WebRtcStream {
    fn default() -> Self {
        WebRtcStream {
            enabled: true,
            video_pt: 0,
            audio_pt: 0,
        }
    }
}

impl WebRtcStream {
    /// The H.264 payload type FFmpeg is told to use, with 0 resolved to the default.
    pub fn video_pt(&self) -> u8 {
        if self.video_pt == 0 {
            DEFAULT_VIDEO_PT
        } else {
            self.video_pt
        }
    }

    /// The Opus payload type FFmpeg is told to use, with 0 resolved to the default.
    pub fn audio_pt(&self) -> u8 {
        if self.audio_pt == 0 {
            DEFAULT_AUDIO_PT
        } else {
            self.audio_pt
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_linger() -> f64 {
    5.0
}
fn default_reconnect_delay() -> f64 {
    1.0
}
fn default_stale_timeout() -> f64 {
    10.0
}
fn default_keyframe_interval() -> f64 {
    2.0
}
fn default_video_bitrate() -> u32 {
    2500
}
fn default_audio_bitrate() -> u32 {
    96
}
fn default_max_viewers() -> u32 {
    100
}
fn default_layers() -> u32 {
    1
}

/// A validation problem with one field; `field` is a dotted path such as `webrtc.video_pt`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn fail(field: &str, message: impl Into<String>) -> Result<(), FieldError> {
    Err(FieldError {
        field: field.to_string(),
        message: message.into(),
    })
}

fn check_range(field: &str, value: f64, min: f64, max: f64, unit: &str) -> Result<(), FieldError> {
    if value.is_finite() && (min..=max).contains(&value) {
        return Ok(());
    }
    fail(field, format!("must be {min}..={max}{unit}, got {value}"))
}

fn check_int(field: &str, value: u32, min: u32, max: u32) -> Result<(), FieldError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    fail(field, format!("must be {min}..={max}, got {value}"))
}

fn check_pt(field: &str, pt: u8, default: u8) -> Result<(), FieldError> {
    if pt == 0 || (96..=127).contains(&pt) {
        return Ok(());
    }
    fail(
        field,
        format!("must be 96..=127 (or 0 for the default {default}), got {pt}"),
    )
}

impl StreamConfig {
    /// Checks ranges and combinations; the first problem found is returned.
    pub fn validate(&self) -> Result<(), FieldError> {
        let id_ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if self.id.is_empty() || self.id.len() > 64 || !self.id.chars().all(id_ok) {
            return fail("id", "must be 1..=64 characters of A-Z a-z 0-9 _ -");
        }
        if let Some(token) = &self.token {
            let token_ok = |c: char| id_ok(c) || c == '.' || c == '~';
            if !(8..=128).contains(&token.len()) || !token.chars().all(token_ok) {
                return fail(
                    "token",
                    "must be 8..=128 characters of A-Z a-z 0-9 _ - . ~ (omit it to get a random one)",
                );
            }
        }
        self.validate_input()?;
        check_range("linger", self.linger, 0.0, 86400.0, " seconds")?;
        check_range(
            "reconnect_delay_seconds",
            self.reconnect_delay_seconds,
            0.0,
            3600.0,
            " seconds",
        )?;
        if self.stale_timeout_seconds != 0.0 {
            check_range(
                "stale_timeout_seconds",
                self.stale_timeout_seconds,
                1.0,
                3600.0,
                " seconds (or 0 for off)",
            )?;
        }
        check_pt("webrtc.video_pt", self.webrtc.video_pt, DEFAULT_VIDEO_PT)?;
        check_pt("webrtc.audio_pt", self.webrtc.audio_pt, DEFAULT_AUDIO_PT)?;
        if self.webrtc.video_pt() == self.webrtc.audio_pt() {
            return fail(
                "webrtc.audio_pt",
                format!(
                    "must differ from webrtc.video_pt (both are {})",
                    self.webrtc.video_pt()
                ),
            );
        }
        if !self.webrtc.enabled && !self.http_ts {
            return fail("http_ts", "webrtc.enabled and http_ts are both false: the stream would have no viewers; enable one");
        }
        check_range(
            "keyframe_interval_seconds",
            self.keyframe_interval_seconds,
            0.1,
            60.0,
            " seconds",
        )?;
        check_int("video_bitrate_kbps", self.video_bitrate_kbps, 100, 100_000)?;
        check_int("audio_bitrate_kbps", self.audio_bitrate_kbps, 16, 512)?;
        check_int("max_viewers", self.max_viewers, 1, 100_000)?;
        self.validate_layers()?;
        if self.on_demand && self.listening_input().is_some() {
            return fail(
                "on_demand",
                "must be false for an input that waits for a publisher (-listen 1, SRT mode=listener): FFmpeg has to listen before anyone watches",
            );
        }
        Ok(())
    }

    /// The URL FFmpeg listens on for a publisher (as given: mask it before showing it), when
    /// the input makes it a server: `-listen 1` (RTMP, HTTP), an SRT URL with
    /// `mode=listener`, or a TCP URL with `listen`. Such a run waits for its
    /// publisher as long as it takes, and ends when the publisher leaves.
    pub fn listening_input(&self) -> Option<String> {
        let mut listen_flag = false;
        let mut args = self.input.iter().peekable();
        while let Some(a) = args.next() {
            match a.as_str() {
                "-listen" => listen_flag = args.peek().is_some_and(|v| *v != "0"),
                "-i" => {
                    let url = args.next()?;
                    let lower = url.to_ascii_lowercase();
                    let query = lower.split_once('?').map_or("", |(_, q)| q);
                    let params = || query.split('&');
                    let listens = listen_flag
                        || (lower.starts_with("srt://") && params().any(|p| p == "mode=listener"))
                        || (lower.starts_with("tcp://")
                            && params().any(|p| {
                                p == "listen" || p.starts_with("listen=") && p != "listen=0"
                            }));
                    if listens {
                        return Some(url.clone());
                    }
                    listen_flag = false;
                }
                _ => {}
            }
        }
        None
    }

    fn validate_layers(&self) -> Result<(), FieldError> {
        if !(1..=MAX_LAYERS).contains(&self.layers) {
            return fail(
                "layers",
                format!(
                    "must be 1..={MAX_LAYERS} (1: the video as it is; 2 adds half the size at a quarter of the bitrate; 3 adds a quarter of the size at 150 kbit/s), got {}",
                    self.layers
                ),
            );
        }
        if self.layers == 1 {
            return Ok(());
        }
        if self.is_published() {
            return fail(
                "layers",
                format!(
                    "must be 1 for a stream published over WHIP (it carries what its publisher sends: pixelpass does not transcode WHIP), got {}; remove `layers`",
                    self.layers
                ),
            );
        }
        let inputs = self.input.iter().filter(|a| *a == "-i").count();
        if inputs > 1 && (self.video_map.is_none() || self.audio && self.audio_map.is_none()) {
            return fail(
                "layers",
                format!(
                    "{} needs `video_map` and `audio_map` (or audio = false) when `input` has {inputs} inputs: say which video the layers are encoded from and which sound their MPEG-TS carries, e.g. video_map = \"0:v:0\", audio_map = \"1:a:0\"",
                    self.layers
                ),
            );
        }
        Ok(())
    }

    /// The stream is published over WHIP rather than run by FFmpeg.
    pub fn is_published(&self) -> bool {
        self.publish_token.is_some() && self.input.is_empty()
    }

    fn validate_input(&self) -> Result<(), FieldError> {
        if let Some(t) = &self.publish_token {
            let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '~');
            if !(16..=256).contains(&t.len()) || !t.chars().all(ok) {
                return fail(
                    "publish_token",
                    "must be 16..=256 characters of A-Z a-z 0-9 _ - . ~ (a secret: `pixelpass` can make one with `head -c 24 /dev/urandom | base64 | tr +/ -_`)",
                );
            }
            if !self.input.is_empty() {
                return fail(
                    "publish_token",
                    "a stream has either `input` (FFmpeg pulls it) or `publish_token` (a publisher pushes it over WHIP), not both",
                );
            }
            return Ok(());
        }
        if self.input.is_empty() {
            return fail("input", "must not be empty: give FFmpeg input arguments, e.g. [\"-i\", \"rtsp://camera/stream\"], or a `publish_token` for a stream published over WHIP");
        }
        if !self.input.iter().any(|a| a == "-i") {
            return fail(
                "input",
                "must contain \"-i\" followed by the input URL or file",
            );
        }
        if let Some(bad) = self
            .input
            .iter()
            .find(|a| RESERVED_INPUT_ARGS.contains(&a.as_str()))
        {
            return fail("input", format!("must not contain \"{bad}\": pixelpass adds its own outputs and progress reporting"));
        }
        let map_ok = |m: &str| {
            let first = m.split(':').next().unwrap_or("");
            !first.is_empty()
                && first.chars().all(|c| c.is_ascii_digit())
                && m.len() <= 32
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '?' | '_' | '.' | '-'))
        };
        for (field, map) in [
            ("video_map", &self.video_map),
            ("audio_map", &self.audio_map),
        ] {
            if map.as_deref().is_some_and(|m| !map_ok(m)) {
                return fail(
                    field,
                    "must be an FFmpeg -map specifier: input index, then stream, e.g. \"0:v:0\" or \"1:a:0\"",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
        let err =
            serde_json::from_str::<StreamConfig>(r#"{"id":"a","input":["-i","x"],"lingr":1}"#)
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
        let published: StreamConfig = serde_json::from_str(
            r#"{"id":"w","publish_token":"a-publisher-secret-0123","layers":2}"#,
        )
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
}
