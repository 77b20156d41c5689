//! The browser path of `bench latency`: headless Chromium opens the player
//! page and reads the time code of every frame at render time
//! (`requestVideoFrameCallback`, the frame drawn to a canvas), so the
//! browser's jitter buffer and renderer are part of the figure.
//!
//! Chromium and a host with the clock source run together in a private
//! network namespace that has only loopback (`unshare --net`, needs root),
//! as in `tests/player_browser.rs`: `crates/pixelpass-testkit/browser/in-netns.sh` starts
//! `pixelpass host --source clock` (this same binary) and
//! `crates/pixelpass-testkit/browser/latency.mjs`, which prints one JSON line.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use super::{LatencyArgs, LatencyPath, Report};
use pixelpass_testkit::Summary;

/// Where the scripts and playwright-core are: `$PIXELPASS_BROWSER_DIR`, else
/// the source tree this binary was built from.
pub fn browser_dir() -> PathBuf {
    std::env::var_os("PIXELPASS_BROWSER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| pixelpass_testkit::bin::kit_dir().join("browser"))
}

/// `path`: [`LatencyPath::Browser`] (WebRTC) or [`LatencyPath::BrowserHls`] (hls.js).
pub fn measure(args: &LatencyArgs, path: LatencyPath) -> anyhow::Result<Report> {
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").is_dir() {
        bail!("{} has no node_modules/playwright-core: run scripts/setup.sh (or set PIXELPASS_BROWSER_DIR)", dir.display());
    }
    let hls = path == LatencyPath::BrowserHls;
    if hls && !dir.join("node_modules/hls.js").is_dir() {
        bail!(
            "{} has no node_modules/hls.js: run scripts/setup.sh (or set PIXELPASS_BROWSER_DIR)",
            dir.display()
        );
    }
    let exe = pixelpass_testkit::pixelpass_bin()?;
    let (w, h) = args.resolution;
    let budget = (args.seconds.ceil() as u64) + 60;
    let host_args = [
        "--source".to_owned(),
        "clock".to_owned(),
        "--width".to_owned(),
        w.to_string(),
        "--height".to_owned(),
        h.to_string(),
        "--framerate".to_owned(),
        args.framerate.to_string(),
        "--bitrate".to_owned(),
        args.bitrate.to_string(),
        "--audio".to_owned(),
        if args.no_audio { "none" } else { "system" }.to_owned(),
        // One encode: the clock is read at full size (a lower layer is too
        // small to read), and glass-to-glass is the encode's, not a layer
        // choice's (on a starved machine GCC reads CPU delay as a queue).
        "--layers".to_owned(),
        "1".to_owned(),
    ];
    let out = Command::new("timeout")
        .args(["-k", "5", &budget.to_string(), "unshare", "--net", "--"])
        .arg(dir.join("in-netns.sh"))
        .arg(exe)
        .args(host_args.iter().flat_map(|a| ["--host", a.as_str()]))
        .args([
            "--script",
            "latency.mjs",
            "--seconds",
            &args.seconds.to_string(),
        ])
        .args(hls.then_some("--hls"))
        .output()
        .context("cannot run timeout/unshare")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unshare failed") || stderr.contains("Operation not permitted") {
        bail!(
            "the browser path needs root for `unshare --net`: {}",
            stderr.trim()
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| {
            format!(
                "no result from latency.mjs ({})\nstdout: {stdout}\nstderr: {stderr}",
                out.status
            )
        })?;
    let v: serde_json::Value = serde_json::from_str(line).context("latency.mjs prints JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("latency.mjs: {e}\nstderr: {stderr}");
    }
    let mut r = parse_result(&v)?;
    r.path = path;
    Ok(r)
}

/// latency.mjs's JSON → a report.
pub fn parse_result(v: &serde_json::Value) -> anyhow::Result<Report> {
    let numbers = |key: &str| -> Vec<f64> {
        v[key]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default()
    };
    let shown = numbers("latencies");
    let display = Summary::of(&numbers("displayLatencies"));
    let s = Summary::of(&shown);
    let unreadable = v["unreadable"].as_u64().context("no unreadable count")? as usize;
    let note = [
        display.map(|c| {
            format!(
                "at expectedDisplayTime: p50 {:.1} ms, p95 {:.1} ms",
                c.p50, c.p95
            )
        }),
        v["jitterBufferMs"]
            .as_f64()
            .map(|j| format!("jitter buffer {j:.1} ms")),
        v["decodeMs"].as_f64().map(|d| format!("decode {d:.1} ms")),
        v["hlsLatency"]
            .as_f64()
            .map(|l| format!("hls.js: {l:.2} s behind the playlist's end")),
        v["hlsErrors"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| format!("hls.js errors: {a:?}")),
        v["dropped"]
            .as_u64()
            .map(|d| format!("{d} frames dropped by the browser")),
        v["errors"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| format!("read errors: {a:?}")),
    ];
    Ok(Report {
        path: LatencyPath::Browser,
        frames: shown.len() + unreadable,
        unreadable,
        p50_ms: s.map(|s| s.p50),
        p95_ms: s.map(|s| s.p95),
        max_ms: s.map(|s| s.max),
        join_ms: v["joinMs"].as_f64(),
        note: Some(note.into_iter().flatten().collect::<Vec<_>>().join("; "))
            .filter(|n| !n.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_scripts_result() {
        let v = serde_json::json!({
            "ok": true, "latencies": [50.0, 60.0, 70.0], "displayLatencies": [40.0, 45.0, 50.0],
            "unreadable": 1, "joinMs": 420.5, "dropped": 0, "errors": ["bit 3 unclear"]
        });
        let r = parse_result(&v).unwrap();
        assert_eq!(
            (r.frames, r.unreadable, r.p50_ms, r.join_ms),
            (4, 1, Some(60.0), Some(420.5))
        );
        let note = r.note.unwrap();
        assert!(
            note.contains("expectedDisplayTime: p50 45.0") && note.contains("bit 3"),
            "{note}"
        );
        assert!(
            parse_result(&serde_json::json!({"latencies": []})).is_err(),
            "no count, no report"
        );
    }
}
