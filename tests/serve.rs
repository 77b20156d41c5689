//! `pixelpass serve` end to end: the real binary with real FFmpeg children
//! (lavfi test sources), a str0m WHEP client, HTTP-TS viewers decoded with
//! ffmpeg, the JSON API, and the processes checked by PID in /proc.
//!
//! Everything binds 127.0.0.1 with kernel-chosen ports; every wait has a
//! deadline; the server is ended by its PID and reaped (its FFmpeg children
//! die with it: process group + parent-death signal, which one test checks).

use pixelpass_testkit::prelude as common;
use pixelpass_testkit::serve as serve_support;

use std::time::{Duration, Instant};

use serde_json::json;

use common::{ffprobe_streams, run_binary, TempDir, Viewer};
use serve_support::whep::{assert_decodes, drive, events, whep_viewer, Got};
use serve_support::{
    assert_http_ts_decodes, children_of, lavfi_input, wait_gone, Serve, API_TOKEN,
};

// ───────────────────────────────── the tests ─────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_config_streams_one_over_whep_one_over_http_ts() {
    let streams = format!(
        "[[stream]]\nid = \"one\"\ntoken = \"watch-one-token\"\n{}autostart = true\nwebrtc = {{ enabled = true, video_pt = 102, audio_pt = 111 }}\n\n\
         [[stream]]\nid = \"two\"\ntoken = \"watch-two-token\"\n{}autostart = true\n",
        lavfi_input(440),
        lavfi_input(660)
    );
    let serve = Serve::start("two-streams", &streams);
    assert_eq!(serve.banner["streams"].as_array().map(Vec::len), Some(2));
    serve.wait_live("one");
    serve.wait_live("two");

    // Stream 1 over WHEP: a full ICE/DTLS/SRTP exchange, then H.264 + Opus that decode.
    let mut client = whep_viewer(&serve, "watch-one-token").await;
    let mut got = Got::default();
    drive(&mut client, &mut got, Duration::from_secs(20), |g| {
        g.video_frames >= 45 && g.opus.len() >= 50
    })
    .await;
    let dir = TempDir::new("two-streams-whep");
    assert_decodes(&dir.0, &got);
    let report = serve.report("one");
    assert_eq!(report["viewers"]["whep"], 1, "{report}");
    assert!(report["bytes_out"]["whep"].as_u64().unwrap() > 0);
    assert_eq!(
        report["rtp"]["refused"], 0,
        "nothing but FFmpeg's RTP reached the hub"
    );

    // Stream 2 over HTTP-TS: H.264 + AAC that decode.
    assert_http_ts_decodes(&serve, &dir, "watch-two-token", Duration::from_secs(3));
    // The wrong stream's token is a plain 404; so is a made-up one.
    assert_eq!(
        common::request(serve.addr, "GET", "/watch-nothing-x/stream.ts").status,
        404
    );
    let _ = client.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_ffmpeg_closes_peers_before_sources_and_reconnects() {
    let streams = format!(
        "[[stream]]\nid = \"one\"\ntoken = \"watch-one-token\"\n{}autostart = true\nreconnect = true\nreconnect_delay_seconds = 1\n\
         video_map = \"0:v:0\"\naudio_map = \"1:a:0\"\n",
        lavfi_input(440)
    );
    let serve = Serve::start("kill-9", &streams);
    let before = serve.wait_live("one");
    let pid = before["pid"].as_u64().unwrap();
    // With the maps given, FFmpeg encodes H.264 once and feeds every leg through `tee`.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(argv.iter().filter(|a| **a == b"libx264").count(), 1);
    assert!(argv.iter().any(|a| *a == b"tee"));
    let mut client = whep_viewer(&serve, "watch-one-token").await;
    let mut got = Got::default();
    drive(&mut client, &mut got, Duration::from_secs(20), |g| {
        g.video_frames >= 5
    })
    .await;
    // An HTTP-TS viewer stays across the restart.
    let mut viewer = Viewer::open(serve.addr, "/watch-one-token/stream.ts");
    viewer.read_for(Duration::from_millis(500));
    let before_kill = viewer.body.len();
    assert!(before_kill > 0);

    // SAFETY: SIGKILL of the FFmpeg the report names, which the server started for this test.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let killed_at = Instant::now();
    let after = serve.wait_report("one", Duration::from_secs(20), "a new run", |r| {
        r["state"] == "live" && r["pid"].as_u64().is_some_and(|p| p != pid)
    });
    println!(
        "restart after kill -9: {} ms",
        killed_at.elapsed().as_millis()
    );
    assert_eq!(after["restarts"], 1, "{after}");
    let ev = events(&after);
    let at = |prefix: &str| ev.iter().position(|e| e.starts_with(prefix));
    let failed = at(&format!(
        "failed: ffmpeg (pid {pid}) was killed by signal 9"
    ));
    let peers_closed = at("teardown: whep done");
    let sources_closed = at("producer stopped");
    let restarted = ev.iter().rposition(|e| e == "live");
    assert!(failed.is_some(), "{ev:?}");
    assert!(
        failed < peers_closed && peers_closed < sources_closed && sources_closed < restarted,
        "the order must be: failure, WHEP peers closed, RTP sources closed, live again: {ev:?}"
    );
    assert!(
        after["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "pixelpass: RTP sources closed"),
        "{after}"
    );
    assert_eq!(after["viewers"]["whep"], 0, "the old peer is gone: {after}");
    // The old peer was told (DTLS close_notify) rather than left to time out.
    drive(&mut client, &mut got, Duration::from_secs(5), |g| g.closed).await;

    // A new WHEP viewer works again.
    let mut second = whep_viewer(&serve, "watch-one-token").await;
    let mut got2 = Got::default();
    drive(&mut second, &mut got2, Duration::from_secs(20), |g| {
        g.video_frames >= 30 && g.opus.len() >= 25
    })
    .await;
    let dir = TempDir::new("kill-9");
    assert_decodes(&dir.0, &got2);

    // The HTTP-TS viewer was not dropped: it resumed on the new run.
    viewer.read_for(Duration::from_secs(2));
    assert!(
        !viewer.eof,
        "the HTTP-TS viewer stays connected across a restart"
    );
    assert!(
        viewer.body.len() > before_kill + 20_000,
        "and gets the new run's media"
    );
    let ts = dir.0.join("across.ts");
    std::fs::write(&ts, &viewer.body).unwrap();
    assert!(ffprobe_streams(&ts).iter().any(|(_, c)| c == "h264"));
    let _ = second.delete().await;
}

#[test]
fn the_api_answers_every_error_and_refuses_a_double_start() {
    let serve = Serve::start("api", "");
    assert_eq!(serve.banner["streams"], json!([]));
    assert_eq!(common::request(serve.addr, "GET", "/healthz").status, 200);

    // 401 first: no token, a wrong token (also on metrics and unknown ids).
    for (token, path) in [
        (None, "/api/v1/streams"),
        (Some("wrong-token-123"), "/api/v1/streams"),
        (None, "/api/v1/streams/nope/report"),
        (None, "/metrics"),
    ] {
        let r = serve.api_as(token, "GET", path, None);
        assert_eq!(r.status, 401, "{path} with {token:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"pixelpass\"")
        );
    }
    // 400: malformed JSON, a missing field, an invalid field, an unknown field: each named.
    let r = serve.api_as(
        Some(API_TOKEN),
        "POST",
        "/api/v1/streams",
        Some("{\"id\": "),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("malformed JSON"), "{}", r.text());
    for (body, field) in [
        (json!({"id": "a"}), "input"),
        (
            json!({"id": "a", "input": ["-i", "x"], "webrtc": {"video_pt": 5}}),
            "webrtc.video_pt",
        ),
        (
            json!({"id": "a", "input": ["-i", "x"], "webrtc": {"audio_pt": "x"}}),
            "webrtc.audio_pt",
        ),
        (json!({"id": "a b", "input": ["-i", "x"]}), "id"),
        (
            json!({"id": "a", "input": ["-i", "x"], "colour": 1}),
            "colour",
        ),
        (
            json!({"id": "a", "input": ["-i", "x"], "reconnect_delay_seconds": -1}),
            "reconnect_delay_seconds",
        ),
    ] {
        let (status, v) = serve.json("POST", "/api/v1/streams", Some(&body));
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{body} → {v}"
        );
    }
    // 404: unknown ids, everywhere.
    for (method, path) in [
        ("GET", "/api/v1/streams/nope"),
        ("DELETE", "/api/v1/streams/nope"),
        ("GET", "/api/v1/streams/nope/report"),
    ] {
        assert_eq!(serve.api(method, path, None).status, 404, "{method} {path}");
    }
    let cfg = |id: &str| {
        json!({"id": id, "autostart": true, "video_bitrate_kbps": 500,
               "input": ["-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine"]})
    };
    assert_eq!(
        serve
            .json("PUT", "/api/v1/streams/nope", Some(&cfg("nope")))
            .0,
        404
    );
    assert_eq!(
        serve
            .json(
                "PUT",
                "/api/v1/streams/nope/command",
                Some(&json!({"command": "start"}))
            )
            .0,
        404
    );

    // Create: 201 with a random token; a duplicate id is 409.
    let (status, created) = serve.json("POST", "/api/v1/streams", Some(&cfg("lobby")));
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 22, "a random 128-bit token: {token}");
    assert_eq!(created["urls"]["whep"], format!("/{token}/whep"));
    // Created with autostart: starting at once (never "idle" or "finished" first).
    assert_eq!(
        (created["state"].as_str(), created["order"].as_str()),
        (Some("starting"), Some("start")),
        "{created}"
    );
    let (status, v) = serve.json("POST", "/api/v1/streams", Some(&cfg("lobby")));
    assert_eq!(status, 409, "{v}");
    let (status, list) = serve.json("GET", "/api/v1/streams", None);
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)));

    // Double start: refused, and nothing started twice.
    let running = serve.wait_live("lobby");
    let ffmpeg = running["pid"].as_u64().unwrap();
    let (status, v) = serve.json(
        "PUT",
        "/api/v1/streams/lobby/command",
        Some(&json!({"command": "start"})),
    );
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("already running"),
        "{v}"
    );
    let (status, v) = serve.json(
        "PUT",
        "/api/v1/streams/lobby/command",
        Some(&json!({"command": "jump"})),
    );
    assert_eq!((status, v["field"].as_str()), (400, Some("command")), "{v}");
    std::thread::sleep(Duration::from_millis(500));
    let still = serve.report("lobby");
    assert_eq!(
        still["pid"].as_u64(),
        Some(ffmpeg),
        "the same FFmpeg runs: {still}"
    );
    assert_eq!(still["restarts"], 0);
    assert_eq!(
        children_of(serve.pid()),
        vec![ffmpeg as u32],
        "one FFmpeg child, no leak"
    );

    // Metrics: Prometheus text with the stream's state, RTP in and FFmpeg's fps.
    let m = serve.api("GET", "/metrics", None);
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(
        text.contains("pixelpass_stream_state{stream=\"lobby\",state=\"live\"} 1"),
        "{text}"
    );
    let rtp_in = text
        .lines()
        .find(|l| {
            l.starts_with("pixelpass_stream_rtp_packets_in_total{stream=\"lobby\",track=\"video\"}")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(rtp_in > 0, "{text}");
    serve.wait_report("lobby", Duration::from_secs(10), "a progress report", |r| {
        r["progress"]["fps"].as_f64().is_some_and(|f| f > 0.0)
    });

    // Stop, then start again (a stopped stream starts fine).
    let (status, _) = serve.json(
        "PUT",
        "/api/v1/streams/lobby/command",
        Some(&json!({"command": "stop"})),
    );
    assert_eq!(status, 200);
    serve.wait_report("lobby", Duration::from_secs(10), "idle", |r| {
        r["state"] == "idle" && r["pid"].is_null()
    });
    assert!(
        wait_gone(ffmpeg, Duration::from_secs(5)),
        "stop ends FFmpeg {ffmpeg}"
    );
    let (status, _) = serve.json(
        "PUT",
        "/api/v1/streams/lobby/command",
        Some(&json!({"command": "start"})),
    );
    assert_eq!(status, 200);
    serve.wait_live("lobby");

    // A stream whose FFmpeg cannot start (no such filter) and that does not
    // reconnect: failed, and its last error says it was a failed start.
    let mut broken = cfg("broken");
    broken["input"] = json!(["-f", "lavfi", "-i", "no_such_filter_pixelpass"]);
    let (status, v) = serve.json("POST", "/api/v1/streams", Some(&broken));
    assert_eq!(status, 201, "{v}");
    let failed = serve.wait_report("broken", Duration::from_secs(20), "failed", |r| {
        r["state"] == "failed"
    });
    assert_eq!(
        failed["order"], "stop",
        "a final failure turns the order to stop: {failed}"
    );
    assert_eq!(failed["last_error"]["kind"], "start_failed", "{failed:#}");
    assert!(
        failed["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("ffmpeg could not start: ")),
        "{failed:#}"
    );
    assert_eq!(serve.json("DELETE", "/api/v1/streams/broken", None).0, 200);

    // Replace: the token stays, the id cannot change.
    let (status, v) = serve.json(
        "PUT",
        "/api/v1/streams/lobby",
        Some(&json!({"id": "other", "input": ["-i", "x"]})),
    );
    assert_eq!((status, v["field"].as_str()), (400, Some("id")), "{v}");
    let mut new_cfg = cfg("lobby");
    new_cfg["video_bitrate_kbps"] = json!(400);
    let (status, v) = serve.json("PUT", "/api/v1/streams/lobby", Some(&new_cfg));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token"], token.as_str());
    assert_eq!(v["config"]["video_bitrate_kbps"], 400);
    let replaced = serve.wait_live("lobby")["pid"].as_u64().unwrap();

    // Delete: FFmpeg ends, the viewer URL is a 404, the id is unknown.
    let (status, _) = serve.json("DELETE", "/api/v1/streams/lobby", None);
    assert_eq!(status, 200);
    assert!(wait_gone(replaced, Duration::from_secs(5)));
    assert_eq!(
        common::request(serve.addr, "GET", &format!("/{token}/stream.ts")).status,
        404
    );
    assert_eq!(serve.api("GET", "/api/v1/streams/lobby", None).status, 404);
    assert!(children_of(serve.pid()).is_empty());
}

#[test]
fn sigterm_leaves_no_ffmpeg_behind() {
    let streams = format!(
        "[[stream]]\nid = \"a\"\n{}autostart = true\n\n[[stream]]\nid = \"b\"\n{}autostart = true\n",
        lavfi_input(440),
        lavfi_input(550)
    );
    let mut serve = Serve::start("sigterm", &streams);
    let pids: Vec<u64> = ["a", "b"]
        .iter()
        .map(|id| serve.wait_live(id)["pid"].as_u64().unwrap())
        .collect();
    let mut children = children_of(serve.pid());
    children.sort();
    let mut want: Vec<u32> = pids.iter().map(|p| *p as u32).collect();
    want.sort();
    assert_eq!(
        children, want,
        "the reports name the server's FFmpeg children"
    );
    let t0 = Instant::now();
    let status = serve.terminate(Duration::from_secs(6));
    assert!(status.success(), "{status}");
    println!("SIGTERM to exit: {} ms", t0.elapsed().as_millis());
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(2)),
            "FFmpeg {pid} outlived the server"
        );
    }
}

