//! LL-HLS (CMAF) against real clients: ffmpeg decodes the playlist of a
//! host, of a `serve` FFmpeg stream and of a stream published over WHIP;
//! blocking playlist reload holds and refuses as the spec says; hls.js plays
//! it in headless Chromium; nginx (Debian's, as a caching proxy with request
//! collapsing) carries 50 following clients with at most two origin requests
//! per part or segment; `host --record` files decode, even after `kill -9`.
//!
//! Every server, proxy and browser is a child started here on loopback and
//! killed by PID when the test ends.

use pixelpass_testkit::hls::{follow, Followed, Nginx, Playlist};
use pixelpass_testkit::prelude as common;
use pixelpass_testkit::serve::{lavfi_input, Serve};

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

fn hls_base(token: &str) -> String {
    format!("/{token}/hls/")
}

/// ffmpeg reads `index.m3u8` for 6 s of media: (video frames, audio frames, its errors).
fn ffmpeg_reads(addr: SocketAddr, token: &str) -> (usize, usize, String) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-v", "error", "-i"])
        .arg(format!("http://{addr}{}index.m3u8", hls_base(token)))
        .args([
            "-t", "6", "-map", "0:v", "-map", "0:a", "-f", "framecrc", "-",
        ]);
    let out = run_tool(cmd, Duration::from_secs(90));
    let frames = |stream: &str| {
        out.stdout
            .lines()
            .filter(|l| !l.starts_with('#') && l.split(',').next().map(str::trim) == Some(stream))
            .count()
    };
    let mut errors = out.stderr.trim().to_owned();
    if !out.success() {
        errors.push_str(&format!("\n(ffmpeg exit status {:?})", out.status));
    }
    (frames("0"), frames("1"), errors)
}

#[test]
fn ffmpeg_decodes_six_seconds_of_the_hosts_ll_hls_with_no_errors() {
    let host = Host::spawn_default();
    let (video, audio, errors) = ffmpeg_reads(host.addr, &host.token);
    assert!(
        errors.is_empty(),
        "ffmpeg: {errors}\nhost:\n{}",
        host.stderr_text()
    );
    // 6 s at 30 frames/s; at least 5 s of it.
    assert!(video >= 150, "{video} video frames decoded");
    // 48 kHz AAC: 46.9 frames/s.
    assert!(audio >= 200, "{audio} audio frames decoded");
}

#[test]
fn ffmpeg_decodes_a_serve_ffmpeg_streams_ll_hls() {
    let streams = format!(
        "[[stream]]\nid = \"lobby\"\ntoken = \"watch-lobby-hls\"\n{}autostart = true\n",
        lavfi_input(440)
    );
    let serve = Serve::start("hls-serve", &streams);
    serve.wait_live("lobby");
    let (video, audio, errors) = ffmpeg_reads(serve.addr, "watch-lobby-hls");
    assert!(
        errors.is_empty(),
        "ffmpeg: {errors}\nserve:\n{}",
        serve.stderr_text()
    );
    assert!(video >= 150, "{video} video frames decoded");
    assert!(audio >= 150, "{audio} audio frames decoded");
    // The metrics count the HLS client (one address) and the bytes it got;
    // the segmenter's own hub subscription is no HTTP-TS viewer.
    let m = serve.api("GET", "/metrics", None).text();
    for line in [
        "pixelpass_stream_viewers{stream=\"lobby\",kind=\"hls\"} 1",
        "pixelpass_stream_viewers{stream=\"lobby\",kind=\"http\"} 0",
    ] {
        assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
    }
    let hls_bytes = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("pixelpass_stream_bytes_out_total{stream=\"lobby\",kind=\"hls\"} ")
        })
        .and_then(|n| n.parse::<u64>().ok());
    assert!(hls_bytes.is_some_and(|n| n > 100_000), "{m}");
}

