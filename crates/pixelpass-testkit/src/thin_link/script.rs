//! A scripted run of the thin-link lab: the link goes through phases
//! (clean 10 s → thin 30 s → …), counted in the constrained viewer's samples
//! (Chromium's seconds): when its sample number reaches a phase's start the
//! link is changed, so the second that ends with the next sample is the new
//! phase's first.

use std::time::Duration;

use anyhow::{bail, Context};

use super::sample::{seconds, Sample, Second};
use super::{LinkState, Seat, ThinLab, Viewer};

/// The first sample waits for Chromium to start and the page to load (over
/// the thin link, maybe); later ones come a second apart.
const FIRST_SAMPLE: Duration = Duration::from_secs(45);
const NEXT_SAMPLE: Duration = Duration::from_secs(6);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    pub state: LinkState,
    pub seconds: u32,
}

impl Phase {
    pub const fn new(state: LinkState, seconds: u32) -> Phase {
        Phase { state, seconds }
    }
}

/// The issue's scenario: clean 10 s → thin 30 s → lifted 20 s → 3 s of
/// 10 % loss → 10 s lifted.
pub const ISSUE_16: &[Phase] = &[
    Phase::new(LinkState::Clean, 10),
    Phase::new(LinkState::Thin, 30),
    Phase::new(LinkState::Lifted, 20),
    Phase::new(LinkState::Burst, 3),
    Phase::new(LinkState::Lifted, 10),
];

/// What a run collected: every sample of each viewer (t = 0..=total).
#[derive(Debug, Clone)]
pub struct Run {
    pub phases: Vec<Phase>,
    pub constrained: Vec<Sample>,
    pub clean: Vec<Sample>,
    pub layer0_height: u32,
    /// Chromium's version (from the constrained viewer's sampler).
    pub chromium: Option<String>,
}

impl Run {
    /// The sample at which phase `i` starts (the link changed then).
    pub fn phase_start(&self, i: usize) -> u32 {
        self.phases[..i].iter().map(|p| p.seconds).sum()
    }

    /// The link's state during the second that ends with sample `t`.
    pub fn state_at(&self, t: u32) -> LinkState {
        state_at(&self.phases, t)
    }

    /// The seconds of `seat`'s viewer (one per sample after the first).
    pub fn seconds(&self, seat: Seat) -> Vec<Second> {
        let samples = match seat {
            Seat::Constrained => &self.constrained,
            Seat::Clean => &self.clean,
        };
        seconds(samples, self.layer0_height)
    }
}

fn state_at(phases: &[Phase], t: u32) -> LinkState {
    let mut start = 0;
    for p in phases {
        if t > start && t <= start + p.seconds {
            return p.state;
        }
        start += p.seconds;
    }
    phases.first().map_or(LinkState::Clean, |p| p.state)
}

/// The seconds that end with a sample in `from+1 ..= to`.
pub fn between(secs: &[Second], from: u32, to: u32) -> Vec<Second> {
    secs.iter()
        .filter(|s| s.t > from && s.t <= to)
        .cloned()
        .collect()
}

/// Run `phases` against a constrained viewer (and a clean one when
/// `with_clean`), changing the link as the constrained viewer's samples
/// reach each phase. `each` sees every constrained sample as it comes, the
/// clean viewer's newest one and the link's state during the second that
/// sample ends. Every wait is bounded; the browsers have exited (or were
/// stopped) when it returns.
pub fn run(
    lab: &ThinLab,
    phases: &[Phase],
    with_clean: bool,
    mut each: impl FnMut(&Sample, Option<&Sample>, LinkState),
) -> anyhow::Result<Run> {
    let Some(first) = phases.first() else {
        bail!("a run needs at least one phase");
    };
    let total: u32 = phases.iter().map(|p| p.seconds).sum();
    let count = total + 1;
    lab.set_link(first.state)?;
    let mut thin = lab.open_viewer(Seat::Constrained, count)?;
    let mut clean = if with_clean {
        Some(lab.open_viewer(Seat::Clean, count)?)
    } else {
        None
    };
    let result = collect(lab, phases, count, &mut thin, clean.as_mut(), &mut each);
    // A browser that did not end by itself (or after a failure) is stopped by its PID.
    for v in std::iter::once(&thin).chain(clean.as_ref()) {
        if result.is_err() || lab.lab().wait(v.pid, Duration::from_secs(10)).is_err() {
            lab.close_viewer(v);
        }
    }
    let (constrained, clean_samples) = result?;
    Ok(Run {
        phases: phases.to_vec(),
        constrained,
        clean: clean_samples,
        layer0_height: lab.layer0_height(),
        chromium: thin.chromium.clone(),
    })
}

type Collected = (Vec<Sample>, Vec<Sample>);

fn collect(
    lab: &ThinLab,
    phases: &[Phase],
    count: u32,
    thin: &mut Viewer,
    mut clean: Option<&mut Viewer>,
    each: &mut impl FnMut(&Sample, Option<&Sample>, LinkState),
) -> anyhow::Result<Collected> {
    let starts: Vec<(u32, LinkState)> = phases
        .iter()
        .scan(0, |at, p| {
            let start = *at;
            *at += p.seconds;
            Some((start, p.state))
        })
        .collect();
    let mut got = Vec::with_capacity(count as usize);
    let mut got_clean: Vec<Sample> = Vec::with_capacity(count as usize);
    for t in 0..count {
        let wait = if t == 0 { FIRST_SAMPLE } else { NEXT_SAMPLE };
        let s = thin.next_sample(wait)?;
        if s.t != t {
            bail!(
                "the constrained viewer's sample {} came where {t} was due",
                s.t
            );
        }
        for &(start, state) in &starts {
            if start == t && t > 0 {
                lab.set_link(state)
                    .with_context(|| format!("setting the link {} at sample {t}", state.name()))?;
            }
        }
        if let Some(c) = clean.as_deref_mut() {
            // Until it has printed them all (then it exits, maybe before this one).
            while got_clean.len() < count as usize {
                match c.try_sample()? {
                    Some(cs) => got_clean.push(cs),
                    None => break,
                }
            }
        }
        if let Some(status) = lab.host_exited()? {
            bail!("pixelpass host exited ({status}) at sample {t}");
        }
        each(&s, got_clean.last(), state_at(phases, t));
        got.push(s);
    }
    if let Some(c) = clean {
        while got_clean.len() < count as usize {
            got_clean.push(c.next_sample(NEXT_SAMPLE)?);
        }
    }
    Ok((got, got_clean))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_belongs_to_the_phase_that_was_in_force() {
        let phases = [
            Phase::new(LinkState::Clean, 2),
            Phase::new(LinkState::Thin, 3),
            Phase::new(LinkState::Lifted, 1),
        ];
        let got: Vec<_> = (1..=6).map(|t| state_at(&phases, t).name()).collect();
        assert_eq!(got, ["clean", "clean", "thin", "thin", "thin", "lifted"]);
        let total: u32 = ISSUE_16.iter().map(|p| p.seconds).sum();
        assert_eq!(total, 73);
    }
}