#[test]
fn a_killed_server_takes_its_ffmpeg_with_it() {
    let streams = format!(
        "[[stream]]\nid = \"a\"\n{}autostart = true\n",
        lavfi_input(440)
    );
    let mut serve = Serve::start("sigkill", &streams);
    let pid = serve.wait_live("a")["pid"].as_u64().unwrap();
    // The server's own crash: SIGKILL, no chance to clean up. The parent-death signal does it.
    let mut child = serve.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(3)),
        "FFmpeg {pid} outlived its killed server"
    );
}

#[test]
fn on_demand_runs_ffmpeg_only_while_watched_and_lingers() {
    let streams = format!(
        "[[stream]]\nid = \"lazy\"\ntoken = \"watch-lazy-token\"\n{}on_demand = true\nlinger = 2\n",
        lavfi_input(440)
    );
    let serve = Serve::start("on-demand", &streams);
    std::thread::sleep(Duration::from_secs(1));
    let idle = serve.report("lazy");
    assert_eq!(
        (idle["state"].as_str(), idle["pid"].as_u64()),
        (Some("idle"), None),
        "{idle}"
    );
    assert!(
        children_of(serve.pid()).is_empty(),
        "no FFmpeg before the first viewer"
    );

    let mut viewer = Viewer::open(serve.addr, "/watch-lazy-token/stream.ts");
    assert_eq!(viewer.status, 200);
    viewer.read_for(Duration::from_secs(1));
    assert!(viewer.body.len() > 10_000);
    let pid = serve.report("lazy")["pid"]
        .as_u64()
        .expect("FFmpeg runs while watched");
    drop(viewer);
    let left = Instant::now();

    // The same FFmpeg lingers until it stops: no check at a wall-clock
    // moment ("still there at 1 s"), which a starved machine can oversleep.
    // The linger's exact length is the supervisor's paused-clock unit test;
    // here only a lower bound that a slow machine cannot break (the server
    // sees the viewer leave after we did, then waits its 2 s).
    let stopped = serve.wait_report(
        "lazy",
        Duration::from_secs(10),
        "stopped after linger",
        |r| r["pid"].is_null() && r["state"] == "idle",
    );
    let stopped_after = left.elapsed();
    println!(
        "on_demand stop after the last viewer: {} ms (linger 2 s)",
        stopped_after.as_millis()
    );
    assert!(
        stopped_after >= Duration::from_millis(1900),
        "stopped {stopped_after:?} after the last viewer left, before its 2 s linger"
    );
    assert_eq!(
        stopped["restarts"].as_u64(),
        Some(0),
        "one run from the first viewer to the linger's end: {stopped}"
    );
    assert!(wait_gone(pid, Duration::from_secs(3)));
    assert!(children_of(serve.pid()).is_empty());
}

