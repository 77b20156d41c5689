//! The rows of `pixelpass-bench adapt`: the table, or one JSON object each.

use serde_json::json;

use pixelpass_testkit::thin_link::sample::{Second, Window};
use pixelpass_testkit::thin_link::{LinkState, Seat};

use crate::output;

pub const HEADER: &str = "   t  link    estimate  layer   fps  height  lost  nack  freezes  audio | clean: layer   fps  height";
pub const SUMMARY_HEADER: &str =
    "viewer       phase         seconds    fps  frozen  freezes  no-frame  lost  heights seen";

fn layer(s: &Second) -> String {
    match s.layer {
        Some(l) if s.layer_inferred => format!("{l}~"),
        Some(l) => l.to_string(),
        None => "-".into(),
    }
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// One second of the constrained viewer, with the clean viewer's latest.
pub fn row(s: &Second, state: LinkState, clean: Option<&Second>) {
    let estimate = s
        .estimate_bps
        .map_or_else(|| "-".into(), |b| format!("{:.0}k", b / 1000.0));
    let paused = if s.paused == Some(true) {
        " paused"
    } else {
        ""
    };
    let freezes = if s.freezes == 0 {
        "0".to_string()
    } else {
        format!("{}/{:.2}s", s.freezes, s.freeze_s)
    };
    let clean_cols = clean.map_or_else(
        || format!("{:>5} {:>5} {:>7}", "-", "-", "-"),
        |c| format!("{:>5} {:>5.1} {:>7}", layer(c), c.fps, or_dash(c.height)),
    );
    let reconnect = if s.reconnected { " reconnected" } else { "" };
    let line = format!(
        "{:>4}  {:<6} {:>9}  {:>5} {:>5.1} {:>7} {:>5} {:>5} {:>8} {:>6} | {clean_cols}{paused}{reconnect}",
        s.t,
        state.name(),
        estimate,
        layer(s),
        s.fps,
        or_dash(s.height),
        s.lost,
        s.nacks,
        freezes,
        s.audio_packets,
    );
    output::step(
        "adapt",
        &line,
        json!({
            "t": s.t,
            "link": state.name(),
            "estimate_bps": s.estimate_bps,
            "layer": s.layer,
            "layer_inferred": s.layer_inferred,
            "paused": s.paused,
            "fps": s.fps,
            "height": s.height,
            "width": s.width,
            "lost": s.lost,
            "nacks": s.nacks,
            "freezes": s.freezes,
            "freeze_s": s.freeze_s,
            "audio_packets": s.audio_packets,
            "reconnected": s.reconnected,
            "clean": clean.map(|c| json!({"layer": c.layer, "fps": c.fps, "height": c.height, "freezes": c.freezes})),
        }),
    );
}

/// One phase of one viewer.
pub fn summary_row(seat: Seat, i: usize, state: LinkState, from: u32, w: &Window, secs: &[Second]) {
    let mut seen: Vec<u32> = secs.iter().filter_map(|s| s.height).collect();
    seen.sort_unstable();
    seen.dedup();
    let who = match seat {
        Seat::Constrained => "constrained",
        Seat::Clean => "clean",
    };
    let line = format!(
        "{who:<12} {i} {:<10} {:>3}-{:<4} {:>6.1} {:>6.2}s {:>8} {:>8.0}s {:>5}  {}",
        state.name(),
        from + 1,
        from + secs.len() as u32,
        w.fps,
        w.freeze_s,
        w.freezes,
        w.stalled_s,
        w.lost,
        seen.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    output::step(
        "adapt",
        &line,
        json!({
            "summary": who,
            "phase": i,
            "link": state.name(),
            "from": from + 1,
            "seconds": w.secs,
            "fps": w.fps,
            "freeze_s": w.freeze_s,
            "freezes": w.freezes,
            "stalled_s": w.stalled_s,
            "lost": w.lost,
            "reconnects": w.reconnects,
            "heights": seen,
        }),
    );
}
