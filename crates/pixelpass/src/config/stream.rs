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
    /// Write the stream to playable fragmented MP4 files too, whenever it
    /// runs (the CMAF of its LL-HLS output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordConfig>,
}

/// `[streams.record]`: where and how long a stream's recordings are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// The directory (made if missing); files are `ID-2026-12-03T19-04-49Z.mp4`.
    pub dir: std::path::PathBuf,
    /// A new file starts at the first keyframe after this many seconds.
    #[serde(default = "default_record_segment")]
    pub segment_seconds: f64,
    /// Files older than this are deleted (none: kept by age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hours: Option<f64>,
    /// The oldest files are deleted while the stream's files take more (GB, 10^9 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_gb: Option<f64>,
}

fn default_record_segment() -> f64 {
    600.0
}

impl RecordConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if self.dir.as_os_str().is_empty() {
            return fail("record.dir", "must name a directory");
        }
        check_range(
            "record.segment_seconds",
            self.segment_seconds,
            1.0,
            86400.0,
            " seconds",
        )?;
        if let Some(h) = self.keep_hours {
            check_range("record.keep_hours", h, 0.01, 87600.0, " hours")?;
        }
        if let Some(gb) = self.keep_gb {
            check_range("record.keep_gb", gb, 0.001, 1_000_000.0, " GB")?;
        }
        Ok(())
    }
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
        if let Some(r) = &self.record {
            r.validate()?;
        }
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
#[path = "stream_tests.rs"]
mod tests;
