//! What an operator reads when FFmpeg fails: `last_error` in FFmpeg's own
//! words (not a bare `[error]`), the run's first lines kept in the report's
//! log, and the FFmpeg command in the report with credentials masked — in
//! the command, the log and the server's own logs alike.

use std::time::Duration;

use serde_json::json;

use pixelpass_testkit::serve::Serve;

#[test]
fn an_option_ffmpeg_rejects_is_reported_in_ffmpegs_words_with_the_command() {
    let serve = Serve::start("serve-badopt", "");
    let (status, v) = serve.json(
        "POST",
        "/api/v1/streams",
        Some(&json!({
            "id": "badopt", "autostart": true, "audio": false,
            "input": ["-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"],
            "video_options": ["-profile:v", "nonsense"],
        })),
    );
    assert_eq!(status, 201, "{v}");
    let failed = serve.wait_report("badopt", Duration::from_secs(20), "failed", |r| {
        r["state"] == "failed"
    });
    let message = failed["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("invalid profile: nonsense"),
        "x264's own words in last_error: {failed:#}"
    );
    let command: Vec<&str> = failed["command"]
        .as_array()
        .unwrap_or_else(|| panic!("a command array: {failed:#}"))
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        command.first().is_some_and(|p| p.ends_with("ffmpeg")),
        "{command:?}"
    );
    assert!(
        command.windows(2).any(|w| w == ["-profile:v", "nonsense"]),
        "the operator's option is in the command: {command:?}"
    );
    assert!(command.contains(&"-progress"), "our legs too: {command:?}");
}

#[test]
fn credentials_in_an_input_url_are_masked_everywhere() {
    let serve = Serve::start("serve-secret", "");
    // Port 1 on loopback: the connection is refused at once, FFmpeg exits.
    let url = "rtmp://user:s3cret@127.0.0.1:1/live/key?passphrase=p4ssw0rd";
    let (status, v) = serve.json(
        "POST",
        "/api/v1/streams",
        Some(&json!({"id": "secret", "autostart": true, "input": ["-i", url]})),
    );
    assert_eq!(status, 201, "{v}");
    let failed = serve.wait_report("secret", Duration::from_secs(20), "failed", |r| {
        r["state"] == "failed"
    });
    let command = failed["command"].to_string();
    assert!(
        command.contains("rtmp://user:***@127.0.0.1:1/live/***?passphrase=***"),
        "masked in the command: {command}"
    );
    // The report (command, log, last_error, events) and the server's logs.
    // The stream's `config`, behind the API token, stays as the operator gave
    // it, so a GET → PUT round trip does not store the mask.
    let mut report = failed.clone();
    report["config"] = serde_json::Value::Null;
    let everything = format!("{report}\n{}", serve.stderr_text());
    for secret in ["s3cret", "p4ssw0rd"] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked into the report or the logs:\n{everything}"
        );
    }
    assert!(
        failed["log"].to_string().contains("rtmp://user:***@"),
        "{failed:#}"
    );
}
