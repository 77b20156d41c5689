//! Which layer a WebRTC viewer gets, from what its link can carry. Sans-IO:
//! the estimate, the loss and the time go in; a choice comes out.
//!
//! - A viewer starts on the highest layer whose bitrate fits its estimate.
//! - It goes DOWN when its layer has not fitted for [`Rules::down_after`]
//!   (the estimate below the layer's bitrate, or the loss the browser
//!   reports above [`Rules::lossy`]): to the highest layer that fits, at
//!   once, skipping layers if need be — within 2 s of sustained congestion.
//! - It goes UP one layer only after the next one has fitted with
//!   [`Rules::headroom`] to spare for [`Rules::up_after`] (hysteresis: no
//!   flapping on a link that carries one layer just barely). The engine asks
//!   str0m to probe for the next layer meanwhile ([`Selector::probe`]).
//! - A try that fails (back down within [`Rules::trial`] of going up) keeps
//!   that layer out of reach for [`Rules::retry_after`], twice as long after
//!   each failed try in a row (up to [`Rules::retry_max`]): an estimate that
//!   overshoots on a narrow link (GCC grows it while we send less than the
//!   link takes) costs one stumble, not one every few seconds.
//! - Below the lowest layer, video PAUSES (audio goes on); it resumes on the
//!   lowest layer the same way it would go up.
//! - A viewer may pin a layer (the player page's quality menu): then the
//!   estimate changes nothing until it asks for `auto` again.
//!
//! The switch itself (at a keyframe of the target layer) is the engine's.

use std::time::{Duration, Instant};

use serde::Serialize;

/// What a viewer's video is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    Layer(u8),
    /// Below the lowest layer: no video until the link recovers.
    Paused,
}

/// Who decides: the estimate, or the viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Auto,
    Pinned(Choice),
}

#[derive(Clone, Debug)]
pub struct Rules {
    /// A layer fits when its bitrate × this is at most the estimate.
    pub fit: f64,
    /// Going up needs this much more than fitting.
    pub headroom: f64,
    /// Loss above this (fraction of packets) counts as congestion.
    pub lossy: f32,
    pub down_after: Duration,
    pub up_after: Duration,
    /// Video pauses only when the estimate is below the lowest layer's
    /// bitrate × this (a layer that almost fits is better than none: GCC's
    /// estimate dips below the rate for a moment whenever a link changes)…
    pub pause_below: f64,
    /// …for this long.
    pub pause_after: Duration,
    /// Paused video resumes once the lowest layer has fitted this long.
    pub resume_after: Duration,
    /// A layer gone up to and left again within this was a failed try…
    pub trial: Duration,
    /// …and is not tried again for this long, doubled after each failed
    /// try in a row…
    pub retry_after: Duration,
    /// …up to this.
    pub retry_max: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            // NACK resends on top of the layer's rate (measured with its
            // RTP/UDP/SRTP headers; before it is measured, the encoder's
            // target, a few % under that).
            fit: 1.05,
            // libwebrtc asks about this much extra before it enables a
            // higher simulcast layer; more kept an application-limited
            // estimate (GCC grows slowly while we send a lower layer) below
            // the bar for a minute on a clean link.
            headroom: 1.15,
            // GCC's own rule: below 2 % loss is noise, above 10 % is congestion.
            lossy: 0.10,
            down_after: Duration::from_millis(1000),
            up_after: Duration::from_secs(2),
            pause_below: 0.8,
            pause_after: Duration::from_secs(2),
            resume_after: Duration::from_secs(2),
            trial: Duration::from_secs(10),
            retry_after: Duration::from_secs(8),
            retry_max: Duration::from_secs(64),
        }
    }
}

