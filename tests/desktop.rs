//! Real desktop capture, end to end, with no person at a dialog:
//!
//! - the Wayland ScreenCast portal in a private headless session
//!   (`crates/pixelpass-testkit/session/headless-session.sh`: sway headless + pixman,
//!   xdg-desktop-portal + the patched xdg-desktop-portal-wlr, PipeWire with a
//!   null sink as the default), watched over HTTP-TS (ffmpeg decodes it and
//!   the pictures show the compositor's screen) and over WHEP (the library's
//!   str0m client);
//! - the restore token across lazy restarts, `--pick`, a cancelled dialog
//!   and a missing session bus;
//! - system audio: a tone played into the default sink comes out of the AAC
//!   and the Opus track;
//! - X11 under Xvfb;
//! - `pixelpass doctor` inside and outside a session.
//!
//! The tests take turns (one lock): each runs a compositor, a portal and an
//! encoder, and 2 cores are not enough for two of those at once.
//!
//! The helpers are in the test kit (`pixelpass_testkit::desktop`); this file holds
//! the tests.

use pixelpass_testkit::desktop as support;
use pixelpass_testkit::prelude as common;

use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use support::audio::{aac_samples, opus_samples, rms_and_tone_share, Tone};
use support::capture::{portal_host, read_frames, restore_count, token_file, wait_idle, watch};
use support::doctor::{doctor, doctor_row};
use support::pictures::{assert_shows_the_session_screen, close, rgb_frames};
use support::session::Session;
use support::whep::{whep_opus, whep_video};
use support::x11::{show_smpte_bars, Xvfb};

fn turn() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ─────────────────────────────── portal: HTTP-TS ───────────────────────────────

#[test]
fn portal_capture_over_http_ts_shows_the_compositor_screen() {
    let _t = turn();
    let session = Session::start(&[]);
    let state = TempDir::new("portal-state");
    let host = portal_host(&session, &state.0, &[]);
    assert_eq!(host.banner["source"], "desktop (screen-cast portal)");
    let dir = TempDir::new("portal-http");
    let t0 = Instant::now();
    let got = watch(&host, &dir, "portal.ts", Duration::from_secs(3), 60);
    println!(
        "portal capture: {} frames decoded from a ≥ 3 s viewer ({} ms incl. start)",
        got.frames,
        t0.elapsed().as_millis()
    );
    assert_shows_the_session_screen(&got.path, "HTTP-TS");
    // The portal handed out a restore token, saved for the next start.
    assert!(
        token_file(&state.0).exists(),
        "no restore token saved in {}",
        state.0.display()
    );
    assert!(
        session.log("xdpw").contains("option persist_mode:2"),
        "persist mode 'until revoked' not asked for"
    );
    assert!(
        session.log("xdpw").contains("option cursor_mode:2"),
        "the cursor is not asked for embedded"
    );
}

// ─────────────────────────────── portal: WHEP ───────────────────────────────

#[test]
fn portal_capture_over_whep_gives_decodable_frames_of_the_screen() {
    let _t = turn();
    let session = Session::start(&[]);
    let state = TempDir::new("portal-whep-state");
    let host = portal_host(&session, &state.0, &[]);
    let (annexb, frames, audio) = whep_video(&host, 60);
    let dir = TempDir::new("portal-whep");
    let file = dir.write("whep.h264", &annexb);
    let errors = decode_errors(&file);
    assert!(errors.is_empty(), "ffmpeg: {errors}");
    assert!(count_video_frames(&file) >= 60);
    assert_shows_the_session_screen(&file, "WHEP");
    assert!(audio > 0, "no Opus packet with {frames} frames");
}

// ───────────────────── portal: restore token, --pick, static screen ─────────────────────

