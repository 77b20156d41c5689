//! The internet in network namespaces (the test kit's [`Lab`]): `home`
//! (pixelpass host, behind nftables masquerade) → `nat` → `public`
//! (pixelpass serve over HTTPS with a test CA: the WHIP relay) ← `viewer`.
//!
//! - the viewer cannot open a connection to the host;
//! - through the relay it gets the host's screen: a str0m WHEP client in the
//!   viewer namespace (signalling over HTTPS with curl and the test CA)
//!   decodes ≥ 90 frames; HTTP-TS from the relay decodes with ffmpeg;
//! - the relay restarts while the host publishes: the host republishes by
//!   itself and the viewer gets pictures again.
//!
//! Only 192.0.2.0/24 and 203.0.113.0/24, no route out of the lab; the lab
//! ends every process it started (by PID) and deletes its namespaces. Every
//! wait is bounded (hang guards; the republish time is printed, not asserted).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pixelpass_testkit::client::whep::session::{drive, Got};
use pixelpass_testkit::client::whep::{WhepClient, WhepOptions};
use pixelpass_testkit::netlab::{Lab, Node};
use pixelpass_testkit::prelude::*;
use pixelpass_testkit::serve::whep::assert_decodes;
use pixelpass_testkit::tls::TestCa;

const VIEWER_TOKEN: &str = "relay-viewer-token-0123456789";
const SECRET: &str = "relay-publish-secret-0123456789";
const RELAY: &str = "203.0.113.10";
const PORT: u16 = 8443;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pixelpass")
}

/// The first stdout line of a lab child (its JSON banner), within 30 s.
fn banner(stdout: Option<std::process::ChildStdout>, what: &str) -> serde_json::Value {
    let out = stdout.expect("stdout piped");
    let line = first_line(out, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{what}: no banner within 30 s"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: banner {line:?}: {e}"))
}

fn start_relay(lab: &Lab, config: &std::path::Path, ca: &TestCa) -> (u32, serde_json::Value) {
    let mut cmd = lab.command(Node::Public, bin());
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--whip-udp", &format!("{RELAY}:0"), "--json"])
        .arg("--tls-cert")
        .arg(&ca.cert)
        .arg("--tls-key")
        .arg(&ca.key)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let s = lab.spawn(cmd).expect("start the relay");
    let b = banner(s.stdout, "relay");
    (s.pid, b)
}

/// curl in the viewer namespace, trusting the test CA.
fn curl(lab: &Lab, ca: &TestCa, args: &[&str], timeout: Duration) -> std::process::Output {
    let mut cmd = lab.command(Node::Viewer, "curl");
    cmd.args(["-sS", "--cacert"]).arg(&ca.ca).args(args);
    lab.output(cmd, timeout).expect("run curl")
}