#[test]
fn a_blocking_reload_is_held_until_its_part_and_too_far_ahead_is_a_400() {
    let host = Host::spawn_default();
    let base = hls_base(&host.token);
    let bare = host.get(&format!("{base}index.m3u8"));
    assert_eq!(bare.status, 200, "{}", bare.text());
    assert_eq!(
        bare.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(bare.header("cache-control"), Some("public, max-age=1"));
    let pl = Playlist::parse(&bare.text());
    assert!(
        pl.text
            .contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK="),
        "{}",
        pl.text
    );
    assert!(
        !pl.segments.is_empty() && !pl.parts.is_empty(),
        "{}",
        pl.text
    );

    // The program date-time is the wall clock of the newest segment: seconds old at most.
    let newest = pl.program_date_times.last().expect("a program date-time");
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let pdt_s = Command::new("date")
        .args(["-u", "-d", newest, "+%s"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("date cannot read {newest:?}"));
    assert!(now_s.abs_diff(pdt_s) < 30, "PDT {newest} vs now {now_s}");

    // Ask for the hinted part: the answer lists it.
    let (msn, part, uri) = pl.hint.clone().expect("a preload hint");
    let held = host.get(&format!("{base}index.m3u8?_HLS_msn={msn}&_HLS_part={part}"));
    assert_eq!(held.status, 200, "{}", held.text());
    assert_eq!(held.header("cache-control"), Some("public, max-age=6"));
    let after = Playlist::parse(&held.text());
    assert!(
        after.parts.iter().any(|p| p.2 == uri),
        "{uri} not listed in\n{}",
        after.text
    );

    // The next hinted part, asked at once: it is being written and comes chunked.
    let (_, _, next) = after.hint.clone().expect("a preload hint");
    let p = host.get(&format!("{base}{next}"));
    assert_eq!(p.status, 200);
    assert_eq!(p.body.get(4..8), Some(&b"moof"[..]));
    assert_eq!(p.header("content-type"), Some("video/mp4"));
    assert_eq!(
        p.header("cache-control"),
        Some("public, max-age=86400, immutable")
    );
    // A whole part again: its ETag gets a 304.
    let whole = host.get(&format!("{base}{uri}"));
    let etag = whole.header("etag").expect("an ETag").to_owned();
    assert!(whole.header("last-modified").is_some());
    let again = request_with(
        host.addr,
        "GET",
        &format!("{base}{uri}"),
        &[("If-None-Match", &etag)],
        b"",
    );
    assert_eq!(again.status, 304, "{:?}", again.headers);

    // Too far ahead: three segments past the last, or a part far past it.
    let last = after.hint.as_ref().map_or(msn, |h| h.0);
    for q in [
        format!("_HLS_msn={}", last + 3),
        format!("_HLS_msn={last}&_HLS_part=40"),
    ] {
        let r = host.get(&format!("{base}index.m3u8?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.text());
    }
    assert_eq!(
        host.get(&format!("{base}index.m3u8?_HLS_part=1")).status,
        400
    );
    // A part that left the window (or never was) is a 404.
    assert_eq!(host.get(&format!("{base}part-1-0.m4s")).status, 404);
    // Numbers at their limits are answered, not a crash.
    let max = format!("{}", u64::MAX);
    assert_eq!(host.get(&format!("{base}part-{max}-{max}.m4s")).status, 404);
    assert_eq!(host.get(&format!("{base}seg-{max}.m4s")).status, 404);
    let r = host.get(&format!("{base}index.m3u8?_HLS_msn={max}&_HLS_part={max}"));
    assert_eq!(r.status, 400, "{}", r.text());

    // One client address: one HLS client, one viewer slot.
    let st = host.status();
    assert_eq!(st["hls"]["clients"], 1, "{st}");
    assert_eq!(st["viewers"], 1, "{st}");
    assert_eq!(
        st["layers"][0]["http_viewers"], 0,
        "the segmenter is no HTTP-TS viewer: {st}"
    );
}

#[test]
fn an_hls_client_takes_a_viewer_slot() {
    let host = Host::builder().max_viewers(1).spawn();
    let mut ts = Viewer::open(host.addr, &host.stream_path());
    assert_eq!(ts.status, 200);
    ts.read_for(Duration::from_millis(500));
    let r = host.get(&format!("{}index.m3u8", hls_base(&host.token)));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
}

#[test]
fn hls_js_plays_it_in_headless_chromium() {
    let browser_dir = pixelpass_testkit::bin::kit_dir().join("browser");
    assert!(
        browser_dir.join("node_modules/hls.js/dist/hls.js").is_file(),
        "hls.js is missing: run scripts/setup.sh (it runs `npm ci` in crates/pixelpass-testkit/browser)"
    );
    let host = Host::spawn_default();
    let url = format!("http://{}{}index.m3u8", host.addr, hls_base(&host.token));
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir.join("hls-play.mjs")).arg(&url).arg("8");
    let out = run_tool(cmd, Duration::from_secs(90));
    let line = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no result from hls-play.mjs ({:?})\n{}\n{}",
                out.status, out.stdout, out.stderr
            )
        });
    let r: serde_json::Value = serde_json::from_str(line).expect("hls-play.mjs prints JSON");
    assert!(r["ok"] == true, "hls.js did not play: {r}\n{}", out.stderr);
    // About 8 s less the start: at 30 frames/s well over 60 frames.
    assert!(r["frames"].as_u64().unwrap_or(0) >= 60, "{r}");
    assert!(
        r["luma"].as_f64().unwrap_or(0.0) > 16.0,
        "black picture: {r}"
    );
    eprintln!("hls.js: {r}");
}