#[test]
fn a_lazy_restart_reuses_the_restore_token_and_pick_forgets_it() {
    let _t = turn();
    let session = Session::start(&[]);
    let state = TempDir::new("portal-token-state");
    let tf = token_file(&state.0);
    let dir = TempDir::new("portal-token");
    {
        let host = portal_host(&session, &state.0, &[]);
        // First start: no token yet, the picker chooses.
        watch(&host, &dir, "first.ts", Duration::from_millis(1500), 20);
        let t1 = std::fs::read_to_string(&tf).expect("a token after the first start");
        assert_eq!(
            restore_count(&session),
            0,
            "nothing to restore at the first start"
        );
        assert_eq!(
            session.log("xdpw").matches("dbus: session closed").count(),
            0,
            "the session lives while capturing"
        );
        // The last viewer left: after the linger, capture stops and the portal session is closed.
        wait_idle(&host);
        assert_eq!(
            session.log("xdpw").matches("dbus: session closed").count(),
            1,
            "capture stopped: session closed"
        );

        // Second lazy start: the saved token is offered and the portal hands
        // the backend the remembered selection (restore data: no picker). The
        // token the portal returns is saved again (xdg-desktop-portal 1.16
        // hands back the same one; newer portals a fresh one).
        watch(&host, &dir, "second.ts", Duration::from_millis(1500), 20);
        let t2 = std::fs::read_to_string(&tf).expect("a token after the second start");
        println!("restore token: first {} then {}", t1.trim(), t2.trim());
        assert_eq!(
            restore_count(&session),
            1,
            "the second start restored the selection:\n{}",
            session.log("xdpw")
        );
        assert!(session
            .log("xdpw")
            .contains("restore_data.output_name: HEADLESS-1"));
        assert!(
            host.stderr_text()
                .contains("offering the saved screen selection"),
            "{}",
            host.stderr_text()
        );
        wait_idle(&host);

        // A token the portal does not know: the dialog (here: the picker) runs
        // again, the capture starts, and the bad token is replaced.
        std::fs::write(&tf, "not-a-token-the-portal-knows\n").unwrap();
        watch(&host, &dir, "third.ts", Duration::from_millis(1500), 20);
        let t3 = std::fs::read_to_string(&tf).unwrap();
        assert!(
            !t3.contains("not-a-token"),
            "the rejected token was replaced"
        );
        assert_eq!(
            restore_count(&session),
            1,
            "an unknown token restores nothing"
        );
    }
    // --pick: the saved selection is forgotten at start, the picker runs.
    let host = portal_host(&session, &state.0, &["--pick"]);
    assert!(!tf.exists(), "--pick removed the saved token");
    watch(&host, &dir, "pick.ts", Duration::from_millis(1500), 20);
    assert_eq!(restore_count(&session), 1, "--pick offered no token");
    assert!(tf.exists(), "a new token after --pick");
}

#[test]
fn a_static_screen_still_gives_a_steady_frame_rate_and_joins_on_a_keyframe() {
    let _t = turn();
    let session = Session::start(&["--no-client"]);
    let state = TempDir::new("portal-static-state");
    let host = portal_host(&session, &state.0, &[]);
    let dir = TempDir::new("portal-static");
    let mut first = Viewer::open(host.addr, &host.stream_path());
    assert_eq!(first.status, 200);
    // Wait for media, then measure 2.5 s of wall time.
    read_frames(&mut first, 5, Duration::ZERO);
    let from = Instant::now();
    first.read_for(Duration::from_millis(2500));
    let to = Instant::now();
    // Nothing moves on screen, yet a second viewer joins on a fresh keyframe.
    let mut second = Viewer::open(host.addr, &host.stream_path());
    read_frames(&mut second, 20, Duration::from_millis(500));
    first.read_for(Duration::from_millis(100));
    let a = check_capture(&dir, "static-first.ts", &first.body, 60);
    let in_window = a
        .scan
        .frames_between(first.offset_at(from), first.offset_at(to));
    // 75 frames at 30 fps; without repeats a static screen gives one or two.
    assert!(
        in_window >= 50,
        "only {in_window} frames in 2.5 s of a static screen"
    );
    let gaps = a.scan.discontinuities(FPS);
    assert!(
        gaps.is_empty(),
        "the frame rate stutters on a static screen at PES {gaps:?}"
    );
    let b = check_capture(&dir, "static-second.ts", &second.body, 20);
    let key = b.scan.video.first().expect("the second viewer got video");
    assert!(
        key.sps_or_idr || key.rai,
        "the second viewer starts on a keyframe"
    );
    println!(
        "static screen: {in_window} frames in 2.5 s; the joiner decoded {} frames",
        b.frames
    );
}

