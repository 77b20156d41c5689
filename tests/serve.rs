//! `pixelpass serve` end to end: the real binary with real FFmpeg children
//! (lavfi test sources), a str0m WHEP client, HTTP-TS viewers decoded with
//! ffmpeg, the JSON API, and the processes checked by PID in /proc.
//!
//! Everything binds 127.0.0.1 with kernel-chosen ports; every wait has a
//! deadline; the server is ended by its PID and reaped (its FFmpeg children
//! die with it: process group + parent-death signal, which one test checks).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{decode_errors, ffprobe_streams, raw_request, run_binary, Response, TempDir, Viewer};
use pixelpass::client::{WhepClient, WhepEvent};

const API_TOKEN: &str = "serve-test-api-token";
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

// ───────────────────────────────── the server ─────────────────────────────────

/// A small lavfi stream: cheap enough that several tests run side by side.
fn lavfi_input(tone: u32) -> String {
    format!(
        "input = [\"-re\", \"-f\", \"lavfi\", \"-i\", \"testsrc2=size=320x240:rate=30\", \"-f\", \"lavfi\", \"-i\", \"sine=frequency={tone}\"]\n\
         video_bitrate_kbps = 600\nkeyframe_interval_seconds = 1\n"
    )
}

struct Serve {
    child: Option<Child>,
    addr: SocketAddr,
    banner: Value,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl Serve {
    /// `pixelpass serve --config <streams>` on loopback with kernel-chosen ports.
    fn start(name: &str, streams: &str) -> Serve {
        let dir = TempDir::new(name);
        let config = dir.0.join("pixelpass.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\nwebrtc_udp = \"127.0.0.1:0\"\napi_token = \"{API_TOKEN}\"\n\n{streams}"
        );
        std::fs::write(&config, text).expect("write the config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pixelpass"))
            .args(["serve", "--json", "--config"])
            .arg(&config)
            .env_remove("PIXELPASS_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pixelpass serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines().map_while(Result::ok);
            if let Some(first) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let mut serve = Serve {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            banner: Value::Null,
            stderr,
            _dir: dir,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no JSON banner ({e}); stderr:\n{}", serve.stderr_text()));
        serve.banner = serde_json::from_str(&line).expect("the banner is JSON");
        serve.addr = serve.banner["listen"].as_str().unwrap().parse().unwrap();
        serve
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        self.api_as(
            Some(API_TOKEN),
            method,
            path,
            body.map(|b| b.to_string()).as_deref(),
        )
    }

    fn api_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Response {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method == "POST" || method == "PUT" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        raw_request(self.addr, req.as_bytes(), false)
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let r = self.api(method, path, body);
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, v)
    }

    fn report(&self, id: &str) -> Value {
        let (status, v) = self.json("GET", &format!("/api/v1/streams/{id}/report"), None);
        assert_eq!(status, 200, "report of {id}: {v}");
        v
    }

    /// Poll the report until `pred` holds (or panic after `within`).
    fn wait_report(
        &self,
        id: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let r = self.report(id);
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: {what} not within {within:?}; report: {r:#}\nstderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_running(&self, id: &str) -> Value {
        self.wait_report(id, Duration::from_secs(30), "running", |r| {
            r["state"] == "running" && r["pid"].is_u64()
        })
    }

    /// SIGTERM by PID and wait for the exit.
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) of our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let child = self.child.as_mut().unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                t0.elapsed() < within,
                "serve did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill signals this PID only; its FFmpeg children die with
            // it (parent-death signal).
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- serve stderr ---\n{}\n---", self.stderr_text());
        }
    }
}

// ─────────────────────────────── processes ───────────────────────────────

/// Gone, or a zombie waiting for a reaper (this sandbox's PID 1 is slow at it).
fn process_gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pid: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if process_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    process_gone(pid)
}

/// Live (not zombie) children of `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let ppid: u32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent && state != "Z" {
            out.push(pid);
        }
    }
    out
}

// ─────────────────────────────── WHEP viewing ───────────────────────────────

#[derive(Default)]
struct Got {
    annexb: Vec<u8>,
    opus: Vec<Vec<u8>>,
    video_frames: usize,
    first_key_at: Option<Instant>,
    connected: bool,
    closed: bool,
}

impl Got {
    fn take(&mut self, ev: WhepEvent) {
        match ev {
            WhepEvent::Connected => self.connected = true,
            WhepEvent::Closed => self.closed = true,
            WhepEvent::Video(f) => {
                if self.video_frames == 0 {
                    assert!(f.keyframe, "the first frame a peer gets is a keyframe");
                    self.first_key_at = Some(f.arrived);
                }
                self.annexb.extend_from_slice(&f.annexb);
                self.video_frames += 1;
            }
            WhepEvent::Audio(a) => self.opus.push(a.data),
            WhepEvent::IceState(_) => {}
        }
    }
}

async fn drive(
    client: &mut WhepClient,
    got: &mut Got,
    within: Duration,
    done: impl Fn(&Got) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(got) {
        assert!(
            Instant::now() < deadline,
            "gave up after {within:?}: connected={} video={} audio={} closed={}",
            got.connected,
            got.video_frames,
            got.opus.len(),
            got.closed
        );
        match client.next_event(deadline).await {
            Ok(Some(ev)) => got.take(ev),
            Ok(None) => {}
            Err(e) => panic!("the WHEP client failed: {e}"),
        }
    }
}

