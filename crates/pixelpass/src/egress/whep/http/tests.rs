//! Status codes and headers of the WHEP endpoints, through the router
//! (no sockets but the WebRTC UDP one on 127.0.0.1), with a fake producer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tokio::sync::mpsc;
use tower::ServiceExt;

use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};

use super::super::config::{IceServer, WebRtcArgs};
use super::super::Whep;
use crate::http::router_with;
use crate::hub::{Hub, HubConfig};
use crate::registry::{Registry, StreamEntry};
use crate::supervisor::{BoxFuture, Policy, Producer, ProducerError, Run, RunHandle, Supervisor};

const TOKEN: &str = "t0ken";

struct Instant_;
struct Nothing;
impl RunHandle for Nothing {
    fn stop(self: Box<Self>) -> BoxFuture<()> {
        Box::pin(async {})
    }
}
impl Producer for Instant_ {
    fn start(&self, hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        Box::pin(async move {
            hub.begin_run(None);
            let (_tx, failures) = mpsc::unbounded_channel();
            std::mem::forget(_tx); // the run never fails
            Ok(Run {
                encoder: "fake".into(),
                failures,
                handle: Box::new(Nothing),
            })
        })
    }
}

struct Fails;
impl Producer for Fails {
    fn start(&self, _hub: Hub) -> BoxFuture<Result<Run, ProducerError>> {
        Box::pin(async {
            Err(ProducerError::cancelled(
                "portal: the user cancelled the dialog",
            ))
        })
    }
}

struct Setup {
    app: axum::Router,
    sup: Supervisor,
    whep: Whep,
}

async fn setup(max_viewers: usize, producer: Arc<dyn Producer>) -> Setup {
    setup_hub(max_viewers, producer, Hub::new(HubConfig::default())).await
}

async fn setup_hub(max_viewers: usize, producer: Arc<dyn Producer>, hub: Hub) -> Setup {
    let policy = Policy {
        max_viewers,
        linger: Duration::ZERO,
        ..Policy::default()
    };
    let sup = Supervisor::spawn(policy, hub, producer);
    let registry = Registry::new();
    registry.insert(StreamEntry::new("host", TOKEN, sup.clone()));
    let args = WebRtcArgs {
        webrtc_udp: "127.0.0.1:0".parse().unwrap(),
        public_host: vec!["203.0.113.9".into()],
        ice_server: vec![
            IceServer::parse("stun:stun.example.org:3478").unwrap(),
            IceServer::parse("turn:u:p@turn.example.org:3478?transport=udp").unwrap(),
        ],
        ..WebRtcArgs::default()
    };
    let whep = Whep::start(&args).await.unwrap();
    Setup {
        app: router_with(registry, Some(whep.clone())),
        sup,
        whep,
    }
}

/// A browser-like offer: recvonly video (several H.264 profiles, VP8…) + audio.
fn offer(video_codecs: fn(RtcConfig) -> RtcConfig) -> String {
    let cfg = RtcConfig::new().set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()));
    let mut rtc = video_codecs(cfg).build(Instant::now());
    let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().unwrap();
    offer.to_sdp_string()
}