// ─────────────────────────── portal: failures ───────────────────────────

#[test]
fn a_cancelled_dialog_gives_the_viewer_503_with_the_reason_and_the_next_viewer_asks_again() {
    let _t = turn();
    // The picker is told to share an output that does not exist: it gives up,
    // as when the person cancels.
    let session = Session::start(&["--output", "NO-SUCH-OUTPUT"]);
    let state = TempDir::new("portal-cancel-state");
    let host = portal_host(&session, &state.0, &[]);
    for attempt in 1..=2 {
        let mut v = Viewer::open(host.addr, &host.stream_path());
        v.read_for(Duration::from_millis(300));
        let body = String::from_utf8_lossy(&v.body).into_owned();
        assert_eq!(v.status, 503, "attempt {attempt}: {body}");
        assert!(
            body.contains("the screen-share dialog was cancelled"),
            "attempt {attempt}: {body:?}"
        );
        assert_ne!(host.status()["state"], "live");
    }
    assert_eq!(
        session.log("xdpw").matches("no output found").count(),
        2,
        "each viewer asked again:\n{}",
        session.log("xdpw")
    );
    assert!(!token_file(&state.0).exists());
}

#[test]
fn without_a_session_bus_the_portal_source_says_so_in_one_line() {
    let _t = turn();
    let empty = TempDir::new("no-bus");
    let host = Host::builder()
        .source("portal")
        .clear_env()
        .env("PATH", &std::env::var("PATH").unwrap_or_default())
        .env("HOME", empty.0.to_str().unwrap())
        .spawn();
    let mut v = Viewer::open(host.addr, &host.stream_path());
    v.read_for(Duration::from_millis(300));
    let body = String::from_utf8_lossy(&v.body).into_owned();
    assert_eq!(v.status, 503, "{body}");
    assert!(body.contains("no D-Bus session bus"), "{body:?}");
    assert_eq!(body.trim().lines().count(), 1, "{body:?}");
    drop(v);
    drop(host);

    // Nothing to capture here: auto streams the test pattern and says why.
    let host = Host::builder()
        .source("auto")
        .clear_env()
        .env("PATH", &std::env::var("PATH").unwrap_or_default())
        .env("HOME", empty.0.to_str().unwrap())
        .spawn();
    assert_eq!(host.banner["source"], "test pattern");
    let err = host.stderr_text();
    assert!(
        err.contains("no desktop to capture (portal: not a Wayland session; X11: DISPLAY is not set): streaming a test pattern"),
        "{err}"
    );
}

#[test]
fn in_a_wayland_session_auto_picks_the_portal_and_window_sharing_it_lacks_is_a_clear_503() {
    let _t = turn();
    let session = Session::start(&["--no-client"]);
    let state = TempDir::new("portal-auto-state");
    let mut b = Host::builder().source("auto").clear_env();
    for (k, v) in session.env() {
        b = b.env(k, v);
    }
    let host = b.env("XDG_STATE_HOME", state.0.to_str().unwrap()).spawn();
    assert_eq!(host.banner["source"], "desktop (screen-cast portal)");
    let err = host.stderr_text();
    assert!(
        err.contains("with a ScreenCast portal (version 4): capturing through the portal"),
        "{err}"
    );
    drop(host);

    // xdg-desktop-portal-wlr 0.7 shares monitors only.
    let host = portal_host(&session, &state.0, &["--window"]);
    let mut v = Viewer::open(host.addr, &host.stream_path());
    v.read_for(Duration::from_millis(300));
    let body = String::from_utf8_lossy(&v.body).into_owned();
    assert_eq!(v.status, 503, "{body}");
    assert!(
        body.contains("cannot share a single window (it offers: monitor)"),
        "{body:?}"
    );
}

// ─────────────────────────────── system audio ───────────────────────────────

