//! The offers answered `503` + `Retry-After`: a capture that cannot start,
//! an engine past its load limit. Nothing is left behind for them.

use std::sync::Arc;

use axum::http::{Method, StatusCode};

use super::{h, offer, send, setup, Fails, Instant_, SDP};

#[tokio::test]
async fn a_capture_that_cannot_start_is_a_503_with_the_reason() {
    let s = setup(2, Arc::new(Fails)).await;
    let (status, headers, body) =
        send(&s.app, Method::POST, "/t0ken/whep", &[SDP], &offer(|c| c)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        "capture could not start: portal: the user cancelled the dialog\n"
    );
    assert_eq!(h(&headers, "retry-after"), "5");
    assert_eq!(s.whep.peers(None), 0);
    s.whep.shutdown().await;
    s.sup.shutdown().await;
}

#[tokio::test]
async fn a_busy_engine_refuses_new_viewers_with_503_and_starts_nothing() {
    let s = setup(10, Arc::new(Instant_)).await;
    // The engine publishes its own figure every half second: a refusal
    // that lost that race is tried again (bounded).
    let mut refused = None;
    for _ in 0..5 {
        s.whep.load().publish(950);
        let r = send(&s.app, Method::POST, "/t0ken/whep", &[SDP], &offer(|c| c)).await;
        if r.0 == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(r);
            break;
        }
    }
    let Some((_, headers, body)) = refused else {
        panic!("an engine at 95 % (limit 90 %) never refused a viewer");
    };
    assert!(
        body.starts_with(
            "the WebRTC engine is busy 95 % of the time (limit 90 %, --webrtc-max-load)"
        ),
        "{body}"
    );
    assert_eq!(h(&headers, "retry-after"), "5");
    assert_eq!(h(&headers, "access-control-allow-origin"), "*");
    // Nothing was started for the refused viewer: no capture, no peer.
    assert_eq!(s.sup.status().viewers, 0);
    assert_eq!(s.whep.peers(None), 0);
    // Below the limit again: the next offer is answered.
    s.whep.load().publish(0);
    let (status, _, _) = send(&s.app, Method::POST, "/t0ken/whep", &[SDP], &offer(|c| c)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(s.whep.peers(None), 1);
    s.whep.shutdown().await;
    s.sup.shutdown().await;
}
