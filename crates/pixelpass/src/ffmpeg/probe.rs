//! `video = "auto"`: look at the input before the run, then copy its H.264
//! or encode it.
//!
//! The probe is FFmpeg itself on the operator's own input arguments (so
//! whatever FFmpeg can open, the probe can), without `-re`/`-readrate`, copying
//! the first [`PROBE_FRAMES`] pictures out as Annex-B H.264. FFmpeg's own
//! stream lines say the codecs; [`Survey`] reads the bytes for the profile and
//! B-frames. [`decide`] is pure, so every rule is unit-tested.
//!
//! What is copied: H.264 in the profiles browsers decode over WebRTC
//! (Constrained Baseline, Baseline, Main, High; any level) without B-frames:
//! WebRTC sends pictures in decode order and browsers show B-frames out of
//! order or not at all. Anything else is encoded, and the reason is said.

use std::ffi::OsStr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::config::{StreamConfig, VideoMode};
use crate::media::h264::Survey;

/// Pictures the probe reads: enough to meet B-frames (x264 puts them right
/// after the first P) without waiting long on a live input.
pub const PROBE_FRAMES: u32 = 15;
/// A probe that takes longer (a live input that sends nothing) gives up.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(8);
/// Bytes of H.264 the probe keeps at most.
const PROBE_MAX_BYTES: usize = 16 << 20;

/// How a run treats video, and why (shown in the report and the log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VideoChoice {
    /// `"copy"` or `"encode"`.
    pub mode: &'static str,
    pub why: String,
    /// The input's audio is AAC: the TS leg copies it instead of encoding.
    #[serde(skip)]
    pub copy_aac: bool,
    /// Decided from what the input really is (not from a failed probe or a
    /// setting): later runs of the same config reuse it instead of probing again.
    #[serde(skip)]
    pub settled: bool,
}

impl VideoChoice {
    pub fn copy(&self) -> bool {
        self.mode == "copy"
    }
    fn settled(self) -> Self {
        Self {
            settled: true,
            ..self
        }
    }
    fn encode(why: impl Into<String>) -> Self {
        Self {
            mode: "encode",
            why: why.into(),
            copy_aac: false,
            settled: false,
        }
    }
}

/// What the probe saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probed {
    /// FFmpeg's codec names from its "Stream #0:N: Video: h264 (High) …" lines.
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub survey: Survey,
    /// Bytes of H.264 the probe read.
    pub video_bytes: usize,
    /// FFmpeg's last error line when it could not open the input.
    pub error: Option<String>,
}

/// Why the input cannot be probed before the run, if it cannot.
fn unprobeable(cfg: &StreamConfig) -> Option<String> {
    if let Some(url) = cfg.listening_input() {
        let url = super::log::endpoint(&url);
        return Some(format!(
            "the input waits for a publisher ({url}) and cannot be looked at before one connects; \
             set video = \"copy\" when the publisher sends H.264 without B-frames"
        ));
    }
    let inputs = cfg.input.iter().filter(|a| *a == "-i").count();
    if inputs != 1 && cfg.video_map.is_none() {
        return Some(format!(
            "{inputs} inputs and no video_map: which video to copy is not known"
        ));
    }
    None
}

