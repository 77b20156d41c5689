//! Viewers on real links (issue 16): a real `pixelpass host` in the lab's
//! `public`, headless Chromium on its player page in `thin` (whose ONLY way
//! to the host is the test kit's user-space impaired link) and in `viewer`
//! (the clean WAN), each printing getStats once per second of Chromium's own
//! clock (`browser/sampler.mjs`; see `pixelpass_testkit::thin_link`).
//!
//! The thin link: 40 ms each way (80 ms RTT), 2 % loss downstream (server →
//! viewer), 1.2 Mbit/s downstream with a 50-packet drop-tail queue; the way
//! back is only delayed. No netem (this kernel has none).
//!
//! - (a) on the thin link, after the first 10 s: ≥ 24 fps decoded, frozen
//!   < 2 % of the time, on a lower layer (every second's frameHeight below
//!   layer 0's), audio flowing; a clean viewer at the same time stays on
//!   layer 0 (full height) at ≥ 27 fps (its freezes are printed, not judged);
//! - (b) the cap lifted (delay and loss stay): back on layer 0 within 10
//!   samples, and staying there;
//! - (c) 3 s of 10 % loss: no freeze longer than 1 s ends after the burst,
//!   and no freeze is still going on at the end;
//! - (d) a 200 kbit/s link: the picture pauses (the page says so), the
//!   sound goes on, both come back when the cap is lifted;
//! - (e) three layers and a 400 kbit/s link: the viewer slides to layer 2
//!   and plays it (at most two failed tries up, then blocked).
//!
//! Until the host has layers and a per-peer layer selector, (a)'s "lower
//! layer" and (b) fail, saying the heights seen per second. Every bound is a
//! count of samples; waits are bounded hang guards. The host's arguments are
//! `thin_link::DEFAULT_HOST_ARGS` (960×540, 30 fps, 2 Mbit/s), or
//! `PIXELPASS_THIN_HOST_ARGS` (whitespace-separated, must give --height),
//! plus `--layers 2` when `pixelpass host --help` knows the option. Needs
//! root, Chromium, node and playwright-core; without them the tests say so
//! and pass, except in CI (`CI` set), where they fail.

use std::sync::{Mutex, MutexGuard};

use pixelpass_testkit::netlab::impair::Direction;
use pixelpass_testkit::thin_link::sample::{fps_list, heights, seconds, window, Sample, Second};
use pixelpass_testkit::thin_link::script::{self, between, Phase, Run};
use pixelpass_testkit::thin_link::{host_args, preflight, LinkState, Seat, ThinLab};

const MIN_FPS: f64 = 24.0;
const MAX_FROZEN: f64 = 0.02;
/// "Full frame rate" for the clean viewer: 30 fps less 10 %.
const CLEAN_MIN_FPS: f64 = 27.0;
/// Samples (Chromium's seconds) to get back to layer 0 once the cap is lifted.
const BACK_WITHIN: u32 = 10;
const MAX_FREEZE_AFTER_BURST_S: f64 = 1.0;
/// Opus sends 50 packets a second; 2 % loss and a slow second leave well over this.
const MIN_AUDIO_PACKETS: u64 = 25;

/// One scenario at a time: each runs a host and one or two Chromiums, and
/// they must not measure each other.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the lab can run here; outside CI a missing piece skips the test.
fn ready(test: &str) -> bool {
    match preflight() {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_some() => panic!("{test}: {e:#}"),
        Err(e) => {
            eprintln!("{test}: SKIPPED: {e:#}");
            false
        }
    }
}

/// Start the lab and run `phases`, printing each second as it comes.
fn scenario(phases: &[Phase], with_clean: bool) -> Run {
    let pixelpass = std::path::Path::new(env!("CARGO_BIN_EXE_pixelpass"));
    scenario_with(host_args(pixelpass), phases, with_clean)
}