#[test]
fn nginx_carries_fifty_clients_with_at_most_two_origin_requests_per_object() {
    let host = Host::builder().max_viewers(2).spawn();
    let nginx = Nginx::spawn(host.addr);
    let base = hls_base(&host.token);
    // Warm up through the proxy: capture starts and the first segment exists.
    let first = request(nginx.addr, "GET", &format!("{base}index.m3u8"));
    assert_eq!(
        first.status,
        200,
        "{}\nnginx: {}",
        first.text(),
        nginx.errors()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let (addr, base) = (nginx.addr, base.clone());
            // 40 follow part by part (as hls.js does), 10 segment by segment (as ffmpeg does).
            std::thread::spawn(move || follow(addr, &base, i % 5 != 0, deadline))
        })
        .collect();
    let seen: Vec<Followed> = clients
        .into_iter()
        .map(|c| c.join().expect("a client thread"))
        .collect();
    let parts: usize = seen.iter().map(|f| f.parts).sum();
    let segments: usize = seen.iter().map(|f| f.segments).sum();
    let failures: Vec<_> = seen.iter().flat_map(|f| f.failures.clone()).collect();
    let st = host.status();
    let hls = &st["hls"];
    eprintln!(
        "50 clients, 20 s through nginx: they fetched {parts} parts, {segments} segments, {} playlists; \
         the origin served {}",
        seen.iter().map(|f| f.playlists).sum::<usize>(),
        hls
    );
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}\nnginx: {}",
        failures.len(),
        &failures[..failures.len().min(5)],
        nginx.errors()
    );
    assert_eq!(seen.iter().map(|f| f.not_fmp4).sum::<usize>(), 0);
    // Every client got media; the part followers many parts each.
    assert!(seen.iter().all(|f| f.parts + f.segments > 0), "{seen:?}");
    assert!(parts >= 40 * 10, "{parts} parts");
    // The origin's own count: no part or segment was asked more than twice.
    assert!(
        hls["served"]["max_per_part"]
            .as_u64()
            .is_some_and(|n| (1..=2).contains(&n)),
        "{hls}"
    );
    assert!(
        hls["served"]["max_per_segment"]
            .as_u64()
            .is_some_and(|n| (1..=2).contains(&n)),
        "{hls}"
    );
    // The cache is one client (it comes from 127.0.0.2): one viewer slot for
    // fifty people; a direct client (the test, from 127.0.0.1) is another.
    assert_eq!(hls["clients"], 1, "{hls}");
    assert_eq!(st["viewers"], 1, "{st}");
    assert_eq!(
        request(host.addr, "GET", &format!("{base}index.m3u8")).status,
        200
    );
    let st = host.status();
    assert_eq!(
        (&st["hls"]["clients"], &st["viewers"]),
        (&2.into(), &2.into()),
        "{st}"
    );
}

/// `host --record DIR`: fragmented MP4 files, a new one every 0.25 min at a
/// keyframe; the finished one and the one a `kill -9` cut short both decode.
#[test]
fn host_record_writes_files_that_decode_even_after_kill_9() {
    let dir = TempDir::new("record");
    let rec = dir.0.join("rec");
    let mut host = Host::builder()
        .arg("--record")
        .arg(rec.to_str().expect("a UTF-8 temp path"))
        .arg("--record-minutes")
        .arg("0.25")
        .spawn();
    let files = |rec: &std::path::Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(rec)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    // Wait (bounded) for the second file: the first is then complete.
    let until = Instant::now() + Duration::from_secs(90);
    while files(&rec).len() < 2 {
        assert!(
            Instant::now() < until,
            "no second file in {rec:?}: {:?}\n{}",
            files(&rec),
            host.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: SIGKILL of the host this test started, by its PID.
    assert_eq!(unsafe { libc::kill(host.pid(), libc::SIGKILL) }, 0);
    let _ = host.terminate(Duration::from_secs(5));
    let got = files(&rec);
    assert!(got.len() >= 2, "{got:?}");
    for (i, f) in got.iter().enumerate() {
        // The first file holds 15 s (at 30 frames/s); the cut one what came in ≥ 3 s.
        assert_recording_decodes(f, if i == 0 { 400 } else { 60 });
    }
}

/// A stream published over WHIP (`host --publish` into `serve`): its remux
/// (H.264 + AAC in TS) becomes LL-HLS like any other stream.
#[test]
fn ffmpeg_decodes_the_ll_hls_of_a_published_stream() {
    const VIEWER: &str = "desk-hls-viewer-token-0123456789";
    const SECRET: &str = "desk-hls-publish-secret-0123456789";
    let serve = Serve::start(
        "hls-whip",
        &format!("[[stream]]\nid = \"desk\"\ntoken = \"{VIEWER}\"\npublish_token = \"{SECRET}\"\n"),
    );
    let mut host = Host::builder()
        .arg("--publish")
        .arg(&format!("http://{}/whip/desk", serve.addr))
        .env("PIXELPASS_PUBLISH_TOKEN", SECRET)
        .spawn();
    // (`wait_live` waits for FFmpeg's progress, which a published stream has not.)
    let until = Instant::now() + Duration::from_secs(30);
    while serve.report("desk")["state"] != "live" {
        assert!(Instant::now() < until, "not live: {}", serve.report("desk"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (video, audio, errors) = ffmpeg_reads(serve.addr, VIEWER);
    assert!(
        errors.is_empty(),
        "ffmpeg: {errors}\nserve:\n{}",
        serve.stderr_text()
    );
    assert!(video >= 150, "{video} video frames decoded");
    assert!(audio >= 150, "{audio} audio frames decoded");
    host.terminate(Duration::from_secs(10));
}
