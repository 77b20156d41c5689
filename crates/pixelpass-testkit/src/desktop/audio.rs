//! System audio: a tone played into the session's default sink, and the
//! tracks decoded back (AAC with ffmpeg, Opus with GStreamer) and checked
//! for it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::session::Session;
use crate::prelude::run_tool;

/// A tone played into the session's default sink until dropped.
pub struct Tone(Child);

impl Tone {
    pub fn play(session: &Session, freq: u32) -> Tone {
        let mut cmd = Command::new("gst-launch-1.0");
        session.apply(&mut cmd).args([
            "-q",
            "audiotestsrc",
            "is-live=true",
            "wave=sine",
            &format!("freq={freq}"),
            "volume=0.5",
            "!",
            "audioconvert",
            "!",
            // Half a second of slack: a starved player would put silence into the sink.
            "pulsesink",
            "buffer-time=500000",
            "latency-time=20000",
        ]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Tone(cmd.spawn().expect("gst-launch-1.0 plays a tone"))
    }
}

impl Drop for Tone {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// RMS (full scale 1.0), and the share of 20 ms blocks whose energy is
/// mostly (> 50 %) at `freq` (Goertzel; 20 ms blocks put 1 kHz on a bin).
/// A share, not all blocks: on a loaded machine the player may starve for a
/// moment and the sink then plays silence, or the audio server skips, which
/// breaks the sine's phase inside a block. Short blocks keep such a glitch
/// from spoiling more than one block (with 100 ms blocks, a CI run on a busy
/// 2-core VM saw 57 % for a clean, loud tone with seven phase breaks in 2 s;
/// the same capture in 20 ms blocks is 87 %).
pub fn rms_and_tone_share(samples: &[f32], rate: usize, freq: f64) -> (f64, f64) {
    let n = samples.len().max(1) as f64;
    let rms = (samples
        .iter()
        .map(|s| f64::from(*s) * f64::from(*s))
        .sum::<f64>()
        / n)
        .sqrt();
    let block = rate / 50;
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / rate as f64).cos();
    let blocks: Vec<bool> = samples
        .chunks_exact(block)
        .map(|b| {
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            for x in b {
                let s0 = f64::from(*x) + coeff * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
            let energy: f64 = b.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
            energy > 0.0 && 2.0 * power / (block as f64 * energy) > 0.5
        })
        .collect();
    let share = blocks.iter().filter(|b| **b).count() as f64 / blocks.len().max(1) as f64;
    (rms, share)
}

/// The TS's first audio track as mono f32 at 48 kHz, skipping the first 0.5 s.
pub fn aac_samples(file: &Path) -> Vec<f32> {
    let out = file.with_extension("f32");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(file)
        .args([
            "-map", "0:a:0", "-ss", "0.5", "-ac", "1", "-ar", "48000", "-f", "f32le",
        ])
        .arg(&out);
    let r = run_tool(cmd, Duration::from_secs(60));
    assert!(
        r.success(),
        "ffmpeg could not decode the AAC track: {}",
        r.stderr
    );
    let raw = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    raw.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Opus packets decoded with GStreamer's opusdec, mono f32 at 48 kHz.
pub fn opus_samples(packets: &[(u64, Vec<u8>)]) -> Vec<f32> {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app as gst_app;
    gst::init().unwrap();
    let pipeline = gst::Pipeline::new();
    let caps = gst::Caps::builder("audio/x-opus")
        .field("channel-mapping-family", 0i32)
        .field("channels", 2i32)
        .field("rate", 48_000i32)
        .build();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .build();
    let dec = gst::ElementFactory::make("opusdec").build().unwrap();
    let conv = gst::ElementFactory::make("audioconvert").build().unwrap();
    let out_caps = gst::Caps::builder("audio/x-raw")
        .field("format", "F32LE")
        .field("channels", 1i32)
        .field("rate", 48_000i32)
        .build();
    let sink = gst_app::AppSink::builder()
        .caps(&out_caps)
        .sync(false)
        .build();
    pipeline
        .add_many([src.upcast_ref(), &dec, &conv, sink.upcast_ref()])
        .unwrap();
    gst::Element::link_many([src.upcast_ref(), &dec, &conv, sink.upcast_ref()]).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let t0 = packets.first().map_or(0, |p| p.0);
    for (rtp_time, p) in packets {
        let mut b = gst::Buffer::from_slice(p.clone());
        {
            // RTP time is 48 kHz: a lost packet is a gap opusdec fills, not a phase jump.
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_useconds((rtp_time - t0) * 1000 / 48));
        }
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let mut samples = Vec::new();
    while let Ok(s) = sink.pull_sample() {
        let map = s.buffer().unwrap().map_readable().unwrap();
        samples.extend(
            map.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    pipeline.set_state(gst::State::Null).unwrap();
    samples
}
