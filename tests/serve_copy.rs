//! `serve` without transcoding, and publishers that push: a live MPEG-TS of
//! H.264 + AAC copied to WebRTC and HTTP-TS viewers (`video = "copy"`),
//! `auto` choosing copy or encode from what the input really is, and an
//! RTMP publisher pushing into a listening stream, leaving and coming back.
//!
//! Real FFmpeg on both sides (the publisher is a `Feeder` child, ended by PID
//! and reaped), a str0m WHEP viewer, HTTP-TS decoded with ffmpeg.

use pixelpass_testkit::prelude as common;
use pixelpass_testkit::serve as serve_support;

use std::time::Duration;

use serde_json::Value;

use common::{TempDir, Viewer};
use serve_support::feeder::{free_tcp_port, free_udp_port, tcp_listening, udp_bound, Feeder};
use serve_support::whep::{assert_decodes, drive, whep_viewer, Got};
use serve_support::{assert_http_ts_decodes, Serve};

fn udp_stream(id: &str, port: u16, video: &str) -> String {
    format!(
        "[[stream]]\nid = \"{id}\"\ntoken = \"watch-{id}-token\"\nautostart = true\nvideo = \"{video}\"\n\
         input = [\"-f\", \"mpegts\", \"-i\", \"udp://127.0.0.1:{port}?overrun_nonfatal=1&fifo_size=50000\"]\n"
    )
}