async fn send(
    app: &axum::Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn h<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

mod unavailable;

const SDP: (&str, &str) = ("content-type", "application/sdp");
const FRAG: (&str, &str) = ("content-type", "application/trickle-ice-sdpfrag");

#[tokio::test]
async fn a_good_offer_gets_201_with_location_etag_links_and_an_answer_we_can_send() {
    let s = setup(1, Arc::new(Instant_)).await;
    let (status, headers, answer) =
        send(&s.app, Method::POST, "/t0ken/whep", &[SDP], &offer(|c| c)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(h(&headers, "content-type"), "application/sdp");
    let location = h(&headers, "location").to_owned();
    assert!(
        location.starts_with("/t0ken/whep/") && location.len() > "/t0ken/whep/".len() + 20,
        "{location}"
    );
    let etag = h(&headers, "etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10,
        "{etag}"
    );
    assert_eq!(h(&headers, "access-control-allow-origin"), "*");
    assert!(h(&headers, "access-control-expose-headers").contains("Location"));
    let links: Vec<&str> = headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        links,
        vec![
            "<stun:stun.example.org:3478>; rel=\"ice-server\"",
            "<turn:turn.example.org:3478?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; credential-type=\"password\"",
            &format!("<{location}/layer>; rel=\"urn:ietf:params:whep:ext:core:layer\""),
        ]
    );
    // The answer: ice-lite, our candidates, H.264 as the encoder makes it, Opus stereo.
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(
        answer.contains(&format!(
            "127.0.0.1 {} typ host",
            s.whep.local_addr().port()
        )),
        "{answer}"
    );
    assert!(
        answer.contains("203.0.113.9"),
        "the public host is a candidate: {answer}"
    );
    let h264 = answer
        .lines()
        .find(|l| l.contains("H264/90000"))
        .expect("H.264 in the answer");
    let pt = h264
        .trim_start_matches("a=rtpmap:")
        .split(' ')
        .next()
        .unwrap();
    let fmtp = answer
        .lines()
        .find(|l| l.starts_with(&format!("a=fmtp:{pt} ")))
        .expect("H.264 fmtp");
    assert!(
        fmtp.contains("packetization-mode=1") && fmtp.contains("profile-level-id=42e01f"),
        "{fmtp}"
    );
    let opus = answer
        .lines()
        .find(|l| l.contains("opus/48000/2"))
        .expect("Opus in the answer");
    let pt = opus
        .trim_start_matches("a=rtpmap:")
        .split(' ')
        .next()
        .unwrap();
    let fmtp = answer
        .lines()
        .find(|l| l.starts_with(&format!("a=fmtp:{pt} ")))
        .expect("Opus fmtp");
    assert!(
        fmtp.contains("stereo=1") && fmtp.contains("sprop-stereo=1"),
        "{fmtp}"
    );
    assert!(answer.contains("a=sendonly"), "{answer}");
    // Header extensions: the MID only here (no transport-cc, abs-send-time, …;
    // playout-delay too when offered, which this offer does not).
    let offered = offer(|c| c)
        .lines()
        .filter(|l| l.starts_with("a=extmap:"))
        .count();
    let extmaps: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=extmap:"))
        .collect();
    assert!(offered > extmaps.len(), "the offer had more: {offered}");
    assert!(
        !extmaps.is_empty()
            && extmaps
                .iter()
                .all(|l| l.ends_with(" urn:ietf:params:rtp-hdrext:sdes:mid")),
        "{extmaps:?}"
    );
    assert_eq!(s.sup.status().viewers, 1);
    assert_eq!(s.whep.peers(Some("host")), 1);

    // Full: 503 like HTTP-TS, with Retry-After.
    let (status, headers, body) =
        send(&s.app, Method::POST, "/t0ken/whep", &[SDP], &offer(|c| c)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "host is full (1/1 viewers)\n");
    assert_eq!(h(&headers, "retry-after"), "5");
    assert_eq!(h(&headers, "access-control-allow-origin"), "*");

    // PATCH: trickle accepted, ICE restart refused, ETag checked.
    let frag = "a=ice-ufrag:zzzz\r\na=ice-pwd:yyyy\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n";
    let trickle = "a=candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host\r\n";
    assert_eq!(
        send(
            &s.app,
            Method::PATCH,
            &location,
            &[FRAG, ("if-match", &etag)],
            trickle
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&s.app, Method::PATCH, &location, &[FRAG], trickle)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(
            &s.app,
            Method::PATCH,
            &location,
            &[FRAG, ("if-match", "*")],
            frag
        )
        .await
        .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        send(
            &s.app,
            Method::PATCH,
            &location,
            &[FRAG, ("if-match", &etag)],
            frag
        )
        .await
        .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        send(
            &s.app,
            Method::PATCH,
            &location,
            &[FRAG, ("if-match", "\"nope\"")],
            trickle
        )
        .await
        .0,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        send(&s.app, Method::PATCH, &location, &[SDP], trickle)
            .await
            .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        send(&s.app, Method::GET, &location, &[], "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let (status, headers, _) = send(&s.app, Method::OPTIONS, &location, &[], "").await;
    assert_eq!(
        (status, h(&headers, "accept-patch")),
        (StatusCode::NO_CONTENT, "application/trickle-ice-sdpfrag")
    );

    // DELETE frees the slot before it returns; then the resource is gone.
    let (status, headers, _) = send(&s.app, Method::DELETE, &location, &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h(&headers, "access-control-allow-origin"), "*");
    assert_eq!(
        s.sup.status().viewers,
        0,
        "the slot is free when DELETE returns"
    );
    assert_eq!(s.whep.peers(None), 0);
    assert_eq!(
        send(&s.app, Method::DELETE, &location, &[], "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&s.app, Method::PATCH, &location, &[FRAG], trickle)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    s.whep.shutdown().await;
    s.sup.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_their_status_codes() {
    let s = setup(2, Arc::new(Instant_)).await;
    let good = offer(|c| c);
    // Wrong token: the server's plain 404, whatever the method.
    for (m, uri) in [
        (Method::POST, "/wrong/whep"),
        (Method::GET, "/wrong/whep"),
        (Method::DELETE, "/wrong/whep/x"),
        (Method::OPTIONS, "/wrong/whep"),
    ] {
        let (status, headers, body) = send(&s.app, m, uri, &[SDP], &good).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "not found\n"),
            "{uri}"
        );
        assert!(headers.get("access-control-allow-origin").is_none());
    }
    let (status, headers, _) = send(&s.app, Method::GET, "/t0ken/whep", &[], "").await;
    assert_eq!(
        (status, h(&headers, "allow")),
        (StatusCode::METHOD_NOT_ALLOWED, "POST, OPTIONS")
    );
    assert_eq!(
        send(&s.app, Method::PUT, "/t0ken/whep", &[SDP], &good)
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let (status, _, body) = send(
        &s.app,
        Method::POST,
        "/t0ken/whep",
        &[("content-type", "text/plain")],
        &good,
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert_eq!(
        send(&s.app, Method::POST, "/t0ken/whep", &[], &good)
            .await
            .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        send(
            &s.app,
            Method::POST,
            "/t0ken/whep",
            &[("content-type", "Application/SDP; charset=utf-8")],
            "v=0\r\ngarbage"
        )
        .await
        .0,
        StatusCode::BAD_REQUEST,
        "parameters and case are fine, the SDP is not"
    );
    let mut no_fingerprint = good
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .collect::<Vec<_>>()
        .join("\r\n");
    no_fingerprint.push_str("\r\n");
    let (status, _, body) =
        send(&s.app, Method::POST, "/t0ken/whep", &[SDP], &no_fingerprint).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = send(
        &s.app,
        Method::POST,
        "/t0ken/whep",
        &[SDP],
        &offer(|c| c.clear_codecs().enable_vp8(true).enable_opus(true, false)),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body.lines().count(), 1);
    assert!(body.contains("no H.264"), "{body}");
    let (status, _, body) = send(
        &s.app,
        Method::POST,
        "/t0ken/whep",
        &[SDP],
        &offer(|c| c.clear_codecs().enable_h264(false).enable_h265(true)),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // High profile only: named H.264, but nothing we can send.
    let high_only = |c: RtcConfig| {
        let mut c = c.clear_codecs();
        c.codec_config().add_h264(100.into(), None, true, 0x64001f);
        c
    };
    let (status, _, body) = send(
        &s.app,
        Method::POST,
        "/t0ken/whep",
        &[SDP],
        &offer(high_only),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("42e01f"), "{body}");
    assert_eq!(
        send(&s.app, Method::DELETE, "/t0ken/whep/unknown", &[], "")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&s.app, Method::PATCH, "/t0ken/whep/unknown", &[FRAG], "")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, headers, _) = send(&s.app, Method::OPTIONS, "/t0ken/whep", &[], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h(&headers, "accept-post"), "application/sdp");
    assert!(h(&headers, "access-control-allow-methods").contains("POST"));
    assert!(h(&headers, "access-control-allow-headers").contains("If-Match"));
    assert_eq!(s.sup.status().viewers, 0, "no refused request holds a slot");
    s.whep.shutdown().await;
    s.sup.shutdown().await;
}

#[tokio::test]
async fn browser_offer_quirks_are_accepted() {
    let s = setup(3, Arc::new(Instant_)).await;
    // Chrome hides host addresses behind mDNS names; Firefox ends its candidate list.
    let mdns = "a=candidate:1 1 udp 2122260223 1f4712db-ea17-4bcf-a596-105139dfd8bf.local 54400 typ host generation 0 network-id 1\r\n";
    let quirky = offer(|c| c).replace("a=mid:", &format!("{mdns}a=end-of-candidates\r\na=mid:"));
    assert!(quirky.contains(".local"));
    let (status, _, body) = send(&s.app, Method::POST, "/t0ken/whep", &[SDP], &quirky).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // No candidates at all (a non-trickle client that sends them by PATCH later).
    let bare: String = offer(|c| c)
        .lines()
        .filter(|l| !l.starts_with("a=candidate"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let (status, _, body) = send(&s.app, Method::POST, "/t0ken/whep", &[SDP], &bare).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    s.whep.shutdown().await;
    s.sup.shutdown().await;
}

#[tokio::test]
async fn a_viewer_reads_and_chooses_its_layer_at_the_url_the_answer_links() {
    let hub = Hub::with_layers(HubConfig::default(), 2);
    let s = setup_hub(1, Arc::new(Instant_), hub).await;
    let (status, headers, _) =
        send(&s.app, Method::POST, "/t0ken/whep", &[SDP], &offer(|c| c)).await;
    assert_eq!(status, StatusCode::CREATED);
    let layer_url = format!("{}/layer", h(&headers, "location"));
    let (status, _, body) = send(&s.app, Method::GET, &layer_url, &[], "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["mode"], "connecting", "{body}");
    assert_eq!(v["layers"].as_array().map(Vec::len), Some(2), "{body}");
    // The stream's status lists each WebRTC viewer (id shortened).
    let (_, _, status) = send(&s.app, Method::GET, "/t0ken/status", &[], "").await;
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    let peers = st["webrtc_peers"].as_array().cloned().unwrap_or_default();
    assert_eq!(peers.len(), 1, "{status}");
    assert_eq!(peers[0]["peer"].as_str().map(str::len), Some(8), "{status}");
    assert_eq!(peers[0]["mode"], "connecting", "{status}");
    let json = ("content-type", "application/json");
    for (order, want, says) in [
        (r#"{"layer": 1}"#, StatusCode::NO_CONTENT, ""),
        (r#"{"layer": "auto"}"#, StatusCode::NO_CONTENT, ""),
        (
            r#"{"layer": 5}"#,
            StatusCode::BAD_REQUEST,
            "layers 0..1, not 5",
        ),
        (
            r#"{"layer": "best"}"#,
            StatusCode::BAD_REQUEST,
            "\"auto\" or a number",
        ),
        (r#"{"quality": 1}"#, StatusCode::BAD_REQUEST, "expected"),
    ] {
        let (status, _, body) = send(&s.app, Method::POST, &layer_url, &[json], order).await;
        assert_eq!(status, want, "{order}: {body}");
        assert!(body.contains(says), "{order}: {body}");
    }
    let (status, _, _) = send(&s.app, Method::POST, &layer_url, &[SDP], r#"{"layer":1}"#).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, _) = send(&s.app, Method::GET, "/t0ken/whep/nope/layer", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(
        &s.app,
        Method::GET,
        &layer_url.replace("t0ken", "wrong"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A one-layer stream has nothing to choose.
    let s = setup(1, Arc::new(Instant_)).await;
    let (_, headers, _) = send(&s.app, Method::POST, "/t0ken/whep", &[SDP], &offer(|c| c)).await;
    let layer_url = format!("{}/layer", h(&headers, "location"));
    let (status, _, body) =
        send(&s.app, Method::POST, &layer_url, &[json], r#"{"layer": 0}"#).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}
