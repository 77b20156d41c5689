//! A viewer's video layer: which layer's packets it is sent, the switch to
//! another one at that layer's next keyframe, and what the API shows of it.
//! Sans-IO; the choice itself is [`super::select`]'s.
//!
//! A switch never cuts a frame: the peer stays on its layer until the first
//! packet of a keyframe of the target layer arrives, and moves there on that
//! packet (its sequence numbers run on, its timestamps are rebased: see
//! [`super::forward::TrackOut::switch_source`]). The keyframe is asked of
//! the target layer's encoder when the choice is made. Pausing stops the
//! video at once; audio never stops.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::select::{Choice, Mode, Rules, Selector};

/// What is known of a viewer's link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Link {
    /// Bit/s this peer can be sent: str0m's TWCC estimate, else the
    /// browser's REMB.
    pub estimate: Option<u64>,
    /// Whether the estimate is the browser's REMB.
    pub remb: bool,
    /// Fraction of video packets lost (the browser's receiver reports).
    pub loss: Option<f32>,
    /// When `loss` was reported (a paused viewer is sent no video, so its
    /// reports stop: the last one must not count for ever).
    pub loss_at: Option<Instant>,
    pub rtt: Option<Duration>,
}

/// A loss report older than this is no word on the link any more.
const LOSS_FRESH: Duration = Duration::from_secs(3);

impl Link {
    /// The loss, if reported recently.
    pub fn fresh_loss(&self, now: Instant) -> Option<f32> {
        let at = self.loss_at?;
        (now.saturating_duration_since(at) <= LOSS_FRESH).then_some(self.loss?)
    }
}

/// What to do with a video packet of some layer, for one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Not this peer's layer.
    Skip,
    Write,
    /// The keyframe the peer waited for: it is on this layer from here on.
    SwitchAndWrite,
}

/// One peer's layer state.
#[derive(Default)]
pub struct PeerLayer {
    /// `None` until the peer is attached to a stream with layers.
    selector: Option<Selector>,
    /// The layer whose video the peer is sent (`None`: paused).
    on: Option<u8>,
    /// The layer it moves to at that layer's next keyframe.
    pending: Option<u8>,
    /// Switches made (the API shows them).
    switches: u64,
    /// What str0m's estimator was last told to aim for (minimum, desired).
    probe_set: Option<(u64, u64)>,
    /// When the desired rate was last lowered and raised again to make
    /// str0m probe (see [`probe`](Self::probe)), and whether it is lowered now.
    reprobed_at: Option<Instant>,
    lowered: bool,
    /// Since when the estimate has been below what the next layer up needs,
    /// and when the estimator was last restarted (see
    /// [`restart_estimator`](Self::restart_estimator)).
    below_since: Option<Instant>,
    restarted_at: Option<Instant>,
}

/// An estimate below what the next layer up needs for this long is stuck
/// (see [`PeerLayer::restart_estimator`])…
const STUCK_AFTER: Duration = Duration::from_secs(4);
/// …and the estimator is restarted at most this often.
const RESTART_EVERY: Duration = Duration::from_secs(12);

/// How often a viewer whose estimate is below what the next layer up needs
/// makes str0m probe for it.
const REPROBE_EVERY: Duration = Duration::from_secs(2);

impl PeerLayer {
    /// The peer starts: on the layer `estimate` allows of `rates` (layer 0
    /// when the stream has one layer or estimation is off).
    pub fn start(&mut self, estimate: Option<u64>, rates: &[u64]) -> u8 {
        let selector = Selector::new(Rules::default(), estimate, rates);
        let first = match selector.current() {
            Choice::Layer(i) => i,
            Choice::Paused => 0,
        };
        if rates.len() > 1 {
            self.selector = Some(selector);
        }
        self.on = Some(first);
        self.pending = None;
        first
    }