#[test]
fn a_tone_played_into_the_default_sink_is_in_the_aac_and_the_opus_track() {
    let _t = turn();
    let session = Session::start(&[]);
    let _tone = Tone::play(&session, 1000);
    let state = TempDir::new("audio-state");
    let host = portal_host(&session, &state.0, &[]);
    let dir = TempDir::new("audio");

    // HTTP-TS: AAC.
    let got = watch(&host, &dir, "audio.ts", Duration::from_secs(3), 40);
    let aac = aac_samples(&got.path);
    assert!(aac.len() > 48_000, "only {} AAC samples", aac.len());
    let (rms, share) = rms_and_tone_share(&aac, 48_000, 1000.0);
    println!(
        "AAC track: RMS {rms:.3}, 1 kHz dominates {:.0} % of 20 ms blocks",
        share * 100.0
    );
    assert!(rms > 0.1, "the AAC track is (nearly) silent: RMS {rms:.4}");
    assert!(
        share >= 0.6,
        "the AAC track is not the 1 kHz tone (1 kHz dominates {:.0} % of blocks)",
        share * 100.0
    );

    // WHEP: Opus.
    let packets = whep_opus(&host, 100);
    let opus = opus_samples(&packets[25..]);
    assert!(
        opus.len() > 24_000,
        "only {} Opus samples decoded",
        opus.len()
    );
    let (rms, share) = rms_and_tone_share(&opus, 48_000, 1000.0);
    println!(
        "Opus track: RMS {rms:.3}, 1 kHz dominates {:.0} % of 20 ms blocks",
        share * 100.0
    );
    assert!(rms > 0.1, "the Opus track is (nearly) silent: RMS {rms:.4}");
    assert!(
        share >= 0.6,
        "the Opus track is not the 1 kHz tone (1 kHz dominates {:.0} % of blocks)",
        share * 100.0
    );
}

// ─────────────────────────────────── X11 ───────────────────────────────────

#[test]
fn x11_capture_under_xvfb_matches_the_picture_on_screen() {
    let _t = turn();
    let (w, h) = (640u32, 360u32);
    let x = Xvfb::start(w, h);
    // SMPTE 75 % bars, full screen: a window at 0,0 of the screen's size (no
    // window manager to move it).
    let mut picture = show_smpte_bars(&x, w, h);
    // Default audio (system), and no audio server: video only, said once.
    let host = Host::builder()
        .source("x11")
        .arg("--display")
        .arg(&x.display)
        .env("PULSE_SERVER", "unix:/nonexistent/pulse")
        .spawn();
    assert_eq!(host.banner["source"], "X11 display");
    let dir = TempDir::new("x11");
    let mut v = Viewer::open(host.addr, &host.stream_path());
    assert_eq!(v.status, 200);
    read_frames(&mut v, 60, Duration::from_secs(2));
    let trimmed = trim_capture(&v.body);
    let file = dir.write("x11.ts", trimmed);
    let errors = decode_errors(&file);
    assert!(errors.is_empty(), "ffmpeg: {errors}");
    assert!(count_video_frames(&file) >= 60);
    let streams = ffprobe_streams(&file);
    assert!(
        streams.iter().all(|(t, _)| t != "audio"),
        "no audio server, yet audio: {streams:?}"
    );
    assert_eq!(
        host.stderr_text().matches("no audio server").count(),
        1,
        "{}",
        host.stderr_text()
    );
    let frames = rgb_frames(&file, w, h, 15);
    // The seven bars of the top two thirds, 75 % white → blue.
    let bars: [[u8; 3]; 7] = [
        [191, 191, 191],
        [191, 191, 0],
        [0, 191, 191],
        [0, 191, 0],
        [191, 0, 191],
        [191, 0, 0],
        [0, 0, 191],
    ];
    for (i, f) in frames.iter().enumerate() {
        for (b, want) in bars.iter().enumerate() {
            let px = ((b as u32 * w / 7) + w / 14) as usize;
            let py = (h / 3) as usize;
            let at = (py * w as usize + px) * 3;
            let got = [f[at], f[at + 1], f[at + 2]];
            assert!(
                close(got, *want, 24),
                "frame {i}: bar {b} at ({px},{py}) is {got:?}, want {want:?}"
            );
        }
    }
    let _ = picture.kill();
    let _ = picture.wait();
}

// ─────────────────────────────────── doctor ───────────────────────────────────

