//! WHEP viewers of a host (the library's str0m client in a session of its
//! own, [`session`]) that collect what a test then checks.

use std::time::Duration;

use crate::client::whep::session::{drive, session, Collect, Got};
use crate::client::whep::WhepEvent;
use crate::prelude::Host;

fn whep_url(host: &Host) -> String {
    format!("http://{}/{}/whep", host.addr, host.token)
}

/// Watch `host` over WHEP until `want` video frames came (at most 25 s; the
/// first must be a keyframe): their Annex B bytes, the frame count and the
/// audio packets seen meanwhile.
pub fn whep_video(host: &Host, want: u32) -> (Vec<u8>, u32, u32) {
    session(&whep_url(host), async |c| {
        let mut got = Got::default();
        let want_frames = want as usize;
        drive(c, &mut got, Duration::from_secs(25), |g| {
            g.video_frames >= want_frames
        })
        .await;
        (
            got.annexb,
            got.video_frames as u32,
            got.audio_packets as u32,
        )
    })
}

/// Opus packets: (RTP time, payload) each.
#[derive(Default)]
struct Opus(Vec<(u64, Vec<u8>)>);

impl Collect for Opus {
    fn take(&mut self, ev: WhepEvent) {
        if let WhepEvent::Audio(a) = ev {
            self.0.push((a.rtp_time, a.data));
        }
    }

    fn progress(&self) -> String {
        format!("only {} Opus packets", self.0.len())
    }
}

/// Listen to `host` over WHEP until `want` Opus packets came (at most 20 s):
/// (RTP time, payload) each.
pub fn whep_opus(host: &Host, want: usize) -> Vec<(u64, Vec<u8>)> {
    session(&whep_url(host), async |c| {
        let mut got = Opus::default();
        drive(c, &mut got, Duration::from_secs(20), |g| g.0.len() >= want).await;
        got.0
    })
}
