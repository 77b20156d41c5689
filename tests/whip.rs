//! `pixelpass serve` as a WHIP relay, end to end on loopback: the real
//! binary, every status code of the WHIP endpoint, then `pixelpass host
//! --publish` into it, a str0m WHEP viewer and an HTTP-TS viewer of the
//! relay decoding what the host sent, the publisher leaving (viewers closed,
//! the stream waits) and coming back (the stream continues).
//!
//! Every wait has a deadline (hang guards, not timing assertions); every
//! process is ended by PID and reaped.

use std::time::{Duration, Instant};

use pixelpass_testkit::client::whep::{WhepClient, WhepOptions};
use pixelpass_testkit::prelude::*;
use pixelpass_testkit::serve::whep::{assert_decodes, drive, whep_viewer, Got};
use pixelpass_testkit::serve::Serve;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::RtcConfig;

const VIEWER: &str = "desk-viewer-token-0123456789";
const SECRET: &str = "desk-publish-secret-0123456789";

fn config() -> String {
    format!("[[stream]]\nid = \"desk\"\ntoken = \"{VIEWER}\"\npublish_token = \"{SECRET}\"\n")
}

/// A publisher's offer as OBS makes it: audio first, then H.264 (High).
fn offer(h264: bool) -> String {
    let mut cfg = RtcConfig::new().clear_codecs();
    if h264 {
        cfg.codec_config().add_h264(96.into(), None, true, 0x640c1f);
    } else {
        cfg.codec_config().add_config(
            96.into(),
            None,
            Codec::Vp8,
            str0m::media::Frequency::NINETY_KHZ,
            None,
            Default::default(),
        );
    }
    cfg.codec_config().enable_opus(true, false);
    let mut rtc = cfg.build(Instant::now());
    rtc.add_local_candidate(str0m::Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = api.apply().unwrap();
    offer.to_sdp_string()
}

fn post(serve: &Serve, id: &str, auth: Option<&str>, ctype: &str, body: &str) -> Response {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", ctype)];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    request_with(
        serve.addr,
        "POST",
        &format!("/whip/{id}"),
        &headers,
        body.as_bytes(),
    )
}

#[test]
fn every_whip_status_code() {
    let serve = Serve::start("whip-codes", &config());
    let good = offer(true);
    let one_line = |r: &Response| {
        let t = r.text();
        assert!(
            t.ends_with('\n') && t.trim().lines().count() == 1,
            "one-line body: {t:?}"
        );
        t
    };

    let r = post(&serve, "desk", None, "application/sdp", &good);
    assert_eq!(r.status, 401, "no bearer");
    assert!(r.header("www-authenticate").is_some());
    assert!(one_line(&r).contains("Bearer"));
    let r = post(
        &serve,
        "desk",
        Some("not-the-secret-at-all"),
        "application/sdp",
        &good,
    );
    assert_eq!(r.status, 401, "wrong bearer");
    one_line(&r);
    let r = post(&serve, "nosuch", Some(SECRET), "application/sdp", &good);
    assert_eq!(r.status, 404, "unknown id");
    one_line(&r);
    let r = post(&serve, "desk", Some(SECRET), "text/plain", &good);
    assert_eq!(r.status, 415);
    one_line(&r);
    let r = post(&serve, "desk", Some(SECRET), "application/sdp", "hello\r\n");
    assert_eq!(r.status, 400, "not SDP");
    one_line(&r);
    let r = post(
        &serve,
        "desk",
        Some(SECRET),
        "application/sdp",
        &offer(false),
    );
    assert_eq!(r.status, 422, "VP8 only: {}", r.text());
    assert!(one_line(&r).contains("H.264"));

    let r = request_with(serve.addr, "OPTIONS", "/whip/desk", &[], b"");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("accept-post"), Some("application/sdp"));
    let r = request_with(serve.addr, "GET", "/whip/desk", &[], b"");
    assert_eq!(r.status, 405);

    let r = post(&serve, "desk", Some(SECRET), "application/sdp", &good);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let location = r.header("location").expect("Location").to_owned();
    assert!(location.starts_with("/whip/desk/"), "{location}");
    assert!(r.header("etag").is_some_and(|e| e.starts_with('"')));
    let link = r.header("link").expect("Link to the player page");
    assert!(
        link.contains(&format!("/{VIEWER}/>")) && link.contains("rel=\"alternate\""),
        "{link}"
    );
    let answer = r.text();
    assert!(answer.contains("a=recvonly"), "{answer}");
    assert!(
        answer.contains("profile-level-id=64"),
        "the answer keeps High: {answer}"
    );
    let (audio, video) = (answer.find("m=audio"), answer.find("m=video"));
    assert!(audio < video, "the answer keeps the offer's order");

    let r = post(&serve, "desk", Some(SECRET), "application/sdp", &good);
    assert_eq!(r.status, 409, "a second publisher");
    one_line(&r);
    let report = serve.report("desk");
    assert_eq!(report["publisher"]["connected"], false, "{report}");
    assert!(report["publisher"]["codecs"][0]
        .as_str()
        .is_some_and(|c| c.contains("64")));
    assert!(
        !report.to_string().contains(SECRET),
        "the secret is never shown"
    );

    let frag = [("Content-Type", "application/trickle-ice-sdpfrag")];
    let r = request_with(
        serve.addr,
        "PATCH",
        &location,
        &frag,
        b"a=end-of-candidates\r\n",
    );
    assert_eq!(r.status, 204);
    let r = request_with(serve.addr, "DELETE", "/whip/desk/not-a-resource", &[], b"");
    assert_eq!(r.status, 404);
    let auth = format!("Bearer {SECRET}");
    let r = request_with(
        serve.addr,
        "DELETE",
        &location,
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request_with(serve.addr, "DELETE", &location, &[], b"");
    assert_eq!(r.status, 404, "gone already");
    // The slot is free again.
    let r = post(&serve, "desk", Some(SECRET), "application/sdp", &good);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        !serve.stderr_text().contains(SECRET),
        "the secret is never logged"
    );
}

