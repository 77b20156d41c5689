//! WHEP viewers of a host (the library's str0m client on a two-thread
//! runtime) that collect what a test then checks.

use std::time::{Duration, Instant};

use crate::prelude::Host;
use crate::client::whep::{WhepClient, WhepEvent};

/// One WHEP session with `host` on its own runtime: connect, run `f`, delete.
fn whep_session<T>(host: &Host, f: impl AsyncFnOnce(&mut WhepClient) -> T) -> T {
    let url = format!("http://{}/{}/whep", host.addr, host.token);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = WhepClient::connect(&url, "127.0.0.1".parse().unwrap())
            .await
            .expect("WHEP 201");
        let r = f(&mut c).await;
        let _ = c.delete().await;
        r
    })
}

/// Watch `host` over WHEP until `want` video frames came (at most 25 s; the
/// first must be a keyframe): their Annex B bytes, the frame count and the
/// audio packets seen meanwhile.
pub fn whep_video(host: &Host, want: u32) -> (Vec<u8>, u32, u32) {
    whep_session(host, async |c| {
        let deadline = Instant::now() + Duration::from_secs(25);
        let (mut annexb, mut frames, mut audio) = (Vec::new(), 0u32, 0u32);
        while frames < want {
            assert!(
                Instant::now() < deadline,
                "WHEP: only {frames} frames, {audio} audio packets in time"
            );
            match c.next_event(deadline).await.expect("the client runs") {
                Some(WhepEvent::Video(f)) => {
                    if frames == 0 {
                        assert!(f.keyframe, "the first frame is a keyframe");
                    }
                    annexb.extend_from_slice(&f.annexb);
                    frames += 1;
                }
                Some(WhepEvent::Audio(_)) => audio += 1,
                _ => {}
            }
        }
        (annexb, frames, audio)
    })
}

/// Listen to `host` over WHEP until `want` Opus packets came (at most 20 s):
/// (RTP time, payload) each.
pub fn whep_opus(host: &Host, want: usize) -> Vec<(u64, Vec<u8>)> {
    whep_session(host, async |c| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut packets = Vec::new();
        while packets.len() < want {
            assert!(
                Instant::now() < deadline,
                "only {} Opus packets in time",
                packets.len()
            );
            if let Some(WhepEvent::Audio(a)) =
                c.next_event(deadline).await.expect("the client runs")
            {
                packets.push((a.rtp_time, a.data));
            }
        }
        packets
    })
}