    /// Where a video packet of `layer` goes for this peer.
    pub fn route(&mut self, layer: u8, key: bool) -> Route {
        if self.pending == Some(layer) && key {
            self.pending = None;
            let switched = self.on.is_some_and(|l| l != layer) || self.on.is_none();
            self.on = Some(layer);
            if switched {
                self.switches += 1;
                return Route::SwitchAndWrite;
            }
            return Route::Write;
        }
        if self.on == Some(layer) {
            Route::Write
        } else {
            Route::Skip
        }
    }

    /// New word on the link: the layer to ask a keyframe of, when the
    /// choice moved to one now (`Some(None)`: paused).
    pub fn on_link(&mut self, now: Instant, link: &Link, rates: &[u64]) -> Option<Option<u8>> {
        let choice =
            self.selector
                .as_mut()?
                .update(now, link.estimate, link.fresh_loss(now), rates)?;
        Some(self.apply(choice))
    }

    /// The viewer pins a layer (or goes back to auto); the layer to ask a
    /// keyframe of, as [`on_link`](Self::on_link). `None` when this stream
    /// has no layers to choose from.
    pub fn set_mode(&mut self, mode: Mode) -> Option<Option<u8>> {
        let choice = self.selector.as_mut()?.set_mode(mode);
        Some(self.apply(choice))
    }

    fn apply(&mut self, choice: Choice) -> Option<u8> {
        match choice {
            Choice::Paused => {
                self.on = None;
                self.pending = None;
                None
            }
            Choice::Layer(l) if self.on == Some(l) => {
                self.pending = None;
                None
            }
            Choice::Layer(l) => {
                self.pending = Some(l);
                Some(l)
            }
        }
    }

    /// What str0m's estimator should aim for now: (minimum, desired) bit/s,
    /// when it changed since last told.
    ///
    /// str0m probes for the desired rate when it RISES above its estimate
    /// (an allocation probe); a desired rate that stays put is probed for
    /// again only after 15 s of a stagnant estimate. So while the estimate
    /// is below it, every [`REPROBE_EVERY`] the desired rate is lowered to
    /// the estimate for one round and raised again: a link that got better
    /// is found within seconds.
    pub fn probe(
        &mut self,
        now: Instant,
        estimate: Option<u64>,
        rates: &[u64],
    ) -> Option<(u64, u64)> {
        let sel = self.selector.as_ref()?;
        let desired = sel.probe(rates)?;
        let minimum = match self.on {
            Some(l) => rates.get(usize::from(l)).copied().unwrap_or(0),
            None => 0,
        };
        if self.lowered {
            self.lowered = false;
            self.probe_set = Some((minimum, desired));
            return self.probe_set;
        }
        if let Some(e) = estimate.filter(|e| *e < desired) {
            if self
                .reprobed_at
                .is_none_or(|t| now.saturating_duration_since(t) >= REPROBE_EVERY)
            {
                self.reprobed_at = Some(now);
                self.lowered = true;
                self.probe_set = Some((minimum.min(e), e));
                return self.probe_set;
            }
        }
        // Small changes of the measured rates are not worth a word.
        if self
            .probe_set
            .is_some_and(|(m, d)| close(m, minimum) && close(d, desired))
        {
            return None;
        }
        self.probe_set = Some((minimum, desired));
        self.probe_set
    }

    /// Whether str0m's estimator should start over from the current
    /// estimate now (the rate to start from).
    ///
    /// While a viewer is sent a lower layer, GCC may only raise its estimate
    /// to about 1.5× what it acknowledges, and str0m's probes are held back
    /// while its loss-based controller holds (a link with steady random
    /// loss): the estimate stays put, or creeps up a few % a second, long
    /// after the link got better. Starting over from the same rate begins
    /// with probes at 3× and 6× of it: on a link that cannot carry more they
    /// come back at about the same rate (a short burst, every
    /// [`RESTART_EVERY`] at most), on a better one the estimate is there at
    /// once.
    pub fn restart_estimator(
        &mut self,
        now: Instant,
        estimate: Option<u64>,
        rates: &[u64],
    ) -> Option<u64> {
        let e = estimate?;
        let desired = self.selector.as_ref()?.probe(rates)?;
        if e >= desired {
            self.below_since = None;
            return None;
        }
        let since = *self.below_since.get_or_insert(now);
        let due = self
            .restarted_at
            .is_none_or(|t| now.saturating_duration_since(t) >= RESTART_EVERY);
        if now.saturating_duration_since(since) < STUCK_AFTER || !due {
            return None;
        }
        self.restarted_at = Some(now);
        self.below_since = None;
        // A fresh estimator knows no desired rate: say it again.
        self.probe_set = None;
        Some(e)
    }