/// Wait (≤ `within`) until the report says `cond`.
fn wait_report(
    serve: &Serve,
    within: Duration,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) {
    let t0 = Instant::now();
    loop {
        let r = serve.report("desk");
        if cond(&r) {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "{what}: not within {within:?}: {r}\n{}",
            serve.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_publishes_into_serve_and_viewers_of_the_relay_decode_it() {
    let serve = Serve::start("whip-relay", &config());
    let url = format!("http://{}/whip/desk", serve.addr);
    let publish = |serve: &Serve| {
        let host = Host::builder()
            .arg("--publish")
            .arg(&url)
            .env("PIXELPASS_PUBLISH_TOKEN", SECRET)
            .spawn();
        let page = format!("http://{}/{VIEWER}/", serve.addr);
        assert_eq!(host.banner["watch_url"], page.as_str(), "{}", host.banner);
        host
    };
    let mut host = publish(&serve);
    wait_report(&serve, Duration::from_secs(30), "live", |r| {
        r["state"] == "live"
    });

    let dir = TempDir::new("whip-relay");
    // HTTP-TS from the relay: remuxed once, H.264 + AAC that ffmpeg decodes.
    let mut viewer = Viewer::open(serve.addr, &format!("/{VIEWER}/stream.ts"));
    assert_eq!(viewer.status, 200);
    viewer.read_for(Duration::from_secs(4));
    let checked = check_capture(&dir, "relay.ts", &viewer.body, 30);
    assert!(checked.frames >= 30);
    let streams = ffprobe_streams(&dir.write("relay-probe.ts", &viewer.body));
    assert!(
        streams.contains(&("audio".to_owned(), "aac".to_owned())),
        "{streams:?}"
    );
    drop(viewer);

    // WHEP from the relay: the host's H.264 and Opus, decodable.
    let mut client = whep_viewer(&serve, VIEWER).await;
    let mut got = Got::checked();
    drive(&mut client, &mut got, Duration::from_secs(30), |g| {
        g.video_frames >= 90 && g.audio_packets >= 50
    })
    .await;
    assert_decodes(&dir.0, &got);
    let report = serve.report("desk");
    assert_eq!(report["publisher"]["connected"], true, "{report}");
    assert!(report["publisher"]["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));

    // The publisher leaves (DELETE on stop): WebRTC viewers are closed, the stream waits.
    // (The viewer is driven meanwhile, so the relay's goodbye is not lost
    // behind media in a full socket buffer.)
    let stopping = tokio::task::spawn_blocking(move || {
        host.terminate(Duration::from_secs(10));
        host
    });
    drive(&mut client, &mut got, Duration::from_secs(15), |g| g.closed).await;
    drop(stopping.await.expect("the host stops"));
    wait_report(&serve, Duration::from_secs(15), "waiting again", |r| {
        r["publisher"].is_null() && r["state"] != "live"
    });
    let report = serve.report("desk");
    assert!(
        report["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("DELETE") || m.contains("closed the connection")),
        "{report}"
    );

    // It comes back: the stream continues, a new viewer decodes it.
    let mut host = publish(&serve);
    wait_report(&serve, Duration::from_secs(30), "live again", |r| {
        r["state"] == "live"
    });
    let mut client = whep_viewer(&serve, VIEWER).await;
    let mut again = Got::checked();
    drive(&mut client, &mut again, Duration::from_secs(30), |g| {
        g.video_frames >= 30
    })
    .await;
    let _ = client.delete().await;
    host.terminate(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_public_url_makes_location_and_link() {
    let streams = format!(
        "{}\n[[stream]]\nid = \"lobby\"\ntoken = \"lobby-viewer-token-0123456789\"\n{}autostart = true\n",
        config(),
        pixelpass_testkit::serve::lavfi_input(440)
    );
    let serve = Serve::start_with(
        "whip-public-url",
        &streams,
        &["--public-url", "https://example.org/pixelpass/"],
    );
    let streams = serve.banner["streams"].to_string();
    assert!(
        streams.contains("https://example.org/pixelpass/whip/desk"),
        "printed URLs use it: {streams}"
    );
    let r = post(
        &serve,
        "desk",
        Some(SECRET),
        "application/sdp",
        &offer(true),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let location = r.header("location").expect("Location");
    assert!(location.starts_with("/pixelpass/whip/desk/"), "{location}");
    assert_eq!(
        r.header("link"),
        Some(
            format!(
                "<https://example.org/pixelpass/{VIEWER}/>; rel=\"alternate\"; type=\"text/html\""
            )
            .as_str()
        )
    );
    // Forwarded headers are not trusted: they change nothing.
    let r = request_with(
        serve.addr,
        "POST",
        "/whip/desk",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &format!("Bearer {SECRET}")),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "http"),
        ],
        offer(true).as_bytes(),
    );
    assert_eq!(r.status, 409, "the first session still holds the stream");
    assert!(!r.text().contains("evil"));
    // WHEP's Location carries the proxy's path too.
    serve.wait_live("lobby");
    let client = WhepClient::new(std::net::Ipv4Addr::LOCALHOST.into(), WhepOptions::default())
        .await
        .expect("a WHEP client");
    let r = request_with(
        serve.addr,
        "POST",
        "/lobby-viewer-token-0123456789/whep",
        &[("Content-Type", "application/sdp")],
        client.offer_sdp().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let location = r.header("location").expect("Location");
    assert!(
        location.starts_with("/pixelpass/lobby-viewer-token-0123456789/whep/"),
        "{location}"
    );
}

#[test]
fn a_published_stream_through_the_api_and_a_bad_publish_token() {
    let serve = Serve::start("whip-api", "");
    let (status, body) = serve.json(
        "POST",
        "/api/v1/streams",
        Some(&serde_json::json!({"id": "cam", "token": VIEWER, "publish_token": SECRET})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["urls"]["whip"], "/whip/cam");
    assert!(
        body.get("config")
            .is_some_and(|c| c.get("publish_token").is_none()),
        "{body}"
    );
    let r = post(&serve, "cam", Some(SECRET), "application/sdp", &offer(true));
    assert_eq!(r.status, 201, "{}", r.text());
    let (status, body) = serve.json(
        "POST",
        "/api/v1/streams",
        Some(&serde_json::json!({"id": "short", "publish_token": "tiny"})),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "publish_token");
    let (status, body) = serve.json(
        "POST",
        "/api/v1/streams",
        Some(&serde_json::json!({"id": "both", "publish_token": SECRET, "input": ["-i", "x"]})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not both")),
        "{body}"
    );
}
