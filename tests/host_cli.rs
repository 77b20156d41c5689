//! The `pixelpass host` process itself: its options, its banner, and a
//! clear error at start. (What viewers get over HTTP is in host_http.rs.)
//!
//! Every test starts its own host on a free loopback port and bounds every
//! wait; the host is killed (by PID) when the test ends, pass or fail.

use pixelpass_testkit::prelude as common;

use std::time::Duration;

use common::*;

#[test]
fn help_lists_every_host_option() {
    let out = run_binary(&["host", "--help"], Duration::from_secs(20));
    assert!(out.success(), "pixelpass host --help failed: {out:?}");
    for opt in [
        "--source",
        "--window",
        "--framerate",
        "--bitrate",
        "--width",
        "--height",
        "--max-viewers",
        "--max-connections",
        "--listen",
        "--token",
        "--linger",
        "--json",
        "PIXELPASS_TOKEN",
    ] {
        assert!(
            out.stdout.contains(opt),
            "host --help does not mention {opt}:\n{}",
            out.stdout
        );
    }
    for source in ["auto", "test", "portal", "x11"] {
        assert!(
            out.stdout.contains(source),
            "host --help does not list source {source}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn banner_is_one_json_line_with_the_urls_and_a_strong_token() {
    let host = Host::spawn_default();
    let b = &host.banner;
    let base = format!("http://{}", host.addr);
    assert_ne!(host.addr.port(), 0, "banner shows port 0: {b}");
    assert_eq!(
        b["stream_url"],
        format!("{base}/{}/stream.ts", host.token),
        "{b}"
    );
    assert_eq!(
        b["status_url"],
        format!("{base}/{}/status", host.token),
        "{b}"
    );
    assert_eq!(b["max_viewers"], 2, "{b}");
    assert!(
        b["encoder"].as_str().is_some_and(|e| !e.is_empty()),
        "no encoder in banner: {b}"
    );
    let urls = b["urls"]
        .as_array()
        .unwrap_or_else(|| panic!("no urls array: {b}"));
    assert!(
        urls.iter().any(|u| u == &b["stream_url"]),
        "urls {urls:?} lack the stream URL"
    );
    assert!(b.get("player_url").is_some(), "no player_url key: {b}");

    // A generated token: URL-safe and at least 128 bits (22 base64url characters).
    let t = &host.token;
    assert!(
        t.len() >= 22
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "weak token {t:?}"
    );
    let other = Host::spawn_default();
    assert_ne!(
        other.token, host.token,
        "two hosts generated the same token"
    );

    // The banner URLs work.
    assert_eq!(host.get(&host.status_path()).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        host.extra_stdout(),
        Vec::<String>::new(),
        "more than one line on stdout"
    );

    // --token and PIXELPASS_TOKEN are taken as given.
    let given = Host::builder()
        .token("given-token_0123456789abcdef")
        .spawn();
    assert_eq!(given.token, "given-token_0123456789abcdef");
    assert_eq!(
        given.get("/given-token_0123456789abcdef/status").status,
        200
    );
    let from_env = Host::builder()
        .env("PIXELPASS_TOKEN", "env-token_0123456789abcdefgh")
        .spawn();
    assert_eq!(from_env.token, "env-token_0123456789abcdefgh");
}

#[test]
fn a_taken_port_is_an_error_that_suggests_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_binary(
        &["host", "--source", "test", "--json", "--listen", &addr],
        Duration::from_secs(30),
    );
    assert!(
        out.status.is_some(),
        "host did not exit with its port taken"
    );
    assert!(!out.success(), "host exited 0 with its port taken");
    assert!(
        out.stderr.contains("--listen"),
        "the error does not suggest --listen:\n{}",
        out.stderr
    );
    assert!(
        out.stdout.trim().is_empty(),
        "printed a banner although it could not listen: {}",
        out.stdout
    );
}