    /// The layer the peer's video is on (`None`: paused).
    pub fn on(&self) -> Option<u8> {
        self.on
    }

    /// The layer a keyframe request of this peer's is for: the one it
    /// moves to, else the one it is on (`None`: paused, nothing to ask).
    pub fn wanted(&self) -> Option<u8> {
        self.pending.or(self.on)
    }

    pub fn view(&self, link: &Link) -> PeerView {
        PeerView {
            layer: self.on,
            switching_to: self.pending,
            paused: self.on.is_none() && self.pending.is_none(),
            mode: match self.selector.as_ref().map(|s| s.mode()) {
                None => "single",
                Some(Mode::Auto) => "auto",
                Some(Mode::Pinned(_)) => "pinned",
            },
            switches: self.switches,
            estimate_bps: link.estimate,
            estimate_from: link
                .estimate
                .map(|_| if link.remb { "remb" } else { "twcc" }),
            loss: link.loss,
            rtt_ms: link.rtt.map(|d: Duration| d.as_millis() as u64),
        }
    }
}

/// A WebRTC viewer in a stream's report and metrics: its resource id
/// shortened (enough to tell viewers apart in a log, not to reach one).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerReport {
    pub peer: String,
    #[serde(flatten)]
    pub view: PeerView,
}

impl PeerReport {
    pub fn new(resource: &str, view: PeerView) -> Self {
        Self {
            peer: resource.chars().take(8).collect(),
            view,
        }
    }
}

/// Within 10 % of each other.
fn close(a: u64, b: u64) -> bool {
    a.abs_diff(b) * 10 <= a.max(b)
}

