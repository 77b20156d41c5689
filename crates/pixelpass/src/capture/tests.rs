//! These run real GStreamer pipelines (test source, x264enc / openh264enc,
//! mpegtsmux) and check what comes out with ffprobe / ffmpeg.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::element::{make, set_num, set_str};
use super::*;
use crate::hub::{Hub, HubConfig};
use crate::supervisor::{Producer, Run};

fn small(audio: bool) -> PipelineConfig {
    PipelineConfig {
        source: SourceKind::Test,
        framerate: 30,
        bitrate_kbps: 1000,
        width: Some(320),
        height: Some(240),
        audio,
        ..PipelineConfig::default()
    }
}

async fn start(cfg: PipelineConfig, choice: EncoderChoice, hub: &Hub) -> (Run, RunProbe) {
    let producer = GstProducer::new(cfg, choice);
    match tokio::time::timeout(Duration::from_secs(15), producer.start_run(hub.clone())).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("producer did not start: {e}"),
        Err(_) => panic!("producer start did not resolve"),
    }
}

/// Everything a fresh viewer receives while the encoder puts out `frames`
/// more frames: counted, not timed, so a slow machine just takes longer.
async fn record_frames(hub: &Hub, encoded: &Mutex<Encoded>, frames: u64) -> Vec<u8> {
    let until = encoded.lock().unwrap().frames + frames;
    let mut sub = hub.subscribe(Instant::now());
    // Only so that a stuck pipeline fails instead of hanging the test.
    let hang_guard = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut data = Vec::new();
    while encoded.lock().unwrap().frames < until {
        match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            Ok(Some(b)) => data.extend_from_slice(&b),
            Ok(None) => panic!("hub closed"),
            Err(_) => assert!(
                tokio::time::Instant::now() < hang_guard,
                "the encoder made {} of {until} frames in 60 s",
                encoded.lock().unwrap().frames
            ),
        }
    }
    data
}

/// Stop within a bound; the pipeline is freed afterwards.
async fn stop(run: Run, probe: &RunProbe) {
    tokio::time::timeout(Duration::from_secs(5), run.handle.stop())
        .await
        .expect("stop completes");
    assert!(
        probe.pipeline.upgrade().is_none(),
        "the pipeline is freed after stop"
    );
}

pub(super) fn temp_ts(name: &str, data: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("pixelpass-{}-{name}.ts", std::process::id()));
    std::fs::write(&path, data).expect("write temp file");
    path
}

pub(super) fn ffprobe_streams(path: &PathBuf) -> Vec<serde_json::Value> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    json["streams"].as_array().cloned().unwrap_or_default()
}

