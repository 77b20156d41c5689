//! `layers` on a serve stream, end to end through the real server: the API
//! and the banner list the layers and what each really is once FFmpeg runs,
//! each layer's RTP is counted, FFmpeg is reaped at the end; and the config
//! errors an operator can make read as one line naming `layers`. (Each
//! layer's TS, keyframes and sound are checked at the producer, in
//! `crates/pixelpass/src/ffmpeg/layers_tests.rs`.)

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use pixelpass_testkit::serve::{wait_gone, Serve};

const STREAM: &str = "[[stream]]\nid = \"three\"\nautostart = true\nlayers = 3\n\
    input = [\"-re\", \"-f\", \"lavfi\", \"-i\", \"testsrc2=size=640x360:rate=30\", \"-f\", \"lavfi\", \"-i\", \"sine\"]\n\
    video_map = \"0:v:0\"\naudio_map = \"1:a:0\"\nvideo = \"encode\"\nvideo_bitrate_kbps = 1000\n\
    keyframe_interval_seconds = 1\nvideo_options = [\"-preset\", \"ultrafast\"]\n";

/// (width, height, fps, bitrate) of each layer in a stream view.
fn layers(view: &Value) -> Vec<(Value, Value, Value, Value)> {
    view["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("a layers array: {view:#}"))
        .iter()
        .map(|l| {
            (
                l["width"].clone(),
                l["height"].clone(),
                l["fps"].clone(),
                l["bitrate_kbps"].clone(),
            )
        })
        .collect()
}

#[test]
fn the_api_and_the_banner_list_each_layer_as_ffmpeg_made_it() {
    let mut serve = Serve::start("serve-layers", STREAM);
    let banner = &serve.banner["streams"][0];
    assert_eq!(
        banner["layers"].as_array().map(Vec::len),
        Some(3),
        "{banner:#}"
    );
    let live = serve.wait_live("three");
    let pid = live["pid"].as_u64().unwrap_or_default();
    // The sizes come with each layer's first SPS: poll, bounded.
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let (status, v) = serve.json("GET", "/api/v1/streams/three", None);
        assert_eq!(status, 200, "{v}");
        if layers(&v).iter().all(|l| l.0.is_u64()) || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        layers(&view),
        [
            (json!(640), json!(360), json!(30), json!(1000)),
            (json!(320), json!(180), json!(30), json!(250)),
            (json!(160), json!(90), json!(15), json!(150)),
        ],
        "{view:#}"
    );
    assert_eq!(view["config"]["layers"], 3);
    let report = serve.wait_report("three", Duration::from_secs(20), "layer RTP", |r| {
        r["layer_rtp"].as_array().is_some_and(|l| {
            l.len() == 2 && l.iter().all(|x| x["video_packets"].as_u64() > Some(0))
        })
    });
    let log = report["log"].to_string();
    assert!(log.contains("3 layers:"), "{log}");
    assert!(serve.terminate(Duration::from_secs(5)).success());
    assert!(
        wait_gone(pid, Duration::from_secs(5)),
        "FFmpeg {pid} outlived serve"
    );
}

#[test]
fn layers_out_of_range_or_on_a_published_stream_are_refused_in_one_line() {
    let serve = Serve::start("serve-layers-bad", "");
    let input = ["-re", "-f", "lavfi", "-i", "testsrc2"];
    for (body, want) in [
        (
            json!({"id": "zero", "input": input, "layers": 0}),
            "`layers`: must be 1..=3 (",
        ),
        (
            json!({"id": "four", "input": input, "layers": 4}),
            "`layers`: must be 1..=3 (",
        ),
        (
            json!({"id": "pub", "publish_token": "a-publisher-secret-0123", "layers": 2}),
            "`layers`: must be 1 for a stream published over WHIP (it carries what its publisher sends: pixelpass does not transcode WHIP)",
        ),
    ] {
        let (status, v) = serve.json("POST", "/api/v1/streams", Some(&body));
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["field"], "layers", "{v}");
        let message = v["error"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(want) && !message.contains('\n'),
            "{message}"
        );
    }
    let (status, list) = serve.json("GET", "/api/v1/streams", None);
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}