fn command(report: &Value) -> Vec<String> {
    report["command"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_stream_sends_the_inputs_h264_and_aac_to_every_viewer() {
    let port = free_udp_port();
    let _feed = Feeder::udp_ts(port, 0);
    let serve = Serve::start("serve-copy", &udp_stream("cam", port, "copy"));
    let report = serve.wait_live("cam");
    assert_eq!(report["video"]["mode"], "copy", "{report:#}");
    let cmd = command(&report);
    assert!(
        cmd.windows(2).any(|w| w == ["-c:v", "copy"]) && !cmd.iter().any(|a| a == "libx264"),
        "no video encode: {cmd:?}"
    );
    // Not probed (the start does not wait for it): AAC is encoded for the TS.
    assert!(cmd.windows(2).any(|w| w == ["-c:a:1", "aac"]), "{cmd:?}");

    let dir = TempDir::new("serve-copy");
    serve.wait_report("cam", Duration::from_secs(10), "SPS seen", |r| {
        r["video"]["profile_level_id"].is_string()
    });
    let mut client = whep_viewer(&serve, "watch-cam-token").await;
    // The answer states the profile the copied H.264 has (the feeder's High).
    let answer = client.answer_sdp().unwrap_or_default().to_owned();
    assert!(answer.contains("profile-level-id=64"), "{answer}");
    let mut got = Got::checked();
    drive(&mut client, &mut got, Duration::from_secs(30), |g| {
        g.video_frames >= 90 && g.opus.len() >= 50
    })
    .await;
    assert_decodes(&dir.0, &got);
    let _ = client.delete().await;
    assert_http_ts_decodes(&serve, &dir, "watch-cam-token", Duration::from_secs(3));

    // What the copied video is, measured on its RTP: the feeder's High
    // profile, a keyframe every 30 frames at 30 fps.
    let r = serve.wait_report("cam", Duration::from_secs(10), "GOP measured", |r| {
        r["video"]["gop_seconds"].is_f64()
    });
    assert!(
        r["video"]["profile_level_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("64")),
        "{r:#}"
    );
    assert_eq!(r["video"]["gop_seconds"], 1.0, "{r:#}");
    assert!(
        r["video"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("no effect")),
        "{r:#}"
    );
}

#[test]
fn auto_copies_h264_without_b_frames_and_encodes_an_input_with_them() {
    let (plain, bframes) = (free_udp_port(), free_udp_port());
    let _feeds = (Feeder::udp_ts(plain, 0), Feeder::udp_ts(bframes, 2));
    let streams = format!(
        "{}\n{}",
        udp_stream("plain", plain, "auto"),
        udp_stream("bframes", bframes, "auto")
    );
    let serve = Serve::start("serve-auto", &streams);
    let r = serve.wait_live("plain");
    assert_eq!(r["video"]["mode"], "copy", "{r:#}");
    assert_eq!(r["video"]["why"], "H.264 High, no B-frames", "{r:#}");
    let r = serve.wait_live("bframes");
    assert_eq!(r["video"]["mode"], "encode", "{r:#}");
    let why = r["video"]["why"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("input has B-frames (") && why.ends_with("H.264 High)"),
        "{why}"
    );
    assert!(command(&r).iter().any(|a| a == "libx264"), "{r:#}");
    // The probed copy found AAC: the TS leg copies it (Opus for WebRTC is the one encode).
    let plain = command(&serve.report("plain"));
    assert!(
        plain.windows(2).any(|w| w == ["-c:a:1", "copy"]),
        "{plain:?}"
    );
    // The log says it too, with how long deciding took.
    assert!(
        r["log"]
            .to_string()
            .contains("pixelpass: video: encode (input has B-frames"),
        "{r:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmp_publisher_pushes_leaves_and_comes_back_without_a_restart_storm() {
    let port = free_tcp_port();
    let key = "k3y-0f-the-publisher";
    let url = format!("rtmp://127.0.0.1:{port}/live/{key}");
    let streams = format!(
        "[[stream]]\nid = \"obs\"\ntoken = \"watch-obs-token\"\nautostart = true\nvideo = \"copy\"\n\
         input = [\"-listen\", \"1\", \"-i\", \"{url}\"]\n"
    );
    let serve = Serve::start("serve-rtmp", &streams);
    let listen = format!("rtmp://127.0.0.1:{port}");
    assert_eq!(
        serve.banner["streams"][0]["listen"],
        listen.as_str(),
        "{}",
        serve.banner
    );
    assert!(
        !serve.banner.to_string().contains(key),
        "the stream key is a secret"
    );
    // No publisher yet: FFmpeg listens, the stream waits (as long as it takes).
    let waiting = |what: &str| {
        serve.wait_report("obs", Duration::from_secs(20), what, |r| {
            r["waiting_for_publisher"] == listen.as_str()
                && r["pid"].is_u64()
                && tcp_listening(port)
        })
    };
    let r = waiting("listening");
    assert_eq!(r["state"], "starting", "{r:#}");
    assert_eq!(r["restarts"], 0);

    let mut feed = Feeder::rtmp(&url);
    let r = serve.wait_live("obs");
    assert!(r["waiting_for_publisher"].is_null(), "{r:#}");
    let dir = TempDir::new("serve-rtmp");
    // An HTTP-TS viewer stays connected through the publisher's absence.
    let mut staying = Viewer::open(serve.addr, "/watch-obs-token/stream.ts");
    assert_eq!(staying.status, 200);
    staying.read_for(Duration::from_secs(2));
    let mut client = whep_viewer(&serve, "watch-obs-token").await;
    let mut got = Got::checked();
    drive(&mut client, &mut got, Duration::from_secs(30), |g| {
        g.video_frames >= 45 && g.opus.len() >= 25
    })
    .await;
    assert_decodes(&dir.0, &got);

    // The publisher leaves: one run ends ("the publisher left"), FFmpeg
    // listens again at once.
    feed.stop(Duration::from_secs(5));
    let r = waiting("listening again");
    assert_eq!(r["restarts"], 1, "{r:#}");
    assert!(
        r["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the publisher left rtmp://127.0.0.1:")),
        "{r:#}"
    );
    // Nobody comes for a while: no restart storm.
    staying.read_for(Duration::from_secs(4));
    let r = serve.report("obs");
    assert_eq!(
        r["restarts"], 1,
        "a listening stream waits, it does not crash-loop: {r:#}"
    );
    assert_eq!(r["waiting_for_publisher"], listen.as_str(), "{r:#}");

    // It comes back: viewers resume.
    let before = staying.body.len();
    let _feed = Feeder::rtmp(&url);
    serve.wait_live("obs");
    staying.read_for(Duration::from_secs(3));
    assert!(
        staying.body.len() > before + 100_000,
        "the connected HTTP-TS viewer resumed: {} → {} bytes",
        before,
        staying.body.len()
    );
    assert_http_ts_decodes(&serve, &dir, "watch-obs-token", Duration::from_secs(3));
    let mut client = whep_viewer(&serve, "watch-obs-token").await;
    let mut again = Got::checked();
    drive(&mut client, &mut again, Duration::from_secs(30), |g| {
        g.video_frames >= 45
    })
    .await;
    let _ = client.delete().await;
    assert_eq!(serve.report("obs")["restarts"], 1);
    assert!(
        !serve.stderr_text().contains(key),
        "the key stays out of the logs"
    );
    assert!(!serve.report("obs")["log"].to_string().contains(key));
}

#[test]
fn an_srt_publisher_with_a_passphrase_pushes_into_a_listening_stream() {
    let port = free_udp_port();
    let secret = "srt-passphrase-0123456789";
    let streams = format!(
        "[[stream]]\nid = \"field\"\ntoken = \"watch-field-token\"\nautostart = true\n\
         input = [\"-i\", \"srt://127.0.0.1:{port}?mode=listener&passphrase={secret}\"]\n"
    );
    let serve = Serve::start("serve-srt", &streams);
    let listen = format!("srt://127.0.0.1:{port}");
    assert_eq!(
        serve.banner["streams"][0]["listen"],
        listen.as_str(),
        "{}",
        serve.banner
    );
    let r = serve.wait_report("field", Duration::from_secs(20), "listening", |r| {
        r["waiting_for_publisher"] == listen.as_str() && udp_bound(port)
    });
    // auto cannot look at a publisher that has not come: it encodes, and says why.
    let why = r["video"]["why"].as_str().unwrap_or_default();
    assert!(
        r["video"]["mode"] == "encode" && why.contains("waits for a publisher"),
        "{r:#}"
    );
    let mut feed = Feeder::srt(&format!("srt://127.0.0.1:{port}?passphrase={secret}"));
    serve.wait_live("field");
    let dir = TempDir::new("serve-srt");
    assert_http_ts_decodes(&serve, &dir, "watch-field-token", Duration::from_secs(3));
    feed.stop(Duration::from_secs(5));
    let r = serve.wait_report("field", Duration::from_secs(30), "listening again", |r| {
        r["waiting_for_publisher"] == listen.as_str() && r["pid"].is_u64()
    });
    assert_eq!(r["restarts"], 1, "{r:#}");
    let everything = format!("{r}\n{}", serve.stderr_text());
    assert!(
        !everything.contains(secret),
        "the passphrase leaked:\n{everything}"
    );
}
