//! The one WHEP session helper of the tests: drive a [`WhepClient`] until
//! what it collected ([`Got`], or any [`Collect`]) is enough ([`drive`]),
//! or run a whole session on a runtime of its own (connect, watch, DELETE:
//! [`session`]).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::{WhepClient, WhepEvent};

/// What a test collects from a client's events.
pub trait Collect {
    fn take(&mut self, ev: WhepEvent);
    /// What came so far, for the message of a test that gave up.
    fn progress(&self) -> String;
}

/// What a WHEP viewer got: H.264 in Annex-B, Opus packets, the connection's events.
#[derive(Default)]
pub struct Got {
    pub annexb: Vec<u8>,
    /// (RTP time, arrival) of each keyframe.
    pub keyframes: Vec<(u64, Instant)>,
    pub video_frames: usize,
    pub first_video_at: Option<Instant>,
    pub opus: Vec<Vec<u8>>,
    pub audio_packets: usize,
    pub connected: bool,
    pub closed: bool,
    /// Panic on a frame that did not arrive whole and in order, or an empty
    /// Opus packet (loopback, losses repaired).
    pub checked: bool,
}

impl Got {
    /// One that panics on a frame with a gap or an empty Opus packet.
    pub fn checked() -> Self {
        Self {
            checked: true,
            ..Self::default()
        }
    }
}

impl Collect for Got {
    fn take(&mut self, ev: WhepEvent) {
        match ev {
            WhepEvent::Connected => self.connected = true,
            WhepEvent::Closed => self.closed = true,
            WhepEvent::Video(f) => {
                assert!(
                    f.contiguous || !self.checked,
                    "every frame arrives whole and in order on loopback"
                );
                if self.video_frames == 0 {
                    assert!(
                        f.keyframe,
                        "the first frame is a keyframe (with its SPS/PPS)"
                    );
                }
                self.first_video_at.get_or_insert(f.arrived);
                if f.keyframe {
                    self.keyframes.push((f.rtp_time, f.arrived));
                }
                self.annexb.extend_from_slice(&f.annexb);
                self.video_frames += 1;
            }
            WhepEvent::Audio(a) => {
                assert!(!a.data.is_empty() || !self.checked);
                self.audio_packets += 1;
                self.opus.push(a.data);
            }
            WhepEvent::IceState(_) => {}
        }
    }

    fn progress(&self) -> String {
        format!(
            "connected={} video={} audio={} closed={}",
            self.connected, self.video_frames, self.audio_packets, self.closed
        )
    }
}

/// Feed `client`'s events to `got` until `done(got)`; panics when the
/// client fails or `within` passes first.
pub async fn drive<C: Collect>(
    client: &mut WhepClient,
    got: &mut C,
    within: Duration,
    done: impl Fn(&C) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(got) {
        assert!(
            Instant::now() < deadline,
            "gave up after {within:?}: {}",
            got.progress()
        );
        match client.next_event(deadline).await {
            Ok(Some(ev)) => got.take(ev),
            Ok(None) => {}
            Err(e) => panic!("the WHEP client failed: {e}"),
        }
    }
}

/// One WHEP session with `whep_url` from 127.0.0.1 on a two-thread runtime
/// of its own: connect (201 expected), run `f`, DELETE.
pub fn session<T>(whep_url: &str, f: impl AsyncFnOnce(&mut WhepClient) -> T) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = WhepClient::connect(whep_url, IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .expect("WHEP 201");
        let r = f(&mut c).await;
        let _ = c.delete().await;
        r
    })
}
