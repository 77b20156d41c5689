//! An independent publisher: headless Chromium publishes an animated canvas
//! and an oscillator through the test kit's WHIP page
//! (crates/pixelpass-testkit/browser/whip-publish.mjs: audio first, H.264
//! preferred, as OBS does) into `pixelpass serve`; a str0m WHEP viewer of
//! the relay decodes what the browser sent.
//!
//! Needs what scripts/setup.sh installs: chromium, node + playwright-core.
//! Every wait is bounded; the browser script is reaped (it ends itself
//! after its seconds, and is killed by PID at its deadline).

use std::process::{Command, Stdio};
use std::time::Duration;

use pixelpass_testkit::prelude::*;
use pixelpass_testkit::serve::whep::{assert_decodes, drive, whep_viewer, Got};
use pixelpass_testkit::serve::Serve;

const VIEWER: &str = "browser-viewer-token-0123456789";
const SECRET: &str = "browser-publish-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_over_whip_and_a_whep_viewer_decodes_it() {
    let browser_dir = pixelpass_testkit::bin::kit_dir().join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/setup.sh (it runs `npm ci` in crates/pixelpass-testkit/browser)"
    );
    let serve = Serve::start(
        "whip-browser",
        &format!("[[stream]]\nid = \"cam\"\ntoken = \"{VIEWER}\"\npublish_token = \"{SECRET}\"\n"),
    );
    let url = format!("http://{}/whip/cam", serve.addr);
    let mut browser = Command::new("timeout")
        .args(["-k", "5", "60", "node"])
        .arg(browser_dir.join("whip-publish.mjs"))
        .args(["--url", &url, "--token", SECRET, "--seconds", "12"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");

    // Wait (≤ 30 s) for the browser's media to make the stream live.
    let t0 = std::time::Instant::now();
    while serve.report("cam")["state"] != "live" {
        if t0.elapsed() > Duration::from_secs(30) || browser.try_wait().ok().flatten().is_some() {
            let _ = browser.kill();
            let out = browser.wait_with_output().expect("reap node");
            panic!(
                "the browser's stream never went live: {}\n{}\n{}\nserve:\n{}",
                serve.report("cam"),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                serve.stderr_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = serve.report("cam");
    eprintln!("browser publisher: {}", report["publisher"]);
    assert!(report["publisher"]["codecs"][0]
        .as_str()
        .is_some_and(|c| c.starts_with("H264")));

    let mut client = whep_viewer(&serve, VIEWER).await;
    let mut got = Got::checked();
    drive(&mut client, &mut got, Duration::from_secs(30), |g| {
        g.video_frames >= 60 && g.audio_packets >= 50
    })
    .await;
    let _ = client.delete().await;
    let dir = TempDir::new("whip-browser");
    assert_decodes(&dir.0, &got);

    let out = browser.wait_with_output().expect("reap node");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "whip-publish.mjs: {line}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(result["connected"], true, "{result}");
}
