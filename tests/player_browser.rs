//! Headless Chromium opens the player page and really plays the stream over
//! WebRTC (WHEP): `host`'s, and a `serve` stream's (FFmpeg). Runs in a
//! private network namespace that has only loopback, so the browser's WebRTC
//! traffic cannot go anywhere else.
//! Needs what scripts/setup.sh installs: chromium, node + playwright-core
//! (crates/pixelpass-testkit/browser/node_modules), and root for `unshare --net`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn chromium_plays_the_player_page_over_whep() {
    play("host", &[], &[]);
}

/// The page's quality menu lists the host's two layers; choosing layer 1
/// moves the picture to it (half the size) and the page says so.
#[test]
fn the_quality_menu_moves_the_picture_to_the_chosen_layer() {
    let r = play("host-layer", &[], &["--choose-layer", "1"]);
    assert_eq!(r["menu"]["hidden"], false, "the menu is shown: {r}");
    let options = r["menu"]["options"].to_string();
    assert!(
        options.contains("auto=Auto") && options.contains("0=360p") && options.contains("1=180p"),
        "auto and both layers: {r}"
    );
    assert_eq!(r["before"]["height"], 360, "{r}");
    assert_eq!(r["after"]["height"], 180, "layer 1 is half the size: {r}");
    assert_eq!(r["after"]["pp"]["layer"], 1, "{r}");
    assert_eq!(r["after"]["pp"]["mode"], "pinned", "{r}");
    assert!(
        r["after"]["info"]
            .as_str()
            .is_some_and(|i| i.contains("layer 1 (chosen)")),
        "the page says which layer it shows: {r}"
    );
}

/// A one-layer stream negotiates no transport-wide sequence numbers (no
/// TWCC feedback to estimate from), so Chromium estimates the link itself
/// and sends REMB: the server takes that as the viewer's estimate and says
/// so (`estimate_from: "remb"`) to the page.
#[test]
fn a_one_layer_streams_viewer_is_estimated_from_the_browsers_remb() {
    let host = [
        &["--source", "test"],
        pixelpass_testkit::prelude::LIGHT,
        &["--layers", "1"],
    ];
    let mut args = Vec::new();
    for a in host.concat() {
        args.extend(["--host", a]);
    }
    let r = play_until("host-remb", &args, &["--wait-link"], "live", 20);
    let link = &r["link"];
    eprintln!("the page's view of its link: {link}");
    assert_eq!(link["mode"], "single", "one layer: {r}");
    assert_eq!(link["estimate_from"], "remb", "the browser's REMB: {r}");
    let bps = link["estimate_bps"].as_u64().unwrap_or(0);
    assert!(bps >= 100_000, "a plausible estimate, not {bps} bit/s: {r}");
}

#[test]
fn chromium_plays_a_serve_streams_page_over_whep() {
    let config =
        std::env::temp_dir().join(format!("pixelpass-browser-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[[stream]]\nid = \"lobby\"\n\
         input = [\"-re\", \"-f\", \"lavfi\", \"-i\", \"testsrc2=size=640x360:rate=30\", \"-f\", \"lavfi\", \"-i\", \"sine=frequency=440\"]\n\
         autostart = true\nhttp_ts = false\nvideo_bitrate_kbps = 1000\nkeyframe_interval_seconds = 1\n",
    )
    .expect("write the config");
    play(
        "serve",
        &["--serve", config.to_str().expect("a UTF-8 temp path")],
        &[],
    );
    let _ = std::fs::remove_file(&config);
}

/// A network that drops every UDP packet (nftables in the test's namespace):
/// WebRTC cannot connect and the page falls back to HLS, which Chromium
/// (156+) plays natively, as Safari does.
#[test]
fn without_udp_the_page_falls_back_to_hls() {
    let r = play_until("host-no-udp", &["--block-udp"], &[], "live (HLS)", 30);
    assert!(
        r["message"].as_str().is_some_and(str::is_empty),
        "no error shown: {r}"
    );
}

/// Run the player page against `what` (`in-netns.sh` arguments before the
/// player's own, then `player_args`) and check it played; its result.
fn play(what: &str, server_args: &[&str], player_args: &[&str]) -> serde_json::Value {
    play_until(what, server_args, player_args, "live", 10)
}

/// [`play`], with the state the page must show at the end and the seconds it may take.
fn play_until(
    what: &str,
    server_args: &[&str],
    player_args: &[&str],
    want_state: &str,
    seconds: u64,
) -> serde_json::Value {
    let browser_dir = pixelpass_testkit::bin::kit_dir().join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run scripts/setup.sh (it runs `npm ci` in crates/pixelpass-testkit/browser)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is missing: run scripts/setup.sh"
    );
    let shot = std::env::temp_dir().join(format!(
        "pixelpass-player-{what}-{}.png",
        std::process::id()
    ));
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["-k", "5", "60", "unshare", "--net", "--"])
        .arg(browser_dir.join("in-netns.sh"))
        .arg(env!("CARGO_BIN_EXE_pixelpass"))
        .args(server_args)
        .args([
            "--seconds",
            &seconds.to_string(),
            "--frames",
            "30",
            "--screenshot",
        ])
        .arg(&shot)
        .args(player_args)
        .output()
        .expect("cannot run unshare/timeout");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("unshare failed") && !stderr.contains("Operation not permitted"),
        "this test needs root for `unshare --net` (CI runs as root): {stderr}"
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no result from player.mjs (status {:?})\nstdout: {stdout}\nstderr: {stderr}",
                out.status
            )
        });
    let r: serde_json::Value = serde_json::from_str(line).expect("player.mjs prints JSON");
    let frames = r["frames"].as_u64().unwrap_or(0);
    assert!(
        r["ok"] == true && out.status.success(),
        "player page did not play: {r}\nstderr: {stderr}"
    );
    assert!(frames >= 30, "decoded {frames} frames: {r}");
    assert!(
        r["elapsedMs"].as_u64().unwrap_or(u64::MAX) <= seconds * 1000,
        "took too long: {r}"
    );
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
    assert!(
        r["notBlack"] == true,
        "the sampled frame is uniformly black: {r}"
    );
    assert_eq!(r["state"], want_state, "the page says it is live: {r}");
    let _ = std::fs::remove_file(&shot);
    eprintln!(
        "chromium ({what}): {frames} frames in {} ms, first frame {} ms (whole test {:?})",
        r["elapsedMs"],
        r["firstFrameMs"],
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    r
}
