//! `pixelpass-bench latency` end to end: the real binary runs a host with the
//! clock source and one viewer per path, decodes every frame and reads the
//! time drawn into it. These check that the numbers are plausible and that
//! every decoded frame could be read; the latency targets themselves are
//! for the benchmark (README, "Latency"), not for CI.
//!
//! Everything is loopback; the browser path runs Chromium in a private
//! network namespace (root, like the root package's tests/player_browser.rs).

use std::path::Path;
use std::process::Command;

/// One path's JSON line from `bench latency --json`.
fn run(path: &str, seconds: u32) -> serde_json::Value {
    let out = Command::new("timeout")
        .args(["-k", "5", "120"])
        .arg(env!("CARGO_BIN_EXE_pixelpass-bench"))
        .args([
            "latency",
            "--json",
            "--path",
            path,
            "--seconds",
            &seconds.to_string(),
        ])
        .env("PIXELPASS_LOG", "warn")
        .output()
        .expect("cannot run pixelpass-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no JSON from bench latency --path {path} ({})\nstdout: {stdout}\nstderr: {stderr}",
                out.status
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(v["path"], path, "{v}");
    assert!(
        out.status.success(),
        "exit {}: {v}\nstderr: {stderr}",
        out.status
    );
    eprintln!("{path}: {v}");
    v
}

fn assert_plausible(v: &serde_json::Value, seconds: u32) {
    let frames = v["frames"].as_u64().unwrap_or(0);
    assert!(
        frames >= u64::from(seconds) * 10,
        "30 frames/s for {seconds} s, got {frames}: {v}"
    );
    assert_eq!(
        v["unreadable"].as_u64(),
        Some(0),
        "every decoded frame's time code reads: {v}"
    );
    let p50 = v["p50_ms"].as_f64().expect("a p50");
    let (p95, max) = (v["p95_ms"].as_f64().unwrap(), v["max_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 < 2000.0, "p50 {p50} ms: {v}");
    assert!(p50 <= p95 && p95 <= max, "ordered percentiles: {v}");
    let join = v["join_ms"].as_f64().expect("a join time");
    assert!(join > 0.0 && join < 20_000.0, "join {join} ms: {v}");
}

#[test]
fn http_ts_viewer_decodes_every_frame_with_a_plausible_latency() {
    assert_plausible(&run("http", 5), 5);
}

#[test]
fn whep_viewer_decodes_every_frame_with_a_plausible_latency() {
    assert_plausible(&run("whep", 5), 5);
}

#[test]
fn chromium_reads_every_frame_at_render_time() {
    let dir = pixelpass_testkit::bin::kit_dir().join("browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/setup.sh (it runs `npm ci` in crates/pixelpass-testkit/browser)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is missing: run scripts/setup.sh"
    );
    assert_plausible(&run("browser", 5), 5);
}
