//! Pacing in the core: where each datagram a peer's `Rtc` puts out goes (its
//! pacer, or straight out), when a peer's pacer is due (counted from when
//! its last group left: [`Core::handle_sent`]), and the video held back
//! unsealed (a joining peer's cached GOP, and live video while the pacer
//! holds a group: [`HOLD_SEALED`]), written as its queue empties rather
//! than sealed all at once.
//!
//! [`HOLD_SEALED`]: crate::egress::whep::peer::HOLD_SEALED

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use str0m::Input;

use super::{Core, Output, PeerId, MAX_DRAIN, OUT_BATCH};
use crate::egress::whep::pacer::{lane, Lane};
use crate::egress::whep::peer::{Action, Peer, BURST_CHUNK};
use crate::net::rtc::{self, Polled};

/// Drain a peer's output: its datagrams into its pacer (video, when paced)
/// or `out` (the rest), then what its pacer lets go now into `out`; collect
/// what its events mean, and set `peer.wake` to its next timeout (or its
/// deadline, if sooner).
pub(super) fn drain(
    out: &mut VecDeque<Output>,
    peer: &mut Peer,
    now: Instant,
    timeout: Duration,
) -> Vec<Action> {
    let audio_pt = peer.audio_pt();
    let mut actions = Vec::new();
    for _ in 0..MAX_DRAIN {
        match rtc::poll(&mut peer.rtc) {
            Polled::Transmit(t) => {
                let contents: Vec<u8> = t.contents.into();
                let Some(p) = &mut peer.pacer else {
                    out.push_back(Output::Transmit {
                        destination: t.destination,
                        contents,
                    });
                    continue;
                };
                match lane(&contents, audio_pt) {
                    Lane::Paced => {
                        // Written, now sealed: counted in the queue instead.
                        peer.unsealed = peer.unsealed.saturating_sub(contents.len());
                        p.push(now, contents.len(), (t.destination, contents))
                    }
                    Lane::Window => p.push_urgent(contents.len(), (t.destination, contents)),
                }
            }
            Polled::Event(ev) => actions.extend(peer.on_event(ev, now)),
            Polled::Timeout(t) => {
                if t > now {
                    // Nothing written waits in str0m (it would be due now).
                    peer.unsealed = 0;
                }
                peer.wake = t.min(peer.deadline(timeout)).max(now);
                release(out, peer, now);
                return actions;
            }
            Polled::Failed(why) => {
                actions.push(Action::Remove(why));
                return actions;
            }
        }
    }
    peer.wake = now;
    release(out, peer, now);
    actions
}

/// What `peer`'s pacer lets go at `now`, into `out`; nothing while `out`
/// holds a send batch already ([`OUT_BATCH`]): the pacer, due, is served by
/// [`Core::release_paced`] once that batch has left. A keyframe reaches
/// every peer in one wake-up; released at once, each peer's first group
/// sat sealed in `out` beside its refilled queue (heaptrack, 200 peers at
/// 4 Mbit/s: ~19 KiB a peer more at the peak).
fn release(out: &mut VecDeque<Output>, peer: &mut Peer, now: Instant) {
    if out.len() >= OUT_BATCH {
        return;
    }
    if let Some(p) = &mut peer.pacer {
        p.release(now, |(destination, contents)| {
            out.push_back(Output::Transmit {
                destination,
                contents,
            });
        });
    }
}

/// Write the next chunk of a joining peer's cached GOP, or of the live
/// video held for room in its pacer. `None`: nothing to write, or (paced)
/// its queue is full enough for now ([`HOLD_SEALED`]: the queue never runs
/// dry, and holds at most that and a packet, not a whole keyframe or GOP,
/// sealed, per peer). Paced, the chunk is sealed at once (a timeout input:
/// str0m sends written media on its next timeout), so the next look at the
/// queue counts it; `Err` if str0m failed.
///
/// [`HOLD_SEALED`]: crate::egress::whep::peer::HOLD_SEALED
pub(super) fn write_burst(peer: &mut Peer, now: Instant) -> Option<Result<(), String>> {
    if peer.pacer.is_none() {
        return peer.write_burst(BURST_CHUNK, now).then_some(Ok(()));
    }
    if peer.pacer_full() || !peer.write_burst(BURST_CHUNK, now) {
        return None;
    }
    Some(rtc::feed(&mut peer.rtc, Input::Timeout(now)))
}

impl Core {
    /// Let every pacer due by `now` release what it may (into the output
    /// queue: one send batch serves all of them) and refill the queues of
    /// joining peers. `false`: it paused at a full send batch ([`OUT_BATCH`]),
    /// the rest stays due.
    pub(super) fn release_paced(&mut self, now: Instant) -> bool {
        while let Some(&(t, id)) = self.pace_timers.first() {
            if t > now {
                break;
            }
            if self.out.len() >= OUT_BATCH {
                return false;
            }
            self.pace_timers.pop_first();
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            peer.pace_filed = None;
            release(&mut self.out, peer, now);
            if peer.has_burst() {
                // Writes the next chunk if there is room, and files both timers.
                self.after_drain(id, Vec::new(), now);
            } else {
                self.file_pace(id, now);
            }
        }
        true
    }

    /// The datagrams taken from [`poll_output`](Self::poll_output) so far
    /// have left: the driver's send call returned at `now`. The pacers that
    /// let them go count their next group from here, and are filed again.
    pub fn handle_sent(&mut self, now: Instant) {
        if self.released.is_empty() {
            return;
        }
        self.released_at = None;
        let mut released = std::mem::take(&mut self.released);
        for &id in &released {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue; // gone meanwhile
            };
            peer.pace_awaiting = false;
            if let Some(p) = &mut peer.pacer {
                p.sent(now);
            }
            self.file_pace(id, now);
        }
        released.clear();
        self.released = released;
    }

    /// File a peer's pacer under its next due time (on the grid: peers due
    /// about together are served by one wake-up), or take it out. One that
    /// let datagrams go waits for [`handle_sent`](Self::handle_sent).
    pub(super) fn file_pace(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.pacer.as_ref().is_some_and(|p| p.unsent()) {
            if !peer.pace_awaiting {
                peer.pace_awaiting = true;
                self.released.push(id);
                self.released_at.get_or_insert(now);
            }
            if let Some(f) = peer.pace_filed.take() {
                self.pace_timers.remove(&(f, id));
            }
            return;
        }
        let due = peer.pacer.as_ref().and_then(|p| p.next_due());
        if due == peer.pace_filed {
            return;
        }
        if let Some(f) = peer.pace_filed.take() {
            self.pace_timers.remove(&(f, id));
        }
        if let Some(d) = due {
            self.pace_timers.insert((d, id));
            peer.pace_filed = Some(d);
        }
    }
}