pub struct Selector {
    rules: Rules,
    current: Choice,
    mode: Mode,
    /// Since when the current layer has not fitted.
    congested_since: Option<Instant>,
    /// Since when the next layer up has fitted with headroom.
    headroom_since: Option<Instant>,
    /// The layer last gone up to, and when: on trial until [`Rules::trial`].
    on_trial: Option<(u8, Instant)>,
    /// A layer a failed try keeps out of reach, and until when.
    blocked: Option<(u8, Instant)>,
    /// How long the next failed try blocks its layer.
    backoff: Duration,
}

impl Selector {
    /// A new viewer: the highest layer that fits `estimate` (bit/s; `None`:
    /// no estimate, layer 0). `rates`: each layer's bitrate, layer 0 first.
    pub fn new(rules: Rules, estimate: Option<u64>, rates: &[u64]) -> Self {
        let current = match estimate {
            None => Choice::Layer(0),
            // A viewer starts with a picture, even on the lowest layer.
            Some(e) => match fitting(&rules, e, rates) {
                Choice::Paused => Choice::Layer(last_of(rates.len())),
                c => c,
            },
        };
        let backoff = rules.retry_after;
        Self {
            rules,
            current,
            mode: Mode::Auto,
            congested_since: None,
            headroom_since: None,
            on_trial: None,
            blocked: None,
            backoff,
        }
    }

