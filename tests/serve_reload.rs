//! `SIGHUP` (`systemctl reload pixelpass-serve`): `serve` reads its config
//! file again and applies what changed — a stream added, one removed, one
//! changed (restarted) — while the untouched stream's viewer keeps playing;
//! a broken file changes nothing and the log names file and line.

use pixelpass_testkit::prelude as common;
use pixelpass_testkit::serve as serve_support;

use std::time::Duration;

use common::{decode_errors, TempDir, Viewer};
use serve_support::{lavfi_input, Serve};

fn stream(id: &str, tone: u32, extra: &str) -> String {
    format!(
        "[[stream]]\nid = \"{id}\"\ntoken = \"watch-{id}-token-0123456789\"\nautostart = true\nwebrtc = {{ enabled = false }}\n{}{extra}\n",
        lavfi_input(tone)
    )
}

fn ids(serve: &Serve) -> Vec<String> {
    let (status, v) = serve.json("GET", "/api/v1/streams", None);
    assert_eq!(status, 200, "{v}");
    let mut ids: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[test]
fn sighup_applies_what_changed_and_leaves_the_rest_playing() {
    let first = format!(
        "{}{}{}",
        stream("keep", 440, ""),
        stream("drop", 550, ""),
        stream("change", 660, "")
    );
    let serve = Serve::start("serve-reload", &first);
    for id in ["keep", "drop", "change"] {
        serve.wait_live(id);
    }
    let keep_pid = serve.report("keep")["pid"].clone();
    let change_pid = serve.report("change")["pid"].clone();
    let mut viewer = Viewer::open(serve.addr, "/watch-keep-token-0123456789/stream.ts");
    assert_eq!(viewer.status, 200);
    viewer.read_for(Duration::from_secs(2));
    let before = viewer.body.len();

    // One added, one removed, one changed; "keep" exactly as it was.
    serve.write_config(&format!(
        "{}{}{}",
        stream("keep", 440, ""),
        stream("change", 660, "max_viewers = 7\n"),
        stream("fresh", 770, "")
    ));
    serve.hangup();
    let line = serve.wait_stderr("reloaded", Duration::from_secs(20));
    assert!(
        line.contains("added fresh; changed (restarted) change; removed drop; unchanged 1"),
        "{line}"
    );
    assert_eq!(ids(&serve), ["change", "fresh", "keep"]);
    let (_, change) = serve.json("GET", "/api/v1/streams/change", None);
    assert_eq!(change["config"]["max_viewers"], 7, "{change}");
    serve.wait_live("fresh");
    let r = serve.wait_live("change");
    assert_ne!(r["pid"], change_pid, "the changed stream runs a new FFmpeg");

    // The untouched stream never noticed: same FFmpeg, no restart, and its
    // viewer's one connection goes on and decodes cleanly.
    let keep = serve.report("keep");
    assert_eq!(
        (keep["pid"].clone(), keep["restarts"].clone()),
        (keep_pid.clone(), 0.into()),
        "{keep:#}"
    );
    viewer.read_for(Duration::from_secs(2));
    assert!(
        viewer.body.len() > before + 20_000 && !viewer.eof,
        "the viewer kept receiving: {before} → {} bytes",
        viewer.body.len()
    );
    let dir = TempDir::new("serve-reload");
    let errors = decode_errors(&dir.write("keep.ts", &viewer.body));
    assert!(errors.is_empty(), "{errors}");

    // A broken file: nothing changes, the log says where.
    serve.write_config(&format!(
        "{}[[stream]]\nid = \"bad\"\ninput = [\"-i\", \"x\"]\nbogus_key = 1\n",
        stream("keep", 440, "")
    ));
    serve.hangup();
    let line = serve.wait_stderr("reload refused", Duration::from_secs(20));
    assert!(
        line.contains("pixelpass.toml:") && line.contains("bogus_key"),
        "{line}"
    );
    assert!(line.contains("the running config stays"), "{line}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ids(&serve), ["change", "fresh", "keep"]);
    assert_eq!(serve.report("keep")["pid"], keep_pid);
}

/// Under systemd (JOURNAL_STREAM names our stderr) lines carry the journal's
/// priority prefix and no timestamp of ours; the same variable inherited by
/// a process whose stderr goes elsewhere changes nothing.
#[test]
fn under_the_journal_lines_carry_priorities_and_no_timestamps() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixStream;
    use std::process::{Command, Stdio};

    let first_lines = |journal_names_it: bool| {
        // A socket pair stands in for the journal's stream.
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        let meta = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&theirs)
        ))
        .expect("stat the socket");
        let ino = if journal_names_it {
            meta.ino()
        } else {
            meta.ino() + 1
        };
        let mut child = Command::new(pixelpass_testkit::bin::pixelpass())
            .arg("serve")
            .args(serve_support::ON_LOOPBACK)
            .env("JOURNAL_STREAM", format!("{}:{ino}", meta.dev()))
            .env("PIXELPASS_API_TOKEN", "journal-test-token")
            .env_remove("PIXELPASS_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .spawn()
            .expect("spawn pixelpass serve");
        ours.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(&ours).lines().map_while(Result::ok) {
            lines.push(line);
            if lines.len() == 2 {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        lines
    };
    let journal = first_lines(true);
    assert_eq!(journal.len(), 2, "{journal:?}");
    for l in &journal {
        assert!(
            l.starts_with("<6>") && !l.contains("Z "),
            "a journal line: {l:?}"
        );
    }
    let plain = first_lines(false);
    assert!(
        plain
            .iter()
            .all(|l| !l.starts_with('<') && l.contains("INFO")),
        "not the journal's stream: plain lines {plain:?}"
    );
}
