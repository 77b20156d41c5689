//! `pixelpass-bench adapt`: how a WebRTC viewer's stream follows its link
//! (issue 16), printed as a timeline, one row per second.
//!
//! The test kit's thin-link lab ([`pixelpass_testkit::thin_link`]): a real
//! `pixelpass host` in a network namespace, headless Chromium on its player
//! page in a namespace whose only way to the host is the user-space impaired
//! link, and (unless `--no-clean`) a second Chromium on a clean link. The
//! link follows the issue's script, counted in the constrained browser's
//! samples (one per second of Chromium's clock): clean 10 s → thin 30 s (80
//! ms RTT, 2 % loss and 1.2 Mbit/s downstream) → cap lifted 20 s → 3 s of
//! 10 % loss → 10 s lifted.
//!
//! Each row: the second (the sample that ends it), the link's state during
//! it, the sender's bandwidth estimate and layer as the player page reports
//! them (`window.pixelpassState`; without it the estimate is "-" and the
//! layer is inferred from the picture's height, marked `~`), frames decoded
//! per second, the picture's height, video packets lost (after NACKs),
//! NACKs sent, freezes that ended in that second, audio packets, and the
//! clean viewer's layer, fps and height. A summary per phase follows (fps,
//! frozen time in freezes that ended, seconds without a decoded frame,
//! packets lost, the heights seen).
//! Needs root, Chromium, node and playwright-core (like the tests).

mod table;

use std::process::ExitCode;

use anyhow::Context;

use pixelpass_testkit::thin_link::sample::{seconds, window, Sample, Second};
use pixelpass_testkit::thin_link::script::{self, between, Run, ISSUE_16};
use pixelpass_testkit::thin_link::{host_args, preflight, LinkState, Seat, ThinLab};

use crate::output;

#[derive(clap::Args, Debug, Clone)]
pub struct AdaptArgs {
    /// One JSON object per row (and per phase summary) on stdout; prose goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// The host's arguments, whitespace-separated (must give --height, layer
    /// 0's). Default: the test kit's (960×540, 30 fps, 2 Mbit/s, test
    /// source), plus `--layers 2` when the host has that option.
    #[arg(long)]
    pub host_args: Option<String>,
    /// Run without the second viewer on a clean link.
    #[arg(long)]
    pub no_clean: bool,
}

pub fn run(args: AdaptArgs) -> anyhow::Result<ExitCode> {
    output::set_json(args.json);
    preflight()?;
    let pixelpass = pixelpass_testkit::bin::try_pixelpass()?;
    let host: Vec<String> = match &args.host_args {
        Some(a) => a.split_whitespace().map(str::to_string).collect(),
        None => host_args(&pixelpass),
    };
    let lab = ThinLab::start(&pixelpass, &host, ISSUE_16[0].state)
        .context("cannot start the thin-link lab")?;
    let full = lab.layer0_height();
    say!(
        "adapt: pixelpass host {} (layer 0 is {full} high); script: {}",
        host.join(" "),
        ISSUE_16
            .iter()
            .map(|p| format!("{} {} s", p.state.name(), p.seconds))
            .collect::<Vec<_>>()
            .join(" → ")
    );
    say!(
        "thin = 40 ms each way, 2 % loss and {:.1} Mbit/s downstream ({}-packet drop-tail queue); \
         lifted = the same without the cap; burst = 10 % loss downstream",
        LinkState::THIN_RATE_BPS as f64 / 1e6,
        LinkState::THIN_QUEUE_PACKETS
    );
    say!("{}", table::HEADER);
    let mut prev: Option<Sample> = None;
    let mut clean_pair: (Option<Sample>, Option<Second>) = (None, None);
    let run = script::run(&lab, ISSUE_16, !args.no_clean, |s, clean, state| {
        if let Some(c) = clean {
            let newer = clean_pair.0.as_ref().is_none_or(|p| p.t < c.t);
            if newer {
                if let Some(p) = clean_pair.0.replace(c.clone()) {
                    clean_pair.1 = seconds(&[p, c.clone()], full).pop();
                }
            }
        }
        if let Some(p) = prev.replace(s.clone()) {
            if let Some(sec) = seconds(&[p, s.clone()], full).pop() {
                table::row(&sec, state, clean_pair.1.as_ref());
            }
        }
    })?;
    let stats = lab
        .link()
        .stats(pixelpass_testkit::netlab::impair::Direction::AToB);
    drop(lab);
    summary(&run);
    say!(
        "link downstream: {} packets in, {} forwarded, {} lost by the link's loss, {} dropped at the 1.2 Mbit/s queue; Chromium {}",
        stats.received,
        stats.forwarded,
        stats.lost,
        stats.queue_dropped,
        run.chromium.as_deref().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

/// One line per phase, per viewer.
fn summary(run: &Run) {
    say!("");
    say!("{}", table::SUMMARY_HEADER);
    for seat in [Seat::Constrained, Seat::Clean] {
        let secs = run.seconds(seat);
        if secs.is_empty() {
            continue;
        }
        for (i, p) in run.phases.iter().enumerate() {
            let from = run.phase_start(i);
            let part = between(&secs, from, from + p.seconds);
            table::summary_row(seat, i, p.state, from, &window(&part), &part);
        }
    }
}