pub(super) fn decoded_video_frames(path: &PathBuf) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    json["streams"][0]["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `ffmpeg -v error` decoding everything: its complaints (empty when clean).
pub(super) fn ffmpeg_decode_errors(path: &PathBuf) -> String {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(super) fn codecs(streams: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = streams
        .iter()
        .filter_map(|s| s["codec_name"].as_str().map(str::to_owned))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_source_stream_decodes_with_ffmpeg() {
    let cfg = small(true);
    let choice = preflight(&cfg).expect("preflight");
    let hub = Hub::new(HubConfig::default());
    let (run, probe) = start(cfg, choice, &hub).await;
    assert_eq!(run.encoder, choice.element);
    let encoded = count_encoded(&probe, choice.element);
    let data = record_frames(&hub, &encoded, 60).await;
    let counters = probe.counters.clone();
    stop(run, &probe).await;

    // mpegtsmux hands the appsink one 188-byte packet per buffer, never a list.
    let buffers = counters.buffers.load(Ordering::Relaxed);
    assert!(buffers > 0);
    assert_eq!(counters.lists.load(Ordering::Relaxed), 0);
    assert_eq!(counters.bytes.load(Ordering::Relaxed), buffers * 188);

    assert_eq!(data.len() % 188, 0);
    let path = temp_ts("av", &data);
    let streams = ffprobe_streams(&path);
    assert_eq!(codecs(&streams), ["aac", "h264"], "streams: {streams:?}");
    let video = streams
        .iter()
        .find(|s| s["codec_name"] == "h264")
        .expect("h264 stream");
    assert_eq!(video["profile"], "Constrained Baseline");
    assert_eq!(video["width"], 320);
    assert_eq!(video["height"], 240);
    let audio = streams
        .iter()
        .find(|s| s["codec_name"] == "aac")
        .expect("aac stream");
    assert_eq!(audio["sample_rate"], "48000");
    assert_eq!(audio["channels"], 2);
    let errors = ffmpeg_decode_errors(&path);
    assert!(errors.trim().is_empty(), "ffmpeg complained: {errors}");
    let frames = decoded_video_frames(&path);
    assert!(
        frames >= 40,
        "only {frames} frames decoded of the 60 the encoder made meanwhile"
    );
    let _ = std::fs::remove_file(&path);
}

/// What an encoder put out, counted at its src pad: frames so far, and the
/// index of each keyframe among them.
#[derive(Debug, Default)]
struct Encoded {
    frames: u64,
    keyframes: Vec<u64>,
}

impl Encoded {
    /// The first keyframe at or after frame `from`.
    fn keyframe_from(&self, from: u64) -> Option<u64> {
        self.keyframes.iter().copied().find(|&k| k >= from)
    }

    /// The last keyframe before frame `before`.
    fn keyframe_before(&self, before: u64) -> Option<u64> {
        self.keyframes.iter().copied().rfind(|&k| k < before)
    }
}

/// Count the frames `encoder` puts out (one buffer per frame: AU alignment).
fn count_encoded(probe: &RunProbe, encoder: &str) -> Arc<Mutex<Encoded>> {
    let encoded = Arc::new(Mutex::new(Encoded::default()));
    let pad = probe
        .pipeline
        .upgrade()
        .and_then(|p| p.by_name(encoder))
        .and_then(|e| e.static_pad("src"))
        .expect("the encoder's src pad");
    let seen = encoded.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, probe| {
        if let Some(buffer) = probe.buffer() {
            let mut e = seen.lock().unwrap();
            if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                let at = e.frames;
                e.keyframes.push(at);
            }
            e.frames += 1;
        }
        gst::PadProbeReturn::Ok
    });
    encoded
}

/// Wait for `what` (polling), giving up after `hang_guard` only so that a
/// broken pipeline fails the test instead of hanging it: no assertion is
/// about how long it took.
async fn wait_for(what: &str, hang_guard: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + hang_guard;
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {hang_guard:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A joiner's keyframe request makes the encoder's very next frames a
/// keyframe, and the joiner starts on it. Counted in encoded frames, not wall
/// time: a starved machine encodes late, but not more frames in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_on_demand_arrives_on_the_next_frames() {
    /// The keyframe is one of this many frames after the request (a third
    /// of a second at 30 fps; x264 with zerolatency holds no frames back).
    const WITHIN_FRAMES: u64 = 10;
    init().expect("gst init");
    let cfg = small(true);
    let hub = Hub::new(HubConfig::default());
    let choice = EncoderChoice::new(EncoderKind::X264);
    let (run, probe) = start(cfg.clone(), choice, &hub).await;
    // What the muxer (an aggregator) waits for: the upstream latency it reports.
    if let Some(mux) = probe
        .pipeline
        .upgrade()
        .and_then(|p| p.by_name("mpegtsmux"))
    {
        let mut q = gst::query::Latency::new();
        if mux.static_pad("src").is_some_and(|pad| pad.query(&mut q)) {
            let (live, min, max) = q.result();
            eprintln!(
                "mpegtsmux latency: live={live} min={min} max={}",
                max.display()
            );
        }
    }
    let encoded = count_encoded(&probe, choice.element);
    // key-int-max: the natural keyframe comes this many frames after the last one.
    let natural_gop = 2 * u64::from(cfg.framerate);
    let mut delays = Vec::new();
    for round in 0..3 {
        // The hub asks for a keyframe only when its last one is older than
        // its rate limit (500 ms): wait for that, on the hub's own clock.
        wait_for("a keyframe in the hub", Duration::from_secs(10), || {
            hub.last_keyframe_at().is_some()
        })
        .await;
        loop {
            let last = hub.last_keyframe_at().expect("a keyframe");
            tokio::time::sleep_until((last + Duration::from_millis(600)).into()).await;
            if hub.last_keyframe_at() == Some(last) {
                break;
            }
        }
        let before = hub.stats();
        let asked_at = encoded.lock().unwrap().frames;
        let mut sub = hub.subscribe(Instant::now());
        assert_eq!(
            hub.stats().keyframe_requests,
            before.keyframe_requests + 1,
            "round {round}: the joiner asked for a keyframe"
        );
        wait_for("the requested keyframe", Duration::from_secs(10), || {
            encoded.lock().unwrap().keyframe_from(asked_at).is_some()
        })
        .await;
        let (key, previous) = {
            let e = encoded.lock().unwrap();
            (
                e.keyframe_from(asked_at).expect("waited for"),
                e.keyframe_before(asked_at),
            )
        };
        assert!(
            key - asked_at <= WITHIN_FRAMES,
            "round {round}: the keyframe came {} frames after the request (at most {WITHIN_FRAMES})",
            key - asked_at
        );
        // It is the requested keyframe, not the next natural one.
        if let Some(previous) = previous {
            assert!(
                key - previous < natural_gop,
                "round {round}: keyframe at frame {key}, {} after the last one: the natural one, not the requested",
                key - previous
            );
        }
        // The joiner starts on it: its first bytes are the PSI in front of the keyframe chunk.
        let first = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
        assert!(
            matches!(first, Ok(Some(_))),
            "round {round}: the joiner got nothing although the keyframe was encoded"
        );
        assert!(hub.stats().keyframes > before.keyframes);
        let delivered_at = encoded.lock().unwrap().frames;
        delays.push((key - asked_at, delivered_at - asked_at));
    }
    stop(run, &probe).await;
    eprintln!("frames from the request to (the keyframe, the joiner's first bytes): {delays:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_error_is_reported_on_failures_and_stop_completes() {
    init().expect("gst init");
    let hub = Hub::new(HubConfig::default());
    let choice = EncoderChoice::new(EncoderKind::X264);
    let (mut run, probe) = start(small(false), choice, &hub).await;
    {
        let pipeline = probe.pipeline.upgrade().expect("pipeline alive");
        let encoder = pipeline
            .by_name(choice.element)
            .expect("encoder in the pipeline");
        gst::element_error!(
            encoder,
            gst::CoreError::Failed,
            ("injected failure"),
            ["test debug info"]
        );
    }
    let failure = tokio::time::timeout(Duration::from_secs(5), run.failures.recv())
        .await
        .expect("a failure within 5 s")
        .expect("failure channel open");
    assert!(
        failure.message.contains("x264enc"),
        "names the element: {failure}"
    );
    assert!(
        failure.message.contains("injected failure"),
        "carries the message: {failure}"
    );
    assert_eq!(
        failure.kind,
        crate::supervisor::FailureKind::Crashed,
        "a bus ERROR is a crash"
    );
    stop(run, &probe).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openh264_video_only_stream() {
    init().expect("gst init");
    if gst::ElementFactory::find("openh264enc").is_none() {
        eprintln!("openh264enc not installed: skipped");
        return;
    }
    let choice = encoder::choose_from(&[EncoderKind::OpenH264]).expect("openh264 usable");
    let hub = Hub::new(HubConfig::default());
    let (run, probe) = start(small(false), choice, &hub).await;
    let encoded = count_encoded(&probe, choice.element);
    let data = record_frames(&hub, &encoded, 36).await;
    stop(run, &probe).await;
    let path = temp_ts("openh264", &data);
    let streams = ffprobe_streams(&path);
    assert_eq!(codecs(&streams), ["h264"], "video only: {streams:?}");
    let errors = ffmpeg_decode_errors(&path);
    assert!(errors.trim().is_empty(), "ffmpeg complained: {errors}");
    let frames = decoded_video_frames(&path);
    assert!(
        frames >= 20,
        "only {frames} frames decoded of the 36 the encoder made meanwhile"
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn an_x_display_that_does_not_open_fails_the_start_naming_it() {
    init().expect("gst init");
    let hub = Hub::new(HubConfig::default());
    let cfg = PipelineConfig {
        source: SourceKind::X11,
        display: Some(":4711".into()),
        ..small(false)
    };
    let producer = GstProducer::new(cfg, EncoderChoice::new(EncoderKind::X264));
    let err = match tokio::time::timeout(Duration::from_secs(15), producer.start(hub.clone())).await
    {
        Ok(Ok(_)) => panic!("an X11 capture of :4711 started"),
        Ok(Err(e)) => e,
        Err(_) => panic!("the failed start did not resolve"),
    };
    assert!(err.message.starts_with("ximagesrc: "), "{err}");
    assert_eq!(
        err.kind,
        crate::supervisor::FailureKind::StartFailed,
        "an element error before the first media is a failed start: {err}"
    );
    assert!(
        err.message.contains(":4711") || err.message.to_lowercase().contains("display"),
        "{err}"
    );
    assert_eq!(hub.stats().chunks, 0);
}

#[test]
fn missing_element_names_the_debian_package() {
    init().expect("gst init");
    assert_eq!(
        check_elements(["queue", "no-such-element-pixelpass"]),
        Err(PipelineError::MissingElement {
            element: "no-such-element-pixelpass".into(),
            package: None
        })
    );
    assert_eq!(check_elements(["queue", "capsfilter"]), Ok(()));
    assert_eq!(
        PipelineError::missing("x264enc").to_string(),
        "missing GStreamer element x264enc: apt-get install gstreamer1.0-plugins-ugly"
    );
    assert_eq!(
        PipelineError::missing("avenc_aac").to_string(),
        "missing GStreamer element avenc_aac: apt-get install gstreamer1.0-libav"
    );
    assert!(PipelineError::missing("frobnicate")
        .to_string()
        .contains("no known Debian package"));
    // Every element a graph can need has its package in the table.
    let cfg = PipelineConfig {
        width: Some(640),
        ..small(true)
    };
    let mut all = graph::required_elements(&cfg);
    all.extend(EncoderKind::PREFERENCE.iter().map(|k| k.element()));
    all.extend(encoder::AAC_ENCODERS);
    all.push("timeoverlay");
    for el in all {
        assert!(
            debian_package_for(el).is_some(),
            "no package known for {el}"
        );
    }
}

#[test]
fn encoder_choice_follows_the_preference_order() {
    init().expect("gst init");
    assert!(matches!(
        encoder::choose_from(&[]),
        Err(PipelineError::NoEncoder { .. })
    ));
    let x264 =
        encoder::choose_from(&[EncoderKind::X264, EncoderKind::OpenH264]).expect("x264enc usable");
    assert_eq!(x264.kind, EncoderKind::X264);
    assert_eq!(x264.to_string(), "x264enc (software)");
    // A preferred candidate that is absent here is skipped, not fatal.
    let choice = encoder::choose().expect("some encoder");
    for &kind in EncoderKind::PREFERENCE
        .iter()
        .take_while(|&&k| k != choice.kind)
    {
        assert!(gst::ElementFactory::find(kind.element()).is_none() || kind.is_hardware());
    }
    let err = encoder::choose_from(&[EncoderKind::Nvenc]).err();
    if gst::ElementFactory::find("nvh264enc").is_none() {
        let msg = err.expect("nvh264enc absent").to_string();
        assert!(
            msg.contains("nvh264enc") && msg.contains("gstreamer1.0-plugins-ugly"),
            "{msg}"
        );
    }
}

#[test]
fn checked_setters_return_errors_instead_of_panicking() {
    init().expect("gst init");
    let q = make("queue", "q").expect("queue");
    assert!(matches!(
        set_num(&q, "max-size-buffers", u64::MAX),
        Err(PipelineError::Property { .. })
    ));
    assert!(matches!(
        set_num(&q, "no-such-property", 1),
        Err(PipelineError::Property { .. })
    ));
    assert!(matches!(
        set_str(&q, "leaky", "sideways"),
        Err(PipelineError::Property { .. })
    ));
    set_num(&q, "max-size-buffers", 7).expect("in range");
    assert_eq!(q.property::<u32>("max-size-buffers"), 7);
    set_str(&q, "leaky", "downstream").expect("valid nick");
    // A string property is not a number.
    assert!(matches!(
        set_num(&q, "name", 1),
        Err(PipelineError::Property { .. })
    ));
    assert!(matches!(
        make("no-such-element-pixelpass", "x"),
        Err(PipelineError::MissingElement { .. })
    ));
}

#[test]
fn bus_errors_become_typed_errors_with_the_element_name() {
    init().expect("gst init");
    let el = make("identity", "the-culprit").expect("identity");
    let msg = gst::message::Error::builder(gst::CoreError::Failed, "it broke")
        .src(&el)
        .debug("details")
        .build();
    assert_eq!(
        bus::classify(&msg),
        Some(PipelineError::Bus {
            element: "the-culprit".into(),
            message: "it broke".into(),
            debug: Some("details".into()),
        })
    );
    let eos = gst::message::Eos::builder().src(&el).build();
    assert_eq!(bus::classify(&eos), Some(PipelineError::EndOfStream));
    let warning = gst::message::Warning::builder(gst::CoreError::Failed, "meh")
        .src(&el)
        .build();
    assert_eq!(bus::classify(&warning), None);
}