    pub fn current(&self) -> Choice {
        self.current
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The viewer pins a choice (`Some`), or gives it back to the estimate.
    pub fn set_mode(&mut self, mode: Mode) -> Choice {
        self.mode = mode;
        self.congested_since = None;
        self.headroom_since = None;
        if let Mode::Pinned(c) = mode {
            self.current = c;
        }
        self.current
    }

    /// The link's latest: `estimate` (bit/s), `loss` (fraction, from the
    /// viewer's receiver reports), each layer's bitrate. The choice, when it
    /// changes now.
    pub fn update(
        &mut self,
        now: Instant,
        estimate: Option<u64>,
        loss: Option<f32>,
        rates: &[u64],
    ) -> Option<Choice> {
        if self.mode != Mode::Auto || rates.is_empty() {
            return None;
        }
        let estimate = estimate?;
        let lossy = loss.is_some_and(|l| l > self.rules.lossy);
        let n = rates.len();
        let lowest = last_of(n);
        if let Some((l, at)) = self.on_trial {
            if self.current == Choice::Layer(l)
                && now.saturating_duration_since(at) >= self.rules.trial
            {
                // The try held: the next failed one blocks for the shortest time.
                self.on_trial = None;
                self.backoff = self.rules.retry_after;
            }
        }
        if let Choice::Layer(i) = self.current {
            if lossy || !fits(&self.rules, estimate, rate(rates, i), 1.0) {
                self.headroom_since = None;
                let since = *self.congested_since.get_or_insert(now);
                let can_pause =
                    (estimate as f64) < rate(rates, lowest) as f64 * self.rules.pause_below;
                // As far down as the estimate says; one layer at least (loss
                // says "less" even where the estimate still fits); paused
                // only when even the lowest layer is well out of reach (loss
                // alone never pauses: random loss stays whatever we send).
                let target = match fitting(&self.rules, estimate, rates) {
                    Choice::Layer(j) if j > i => Choice::Layer(j),
                    Choice::Paused if can_pause => Choice::Paused,
                    Choice::Paused => Choice::Layer(lowest),
                    Choice::Layer(_) => Choice::Layer((i + 1).min(lowest)),
                };
                let wait = match target {
                    Choice::Paused => self.rules.pause_after,
                    Choice::Layer(_) => self.rules.down_after,
                };
                if target == self.current || now.saturating_duration_since(since) < wait {
                    return None;
                }
                self.congested_since = None;
                self.failed_try(i, now);
                return self.set(target);
            }
        }
        self.congested_since = None;
        // Up (or resume): the next layer must fit (going up: with headroom),
        // for a while.
        let Some(up) = self.up(n) else {
            self.headroom_since = None;
            return None;
        };
        let up_rate = match up {
            Choice::Layer(i) if self.blocked.is_some_and(|(l, until)| l == i && now < until) => {
                self.headroom_since = None;
                return None;
            }
            Choice::Layer(i) => rate(rates, i),
            Choice::Paused => return None,
        };
        let (extra, wait) = match self.current {
            Choice::Paused => (1.0, self.rules.resume_after),
            Choice::Layer(_) => (self.rules.headroom, self.rules.up_after),
        };
        // A paused viewer is sent no video: there is no loss of it to weigh.
        let lossy = lossy && self.current != Choice::Paused;
        if lossy || !fits(&self.rules, estimate, up_rate, extra) {
            self.headroom_since = None;
            return None;
        }
        let since = *self.headroom_since.get_or_insert(now);
        if now.saturating_duration_since(since) < wait {
            return None;
        }
        self.headroom_since = None;
        if let (Choice::Layer(l), Choice::Layer(_)) = (up, self.current) {
            self.on_trial = Some((l, now));
        }
        self.set(up)
    }

    /// Leaving layer `i` at `now`: when it was gone up to less than
    /// [`Rules::trial`] ago, that try failed and `i` is blocked for a while.
    fn failed_try(&mut self, i: u8, now: Instant) {
        let Some((l, at)) = self.on_trial.take() else {
            return;
        };
        if l == i && now.saturating_duration_since(at) < self.rules.trial {
            self.blocked = Some((i, now + self.backoff));
            self.backoff = (self.backoff * 2).min(self.rules.retry_max);
        }
    }

    /// What str0m's estimator should probe for: the next layer up (with
    /// headroom), or the current one when at the top (bit/s).
    pub fn probe(&self, rates: &[u64]) -> Option<u64> {
        let target = match self.up(rates.len()).unwrap_or(self.current) {
            Choice::Layer(i) => rate(rates, i),
            Choice::Paused => return None,
        };
        Some((target as f64 * self.rules.fit * self.rules.headroom) as u64)
    }

    /// The next choice up from the current one (from paused: the lowest
    /// layer of `n`); `None` at layer 0.
    fn up(&self, n: usize) -> Option<Choice> {
        match self.current {
            Choice::Layer(0) => None,
            Choice::Layer(i) => Some(Choice::Layer(i - 1)),
            Choice::Paused => (n > 0).then(|| Choice::Layer(last_of(n))),
        }
    }

    fn set(&mut self, choice: Choice) -> Option<Choice> {
        if choice == self.current {
            return None;
        }
        self.current = choice;
        Some(choice)
    }
}

fn rate(rates: &[u64], i: u8) -> u64 {
    rates.get(usize::from(i)).copied().unwrap_or(0)
}

fn last_of(n: usize) -> u8 {
    n.saturating_sub(1) as u8
}

fn fits(rules: &Rules, estimate: u64, rate: u64, extra: f64) -> bool {
    (rate as f64) * rules.fit * extra <= estimate as f64
}

/// The highest layer that fits `estimate`; `Paused` when none does.
fn fitting(rules: &Rules, estimate: u64, rates: &[u64]) -> Choice {
    (0..rates.len())
        .find(|&i| fits(rules, estimate, rates[i], 1.0))
        .map_or(Choice::Paused, |i| Choice::Layer(i as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [u64; 3] = [4_000_000, 1_000_000, 150_000];

    /// The choices of `moves`, without their times.
    fn choices(moves: &[(Duration, Choice)]) -> Vec<Choice> {
        moves.iter().map(|m| m.1).collect()
    }

    /// Feed `estimate`/`loss` every 100 ms for `secs`; the choices made, with when.
    fn run(
        s: &mut Selector,
        t: &mut Instant,
        secs: f64,
        estimate: u64,
        loss: f32,
    ) -> Vec<(Duration, Choice)> {
        let start = *t;
        let mut out = Vec::new();
        for _ in 0..(secs * 10.0) as usize {
            *t += Duration::from_millis(100);
            if let Some(c) = s.update(*t, Some(estimate), Some(loss), &RATES) {
                out.push((t.saturating_duration_since(start), c));
            }
        }
        out
    }

    #[test]
    fn starts_on_the_highest_layer_that_fits() {
        let r = Rules::default();
        assert_eq!(
            Selector::new(r.clone(), None, &RATES).current(),
            Choice::Layer(0)
        );
        assert_eq!(
            Selector::new(r.clone(), Some(10_000_000), &RATES).current(),
            Choice::Layer(0)
        );
        assert_eq!(
            Selector::new(r.clone(), Some(1_500_000), &RATES).current(),
            Choice::Layer(1)
        );
        assert_eq!(
            Selector::new(r.clone(), Some(300_000), &RATES).current(),
            Choice::Layer(2)
        );
        // Even a hopeless link starts with a picture.
        assert_eq!(
            Selector::new(r, Some(50_000), &RATES).current(),
            Choice::Layer(2)
        );
    }

    #[test]
    fn sustained_congestion_moves_down_within_two_seconds_and_a_blip_does_not() {
        let mut t = Instant::now();
        let mut s = Selector::new(Rules::default(), Some(8_000_000), &RATES);
        // 0.5 s below layer 0 — a blip — changes nothing.
        assert!(run(&mut s, &mut t, 0.5, 2_000_000, 0.0).is_empty());
        assert!(run(&mut s, &mut t, 1.0, 8_000_000, 0.0).is_empty());
        // A 1.2 Mbit/s link: straight to layer 1, within 2 s.
        let moves = run(&mut s, &mut t, 3.0, 1_150_000, 0.02);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(moves[0].1, Choice::Layer(1));
        assert!(moves[0].0 <= Duration::from_secs(2), "{moves:?}");
        // 2 % loss is not congestion: it stays.
        assert!(run(&mut s, &mut t, 10.0, 1_150_000, 0.02).is_empty());
    }

    #[test]
    fn heavy_loss_moves_down_one_layer_even_when_the_estimate_fits() {
        let mut t = Instant::now();
        let mut s = Selector::new(Rules::default(), Some(8_000_000), &RATES);
        let moves = run(&mut s, &mut t, 1.5, 8_000_000, 0.2);
        assert_eq!(choices(&moves), [Choice::Layer(1)]);
    }

    #[test]
    fn below_the_lowest_layer_video_pauses_then_resumes_on_it() {
        let mut t = Instant::now();
        let mut s = Selector::new(Rules::default(), Some(300_000), &RATES);
        assert_eq!(s.current(), Choice::Layer(2));
        // Just under the lowest layer (a dip as a link changes): no pause.
        assert!(run(&mut s, &mut t, 5.0, 140_000, 0.0).is_empty());
        // Heavy loss on the lowest layer does not pause either.
        assert!(run(&mut s, &mut t, 5.0, 300_000, 0.3).is_empty());
        // Well under it for 2 s: paused.
        let _ = run(&mut s, &mut t, 5.0, 300_000, 0.0);
        let moves = run(&mut s, &mut t, 3.0, 100_000, 0.0);
        assert_eq!(choices(&moves), [Choice::Paused]);
        assert!(moves[0].0 >= Duration::from_secs(2), "{moves:?}");
        // Back above: the lowest layer once it fits for 2 s, then up one by one.
        let moves = run(&mut s, &mut t, 20.0, 10_000_000, 0.0);
        assert_eq!(
            choices(&moves),
            [Choice::Layer(2), Choice::Layer(1), Choice::Layer(0)]
        );
        assert!(moves[0].0 >= Duration::from_secs(2), "{moves:?}");
        assert!(moves[2].0 <= Duration::from_secs(9), "{moves:?}");
        // Paused, the loss last reported (of the video it no longer gets)
        // does not hold it back.
        let _ = run(&mut s, &mut t, 5.0, 50_000, 0.0);
        assert_eq!(s.current(), Choice::Paused);
        let moves = run(&mut s, &mut t, 3.0, 400_000, 0.5);
        assert_eq!(choices(&moves), [Choice::Layer(2)]);
    }

    #[test]
    fn up_needs_sustained_headroom_so_a_barely_fitting_link_does_not_flap() {
        let mut t = Instant::now();
        let mut s = Selector::new(Rules::default(), Some(1_200_000), &RATES);
        assert_eq!(s.current(), Choice::Layer(1));
        // Layer 0 would fit (4.2 Mbit/s with resends) but without headroom.
        assert!(run(&mut s, &mut t, 30.0, 4_600_000, 0.0).is_empty());
        // With headroom, but it comes and goes every 1.5 s: never 2 s in a row.
        for _ in 0..5 {
            assert!(run(&mut s, &mut t, 1.5, 6_000_000, 0.0).is_empty());
            assert!(run(&mut s, &mut t, 0.2, 2_000_000, 0.0).is_empty());
        }
        let moves = run(&mut s, &mut t, 5.0, 6_000_000, 0.0);
        assert_eq!(choices(&moves), [Choice::Layer(0)]);
        // It probes for the next layer up, with headroom; at the top, for its own.
        assert_eq!(s.probe(&RATES), Some((4_000_000.0 * 1.05 * 1.15) as u64));
    }

    #[test]
    fn a_failed_try_up_blocks_that_layer_for_longer_each_time() {
        let mut t = Instant::now();
        let mut s = Selector::new(Rules::default(), Some(300_000), &RATES);
        assert_eq!(s.current(), Choice::Layer(2));
        // An overshooting estimate: up to layer 1 after 2 s of headroom…
        let moves = run(&mut s, &mut t, 3.0, 1_400_000, 0.0);
        assert_eq!(choices(&moves), [Choice::Layer(1)]);
        // …which the link cannot carry: down within a second, a failed try.
        let moves = run(&mut s, &mut t, 2.0, 300_000, 0.0);
        assert_eq!(choices(&moves), [Choice::Layer(2)]);
        // The estimate overshoots again at once: no try for 8 s.
        let moves = run(&mut s, &mut t, 12.0, 1_400_000, 0.0);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert!(
            moves[0].0 >= Duration::from_secs(7),
            "blocked ~8 s: {moves:?}"
        );
        // Failed again: now 16 s.
        let moves = run(&mut s, &mut t, 2.0, 300_000, 0.0);
        assert_eq!(choices(&moves), [Choice::Layer(2)]);
        let moves = run(&mut s, &mut t, 20.0, 1_400_000, 0.0);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert!(
            moves[0].0 >= Duration::from_secs(15),
            "blocked ~16 s: {moves:?}"
        );
        // This try holds (the link really carries it): after the trial, a
        // later failure blocks for the shortest time again.
        assert!(run(&mut s, &mut t, 15.0, 1_400_000, 0.0).is_empty());
        assert_eq!(s.current(), Choice::Layer(1));
        let moves = run(&mut s, &mut t, 2.0, 300_000, 0.0);
        assert_eq!(choices(&moves), [Choice::Layer(2)]);
        let moves = run(&mut s, &mut t, 5.0, 1_400_000, 0.0);
        assert_eq!(
            choices(&moves),
            [Choice::Layer(1)],
            "not a failed try: no block"
        );
    }

    #[test]
    fn a_pinned_layer_ignores_the_estimate_until_auto_again() {
        let mut t = Instant::now();
        let mut s = Selector::new(Rules::default(), Some(8_000_000), &RATES);
        assert_eq!(s.set_mode(Mode::Pinned(Choice::Layer(2))), Choice::Layer(2));
        assert!(run(&mut s, &mut t, 20.0, 10_000_000, 0.0).is_empty());
        assert_eq!(s.current(), Choice::Layer(2));
        s.set_mode(Mode::Auto);
        let moves = run(&mut s, &mut t, 20.0, 10_000_000, 0.0);
        assert_eq!(moves.last().map(|m| m.1), Some(Choice::Layer(0)));
    }
}