/// The choice for a stream whose input was probed (or could not be).
pub fn decide(cfg: &StreamConfig, probed: Option<&Probed>) -> VideoChoice {
    match cfg.video {
        VideoMode::Encode => return VideoChoice::encode("video = \"encode\""),
        VideoMode::Copy => {
            return VideoChoice {
                mode: "copy",
                why: "video = \"copy\"".into(),
                copy_aac: probed.is_some_and(aac),
                settled: false,
            }
        }
        VideoMode::Auto => {}
    }
    if let Some(why) = unprobeable(cfg) {
        return VideoChoice::encode(why);
    }
    let Some(p) = probed else {
        return VideoChoice::encode("the input was not probed");
    };
    match p.video_codec.as_deref() {
        None => {
            let why = p.error.as_deref().unwrap_or("FFmpeg found no video in it");
            return VideoChoice::encode(format!("the input could not be probed: {why}"));
        }
        Some("h264") => {}
        Some(other) => {
            return VideoChoice::encode(format!("the input's video is {other}, not H.264"))
                .settled();
        }
    }
    let s = &p.survey;
    let profile = s.profile_name();
    if s.pictures == 0 || s.profile_level_id.is_none() {
        return VideoChoice::encode(format!(
            "no H.264 picture with its SPS came out of the input while probing ({} bytes, {} pictures, {})",
            p.video_bytes,
            s.pictures,
            p.error.as_deref().unwrap_or("no error")
        ));
    }
    if s.b_pictures > 0 {
        return VideoChoice::encode(format!(
            "input has B-frames ({} of {} pictures, H.264 {profile})",
            s.b_pictures, s.pictures
        ))
        .settled();
    }
    let playable = matches!(s.profile_level_id.map(|p| p >> 16), Some(66 | 77 | 100));
    if !playable {
        return VideoChoice::encode(format!(
            "input is H.264 {profile}, which browsers do not decode over WebRTC"
        ))
        .settled();
    }
    VideoChoice {
        mode: "copy",
        why: format!("H.264 {profile}, no B-frames"),
        copy_aac: aac(p),
        settled: true,
    }
}

fn aac(p: &Probed) -> bool {
    p.audio_codec.as_deref() == Some("aac")
}

/// The probe's argv: the input without real-time pacing, the video to use
/// copied out as Annex-B H.264 on stdout.
pub fn probe_args(cfg: &StreamConfig) -> Vec<String> {
    // 2.5 s of analysis instead of FFmpeg's 5 s: enough to meet the first
    // keyframe (and its SPS, without which the copy cannot start) of a live
    // input with a GOP of up to 2 s; a live MPEG-TS takes all of it (the
    // demuxer cannot know no other stream comes). The operator's own
    // `-analyzeduration` in `input` comes later and wins.
    let mut args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "level+info",
        "-analyzeduration",
        "2500000",
    ]
    .map(String::from)
    .into();
    let mut input = cfg.input.iter();
    while let Some(a) = input.next() {
        match a.as_str() {
            "-re" => {}
            "-readrate" | "-readrate_initial_burst" => {
                input.next();
            }
            _ => args.push(a.clone()),
        }
    }
    let video = cfg.video_map.clone().unwrap_or_else(|| "0:v:0".into());
    args.extend(["-map".into(), video]);
    for a in ["-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-frames:v"] {
        args.push(a.into());
    }
    args.push(PROBE_FRAMES.to_string());
    for a in ["-f", "h264", "pipe:1"] {
        args.push(a.into());
    }
    args
}

/// A log line without its leading `[level]` / `[demuxer @ 0x…]` tags.
fn strip_tags(line: &str) -> &str {
    let mut text = line.trim();
    while text.starts_with('[') {
        match text.split_once("] ") {
            Some((_, rest)) => text = rest.trim_start(),
            None => break,
        }
    }
    text
}

/// Read FFmpeg's "Stream #0:0[0x100]: Video: h264 (High) (…)" lines of input 0.
pub fn parse_streams(stderr: &str, probed: &mut Probed) {
    let mut input0 = false;
    for line in stderr.lines() {
        let text = strip_tags(line);
        if text.starts_with("Input #") {
            input0 = text.starts_with("Input #0");
            continue;
        }
        if text.starts_with("Output #") {
            input0 = false;
        }
        if !input0 || !text.starts_with("Stream #") {
            continue;
        }
        let codec = |kind: &str| {
            text.split_once(kind)
                .and_then(|(_, rest)| rest.split([' ', ',']).next())
                .map(str::to_owned)
        };
        if probed.video_codec.is_none() {
            probed.video_codec = codec("Video: ");
        }
        if probed.audio_codec.is_none() {
            probed.audio_codec = codec("Audio: ");
        }
    }
    if probed.error.is_none() {
        probed.error = stderr
            .lines()
            .rev()
            .find(|l| l.contains("[error]") || l.contains("[fatal]"))
            .map(|l| strip_tags(l).to_owned());
    }
}

