//! Stream changes that a caller abandons half way (an API client hanging
//! up during `DELETE` or `PUT`) still finish, and a deleted stream's hub
//! (its rings and GOP cache) is freed.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::FutureExt;

use super::Streams;
use crate::config::stream::StreamConfig;
use crate::egress::whep::{WebRtcArgs, Whep};
use crate::registry::Registry;
use crate::whip::{Whip, WhipConfig};

async fn streams() -> (Streams, Whip) {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let whep = Whep::start(&WebRtcArgs {
        webrtc_udp: loopback,
        ..WebRtcArgs::default()
    })
    .await
    .unwrap();
    let whip = Whip::start(WhipConfig::loopback()).await.unwrap();
    (
        Streams::new(Registry::new(), whep, Some(whip.clone())),
        whip,
    )
}

fn published(id: &str) -> StreamConfig {
    serde_json::from_str(&format!(
        r#"{{"id":"{id}","token":"{id}-viewer-token-0123456789","publish_token":"{id}-publish-token-0123456789"}}"#
    ))
    .unwrap()
}

/// Yields to the runtime until `done` holds, at most `tries` times 10 ms.
async fn until(tries: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn a_delete_whose_caller_goes_away_still_unregisters_the_stream() {
    let (streams, whip) = streams().await;
    streams.create(published("pub")).unwrap();
    assert!(whip.slot("pub").is_some());
    // Polled once, then dropped: as a request future is when its client
    // hangs up.
    assert!(streams.delete("pub").now_or_never().is_none());
    assert!(streams.get("pub").is_none(), "out of the map at once");
    // Before the teardown ran as a task of its own, the WHIP slot (and the
    // stream's hub with it) stayed registered forever.
    assert!(
        until(3000, || whip.slot("pub").is_none()).await,
        "the abandoned delete left the stream registered with WHIP"
    );
    // The id is free for a new stream.
    streams.create(published("pub")).unwrap();
}

#[tokio::test]
async fn a_replace_whose_caller_goes_away_still_puts_the_new_config_in() {
    let (streams, whip) = streams().await;
    streams.create(published("pub")).unwrap();
    let mut changed = published("pub");
    changed.max_viewers = 3;
    assert!(streams
        .replace("pub", changed.clone())
        .now_or_never()
        .is_none());
    assert!(
        until(3000, || streams
            .get("pub")
            .is_some_and(|v| v.config.max_viewers == 3))
        .await,
        "the abandoned replace left the stream deleted or old"
    );
    assert!(whip.slot("pub").is_some(), "the new stream is registered");
}

/// A probe of `id`'s hub: true while anything still holds it.
fn hub_probe(streams: &Streams, id: &str) -> impl Fn() -> bool {
    let map = streams.lock();
    map.get(id)
        .expect("the stream")
        .supervisor
        .hub()
        .alive_probe()
}

/// Deletes `id` (`finish`: awaited to its end; else dropped after one
/// poll, as a hung-up request is) and asserts its hub is freed.
async fn delete_frees_the_hub(streams: &Streams, id: &str, finish: bool) {
    let alive = hub_probe(streams, id);
    if finish {
        streams.delete(id).await.unwrap();
    } else {
        assert!(streams.delete(id).now_or_never().is_none());
    }
    assert!(
        until(3000, || !alive()).await,
        "something still holds the deleted stream's hub"
    );
}

#[tokio::test]
async fn a_deleted_published_stream_frees_its_hub() {
    let (streams, _whip) = streams().await;
    streams.create(published("pub")).unwrap();
    delete_frees_the_hub(&streams, "pub", true).await;
}

#[tokio::test]
async fn an_abandoned_delete_frees_the_hub_too() {
    let (streams, _whip) = streams().await;
    streams.create(published("pub")).unwrap();
    delete_frees_the_hub(&streams, "pub", false).await;
}

#[tokio::test]
async fn a_deleted_ffmpeg_stream_frees_its_hub() {
    let (streams, _whip) = streams().await;
    let cam: StreamConfig = serde_json::from_str(
        r#"{"id":"cam","token":"cam-viewer-token-0123456789","input":["-i","x.ts"],"on_demand":true}"#,
    )
    .unwrap();
    streams.create(cam).unwrap();
    delete_frees_the_hub(&streams, "cam", true).await;
}