/// [`scenario`] with these host arguments.
fn scenario_with(args: Vec<String>, phases: &[Phase], with_clean: bool) -> Run {
    let pixelpass = std::path::Path::new(env!("CARGO_BIN_EXE_pixelpass"));
    eprintln!("host arguments: {}", args.join(" "));
    let lab = ThinLab::start(pixelpass, &args, phases[0].state).unwrap_or_else(|e| panic!("{e:#}"));
    let full = lab.layer0_height();
    let mut prev: Option<Sample> = None;
    let run = script::run(&lab, phases, with_clean, |s, clean, state| {
        if let Some(p) = prev.replace(s.clone()) {
            let sec = &seconds(&[p, s.clone()], full)[0];
            let clean_h = clean.and_then(|c| c.height()).map_or("-".into(), |h| h.to_string());
            eprintln!(
                "t={:>2} {:<6} est {:>6} fps {:>5.1} h {:>4} layer {} frozen {}/{:.2}s lost {:>3} nack {:>3} audio {:>2} | clean h {clean_h}",
                sec.t,
                state.name(),
                sec.estimate_bps.map_or("-".into(), |e| format!("{:.0}k", e / 1000.0)),
                sec.fps,
                sec.height.map_or("-".into(), |h| h.to_string()),
                sec.layer.map_or("-".into(), |l| format!("{l}{}", if sec.layer_inferred { "~" } else { "" })),
                sec.freezes,
                sec.freeze_s,
                sec.lost,
                sec.nacks,
                sec.audio_packets,
            );
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    // Every sample with media came the way its seat allows, and only that way.
    for (seat, samples) in [
        (Seat::Constrained, &run.constrained),
        (Seat::Clean, &run.clean),
    ] {
        let want = lab.media_addr(seat);
        for s in samples {
            if let Some(remote) = s.pair.as_ref().and_then(|p| p.remote.as_deref()) {
                assert_eq!(
                    remote, want,
                    "the {seat:?} viewer's media took another path at sample {}",
                    s.t
                );
            }
        }
        assert!(
            samples.is_empty() || samples.iter().any(|s| s.pair.is_some()),
            "the {seat:?} viewer never had a selected candidate pair"
        );
    }
    eprintln!(
        "Chromium {}; thin link down: {:?}",
        run.chromium.as_deref().unwrap_or("?"),
        lab.link().stats(Direction::AToB)
    );
    drop(lab);
    run
}

fn describe(who: &str, secs: &[Second]) -> String {
    let w = window(secs);
    format!(
        "{who}: {:.1} fps decoded over {:.1} s, frozen {:.1} % ({:.2} s in {} ended freezes, {:.0} s without a frame), \
         {} packets lost, {} reconnects; heights per second [{}]; fps per second [{}]",
        w.fps,
        w.secs,
        w.freeze_fraction * 100.0,
        w.freeze_s,
        w.freezes,
        w.stalled_s,
        w.lost,
        w.reconnects,
        heights(secs),
        fps_list(secs)
    )
}

/// The common bars of a viewer that must play smoothly in `secs`.
fn smooth(who: &str, secs: &[Second], min_fps: f64, failures: &mut Vec<String>) {
    let w = window(secs);
    if w.fps < min_fps {
        failures.push(format!(
            "{who}: {:.1} fps decoded, the bar is ≥ {min_fps}",
            w.fps
        ));
    }
    if w.freeze_fraction >= MAX_FROZEN {
        failures.push(format!(
            "{who}: frozen {:.1} % of {:.1} s ({:.2} s in ended freezes, {:.0} s without a frame), the bar is < {:.0} %",
            w.freeze_fraction * 100.0,
            w.secs,
            w.freeze_s,
            w.stalled_s,
            MAX_FROZEN * 100.0
        ));
    }
    if w.reconnects > 0 {
        failures.push(format!(
            "{who}: the page reconnected {} times",
            w.reconnects
        ));
    }
}

/// A failure (`what`, then the seconds as t:packets) for each second with
/// fewer than [`MIN_AUDIO_PACKETS`] audio packets.
fn sound_flowing(what: &str, secs: &[Second], failures: &mut Vec<String>) {
    let quiet: Vec<String> = secs
        .iter()
        .filter(|s| s.audio_packets < MIN_AUDIO_PACKETS)
        .map(|s| format!("{}:{}", s.t, s.audio_packets))
        .collect();
    if !quiet.is_empty() {
        failures.push(format!("{what} (t:packets) [{}]", quiet.join(" ")));
    }
}

fn verdict(summary: &[String], failures: &[String]) {
    for s in summary {
        eprintln!("{s}");
    }
    assert!(
        failures.is_empty(),
        "\n{}\n--- seen ---\n{}",
        failures.join("\n"),
        summary.join("\n")
    );
}

#[test]
fn a_thin_lossy_link_plays_a_lower_layer_smoothly_while_a_clean_viewer_keeps_layer_0() {
    let _serial = serial();
    if !ready("thin link (a)") {
        return;
    }
    let run = scenario(&[Phase::new(LinkState::Thin, 30)], true);
    let full = run.layer0_height;
    let thin = between(&run.seconds(Seat::Constrained), 10, 30);
    let clean = between(&run.seconds(Seat::Clean), 10, 30);
    let mut failures = Vec::new();
    smooth("thin viewer", &thin, MIN_FPS, &mut failures);
    sound_flowing("thin viewer: audio stalled", &thin, &mut failures);
    if thin.is_empty() || thin.iter().any(|s| s.height.is_none_or(|h| h >= full)) {
        failures.push(format!(
            "thin viewer: not on a lower layer: every second after the first 10 must be below layer 0's height {full}; heights per second [{}]",
            heights(&thin)
        ));
    }
    // The clean viewer's bar is full height at full rate; its freezes are
    // printed, not judged (on a loaded 2-core machine Chromium's own
    // stutters reach a few tenths of a second, whatever the link).
    let c = window(&clean);
    if c.fps < CLEAN_MIN_FPS || c.reconnects > 0 {
        failures.push(format!(
            "clean viewer: {:.1} fps decoded (the bar is ≥ {CLEAN_MIN_FPS}), {} reconnects",
            c.fps, c.reconnects
        ));
    }
    if clean.is_empty() || clean.iter().any(|s| s.height != Some(full)) {
        failures.push(format!(
            "clean viewer: not on layer 0 (height {full}) throughout; heights per second [{}]",
            heights(&clean)
        ));
    }
    verdict(
        &[
            describe("thin viewer, seconds 11-30", &thin),
            describe("clean viewer, seconds 11-30", &clean),
        ],
        &failures,
    );
}

#[test]
fn lifting_the_cap_brings_the_thin_viewer_back_to_layer_0_within_10_s() {
    let _serial = serial();
    if !ready("thin link (b)") {
        return;
    }
    let phases = [
        Phase::new(LinkState::Thin, 20),
        Phase::new(LinkState::Lifted, 15),
    ];
    let run = scenario(&phases, false);
    let full = run.layer0_height;
    let lift = run.phase_start(1);
    let secs = run.seconds(Seat::Constrained);
    let thin_end = between(&secs, lift - 5, lift);
    let after = between(&secs, lift, lift + 15);
    let mut failures = Vec::new();
    if thin_end.iter().any(|s| s.height.is_none_or(|h| h >= full)) {
        failures.push(format!(
            "before the lift the viewer was not on a lower layer (layer 0 is {full} high): the last 5 thin seconds [{}]",
            heights(&thin_end)
        ));
    }
    // The first second from which every later one is at full height.
    let back = match after.iter().rposition(|s| s.height != Some(full)) {
        _ if after.is_empty() => None,
        None => Some(after[0].t),
        Some(i) => after.get(i + 1).map(|s| s.t),
    };
    match back {
        Some(t) if t - lift <= BACK_WITHIN => {}
        Some(t) => failures.push(format!(
            "back on layer 0 (height {full}) for good only {} samples after the lift, the bar is ≤ {BACK_WITHIN}; heights per second after the lift [{}]",
            t - lift,
            heights(&after)
        )),
        None => failures.push(format!(
            "not back on layer 0 (height {full}) by the end, {} samples after the lift; heights per second after the lift [{}]",
            after.len(),
            heights(&after)
        )),
    }
    verdict(
        &[
            describe("thin (seconds 1-20)", &between(&secs, 0, lift)),
            describe("lifted (seconds 21-35)", &after),
        ],
        &failures,
    );
}

#[test]
fn a_3_s_burst_of_10_percent_loss_leaves_no_freeze_over_1_s_after_it() {
    let _serial = serial();
    if !ready("thin link (c)") {
        return;
    }
    let phases = [
        Phase::new(LinkState::Lifted, 10),
        Phase::new(LinkState::Burst, 3),
        Phase::new(LinkState::Lifted, 12),
    ];
    let run = scenario(&phases, false);
    let (start, end) = (run.phase_start(1), run.phase_start(2));
    let secs = run.seconds(Seat::Constrained);
    let burst = between(&secs, start, end);
    let after = between(&secs, end, end + 12);
    let mut failures = Vec::new();
    for s in &after {
        let longest = s.longest_freeze_at_most();
        if longest > MAX_FREEZE_AFTER_BURST_S {
            failures.push(format!(
                "a freeze of up to {longest:.2} s ended in second {} ({} freezes, {:.2} s in it), the bar is ≤ {MAX_FREEZE_AFTER_BURST_S} s",
                s.t, s.freezes, s.freeze_s
            ));
        }
    }
    // A freeze still going on at the end is not in totalFreezesDuration yet:
    // two seconds in a row without a decoded frame is one over 1 s.
    if let Some(w) = after
        .windows(2)
        .find(|w| w[0].frames == 0 && w[1].frames == 0)
    {
        failures.push(format!(
            "no frame decoded in seconds {} and {} after the burst",
            w[0].t, w[1].t
        ));
    }
    let freezes = |secs: &[Second]| {
        secs.iter()
            .map(|s| format!("{}:{}/{:.2}s/{}f", s.t, s.freezes, s.freeze_s, s.frames))
            .collect::<Vec<_>>()
            .join(" ")
    };
    verdict(
        &[
            describe("burst (3 s of 10 % loss)", &burst),
            describe("after the burst", &after),
            format!(
                "freezes per second (t:count/seconds/frames), burst [{}] after [{}]",
                freezes(&burst),
                freezes(&after)
            ),
        ],
        &failures,
    );
}

#[test]
fn below_the_lowest_layer_the_picture_pauses_the_sound_goes_on_and_both_come_back() {
    let _serial = serial();
    if !ready("thin link (d)") {
        return;
    }
    let phases = [
        Phase::new(LinkState::Thin, 8),
        Phase::new(LinkState::Starved, 14),
        Phase::new(LinkState::Lifted, 16),
    ];
    let run = scenario(&phases, false);
    let (starve, lift) = (run.phase_start(1), run.phase_start(2));
    let secs = run.seconds(Seat::Constrained);
    // The estimate takes a few seconds to fall under the lowest layer.
    let starved = between(&secs, starve + 6, lift);
    let after = between(&secs, lift, lift + 16);
    let mut failures = Vec::new();
    let paused: Vec<u32> = starved
        .iter()
        .filter(|s| s.paused == Some(true))
        .map(|s| s.t)
        .collect();
    if paused.len() < 3 {
        failures.push(format!(
            "the page said \"paused\" in only {} of the last {} starved seconds {paused:?} (200 kbit/s cannot carry layer 1)",
            paused.len(),
            starved.len()
        ));
    }
    sound_flowing(
        "the sound stalled while the picture was paused",
        &starved,
        &mut failures,
    );
    let resumed = after
        .iter()
        .position(|s| s.paused == Some(false) && s.fps >= MIN_FPS);
    match resumed {
        Some(_) => {}
        None => failures.push(format!(
            "the picture did not come back within {} s of the cap lifted; fps per second [{}], paused per second [{}]",
            after.len(),
            fps_list(&after),
            after
                .iter()
                .map(|s| format!("{}:{:?}", s.t, s.paused))
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
    verdict(
        &[
            describe("starved (200 kbit/s)", &starved),
            describe("lifted", &after),
        ],
        &failures,
    );
}

/// (e) Three layers (540p 1.5 Mbit/s, 270p 375 kbit/s, 135p 10 fps
/// 150 kbit/s) and a 400 kbit/s link: too narrow for layer 1, wide enough
/// for layer 2 and the sound. The viewer slides down to layer 2 and plays
/// it, never paused, the sound going on. GCC's estimate overshoots on such
/// a link (it grows while we send less than the link takes), so a try up to
/// layer 1 may come (seen: 517 kbit/s estimated, where layer 1 needs 375 kbit/s
/// × 1.21 and the sound 50 kbit/s more); a failed try blocks that layer for 8 s, then 16 s: at most
/// two tries in these 28 s, and most seconds on layer 2.
#[test]
fn a_narrow_link_slides_a_three_layer_viewer_to_layer_2_and_it_plays() {
    let _serial = serial();
    if !ready("thin link (e)") {
        return;
    }
    let pixelpass = std::path::Path::new(env!("CARGO_BIN_EXE_pixelpass"));
    let mut args = host_args(pixelpass);
    match args.iter().position(|a| a == "--layers") {
        Some(i) if i + 1 < args.len() => args[i + 1] = "3".into(),
        _ => args.extend(["--layers".into(), "3".into()]),
    }
    let phases = [
        Phase::new(LinkState::Thin, 8),
        Phase::new(LinkState::Narrow, 28),
    ];
    let run = scenario_with(args, &phases, false);
    let full = run.layer0_height;
    let narrow = run.phase_start(1);
    let secs = run.seconds(Seat::Constrained);
    let on_2 = |s: &Second| s.layer == Some(2) && s.height.is_some_and(|h| h <= full / 4 + 1);
    let narrowed = between(&secs, narrow, narrow + 28);
    let mut failures = Vec::new();
    let Some(first) = narrowed.iter().position(on_2) else {
        verdict(
            &[describe("narrow (400 kbit/s)", &narrowed)],
            &[format!(
                "never on layer 2 (height {}) on a 400 kbit/s link; layers per second [{}]",
                full / 4,
                heights(&narrowed)
            )],
        );
        return;
    };
    if narrowed[first].t > narrow + 12 {
        failures.push(format!(
            "on layer 2 only {} s after the link narrowed (bar: 12)",
            narrowed[first].t - narrow
        ));
    }
    let after = &narrowed[first..];
    let tries = after
        .windows(2)
        .filter(|w| on_2(&w[0]) && !on_2(&w[1]))
        .count();
    if tries > 2 {
        failures.push(format!(
            "{tries} tries up from layer 2 (bar: 2, then blocked)"
        ));
    }
    let share = after.iter().filter(|s| on_2(s)).count() as f64 / after.len() as f64;
    if share < 0.7 {
        failures.push(format!(
            "on layer 2 in only {:.0} % of the seconds after reaching it (bar: 70 %)",
            share * 100.0
        ));
    }
    let paused: Vec<u32> = after
        .iter()
        .filter(|s| s.paused == Some(true))
        .map(|s| s.t)
        .collect();
    if !paused.is_empty() {
        failures.push(format!(
            "paused in seconds {paused:?}: layer 2 fits a 400 kbit/s link"
        ));
    }
    // Layer 2 runs at 10 fps; 2 % loss may cost a frame or two a second.
    let slow: Vec<String> = after
        .iter()
        .filter(|s| on_2(s) && s.fps < 7.0)
        .map(|s| format!("{}:{:.1}", s.t, s.fps))
        .collect();
    if !slow.is_empty() {
        failures.push(format!(
            "layer 2 played under 7 fps (t:fps) [{}]",
            slow.join(" ")
        ));
    }
    sound_flowing("the sound stalled", after, &mut failures);
    verdict(
        &[
            describe("thin (1.2 Mbit/s)", &between(&secs, 0, narrow)),
            describe("narrow (400 kbit/s), from layer 2 on", after),
            format!(
                "tries up from layer 2: {tries}; on layer 2 {:.0} % of those seconds",
                share * 100.0
            ),
        ],
        &failures,
    );
}