/// The choice for this run: `auto` probes the input (never a listening one).
pub async fn choose(
    program: &OsStr,
    cfg: &StreamConfig,
    earlier: Option<VideoChoice>,
) -> VideoChoice {
    if let Some(c) = earlier.filter(|c| c.settled && cfg.video == VideoMode::Auto) {
        return c;
    }
    // `copy` is not probed: its start would wait for the probe (seconds on a
    // live MPEG-TS) only to learn whether the audio is AAC; its AAC is encoded.
    let wanted = cfg.video == VideoMode::Auto && unprobeable(cfg).is_none();
    if !wanted {
        return decide(cfg, None);
    }
    let probed = probe(program, cfg).await.unwrap_or_else(|e| Probed {
        error: Some(format!("cannot run {}: {e}", program.to_string_lossy())),
        ..Probed::default()
    });
    let mut choice = decide(cfg, Some(&probed));
    // FFmpeg's words may quote the input URL, credentials and all.
    choice.why = super::log::mask(&choice.why);
    choice
}

/// Run the probe: FFmpeg `program` on the stream's input, bounded in time
/// and bytes. Spawned like a run's FFmpeg (own process group, parent-death
/// signal: it cannot outlive pixelpass) and always ended and reaped.
pub async fn probe(
    program: &OsStr,
    cfg: &StreamConfig,
) -> Result<Probed, super::child::SpawnError> {
    let spawned = super::child::spawn(program, &probe_args(cfg), true)?;
    let (mut child, pid) = (spawned.child, spawned.pid);
    let mut stdout = spawned.stdout;
    let mut stderr = spawned.stderr;
    drop(spawned.progress);
    let mut video = Vec::new();
    let mut errors = Vec::new();
    let read = async {
        let out = async {
            if let Some(s) = stdout.as_mut() {
                let mut chunk = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 || video.len() >= PROBE_MAX_BYTES {
                        break;
                    }
                    video.extend_from_slice(&chunk[..n]);
                }
            }
        };
        let err = async {
            let _ = (&mut stderr).take(1 << 20).read_to_end(&mut errors).await;
        };
        tokio::join!(out, err);
    };
    let _ = tokio::time::timeout(PROBE_TIMEOUT, read).await;
    let _ = super::child::terminate(&mut child, pid, Duration::ZERO).await;
    let mut probed = Probed::default();
    parse_streams(&String::from_utf8_lossy(&errors), &mut probed);
    probed.survey.push(&video);
    probed.video_bytes = video.len();
    Ok(probed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> StreamConfig {
        serde_json::from_str(&format!(
            r#"{{"id":"a","input":["-re","-i","udp://127.0.0.1:5000"]{extra}}}"#
        ))
        .unwrap()
    }

    fn probed(codec: &str, profile: u32, b: u32) -> Probed {
        Probed {
            video_codec: Some(codec.into()),
            audio_codec: Some("aac".into()),
            survey: Survey {
                profile_level_id: Some(profile),
                pictures: 15,
                idr_pictures: 1,
                b_pictures: b,
            },
            video_bytes: 100_000,
            error: None,
        }
    }

    #[test]
    fn auto_copies_playable_h264_without_b_frames_and_says_why() {
        let c = cfg("");
        let high = decide(&c, Some(&probed("h264", 0x64001f, 0)));
        assert_eq!(
            (high.mode, high.why.as_str()),
            ("copy", "H.264 High, no B-frames")
        );
        assert!(
            high.copy_aac && high.settled,
            "what the input is: kept for later runs"
        );
        let cb = decide(&c, Some(&probed("h264", 0x42c01e, 0)));
        assert_eq!(cb.why, "H.264 Constrained Baseline, no B-frames");
    }

    #[test]
    fn auto_encodes_b_frames_other_codecs_and_unplayable_profiles() {
        let c = cfg("");
        let b = decide(&c, Some(&probed("h264", 0x64001f, 10)));
        assert_eq!(b.mode, "encode");
        assert_eq!(b.why, "input has B-frames (10 of 15 pictures, H.264 High)");
        let hevc = decide(&c, Some(&probed("hevc", 0, 0)));
        assert_eq!(hevc.why, "the input's video is hevc, not H.264");
        let hi10 = decide(&c, Some(&probed("h264", 0x6e001f, 0)));
        assert!(hi10.why.contains("High 10"), "{}", hi10.why);
        let failed = Probed {
            error: Some("udp://x: Connection refused".into()),
            ..Probed::default()
        };
        assert_eq!(
            decide(&c, Some(&failed)).why,
            "the input could not be probed: udp://x: Connection refused"
        );
        assert_eq!(decide(&c, None).mode, "encode");
        assert!(b.settled && hevc.settled && hi10.settled);
        assert!(
            !decide(&c, Some(&failed)).settled,
            "a failed probe is tried again next run"
        );
    }

    #[tokio::test]
    async fn a_settled_choice_is_reused_and_nothing_else_is() {
        let c = cfg("");
        let nowhere = OsStr::new("/nonexistent/ffmpeg");
        let settled = decide(&c, Some(&probed("h264", 0x64001f, 0)));
        // No probe runs (it could not: the program does not exist).
        assert_eq!(choose(nowhere, &c, Some(settled.clone())).await, settled);
        let unsettled = decide(&c, None);
        let again = choose(nowhere, &c, Some(unsettled)).await;
        assert!(
            again.why.starts_with("the input could not be probed: "),
            "{}",
            again.why
        );
        // A setting is not a finding: "copy" is never remembered as "auto".
        let copy = cfg(r#","video":"copy""#);
        assert_eq!(
            choose(nowhere, &copy, Some(settled)).await.why,
            "video = \"copy\""
        );
    }

    #[test]
    fn explicit_modes_and_unprobeable_inputs() {
        let enc = decide(
            &cfg(r#","video":"encode""#),
            Some(&probed("h264", 0x42c01e, 0)),
        );
        assert_eq!(
            (enc.mode, enc.why.as_str()),
            ("encode", "video = \"encode\"")
        );
        let copy = decide(&cfg(r#","video":"copy""#), None);
        assert_eq!((copy.mode, copy.copy_aac), ("copy", false));
        let listen: StreamConfig = serde_json::from_str(
            r#"{"id":"a","input":["-listen","1","-i","rtmp://0.0.0.0:1935/live/secret"]}"#,
        )
        .unwrap();
        let why = decide(&listen, None).why;
        assert!(
            why.contains("waits for a publisher") && !why.contains("secret"),
            "{why}"
        );
        let two: StreamConfig =
            serde_json::from_str(r#"{"id":"a","input":["-i","a.ts","-i","b.wav"]}"#).unwrap();
        assert!(decide(&two, None)
            .why
            .starts_with("2 inputs and no video_map"));
    }

    #[test]
    fn the_probe_drops_real_time_pacing_and_copies_annex_b() {
        let mut c = cfg("");
        c.input = [
            "-re",
            "-readrate",
            "1",
            "-f",
            "mpegts",
            "-i",
            "udp://127.0.0.1:5000",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            probe_args(&c).join(" "),
            "-hide_banner -nostdin -loglevel level+info -analyzeduration 2500000 -f mpegts -i udp://127.0.0.1:5000 \
             -map 0:v:0 -c:v copy -bsf:v h264_mp4toannexb -frames:v 15 -f h264 pipe:1"
        );
    }

    #[test]
    fn stream_lines_of_input_0_name_the_codecs() {
        let stderr = "[info] Input #0, mpegts, from 'udp://127.0.0.1:5000':\n\
            [info]   Duration: N/A, start: 1.4, bitrate: N/A\n\
            [info]   Stream #0:0[0x100]: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p, 1280x720, 30 fps\n\
            [info]   Stream #0:1[0x101](und): Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, stereo\n\
            [info] Output #0, h264, to 'pipe:1':\n\
            [info]   Stream #0:0: Video: h264 (High), yuv420p\n";
        let mut p = Probed::default();
        parse_streams(stderr, &mut p);
        assert_eq!(p.video_codec.as_deref(), Some("h264"));
        assert_eq!(p.audio_codec.as_deref(), Some("aac"));
        let mut missing = Probed::default();
        parse_streams(
            "[error] udp://127.0.0.1:1: Connection refused\n[fatal] Error opening input files: Connection refused\n",
            &mut missing,
        );
        assert_eq!(missing.video_codec, None);
        assert_eq!(
            missing.error.as_deref(),
            Some("Error opening input files: Connection refused")
        );
    }
}