#[test]
fn doctor_reports_what_this_machine_has_and_how_to_fix_the_rest() {
    let _t = turn();
    // Inside the headless session.
    let session = Session::start(&["--no-client"]);
    let env: Vec<(String, String)> = session
        .env()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (out, r) = doctor(&env);
    assert!(out.success(), "doctor exits 0 where host can run: {out:?}");
    for (id, detail) in [
        ("wayland", session.var("WAYLAND_DISPLAY").unwrap()),
        ("dbus", "connected"),
        ("portal", "version 4 (monitor)"),
        ("pipewire", "pipewire-0 answers"),
        ("audio-server", "PulseAudio protocol answers"),
        ("default-sink", "pixelpass_null"),
        ("h264:x264enc", "encodes"),
        ("aac", "encodes"),
        ("opus", "opusenc encodes"),
        ("elements", "mpegtsmux"),
        ("auto-source", "portal: Wayland session"),
        ("chromium", "/usr/bin/chromium"),
    ] {
        let row = doctor_row(&r, id);
        assert_eq!(row["status"], "ok", "{id}: {row}");
        assert!(
            row["detail"].as_str().unwrap().contains(detail),
            "{id}: {row}"
        );
    }
    assert_eq!(r["auto_source"], "portal");
    assert_eq!(r["host_can_run"], true);
    // No X display in the session; the row says what to do.
    let x = doctor_row(&r, "x11");
    assert_eq!(x["status"], "no");
    assert_eq!(x["detail"], "DISPLAY is not set");
    // Every encoder is listed; one that does not work names its fix.
    for enc in [
        "vah264enc",
        "vaapih264enc",
        "nvh264enc",
        "x264enc",
        "openh264enc",
    ] {
        let row = doctor_row(&r, &format!("h264:{enc}"));
        if row["status"] != "ok" {
            assert!(
                row["fix"].as_str().is_some_and(|f| !f.is_empty()),
                "{enc}: no fix given: {row}"
            );
        }
    }
    let mpv = doctor_row(&r, "mpv");
    if mpv["status"] == "no" {
        assert_eq!(mpv["fix"], "apt-get install mpv");
    }
    drop(session);

    // Outside any session: no Wayland, no bus, no audio server; host still runs (test pattern).
    let home = TempDir::new("doctor-home");
    let bare = vec![
        ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
        ("HOME".to_owned(), home.0.display().to_string()),
    ];
    let (out, r) = doctor(&bare);
    assert!(out.success(), "{out:?}");
    assert_eq!(
        doctor_row(&r, "wayland")["detail"],
        "WAYLAND_DISPLAY is not set"
    );
    let portal = doctor_row(&r, "portal");
    assert_eq!(portal["status"], "no");
    assert!(
        portal["detail"]
            .as_str()
            .unwrap()
            .starts_with("no D-Bus session bus"),
        "{portal}"
    );
    assert!(
        portal["fix"]
            .as_str()
            .unwrap()
            .contains("xdg-desktop-portal"),
        "{portal}"
    );
    assert_eq!(doctor_row(&r, "audio-server")["status"], "no");
    assert_eq!(r["auto_source"], "test");

    // The table people read.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pixelpass"));
    cmd.arg("doctor")
        .env_clear()
        .envs(bare.iter().map(|(k, v)| (k, v)));
    let table = run_tool(cmd, Duration::from_secs(60));
    assert!(table.success());
    assert!(
        table.stdout.contains("ScreenCast portal"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains("fix: apt-get install xdg-desktop-portal"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains("pixelpass host can run here: --source auto → test, encoder x264enc"),
        "{}",
        table.stdout
    );

    // No GStreamer plugins at all: host cannot run, exit status 1.
    let mut none = bare.clone();
    none.push((
        "GST_PLUGIN_SYSTEM_PATH_1_0".into(),
        home.0.join("no-plugins").display().to_string(),
    ));
    none.push((
        "GST_REGISTRY_1_0".into(),
        home.0.join("registry.bin").display().to_string(),
    ));
    let (out, r) = doctor(&none);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out:?}");
    assert_eq!(r["host_can_run"], false);
    assert!(
        r["blocker"]
            .as_str()
            .unwrap()
            .contains("no H.264 encoder works"),
        "{r:#}"
    );
}