/// A WHEP viewer in the viewer namespace: offer over HTTPS (curl), media over
/// UDP to the relay; until `frames` video frames came. What it got.
fn watch(lab: &Lab, ca: &TestCa, frames: usize) -> Got {
    let viewer_ip: IpAddr = lab.addr(Node::Viewer);
    let url = format!("https://{RELAY}:{PORT}/{VIEWER_TOKEN}/whep");
    let dir = TempDir::new("relay-offer");
    let offer_file = dir.0.join("offer.sdp");
    let ca_path = ca.ca.clone();
    lab.block_on(Node::Viewer, move || async move {
        let mut client = WhepClient::new(viewer_ip, WhepOptions::default())
            .await
            .expect("a WHEP client");
        std::fs::write(&offer_file, client.offer_sdp()).unwrap();
        // This thread is in the viewer namespace: so is the curl it starts.
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&ca_path)
            .args(["-H", "Content-Type: application/sdp", "--data-binary"])
            .arg(format!("@{}", offer_file.display()))
            .args(["-w", "\n%{http_code}", &url])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (answer, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        assert_eq!(
            code,
            "201",
            "WHEP POST over HTTPS: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        client.accept(answer).expect("accept the answer");
        let mut got = Got::checked();
        drive(&mut client, &mut got, Duration::from_secs(40), |g| {
            g.video_frames >= frames && g.audio_packets >= 25
        })
        .await;
        got
    })
    .expect("the viewer namespace")
}

/// Headless Chromium (the test kit's player.mjs, `--reconnect`) with the
/// relay's page open in the viewer namespace: one line when it plays, one
/// when it has lost the stream and played again.
struct PagePlayer {
    lines: mpsc::Receiver<String>,
}

impl PagePlayer {
    fn open(lab: &Lab, page: &str) -> PagePlayer {
        let browser = pixelpass_testkit::bin::kit_dir().join("browser");
        assert!(
            browser.join("node_modules/playwright-core").is_dir(),
            "playwright-core is missing: run scripts/setup.sh"
        );
        let mut cmd = lab.command(Node::Viewer, "node");
        cmd.arg(browser.join("player.mjs"))
            .args(["--url", page, "--seconds", "60", "--frames", "30"])
            .args(["--ignore-cert", "--reconnect"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The lab ends and reaps it (by PID) if the test fails first.
        let s = lab.spawn(cmd).expect("start the browser");
        let out = s.stdout.expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        PagePlayer { lines }
    }

    fn next_line(&mut self, within: Duration) -> String {
        self.lines
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("the browser said nothing within {within:?} ({e})"))
    }
}

#[test]
fn a_host_behind_nat_reaches_viewers_through_a_whip_relay_over_https() {
    let lab = Lab::new().expect("the network lab (root, iproute2, nftables)");
    let dir = TempDir::new("relay-nat");
    let ca = TestCa::make(&dir, RELAY);
    let config = dir.0.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{RELAY}:{PORT}\"\nwebrtc_udp = \"{RELAY}:0\"\napi_token = \"relay-api-token\"\n\n\
             [[stream]]\nid = \"desk\"\ntoken = \"{VIEWER_TOKEN}\"\npublish_token = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let (relay_pid, relay_banner) = start_relay(&lab, &config, &ca);
    assert!(relay_banner["api"]
        .as_str()
        .is_some_and(|a| a.starts_with("https://")));

    // The host at home publishes through the NAT, trusting the test CA.
    let mut cmd = lab.command(Node::Home, bin());
    cmd.args(["host", "--source", "test", "--json"])
        .args(LIGHT)
        .args(["--listen", "192.0.2.2:8080", "--webrtc-udp", "192.0.2.2:0"])
        .args(["--publish", &format!("https://{RELAY}:{PORT}/whip/desk")])
        .arg("--publish-ca")
        .arg(&ca.ca)
        .env("PIXELPASS_PUBLISH_TOKEN", SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let started = Instant::now();
    let host = lab.spawn(cmd).expect("start the host");
    let host_banner = banner(host.stdout, "host");
    assert_eq!(
        host_banner["watch_url"],
        format!("https://{RELAY}:{PORT}/{VIEWER_TOKEN}/").as_str(),
        "the banner names the relay's page: {host_banner}"
    );

    // The viewer cannot reach the host itself.
    let home: SocketAddr = "192.0.2.2:8080".parse().unwrap();
    let direct = lab
        .in_ns(Node::Viewer, move || {
            TcpStream::connect_timeout(&home, Duration::from_secs(2))
        })
        .expect("the viewer namespace");
    assert!(
        direct.is_err(),
        "the viewer reached the host behind NAT directly"
    );

    // Through the relay: WebRTC…
    let got = watch(&lab, &ca, 90);
    eprintln!(
        "relay: host start → 90 frames at a viewer across NAT in {} ms",
        started.elapsed().as_millis()
    );
    assert_decodes(&dir.0, &got);

    // …and HTTP-TS over HTTPS, decoded by ffmpeg.
    let ts = dir.0.join("relay.ts");
    let url = format!("https://{RELAY}:{PORT}/{VIEWER_TOKEN}/stream.ts");
    curl(
        &lab,
        &ca,
        &["--max-time", "4", "-o", ts.to_str().unwrap(), &url],
        Duration::from_secs(15),
    );
    let body = std::fs::read(&ts).expect("the TS curl wrote");
    let checked = check_capture(&dir, "relay-nat.ts", &body, 30);
    assert!(checked.frames >= 30);

    // …and the relay's player page in headless Chromium in the viewer
    // namespace, kept open across the relay's restart below.
    let page = format!("https://{RELAY}:{PORT}/{VIEWER_TOKEN}/");
    let mut player = PagePlayer::open(&lab, &page);
    let playing = player.next_line(Duration::from_secs(60));
    assert!(
        playing.contains("\"playing\""),
        "the page played: {playing}"
    );

    // The relay restarts: the host republishes by itself.
    lab.stop(relay_pid).expect("stop the relay");
    let down = Instant::now();
    let (relay_pid, _) = start_relay(&lab, &config, &ca);
    let t0 = Instant::now();
    loop {
        let out = curl(
            &lab,
            &ca,
            &[
                "-H",
                "Authorization: Bearer relay-api-token",
                &format!("https://{RELAY}:{PORT}/api/v1/streams/desk/report"),
            ],
            Duration::from_secs(10),
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if report["state"] == "live" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the host never republished: {report}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "relay: restarted; the host republished {} ms after the relay was back ({} ms after it went down)",
        t0.elapsed().as_millis(),
        down.elapsed().as_millis()
    );
    // The open page reconnects by itself and plays again.
    let done = player.next_line(Duration::from_secs(60));
    eprintln!("relay: the page across the restart: {done}");
    let result: serde_json::Value = serde_json::from_str(&done).expect("the player's JSON line");
    assert_eq!(result["ok"], true, "{done}");
    assert_eq!(result["reconnected"], true, "{done}");
    let again = watch(&lab, &ca, 30);
    assert!(again.video_frames >= 30);

    lab.stop(host.pid).expect("stop the host");
    lab.stop(relay_pid).expect("stop the relay");
    lab.close().expect("tear the lab down");
}
