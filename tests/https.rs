//! HTTPS (`--tls-cert` / `--tls-key`): a server that faces the internet must
//! not send its viewer tokens in the clear. A throw-away CA made with openssl
//! signs a certificate for 127.0.0.1; ffmpeg (verifying it) decodes the
//! stream, curl (verifying it) reads status and the serve API, a plain-HTTP
//! request to the same port gets no answer, and bad key material is a start
//! error that names the flag and the file.

use std::process::Command;
use std::time::Duration;

use pixelpass_testkit::prelude as common;
use pixelpass_testkit::serve::Serve;
use pixelpass_testkit::tls::TestCa;

use common::*;

fn curl(args: &[&str]) -> ToolOutput {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20"]).args(args);
    run_tool(cmd, Duration::from_secs(30))
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

#[test]
fn host_over_https_serves_verified_viewers_and_nothing_in_the_clear() {
    let dir = TempDir::new("https-host");
    let ca = TestCa::make(&dir, "127.0.0.1");
    let host = Host::builder()
        .arg("--tls-cert")
        .arg(path_str(&ca.cert))
        .arg("--tls-key")
        .arg(path_str(&ca.key))
        .spawn();
    let base = format!("https://{}/{}", host.addr, host.token);
    // Every URL the host prints is https.
    for key in ["stream_url", "player_url", "whep_url", "status_url"] {
        let url = host.banner[key].as_str().unwrap_or_default();
        assert!(url.starts_with("https://"), "{key}: {url}");
    }

    let status = curl(&["--cacert", path_str(&ca.ca), &format!("{base}/status")]);
    assert!(
        status.success(),
        "curl over verified TLS: {}",
        status.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&status.stdout)
        .unwrap_or_else(|e| panic!("status JSON ({e}): {}", status.stdout));
    assert_eq!(v["state"], "idle", "{v}");

    // ffmpeg verifies the chain against the CA and decodes H.264 + AAC.
    let out = dir.0.join("https.ts");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-tls_verify", "1", "-ca_file"])
        .arg(&ca.ca)
        .args([
            "-i",
            &format!("{base}/stream.ts"),
            "-t",
            "4",
            "-c",
            "copy",
            "-f",
            "mpegts",
        ])
        .arg(&out);
    let got = run_tool(cmd, Duration::from_secs(90));
    assert!(got.success(), "ffmpeg over https: {}", got.stderr);
    let data = std::fs::read(&out).expect("the capture");
    let checked = check_capture(&dir, "https-checked.ts", &data, 60);
    assert!(checked.frames >= 60, "{} frames", checked.frames);

    // The same port in plain HTTP: no HTTP answer, so no token in the clear.
    let plain = curl(&[&format!("http://{}/{}/status", host.addr, host.token)]);
    assert!(
        !plain.success(),
        "plain HTTP was answered: {}",
        plain.stdout
    );
    assert!(!plain.stdout.contains("state"), "{}", plain.stdout);
    // A client that does not trust the CA is refused by its own check.
    let untrusted = curl(&[&format!("{base}/status")]);
    assert!(!untrusted.success(), "an unverified chain was accepted");
}

#[test]
fn serve_over_https_answers_its_api_and_prints_https_urls() {
    let dir = TempDir::new("https-serve");
    let ca = TestCa::make(&dir, "127.0.0.1");
    let serve = Serve::start_with(
        "https-serve",
        "",
        &[
            "--tls-cert",
            path_str(&ca.cert),
            "--tls-key",
            path_str(&ca.key),
        ],
    );
    let api = serve.banner["api"].as_str().unwrap_or_default();
    assert!(api.starts_with("https://"), "api URL: {api}");
    let got = curl(&[
        "--cacert",
        path_str(&ca.ca),
        "-H",
        &format!(
            "Authorization: Bearer {}",
            pixelpass_testkit::serve::API_TOKEN
        ),
        &format!("https://{}/api/v1/streams", serve.addr),
    ]);
    assert!(got.success(), "curl: {}", got.stderr);
    assert!(got.stdout.trim_start().starts_with('['), "{}", got.stdout);
}

#[test]
fn bad_key_material_is_a_start_error_naming_the_flag_and_file() {
    let dir = TempDir::new("https-bad");
    let ca = TestCa::make(&dir, "127.0.0.1");
    let start = |cert: &str, key: &str| {
        run_binary(
            &[
                "host",
                "--source",
                "test",
                "--listen",
                "127.0.0.1:0",
                "--webrtc-udp",
                "127.0.0.1:0",
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
            Duration::from_secs(30),
        )
    };
    // A key that is not the certificate's.
    let r = start(path_str(&ca.cert), path_str(&ca.ca_key));
    assert!(!r.success());
    assert!(
        r.stderr
            .contains("--tls-cert and --tls-key do not go together"),
        "{}",
        r.stderr
    );
    // A file that is not there.
    let missing = dir.0.join("nope.pem");
    let r = start(path_str(&missing), path_str(&ca.key));
    assert!(!r.success());
    assert!(
        r.stderr.contains("--tls-cert") && r.stderr.contains("nope.pem"),
        "{}",
        r.stderr
    );
    // A key file with no key in it.
    let r = start(path_str(&ca.cert), path_str(&ca.cert));
    assert!(!r.success());
    assert!(
        r.stderr.contains("--tls-key") && r.stderr.contains("server.pem"),
        "{}",
        r.stderr
    );
    // One flag without the other.
    let r = run_binary(
        &["host", "--tls-cert", path_str(&ca.cert)],
        Duration::from_secs(30),
    );
    assert!(!r.success());
    assert!(r.stderr.contains("--tls-key"), "{}", r.stderr);
}