#[test]
fn a_bad_config_names_the_file_line_and_key() {
    let dir = TempDir::new("bad-config");
    let path = dir.0.join("pixelpass.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n\n[[stream]]\nid = \"lobby\"\ninput = [\"-i\", \"x\"]\nwebrtc = { enabled = true, video_pt = 5 }\n",
    )
    .unwrap();
    let out = run_binary(
        &["serve", "--config", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(!out.success());
    assert!(
        out.stderr.contains("pixelpass.toml:6:") && out.stderr.contains("webrtc.video_pt"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_stream_whose_rtp_stops_is_restarted_after_its_stale_timeout() {
    // The video stops after 1.5 s while FFmpeg keeps running (the select
    // filter drops every later frame): no RTP, so the run is stale.
    let streams = "[[stream]]\nid = \"stuck\"\n\
        input = [\"-re\", \"-f\", \"lavfi\", \"-i\", \"testsrc2=size=320x240:rate=30,select='lt(t,1.5)'\"]\n\
        audio = false\nhttp_ts = false\nautostart = true\nreconnect = true\nreconnect_delay_seconds = 0.5\nstale_timeout_seconds = 1\n";
    let serve = Serve::start("stale", streams);
    let first = serve.wait_live("stuck")["pid"].as_u64().unwrap();
    let r = serve.wait_report(
        "stuck",
        Duration::from_secs(20),
        "a restart for staleness",
        |r| r["restarts"].as_u64() >= Some(1),
    );
    assert!(
        events(&r).iter().any(|e| e.starts_with(&format!(
            "failed: no media from ffmpeg (pid {first}) for 1 s"
        ))),
        "{r:#}"
    );
    assert!(
        wait_gone(first, Duration::from_secs(5)),
        "the stale FFmpeg was ended"
    );
}
