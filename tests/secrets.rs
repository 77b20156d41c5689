//! Secrets never reach the logs: `pixelpass serve` and `pixelpass host`
//! run with known secrets at the most talkative log level
//! (`PIXELPASS_LOG=debug`), every path that logs is exercised (FFmpeg
//! started with credentials in its input URL and failing on it, API calls
//! with the right and a wrong bearer, WHIP with the right and a wrong
//! publish token, `host --publish` publishing, viewers by token, wrong
//! tokens, SIGTERM), and then the whole of both stderr streams is searched
//! for each secret.

use std::time::{Duration, Instant};

use pixelpass_testkit::prelude::*;
use pixelpass_testkit::serve::feeder::free_tcp_port;
use pixelpass_testkit::serve::{lavfi_input, Serve, API_TOKEN};

const VIEWER: &str = "viewer-secret-Zq81xk2Lr0Pw";
const LAV_VIEWER: &str = "lav-viewer-secret-Jd9Kc3mQ";
const PUBLISH: &str = "publish-secret-Hy7Ga2Nv0Tb5";
const RTMP_PASS: &str = "rtmpPassSecret4Xw";
const RTMP_KEY: &str = "streamKeySecret8Rt";
const SRT_PASS: &str = "srtPassphraseSecret6Qe";
const WRONG_BEARER: &str = "wrong-bearer-secret-Mm3Uu";
const HOST_TOKEN: &str = "host-viewer-secret-Vb6Ts1Ow9";

fn config(rtmp_port: u16, srt_port: u16) -> String {
    format!(
        "[[stream]]\nid = \"desk\"\ntoken = \"{VIEWER}\"\npublish_token = \"{PUBLISH}\"\n\n\
         [[stream]]\nid = \"rtmp\"\ntoken = \"rtmp-viewer-token-0123456789\"\nautostart = true\nreconnect = true\nreconnect_delay_seconds = 1\n\
         input = [\"-rw_timeout\", \"1000000\", \"-i\", \"rtmp://alice:{RTMP_PASS}@127.0.0.1:{rtmp_port}/live/{RTMP_KEY}\"]\n\n\
         [[stream]]\nid = \"srt\"\ntoken = \"srt-viewer-token-0123456789\"\nautostart = true\nreconnect = true\nreconnect_delay_seconds = 1\n\
         input = [\"-i\", \"srt://127.0.0.1:{srt_port}?mode=caller&passphrase={SRT_PASS}&connect_timeout=500\"]\n\n\
         [[stream]]\nid = \"lav\"\ntoken = \"{LAV_VIEWER}\"\nautostart = true\n{}",
        lavfi_input(440)
    )
}

fn whip_post(serve: &Serve, bearer: &str, body: &str) -> Response {
    let auth = format!("Bearer {bearer}");
    request_with(
        serve.addr,
        "POST",
        "/whip/desk",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        body.as_bytes(),
    )
}

/// The lines of `text` that contain any of `secrets` (with which one).
fn leaks<'a>(text: &'a str, secrets: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    text.lines()
        .flat_map(|l| {
            secrets
                .iter()
                .filter(move |s| l.contains(**s))
                .map(move |s| (*s, l))
        })
        .collect()
}

#[test]
fn no_secret_reaches_the_logs() {
    let debug = [("PIXELPASS_LOG", "debug")];
    let (rtmp_port, srt_port) = (free_tcp_port(), free_tcp_port());
    let mut serve = Serve::start_env("secrets", &config(rtmp_port, srt_port), &[], &debug);

    // The failing inputs: FFmpeg ran with the credentials and failed on them.
    for id in ["rtmp", "srt"] {
        serve.wait_report(id, Duration::from_secs(30), "a failed run", |r| {
            r["restarts"].as_u64().unwrap_or(0) >= 1 || !r["last_error"].is_null()
        });
    }
    serve.wait_live("lav");

    // The API: right bearer, wrong bearer.
    assert_eq!(serve.api("GET", "/api/v1/streams", None).status, 200);
    let r = serve.api_as(Some(WRONG_BEARER), "GET", "/api/v1/streams", None);
    assert_eq!(r.status, 401);
    // WHIP: a wrong token, the right one with a broken offer.
    assert_eq!(whip_post(&serve, WRONG_BEARER, "v=0\r\n").status, 401);
    assert_eq!(whip_post(&serve, PUBLISH, "not sdp\r\n").status, 400);
    // Viewers: by token, and a wrong one.
    let mut v = Viewer::open(serve.addr, &format!("/{LAV_VIEWER}/stream.ts"));
    assert_eq!(v.status, 200);
    v.read_for(Duration::from_secs(1));
    drop(v);
    assert_eq!(
        request(serve.addr, "GET", &format!("/{WRONG_BEARER}/stream.ts")).status,
        404
    );

    // host --publish into it with the real publish token, and its own viewers.
    let mut host = Host::builder()
        .token(HOST_TOKEN)
        .env("PIXELPASS_LOG", "debug")
        .env("PIXELPASS_PUBLISH_TOKEN", PUBLISH)
        .arg("--publish")
        .arg(&format!("http://{}/whip/desk", serve.addr))
        .keep_stderr()
        .spawn();
    serve.wait_report("desk", Duration::from_secs(30), "published", |r| {
        r["state"] == "live"
    });
    let mut v = Viewer::open(serve.addr, &format!("/{VIEWER}/stream.ts"));
    assert_eq!(v.status, 200);
    v.read_for(Duration::from_secs(1));
    drop(v);
    let mut v = Viewer::open(host.addr, &host.stream_path());
    assert_eq!(v.status, 200);
    v.read_for(Duration::from_millis(500));
    drop(v);
    assert_eq!(host.get(&format!("/{WRONG_BEARER}/status")).status, 404);

    let (status, _) = host.terminate(Duration::from_secs(10));
    assert!(status.is_some(), "host did not stop");
    // Let serve log the publisher's end, then stop it too.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) && serve.report("desk")["state"] == "live" {
        std::thread::sleep(Duration::from_millis(100));
    }
    serve.terminate(Duration::from_secs(10));

    let secrets = [
        API_TOKEN,
        VIEWER,
        LAV_VIEWER,
        PUBLISH,
        RTMP_PASS,
        RTMP_KEY,
        SRT_PASS,
        WRONG_BEARER,
        HOST_TOKEN,
    ];
    let serve_log = serve.stderr_text();
    let host_log = host.stderr_lines().join("\n");
    // The logs did talk about what was exercised (else this test proves nothing).
    for (log, needles) in [
        (
            &serve_log,
            &["spawning ffmpeg", "rtmp://alice:***@", "srt://", "ffmpeg:"][..],
        ),
        (&host_log, &["publish"][..]),
    ] {
        for n in needles {
            assert!(log.contains(n), "the log never mentions {n:?}:\n{log}");
        }
    }
    let found: Vec<_> = leaks(&serve_log, &secrets)
        .into_iter()
        .map(|(s, l)| format!("serve: {s:?} in {l}"))
        .chain(
            leaks(&host_log, &secrets)
                .into_iter()
                .map(|(s, l)| format!("host: {s:?} in {l}")),
        )
        .collect();
    eprintln!(
        "searched {} serve and {} host log lines for {} secrets",
        serve_log.lines().count(),
        host_log.lines().count(),
        secrets.len()
    );
    assert!(
        found.is_empty(),
        "secrets in the logs:\n{}",
        found.join("\n")
    );
}
