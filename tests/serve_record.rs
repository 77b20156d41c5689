//! `serve`'s `record` table: a stream writes fragmented MP4 files while it
//! runs, `GET /api/v1/streams/{id}/recordings` lists them, and they decode
//! (H.264 + AAC). Pruning by `keep_hours` / `keep_gb` is unit-tested in
//! `egress/hls/recordings.rs`.

use std::time::{Duration, Instant};

use pixelpass_testkit::prelude as common;
use pixelpass_testkit::serve::{lavfi_input, Serve};
use serde_json::{json, Value};

use common::*;

#[test]
fn a_serve_stream_records_files_the_api_lists_and_that_decode() {
    let dir = TempDir::new("serve-record");
    let rec = dir.0.join("rec");
    let serve = Serve::start(
        "serve-record",
        &format!(
            "[[stream]]\nid = \"cam\"\nautostart = true\n{}record = {{ dir = \"{}\", segment_seconds = 4, keep_gb = 1 }}\n\n[[stream]]\nid = \"plain\"\n{}",
            lavfi_input(440),
            rec.display(),
            lavfi_input(550),
        ),
    );
    // Wait (bounded) until the API lists two files: the first is then complete.
    let until = Instant::now() + Duration::from_secs(90);
    let listed = loop {
        let (status, v) = serve.json("GET", "/api/v1/streams/cam/recordings", None);
        assert_eq!(status, 200, "{v}");
        let files = v["files"].as_array().cloned().unwrap_or_default();
        if files.len() >= 2 {
            break v;
        }
        assert!(
            Instant::now() < until,
            "no second recording: {v}\n{}",
            serve.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(listed["dir"], rec.display().to_string(), "{listed}");
    let first: &Value = &listed["files"][0];
    let name = first["name"].as_str().unwrap_or_default();
    assert!(
        name.starts_with("cam-") && name.ends_with("Z.mp4"),
        "{listed}"
    );
    assert!(
        first["modified"].as_str().is_some_and(|m| m.ends_with('Z')),
        "{listed}"
    );
    let path = rec.join(name);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        first["bytes"].as_u64(),
        Some(size),
        "the listing says the file's size"
    );
    // segment_seconds = 4 at 30 frames/s, cut at the first keyframe after.
    assert_recording_decodes(&path, 110);

    // A stream without `record`, an unknown one, a directory that cannot be made.
    let (status, v) = serve.json("GET", "/api/v1/streams/plain/recordings", None);
    assert_eq!(status, 409, "{v}");
    assert!(v.to_string().contains("record"), "{v}");
    let (status, v) = serve.json("GET", "/api/v1/streams/nope/recordings", None);
    assert_eq!(status, 404, "{v}");
    let (status, v) = serve.json(
        "POST",
        "/api/v1/streams",
        Some(&json!({
            "id": "badrec",
            "input": ["-f", "lavfi", "-i", "testsrc2"],
            "record": {"dir": "/proc/pixelpass-cannot-record-here"},
        })),
    );
    assert_eq!(status, 409, "{v}");
    assert!(v.to_string().contains("record.dir"), "{v}");
    let (status, v) = serve.json(
        "POST",
        "/api/v1/streams",
        Some(&json!({
            "id": "badkeep",
            "input": ["-f", "lavfi", "-i", "testsrc2"],
            "record": {"dir": "/tmp", "keep_hours": -1},
        })),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("record.keep_hours"), "{v}");
}