/// One WebRTC viewer as the API, the metrics and the player page see it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PeerView {
    /// The layer its video is on; `None` while paused.
    pub layer: Option<u8>,
    /// The layer it moves to at that layer's next keyframe.
    pub switching_to: Option<u8>,
    /// Below the lowest layer: no video until the link recovers (audio goes on).
    pub paused: bool,
    /// `auto` (the estimate chooses), `pinned` (the viewer chose), or
    /// `single` (the stream has one layer).
    pub mode: &'static str,
    pub switches: u64,
    pub estimate_bps: Option<u64>,
    /// `twcc` (our estimate from the browser's feedback) or `remb` (the browser's).
    pub estimate_from: Option<&'static str>,
    /// Fraction of video packets lost, from the browser's receiver reports.
    pub loss: Option<f32>,
    pub rtt_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [u64; 2] = [4_000_000, 1_000_000];

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_target_layer() {
        let mut l = PeerLayer::default();
        assert_eq!(l.start(Some(10_000_000), &RATES), 0);
        assert_eq!(l.route(0, false), Route::Write);
        assert_eq!(l.route(1, true), Route::Skip, "not asked for layer 1 yet");
        assert_eq!(l.set_mode(Mode::Pinned(Choice::Layer(1))), Some(Some(1)));
        // Layer 0 goes on until layer 1's keyframe; layer 1's delta frames wait.
        assert_eq!(l.route(1, false), Route::Skip);
        assert_eq!(l.route(0, false), Route::Write);
        assert_eq!(l.route(1, true), Route::SwitchAndWrite);
        assert_eq!(l.route(0, true), Route::Skip);
        assert_eq!(l.route(1, false), Route::Write);
        let v = l.view(&Link::default());
        assert_eq!(
            (v.layer, v.switching_to, v.paused, v.mode, v.switches),
            (Some(1), None, false, "pinned", 1)
        );
    }

    #[test]
    fn pausing_stops_video_at_once_and_resuming_waits_for_a_keyframe() {
        let mut l = PeerLayer::default();
        l.start(None, &RATES);
        assert_eq!(l.set_mode(Mode::Pinned(Choice::Paused)), Some(None));
        assert_eq!(l.route(0, false), Route::Skip);
        assert!(l.view(&Link::default()).paused);
        assert_eq!(l.set_mode(Mode::Pinned(Choice::Layer(1))), Some(Some(1)));
        assert_eq!(l.route(1, false), Route::Skip);
        assert_eq!(l.route(1, true), Route::SwitchAndWrite);
    }

    #[test]
    fn below_the_next_layer_the_desired_rate_dips_and_rises_every_few_seconds() {
        let t = Instant::now();
        let mut l = PeerLayer::default();
        assert_eq!(l.start(Some(1_500_000), &RATES), 1);
        let want = (4_000_000.0 * 1.05 * 1.15) as u64;
        // Below it: lowered to the estimate, then raised (str0m probes on the rise).
        assert_eq!(
            l.probe(t, Some(1_500_000), &RATES),
            Some((1_000_000, 1_500_000))
        );
        assert_eq!(l.probe(t, Some(1_500_000), &RATES), Some((1_000_000, want)));
        assert_eq!(
            l.probe(t + Duration::from_secs(1), Some(1_500_000), &RATES),
            None
        );
        assert_eq!(
            l.probe(t + Duration::from_secs(2), Some(1_600_000), &RATES),
            Some((1_000_000, 1_600_000))
        );
        assert_eq!(
            l.probe(t + Duration::from_secs(2), Some(1_600_000), &RATES),
            Some((1_000_000, want))
        );
        // Once the estimate is above it, nothing more to say.
        assert_eq!(
            l.probe(t + Duration::from_secs(9), Some(9_000_000), &RATES),
            None
        );
    }

    #[test]
    fn an_estimate_held_below_the_next_layer_restarts_the_estimator_now_and_then() {
        let t = Instant::now();
        let s = |secs: u64| t + Duration::from_secs(secs);
        let mut l = PeerLayer::default();
        l.start(Some(1_500_000), &RATES);
        assert_eq!(l.restart_estimator(t, Some(1_080_000), &RATES), None);
        assert_eq!(l.restart_estimator(s(3), Some(1_200_000), &RATES), None);
        assert_eq!(
            l.restart_estimator(s(4), Some(1_300_000), &RATES),
            Some(1_300_000)
        );
        // Not again before RESTART_EVERY, even if it stays below.
        assert_eq!(l.restart_estimator(s(7), Some(1_080_000), &RATES), None);
        assert_eq!(l.restart_estimator(s(15), Some(1_080_000), &RATES), None);
        assert_eq!(
            l.restart_estimator(s(16), Some(1_080_000), &RATES),
            Some(1_080_000)
        );
        // An estimate that reaches the next layer's need starts the count over.
        assert_eq!(l.restart_estimator(s(18), Some(9_000_000), &RATES), None);
        assert_eq!(l.restart_estimator(s(30), Some(1_000_000), &RATES), None);
        assert_eq!(l.restart_estimator(s(33), Some(1_000_000), &RATES), None);
        assert_eq!(
            l.restart_estimator(s(34), Some(1_000_000), &RATES),
            Some(1_000_000)
        );
    }

    #[test]
    fn a_one_layer_stream_has_nothing_to_choose() {
        let mut l = PeerLayer::default();
        assert_eq!(l.start(Some(100_000), &[4_000_000]), 0);
        assert_eq!(l.set_mode(Mode::Auto), None);
        assert_eq!(l.route(0, false), Route::Write);
        assert_eq!(l.view(&Link::default()).mode, "single");
        assert_eq!(l.probe(Instant::now(), Some(100_000), &[4_000_000]), None);
    }
}