async fn whep_viewer(serve: &Serve, token: &str) -> WhepClient {
    let url = format!("http://{}/{token}/whep", serve.addr);
    WhepClient::connect(&url, LOOPBACK)
        .await
        .unwrap_or_else(|e| panic!("WHEP POST to {url}: {e}\nstderr:\n{}", serve.stderr_text()))
}

/// H.264 in Annex-B and Opus (in Ogg) both decode with ffmpeg without an error.
fn assert_decodes(dir: &Path, got: &Got) {
    let h264 = dir.join("whep.h264");
    std::fs::write(&h264, &got.annexb).unwrap();
    let errors = decode_errors(&h264);
    assert!(errors.is_empty(), "H.264 from WHEP: {errors}");
    let opus = dir.join("whep.opus");
    std::fs::write(&opus, ogg_opus(&got.opus)).unwrap();
    assert_eq!(
        ffprobe_streams(&opus),
        vec![("audio".to_owned(), "opus".to_owned())]
    );
    let errors = decode_errors(&opus);
    assert!(errors.is_empty(), "Opus from WHEP: {errors}");
}

/// Opus packets in an Ogg file (RFC 7845): ID header, comment header, one packet a page.
fn ogg_opus(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, 2]);
    head.extend_from_slice(&312u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&[0, 0, 0]);
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&4u32.to_le_bytes());
    tags.extend_from_slice(b"test");
    tags.extend_from_slice(&0u32.to_le_bytes());
    let mut out = Vec::new();
    ogg_page(&mut out, 0x02, 0, 0, &head);
    ogg_page(&mut out, 0, 0, 1, &tags);
    let mut granule = 0u64;
    for (i, p) in packets.iter().enumerate() {
        granule += 960; // 20 ms frames (-frame_duration 20)
        let last = i + 1 == packets.len();
        ogg_page(
            &mut out,
            if last { 0x04 } else { 0 },
            granule,
            2 + i as u32,
            p,
        );
    }
    out
}

fn ogg_page(out: &mut Vec<u8>, flags: u8, granule: u64, seq: u32, packet: &[u8]) {
    let start = out.len();
    out.extend_from_slice(b"OggS");
    out.push(0);
    out.push(flags);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&7u32.to_le_bytes()); // serial
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // CRC, below
    let mut lacing = vec![255u8; packet.len() / 255];
    lacing.push((packet.len() % 255) as u8);
    out.push(lacing.len() as u8);
    out.extend_from_slice(&lacing);
    out.extend_from_slice(packet);
    let crc = ogg_crc(&out[start..]);
    out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
}

fn ogg_crc(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn events(report: &Value) -> Vec<String> {
    report["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["what"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

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
    serve.wait_running("one");
    serve.wait_running("two");

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
    let mut viewer = Viewer::open(serve.addr, "/watch-two-token/stream.ts");
    assert_eq!(viewer.status, 200);
    viewer.read_for(Duration::from_secs(3));
    let ts = dir.0.join("two.ts");
    std::fs::write(&ts, &viewer.body).unwrap();
    let mut kinds = ffprobe_streams(&ts);
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        vec![
            ("audio".to_owned(), "aac".to_owned()),
            ("video".to_owned(), "h264".to_owned())
        ]
    );
    let errors = decode_errors(&ts);
    assert!(errors.is_empty(), "HTTP-TS of stream two: {errors}");
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
        "[[stream]]\nid = \"one\"\ntoken = \"watch-one-token\"\n{}autostart = true\nreconnect = true\nreconnect_delay_seconds = 1\n",
        lavfi_input(440)
    );
    let serve = Serve::start("kill-9", &streams);
    let before = serve.wait_running("one");
    let pid = before["pid"].as_u64().unwrap();
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
        r["state"] == "running" && r["pid"].as_u64().is_some_and(|p| p != pid)
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
    let restarted = ev.iter().rposition(|e| e == "running");
    assert!(failed.is_some(), "{ev:?}");
    assert!(
        failed < peers_closed && peers_closed < sources_closed && sources_closed < restarted,
        "the order must be: failure, WHEP peers closed, RTP sources closed, running again: {ev:?}"
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
    let (status, v) = serve.json("POST", "/api/v1/streams", Some(&cfg("lobby")));
    assert_eq!(status, 409, "{v}");
    let (status, list) = serve.json("GET", "/api/v1/streams", None);
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)));

    // Double start: refused, and nothing started twice.
    let running = serve.wait_running("lobby");
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
        text.contains("pixelpass_stream_state{stream=\"lobby\",state=\"running\"} 1"),
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
    serve.wait_report("lobby", Duration::from_secs(10), "finished", |r| {
        r["state"] == "finished" && r["pid"].is_null()
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
    serve.wait_running("lobby");

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
    let replaced = serve.wait_running("lobby")["pid"].as_u64().unwrap();

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
        .map(|id| serve.wait_running(id)["pid"].as_u64().unwrap())
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
    let pid = serve.wait_running("a")["pid"].as_u64().unwrap();
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
        (Some("finished"), None),
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

    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        serve.report("lazy")["pid"].as_u64(),
        Some(pid),
        "still lingering at 1 s of 2"
    );
    serve.wait_report(
        "lazy",
        Duration::from_secs(6),
        "stopped after linger",
        |r| r["pid"].is_null(),
    );
    let stopped_after = left.elapsed();
    println!(
        "on_demand stop after the last viewer: {} ms (linger 2 s)",
        stopped_after.as_millis()
    );
    assert!(
        stopped_after >= Duration::from_millis(1900),
        "{stopped_after:?}"
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
